//! Decoding a received message: one bounds-checked pass over the header and its chunk lists.

use core::ops::Range;

use super::chunk::xdr_roundup_u64;
use super::{
    xdr_u32, DecodeError, Header, ListKind, Proc, ReadList, SegmentList, WriteList,
    FIXED_HEADER_LEN, MAX_READ_SEGMENTS, MAX_REPLY_SEGMENTS, MAX_WRITE_CHUNKS, MAX_WRITE_SEGMENTS,
    MIN_HEADER_LEN, READ_ITEM_LEN, RPCRDMA_VERSION, SEGMENT_LEN, XDR_UNIT,
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

/// Where the parts of a validated header lie in its Receive buffer: offsets only, `Copy`, 24
/// bytes, so a receive pool can keep it with the message's token and rebuild the [`Message`]
/// view in constant time without decoding again. Only [`decode_layout`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Layout {
    xid: u32,
    header_len: u32,
    byte_len: u32,
    /// Offset of the read list's terminating 0 (items are `16..read_end`).
    read_end: u32,
    /// Offset of the write list's terminating 0 (chunks are `read_end + 4..write_end`).
    write_end: u32,
    write_count: u8,
    proc_: Proc,
}

static_assertions::const_assert!(core::mem::size_of::<Layout>() <= 24);

impl Layout {
    /// The message view over `buf`, the Receive buffer this layout was decoded from.
    ///
    /// Given another buffer, the views are of that buffer's bytes; they never read out of
    /// bounds (a buffer shorter than `byte_len` gives empty lists and an empty inline body).
    #[inline]
    pub fn message<'a>(&self, buf: &'a [u8]) -> Message<'a> {
        Message {
            buf: buf.get(..self.byte_len as usize).unwrap_or_default(),
            layout: *self,
        }
    }

    /// `rdma_xid`.
    #[inline]
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// Bytes that arrived.
    #[inline]
    pub fn byte_len(&self) -> usize {
        self.byte_len as usize
    }

    /// The offsets of this layout in one word, for a receive pool's descriptor: header_len,
    /// read_end, write_end (16 bits each: every offset lies in a Receive buffer of at most
    /// 64 KiB), write_count (8) and the proc (bit 56). `xid` and `byte_len` are not in it:
    /// [`Layout::unpack`] takes them back from the token.
    #[inline]
    pub(crate) fn pack(&self) -> u64 {
        (self.header_len as u16 as u64)
            | (self.read_end as u16 as u64) << 16
            | (self.write_end as u16 as u64) << 32
            | (self.write_count as u64) << 48
            | ((self.proc_ == Proc::Nomsg) as u64) << 56
    }

    /// The layout [`Layout::pack`] packed, with the fields it left out.
    #[inline(always)]
    pub(crate) fn unpack(word: u64, xid: u32, byte_len: u32) -> Layout {
        Layout {
            xid,
            header_len: word as u16 as u32,
            byte_len,
            read_end: (word >> 16) as u16 as u32,
            write_end: (word >> 32) as u16 as u32,
            write_count: (word >> 48) as u8,
            proc_: if word >> 56 & 1 == 0 {
                Proc::Msg
            } else {
                Proc::Nomsg
            },
        }
    }
}

/// A validated RPC-over-RDMA call: a [`Layout`] bound to the bytes that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `buf[..byte_len]` of the Receive buffer.
    buf: &'a [u8],
    layout: Layout,
}

