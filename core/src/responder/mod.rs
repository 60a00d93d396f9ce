//! The responder: from a Receive completion to a reply, once, for every front end.
//!
//! A [`Connection`] is the per-queue-pair half of the server transport. It takes the
//! completions of one connection (Receives from its own pool or a shared one, and its Sends,
//! RDMA Reads and RDMA Writes), runs each call through
//!
//! ```text
//!  Received ──▶ Reading ──▶ Ready ──▶ (service) ──▶ Replying ──▶ Free
//!     │  no Read chunks ─────▲                        Writes, then the Send
//!     └─ parked while no sink pages / Read credit / send slot is free
//! ```
//!
//! and posts what the device must do through the [`Device`] trait. Everything here is fixed
//! capacity: `C` call slots, `credits` send slots carved from one registered region, one chain
//! of send-queue work requests per batch.
//!
//! # Per batch
//! The front end polls a batch of completions and hands each to [`Connection::handle`]; calls
//! that arrived inline are served at once (the reply is built in a send slot, the Receive is
//! released). Then [`Connection::flush`]: the receive pool is refilled until its watermark holds
//! (one doorbell per chain), the credit grant is computed from what is posted *now* and
//! written into every reply of the batch, and the batch's RDMA Reads, RDMA Writes and Sends go
//! out as one chain (one doorbell). So the grant a requester sees never exceeds the Receives
//! posted when the reply is sent, and a requester that keeps within it never meets RNR.
//!
//! # Read chunks
//! A call with Read chunks takes one run of sink pages (registered once, see
//! [`crate::pages`]) large enough for its call chunk and data chunks, and issues one RDMA Read
//! per segment, at most `initiator_depth` in flight per connection. When the last Read
//! completes, the view is head / pages / tail over the Receive buffer and the sink run
//! ([`crate::xdr`]).
//!
//! # Replies (RFC 8166 §3.5)
//! The service writes the RPC reply into the send slot and may attach one payload
//! ([`ReplyWriter`]). A DDP-eligible payload goes into the requester's write chunk by RDMA
//! Write (the reply's write list carries the lengths written, shorter than offered when the
//! data is shorter). The rest goes inline (RDMA_MSG) if it fits the requester's inline size,
//! else by RDMA Write through its reply chunk (RDMA_NOMSG). A reply that fits none of these,
//! or a payload larger than the write chunk, is answered with RDMA_ERROR / ERR_CHUNK, which is
//! what the Linux server does too. The Send is posted after the Writes on the same queue pair,
//! so the requester sees the data before the reply.
//!
//! # Calls answered later
//! A service that cannot answer at once (a gateway asking another server) returns
//! [`Verdict::Pending`]; the call keeps its Receive, sink pages and send slot, its view stays
//! readable through [`Connection::pending_view`] (so it is forwarded, and resent, straight from
//! registered memory), and [`Connection::complete_pending`] answers it later.
//!
//! # Failures
//! A flush or error completion of any of this connection's work requests closes *this*
//! connection: nothing new is admitted, parked calls are released, outstanding work requests
//! come back as flushes and free what they held. [`Connection::drain`] reclaims the rest once
//! the device no longer touches the memory. Completions with an unknown, stale or foreign
//! wr_id are refused and counted, never trusted.

mod backchannel;
mod call;
mod config;
mod counters;
mod credits;
mod reading;
mod reply;
mod replying;
mod resources;
mod send_queue;
mod service;
mod sink;

use heapless::{Deque, Vec};

use crate::device::{
    Completion, CompletionStatus, Device, PostError, SendOp, SendWr, WrId, WrKind, MAX_EPOCH,
};
use crate::dma::{DmaRegion, DmaSync, CACHE_LINE};
use crate::pool::{Completed, CompletionError, Received};
use crate::wire::{put_xdr_u32, ErrorReply};
use crate::xdr::XdrView;

