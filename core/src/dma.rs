//! The caller's DMA memory: the one module of the core allowed `unsafe`.
//!
//! A [`DmaRegion`] is memory both the CPU and the device (NIC) address: a CPU pointer, the
//! address the device uses for it (IOVA or physical), its length, and the local key it was
//! registered under. Hosted, it is one aligned mapping registered once with
//! `ibv_reg_mr(IBV_ACCESS_LOCAL_WRITE)`; on firmware, a static buffer.
//!
//! # Ownership rule
//!
//! While a Receive is posted on a buffer, the device may write it at any time, so the CPU must
//! not hold a reference into it. The receive pool ([`crate::pool`]) is the only user of
//! `DmaRegion::bytes` (crate-private) and calls it only for buffers whose descriptor is *not* Posted; the type
//! system then keeps every such borrow from outliving the `&self` of the pool, which `post`
//! (`&mut self`) cannot take while a view is alive.

// Raw memory the device writes: the core's one module with `unsafe` (the workspace denies it).
#![allow(unsafe_code)]

use core::marker::PhantomData;
use core::ptr::NonNull;

/// Cache-line size the core aligns Receive buffers to.
pub const CACHE_LINE: usize = 64;

/// Why a region was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DmaError {
    /// The CPU pointer is null.
    NullPointer,
    /// The CPU pointer or device address is not aligned to [`CACHE_LINE`].
    Misaligned {
        /// The CPU address.
        cpu: usize,
        /// The device address.
        device: u64,
    },
    /// The region wraps around the CPU or device address space.
    AddressOverflow,
    /// A split point beyond the region's end.
    SplitOutOfRange {
        /// Where the split was asked for.
        mid: usize,
        /// The region's length.
        len: usize,
    },
}

impl core::fmt::Display for DmaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            DmaError::NullPointer => write!(f, "DMA region pointer is null"),
            DmaError::Misaligned { cpu, device } => write!(
                f,
                "DMA region at CPU {cpu:#x} / device {device:#x} is not aligned to {CACHE_LINE} bytes: \
                 allocate it cache-line aligned (e.g. #[repr(align(64))] or a page-aligned mapping)"
            ),
            DmaError::AddressOverflow => write!(f, "DMA region wraps around the address space"),
            DmaError::SplitOutOfRange { mid, len } => write!(
                f,
                "cannot take {mid} bytes from a DMA region of {len} bytes: give the region at \
                 least what the configuration's region_len() says"
            ),
        }
    }
}

impl core::error::Error for DmaError {}

/// Memory shared with the device, borrowed for `'a`.
#[derive(Debug)]
pub struct DmaRegion<'a> {
    cpu: NonNull<u8>,
    device: u64,
    len: usize,
    lkey: u32,
    _memory: PhantomData<&'a mut [u8]>,
}

// SAFETY: the region is plain memory; moving the handle to another thread moves the exclusive
// right to it (as `&mut [u8]` would).
unsafe impl Send for DmaRegion<'_> {}

impl<'a> DmaRegion<'a> {
    /// Describes DMA memory at `cpu` (CPU address) / `device` (the address the NIC uses).
    ///
    /// # Safety
    /// The caller promises, for all of `'a`:
    /// - `cpu` is valid for reads and writes of `len` bytes and nothing else in the program
    ///   reads or writes those bytes except through this region;
    /// - `device .. device + len` is how the NIC addresses exactly that memory (registered under
    ///   `lkey` on hosted verbs), and the device writes into it only through Receives the pool
    ///   posted, between the post and the completion the pool consumes (or the drain at
    ///   teardown, after which the device no longer writes at all);
    /// - the memory outlives the region and every pool built on it (on hosted verbs: the memory
    ///   region is deregistered only after the pool is dropped, and freed only after that).
    ///
    /// # Errors
    /// [`DmaError`] for a null pointer, misalignment, or a range that wraps.
    pub unsafe fn new(cpu: *mut u8, device: u64, len: usize, lkey: u32) -> Result<Self, DmaError> {
        let cpu = NonNull::new(cpu).ok_or(DmaError::NullPointer)?;
        let addr = cpu.as_ptr() as usize;
        if addr % CACHE_LINE != 0 || device % CACHE_LINE as u64 != 0 {
            return Err(DmaError::Misaligned { cpu: addr, device });
        }
        if addr.checked_add(len).is_none() || device.checked_add(len as u64).is_none() {
            return Err(DmaError::AddressOverflow);
        }
        Ok(DmaRegion {
            cpu,
            device,
            len,
            lkey,
            _memory: PhantomData,
        })
    }

