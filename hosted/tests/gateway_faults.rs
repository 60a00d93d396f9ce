//! The gateway under backend faults, without RDMA hardware: the gateway is the service of a
//! core [`Endpoint`] on the software NIC (the same responder the verbs server runs), and its
//! backend is a scripted ONC RPC server on loopback TCP that can reset connections, answer late
//! or never accept.
//!
//! What a user of a transparent NFS front end depends on: one backend connection per client,
//! client xids unchanged, a backend restart is a delay (reconnect from the same local port,
//! every waiting call resent with its xid), and a backend that never answers a connect does not
//! stall the loop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpcrdma_core::endpoint::{Endpoint, EndpointConfig};
use rpcrdma_core::responder::{BackchannelError, CallHandle, Connections, PayloadPages};
use rpcrdma_core::wire::{decode_reply, HeaderRepr, ReadSegment, Reply, Segment};
use rpcrdma_core::xdr::XdrView;
use rpcrdma_hosted::gateway::{Answer, Gateway, GatewayConfig};
use rpcrdma_hosted::server::App;
use rpcrdma_services::oncrpc;
use rpcrdma_softnic::memory::DmaMemory;
use rpcrdma_softnic::{Access, SoftNic};

const SOURCE_RKEY: u32 = 0x51;
const SOURCE_ADDR: u64 = 0x5100_0000_0000;
const TARGET_RKEY: u32 = 0x52;
const TARGET_ADDR: u64 = 0x5200_0000_0000;

type Nic = SoftNic<64, 64, 128, 4096, 16>;
type Ep = Endpoint<'static, 64, 64, 16>;

/// One RDMA connection: its software NIC and its endpoint (epoch = connection number).
struct Client {
    nic: Box<Nic>,
    /// Requester memory the gateway RDMA-Reads Read-chunk data from.
    source: &'static mut DmaMemory,
    /// Requester memory the gateway RDMA-Writes READ data into (write chunks).
    target: &'static mut DmaMemory,
    endpoint: Ep,
    replies: Vec<(u32, Vec<u8>)>,
    /// Backward calls (callbacks) that reached this requester, answered at once.
    callbacks: Vec<u32>,
    /// The grant of each reply, in order.
    grants: Vec<u32>,
}

impl Client {
    fn new(epoch: u16) -> Client {
        let config = EndpointConfig {
            credits: 16,
            sink_bytes: 64 * 1024,
            payload_bytes: 64 * 1024,
            epoch,
            ..EndpointConfig::DEFAULT
        };
        let memory: &'static mut DmaMemory = DmaMemory::leak(config.region_len());
        let mut nic: Box<Nic> = Box::new(Nic::new());
        memory.register(&mut nic, 0x7e00_0000_0000, 1);
        let mut endpoint = Endpoint::new(memory.region_at(0x7e00_0000_0000, 1), &config).unwrap();
        endpoint.refill(&mut *nic).unwrap();
        let source: &'static mut DmaMemory = DmaMemory::leak(256 * 1024);
        source.register_remote(&mut nic, SOURCE_RKEY, SOURCE_ADDR, Access::Read);
        let target: &'static mut DmaMemory = DmaMemory::leak(256 * 1024);
        target.register_remote(&mut nic, TARGET_RKEY, TARGET_ADDR, Access::Write);
        Client {
            nic,
            source,
            target,
            endpoint,
            replies: Vec::new(),
            callbacks: Vec::new(),
            grants: Vec::new(),
        }
    }

    /// The requester sends an ONC RPC call (program 100003 v3, `proc_`) with `xid`.
    fn call(&mut self, xid: u32, proc_: u32) {
        let mut msg = vec![0u8; 28 + 40];
        let h = HeaderRepr::reply(xid, 16).emit(&mut msg).unwrap();
        let c = oncrpc::emit_call(&mut msg[h..], xid, 100_003, 3, proc_).unwrap();
        msg.truncate(h + c);
        self.nic.deliver(&msg).expect("a Receive is posted");
    }

