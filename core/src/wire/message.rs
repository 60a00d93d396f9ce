//! Decoding a received message: one bounds-checked pass over the header and its chunk lists.

use core::ops::Range;

use super::chunk::xdr_roundup_u64;
use super::{
    be32, DecodeError, Header, ListKind, Proc, ReadList, SegmentList, WriteList, FIXED_HEADER_LEN,
    MAX_READ_SEGMENTS, MAX_REPLY_SEGMENTS, MAX_WRITE_CHUNKS, MAX_WRITE_SEGMENTS, READ_ITEM_LEN,
    RPCRDMA_VERSION, SEGMENT_LEN, XDR_UNIT,
};

/// Limits a decoder enforces beyond the fixed capacities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DecodeLimits {
    /// Largest payload, in bytes, the Read chunks of one call may carry (each segment and
    /// their sum). Default: 1 MiB, the Linux server's default maximum payload.
    pub max_read_payload: u32,
}

impl DecodeLimits {
    /// The defaults.
    pub const DEFAULT: DecodeLimits = DecodeLimits {
        max_read_payload: 1 << 20,
    };
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A validated RPC-over-RDMA call, borrowing the bytes that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    xid: u32,
    credits: u32,
    proc_: Proc,
    read_list: ReadList<'a>,
    write_list: WriteList<'a>,
    reply_chunk: Option<SegmentList<'a>>,
    header_len: usize,
    byte_len: usize,
}

impl<'a> Message<'a> {
    /// `rdma_xid`.
    #[inline]
    pub fn xid(&self) -> u32 {
        self.xid
    }
    /// Credits the requester asked for.
    #[inline]
    pub fn credits(&self) -> u32 {
        self.credits
    }
    /// [`Proc::Msg`] or [`Proc::Nomsg`]; nothing else decodes.
    #[inline]
    pub fn proc_(&self) -> Proc {
        self.proc_
    }
    /// Length of the transport header (fixed header plus the three lists).
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// Bytes that arrived.
    #[inline]
    pub fn byte_len(&self) -> usize {
        self.byte_len
    }
    /// Byte range of the inline RPC message in the Receive buffer: everything after the
    /// transport header for RDMA_MSG, empty for RDMA_NOMSG (the call is in the call chunk).
    #[inline]
    pub fn inline_range(&self) -> Range<usize> {
        match self.proc_ {
            Proc::Msg => self.header_len..self.byte_len,
            _ => self.header_len..self.header_len,
        }
    }
    /// The read list.
    #[inline]
    pub fn read_list(&self) -> ReadList<'a> {
        self.read_list
    }
    /// The write list.
    #[inline]
    pub fn write_list(&self) -> WriteList<'a> {
        self.write_list
    }
    /// The reply chunk, if the requester provided one.
    #[inline]
    pub fn reply_chunk(&self) -> Option<SegmentList<'a>> {
        self.reply_chunk
    }
    /// Whether all three chunk lists are empty.
    #[inline]
    pub fn lists_empty(&self) -> bool {
        self.read_list.is_empty() && self.write_list.is_empty() && self.reply_chunk.is_none()
    }

    /// RFC 8167: whether this is a reverse-direction (backchannel) *reply* arriving on the
    /// forward channel: an RDMA_MSG with all lists empty whose RPC `msg_type` word is REPLY (1).
    ///
    /// `buf` is the Receive buffer the message was decoded from.
    pub fn is_backchannel_reply(&self, buf: &[u8]) -> bool {
        const RPC_REPLY: u32 = 1;
        self.proc_ == Proc::Msg
            && self.lists_empty()
            && buf
                .get(self.inline_range())
                .and_then(|rpc| be32(rpc, XDR_UNIT))
                .is_some_and(|msg_type| msg_type == RPC_REPLY)
    }
}