pub use backchannel::{BackchannelError, BackchannelFailure, BACKCHANNEL_MAX};
use call::{CallId, CallSlot, CallState, NO_CALL, NO_SLOT};
pub use config::{ResponderConfig, ResponderError, CHAIN, MAX_SEND_SIZE, MIN_SEND_SIZE};
pub use counters::ResponderCounters;
pub use credits::CreditLedger;
use reply::CREDITS_OFFSET;
pub use resources::Resources;
pub(crate) use resources::{Share, SPARE};
pub use service::{
    Call, CallHandle, Connections, PayloadError, PayloadPages, ReplyWriter, Service, StaleHandle,
    Verdict,
};

/// What [`Connection::drain`] reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConnectionDrain {
    /// Calls still in progress (their Receives, pages and send slots were reclaimed).
    pub calls: usize,
    /// Send-queue work requests whose completion never came.
    pub work_requests: usize,
}

/// One connection's responder state: `C` call slots (capacity).
pub struct Connection<'a, const C: usize> {
    send: DmaRegion<'a>,
    stride: usize,
    send_size: usize,
    zero_at: usize,
    calls: [CallSlot; C],
    call_count: u16,
    free_calls: Vec<CallId, C>,
    free_slots: Vec<u16, C>,
    waiting: Deque<CallId, C>,
    chain: Vec<SendWr, CHAIN>,
    credits: u16,
    /// The service's brake on the grant ([`Connection::set_grant_cap`]); `credits` when off.
    grant_cap: u16,
    peer_inline: usize,
    initiator_depth: u8,
    reads_in_flight: u8,
    sq_depth: u16,
    sq_in_flight: u16,
    /// Oldest and newest call in the posted-replies list.
    posted_head: CallId,
    posted_tail: CallId,
    signal_all: bool,
    epoch: u16,
    closing: bool,
    /// The most calls the requester may have outstanding, as far as this side can know: the
    /// largest of the grants it may still be acting on less the replies sent after each
    /// (see [`Connection::credit_demand`]). 1 before the first reply (RFC 8166 §3.3.1).
    peer_limit: u32,
    /// Calls that arrived and whose reply is not posted yet.
    in_hand: u32,
    /// Backward-direction calls (RFC 8167).
    bc: backchannel::Backchannel,
    counters: ResponderCounters,
}

impl<'a, const C: usize> Connection<'a, C> {
    /// A connection whose send slots are carved from `send` (registered once, `LOCAL_WRITE`),
    /// talking to a requester that receives `peer_inline` bytes inline (its RFC 8797
    /// `recv_size`, or 1024 without private data).
    ///
    /// # Errors
    /// [`ResponderError`] for a configuration that cannot work.
    pub fn new(
        send: DmaRegion<'a>,
        config: ResponderConfig,
        peer_inline: usize,
    ) -> Result<Self, ResponderError> {
        let capacity = C.min(u16::MAX as usize - 1);
        if config.credits == 0 || config.credits as usize > capacity {
            return Err(ResponderError::Credits {
                credits: config.credits,
                capacity,
            });
        }
        if !(MIN_SEND_SIZE..=MAX_SEND_SIZE).contains(&config.send_size) {
            return Err(ResponderError::SendSize {
                size: config.send_size,
            });
        }
        if config.sq_depth == 0 || config.epoch > MAX_EPOCH {
            return Err(ResponderError::Limits);
        }
        let needed = config.send_region_len();
        if send.len() < needed {
            return Err(ResponderError::RegionTooSmall {
                needed,
                len: send.len(),
            });
        }
        let call_count = config.call_slots(capacity);
        let mut free_calls = Vec::new();
        for i in (0..call_count as u16).rev() {
            let _ = free_calls.push(CallId(i));
        }
        let mut free_slots = Vec::new();
        for i in (0..config.credits).rev() {
            let _ = free_slots.push(i);
        }
        let stride = config.slot_stride();
        let zero_at = config.credits as usize * stride;
        let mut send = send;
        if let Some(zeros) = send.bytes_mut(zero_at, CACHE_LINE) {
            zeros.fill(0);
        }
        Ok(Connection {
            send,
            stride,
            send_size: config.send_size,
            zero_at,
            calls: [const { CallSlot::FREE }; C],
            call_count: call_count as u16,
            free_calls,
            free_slots,
            waiting: Deque::new(),
            chain: Vec::new(),
            credits: config.credits,
            grant_cap: config.credits,
            peer_inline: peer_inline.clamp(MIN_SEND_SIZE, MAX_SEND_SIZE),
            initiator_depth: config.initiator_depth,
            reads_in_flight: 0,
            sq_depth: config.sq_depth,
            sq_in_flight: 0,
            posted_head: NO_CALL,
            posted_tail: NO_CALL,
            signal_all: config.signal_all,
            epoch: config.epoch,
            closing: false,
            peer_limit: 1,
            in_hand: 0,
            bc: backchannel::Backchannel::new(),
            counters: ResponderCounters::default(),
        })
    }

