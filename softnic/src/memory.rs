//! Heap memory for a [`SoftNic`] on a hosted machine (feature `std`): the DMA memory the core
//! carves and the requester memory its chunks name, with safe ways to describe it to both.
//!
//! [`DmaMemory`] is a page-aligned allocation the "device" addresses at an IOVA of the
//! caller's choice (not the CPU address), so a core that confused the two would write or read
//! the wrong place. It is the one place that vouches for the memory (`unsafe`), so examples
//! and tests never do.
#![allow(unsafe_code)] // describes raw heap memory to the core and to the NIC

extern crate std;

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::boxed::Box;

use core::ptr::NonNull;

use rpcrdma_core::dma::DmaRegion;

use crate::{Access, SoftNic};

/// IOVA where the model device sees [`DmaMemory`] (by default).
pub const IOVA_BASE: u64 = 0x0000_7e00_0000_0000;
/// The lkey the model registers memory under (by default).
pub const LKEY: u32 = 0x1234;

/// Aligned memory shared by the core (CPU side) and a [`SoftNic`] (device side).
pub struct DmaMemory {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl core::fmt::Debug for DmaMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DmaMemory")
            .field("ptr", &self.ptr)
            .field("len", &self.len())
            .finish()
    }
}

// SAFETY: the memory is a plain heap allocation owned by this value.
unsafe impl Send for DmaMemory {}

impl DmaMemory {
    /// `len` zeroed bytes, aligned to 4096 (page) bytes.
    ///
    /// # Panics
    /// If the allocation fails (as `Box::new` would).
    pub fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), 4096).expect("layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        DmaMemory { ptr, layout }
    }

    /// A `'static` allocation (leaked), for rigs that keep the core's parts next to the NIC.
    pub fn leak(len: usize) -> &'static mut DmaMemory {
        Box::leak(Box::new(DmaMemory::new(len)))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// CPU address of the first byte.
    pub fn cpu(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The region for the core, at [`IOVA_BASE`] under [`LKEY`].
    pub fn region(&mut self) -> DmaRegion<'_> {
        self.region_at(IOVA_BASE, LKEY)
    }

    /// The memory as the core's region, seen by the device at `iova` under `lkey`. The
    /// exclusive borrow is what makes this safe: while the region (and whatever the core built
    /// on it) lives, no second region and no CPU slice of this memory can exist; the NIC it
    /// was registered on is the only other party, and it writes only where the core posted.
    ///
    /// # Panics
    /// If `iova` is not cache-line aligned.
    pub fn region_at(&mut self, iova: u64, lkey: u32) -> DmaRegion<'_> {
        // SAFETY: the allocation is valid for len bytes and outlives the borrow, which is
        // exclusive; the software NIC writes only into buffers of work requests the core
        // posted.
        unsafe { DmaRegion::new(self.ptr.as_ptr(), iova, self.len(), lkey) }
            .expect("cache-line aligned IOVA")
    }

    /// Registers this memory on `nic` as local memory at `iova` under `lkey`.
    ///
    /// # Panics
    /// If the NIC's registration table is full.
    pub fn register<
        const R: usize,
        const S: usize,
        const Q: usize,
        const M: usize,
        const I: usize,
    >(
        &self,
        nic: &mut SoftNic<R, S, Q, M, I>,
        iova: u64,
        lkey: u32,
    ) {
        // SAFETY: the callers keep the memory alive as long as they use the NIC (tests and
        // examples own both together), and the NIC writes it only through work requests the
        // core posted.
        unsafe { nic.register_local(lkey, iova, self.ptr, self.len()) }
            .expect("room for the registration");
    }

    /// Registers this memory on `nic` as the requester's, at remote address `addr` under `rkey`.
    ///
    /// # Panics
    /// If the NIC's registration table is full.
    pub fn register_remote<
        const R: usize,
        const S: usize,
        const Q: usize,
        const M: usize,
        const I: usize,
    >(
        &self,
        nic: &mut SoftNic<R, S, Q, M, I>,
        rkey: u32,
        addr: u64,
        access: Access,
    ) {
        // SAFETY: as `register`; the requester side reads it only while no RDMA Write is
        // queued.
        unsafe { nic.register_remote(rkey, addr, self.ptr, self.len(), access) }
            .expect("room for the registration");
    }

    /// The bytes (the requester's side: its memory, fixtures).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: valid for len bytes; read only while no device write is queued.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }

    /// The bytes, to fill (requester memory the responder will RDMA Read).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, exclusively borrowed.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) }
    }
}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
