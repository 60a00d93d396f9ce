//! The receive path allocates nothing: a counting global allocator wraps the system one and a
//! loop of full cycles (post → device write → complete → sync → decode → view → release) over
//! every valid fixture, plus malformed ones, must leave the allocation count unchanged.

use rpcrdma_core::device::Device;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::Ordering;

use rpcrdma_core::dma::CoherentDma;
use rpcrdma_core::pool::{Completed, Completion, CompletionStatus, PoolConfig, RecvPool, RecvWr};
use rpcrdma_tests::fixtures::*;
use rpcrdma_tests::nic::DmaMemory;

struct Counting;

thread_local! {
    /// Allocations made by this thread (the tests run in parallel threads; each counts its own).
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Allocations of the calling thread so far.
struct Allocations;

impl Allocations {
    fn load(&self, _: Ordering) -> u64 {
        THREAD_ALLOCATIONS.with(Cell::get)
    }
}

static ALLOCATIONS: Allocations = Allocations;

fn count() {
    // `try_with`: during thread teardown the slot may be gone; those allocations are not ours.
    let _ = THREAD_ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// A counting global allocator is an `unsafe impl` of `GlobalAlloc`.
// SAFETY: forwards to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn receive_path_allocates_nothing() {
    const N: usize = 64;
    let config = PoolConfig {
        credits: 32,
        batch: 8,
        ..PoolConfig::DEFAULT
    };
    let mem = DmaMemory::new(PoolConfig::region_len(N, config.buffer_size));
    let mut pool = RecvPool::<N>::new(mem.region(), config).unwrap();
    let mut nic = mem.nic();
    let mut msgs: Vec<Vec<u8>> = VALID_CALLS.iter().map(|(_, w)| bytes(w)).collect();
    msgs.push(bytes(&[XID, 2, 1, 0, 0, 0, 0]));
    msgs.push(bytes(&[XID, 1, 1, 0, 0, 1, 0]));
    let mut wrs = [RecvWr::default(); N];
    let mut cqes = [Completion {
        wr_id: 0,
        status: CompletionStatus::Success,
        byte_len: 0,
        qp: 0,
    }; 16];
    // The NIC model preallocates its queues; the test harness's own allocations come before.
    let n = pool.post(&mut wrs);
    nic.post_recv(&wrs[..n]).unwrap();

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut delivered = 0u64;
    let mut checksum = 0u64;
    for i in 0..100_000 {
        let n = pool.post(&mut wrs);
        nic.post_recv(&wrs[..n]).unwrap();
        nic.deliver(&msgs[i % msgs.len()]).unwrap();
        let k = nic.poll(&mut cqes);
        for c in &cqes[..k] {
            match pool.complete(c, &mut CoherentDma).unwrap() {
                Completed::Message(rx) => {
                    let view = pool.view(&rx).unwrap();
                    checksum += view.head().len() as u64 + view.message().xid() as u64;
                    pool.release(rx).unwrap();
                    delivered += 1;
                }
                Completed::Rejected { reply, .. } => {
                    let mut out = [0u8; 28];
                    if let Some(r) = reply {
                        r.emit(&mut out).unwrap();
                    }
                }
                Completed::Flushed => unreachable!(),
            }
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(delivered > 70_000 && checksum > 0);
    assert_eq!(
        after - before,
        0,
        "the receive path allocated {} times",
        after - before
    );
}

#[test]
fn responder_cycle_allocates_nothing() {
    use rpcrdma_core::wire::{Proc, ReadSegment};
    use rpcrdma_services::{ExampleService, NFS_PROG, PROC_CHECKSUM, PROC_GENERATE, TEST_PROG};
    use rpcrdma_tests::rig::{call_message, rpc_call, Rig, RigConfig};

    let mut rig = Rig::new(RigConfig::default(), ExampleService::default());
    // Three shapes: NULL inline, CHECKSUM with a 16 KiB Read chunk, GENERATE 16 KiB into a
    // write chunk.
    let data = vec![7u8; 16384];
    let seg = rig.source_segment(0, &data);
    let w = [rig.target_segment(0, 16384)];
    let msgs = [
        call_message(
            1,
            Proc::Msg,
            &[],
            None,
            None,
            &rpc_call(1, NFS_PROG, 3, 0, &[]),
        ),
        call_message(
            2,
            Proc::Msg,
            &[ReadSegment {
                position: 44,
                segment: seg,
            }],
            None,
            None,
            &rpc_call(2, TEST_PROG, 1, PROC_CHECKSUM, &bytes(&[16384])),
        ),
        call_message(
            3,
            Proc::Msg,
            &[],
            Some(&w),
            None,
            &rpc_call(3, TEST_PROG, 1, PROC_GENERATE, &bytes(&[16384, 9])),
        ),
    ];
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut replies = 0u64;
    for i in 0..30_000 {
        rig.nic.deliver(&msgs[i % msgs.len()]).unwrap();
        loop {
            let n = rig.endpoint.poll(&mut *rig.nic, &mut rig.service).unwrap();
            while let Some(sent) = rig.nic.take_sent() {
                replies += sent.bytes.len() as u64 / sent.bytes.len().max(1) as u64;
            }
            if n == 0 && rig.nic.queued() == 0 && rig.nic.pending() == 0 {
                break;
            }
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(replies, 30_000);
    assert_eq!(
        after - before,
        0,
        "the responder allocated {} times",
        after - before
    );
}