    /// The most messages the requester may still send that this connection has not seen: its
    /// grant less the calls it has outstanding, bounded from what this side knows. A requester
    /// acts on the grant of the last reply it has processed; replies arrive in order, so if it
    /// is acting on reply *j*'s grant, every reply sent after *j* is still outstanding for it.
    /// Hence the bound `max over j (grant_j − replies sent after j) − calls in hand`, kept in
    /// O(1): each reply sent with grant `g` makes the first term `max(term − 1, g)`.
    ///
    /// With a shared receive queue these demands, summed over the connections, must stay
    /// within the Receives posted, or a requester that obeys its grant meets RNR
    /// ([`crate::srq::SharedQueue`] keeps that invariant).
    pub fn credit_demand(&self) -> u32 {
        // Each outstanding backward call has its reply coming into one of these Receives.
        self.peer_limit.saturating_sub(self.in_hand) + self.bc.outstanding()
    }

    /// Calls that arrived and whose reply is not posted yet.
    pub fn in_hand(&self) -> u32 {
        self.in_hand
    }

    /// Counters so far.
    pub fn counters(&self) -> ResponderCounters {
        self.counters
    }

    /// The epoch of this connection's wr_ids and call handles ([`CallHandle::epoch`]).
    pub fn epoch(&self) -> u16 {
        self.epoch
    }

    /// Caps the grant of the replies sent from now on at `cap` (at least 1; `credits` or more
    /// lifts the cap): the brake a service uses when it holds too much for this requester
    /// (RFC 8166 §3.3: a requester may not exceed the grant it last received, so lowering it
    /// slows the requester without dropping a call). Calls sent under an earlier, larger grant
    /// still arrive and are served.
    pub fn set_grant_cap(&mut self, cap: u16) {
        self.grant_cap = cap.max(1);
    }

    /// Credits this connection grants at most.
    pub fn credits(&self) -> u16 {
        self.credits
    }

    /// The largest reply the requester receives inline.
    pub fn peer_inline(&self) -> usize {
        self.peer_inline.min(self.send_size)
    }

    /// Whether the connection is closing (a failed or flushed completion, or [`Connection::close`]).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Calls in progress (call slots not free).
    pub fn calls_in_progress(&self) -> usize {
        self.call_count as usize - self.free_calls.len()
    }

    /// Send-queue depth this connection keeps within.
    pub fn sq_depth(&self) -> usize {
        self.sq_depth as usize
    }

    /// Send-queue work requests posted whose completion has not come yet.
    pub fn sq_in_flight(&self) -> usize {
        self.sq_in_flight as usize
    }

    /// Whether calls wait for a resource (sink or payload pages, a send slot, Read credit):
    /// flush this connection again after other connections free some.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether nothing is in the device's hands on the send queue and no call is in progress.
    pub fn is_idle(&self) -> bool {
        self.sq_in_flight == 0 && self.calls_in_progress() == 0 && self.chain.is_empty()
    }

    /// Call slot `i`.
    #[inline(always)]
    fn call(&self, i: CallId) -> Option<&CallSlot> {
        self.calls.get(i.index())
    }

    /// Call slot `i`, to change.
    #[inline(always)]
    fn call_mut(&mut self, i: CallId) -> Option<&mut CallSlot> {
        self.calls.get_mut(i.index())
    }

    fn tag(&self, kind: WrKind) -> u16 {
        WrId::tag_of(kind, self.epoch)
    }

