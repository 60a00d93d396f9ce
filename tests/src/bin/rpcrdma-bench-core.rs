//! Core receive-path cycle benchmark, per message, for one pool size `N`, buffer size and
//! message shape, in one of three modes:
//!
//! - `pool`: completion → wr_id check → sync hook → decode → XDR view → release, through
//!   [`RecvPool`]; one `post` per completion batch (as the responder and the hosted binding do);
//! - `reference`: the same device ring, message and batching with no pool — a plain loop that
//!   checks a generation-tagged wr_id and a state byte, calls the sync hook, decodes the fixed
//!   header (RDMA_MSG, version 1, empty lists), slices the inline message and frees the buffer:
//!   the floor any pool must pay;
//! - `harness`: the ring, the loop and the `black_box` alone — what the other modes pay before
//!   any receive-path work;
//! - `responder`: the whole responder cycle through an [`Endpoint`] (`Endpoint::process`) — Receive completion →
//!   decode → NULL service → inline reply built and posted → release, plus the Send's
//!   completion — over a device that is only the ring.
//!
//! The "device" is a ring of posted wr_ids: each message consumes the oldest posted Receive, as
//! an RC receive queue does. Receive buffers are persistent, so the message bytes are written
//! into every buffer once at set-up (a device would rewrite the same bytes each time). `N`
//! buffers really exist (`PoolConfig::buffers = N`).
//!
//! ```text
//! rpcrdma-bench-core --n 256 --buf 4096 --msg empty|chunks [--mode pool|reference|harness|responder]
//!                    [--iters K] [--reps R] [--callgrind]
//! ```
//! Prints one line: `n buf msg median_ns min_ns max_ns`. With `--callgrind` it runs `--iters`
//! messages once inside `measured_cycles` (for `valgrind --tool=callgrind
//! --toggle-collect=*measured_cycles*`) and prints nothing else.

use std::hint::black_box;
use std::time::Instant;

use rpcrdma_core::device::{Device, PostError, SendWr};
use rpcrdma_core::dma::{CoherentDma, DmaSync};
use rpcrdma_core::endpoint::{Endpoint, EndpointConfig};
use rpcrdma_core::pool::{Completed, Completion, CompletionStatus, PoolConfig, RecvPool, RecvWr};
use rpcrdma_services::ExampleService;
use rpcrdma_tests::fixtures::{bytes, MSG_EMPTY_LISTS, MSG_WRITE_AND_REPLY};
use rpcrdma_tests::nic::{DmaMemory, IOVA_BASE, LKEY};

/// Credits and batch are the same at every grid point so the figures compare like for like.
const CREDITS: u16 = 8;
const BATCH: u16 = 4;
/// Messages per completion batch (one poll, one post).
const PER_BATCH: usize = BATCH as usize;
const RING: usize = 64;

/// The device: a ring of posted Receive wr_ids, consumed in order.
struct Ring {
    ring: [u64; RING],
    head: usize,
    tail: usize,
}

impl Ring {
    fn new() -> Self {
        Ring {
            ring: [0; RING],
            head: 0,
            tail: 0,
        }
    }
    #[inline(always)]
    fn push(&mut self, wr_id: u64) {
        self.ring[self.tail % RING] = wr_id;
        self.tail += 1;
    }
    #[inline(always)]
    fn pop(&mut self) -> u64 {
        let id = self.ring[self.head % RING];
        self.head += 1;
        id
    }
}

// Writes through the DMA memory's raw pointer, as the device would.
#[allow(unsafe_code)]
fn fill_buffers(mem: &DmaMemory, n: usize, buf: usize, msg: &[u8]) {
    let stride = PoolConfig::region_len(1, buf);
    for i in 0..n {
        // SAFETY: set-up, before any Receive is posted: the device is not writing.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), mem.cpu().add(i * stride), msg.len())
        };
    }
}

fn pool_config(buf: usize, n: usize) -> PoolConfig {
    PoolConfig {
        buffer_size: buf,
        credits: CREDITS,
        batch: BATCH,
        buffers: n as u16,
        ..PoolConfig::DEFAULT
    }
}

trait Cycle {
    /// One completion batch of `PER_BATCH` messages; returns bytes viewed.
    fn batch(&mut self) -> usize;
}

// ---------------------------------------------------------------------------------------------
// pool

struct PoolBench<'m, const N: usize> {
    pool: RecvPool<'m, N>,
    ring: Ring,
    wrs: [RecvWr; 16],
    byte_len: u32,
}