/// Decodes the message a Receive completion delivered: `byte_len` bytes at the start of `buf`.
///
/// Only `buf[..byte_len]` is read. On success every chunk list of the [`Message`] satisfies the
/// invariants listed in the [module docs](super).
///
/// # Errors
/// A [`DecodeError`] naming the first rule the message breaks; see
/// [`DecodeError::disposition`] for the reply it calls for.
pub fn decode<'a>(
    buf: &'a [u8],
    byte_len: usize,
    limits: &DecodeLimits,
) -> Result<Message<'a>, DecodeError> {
    let Some(b) = buf.get(..byte_len) else {
        return Err(DecodeError::ByteLenExceedsBuffer {
            byte_len,
            buffer_len: buf.len(),
        });
    };
    let header = Header::new_checked(b)?;
    let vers = header.vers();
    if vers != RPCRDMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { vers });
    }
    let proc_raw = header.proc_raw();
    let proc_ = match Proc::from_wire(proc_raw) {
        Some(p @ (Proc::Msg | Proc::Nomsg)) => p,
        Some(Proc::Done | Proc::Error) => {
            return Err(DecodeError::UnexpectedProc { proc_: proc_raw })
        }
        Some(Proc::Msgp) | None => return Err(DecodeError::UnsupportedProc { proc_: proc_raw }),
    };

    let mut at = FIXED_HEADER_LEN;

    // Read list: { 1, position, segment }* 0
    let read_start = at;
    let mut read_count = 0usize;
    loop {
        match word(b, at)? {
            0 => break,
            1 => {}
            value => {
                return Err(DecodeError::BadDiscriminator {
                    list: ListKind::Read,
                    value,
                    at,
                })
            }
        }
        if read_count == MAX_READ_SEGMENTS {
            return Err(DecodeError::TooManyReadSegments);
        }
        let item = at + XDR_UNIT;
        if b.len() - item < READ_ITEM_LEN {
            return Err(DecodeError::Truncated {
                at: item,
                len: b.len(),
            });
        }
        at = item + READ_ITEM_LEN;
        read_count += 1;
    }
    let read_items = ReadList::new(b.get(read_start..at).unwrap_or_default());
    at += XDR_UNIT;

    // Write list: { 1, count, segment × count }* 0
    let write_start = at;
    let mut write_count = 0usize;
    loop {
        match word(b, at)? {
            0 => break,
            1 => {}
            value => {
                return Err(DecodeError::BadDiscriminator {
                    list: ListKind::Write,
                    value,
                    at,
                })
            }
        }
        if write_count == MAX_WRITE_CHUNKS {
            return Err(DecodeError::TooManyWriteChunks);
        }
        let (_, end) = counted_segments(b, at + XDR_UNIT, ListKind::Write, MAX_WRITE_SEGMENTS)?;
        at = end;
        write_count += 1;
    }
    let write_list = WriteList::new(b.get(write_start..at).unwrap_or_default(), write_count);
    at += XDR_UNIT;

    // Reply chunk: 1, count, segment × count | 0
    let reply_chunk = match word(b, at)? {
        0 => {
            at += XDR_UNIT;
            None
        }
        1 => {
            let (segs, end) =
                counted_segments(b, at + XDR_UNIT, ListKind::Reply, MAX_REPLY_SEGMENTS)?;
            at = end;
            Some(segs)
        }
        value => {
            return Err(DecodeError::BadDiscriminator {
                list: ListKind::Reply,
                value,
                at,
            })
        }
    };

    let message = Message {
        xid: header.xid(),
        credits: header.credits(),
        proc_,
        read_list: read_items,
        write_list,
        reply_chunk,
        header_len: at,
        byte_len,
    };
    if read_count != 0 || proc_ == Proc::Nomsg {
        let inline = message.inline_range();
        check_read_list(read_items, proc_, inline.end - inline.start, limits)?;
    }
    Ok(message)
}

/// The word at `at`, or [`DecodeError::Truncated`].
#[inline]
fn word(b: &[u8], at: usize) -> Result<u32, DecodeError> {
    be32(b, at).ok_or(DecodeError::Truncated { at, len: b.len() })
}

/// Parses `count, segment × count` at `at`; returns the segments and the offset after them.
/// The count is checked against `max` before it is multiplied, so no arithmetic can wrap.
fn counted_segments(
    b: &[u8],
    at: usize,
    list: ListKind,
    max: usize,
) -> Result<(SegmentList<'_>, usize), DecodeError> {
    let count = word(b, at)?;
    if count == 0 {
        return Err(DecodeError::EmptyChunk { list });
    }
    if count as usize > max {
        return Err(DecodeError::TooManySegments { list, count, max });
    }
    let start = at + XDR_UNIT;
    let end = start + count as usize * SEGMENT_LEN;
    match b.get(start..end) {
        Some(bytes) => Ok((SegmentList::new(bytes), end)),
        None => Err(DecodeError::Truncated {
            at: start,
            len: b.len(),
        }),
    }
}

/// Semantic checks of a structurally valid read list.
fn check_read_list(
    list: ReadList<'_>,
    proc_: Proc,
    inline_len: usize,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    let max = limits.max_read_payload;
    let mut total: u32 = 0;
    // The current chunk: its position and data length so far.
    let mut current: Option<(u32, u64)> = None;
    // XDR-padded data of the chunks before the current one.
    let mut data_before: u64 = 0;
    let mut has_call_chunk = false;

    for (index, item) in list.iter().enumerate() {
        let length = item.segment.length;
        let position = item.position;
        if length == 0 {
            return Err(DecodeError::ZeroLengthReadSegment { index });
        }
        if length > max {
            return Err(DecodeError::ReadSegmentTooLong { length, max });
        }
        total = total
            .checked_add(length)
            .ok_or(DecodeError::ReadLengthOverflow)?;
        if total > max {
            return Err(DecodeError::ReadPayloadTooLong { total, max });
        }
        if position % 4 != 0 {
            return Err(DecodeError::MisalignedReadPosition { position });
        }
        match current {
            Some((pos, ref mut len)) if pos == position => {
                *len += length as u64;
                continue;
            }
            Some((previous, _)) if position < previous => {
                return Err(DecodeError::ReadPositionsOutOfOrder { previous, position });
            }
            Some((previous, len)) => {
                if (position as u64) < previous as u64 + xdr_roundup_u64(len) {
                    return Err(DecodeError::OverlappingReadChunks { previous, position });
                }
                data_before += xdr_roundup_u64(len);
            }
            None => has_call_chunk = position == 0,
        }
        // A new chunk starts here: its data goes at this offset of the inline body.
        let inline_offset = position as u64 - data_before;
        if inline_offset > inline_len as u64 {
            return Err(DecodeError::ReadPositionBeyondInline {
                position,
                inline_len,
            });
        }
        current = Some((position, length as u64));
    }

    match (proc_, has_call_chunk) {
        (Proc::Nomsg, false) => Err(DecodeError::NomsgWithoutCallChunk),
        (Proc::Msg, true) => Err(DecodeError::CallChunkInMsg),
        _ => Ok(()),
    }
}
