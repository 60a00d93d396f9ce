//! Connection requests: the rdma_cm events, the verbs resources every connection shares (made
//! on the first request), and accepting a connection (its QP, responder, receive buffers and
//! the RFC 8797 private data of the accept).

use rdma_sys::rdma_cm_event_type;
use rpcrdma_core::srq::SharedSlot;
use rpcrdma_core::wire::{PrivateData, DEFAULT_INLINE_THRESHOLD};

use super::conn::{start_disconnect, Conn, Shared};
use super::loops::Handed;
use super::{App, Server, CQ_DEPTH, PAGE_SIZE};
use crate::cm::{private_data_for, CmEvent, CmId};
use crate::error::{Error, Result};
use crate::memory::{Pages, RecvBuffers, ResponderMemory, SourceMemory};
use crate::verbs::{
    set_nonblocking, CompChannel, Context, Cq, Pd, QpCaps, QueuePair, Srq, VerbsDevice,
};

impl<A: App> Server<A> {
    pub(super) fn poll_cm(&mut self) -> Result<()> {
        // Connections the listening loop handed to this one (their ids are on our channel).
        let handed: Vec<Handed> = self
            .loops
            .as_ref()
            .map(|l| l.inbox.try_iter().collect())
            .unwrap_or_default();
        for h in handed {
            self.accept_request(h.id, h.private, h.initiator_depth);
        }
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
            let pool_cfg = self.cfg.pool_config(self.cfg.credits, 0);
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
        if !self.cfg.allow.is_empty() {
            let peer = id.peer_addr();
            let allowed = peer.is_some_and(|p| self.cfg.allow.iter().any(|r| r.contains(*p.ip())));
            if !allowed {
                id.reject();
                self.stats.rejected += 1;
                log::warn!(
                    "connection request refused: peer {} is not in the allow-list (--allow): rejected",
                    peer.map_or("(not IPv4)".to_string(), |p| p.to_string())
                );
                return;
            }
        }
        // RFC 8797: absent or unrecognised private data means the RFC 8166 defaults.
        let private = ev.private_data();
        // With several event loops, the connection goes to the one with the fewest.
        if let Some(link) = &self.loops {
            let to = link.table.least_loaded();
            if to != link.index {
                link.table.assign(to);
                let req = Handed {
                    id,
                    private,
                    initiator_depth: ev.initiator_depth,
                };
                if let Err(e) = link.table.hand(to, req) {
                    link.table.release(to);
                    self.stats.rejected += 1;
                    log::warn!(
                        "connection request refused: cannot hand it to event loop {to}: {e}"
                    );
                } else {
                    log::debug!("connection request handed to event loop {to}");
                }
                return;
            }
            link.table.assign(link.index);
        }
        self.accept_request(id, private, ev.initiator_depth);
    }

    /// Accepts a connection on this loop (its load was counted by whoever chose the loop).
    fn accept_request(&mut self, id: CmId, private: Option<PrivateData>, initiator_depth: u8) {
        match self.accept(id, private, initiator_depth) {
            Ok(()) => self.stats.accepted += 1,
            Err(e) => {
                if let Some(link) = &self.loops {
                    link.table.release(link.index);
                }
                self.stats.rejected += 1;
                log::warn!("connection request refused: {e}");
            }
        }
    }

    fn accept(&mut self, id: CmId, peer: Option<PrivateData>, initiator_depth: u8) -> Result<()> {
        let peer_inline = peer.map_or(DEFAULT_INLINE_THRESHOLD, |p| p.recv_size as usize);
        if let Err(e) = self.ensure_shared(id.verbs()) {
            id.reject();
            return Err(e);
        }
        // A listener on 0.0.0.0 hears every device; the shared PD and CQs live on one.
        if let (Some(sh), Some(ctx)) = (self.shared.as_ref(), id.verbs()) {
            if ctx.as_raw() != sh.ctx.as_raw() {
                id.reject();
                return Err(Error::Protocol(format!(
                    "the request came on device {}, but the server's resources are on {}",
                    ctx.device_name(),
                    sh.ctx.device_name()
                )));
            }
        }
        // With an SRQ, the newcomer's first call needs a posted Receive no one else is
        // promised; without one (or before the shared queue exists) only the count limits.
        let posted = self
            .shared
            .as_ref()
            .and_then(|sh| sh.srq_recv.as_ref())
            .map_or(usize::MAX, |r| r.pool().posted());
        let slot = match self.shared_queue.open(posted) {
            Ok(slot) => slot,
            Err(why) => {
                id.reject();
                return Err(Error::Protocol(format!("connection refused: {why}")));
            }
        };
        match self.accept_on(id, initiator_depth, slot, peer, peer_inline) {
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
        initiator_depth: u8,
        slot: SharedSlot,
        peer: Option<PrivateData>,
        peer_inline: usize,
    ) -> Result<()> {
        let epoch = free_epoch(self.next_epoch, |e| self.epochs.contains_key(&e));
        self.next_epoch = after_epoch(epoch);
        // Reads this side may issue: the requester's responder resources, which rdma_cm reports
        // to a listener as the event's initiator depth (from this side's point of view).
        // 0: the requester takes no RDMA Read from us, and its Read chunks get ERR_CHUNK.
        let depth = initiator_depth.min(16);
        let rcfg = self.cfg.responder_config(depth, epoch);
        let pool_cfg = self.cfg.pool_config(self.cfg.credits, epoch);
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
        self.service.connection_opened(epoch);
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
                seen: (0, std::time::Instant::now()),
            },
        );
        Ok(())
    }
}

/// The epoch after `e`, wrapping from [`MAX_EPOCH`](rpcrdma_core::device::MAX_EPOCH) to 1
/// (0 is the shared receive queue's).
fn after_epoch(e: u16) -> u16 {
    if e >= rpcrdma_core::device::MAX_EPOCH {
        1
    } else {
        e + 1
    }
}

/// The first epoch from `from` on that no live connection holds: a long-lived connection's
/// answers must never be routed to a newcomer that wrapped around to the same number. There
/// are far fewer connections than epochs, so one is always free.
fn free_epoch(from: u16, live: impl Fn(u16) -> bool) -> u16 {
    let mut epoch = from.max(1);
    while live(epoch) {
        epoch = after_epoch(epoch);
    }
    epoch
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcrdma_core::device::MAX_EPOCH;

    #[test]
    fn epochs_wrap_past_the_live_ones() {
        // The counter wrapped while connections 1 and 2 are still open: the newcomer gets 3.
        assert_eq!(free_epoch(1, |e| e == 1 || e == 2), 3);
        assert_eq!(free_epoch(MAX_EPOCH, |e| e == MAX_EPOCH || e == 1), 2);
        assert_eq!(after_epoch(MAX_EPOCH), 1);
        assert_eq!(free_epoch(7, |_| false), 7);
    }
}