impl<'m, const N: usize> PoolBench<'m, N> {
    fn new(mem: &'m DmaMemory, buf: usize, msg: &[u8]) -> Self {
        fill_buffers(mem, N, buf, msg);
        let mut b = PoolBench {
            pool: RecvPool::new(mem.region(), pool_config(buf, N)).expect("bench pool"),
            ring: Ring::new(),
            wrs: [RecvWr::default(); 16],
            byte_len: msg.len() as u32,
        };
        b.post();
        b
    }

    #[inline(always)]
    fn post(&mut self) {
        let n = self.pool.post(&mut self.wrs);
        for wr in &self.wrs[..n] {
            self.ring.push(wr.wr_id);
        }
    }
}

impl<const N: usize> Cycle for PoolBench<'_, N> {
    #[inline(always)]
    fn batch(&mut self) -> usize {
        let mut acc = 0;
        for _ in 0..PER_BATCH {
            let c = Completion {
                wr_id: self.ring.pop(),
                status: CompletionStatus::Success,
                byte_len: self.byte_len,
                qp: 0,
            };
            if let Ok(Completed::Message(rx)) = self.pool.complete(&c, &mut CoherentDma) {
                if let Ok(view) = self.pool.view(&rx) {
                    acc += black_box(view.head()).len();
                }
                let _ = self.pool.release(rx);
            }
        }
        // One post per completion batch: the watermark test runs here, once.
        self.post();
        acc
    }
}

// ---------------------------------------------------------------------------------------------
// reference: no pool

const R_FREE: u8 = 0;
const R_POSTED: u8 = 1;
const R_HELD: u8 = 2;

struct Reference<'m> {
    mem: &'m [u8],
    generation: Vec<u32>,
    state: Vec<u8>,
    free: Vec<u16>,
    ring: Ring,
    wrs: [RecvWr; 16],
    stride: usize,
    buf: usize,
    posted: usize,
    byte_len: u32,
}

impl<'m> Reference<'m> {
    fn new(mem: &'m DmaMemory, n: usize, buf: usize, msg: &[u8]) -> Self {
        fill_buffers(mem, n, buf, msg);
        // Nothing writes the memory from here on (the "device" only moves wr_ids).
        let bytes = mem.bytes();
        let mut r = Reference {
            mem: bytes,
            generation: vec![0; n],
            state: vec![R_FREE; n],
            free: (0..n as u16).rev().collect(),
            ring: Ring::new(),
            wrs: [RecvWr::default(); 16],
            stride: PoolConfig::region_len(1, buf),
            buf,
            posted: 0,
            byte_len: msg.len() as u32,
        };
        r.post();
        r
    }

    #[inline(always)]
    fn post(&mut self) {
        let target = (CREDITS + BATCH) as usize;
        if self.posted > CREDITS as usize {
            return;
        }
        let mut n = 0;
        while self.posted + n < target {
            let Some(i) = self.free.pop() else { break };
            let g = &mut self.generation[i as usize];
            *g = g.wrapping_add(1);
            self.state[i as usize] = R_POSTED;
            self.wrs[n] = RecvWr {
                wr_id: (*g as u64) << 32 | i as u64,
                addr: IOVA_BASE + (i as usize * self.stride) as u64,
                length: self.buf as u32,
                lkey: LKEY,
            };
            n += 1;
        }
        self.posted += n;
        for wr in &self.wrs[..n] {
            self.ring.push(wr.wr_id);
        }
    }
}

impl Cycle for Reference<'_> {
    #[inline(always)]
    fn batch(&mut self) -> usize {
        let mut acc = 0;
        for _ in 0..PER_BATCH {
            let wr_id = self.ring.pop();
            let byte_len = self.byte_len as usize;
            let i = wr_id as u16 as usize;
            if i >= self.state.len()
                || self.generation[i] != (wr_id >> 32) as u32
                || self.state[i] != R_POSTED
            {
                continue;
            }
            self.posted -= 1;
            self.state[i] = R_HELD;
            let offset = i * self.stride;
            let len = byte_len.min(self.buf);
            CoherentDma.sync_for_cpu(
                IOVA_BASE + offset as u64,
                self.mem.as_ptr().wrapping_add(offset),
                len,
            );
            let b = &self.mem[offset..offset + len];
            let Some(h) = b.first_chunk::<28>() else {
                continue;
            };
            // The fixed-array read of the core's fast path (`header_word`), written out: the
            // reference is a hand-written loop that uses nothing of the core's decoder.
            let w =
                |k: usize| u32::from_be_bytes([h[4 * k], h[4 * k + 1], h[4 * k + 2], h[4 * k + 3]]);
            if w(1) == 1 && w(3) == 0 && (w(4) | w(5) | w(6)) == 0 {
                acc += black_box(&b[28..]).len();
            }
            self.state[i] = R_FREE;
            self.free.push(i as u16);
        }
        self.post();
        acc
    }
}

