//! A simulated RDMA NIC in memory: the receive side of an RC queue pair, a Send queue, and RDMA
//! Read / Write into the requester's registered memory.
//!
//! It behaves like the hosted tests' software NIC (`tests/src/nic.rs`), without an allocator:
//! - posted Receive work requests are checked like a device checks them (lkey, address range,
//!   alignment) and queued in order; a refused one fails the post from that WR on;
//! - an arriving message is written into the oldest posted buffer **through its device address**
//!   (the NIC sees the DMA memory at an IOVA different from the CPU address), and completes FIFO
//!   with its `byte_len`; a message longer than the buffer completes with a local length error;
//! - it can flush every posted Receive, complete with a lying `byte_len`, and inject forged,
//!   stale and duplicate completions;
//! - Sends are captured for the requester to check; RDMA Read and Write reach only the segments
//!   of the requester's memory they name, bounds-checked.
//!
//! Every input that crosses into the device path goes through `core::hint::black_box`, so the
//! optimiser cannot specialise the core's decoder to the scripted bytes (the panic-freedom proof
//! relies on the decoder being compiled for arbitrary input).

use core::hint::black_box;
use core::ptr::NonNull;

use heapless::{Deque, Vec};
use rpcrdma_core::dma::CACHE_LINE;
use rpcrdma_core::pool::{Completion, CompletionStatus, RecvWr};
use rpcrdma_core::wire::Segment;

/// `IBV_WC_LOC_LEN_ERR`: a message longer than the posted Receive.
pub const WC_LOC_LEN_ERR: u32 = 1;
/// Largest Send the NIC captures (every reply and RDMA_ERROR here is far smaller).
pub const MAX_SEND: usize = 128;
/// Sends the NIC keeps until the requester looks at them.
pub const SEND_QUEUE: usize = 16;

/// What the device refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum NicError {
    /// A Receive WR outside the registered memory or with the wrong lkey (its index in the post).
    BadWr(usize),
    /// The receive queue is full.
    QueueFull(usize),
    /// A message arrived with no Receive posted (RC would answer RNR NAK).
    ReceiverNotReady,
    /// The completion queue overflowed.
    CqOverrun,
    /// A Send larger than [`MAX_SEND`], or the send queue is full.
    SendRefused,
    /// An RDMA Read or Write outside the requester's registered memory.
    RemoteAccess {
        /// The segment's handle.
        handle: u32,
    },
}

/// One region of the requester's memory, registered for remote access.
#[derive(Debug)]
pub struct RemoteRegion {
    /// Its R_key.
    pub handle: u32,
    /// Its address in the requester's address space.
    pub addr: u64,
    /// Whether RDMA Write may target it.
    pub writable: bool,
}

/// The requester's memory as the NIC reaches it: read-only regions backed by static data, and
/// one writable region (the requester's reply chunk buffer).
pub struct RequesterMemory<'m> {
    /// Read-only regions and their bytes.
    pub readable: &'m [(RemoteRegion, &'m [u8])],
    /// The writable region's description.
    pub writable: RemoteRegion,
    /// The writable region's bytes.
    pub writable_bytes: &'m mut [u8],
}

impl RequesterMemory<'_> {
    fn range(
        region: &RemoteRegion,
        len_of_region: usize,
        seg: &Segment,
        len: usize,
    ) -> Option<usize> {
        if seg.handle != region.handle || seg.offset < region.addr || len > seg.length as usize {
            return None;
        }
        let start = usize::try_from(seg.offset - region.addr).ok()?;
        (start.checked_add(len)? <= len_of_region).then_some(start)
    }
}

/// Receive WRs the NIC queues, at most.
pub const RECV_QUEUE: usize = 128;
/// Completions the NIC queues, at most.
pub const COMPLETION_QUEUE: usize = 160;

/// The simulated NIC over one DMA region.
pub struct SimNic<'m> {
    cpu: NonNull<u8>,
    iova: u64,
    len: usize,
    lkey: u32,
    rq: Deque<RecvWr, RECV_QUEUE>,
    cq: Deque<Completion, COMPLETION_QUEUE>,
    sends: Deque<Vec<u8, MAX_SEND>, SEND_QUEUE>,
    remote: RequesterMemory<'m>,
    last_success: Option<Completion>,
    /// Receive posts (one doorbell each).
    pub doorbells: u64,
    /// Receive WRs accepted.
    pub wrs_accepted: u64,
    /// Sends transmitted.
    pub sends_posted: u64,
    /// Bytes moved by RDMA Read.
    pub read_bytes: u64,
    /// Bytes moved by RDMA Write.
    pub write_bytes: u64,
}

