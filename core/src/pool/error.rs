//! Why a pool was refused, why a completion was refused, and a stale token.

use super::{MAX_BUFFER_SIZE, MIN_BUFFER_SIZE};
use crate::device::MAX_EPOCH;

/// Why a pool could not be built. Raised only at construction, never later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PoolError {
    /// `buffer_size` outside 1024 ..= 65536.
    BufferSize {
        /// The size asked for.
        size: usize,
    },
    /// The epoch does not fit 14 bits.
    Epoch {
        /// The epoch asked for.
        epoch: u16,
    },
    /// `credits` is 0.
    ZeroCredits,
    /// `batch` is 0.
    ZeroBatch,
    /// Fewer buffers than `credits + batch` (the grant could not stay posted), or more than
    /// the capacity `N`.
    TooFewDescriptors {
        /// Buffers available: the configured count, or `N` if that is the limit.
        n: usize,
        /// Buffers needed.
        needed: usize,
    },
    /// The region is smaller than `N × stride`.
    RegionTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes in the region.
        len: usize,
    },
}

impl core::fmt::Display for PoolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PoolError::BufferSize { size } => write!(
                f,
                "Receive buffer size {size} is outside {MIN_BUFFER_SIZE}..={MAX_BUFFER_SIZE} bytes"
            ),
            PoolError::Epoch { epoch } => {
                write!(
                    f,
                    "pool epoch {epoch} does not fit 14 bits (max {MAX_EPOCH})"
                )
            }
            PoolError::ZeroCredits => write!(f, "credits must be at least 1"),
            PoolError::ZeroBatch => write!(f, "batch must be at least 1"),
            PoolError::TooFewDescriptors { n, needed } => write!(
                f,
                "{n} Receive descriptors cannot hold the {needed} needed (credits + batch, within \
                 the pool capacity N): raise N or buffers, or lower credits/batch"
            ),
            PoolError::RegionTooSmall { needed, len } => write!(
                f,
                "DMA region of {len} bytes is smaller than the {needed} bytes N buffers need \
                 (PoolConfig::region_len)"
            ),
        }
    }
}

impl core::error::Error for PoolError {}

/// A completion the pool refused: counted, never trusted, no descriptor touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CompletionError {
    /// Index out of range or reserved bits set: an id this pool never handed out.
    UnknownWrId {
        /// The id.
        wr_id: u64,
    },
    /// The descriptor has been reposted (or drained) since: a completion for an earlier post.
    StaleWrId {
        /// The id.
        wr_id: u64,
    },
    /// The descriptor is not Posted: a second completion (or second flush) for the same post.
    DuplicateCompletion {
        /// The id.
        wr_id: u64,
    },
    /// A device error completion: the descriptor went back to Free. The connection it arrived
    /// on is unusable: tear that connection down (a shared pool stays open for the others).
    DeviceError {
        /// The id.
        wr_id: u64,
        /// Device status code.
        code: u32,
    },
}

impl core::fmt::Display for CompletionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            CompletionError::UnknownWrId { wr_id } => {
                write!(
                    f,
                    "completion with wr_id {wr_id:#x} that this pool never posted (ignored)"
                )
            }
            CompletionError::StaleWrId { wr_id } => {
                write!(
                    f,
                    "completion with stale wr_id {wr_id:#x} from an earlier post (ignored)"
                )
            }
            CompletionError::DuplicateCompletion { wr_id } => {
                write!(f, "second completion for wr_id {wr_id:#x} (ignored)")
            }
            CompletionError::DeviceError { wr_id, code } => write!(
                f,
                "Receive wr_id {wr_id:#x} completed with device status {code}: the connection \
                 is in error, tear it down"
            ),
        }
    }
}

impl core::error::Error for CompletionError {}

/// A token or view request that does not match a Held descriptor of this pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StaleToken;

impl core::fmt::Display for StaleToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Received token is not held by this pool (drained, or from another pool)"
        )
    }
}

impl core::error::Error for StaleToken {}
