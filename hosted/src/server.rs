//! The `rpcrdma-serve` engine: one thread, one event loop, many connections.
//!
//! Every Receive completion goes to the core's pool ([`RecvPool::complete`]), which validates it
//! and decodes the header; this module only moves bytes: it posts the pool's work-request
//! batches with one doorbell, hands the XDR view to the service ([`Service`]), sends the reply
//! (or the RDMA_ERROR the core built) from a persistently registered Send slot, and releases the
//! Receive. Connections use their own receive queue and pool, or one SRQ and pool shared by all
//! (`srq`). Teardown: disconnect → the QP's Receives flush → the pool drains → QP destroyed →
//! MR deregistered → memory unmapped, and the counters say so.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdma_sys::*;
use rpcrdma_core::dma::{CoherentDma, DmaRegion};
use rpcrdma_core::oncrpc::{self, AcceptStat};
use rpcrdma_core::pool::{Completed, CompletionError, Counters, PoolConfig, RecvPool, RecvWr};
use rpcrdma_core::wire::{
    DecodeLimits, HeaderRepr, PrivateData, DEFAULT_INLINE_THRESHOLD, NFS_RDMA_PORT,
};

use crate::cm::{private_data_for, CmEvent, CmId, EventChannel};
use crate::error::{Error, Result};
use crate::memory::{HostMemory, SendSlots};
use crate::verbs::{
    post_recv_batch, post_send, require_device, to_completion, wc_array, CompChannel, Cq, Mr, Pd,
    RecvQueue, Srq, POLL_BATCH,
};

/// Receive descriptors per pool.
pub const RECV_DESCRIPTORS: usize = 256;
/// The checksum test program: procedure 1 takes `opaque<>` and returns its FNV-1a checksum.
pub const CHECKSUM_PROG: u32 = 0x2000_5250;
/// Its version.
pub const CHECKSUM_VERS: u32 = 1;
/// Its procedure.
pub const CHECKSUM_PROC: u32 = 1;
/// NFS.
pub const NFS_PROG: u32 = 100_003;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (0.0.0.0: every RDMA device).
    pub addr: Ipv4Addr,
    /// Port (20049, NFS/RDMA's).
    pub port: u16,
    /// Required device name, if any.
    pub device: Option<String>,
    /// Receive buffer size (inline threshold we receive).
    pub buffer_size: usize,
    /// Credits granted per connection (per server with an SRQ).
    pub credits: u16,
    /// Receives per refill doorbell.
    pub batch: u16,
    /// Share one SRQ and pool among all connections.
    pub srq: bool,
    /// Sleep on completion channels instead of busy-polling.
    pub event_mode: bool,
    /// Register and deregister a memory region around every Receive (the design the seed
    /// replaced; for comparison only).
    pub register_per_receive: bool,
    /// Programs whose NULL procedure is answered: (program, versions).
    pub programs: Vec<(u32, Vec<u32>)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: Ipv4Addr::UNSPECIFIED,
            port: NFS_RDMA_PORT,
            device: None,
            buffer_size: 4096,
            credits: 64,
            batch: 16,
            srq: false,
            event_mode: false,
            register_per_receive: false,
            programs: vec![(NFS_PROG, vec![3, 4])],
        }
    }
}

/// What the server did, for its exit report and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections torn down.
    pub closed: u64,
    /// Connection requests rejected.
    pub rejected: u64,
    /// RPC calls answered (any accept_stat).
    pub calls: u64,
    /// RDMA_ERROR / ERR_VERS replies sent.
    pub err_vers_sent: u64,
    /// RDMA_ERROR / ERR_CHUNK replies sent.
    pub err_chunk_sent: u64,
    /// Malformed messages dropped without reply.
    pub dropped: u64,
    /// Backchannel replies received (this server has no backchannel; dropped).
    pub backchannel: u64,
    /// Completions the pool refused (unknown, stale, duplicate wr_id).
    pub bad_completions: u64,
    /// Replies that could not be sent (no Send slot, post failure, connection gone).
    pub send_failures: u64,
    /// Descriptors still in flight when connections were torn down (must be 0 after drain).
    pub leaked_descriptors: u64,
    /// Pool counters summed over closed connections (and the SRQ pool at exit).
    pub pool: Counters,
}

