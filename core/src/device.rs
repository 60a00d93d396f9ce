//! The small device interface the core drives (smoltcp's `phy::Device` idea): the core makes
//! every protocol decision; a device only posts work requests and reports completions.
//!
//! Two real implementations exist: hosted verbs (`rpcrdma-hosted`'s `VerbsDevice`, a queue pair
//! plus its receive queue or SRQ) and the software NIC (`rpcrdma-softnic`) that the firmware
//! examples, the tests and the fuzz targets share. Besides them, hosted's `PerReceiveDevice`
//! wraps a device to register each Receive buffer as it is posted (the comparison mode of the
//! benchmarks), and the core benchmark and the firmware size probe have stand-in devices of
//! their own. A device owns no protocol logic.
//!
//! # One wr_id space
//!
//! Every work request the core hands out carries a [`WrId`]:
//!
//! ```text
//!  63                 32 31          18 17  16 15           0
//! +---------------------+--------------+------+--------------+
//! |     generation      |    epoch     | kind |    index     |
//! +---------------------+--------------+------+--------------+
//! ```
//!
//! `kind` says which table the index points into (Receive descriptor, or a call slot for Send,
//! RDMA Read and RDMA Write); `epoch` differs per pool and per connection (the caller picks it,
//! e.g. a counter of accepted connections), so a completion that arrives late from a torn-down
//! connection can never match a live one; `generation` changes every time the descriptor or
//! call slot is reused, so stale and duplicate completions are refused. Ids are checked with one
//! compare of the 16-bit tag (`kind | epoch << 2`) plus the generation.

/// Which kind of work request a [`WrId`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum WrKind {
    /// A Receive (index: Receive descriptor).
    Recv = 0,
    /// A Send (index: call slot).
    Send = 1,
    /// An RDMA Read (index: call slot).
    Read = 2,
    /// An RDMA Write (index: call slot).
    Write = 3,
}

impl WrKind {
    /// The work request's name, for logs: `receive`, `send`, `read`, `write`.
    pub const fn name(self) -> &'static str {
        match self {
            WrKind::Recv => "receive",
            WrKind::Send => "send",
            WrKind::Read => "read",
            WrKind::Write => "write",
        }
    }
}

/// Largest epoch (14 bits).
pub const MAX_EPOCH: u16 = (1 << 14) - 1;

/// A work request id: kind, epoch, index and generation in 64 bits (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WrId(pub u64);

impl WrId {
    /// Packs an id. `epoch` is masked to 14 bits.
    #[inline]
    pub const fn new(kind: WrKind, epoch: u16, index: u16, generation: u32) -> WrId {
        WrId((generation as u64) << 32 | (Self::tag_of(kind, epoch) as u64) << 16 | index as u64)
    }

    /// The 16-bit tag `kind | epoch << 2` that one compare checks.
    #[inline]
    pub const fn tag_of(kind: WrKind, epoch: u16) -> u16 {
        (kind as u16) | (epoch & MAX_EPOCH) << 2
    }

    /// The tag bits of this id.
    #[inline]
    pub const fn tag(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The kind.
    #[inline]
    pub const fn kind(self) -> WrKind {
        match (self.0 >> 16) & 3 {
            0 => WrKind::Recv,
            1 => WrKind::Send,
            2 => WrKind::Read,
            _ => WrKind::Write,
        }
    }

    /// The epoch.
    #[inline]
    pub const fn epoch(self) -> u16 {
        ((self.0 >> 18) as u16) & MAX_EPOCH
    }

    /// The descriptor or call-slot index.
    #[inline]
    pub const fn index(self) -> u16 {
        self.0 as u16
    }

    /// The generation.
    #[inline]
    pub const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// One Receive work request with its single SGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(C)]
pub struct RecvWr {
    /// Identifies the descriptor and the post ([`WrId`]).
    pub wr_id: u64,
    /// Device address of the Receive buffer.
    pub addr: u64,
    /// Buffer length.
    pub length: u32,
    /// Local key of the region.
    pub lkey: u32,
}

static_assertions::assert_eq_size!(RecvWr, [u8; 24]);

/// A local scatter/gather element: registered memory of this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sge {
    /// Device address.
    pub addr: u64,
    /// Length in bytes.
    pub length: u32,
    /// Local key.
    pub lkey: u32,
}

/// What a send-queue work request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SendOp {
    /// Send the local bytes as one message (consumes one of the peer's Receives).
    Send,
    /// RDMA Write the local bytes to the peer's memory at `remote` under `rkey`.
    Write {
        /// The peer's address (a segment's `offset`).
        remote: u64,
        /// The peer's key (a segment's `handle`).
        rkey: u32,
    },
    /// RDMA Read `local.length` bytes of the peer's memory at `remote` into the local bytes.
    Read {
        /// The peer's address.
        remote: u64,
        /// The peer's key.
        rkey: u32,
    },
}