impl<'a> Message<'a> {
    /// The offsets behind this view.
    #[inline]
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// `rdma_xid`.
    #[inline]
    pub fn xid(&self) -> u32 {
        self.layout.xid
    }
    /// Credits the requester asked for.
    #[inline]
    pub fn credits(&self) -> u32 {
        // Word 2 of a header that decoded, so it is there (read only when asked for).
        xdr_u32(self.buf, 8).unwrap_or(0)
    }
    /// [`Proc::Msg`] or [`Proc::Nomsg`]; nothing else decodes.
    #[inline]
    pub fn proc_(&self) -> Proc {
        self.layout.proc_
    }
    /// Length of the transport header (fixed header plus the three lists).
    #[inline]
    pub fn header_len(&self) -> usize {
        self.layout.header_len as usize
    }
    /// Bytes that arrived.
    #[inline]
    pub fn byte_len(&self) -> usize {
        self.layout.byte_len as usize
    }
    /// Byte range of the inline RPC message in the Receive buffer: everything after the
    /// transport header for RDMA_MSG, empty for RDMA_NOMSG (the call is in the call chunk).
    #[inline]
    pub fn inline_range(&self) -> Range<usize> {
        let start = self.header_len();
        match self.layout.proc_ {
            Proc::Msg => start..self.byte_len(),
            _ => start..start,
        }
    }
    /// The inline RPC message: a slice of the Receive buffer, no copy.
    #[inline]
    pub fn rpc_message(&self) -> &'a [u8] {
        // `buf` ends at byte_len, so the inline message is the rest after the header.
        match self.layout.proc_ {
            Proc::Msg => self.buf.get(self.header_len()..).unwrap_or_default(),
            _ => &[],
        }
    }
    /// The read list.
    #[inline]
    pub fn read_list(&self) -> ReadList<'a> {
        ReadList::new(self.bytes(FIXED_HEADER_LEN, self.layout.read_end as usize))
    }
    /// The write list.
    #[inline]
    pub fn write_list(&self) -> WriteList<'a> {
        let start = self.layout.read_end as usize + XDR_UNIT;
        WriteList::new(
            self.bytes(start, self.layout.write_end as usize),
            self.layout.write_count as usize,
        )
    }
    /// The reply chunk, if the requester provided one.
    #[inline]
    pub fn reply_chunk(&self) -> Option<SegmentList<'a>> {
        // After the write list's 0: the reply discriminator, then count and segments.
        let start = self.layout.write_end as usize + 3 * XDR_UNIT;
        (self.header_len() > start).then(|| SegmentList::new(self.bytes(start, self.header_len())))
    }
    /// Whether the read list is non-empty (constant time, from the layout).
    #[inline]
    pub fn has_read_chunks(&self) -> bool {
        self.layout.read_end as usize != FIXED_HEADER_LEN
    }
    /// Whether all three chunk lists are empty.
    #[inline]
    pub fn lists_empty(&self) -> bool {
        self.layout.header_len as usize == crate::wire::MIN_HEADER_LEN
    }

    /// RFC 8167: whether this is a reverse-direction (backchannel) *reply* arriving on the
    /// forward channel: an RDMA_MSG with all lists empty whose RPC `msg_type` word is REPLY (1).
    #[inline]
    pub fn is_backchannel_reply(&self) -> bool {
        const RPC_REPLY: u32 = 1;
        self.layout.proc_ == Proc::Msg
            && self.lists_empty()
            && xdr_u32(self.rpc_message(), XDR_UNIT).is_some_and(|msg_type| msg_type == RPC_REPLY)
    }

    #[inline]
    fn bytes(&self, start: usize, end: usize) -> &'a [u8] {
        self.buf.get(start..end).unwrap_or_default()
    }
}

/// Decodes and binds: [`decode_layout`] then [`Layout::message`].
///
/// `buf` is the Receive buffer and `byte_len` what the completion says arrived: nothing past
/// `byte_len` is read (with persistent buffers those bytes are an earlier message's). A
/// malformed header maps to the reply RFC 8166 asks for, built from the bytes that arrived:
///
/// ```
/// use rpcrdma_core::wire::{decode, DecodeLimits, ErrorReply, ErrorReplyKind};
///
/// // RDMA_MSG, three empty lists, then a 4-byte "RPC message".
/// let mut buf = [0u8; 64];
/// for (i, w) in [7u32, 1, 32, 0, 0, 0, 0, 0xabcd].iter().enumerate() {
///     buf[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
/// }
/// let msg = decode(&buf, 32, &DecodeLimits::default()).unwrap();
/// assert_eq!(msg.xid(), 7);
/// assert_eq!(msg.rpc_message(), &0xabcd_u32.to_be_bytes()); // a slice of `buf`: no copy
///
/// // The same bytes with version 2: ERR_VERS with the supported range, echoing the xid.
/// buf[4..8].copy_from_slice(&2u32.to_be_bytes());
/// let err = decode(&buf, 32, &DecodeLimits::default()).unwrap_err();
/// let reply = ErrorReply::for_error(&buf[..32], &err, 32).expect("answered, not dropped");
/// assert_eq!(reply.xid, 7);
/// assert!(matches!(reply.kind, ErrorReplyKind::Vers { low: 1, high: 1 }));
/// ```
///
/// # Errors
/// As [`decode_layout`].
#[inline]
pub fn decode<'a>(
    buf: &'a [u8],
    byte_len: usize,
    limits: &DecodeLimits,
) -> Result<Message<'a>, DecodeError> {
    decode_layout(buf, byte_len, limits).map(|layout| layout.message(buf))
}