impl<'m> SimNic<'m> {
    /// A NIC that sees the `len` bytes at CPU address `cpu` at device address `iova`, registered
    /// under `lkey`, connected to a requester with `remote` memory.
    ///
    /// # Safety
    /// `cpu .. cpu + len` must be valid for writes for the NIC's lifetime, and written by nothing
    /// else while a Receive is posted on it (the core's receive pool guarantees that for the
    /// buffers it posts).
    pub unsafe fn new(
        cpu: NonNull<u8>,
        iova: u64,
        len: usize,
        lkey: u32,
        remote: RequesterMemory<'m>,
    ) -> Self {
        SimNic {
            cpu,
            iova,
            len,
            lkey,
            rq: Deque::new(),
            cq: Deque::new(),
            sends: Deque::new(),
            remote,
            last_success: None,
            doorbells: 0,
            wrs_accepted: 0,
            sends_posted: 0,
            read_bytes: 0,
            write_bytes: 0,
        }
    }

    /// `ibv_post_recv` with a chained list: on the first bad WR, that one and the rest are refused.
    ///
    /// # Errors
    /// [`NicError::BadWr`] or [`NicError::QueueFull`] with the index of the first refused WR.
    pub fn post_recv(&mut self, wrs: &[RecvWr]) -> Result<(), NicError> {
        self.doorbells += 1;
        for (i, wr) in wrs.iter().enumerate() {
            let offset = wr.addr.wrapping_sub(self.iova);
            let in_range = wr.addr >= self.iova
                && offset
                    .checked_add(wr.length as u64)
                    .is_some_and(|end| end <= self.len as u64)
                && offset % CACHE_LINE as u64 == 0;
            if wr.lkey != self.lkey || !in_range {
                return Err(NicError::BadWr(i));
            }
            self.rq.push_back(*wr).map_err(|_| NicError::QueueFull(i))?;
            self.wrs_accepted += 1;
        }
        Ok(())
    }

    /// Receives posted and not yet consumed.
    pub fn posted(&self) -> usize {
        self.rq.len()
    }

    /// The posted Receives, oldest first.
    pub fn posted_wrs(&self) -> impl Iterator<Item = &RecvWr> {
        self.rq.iter()
    }

    /// Completions waiting to be polled.
    pub fn pending(&self) -> usize {
        self.cq.len()
    }

