//! The static DMA memory an example carves its Receive buffers from.
//!
//! On a SmartNIC core this would be a region the NIC can address (a linker section in SRAM the
//! DMA engine reaches, possibly non-cacheable); here it is a zero-initialised, cache-line-aligned
//! static in `.bss`. It is claimed exactly once: the claim hands out the raw address that both the
//! core's [`DmaRegion`](rpcrdma_core::dma::DmaRegion) (CPU side) and the software NIC (device
//! side) use, so no `&mut` to it ever exists alongside the device's writes.

// Static memory the NIC writes by pointer: `Sync` is asserted by hand.
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use rpcrdma_core::dma::{DmaRegion, CACHE_LINE};

/// `LEN` bytes of DMA memory, aligned to the cache line.
#[repr(C, align(64))]
pub struct DmaMemory<const LEN: usize> {
    bytes: UnsafeCell<[u8; LEN]>,
    claimed: AtomicBool,
}

static_assertions::const_assert_eq!(core::mem::align_of::<DmaMemory<1>>(), CACHE_LINE);

// SAFETY: the bytes are reached only through the pointer `claim` hands out once; after that the
// static itself is never read or written through a reference.
unsafe impl<const LEN: usize> Sync for DmaMemory<LEN> {}

impl<const LEN: usize> DmaMemory<LEN> {
    /// Zeroed memory (placed in `.bss`).
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        DmaMemory {
            bytes: UnsafeCell::new([0; LEN]),
            claimed: AtomicBool::new(false),
        }
    }

    /// The first time only (`None` afterwards): the memory as the core's [`DmaRegion`], seen
    /// by the device at `iova` under `lkey`, and its first byte's address for the NIC's
    /// registration.
    pub fn claim(&'static self, iova: u64, lkey: u32) -> Option<(DmaRegion<'static>, NonNull<u8>)> {
        if self.claimed.swap(true, Ordering::AcqRel) {
            return None;
        }
        let cpu = NonNull::new(self.bytes.get().cast::<u8>())?;
        // SAFETY: the static is valid for LEN bytes for the program's life and this is its only
        // claim, so nothing else references it; the software NIC, the only device, addresses it
        // at `iova` and writes it only through work requests the core posted.
        let region = unsafe { DmaRegion::new(cpu.as_ptr(), iova, LEN, lkey) }.ok()?;
        Some((region, cpu))
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        LEN
    }

    /// Whether the region is empty.
    pub const fn is_empty(&self) -> bool {
        LEN == 0
    }
}
