//! RDMA_ERROR replies (RFC 8166 §5.3.2 / §4.5).
//!
//! The reply echoes the failing request's `rdma_xid` and `rdma_vers` words (RFC 8166's
//! responder-error rules ask for the failing request's xid and version in the reply; the Linux
//! server does the same, also for ERR_VERS), carries this side's
//! credit grant, `rdma_proc` = RDMA_ERROR and the error code. Both echoed words are read only from
//! the bytes that arrived: a reply is built from `&buf[..byte_len]`, never from stale buffer bytes
//! past it, and a message too short for a fixed header gets no reply at all.

use super::{
    put_xdr_u32, rdma_err, xdr_u32, DecodeError, Disposition, Proc, ERR_CHUNK_LEN, ERR_VERS_LEN,
    RPCRDMA_VERSION, XDR_UNIT,
};

/// The body of an RDMA_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ErrorReplyKind {
    /// ERR_VERS with the inclusive range of versions this side supports.
    Vers {
        /// Lowest supported version.
        low: u32,
        /// Highest supported version.
        high: u32,
    },
    /// ERR_CHUNK: the header or chunk lists could not be parsed.
    Chunk,
}

impl ErrorReplyKind {
    /// The `rdma_err` word: [`rdma_err::ERR_VERS`] or [`rdma_err::ERR_CHUNK`].
    pub const fn code(&self) -> u32 {
        match self {
            ErrorReplyKind::Vers { .. } => rdma_err::ERR_VERS,
            ErrorReplyKind::Chunk => rdma_err::ERR_CHUNK,
        }
    }
}

/// An RDMA_ERROR message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ErrorReply {
    /// The failing request's xid.
    pub xid: u32,
    /// The failing request's version word, echoed.
    pub vers: u32,
    /// This side's credit grant.
    pub credits: u32,
    /// ERR_VERS or ERR_CHUNK.
    pub kind: ErrorReplyKind,
}

impl ErrorReply {
    /// The reply a responder sends for `error`, found in `received` (exactly the bytes that
    /// arrived, i.e. `&buf[..byte_len]`), or `None` when the error's disposition is
    /// [`Disposition::Drop`] or `received` holds no fixed header.
    pub fn for_error(received: &[u8], error: &DecodeError, credits: u32) -> Option<ErrorReply> {
        let kind = match error.disposition() {
            Disposition::Drop => return None,
            Disposition::ReplyErrVers => ErrorReplyKind::Vers {
                low: RPCRDMA_VERSION,
                high: RPCRDMA_VERSION,
            },
            Disposition::ReplyErrChunk => ErrorReplyKind::Chunk,
        };
        // Replies need a whole fixed header; decode drops shorter messages anyway.
        xdr_u32(received, 3 * XDR_UNIT)?;
        Some(ErrorReply {
            xid: xdr_u32(received, 0)?,
            vers: xdr_u32(received, XDR_UNIT)?,
            credits,
            kind,
        })
    }

    /// Bytes [`ErrorReply::emit`] writes: 28 for ERR_VERS, 20 for ERR_CHUNK.
    pub const fn buffer_len(&self) -> usize {
        match self.kind {
            ErrorReplyKind::Vers { .. } => ERR_VERS_LEN,
            ErrorReplyKind::Chunk => ERR_CHUNK_LEN,
        }
    }

    /// Writes the reply at the start of `buf`; returns its length, or `None` if `buf` is too
    /// small.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let len = self.buffer_len();
        let out = buf.get_mut(..len)?;
        put_xdr_u32(out, 0, self.xid);
        put_xdr_u32(out, 4, self.vers);
        put_xdr_u32(out, 8, self.credits);
        put_xdr_u32(out, 12, Proc::Error.to_wire());
        put_xdr_u32(out, 16, self.kind.code());
        if let ErrorReplyKind::Vers { low, high } = self.kind {
            put_xdr_u32(out, 20, low);
            put_xdr_u32(out, 24, high);
        }
        Some(len)
    }
}