// ---------------------------------------------------------------------------------------------
// harness: the ring and the loop alone

/// What every mode pays before any receive-path work: the ring pop per message, the same
/// `black_box` of an inline-message slice, and one chained "post" of the consumed ids per
/// batch through a work-request array. Pool and reference minus this are their own cost.
struct Harness<'m> {
    msg: &'m [u8],
    ring: Ring,
    wrs: [RecvWr; 16],
    ids: [u64; PER_BATCH],
}

impl<'m> Harness<'m> {
    fn new(msg: &'m [u8]) -> Self {
        let mut h = Harness {
            msg,
            ring: Ring::new(),
            wrs: [RecvWr::default(); 16],
            ids: [0; PER_BATCH],
        };
        for i in 0..(CREDITS + BATCH) as u64 {
            h.ring.push(i);
        }
        h
    }
}

impl Cycle for Harness<'_> {
    #[inline(always)]
    fn batch(&mut self) -> usize {
        let mut acc = 0;
        for id in self.ids.iter_mut() {
            *id = self.ring.pop();
            acc += black_box(self.msg.get(28..).unwrap_or_default()).len();
        }
        for (wr, id) in self.wrs.iter_mut().zip(self.ids) {
            wr.wr_id = id;
        }
        for wr in &self.wrs[..PER_BATCH] {
            self.ring.push(wr.wr_id);
        }
        acc
    }
}

// ---------------------------------------------------------------------------------------------
// responder

/// A device that is only the ring: Receives in order, Sends complete at the next poll.
struct RingDevice {
    ring: Ring,
    sends: Vec<u64>,
    byte_len: u32,
}

impl Device for RingDevice {
    fn post_recv(&mut self, wrs: &[RecvWr]) -> Result<(), PostError> {
        for wr in wrs {
            self.ring.push(wr.wr_id);
        }
        Ok(())
    }
    fn post_send(&mut self, wrs: &[SendWr]) -> Result<(), PostError> {
        // Only signaled work requests complete visibly, as on a real send queue.
        self.sends
            .extend(wrs.iter().filter(|w| w.signaled).map(|w| w.wr_id));
        Ok(())
    }
    fn poll(&mut self, out: &mut [Completion]) -> usize {
        let mut n = 0;
        for (slot, wr_id) in out.iter_mut().zip(self.sends.drain(..)) {
            *slot = Completion {
                wr_id,
                status: CompletionStatus::Success,
                byte_len: 0,
                qp: 0,
            };
            n += 1;
        }
        for slot in out.iter_mut().skip(n).take(PER_BATCH) {
            *slot = Completion {
                wr_id: self.ring.pop(),
                status: CompletionStatus::Success,
                byte_len: self.byte_len,
                qp: 0,
            };
            n += 1;
        }
        n
    }
}

const C: usize = 64;
const PAGES: usize = 4;

struct ResponderBench<'m, const N: usize> {
    endpoint: Endpoint<'m, N, C, PAGES>,
    service: ExampleService,
    device: RingDevice,
    wcs: [Completion; 16],
}

/// The responder bench's endpoint: `n` Receive buffers of `buf` bytes, 4 KiB send slots, one
/// page each of sinks and payloads (the NULL call needs neither).
fn endpoint_config(buf: usize, n: usize) -> EndpointConfig {
    let pool = pool_config(buf, n);
    EndpointConfig {
        credits: CREDITS,
        buffer_size: buf,
        batch: BATCH,
        receive_buffers: pool.buffers,
        send_size: 4096,
        peer_inline: 4096,
        initiator_depth: 4,
        sq_depth: 64,
        page_size: 4096,
        sink_bytes: PAGES * 4096,
        payload_bytes: PAGES * 4096,
        limits: pool.limits,
        epoch: 9,
        signal_all: false,
    }
}