    /// Describes a CPU buffer the device addresses at `device`.
    ///
    /// ```
    /// use rpcrdma_core::dma::DmaRegion;
    /// use rpcrdma_core::endpoint::{Endpoint, EndpointConfig};
    ///
    /// const CONFIG: EndpointConfig = EndpointConfig::DEFAULT;
    /// const LEN: usize = CONFIG.region_len();
    ///
    /// #[repr(C, align(64))]
    /// struct Memory([u8; LEN]);
    /// let mut memory = Box::new(Memory([0; LEN]));
    /// // SAFETY: on this platform the device addresses the memory at its CPU address, under
    /// // local key 1, and writes it only through the work requests the endpoint posts.
    /// let device_addr = memory.0.as_ptr() as u64;
    /// let region = unsafe { DmaRegion::from_slice(&mut memory.0, device_addr, 1) }.unwrap();
    /// // The endpoint carves it (no `unsafe` from here on).
    /// let endpoint: Endpoint<'_, 64, 128, 128> = Endpoint::new(region, &CONFIG).unwrap();
    /// assert_eq!(endpoint.pool().buffer_count(), 40); // credits + batch
    /// ```
    ///
    /// # Safety
    /// As [`DmaRegion::new`]: `device` must be how the NIC addresses `memory`, and the device
    /// writes only into Receives the pool posted. The exclusive borrow keeps the rest of the
    /// program out for `'a`.
    ///
    /// # Errors
    /// As [`DmaRegion::new`].
    pub unsafe fn from_slice(
        memory: &'a mut [u8],
        device: u64,
        lkey: u32,
    ) -> Result<Self, DmaError> {
        // SAFETY: the slice is valid and exclusively ours for 'a; the caller vouches for the
        // device side.
        unsafe { Self::new(memory.as_mut_ptr(), device, memory.len(), lkey) }
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The local key the region is registered under.
    #[inline]
    pub fn lkey(&self) -> u32 {
        self.lkey
    }

    /// The device address of byte `offset` (no bounds check: the pool computes offsets it checked
    /// at construction).
    #[inline]
    pub fn device_addr(&self, offset: usize) -> u64 {
        self.device.wrapping_add(offset as u64)
    }

    /// The CPU address of the region's first byte.
    #[inline]
    pub fn cpu_addr(&self) -> *const u8 {
        self.cpu.as_ptr()
    }

    /// Splits the region in two at `mid`: `[0, mid)` and `[mid, len)`, both under the same
    /// local key. Safe: the two halves are disjoint parts of memory this region already owns
    /// exclusively, so each inherits the promise [`DmaRegion::new`]'s caller made for the whole.
    ///
    /// # Errors
    /// [`DmaError::SplitOutOfRange`] if `mid > len`; [`DmaError::Misaligned`] if `mid` is not
    /// a multiple of [`CACHE_LINE`] (every region starts on a cache line).
    pub fn split_at(self, mid: usize) -> Result<(DmaRegion<'a>, DmaRegion<'a>), DmaError> {
        if mid > self.len {
            return Err(DmaError::SplitOutOfRange { mid, len: self.len });
        }
        if mid % CACHE_LINE != 0 {
            return Err(DmaError::Misaligned {
                cpu: (self.cpu.as_ptr() as usize).wrapping_add(mid),
                device: self.device.wrapping_add(mid as u64),
            });
        }
        // `mid ≤ len` and `new` checked that `cpu + len` does not wrap, so this stays inside
        // the same allocation and is never null.
        let tail_cpu = self.cpu.as_ptr().wrapping_add(mid);
        let Some(tail_cpu) = NonNull::new(tail_cpu) else {
            return Err(DmaError::NullPointer);
        };
        let tail = DmaRegion {
            cpu: tail_cpu,
            device: self.device.wrapping_add(mid as u64),
            len: self.len - mid,
            lkey: self.lkey,
            _memory: PhantomData,
        };
        let head = DmaRegion { len: mid, ..self };
        Ok((head, tail))
    }

    /// Takes the first `len` bytes (rounded up to [`CACHE_LINE`]) off the front of the region:
    /// returns them and leaves the rest in `self`. The way to carve one region into the parts
    /// an [`crate::endpoint::Endpoint`] or a front end needs, with no `unsafe`.
    ///
    /// # Errors
    /// [`DmaError::SplitOutOfRange`] if fewer than `len` (rounded up) bytes are left.
    pub fn take_front(&mut self, len: usize) -> Result<DmaRegion<'a>, DmaError> {
        let mid = len.div_ceil(CACHE_LINE).saturating_mul(CACHE_LINE);
        if mid > self.len {
            return Err(DmaError::SplitOutOfRange { mid, len: self.len });
        }
        let empty = DmaRegion::empty_at(self.cpu, self.device, self.lkey);
        let whole = core::mem::replace(self, empty);
        let (head, tail) = whole.split_at(mid)?;
        *self = tail;
        Ok(head)
    }

