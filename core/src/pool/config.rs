//! How a pool is set up: buffer size, credits, refill batch, buffers carved, epoch.

use crate::dma::CACHE_LINE;
use crate::wire::DecodeLimits;

/// Smallest Receive buffer: the RFC 8166 default inline threshold.
pub const MIN_BUFFER_SIZE: usize = 1024;
/// Largest Receive buffer.
pub const MAX_BUFFER_SIZE: usize = 65536;

/// Receive work requests handed to the device per chained post in [`RecvPool::refill`](super::RecvPool::refill).
pub const REFILL_CHAIN: usize = 32;

/// Pool configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PoolConfig {
    /// Bytes per Receive buffer (the inline threshold this side receives): 1024 ..= 65536.
    pub buffer_size: usize,
    /// Credits granted to the peer: ≥ 1.
    pub credits: u16,
    /// Receives posted per refill (per doorbell): ≥ 1.
    pub batch: u16,
    /// Decoder limits.
    pub limits: DecodeLimits,
    /// Receive buffers carved from the region: 0 means `credits + batch` (memory follows the
    /// credits); otherwise at least `credits + batch` and at most `N`.
    pub buffers: u16,
    /// The epoch in this pool's wr_ids (see [`crate::device`]): differs per pool, ≤ 16383.
    pub epoch: u16,
}

impl PoolConfig {
    /// 4 KiB buffers, 32 credits, batches of 8, default limits, `credits + batch` buffers,
    /// epoch 0 (needs `N ≥ 40`).
    pub const DEFAULT: PoolConfig = PoolConfig {
        buffer_size: 4096,
        credits: 32,
        batch: 8,
        limits: DecodeLimits::DEFAULT,
        buffers: 0,
        epoch: 0,
    };

    /// Receive buffers this configuration carves: `buffers`, or `credits + batch` if 0.
    pub const fn buffer_count(&self) -> usize {
        if self.buffers == 0 {
            self.credits as usize + self.batch as usize
        } else {
            self.buffers as usize
        }
    }

    /// The region size [`RecvPool::new`](super::RecvPool::new) needs for `n` buffers of `buffer_size` bytes.
    pub const fn region_len(n: usize, buffer_size: usize) -> usize {
        n * stride(buffer_size)
    }

    /// The region size this configuration needs.
    pub const fn needed_region_len(&self) -> usize {
        Self::region_len(self.buffer_count(), self.buffer_size)
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

pub(super) const fn stride(buffer_size: usize) -> usize {
    buffer_size.div_ceil(CACHE_LINE) * CACHE_LINE
}
