//! An RPC-over-RDMA gateway: every call that arrives over RDMA is forwarded to an ONC RPC server
//! over TCP (record marking, RFC 5531 §11) and its reply goes back over RDMA. `rpcrdma-gateway`
//! puts it in front of the kernel's nfsd, so the Linux NFS/RDMA client can mount through this
//! project's transport.
//!
//! It is an [`App`] of the [`crate::server::Server`]: each call is answered later
//! ([`Verdict::Pending`]) and forwarded as a TCP record written with `writev` straight from the
//! pending call's view — the Receive buffer and the sink pages that hold its Read chunk data
//! (where NFS WRITE data arrives), which the core keeps until the call is answered — so the
//! gateway copies no call byte, and resends from the same memory. All TCP work — connect,
//! write, read — is non-blocking and done in [`App::poll`], driven from the server's own loop,
//! so RDMA completions never wait on TCP; in event mode the loop also wakes when a socket with
//! calls still to write has room again.
//!
//! # What it promises (a transparent proxy)
//! - **One backend connection per RDMA connection**, opened when the RDMA connection is
//!   accepted and closed when it closes. The client's xids pass through unchanged, so the
//!   server sees each client as one TCP connection with its own xids, and its duplicate
//!   request cache (keyed on xid, source address and port, procedure, checksum) recognises a
//!   retransmitted non-idempotent call.
//! - **A backend that goes away is a delay, not an error.** When the TCP connection breaks
//!   (reset, close, a failed write), the gateway reconnects with a backoff (100 ms doubling to
//!   2 s) **from the same local port** (bind before connect, as the kernel's client does, so
//!   the server's reply cache still matches), and resends every call still waiting, byte for
//!   byte, same xid. A call is answered with SYSTEM_ERR only when its deadline passes
//!   ([`GatewayConfig::call_timeout`], default 10 minutes); a Linux client on a hard mount then
//!   returns EIO to the application, which is why the default is far above an nfsd restart.
//! - **Memory is bounded by what is in flight, and the brake is the credit grant.** A call's
//!   record is held until its reply comes (it may have to be resent); when the bytes held for
//!   one connection reach [`GatewayConfig::max_held_per_connection`], or for all of them
//!   [`GatewayConfig::max_held`], that connection's grant drops to 1 (RFC 8166 §3.3) until the
//!   backend catches up — no call is dropped or failed for it. Calls the client sent under its
//!   earlier grant still arrive, so the bound is the cap plus one grant's worth of calls.
//! - **Connect never blocks**: the socket is non-blocking from the start and its completion is
//!   checked on later turns of the loop (a backend host that drops SYNs delays only the calls
//!   that wait for it; the connect is abandoned after 5 s and retried).
//! - With [`GatewayConfig::reserved_port`], the first connect binds a port below 1024 (665–1023,
//!   the kernel client's range) when the process may (root or CAP_NET_BIND_SERVICE), so the
//!   export needs no `insecure`; without the privilege it falls back to an ephemeral port and
//!   says so once.
//!
//! Replies go back through the core's reply rules, with one piece of NFS knowledge
//! ([`rpcrdma_services::ddp`], RFC 8267): the data of a READ reply and the path of a READLINK
//! reply are DDP-eligible payloads (into the client's write chunk) — NFSv3 by procedure, NFSv4.x
//! by walking the COMPOUND reply's results to the READ or READLINK; any other reply larger than
//! a send slot becomes body plus a non-DDP payload, which the core sends whole through the
//! client's reply chunk (READDIR, READDIRPLUS, a large GETATTR).

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, IoSlice, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rpcrdma_core::pages::PageRun;
use rpcrdma_core::responder::{
    BackchannelFailure, Call, CallHandle, Connections, PayloadPages, ReplyWriter, Service, Verdict,
};
use rpcrdma_core::wire::xdr_u32;
use rpcrdma_core::xdr::XdrView;
use rpcrdma_services::ddp::DdpReply;
use rpcrdma_services::oncrpc::{self, AcceptStat};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::server::{App, WaitFd};

pub use reader::MAX_RECORD;
pub use rpcrdma_report::GatewayStats;

mod reader;

use reader::{Incoming, RecordReader, LAST_FRAGMENT};