    fn empty_at(cpu: NonNull<u8>, device: u64, lkey: u32) -> DmaRegion<'a> {
        DmaRegion {
            cpu,
            device,
            len: 0,
            lkey,
            _memory: PhantomData,
        }
    }

    /// `len` bytes at `offset`, for the CPU to read, or `None` if out of the region.
    ///
    /// Crate-internal contract: only for a buffer the device is not writing (its descriptor is
    /// not Posted). The receive pool is the only caller and checks the descriptor state first.
    #[inline]
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `offset..end` lies inside the region, which `new`'s caller promised is valid
        // for reads for 'a and written only by the device between a post and its completion.
        // The pool calls this only for descriptors that are not Posted, so no device write can
        // race this shared borrow, and the borrow is tied to `&self` of the pool, which posting
        // (`&mut self`) cannot take while it lives.
        Some(unsafe { core::slice::from_raw_parts(self.cpu.as_ptr().add(offset), len) })
    }
}

impl DmaRegion<'_> {
    /// `len` bytes at `offset`, for the CPU to write, or `None` if out of the region.
    ///
    /// Crate-internal contract: only for bytes no posted work request reads or writes (a page
    /// run or send slot whose owner is not in the device's hands). The exclusive borrow of the
    /// region keeps every other CPU borrow out while it lives.
    #[inline]
    pub(crate) fn bytes_mut(&mut self, offset: usize, len: usize) -> Option<&mut [u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `offset..end` lies inside the region, valid for writes for 'a (`new`'s
        // contract). `&mut self` excludes every other borrow made through this region, and the
        // crate calls this only for bytes no posted work request touches, so neither the CPU
        // nor the device aliases the slice while it lives.
        Some(unsafe { core::slice::from_raw_parts_mut(self.cpu.as_ptr().add(offset), len) })
    }
}

/// A region carved into `count` buffers of `stride` bytes, each holding at most `size` bytes.
///
/// The carving is checked once, when it is made (`count × stride` lies in the region and
/// `size ≤ stride`), so finding a buffer's bytes afterwards costs one compare of the index and
/// a clamp of the length: no overflow arithmetic and no second bounds check per message.
#[derive(Debug)]
pub(crate) struct Carving<'a> {
    region: DmaRegion<'a>,
    stride: usize,
    size: u32,
    count: usize,
}

