//! The owned endpoint: one region carved safely into its parts, the errors a wrong region or
//! configuration gets, and a whole connection's life (calls, disconnect, drain) through it.

use rpcrdma_core::dma::{DmaError, CACHE_LINE};
use rpcrdma_core::endpoint::{Endpoint, EndpointConfig, EndpointError};
use rpcrdma_core::pool::PoolError;
use rpcrdma_core::wire::Proc;
use rpcrdma_services::{ExampleService, NFS_PROG};
use rpcrdma_tests::nic::DmaMemory;
use rpcrdma_tests::rig::{call_message, rpc_call, Rig, RigConfig};

type Small<'a> = Endpoint<'a, 64, 64, 64>;

#[test]
fn region_len_is_the_sum_of_cache_line_aligned_parts() {
    let c = EndpointConfig::DEFAULT;
    let parts = c.parts();
    assert!(parts.iter().all(|p| p % CACHE_LINE == 0));
    assert_eq!(c.region_len(), parts.iter().sum::<usize>());
    // 40 Receive buffers of 4 KiB, 32 send slots of 4 KiB plus the zero line, 64 KiB each of
    // sinks and payload pages.
    assert_eq!(parts, [40 * 4096, 32 * 4096 + 64, 65536, 65536]);
}

#[test]
fn a_short_region_is_refused_with_the_length_it_needs() {
    let c = EndpointConfig::DEFAULT;
    let mem = DmaMemory::new(c.region_len() - 64);
    let Err(e) = Small::new(mem.region(), &c) else {
        panic!("a short region was accepted");
    };
    assert_eq!(
        e,
        EndpointError::RegionTooSmall {
            needed: c.region_len(),
            len: c.region_len() - 64
        }
    );
    assert!(e.to_string().contains("region_len"), "{e}");
}

#[test]
fn a_part_that_refuses_is_named() {
    let c = EndpointConfig {
        credits: 0,
        ..EndpointConfig::DEFAULT
    };
    let mem = DmaMemory::new(EndpointConfig::DEFAULT.region_len());
    assert!(matches!(
        Small::new(mem.region(), &c),
        Err(EndpointError::Pool(PoolError::ZeroCredits))
    ));
    let c = EndpointConfig {
        page_size: 1000,
        ..EndpointConfig::DEFAULT
    };
    assert!(matches!(
        Small::new(mem.region(), &c),
        Err(EndpointError::Pages(_))
    ));
}

#[test]
fn split_at_keeps_the_halves_disjoint_and_refuses_bad_points() {
    let mem = DmaMemory::new(8192);
    let region = mem.region_at(0x1000_0000, 9);
    let (a, b) = region.split_at(4096).unwrap();
    assert_eq!((a.len(), b.len()), (4096, 4096));
    assert_eq!(b.device_addr(0), 0x1000_0000 + 4096);
    assert_eq!(b.cpu_addr() as usize - a.cpu_addr() as usize, 4096);
    assert_eq!((a.lkey(), b.lkey()), (9, 9));
    let region = mem.region_at(0x1000_0000, 9);
    assert!(matches!(
        region.split_at(100),
        Err(DmaError::Misaligned { .. })
    ));
    let mut region = mem.region_at(0x1000_0000, 9);
    assert!(matches!(
        region.take_front(8193),
        Err(DmaError::SplitOutOfRange { .. })
    ));
    // take_front rounds up to the cache line.
    let first = region.take_front(100).unwrap();
    assert_eq!((first.len(), region.len()), (128, 8192 - 128));
}

#[test]
fn a_connection_through_the_endpoint_leaves_nothing_held() {
    let mut rig = Rig::new(RigConfig::default(), ExampleService::default());
    for xid in 1..=100u32 {
        let msg = call_message(
            xid,
            Proc::Msg,
            &[],
            None,
            None,
            &rpc_call(xid, NFS_PROG, 3, 0, &[]),
        );
        let r = rig.round_trip(&msg);
        assert_eq!((r.xid, r.proc_), (xid, Proc::Msg));
    }
    let c = rig.endpoint.counters();
    assert_eq!(c.responder.calls, 100);
    assert_eq!(c.pool.completed, 100);
    rig.disconnect();
    assert!(rig.endpoint.is_closing());
    let drain = rig.endpoint.drain();
    assert_eq!(drain.leaked, 0);
    assert_eq!(rig.endpoint.held(), 0);
    assert_eq!(rig.endpoint.pool().in_flight(), 0);
}

#[test]
fn a_grant_cap_lowers_the_grant_of_the_next_replies_and_lifts_again() {
    let mut rig = Rig::new(RigConfig::default(), ExampleService::default());
    let null = |xid: u32| {
        call_message(
            xid,
            Proc::Msg,
            &[],
            None,
            None,
            &rpc_call(xid, NFS_PROG, 3, 0, &[]),
        )
    };
    assert_eq!(rig.round_trip(&null(1)).credits, 32);
    rig.endpoint.set_grant_cap(3);
    assert_eq!(rig.round_trip(&null(2)).credits, 3);
    rig.endpoint.set_grant_cap(0); // never below 1: the requester must be able to go on
    assert_eq!(rig.round_trip(&null(3)).credits, 1);
    rig.endpoint.set_grant_cap(u16::MAX);
    assert_eq!(rig.round_trip(&null(4)).credits, 32);
    assert_eq!(rig.grant_violations, 0);
}