/// Decodes the message a Receive completion delivered: `byte_len` bytes at the start of `buf`.
///
/// Only `buf[..byte_len]` is read. On success every chunk list of the message satisfies the
/// invariants listed in the [module docs](super). `byte_len` fits in 32 bits whenever it fits
/// in `buf` (Receive buffers are at most 64 KiB; larger buffers are rejected as
/// [`DecodeError::ByteLenExceedsBuffer`] past `u32::MAX`).
///
/// # Errors
/// A [`DecodeError`] naming the first rule the message breaks; see
/// [`DecodeError::disposition`] for the reply it calls for.
#[inline(always)]
pub fn decode_layout(
    buf: &[u8],
    byte_len: usize,
    limits: &DecodeLimits,
) -> Result<Layout, DecodeError> {
    match Layout::fast_path(buf, byte_len) {
        Some(layout) => Ok(layout),
        None => decode_layout_general(buf, byte_len, limits),
    }
}

impl Layout {
    /// [`Layout::pack`] of every [`Layout::empty_lists`]: a pool recognises the common call
    /// from its descriptor word with one compare.
    pub(crate) const PACKED_EMPTY_LISTS: u64 = MIN_HEADER_LEN as u64
        | (FIXED_HEADER_LEN as u64) << 16
        | ((FIXED_HEADER_LEN + XDR_UNIT) as u64) << 32;

    /// The layout of an RDMA_MSG with three empty lists.
    #[inline(always)]
    pub(crate) const fn empty_lists(xid: u32, byte_len: u32) -> Layout {
        Layout {
            xid,
            header_len: MIN_HEADER_LEN as u32,
            byte_len,
            read_end: FIXED_HEADER_LEN as u32,
            write_end: (FIXED_HEADER_LEN + XDR_UNIT) as u32,
            write_count: 0,
            proc_: Proc::Msg,
        }
    }