/// Callbacks from one backend connection waiting to go to its client, at most.
const MAX_CALLBACKS: usize = 64;
/// How long the client has to answer a callback before it is given up (the backend's own
/// callback client times out and retries on its own).
const CALLBACK_TIMEOUT_MS: u64 = 60_000;
/// Slices per `writev` to the backend (a record is its mark and its view's four parts).
const WRITE_SLICES: usize = 64;
/// Reconnects in a row that may find the connection's own port still taken before it moves to
/// another (with the backoff, about 12 s).
const PORT_BUSY_LIMIT: u32 = 8;

/// The kernel client's reserved-port range (`xprt_min_resvport` … `xprt_max_resvport`).
const RESERVED_PORTS: std::ops::RangeInclusive<u16> = 665..=1023;
/// A connect that has not completed by then is abandoned and retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How the gateway reaches its backend.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The ONC RPC server to forward to.
    pub backend: SocketAddr,
    /// How long a call may wait for the backend (reconnects included) before it is answered
    /// with SYSTEM_ERR.
    pub call_timeout: Duration,
    /// Connect from a reserved port (< 1024) when the process may.
    pub reserved_port: bool,
    /// Bytes of calls held for the backend (sent and waiting for their reply, or not sent yet)
    /// per RDMA connection above which its credit grant is lowered to 1.
    pub max_held_per_connection: usize,
    /// The same for all connections together.
    pub max_held: usize,
}

impl GatewayConfig {
    /// Forward to `backend`, calls wait up to 10 minutes, reserved ports when allowed, the
    /// brake at 32 MiB held per connection and 256 MiB in all.
    pub fn new(backend: SocketAddr) -> GatewayConfig {
        GatewayConfig {
            backend,
            call_timeout: Duration::from_secs(600),
            reserved_port: true,
            max_held_per_connection: 32 << 20,
            max_held: 256 << 20,
        }
    }
}

/// What a pending call gets back.
#[derive(Debug)]
pub enum Answer {
    /// The backend's reply record (the client's own xid: nothing is rewritten).
    Record {
        /// The RPC reply; without its DDP item's bytes when `item` is set.
        record: Vec<u8>,
        /// The reply's DDP item (READ data), read from the socket straight into
        /// the responder's payload pages, and its offset in the reply.
        item: Option<(PageRun, usize)>,
        /// Where the reply's DDP-eligible item lies (NFSv3 READ / READLINK, an NFSv4 COMPOUND
        /// with a write chunk); `None`: no item.
        ddp: Option<DdpReply>,
    },
    /// The call's deadline passed without a reply: answer SYSTEM_ERR.
    Failed {
        /// The requester's xid.
        xid: u32,
    },
}

/// A call waiting for the backend. Its bytes are not copied: the record is the mark and then
/// the pending call's view (the Receive buffer and the sink pages with its Read chunk data,
/// which the core keeps until the call is answered), so it can be sent again after a
/// reconnect.
struct Waiting {
    handle: CallHandle,
    xid: u32,
    ddp: Option<DdpReply>,
    /// The record mark (one fragment: the whole call).
    mark: [u8; 4],
    /// Bytes of the record, mark included.
    len: usize,
    deadline: Instant,
}

enum Link {
    /// Not connected; the next attempt at `retry_at`.
    Down { retry_at: Instant },
    /// A non-blocking connect in progress since `since`.
    Connecting { socket: Socket, since: Instant },
    /// Connected.
    Up(TcpStream),
}

/// The backend connection of one RDMA connection.
struct Backend {
    link: Link,
    /// The local port of the first connection, bound again on every reconnect.
    local_port: Option<u16>,
    /// Connects in a row that found `local_port` still tied to an earlier connection to the
    /// backend (EADDRNOTAVAIL: its old socket lingers, e.g. in TIME_WAIT).
    port_busy: u32,
    backoff: Duration,
    /// Calls in the order they arrived; the first `sent` are fully written on this link, the
    /// next has `sent_at` bytes written.
    waiting: VecDeque<Waiting>,
    sent: usize,
    sent_at: usize,
    /// Replies being read.
    reader: RecordReader,
    /// Connections made so far (the first is not a reconnect).
    connects: u64,
    /// Bytes of the records in `waiting`.
    held: usize,
    /// Payload page runs to give back (a reply lost with its connection, or unmatched).
    orphans: Vec<PageRun>,
    /// Callbacks (RPC CALLs the backend sent on this connection, NFSv4.1's backchannel) to
    /// pass to the client as backward calls.
    callbacks: VecDeque<Vec<u8>>,
    /// The client's replies to them, record-marked, to write to the backend; the first has
    /// `bc_at` bytes written.
    bc_out: VecDeque<Vec<u8>>,
    bc_at: usize,
}