/// A Receive pool with its memory. Field order is drop order: pool, then per-Receive MRs and
/// the region MR (deregistered), then the memory (unmapped).
struct RecvSide {
    pool: RecvPool<'static, RECV_DESCRIPTORS>,
    per_recv: Vec<Option<Mr>>,
    mr: Option<Mr>,
    #[allow(dead_code)] // owned: unmapped last
    mem: HostMemory,
}

impl RecvSide {
    fn new(pd: &Pd, cfg: &ServerConfig) -> Result<Box<RecvSide>> {
        let pool_cfg = PoolConfig {
            buffer_size: cfg.buffer_size,
            credits: cfg.credits,
            batch: cfg.batch,
            limits: DecodeLimits::DEFAULT,
        };
        let mem = HostMemory::new(PoolConfig::region_len(RECV_DESCRIPTORS, cfg.buffer_size))?;
        let mr = if cfg.register_per_receive {
            None
        } else {
            // SAFETY: `mem` outlives `mr` (field order).
            Some(unsafe {
                Mr::register(
                    pd,
                    mem.as_ptr(),
                    mem.len(),
                    ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0,
                )
            }?)
        };
        let lkey = mr.as_ref().map_or(0, Mr::lkey);
        // SAFETY: the mapping lives in this struct and is dropped after the pool; the device
        // writes only into Receives this pool posted (we post nothing else on its queue).
        let region = unsafe { DmaRegion::new(mem.as_ptr(), mem.as_ptr() as u64, mem.len(), lkey) }?;
        let pool = RecvPool::new(region, pool_cfg)?;
        let per_recv = (0..RECV_DESCRIPTORS).map(|_| None).collect();
        Ok(Box::new(RecvSide {
            pool,
            per_recv,
            mr,
            mem,
        }))
    }

    /// Posts what the pool's watermark asks for, as one chained post.
    fn replenish(&mut self, pd: &Pd, queue: RecvQueue) -> Result<()> {
        let mut wrs = [RecvWr::default(); 64];
        let n = self.pool.post(&mut wrs);
        if n == 0 {
            return Ok(());
        }
        if self.mr.is_none() {
            // Register-per-Receive mode: one MR per buffer, for this post only.
            for wr in &mut wrs[..n] {
                // SAFETY: the buffer lies inside `mem`, which outlives the MR.
                let mr = unsafe {
                    Mr::register(
                        pd,
                        wr.addr as *mut u8,
                        wr.length as usize,
                        ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0,
                    )
                }?;
                wr.lkey = mr.lkey();
                self.per_recv[(wr.wr_id & 0xffff) as usize] = Some(mr);
            }
        }
        // SAFETY: the queue belongs to this side's QP/SRQ, which outlives the post; the WRs are
        // the pool's, one buffer each.
        if let Err((bad, e)) = unsafe { post_recv_batch(queue, &wrs[..n]) } {
            self.pool.cancel(&wrs[bad..n]);
            return Err(e);
        }
        Ok(())
    }
}

/// The sending half of a connection. Field order is drop order: the id (and its QP) goes
/// first, then the Send slots' MR and memory.
struct ReplyPath {
    id: CmId,
    send: SendSlots,
    peer: PrivateData,
    disconnecting: Option<Instant>,
    sends_outstanding: usize,
}

/// One accepted connection: the reply path (with the QP, dropped first) and, without an SRQ,
/// its own receive side.
struct Connection {
    reply: ReplyPath,
    recv: Option<Box<RecvSide>>,
}

/// Verbs resources shared by all connections, made on the first connection request (the
/// listener may be bound to every device). Field order is drop order.
struct Shared {
    srq_recv: Option<Box<RecvSide>>,
    srq: Option<Srq>,
    recv_cq: Cq,
    send_cq: Cq,
    channel: Option<CompChannel>,
    pd: Pd,
    ctx: crate::verbs::Context,
}

