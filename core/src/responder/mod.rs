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
//! # Failures
//! A flush or error completion of any of this connection's work requests closes *this*
//! connection: nothing new is admitted, parked calls are released, outstanding work requests
//! come back as flushes and free what they held. [`Connection::drain`] reclaims the rest once
//! the device no longer touches the memory. Completions with an unknown, stale or foreign
//! wr_id are refused and counted, never trusted.

mod reply;
mod service;

use heapless::{Deque, Vec};

use crate::device::{
    Completion, CompletionStatus, Device, PostError, SendOp, SendWr, Sge, WrId, WrKind, MAX_EPOCH,
};
use crate::dma::{DmaRegion, DmaSync, CACHE_LINE};
use crate::pages::{PagePool, PageRun};
use crate::pool::{Completed, CompletionError, Received, RecvPool};
use crate::wire::{
    copy_prefix, move_within, put_xdr_u32, xdr_roundup, ErrorReply, Message, Proc,
    DEFAULT_INLINE_THRESHOLD, MAX_READ_SEGMENTS,
};
use crate::xdr::XdrView;

use reply::{emit_header, header_len, max_writes, plan_writes, Piece, CREDITS_OFFSET};
pub use service::{
    Call, CallHandle, PayloadError, PayloadPages, ReplyWriter, Service, StaleHandle, Verdict,
};
use service::{Payload, PayloadSource};

/// Send-queue work requests one batch can carry.
pub const CHAIN: usize = 128;
/// Smallest send slot: the RFC 8166 default inline size.
pub const MIN_SEND_SIZE: usize = DEFAULT_INLINE_THRESHOLD;
/// Largest send slot.
pub const MAX_SEND_SIZE: usize = 65536;

const NO_SLOT: u16 = u16::MAX;

/// Connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResponderConfig {
    /// Most credits granted to this requester; also the number of send slots.
    pub credits: u16,
    /// Bytes per send slot: the largest inline reply this side sends (1024..=65536).
    pub send_size: usize,
    /// RDMA Reads in flight at most (the initiator depth rdma_cm negotiated); ≥ 1.
    pub initiator_depth: u8,
    /// Send-queue work requests the device holds at most (its `max_send_wr`).
    pub sq_depth: u16,
    /// Epoch of this connection's wr_ids (≤ 16383; differs from its pool's and from other
    /// connections').
    pub epoch: u16,
    /// Signal every send-queue work request. `false` (the default): every RDMA Read and the
    /// last Send of each posted chain are signaled, the other Sends and the Writes are not —
    /// one completion per batch of replies instead of one per work request, and a signaled
    /// completion retires every reply posted before it (the send queue completes in order).
    pub signal_all: bool,
}

impl ResponderConfig {
    /// 32 credits, 4 KiB send slots, 16 Reads in flight, a 512-entry send queue, epoch 1,
    /// one signaled Send per chain.
    pub const DEFAULT: ResponderConfig = ResponderConfig {
        credits: 32,
        send_size: 4096,
        initiator_depth: 16,
        sq_depth: 512,
        epoch: 1,
        signal_all: false,
    };

    /// Send-slot stride (cache-line aligned).
    pub const fn slot_stride(&self) -> usize {
        self.send_size.div_ceil(CACHE_LINE) * CACHE_LINE
    }

    /// Bytes of registered memory the send slots need ([`Connection::new`]'s region): one slot
    /// per credit plus one cache line of zeros (the XDR pad source).
    pub const fn send_region_len(&self) -> usize {
        self.credits as usize * self.slot_stride() + CACHE_LINE
    }

    /// Call slots used: two per credit (a requester may send a new call as soon as it sees a
    /// reply, before this side has seen that reply's Send complete), at most `C`.
    pub const fn call_slots(&self, capacity: usize) -> usize {
        let want = 2 * self.credits as usize;
        if want < capacity {
            want
        } else {
            capacity
        }
    }
}

impl Default for ResponderConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a connection could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ResponderError {
    /// `credits` is 0 or above the call-slot capacity `C`.
    Credits {
        /// Credits asked for.
        credits: u16,
        /// Call slots available.
        capacity: usize,
    },
    /// `send_size` outside 1024..=65536.
    SendSize {
        /// The size asked for.
        size: usize,
    },
    /// The send region is smaller than [`ResponderConfig::send_region_len`].
    RegionTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        len: usize,
    },
    /// `initiator_depth` or `sq_depth` is 0, or the epoch does not fit 14 bits.
    Limits,
}

impl core::fmt::Display for ResponderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ResponderError::Credits { credits, capacity } => write!(
                f,
                "credits {credits} must be 1..={capacity} (the connection's call slots)"
            ),
            ResponderError::SendSize { size } => write!(
                f,
                "send slot size {size} is outside {MIN_SEND_SIZE}..={MAX_SEND_SIZE} bytes"
            ),
            ResponderError::RegionTooSmall { needed, len } => write!(
                f,
                "send region of {len} bytes is smaller than the {needed} bytes the send slots \
                 need (ResponderConfig::send_region_len)"
            ),
            ResponderError::Limits => write!(
                f,
                "initiator depth and send-queue depth must be at least 1 and the epoch at most \
                 {MAX_EPOCH}"
            ),
        }
    }
}

impl core::error::Error for ResponderError {}

/// The receive side a connection uses: its pool (own, or shared by an SRQ), the sink pages
/// for Read chunks and the payload pages it lends services. Built by the front end per batch.
pub struct Resources<'r, 'a, const N: usize, const P: usize, const Q: usize> {
    /// The receive pool.
    pub pool: &'r mut RecvPool<'a, N>,
    /// Sink pages for Read-chunk data.
    pub sinks: &'r mut PagePool<'a, P>,
    /// Pages lent to services for reply payloads.
    pub payloads: &'r mut PagePool<'a, Q>,
    /// `true` when the pool is shared with other connections (SRQ): this connection never
    /// closes it and releases only its own Receives at drain.
    pub shared_pool: bool,
    /// With a shared pool, the most this connection may be granted now (the Receives posted
    /// less what the other connections were granted; see [`CreditLedger`]). `None`: the
    /// pool's posted count.
    pub grant_limit: Option<u32>,
}

impl<'r, 'a, const N: usize, const P: usize, const Q: usize> Resources<'r, 'a, N, P, Q> {
    /// The resources of a connection with its own receive pool (no SRQ): the grant follows the
    /// pool's posted Receives.
    pub fn own(
        pool: &'r mut RecvPool<'a, N>,
        sinks: &'r mut PagePool<'a, P>,
        payloads: &'r mut PagePool<'a, Q>,
    ) -> Self {
        Resources {
            pool,
            sinks,
            payloads,
            shared_pool: false,
            grant_limit: None,
        }
    }
}