impl<'m, const N: usize> ResponderBench<'m, N> {
    fn new(mem: &'m DmaMemory, buf: usize, msg: &[u8]) -> Self {
        // The Receive buffers are the first part of the endpoint's region.
        fill_buffers(mem, N, buf, msg);
        let config = endpoint_config(buf, N);
        let mut b = ResponderBench {
            endpoint: Endpoint::new(mem.region(), &config).expect("bench endpoint"),
            service: ExampleService::default(),
            device: RingDevice {
                ring: Ring::new(),
                sends: Vec::with_capacity(64),
                byte_len: msg.len() as u32,
            },
            wcs: [Completion::EMPTY; 16],
        };
        b.endpoint.refill(&mut b.device).expect("refill");
        b
    }

    fn replies(&self) -> u64 {
        self.endpoint.connection().counters().inline_replies
    }
}

impl<const N: usize> Cycle for ResponderBench<'_, N> {
    #[inline(always)]
    fn batch(&mut self) -> usize {
        let n = self.device.poll(&mut self.wcs);
        let _ = self.endpoint.process(
            &mut self.device,
            &mut CoherentDma,
            &mut self.service,
            &self.wcs[..n],
        );
        n
    }
}

// ---------------------------------------------------------------------------------------------

#[inline(never)]
fn measured_cycles<B: Cycle>(b: &mut B, messages: u64) -> usize {
    let mut acc = 0usize;
    for _ in 0..messages / PER_BATCH as u64 {
        acc = acc.wrapping_add(b.batch());
    }
    acc
}

fn time<B: Cycle>(b: &mut B, iters: u64, reps: usize, callgrind: bool) -> Vec<f64> {
    assert!(b.batch() > 0, "bench message goes through");
    if callgrind {
        black_box(measured_cycles(b, iters));
        return Vec::new();
    }
    black_box(measured_cycles(b, iters / 10 + PER_BATCH as u64)); // warm-up
    let mut ns = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        black_box(measured_cycles(b, iters));
        ns.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    ns
}

fn run<const N: usize>(
    mode: &str,
    buf: usize,
    msg: &[u8],
    iters: u64,
    reps: usize,
    callgrind: bool,
) -> Vec<f64> {
    let mem = DmaMemory::new(PoolConfig::region_len(N, buf));
    match mode {
        "pool" => time(
            &mut PoolBench::<N>::new(&mem, buf, msg),
            iters,
            reps,
            callgrind,
        ),
        "reference" => time(
            &mut Reference::new(&mem, N, buf, msg),
            iters,
            reps,
            callgrind,
        ),
        "harness" => time(&mut Harness::new(msg), iters, reps, callgrind),
        "responder" => {
            let mem = DmaMemory::new(endpoint_config(buf, N).region_len());
            let mut b = ResponderBench::<N>::new(&mem, buf, msg);
            let ns = time(&mut b, iters, reps, callgrind);
            let expect = iters;
            assert!(
                b.replies() >= expect,
                "every call answered inline: {} replies, expected {expect}",
                b.replies()
            );
            ns
        }
        other => panic!("--mode pool|reference|harness|responder, not {other}"),
    }
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.into())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = arg(&args, "--n", "256").parse().expect("--n");
    let buf: usize = arg(&args, "--buf", "4096").parse().expect("--buf");
    let shape = arg(&args, "--msg", "empty");
    let mode = arg(&args, "--mode", "pool");
    let iters: u64 = arg(&args, "--iters", "1000000").parse().expect("--iters");
    let reps: usize = arg(&args, "--reps", "11").parse().expect("--reps");
    let callgrind = args.iter().any(|a| a == "--callgrind");
    let msg = match shape.as_str() {
        "empty" => bytes(&MSG_EMPTY_LISTS),
        "chunks" => bytes(&MSG_WRITE_AND_REPLY),
        other => panic!("--msg empty|chunks, not {other}"),
    };
    let mut ns = match n {
        16 => run::<16>(&mode, buf, &msg, iters, reps, callgrind),
        256 => run::<256>(&mode, buf, &msg, iters, reps, callgrind),
        4096 => run::<4096>(&mode, buf, &msg, iters, reps, callgrind),
        other => panic!("--n 16|256|4096, not {other}"),
    };
    if callgrind {
        return;
    }
    ns.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{n} {buf} {shape} {:.2} {:.2} {:.2}",
        ns[ns.len() / 2],
        ns[0],
        ns[ns.len() - 1]
    );
}