/// The server. Field order is drop order: connections, then shared resources, then the
/// listener and its event channel.
pub struct Server {
    conns: HashMap<u32, Connection>,
    shared: Option<Shared>,
    #[allow(dead_code)] // owned: the listening id lives as long as the server
    listen: CmId,
    events: EventChannel,
    cfg: ServerConfig,
    stats: ServerStats,
}

impl Server {
    /// Binds and listens.
    ///
    /// # Errors
    /// [`Error::NoDevice`] without RDMA devices; bind/listen failures.
    pub fn bind(cfg: ServerConfig) -> Result<Server> {
        require_device(cfg.device.as_deref())?;
        let events = EventChannel::new()?;
        events.set_nonblocking()?;
        let listen = CmId::new(&events)?;
        listen.listen(cfg.addr, cfg.port, 128)?;
        log::info!(
            "listening on {}:{} (buffers {} B, credits {}, {}{})",
            cfg.addr,
            cfg.port,
            cfg.buffer_size,
            cfg.credits,
            if cfg.srq { "SRQ" } else { "per-connection RQ" },
            if cfg.register_per_receive {
                ", register per Receive"
            } else {
                ""
            }
        );
        Ok(Server {
            conns: HashMap::new(),
            shared: None,
            listen,
            events,
            cfg,
            stats: ServerStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> ServerStats {
        let mut s = self.stats;
        if let Some(r) = self.shared.as_ref().and_then(|sh| sh.srq_recv.as_ref()) {
            add_counters(&mut s.pool, &r.pool.counters());
        }
        for c in self.conns.values() {
            if let Some(r) = &c.recv {
                add_counters(&mut s.pool, &r.pool.counters());
            }
        }
        s
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Bytes of registered memory per connection (receive pool + send slots).
    pub fn memory_per_connection(&self) -> usize {
        let recv = if self.cfg.srq {
            0
        } else {
            PoolConfig::region_len(RECV_DESCRIPTORS, self.cfg.buffer_size)
        };
        recv + self.send_slots() * self.cfg.buffer_size.max(DEFAULT_INLINE_THRESHOLD)
    }

    fn send_slots(&self) -> usize {
        2 * self.cfg.credits as usize
    }

    /// Runs until `stop` is set; then disconnects everything and drains.
    ///
    /// # Errors
    /// A verbs failure that is not a connection's own.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        self.run_until(|_| stop.load(Ordering::Relaxed))
    }

    /// Runs until `stop` (asked with the counters, between batches, never per message)
    /// returns true; then disconnects everything and drains.
    ///
    /// # Errors
    /// A verbs failure that is not a connection's own.
    pub fn run_until(&mut self, mut stop: impl FnMut(&ServerStats) -> bool) -> Result<()> {
        let mut idle: u32 = 0;
        let mut n: u32 = 0;
        loop {
            n = n.wrapping_add(1);
            if (idle > 0 || n % 256 == 0) && stop(&self.stats()) {
                break;
            }
            let work = self.poll_completions()?;
            if work == 0 {
                idle = idle.saturating_add(1);
            } else {
                idle = 0;
            }
            // rdma_cm and teardown are checked when idle or every 256 busy iterations: no
            // syscall per message on the hot path.
            if idle > 0 || n % 256 == 0 {
                self.poll_cm()?;
                self.reap_disconnected();
            }
            if idle > 64 {
                self.wait(Duration::from_millis(if self.cfg.event_mode {
                    50
                } else {
                    1
                }))?;
            }
        }
        self.shutdown();
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        if !self.cfg.event_mode {
            if self.conns.is_empty() {
                std::thread::sleep(timeout);
            }
            return Ok(());
        }
        let mut fds = vec![libc::pollfd {
            fd: self.events.fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(ch) = self.shared.as_ref().and_then(|s| s.channel.as_ref()) {
            fds.push(libc::pollfd {
                fd: ch.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: fds is a valid array of pollfd for the call.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as u64,
                timeout.as_millis() as i32,
            )
        };
        if let Some(ch) = self.shared.as_ref().and_then(|s| s.channel.as_ref()) {
            while ch.consume_event()? {}
        }
        Ok(())
    }

    fn poll_cm(&mut self) -> Result<()> {
        while let Some(ev) = self.events.get()? {
            match ev.kind {
                rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST => self.on_connect_request(&ev),
                rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED => {
                    log::debug!("connection established");
                }
                rdma_cm_event_type::RDMA_CM_EVENT_DISCONNECTED
                | rdma_cm_event_type::RDMA_CM_EVENT_REJECTED
                | rdma_cm_event_type::RDMA_CM_EVENT_UNREACHABLE
                | rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_ERROR => {
                    if let Some(conn) = self
                        .conns
                        .values_mut()
                        .map(|c| &mut c.reply)
                        .find(|c| c.id.as_raw() == ev.id)
                    {
                        if conn.disconnecting.is_none() {
                            conn.id.disconnect();
                            conn.disconnecting = Some(Instant::now());
                        }
                    }
                }
                rdma_cm_event_type::RDMA_CM_EVENT_DEVICE_REMOVAL => {
                    return Err(Error::CmEvent {
                        expected: "not DEVICE_REMOVAL",
                        got: ev.name(),
                        status: ev.status,
                    });
                }
                _ => log::debug!("rdma_cm event {}", ev.name()),
            }
        }
        Ok(())
    }

    fn ensure_shared(&mut self, ctx: Option<crate::verbs::Context>) -> Result<()> {
        if self.shared.is_some() {
            return Ok(());
        }
        let ctx = ctx.ok_or(Error::NoDevice)?;
        let name = ctx.device_name();
        if let Some(want) = &self.cfg.device {
            if &name != want {
                return Err(Error::DeviceNotFound(want.clone()));
            }
        }
        let pd = Pd::new(ctx)?;
        let channel = if self.cfg.event_mode {
            Some(CompChannel::new(ctx)?)
        } else {
            None
        };
        if let Some(ch) = &channel {
            crate::verbs::set_nonblocking(ch.fd())?;
        }
        let recv_cq = Cq::new(ctx, 4096, channel.as_ref())?;
        let send_cq = Cq::new(ctx, 4096, channel.as_ref())?;
        let (srq, srq_recv) = if self.cfg.srq {
            let srq = Srq::new(&pd, RECV_DESCRIPTORS as u32)?;
            let mut side = RecvSide::new(&pd, &self.cfg)?;
            side.replenish(&pd, RecvQueue::Srq(srq.as_raw()))?;
            (Some(srq), Some(side))
        } else {
            (None, None)
        };
        log::info!(
            "device {name}: protection domain, CQs{} ready",
            if srq.is_some() { ", SRQ" } else { "" }
        );
        self.shared = Some(Shared {
            srq_recv,
            srq,
            recv_cq,
            send_cq,
            channel,
            pd,
            ctx,
        });
        Ok(())
    }

    fn on_connect_request(&mut self, ev: &CmEvent) {
        // SAFETY: a CONNECT_REQUEST's id is new and ours.
        let Some(id) = (unsafe { CmId::from_raw(ev.id) }) else {
            return;
        };
        match self.accept(id, ev) {
            Ok(()) => self.stats.accepted += 1,
            Err(e) => {
                self.stats.rejected += 1;
                log::warn!("connection request refused: {e}");
            }
        }
    }

    fn accept(&mut self, id: CmId, ev: &CmEvent) -> Result<()> {
        let peer = match ev.private_data() {
            Ok(Some(p)) => p,
            Ok(None) => private_data_for(DEFAULT_INLINE_THRESHOLD, DEFAULT_INLINE_THRESHOLD),
            Err(e) => {
                id.reject();
                return Err(e);
            }
        };
        if let Err(e) = self.ensure_shared(id.verbs()) {
            id.reject();
            return Err(e);
        }
        let slots = self.send_slots();
        let sh = self.shared.as_ref().ok_or(Error::NoDevice)?;
        // SAFETY: plain old data; the fields used are set below.
        let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = sh.send_cq.as_raw();
        attr.recv_cq = sh.recv_cq.as_raw();
        attr.srq = sh.srq.as_ref().map_or(std::ptr::null_mut(), Srq::as_raw);
        attr.cap.max_send_wr = slots as u32;
        attr.cap.max_recv_wr = if self.cfg.srq {
            0
        } else {
            RECV_DESCRIPTORS as u32
        };
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        if let Err(e) = id.create_qp(&sh.pd, &mut attr) {
            id.reject();
            return Err(e);
        }
        let qp = id.qp();
        // SAFETY: the QP was just created.
        let qp_num = unsafe { (*qp).qp_num };
        let recv = if self.cfg.srq {
            None
        } else {
            let mut side = RecvSide::new(&sh.pd, &self.cfg)?;
            side.replenish(&sh.pd, RecvQueue::Qp(qp))?;
            Some(side)
        };
        let send = SendSlots::new(
            &sh.pd,
            slots,
            self.cfg.buffer_size.max(DEFAULT_INLINE_THRESHOLD),
        )?;
        let ours = private_data_for(send.slot_size(), self.cfg.buffer_size);
        id.accept(&ours)?;
        log::info!(
            "accepted qp {qp_num}: peer receives {} B, sends {} B",
            peer.recv_size,
            peer.send_size
        );
        self.conns.insert(
            qp_num,
            Connection {
                reply: ReplyPath {
                    id,
                    send,
                    peer,
                    disconnecting: None,
                    sends_outstanding: 0,
                },
                recv,
            },
        );
        Ok(())
    }

    /// Polls both CQs once; returns the completions handled.
    fn poll_completions(&mut self) -> Result<usize> {
        let Some(sh) = self.shared.as_mut() else {
            return Ok(0);
        };
        let mut wcs = wc_array::<POLL_BATCH>();
        let n = sh.send_cq.poll(&mut wcs)?;
        for wc in &wcs[..n] {
            if let Some(conn) = self.conns.get_mut(&wc.qp_num).map(|c| &mut c.reply) {
                conn.send.give_back(wc.wr_id as u16);
                conn.sends_outstanding -= 1;
                if wc.status != ibv_wc_status::IBV_WC_SUCCESS
                    && wc.status != ibv_wc_status::IBV_WC_WR_FLUSH_ERR
                {
                    log::warn!(
                        "Send on qp {} completed with status {}",
                        wc.qp_num,
                        wc.status
                    );
                }
            }
        }
        let sends = n;
        let n = sh.recv_cq.poll(&mut wcs)?;
        let mut touched: [u32; POLL_BATCH] = [0; POLL_BATCH];
        let mut ntouched = 0;
        for wc in &wcs[..n] {
            self.on_receive(wc);
            if !touched[..ntouched].contains(&wc.qp_num) {
                touched[ntouched] = wc.qp_num;
                ntouched += 1;
            }
        }
        // Refill after the batch: one doorbell per pool at most.
        if n > 0 {
            let sh = self.shared.as_mut().ok_or(Error::NoDevice)?;
            if let (Some(side), Some(srq)) = (sh.srq_recv.as_mut(), sh.srq.as_ref()) {
                side.replenish(&sh.pd, RecvQueue::Srq(srq.as_raw()))?;
            } else {
                for qp_num in &touched[..ntouched] {
                    if let Some(conn) = self.conns.get_mut(qp_num) {
                        if let Some(side) = conn.recv.as_mut() {
                            if let Err(e) =
                                side.replenish(&sh.pd, RecvQueue::Qp(conn.reply.id.qp()))
                            {
                                log::warn!("qp {qp_num}: refill failed: {e}");
                            }
                        }
                    }
                }
            }
        }
        Ok(sends + n)
    }

    fn on_receive(&mut self, wc: &ibv_wc) {
        let Some(sh) = self.shared.as_mut() else {
            return;
        };
        let conn = self.conns.get_mut(&wc.qp_num);
        // The receive side is the SRQ's (shared) or the connection's own; the reply path is
        // always the connection's. Disjoint fields, so both borrows are plain.
        let (side, conn): (&mut RecvSide, Option<&mut ReplyPath>) =
            match (sh.srq_recv.as_mut(), conn) {
                (Some(side), conn) => (side, conn.map(|c| &mut c.reply)),
                (
                    None,
                    Some(Connection {
                        reply,
                        recv: Some(side),
                    }),
                ) => (side, Some(reply)),
                (None, Some(_)) => return,
                (None, None) => {
                    self.stats.bad_completions += 1;
                    return;
                }
            };
        let completion = to_completion(wc);
        let result = side.pool.complete(&completion, &mut CoherentDma);
        // Register-per-Receive mode: the buffer's MR goes once the pool has accepted the
        // completion as its own (a stale or forged wr_id must not deregister a live Receive).
        let accepted = !matches!(
            result,
            Err(CompletionError::UnknownWrId { .. }
                | CompletionError::StaleWrId { .. }
                | CompletionError::DuplicateCompletion { .. })
        );
        if side.mr.is_none() && accepted {
            if let Some(slot) = side.per_recv.get_mut((wc.wr_id & 0xffff) as usize) {
                slot.take();
            }
        }
        match result {
            Ok(Completed::Message(rx)) => {
                if let Ok(view) = side.pool.view(&rx) {
                    if view.message().is_backchannel_reply() {
                        self.stats.backchannel += 1;
                    } else if let Some(conn) = conn {
                        let credits = side.pool.credits();
                        match send_reply(conn, |out| {
                            let hdr = HeaderRepr::reply(rx.xid(), credits).emit(out).unwrap_or(0);
                            hdr + serve_call(view.head(), &mut out[hdr..], &self.cfg.programs)
                        }) {
                            Ok(()) => self.stats.calls += 1,
                            Err(e) => {
                                self.stats.send_failures += 1;
                                log::warn!("reply not sent: {e}");
                            }
                        }
                    }
                }
                let _ = side.pool.release(rx);
            }
            Ok(Completed::Rejected { error, reply }) => {
                log::debug!("qp {}: rejected message: {error}", wc.qp_num);
                match (reply, conn) {
                    (Some(r), Some(conn)) => {
                        let sent = send_reply(conn, |out| r.emit(out).unwrap_or(0));
                        match (sent, r.kind) {
                            (Ok(()), rpcrdma_core::wire::ErrorReplyKind::Vers { .. }) => {
                                self.stats.err_vers_sent += 1
                            }
                            (Ok(()), _) => self.stats.err_chunk_sent += 1,
                            (Err(_), _) => self.stats.send_failures += 1,
                        }
                    }
                    (None, _) => self.stats.dropped += 1,
                    (Some(_), None) => self.stats.send_failures += 1,
                }
            }
            Ok(Completed::Flushed) => {}
            Err(e) => {
                self.stats.bad_completions += 1;
                log::warn!("qp {}: {e}", wc.qp_num);
                if let Some(conn) = conn {
                    if conn.disconnecting.is_none() {
                        conn.id.disconnect();
                        conn.disconnecting = Some(Instant::now());
                    }
                }
            }
        }
    }

    /// Tears down connections whose Receives have all flushed (or after a 2 s grace period).
    fn reap_disconnected(&mut self) {
        let done: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.reply.disconnecting.is_some_and(|t| {
                    let flushed = c.recv.as_ref().is_none_or(|r| r.pool.posted() == 0);
                    (flushed && c.reply.sends_outstanding == 0)
                        || t.elapsed() > Duration::from_secs(2)
                })
            })
            .map(|(k, _)| *k)
            .collect();
        for qp_num in done {
            if let Some(conn) = self.conns.remove(&qp_num) {
                self.teardown(qp_num, conn);
            }
        }
    }

    fn teardown(&mut self, qp_num: u32, conn: Connection) {
        let Connection { reply, recv } = conn;
        // The QP goes first (then the Send slots): after this the device cannot write the
        // Receive buffers.
        drop(reply);
        if let Some(mut side) = recv {
            let report = side.pool.drain();
            let c = side.pool.counters();
            add_counters(&mut self.stats.pool, &c);
            self.stats.leaked_descriptors += side.pool.in_flight() as u64;
            log::info!(
                "closed qp {qp_num}: {} calls, {} flushed, drained {} posted + {} held, in flight {}, MR deregistered",
                c.delivered,
                c.flushed,
                report.posted,
                report.held,
                side.pool.in_flight()
            );
            drop(side); // pool, MR(s), memory, in that order
        } else {
            log::info!("closed qp {qp_num}");
        }
        self.stats.closed += 1;
    }

    fn shutdown(&mut self) {
        for conn in self.conns.values_mut().map(|c| &mut c.reply) {
            if conn.disconnecting.is_none() {
                conn.id.disconnect();
                conn.disconnecting = Some(Instant::now());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.conns.is_empty() && Instant::now() < deadline {
            let _ = self.poll_completions();
            let _ = self.poll_cm();
            self.reap_disconnected();
        }
        let rest: Vec<u32> = self.conns.keys().copied().collect();
        for qp_num in rest {
            if let Some(conn) = self.conns.remove(&qp_num) {
                self.teardown(qp_num, conn);
            }
        }
        if let Some(sh) = self.shared.as_mut() {
            if let Some(side) = sh.srq_recv.as_mut() {
                // The SRQ still holds posted Receives: destroy it before draining.
                sh.srq.take();
                side.pool.drain();
                self.stats.leaked_descriptors += side.pool.in_flight() as u64;
            }
        }
        let _ = self.shared.as_ref().map(|s| s.ctx);
    }
}

/// Builds a reply in a free Send slot with `build` (returns the length) and posts it.
fn send_reply(conn: &mut ReplyPath, build: impl FnOnce(&mut [u8]) -> usize) -> Result<()> {
    let max = (conn.peer.recv_size as usize).min(conn.send.slot_size());
    let (slot, bytes) = conn
        .send
        .take()
        .ok_or_else(|| Error::Protocol("no free Send slot".into()))?;
    let len = build(&mut bytes[..max]);
    let (addr, lkey) = conn.send.sge(slot);
    // SAFETY: the QP lives in `conn.id`; the slot is registered and stays ours until its Send
    // completion gives it back.
    match unsafe { post_send(conn.id.qp(), slot as u64, addr, len as u32, lkey) } {
        Ok(()) => {
            conn.sends_outstanding += 1;
            Ok(())
        }
        Err(e) => {
            conn.send.give_back(slot);
            Err(e)
        }
    }
}

/// The service: NULL for the configured programs, and the checksum program. Writes the RPC
/// reply into `out`; returns its length.
pub fn serve_call(call: &[u8], out: &mut [u8], programs: &[(u32, Vec<u32>)]) -> usize {
    let h = match oncrpc::parse_call(call) {
        Ok(h) => h,
        Err(oncrpc::RpcError::RpcVersion { .. }) => {
            let xid = call
                .get(..4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            return oncrpc::emit_rpc_mismatch(out, xid).unwrap_or(0);
        }
        Err(_) => {
            let xid = call
                .get(..4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            return oncrpc::emit_accepted_reply(out, xid, AcceptStat::GarbageArgs).unwrap_or(0);
        }
    };
    if h.prog == CHECKSUM_PROG {
        if h.vers != CHECKSUM_VERS {
            return oncrpc::emit_accepted_reply(
                out,
                h.xid,
                AcceptStat::ProgMismatch { low: 1, high: 1 },
            )
            .unwrap_or(0);
        }
        if h.proc_ == 0 {
            return oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::Success).unwrap_or(0);
        }
        if h.proc_ != CHECKSUM_PROC {
            return oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::ProcUnavail).unwrap_or(0);
        }
        let args = &call[h.args_offset..];
        let data = args
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .and_then(|len| args.get(4..4 + len));
        let Some(data) = data else {
            return oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::GarbageArgs).unwrap_or(0);
        };
        let n = oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::Success).unwrap_or(0);
        if let Some(dst) = out.get_mut(n..n + 4) {
            dst.copy_from_slice(&oncrpc::checksum(data).to_be_bytes());
            return n + 4;
        }
        return n;
    }
    match programs.iter().find(|(p, _)| *p == h.prog) {
        None => oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::ProgUnavail).unwrap_or(0),
        Some((_, versions)) if !versions.contains(&h.vers) => {
            let low = versions.iter().copied().min().unwrap_or(0);
            let high = versions.iter().copied().max().unwrap_or(0);
            oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::ProgMismatch { low, high })
                .unwrap_or(0)
        }
        Some(_) if h.proc_ != 0 => {
            oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::ProcUnavail).unwrap_or(0)
        }
        Some(_) => oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::Success).unwrap_or(0),
    }
}