/// Counters of one connection (plain integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResponderCounters {
    /// Calls handed to the service.
    pub calls: u64,
    /// Replies sent inline (RDMA_MSG).
    pub inline_replies: u64,
    /// Replies whose payload went into the write chunk.
    pub write_chunk_replies: u64,
    /// Replies sent through the reply chunk (RDMA_NOMSG).
    pub reply_chunk_replies: u64,
    /// ERR_VERS replies to malformed headers.
    pub err_vers: u64,
    /// ERR_CHUNK replies to malformed headers.
    pub err_chunk: u64,
    /// ERR_CHUNK replies because the reply fit neither inline, nor the write chunk, nor the
    /// reply chunk.
    pub reply_too_large: u64,
    /// Malformed messages dropped without a reply.
    pub dropped: u64,
    /// Backchannel replies handed to the service.
    pub backchannel: u64,
    /// Calls the service answered with [`Verdict::NoReply`].
    pub no_reply: u64,
    /// Times the service deferred a call ([`Verdict::Defer`]: payload pages short).
    pub deferred: u64,
    /// Calls the service is answering later ([`Verdict::Pending`]), now.
    pub pending: u64,
    /// Messages that arrived with every call slot taken (the requester exceeded its credits):
    /// dropped.
    pub overruns: u64,
    /// Bytes pulled by RDMA Read.
    pub read_bytes: u64,
    /// Bytes RDMA-written into write chunks.
    pub write_chunk_bytes: u64,
    /// Bytes RDMA-written into reply chunks.
    pub reply_chunk_bytes: u64,
    /// Completions refused (unknown, stale or foreign wr_id).
    pub refused_completions: u64,
    /// Send-queue completions in error or flushed.
    pub failed_completions: u64,
    /// Doorbells rung for the send queue.
    pub send_doorbells: u64,
    /// Sends posted unsignaled (their completion was implied by a later signaled one).
    pub unsignaled_sends: u64,
    /// The last credit grant sent.
    pub last_grant: u32,
    /// Credits the requester asked for in its last call.
    pub requested_credits: u32,
    /// Calls that carried Read chunks (data or call chunks).
    pub calls_with_read_chunks: u64,
    /// Calls whose RPC message came in a position-zero Read chunk.
    pub calls_in_call_chunk: u64,
    /// Calls that offered a write chunk.
    pub calls_with_write_chunk: u64,
    /// Calls that offered a reply chunk.
    pub calls_with_reply_chunk: u64,
    /// Replies sent with a grant below the configured credits (Receives were short).
    pub reduced_grants: u64,
}

