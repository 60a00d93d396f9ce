//! The event loop's turn: poll both completion queues, hand each completion to its connection
//! ([`dispatch`]), let the app answer pending calls, and end the batch of every connection
//! touched ([`flush`]); and the wait between turns when idle.

use std::time::Duration;

use rdma_sys::ibv_wc;
use rpcrdma_core::device::{WrId, WrKind};
use rpcrdma_core::dma::CoherentDma;
use rpcrdma_core::responder::{Resources, Service, StaleHandle};
use rpcrdma_core::srq::SharedQueue;

use super::conn::{resources, start_disconnect, Conn, ConnMap, LoopCalls, Shared};
use super::{App, Server, ServerStats, WaitFd, MAX_CONNECTIONS};
use crate::error::Result;
use crate::verbs::{to_completion, wc_array, VerbsDevice, POLL_BATCH};

impl<A: App> Server<A> {
    /// Polls both CQs once and flushes the connections touched; returns the completions
    /// handled.
    pub(super) fn poll_completions(&mut self) -> Result<usize> {
        let Some(sh) = self.shared.as_mut() else {
            self.service.poll(&mut ());
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
        let mut calls = LoopCalls::new(&mut self.conns, &self.epochs, sh, &mut touched);
        total += self.service.poll(&mut calls);
        self.backward_active |= calls.sent_backward();
        // Backward calls past their deadline, or lost with their connection: the app hears
        // which. Only while some were sent: no pass over the connections otherwise.
        if self.backward_active {
            self.backward_active = end_backward_calls(&mut self.conns, &mut self.service);
        }
        while let Some(answer) = self.service.next_answer() {
            self.answers.push(answer);
        }
        let mut kept = Vec::new();
        for (handle, mut answer) in self.answers.drain(..) {
            let conn = self
                .epochs
                .get(&handle.epoch)
                .and_then(|qp| self.conns.get_mut(qp));
            let done = match conn {
                Some(conn) => match resources(sh, conn.recv.as_deref_mut()) {
                    Some(mut res) => {
                        let service = &mut self.service;
                        let done = conn.responder.conn_mut().complete_pending(
                            &mut res,
                            handle,
                            |call, w| service.write_answer(&mut answer, call, w),
                        );
                        if done == Ok(true) {
                            let qp_num = conn.qp.qp_num();
                            if !touched.contains(&qp_num) {
                                touched.push(qp_num);
                            }
                        }
                        done
                    }
                    None => Err(StaleHandle),
                },
                // The connection is gone: so is the call.
                None => Err(StaleHandle),
            };
            match done {
                Ok(false) => kept.push((handle, answer)),
                // Written, or its call is gone: the app takes back what the answer holds.
                Ok(true) | Err(_) => {
                    total += usize::from(done.is_ok());
                    self.service.release_answer(answer, sh.payloads.pool_mut());
                }
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

    /// Sleeps until there may be work: in event mode on the CM channel, the completion channel
    /// and the app's descriptors; otherwise a short sleep while no connection is open.
    pub(super) fn wait(&mut self, timeout: Duration) -> Result<()> {
        if !self.cfg.event_mode {
            if self.conns.is_empty() {
                std::thread::sleep(timeout);
            }
            return Ok(());
        }
        let mut fds = std::mem::take(&mut self.wait_fds);
        fds.clear();
        fds.push(WaitFd::readable(self.events.fd()));
        self.service.wait_fds(&mut fds);
        if let Some(ch) = self.shared.as_ref().and_then(|s| s.channel.as_ref()) {
            fds.push(WaitFd::readable(ch.fd()));
        }
        let waited = crate::verbs::wait_fds(&fds, timeout);
        self.wait_fds = fds;
        waited?;
        if let Some(ch) = self.shared.as_ref().and_then(|s| s.channel.as_ref()) {
            while ch.consume_event()? {}
        }
        Ok(())
    }
}

/// Expires this loop's backward calls past their deadline and hands every ended one to the
/// app; returns whether any is still outstanding.
fn end_backward_calls<A: App>(conns: &mut ConnMap, service: &mut A) -> bool {
    let now = super::clock_ms();
    let mut outstanding = false;
    for conn in conns.values_mut() {
        let c = conn.responder.conn_mut();
        if c.backchannel_outstanding() > 0 {
            c.expire_backchannel(now);
        }
        while let Some((xid, why)) = c.take_backchannel_failure() {
            log::info!(
                "qp {}: backward call xid {xid:#x} ended: {why:?}",
                conn.qp.qp_num()
            );
            service.backchannel_failed(c.epoch(), xid, why);
        }
        outstanding |= c.backchannel_outstanding() > 0;
    }
    outstanding
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
    let shared = conn.recv.is_none();
    let Some(mut res) = resources(sh, conn.recv.as_deref_mut()) else {
        return;
    };
    if shared {
        // The shared queue's rules: a requester over its grant is closed at once.
        queue.handle(
            conn.slot,
            &mut res,
            conn.responder.conn_mut(),
            &mut CoherentDma,
            service,
            &completion,
        );
    } else {
        conn.responder
            .conn_mut()
            .handle(&mut res, &mut CoherentDma, service, &completion);
    }
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
fn flush<A: App>(
    conn: &mut Conn,
    sh: &mut Shared,
    service: &mut A,
    queue: &mut SharedQueue<MAX_CONNECTIONS>,
) {
    // The app's brake on this requester's grant (a gateway holding too much for it).
    let responder = conn.responder.conn_mut();
    let cap = service.credit_cap(responder.epoch());
    responder.set_grant_cap(cap.unwrap_or(u16::MAX));
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
        // A flush or error completion, or a requester over its grant on the shared queue,
        // with no CM event: disconnect so the rest flushes.
        let why = if conn.responder.conn().counters().grant_overruns > 0 && conn.recv.is_none() {
            "the client sent more calls than its credit grant allows"
        } else {
            "a work request failed or flushed"
        };
        log::warn!("qp {}: {why}; disconnecting", conn.qp.qp_num());
        conn.failed = true;
        start_disconnect(conn);
    }
}