    /// The message over `buf`, which is already exactly `buf[..byte_len]` of its Receive buffer.
    #[inline(always)]
    pub(crate) fn message_exact<'a>(&self, buf: &'a [u8]) -> Message<'a> {
        Message { buf, layout: *self }
    }

    /// The two common calls, recognised without the general decoder; `None` for everything
    /// else (read lists, RDMA_NOMSG, every malformed header), which [`decode_layout`] then
    /// checks in full.
    ///
    /// - RDMA_MSG, version 1, three empty lists: seven words read out of one bounds-checked
    ///   array;
    /// - RDMA_MSG with an empty read list, at most one write chunk and an optional reply chunk
    ///   (an NFS READ, or any call whose reply may be large): see
    ///   [`Layout::fast_path_write_reply`].
    ///
    /// Whenever it returns a layout, it is the one the general decoder returns (a test
    /// enumerates the shapes and every truncation and compares).
    #[inline(always)]
    fn fast_path(buf: &[u8], byte_len: usize) -> Option<Layout> {
        let (b, w) = Self::msg_without_reads(buf, byte_len)?;
        if (header_word(w, 5) | header_word(w, 6)) == 0 {
            return Some(Layout::empty_lists(header_word(w, 0), byte_len as u32));
        }
        Self::fast_path_write_reply(b, header_word(w, 0))
    }

    /// Only the first of [`Layout::fast_path`]'s shapes (RDMA_MSG, three empty lists), for a
    /// caller that stores the layout packed: the result is always
    /// [`Layout::PACKED_EMPTY_LISTS`] plus `xid` and `byte_len`.
    #[inline(always)]
    pub(crate) fn fast_path_empty_lists(buf: &[u8], byte_len: usize) -> Option<Layout> {
        let (_, w) = Self::msg_without_reads(buf, byte_len)?;
        ((header_word(w, 5) | header_word(w, 6)) == 0)
            .then(|| Layout::empty_lists(header_word(w, 0), byte_len as u32))
    }

    /// What both fast paths start from: `buf[..byte_len]` and its first 28 bytes, when they
    /// begin an RDMA_MSG of version 1 with an empty read list and `byte_len` fits 32 bits.
    #[inline(always)]
    fn msg_without_reads(buf: &[u8], byte_len: usize) -> Option<(&[u8], &[u8; MIN_HEADER_LEN])> {
        let b = buf.get(..byte_len)?;
        let w = b.first_chunk::<MIN_HEADER_LEN>()?;
        (header_word(w, 1) == RPCRDMA_VERSION
            && header_word(w, 3) == Proc::Msg.to_wire()
            && header_word(w, 4) == 0
            && byte_len <= u32::MAX as usize)
            .then_some((b, w))
    }

    /// RDMA_MSG, version 1 and an empty read list already checked on `b` (exactly the bytes
    /// that arrived, at least 28, at most `u32::MAX`): one write chunk of 1 ..= 16 segments
    /// or none, then a reply chunk of 1 ..= 16 segments or none. Anything else (a second write
    /// chunk, a bad discriminator or count, a truncation) is `None`, for the general decoder
    /// to name.
    #[inline]
    fn fast_path_write_reply(b: &[u8], xid: u32) -> Option<Layout> {
        let mut at = FIXED_HEADER_LEN + XDR_UNIT;
        let mut write_count = 0;
        if xdr_u32(b, at)? == 1 {
            at = Self::fast_segments(b, at + XDR_UNIT, MAX_WRITE_SEGMENTS)?;
            write_count = 1;
        }
        if xdr_u32(b, at)? != 0 {
            return None;
        }
        let write_end = at;
        at += XDR_UNIT;
        at = match xdr_u32(b, at)? {
            0 => at + XDR_UNIT,
            1 => Self::fast_segments(b, at + XDR_UNIT, MAX_REPLY_SEGMENTS)?,
            _ => return None,
        };
        Some(Layout {
            xid,
            header_len: at as u32,
            byte_len: b.len() as u32,
            read_end: FIXED_HEADER_LEN as u32,
            write_end: write_end as u32,
            write_count,
            proc_: Proc::Msg,
        })
    }

    /// `count, segment × count` at `at` with `1 ≤ count ≤ max`, all inside `b`: the offset
    /// after the segments. Offsets stay far below overflow (`at` is inside `b`, `count ≤ 16`).
    #[inline(always)]
    fn fast_segments(b: &[u8], at: usize, max: usize) -> Option<usize> {
        let count = xdr_u32(b, at)? as usize;
        if count.wrapping_sub(1) >= max {
            return None;
        }
        let end = at + XDR_UNIT + count * SEGMENT_LEN;
        (end <= b.len()).then_some(end)
    }
}

/// Word `i` (< 7) of the first 28 bytes of a header. The fast paths' own reader rather than
/// [`xdr_u32`](super::xdr_u32): over a fixed array with constant indices it compiles to plain
/// loads, with no bounds check and no `Option`.
#[inline(always)]
fn header_word(w: &[u8; MIN_HEADER_LEN], i: usize) -> u32 {
    u32::from_be_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]])
}