impl Backend {
    fn new() -> Backend {
        Backend {
            link: Link::Down {
                retry_at: Instant::now(),
            },
            local_port: None,
            port_busy: 0,
            backoff: MIN_BACKOFF,
            waiting: VecDeque::new(),
            sent: 0,
            sent_at: 0,
            reader: RecordReader::new(),
            connects: 0,
            held: 0,
            orphans: Vec::new(),
            callbacks: VecDeque::new(),
            bc_out: VecDeque::new(),
            bc_at: 0,
        }
    }
}

/// The gateway app.
pub struct Gateway {
    cfg: GatewayConfig,
    /// Backend connections by the RDMA connection's epoch (what a [`CallHandle`] names).
    backends: HashMap<u16, Backend>,
    ready: VecDeque<(CallHandle, Answer)>,
    reserved_refused: bool,
    /// Bytes of calls held for the backend, all connections.
    held: usize,
    /// The backends' epochs, reused by every turn of `poll`.
    epochs: Vec<u16>,
    /// Payload page runs of connections that closed, to give back on the next `poll`.
    orphans: Vec<(u16, PageRun)>,
    /// What it did.
    pub stats: GatewayStats,
}

impl Gateway {
    /// A gateway as `cfg` says.
    pub fn new(cfg: GatewayConfig) -> Gateway {
        Gateway {
            cfg,
            backends: HashMap::new(),
            ready: VecDeque::new(),
            reserved_refused: false,
            held: 0,
            epochs: Vec::new(),
            orphans: Vec::new(),
            stats: GatewayStats::default(),
        }
    }

    /// Calls waiting for the backend.
    pub fn waiting(&self) -> usize {
        self.backends.values().map(|b| b.waiting.len()).sum()
    }

    /// Bytes of calls held for the backend (all connections).
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// The local port of each open backend connection, by RDMA connection epoch.
    pub fn backend_ports(&self) -> Vec<(u16, u16)> {
        let mut v: Vec<(u16, u16)> = self
            .backends
            .iter()
            .filter_map(|(e, b)| b.local_port.map(|p| (*e, p)))
            .collect();
        v.sort_unstable();
        v
    }

    fn system_err(reply: &mut ReplyWriter<'_>, xid: u32) -> Verdict {
        let n =
            oncrpc::emit_accepted_reply(reply.buffer(), xid, AcceptStat::SystemErr).unwrap_or(0);
        reply.set_len(n);
        Verdict::Reply
    }

