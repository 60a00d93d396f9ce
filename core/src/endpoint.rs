//! One owned server endpoint: the whole receive path of one connection in one value.
//!
//! An [`Endpoint`] takes one [`DmaRegion`] and an [`EndpointConfig`], carves the region (no
//! `unsafe` anywhere in the caller) into
//!
//! ```text
//! [ Receive buffers | send slots + zero line | Read-sink pages | payload pages ]
//! ```
//!
//! each part starting on a cache line, and builds the receive pool ([`crate::pool`]), the two
//! page pools ([`crate::pages`]) and the responder's [`Connection`] over them. From then on a
//! front end is a loop of [`Endpoint::poll`] over any [`Device`] and any [`Service`]:
//!
//! ```
//! use rpcrdma_core::endpoint::EndpointConfig;
//!
//! // The endpoint's memory needs: one figure, known at compile time, so firmware can size a
//! // static DMA buffer for it.
//! const CONFIG: EndpointConfig = EndpointConfig::DEFAULT;
//! static_assertions::const_assert_eq!(CONFIG.region_len(), 40 * 4096 + 32 * 4096 + 64 + 2 * 65536);
//! ```
//!
//! The region itself is described once by the front end — the one `unsafe` it writes, in which
//! it vouches for how the device addresses the memory ([`DmaRegion::from_slice`] has the whole
//! example, endpoint included) — or comes from a helper that does it, as the software NIC's
//! `DmaMemory::region_at` does for the examples in `examples/`.
//!
//! The const generics are capacities, checked against the configuration when the endpoint is
//! built: `N` Receive descriptors (≥ the buffers the configuration carves), `C` call slots
//! (≥ the credits; two per credit are used when `C` allows), `P` pages per page pool.
//!
//! The pool and the connection share one epoch: their wr_ids differ in their kind tag already
//! ([`crate::device::WrId`]), so one number per connection keeps a late completion of a torn
//! down connection from matching the next one.

use crate::device::{Completion, Device, PostError};
use crate::dma::{CoherentDma, DmaError, DmaRegion, DmaSync, CACHE_LINE};
use crate::pages::{PagePool, PagePoolError};
use crate::pool::{Counters, DrainReport, PoolConfig, PoolError, RecvPool};
use crate::responder::{
    BackchannelError, BackchannelFailure, Call, CallHandle, Connection, ConnectionDrain,
    Connections, PayloadPages, ReplyWriter, Resources, ResponderConfig, ResponderCounters,
    ResponderError, Service, StaleHandle, Verdict,
};
use crate::wire::{DecodeLimits, DEFAULT_INLINE_THRESHOLD};
use crate::xdr::XdrView;

/// Completions [`Endpoint::poll`] takes from the device per call.
pub const POLL_BATCH: usize = 16;

/// Everything an [`Endpoint`] needs to know, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EndpointConfig {
    /// Credits granted to the requester at most (also the number of send slots): ≥ 1.
    pub credits: u16,
    /// Bytes per Receive buffer: the inline size this side receives (1024..=65536).
    pub buffer_size: usize,
    /// Receives posted per doorbell when the pool is refilled: ≥ 1.
    pub batch: u16,
    /// Receive buffers carved: 0 means `credits + batch`.
    pub receive_buffers: u16,
    /// Bytes per send slot: the largest inline reply this side sends (1024..=65536).
    pub send_size: usize,
    /// What the requester receives inline (its RFC 8797 `recv_size`, or 1024 without
    /// private data).
    pub peer_inline: usize,
    /// RDMA Reads in flight at most (the initiator depth negotiated); 0: Read chunks are
    /// answered ERR_CHUNK.
    pub initiator_depth: u8,
    /// Send-queue work requests the device holds at most (its `max_send_wr`).
    pub sq_depth: u16,
    /// Page size of the Read-sink and payload page pools (a power of two ≥ 64).
    pub page_size: usize,
    /// Bytes of Read-sink pages (RDMA Read targets for Read chunks).
    pub sink_bytes: usize,
    /// Bytes of payload pages lent to services for reply payloads.
    pub payload_bytes: usize,
    /// Decoder limits (largest Read-chunk payload of one call).
    pub limits: DecodeLimits,
    /// The epoch of this connection's wr_ids (≤ 16383; differ per connection).
    pub epoch: u16,
    /// Signal every send-queue work request ([`ResponderConfig::signal_all`]).
    pub signal_all: bool,
}

const fn align(n: usize) -> usize {
    n.div_ceil(CACHE_LINE) * CACHE_LINE
}

