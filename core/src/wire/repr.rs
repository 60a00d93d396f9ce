//! [`HeaderRepr`]: the parsed, owned meaning of a transport header, in fixed-capacity storage,
//! and the encoder for headers this side sends.

use heapless::Vec;

use super::{
    put_xdr_u32, Header, ListKind, Message, Proc, ReadSegment, Segment, SegmentList,
    FIXED_HEADER_LEN, MAX_READ_SEGMENTS, MAX_REPLY_SEGMENTS, MAX_WRITE_CHUNKS, MAX_WRITE_SEGMENTS,
    READ_ITEM_LEN, RPCRDMA_VERSION, SEGMENT_LEN, XDR_UNIT,
};

/// One write chunk or the reply chunk: up to 16 segments.
pub type SegmentVec = Vec<Segment, MAX_WRITE_SEGMENTS>;

/// Why a header could not be built or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EmitError {
    /// The output buffer is smaller than [`HeaderRepr::buffer_len`].
    BufferTooSmall {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// More segments or chunks than the list's fixed capacity.
    CapacityExceeded {
        /// The list that is full.
        list: ListKind,
    },
    /// A write or reply chunk with no segment (the peer would reject it).
    EmptyChunk {
        /// The list holding it.
        list: ListKind,
    },
}

impl core::fmt::Display for EmitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EmitError::BufferTooSmall { needed, available } => {
                write!(
                    f,
                    "header needs {needed} bytes but the send buffer has {available}"
                )
            }
            EmitError::CapacityExceeded { list } => {
                write!(f, "{list:?} list is full (fixed capacity)")
            }
            EmitError::EmptyChunk { list } => write!(f, "{list:?} chunk has no segments"),
        }
    }
}

impl core::error::Error for EmitError {}

/// A transport header with its chunk lists, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRepr {
    /// `rdma_xid`.
    pub xid: u32,
    /// `rdma_vers`; 1 for everything this crate emits.
    pub vers: u32,
    /// `rdma_credit`.
    pub credits: u32,
    /// `rdma_proc`: [`Proc::Msg`] or [`Proc::Nomsg`].
    pub proc_: Proc,
    /// Read segments in wire order.
    pub read_list: Vec<ReadSegment, MAX_READ_SEGMENTS>,
    /// Write chunks.
    pub write_list: Vec<SegmentVec, MAX_WRITE_CHUNKS>,
    /// The reply chunk.
    pub reply_chunk: Option<Vec<Segment, MAX_REPLY_SEGMENTS>>,
}

impl HeaderRepr {
    /// An RDMA_MSG reply header with empty chunk lists: the reply travels inline after it.
    pub const fn reply(xid: u32, credits: u32) -> Self {
        HeaderRepr {
            xid,
            vers: RPCRDMA_VERSION,
            credits,
            proc_: Proc::Msg,
            read_list: Vec::new(),
            write_list: Vec::new(),
            reply_chunk: None,
        }
    }

    /// Adds a write chunk (the segments the responder RDMA-Wrote a data item into).
    ///
    /// # Errors
    /// [`EmitError::EmptyChunk`] for no segments, [`EmitError::CapacityExceeded`] for more than
    /// [`MAX_WRITE_CHUNKS`] chunks or [`MAX_WRITE_SEGMENTS`] segments.
    pub fn with_write_chunk(mut self, segments: &[Segment]) -> Result<Self, EmitError> {
        let list = ListKind::Write;
        if segments.is_empty() {
            return Err(EmitError::EmptyChunk { list });
        }
        let chunk =
            SegmentVec::from_slice(segments).map_err(|_| EmitError::CapacityExceeded { list })?;
        self.write_list
            .push(chunk)
            .map_err(|_| EmitError::CapacityExceeded { list })?;
        Ok(self)
    }

    /// Sets the reply chunk (the segments the responder RDMA-Wrote the reply into).
    ///
    /// # Errors
    /// [`EmitError::EmptyChunk`] for no segments, [`EmitError::CapacityExceeded`] for more than
    /// [`MAX_REPLY_SEGMENTS`].
    pub fn with_reply_chunk(mut self, segments: &[Segment]) -> Result<Self, EmitError> {
        let list = ListKind::Reply;
        if segments.is_empty() {
            return Err(EmitError::EmptyChunk { list });
        }
        self.reply_chunk =
            Some(Vec::from_slice(segments).map_err(|_| EmitError::CapacityExceeded { list })?);
        Ok(self)
    }