    /// The requester sends `rpc` inline after the transport header `repr`.
    fn send(&mut self, repr: &HeaderRepr, rpc: &[u8]) {
        let mut msg = vec![0u8; repr.buffer_len() + rpc.len()];
        let h = repr.emit(&mut msg).unwrap();
        msg[h..h + rpc.len()].copy_from_slice(rpc);
        msg.truncate(h + rpc.len());
        self.nic.deliver(&msg).expect("a Receive is posted");
    }
}

impl Client {
    /// A call (NFSv3 WRITE-like: program 100003 v3 proc 7) whose `data` travels in a Read chunk
    /// after the call's 44 inline bytes (RPC header and a length word), as the Linux client
    /// sends WRITE data. Returns the XDR stream the backend must receive.
    fn call_with_data(&mut self, xid: u32, data: &[u8], at: usize) -> Vec<u8> {
        self.source.bytes_mut()[at..at + data.len()].copy_from_slice(data);
        let mut rpc = vec![0u8; 64];
        let c = oncrpc::emit_call(&mut rpc, xid, 100_003, 3, 7).unwrap();
        rpc.truncate(c);
        rpc.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut repr = HeaderRepr::reply(xid, 16);
        repr.read_list
            .push(ReadSegment {
                position: rpc.len() as u32,
                segment: Segment {
                    handle: SOURCE_RKEY,
                    length: data.len() as u32,
                    offset: SOURCE_ADDR + at as u64,
                },
            })
            .unwrap();
        self.send(&repr, &rpc);
        let mut stream = rpc;
        stream.extend_from_slice(data);
        stream.resize(stream.len().next_multiple_of(4), 0);
        stream
    }
}

impl Client {
    /// An NFSv3 READ of `count` bytes (its only argument here), offering a write chunk at
    /// `at` of the requester's target memory, as the Linux client does.
    fn read_call(&mut self, xid: u32, count: u32, at: usize) {
        self.read_call_v(3, xid, count, at);
    }

    /// A READ as NFS version `vers` sends it: NFSv3 READ, or for 4 a COMPOUND (whose
    /// operations the scripted backend does not parse; its reply is SEQUENCE, PUTFH, READ).
    fn read_call_v(&mut self, vers: u32, xid: u32, count: u32, at: usize) {
        let proc_ = if vers == 4 { 1 } else { 6 };
        let mut rpc = vec![0u8; 64];
        let c = oncrpc::emit_call(&mut rpc, xid, 100_003, vers, proc_).unwrap();
        rpc.truncate(c);
        rpc.extend_from_slice(&count.to_be_bytes());
        let repr = HeaderRepr::reply(xid, 16)
            .with_write_chunk(&[Segment {
                handle: TARGET_RKEY,
                length: count,
                offset: TARGET_ADDR + at as u64,
            }])
            .unwrap();
        self.send(&repr, &rpc);
    }
}

/// The pending calls of the test's clients and their payload pages, as the hosted server
/// offers its connections'.
struct Calls<'c, 'd>(&'c mut [&'d mut Client]);

impl Calls<'_, '_> {
    /// The client whose connection has `epoch`.
    fn of(&mut self, epoch: u16) -> Option<&mut Ep> {
        self.0
            .iter_mut()
            .map(|c| &mut c.endpoint)
            .find(|e| e.connection().epoch() == epoch)
    }
}

impl Connections for Calls<'_, '_> {
    fn pending_view(&self, handle: CallHandle) -> Option<XdrView<'_>> {
        let c = self
            .0
            .iter()
            .find(|c| c.endpoint.connection().epoch() == handle.epoch)?;
        c.endpoint.pending_view(handle).ok()
    }

    fn payload_pages(&mut self, epoch: u16) -> Option<&mut dyn PayloadPages> {
        Connections::payload_pages(self.of(epoch)?, epoch)
    }

    fn send_backchannel(
        &mut self,
        epoch: u16,
        deadline: u64,
        call: &[u8],
    ) -> Result<bool, BackchannelError> {
        let e = self.of(epoch).ok_or(BackchannelError::Closed)?;
        Connections::send_backchannel(e, epoch, deadline, call)
    }
}