    fn wr_id(&self, kind: WrKind, i: CallId) -> u64 {
        let generation = self.call(i).map_or(0, |c| c.generation);
        WrId::new(kind, self.epoch, i.0, generation).0
    }

    /// Stops admitting work: parked calls are released now, calls with work requests
    /// outstanding finish as their (flushed) completions arrive. The front end disconnects the
    /// queue pair so those flushes come.
    pub fn close<const N: usize, const P: usize>(&mut self, res: &mut Resources<'_, 'a, N, P>) {
        if !self.closing {
            debug!("rpcrdma connection closing");
        }
        self.closing = true;
        self.counters.backchannel_failed += self.bc.lose_all();
        if !res.shared_pool {
            res.pool.close();
        }
        // A backward call queued in this batch and never posted will not complete: it gives
        // its slots back now. (A forward reply in the same place keeps its call until drain,
        // where the requester's view of its credits is settled.)
        for k in 0..self.chain.len() {
            let Some(wr) = self.chain.get(k).copied() else {
                break;
            };
            if let Some(c) = self.calls.get_mut(WrId(wr.wr_id).index() as usize) {
                if c.backchannel {
                    c.outstanding = c.outstanding.saturating_sub(1);
                }
            }
        }
        self.chain.clear();
        for i in (0..self.call_count).map(CallId) {
            match self
                .call(i)
                .map(|c| (c.state, c.outstanding, c.backchannel))
            {
                Some((CallState::Pending, _, _)) => {
                    self.counters.pending = self.counters.pending.saturating_sub(1);
                    self.finish(res, i);
                }
                Some((CallState::Replying, 0, true)) => self.finish(res, i),
                _ => {}
            }
        }
        for _ in 0..self.waiting.len() {
            let Some(i) = self.waiting.pop_front() else {
                break;
            };
            let outstanding = self.call(i).map_or(0, |c| c.outstanding);
            if outstanding == 0 {
                self.finish(res, i);
            } else {
                let _ = self.waiting.push_back(i);
            }
        }
    }

