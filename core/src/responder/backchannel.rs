//! The backward direction (RFC 8167): calls this side sends to the requester on the same
//! connection (NFSv4.1 callbacks: CB_RECALL, CB_NOTIFY...), and their replies.
//!
//! - **Sending.** A backward call is an RDMA_MSG with empty chunk lists and the RPC CALL inline
//!   (RFC 8167 §5.1: no chunks in the backward direction here), built in a send slot and posted
//!   with the next batch. It takes a call slot and a send slot until its Send completes, like a
//!   reply, and nothing else: its reply arrives in one of this side's Receives.
//! - **Credits.** Backward credits are separate from forward ones (RFC 8167 §4). The requester
//!   states how many backward calls it accepts in the `rdma_credit` field of its backward
//!   replies; until the first one arrives this side sends one call at a time (the requester
//!   provisions at least one Receive for backward calls when it allows them at all). A call
//!   that would exceed the limit is not sent: [`Connection::send_backchannel`] returns
//!   `Ok(false)` and the caller keeps it for later. The `rdma_credit` of a backward call carries
//!   the most this side would use, [`BACKCHANNEL_MAX`].
//! - **Receives for the replies.** Each outstanding backward call will bring a reply into a
//!   Receive the requester did not pay for with a forward credit, so the forward grant leaves
//!   one posted Receive per outstanding backward call (and with a shared receive queue, the
//!   connection's demand in the credit ledger counts them).
//! - **Replies** are matched by xid to an outstanding call and handed to
//!   [`Service::backchannel_reply`](super::Service::backchannel_reply); a reply with an xid this
//!   side is not waiting for is counted and dropped.
//! - **Failures.** A call whose deadline (the caller's clock) passes, and every call outstanding
//!   when the connection closes, is reported once through
//!   [`Connection::take_backchannel_failure`].

use heapless::{Deque, Vec};

use crate::wire::{put_xdr_u32, xdr_u32, Message, Proc, MIN_HEADER_LEN, RPCRDMA_VERSION};

use super::Connection;

/// The most backward calls outstanding at once on one connection, and the credits a backward
/// call asks for.
pub const BACKCHANNEL_MAX: usize = 8;

/// Why a backward call was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BackchannelError {
    /// The connection is closing.
    Closed,
    /// The call does not fit inline (backward calls carry no chunks).
    TooLarge {
        /// Bytes of the RPC call written.
        len: usize,
        /// The most that fits.
        max: usize,
    },
    /// What was written is not an RPC CALL.
    NotACall,
    /// A call with this xid is already outstanding (its reply could not be told apart).
    DuplicateXid {
        /// The xid.
        xid: u32,
    },
}

impl core::fmt::Display for BackchannelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            BackchannelError::Closed => write!(f, "the connection is closing"),
            BackchannelError::TooLarge { len, max } => write!(
                f,
                "a {len}-byte backward call does not fit inline ({max} bytes at most): backward \
                 calls carry no chunks"
            ),
            BackchannelError::NotACall => write!(f, "the backward message is not an RPC CALL"),
            BackchannelError::DuplicateXid { xid } => {
                write!(
                    f,
                    "a backward call with xid {xid:#x} is already outstanding"
                )
            }
        }
    }
}

impl core::error::Error for BackchannelError {}

/// How an outstanding backward call ended without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BackchannelFailure {
    /// Its deadline passed.
    Expired,
    /// The connection closed first.
    ConnectionLost,
}

/// Backward-direction state of one connection.
#[derive(Debug)]
pub(super) struct Backchannel {
    /// Backward calls the requester accepts at once (its last backward reply's
    /// `rdma_credit`), 1 until it has said.
    limit: u16,
    /// Outstanding calls: xid and deadline.
    outstanding: Vec<(u32, u64), BACKCHANNEL_MAX>,
    /// Calls that ended without a reply, not yet taken.
    failed: Deque<(u32, BackchannelFailure), { 2 * BACKCHANNEL_MAX }>,
}

impl Backchannel {
    pub(super) const fn new() -> Backchannel {
        Backchannel {
            limit: 1,
            outstanding: Vec::new(),
            failed: Deque::new(),
        }
    }

    /// Outstanding backward calls (each has a Receive coming).
    pub(super) fn outstanding(&self) -> u32 {
        self.outstanding.len() as u32
    }

    fn fail(&mut self, xid: u32, why: BackchannelFailure) {
        if self.failed.is_full() {
            let _ = self.failed.pop_front();
        }
        let _ = self.failed.push_back((xid, why));
    }

    /// The connection closed: every outstanding call fails.
    pub(super) fn lose_all(&mut self) -> u64 {
        let n = self.outstanding.len() as u64;
        while let Some((xid, _)) = self.outstanding.pop() {
            self.fail(xid, BackchannelFailure::ConnectionLost);
        }
        n
    }
}