/// Runs the endpoints and the gateway's loop for `for_how_long`; returns the longest single
/// `Gateway::poll`.
fn run(clients: &mut [&mut Client], gw: &mut Gateway, for_how_long: Duration) -> Duration {
    let end = Instant::now() + for_how_long;
    let mut longest = Duration::ZERO;
    let mut later: Vec<(CallHandle, Answer)> = Vec::new();
    while Instant::now() < end {
        for c in clients.iter_mut() {
            // As the hosted server does before every batch: the gateway's brake on the grant.
            let cap = gw.credit_cap(c.endpoint.connection().epoch());
            c.endpoint.set_grant_cap(cap.unwrap_or(u16::MAX));
            c.endpoint.poll(&mut *c.nic, gw).unwrap();
        }
        let t = Instant::now();
        gw.poll(&mut Calls(&mut *clients));
        longest = longest.max(t.elapsed());
        while let Some(a) = gw.next_answer() {
            later.push(a);
        }
        // As the hosted server does: write each answer; one written, or whose call is gone,
        // goes back to the gateway with the pages it came from.
        for (handle, mut answer) in std::mem::take(&mut later) {
            let Some(c) = clients
                .iter_mut()
                .find(|c| c.endpoint.connection().epoch() == handle.epoch)
            else {
                continue;
            };
            let done = c
                .endpoint
                .complete_pending(handle, |call, w| gw.write_answer(&mut answer, call, w));
            match done {
                Ok(false) => later.push((handle, answer)),
                Ok(true) | Err(_) => {
                    if let Some(pages) = Connections::payload_pages(&mut c.endpoint, handle.epoch) {
                        gw.release_answer(answer, pages);
                    }
                }
            }
        }
        for c in clients.iter_mut() {
            while let Some(sent) = c.nic.take_sent() {
                if let Ok(Reply::Rpc(r)) = decode_reply(&sent.bytes) {
                    if r.rpc_message.get(4..8) == Some(&[0, 0, 0, 0][..]) {
                        // A backward call: the requester answers it (RFC 8167), granting 2
                        // backward credits.
                        c.callbacks.push(r.xid);
                        let mut msg = vec![0u8; 28 + 24];
                        let h = HeaderRepr::reply(r.xid, 2).emit(&mut msg).unwrap();
                        let n = oncrpc::emit_accepted_reply(
                            &mut msg[h..],
                            r.xid,
                            oncrpc::AcceptStat::Success,
                        )
                        .unwrap();
                        msg.truncate(h + n);
                        c.nic.deliver(&msg).expect("a Receive is posted");
                        continue;
                    }
                    c.replies.push((r.xid, r.rpc_message.to_vec()));
                    c.grants.push(r.credits);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    longest
}

/// What the scripted backend saw: per connection, the client's port and the xids it received.
#[derive(Default)]
struct Seen {
    connections: Vec<(u16, Vec<u32>)>,
    /// Per connection, every record's bytes (mark excluded).
    records: Vec<Vec<Vec<u8>>>,
    /// Xids of the callback replies the backend received.
    callback_replies: Vec<u32>,
}

/// An ONC RPC server on loopback that answers every call (result: the connection's number),
/// except on its first connection when `reset_first` is given: that one answers nothing and is
/// reset once it has read that many calls (a restart with every call in flight).
fn backend(reset_first: Option<usize>) -> (SocketAddr, Arc<Mutex<Seen>>) {
    backend_with_delay(reset_first, Duration::ZERO)
}

/// [`backend`], answering each call `delay` after reading it (a slow server).
fn backend_with_delay(
    reset_first: Option<usize>,
    delay: Duration,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { break };
            let seen = Arc::clone(&seen2);
            let reset_after = if n == 0 { reset_first } else { None };
            std::thread::spawn(move || serve_backend(stream, n, reset_after, delay, seen));
        }
    });
    (addr, seen)
}

fn serve_backend(
    mut s: TcpStream,
    n: usize,
    reset_after: Option<usize>,
    delay: Duration,
    seen: Arc<Mutex<Seen>>,
) {
    let port = s.peer_addr().unwrap().port();
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.connections.push((port, Vec::new()));
        seen.records.push(Vec::new());
        seen.connections.len() - 1
    };
    let mut got = 0;
    let mut waiting_trigger: Option<u32> = None;
    loop {
        let mut mark = [0u8; 4];
        if s.read_exact(&mut mark).is_err() {
            return;
        }
        let len = (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize;
        let mut call = vec![0u8; len];
        if s.read_exact(&mut call).is_err() {
            return;
        }
        let xid = u32::from_be_bytes(call[..4].try_into().unwrap());
        if call[4..8] == [0, 0, 0, 1] {
            // The client's reply to a callback: the pending trigger call is answered with the
            // callback's xid.
            seen.lock().unwrap().callback_replies.push(xid);
            if let Some(trigger) = waiting_trigger.take() {
                let mut reply = vec![0u8; 28];
                let r =
                    oncrpc::emit_accepted_reply(&mut reply, trigger, oncrpc::AcceptStat::Success)
                        .unwrap();
                reply.truncate(r);
                reply.extend_from_slice(&xid.to_be_bytes());
                let mut out = (0x8000_0000u32 | reply.len() as u32).to_be_bytes().to_vec();
                out.extend_from_slice(&reply);
                if s.write_all(&out).is_err() {
                    return;
                }
            }
            continue;
        }
        if call[20..24] == [0, 0, 0, 99] {
            // A trigger: the backend calls the client back (as nfsd sends CB_RECALL on the
            // connection the client bound its backchannel to) before it answers.
            let mut cb = vec![0u8; 40];
            let n =
                oncrpc::emit_call(&mut cb, 0xC0DE_0000 | got as u32, 0x4000_0000, 1, 1).unwrap();
            cb.truncate(n);
            let mut out = (0x8000_0000u32 | cb.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&cb);
            if s.write_all(&out).is_err() {
                return;
            }
            waiting_trigger = Some(xid);
            got += 1;
            continue;
        }
        {
            let mut seen = seen.lock().unwrap();
            seen.connections[index].1.push(xid);
            seen.records[index].push(call.clone());
        }
        got += 1;
        if let Some(limit) = reset_after {
            if got == limit {
                // A restart: the connection is reset with every call unanswered.
                let sock = socket2::SockRef::from(&s);
                let _ = sock.set_linger(Some(Duration::ZERO));
                return;
            }
            continue;
        }
        std::thread::sleep(delay);
        let mut reply = vec![0u8; 28];
        let r = oncrpc::emit_accepted_reply(&mut reply, xid, oncrpc::AcceptStat::Success).unwrap();
        reply.truncate(r);
        let vers = u32::from_be_bytes(call[16..20].try_into().unwrap());
        let proc_ = u32::from_be_bytes(call[20..24].try_into().unwrap());
        if vers == 4 && proc_ == 1 {
            // COMPOUND4res: NFS4_OK, empty tag, 3 results: SEQUENCE, PUTFH, READ (eof, data).
            let count = u32::from_be_bytes(call[40..44].try_into().unwrap());
            for word in [0u32, 0, 3, 53, 0] {
                reply.extend_from_slice(&word.to_be_bytes());
            }
            reply.extend_from_slice(&[0x5e; 16]);
            for word in [1, 0, 63, 63, 0, 22, 0, 25, 0, 1, count] {
                reply.extend_from_slice(&word.to_be_bytes());
            }
            reply.extend(read_data(xid, count as usize));
            reply.resize(reply.len().next_multiple_of(4), 0);
        } else if proc_ == 6 {
            // An NFSv3 READ result: NFS3_OK, attributes, count, eof, the data and its pad.
            let count = u32::from_be_bytes(call[40..44].try_into().unwrap());
            reply.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
            reply.extend_from_slice(&[0u8; 84]);
            for word in [count, 1, count] {
                reply.extend_from_slice(&word.to_be_bytes());
            }
            reply.extend(read_data(xid, count as usize));
            reply.resize(reply.len().next_multiple_of(4), 0);
        } else {
            reply.extend_from_slice(&(n as u32).to_be_bytes());
        }
        let mut out = (0x8000_0000u32 | reply.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

fn gateway(addr: SocketAddr, call_timeout: Duration) -> Gateway {
    Gateway::new(GatewayConfig {
        call_timeout,
        reserved_port: false,
        ..GatewayConfig::new(addr)
    })
}

/// The result word of a reply from the scripted backend: which backend connection answered.
fn answered_by(rpc: &[u8]) -> u32 {
    let (_, stat, at) = oncrpc::parse_accepted_reply(rpc).unwrap();
    assert_eq!(stat, 0);
    u32::from_be_bytes(rpc[at..at + 4].try_into().unwrap())
}

#[test]
fn a_backend_reset_is_a_delay_calls_are_resent_with_their_xids_from_the_same_port() {
    let (addr, seen) = backend(Some(8));
    let mut gw = gateway(addr, Duration::from_secs(30));
    let mut c = Client::new(5);
    let xids: Vec<u32> = (0..8).map(|k| 0x1000 + k).collect();
    for &xid in &xids {
        c.call(xid, 0);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.replies.len() < xids.len() && Instant::now() < deadline {
        run(&mut [&mut c], &mut gw, Duration::from_millis(50));
    }
    let mut got: Vec<u32> = c.replies.iter().map(|(x, _)| *x).collect();
    got.sort_unstable();
    assert_eq!(got, xids, "every call answered once, after the reconnect");
    assert!(c.replies.iter().all(|(_, rpc)| answered_by(rpc) == 1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connections.len(), 2, "one reconnect");
    let (first, second) = (&seen.connections[0], &seen.connections[1]);
    assert_eq!(first.0, second.0, "the reconnect binds the same local port");
    assert_eq!(first.1, xids, "the client's xids, unchanged");
    assert_eq!(
        second.1, xids,
        "every waiting call resent, same xid, same order"
    );
    assert_eq!((gw.stats.reconnects, gw.stats.resent), (1, 8));
    assert_eq!(gw.stats.backend_errors, 0, "no call failed");
    assert_eq!(gw.waiting(), 0);
}

#[test]
fn each_client_gets_its_own_backend_connection_and_keeps_its_xids() {
    let (addr, seen) = backend(None);
    let mut gw = gateway(addr, Duration::from_secs(30));
    let (mut a, mut b) = (Client::new(1), Client::new(2));
    // Both clients use the same xids: a shared xid space would confuse them.
    for xid in 1..=4 {
        a.call(xid, 0);
        b.call(xid, 0);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while (a.replies.len() < 4 || b.replies.len() < 4) && Instant::now() < deadline {
        run(&mut [&mut a, &mut b], &mut gw, Duration::from_millis(50));
    }
    assert_eq!((a.replies.len(), b.replies.len()), (4, 4));
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.connections.len(),
        2,
        "one backend connection per client"
    );
    assert_ne!(seen.connections[0].0, seen.connections[1].0);
    for (_, xids) in &seen.connections {
        assert_eq!(xids, &vec![1, 2, 3, 4], "xids pass through unchanged");
    }
    // Each client's replies came from one backend connection, not the other's.
    let by = |c: &Client| {
        let mut v: Vec<u32> = c.replies.iter().map(|(_, r)| answered_by(r)).collect();
        v.dedup();
        v
    };
    let (ba, bb) = (by(&a), by(&b));
    assert_eq!((ba.len(), bb.len()), (1, 1));
    assert_ne!(ba, bb);
    let ports: Vec<u16> = gw.backend_ports().iter().map(|(_, p)| *p).collect();
    assert_eq!(ports.len(), 2);
}

#[test]
fn a_backend_that_never_answers_the_connect_does_not_stall_the_loop() {
    // A listener that never accepts, with its accept queue filled: further SYNs are dropped,
    // so a connect to it neither completes nor fails (a black hole, on loopback).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let _fill: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    let mut gw = gateway(addr, Duration::from_millis(800));
    let mut c = Client::new(3);
    c.call(0x77, 0);
    let longest = run(&mut [&mut c], &mut gw, Duration::from_millis(1500));
    assert!(
        longest < Duration::from_millis(50),
        "the loop stalled for {longest:?} on a connect"
    );
    // The call's deadline passed: SYSTEM_ERR, which the client sees as an error, not a hang.
    assert_eq!(c.replies.len(), 1);
    let (_, stat, _) = oncrpc::parse_accepted_reply(&c.replies[0].1).unwrap();
    assert_eq!(stat, 5, "SYSTEM_ERR");
    assert_eq!(gw.stats.expired, 1);
    drop(socket);
}

#[test]
fn a_slow_backend_lowers_the_grant_instead_of_holding_without_bound() {
    let (addr, _) = backend_with_delay(None, Duration::from_millis(15));
    // Calls here are 44-byte records: the brake after 4 held.
    let cap = 4 * 44;
    let mut gw = Gateway::new(GatewayConfig {
        reserved_port: false,
        max_held_per_connection: cap,
        ..GatewayConfig::new(addr)
    });
    let mut c = Client::new(4);
    // A requester that keeps within the grant it last received (1 before the first reply).
    let (total, mut sent, mut granted) = (60u32, 0u32, 1u32);
    let deadline = Instant::now() + Duration::from_secs(20);
    while (c.replies.len() as u32) < total && Instant::now() < deadline {
        while sent < total && sent - (c.replies.len() as u32) < granted {
            c.call(0x5000 + sent, 0);
            sent += 1;
        }
        run(&mut [&mut c], &mut gw, Duration::from_millis(5));
        granted = c.grants.last().copied().unwrap_or(1);
    }
    assert_eq!(c.replies.len() as u32, total, "every call answered");
    assert!(
        c.grants.contains(&1),
        "the grant dropped to 1 while the backend lagged: {:?}",
        c.grants
    );
    assert_eq!(
        c.grants.last(),
        Some(&16),
        "full grant again once it caught up"
    );
    // Held bytes never exceed the cap plus one full grant of calls.
    let bound = (cap + 16 * 44) as u64;
    assert!(
        gw.stats.peak_held_per_connection <= bound,
        "peak held {} > {bound}",
        gw.stats.peak_held_per_connection
    );
    assert_eq!(gw.held_bytes(), 0);
}

#[test]
fn write_data_is_forwarded_and_resent_byte_for_byte_from_the_sink_pages() {
    let (addr, seen) = backend(Some(2));
    let mut gw = gateway(addr, Duration::from_secs(30));
    let mut c = Client::new(6);
    // Lengths that are not multiples of 4: the stream carries the XDR pad.
    let streams = [
        c.call_with_data(0x2000, &pattern(1, 30_001), 0),
        c.call_with_data(0x2001, &pattern(2, 20_003), 64 * 1024),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.replies.len() < 2 && Instant::now() < deadline {
        run(&mut [&mut c], &mut gw, Duration::from_millis(50));
    }
    assert_eq!(
        c.replies.len(),
        2,
        "both answered after the reconnect: {:?} {:?}",
        c.endpoint.counters(),
        gw.stats
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.records.len(), 2, "one reconnect");
    for (n, records) in seen.records.iter().enumerate() {
        assert_eq!(records.len(), 2, "connection {n}: both calls");
        for (got, want) in records.iter().zip(&streams) {
            assert!(got == want, "connection {n}: the call's exact stream");
        }
    }
    assert_eq!(gw.stats.resent, 2);
    // Answered: the sink pages and Receives are given back.
    assert_eq!(
        c.endpoint.sinks().free_pages(),
        c.endpoint.sinks().page_count()
    );
    assert_eq!(c.endpoint.pool().held(), 0);
    assert_eq!(gw.held_bytes(), 0);
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The data the scripted backend answers a READ with.
fn read_data(xid: u32, len: usize) -> Vec<u8> {
    pattern(xid as u8, len)
}

#[test]
fn read_data_goes_from_the_socket_into_payload_pages_and_the_clients_write_chunk() {
    let (addr, _) = backend(None);
    let mut gw = gateway(addr, Duration::from_secs(30));
    let mut c = Client::new(7);
    // One READ large enough for the pages, one below the size worth them, odd lengths.
    let reads = [
        (0x3000u32, 40_001u32, 0usize),
        (0x3001, 1_001, 64 * 1024),
        (0x3002, 30_003, 128 * 1024),
    ];
    c.read_call(reads[0].0, reads[0].1, reads[0].2);
    c.read_call(reads[1].0, reads[1].1, reads[1].2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.replies.len() < 2 && Instant::now() < deadline {
        run(&mut [&mut c], &mut gw, Duration::from_millis(20));
    }
    // NFSv4.1's READ (once the first run's pages are back: the pool holds 16 pages): the item
    // is found by walking the COMPOUND's results.
    c.read_call_v(4, reads[2].0, reads[2].1, reads[2].2);
    while c.replies.len() < reads.len() && Instant::now() < deadline {
        run(&mut [&mut c], &mut gw, Duration::from_millis(20));
    }
    assert_eq!(c.replies.len(), reads.len(), "{:?}", gw.stats);
    for &(xid, count, at) in &reads {
        let data = read_data(xid, count as usize);
        assert!(
            c.target.bytes()[at..at + count as usize] == data[..],
            "xid {xid:#x}: the READ data in the client's write chunk"
        );
    }
    assert_eq!(gw.stats.ddp_bytes, 41_002 + 30_003);
    assert_eq!(
        gw.stats.direct_bytes,
        40_001 + 30_003,
        "the large READs' data was read straight into payload pages"
    );
    let p = c.endpoint.payloads();
    assert_eq!(p.free_pages(), p.page_count(), "every payload page back");
    assert_eq!(c.endpoint.pool().held(), 0);
}

#[test]
fn a_backend_callback_reaches_the_client_and_its_reply_goes_back_on_the_same_connection() {
    let (addr, seen) = backend(None);
    let mut gw = gateway(addr, Duration::from_secs(30));
    let mut c = Client::new(8);
    // Proc 99 makes the scripted backend call the client back before it answers; it answers
    // with the xid of the callback reply it got.
    c.call(0x4000, 99);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.replies.is_empty() && Instant::now() < deadline {
        run(&mut [&mut c], &mut gw, Duration::from_millis(20));
    }
    assert_eq!(
        c.callbacks,
        [0xC0DE_0000],
        "the callback reached the client"
    );
    assert_eq!(c.replies.len(), 1, "{:?}", gw.stats);
    let (_, stat, at) = oncrpc::parse_accepted_reply(&c.replies[0].1).unwrap();
    assert_eq!(stat, 0);
    assert_eq!(
        &c.replies[0].1[at..at + 4],
        &0xC0DE_0000u32.to_be_bytes(),
        "the backend got the client's reply to its callback, same xid"
    );
    assert_eq!(seen.lock().unwrap().callback_replies, [0xC0DE_0000]);
    assert_eq!((gw.stats.callbacks, gw.stats.callback_replies), (1, 1));
    let counters = c.endpoint.connection().counters();
    assert_eq!((counters.backchannel_calls, counters.backchannel), (1, 1));
    assert_eq!(c.endpoint.connection().backchannel_outstanding(), 0);
}