    /// One completion batch of a connection with its own queues, as the front end polled it:
    /// every completion through [`Connection::handle`], then [`Connection::flush`].
    ///
    /// # Errors
    /// As [`Connection::flush`].
    #[inline]
    pub fn process<D, S, Y, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        device: &mut D,
        sync: &mut Y,
        service: &mut S,
        completions: &[Completion],
    ) -> Result<(), PostError>
    where
        D: Device + ?Sized,
        S: Service + ?Sized,
        Y: DmaSync + ?Sized,
    {
        for wc in completions {
            self.handle(res, sync, service, wc);
        }
        self.flush(res, device, service)
    }

    /// Handles one completion of this connection: a Receive (from `res.pool`) or one of its
    /// Sends, RDMA Reads or RDMA Writes. Calls that arrived inline are served at once.
    pub fn handle<S, Y, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        sync: &mut Y,
        service: &mut S,
        wc: &Completion,
    ) where
        S: Service + ?Sized,
        Y: DmaSync + ?Sized,
    {
        let id = WrId(wc.wr_id);
        match id.kind() {
            WrKind::Recv => self.on_receive(res, sync, service, wc),
            kind => self.on_send_queue(res, service, kind, wc),
        }
    }

    #[inline]
    fn on_receive<S, Y, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        sync: &mut Y,
        service: &mut S,
        wc: &Completion,
    ) where
        S: Service + ?Sized,
        Y: DmaSync + ?Sized,
    {
        let completed = res.pool.complete(wc, sync);
        if matches!(
            completed,
            Ok(Completed::Message(_) | Completed::Rejected { .. })
        ) && self.in_hand >= self.peer_limit
        {
            // A message this requester was not allowed to send: it took a Receive that was
            // promised to someone (with a shared queue, possibly another connection).
            self.counters.grant_overruns += 1;
        }
        match completed {
            Ok(Completed::Message(rx)) => self.on_call(res, service, rx),
            Ok(Completed::Rejected { error, reply }) => {
                debug!("rpcrdma: malformed message rejected");
                let _ = error;
                match reply {
                    Some(reply) => self.queue_error_reply(reply),
                    None => self.counters.dropped += 1,
                }
            }
            Ok(Completed::Flushed) => self.close(res),
            Err(CompletionError::DeviceError { .. }) => self.close(res),
            Err(_) => self.counters.refused_completions += 1,
        }
    }

    fn take_call_slot(&mut self) -> Option<CallId> {
        let i = self.free_calls.pop()?;
        if let Some(c) = self.call_mut(i) {
            c.generation = c.generation.wrapping_add(1);
            c.state = CallState::Parked;
            c.failed = false;
            c.outstanding = 0;
            c.reads_posted = 0;
            c.reads_total = 0;
            c.send_slot = NO_SLOT;
            if !c.counted {
                c.counted = true;
                self.in_hand += 1;
            }
        }
        Some(i)
    }

    fn queue_error_reply(&mut self, reply: ErrorReply) {
        if self.closing {
            return;
        }
        let Some(i) = self.take_call_slot() else {
            self.counters.overruns += 1;
            return;
        };
        match reply.kind {
            crate::wire::ErrorReplyKind::Vers { .. } => self.counters.err_vers += 1,
            crate::wire::ErrorReplyKind::Chunk => self.counters.err_chunk += 1,
        }
        if let Some(c) = self.call_mut(i) {
            c.error_reply = Some(reply);
            c.state = CallState::Ready;
        }
        let _ = self.waiting.push_back(i);
    }

    #[inline]
    fn on_call<S: Service + ?Sized, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        service: &mut S,
        rx: Received,
    ) {
        if self.closing {
            let _ = res.pool.release(rx);
            return;
        }
        let Some(i) = self.take_call_slot() else {
            self.counters.overruns += 1;
            let _ = res.pool.release(rx);
            return;
        };
        let has_reads = match res.pool.message(&rx) {
            Ok(m) if m.is_backchannel_reply() => {
                if self.backchannel_reply_arrived(&m) {
                    service.backchannel_reply(self.epoch, &XdrView::new(m));
                }
                let _ = res.pool.release(rx);
                self.free_call(i);
                return;
            }
            Ok(m) => {
                self.counters.requested_credits = m.credits();
                let reads = m.has_read_chunks();
                if reads {
                    self.counters.calls_with_read_chunks += 1;
                    if m.read_list().call_chunk().is_some() {
                        self.counters.calls_in_call_chunk += 1;
                    }
                }
                if !m.lists_empty() {
                    self.counters.calls_with_write_chunk += !m.write_list().is_empty() as u64;
                    self.counters.calls_with_reply_chunk += m.reply_chunk().is_some() as u64;
                }
                reads
            }
            Err(_) => {
                self.free_call(i);
                return;
            }
        };
        if let Some(c) = self.call_mut(i) {
            c.rx = Some(rx);
            c.state = if has_reads {
                CallState::Parked
            } else {
                CallState::Ready
            };
        }
        if !has_reads && self.waiting.is_empty() && self.try_reply(res, service, i) {
            return;
        }
        let _ = self.waiting.push_back(i);
    }

    /// Runs the waiting calls that can move on: sinks and Reads for parked calls, the service
    /// and the reply for ready ones. Order among the waiting is kept.
    fn progress<S: Service + ?Sized, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        service: &mut S,
    ) -> bool {
        let mut moved = false;
        for _ in 0..self.waiting.len() {
            let Some(i) = self.waiting.pop_front() else {
                break;
            };
            let state = self.call(i).map_or(CallState::Free, |c| c.state);
            let keep = match state {
                CallState::Parked => {
                    let started = self.start_reads(res, i);
                    moved |= started;
                    if started {
                        self.post_reads(res, i);
                    }
                    true
                }
                CallState::Reading => {
                    let before = self.call(i).map_or(0, |c| c.reads_posted);
                    self.post_reads(res, i);
                    let c = self.call(i);
                    moved |= c.is_some_and(|c| c.reads_posted != before);
                    c.is_some_and(|c| c.state != CallState::Free)
                }
                CallState::Ready => {
                    let done = self.try_reply(res, service, i);
                    moved |= done;
                    !done
                }
                CallState::Replying | CallState::Free | CallState::Pending => false,
            };
            let still_waiting = keep
                && self.call(i).is_some_and(|c| {
                    matches!(
                        c.state,
                        CallState::Parked | CallState::Reading | CallState::Ready
                    )
                });
            let reading_all_posted = self
                .call(i)
                .is_some_and(|c| c.state == CallState::Reading && c.reads_posted == c.reads_total);
            if still_waiting && !reading_all_posted {
                let _ = self.waiting.push_back(i);
            }
        }
        moved
    }

    fn free_call(&mut self, i: CallId) {
        self.unlink_posted(i);
        if let Some(c) = self.calls.get_mut(i.index()) {
            if c.counted {
                // Finished without a reply (dropped): the requester still counts it as
                // outstanding, so its demand stays lower than this bound says (safe).
                c.counted = false;
                self.in_hand = self.in_hand.saturating_sub(1);
            }
        }
        if let Some(c) = self.call_mut(i) {
            c.state = CallState::Free;
            c.generation = c.generation.wrapping_add(1);
            c.outstanding = 0;
            c.send_slot = NO_SLOT;
            c.backchannel = false;
            let _ = self.free_calls.push(i);
        }
    }

    /// Returns everything call `i` holds and frees its slot.
    fn finish<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
    ) {
        let Some(c) = self.calls.get_mut(i.index()) else {
            return;
        };
        if c.state == CallState::Free {
            return;
        }
        if let Some(rx) = c.rx.take() {
            let _ = res.pool.release(rx);
        }
        if let Some(run) = c.sink.take() {
            res.sinks.free(run);
        }
        if let Some(run) = c.payload.take() {
            res.payloads.free(run);
        }
        c.error_reply = None;
        if c.send_slot != NO_SLOT {
            let _ = self.free_slots.push(c.send_slot);
        }
        self.free_call(i);
    }

    /// End of a batch: refills the receive pool, writes the credit grant into every reply of
    /// the batch, and posts the batch's send-queue work requests as one chain. Repeats while
    /// waiting calls can move on.
    ///
    /// # Errors
    /// A [`PostError`] from the device: the connection is then closing (what was refused is
    /// treated as flushed).
    pub fn flush<D, S, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        device: &mut D,
        service: &mut S,
    ) -> Result<(), PostError>
    where
        D: Device + ?Sized,
        S: Service + ?Sized,
    {
        loop {
            if !self.closing {
                self.progress(res, service);
            }
            if self.chain.is_empty() {
                // Keep the watermark even when nothing is to be sent.
                if !res.shared_pool && !self.closing {
                    res.pool.refill(device)?;
                }
                return Ok(());
            }
            if !res.shared_pool && !self.closing {
                if let Err(e) = res.pool.refill(device) {
                    self.close(res);
                    return Err(e);
                }
            }
            if res.shared_pool && !res.pool.is_closing() {
                // The Receives of the calls answered in this batch go back to the shared queue
                // before the grant is computed from what is posted.
                if let Err(e) = res.pool.top_up(device) {
                    res.refill_error = Some(e);
                }
            }
            // With a shared queue the grant depends on the calls still in hand once this chain's
            // replies are posted; a connection with its own pool skips the count.
            let in_hand_after = if res.share.is_some() {
                let replies = self
                    .chain
                    .iter()
                    .filter(|wr| wr.op == SendOp::Send)
                    .filter(|wr| {
                        self.calls
                            .get(WrId(wr.wr_id).index() as usize)
                            .is_some_and(|c| c.counted)
                    })
                    .count() as u32;
                self.in_hand.saturating_sub(replies)
            } else {
                self.in_hand
            };
            let grant = self.grant(res, in_hand_after);
            for wr in self.chain.iter() {
                if wr.op != SendOp::Send {
                    continue;
                }
                let idx = WrId(wr.wr_id).index() as usize;
                let Some(c) = self.calls.get(idx).filter(|c| !c.backchannel) else {
                    continue; // a backward call keeps its own credit request
                };
                let at = self.slot_offset(c.send_slot) + c.header_at as usize + CREDITS_OFFSET;
                if let Some(w) = self.send.bytes_mut(at, 4) {
                    put_xdr_u32(w, 0, grant);
                }
            }
            self.set_signaling();
            self.counters.send_doorbells += 1;
            let result = device.post_send(&self.chain);
            let posted = match result {
                Ok(()) => self.chain.len(),
                Err(e) => e.index.min(self.chain.len()),
            };
            self.sq_in_flight += posted as u16;
            let mut sent = 0u32;
            for k in 0..posted {
                let Some(wr) = self.chain.get(k).copied() else {
                    break;
                };
                if wr.op == SendOp::Send {
                    let i = CallId(WrId(wr.wr_id).index());
                    if let Some(c) = self.calls.get_mut(i.index()) {
                        if c.counted {
                            c.counted = false;
                            sent += 1;
                        }
                    }
                    self.link_posted(i);
                }
            }
            self.in_hand = self.in_hand.saturating_sub(sent);
            if sent > 0 {
                self.peer_limit = self.peer_limit.saturating_sub(sent).max(grant);
            }
            if let Err(e) = result {
                // What the device refused never completes: treat it as flushed. Replies posted
                // unsignaled before a refused signaled Send get no completion if they succeed;
                // they stay in progress until `drain` (the connection is closing anyway, and the
                // front end reaps it after its grace period).
                let refused: Vec<SendWr, CHAIN> =
                    Vec::from_slice(self.chain.get(posted..).unwrap_or_default())
                        .unwrap_or_default();
                self.chain.clear();
                self.closing = true;
                for wr in refused.iter() {
                    self.sq_in_flight += 1;
                    let kind = WrId(wr.wr_id).kind();
                    let wc = Completion {
                        wr_id: wr.wr_id,
                        status: CompletionStatus::Flushed,
                        ..Completion::EMPTY
                    };
                    self.on_send_queue(res, service, kind, &wc);
                }
                self.close(res);
                return Err(e);
            }
            self.chain.clear();
            if self.closing || self.waiting.is_empty() {
                return Ok(());
            }
        }
    }

    /// The grant to send now: the configured credits, lowered to what is posted (or to the
    /// shared pool's share for this connection, given the calls it will still hold once this
    /// chain is posted), at least 1.
    fn grant<const N: usize, const P: usize>(
        &mut self,
        res: &Resources<'_, 'a, N, P>,
        in_hand_after: u32,
    ) -> u32 {
        let limit = match res.share {
            Some(share) => share.limit(res.pool.posted(), in_hand_after),
            None => res.pool.posted() as u32,
        };
        // One posted Receive stays free for each outstanding backward call's reply.
        let limit = limit.saturating_sub(self.bc.outstanding());
        let grant = (self.credits.min(self.grant_cap) as u32).min(limit).max(1);
        if grant < self.credits as u32 {
            self.counters.reduced_grants += 1;
        }
        self.counters.last_grant = grant;
        grant
    }

    /// Teardown, once the device no longer touches this connection's memory (queue pair
    /// destroyed, or in error with its completions consumed): every call still in progress
    /// gives back its Receive, pages and send slot.
    pub fn drain<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
    ) -> ConnectionDrain {
        self.closing = true;
        let mut report = ConnectionDrain {
            calls: 0,
            work_requests: self.sq_in_flight as usize,
        };
        for i in (0..self.call_count).map(CallId) {
            if self.call(i).is_some_and(|c| c.state != CallState::Free) {
                report.calls += 1;
                self.finish(res, i);
            }
        }
        self.counters.pending = 0;
        self.waiting.clear();
        self.chain.clear();
        self.posted_head = NO_CALL;
        self.posted_tail = NO_CALL;
        self.sq_in_flight = 0;
        self.reads_in_flight = 0;
        if report.calls != 0 || report.work_requests != 0 {
            info!(
                "rpcrdma connection drained: {} calls, {} work requests reclaimed",
                report.calls, report.work_requests
            );
        }
        report
    }
}