fn add_counters(sum: &mut Counters, c: &Counters) {
    sum.posted += c.posted;
    sum.batches += c.batches;
    sum.completed += c.completed;
    sum.bytes += c.bytes;
    sum.flushed += c.flushed;
    sum.device_errors += c.device_errors;
    sum.delivered += c.delivered;
    sum.released += c.released;
    sum.err_vers += c.err_vers;
    sum.err_chunk += c.err_chunk;
    sum.dropped += c.dropped;
    sum.rejected_unknown += c.rejected_unknown;
    sum.rejected_stale += c.rejected_stale;
    sum.rejected_duplicate += c.rejected_duplicate;
    sum.cancelled += c.cancelled;
    sum.drained += c.drained;
}

/// Resident set size of this process in KiB (from /proc/self/statm).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcrdma_core::oncrpc::{emit_call, parse_accepted_reply};

    fn call(prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        emit_call(&mut b, 77, prog, vers, proc_).unwrap();
        b.extend_from_slice(args);
        b
    }

    fn serve(call: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut out = [0u8; 256];
        let n = serve_call(call, &mut out, &ServerConfig::default().programs);
        let (xid, stat, at) = parse_accepted_reply(&out[..n]).expect("accepted reply");
        (xid, stat, out[at.min(n)..n].to_vec())
    }

    #[test]
    fn nfs_null_v3_and_v4_succeed() {
        assert_eq!(serve(&call(NFS_PROG, 3, 0, &[])).1, 0);
        assert_eq!(serve(&call(NFS_PROG, 4, 0, &[])).1, 0);
    }

    #[test]
    fn unknown_program_version_procedure() {
        assert_eq!(serve(&call(100_005, 3, 0, &[])).1, 1, "PROG_UNAVAIL");
        let (_, stat, rest) = serve(&call(NFS_PROG, 2, 0, &[]));
        assert_eq!(
            (stat, rest),
            (2, vec![0, 0, 0, 3, 0, 0, 0, 4]),
            "PROG_MISMATCH 3..4"
        );
        assert_eq!(serve(&call(NFS_PROG, 3, 1, &[])).1, 3, "PROC_UNAVAIL");
    }

    #[test]
    fn checksum_program() {
        let data = b"hello, rdma";
        let mut args = (data.len() as u32).to_be_bytes().to_vec();
        args.extend_from_slice(data);
        args.push(0); // XDR padding
        let (xid, stat, rest) = serve(&call(CHECKSUM_PROG, CHECKSUM_VERS, CHECKSUM_PROC, &args));
        assert_eq!((xid, stat), (77, 0));
        assert_eq!(rest, oncrpc::checksum(data).to_be_bytes());
        // Length past the message: GARBAGE_ARGS.
        let (_, stat, _) = serve(&call(
            CHECKSUM_PROG,
            CHECKSUM_VERS,
            CHECKSUM_PROC,
            &[0, 0, 1, 0, 1],
        ));
        assert_eq!(stat, 4);
    }

    #[test]
    fn rpc_version_mismatch_is_denied() {
        let mut c = call(NFS_PROG, 3, 0, &[]);
        c[11] = 3; // rpcvers 3
        let mut out = [0u8; 64];
        let n = serve_call(&c, &mut out, &[]);
        assert_eq!(&out[8..12], &1u32.to_be_bytes(), "MSG_DENIED");
        assert_eq!(n, 24);
    }
}
