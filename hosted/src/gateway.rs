//! An RPC-over-RDMA gateway: every call that arrives over RDMA is forwarded to an ONC RPC server
//! over TCP (record marking, RFC 5531 §11) and its reply goes back over RDMA. `rpcrdma-gateway`
//! puts it in front of the kernel's nfsd, so the Linux NFS/RDMA client can mount through this
//! project's transport.
//!
//! It is an [`App`] of the [`crate::server::Server`]: the call is copied into a TCP record (Read
//! chunk data included — that is where NFS WRITE data arrives) and answered later
//! ([`Verdict::Pending`]). The TCP side is non-blocking and driven from the server's own loop,
//! so RDMA completions never wait on TCP. Calls of all RDMA connections share the TCP
//! connections; each gets a gateway xid, so equal xids of two RDMA clients cannot collide, and
//! the requester's xid is put back into the reply.
//!
//! Replies go back through the core's reply rules, with one piece of NFS knowledge
//! ([`rpcrdma_services::nfs3`], RFC 8267): the data of an NFSv3 READ reply and the path of a
//! READLINK reply are DDP-eligible payloads (into the client's write chunk); any other reply
//! larger than a send slot becomes body plus a non-DDP payload, which the core sends whole
//! through the client's reply chunk (READDIR, READDIRPLUS).
//!
//! A backend that goes away (connection refused, reset, closed): every call waiting on it is
//! answered with an RPC SYSTEM_ERR reply, and the next call tries to reconnect.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rpcrdma_core::responder::{Call, CallHandle, ReplyWriter, Service, Verdict};
use rpcrdma_core::wire::{put_xdr_u32, xdr_u32};
use rpcrdma_services::nfs3;
use rpcrdma_services::oncrpc::{self, AcceptStat};

use crate::server::App;

pub use rpcrdma_report::{GatewayApp, GatewayStats};

/// Largest record accepted from the backend (a 1 MiB READ plus headers, with room).
pub const MAX_RECORD: usize = 2 << 20;
/// Last-fragment bit of a record mark.
const LAST_FRAGMENT: u32 = 0x8000_0000;

/// What a pending call gets back.
#[derive(Debug)]
pub enum Answer {
    /// The backend's reply record, with the requester's xid restored.
    Record {
        /// The RPC reply.
        record: Vec<u8>,
        /// The call's procedure (for the NFSv3 binding).
        proc_: u32,
        /// Whether the reply may carry a DDP-eligible item (NFSv3 READ, READLINK).
        ddp: bool,
    },
    /// The backend failed: answer SYSTEM_ERR.
    Failed {
        /// The requester's xid.
        xid: u32,
    },
}

struct Waiting {
    handle: CallHandle,
    xid: u32,
    proc_: u32,
    ddp: bool,
    backend: usize,
}

struct Backend {
    stream: Option<TcpStream>,
    out: Vec<u8>,
    out_at: usize,
    inbuf: Vec<u8>,
    record: Vec<u8>,
    last_attempt: Option<Instant>,
}

impl Backend {
    fn new() -> Backend {
        Backend {
            stream: None,
            out: Vec::with_capacity(1 << 20),
            out_at: 0,
            inbuf: Vec::with_capacity(1 << 20),
            record: Vec::with_capacity(1 << 20),
            last_attempt: None,
        }
    }
}

/// The gateway app.
pub struct Gateway {
    addr: SocketAddr,
    backends: Vec<Backend>,
    next_backend: usize,
    waiting: HashMap<u32, Waiting>,
    ready: VecDeque<(CallHandle, Answer)>,
    next_xid: u32,
    scratch: Vec<u8>,
    /// What it did.
    pub stats: GatewayStats,
}

