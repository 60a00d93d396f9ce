//! Property test: random interleavings of post / deliver / complete / flush / release / view /
//! drain / injected bad completions against the software NIC. After every step: each
//! descriptor is in exactly one state, posted ≤ N, every outstanding view is of a Held buffer,
//! nothing is posted after close, and the counters add up. After drain: everything is Free.

use proptest::prelude::*;
use rpcrdma_core::device::Device;
use rpcrdma_core::dma::CoherentDma;
use rpcrdma_core::pool::{
    Completed, Completion, CompletionError, CompletionStatus, DescState, PoolConfig, Received,
    RecvPool, RecvWr,
};
use rpcrdma_core::wire::DecodeLimits;
use rpcrdma_tests::fixtures::*;
use rpcrdma_tests::nic::DmaMemory;

const N: usize = 12;
const CONFIG: PoolConfig = PoolConfig {
    buffer_size: 1024,
    credits: 4,
    batch: 3,
    limits: DecodeLimits::DEFAULT,
    buffers: N as u16,
    epoch: 0,
};

#[derive(Debug, Clone)]
enum Op {
    Post,
    Deliver(usize),
    Complete(usize),
    Release(usize),
    View(usize),
    Flush,
    InjectDuplicate,
    InjectForged(u64),
    Close,
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Post),
        6 => (0usize..8).prop_map(Op::Deliver),
        6 => (1usize..6).prop_map(Op::Complete),
        4 => any::<usize>().prop_map(Op::Release),
        2 => any::<usize>().prop_map(Op::View),
        1 => Just(Op::Flush),
        1 => Just(Op::InjectDuplicate),
        1 => any::<u64>().prop_map(Op::InjectForged),
        1 => Just(Op::Close),
        1 => Just(Op::Drain),
    ]
}

fn messages() -> Vec<Vec<u8>> {
    let mut m: Vec<Vec<u8>> = VALID_CALLS.iter().map(|(_, w)| bytes(w)).collect();
    m.push(bytes(&[XID, 2, 1, 0, 0, 0, 0])); // ERR_VERS
    m.push(bytes(&[XID, 1, 1, 0, 0, 1, 0])); // ERR_CHUNK (empty write chunk)
    m.push(bytes(&[XID, 1])); // dropped
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_invariants(ops in prop::collection::vec(op(), 1..200)) {
        let mem = DmaMemory::new(PoolConfig::region_len(N, CONFIG.buffer_size));
        let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
        let mut nic = mem.nic();
        let msgs = messages();
        let mut held: Vec<Received> = Vec::new();
        let mut stale: Vec<Received> = Vec::new();
        let mut last_id: Option<u64> = None;
        let mut fed = 0u64;
        let mut closed = false;
        let mut drained = false;

        for op in ops {
            match op {
                Op::Post => {
                    let before = pool.counters().posted;
                    let mut wrs = [RecvWr::default(); N];
                    let n = pool.post(&mut wrs);
                    if closed {
                        prop_assert_eq!(n, 0, "posted after close");
                        prop_assert_eq!(pool.counters().posted, before);
                    }
                    nic.post_recv(&wrs[..n]).unwrap();
                }
                Op::Deliver(i) => {
                    if let Ok(id) = nic.deliver(&msgs[i % msgs.len()]) {
                        last_id = Some(id);
                    }
                }
                Op::Complete(k) => {
                    let mut cs = vec![Completion { wr_id: 0, status: CompletionStatus::Success, byte_len: 0, qp: 0 }; k];
                    let n = nic.poll(&mut cs);
                    for c in &cs[..n] {
                        fed += 1;
                        match pool.complete(c, &mut CoherentDma) {
                            Ok(Completed::Message(rx)) => {
                                prop_assert_eq!(pool.state(rx.index()), Some(DescState::Held));
                                held.push(rx);
                            }
                            // The owner (one connection per pool here) closes on the first
                            // flush or error; the pool itself stays open (it may be shared).
                            Ok(Completed::Flushed) | Err(CompletionError::DeviceError { .. }) => {
                                pool.close();
                                closed = true;
                            }
                            Ok(Completed::Rejected { .. }) => {}
                            Err(_) => {}
                        }
                    }
                }
                Op::Release(i) => {
                    if !held.is_empty() {
                        let rx = held.swap_remove(i % held.len());
                        prop_assert!(pool.release(rx).is_ok());
                    } else if let Some(rx) = stale.pop() {
                        prop_assert!(pool.release(rx).is_err(), "a drained token released");
                    }
                }
                Op::View(i) => {
                    if !held.is_empty() {
                        let rx = &held[i % held.len()];
                        let v = pool.view(rx).expect("held message views");
                        prop_assert!(v.message().byte_len() == rx.byte_len());
                    }
                    for rx in &stale {
                        prop_assert!(pool.view(rx).is_err(), "view of a drained buffer");
                    }
                }
                Op::Flush => {
                    nic.flush();
                }
                Op::InjectDuplicate => {
                    if let Some(id) = last_id {
                        nic.inject(Completion { wr_id: id, status: CompletionStatus::Success, byte_len: 28, qp: 0 }).unwrap();
                    }
                }
                Op::InjectForged(id) => {
                    nic.inject(Completion { wr_id: id, status: CompletionStatus::Success, byte_len: 28, qp: 0 }).unwrap();
                }
                Op::Close => {
                    pool.close();
                    closed = true;
                }
                Op::Drain => {
                    let report = pool.drain();
                    prop_assert_eq!(report.held, held.len());
                    stale.append(&mut held);
                    closed = true;
                    drained = true;
                    prop_assert_eq!(pool.in_flight(), 0);
                    prop_assert_eq!(pool.free(), N);
                }
            }

            // Invariants after every step.
            prop_assert!(pool.posted() <= N);
            prop_assert_eq!(pool.posted() + pool.held() + pool.free(), N);
            let posted = (0..N).filter(|&i| pool.state(i) == Some(DescState::Posted)).count();
            let held_n = (0..N).filter(|&i| pool.state(i) == Some(DescState::Held)).count();
            prop_assert_eq!(posted, pool.posted());
            prop_assert_eq!(held_n, pool.held());
            prop_assert_eq!(held_n, held.len());
            for rx in &held {
                prop_assert_eq!(pool.state(rx.index()), Some(DescState::Held));
            }
            if !drained {
                // Every Receive the pool thinks is posted is in the NIC's queue or its CQ.
                prop_assert!(pool.posted() <= nic.posted() + nic.pending());
            }
            let c = pool.counters();
            prop_assert_eq!(
                c.completed + c.flushed + c.device_errors + c.rejected_unknown + c.rejected_stale + c.rejected_duplicate,
                fed
            );
            prop_assert_eq!(c.completed, c.delivered + c.err_vers + c.err_chunk + c.dropped);
        }

        // Teardown: the QP is gone; drain gives everything back.
        pool.drain();
        prop_assert_eq!(pool.in_flight(), 0);
        prop_assert_eq!(pool.free(), N);
        for rx in held.into_iter().chain(stale) {
            prop_assert!(pool.release(rx).is_err());
        }
    }
}