    /// A socket bound for the backend: the port of the first connection again, else a reserved
    /// port below `below` when asked and allowed, else an ephemeral one.
    fn bind(&mut self, local_port: Option<u16>, below: u16) -> std::io::Result<Socket> {
        let addr = self.cfg.backend;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_reuse_address(true)?;
        socket.set_tcp_nodelay(true)?;
        let any = |port: u16| -> SockAddr {
            match addr {
                SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
                SocketAddr::V6(_) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port),
            }
            .into()
        };
        if let Some(port) = local_port {
            socket.bind(&any(port))?;
            return Ok(socket);
        }
        if self.cfg.reserved_port && !self.reserved_refused {
            for port in RESERVED_PORTS.rev().filter(|p| *p < below) {
                match socket.bind(&any(port)) {
                    Ok(()) => return Ok(socket),
                    Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                        log::warn!(
                            "gateway: no privilege for a reserved port (run as root or with \
                             CAP_NET_BIND_SERVICE); connecting from an ephemeral port, so the \
                             export needs `insecure`"
                        );
                        self.reserved_refused = true;
                        break;
                    }
                    Err(_) => continue, // taken
                }
            }
        }
        Ok(socket)
    }

    /// Starts (or restarts) backend `epoch`'s connection when its retry time has come.
    fn start_connect(&mut self, epoch: u16, now: Instant) {
        let local_port = match self.backends.get(&epoch) {
            Some(b) if matches!(b.link, Link::Down { retry_at } if retry_at <= now) => b.local_port,
            _ => return,
        };
        // SO_REUSEADDR lets a port be bound while an earlier socket of ours still holds it
        // towards the backend (a connection whose client vanished, or one in TIME_WAIT); the
        // connect then fails with EADDRNOTAVAIL. A first connection moves on to the next
        // reserved port; a reconnect keeps its port (nfsd's duplicate request cache keys on
        // it) for a while, then takes a new one rather than never connecting.
        let mut below = u16::MAX;
        let result = loop {
            let attempt = self.bind(local_port, below).and_then(|socket| {
                let port = socket
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .map_or(0, |a| a.port());
                match socket.connect(&self.cfg.backend.into()) {
                    Ok(()) => Ok(socket),
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(socket),
                    Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                        below = port;
                        Err(e)
                    }
                    Err(e) => Err(e),
                }
            });
            match attempt {
                Err(e)
                    if e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                        && local_port.is_none()
                        && RESERVED_PORTS.contains(&below)
                        && below > *RESERVED_PORTS.start() =>
                {
                    continue
                }
                other => break other,
            }
        };
        let Some(b) = self.backends.get_mut(&epoch) else {
            return;
        };
        match result {
            Ok(socket) => {
                b.port_busy = 0;
                b.link = Link::Connecting { socket, since: now };
            }
            Err(e) => {
                log::warn!("gateway: backend {} unreachable: {e}", self.cfg.backend);
                if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && b.local_port.is_some() {
                    b.port_busy += 1;
                    if b.port_busy >= PORT_BUSY_LIMIT {
                        log::warn!(
                            "gateway: port {:?} stayed tied to an earlier connection; \
                             reconnecting from another (nfsd's duplicate request cache will \
                             not recognise calls resent from it)",
                            b.local_port
                        );
                        b.local_port = None;
                        b.port_busy = 0;
                    }
                }
                down(b, now);
            }
        }
    }

    /// Checks a connect in progress.
    fn finish_connect(&mut self, epoch: u16, now: Instant) -> usize {
        let Some(b) = self.backends.get_mut(&epoch) else {
            return 0;
        };
        let Link::Connecting { socket, since } = &b.link else {
            return 0;
        };
        let since = *since;
        let outcome = match socket.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match socket.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(false) if now.duration_since(since) < CONNECT_TIMEOUT => 0,
            Ok(false) => {
                log::warn!(
                    "gateway: connect to {} did not complete in {CONNECT_TIMEOUT:?}; retrying",
                    self.cfg.backend
                );
                down(b, now);
                1
            }
            Err(e) => {
                log::warn!("gateway: connect to {} failed: {e}", self.cfg.backend);
                down(b, now);
                1
            }
            Ok(true) => {
                let Link::Connecting { socket, .. } =
                    std::mem::replace(&mut b.link, Link::Down { retry_at: now })
                else {
                    return 0;
                };
                let stream: TcpStream = socket.into();
                let port = stream.local_addr().map(|a| a.port()).ok();
                b.local_port = b.local_port.or(port);
                b.link = Link::Up(stream);
                b.backoff = MIN_BACKOFF;
                b.sent = 0;
                b.sent_at = 0;
                if let Some(run) = b.reader.reset() {
                    b.orphans.push(run);
                }
                if b.connects > 0 {
                    self.stats.reconnects += 1;
                    self.stats.resent += b.waiting.len() as u64;
                    log::info!(
                        "gateway: reconnected to {} from port {:?}; resending {} calls",
                        self.cfg.backend,
                        b.local_port,
                        b.waiting.len()
                    );
                } else {
                    log::info!(
                        "gateway: connected to {} from port {:?}",
                        self.cfg.backend,
                        b.local_port
                    );
                }
                b.connects += 1;
                self.stats.backend_connects += 1;
                1
            }
        }
    }

    /// Writes and reads backend `epoch`'s connection; takes complete replies. Calls are
    /// written straight from their views (`calls`), several records per `writev`.
    fn pump(&mut self, epoch: u16, now: Instant, calls: &mut dyn Connections) -> usize {
        let Some(b) = self.backends.get_mut(&epoch) else {
            return 0;
        };
        let mut work = 0;
        let mut failure: Option<String> = None;
        // Callback replies go between call records (a record is never split by another).
        while b.bc_at > 0 || (b.sent_at == 0 && !b.bc_out.is_empty()) {
            let (Link::Up(stream), Some(record)) = (&b.link, b.bc_out.front()) else {
                break;
            };
            let mut writer: &TcpStream = stream;
            match writer.write(record.get(b.bc_at..).unwrap_or_default()) {
                Ok(0) => {
                    failure = Some("the backend closed the connection".into());
                    break;
                }
                Ok(n) => {
                    work += 1;
                    self.stats.bytes_out += n as u64;
                    b.bc_at += n;
                    if b.bc_at >= record.len() {
                        b.bc_out.pop_front();
                        b.bc_at = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(format!("write to the backend failed: {e}"));
                    break;
                }
            }
        }
        while failure.is_none() && b.bc_at == 0 && b.sent < b.waiting.len() {
            let Link::Up(stream) = &b.link else {
                break;
            };
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let mut n_slices = 0;
            let mut gone = None;
            for (k, w) in b.waiting.iter().enumerate().skip(b.sent) {
                // The mark and the view's four parts.
                if n_slices + 5 > WRITE_SLICES {
                    break;
                }
                let Some(view) = calls.pending_view(w.handle) else {
                    gone = Some(k);
                    break;
                };
                let mut skip = if k == b.sent { b.sent_at } else { 0 };
                let [head, pages, pad, tail] = view.parts();
                for part in [&w.mark[..], head, pages, pad, tail] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    if let Some(slot) = slices.get_mut(n_slices) {
                        *slot = IoSlice::new(part.get(skip..).unwrap_or_default());
                        n_slices += 1;
                    }
                    skip = 0;
                }
            }
            if n_slices == 0 {
                // The first unsent call has no view any more: its connection is closing (the
                // core let its pending calls go). Nothing to send for it.
                if let Some(k) = gone {
                    if let Some(w) = remove_waiting(b, k) {
                        self.held -= w.len;
                    }
                    work += 1;
                    continue;
                }
                break;
            }
            let mut writer: &TcpStream = stream;
            match writer.write_vectored(&slices[..n_slices]) {
                Ok(0) => {
                    failure = Some("the backend closed the connection".into());
                    break;
                }
                Ok(mut n) => {
                    work += 1;
                    self.stats.bytes_out += n as u64;
                    while n > 0 {
                        let Some(w) = b.waiting.get(b.sent) else {
                            break;
                        };
                        let left = w.len - b.sent_at;
                        if n >= left {
                            n -= left;
                            b.sent += 1;
                            b.sent_at = 0;
                        } else {
                            b.sent_at += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(format!("write to the backend failed: {e}"));
                    break;
                }
            }
        }
        // Read what arrived; match each complete reply to its call. A READ reply's data goes
        // straight into payload pages (the reader asks where it lies from the reply's start).
        let before = b.held;
        let mut pages = calls.payload_pages(epoch);
        while failure.is_none() {
            let Link::Up(stream) = &b.link else {
                break;
            };
            let read_before = b.reader.bytes;
            let (waiting, sent) = (&b.waiting, b.sent);
            let mut locate = |prefix: &[u8], total: usize| {
                let xid = xdr_u32(prefix, 0)?;
                let w = waiting.iter().take(sent).find(|w| w.xid == xid)?;
                w.ddp?.item_in(prefix, total)
            };
            let next = b.reader.next(stream, &mut locate, pages.as_deref_mut());
            self.stats.bytes_in += b.reader.bytes - read_before;
            match next {
                Ok(Some(reply)) => {
                    work += 1;
                    match_reply(b, reply, &mut self.ready, &mut self.stats);
                }
                Ok(None) => break,
                Err(why) => failure = Some(why),
            }
        }
        self.held -= before - b.held;
        if let Some(why) = failure {
            log::warn!(
                "gateway: backend connection lost ({why}); {} calls wait for the reconnect",
                b.waiting.len()
            );
            self.stats.backend_failures += 1;
            down(b, now);
            work += 1;
        }
        work
    }

    /// Passes the backend's callbacks to the client of `epoch` as backward calls, within the
    /// backward credits the client allows (the rest wait for a later turn).
    fn forward_callbacks(&mut self, epoch: u16, calls: &mut dyn Connections) -> usize {
        let Some(b) = self.backends.get_mut(&epoch) else {
            return 0;
        };
        let mut n = 0;
        while let Some(call) = b.callbacks.front() {
            let deadline = crate::server::clock_ms() + CALLBACK_TIMEOUT_MS;
            match calls.send_backchannel(epoch, deadline, call) {
                Ok(true) => {
                    self.stats.callbacks += 1;
                    b.callbacks.pop_front();
                    n += 1;
                }
                Ok(false) => break,
                Err(e) => {
                    log::warn!("gateway: a callback to the client could not be sent: {e}");
                    self.stats.callbacks_failed += 1;
                    b.callbacks.pop_front();
                }
            }
        }
        n
    }

    /// Calls whose deadline passed: answered SYSTEM_ERR.
    fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for b in self.backends.values_mut() {
            let mut k = 0;
            while k < b.waiting.len() {
                if b.waiting[k].deadline > now {
                    k += 1;
                    continue;
                }
                if let Some(w) = remove_waiting(b, k) {
                    self.held -= w.len;
                    log::warn!(
                        "gateway: call xid {:#x} got no reply within {:?}: SYSTEM_ERR",
                        w.xid,
                        self.cfg.call_timeout
                    );
                    self.stats.expired += 1;
                    self.stats.backend_errors += 1;
                    self.ready
                        .push_back((w.handle, Answer::Failed { xid: w.xid }));
                    n += 1;
                }
            }
        }
        n
    }
}

