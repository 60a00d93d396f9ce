//! The `rpcrdma-serve` engine: one thread, one event loop, many connections, and the core's
//! responder doing all the protocol work.
//!
//! This module only moves completions and work requests between verbs and the core: it polls
//! the shared completion queues, hands each completion to its connection's
//! [`Connection`](rpcrdma_core::responder::Connection) (found by QP number), and at the end of
//! the batch lets each touched connection flush (refill, credit grant, one chained post). With
//! `srq`, one shared receive queue and pool serve every connection, and the core's
//! [`SharedQueue`] ends each connection's batch in the order that keeps the grants of all
//! connections within the Receives posted (refill the shared pool, grant within what the others
//! were not granted, post, record).
//!
//! Teardown of a connection: it is closing (a flush or error completion, a CM disconnect, or
//! shutdown) → `rdma_disconnect` → its work requests flush → the QP is destroyed → the
//! responder drains (Receives, pages, send slots back) → its own pool drains → MRs
//! deregistered → memory unmapped. A QP that fails without a CM event is disconnected the
//! same way, and reaped after at most two seconds.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdma_sys::{ibv_wc, rdma_cm_event_type};
use rpcrdma_core::device::{WrId, WrKind};
use rpcrdma_core::dma::CoherentDma;
use rpcrdma_core::pool::PoolConfig;
use rpcrdma_core::responder::{Call, CallHandle, ReplyWriter, Service, Verdict};
use rpcrdma_core::responder::{Resources, ResponderConfig};
use rpcrdma_core::srq::{SharedQueue, SharedSlot};
use rpcrdma_core::wire::{DecodeLimits, PrivateData, DEFAULT_INLINE_THRESHOLD, NFS_RDMA_PORT};
use rpcrdma_services::{ExampleService, Program, NFS_PROG};

pub use rpcrdma_report::{Memory, Report, ServerStats};

use crate::cm::{private_data_for, CmEvent, CmId, EventChannel};
use crate::error::{Error, Result};
use crate::memory::{Pages, RecvBuffers, ResponderMemory, SourceMemory};
use crate::verbs::{
    require_device, set_nonblocking, to_completion, wc_array, CompChannel, Context, Cq, Pd, QpCaps,
    QueuePair, Srq, VerbsDevice, POLL_BATCH,
};

/// Receive descriptors a pool can track (its buffers follow the credits).
pub const MAX_RECV: usize = 4096;
/// Call slots per connection (two per credit).
pub const MAX_CALLS: usize = 512;
/// Pages a page pool can track.
pub const MAX_PAGES: usize = 8192;
/// Page size of the sink and payload pools.
pub const PAGE_SIZE: usize = 4096;
/// Connections at most (also the credit ledger's size).
pub const MAX_CONNECTIONS: usize = 256;
/// Completion queue depth (each CQ).
pub const CQ_DEPTH: usize = 16384;

