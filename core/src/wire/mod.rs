//! RPC-over-RDMA Version 1 wire format (RFC 8166, with RFC 8167 and RFC 8797).
//!
//! Layout follows smoltcp's `wire`: zero-copy views over caller bytes ([`Header`], [`Message`],
//! [`SegmentList`], [`ReadList`], [`WriteList`]) and owned, parsed representations
//! ([`HeaderRepr`], [`ErrorReply`], [`PrivateData`]) that can be emitted back to bytes.
//!
//! # Trust boundary
//!
//! Untrusted bytes enter only through [`decode`] (a received message), [`PrivateData::parse`]
//! (connection private data) and, on a requester, [`decode_reply`] (a responder's reply).
//! [`decode`] checks every length before it reads a word, validates the whole header in one
//! pass, and returns either a [`Message`] whose chunk-list views can then be iterated without
//! further checks, or a [`DecodeError`] naming the rule that broke. Each error maps to what a
//! responder does through one function, [`DecodeError::disposition`]. [`decode_reply`] reads a
//! reply with the same checked helpers and capacities and returns a [`Reply`] or a
//! [`ReplyError`].
//!
//! # Invariants a [`Message`] guarantees
//!
//! - every list discriminator is 0 or 1 and every counted array fits inside `byte_len`;
//! - at most [`MAX_READ_SEGMENTS`] read segments, [`MAX_WRITE_CHUNKS`] write chunks of at most
//!   [`MAX_WRITE_SEGMENTS`] segments, one reply chunk of at most [`MAX_REPLY_SEGMENTS`] segments,
//!   and no write or reply chunk with zero segments;
//! - read segments are non-empty, each and their sum within [`DecodeLimits::max_read_payload`];
//!   read positions are 4-byte aligned, non-decreasing, non-overlapping and inside the inline body;
//! - an RDMA_NOMSG carries a position-zero (call) chunk; an RDMA_MSG may too (RFC 8166
//!   permits it; the call is then the chunk's data and the inline bytes are not part of it);
//! - with a call chunk, every other chunk's place lies within the call chunk's data.

mod chunk;
mod error;
mod error_reply;
mod header;
mod message;
mod private_data;
mod reply;
mod repr;

pub use chunk::{
    ReadChunk, ReadChunks, ReadList, ReadSegment, Segment, SegmentList, Segments, WriteList,
};
pub use error::{DecodeError, Disposition, ListKind};
pub use error_reply::{ErrorReply, ErrorReplyKind};
pub use header::Header;
pub use message::{decode, decode_layout, DecodeLimits, Layout, Message};
pub use private_data::{PrivateData, PrivateDataError, PrivateDataFlags};
pub use reply::{decode_reply, Reply, ReplyError, RpcReply};
pub use repr::{EmitError, HeaderRepr};

use static_assertions::const_assert_eq;

/// The only protocol version this crate speaks (RFC 8166 `rpcrdma_version`).
pub const RPCRDMA_VERSION: u32 = 1;
/// Size of one XDR word.
pub const XDR_UNIT: usize = 4;
/// Fixed header: `xid`, `vers`, `credits`, `proc`.
pub const FIXED_HEADER_LEN: usize = 4 * XDR_UNIT;
/// Smallest valid RDMA_MSG / RDMA_NOMSG header: fixed header plus three empty lists.
pub const MIN_HEADER_LEN: usize = FIXED_HEADER_LEN + 3 * XDR_UNIT;
/// One RDMA segment on the wire: `handle`, `length`, `offset` (u64).
pub const SEGMENT_LEN: usize = 4 * XDR_UNIT;
/// One read-list item after its discriminator: `position` then a segment.
pub const READ_ITEM_LEN: usize = XDR_UNIT + SEGMENT_LEN;
/// RDMA_ERROR with ERR_VERS: fixed header, `rdma_err`, `low`, `high`.
pub const ERR_VERS_LEN: usize = FIXED_HEADER_LEN + 3 * XDR_UNIT;
/// RDMA_ERROR with ERR_CHUNK: fixed header, `rdma_err`.
pub const ERR_CHUNK_LEN: usize = FIXED_HEADER_LEN + XDR_UNIT;
/// Inline threshold each way when the peers did not negotiate one (RFC 8166 §3.3.3).
pub const DEFAULT_INLINE_THRESHOLD: usize = 1024;
/// The IANA port for NFS/RDMA.
pub const NFS_RDMA_PORT: u16 = 20049;

/// Most read segments (over all Read chunks) one message may carry.
pub const MAX_READ_SEGMENTS: usize = 16;
/// Most write chunks one message may carry; more is [`DecodeError::TooManyWriteChunks`].
pub const MAX_WRITE_CHUNKS: usize = 1;
/// Most segments in one write chunk.
pub const MAX_WRITE_SEGMENTS: usize = 16;
/// Most segments in the reply chunk.
pub const MAX_REPLY_SEGMENTS: usize = 16;

const_assert_eq!(FIXED_HEADER_LEN, 16);
const_assert_eq!(MIN_HEADER_LEN, 28);
const_assert_eq!(SEGMENT_LEN, 16);
const_assert_eq!(READ_ITEM_LEN, 20);
const_assert_eq!(ERR_VERS_LEN, 28);
const_assert_eq!(ERR_CHUNK_LEN, 20);