/// The link goes down; the next attempt after the backoff, which doubles.
fn down(b: &mut Backend, now: Instant) {
    b.link = Link::Down {
        retry_at: now + b.backoff,
    };
    b.backoff = (b.backoff * 2).min(MAX_BACKOFF);
    b.sent = 0;
    b.sent_at = 0;
    if let Some(run) = b.reader.reset() {
        b.orphans.push(run);
    }
    // Callbacks belong to the connection they came on: the backend's callback client
    // starts over on the next one (the client binds it again).
    b.callbacks.clear();
    b.bc_out.clear();
    b.bc_at = 0;
}

/// Removes waiting call `k`, keeping the sent / partly-sent bookkeeping right.
fn remove_waiting(b: &mut Backend, k: usize) -> Option<Waiting> {
    if k < b.sent {
        b.sent -= 1;
    } else if k == b.sent && b.sent_at > 0 {
        // A call half written can only be removed by its deadline: the rest of its record
        // would be missing from the stream, so the link starts over (everything is resent).
        b.sent = 0;
        b.sent_at = 0;
        b.link = Link::Down {
            retry_at: Instant::now(),
        };
    }
    let w = b.waiting.remove(k)?;
    b.held -= w.len;
    Some(w)
}

/// Matches a reply to the first sent call with its xid.
fn match_reply(
    b: &mut Backend,
    reply: Incoming,
    ready: &mut VecDeque<(CallHandle, Answer)>,
    stats: &mut GatewayStats,
) {
    let Incoming { record, item } = reply;
    if xdr_u32(&record, 4) == Some(oncrpc::CALL) {
        // A callback: the backend calls the client over the connection it bound its
        // backchannel to (NFSv4.1 CB_COMPOUND); it goes to the client as a backward call.
        b.orphans.extend(item.map(|(run, _)| run));
        if b.callbacks.len() < MAX_CALLBACKS {
            b.callbacks.push_back(record);
        } else {
            stats.callbacks_dropped += 1;
        }
        return;
    }
    let Some(xid) = xdr_u32(&record, 0) else {
        stats.unmatched += 1;
        b.orphans.extend(item.map(|(run, _)| run));
        return;
    };
    let found = b.waiting.iter().take(b.sent).position(|w| w.xid == xid);
    match found.and_then(|k| remove_waiting(b, k)) {
        Some(w) => {
            stats.replies += 1;
            ready.push_back((
                w.handle,
                Answer::Record {
                    record,
                    item,
                    ddp: w.ddp,
                },
            ));
        }
        None => {
            stats.unmatched += 1;
            b.orphans.extend(item.map(|(run, _)| run));
        }
    }
}