/// What a [`Server`] runs: a [`Service`], plus — for services that answer some calls later
/// ([`Verdict::Pending`], like a gateway waiting for another server) — a way to hand those
/// answers back. The server calls [`App::poll`] on every turn of its loop (never blocking), then
/// [`App::next_answer`] until it returns `None`, and writes each answer through
/// [`App::write_answer`] into the pending call's reply.
pub trait App: Service {
    /// What the app keeps for a pending call until it can answer it.
    type Answer;
    /// Does the app's own non-blocking I/O. Returns how much work it did (0: idle).
    fn poll(&mut self) -> usize {
        0
    }
    /// The next answer ready for a pending call.
    fn next_answer(&mut self) -> Option<(CallHandle, Self::Answer)> {
        None
    }
    /// Writes `answer` as the reply to `call`, as [`Service::serve`] would.
    fn write_answer(
        &mut self,
        _answer: &Self::Answer,
        _call: &Call<'_>,
        _reply: &mut ReplyWriter<'_>,
    ) -> Verdict {
        Verdict::NoReply
    }
    /// File descriptors the server also waits on in event mode.
    fn wait_fds(&self) -> Vec<i32> {
        Vec::new()
    }
    /// Registered memory of the server's the app may hand out as reply payloads without
    /// copying (`bytes` at `device_addr` under `lkey`); taken back (`None`) before it is freed.
    fn set_source(&mut self, _source: Option<(&'static [u8], u64, u32)>) {}
    /// The app's own counters for the exit report (its `app` field, see [`Report`]); `null`
    /// unless the app says otherwise. Serialise a typed struct (`serde_json::to_value`) that
    /// readers of the report can deserialise again, as the gateway does with
    /// [`rpcrdma_report::GatewayApp`].
    fn report(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

impl App for ExampleService {
    type Answer = ();

    fn set_source(&mut self, source: Option<(&'static [u8], u64, u32)>) {
        match source {
            Some((bytes, addr, lkey)) => ExampleService::set_source(self, bytes, addr, lkey),
            None => self.clear_source(),
        }
    }

    fn report(&self) -> serde_json::Value {
        // Its counters are plain integers: serialising them cannot fail.
        serde_json::to_value(self.stats).unwrap_or_default()
    }
}

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
    /// Credits granted per connection (for all connections together with an SRQ).
    pub credits: u16,
    /// Receives per refill doorbell.
    pub batch: u16,
    /// Largest inline reply (send slot size).
    pub send_size: usize,
    /// Share one SRQ and pool among all connections.
    pub srq: bool,
    /// Sleep on completion channels instead of busy-polling.
    pub event_mode: bool,
    /// Signal every send-queue work request instead of the last Send of each batch (for
    /// comparison; see `ResponderConfig::signal_all`).
    pub signal_all: bool,
    /// Register and deregister a memory region around every Receive (the design the
    /// persistent pool replaced; for comparison only).
    pub register_per_receive: bool,
    /// Programs whose NULL procedure is answered.
    pub programs: Vec<Program>,
    /// Largest Read-chunk payload of one call.
    pub max_read_payload: u32,
    /// Bytes of Read-sink pages (all connections).
    pub sink_bytes: usize,
    /// Bytes of reply-payload pages (all connections).
    pub payload_bytes: usize,
    /// Receive buffers per connection beyond `credits + batch`: calls an app answers later
    /// keep their Receive, so an app with many calls pending (a gateway) needs these to keep
    /// its full grant.
    pub extra_receives: u16,
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
            send_size: 4096,
            srq: false,
            event_mode: false,
            signal_all: false,
            register_per_receive: false,
            programs: vec![Program {
                prog: NFS_PROG,
                low: 3,
                high: 4,
            }],
            max_read_payload: 1 << 20,
            sink_bytes: 8 << 20,
            payload_bytes: 8 << 20,
            extra_receives: 0,
        }
    }
}

/// Connections by QP number. QP numbers are small distinct integers, so the map hashes them with
/// the identity instead of SipHash: the lookup is on every completion.
type ConnMap = HashMap<u32, Conn, std::hash::BuildHasherDefault<QpNumHasher>>;

/// The identity hash of a `u32` key.
#[derive(Default)]
struct QpNumHasher(u64);

impl std::hash::Hasher for QpNumHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        // Spread the low bits into the high ones hashbrown uses for its control bytes.
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

struct Conn {
    // Field order is drop order: the QP first (the device stops touching memory), then the id,
    // then the responder and its send slots, then the connection's own receive buffers.
    qp: QueuePair,
    id: CmId,
    responder: Box<ResponderMemory<MAX_CALLS>>,
    recv: Option<Box<RecvBuffers<MAX_RECV>>>,
    /// Its row in the shared queue's credit ledger (every connection has one: the table
    /// also bounds how many are open; only SRQ connections share credits).
    slot: SharedSlot,
    disconnecting: Option<Instant>,
    failed: bool,
}

/// Verbs resources shared by all connections, made on the first connection request (the
/// listener may be bound to every device). Field order is drop order.
struct Shared {
    srq: Option<Srq>,
    #[allow(dead_code)] // owned: the memory behind the service's SOURCE payloads
    source: SourceMemory,
    srq_recv: Option<Box<RecvBuffers<MAX_RECV>>>,
    sinks: Box<Pages<MAX_PAGES>>,
    payloads: Box<Pages<MAX_PAGES>>,
    recv_cq: Cq,
    send_cq: Cq,
    channel: Option<CompChannel>,
    pd: Pd,
    #[allow(dead_code)] // owned by rdma_cm; kept for the device name in logs
    ctx: Context,
}

/// The server. Field order is drop order: connections, then shared resources, then the
/// listener and its event channel.
pub struct Server<A: App = ExampleService> {
    conns: ConnMap,
    shared: Option<Shared>,
    #[allow(dead_code)] // owned: the listening id lives as long as the server
    listen: CmId,
    events: EventChannel,
    cfg: ServerConfig,
    service: A,
    /// Answers to pending calls that found no room in their connection's send queue yet.
    answers: Vec<(CallHandle, A::Answer)>,
    /// Connection epoch → QP number (pending calls name their connection by epoch).
    epochs: HashMap<u16, u32>,
    /// QPs with completions in this turn (kept to reuse its allocation).
    touched: Vec<u32>,
    /// Connections admitted, and with an SRQ the credits they share.
    shared_queue: Box<SharedQueue<MAX_CONNECTIONS>>,
    next_epoch: u16,
    sq_reserved: usize,
    stats: ServerStats,
}

impl Server<ExampleService> {
    /// Binds and listens, serving the example service (NULL of `cfg.programs`, the test
    /// program).
    ///
    /// # Errors
    /// [`Error::NoDevice`] without RDMA devices; bind/listen failures; a configuration the
    /// core refuses.
    pub fn bind(cfg: ServerConfig) -> Result<Server<ExampleService>> {
        let mut service = ExampleService::new(&cfg.programs);
        service.max_payload = cfg.max_read_payload;
        Server::with_app(cfg, service)
    }

    /// The example service's counters.
    pub fn service_stats(&self) -> rpcrdma_services::ServiceStats {
        self.service.stats
    }
}

impl<A: App> Server<A> {
    /// Binds and listens, running `app`.
    ///
    /// # Errors
    /// [`Error::NoDevice`] without RDMA devices; bind/listen failures; a configuration the
    /// core refuses.
    pub fn with_app(cfg: ServerConfig, app: A) -> Result<Server<A>> {
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
            conns: ConnMap::default(),
            shared: None,
            listen,
            events,
            service: app,
            answers: Vec::new(),
            epochs: HashMap::new(),
            touched: Vec::with_capacity(64),
            shared_queue: Box::new(SharedQueue::new()),
            next_epoch: 1,
            sq_reserved: 0,
            cfg,
            stats: ServerStats::default(),
        })
    }

