//! DMA memory for hosted verbs: one aligned anonymous mapping (2 MiB huge pages when the system
//! has them, else normal pages), registered once for the life of the pool.

use std::ptr::NonNull;

use rdma_sys::ibv_access_flags;
use rpcrdma_core::dma::DmaRegion;

use crate::error::{verb_error, Result};
use crate::verbs::{Mr, Pd};

const HUGE_PAGE: usize = 2 << 20;

/// An anonymous mapping, unmapped on drop.
#[derive(Debug)]
pub struct HostMemory {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: plain memory, owned.
unsafe impl Send for HostMemory {}

impl HostMemory {
    /// Maps `len` bytes (rounded up to the page size), trying huge pages first.
    ///
    /// # Errors
    /// `mmap` failure.
    pub fn new(len: usize) -> Result<HostMemory> {
        let len = len.max(1);
        if len >= HUGE_PAGE {
            let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            if let Some(ptr) = map(huge_len, libc::MAP_HUGETLB) {
                return Ok(HostMemory {
                    ptr,
                    len: huge_len,
                    huge: true,
                });
            }
        }
        let len = len.div_ceil(4096) * 4096;
        let ptr = map(len, 0).ok_or_else(|| verb_error("mmap"))?;
        Ok(HostMemory {
            ptr,
            len,
            huge: false,
        })
    }

    /// CPU address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping uses huge pages.
    pub fn is_huge(&self) -> bool {
        self.huge
    }
}

fn map(len: usize, extra: i32) -> Option<NonNull<u8>> {
    // SAFETY: anonymous private mapping; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        // SAFETY: our mapping; every MR over it was deregistered first (Registered's field order).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Memory registered once. Field order is drop order: the MR is deregistered before the
/// memory is unmapped.
#[derive(Debug)]
pub struct Registered {
    mr: Mr,
    mem: HostMemory,
}

impl Registered {
    /// Maps `len` bytes and registers them with `LOCAL_WRITE` only — receive and send memory
    /// never carries remote rights.
    ///
    /// # Errors
    /// `mmap` / `ibv_reg_mr` failure.
    pub fn local_write(pd: &Pd, len: usize) -> Result<Registered> {
        let mem = HostMemory::new(len)?;
        // SAFETY: the mapping lives in `self.mem`, dropped after `self.mr`.
        let mr = unsafe {
            Mr::register(
                pd,
                mem.as_ptr(),
                mem.len(),
                ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0,
            )
        }?;
        Ok(Registered { mr, mem })
    }

    /// The region for a receive pool.
    ///
    /// # Safety
    /// The pool built on it must be dropped before `self` (declare it before this field), and
    /// the device writes only into Receives that pool posted: the caller posts only the pool's
    /// work requests on the queue this memory serves.
    ///
    /// # Errors
    /// [`crate::Error::Dma`] if the mapping were misaligned (mmap is page-aligned).
    pub unsafe fn region(&self) -> Result<DmaRegion<'static>> {
        // SAFETY: the mapping is valid for len bytes and outlives the pool (caller); user-space
        // verbs use virtual addresses as device addresses.
        Ok(unsafe {
            DmaRegion::new(
                self.mem.as_ptr(),
                self.mem.as_ptr() as u64,
                self.mem.len(),
                self.mr.lkey(),
            )
        }?)
    }

    /// CPU address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.as_ptr()
    }

    /// Local key.
    pub fn lkey(&self) -> u32 {
        self.mr.lkey()
    }

    /// Mapped length.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// Whether huge pages back it.
    pub fn is_huge(&self) -> bool {
        self.mem.is_huge()
    }
}

/// A fixed set of Send slots in one registered buffer: a slot per outstanding Send.
#[derive(Debug)]
pub struct SendSlots {
    free: Vec<u16>,
    slot_size: usize,
    mem: Registered,
}

impl SendSlots {
    /// `count` slots of `slot_size` bytes.
    ///
    /// # Errors
    /// Mapping / registration failure.
    pub fn new(pd: &Pd, count: usize, slot_size: usize) -> Result<SendSlots> {
        let mem = Registered::local_write(pd, count * slot_size)?;
        Ok(SendSlots {
            free: (0..count as u16).rev().collect(),
            slot_size,
            mem,
        })
    }

    /// Takes a free slot: its index and bytes.
    pub fn take(&mut self) -> Option<(u16, &mut [u8])> {
        let i = self.free.pop()?;
        let off = i as usize * self.slot_size;
        // SAFETY: the slot lies inside the mapping and is exclusively ours until `give_back`
        // (the device reads it only between post and completion, after we wrote it).
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(self.mem.as_ptr().add(off), self.slot_size) };
        Some((i, bytes))
    }

    /// The (address, lkey) of slot `i` for the SGE.
    pub fn sge(&self, i: u16) -> (u64, u32) {
        (
            self.mem.as_ptr() as u64 + i as u64 * self.slot_size as u64,
            self.mem.lkey(),
        )
    }

    /// Returns a slot after its Send completed (or failed to post).
    pub fn give_back(&mut self, i: u16) {
        self.free.push(i);
    }

    /// Free slots.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Slot size.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }
}
