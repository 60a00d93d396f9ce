//! The receive descriptor pool: persistent Receive buffers over one caller-provided DMA region.
//!
//! The region is carved once into Receive buffers of `buffer_size` bytes (stride rounded up to
//! the cache line): `credits + batch` of them unless configured otherwise, at most the
//! bookkeeping capacity `N`, so the memory follows the credits. Each buffer has a descriptor
//! of fixed size; descriptors move between three states:
//!
//! ```text
//!            post()                complete(Success, valid)
//!   Free ───────────────▶ Posted ─────────────────────────▶ Held ──release()──▶ Free
//!     ▲                     │  complete(Flushed / Error / malformed)               
//!     └─────────────────────┘  (descriptor straight back; malformed ones yield the RDMA_ERROR)
//! ```
//!
//! *Received* (completed and decoded) and *Held* (owned by the upper layer) are one state here:
//! the hand-up happens inside [`RecvPool::complete`], which returns the [`Received`] token.
//!
//! # Invariants
//! - every descriptor is in exactly one state; `posted + held + free == buffer_count`;
//! - a buffer is borrowed (`&[u8]`) only while its descriptor is Held, and only through
//!   `&self`, so [`RecvPool::post`] (`&mut self`) cannot repost it while a view lives;
//! - a [`Received`] token is the only handle to a Held buffer; [`RecvPool::release`] consumes
//!   it, so an old view cannot outlive its release;
//! - wr_ids follow [`crate::device::WrId`] (kind Receive, this pool's epoch, index,
//!   generation); the generation changes on every post and on drain, so completions for an
//!   earlier post (stale), a second completion (duplicate) and ids that were never handed out
//!   or belong to another pool (forged) are all rejected and counted, never trusted;
//! - a flush or error completion frees its descriptor and is reported; it does not close the
//!   pool, because with a shared receive queue it concerns one connection only. After
//!   [`RecvPool::close`] (the owning connection is closing) nothing is posted again;
//!   [`RecvPool::drain`] returns every descriptor to Free.
//!
//! # Bookkeeping
//! Per descriptor 16 bytes (`RecvDescriptor`, checked at compile time): a key
//! `generation | tag | low` and a word. The key is the wr_id the buffer was posted with, its
//! low 16 bits (the index in a wr_id) replaced by `0xffff` while Posted and `0xfffe` while
//! Free, and left as the index while Held — so a completion is checked with one compare
//! (`key == wr_id | 0xffff`: tag, generation and Posted at once) and a token with one compare
//! (`key == token`); indices stop below `0xfffe`, so the three never collide. A mismatch is
//! classified (unknown, stale, duplicate) off the hot path. The word holds the next free
//! index while Free (the free list is threaded through the descriptors) and the decoded
//! [`Layout`], packed, while Held. The [`Received`] token is the wr_id plus `xid` and
//! `byte_len` (16 bytes): a view rebuilds the message from the token and the descriptor without
//! decoding again, and finds the bytes through a carving of the region checked once at
//! construction (one compare of the index, a clamp of the length).
//!
//! # Credits and replenishment
//! The pool advertises `credits` (≥ 1). It keeps up to `credits + batch` Receives posted and
//! refills once the posted count falls to `credits` or below, always by at least `batch` work
//! requests chained into one post (one doorbell). At least `credits + batch` buffers are
//! required, so the grant never exceeds what stays posted: the peer may have at most
//! `credits` calls outstanding, and each outstanding call either still needs a posted Receive
//! or is Held here. [`RecvPool::refill`] posts until the watermark holds, whatever the credits.

use static_assertions::const_assert;

use crate::device::{Device, WrId, WrKind, MAX_EPOCH};
use crate::dma::{Carving, DmaRegion, DmaSync};
use crate::wire::{
    decode_layout, DecodeError, DecodeLimits, Disposition, ErrorReply, Layout, Message,
};
use crate::xdr::XdrView;

pub use crate::device::{Completion, CompletionStatus, RecvWr};