    fn pool_config(&self, credits: u16, epoch: u16) -> PoolConfig {
        PoolConfig {
            buffer_size: self.cfg.buffer_size,
            credits,
            batch: self.cfg.batch,
            limits: DecodeLimits {
                max_read_payload: self.cfg.max_read_payload,
            },
            buffers: if self.cfg.extra_receives == 0 {
                0
            } else {
                credits
                    .saturating_add(self.cfg.batch)
                    .saturating_add(self.cfg.extra_receives)
                    .min(MAX_RECV as u16)
            },
            epoch,
        }
    }

    fn responder_config(&self, initiator_depth: u8, epoch: u16) -> ResponderConfig {
        let credits = if self.cfg.srq {
            self.cfg.credits.min((MAX_CALLS / 2) as u16)
        } else {
            self.cfg.credits
        };
        ResponderConfig {
            credits,
            send_size: self.cfg.send_size,
            initiator_depth,
            sq_depth: self.sq_depth(credits),
            epoch,
            signal_all: self.cfg.signal_all,
        }
    }

    fn sq_depth(&self, credits: u16) -> u16 {
        // A Send per call plus room for Writes and Reads; the responder never exceeds it.
        (credits as usize * 4 + 64).min(u16::MAX as usize) as u16
    }

    /// Counters so far (open connections included).
    pub fn stats(&self) -> ServerStats {
        let mut s = self.stats;
        if let Some(r) = self.shared.as_ref().and_then(|sh| sh.srq_recv.as_ref()) {
            s.pool.accumulate(&r.pool().counters());
        }
        for c in self.conns.values() {
            if let Some(r) = &c.recv {
                s.pool.accumulate(&r.pool().counters());
            }
            s.responder.accumulate(&c.responder.conn().counters());
        }
        s
    }

