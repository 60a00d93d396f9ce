//! The shared receive queue's credit ledger over the software NIC: no requester that obeys its
//! grant ever meets RNR — with busy connections, with a newcomer arriving under load, with more
//! connections than Receives, with a requester that breaks its grant, with a connection that
//! closes, and with grants cut while calls are in flight. After every completion and every flush the test checks the invariant itself:
//! the Receives promised (every connection's demand, summed) never exceed those posted.

use proptest::prelude::*;
use rpcrdma_core::device::{Completion, Device};
use rpcrdma_core::dma::CoherentDma;
use rpcrdma_core::pages::PagePool;
use rpcrdma_core::pool::{PoolConfig, RecvPool};
use rpcrdma_core::responder::{Connection, Resources, ResponderConfig};
use rpcrdma_core::srq::{AdmitError, SharedQueue, SharedSlot};
use rpcrdma_core::wire::{DecodeLimits, Proc};
use rpcrdma_services::{ExampleService, NFS_PROG};
use rpcrdma_tests::nic::{DmaMemory, SoftNic};
use rpcrdma_tests::rig::{call_message, parse_reply, rpc_call};

/// Queue pairs (connection rows) the test can use.
const QPS: usize = 6;

fn leak(len: usize) -> &'static DmaMemory {
    Box::leak(Box::new(DmaMemory::new(len)))
}

/// One requester, as the test plays it.
#[derive(Default, Clone, Copy)]
struct Requester {
    /// The grant of the last reply it read (1 before any: RFC 8166 §3.3.1).
    granted: u32,
    /// Calls sent whose reply it has not read.
    outstanding: u32,
    /// Whether it broke its grant at some point (its own RNRs do not count against the ledger).
    greedy: bool,
}

struct Srq {
    nic: Box<SoftNic>,
    pool: RecvPool<'static, 256>,
    sinks: PagePool<'static, 64>,
    payloads: PagePool<'static, 64>,
    send: Vec<&'static DmaMemory>,
    conns: Vec<Option<(SharedSlot, Connection<'static, 64>)>>,
    queue: SharedQueue<QPS>,
    service: ExampleService,
    peers: [Requester; QPS],
    /// RNRs met by requesters that obeyed their grants: must stay 0.
    rnr_obeying: usize,
    /// Messages a closed connection's requester tried to send (its queue pair is in error).
    refused_by_closed_qp: usize,
    next_xid: u32,
    epoch: u16,
    credits: u16,
}

impl Srq {
    /// `receives` Receives on the shared queue; each connection asks for up to `credits`.
    fn new(receives: u32, credits: u16) -> Srq {
        let cfg = PoolConfig {
            buffer_size: 1024,
            credits: (receives - receives / 4) as u16,
            batch: (receives / 4) as u16,
            limits: DecodeLimits::DEFAULT,
            buffers: 0,
            epoch: 1,
        };
        let recv = leak(cfg.needed_region_len());
        let mut nic = recv.nic();
        let sink = leak(64 * 1024);
        let payload = leak(64 * 1024);
        sink.register(&mut nic, 0x10_0000_0000, 2);
        payload.register(&mut nic, 0x20_0000_0000, 3);
        let rc = Self::config(credits, 0);
        let mut send = Vec::new();
        for k in 0..QPS {
            let m = leak(rc.send_region_len());
            m.register(&mut nic, Self::iova(k), 10 + k as u32);
            send.push(m);
        }
        let mut pool = RecvPool::new(recv.region(), cfg).unwrap();
        pool.refill(&mut *nic).unwrap();
        Srq {
            nic,
            pool,
            sinks: PagePool::new(sink.region_at(0x10_0000_0000, 2), 4096).unwrap(),
            payloads: PagePool::new(payload.region_at(0x20_0000_0000, 3), 4096).unwrap(),
            send,
            conns: (0..QPS).map(|_| None).collect(),
            queue: SharedQueue::new(),
            service: ExampleService::default(),
            peers: [Requester::default(); QPS],
            rnr_obeying: 0,
            refused_by_closed_qp: 0,
            next_xid: 0,
            epoch: 10,
            credits,
        }
    }

    fn config(credits: u16, epoch: u16) -> ResponderConfig {
        ResponderConfig {
            credits,
            send_size: 1024,
            initiator_depth: 2,
            sq_depth: 128,
            epoch,
            signal_all: false,
        }
    }

    fn iova(k: usize) -> u64 {
        0x30_0000_0000 + ((k as u64) << 32)
    }