/// A send-queue work request with one SGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SendWr {
    /// Its [`WrId`].
    pub wr_id: u64,
    /// Send, RDMA Write or RDMA Read.
    pub op: SendOp,
    /// The local memory.
    pub local: Sge,
    /// Whether the device reports the work request's successful completion (`IBV_SEND_SIGNALED`).
    /// A failed or flushed work request is reported either way. On a reliable connection the
    /// send queue completes in order, so a signaled completion also says that every work
    /// request posted before it has completed.
    pub signaled: bool,
}

/// Completion status, as the binding maps it from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CompletionStatus {
    /// The work request completed.
    Success,
    /// Flushed: the queue pair went to error (disconnect, teardown, an earlier failure).
    Flushed,
    /// Any other error; `code` is the device's status (e.g. `ibv_wc_status`).
    Error {
        /// Device status code.
        code: u32,
    },
}

/// A work completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Completion {
    /// The wr_id the device returned.
    pub wr_id: u64,
    /// Status.
    pub status: CompletionStatus,
    /// Bytes the device wrote (meaningful for a successful Receive).
    pub byte_len: u32,
    /// The queue pair the work request belonged to (verbs: `wc.qp_num`): with a shared
    /// receive queue, the connection a Receive's message arrived on.
    pub qp: u32,
}

impl Completion {
    /// A blank completion, for arrays to poll into.
    pub const EMPTY: Completion = Completion {
        wr_id: 0,
        status: CompletionStatus::Success,
        byte_len: 0,
        qp: 0,
    };
}

/// A post the device refused: the work request at `index` and every one after it in the
/// batch were not posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PostError {
    /// Index of the first refused work request in the batch.
    pub index: usize,
    /// The device's error code (an errno on verbs).
    pub code: i32,
}

impl core::fmt::Display for PostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "device refused work request {} of the batch (code {}): the queue is full or the \
             queue pair is in error",
            self.index, self.code
        )
    }
}

impl core::error::Error for PostError {}

/// What the core needs from an RDMA device for one connection.
///
/// `post_recv` goes to the connection's receive queue, or to the shared receive queue when
/// connections share one. `post_send` goes to the connection's send queue, in order: on a
/// reliable connection the peer sees RDMA Writes before a Send posted after them.
pub trait Device {
    /// Posts a chain of Receives with one doorbell.
    ///
    /// # Errors
    /// [`PostError`] naming the first refused work request.
    fn post_recv(&mut self, wrs: &[RecvWr]) -> Result<(), PostError>;

    /// Posts a chain of Sends, RDMA Writes and RDMA Reads with one doorbell.
    ///
    /// # Errors
    /// [`PostError`] naming the first refused work request.
    fn post_send(&mut self, wrs: &[SendWr]) -> Result<(), PostError>;

    /// Polls up to `out.len()` completions; returns how many were written.
    fn poll(&mut self, out: &mut [Completion]) -> usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wr_id_round_trips() {
        let id = WrId::new(WrKind::Write, 0x3abc, 0xfffe, 0xdead_beef);
        assert_eq!(id.kind(), WrKind::Write);
        assert_eq!(id.epoch(), 0x3abc);
        assert_eq!(id.index(), 0xfffe);
        assert_eq!(id.generation(), 0xdead_beef);
        assert_eq!(id.tag(), WrId::tag_of(WrKind::Write, 0x3abc));
        // The epoch is masked to 14 bits, never spilling into the generation.
        let id = WrId::new(WrKind::Recv, 0xffff, 1, 0);
        assert_eq!((id.epoch(), id.generation()), (MAX_EPOCH, 0));
    }
}