impl Service for Gateway {
    fn backchannel_reply(&mut self, epoch: u16, view: &XdrView<'_>) {
        // The client's reply to a callback goes back on the backend connection it came on,
        // same xid.
        let Some(b) = self.backends.get_mut(&epoch) else {
            return;
        };
        if !matches!(b.link, Link::Up(_)) {
            return; // that connection is gone, and the backend's callback with it
        }
        let len = view.len();
        let mut record = Vec::with_capacity(4 + len);
        record.extend_from_slice(&(LAST_FRAGMENT | len as u32).to_be_bytes());
        view.for_each_slice(0, len, |part| record.extend_from_slice(part));
        b.bc_out.push_back(record);
        self.stats.callback_replies += 1;
    }

    fn serve(&mut self, call: &Call<'_>, _reply: &mut ReplyWriter<'_>) -> Verdict {
        let view = &call.view;
        let len = view.len();
        let (Some(xid), Some(msg_type)) = (view.word(0), view.word(4)) else {
            return Verdict::NoReply;
        };
        if msg_type != oncrpc::CALL {
            return Verdict::NoReply;
        }
        let (prog, vers, proc_) = (
            view.word(12).unwrap_or(0),
            view.word(16).unwrap_or(0),
            view.word(20).unwrap_or(0),
        );
        // One fragment holds at most 2^31 - 1 bytes; a call that large cannot arrive (the sink
        // pages bound it), so this only keeps the mark honest.
        let Some(len32) = u32::try_from(len).ok().filter(|l| l & LAST_FRAGMENT == 0) else {
            return Verdict::NoReply;
        };
        let record_len = 4 + len;
        self.stats.forwarded += 1;
        let deadline = Instant::now() + self.cfg.call_timeout;
        let b = self
            .backends
            .entry(call.handle.epoch)
            .or_insert_with(Backend::new);
        b.held += record_len;
        self.held += record_len;
        if b.held > self.stats.peak_held_per_connection as usize {
            self.stats.peak_held_per_connection = b.held as u64;
        }
        self.stats.peak_held = self.stats.peak_held.max(self.held as u64);
        b.waiting.push_back(Waiting {
            handle: call.handle,
            xid,
            ddp: DdpReply::of_call(prog, vers, proc_, call.write_chunk_len > 0),
            mark: (LAST_FRAGMENT | len32).to_be_bytes(),
            len: record_len,
            deadline,
        });
        // The write happens in `poll`, on this turn of the loop, straight from the call's view
        // (the core keeps it while the call is pending): no syscall and no copy here.
        Verdict::Pending
    }
}

