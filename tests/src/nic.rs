//! A software NIC model that behaves like the receive side of an RC queue pair, for driving the
//! core's receive pool without hardware.
//!
//! - [`DmaMemory`] is a cache-line-aligned allocation the "device" addresses at a distinct IOVA
//!   (not the CPU address), so a pool that confused the two would write or read the wrong place.
//! - [`SoftNic`] takes posted Receive WRs in order (checking lkey, address and length like a
//!   device would), writes each arriving message into the buffer of the oldest posted WR through
//!   the device address, and completes FIFO with `byte_len`. A message longer than the posted
//!   buffer completes with a local length error, as on real RC hardware. It can flush every
//!   posted WR, and inject forged, stale and duplicate completions and wrong byte lengths.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::VecDeque;

use rpcrdma_core::dma::{DmaRegion, DmaSync, CACHE_LINE};
use rpcrdma_core::pool::{Completion, CompletionStatus, RecvWr};

/// IOVA where the model device sees [`DmaMemory`].
pub const IOVA_BASE: u64 = 0x0000_7e00_0000_0000;
/// The lkey the model registers memory under.
pub const LKEY: u32 = 0x1234;
/// `IBV_WC_LOC_LEN_ERR`: what a device reports when a message is longer than the Receive.
pub const WC_LOC_LEN_ERR: u32 = 1;

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

    /// The region for a pool.
    pub fn region(&self) -> DmaRegion<'_> {
        // SAFETY: the allocation is valid for len bytes and lives as long as the borrow; the
        // model NIC writes only into buffers of WRs the pool posted, through `SoftNic`, which
        // the tests drive only between post and completion.
        unsafe { DmaRegion::new(self.ptr, IOVA_BASE, self.len(), LKEY) }.expect("aligned region")
    }

    /// A NIC model for this memory.
    pub fn nic(&self) -> SoftNic {
        SoftNic {
            cpu: self.ptr,
            len: self.len(),
            // Preallocated, so the model itself does not allocate per message.
            rq: VecDeque::with_capacity(4096),
            cq: VecDeque::with_capacity(4096),
            doorbells: 0,
        }
    }
}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Why the model refused a post or a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicError {
    /// A WR's lkey, address or length is outside the registered memory (index of the bad WR).
    BadWr(usize),
    /// A message arrived with no Receive posted (RC would answer RNR NAK).
    ReceiverNotReady,
}

/// The model device.
pub struct SoftNic {
    cpu: *mut u8,
    len: usize,
    rq: VecDeque<RecvWr>,
    cq: VecDeque<Completion>,
    /// Post calls (one doorbell each).
    pub doorbells: u64,
}

impl SoftNic {
    /// `ibv_post_recv` with a chained list: all or, on the first bad WR, none after it.
    pub fn post_recv(&mut self, wrs: &[RecvWr]) -> Result<(), NicError> {
        self.doorbells += 1;
        for (i, wr) in wrs.iter().enumerate() {
            let in_range = wr.addr >= IOVA_BASE
                && (wr.addr - IOVA_BASE) + wr.length as u64 <= self.len as u64
                && (wr.addr - IOVA_BASE) % CACHE_LINE as u64 == 0;
            if wr.lkey != LKEY || !in_range {
                return Err(NicError::BadWr(i));
            }
            self.rq.push_back(*wr);
        }
        Ok(())
    }

    /// Receives posted and not yet consumed.
    pub fn posted(&self) -> usize {
        self.rq.len()
    }

    /// Completions waiting to be polled.
    pub fn pending(&self) -> usize {
        self.cq.len()
    }

    /// A message arrives: written into the oldest posted buffer, completed with its length.
    pub fn deliver(&mut self, msg: &[u8]) -> Result<u64, NicError> {
        let wr = self.rq.pop_front().ok_or(NicError::ReceiverNotReady)?;
        if msg.len() > wr.length as usize {
            self.cq.push_back(Completion {
                wr_id: wr.wr_id,
                status: CompletionStatus::Error {
                    code: WC_LOC_LEN_ERR,
                },
                byte_len: 0,
            });
            return Ok(wr.wr_id);
        }
        let offset = (wr.addr - IOVA_BASE) as usize;
        // SAFETY: post_recv checked the buffer lies inside the memory; the pool does not
        // reference a Posted buffer, so this device write races nothing.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.cpu.add(offset), msg.len()) };
        self.cq.push_back(Completion {
            wr_id: wr.wr_id,
            status: CompletionStatus::Success,
            byte_len: msg.len() as u32,
        });
        Ok(wr.wr_id)
    }

    /// As [`SoftNic::deliver`] but the completion reports `byte_len` (a lying device).
    pub fn deliver_claiming(&mut self, msg: &[u8], byte_len: u32) -> Result<u64, NicError> {
        let wr_id = self.deliver(msg)?;
        if let Some(c) = self.cq.back_mut() {
            c.byte_len = byte_len;
        }
        Ok(wr_id)
    }

    /// The queue pair goes to error: every posted Receive completes as flushed, in order.
    pub fn flush_all(&mut self) -> usize {
        let n = self.rq.len();
        while let Some(wr) = self.rq.pop_front() {
            self.cq.push_back(Completion {
                wr_id: wr.wr_id,
                status: CompletionStatus::Flushed,
                byte_len: 0,
            });
        }
        n
    }

    /// Queues an arbitrary completion (forged, stale, duplicate…).
    pub fn inject(&mut self, c: Completion) {
        self.cq.push_back(c);
    }

    /// `ibv_poll_cq`: up to `out.len()` completions, FIFO.
    pub fn poll(&mut self, out: &mut [Completion]) -> usize {
        let mut n = 0;
        for slot in out.iter_mut() {
            match self.cq.pop_front() {
                Some(c) => {
                    *slot = c;
                    n += 1;
                }
                None => break,
            }
        }
        n
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
