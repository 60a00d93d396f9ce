//! What a connection is set up with, and why a setup is refused.

use crate::device::MAX_EPOCH;
use crate::dma::CACHE_LINE;
use crate::wire::DEFAULT_INLINE_THRESHOLD;

/// Send-queue work requests one batch can carry.
pub const CHAIN: usize = 128;
/// Smallest send slot: the RFC 8166 default inline size.
pub const MIN_SEND_SIZE: usize = DEFAULT_INLINE_THRESHOLD;
/// Largest send slot.
pub const MAX_SEND_SIZE: usize = 65536;

/// Connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResponderConfig {
    /// Most credits granted to this requester; also the number of send slots.
    pub credits: u16,
    /// Bytes per send slot: the largest inline reply this side sends (1024..=65536).
    pub send_size: usize,
    /// RDMA Reads in flight at most (the initiator depth rdma_cm negotiated: the requester's
    /// responder resources). 0: the requester accepts no RDMA Read from this side, so a call
    /// with Read chunks is answered ERR_CHUNK instead of being read.
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

    /// Bytes of registered memory the send slots need ([`Connection::new`](super::Connection::new)'s region): one slot
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
    /// `sq_depth` is 0, or the epoch does not fit 14 bits.
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
                "the send-queue depth must be at least 1 and the epoch at most {MAX_EPOCH}"
            ),
        }
    }
}

impl core::error::Error for ResponderError {}