impl Gateway {
    /// A gateway to the ONC RPC server at `addr` over `connections` TCP connections (made on
    /// first use, and again after a failure).
    pub fn new(addr: SocketAddr, connections: usize) -> Gateway {
        Gateway {
            addr,
            backends: (0..connections.max(1)).map(|_| Backend::new()).collect(),
            next_backend: 0,
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            next_xid: 0x6777_0000,
            scratch: vec![0u8; 256 * 1024],
            stats: GatewayStats::default(),
        }
    }

    /// Calls waiting for the backend.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// A connected backend, connecting one if needed (at most every 100 ms per backend).
    fn backend(&mut self) -> Option<usize> {
        let n = self.backends.len();
        for k in 0..n {
            let i = (self.next_backend + k) % n;
            let b = &mut self.backends[i];
            if b.stream.is_none() {
                if b.last_attempt
                    .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
                {
                    continue;
                }
                b.last_attempt = Some(Instant::now());
                match TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        if s.set_nonblocking(true).is_err() {
                            continue;
                        }
                        log::info!("gateway: connected to the backend {}", self.addr);
                        self.stats.backend_connects += 1;
                        b.stream = Some(s);
                        b.out.clear();
                        b.out_at = 0;
                        b.inbuf.clear();
                        b.record.clear();
                    }
                    Err(e) => {
                        log::warn!("gateway: backend {} unreachable: {e}", self.addr);
                        continue;
                    }
                }
            }
            self.next_backend = (i + 1) % n;
            return Some(i);
        }
        None
    }

    /// The backend failed: its waiting calls get SYSTEM_ERR.
    fn fail_backend(&mut self, i: usize, why: &str) {
        log::warn!("gateway: backend connection lost ({why}); failing its calls");
        if let Some(b) = self.backends.get_mut(i) {
            b.stream = None;
            b.out.clear();
            b.out_at = 0;
            b.inbuf.clear();
            b.record.clear();
        }
        let lost: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.backend == i)
            .map(|(k, _)| *k)
            .collect();
        for k in lost {
            if let Some(w) = self.waiting.remove(&k) {
                self.stats.backend_errors += 1;
                self.ready
                    .push_back((w.handle, Answer::Failed { xid: w.xid }));
            }
        }
    }

    /// Takes complete records out of backend `i`'s input.
    fn parse_records(&mut self, i: usize) -> std::result::Result<(), &'static str> {
        loop {
            let b = &mut self.backends[i];
            let Some(mark) = xdr_u32(&b.inbuf, 0) else {
                return Ok(());
            };
            let len = (mark & !LAST_FRAGMENT) as usize;
            if b.record.len() + len > MAX_RECORD {
                return Err("a reply record larger than the gateway accepts");
            }
            if b.inbuf.len() < 4 + len {
                return Ok(());
            }
            b.record.extend_from_slice(&b.inbuf[4..4 + len]);
            b.inbuf.drain(..4 + len);
            if mark & LAST_FRAGMENT == 0 {
                continue;
            }
            let mut record = std::mem::take(&mut b.record);
            b.record = Vec::with_capacity(4096);
            self.stats.bytes_in += record.len() as u64;
            let Some(gw_xid) = xdr_u32(&record, 0) else {
                continue;
            };
            match self.waiting.remove(&gw_xid) {
                Some(w) => {
                    put_xdr_u32(&mut record, 0, w.xid);
                    self.stats.replies += 1;
                    self.ready.push_back((
                        w.handle,
                        Answer::Record {
                            record,
                            proc_: w.proc_,
                            ddp: w.ddp,
                        },
                    ));
                }
                None => self.stats.unmatched += 1,
            }
        }
    }

    fn system_err(reply: &mut ReplyWriter<'_>, xid: u32) -> Verdict {
        let n =
            oncrpc::emit_accepted_reply(reply.buffer(), xid, AcceptStat::SystemErr).unwrap_or(0);
        reply.set_len(n);
        Verdict::Reply
    }
}

