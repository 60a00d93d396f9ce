//! Memory for driving the core over the shared software NIC (`rpcrdma-softnic`) in tests.
//!
//! [`DmaMemory`] is a page-aligned allocation the "device" addresses at an IOVA of the test's
//! choice (not the CPU address), so a core that confused the two would write or read the wrong
//! place. [`DmaMemory::nic`] builds a [`SoftNic`] with the memory registered.

use rpcrdma_core::dma::{DmaRegion, DmaSync};

pub use rpcrdma_softnic::memory::{IOVA_BASE, LKEY};
pub use rpcrdma_softnic::{Access, NicError, Op, WC_LOC_LEN_ERR};

/// The software NIC the tests use: 1024 Receives, 1024 send-queue work requests, 2048
/// completions, and an inbox of 64 messages of up to 4 KiB.
pub type SoftNic = rpcrdma_softnic::SoftNic<1024, 1024, 2048, 4096, 64>;

/// The software NIC's heap memory ([`rpcrdma_softnic::memory::DmaMemory`]), plus a NIC of
/// the tests' size with it registered.
#[derive(Debug)]
pub struct DmaMemory(rpcrdma_softnic::memory::DmaMemory);

impl DmaMemory {
    /// `len` zeroed bytes, page aligned.
    pub fn new(len: usize) -> Self {
        DmaMemory(rpcrdma_softnic::memory::DmaMemory::new(len))
    }

    /// A `'static` allocation (leaked), for rigs that keep the core's parts next to the NIC.
    pub fn leak(len: usize) -> &'static mut DmaMemory {
        Box::leak(Box::new(DmaMemory::new(len)))
    }

    /// The region for the core, at [`IOVA_BASE`] under [`LKEY`].
    pub fn region(&self) -> DmaRegion<'_> {
        self.region_at(IOVA_BASE, LKEY)
    }

    /// The memory as the core's region at `iova` under `lkey`, from a shared borrow: the tests
    /// keep a region next to the NIC and read the bytes the responder wrote, which the
    /// exclusive borrow of [`rpcrdma_softnic::memory::DmaMemory::region_at`] would rule out.
    /// The tests' promise: one region per memory at a time, and CPU reads only while no device
    /// write is queued.
    ///
    /// # Panics
    /// If `iova` is not cache-line aligned.
    pub fn region_at(&self, iova: u64, lkey: u32) -> DmaRegion<'_> {
        // SAFETY: valid for len bytes for the borrow; the tests build one region per memory
        // and the software NIC writes only where the core posted (the tests' promise above).
        #[allow(unsafe_code)]
        let region = unsafe { DmaRegion::new(self.cpu(), iova, self.len(), lkey) };
        region.expect("cache-line aligned IOVA")
    }

    /// A software NIC (boxed: its queues are large) with this memory registered at
    /// [`IOVA_BASE`] under [`LKEY`].
    pub fn nic(&self) -> Box<SoftNic> {
        let mut nic = Box::new(SoftNic::new());
        self.register(&mut nic, IOVA_BASE, LKEY);
        nic
    }
}

impl std::ops::Deref for DmaMemory {
    type Target = rpcrdma_softnic::memory::DmaMemory;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for DmaMemory {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
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