    /// The owned form of a decoded message. Infallible: the decoder enforces the same capacities.
    pub fn parse(message: &Message<'_>) -> Self {
        let mut repr = HeaderRepr::reply(message.xid(), message.credits());
        repr.proc_ = message.proc_();
        for item in message.read_list().iter() {
            let _ = repr.read_list.push(item);
        }
        for chunk in message.write_list().iter() {
            let _ = repr.write_list.push(segment_vec(chunk));
        }
        repr.reply_chunk = message.reply_chunk().map(segment_vec);
        repr
    }

    /// Bytes [`HeaderRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let reads = self.read_list.len() * (XDR_UNIT + READ_ITEM_LEN);
        let writes: usize = self
            .write_list
            .iter()
            .map(|c| 2 * XDR_UNIT + c.len() * SEGMENT_LEN)
            .sum();
        let reply = match &self.reply_chunk {
            Some(c) => 2 * XDR_UNIT + c.len() * SEGMENT_LEN,
            None => XDR_UNIT,
        };
        FIXED_HEADER_LEN + reads + XDR_UNIT + writes + XDR_UNIT + reply
    }

    /// Writes the header to the start of `buf`; returns its length.
    ///
    /// # Errors
    /// [`EmitError::BufferTooSmall`] if `buf` is shorter than [`HeaderRepr::buffer_len`];
    /// [`EmitError::EmptyChunk`] if a write or reply chunk has no segment.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let needed = self.buffer_len();
        if buf.len() < needed {
            return Err(EmitError::BufferTooSmall {
                needed,
                available: buf.len(),
            });
        }
        if self.write_list.iter().any(|c| c.is_empty()) {
            return Err(EmitError::EmptyChunk {
                list: ListKind::Write,
            });
        }
        if self.reply_chunk.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(EmitError::EmptyChunk {
                list: ListKind::Reply,
            });
        }
        let mut header = Header::new_unchecked(&mut *buf);
        header.set_xid(self.xid);
        header.set_vers(self.vers);
        header.set_credits(self.credits);
        header.set_proc_raw(self.proc_.to_wire());
        let mut at = FIXED_HEADER_LEN;
        for item in &self.read_list {
            put_xdr_u32(buf, at, 1);
            put_xdr_u32(buf, at + XDR_UNIT, item.position);
            item.segment.write(buf, at + 2 * XDR_UNIT);
            at += XDR_UNIT + READ_ITEM_LEN;
        }
        put_xdr_u32(buf, at, 0);
        at += XDR_UNIT;
        for chunk in &self.write_list {
            at = emit_counted(buf, at, chunk);
        }
        put_xdr_u32(buf, at, 0);
        at += XDR_UNIT;
        match &self.reply_chunk {
            Some(chunk) => at = emit_counted(buf, at, chunk),
            None => {
                put_xdr_u32(buf, at, 0);
                at += XDR_UNIT;
            }
        }
        Ok(at)
    }
}

/// The segments of a decoded chunk in fixed-capacity storage. The decoder caps every chunk at
/// the capacity, so nothing is dropped; pushing (rather than `collect`, whose heapless
/// `FromIterator` panics on overflow) keeps `parse` free of panic paths.
fn segment_vec<const M: usize>(chunk: SegmentList<'_>) -> Vec<Segment, M> {
    let mut segments = Vec::new();
    for segment in chunk.iter() {
        if segments.push(segment).is_err() {
            break;
        }
    }
    segments
}

/// Writes `1, count, segments` at `at`; returns the offset after it.
fn emit_counted(buf: &mut [u8], mut at: usize, segments: &[Segment]) -> usize {
    put_xdr_u32(buf, at, 1);
    put_xdr_u32(buf, at + XDR_UNIT, segments.len() as u32);
    at += 2 * XDR_UNIT;
    for seg in segments {
        seg.write(buf, at);
        at += SEGMENT_LEN;
    }
    at
}