impl<'a> Carving<'a> {
    /// Carves `region`; `None` if `count × stride` overflows or exceeds the region, or
    /// `size > stride`.
    pub(crate) fn new(
        region: DmaRegion<'a>,
        stride: usize,
        size: u32,
        count: usize,
    ) -> Option<Self> {
        let needed = count.checked_mul(stride)?;
        if needed > region.len || size as usize > stride {
            return None;
        }
        Some(Carving {
            region,
            stride,
            size,
            count,
        })
    }

    /// Bytes each buffer holds.
    #[inline(always)]
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// The local key of the region.
    #[inline(always)]
    pub(crate) fn lkey(&self) -> u32 {
        self.region.lkey
    }

    /// Device address of buffer `index` (no check: callers pass indices below `count`).
    #[inline(always)]
    pub(crate) fn device_addr(&self, index: usize) -> u64 {
        self.region
            .device
            .wrapping_add(index.wrapping_mul(self.stride) as u64)
    }

    /// CPU address of buffer `index` (no check, never dereferenced here).
    #[inline(always)]
    pub(crate) fn cpu_addr(&self, index: usize) -> *const u8 {
        self.region
            .cpu
            .as_ptr()
            .wrapping_add(index.wrapping_mul(self.stride))
    }

    /// All `size` bytes of buffer `index`, for the CPU to read; empty if `index ≥ count`.
    ///
    /// Crate-internal contract: as [`Carving::prefix`].
    #[inline(always)]
    pub(crate) fn buffer(&self, index: usize) -> &[u8] {
        if index >= self.count {
            return &[];
        }
        // SAFETY: as in `prefix`, with len = size.
        unsafe {
            core::slice::from_raw_parts(
                self.region.cpu.as_ptr().add(index * self.stride),
                self.size as usize,
            )
        }
    }

    /// The first `min(len, size)` bytes of buffer `index`, for the CPU to read; empty if
    /// `index ≥ count`.
    ///
    /// Crate-internal contract, as [`DmaRegion::bytes`]: only for a buffer the device is not
    /// writing (its descriptor is not Posted), borrowed no longer than the pool's `&self`.
    #[inline(always)]
    pub(crate) fn prefix(&self, index: usize, len: u32) -> &[u8] {
        if index >= self.count {
            return &[];
        }
        let len = len.min(self.size) as usize;
        // SAFETY: index < count and len ≤ size ≤ stride, so `index × stride + len ≤ count ×
        // stride ≤ region.len` (checked in `new`, which also rules out overflow): the bytes lie
        // in the region, valid for reads for 'a (`DmaRegion::new`'s contract). The pool calls
        // this only for descriptors that are not Posted, so no device write races the shared
        // borrow, which is tied to the pool's `&self` and so cannot outlive a repost.
        unsafe {
            core::slice::from_raw_parts(self.region.cpu.as_ptr().add(index * self.stride), len)
        }
    }
}

/// Makes received bytes visible to the CPU: called once per successful Receive completion for
/// exactly the bytes that arrived, before they are decoded.
///
/// On cache-coherent platforms (x86, hosted verbs on user memory, most DPU Arm cores with
/// coherent PCIe) this is nothing — use [`CoherentDma`]. On non-coherent cores, invalidate the
/// data cache for `device_addr .. device_addr + len` (or the matching CPU range).
pub trait DmaSync {
    /// Syncs `len` bytes at `device_addr` (CPU address `cpu`) for the CPU.
    fn sync_for_cpu(&mut self, device_addr: u64, cpu: *const u8, len: usize);
}

/// [`DmaSync`] for cache-coherent DMA: does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct CoherentDma;

impl DmaSync for CoherentDma {
    #[inline(always)]
    fn sync_for_cpu(&mut self, _device_addr: u64, _cpu: *const u8, _len: usize) {}
}