impl ResponderCounters {
    /// Adds `other` into `self` (summing connections); `last_grant` keeps the larger.
    pub fn accumulate(&mut self, other: &ResponderCounters) {
        let o = other;
        self.calls += o.calls;
        self.inline_replies += o.inline_replies;
        self.write_chunk_replies += o.write_chunk_replies;
        self.reply_chunk_replies += o.reply_chunk_replies;
        self.err_vers += o.err_vers;
        self.err_chunk += o.err_chunk;
        self.reply_too_large += o.reply_too_large;
        self.dropped += o.dropped;
        self.backchannel += o.backchannel;
        self.no_reply += o.no_reply;
        self.deferred += o.deferred;
        self.pending += o.pending;
        self.overruns += o.overruns;
        self.read_bytes += o.read_bytes;
        self.write_chunk_bytes += o.write_chunk_bytes;
        self.reply_chunk_bytes += o.reply_chunk_bytes;
        self.refused_completions += o.refused_completions;
        self.failed_completions += o.failed_completions;
        self.send_doorbells += o.send_doorbells;
        self.unsignaled_sends += o.unsignaled_sends;
        self.last_grant = self.last_grant.max(o.last_grant);
        self.requested_credits = self.requested_credits.max(o.requested_credits);
        self.calls_with_read_chunks += o.calls_with_read_chunks;
        self.calls_in_call_chunk += o.calls_in_call_chunk;
        self.calls_with_write_chunk += o.calls_with_write_chunk;
        self.calls_with_reply_chunk += o.calls_with_reply_chunk;
        self.reduced_grants += o.reduced_grants;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum CallState {
    Free,
    /// Waiting for sink pages, Read credit or a send slot.
    Parked,
    /// RDMA Reads posted or waiting to be.
    Reading,
    /// Data complete; waiting for a send slot.
    Ready,
    /// Writes and the Send posted.
    Replying,
    /// The service answers later; the Receive and the send slot stay taken.
    Pending,
}

#[derive(Debug)]
struct CallSlot {
    generation: u32,
    state: CallState,
    rx: Option<Received>,
    error_reply: Option<ErrorReply>,
    sink: Option<PageRun>,
    payload: Option<PageRun>,
    send_slot: u16,
    /// Offset of the reply header in the send slot (credits patched at flush).
    header_at: u16,
    outstanding: u16,
    reads_posted: u8,
    reads_total: u8,
    failed: bool,
    /// In the list of replies whose Send is posted, in posting order (`prev`/`next`: call
    /// indices, [`NO_SLOT`] at the ends).
    posted: bool,
    prev: u16,
    next: u16,
}

impl CallSlot {
    const FREE: CallSlot = CallSlot {
        generation: 0,
        state: CallState::Free,
        rx: None,
        error_reply: None,
        sink: None,
        payload: None,
        send_slot: NO_SLOT,
        header_at: 0,
        outstanding: 0,
        reads_posted: 0,
        reads_total: 0,
        failed: false,
        posted: false,
        prev: NO_SLOT,
        next: NO_SLOT,
    };
}

/// What [`Connection::drain`] reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
    free_calls: Vec<u16, C>,
    free_slots: Vec<u16, C>,
    waiting: Deque<u16, C>,
    chain: Vec<SendWr, CHAIN>,
    credits: u16,
    peer_inline: usize,
    initiator_depth: u8,
    reads_in_flight: u8,
    sq_depth: u16,
    sq_in_flight: u16,
    /// Oldest and newest call in the posted-replies list.
    posted_head: u16,
    posted_tail: u16,
    signal_all: bool,
    epoch: u16,
    closing: bool,
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
        if config.initiator_depth == 0 || config.sq_depth == 0 || config.epoch > MAX_EPOCH {
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
            let _ = free_calls.push(i);
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
            peer_inline: peer_inline.clamp(MIN_SEND_SIZE, MAX_SEND_SIZE),
            initiator_depth: config.initiator_depth,
            reads_in_flight: 0,
            sq_depth: config.sq_depth,
            sq_in_flight: 0,
            posted_head: NO_SLOT,
            posted_tail: NO_SLOT,
            signal_all: config.signal_all,
            epoch: config.epoch,
            closing: false,
            counters: ResponderCounters::default(),
        })
    }

    /// Counters so far.
    pub fn counters(&self) -> ResponderCounters {
        self.counters
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

    fn tag(&self, kind: WrKind) -> u16 {
        WrId::tag_of(kind, self.epoch)
    }

    fn wr_id(&self, kind: WrKind, index: u16) -> u64 {
        let generation = self.calls.get(index as usize).map_or(0, |c| c.generation);
        WrId::new(kind, self.epoch, index, generation).0
    }

    /// Stops admitting work: parked calls are released now, calls with work requests
    /// outstanding finish as their (flushed) completions arrive. The front end disconnects the
    /// queue pair so those flushes come.
    pub fn close<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
    ) {
        if !self.closing {
            debug!("rpcrdma connection closing");
        }
        self.closing = true;
        if !res.shared_pool {
            res.pool.close();
        }
        self.chain.clear();
        for i in 0..self.call_count {
            if self
                .calls
                .get(i as usize)
                .is_some_and(|c| c.state == CallState::Pending)
            {
                self.counters.pending = self.counters.pending.saturating_sub(1);
                self.finish(res, i);
            }
        }
        for _ in 0..self.waiting.len() {
            let Some(i) = self.waiting.pop_front() else {
                break;
            };
            let outstanding = self.calls.get(i as usize).map_or(0, |c| c.outstanding);
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
    pub fn process<D, S, Y, const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
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
    pub fn handle<S, Y, const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
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
    fn on_receive<S, Y, const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        sync: &mut Y,
        service: &mut S,
        wc: &Completion,
    ) where
        S: Service + ?Sized,
        Y: DmaSync + ?Sized,
    {
        match res.pool.complete(wc, sync) {
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

    fn take_call_slot(&mut self) -> Option<u16> {
        let i = self.free_calls.pop()?;
        if let Some(c) = self.calls.get_mut(i as usize) {
            c.generation = c.generation.wrapping_add(1);
            c.state = CallState::Parked;
            c.failed = false;
            c.outstanding = 0;
            c.reads_posted = 0;
            c.reads_total = 0;
            c.send_slot = NO_SLOT;
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
        if let Some(c) = self.calls.get_mut(i as usize) {
            c.error_reply = Some(reply);
            c.state = CallState::Ready;
        }
        let _ = self.waiting.push_back(i);
    }

    #[inline]
    fn on_call<S: Service + ?Sized, const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
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
                self.counters.backchannel += 1;
                service.backchannel_reply(&XdrView::new(m));
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
        if let Some(c) = self.calls.get_mut(i as usize) {
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
    fn progress<S: Service + ?Sized, const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        service: &mut S,
    ) -> bool {
        let mut moved = false;
        for _ in 0..self.waiting.len() {
            let Some(i) = self.waiting.pop_front() else {
                break;
            };
            let state = self
                .calls
                .get(i as usize)
                .map_or(CallState::Free, |c| c.state);
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
                    let before = self.calls.get(i as usize).map_or(0, |c| c.reads_posted);
                    self.post_reads(res, i);
                    let c = self.calls.get(i as usize);
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
                && self.calls.get(i as usize).is_some_and(|c| {
                    matches!(
                        c.state,
                        CallState::Parked | CallState::Reading | CallState::Ready
                    )
                });
            let reading_all_posted = self
                .calls
                .get(i as usize)
                .is_some_and(|c| c.state == CallState::Reading && c.reads_posted == c.reads_total);
            if still_waiting && !reading_all_posted {
                let _ = self.waiting.push_back(i);
            }
        }
        moved
    }

    /// Allocates the sink run of a parked call with Read chunks. Returns whether it did.
    fn start_reads<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
    ) -> bool {
        let Some(c) = self.calls.get(i as usize) else {
            return false;
        };
        let Some(rx) = c.rx.as_ref() else {
            return false;
        };
        let Ok(message) = res.pool.message(rx) else {
            return false;
        };
        let layout = SinkLayout::of(&message);
        let segments = message.read_list().len();
        if !res.sinks.fits(layout.total) {
            // The pool can never hold this call: answer ERR_CHUNK rather than wait forever.
            let reply = ErrorReply {
                xid: message.xid(),
                vers: crate::wire::RPCRDMA_VERSION,
                credits: 0,
                kind: crate::wire::ErrorReplyKind::Chunk,
            };
            warn!("rpcrdma: Read chunks larger than the sink pages; ERR_CHUNK");
            if let Some(rx) = self.calls.get_mut(i as usize).and_then(|c| c.rx.take()) {
                let _ = res.pool.release(rx);
            }
            self.counters.err_chunk += 1;
            if let Some(c) = self.calls.get_mut(i as usize) {
                c.error_reply = Some(reply);
                c.state = CallState::Ready;
            }
            return true;
        }
        let Some(run) = res.sinks.alloc(layout.total) else {
            return false;
        };
        if let Some(c) = self.calls.get_mut(i as usize) {
            c.sink = Some(run);
            c.state = CallState::Reading;
            c.reads_total = segments as u8;
            c.reads_posted = 0;
        }
        true
    }

    /// Posts (into the chain) the Reads of call `i` that the initiator depth and the send
    /// queue allow.
    fn post_reads<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
    ) {
        let wr_id = self.wr_id(WrKind::Read, i);
        let Some(c) = self.calls.get(i as usize) else {
            return;
        };
        let (Some(rx), Some(sink)) = (c.rx.as_ref(), c.sink.as_ref()) else {
            return;
        };
        let Ok(message) = res.pool.message(rx) else {
            return;
        };
        let list = message.read_list();
        let layout = SinkLayout::of(&message);
        let mut posted = c.reads_posted;
        let total = c.reads_total;
        let mut added: u16 = 0;
        while posted < total
            && self.reads_in_flight < self.initiator_depth
            && self.sq_room() > 0
            && !self.chain.is_full()
        {
            let Some(item) = list.get(posted as usize) else {
                break;
            };
            let at = layout.segment_offset(&list, posted as usize);
            let wr = SendWr {
                wr_id,
                op: SendOp::Read {
                    remote: item.segment.offset,
                    rkey: item.segment.handle,
                },
                local: Sge {
                    addr: res.sinks.device_addr(sink, at),
                    length: item.segment.length,
                    lkey: res.sinks.lkey(),
                },
                signaled: true,
            };
            if self.chain.push(wr).is_err() {
                break;
            }
            self.reads_in_flight += 1;
            posted += 1;
            added += 1;
        }
        if let Some(c) = self.calls.get_mut(i as usize) {
            c.reads_posted = posted;
            c.outstanding += added;
        }
    }

    fn sq_room(&self) -> usize {
        (self.sq_depth as usize).saturating_sub(self.sq_in_flight as usize + self.chain.len())
    }

    /// Builds and queues the reply of ready call `i` if a send slot and room in the chain and
    /// send queue are free. Returns whether it did (the call is then Replying or Free).
    fn try_reply<S: Service + ?Sized, const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        service: &mut S,
        i: u16,
    ) -> bool {
        if self.closing {
            return false;
        }
        let Some(c) = self.calls.get(i as usize) else {
            return false;
        };
        let need = match (&c.error_reply, c.rx.as_ref().map(|rx| res.pool.message(rx))) {
            (None, Some(Ok(m))) => reply_work_requests(&m),
            _ => 1,
        };
        if self.sq_room() < need || CHAIN - self.chain.len() < need {
            return false;
        }
        let Some(slot) = self.free_slots.pop() else {
            return false;
        };
        if let Some(c) = self.calls.get_mut(i as usize) {
            c.send_slot = slot;
        }
        if let Some(reply) = self
            .calls
            .get_mut(i as usize)
            .and_then(|c| c.error_reply.take())
        {
            self.send_error_reply(res, i, slot, &reply);
            return true;
        }
        if self.serve(res, service, i, slot) {
            return true;
        }
        // Deferred: the slot goes back, the call stays Ready for a later round.
        if let Some(c) = self.calls.get_mut(i as usize) {
            c.send_slot = NO_SLOT;
        }
        let _ = self.free_slots.push(slot);
        self.counters.deferred += 1;
        false
    }

    fn slot_offset(&self, slot: u16) -> usize {
        slot as usize * self.stride
    }

    fn send_error_reply<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
        slot: u16,
        reply: &ErrorReply,
    ) {
        let off = self.slot_offset(slot);
        let len = self
            .send
            .bytes_mut(off, self.send_size)
            .and_then(|b| reply.emit(b))
            .unwrap_or(0);
        // The Receive (if the call had one) is no longer needed.
        if let Some(rx) = self.calls.get_mut(i as usize).and_then(|c| c.rx.take()) {
            let _ = res.pool.release(rx);
        }
        if let Some(c) = self.calls.get_mut(i as usize) {
            if let Some(sink) = c.sink.take() {
                res.sinks.free(sink);
            }
            c.header_at = 0;
        }
        self.queue_send(i, off, len);
    }

    fn queue_send(&mut self, i: u16, offset: usize, len: usize) {
        let wr = SendWr {
            wr_id: self.wr_id(WrKind::Send, i),
            op: SendOp::Send,
            local: Sge {
                addr: self.send.device_addr(offset),
                length: len as u32,
                lkey: self.send.lkey(),
            },
            // Set when the chain is posted (flush).
            signaled: true,
        };
        // try_reply checked the room.
        let _ = self.chain.push(wr);
        if let Some(c) = self.calls.get_mut(i as usize) {
            c.outstanding += 1;
            c.state = CallState::Replying;
        }
    }

    /// Runs the service for call `i` into send slot `slot` and queues the reply. Returns false
    /// when the service deferred the call (nothing queued).
    fn serve<S: Service + ?Sized, const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        service: &mut S,
        i: u16,
        slot: u16,
    ) -> bool {
        let handle = self.handle_of(i);
        let Some(c) = self.calls.get(i as usize) else {
            return true;
        };
        let (Some(rx), sink) = (c.rx.as_ref(), c.sink.as_ref()) else {
            return true;
        };
        let Ok(inline_view) = res.pool.view(rx) else {
            return true;
        };
        let message = *inline_view.message();
        let view = match sink {
            Some(sink) => SinkLayout::of(&message).view(message, res.sinks.bytes(sink)),
            None => inline_view,
        };
        let verdict = self.run_writer(res.payloads, slot, view, handle, |call, writer| {
            service.serve(call, writer)
        });
        self.after_verdict(res, i, slot, verdict)
    }

    /// The handle a service keeps for a pending call.
    fn handle_of(&self, i: u16) -> CallHandle {
        CallHandle {
            epoch: self.epoch,
            index: i,
            generation: self.calls.get(i as usize).map_or(0, |c| c.generation),
        }
    }

    /// Builds the [`Call`] and a [`ReplyWriter`] over send slot `slot` (the body after room for
    /// the largest header the reply may need) and runs `f`. Returns the verdict, the body
    /// length and the payload.
    fn run_writer<'v>(
        &mut self,
        payloads: &mut dyn PayloadPages,
        slot: u16,
        view: XdrView<'v>,
        handle: CallHandle,
        f: impl FnOnce(&Call<'v>, &mut ReplyWriter<'_>) -> Verdict,
    ) -> (Verdict, usize, Option<Payload>) {
        let message = *view.message();
        let write_chunk = message.write_list().iter().next();
        let reply_chunk = message.reply_chunk();
        let body_at = Self::body_at(&message);
        let slot_off = self.slot_offset(slot);
        let call = Call {
            view,
            xid: message.xid(),
            write_chunk_len: write_chunk.map_or(0, |s| s.total_len()),
            reply_chunk_len: reply_chunk.map_or(0, |s| s.total_len()),
            peer_inline: self.peer_inline(),
            handle,
        };
        let Some(slot_bytes) = self.send.bytes_mut(slot_off, self.send_size) else {
            return (Verdict::NoReply, 0, None);
        };
        let (_, body_buf) = slot_bytes.split_at_mut(body_at.min(slot_bytes.len()));
        let mut writer = ReplyWriter::new(body_buf, payloads);
        let verdict = f(&call, &mut writer);
        let body_len = writer.len();
        let payload = writer.payload.take();
        (verdict, body_len, payload)
    }

    /// Where the reply body starts in a send slot: after the longest header the reply to
    /// `message` may need.
    fn body_at(message: &Message<'_>) -> usize {
        if message.lists_empty() {
            // No chunks: the reply header is the fixed header and three empty lists.
            return crate::wire::MIN_HEADER_LEN;
        }
        let write_segs = message.write_list().iter().next().map(|s| s.len());
        let reply_segs = message.reply_chunk().map(|s| s.len());
        header_len(write_segs, reply_segs).max(header_len(write_segs, None))
    }

    /// Acts on a service's verdict for call `i` in send slot `slot`. Returns false when the call
    /// was deferred.
    fn after_verdict<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
        slot: u16,
        (verdict, body_len, payload): (Verdict, usize, Option<Payload>),
    ) -> bool {
        match verdict {
            Verdict::Defer => {
                self.keep_payload(res, i, payload, false);
                return false;
            }
            Verdict::Pending => {
                // The service answers later (Connection::complete_pending): the Receive stays
                // held (its chunk lists say where the reply goes), the send slot stays taken,
                // the sink pages go back.
                self.keep_payload(res, i, payload, false);
                self.counters.pending += 1;
                if let Some(c) = self.calls.get_mut(i as usize) {
                    if let Some(sink) = c.sink.take() {
                        res.sinks.free(sink);
                    }
                    c.state = CallState::Pending;
                }
                return true;
            }
            Verdict::NoReply => {
                self.counters.calls += 1;
                self.counters.no_reply += 1;
                self.keep_payload(res, i, payload, false);
                self.finish(res, i);
                return true;
            }
            Verdict::Reply => self.counters.calls += 1,
        }
        self.send_reply(res, i, slot, body_len, payload);
        true
    }

    /// Answers a call the service left pending ([`Verdict::Pending`]): `f` writes the reply as
    /// [`Service::serve`] would (the call's view has its inline bytes only: Read chunk data is
    /// gone), and the reply goes out with the next [`Connection::flush`]. Returns `Ok(false)`
    /// when nothing was sent: no room in the send queue now (flush, then try again), or `f`
    /// returned [`Verdict::Pending`] or [`Verdict::Defer`] to keep waiting.
    ///
    /// # Errors
    /// [`StaleHandle`] if the handle names no pending call of this connection (answered
    /// already, or the connection closed).
    pub fn complete_pending<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        handle: CallHandle,
        f: impl FnOnce(&Call<'_>, &mut ReplyWriter<'_>) -> Verdict,
    ) -> Result<bool, StaleHandle> {
        let i = handle.index;
        let slot = match self.calls.get(i as usize) {
            Some(c)
                if handle.epoch == self.epoch
                    && c.generation == handle.generation
                    && c.state == CallState::Pending =>
            {
                c.send_slot
            }
            _ => return Err(StaleHandle),
        };
        let message = match self.calls.get(i as usize).and_then(|c| c.rx.as_ref()) {
            Some(rx) => res.pool.message(rx).map_err(|_| StaleHandle)?,
            None => return Err(StaleHandle),
        };
        let need = reply_work_requests(&message);
        if self.closing {
            return Err(StaleHandle);
        }
        if self.sq_room() < need || CHAIN - self.chain.len() < need {
            // No room now: the caller flushes and tries again.
            return Ok(false);
        }
        let out = self.run_writer(res.payloads, slot, XdrView::new(message), handle, f);
        if out.0 == Verdict::Pending || out.0 == Verdict::Defer {
            self.keep_payload(res, i, out.2, false);
            return Ok(false);
        }
        self.counters.pending -= 1;
        if let Some(c) = self.calls.get_mut(i as usize) {
            c.state = CallState::Ready;
        }
        self.after_verdict(res, i, slot, out);
        Ok(true)
    }

    /// Builds the reply of call `i` (body of `body_len` bytes in send slot `slot`, and the
    /// payload) and queues its Writes and Send.
    fn send_reply<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
        slot: u16,
        body_len: usize,
        payload: Option<Payload>,
    ) {
        let slot_off = self.slot_offset(slot);
        let send_size = self.send_size;
        let peer_inline = self.peer_inline();
        let zero_addr = self.send.device_addr(self.zero_at);
        let send_lkey = self.send.lkey();
        let send_base = self.send.device_addr(slot_off);
        let write_wr = self.wr_id(WrKind::Write, i);
        let Some(rx) = self.calls.get(i as usize).and_then(|c| c.rx.as_ref()) else {
            return;
        };
        let Ok(message) = res.pool.message(rx) else {
            return;
        };
        let write_chunk = message.write_list().iter().next();
        let reply_chunk = message.reply_chunk();
        let write_segs = write_chunk.map(|s| s.len());
        let reply_segs = reply_chunk.map(|s| s.len());
        let body_at = Self::body_at(&message);
        let (pos, plen, ddp) = payload
            .as_ref()
            .map_or((0, 0, false), |p| (p.position.min(body_len), p.len, p.ddp));
        let payload_piece = payload.as_ref().map(|p| match &p.source {
            PayloadSource::Lent(run) => Piece {
                addr: res.payloads.device_addr(run, 0),
                lkey: res.payloads.lkey(),
                len: p.len as u32,
            },
            PayloadSource::External {
                device_addr, lkey, ..
            } => Piece {
                addr: *device_addr,
                lkey: *lkey,
                len: p.len as u32,
            },
        });
        let pad = (4 - plen % 4) % 4;
        let mark = self.chain.len();

        // 1. A DDP-eligible payload goes into the write chunk.
        let mut write_written = None;
        let mut in_stream = payload.is_some();
        if let (true, Some(segments), Some(piece)) = (ddp, write_chunk, payload_piece) {
            match plan_writes(&[piece], segments, write_wr, &mut self.chain) {
                Some(w) => {
                    write_written = Some(w);
                    in_stream = false;
                    self.counters.write_chunk_replies += 1;
                    self.counters.write_chunk_bytes += plen as u64;
                }
                None => {
                    self.reply_failed(res, i, slot, payload, "payload larger than the write chunk");
                    return;
                }
            }
        }
        static ZEROS: [u32; 16] = [0; 16];
        let zeros = &ZEROS;
        let write_echo = write_chunk.map(|segs| {
            (
                segs,
                write_written
                    .as_ref()
                    .map_or(&zeros[..segs.len().min(16)], |w| &w[..]),
            )
        });
        let stream_len = body_len + if in_stream { plen + pad } else { 0 };
        let msg_header = header_len(write_segs, None);
        let xid = message.xid();

        // 2. Inline, when header and stream fit the requester's inline size.
        if msg_header + stream_len <= peer_inline.min(send_size) {
            let Some(bytes) = self.send.bytes_mut(slot_off, send_size) else {
                return;
            };
            // Body to just after the header, the payload (if inline) copied into place.
            move_within(bytes, body_at, body_len, msg_header);
            if in_stream {
                let tail_from = msg_header + pos;
                move_within(bytes, tail_from, body_len - pos, tail_from + plen + pad);
                let src = match payload.as_ref().map(|p| &p.source) {
                    Some(PayloadSource::Lent(run)) => res.payloads.bytes(run),
                    Some(PayloadSource::External { bytes, .. }) => bytes,
                    None => &[],
                };
                if let Some(dst) = bytes.get_mut(tail_from..) {
                    copy_prefix(dst, src.get(..plen).unwrap_or_default());
                }
                if let Some(p) = bytes.get_mut(tail_from + plen..tail_from + plen + pad) {
                    p.fill(0);
                }
            }
            let h = emit_header(bytes, xid, 0, Proc::Msg, write_echo, None);
            self.counters.inline_replies += 1;
            let added = self.chain.len() - mark;
            if let Some(c) = self.calls.get_mut(i as usize) {
                c.outstanding += added as u16;
            }
            self.release_call_inputs(res, i);
            self.keep_payload(res, i, payload, write_written.is_some());
            if let Some(c) = self.calls.get_mut(i as usize) {
                c.header_at = 0;
            }
            self.queue_send(i, slot_off, h + stream_len);
            return;
        }

        // 3. Through the reply chunk.
        if let Some(segments) = reply_chunk {
            let body = Piece {
                addr: send_base + body_at as u64,
                lkey: send_lkey,
                len: pos as u32,
            };
            let rest = Piece {
                addr: send_base + (body_at + pos) as u64,
                lkey: send_lkey,
                len: (body_len - pos) as u32,
            };
            let pad_piece = Piece {
                addr: zero_addr,
                lkey: send_lkey,
                len: pad as u32,
            };
            let none = Piece {
                addr: 0,
                lkey: 0,
                len: 0,
            };
            let pieces = match (in_stream, payload_piece) {
                (true, Some(p)) => [body, p, pad_piece, rest],
                _ => [
                    Piece {
                        len: body_len as u32,
                        ..body
                    },
                    none,
                    none,
                    none,
                ],
            };
            if let Some(written) = plan_writes(&pieces, segments, write_wr, &mut self.chain) {
                let h_len = header_len(write_segs, reply_segs);
                let at = body_at - h_len;
                let Some(bytes) = self.send.bytes_mut(slot_off + at, h_len) else {
                    return;
                };
                emit_header(
                    bytes,
                    xid,
                    0,
                    Proc::Nomsg,
                    write_echo,
                    Some((segments, &written[..])),
                );
                self.counters.reply_chunk_replies += 1;
                self.counters.reply_chunk_bytes += stream_len as u64;
                self.release_call_inputs(res, i);
                self.keep_payload(res, i, payload, true);
                if let Some(c) = self.calls.get_mut(i as usize) {
                    c.header_at = at as u16;
                }
                let added = self.chain.len() - mark;
                if let Some(c) = self.calls.get_mut(i as usize) {
                    c.outstanding += added as u16;
                }
                self.queue_send(i, slot_off + at, h_len);
                return;
            }
        }
        // 4. Nowhere.
        self.chain.truncate(mark);
        self.reply_failed(
            res,
            i,
            slot,
            payload,
            "reply fits neither inline nor the reply chunk",
        );
    }

    /// The Receive and sink pages of call `i` are no longer needed once its reply is built.
    fn release_call_inputs<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
    ) {
        if let Some(c) = self.calls.get_mut(i as usize) {
            if let Some(rx) = c.rx.take() {
                let _ = res.pool.release(rx);
            }
            if let Some(sink) = c.sink.take() {
                res.sinks.free(sink);
            }
        }
    }

    /// Keeps a lent payload with call `i` until its Send completes when the device reads it
    /// (`device_reads`), else frees it now.
    fn keep_payload<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
        payload: Option<Payload>,
        device_reads: bool,
    ) {
        let Some(Payload {
            source: PayloadSource::Lent(run),
            ..
        }) = payload
        else {
            return;
        };
        if device_reads {
            if let Some(c) = self.calls.get_mut(i as usize) {
                c.payload = Some(run);
                return;
            }
        }
        res.payloads.free(run);
    }

    #[cold]
    fn reply_failed<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
        slot: u16,
        payload: Option<Payload>,
        why: &'static str,
    ) {
        warn!("rpcrdma: reply not sendable ({}): ERR_CHUNK", why);
        let _ = why;
        self.keep_payload(res, i, payload, false);
        let xid = self
            .calls
            .get(i as usize)
            .and_then(|c| c.rx.as_ref())
            .map_or(0, |rx| rx.xid());
        self.counters.reply_too_large += 1;
        let reply = ErrorReply {
            xid,
            vers: crate::wire::RPCRDMA_VERSION,
            credits: 0,
            kind: crate::wire::ErrorReplyKind::Chunk,
        };
        self.send_error_reply(res, i, slot, &reply);
    }

    /// Appends call `i` (its Send just posted) to the posted-replies list.
    fn link_posted(&mut self, i: u16) {
        let tail = self.posted_tail;
        let Some(c) = self.calls.get_mut(i as usize) else {
            return;
        };
        if c.posted {
            return;
        }
        c.posted = true;
        c.prev = tail;
        c.next = NO_SLOT;
        match self.calls.get_mut(tail as usize) {
            Some(t) => t.next = i,
            None => self.posted_head = i,
        }
        self.posted_tail = i;
    }

    /// Takes call `i` out of the posted-replies list (if it is in it).
    fn unlink_posted(&mut self, i: u16) {
        let Some(c) = self.calls.get_mut(i as usize) else {
            return;
        };
        if !c.posted {
            return;
        }
        c.posted = false;
        let (prev, next) = (c.prev, c.next);
        c.prev = NO_SLOT;
        c.next = NO_SLOT;
        match self.calls.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.posted_head = next,
        }
        match self.calls.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.posted_tail = prev,
        }
    }

    /// A completion arrived for a Write or Send of call `i`: every reply posted before `i`'s
    /// has completed, signaled or not. They are finished. Nothing happens when `i`'s Send was
    /// never posted (a chain the device refused part of).
    fn retire_before<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
    ) {
        if !self.calls.get(i as usize).is_some_and(|c| c.posted) {
            return;
        }
        while self.posted_head != i && self.posted_head != NO_SLOT {
            let j = self.posted_head;
            self.unlink_posted(j);
            let Some(c) = self.calls.get_mut(j as usize) else {
                break;
            };
            self.sq_in_flight = self.sq_in_flight.saturating_sub(c.outstanding);
            c.outstanding = 0;
            self.finish(res, j);
        }
    }

    fn free_call(&mut self, i: u16) {
        self.unlink_posted(i);
        if let Some(c) = self.calls.get_mut(i as usize) {
            c.state = CallState::Free;
            c.generation = c.generation.wrapping_add(1);
            c.outstanding = 0;
            c.send_slot = NO_SLOT;
            let _ = self.free_calls.push(i);
        }
    }

    /// Returns everything call `i` holds and frees its slot.
    fn finish<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
    ) {
        let Some(c) = self.calls.get_mut(i as usize) else {
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

    fn on_send_queue<S: Service + ?Sized, const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        service: &mut S,
        kind: WrKind,
        wc: &Completion,
    ) {
        let id = WrId(wc.wr_id);
        let i = id.index();
        let valid = id.tag() == self.tag(kind)
            && self.calls.get(i as usize).is_some_and(|c| {
                c.generation == id.generation()
                    && c.outstanding > 0
                    && match kind {
                        WrKind::Read => c.state == CallState::Reading,
                        _ => c.state == CallState::Replying,
                    }
            });
        if !valid || self.sq_in_flight == 0 {
            self.counters.refused_completions += 1;
            warn!("rpcrdma: refused a send-queue completion (unknown, stale or foreign wr_id)");
            return;
        }
        if kind != WrKind::Read {
            // Everything posted before this work request has completed: the replies ahead of
            // this one whose Sends were unsignaled are done.
            self.retire_before(res, i);
        }
        let failed = wc.status != CompletionStatus::Success;
        if failed {
            self.counters.failed_completions += 1;
            if let CompletionStatus::Error { code } = wc.status {
                warn!(
                    "rpcrdma: a send-queue work request failed with status {}",
                    code
                );
            }
        }
        let Some(c) = self.calls.get_mut(i as usize) else {
            return;
        };
        // A posted reply's Send comes after its Writes (unsignaled, or already reported): its
        // completion, whatever the status, accounts for all of them. A Send the device refused
        // (never posted) accounts for itself only: its Writes may still be in the device.
        let done = if kind == WrKind::Send && c.posted {
            c.outstanding
        } else {
            1
        };
        c.outstanding -= done;
        self.sq_in_flight = self.sq_in_flight.saturating_sub(done);
        c.failed |= failed;
        let outstanding = c.outstanding;
        let call_failed = c.failed;
        let state = c.state;
        if kind == WrKind::Read {
            self.reads_in_flight = self.reads_in_flight.saturating_sub(1);
        }
        if failed {
            self.close(res);
        }
        if outstanding != 0 {
            return;
        }
        match state {
            CallState::Reading => {
                let all_posted = self
                    .calls
                    .get(i as usize)
                    .is_some_and(|c| c.reads_posted == c.reads_total);
                if call_failed || self.closing {
                    self.finish(res, i);
                } else if all_posted {
                    self.reads_done(res, i);
                    if let Some(c) = self.calls.get_mut(i as usize) {
                        c.state = CallState::Ready;
                    }
                    if !self.try_reply(res, service, i) {
                        let _ = self.waiting.push_back(i);
                    }
                }
            }
            _ => self.finish(res, i),
        }
    }

    /// All Reads of call `i` arrived: count them and place the inline pieces between data
    /// chunks (only when there are several) into the sink run.
    fn reads_done<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
        i: u16,
    ) {
        let Some(c) = self.calls.get(i as usize) else {
            return;
        };
        let (Some(rx), Some(sink)) = (c.rx.as_ref(), c.sink.as_ref()) else {
            return;
        };
        let Ok(message) = res.pool.message(rx) else {
            return;
        };
        self.counters.read_bytes += message.read_list().total_len();
        let layout = SinkLayout::of(&message);
        if layout.data_chunks < 2 {
            return;
        }
        let inline = message.rpc_message();
        let bytes = res.sinks.bytes_mut(sink);
        layout.place_middles(inline, bytes);
    }

    /// End of a batch: refills the receive pool, writes the credit grant into every reply of
    /// the batch, and posts the batch's send-queue work requests as one chain. Repeats while
    /// waiting calls can move on.
    ///
    /// # Errors
    /// A [`PostError`] from the device: the connection is then closing (what was refused is
    /// treated as flushed).
    pub fn flush<D, S, const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
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
            let grant = self.grant(res);
            for wr in self.chain.iter() {
                if wr.op != SendOp::Send {
                    continue;
                }
                let idx = WrId(wr.wr_id).index() as usize;
                let Some(c) = self.calls.get(idx) else {
                    continue;
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
            for k in 0..posted {
                let Some(wr) = self.chain.get(k).copied() else {
                    break;
                };
                if wr.op == SendOp::Send {
                    self.link_posted(WrId(wr.wr_id).index());
                }
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
                        byte_len: 0,
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

    /// Marks which work requests of the chain the device reports: every Read (each one moves
    /// its call on), and the last Send, whose completion retires every reply before it. With
    /// `signal_all`, every one.
    fn set_signaling(&mut self) {
        let last_send = self.chain.iter().rposition(|wr| wr.op == SendOp::Send);
        let signal_all = self.signal_all;
        let mut unsignaled = 0;
        for (k, wr) in self.chain.iter_mut().enumerate() {
            wr.signaled =
                signal_all || matches!(wr.op, SendOp::Read { .. }) || Some(k) == last_send;
            unsignaled += (wr.op == SendOp::Send && !wr.signaled) as u64;
        }
        self.counters.unsignaled_sends += unsignaled;
    }

    /// The grant to send now: the configured credits, lowered to what is posted (or to the
    /// shared pool's limit for this connection), at least 1.
    fn grant<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &Resources<'_, 'a, N, P, Q>,
    ) -> u32 {
        let limit = res.grant_limit.unwrap_or(res.pool.posted() as u32);
        let grant = (self.credits as u32).min(limit).max(1);
        if grant < self.credits as u32 {
            self.counters.reduced_grants += 1;
        }
        self.counters.last_grant = grant;
        grant
    }

    /// Teardown, once the device no longer touches this connection's memory (queue pair
    /// destroyed, or in error with its completions consumed): every call still in progress
    /// gives back its Receive, pages and send slot.
    pub fn drain<const N: usize, const P: usize, const Q: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P, Q>,
    ) -> ConnectionDrain {
        self.closing = true;
        let mut report = ConnectionDrain {
            calls: 0,
            work_requests: self.sq_in_flight as usize,
        };
        for i in 0..self.call_count {
            if self
                .calls
                .get(i as usize)
                .is_some_and(|c| c.state != CallState::Free)
            {
                report.calls += 1;
                self.finish(res, i);
            }
        }
        self.counters.pending = 0;
        self.waiting.clear();
        self.chain.clear();
        self.posted_head = NO_SLOT;
        self.posted_tail = NO_SLOT;
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

/// Send-queue work requests the reply to `message` needs at most: the Send, plus the Writes of
/// a payload into the write chunk and of up to four pieces into the reply chunk.
#[inline]
fn reply_work_requests(message: &Message<'_>) -> usize {
    if message.lists_empty() {
        1 // the Send alone
    } else {
        reply_work_requests_with_chunks(message)
    }
}

#[inline(never)]
fn reply_work_requests_with_chunks(message: &Message<'_>) -> usize {
    let w = message.write_list().iter().next().map_or(0, |s| s.len());
    let r = message.reply_chunk().map_or(0, |s| s.len());
    1 + max_writes(1, w) + max_writes(4, r)
}

/// Where a call's Read-chunk data goes in its sink run:
/// `[call chunk, padded] [data chunk 1, padded] [inline between 1 and 2] [data chunk 2] …`.
#[derive(Debug)]
struct SinkLayout {
    call_len: usize,
    /// Per data chunk: (offset in the base, length, offset in the sink run).
    chunks: Vec<(usize, usize, usize), MAX_READ_SEGMENTS>,
    data_chunks: usize,
    total: usize,
}

impl SinkLayout {
    fn of(message: &Message<'_>) -> SinkLayout {
        let list = message.read_list();
        let call_len = list.call_chunk().map_or(0, |c| c.length as usize);
        let base_len = if call_len != 0 {
            call_len
        } else {
            message.rpc_message().len()
        };
        let mut at = xdr_roundup(call_len as u32) as usize;
        let mut chunks = Vec::new();
        let mut prev_base: Option<usize> = None;
        for chunk in list.chunks().filter(|c| c.position != 0) {
            let base_off = (chunk.inline_offset as usize).min(base_len);
            if let Some(prev) = prev_base {
                // Inline bytes between the previous chunk's place and this one.
                at += base_off.saturating_sub(prev);
            }
            let _ = chunks.push((base_off, chunk.length as usize, at));
            at += xdr_roundup(chunk.length as u32) as usize;
            prev_base = Some(base_off);
        }
        // The last chunk's roundup is not part of `pages`.
        let total = match chunks.last() {
            Some(&(_, len, off)) => off + len,
            None => at,
        };
        SinkLayout {
            call_len,
            data_chunks: chunks.len(),
            chunks,
            total: total.max(1),
        }
    }

    /// Sink offset of read segment `index`: the call chunk's segments are placed one after
    /// the other from 0, each data chunk's from its own offset.
    fn segment_offset(&self, list: &crate::wire::ReadList<'_>, index: usize) -> usize {
        let mut call_at = 0;
        let mut chunk: Option<usize> = None;
        let mut previous: Option<u32> = None;
        let mut within = 0;
        for (k, item) in list.iter().enumerate() {
            let len = item.segment.length as usize;
            if item.position == 0 {
                if k == index {
                    return call_at;
                }
                call_at += len;
                continue;
            }
            if previous != Some(item.position) {
                chunk = Some(chunk.map_or(0, |c| c + 1));
                within = 0;
                previous = Some(item.position);
            }
            let base = chunk
                .and_then(|c| self.chunks.get(c))
                .map_or(0, |&(_, _, at)| at);
            if k == index {
                return base + within;
            }
            within += len;
        }
        0
    }

    fn view<'v>(&self, message: Message<'v>, sink: &'v [u8]) -> XdrView<'v> {
        let base: &'v [u8] = if self.call_len != 0 {
            sink.get(..self.call_len).unwrap_or_default()
        } else {
            message.rpc_message()
        };
        match (self.chunks.first(), self.chunks.last()) {
            (Some(&(first_off, _, first_at)), Some(&(last_off, last_len, last_at))) => {
                let head = base.get(..first_off).unwrap_or_default();
                let pages = sink.get(first_at..last_at + last_len).unwrap_or_default();
                let tail = base.get(last_off..).unwrap_or_default();
                XdrView::from_parts(message, head, pages, tail)
            }
            _ => XdrView::from_parts(message, base, &[], &[]),
        }
    }

    /// Copies the base bytes between consecutive data chunks into the gaps of the sink run.
    fn place_middles(&self, inline: &[u8], sink: &mut [u8]) {
        for pair in self.chunks.windows(2) {
            let (Some(&(a_off, a_len, a_at)), Some(&(b_off, _, _))) = (pair.first(), pair.get(1))
            else {
                continue;
            };
            let pad_from = a_at + a_len;
            let gap_at = a_at + xdr_roundup(a_len as u32) as usize;
            if let Some(p) = sink.get_mut(pad_from..gap_at) {
                p.fill(0);
            }
            if self.call_len != 0 {
                // The base is the call chunk at the start of the sink run.
                let (base, rest) = sink.split_at_mut(self.call_len.min(sink.len()));
                let src = base.get(a_off..b_off).unwrap_or_default();
                let dst_at = gap_at - self.call_len.min(gap_at);
                if let Some(dst) = rest.get_mut(dst_at..) {
                    copy_prefix(dst, src);
                }
            } else {
                let src = inline.get(a_off..b_off).unwrap_or_default();
                if let Some(dst) = sink.get_mut(gap_at..) {
                    copy_prefix(dst, src);
                }
            }
        }
    }
}

/// Credit bookkeeping for connections that share one receive pool (SRQ): the grants of all
/// connections together never exceed the Receives posted when a reply is sent.
#[derive(Debug)]
pub struct CreditLedger<const M: usize> {
    grants: [u32; M],
    live: [bool; M],
}

impl<const M: usize> Default for CreditLedger<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const M: usize> CreditLedger<M> {
    /// An empty ledger for up to `M` connections.
    pub const fn new() -> Self {
        CreditLedger {
            grants: [0; M],
            live: [false; M],
        }
    }

    /// Registers connection `slot`: until its first reply a requester may send one call
    /// (RFC 8166 §3.3.1), so it starts holding one credit. Returns false if the slot is out
    /// of range.
    pub fn open(&mut self, slot: usize) -> bool {
        match (self.grants.get_mut(slot), self.live.get_mut(slot)) {
            (Some(g), Some(l)) => {
                *g = 1;
                *l = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets connection `slot`.
    pub fn close(&mut self, slot: usize) {
        if let (Some(g), Some(l)) = (self.grants.get_mut(slot), self.live.get_mut(slot)) {
            *g = 0;
            *l = false;
        }
    }

    /// Connections registered.
    pub fn connections(&self) -> usize {
        self.live.iter().filter(|l| **l).count()
    }

    /// Sum of the grants outstanding.
    pub fn total(&self) -> u64 {
        self.grants.iter().map(|g| *g as u64).sum()
    }

    /// The most connection `slot` may be granted now, with `posted` Receives in the shared
    /// pool: what is posted less the other connections' grants, and no more than a fair share
    /// (`posted / connections`), so no connection starves the others; at least 1.
    pub fn limit(&self, slot: usize, posted: usize) -> u32 {
        let others = self.total() - self.grants.get(slot).copied().unwrap_or(0) as u64;
        let available = (posted as u64).saturating_sub(others);
        let fair = posted as u64 / self.connections().max(1) as u64;
        available.min(fair).clamp(1, u32::MAX as u64) as u32
    }

    /// Records the grant connection `slot` was sent.
    pub fn record(&mut self, slot: usize, grant: u32) {
        if let Some(g) = self.grants.get_mut(slot) {
            *g = grant;
        }
    }
}