mod config;
mod counters;
mod error;

use config::stride;
pub use config::{PoolConfig, MAX_BUFFER_SIZE, MIN_BUFFER_SIZE, REFILL_CHAIN};
pub use counters::{Counters, DrainReport};
pub use error::{CompletionError, PoolError, StaleToken};

/// What a completion produced.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "a Received message must be released, a Rejected one may need its reply sent"]
pub enum Completed {
    /// A valid call, Held until [`RecvPool::release`]: view it with [`RecvPool::view`].
    Message(Received),
    /// A malformed message. The descriptor is already Free. Send `reply` if it is `Some`
    /// (ERR_VERS / ERR_CHUNK); `None` means drop.
    Rejected {
        /// What was wrong.
        error: DecodeError,
        /// The RDMA_ERROR to send, built only from bytes that arrived.
        reply: Option<ErrorReply>,
    },
    /// A flush: the descriptor is Free. The connection it arrived on is closing.
    Flushed,
}

/// The token for a Held Receive buffer: the only way to view or release it. Not `Clone`.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "release the message with RecvPool::release, or its descriptor stays Held until drain"]
// On 64-bit targets the 16-byte alignment lets the token travel through `Completed` as one
// 128-bit unit (measured: 10 fewer instructions per message); 32-bit targets keep their
// natural alignment rather than pad every call slot that holds a token.
#[cfg_attr(target_pointer_width = "64", repr(C, align(16)))]
pub struct Received {
    /// The wr_id the buffer was posted with: generation, tag (kind and epoch), index.
    id: u64,
    xid: u32,
    byte_len: u32,
}

const_assert!(core::mem::size_of::<Received>() <= 16);

impl Received {
    /// The call's xid.
    #[inline]
    pub fn xid(&self) -> u32 {
        self.xid
    }
    /// Bytes that arrived.
    #[inline]
    pub fn byte_len(&self) -> usize {
        self.byte_len as usize
    }
    /// The descriptor index (for diagnostics).
    #[inline]
    pub fn index(&self) -> usize {
        self.id as u16 as usize
    }
    /// The descriptor key this token is valid for: its wr_id (a Held key keeps the index).
    #[inline(always)]
    fn held_key(&self) -> u64 {
        self.id
    }
}

/// Descriptor state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum DescState {
    /// In the free list.
    Free,
    /// Posted to the device: the device may write the buffer; the CPU must not read it.
    Posted,
    /// Received and handed to the upper layer.
    Held,
}

/// Low 16 bits of a descriptor key: the index while Held, else the state (in a wr_id these bits
/// are the index).
const STATE_MASK: u64 = 0xffff;
const FREE: u64 = 0xfffe;
const POSTED: u64 = 0xffff;
/// Largest capacity: every index stays below the Free and Posted markers.
const MAX_DESCRIPTORS: usize = FREE as usize;
/// One step of the generation in a key.
const GENERATION_ONE: u64 = 1 << 32;
/// End of the free list.
const NO_INDEX: u16 = u16::MAX;

/// Per-descriptor bookkeeping: 16 bytes, two words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecvDescriptor {
    /// `generation (32) | tag (16) | low (16)`: the wr_id it was posted with, the index bits
    /// replaced by POSTED (0xffff) or FREE (0xfffe), kept while Held. A completion is valid iff
    /// `key == wr_id | POSTED`, a token iff `key == id`: one compare checks pool, generation
    /// and state.
    key: u64,
    /// Free: the next free descriptor (the free list is threaded through the descriptors);
    /// Held: the decoded [`Layout`], packed. Unused while Posted.
    word: u64,
}

impl RecvDescriptor {
    #[inline(always)]
    fn state(&self) -> DescState {
        match self.key & STATE_MASK {
            POSTED => DescState::Posted,
            FREE => DescState::Free,
            _ => DescState::Held,
        }
    }
    #[inline(always)]
    fn generation(&self) -> u32 {
        (self.key >> 32) as u32
    }
}