impl App for Gateway {
    type Answer = Answer;

    fn connection_opened(&mut self, epoch: u16) {
        // Connect now, so the first call does not wait for the handshake.
        self.backends.entry(epoch).or_insert_with(Backend::new);
    }

    fn connection_closed(&mut self, epoch: u16) {
        if let Some(mut b) = self.backends.remove(&epoch) {
            self.held -= b.held;
            // Its payload page runs go back on the next turn (the pages outlive it).
            let runs = b.orphans.drain(..).chain(b.reader.reset());
            self.orphans.extend(runs.map(|run| (epoch, run)));
            if !b.waiting.is_empty() {
                log::info!(
                    "gateway: connection closed with {} calls waiting; closing its backend \
                     connection",
                    b.waiting.len()
                );
            }
        }
    }

    fn credit_cap(&self, epoch: u16) -> Option<u16> {
        let held = self.backends.get(&epoch).map_or(0, |b| b.held);
        (held >= self.cfg.max_held_per_connection || self.held >= self.cfg.max_held).then_some(1)
    }

    fn poll(&mut self, calls: &mut dyn Connections) -> usize {
        let now = Instant::now();
        // The epochs are copied into a buffer kept between turns: no allocation per turn.
        let mut epochs = std::mem::take(&mut self.epochs);
        epochs.clear();
        epochs.extend(self.backends.keys().copied());
        let mut work = 0;
        for &epoch in &epochs {
            self.start_connect(epoch, now);
            work += self.finish_connect(epoch, now);
            work += self.pump(epoch, now, calls);
            work += self.forward_callbacks(epoch, calls);
            if let Some(b) = self.backends.get_mut(&epoch) {
                for run in b.orphans.drain(..) {
                    if let Some(pages) = calls.payload_pages(epoch) {
                        pages.free(run);
                    }
                }
            }
        }
        self.epochs = epochs;
        for (epoch, run) in self.orphans.drain(..) {
            // No pages: they were reset with their connection, and the run with them.
            if let Some(pages) = calls.payload_pages(epoch) {
                pages.free(run);
            }
        }
        work + self.expire(now)
    }