    fn check(&self, when: &str) {
        assert!(
            self.queue.promised() <= self.pool.posted() as u64,
            "{when}: {} Receives promised, {} posted",
            self.queue.promised(),
            self.pool.posted()
        );
    }

    /// Connection `k` asks to connect: admitted, or refused with the queue's reason.
    fn open(&mut self, k: usize) -> Result<(), AdmitError> {
        assert!(self.conns[k].is_none());
        let slot = self.queue.open(self.pool.posted())?;
        self.epoch += 1;
        let rc = Self::config(self.credits, self.epoch);
        let conn = Connection::new(
            self.send[k].region_at(Self::iova(k), 10 + k as u32),
            rc,
            1024,
        )
        .unwrap();
        self.conns[k] = Some((slot, conn));
        self.peers[k] = Requester {
            granted: 1,
            ..Requester::default()
        };
        self.check("after admitting a connection");
        Ok(())
    }

    /// Connection `k` goes away: its queue pair is destroyed, its calls give back what they
    /// hold.
    fn close(&mut self, k: usize) {
        let Some((slot, mut conn)) = self.conns[k].take() else {
            return;
        };
        let mut res = Resources::shared(&mut self.pool, &mut self.sinks, &mut self.payloads);
        self.queue.close(slot, &mut res, &mut conn);
        self.peers[k] = Requester::default();
        self.check("after closing a connection");
    }

    fn is_open(&self, k: usize) -> bool {
        self.conns[k].is_some()
    }

    /// Requester `k` sends one NULL call. `obey`: only if its grant allows (returns false if
    /// not). A closed connection's queue pair refuses it.
    fn send(&mut self, k: usize, obey: bool) -> bool {
        let p = self.peers[k];
        if obey && p.outstanding >= p.granted {
            return false;
        }
        if !self.is_open(k) {
            self.refused_by_closed_qp += 1;
            return false;
        }
        if !obey {
            self.peers[k].greedy = true;
        }
        self.next_xid += 1;
        let xid = (k as u32) << 24 | (self.next_xid & 0xff_ffff);
        let msg = call_message(
            xid,
            Proc::Msg,
            &[],
            None,
            None,
            &rpc_call(xid, NFS_PROG, 3, 0, &[]),
        );
        match self.nic.deliver_on(k as u32, &msg) {
            Ok(_) => {
                self.peers[k].outstanding += 1;
                true
            }
            Err(_) => {
                // RNR: a Linux requester's connection would die here.
                if !self.peers[k].greedy {
                    self.rnr_obeying += 1;
                }
                false
            }
        }
    }

    /// Sends as many calls as requester `k`'s grant allows.
    fn fill(&mut self, k: usize) -> u32 {
        let mut n = 0;
        while self.send(k, true) {
            n += 1;
        }
        n
    }

    /// The server polls, handles, flushes; the requesters read their replies. A connection
    /// the queue closed (a requester over its grant) is torn down as a front end would.
    fn pump(&mut self) {
        let mut wcs = [Completion::EMPTY; 16];
        loop {
            let n = Device::poll(&mut *self.nic, &mut wcs);
            let mut touched = [false; QPS];
            for wc in &wcs[..n] {
                let k = wc.qp as usize;
                let mut res =
                    Resources::shared(&mut self.pool, &mut self.sinks, &mut self.payloads);
                match self.conns[k].as_mut() {
                    Some((slot, conn)) => {
                        touched[k] = true;
                        self.queue.handle(
                            *slot,
                            &mut res,
                            conn,
                            &mut CoherentDma,
                            &mut self.service,
                            wc,
                        );
                    }
                    None => {
                        self.queue.stray(&mut res, &mut CoherentDma, wc);
                    }
                }
                self.check("after a completion");
            }
            for k in (0..QPS).filter(|k| touched[*k]) {
                let Some((slot, conn)) = self.conns[k].as_mut() else {
                    continue;
                };
                let mut res =
                    Resources::shared(&mut self.pool, &mut self.sinks, &mut self.payloads);
                let mut port = self.nic.port(k as u32);
                let _ = self
                    .queue
                    .flush(*slot, &mut res, conn, &mut port, &mut self.service);
                self.check("after a flush");
                if self.conns[k].as_ref().is_some_and(|(_, c)| c.is_closing()) {
                    self.close(k);
                }
            }
            while let Some(sent) = self.nic.take_sent() {
                let r = parse_reply(&sent.bytes, sent.posted_at_send);
                let k = (r.xid >> 24) as usize;
                let p = &mut self.peers[k];
                p.granted = r.credits;
                p.outstanding = p.outstanding.saturating_sub(1);
            }
            if n == 0 && self.nic.queued() == 0 && self.nic.pending() == 0 {
                break;
            }
        }
    }