const_assert!(core::mem::size_of::<RecvDescriptor>() <= 16);

/// A receive pool of `N` persistent Receive buffers over one DMA region.
#[derive(Debug)]
pub struct RecvPool<'a, const N: usize> {
    buffers: Carving<'a>,
    descs: [RecvDescriptor; N],
    /// Head of the free list threaded through `RecvDescriptor::word`.
    free_head: u16,
    free_len: u16,
    tag: u16,
    count: u16,
    credits: u16,
    batch: u16,
    posted: u16,
    held: u16,
    closing: bool,
    limits: DecodeLimits,
    counters: Counters,
}

impl<'a, const N: usize> RecvPool<'a, N> {
    const CHECK_N: () = assert!(
        N >= 1 && N <= MAX_DESCRIPTORS,
        "RecvPool capacity N must be 1..=65534"
    );

    /// Carves `region` into `N` Receive buffers.
    ///
    /// # Errors
    /// [`PoolError`] if the configuration or region cannot work; never later.
    pub fn new(region: DmaRegion<'a>, config: PoolConfig) -> Result<Self, PoolError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK_N;
        if !(MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&config.buffer_size) {
            return Err(PoolError::BufferSize {
                size: config.buffer_size,
            });
        }
        if config.credits == 0 {
            return Err(PoolError::ZeroCredits);
        }
        if config.batch == 0 {
            return Err(PoolError::ZeroBatch);
        }
        if config.epoch > MAX_EPOCH {
            return Err(PoolError::Epoch {
                epoch: config.epoch,
            });
        }
        let needed = config.credits as usize + config.batch as usize;
        let count = config.buffer_count();
        if count < needed {
            return Err(PoolError::TooFewDescriptors { n: count, needed });
        }
        if count > N {
            return Err(PoolError::TooFewDescriptors {
                n: N,
                needed: count,
            });
        }
        let stride = stride(config.buffer_size);
        let needed = count * stride;
        let len = region.len();
        let Some(buffers) = Carving::new(region, stride, config.buffer_size as u32, count) else {
            return Err(PoolError::RegionTooSmall { needed, len });
        };
        let tag = WrId::tag_of(WrKind::Recv, config.epoch);
        let mut descs = [RecvDescriptor {
            key: FREE,
            word: NO_INDEX as u64,
        }; N];
        // Free list 0, 1, 2, …: descriptor i links to i + 1, the last one ends it.
        for (i, d) in descs.iter_mut().enumerate().take(count) {
            d.key = (tag as u64) << 16 | FREE;
            d.word = if i + 1 < count {
                (i + 1) as u64
            } else {
                NO_INDEX as u64
            };
        }
        debug!(
            "rpcrdma pool: {} buffers of {} bytes, credits {}",
            count, config.buffer_size, config.credits
        );
        Ok(RecvPool {
            buffers,
            descs,
            free_head: if count == 0 { NO_INDEX } else { 0 },
            free_len: count as u16,
            tag,
            count: count as u16,
            credits: config.credits,
            batch: config.batch,
            posted: 0,
            held: 0,
            closing: false,
            limits: config.limits,
            counters: Counters::default(),
        })
    }

    /// Credits to advertise in every reply header.
    #[inline]
    pub fn credits(&self) -> u32 {
        self.credits as u32
    }

    /// Receive buffer size (what to advertise in RFC 8797 private data).
    #[inline]
    pub fn buffer_size(&self) -> usize {
        self.buffers.size() as usize
    }

    /// The most Receives `post` keeps posted: `credits + batch`.
    #[inline]
    pub fn post_target(&self) -> usize {
        self.credits as usize + self.batch as usize
    }

    /// Receive buffers carved from the region (`credits + batch` unless configured).
    #[inline]
    pub fn buffer_count(&self) -> usize {
        self.count as usize
    }

    /// The epoch of this pool's wr_ids.
    #[inline]
    pub fn epoch(&self) -> u16 {
        WrId(u64::from(self.tag) << 16).epoch()
    }

