//! The `rpcrdma-serve` engine: one event loop per thread, many connections per loop, and the
//! core's responder doing all the protocol work. [`run_loops`] runs one loop per core
//! (`--threads`): see `loops.rs` for how connections are spread and counters summed.
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
//!
//! One file per idea: [`ServerConfig`] (`config.rs`), the [`App`] trait (`app.rs`), several
//! loops and the hand-over of connections between them (`loops.rs`), the
//! connection and shared verbs state (`conn.rs`), the event loop (`event_loop.rs`: poll,
//! dispatch, flush, wait), connection requests and accept (`accept.rs`), reaping, teardown and
//! shutdown (`teardown.rs`), counters and the exit report (`report.rs`), and what the programs
//! share around a server (`program.rs`).

mod accept;
mod app;
mod config;
mod conn;
mod event_loop;
mod loops;
mod program;
mod report;
mod teardown;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpcrdma_core::responder::CallHandle;
use rpcrdma_core::srq::SharedQueue;
use rpcrdma_services::ExampleService;

pub use app::{App, WaitFd};
pub use config::{AllowRule, ServerConfig};
pub use loops::{merge_app_reports, run_loops, LoopRun};
pub use program::{
    default_threads, device_ipv4, listen_addr, program_exit, program_exit_loops, program_init,
    rss_kib,
};
pub use rpcrdma_report::{Memory, Report, ServerStats};

use crate::cm::{CmId, EventChannel};
use crate::error::Result;
use crate::verbs::require_device;
use conn::{ConnMap, Shared};
use loops::LoopLink;

/// Receive descriptors a pool can track (its buffers follow the credits).
pub const MAX_RECV: usize = 4096;
/// Call slots per connection (two per credit).
pub const MAX_CALLS: usize = 512;
/// Pages a page pool can track.
pub const MAX_PAGES: usize = 8192;
/// Page size of the sink and payload pools.
pub const PAGE_SIZE: usize = 4096;
/// Milliseconds on the server's monotonic clock: the time base of backward-call deadlines
/// (`Connections::send_backchannel`), which the server expires on every turn.
pub fn clock_ms() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Connections at most (also the credit ledger's size).
pub const MAX_CONNECTIONS: usize = 256;
/// Completion queue depth (each CQ).
pub const CQ_DEPTH: usize = 16384;

/// The server. Field order is drop order: connections, then shared resources, then the
/// listener and its event channel.
pub struct Server<A: App = ExampleService> {
    conns: ConnMap,
    shared: Option<Shared>,
    /// The listening id (the first event loop's; the others have none).
    #[allow(dead_code)] // owned: the listening id lives as long as the server
    listen: Option<CmId>,
    /// This loop's rdma_cm event channel (shared with the listening loop, which moves the
    /// connections it hands over onto it).
    events: Arc<EventChannel>,
    /// With several event loops: this loop's place among them.
    loops: Option<LoopLink>,
    cfg: ServerConfig,
    service: A,
    /// Answers to pending calls that found no room in their connection's send queue yet.
    answers: Vec<(CallHandle, A::Answer)>,
    /// Connection epoch → QP number (pending calls name their connection by epoch).
    epochs: HashMap<u16, u32>,
    /// QPs with completions in this turn (kept to reuse its allocation).
    touched: Vec<u32>,
    /// What event mode waits on (kept to reuse its allocation).
    wait_fds: Vec<WaitFd>,
    /// Backward calls were sent and may not all have ended: each turn expires them.
    backward_active: bool,
    /// When the idle reaper looks next (`ServerConfig::idle_timeout`).
    next_idle_check: std::time::Instant,
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
    /// [`Error::NoDevice`](crate::Error::NoDevice) without RDMA devices; bind/listen failures;
    /// a configuration the core refuses.
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
    /// [`Error::NoDevice`](crate::Error::NoDevice) without RDMA devices; bind/listen failures;
    /// a configuration the core refuses.
    pub fn with_app(cfg: ServerConfig, app: A) -> Result<Server<A>> {
        require_device(cfg.device.as_deref())?;
        let events = EventChannel::new()?;
        events.set_nonblocking()?;
        let listen = CmId::new(&events)?;
        listen.listen(cfg.addr, cfg.port, 128)?;
        Self::log_listening(&cfg, 1);
        Ok(Self::make(cfg, app, Arc::new(events), Some(listen), None))
    }

    /// One of several event loops ([`run_loops`]): the first has the listener.
    fn member(cfg: ServerConfig, app: A, link: LoopLink, listen: Option<CmId>) -> Server<A> {
        let events = Arc::clone(&link.table.channels[link.index]);
        Self::make(cfg, app, events, listen, Some(link))
    }

    fn log_listening(cfg: &ServerConfig, loops: usize) {
        log::info!(
            "listening on {}:{} (buffers {} B, credits {}, {}{}, {} event loop{})",
            cfg.addr,
            cfg.port,
            cfg.buffer_size,
            cfg.credits,
            if cfg.srq { "SRQ" } else { "per-connection RQ" },
            if cfg.register_per_receive {
                ", register per Receive"
            } else {
                ""
            },
            loops,
            if loops == 1 { "" } else { "s" }
        );
    }

    fn make(
        cfg: ServerConfig,
        app: A,
        events: Arc<EventChannel>,
        listen: Option<CmId>,
        loops: Option<LoopLink>,
    ) -> Server<A> {
        Server {
            conns: ConnMap::default(),
            shared: None,
            listen,
            events,
            loops,
            service: app,
            answers: Vec::new(),
            epochs: HashMap::new(),
            touched: Vec::with_capacity(64),
            wait_fds: Vec::new(),
            backward_active: false,
            next_idle_check: std::time::Instant::now(),
            shared_queue: Box::new(SharedQueue::new()),
            next_epoch: 1,
            sq_reserved: 0,
            cfg,
            stats: ServerStats::default(),
        }
    }

    /// The app.
    pub fn app(&self) -> &A {
        &self.service
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
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
}

impl<A: App> Drop for Server<A> {
    fn drop(&mut self) {
        // The service's SOURCE bytes live in the shared memory dropped next.
        self.service.set_source(None);
    }
}