    /// The app.
    pub fn app(&self) -> &A {
        &self.service
    }

    /// The exit report: the server's, the pools' and the responders' counters, the memory
    /// figures and the app's own counters ([`App::report`]). [`program_exit`] prints it as
    /// `NAME: stats {json}` ([`rpcrdma_report::format_line`]).
    pub fn report(&self) -> Report {
        Report {
            server: self.stats(),
            memory: Memory {
                rss_kib: rss_kib(),
                per_connection: self.memory_per_connection() as u64,
                shared: self.shared_memory() as u64,
            },
            app: self.service.report(),
        }
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Bytes of registered memory per connection: its Receive buffers (none with an SRQ) and
    /// its send slots. Read sinks and payload pages are shared by all connections
    /// ([`Server::shared_memory`]).
    pub fn memory_per_connection(&self) -> usize {
        let recv = if self.cfg.srq {
            0
        } else {
            self.pool_config(self.cfg.credits, 0).needed_region_len()
        };
        recv + self.responder_config(1, 1).send_region_len()
    }

    /// Bytes of registered memory shared by all connections: Read sinks, payload pages, and
    /// the SRQ's Receive buffers.
    pub fn shared_memory(&self) -> usize {
        let srq = if self.cfg.srq {
            self.pool_config(self.cfg.credits, 0).needed_region_len()
        } else {
            0
        };
        self.cfg.sink_bytes + self.cfg.payload_bytes + srq
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
            idle = if work == 0 { idle.saturating_add(1) } else { 0 };
            // rdma_cm and teardown are checked when idle or every 256 busy iterations: no
            // syscall per message on the hot path.
            if idle > 0 || n % 256 == 0 {
                self.poll_cm()?;
                self.reap();
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
        let mut fds = vec![self.events.fd()];
        fds.extend(self.service.wait_fds());
        if let Some(ch) = self.shared.as_ref().and_then(|s| s.channel.as_ref()) {
            fds.push(ch.fd());
        }
        crate::verbs::wait_readable(&fds, timeout)?;
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
                | rdma_cm_event_type::RDMA_CM_EVENT_TIMEWAIT_EXIT => {
                    if let Some(conn) = self.conns.values_mut().find(|c| c.id.as_raw() == ev.id) {
                        start_disconnect(conn);
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

    fn ensure_shared(&mut self, ctx: Option<Context>) -> Result<()> {
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
            set_nonblocking(ch.fd())?;
        }
        let recv_cq = Cq::new(ctx, CQ_DEPTH as i32, channel.as_ref())?;
        let send_cq = Cq::new(ctx, CQ_DEPTH as i32, channel.as_ref())?;
        let sinks = Pages::new(&pd, self.cfg.sink_bytes, PAGE_SIZE)?;
        let source = SourceMemory::new(&pd, self.cfg.max_read_payload as usize, |b| {
            rpcrdma_services::fill_pattern(0, 0, b)
        })?;
        let (bytes, addr, lkey) = source.for_service(self.cfg.max_read_payload as usize);
        self.service.set_source(Some((bytes, addr, lkey)));
        let payloads = Pages::new(&pd, self.cfg.payload_bytes, PAGE_SIZE)?;
        let (srq, srq_recv) = if self.cfg.srq {
            let pool_cfg = self.pool_config(self.cfg.credits, 0);
            let srq = Srq::new(&pd, pool_cfg.buffer_count() as u32)?;
            let mut side = RecvBuffers::new(&pd, pool_cfg, self.cfg.register_per_receive)?;
            let mut dev = VerbsDevice::srq_only(&srq);
            let (pool, mut dev) = side.parts(&pd, &mut dev);
            pool.refill(&mut dev)
                .map_err(|e| Error::Protocol(format!("SRQ refill: {e}")))?;
            (Some(srq), Some(side))
        } else {
            (None, None)
        };
        log::info!(
            "device {name}: protection domain, CQs, {} KiB of Read sinks and {} KiB of payload pages{}",
            self.cfg.sink_bytes / 1024,
            self.cfg.payload_bytes / 1024,
            if srq.is_some() { ", SRQ" } else { "" }
        );
        self.shared = Some(Shared {
            srq,
            source,
            srq_recv,
            sinks,
            payloads,
            recv_cq,
            send_cq,
            channel,
            pd,
            ctx,
        });
        Ok(())
    }

    fn on_connect_request(&mut self, ev: &CmEvent) {
        let Some(id) = CmId::from_event(ev) else {
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
        // RFC 8797: absent or unrecognised private data means the RFC 8166 defaults.
        let peer = ev.private_data();
        let peer_inline = peer.map_or(DEFAULT_INLINE_THRESHOLD, |p| p.recv_size as usize);
        if let Err(e) = self.ensure_shared(id.verbs()) {
            id.reject();
            return Err(e);
        }
        let Some(slot) = self.shared_queue.open() else {
            id.reject();
            return Err(Error::Protocol(format!(
                "{MAX_CONNECTIONS} connections already open"
            )));
        };
        match self.accept_on(id, ev, slot, peer, peer_inline) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared_queue.cancel(slot);
                Err(e)
            }
        }
    }

    fn accept_on(
        &mut self,
        id: CmId,
        ev: &CmEvent,
        slot: SharedSlot,
        peer: Option<PrivateData>,
        peer_inline: usize,
    ) -> Result<()> {
        let epoch = self.next_epoch;
        self.next_epoch = if epoch >= rpcrdma_core::device::MAX_EPOCH {
            1
        } else {
            epoch + 1
        };
        // Reads this side may issue: the requester's responder resources, which rdma_cm reports
        // to a listener as the event's initiator depth (from this side's point of view).
        let depth = ev.initiator_depth.clamp(1, 16);
        let rcfg = self.responder_config(depth, epoch);
        let pool_cfg = self.pool_config(self.cfg.credits, epoch);
        let sq = rcfg.sq_depth as usize;
        if self.sq_reserved + sq > CQ_DEPTH {
            id.reject();
            return Err(Error::Protocol(
                "the send completion queue is fully committed: too many connections".into(),
            ));
        }
        let sh = self.shared.as_ref().ok_or(Error::NoDevice)?;
        let caps = QpCaps {
            max_send_wr: sq as u32,
            max_recv_wr: pool_cfg.buffer_count() as u32,
        };
        let qp =
            match QueuePair::create(&id, &sh.pd, &sh.send_cq, &sh.recv_cq, sh.srq.as_ref(), caps) {
                Ok(qp) => qp,
                Err(e) => {
                    id.reject();
                    return Err(e);
                }
            };
        let responder = ResponderMemory::new(&sh.pd, rcfg, peer_inline)?;
        let recv = if self.cfg.srq {
            None
        } else {
            let mut side = RecvBuffers::new(&sh.pd, pool_cfg, self.cfg.register_per_receive)?;
            let mut dev = VerbsDevice::new(&qp, None, None);
            let (pool, mut dev) = side.parts(&sh.pd, &mut dev);
            pool.refill(&mut dev)
                .map_err(|e| Error::Protocol(format!("initial Receives: {e}")))?;
            Some(side)
        };
        let ours = private_data_for(self.cfg.send_size, self.cfg.buffer_size);
        id.accept(&ours, depth)?;
        let qp_num = qp.qp_num();
        self.epochs.insert(epoch, qp_num);
        self.sq_reserved += sq;
        log::info!(
            "accepted qp {qp_num}: peer receives {peer_inline} B inline{}, {depth} Reads in flight, credits {}",
            if peer.is_none() { " (no private data: defaults)" } else { "" },
            rcfg.credits
        );
        self.conns.insert(
            qp_num,
            Conn {
                qp,
                id,
                responder,
                recv,
                slot,
                disconnecting: None,
                failed: false,
            },
        );
        Ok(())
    }

    /// Polls both CQs once and flushes the connections touched; returns the completions
    /// handled.
    fn poll_completions(&mut self) -> Result<usize> {
        let Some(sh) = self.shared.as_mut() else {
            self.service.poll();
            return Ok(0);
        };
        let mut wcs = wc_array::<POLL_BATCH>();
        // Reused between turns: no allocation per turn once it has grown.
        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        let mut total = 0;
        for recv in [false, true] {
            let n = if recv {
                sh.recv_cq.poll(&mut wcs)?
            } else {
                sh.send_cq.poll(&mut wcs)?
            };
            total += n;
            for wc in &wcs[..n] {
                if !touched.contains(&wc.qp_num) {
                    touched.push(wc.qp_num);
                }
                dispatch(
                    &mut self.conns,
                    sh,
                    &mut self.shared_queue,
                    &mut self.service,
                    &mut self.stats,
                    wc,
                );
            }
        }
        // The app's own I/O, and its answers to pending calls.
        total += self.service.poll();
        while let Some(answer) = self.service.next_answer() {
            self.answers.push(answer);
        }
        let mut kept = Vec::new();
        for (handle, answer) in self.answers.drain(..) {
            let Some(conn) = self
                .epochs
                .get(&handle.epoch)
                .and_then(|qp| self.conns.get_mut(qp))
            else {
                continue; // the connection is gone: so is the call
            };
            let Some(mut res) = resources(sh, conn.recv.as_deref_mut()) else {
                continue;
            };
            let service = &mut self.service;
            match conn
                .responder
                .conn_mut()
                .complete_pending(&mut res, handle, |call, w| {
                    service.write_answer(&answer, call, w)
                }) {
                Ok(true) => {
                    total += 1;
                    let qp_num = conn.qp.qp_num();
                    if !touched.contains(&qp_num) {
                        touched.push(qp_num);
                    }
                }
                Ok(false) => kept.push((handle, answer)),
                Err(_) => {}
            }
        }
        if !kept.is_empty() || !self.answers.is_empty() {
            self.answers = kept;
        }
        if total == 0 {
            // Calls waiting for pages another connection held: offer them again.
            for conn in self
                .conns
                .values_mut()
                .filter(|c| c.responder.conn().has_waiting())
            {
                flush(conn, sh, &mut self.service, &mut self.shared_queue);
            }
            self.touched = touched;
            return Ok(0);
        }
        // With an SRQ, each flush refills the shared pool before its connection sends a grant.
        for qp_num in &touched {
            if let Some(conn) = self.conns.get_mut(qp_num) {
                flush(conn, sh, &mut self.service, &mut self.shared_queue);
            }
        }
        for conn in self.conns.values_mut() {
            if conn.responder.conn().has_waiting() && !touched.contains(&conn.qp.qp_num()) {
                flush(conn, sh, &mut self.service, &mut self.shared_queue);
            }
        }
        self.touched = touched;
        Ok(total)
    }

    /// Tears down connections whose work has all come back (or after a 2 s grace period).
    fn reap(&mut self) {
        let done: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.disconnecting.is_some_and(|t| {
                    let receives_back = c.recv.as_ref().is_none_or(|r| r.pool().posted() == 0);
                    let sends_back = c.responder.conn().sq_in_flight() == 0;
                    (receives_back && sends_back) || t.elapsed() > Duration::from_secs(2)
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

    fn teardown(&mut self, qp_num: u32, conn: Conn) {
        let Conn {
            qp,
            id,
            mut responder,
            mut recv,
            slot,
            failed,
            ..
        } = conn;
        // The QP goes first: after this the device cannot touch this connection's memory.
        drop(qp);
        let Some(sh) = self.shared.as_mut() else {
            return;
        };
        let Some(mut res) = resources(sh, recv.as_deref_mut()) else {
            return;
        };
        let report = self
            .shared_queue
            .close(slot, &mut res, responder.conn_mut());
        let counters = responder.conn().counters();
        self.stats.responder.accumulate(&counters);
        if let Some(side) = recv.as_mut() {
            let pool = side.pool_mut();
            let drained = pool.drain();
            self.stats.pool.accumulate(&pool.counters());
            self.stats.leaked += pool.in_flight() as u64;
            log::info!(
                "closed qp {qp_num}: {} calls, drained {} calls / {} work requests / {} posted + {} held Receives, MRs deregistered",
                counters.calls,
                report.calls,
                report.work_requests,
                drained.posted,
                drained.held
            );
        } else {
            log::info!(
                "closed qp {qp_num}: {} calls, drained {} calls / {} work requests",
                counters.calls,
                report.calls,
                report.work_requests
            );
        }
        self.stats.leaked += responder.conn().calls_in_progress() as u64;
        self.stats.failed_connections += failed as u64;
        self.sq_reserved -= responder.conn().sq_depth();
        self.epochs.retain(|_, qp| *qp != qp_num);
        drop(responder);
        drop(recv);
        drop(id);
        self.stats.closed += 1;
    }

    fn shutdown(&mut self) {
        for conn in self.conns.values_mut() {
            start_disconnect(conn);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.conns.is_empty() && Instant::now() < deadline {
            let _ = self.poll_completions();
            let _ = self.poll_cm();
            self.reap();
        }
        let rest: Vec<u32> = self.conns.keys().copied().collect();
        for qp_num in rest {
            if let Some(conn) = self.conns.remove(&qp_num) {
                self.teardown(qp_num, conn);
            }
        }
        if let Some(sh) = self.shared.as_mut() {
            // The SRQ still holds posted Receives: destroy it before draining.
            sh.srq.take();
            if let Some(side) = sh.srq_recv.as_mut() {
                let pool = side.pool_mut();
                pool.drain();
                self.stats.pool.accumulate(&pool.counters());
                self.stats.leaked += pool.in_flight() as u64;
            }
            let pages = sh.sinks.pool().page_count() - sh.sinks.pool().free_pages()
                + sh.payloads.pool().page_count()
                - sh.payloads.pool().free_pages();
            self.stats.leaked += pages as u64;
        }
    }
}

impl<A: App> Drop for Server<A> {
    fn drop(&mut self) {
        // The service's SOURCE bytes live in the shared memory dropped next.
        self.service.set_source(None);
    }
}

fn start_disconnect(conn: &mut Conn) {
    if conn.disconnecting.is_none() {
        conn.id.disconnect();
        conn.disconnecting = Some(Instant::now());
    }
}

/// The resources a connection's responder works with: its own pool or the shared one (a
/// connection without its own pool exists only with an SRQ, whose pool is made first).
fn resources<'r>(
    sh: &'r mut Shared,
    own: Option<&'r mut RecvBuffers<MAX_RECV>>,
) -> Option<Resources<'r, 'static, MAX_RECV, MAX_PAGES>> {
    let (sinks, payloads) = (sh.sinks.pool_mut(), sh.payloads.pool_mut());
    Some(match own {
        Some(side) => Resources::own(side.pool_mut(), sinks, payloads),
        None => Resources::shared(sh.srq_recv.as_mut()?.pool_mut(), sinks, payloads),
    })
}

/// Hands one completion to its connection.
fn dispatch<A: Service>(
    conns: &mut ConnMap,
    sh: &mut Shared,
    queue: &mut SharedQueue<MAX_CONNECTIONS>,
    service: &mut A,
    stats: &mut ServerStats,
    wc: &ibv_wc,
) {
    let completion = to_completion(wc);
    let Some(conn) = conns.get_mut(&wc.qp_num) else {
        // With an SRQ, a Receive of a connection already torn down still returns its
        // descriptor through the shared pool (the pool validates the wr_id).
        if let Some(mut res) = resources(sh, None) {
            queue.stray(&mut res, &mut CoherentDma, &completion);
        }
        stats.stray_completions += 1;
        return;
    };
    let Some(mut res) = resources(sh, conn.recv.as_deref_mut()) else {
        return;
    };
    conn.responder
        .conn_mut()
        .handle(&mut res, &mut CoherentDma, service, &completion);
    if WrId(wc.wr_id).kind() == WrKind::Recv {
        if let Some(side) = conn.recv.as_mut() {
            side.completed(wc.wr_id);
        } else if let Some(side) = sh.srq_recv.as_mut() {
            side.completed(wc.wr_id);
        }
    }
}

/// End of a batch for one connection: with its own receive queue, refill, grant, one chained
/// post; with an SRQ, the shared queue's sequence (refill the shared pool, grant within what
/// the other connections were not granted, post, record).
fn flush<A: Service>(
    conn: &mut Conn,
    sh: &mut Shared,
    service: &mut A,
    queue: &mut SharedQueue<MAX_CONNECTIONS>,
) {
    let (sinks, payloads) = (sh.sinks.pool_mut(), sh.payloads.pool_mut());
    let result = match (conn.recv.as_deref_mut(), sh.srq_recv.as_deref_mut()) {
        (Some(side), _) => {
            let mut dev = VerbsDevice::new(&conn.qp, None, None);
            let (pool, mut dev) = side.parts(&sh.pd, &mut dev);
            let mut res = Resources::own(pool, sinks, payloads);
            conn.responder.conn_mut().flush(&mut res, &mut dev, service)
        }
        (None, Some(side)) => {
            let mut dev = VerbsDevice::new(&conn.qp, sh.srq.as_ref(), None);
            let (pool, mut dev) = side.parts(&sh.pd, &mut dev);
            let mut res = Resources::shared(pool, sinks, payloads);
            queue.flush(
                conn.slot,
                &mut res,
                conn.responder.conn_mut(),
                &mut dev,
                service,
            )
        }
        (None, None) => Ok(()),
    };
    if let Err(e) = result {
        log::warn!("qp {}: post failed: {e}", conn.qp.qp_num());
    }
    if conn.responder.conn().is_closing() && conn.disconnecting.is_none() {
        // A flush or error completion with no CM event: disconnect so the rest flushes.
        log::warn!(
            "qp {}: a work request failed or flushed; disconnecting",
            conn.qp.qp_num()
        );
        conn.failed = true;
        start_disconnect(conn);
    }
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

/// What `rpcrdma-serve` and `rpcrdma-gateway` share around a server: logging to stderr
/// (`RPCRDMA_LOG`, default `info`) and a stop flag set by SIGINT / SIGTERM.
///
/// # Errors
/// The signal handlers could not be installed.
pub fn program_init() -> std::io::Result<std::sync::Arc<AtomicBool>> {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("RPCRDMA_LOG", "info"))
        .format_timestamp(None)
        .init();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Prints `server`'s exit report as one line, `NAME: stats {json}` (a [`Report`], read back
/// with [`rpcrdma_report::parse_last`]), and says whether the run succeeded: no error, and
/// nothing held after teardown.
pub fn program_exit<A: App>(name: &str, server: &Server<A>, result: Result<()>) -> bool {
    let report = server.report();
    let stats = report.server;
    println!(
        "{}",
        rpcrdma_report::format_line(name, rpcrdma_report::STATS, &report)
    );
    match result {
        Ok(()) if stats.leaked == 0 => true,
        Ok(()) => {
            eprintln!(
                "{name}: {} descriptors, calls or pages still held after teardown",
                stats.leaked
            );
            false
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            false
        }
    }
}