    /// Whether a refill is due: posted has fallen to `credits` or below and the pool is open.
    #[inline]
    pub fn needs_post(&self) -> bool {
        !self.closing && self.posted <= self.credits
    }

    /// Fills `out` with Receive work requests (one SGE each) for the binding to chain into one
    /// post. Returns how many it wrote: 0 unless [`RecvPool::needs_post`]; otherwise enough to
    /// bring the posted count back to [`RecvPool::post_target`], bounded by `out.len()` and the
    /// free descriptors. If the device refuses some of them, hand those back with
    /// [`RecvPool::cancel`].
    pub fn post(&mut self, out: &mut [RecvWr]) -> usize {
        self.post_some(out, false)
    }

    fn post_some(&mut self, out: &mut [RecvWr], eager: bool) -> usize {
        if !self.wants_post(eager) {
            return 0;
        }
        let want = (self.post_target() - self.posted as usize).min(self.free_len as usize);
        let (length, lkey) = (self.buffers.size(), self.buffers.lkey());
        let mut head = self.free_head;
        let mut n = 0;
        for wr in out.iter_mut().take(want) {
            let index = head;
            let Some(desc) = self.descs.get_mut(index as usize) else {
                break;
            };
            head = desc.word as u16;
            let key = (desc.key & !STATE_MASK).wrapping_add(GENERATION_ONE);
            desc.key = key | POSTED;
            *wr = RecvWr {
                wr_id: key | index as u64,
                addr: self.buffers.device_addr(index as usize),
                length,
                lkey,
            };
            n += 1;
        }
        self.free_head = head;
        self.free_len -= n as u16;
        self.posted += n as u16;
        self.counters.posted += n as u64;
        self.counters.batches += (n != 0) as u64;
        n
    }

    /// Returns work requests the device refused (e.g. `ibv_post_recv`'s `bad_wr` and those after
    /// it) to the free list. Ids that are not currently Posted are ignored. Returns how many
    /// were returned.
    pub fn cancel(&mut self, wrs: &[RecvWr]) -> usize {
        let mut n = 0;
        for wr in wrs {
            if let Ok(i) = self.lookup(wr.wr_id) {
                self.free_descriptor(i);
                self.posted -= 1;
                n += 1;
            }
        }
        self.counters.cancelled += n as u64;
        n
    }

    /// Posts Receives until the watermark holds: chains of up to [`REFILL_CHAIN`] work
    /// requests, one doorbell each, until [`RecvPool::needs_post`] is false or no descriptor is
    /// free. Work requests the device refuses come back to the free list. Returns how many were
    /// posted.
    ///
    /// # Errors
    /// The device's [`crate::device::PostError`]; what it refused is already cancelled.
    pub fn refill<D: Device + ?Sized>(
        &mut self,
        device: &mut D,
    ) -> Result<usize, crate::device::PostError> {
        self.fill(device, false)
    }

    /// As [`RecvPool::refill`], but posts every free descriptor up to
    /// [`RecvPool::post_target`] whatever the watermark says. A shared receive queue uses it
    /// before computing a grant, so the Receives of the calls just answered count as posted.
    ///
    /// # Errors
    /// As [`RecvPool::refill`].
    pub fn top_up<D: Device + ?Sized>(
        &mut self,
        device: &mut D,
    ) -> Result<usize, crate::device::PostError> {
        self.fill(device, true)
    }

    fn wants_post(&self, eager: bool) -> bool {
        if eager {
            !self.closing && (self.posted as usize) < self.post_target()
        } else {
            self.needs_post()
        }
    }

