//! A software RDMA NIC: one reliable-connection queue pair, implementing the core's
//! [`Device`] trait, for the tests (hosted, with `std`) and the firmware examples (`no_std`, no
//! allocator). It owns no protocol logic; it moves bytes the way an RC queue pair does:
//!
//! - **Receive queue**: posted one-SGE Receives, FIFO. A message from the requester
//!   ([`SoftNic::deliver`]) lands in the oldest one and completes with its length; with none
//!   posted the requester's Send meets **RNR**, which is counted ([`NicCounters::rnr`], in
//!   [`SoftNic::counters`]) and reported, since a Linux requester (RNR retry 0) would lose its
//!   connection. A message longer than the posted buffer completes with a local length error.
//! - **Send queue**: Sends go to the requester's inbox ([`SoftNic::take_sent`]); RDMA Writes
//!   copy local bytes into the requester's registered memory, RDMA Reads the other way. Every
//!   SGE and remote range is checked against what was registered; a bad one completes with a
//!   protection or remote-access error. Work requests execute at poll time, in order, unless
//!   held ([`SoftNic::hold`]), which lets a test disconnect with Reads or Writes outstanding.
//!   An unsignaled work request that succeeds completes silently and keeps its send-queue slot
//!   until a later completion is polled, as on real hardware: a core that posts more than the
//!   queue holds, counting silent work requests as gone too early, gets `ENOMEM`.
//! - **Errors**: the first failed work request moves the queue pair to error: every posted
//!   Receive and every queued send-queue work request completes as flushed, and later posts
//!   flush at once, as on real hardware. Faults can be injected ([`SoftNic::fail_next`],
//!   [`SoftNic::inject`], [`SoftNic::flush`]).
//!
//! Device addresses (IOVAs) are not CPU addresses: memory is registered with an IOVA of the
//! test's choice, so a core that confused the two would touch the wrong bytes.
#![no_std]

#[cfg(feature = "std")]
pub mod memory;

use core::ptr::NonNull;

use heapless::{Deque, Vec};
use rpcrdma_core::device::{
    Completion, CompletionStatus, Device, PostError, RecvWr, SendOp, SendWr, Sge,
};

/// `IBV_WC_LOC_LEN_ERR`.
pub const WC_LOC_LEN_ERR: u32 = 1;
/// `IBV_WC_LOC_PROT_ERR`.
pub const WC_LOC_PROT_ERR: u32 = 4;
/// `IBV_WC_REM_ACCESS_ERR`.
pub const WC_REM_ACCESS_ERR: u32 = 10;
/// `IBV_WC_RNR_RETRY_EXC_ERR`.
pub const WC_RNR_RETRY_EXC_ERR: u32 = 13;
/// `ENOMEM`: a post to a full queue.
pub const ENOMEM: i32 = 12;
/// `EINVAL`: a post with a bad SGE.
pub const EINVAL: i32 = 22;

/// Memory regions registered on each side, at most.
pub const REGIONS: usize = 16;

/// Why the requester side could not do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NicError {
    /// The requester's Send found no posted Receive (RNR).
    ReceiverNotReady,
    /// The completion queue is full.
    CqOverrun,
    /// The queue pair is in error.
    QueuePairError,
    /// A registration table is full.
    TooManyRegions,
}

impl core::fmt::Display for NicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            NicError::ReceiverNotReady => {
                "the requester's Send found no posted Receive (RNR): the responder broke its \
                 credit promise, or nothing was posted yet (refill before the peer sends)"
            }
            NicError::CqOverrun => {
                "the completion queue is full: poll more often or make CQ larger"
            }
            NicError::QueuePairError => "the queue pair is in error (flushed or failed): reconnect",
            NicError::TooManyRegions => "the registration table is full (REGIONS entries per side)",
        })
    }
}

impl core::error::Error for NicError {}

/// Remote access rights of requester memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Access {
    /// The responder may RDMA Read it (a Read chunk's source).
    Read,
    /// The responder may RDMA Write it (a write or reply chunk).
    Write,
    /// Both.
    ReadWrite,
}

#[derive(Debug, Clone, Copy)]
struct Region {
    key: u32,
    addr: u64,
    cpu: NonNull<u8>,
    len: usize,
    access: Access,
}