impl<'a, const C: usize> Connection<'a, C> {
    /// Sends a backward-direction RPC call (RFC 8167) on this connection with the next
    /// [`Connection::flush`]: `f` writes the RPC CALL (its xid first) into the buffer it is
    /// given and returns its length; the call is answered by the requester's backward reply,
    /// handed to [`Service::backchannel_reply`](super::Service::backchannel_reply), or fails
    /// at `deadline` (the caller's clock, as given to [`Connection::expire_backchannel`]).
    ///
    /// Returns `Ok(false)`, with `f` not run, when it cannot go now: the requester's backward
    /// credits are all in use, or no call slot, send slot or send-queue room is free. Keep
    /// the call and try again after the next batch.
    ///
    /// # Errors
    /// [`BackchannelError`]: the connection is closing, or what `f` wrote is not an RPC CALL,
    /// does not fit inline, or repeats an outstanding xid (nothing is sent).
    pub fn send_backchannel(
        &mut self,
        deadline: u64,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<bool, BackchannelError> {
        if self.closing {
            return Err(BackchannelError::Closed);
        }
        if self.bc.outstanding.len() >= (self.bc.limit as usize).min(BACKCHANNEL_MAX)
            || self.sq_room() < 1
            || self.chain.is_full()
            || self.free_slots.is_empty()
            || self.free_calls.is_empty()
        {
            return Ok(false);
        }
        let (Some(i), Some(slot)) = (self.take_call_slot(), self.free_slots.pop()) else {
            return Ok(false);
        };
        let slot_off = self.slot_offset(slot);
        let max = self.send_size.min(self.peer_inline()) - MIN_HEADER_LEN;
        let written = match self.send.bytes_mut(slot_off, self.send_size) {
            Some(buf) => {
                let (header, body) = buf.split_at_mut(MIN_HEADER_LEN);
                let body = body.get_mut(..max).unwrap_or_default();
                let n = f(body);
                let call = body.get(..n.min(body.len())).unwrap_or_default();
                match (n <= body.len(), xdr_u32(call, 0), xdr_u32(call, 4)) {
                    (false, _, _) => Err(BackchannelError::TooLarge { len: n, max }),
                    (true, Some(xid), Some(0)) => {
                        for (k, word) in [
                            xid,
                            RPCRDMA_VERSION,
                            BACKCHANNEL_MAX as u32,
                            Proc::Msg as u32,
                            0,
                            0,
                            0,
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            put_xdr_u32(header, 4 * k, word);
                        }
                        Ok((xid, n))
                    }
                    _ => Err(BackchannelError::NotACall),
                }
            }
            None => Err(BackchannelError::NotACall),
        };
        let refused = match written {
            Ok((xid, _)) if self.bc.outstanding.iter().any(|&(x, _)| x == xid) => {
                Some(BackchannelError::DuplicateXid { xid })
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        let (xid, n) = match (refused, written) {
            (None, Ok(w)) => w,
            (e, _) => {
                let _ = self.free_slots.push(slot);
                self.free_call(i);
                return Err(e.unwrap_or(BackchannelError::NotACall));
            }
        };
        if let Some(c) = self.call_mut(i) {
            c.send_slot = slot;
            c.backchannel = true;
        }
        // The Send goes out with the batch, like a reply (and completes like one).
        self.queue_send(i, slot_off, MIN_HEADER_LEN + n);
        let _ = self.bc.outstanding.push((xid, deadline));
        self.counters.backchannel_calls += 1;
        Ok(true)
    }

    /// [`Connection::send_backchannel`] for a call already encoded: `call` (the RPC CALL, its
    /// xid first) is copied into the send slot.
    ///
    /// # Errors
    /// As [`Connection::send_backchannel`] (`call` longer than fits: [`BackchannelError::TooLarge`]).
    pub fn send_backchannel_call(
        &mut self,
        deadline: u64,
        call: &[u8],
    ) -> Result<bool, BackchannelError> {
        self.send_backchannel(deadline, |buf| match buf.get_mut(..call.len()) {
            Some(dst) => {
                dst.copy_from_slice(call);
                call.len()
            }
            None => call.len(), // past the buffer: refused as too large
        })
    }

    /// A backward reply arrived: matches it to its call. Returns whether one was waiting.
    pub(super) fn backchannel_reply_arrived(&mut self, message: &Message<'_>) -> bool {
        let xid = message.xid();
        match self.bc.outstanding.iter().position(|&(x, _)| x == xid) {
            Some(k) => {
                self.bc.outstanding.swap_remove(k);
                let grant = message.credits().clamp(1, BACKCHANNEL_MAX as u32);
                self.bc.limit = grant as u16;
                self.counters.backchannel += 1;
                true
            }
            None => {
                self.counters.backchannel_unmatched += 1;
                false
            }
        }
    }

    /// Backward calls whose deadline is at or before `now` fail (reported by
    /// [`Connection::take_backchannel_failure`]). Returns how many.
    pub fn expire_backchannel(&mut self, now: u64) -> usize {
        let mut n = 0;
        let mut k = 0;
        while let Some(&(xid, deadline)) = self.bc.outstanding.get(k) {
            if deadline <= now {
                self.bc.outstanding.swap_remove(k);
                self.bc.fail(xid, BackchannelFailure::Expired);
                self.counters.backchannel_failed += 1;
                n += 1;
            } else {
                k += 1;
            }
        }
        n
    }

    /// The next backward call that ended without a reply (expired, or lost with the
    /// connection), oldest first.
    pub fn take_backchannel_failure(&mut self) -> Option<(u32, BackchannelFailure)> {
        self.bc.failed.pop_front()
    }

    /// Backward calls sent and not answered yet.
    pub fn backchannel_outstanding(&self) -> usize {
        self.bc.outstanding.len()
    }

    /// Backward calls the requester accepts at once, as far as this side knows.
    pub fn backchannel_limit(&self) -> u16 {
        self.bc.limit
    }
}