impl Service for Gateway {
    fn serve(&mut self, call: &Call<'_>, reply: &mut ReplyWriter<'_>) -> Verdict {
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
        let Some(i) = self.backend() else {
            self.stats.backend_errors += 1;
            return Self::system_err(reply, xid);
        };
        let gw_xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1);
        let b = &mut self.backends[i];
        let start = b.out.len();
        b.out
            .extend_from_slice(&(LAST_FRAGMENT | len as u32).to_be_bytes());
        view.for_each_slice(0, len, |part| b.out.extend_from_slice(part));
        if b.out.len() - start != 4 + len {
            b.out.truncate(start);
            return Self::system_err(reply, xid);
        }
        put_xdr_u32(&mut b.out, start + 4, gw_xid);
        self.stats.forwarded += 1;
        self.stats.bytes_out += 4 + len as u64;
        self.waiting.insert(
            gw_xid,
            Waiting {
                handle: call.handle,
                xid,
                proc_,
                ddp: nfs3::reply_has_ddp_item(prog, vers, proc_),
                backend: i,
            },
        );
        Verdict::Pending
    }
}

impl App for Gateway {
    type Answer = Answer;

    fn poll(&mut self) -> usize {
        let mut work = 0;
        for i in 0..self.backends.len() {
            let mut failure = None;
            {
                let b = &mut self.backends[i];
                let Some(stream) = b.stream.as_mut() else {
                    continue;
                };
                while b.out_at < b.out.len() {
                    match stream.write(&b.out[b.out_at..]) {
                        Ok(0) => {
                            failure = Some("the backend closed the connection");
                            break;
                        }
                        Ok(n) => {
                            b.out_at += n;
                            work += 1;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            failure = Some("write to the backend failed");
                            break;
                        }
                    }
                }
                if b.out_at == b.out.len() && b.out_at > 0 {
                    b.out.clear();
                    b.out_at = 0;
                }
                if failure.is_none() {
                    loop {
                        match stream.read(&mut self.scratch) {
                            Ok(0) => {
                                failure = Some("the backend closed the connection");
                                break;
                            }
                            Ok(n) => {
                                b.inbuf.extend_from_slice(&self.scratch[..n]);
                                work += 1;
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(_) => {
                                failure = Some("read from the backend failed");
                                break;
                            }
                        }
                    }
                }
            }
            if let Err(why) = self.parse_records(i) {
                failure = Some(why);
            }
            if let Some(why) = failure {
                self.fail_backend(i, why);
                work += 1;
            }
        }
        work
    }

    fn next_answer(&mut self) -> Option<(CallHandle, Answer)> {
        self.ready.pop_front()
    }

    fn write_answer(
        &mut self,
        answer: &Answer,
        _call: &Call<'_>,
        reply: &mut ReplyWriter<'_>,
    ) -> Verdict {
        let (record, proc_, ddp) = match answer {
            Answer::Failed { xid } => return Self::system_err(reply, *xid),
            Answer::Record { record, proc_, ddp } => (record, *proc_, *ddp),
        };
        let item = if ddp {
            nfs3::ddp_reply_item(proc_, record)
        } else {
            None
        };
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
            return Self::system_err(reply, xdr_u32(record, 0).unwrap_or(0));
        }
        reply.push(before);
        if !payload.is_empty() {
            let fits = reply.payload_fits(payload.len());
            match reply.lend_payload(payload.len(), before.len(), eligible) {
                Ok(dst) => dst.copy_from_slice(payload),
                Err(_) if fits => return Verdict::Defer,
                Err(_) => return Self::system_err(reply, xdr_u32(record, 0).unwrap_or(0)),
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

    fn wait_fds(&self) -> Vec<i32> {
        self.backends
            .iter()
            .filter_map(|b| b.stream.as_ref().map(|s| s.as_raw_fd()))
            .collect()
    }

    fn report(&self) -> serde_json::Value {
        let app = GatewayApp {
            stats: self.stats,
            waiting: self.waiting.len() as u64,
        };
        // Plain integers: serialising them cannot fail.
        serde_json::to_value(app).unwrap_or_default()
    }
}