impl Region {
    /// CPU pointer for `len` bytes at device/remote address `addr`, if inside.
    // Pointer arithmetic inside a registered range, which is how a NIC reaches memory.
    #[allow(unsafe_code)]
    fn map(&self, addr: u64, len: usize) -> Option<*mut u8> {
        let off = addr.checked_sub(self.addr)?;
        let end = off.checked_add(len as u64)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: off < len of the registered range (checked above); pointer arithmetic stays
        // inside the allocation the registration vouched for.
        Some(unsafe { self.cpu.as_ptr().add(off as usize) })
    }
}

/// Which send-queue operation a fault targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op {
    /// Send.
    Send,
    /// RDMA Write.
    Write,
    /// RDMA Read.
    Read,
}

fn op_of(op: &SendOp) -> Op {
    match op {
        SendOp::Send => Op::Send,
        SendOp::Write { .. } => Op::Write,
        SendOp::Read { .. } => Op::Read,
    }
}

/// A message sent to the requester, with the number of Receives this side had posted when it
/// went out (what a credit grant in it may promise at most): those still on the receive queue
/// plus those consumed by a message whose completion the responder has not polled yet (it
/// cannot know of them; they are calls the requester already counts as outstanding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent<const MSG: usize> {
    /// The message.
    pub bytes: Vec<u8, MSG>,
    /// Receives posted at this side when the Send executed.
    pub posted_at_send: usize,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NicCounters {
    /// Receive posts (doorbells).
    pub recv_doorbells: u64,
    /// Send-queue posts (doorbells).
    pub send_doorbells: u64,
    /// Receives consumed by requester messages.
    pub delivered: u64,
    /// Requester Sends that met no posted Receive.
    pub rnr: u64,
    /// Sends delivered to the requester.
    pub sends: u64,
    /// Bytes RDMA Read.
    pub read_bytes: u64,
    /// Bytes RDMA Written.
    pub write_bytes: u64,
    /// RDMA Reads executed.
    pub reads: u64,
    /// RDMA Writes executed.
    pub writes: u64,
    /// Most RDMA Reads outstanding at once (posted and not executed).
    pub max_reads_outstanding: u64,
}

/// A queued completion: whether it is a Receive's that a message consumed, and how many silent
/// work requests its polling reaps.
#[derive(Debug, Clone, Copy)]
struct Cqe {
    completion: Completion,
    message: bool,
    reaps: usize,
}

/// The software NIC: `RQ` Receives, `SQ` send-queue work requests, `CQ` completions, and an
/// inbox of `OUTQ` messages of at most `MSG` bytes for the requester.
pub struct SoftNic<
    const RQ: usize = 512,
    const SQ: usize = 512,
    const CQ: usize = 1024,
    const MSG: usize = 4096,
    const OUTQ: usize = 64,
> {
    local: Vec<Region, REGIONS>,
    remote: Vec<Region, REGIONS>,
    rq: Deque<RecvWr, RQ>,
    /// Queued send-queue work requests, each with the queue pair it was posted on.
    sq: Deque<(SendWr, u32), SQ>,
    /// The queue pair number this NIC reports ([`SoftNic::set_qp`]).
    qp: u32,
    /// Completions, each flagged when it is a Receive's that a message consumed.
    cq: Deque<Cqe, CQ>,
    /// Unsignaled work requests that completed silently and still hold a send-queue slot.
    silent: usize,
    /// Of those, the ones no completion queued so far will reap.
    silent_unclaimed: usize,
    /// Receive completions of messages in `cq`, not polled yet.
    recv_in_cq: usize,
    inbox: Deque<Sent<MSG>, OUTQ>,
    held: bool,
    error: bool,
    fail: Option<(Op, u32)>,
    /// What happened.
    pub counters: NicCounters,
}