/// Every header the fast path does not take, with all checks.
#[inline(never)]
pub(crate) fn decode_layout_general(
    buf: &[u8],
    byte_len: usize,
    limits: &DecodeLimits,
) -> Result<Layout, DecodeError> {
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
    while present(b, at, ListKind::Read)? {
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
    let read_end = at;
    let read_items = ReadList::new(b.get(read_start..at).unwrap_or_default());
    at += XDR_UNIT;

    // Write list: { 1, count, segment × count }* 0
    let mut write_count = 0usize;
    while present(b, at, ListKind::Write)? {
        if write_count == MAX_WRITE_CHUNKS {
            return Err(DecodeError::TooManyWriteChunks);
        }
        let (_, end) = counted_segments(b, at + XDR_UNIT, ListKind::Write, MAX_WRITE_SEGMENTS)?;
        at = end;
        write_count += 1;
    }
    let write_end = at;
    at += XDR_UNIT;

    // Reply chunk: 1, count, segment × count | 0
    if present(b, at, ListKind::Reply)? {
        let (_, end) = counted_segments(b, at + XDR_UNIT, ListKind::Reply, MAX_REPLY_SEGMENTS)?;
        at = end;
    } else {
        at += XDR_UNIT;
    }

    if read_end != FIXED_HEADER_LEN || proc_ == Proc::Nomsg {
        let inline_len = if proc_ == Proc::Msg { byte_len - at } else { 0 };
        check_read_list(read_items, proc_, inline_len, limits)?;
    }
    // Offsets are < byte_len <= buffer size; a buffer past 4 GiB is not a Receive buffer.
    let narrow = |v: usize| {
        u32::try_from(v).map_err(|_| DecodeError::ByteLenExceedsBuffer {
            byte_len,
            buffer_len: buf.len(),
        })
    };
    Ok(Layout {
        xid: header.xid(),
        header_len: narrow(at)?,
        byte_len: narrow(byte_len)?,
        read_end: narrow(read_end)?,
        write_end: narrow(write_end)?,
        write_count: write_count as u8,
        proc_,
    })
}

/// The word at `at`, or [`DecodeError::Truncated`].
#[inline]
pub(crate) fn word(b: &[u8], at: usize) -> Result<u32, DecodeError> {
    xdr_u32(b, at).ok_or(DecodeError::Truncated { at, len: b.len() })
}

/// The list discriminator at `at`: `true` for 1 (an item follows), `false` for 0 (the list
/// ends); anything else is [`DecodeError::BadDiscriminator`].
#[inline]
pub(crate) fn present(b: &[u8], at: usize, list: ListKind) -> Result<bool, DecodeError> {
    match word(b, at)? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(DecodeError::BadDiscriminator { list, value, at }),
    }
}

