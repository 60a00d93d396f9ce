//! The end of connections: the reaper (a disconnected connection goes once its work has come
//! back, or after 2 s), the teardown of one, and the shutdown of all.

use std::time::{Duration, Instant};

use super::conn::{resources, start_disconnect, Conn};
use super::{App, Server};

impl<A: App> Server<A> {
    /// Tears down connections whose work has all come back (or after a 2 s grace period).
    pub(super) fn reap(&mut self) {
        self.disconnect_idle();
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

    /// Starts the disconnect of every connection idle past `cfg.idle_timeout` (looked at once
    /// a second at most).
    fn disconnect_idle(&mut self) {
        let Some(limit) = self.cfg.idle_timeout else {
            return;
        };
        let now = Instant::now();
        if now < self.next_idle_check {
            return;
        }
        self.next_idle_check = now + Duration::from_secs(1);
        for conn in self.conns.values_mut() {
            if conn.disconnecting.is_some() {
                continue;
            }
            let received = conn.received();
            let c = conn.responder.conn();
            if received != conn.seen.0
                || c.calls_in_progress() > 0
                || c.backchannel_outstanding() > 0
            {
                conn.seen = (received, now);
            } else if now.duration_since(conn.seen.1) > limit {
                log::info!(
                    "qp {}: nothing received for {} s and no call in progress: disconnecting \
                     (a peer that vanished, or one that reconnects when it calls again)",
                    conn.qp.qp_num(),
                    limit.as_secs()
                );
                self.stats.idle_disconnects += 1;
                start_disconnect(conn);
            }
        }
    }

    /// Destroys a connection in order (QP, then responder drain, own pool drain, memory) and
    /// adds its counters and anything it still held to the server's.
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
        let closed: Vec<u16> = self
            .epochs
            .iter()
            .filter(|(_, qp)| **qp == qp_num)
            .map(|(e, _)| *e)
            .collect();
        for epoch in closed {
            self.epochs.remove(&epoch);
            self.service.connection_closed(epoch);
        }
        drop(responder);
        drop(recv);
        drop(id);
        self.stats.closed += 1;
        if let Some(link) = &self.loops {
            link.table.release(link.index);
        }
    }

    /// Disconnects every connection, waits (at most 2 s) for their work to come back, tears
    /// them down and drains the shared pool; whatever is still held is counted as leaked.
    pub(super) fn shutdown(&mut self) {
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