    fn overruns(&self, k: usize) -> u64 {
        self.conns[k]
            .as_ref()
            .map_or(0, |(_, c)| c.counters().grant_overruns)
    }
}

#[test]
fn a_newcomer_under_load_finds_a_receive_for_its_first_call() {
    // 32 Receives; two busy connections asking for 16 credits each.
    let mut s = Srq::new(32, 16);
    s.open(0).unwrap();
    s.open(1).unwrap();
    for _ in 0..20 {
        s.fill(0);
        s.fill(1);
        s.pump();
    }
    // Both requesters now send everything their grants allow, and a newcomer arrives before
    // the server has looked at any of it.
    s.fill(0);
    s.fill(1);
    s.open(2).expect("a Receive is kept free for a newcomer");
    assert!(s.send(2, true), "the newcomer's first call meets no RNR");
    s.pump();
    for _ in 0..20 {
        for k in 0..3 {
            s.fill(k);
        }
        s.pump();
    }
    assert_eq!(s.rnr_obeying, 0);
    assert_eq!(s.nic.counters.rnr, 0);
}

#[test]
fn more_connections_than_receives_are_refused_with_a_reason() {
    // 4 Receives, 6 connections trying: the queue admits only those it can give a Receive.
    let mut s = Srq::new(4, 8);
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for k in 0..QPS {
        match s.open(k) {
            Ok(()) => admitted.push(k),
            Err(e) => refused.push(e),
        }
    }
    assert!(!admitted.is_empty() && admitted.len() <= 4, "{admitted:?}");
    assert!(!refused.is_empty());
    for e in &refused {
        assert!(
            matches!(e, AdmitError::NoReceive { posted: 4, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("RNR"), "{e}");
    }
    // Every admitted requester sends its first call at the same instant: none meets RNR.
    for &k in &admitted {
        assert!(s.send(k, true));
    }
    s.pump();
    for _ in 0..30 {
        for &k in &admitted {
            s.fill(k);
        }
        s.pump();
    }
    assert_eq!((s.rnr_obeying, s.nic.counters.rnr), (0, 0));
}

#[test]
fn a_requester_over_its_grant_is_closed_before_it_takes_the_others_receives() {
    let mut s = Srq::new(32, 16);
    s.open(0).unwrap();
    s.open(1).unwrap();
    for _ in 0..20 {
        s.fill(0);
        s.fill(1);
        s.pump();
    }
    let grant = s.peers[0].granted;
    assert!(grant > 1);
    // Requester 0 sends its grant and then one call more, before reading a reply...
    for _ in 0..grant {
        assert!(s.send(0, false));
    }
    assert!(
        s.send(0, false),
        "the excess call takes the queue's spare Receive"
    );
    // ...and the well-behaved requester has everything its grant allows in flight behind it.
    assert!(s.fill(1) > 0);
    // The server takes the completions in arrival order (the software NIC's CQ), in one batch.
    s.pump();
    assert!(
        !s.is_open(0),
        "the offender was closed at its first excess call"
    );
    // The rest of its burst meets a queue pair in error, not the others' Receives.
    for _ in 0..grant {
        s.send(0, false);
    }
    assert!(
        s.refused_by_closed_qp as u32 >= grant - 1,
        "the rest of its burst met a closed queue pair ({})",
        s.refused_by_closed_qp
    );
    // The other requester never met RNR and goes on.
    for _ in 0..20 {
        s.fill(1);
        s.pump();
    }
    assert_eq!(s.rnr_obeying, 0);
    assert_eq!(s.overruns(1), 0);
}

#[test]
fn a_cut_grant_frees_its_share_only_as_replies_go_out() {
    let mut s = Srq::new(32, 16);
    s.open(0).unwrap();
    s.open(1).unwrap();
    for _ in 0..10 {
        s.fill(0);
        s.fill(1);
        s.pump();
    }
    let before = s.queue.promised();
    // Connection 0's grant is cut to 1 while its requester still acts on the old one.
    s.conns[0].as_mut().unwrap().1.set_grant_cap(1);
    s.fill(0);
    s.fill(1);
    assert_eq!(s.rnr_obeying, 0);
    s.pump();
    // Connection 1 may take the freed share only as requester 0 reads its cut grants: after
    // enough rounds its grant rises, never with an RNR on the way.
    for _ in 0..20 {
        s.fill(0);
        s.fill(1);
        s.pump();
    }
    assert_eq!(s.peers[0].granted, 1);
    assert!(s.queue.promised() <= before + 1);
    assert_eq!((s.rnr_obeying, s.nic.counters.rnr), (0, 0));
}

#[test]
fn busy_connections_keep_within_the_shared_receives_and_all_progress() {
    let mut s = Srq::new(32, 16);
    for k in 0..3 {
        s.open(k).unwrap();
    }
    let mut replies = [0u32; 3];
    for _ in 0..200 {
        for (k, r) in replies.iter_mut().enumerate() {
            *r += s.fill(k);
        }
        s.pump();
    }
    assert_eq!((s.rnr_obeying, s.nic.counters.rnr), (0, 0));
    assert!(replies.iter().all(|r| *r > 500), "{replies:?}");
}

#[test]
fn a_closed_connection_gives_back_its_share_and_the_others_go_on() {
    let mut s = Srq::new(32, 16);
    for k in 0..3 {
        s.open(k).unwrap();
    }
    let round = |s: &mut Srq, live: &[usize]| {
        for &k in live {
            s.fill(k);
        }
        s.pump();
    };
    for _ in 0..20 {
        round(&mut s, &[0, 1, 2]);
    }
    // Connection 1 goes away (its queue pair destroyed): its calls give back what they hold,
    // its demand stops counting, the shared pool stays open for the others.
    let promised = s.queue.promised();
    s.close(1);
    assert!(
        !s.pool.is_closing(),
        "the shared pool is not the connection's to close"
    );
    assert_eq!(s.queue.connections(), 2);
    assert!(s.queue.promised() < promised);
    let grants = (s.peers[0].granted, s.peers[2].granted);
    for _ in 0..20 {
        round(&mut s, &[0, 2]);
    }
    assert!(
        s.peers[0].granted >= grants.0 && s.peers[2].granted >= grants.1,
        "the freed share goes to the others"
    );
    assert_eq!((s.rnr_obeying, s.nic.counters.rnr), (0, 0));
    // The freed row takes a newcomer; beyond the table's size the queue refuses.
    s.open(1).expect("the closed connection's row");
    for k in 3..QPS {
        s.open(k).unwrap_or_else(|e| panic!("row {k}: {e}"));
    }
    let mut full = SharedQueue::<QPS>::new();
    for _ in 0..QPS {
        full.open(usize::MAX).unwrap();
    }
    assert_eq!(
        full.open(usize::MAX),
        Err(AdmitError::Full { connections: QPS }),
        "the table is full"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Open(usize),
    Close(usize),
    /// Requester k sends up to n calls within its grant.
    Send(usize, u32),
    /// Requester k sends one call over its grant (the server then keeps up).
    Greedy(usize),
    /// Connection k's grant cap changes.
    Cap(usize, u16),
    Pump,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..QPS).prop_map(Op::Open),
        (0..QPS).prop_map(Op::Close),
        ((0..QPS), 1..20u32).prop_map(|(k, n)| Op::Send(k, n)),
        (0..QPS).prop_map(Op::Greedy),
        ((0..QPS), 1..20u16).prop_map(|(k, c)| Op::Cap(k, c)),
        Just(Op::Pump),
        Just(Op::Pump),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random connects, disconnects, grant changes and greedy sends: every requester that
    /// obeyed its grant meets no RNR, and the invariant holds after every step.
    #[test]
    fn no_obeying_requester_ever_meets_rnr(
        receives in 4..48u32,
        credits in 1..24u16,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut s = Srq::new(receives, credits);
        for op in ops {
            match op {
                Op::Open(k) if !s.is_open(k) => {
                    let _ = s.open(k);
                }
                Op::Close(k) => s.close(k),
                Op::Send(k, n) => {
                    for _ in 0..n {
                        if !s.send(k, true) {
                            break;
                        }
                    }
                }
                Op::Greedy(k) if s.is_open(k) => {
                    s.send(k, false);
                    s.pump();
                }
                Op::Cap(k, c) => {
                    if let Some((_, conn)) = s.conns[k].as_mut() {
                        conn.set_grant_cap(c);
                    }
                }
                _ => s.pump(),
            }
            prop_assert_eq!(s.rnr_obeying, 0);
        }
        s.pump();
        prop_assert_eq!(s.rnr_obeying, 0);
    }
}
