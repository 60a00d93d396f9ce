//! Memory for driving the core over the shared software NIC (`rpcrdma-softnic`) in tests.
//!
//! [`DmaMemory`] is a page-aligned allocation the "device" addresses at an IOVA of the test's
//! choice (not the CPU address), so a core that confused the two would write or read the wrong
//! place. [`DmaMemory::nic`] builds a [`SoftNic`] with the memory registered.

// DMA memory is a raw allocation the software NIC and the core both reach by pointer.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};

use core::ptr::NonNull;

use rpcrdma_core::dma::{DmaRegion, DmaSync};

pub use rpcrdma_softnic::{Access, NicError, Op, WC_LOC_LEN_ERR};

/// The software NIC the tests use: 1024 Receives, 1024 send-queue work requests, 2048
/// completions, and an inbox of 64 messages of up to 4 KiB.
pub type SoftNic = rpcrdma_softnic::SoftNic<1024, 1024, 2048, 4096, 64>;

/// IOVA where the model device sees [`DmaMemory`] (by default).
pub const IOVA_BASE: u64 = 0x0000_7e00_0000_0000;
/// The lkey the model registers memory under (by default).
pub const LKEY: u32 = 0x1234;

/// Aligned memory shared by the pool (CPU side) and the model NIC (device side).
pub struct DmaMemory {
    ptr: *mut u8,
    layout: Layout,
}

impl DmaMemory {
    /// `len` zeroed bytes, aligned to 4096 (page) bytes.
    pub fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), 4096).expect("layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation of {len} bytes failed");
        DmaMemory { ptr, layout }
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
        self.ptr
    }

    /// The region for a pool, at [`IOVA_BASE`] under [`LKEY`].
    pub fn region(&self) -> DmaRegion<'_> {
        self.region_at(IOVA_BASE, LKEY)
    }

    /// The region, seen by the device at `iova` under `lkey`.
    pub fn region_at(&self, iova: u64, lkey: u32) -> DmaRegion<'_> {
        // SAFETY: the allocation is valid for len bytes and lives as long as the borrow; the
        // software NIC writes only into buffers of work requests the core posted.
        unsafe { DmaRegion::new(self.ptr, iova, self.len(), lkey) }.expect("aligned region")
    }

    /// A software NIC (boxed: its queues are large) with this memory registered at
    /// [`IOVA_BASE`] under [`LKEY`].
    pub fn nic(&self) -> Box<SoftNic> {
        let mut nic = Box::new(SoftNic::new());
        self.register(&mut nic, IOVA_BASE, LKEY);
        nic
    }

    /// Registers this memory on `nic` at `iova` under `lkey`.
    pub fn register(&self, nic: &mut SoftNic, iova: u64, lkey: u32) {
        // SAFETY: the memory outlives the test's use of the NIC (the tests keep both alive
        // together) and is written by the NIC only through work requests the core posted.
        unsafe {
            nic.register_local(
                lkey,
                iova,
                NonNull::new(self.ptr).expect("non-null"),
                self.len(),
            )
        }
        .expect("room for the registration");
    }

    /// Registers this memory on `nic` as the requester's, at remote address `addr` under `rkey`.
    pub fn register_remote(&self, nic: &mut SoftNic, rkey: u32, addr: u64, access: Access) {
        // SAFETY: as `register`; the tests read it only while no RDMA Write is queued.
        unsafe {
            nic.register_remote(
                rkey,
                addr,
                NonNull::new(self.ptr).expect("non-null"),
                self.len(),
                access,
            )
        }
        .expect("room for the registration");
    }

    /// The bytes (for the test's side: requester memory, fixtures).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: valid for len bytes; the tests read it only while no device write is queued.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len()) }
    }

    /// The bytes, to fill (requester memory the responder will RDMA Read).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len()) }
    }
}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A [`DmaSync`] that records every call, to check that exactly `byte_len` bytes are synced.
#[derive(Default, Debug)]
pub struct RecordingSync {
    /// (device address, CPU address, length) of each call.
    pub calls: Vec<(u64, usize, usize)>,
}

impl DmaSync for RecordingSync {
    fn sync_for_cpu(&mut self, device_addr: u64, cpu: *const u8, len: usize) {
        self.calls.push((device_addr, cpu as usize, len));
    }
}