/// `rdma_proc`: the RPC-over-RDMA procedure of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Proc {
    /// RDMA_MSG: the RPC message follows the header inline.
    Msg = 0,
    /// RDMA_NOMSG: the RPC message travels in a chunk (Position-Zero Read chunk or Reply chunk).
    Nomsg = 1,
    /// RDMA_MSGP: padded message, deprecated by RFC 8166; rejected with ERR_CHUNK.
    Msgp = 2,
    /// RDMA_DONE: deprecated by RFC 8166; dropped.
    Done = 3,
    /// RDMA_ERROR: error report; a responder drops it.
    Error = 4,
}

impl Proc {
    /// The procedure for a wire value, `None` for values RFC 8166 does not define.
    pub const fn from_wire(value: u32) -> Option<Proc> {
        match value {
            0 => Some(Proc::Msg),
            1 => Some(Proc::Nomsg),
            2 => Some(Proc::Msgp),
            3 => Some(Proc::Done),
            4 => Some(Proc::Error),
            _ => None,
        }
    }

    /// The wire value.
    pub const fn to_wire(self) -> u32 {
        self as u32
    }
}

/// `rdma_err` values of an RDMA_ERROR message.
pub mod rdma_err {
    /// The responder does not support the requester's version.
    pub const ERR_VERS: u32 = 1;
    /// The header or its chunk lists could not be parsed.
    pub const ERR_CHUNK: u32 = 2;
}

/// Rounds `len` up to a whole number of XDR words (in u64, so it cannot overflow for u32 input).
#[inline]
pub const fn xdr_roundup(len: u32) -> u64 {
    (len as u64 + 3) & !3
}

/// The big-endian XDR word at byte offset `at` of `buf`, `None` unless all four bytes are
/// there. Never panics (`at` near `usize::MAX` is `None` too). The one word reader of the
/// project: the decoders, the services and every requester read through it.
#[inline]
pub fn xdr_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(XDR_UNIT)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Reads a word the caller has already bounds-checked; still never panics (0 if out of range).
#[inline]
pub(crate) fn be32_checked(buf: &[u8], at: usize) -> u32 {
    xdr_u32(buf, at).unwrap_or(0)
}

/// Writes `value` as a big-endian XDR word at byte offset `at` of `buf` if all four bytes are
/// there; otherwise writes nothing. Never panics.
#[inline]
pub fn put_xdr_u32(buf: &mut [u8], at: usize, value: u32) {
    let Some(end) = at.checked_add(XDR_UNIT) else {
        return;
    };
    if let Some(dst) = buf.get_mut(at..end) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
}

/// Writes `words` as big-endian XDR words at the start of `buf`; returns the bytes written
/// (`4 × words.len()`), or `None` — writing nothing — if they do not fit. Never panics. For
/// fixtures and scripted messages written out word by word.
pub fn put_xdr_words(buf: &mut [u8], words: &[u32]) -> Option<usize> {
    let len = words.len().checked_mul(XDR_UNIT)?;
    let out = buf.get_mut(..len)?;
    for (i, word) in words.iter().enumerate() {
        // `i * 4 < len`, which did not overflow.
        put_xdr_u32(out, i * XDR_UNIT, *word);
    }
    Some(len)
}

/// Copies `min(dst.len(), src.len())` bytes; returns how many. Never panics.
#[inline]
pub(crate) fn copy_prefix(dst: &mut [u8], src: &[u8]) -> usize {
    let n = dst.len().min(src.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
    n
}

/// `buf.copy_within(from..from + len, to)` when both ranges lie inside `buf`; otherwise
/// nothing. Returns whether it copied. Never panics.
#[inline]
pub(crate) fn move_within(buf: &mut [u8], from: usize, len: usize, to: usize) -> bool {
    let fits = |at: usize| at.checked_add(len).is_some_and(|end| end <= buf.len());
    if !fits(from) || !fits(to) {
        return false;
    }
    // A byte loop in the safe direction (memmove), rather than `copy_within`, whose own
    // range checks the optimiser does not remove: this must stay free of panic paths.
    if to < from {
        for i in 0..len {
            let b = buf.get(from + i).copied().unwrap_or(0);
            if let Some(d) = buf.get_mut(to + i) {
                *d = b;
            }
        }
    } else if to > from {
        for i in (0..len).rev() {
            let b = buf.get(from + i).copied().unwrap_or(0);
            if let Some(d) = buf.get_mut(to + i) {
                *d = b;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_xdr_words() {
        let mut buf = [0xaa; 10];
        assert_eq!(put_xdr_words(&mut buf, &[0x0102_0304, 5]), Some(8));
        assert_eq!(buf, [1, 2, 3, 4, 0, 0, 0, 5, 0xaa, 0xaa]);
        assert_eq!(xdr_u32(&buf, 0), Some(0x0102_0304));
        assert_eq!(xdr_u32(&buf, 1), Some(0x0203_0400));
        assert_eq!(xdr_u32(&buf, 4), Some(5));
        assert_eq!(xdr_u32(&buf, 7), None);
        assert_eq!(xdr_u32(&buf, usize::MAX - 1), None);
        // Too long: nothing is written.
        assert_eq!(put_xdr_words(&mut buf, &[7, 7, 7]), None);
        assert_eq!(xdr_u32(&buf, 0), Some(0x0102_0304));
        put_xdr_u32(&mut buf, 6, 9);
        put_xdr_u32(&mut buf, 7, 9);
        put_xdr_u32(&mut buf, usize::MAX, 9);
        assert_eq!(buf, [1, 2, 3, 4, 0, 0, 0, 0, 0, 9]);
    }
}
