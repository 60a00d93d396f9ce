//! One call's slot: where it is in its life, and what it holds.

use crate::pages::PageRun;
use crate::pool::Received;
use crate::wire::ErrorReply;

/// Marks "no send slot".
pub(super) const NO_SLOT: u16 = u16::MAX;

/// A call slot's index in its connection's table (the `index` of its work requests' wr_ids
/// and of its [`super::CallHandle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(transparent)]
pub(super) struct CallId(pub(super) u16);

/// Marks "no call" in the posted-replies list.
pub(super) const NO_CALL: CallId = CallId(u16::MAX);

impl CallId {
    /// The index into the call table.
    #[inline(always)]
    pub(super) fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) enum CallState {
    Free,
    /// Waiting for sink pages, Read credit or a send slot.
    Parked,
    /// RDMA Reads posted or waiting to be.
    Reading,
    /// Data complete; waiting for a send slot.
    Ready,
    /// Writes and the Send posted.
    Replying,
    /// The service answers later; the Receive and the send slot stay taken.
    Pending,
}

#[derive(Debug)]
pub(super) struct CallSlot {
    pub(super) generation: u32,
    pub(super) state: CallState,
    pub(super) rx: Option<Received>,
    pub(super) error_reply: Option<ErrorReply>,
    pub(super) sink: Option<PageRun>,
    pub(super) payload: Option<PageRun>,
    pub(super) send_slot: u16,
    /// Offset of the reply header in the send slot (credits patched at flush).
    pub(super) header_at: u16,
    pub(super) outstanding: u16,
    pub(super) reads_posted: u8,
    pub(super) reads_total: u8,
    pub(super) failed: bool,
    /// The call counts among the requester's calls in hand (arrived, reply not posted yet).
    pub(super) counted: bool,
    /// A backward-direction call this side sent (RFC 8167), not a reply.
    pub(super) backchannel: bool,
    /// In the list of replies whose Send is posted, in posting order (`prev`/`next`: call
    /// indices, [`NO_SLOT`] at the ends).
    pub(super) posted: bool,
    pub(super) prev: CallId,
    pub(super) next: CallId,
}

impl CallSlot {
    pub(super) const FREE: CallSlot = CallSlot {
        generation: 0,
        state: CallState::Free,
        rx: None,
        error_reply: None,
        sink: None,
        payload: None,
        send_slot: NO_SLOT,
        header_at: 0,
        outstanding: 0,
        reads_posted: 0,
        reads_total: 0,
        failed: false,
        counted: false,
        backchannel: false,
        posted: false,
        prev: NO_CALL,
        next: NO_CALL,
    };
}