impl EndpointConfig {
    /// 32 credits, 4 KiB Receive buffers and send slots, batches of 8, a requester receiving
    /// 1 KiB inline (no private data), 16 Reads in flight, a 512-entry send queue, 64 KiB each
    /// of sink and payload pages in 4 KiB pages, epoch 1.
    pub const DEFAULT: EndpointConfig = EndpointConfig {
        credits: 32,
        buffer_size: 4096,
        batch: 8,
        receive_buffers: 0,
        send_size: 4096,
        peer_inline: DEFAULT_INLINE_THRESHOLD,
        initiator_depth: 16,
        sq_depth: 512,
        page_size: 4096,
        sink_bytes: 64 * 1024,
        payload_bytes: 64 * 1024,
        limits: DecodeLimits::DEFAULT,
        epoch: 1,
        signal_all: false,
    };

    /// The receive pool's part of the configuration.
    pub const fn pool(&self) -> PoolConfig {
        PoolConfig {
            buffer_size: self.buffer_size,
            credits: self.credits,
            batch: self.batch,
            limits: self.limits,
            buffers: self.receive_buffers,
            epoch: self.epoch,
        }
    }

    /// The responder's part of the configuration.
    pub const fn responder(&self) -> ResponderConfig {
        ResponderConfig {
            credits: self.credits,
            send_size: self.send_size,
            initiator_depth: self.initiator_depth,
            sq_depth: self.sq_depth,
            epoch: self.epoch,
            signal_all: self.signal_all,
        }
    }

    /// Bytes of each part of the region, in carving order: Receive buffers, send slots, sink
    /// pages, payload pages (each rounded up to a cache line).
    pub const fn parts(&self) -> [usize; 4] {
        [
            align(self.pool().needed_region_len()),
            align(self.responder().send_region_len()),
            align(self.sink_bytes),
            align(self.payload_bytes),
        ]
    }

    /// Bytes of DMA memory [`Endpoint::new`] needs.
    pub const fn region_len(&self) -> usize {
        let p = self.parts();
        p[0] + p[1] + p[2] + p[3]
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why an endpoint could not be built: which part refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EndpointError {
    /// The region is smaller than [`EndpointConfig::region_len`].
    RegionTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        len: usize,
    },
    /// The region could not be carved.
    Region(DmaError),
    /// The receive pool refused its configuration.
    Pool(PoolError),
    /// A page pool refused its configuration.
    Pages(PagePoolError),
    /// The responder refused its configuration.
    Responder(ResponderError),
}

impl core::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EndpointError::RegionTooSmall { needed, len } => write!(
                f,
                "endpoint region of {len} bytes is smaller than the {needed} bytes the \
                 configuration needs (EndpointConfig::region_len)"
            ),
            EndpointError::Region(e) => write!(f, "endpoint region: {e}"),
            EndpointError::Pool(e) => write!(f, "receive pool: {e}"),
            EndpointError::Pages(e) => write!(f, "page pool: {e}"),
            EndpointError::Responder(e) => write!(f, "responder: {e}"),
        }
    }
}

impl core::error::Error for EndpointError {}

impl From<DmaError> for EndpointError {
    fn from(e: DmaError) -> Self {
        EndpointError::Region(e)
    }
}

impl From<PoolError> for EndpointError {
    fn from(e: PoolError) -> Self {
        EndpointError::Pool(e)
    }
}

impl From<PagePoolError> for EndpointError {
    fn from(e: PagePoolError) -> Self {
        EndpointError::Pages(e)
    }
}

impl From<ResponderError> for EndpointError {
    fn from(e: ResponderError) -> Self {
        EndpointError::Responder(e)
    }
}

/// Counters of an endpoint: its receive pool's and its responder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EndpointCounters {
    /// The receive pool.
    pub pool: Counters,
    /// The responder.
    pub responder: ResponderCounters,
}

/// What [`Endpoint::drain`] reclaimed and what is still held (must be nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EndpointDrain {
    /// Calls and send-queue work requests the responder reclaimed.
    pub connection: ConnectionDrain,
    /// Receives the pool reclaimed.
    pub receives: DrainReport,
    /// Receive descriptors, call slots and pages still taken after the drain: 0 unless the
    /// core has a bug.
    pub leaked: usize,
}

/// One connection's receive path, owned: receive pool, Read-sink pages, payload pages and the
/// responder, over one DMA region (see the module docs).
pub struct Endpoint<'a, const N: usize, const C: usize, const P: usize> {
    pool: RecvPool<'a, N>,
    sinks: PagePool<'a, P>,
    payloads: PagePool<'a, P>,
    conn: Connection<'a, C>,
}

