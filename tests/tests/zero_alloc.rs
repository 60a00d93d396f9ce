//! The receive path allocates nothing: a counting global allocator wraps the system one and a
//! loop of full cycles (post → device write → complete → sync → decode → view → release) over
//! every valid fixture, plus malformed ones, must leave the allocation count unchanged.

use rpcrdma_core::device::Device;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use rpcrdma_core::dma::CoherentDma;
use rpcrdma_core::pool::{Completed, Completion, CompletionStatus, PoolConfig, RecvPool, RecvWr};
use rpcrdma_tests::fixtures::*;
use rpcrdma_tests::nic::DmaMemory;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
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