impl<const RQ: usize, const SQ: usize, const CQ: usize, const MSG: usize, const OUTQ: usize> Default
    for SoftNic<RQ, SQ, CQ, MSG, OUTQ>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const RQ: usize, const SQ: usize, const CQ: usize, const MSG: usize, const OUTQ: usize>
    SoftNic<RQ, SQ, CQ, MSG, OUTQ>
{
    /// A NIC with nothing registered.
    pub const fn new() -> Self {
        SoftNic {
            local: Vec::new(),
            remote: Vec::new(),
            rq: Deque::new(),
            sq: Deque::new(),
            qp: 0,
            cq: Deque::new(),
            silent: 0,
            silent_unclaimed: 0,
            recv_in_cq: 0,
            inbox: Deque::new(),
            held: false,
            error: false,
            fail: None,
            counters: NicCounters {
                recv_doorbells: 0,
                send_doorbells: 0,
                delivered: 0,
                rnr: 0,
                sends: 0,
                read_bytes: 0,
                write_bytes: 0,
                reads: 0,
                writes: 0,
                max_reads_outstanding: 0,
            },
        }
    }

    /// A new connection on the same device: every queue emptied, the error state and fault
    /// injection cleared, counters zeroed; registrations kept. Work requests still queued are
    /// dropped without completions, so call it only after the core has drained (or before it
    /// posted anything).
    pub fn reset(&mut self) {
        self.rq.clear();
        self.sq.clear();
        self.cq.clear();
        self.inbox.clear();
        self.silent = 0;
        self.silent_unclaimed = 0;
        self.recv_in_cq = 0;
        self.held = false;
        self.error = false;
        self.fail = None;
        self.counters = NicCounters::default();
    }

    /// Registers this side's memory: `len` bytes at CPU `cpu`, seen by the device at `iova`,
    /// under `lkey`.
    ///
    /// # Safety
    /// `cpu .. cpu + len` stays valid for reads and writes while the NIC lives, and the NIC
    /// writes it only through Receives and RDMA Reads the core posted.
    ///
    /// # Errors
    /// [`NicError::TooManyRegions`].
    // Unsafe to call: the NIC will read and write this memory behind the borrow checker.
    #[allow(unsafe_code)]
    pub unsafe fn register_local(
        &mut self,
        lkey: u32,
        iova: u64,
        cpu: NonNull<u8>,
        len: usize,
    ) -> Result<(), NicError> {
        self.local
            .push(Region {
                key: lkey,
                addr: iova,
                cpu,
                len,
                access: Access::ReadWrite,
            })
            .map_err(|_| NicError::TooManyRegions)
    }

    /// Registers the requester's memory for remote access: `len` bytes at CPU `cpu`, which
    /// the requester advertises at address `addr` under `rkey`.
    ///
    /// # Safety
    /// As [`SoftNic::register_local`]; the NIC writes it only through RDMA Writes, and the
    /// test reads it only while none is queued.
    ///
    /// # Errors
    /// [`NicError::TooManyRegions`].
    // Unsafe to call: the NIC will read and write this memory behind the borrow checker.
    #[allow(unsafe_code)]
    pub unsafe fn register_remote(
        &mut self,
        rkey: u32,
        addr: u64,
        cpu: NonNull<u8>,
        len: usize,
        access: Access,
    ) -> Result<(), NicError> {
        self.remote
            .push(Region {
                key: rkey,
                addr,
                cpu,
                len,
                access,
            })
            .map_err(|_| NicError::TooManyRegions)
    }

    fn local_ptr(&self, sge: &Sge) -> Option<*mut u8> {
        self.local
            .iter()
            .find(|r| r.key == sge.lkey)
            .and_then(|r| r.map(sge.addr, sge.length as usize))
    }

    fn remote_ptr(&self, rkey: u32, addr: u64, len: usize, write: bool) -> Option<*mut u8> {
        self.remote
            .iter()
            .find(|r| {
                r.key == rkey
                    && match r.access {
                        Access::ReadWrite => true,
                        Access::Read => !write,
                        Access::Write => write,
                    }
            })
            .and_then(|r| r.map(addr, len))
    }

    /// Receives posted and not consumed.
    pub fn posted(&self) -> usize {
        self.rq.len()
    }

    /// The posted Receives, oldest first.
    pub fn posted_wrs(&self) -> impl Iterator<Item = &RecvWr> {
        self.rq.iter()
    }

    /// Send-queue work requests queued and not executed.
    pub fn queued(&self) -> usize {
        self.sq.len()
    }

    /// Completions waiting to be polled.
    pub fn pending(&self) -> usize {
        self.cq.len()
    }

    /// Whether the queue pair is in error.
    pub fn in_error(&self) -> bool {
        self.error
    }

    /// Holds send-queue work requests (they wait for [`SoftNic::hold`]`(false)` or a flush)
    /// instead of executing at poll time.
    pub fn hold(&mut self, held: bool) {
        self.held = held;
    }

    /// The next `op` fails with device status `code` (then the queue pair is in error).
    pub fn fail_next(&mut self, op: Op, code: u32) {
        self.fail = Some((op, code));
    }

    /// Queues an arbitrary completion (forged, stale or duplicate ids).
    ///
    /// # Errors
    /// [`NicError::CqOverrun`].
    pub fn inject(&mut self, c: Completion) -> Result<(), NicError> {
        self.cq
            .push_back(Cqe {
                completion: c,
                message: false,
                reaps: 0,
            })
            .map_err(|_| NicError::CqOverrun)
    }

    /// Queues a send-queue completion; polling it reaps the silent work requests before it.
    fn push_completion(&mut self, completion: Completion) -> Result<(), Completion> {
        let reaps = self.silent_unclaimed;
        self.cq
            .push_back(Cqe {
                completion,
                message: false,
                reaps,
            })
            .map_err(|e| e.completion)?;
        self.silent_unclaimed = 0;
        Ok(())
    }

    /// Send-queue slots in use: queued work requests and silent ones not reaped yet.
    pub fn sq_occupied(&self) -> usize {
        self.sq.len() + self.silent
    }

    /// The queue pair goes to error (a disconnect): every posted Receive and queued
    /// send-queue work request completes as flushed, in order. Returns how many.
    pub fn flush(&mut self) -> usize {
        self.error = true;
        let mut n = 0;
        while let Some((wr, qp)) = self.sq.pop_front() {
            let _ = self.push_completion(flushed(wr.wr_id, qp));
            n += 1;
        }
        while let Some(wr) = self.rq.pop_front() {
            let _ = self.cq.push_back(Cqe {
                completion: flushed(wr.wr_id, self.qp),
                message: false,
                reaps: 0,
            });
            n += 1;
        }
        n
    }

    /// Posts send-queue work requests on queue pair `qp` (their completions name it): several
    /// connections on one NIC, as [`SoftNic::port`] does.
    ///
    /// # Errors
    /// As [`Device::post_send`].
    pub fn post_send_on(&mut self, qp: u32, wrs: &[SendWr]) -> Result<(), PostError> {
        self.counters.send_doorbells += 1;
        for (index, wr) in wrs.iter().enumerate() {
            if self.error {
                if self.push_completion(flushed(wr.wr_id, qp)).is_err() {
                    return Err(PostError {
                        index,
                        code: ENOMEM,
                    });
                }
                continue;
            }
            // Silent work requests still hold their slots.
            if self.sq_occupied() >= SQ || self.sq.push_back((*wr, qp)).is_err() {
                return Err(PostError {
                    index,
                    code: ENOMEM,
                });
            }
        }
        Ok(())
    }

    /// Sets the queue pair number this NIC reports in its completions (default 0).
    pub fn set_qp(&mut self, qp: u32) {
        self.qp = qp;
    }

    /// The queue pair number this NIC reports.
    pub fn qp(&self) -> u32 {
        self.qp
    }

    /// This NIC as the device of queue pair `qp` among several sharing its receive queue (an
    /// SRQ): Receives go to the one shared queue, send-queue work requests and their
    /// completions carry `qp`.
    pub fn port(&mut self, qp: u32) -> Port<'_, RQ, SQ, CQ, MSG, OUTQ> {
        Port { nic: self, qp }
    }

    /// A message from the requester: written into the oldest posted Receive.
    ///
    /// # Errors
    /// [`NicError::ReceiverNotReady`] with nothing posted (RNR, counted),
    /// [`NicError::QueuePairError`], [`NicError::CqOverrun`].
    pub fn deliver(&mut self, msg: &[u8]) -> Result<u64, NicError> {
        self.deliver_claiming(msg, None)
    }

    /// As [`SoftNic::deliver`], for a message that arrived on queue pair `qp` (its completion
    /// names it): the requester of one of several connections sharing the receive queue.
    ///
    /// # Errors
    /// As [`SoftNic::deliver`].
    pub fn deliver_on(&mut self, qp: u32, msg: &[u8]) -> Result<u64, NicError> {
        self.receive(qp, msg, None)
    }

    /// As [`SoftNic::deliver`], but the completion reports `byte_len` (a faulty device).
    ///
    /// # Errors
    /// As [`SoftNic::deliver`].
    pub fn deliver_claiming(&mut self, msg: &[u8], byte_len: Option<u32>) -> Result<u64, NicError> {
        self.receive(self.qp, msg, byte_len)
    }

    // A Receive is a DMA write into registered memory: a raw copy into a checked range.
    #[allow(unsafe_code)]
    fn receive(&mut self, qp: u32, msg: &[u8], byte_len: Option<u32>) -> Result<u64, NicError> {
        if self.error {
            return Err(NicError::QueuePairError);
        }
        let Some(wr) = self.rq.pop_front() else {
            self.counters.rnr += 1;
            return Err(NicError::ReceiverNotReady);
        };
        self.counters.delivered += 1;
        let sge = Sge {
            addr: wr.addr,
            length: msg.len() as u32,
            lkey: wr.lkey,
        };
        let completion = match self.local_ptr(&sge) {
            Some(dst) if msg.len() <= wr.length as usize => {
                // SAFETY: local_ptr checked `dst .. dst + msg.len()` lies in registered memory;
                // the Receive is posted, so the core holds no reference into it.
                unsafe { core::ptr::copy_nonoverlapping(msg.as_ptr(), dst, msg.len()) };
                Completion {
                    wr_id: wr.wr_id,
                    status: CompletionStatus::Success,
                    byte_len: byte_len.unwrap_or(msg.len() as u32),
                    qp,
                }
            }
            _ => {
                self.error = true;
                Completion {
                    wr_id: wr.wr_id,
                    status: CompletionStatus::Error {
                        code: WC_LOC_LEN_ERR,
                    },
                    byte_len: 0,
                    qp,
                }
            }
        };
        self.cq
            .push_back(Cqe {
                completion,
                message: true,
                reaps: 0,
            })
            .map_err(|_| NicError::CqOverrun)?;
        self.recv_in_cq += 1;
        if self.error {
            self.flush();
        }
        Ok(wr.wr_id)
    }

    /// The oldest message sent to the requester.
    pub fn take_sent(&mut self) -> Option<Sent<MSG>> {
        self.inbox.pop_front()
    }

    /// Messages waiting in the requester's inbox.
    pub fn sent_waiting(&self) -> usize {
        self.inbox.len()
    }

    /// Executes the queued send-queue work requests (unless held).
    pub fn run(&mut self) {
        if self.held {
            return;
        }
        let reads = self
            .sq
            .iter()
            .filter(|(w, _)| matches!(w.op, SendOp::Read { .. }))
            .count() as u64;
        self.counters.max_reads_outstanding = self.counters.max_reads_outstanding.max(reads);
        while let Some((wr, qp)) = self.sq.pop_front() {
            if self.error {
                let _ = self.push_completion(flushed(wr.wr_id, qp));
                continue;
            }
            let status = self.execute(&wr);
            let failed = status != CompletionStatus::Success;
            if !failed && !wr.signaled {
                // Completed silently; its slot is reaped with the next completion polled.
                self.silent += 1;
                self.silent_unclaimed += 1;
                continue;
            }
            let _ = self.push_completion(Completion {
                wr_id: wr.wr_id,
                status,
                byte_len: 0,
                qp,
            });
            if failed {
                self.flush();
            }
        }
    }

    // Sends, RDMA Writes and Reads are DMA: raw copies between checked registered ranges.
    #[allow(unsafe_code)]
    fn execute(&mut self, wr: &SendWr) -> CompletionStatus {
        if let Some((op, code)) = self.fail {
            if op == op_of(&wr.op) {
                self.fail = None;
                return CompletionStatus::Error { code };
            }
        }
        let Some(local) = self.local_ptr(&wr.local) else {
            return CompletionStatus::Error {
                code: WC_LOC_PROT_ERR,
            };
        };
        let len = wr.local.length as usize;
        match wr.op {
            SendOp::Send => {
                // SAFETY: local_ptr checked the SGE lies in registered memory; the core does
                // not write a send slot while its Send is posted.
                let bytes = unsafe { core::slice::from_raw_parts(local, len) };
                let Ok(msg) = Vec::from_slice(bytes) else {
                    return CompletionStatus::Error {
                        code: WC_LOC_LEN_ERR,
                    };
                };
                let sent = Sent {
                    bytes: msg,
                    posted_at_send: self.rq.len() + self.recv_in_cq,
                };
                if self.inbox.push_back(sent).is_err() {
                    return CompletionStatus::Error {
                        code: WC_RNR_RETRY_EXC_ERR,
                    };
                }
                self.counters.sends += 1;
            }
            SendOp::Write { remote, rkey } => {
                let Some(dst) = self.remote_ptr(rkey, remote, len, true) else {
                    return CompletionStatus::Error {
                        code: WC_REM_ACCESS_ERR,
                    };
                };
                // SAFETY: both ranges were checked against registrations; `copy` tolerates
                // overlap should a test register overlapping memory.
                unsafe { core::ptr::copy(local, dst, len) };
                self.counters.writes += 1;
                self.counters.write_bytes += len as u64;
            }
            SendOp::Read { remote, rkey } => {
                let Some(src) = self.remote_ptr(rkey, remote, len, false) else {
                    return CompletionStatus::Error {
                        code: WC_REM_ACCESS_ERR,
                    };
                };
                // SAFETY: as above; the core does not read a sink while its Read is posted.
                unsafe { core::ptr::copy(src, local, len) };
                self.counters.reads += 1;
                self.counters.read_bytes += len as u64;
            }
        }
        CompletionStatus::Success
    }
}