    fn next_answer(&mut self) -> Option<(CallHandle, Answer)> {
        self.ready.pop_front()
    }

    fn write_answer(
        &mut self,
        answer: &mut Answer,
        _call: &Call<'_>,
        reply: &mut ReplyWriter<'_>,
    ) -> Verdict {
        let (record, item, ddp) = match answer {
            Answer::Failed { xid } => return Self::system_err(reply, *xid),
            Answer::Record { record, item, ddp } => (record, item, *ddp),
        };
        let xid = xdr_u32(record, 0).unwrap_or(0);
        if let Some((run, at)) = item.take() {
            // The item is already in payload pages: the record holds the bytes around it
            // (its XDR pad first, then whatever follows).
            let pad = run.len().next_multiple_of(4) - run.len();
            let (Some(before), Some(after)) = (record.get(..at), record.get(at + pad..)) else {
                *item = Some((run, at)); // given back by release_answer
                return Self::system_err(reply, xid);
            };
            if before.len() + after.len() > reply.capacity() {
                *item = Some((run, at));
                return Self::system_err(reply, xid);
            }
            reply.push(before);
            let len = run.len();
            if let Err(e) = reply.give_payload(run, before.len(), true) {
                log::warn!("gateway: reply xid {xid:#x}: {e}");
                return Self::system_err(reply, xid);
            }
            reply.push(after);
            self.stats.ddp_bytes += len as u64;
            self.stats.direct_bytes += len as u64;
            return Verdict::Reply;
        }
        let item = ddp.and_then(|d| d.item(record));
        // (body before the payload, payload, body after it, DDP-eligible)
        let (before, payload, after, eligible) = match item {
            Some((off, len)) => {
                let end = (off + len.div_ceil(4) * 4).min(record.len());
                (
                    &record[..off],
                    &record[off..off + len],
                    &record[end..],
                    true,
                )
            }
            None if record.len() <= reply.capacity() => (&record[..], &[][..], &[][..], false),
            None => {
                let k = reply.capacity() & !3;
                (&record[..k], &record[k..], &[][..], false)
            }
        };
        if before.len() + after.len() > reply.capacity() {
            return Self::system_err(reply, xid);
        }
        reply.push(before);
        if !payload.is_empty() {
            let fits = reply.payload_fits(payload.len());
            match reply.lend_payload(payload.len(), before.len(), eligible) {
                Ok(dst) => dst.copy_from_slice(payload),
                Err(_) if fits => return Verdict::Defer,
                Err(_) => return Self::system_err(reply, xid),
            }
            if eligible {
                self.stats.ddp_bytes += payload.len() as u64;
            } else {
                self.stats.bulk_bytes += payload.len() as u64;
            }
        }
        reply.push(after);
        Verdict::Reply
    }

    fn backchannel_failed(&mut self, _epoch: u16, xid: u32, why: BackchannelFailure) {
        log::warn!("gateway: callback xid {xid:#x} got no reply from the client ({why:?})");
        self.stats.callbacks_failed += 1;
    }

    fn release_answer(&mut self, answer: Answer, pages: &mut dyn PayloadPages) {
        if let Answer::Record {
            item: Some((run, _)),
            ..
        } = answer
        {
            pages.free(run);
        }
    }

    fn wait_fds(&self, fds: &mut Vec<WaitFd>) {
        for b in self.backends.values() {
            match &b.link {
                // Replies, and room to write when calls are still to be written.
                Link::Up(s) => fds.push(WaitFd {
                    fd: s.as_raw_fd(),
                    read: true,
                    write: b.sent < b.waiting.len() || !b.bc_out.is_empty(),
                }),
                // A non-blocking connect completes (or fails) as the socket turns writable.
                Link::Connecting { socket, .. } => fds.push(WaitFd {
                    fd: socket.as_raw_fd(),
                    read: false,
                    write: true,
                }),
                Link::Down { .. } => {}
            }
        }
    }

    fn report(&self) -> serde_json::Value {
        let app = rpcrdma_report::GatewayApp {
            stats: self.stats,
            waiting: self.waiting() as u64,
        };
        serde_json::to_value(app).unwrap_or_default()
    }
}