impl<'a, const N: usize, const C: usize, const P: usize> Endpoint<'a, N, C, P> {
    /// Carves `region` as `config` says and builds every part.
    ///
    /// # Errors
    /// [`EndpointError`] naming the part that refused; never later.
    pub fn new(region: DmaRegion<'a>, config: &EndpointConfig) -> Result<Self, EndpointError> {
        let needed = config.region_len();
        if region.len() < needed {
            return Err(EndpointError::RegionTooSmall {
                needed,
                len: region.len(),
            });
        }
        let [recv_len, send_len, sink_len, payload_len] = config.parts();
        let mut rest = region;
        let recv = rest.take_front(recv_len)?;
        let send = rest.take_front(send_len)?;
        let sinks = rest.take_front(sink_len)?;
        let payloads = rest.take_front(payload_len)?;
        Ok(Endpoint {
            pool: RecvPool::new(recv, config.pool())?,
            sinks: PagePool::new(sinks, config.page_size)?,
            payloads: PagePool::new(payloads, config.page_size)?,
            conn: Connection::new(send, config.responder(), config.peer_inline)?,
        })
    }

    /// Posts Receives until the pool's watermark holds (one doorbell per chain). Call it once
    /// before the requester may send (then [`Endpoint::poll`] keeps the watermark). Returns
    /// how many were posted.
    ///
    /// # Errors
    /// The device's [`PostError`]; what it refused is back in the pool.
    pub fn refill<D: Device + ?Sized>(&mut self, device: &mut D) -> Result<usize, PostError> {
        self.pool.refill(device)
    }

    /// One turn on cache-coherent memory: polls up to [`POLL_BATCH`] completions from
    /// `device` and [processes](Endpoint::process) them. Returns how many it took.
    ///
    /// # Errors
    /// As [`Endpoint::process`].
    #[inline]
    pub fn poll<D, S>(&mut self, device: &mut D, service: &mut S) -> Result<usize, PostError>
    where
        D: Device + ?Sized,
        S: Service + ?Sized,
    {
        self.poll_with(device, &mut CoherentDma, service)
    }

    /// [`Endpoint::poll`] with a DMA sync hook for non-coherent memory, called once per
    /// successful Receive for exactly the bytes that arrived.
    ///
    /// # Errors
    /// As [`Endpoint::process`].
    #[inline]
    pub fn poll_with<D, S, Y>(
        &mut self,
        device: &mut D,
        sync: &mut Y,
        service: &mut S,
    ) -> Result<usize, PostError>
    where
        D: Device + ?Sized,
        S: Service + ?Sized,
        Y: DmaSync + ?Sized,
    {
        let mut wcs = [Completion::EMPTY; POLL_BATCH];
        let n = device.poll(&mut wcs);
        let polled = wcs.get(..n).unwrap_or_default();
        self.process(device, sync, service, polled)?;
        Ok(n)
    }

    /// Handles completions a front end polled itself (every one of this connection's
    /// Receives, Sends, RDMA Reads and RDMA Writes), then ends the batch: the pool is
    /// refilled, the credit grant written into every reply, and the batch's work requests
    /// posted as one chain.
    ///
    /// # Errors
    /// A [`PostError`] from the device: the connection is then closing (what was refused is
    /// treated as flushed); keep polling until [`Endpoint::is_idle`], then
    /// [`Endpoint::drain`].
    #[inline]
    pub fn process<D, S, Y>(
        &mut self,
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
        let mut res = Resources::own(&mut self.pool, &mut self.sinks, &mut self.payloads);
        self.conn
            .process(&mut res, device, sync, service, completions)
    }

    /// Answers a call the service left pending ([`Verdict::Pending`]); the reply goes out with
    /// the next [`Endpoint::poll`]. See [`Connection::complete_pending`].
    ///
    /// # Errors
    /// [`StaleHandle`] if the handle names no pending call of this endpoint.
    pub fn complete_pending(
        &mut self,
        handle: CallHandle,
        f: impl FnOnce(&Call<'_>, &mut ReplyWriter<'_>) -> Verdict,
    ) -> Result<bool, StaleHandle> {
        let mut res = Resources::own(&mut self.pool, &mut self.sinks, &mut self.payloads);
        self.conn.complete_pending(&mut res, handle, f)
    }