    /// A message arrives: written into the oldest posted buffer, completed with its length.
    /// Returns the wr_id it completed.
    ///
    /// # Errors
    /// [`NicError::ReceiverNotReady`] with nothing posted, [`NicError::CqOverrun`].
    pub fn deliver(&mut self, msg: &[u8]) -> Result<u64, NicError> {
        let msg = black_box(msg);
        let wr = self.rq.pop_front().ok_or(NicError::ReceiverNotReady)?;
        let completion = if msg.len() > wr.length as usize {
            Completion {
                wr_id: wr.wr_id,
                status: CompletionStatus::Error {
                    code: WC_LOC_LEN_ERR,
                },
                byte_len: 0,
            }
        } else {
            // post_recv checked `addr - iova + length <= len`, and msg.len() <= length.
            let offset = (wr.addr - self.iova) as usize;
            // SAFETY: `offset .. offset + msg.len()` lies inside the memory `new`'s caller vouched
            // for; the Receive is posted, so the pool holds no reference into this buffer.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    msg.as_ptr(),
                    self.cpu.as_ptr().add(offset),
                    msg.len(),
                );
            }
            Completion {
                wr_id: wr.wr_id,
                status: CompletionStatus::Success,
                byte_len: msg.len() as u32,
            }
        };
        if completion.status == CompletionStatus::Success {
            self.last_success = Some(completion);
        }
        self.complete(completion)?;
        Ok(wr.wr_id)
    }

    /// As [`SimNic::deliver`], but the completion claims `byte_len` bytes (a faulty device).
    ///
    /// # Errors
    /// As [`SimNic::deliver`].
    pub fn deliver_claiming(&mut self, msg: &[u8], byte_len: u32) -> Result<u64, NicError> {
        let wr_id = self.deliver(msg)?;
        if let Some(c) = self.cq.back_mut() {
            c.byte_len = black_box(byte_len);
        }
        Ok(wr_id)
    }

    /// Completes the last successful Receive a second time (a duplicate completion).
    ///
    /// # Errors
    /// [`NicError::CqOverrun`].
    pub fn duplicate_last(&mut self) -> Result<Option<u64>, NicError> {
        let Some(c) = self.last_success else {
            return Ok(None);
        };
        self.complete(c)?;
        Ok(Some(c.wr_id))
    }

    /// Queues an arbitrary completion (forged or stale ids).
    ///
    /// # Errors
    /// [`NicError::CqOverrun`].
    pub fn inject(&mut self, wr_id: u64, byte_len: u32) -> Result<(), NicError> {
        self.complete(Completion {
            wr_id: black_box(wr_id),
            status: CompletionStatus::Success,
            byte_len: black_box(byte_len),
        })
    }

    /// Queues a flush completion for `wr_id` (a second flush of a descriptor).
    ///
    /// # Errors
    /// [`NicError::CqOverrun`].
    pub fn inject_flush(&mut self, wr_id: u64) -> Result<(), NicError> {
        self.complete(Completion {
            wr_id: black_box(wr_id),
            status: CompletionStatus::Flushed,
            byte_len: 0,
        })
    }

    fn complete(&mut self, c: Completion) -> Result<(), NicError> {
        self.cq.push_back(c).map_err(|_| NicError::CqOverrun)
    }

    /// The queue pair goes to error: every posted Receive completes as flushed, in order.
    /// Returns how many.
    ///
    /// # Errors
    /// [`NicError::CqOverrun`].
    pub fn flush_all(&mut self) -> Result<usize, NicError> {
        let mut n = 0;
        while let Some(wr) = self.rq.pop_front() {
            self.complete(Completion {
                wr_id: wr.wr_id,
                status: CompletionStatus::Flushed,
                byte_len: 0,
            })?;
            n += 1;
        }
        Ok(n)
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

    /// Sends `bytes` to the requester (the Send completes at once).
    ///
    /// # Errors
    /// [`NicError::SendRefused`] when it is larger than [`MAX_SEND`] or the queue is full.
    pub fn post_send(&mut self, bytes: &[u8]) -> Result<(), NicError> {
        let msg = Vec::from_slice(bytes).map_err(|_| NicError::SendRefused)?;
        self.sends
            .push_back(msg)
            .map_err(|_| NicError::SendRefused)?;
        self.sends_posted += 1;
        Ok(())
    }

    /// The oldest Send the requester has not looked at yet.
    pub fn take_send(&mut self) -> Option<Vec<u8, MAX_SEND>> {
        self.sends.pop_front()
    }

    /// RDMA Read: fills `dst` from the start of the requester's segment `seg`.
    ///
    /// # Errors
    /// [`NicError::RemoteAccess`] if the segment does not name registered requester memory of
    /// at least `dst.len()` bytes.
    pub fn rdma_read(&mut self, seg: &Segment, dst: &mut [u8]) -> Result<(), NicError> {
        let refused = NicError::RemoteAccess { handle: seg.handle };
        let src = self
            .remote
            .readable
            .iter()
            .find(|(region, _)| region.handle == seg.handle)
            .and_then(|(region, bytes)| {
                let start = RequesterMemory::range(region, bytes.len(), seg, dst.len())?;
                bytes.get(start..start + dst.len())
            })
            .ok_or(refused)?;
        dst.copy_from_slice(src);
        self.read_bytes += dst.len() as u64;
        Ok(())
    }

    /// RDMA Write: `src` to the start of the requester's segment `seg`.
    ///
    /// # Errors
    /// [`NicError::RemoteAccess`] if the segment does not name writable requester memory of at
    /// least `src.len()` bytes.
    pub fn rdma_write(&mut self, seg: &Segment, src: &[u8]) -> Result<(), NicError> {
        let refused = NicError::RemoteAccess { handle: seg.handle };
        let remote = &mut self.remote;
        if !remote.writable.writable {
            return Err(refused);
        }
        let start = RequesterMemory::range(
            &remote.writable,
            remote.writable_bytes.len(),
            seg,
            src.len(),
        )
        .ok_or(refused)?;
        let dst = remote
            .writable_bytes
            .get_mut(start..start + src.len())
            .ok_or(refused)?;
        dst.copy_from_slice(src);
        self.write_bytes += src.len() as u64;
        Ok(())
    }

    /// The requester's writable memory (to check what RDMA Write put there).
    pub fn requester_writable(&self) -> &[u8] {
        self.remote.writable_bytes
    }
}