fn flushed(wr_id: u64, qp: u32) -> Completion {
    Completion {
        wr_id,
        qp,
        status: CompletionStatus::Flushed,
        byte_len: 0,
    }
}

impl<const RQ: usize, const SQ: usize, const CQ: usize, const MSG: usize, const OUTQ: usize> Device
    for SoftNic<RQ, SQ, CQ, MSG, OUTQ>
{
    fn post_recv(&mut self, wrs: &[RecvWr]) -> Result<(), PostError> {
        self.counters.recv_doorbells += 1;
        for (index, wr) in wrs.iter().enumerate() {
            if self.error {
                let flushed = Cqe {
                    completion: flushed(wr.wr_id, self.qp),
                    message: false,
                    reaps: 0,
                };
                if self.cq.push_back(flushed).is_err() {
                    return Err(PostError {
                        index,
                        code: ENOMEM,
                    });
                }
                continue;
            }
            let sge = Sge {
                addr: wr.addr,
                length: wr.length,
                lkey: wr.lkey,
            };
            if self.local_ptr(&sge).is_none() {
                return Err(PostError {
                    index,
                    code: EINVAL,
                });
            }
            if self.rq.push_back(*wr).is_err() {
                return Err(PostError {
                    index,
                    code: ENOMEM,
                });
            }
        }
        Ok(())
    }

    fn post_send(&mut self, wrs: &[SendWr]) -> Result<(), PostError> {
        self.post_send_on(self.qp, wrs)
    }

    fn poll(&mut self, out: &mut [Completion]) -> usize {
        self.run();
        let mut n = 0;
        for slot in out.iter_mut() {
            match self.cq.pop_front() {
                Some(e) => {
                    *slot = e.completion;
                    self.recv_in_cq -= e.message as usize;
                    self.silent -= e.reaps;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
}

/// One queue pair of a [`SoftNic`] shared by several ([`SoftNic::port`]): a [`Device`] whose
/// send-queue work requests carry its queue pair number.
pub struct Port<
    'n,
    const RQ: usize,
    const SQ: usize,
    const CQ: usize,
    const MSG: usize,
    const OUTQ: usize,
> {
    nic: &'n mut SoftNic<RQ, SQ, CQ, MSG, OUTQ>,
    qp: u32,
}

impl<const RQ: usize, const SQ: usize, const CQ: usize, const MSG: usize, const OUTQ: usize> Device
    for Port<'_, RQ, SQ, CQ, MSG, OUTQ>
{
    fn post_recv(&mut self, wrs: &[RecvWr]) -> Result<(), PostError> {
        self.nic.post_recv(wrs)
    }

    fn post_send(&mut self, wrs: &[SendWr]) -> Result<(), PostError> {
        self.nic.post_send_on(self.qp, wrs)
    }

    fn poll(&mut self, out: &mut [Completion]) -> usize {
        self.nic.poll(out)
    }
}