/// Parses `count, segment × count` at `at`; returns the segments and the offset after them.
/// The count is checked against `max` before it is multiplied, so no arithmetic can wrap.
pub(crate) fn counted_segments(
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
///
/// Positions count in the reassembled RPC message. Without a call chunk, the base the data
/// chunks are inserted into is the inline body; with one (position zero: RDMA_NOMSG, or an
/// RDMA_MSG that moved its call into a chunk, which RFC 8166 permits), the base is the call
/// chunk's data and every data chunk's place must lie within it.
fn check_read_list(
    list: ReadList<'_>,
    proc_: Proc,
    inline_len: usize,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    let max = limits.max_read_payload;
    let mut total: u32 = 0;
    // The call chunk's length: the leading items at position zero.
    let mut call_len: u64 = 0;
    let mut previous: Option<u32> = None;

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
        if let Some(previous) = previous {
            if position < previous {
                return Err(DecodeError::ReadPositionsOutOfOrder { previous, position });
            }
        }
        if position == 0 {
            call_len += length as u64;
        }
        previous = Some(position);
    }

    let has_call_chunk = call_len != 0;
    if proc_ == Proc::Nomsg && !has_call_chunk {
        return Err(DecodeError::NomsgWithoutCallChunk);
    }
    let base_len = if has_call_chunk {
        call_len
    } else {
        inline_len as u64
    };
    // Data chunks: where each goes in the base, in order and without overlap.
    let mut data_before: u64 = 0;
    let mut last: Option<(u32, u64)> = None;
    for chunk in list.chunks().filter(|c| c.position != 0) {
        let position = chunk.position;
        if let Some((prev, prev_len)) = last {
            if (position as u64) < prev as u64 + xdr_roundup_u64(prev_len) {
                return Err(DecodeError::OverlappingReadChunks {
                    previous: prev,
                    position,
                });
            }
        }
        let offset = (position as u64).saturating_sub(data_before);
        if (position as u64) < data_before || offset > base_len {
            return Err(DecodeError::ReadPositionBeyondInline {
                position,
                inline_len: usize::try_from(base_len).unwrap_or(usize::MAX),
            });
        }
        data_before += xdr_roundup_u64(chunk.length);
        last = Some((position, chunk.length));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a header of words: fixed header with `proc_`, then `lists`, then two words of
    /// RPC message.
    fn header(proc_: u32, lists: &[u32]) -> ([u8; 1200], usize) {
        let mut out = [0u8; 1200];
        let words = [7u32, 1, 32, proc_]
            .into_iter()
            .chain(lists.iter().copied())
            .chain([0xdead_beef, 0]);
        let mut n = 0;
        for (i, w) in words.enumerate() {
            crate::wire::put_xdr_u32(&mut out, 4 * i, w);
            n = 4 * i + 4;
        }
        (out, n)
    }

    fn push(out: &mut [u32; 256], at: &mut usize, words: &[u32]) {
        for &w in words {
            out[*at] = w;
            *at += 1;
        }
    }

    fn segments(out: &mut [u32; 256], at: &mut usize, count: u32) {
        for s in 0..count.min(20) {
            push(out, at, &[0x100 + s, 4096, 0, s * 4096]);
        }
    }

    /// The fast paths agree with the general decoder on every shape they could take and on
    /// every truncation of each: read discriminator, write discriminator and count, the word
    /// after the write chunk, reply discriminator and count.
    #[test]
    fn test_fast_path_agrees_with_general_decoder() {
        let counts = [0u32, 1, 2, 16, 17, 0x1000_0001, u32::MAX];
        let discs = [0u32, 1, 2];
        let limits = DecodeLimits::DEFAULT;
        let mut taken = 0;
        for proc_ in [0u32, 1] {
            for read in [0u32, 1] {
                for write in discs {
                    for wcount in counts {
                        for after_write in discs {
                            for reply in discs {
                                for rcount in counts {
                                    let mut lists = [0u32; 256];
                                    let mut at = 0;
                                    push(&mut lists, &mut at, &[read, write]);
                                    if write == 1 {
                                        push(&mut lists, &mut at, &[wcount]);
                                        segments(&mut lists, &mut at, wcount);
                                        push(&mut lists, &mut at, &[after_write]);
                                    }
                                    push(&mut lists, &mut at, &[reply]);
                                    if reply == 1 {
                                        push(&mut lists, &mut at, &[rcount]);
                                        segments(&mut lists, &mut at, rcount);
                                    }
                                    let (buf, n) = header(proc_, &lists[..at]);
                                    for len in 0..=n {
                                        if let Some(l) = Layout::fast_path_empty_lists(&buf, len) {
                                            assert_eq!(l.pack(), Layout::PACKED_EMPTY_LISTS);
                                            assert_eq!(
                                                Ok(l),
                                                decode_layout_general(&buf, len, &limits)
                                            );
                                        }
                                        let fast = Layout::fast_path(&buf, len);
                                        let general = decode_layout_general(&buf, len, &limits);
                                        if let Ok(l) = general {
                                            let word = l.pack();
                                            assert_eq!(
                                                Layout::unpack(word, l.xid(), l.byte_len() as u32),
                                                l
                                            );
                                        }
                                        if let Some(layout) = fast {
                                            taken += 1;
                                            assert_eq!(Ok(layout), general, "len {len}");
                                        }
                                        assert_eq!(
                                            decode_layout(&buf, len, &limits),
                                            general,
                                            "len {len}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(taken > 1000, "the fast paths were taken {taken} times");
    }

    proptest::proptest! {
        /// Random bytes over a valid write-and-reply header: wherever the fast path answers,
        /// the general decoder gives the same layout.
        #[test]
        fn prop_fast_path_matches_general(
            flips in proptest::collection::vec((0usize..120, proptest::num::u8::ANY), 0..4),
            len in 0usize..140,
        ) {
            let mut lists = [0u32; 256];
            let mut at = 0;
            push(&mut lists, &mut at, &[0, 1, 2]);
            segments(&mut lists, &mut at, 2);
            push(&mut lists, &mut at, &[0, 1, 1]);
            segments(&mut lists, &mut at, 1);
            let (mut buf, n) = header(0, &lists[..at]);
            for (i, v) in flips { buf[i] = v; }
            let len = len.min(n);
            let limits = DecodeLimits::DEFAULT;
            let general = decode_layout_general(&buf, len, &limits);
            if let Some(layout) = Layout::fast_path(&buf, len) {
                proptest::prop_assert_eq!(Ok(layout), general);
            }
            proptest::prop_assert_eq!(decode_layout(&buf, len, &limits), general);
        }
    }
}
