//! The server's counters ([`ServerStats`], open connections included), its memory figures and
//! its exit report ([`Report`], printed as one JSON line by
//! [`program_exit`](super::program_exit)).

use super::{rss_kib, App, Memory, Report, Server, ServerStats};

impl<A: App> Server<A> {
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

    /// The exit report: the server's, the pools' and the responders' counters, the memory
    /// figures and the app's own counters ([`App::report`]).
    /// [`program_exit`](super::program_exit) prints it as `NAME: stats {json}`
    /// ([`rpcrdma_report::format_line`]).
    pub fn report(&self) -> Report {
        Report {
            server: self.stats(),
            memory: Memory {
                rss_kib: rss_kib(),
                per_connection: self.memory_per_connection() as u64,
                shared: self.shared_memory() as u64,
            },
            app: self.service.report(),
            loops: Vec::new(),
        }
    }

    /// Bytes of registered memory per connection: its Receive buffers (none with an SRQ) and
    /// its send slots. Read sinks and payload pages are shared by all connections
    /// ([`Server::shared_memory`]).
    pub fn memory_per_connection(&self) -> usize {
        let recv = if self.cfg.srq {
            0
        } else {
            self.cfg
                .pool_config(self.cfg.credits, 0)
                .needed_region_len()
        };
        recv + self.cfg.responder_config(1, 1).send_region_len()
    }

    /// Bytes of registered memory shared by all connections: Read sinks, payload pages, and
    /// the SRQ's Receive buffers.
    pub fn shared_memory(&self) -> usize {
        let srq = if self.cfg.srq {
            self.cfg
                .pool_config(self.cfg.credits, 0)
                .needed_region_len()
        } else {
            0
        };
        self.cfg.sink_bytes + self.cfg.payload_bytes + srq
    }
}
