//! Page pools: contiguous first-fit runs, device addresses, stale runs after a reset.

use rpcrdma_core::pages::PagePool;
use rpcrdma_tests::nic::{DmaMemory, IOVA_BASE};

#[test]
fn first_fit_contiguous_runs_and_stale_free() {
    let mem = DmaMemory::new(8 * 4096);
    let mut pool: PagePool<'_, 8> = PagePool::new(mem.region(), 4096).unwrap();
    let a = pool.alloc(4096 * 3).unwrap();
    let b = pool.alloc(1).unwrap();
    let c = pool.alloc(4096 * 4).unwrap();
    assert_eq!(
        (a.pages(), b.pages(), c.pages(), pool.free_pages()),
        (3, 1, 4, 0)
    );
    assert!(pool.alloc(1).is_none());
    assert_eq!(pool.device_addr(&b, 8), IOVA_BASE + 3 * 4096 + 8);
    pool.bytes_mut(&b)[0] = 0xab;
    assert_eq!(pool.bytes(&b), &[0xab]);
    assert!(pool.free(a));
    // A 4-page run does not fit the 3 free pages at the front.
    assert!(pool.alloc(4096 * 4).is_none());
    let d = pool.alloc(4096 * 2).unwrap();
    assert_eq!(pool.device_addr(&d, 0), IOVA_BASE);
    pool.reset();
    assert!(!pool.free(d), "a run from before reset is stale");
    assert_eq!(pool.free_pages(), 8);
    assert!(!pool.free(b) && !pool.free(c));
}

#[test]
fn page_size_must_be_a_power_of_two_of_a_cache_line_or_more() {
    let mem = DmaMemory::new(4096);
    assert!(PagePool::<'_, 4>::new(mem.region(), 1000).is_err());
    assert!(PagePool::<'_, 4>::new(mem.region(), 32).is_err());
    assert!(
        PagePool::<'_, 4>::new(mem.region(), 8192).is_err(),
        "no whole page in the region"
    );
}
