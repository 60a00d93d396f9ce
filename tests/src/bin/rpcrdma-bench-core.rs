//! Core receive-path cycle benchmark: post (batched) → completion → sync hook → decode → XDR view
//! → release, per message, for one pool size `N`, buffer size and message shape.
//!
//! The "device" is a ring of posted wr_ids: each message consumes the oldest posted Receive, as
//! an RC receive queue does. Receive buffers are persistent, so the message bytes are written
//! into every buffer once at set-up (a device would rewrite the same bytes each time).
//!
//! ```text
//! rpcrdma-bench-core --n 256 --buf 4096 --msg empty|chunks [--iters K] [--reps R] [--callgrind]
//! ```
//! Prints one line: `n buf msg median_ns min_ns max_ns`. With `--callgrind` it runs `--iters`
//! cycles once inside `measured_cycles` (for `valgrind --tool=callgrind
//! --toggle-collect=*measured_cycles*`) and prints nothing else.

use std::hint::black_box;
use std::time::Instant;

use rpcrdma_core::dma::CoherentDma;
use rpcrdma_core::pool::{Completed, Completion, CompletionStatus, PoolConfig, RecvPool, RecvWr};
use rpcrdma_tests::fixtures::{bytes, MSG_EMPTY_LISTS, MSG_WRITE_AND_REPLY};
use rpcrdma_tests::nic::{DmaMemory, IOVA_BASE};

/// Credits and batch are the same at every grid point so the figures compare like for like.
const CREDITS: u16 = 8;
const BATCH: u16 = 4;

struct Bench<'m, const N: usize> {
    pool: RecvPool<'m, N>,
    ring: [u64; 64],
    head: usize,
    tail: usize,
    wrs: [RecvWr; 16],
    byte_len: u32,
}

impl<'m, const N: usize> Bench<'m, N> {
    fn new(mem: &'m DmaMemory, buf: usize, msg: &[u8]) -> Self {
        let config = PoolConfig {
            buffer_size: buf,
            credits: CREDITS,
            batch: BATCH,
            ..PoolConfig::DEFAULT
        };
        let stride = PoolConfig::region_len(1, buf);
        for i in 0..N {
            // SAFETY: set-up, before any Receive is posted: the device is not writing.
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr(), mem.cpu().add(i * stride), msg.len())
            };
        }
        let _ = IOVA_BASE;
        Bench {
            pool: RecvPool::new(mem.region(), config).expect("bench pool"),
            ring: [0; 64],
            head: 0,
            tail: 0,
            wrs: [RecvWr::default(); 16],
            byte_len: msg.len() as u32,
        }
    }

    /// One message through the whole receive path.
    #[inline(always)]
    fn cycle(&mut self) -> usize {
        let n = self.pool.post(&mut self.wrs);
        for wr in &self.wrs[..n] {
            self.ring[self.tail % 64] = wr.wr_id;
            self.tail += 1;
        }
        let wr_id = self.ring[self.head % 64];
        self.head += 1;
        let c = Completion {
            wr_id,
            status: CompletionStatus::Success,
            byte_len: self.byte_len,
        };
        match self.pool.complete(&c, &mut CoherentDma) {
            Ok(Completed::Message(rx)) => {
                let len = match self.pool.view(&rx) {
                    Ok(view) => black_box(view.head()).len(),
                    Err(_) => 0,
                };
                let _ = self.pool.release(rx);
                len
            }
            _ => 0,
        }
    }
}

#[inline(never)]
fn measured_cycles<const N: usize>(b: &mut Bench<'_, N>, iters: u64) -> usize {
    let mut acc = 0usize;
    for _ in 0..iters {
        acc = acc.wrapping_add(b.cycle());
    }
    acc
}

fn run<const N: usize>(
    buf: usize,
    msg: &[u8],
    iters: u64,
    reps: usize,
    callgrind: bool,
) -> Vec<f64> {
    let mem = DmaMemory::new(PoolConfig::region_len(N, buf));
    let mut b = Bench::<N>::new(&mem, buf, msg);
    assert!(b.cycle() > 0, "bench message decodes");
    if callgrind {
        black_box(measured_cycles(&mut b, iters));
        return Vec::new();
    }
    black_box(measured_cycles(&mut b, iters / 10 + 1)); // warm-up
    let mut ns = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        black_box(measured_cycles(&mut b, iters));
        ns.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    ns
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
    let iters: u64 = arg(&args, "--iters", "1000000").parse().expect("--iters");
    let reps: usize = arg(&args, "--reps", "11").parse().expect("--reps");
    let callgrind = args.iter().any(|a| a == "--callgrind");
    let msg = match shape.as_str() {
        "empty" => bytes(&MSG_EMPTY_LISTS),
        "chunks" => bytes(&MSG_WRITE_AND_REPLY),
        other => panic!("--msg empty|chunks, not {other}"),
    };
    let mut ns = match n {
        16 => run::<16>(buf, &msg, iters, reps, callgrind),
        256 => run::<256>(buf, &msg, iters, reps, callgrind),
        4096 => run::<4096>(buf, &msg, iters, reps, callgrind),
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