    /// The view of a call the service left pending (see [`Connection::pending_view`]).
    ///
    /// # Errors
    /// [`StaleHandle`] if the handle names no pending call of this endpoint.
    pub fn pending_view(&self, handle: CallHandle) -> Result<XdrView<'_>, StaleHandle> {
        self.conn.pending_view(&self.pool, &self.sinks, handle)
    }

    /// Sends a backward-direction RPC call (RFC 8167) with the next [`Endpoint::poll`]; see
    /// [`Connection::send_backchannel`]. `Ok(false)`: not now (backward credits or send
    /// resources in use), keep it and try again.
    ///
    /// # Errors
    /// [`BackchannelError`] as [`Connection::send_backchannel`].
    pub fn send_backchannel(
        &mut self,
        deadline: u64,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<bool, BackchannelError> {
        self.conn.send_backchannel(deadline, f)
    }

    /// Backward calls whose deadline is at or before `now` fail; see
    /// [`Connection::expire_backchannel`].
    pub fn expire_backchannel(&mut self, now: u64) -> usize {
        self.conn.expire_backchannel(now)
    }

    /// The next backward call that ended without a reply; see
    /// [`Connection::take_backchannel_failure`].
    pub fn take_backchannel_failure(&mut self) -> Option<(u32, BackchannelFailure)> {
        self.conn.take_backchannel_failure()
    }

    /// Caps the credit grant of the replies sent from now on (see
    /// [`Connection::set_grant_cap`]): the brake for a service that holds too much for this
    /// requester.
    pub fn set_grant_cap(&mut self, cap: u16) {
        self.conn.set_grant_cap(cap);
    }

    /// Stops admitting work (a disconnect): nothing is posted any more; work requests still
    /// in the device come back as flushes on later polls.
    pub fn close(&mut self) {
        let mut res = Resources::own(&mut self.pool, &mut self.sinks, &mut self.payloads);
        self.conn.close(&mut res);
    }

    /// Whether the endpoint is closing (a failed or flushed completion, or
    /// [`Endpoint::close`]).
    pub fn is_closing(&self) -> bool {
        self.conn.is_closing()
    }

    /// Whether nothing is in the device's hands: no Receive posted, no send-queue work
    /// request outstanding, no call in progress.
    pub fn is_idle(&self) -> bool {
        self.pool.posted() == 0 && self.conn.is_idle()
    }

    /// Teardown, once the device no longer touches the memory (queue pair destroyed, or in
    /// error with its completions consumed): every call, Receive and page comes back.
    pub fn drain(&mut self) -> EndpointDrain {
        let mut res = Resources::own(&mut self.pool, &mut self.sinks, &mut self.payloads);
        let connection = self.conn.drain(&mut res);
        let receives = self.pool.drain();
        EndpointDrain {
            connection,
            receives,
            leaked: self.held(),
        }
    }

    /// Receive descriptors held, call slots in progress and pages taken: what would leak if
    /// the endpoint were dropped now (0 when quiet).
    pub fn held(&self) -> usize {
        self.pool.held()
            + self.conn.calls_in_progress()
            + (self.sinks.page_count() - self.sinks.free_pages())
            + (self.payloads.page_count() - self.payloads.free_pages())
    }

    /// Counters of the pool and the responder.
    pub fn counters(&self) -> EndpointCounters {
        EndpointCounters {
            pool: self.pool.counters(),
            responder: self.conn.counters(),
        }
    }

    /// The receive pool.
    pub fn pool(&self) -> &RecvPool<'a, N> {
        &self.pool
    }

    /// The responder's connection.
    pub fn connection(&self) -> &Connection<'a, C> {
        &self.conn
    }

    /// The Read-sink pages.
    pub fn sinks(&self) -> &PagePool<'a, P> {
        &self.sinks
    }

    /// The payload pages.
    pub fn payloads(&self) -> &PagePool<'a, P> {
        &self.payloads
    }
}

impl<const N: usize, const C: usize, const P: usize> Connections for Endpoint<'_, N, C, P> {
    fn pending_view(&self, handle: CallHandle) -> Option<XdrView<'_>> {
        Endpoint::pending_view(self, handle).ok()
    }
    fn payload_pages(&mut self, epoch: u16) -> Option<&mut dyn PayloadPages> {
        (epoch == self.conn.epoch()).then_some(&mut self.payloads as &mut dyn PayloadPages)
    }
    fn send_backchannel(
        &mut self,
        epoch: u16,
        deadline: u64,
        call: &[u8],
    ) -> Result<bool, BackchannelError> {
        if epoch != self.conn.epoch() {
            return Err(BackchannelError::Closed);
        }
        self.conn.send_backchannel_call(deadline, call)
    }
}
