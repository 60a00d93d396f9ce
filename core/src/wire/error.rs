//! Decode errors and what a responder does about each.

use core::fmt;

/// Which chunk list a [`DecodeError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ListKind {
    /// The read list.
    Read,
    /// The write list.
    Write,
    /// The reply chunk.
    Reply,
}

/// What a responder does with a message it could not accept (RFC 8166 §5.3; docs/design.md, "The error-reply rule").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Disposition {
    /// Reply RDMA_ERROR / ERR_VERS advertising the supported range 1..=1.
    ReplyErrVers,
    /// Reply RDMA_ERROR / ERR_CHUNK.
    ReplyErrChunk,
    /// Send nothing; release the Receive buffer.
    Drop,
}

/// Why a received message was rejected. Each variant names the rule that broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The completion claimed more bytes than the Receive buffer holds; the length cannot be
    /// trusted, so nothing in the buffer is. Dropped.
    ByteLenExceedsBuffer {
        /// `byte_len` from the completion.
        byte_len: usize,
        /// Size of the Receive buffer.
        buffer_len: usize,
    },
    /// Fewer than 16 bytes arrived: no complete fixed header, so no xid to answer. Dropped.
    TooShortForHeader {
        /// Bytes that arrived.
        len: usize,
    },
    /// `vers` is not 1. Answered with ERR_VERS.
    UnsupportedVersion {
        /// The version the peer sent.
        vers: u32,
    },
    /// `proc` is RDMA_MSGP or a value RFC 8166 does not define. Answered with ERR_CHUNK.
    UnsupportedProc {
        /// The procedure value the peer sent.
        proc_: u32,
    },
    /// `proc` is RDMA_DONE or RDMA_ERROR, which a requester must not send to a responder. Dropped.
    UnexpectedProc {
        /// The procedure value the peer sent (3 or 4).
        proc_: u32,
    },
    /// The header ends before a word it must contain (list discriminator, count, segment).
    Truncated {
        /// Byte offset where the word or item (read item, segment array) that did not fit starts.
        at: usize,
        /// Bytes that arrived.
        len: usize,
    },
    /// A list discriminator is neither 0 nor 1.
    BadDiscriminator {
        /// The list being parsed.
        list: ListKind,
        /// The value found.
        value: u32,
        /// Its byte offset.
        at: usize,
    },
    /// More read segments than [`super::MAX_READ_SEGMENTS`].
    TooManyReadSegments,
    /// A read segment of length 0 (Linux 6.1 crashed a thread on these).
    ZeroLengthReadSegment {
        /// Index of the segment in the read list.
        index: usize,
    },
    /// A read segment longer than [`super::DecodeLimits::max_read_payload`].
    ReadSegmentTooLong {
        /// Its length.
        length: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The read segment lengths add up past `u32::MAX`.
    ReadLengthOverflow,
    /// The read segments add up past [`super::DecodeLimits::max_read_payload`].
    ReadPayloadTooLong {
        /// Sum of the read segment lengths.
        total: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A read position is not a multiple of 4.
    MisalignedReadPosition {
        /// The position.
        position: u32,
    },
    /// A Read chunk's position, less the chunk data before it, lies past the inline body (or
    /// past the call chunk's data, when the call travels in a position-zero chunk).
    ReadPositionBeyondInline {
        /// The position.
        position: u32,
        /// Length of the inline body.
        inline_len: usize,
    },
    /// A read position is smaller than the one before it.
    ReadPositionsOutOfOrder {
        /// The earlier position.
        previous: u32,
        /// The position that went backwards.
        position: u32,
    },
    /// A Read chunk starts inside the data of the chunk before it.
    OverlappingReadChunks {
        /// The earlier chunk's position.
        previous: u32,
        /// The overlapping chunk's position.
        position: u32,
    },
    /// An RDMA_NOMSG call without a position-zero Read chunk: there is no call to read.
    NomsgWithoutCallChunk,
    /// A write or reply chunk with a segment count of 0.
    EmptyChunk {
        /// The list holding it.
        list: ListKind,
    },
    /// A segment count above what is supported (this also rejects counts whose ×16 would
    /// overflow 32 bits, the shape of CVE-2024-53151).
    TooManySegments {
        /// The list holding the chunk.
        list: ListKind,
        /// The count sent.
        count: u32,
        /// The supported maximum.
        max: usize,
    },
    /// More write chunks than [`super::MAX_WRITE_CHUNKS`].
    TooManyWriteChunks,
}

impl DecodeError {
    /// What a responder does about this error. The one place that maps errors to replies.
    pub const fn disposition(&self) -> Disposition {
        match self {
            DecodeError::ByteLenExceedsBuffer { .. }
            | DecodeError::TooShortForHeader { .. }
            | DecodeError::UnexpectedProc { .. } => Disposition::Drop,
            DecodeError::UnsupportedVersion { .. } => Disposition::ReplyErrVers,
            DecodeError::UnsupportedProc { .. }
            | DecodeError::Truncated { .. }
            | DecodeError::BadDiscriminator { .. }
            | DecodeError::TooManyReadSegments
            | DecodeError::ZeroLengthReadSegment { .. }
            | DecodeError::ReadSegmentTooLong { .. }
            | DecodeError::ReadLengthOverflow
            | DecodeError::ReadPayloadTooLong { .. }
            | DecodeError::MisalignedReadPosition { .. }
            | DecodeError::ReadPositionBeyondInline { .. }
            | DecodeError::ReadPositionsOutOfOrder { .. }
            | DecodeError::OverlappingReadChunks { .. }
            | DecodeError::NomsgWithoutCallChunk
            | DecodeError::EmptyChunk { .. }
            | DecodeError::TooManySegments { .. }
            | DecodeError::TooManyWriteChunks => Disposition::ReplyErrChunk,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::ByteLenExceedsBuffer { byte_len, buffer_len } => write!(
                f,
                "completion byte_len {byte_len} exceeds the {buffer_len}-byte Receive buffer (device or driver fault)"
            ),
            DecodeError::TooShortForHeader { len } => {
                write!(f, "message of {len} bytes is shorter than the 16-byte fixed header")
            }
            DecodeError::UnsupportedVersion { vers } => {
                write!(f, "RPC-over-RDMA version {vers} is not supported (only version 1)")
            }
            DecodeError::UnsupportedProc { proc_ } => {
                write!(f, "rdma_proc {proc_} is not supported (RDMA_MSG and RDMA_NOMSG only)")
            }
            DecodeError::UnexpectedProc { proc_ } => {
                write!(f, "rdma_proc {proc_} (RDMA_DONE/RDMA_ERROR) is not valid from a requester")
            }
            DecodeError::Truncated { at, len } => {
                write!(f, "header truncated: the item at byte {at} runs past the {len} bytes received")
            }
            DecodeError::BadDiscriminator { list, value, at } => {
                write!(f, "{list:?} list discriminator {value} at byte {at} is neither 0 nor 1")
            }
            DecodeError::TooManyReadSegments => {
                write!(f, "more than {} read segments", super::MAX_READ_SEGMENTS)
            }
            DecodeError::ZeroLengthReadSegment { index } => {
                write!(f, "read segment {index} has length 0")
            }
            DecodeError::ReadSegmentTooLong { length, max } => {
                write!(f, "read segment of {length} bytes exceeds the {max}-byte maximum payload")
            }
            DecodeError::ReadLengthOverflow => write!(f, "read segment lengths overflow 32 bits"),
            DecodeError::ReadPayloadTooLong { total, max } => {
                write!(f, "read chunks total {total} bytes, above the {max}-byte maximum payload")
            }
            DecodeError::MisalignedReadPosition { position } => {
                write!(f, "read position {position} is not a multiple of 4")
            }
            DecodeError::ReadPositionBeyondInline { position, inline_len } => write!(
                f,
                "read position {position} lies beyond the {inline_len}-byte inline message"
            ),
            DecodeError::ReadPositionsOutOfOrder { previous, position } => {
                write!(f, "read position {position} follows larger position {previous}")
            }
            DecodeError::OverlappingReadChunks { previous, position } => write!(
                f,
                "Read chunk at position {position} overlaps the chunk at position {previous}"
            ),
            DecodeError::NomsgWithoutCallChunk => {
                write!(f, "RDMA_NOMSG call without a position-zero Read chunk")
            }
            DecodeError::EmptyChunk { list } => {
                write!(f, "{list:?} chunk with a segment count of 0")
            }
            DecodeError::TooManySegments { list, count, max } => {
                write!(f, "{list:?} chunk segment count {count} exceeds the supported {max}")
            }
            DecodeError::TooManyWriteChunks => {
                write!(f, "more than {} write chunks", super::MAX_WRITE_CHUNKS)
            }
        }
    }
}

impl core::error::Error for DecodeError {}