    fn fill<D: Device + ?Sized>(
        &mut self,
        device: &mut D,
        eager: bool,
    ) -> Result<usize, crate::device::PostError> {
        let mut total = 0;
        let mut wrs = [RecvWr::default(); REFILL_CHAIN];
        while self.wants_post(eager) {
            let n = self.post_some(&mut wrs, eager);
            if n == 0 {
                break;
            }
            let batch = wrs.get(..n).unwrap_or_default();
            if let Err(e) = device.post_recv(batch) {
                self.cancel(batch.get(e.index..).unwrap_or_default());
                return Err(crate::device::PostError {
                    index: total + e.index,
                    code: e.code,
                });
            }
            total += n;
            if n < REFILL_CHAIN {
                // Either the watermark holds or no descriptor is free.
                if !self.wants_post(eager) || self.free_len == 0 {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Validates a wr_id: tag (kind and epoch), generation current and descriptor Posted,
    /// all in one compare of the descriptor key; a mismatch is classified off the hot path.
    #[inline(always)]
    fn lookup(&mut self, wr_id: u64) -> Result<usize, CompletionError> {
        let index = wr_id as u16 as usize;
        match self.descs.get(index) {
            Some(desc) if desc.key == wr_id | POSTED => Ok(index),
            _ => Err(self.refuse(wr_id)),
        }
    }

    /// Why a wr_id failed [`RecvPool::lookup`]: counted, in the order unknown (index out of
    /// range or another tag), stale (another generation), duplicate (not Posted).
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, wr_id: u64) -> CompletionError {
        let id = WrId(wr_id);
        let desc = self
            .descs
            .get(id.index() as usize)
            .filter(|_| id.tag() == self.tag);
        match desc {
            None => {
                self.counters.rejected_unknown += 1;
                CompletionError::UnknownWrId { wr_id }
            }
            Some(d) if d.generation() != id.generation() => {
                self.counters.rejected_stale += 1;
                CompletionError::StaleWrId { wr_id }
            }
            Some(_) => {
                self.counters.rejected_duplicate += 1;
                CompletionError::DuplicateCompletion { wr_id }
            }
        }
    }

    #[inline(always)]
    fn free_descriptor(&mut self, index: usize) {
        if let Some(desc) = self.descs.get_mut(index) {
            desc.key = (desc.key & !STATE_MASK) | FREE;
            desc.word = self.free_head as u64;
            self.free_head = index as u16;
            self.free_len += 1;
        }
    }

    /// Consumes one Receive completion.
    ///
    /// Success: checks `byte_len` against the buffer, calls `sync` for exactly `byte_len`
    /// bytes, decodes, and hands up the message ([`Completed::Message`]) or the reply for a
    /// malformed one ([`Completed::Rejected`], descriptor already Free). Flush: descriptor Free,
    /// pool closing.
    ///
    /// # Errors
    /// [`CompletionError`] for an unknown, stale or duplicate wr_id (nothing touched), or a
    /// device error (descriptor Free, pool closing).
    #[inline(always)]
    pub fn complete<S: DmaSync + ?Sized>(
        &mut self,
        completion: &Completion,
        sync: &mut S,
    ) -> Result<Completed, CompletionError> {
        let wr_id = completion.wr_id;
        let index = match self.lookup(wr_id) {
            Ok(i) => i,
            Err(e) => return Err(self.rejected_completion(e)),
        };
        self.posted -= 1;
        if completion.status != CompletionStatus::Success {
            return self.completed_in_error(index, wr_id, completion.status);
        }
        let byte_len = completion.byte_len as usize;
        self.counters.completed += 1;
        self.counters.bytes += byte_len as u64;
        // Sync only what arrived; never more than the buffer.
        let synced = byte_len.min(self.buffers.size() as usize);
        sync.sync_for_cpu(
            self.buffers.device_addr(index),
            self.buffers.cpu_addr(index),
            synced,
        );
        let buf = self.buffers.buffer(index);
        // The common call first, so its packed layout is a constant.
        if let Some(layout) = Layout::fast_path_empty_lists(buf, byte_len) {
            return Ok(Completed::Message(self.hand_up(index, wr_id, layout)));
        }
        match decode_layout(buf, byte_len, &self.limits) {
            Ok(layout) => Ok(Completed::Message(self.hand_up(index, wr_id, layout))),
            Err(error) => {
                // Built only from the bytes that arrived, before the descriptor is freed.
                let received = buf.get(..byte_len).unwrap_or_default();
                let reply = ErrorReply::for_error(received, &error, self.credits as u32);
                Ok(self.reject(index, byte_len, error, reply))
            }
        }
    }

    #[inline(always)]
    fn hand_up(&mut self, index: usize, wr_id: u64, layout: Layout) -> Received {
        if let Some(desc) = self.descs.get_mut(index) {
            desc.key = wr_id;
            desc.word = layout.pack();
        }
        self.held += 1;
        Received {
            id: wr_id,
            xid: layout.xid(),
            byte_len: layout.byte_len() as u32,
        }
    }

    #[cold]
    #[inline(never)]
    fn rejected_completion(&mut self, e: CompletionError) -> CompletionError {
        warn!("rpcrdma pool: rejected a completion (unknown, stale or duplicate wr_id)");
        e
    }

    #[cold]
    fn completed_in_error(
        &mut self,
        index: usize,
        wr_id: u64,
        status: CompletionStatus,
    ) -> Result<Completed, CompletionError> {
        self.free_descriptor(index);
        match status {
            CompletionStatus::Error { code } => {
                self.counters.device_errors += 1;
                error!(
                    "rpcrdma pool: Receive completed with device status {}",
                    code
                );
                Err(CompletionError::DeviceError { wr_id, code })
            }
            _ => {
                self.counters.flushed += 1;
                Ok(Completed::Flushed)
            }
        }
    }

    #[cold]
    fn reject(
        &mut self,
        index: usize,
        byte_len: usize,
        error: DecodeError,
        reply: Option<ErrorReply>,
    ) -> Completed {
        match error.disposition() {
            Disposition::ReplyErrVers => self.counters.err_vers += 1,
            Disposition::ReplyErrChunk => self.counters.err_chunk += 1,
            Disposition::Drop => self.counters.dropped += 1,
        }
        debug!(
            "rpcrdma pool: malformed message of {} bytes rejected",
            byte_len
        );
        self.free_descriptor(index);
        Completed::Rejected { error, reply }
    }

    /// The descriptor a token names, if the token is still valid for it: one compare of the
    /// key (this pool's tag, the generation handed out, Held). Tokens cannot be forged or
    /// copied, so the only stale ones are drained or from another pool.
    #[inline(always)]
    fn held_desc(&self, rx: &Received) -> Result<(usize, &RecvDescriptor), StaleToken> {
        let i = rx.index();
        match self.descs.get(i) {
            Some(d) if d.key == rx.held_key() => Ok((i, d)),
            _ => Err(StaleToken),
        }
    }

    /// The XDR view of a Held message: a slice of its Receive buffer, in constant time.
    ///
    /// The layout decoded on completion is kept in the descriptor; the token carries `xid` and
    /// `byte_len`. Nothing is decoded again.
    ///
    /// # Errors
    /// [`StaleToken`] if the token does not match a Held descriptor of this pool.
    #[inline]
    pub fn view(&self, rx: &Received) -> Result<XdrView<'_>, StaleToken> {
        let (buf, word) = self.held_bytes(rx)?;
        if word == Layout::PACKED_EMPTY_LISTS {
            // The common call: its layout is a constant, its view the bytes after 28.
            let layout = Layout::empty_lists(rx.xid, buf.len() as u32);
            return Ok(XdrView::inline(layout.message_exact(buf)));
        }
        let message = Layout::unpack(word, rx.xid, buf.len() as u32).message_exact(buf);
        if !message.has_read_chunks() {
            return Ok(XdrView::inline(message));
        }
        Ok(XdrView::new(message))
    }

    /// The decoded message of a Held buffer (header, chunk lists, inline bytes) without the
    /// XDR split: what [`RecvPool::view`] starts from, for a caller that needs only the lists.
    ///
    /// # Errors
    /// [`StaleToken`] if the token does not match a Held descriptor of this pool.
    #[inline]
    pub fn message(&self, rx: &Received) -> Result<Message<'_>, StaleToken> {
        let (buf, word) = self.held_bytes(rx)?;
        let byte_len = buf.len() as u32;
        let layout = if word == Layout::PACKED_EMPTY_LISTS {
            Layout::empty_lists(rx.xid, byte_len)
        } else {
            Layout::unpack(word, rx.xid, byte_len)
        };
        Ok(layout.message_exact(buf))
    }

    /// The bytes that arrived in the Held buffer `rx` names, never past the buffer whatever the
    /// token says (`prefix` clamps), and its packed layout.
    #[inline(always)]
    fn held_bytes(&self, rx: &Received) -> Result<(&[u8], u64), StaleToken> {
        let (i, d) = self.held_desc(rx)?;
        Ok((self.buffers.prefix(i, rx.byte_len), d.word))
    }

    /// Returns a Held buffer to the free list (after the reply was sent). O(1).
    ///
    /// # Errors
    /// [`StaleToken`] if the token does not match a Held descriptor (e.g. it was drained).
    #[inline]
    pub fn release(&mut self, rx: Received) -> Result<(), StaleToken> {
        let (i, _) = self.held_desc(&rx)?;
        self.free_descriptor(i);
        self.held -= 1;
        self.counters.released += 1;
        Ok(())
    }

    /// Stops posting (the connection that owns this pool is closing). Completions and releases
    /// still work. A pool shared by several connections (SRQ) is closed only at teardown.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Whether the pool is closing (`close` or `drain`).
    #[inline]
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Teardown: call once the device can no longer write the buffers (queue pair destroyed, or
    /// in error with its flushes consumed). Every descriptor goes back to Free; Posted ones whose
    /// flush never came and Held ones whose tokens are outstanding are reclaimed (those tokens
    /// become stale). Afterwards nothing is in flight and nothing is posted again.
    pub fn drain(&mut self) -> DrainReport {
        let mut report = DrainReport::default();
        let count = self.count as usize;
        let mut next = NO_INDEX;
        for (i, desc) in self.descs.iter_mut().enumerate().take(count).rev() {
            match desc.state() {
                DescState::Posted => report.posted += 1,
                DescState::Held => report.held += 1,
                DescState::Free => {}
            }
            if desc.state() != DescState::Free {
                desc.key = (desc.key & !STATE_MASK).wrapping_add(GENERATION_ONE) | FREE;
            }
            desc.word = next as u64;
            next = i as u16;
        }
        self.free_head = next;
        self.free_len = count as u16;
        self.posted = 0;
        self.held = 0;
        self.closing = true;
        self.counters.drained += (report.posted + report.held) as u64;
        info!(
            "rpcrdma pool drained: {} posted, {} held reclaimed",
            report.posted, report.held
        );
        report
    }

    /// Counters so far.
    #[inline]
    pub fn counters(&self) -> Counters {
        let c = self.counters;
        // Derived rather than counted on the hot path.
        let delivered = c.completed - c.err_vers - c.err_chunk - c.dropped;
        Counters { delivered, ..c }
    }

    /// Receives currently posted.
    #[inline]
    pub fn posted(&self) -> usize {
        self.posted as usize
    }

    /// Messages currently Held by the upper layer.
    #[inline]
    pub fn held(&self) -> usize {
        self.held as usize
    }

    /// Descriptors in the free list.
    #[inline]
    pub fn free(&self) -> usize {
        self.free_len as usize
    }

    /// Descriptors not Free (posted + held): zero after `drain`.
    #[inline]
    pub fn in_flight(&self) -> usize {
        self.posted() + self.held()
    }

    /// State of descriptor `index` (for tests and diagnostics).
    pub fn state(&self, index: usize) -> Option<DescState> {
        self.descs.get(index).map(RecvDescriptor::state)
    }
}
