//! The requester's side of a reply: [`decode_reply`] parses the transport header a responder
//! sends back (RFC 8166 §3.5, §4.5), zero-copy. What it accepts is in its docs.

use core::fmt;

use super::message::{counted_segments, present, word};
use super::{
    rdma_err, DecodeError, ErrorReply, ErrorReplyKind, Header, ListKind, Proc, SegmentList,
    ERR_CHUNK_LEN, ERR_VERS_LEN, FIXED_HEADER_LEN, MAX_REPLY_SEGMENTS, MAX_WRITE_CHUNKS,
    MAX_WRITE_SEGMENTS, RPCRDMA_VERSION, XDR_UNIT,
};

/// Why a reply could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReplyError {
    /// A rule the call decoder enforces too: a short fixed header
    /// ([`DecodeError::TooShortForHeader`]), `vers` other than 1 on RDMA_MSG / RDMA_NOMSG
    /// ([`DecodeError::UnsupportedVersion`]), a truncation, a bad list discriminator, a chunk
    /// of 0 segments or more than the capacity, more write chunks than the capacity.
    Malformed(DecodeError),
    /// `rdma_proc` is not RDMA_MSG, RDMA_NOMSG or RDMA_ERROR.
    UnexpectedProc {
        /// The procedure value received.
        proc_: u32,
    },
    /// The reply carries a read list: a responder never asks the requester to be read from.
    ReadListInReply,
    /// An RDMA_NOMSG reply without a reply chunk: the RPC reply is nowhere.
    NomsgWithoutReplyChunk,
    /// An RDMA_ERROR whose `rdma_err` is neither ERR_VERS nor ERR_CHUNK.
    UnknownErrorCode {
        /// The code received.
        code: u32,
    },
    /// Bytes follow a header after which nothing may come (RDMA_NOMSG, RDMA_ERROR).
    TrailingBytes {
        /// Where the header ends.
        header_len: usize,
        /// Bytes received.
        len: usize,
    },
}

impl From<DecodeError> for ReplyError {
    fn from(error: DecodeError) -> Self {
        ReplyError::Malformed(error)
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ReplyError::Malformed(ref e) => write!(f, "reply header: {e}"),
            ReplyError::UnexpectedProc { proc_ } => write!(
                f,
                "reply rdma_proc {proc_} is not RDMA_MSG, RDMA_NOMSG or RDMA_ERROR"
            ),
            ReplyError::ReadListInReply => write!(f, "a reply carries a read list"),
            ReplyError::NomsgWithoutReplyChunk => {
                write!(f, "RDMA_NOMSG reply without a reply chunk")
            }
            ReplyError::UnknownErrorCode { code } => {
                write!(
                    f,
                    "RDMA_ERROR code {code} is neither ERR_VERS nor ERR_CHUNK"
                )
            }
            ReplyError::TrailingBytes { header_len, len } => write!(
                f,
                "{len} bytes received where the {header_len}-byte header must be the whole message"
            ),
        }
    }
}

impl core::error::Error for ReplyError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ReplyError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

/// An RDMA_MSG or RDMA_NOMSG reply: views of the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcReply<'a> {
    /// `rdma_xid`: the call this answers.
    pub xid: u32,
    /// `rdma_credit`: the responder's grant.
    pub credits: u32,
    /// [`Proc::Msg`] (the RPC reply is inline) or [`Proc::Nomsg`] (it is in the reply chunk).
    pub proc_: Proc,
    /// The write chunk the responder echoed, its segments carrying the lengths it wrote.
    pub write_chunk: Option<SegmentList<'a>>,
    /// The reply chunk, its segments carrying the lengths written; always present for
    /// RDMA_NOMSG.
    pub reply_chunk: Option<SegmentList<'a>>,
    /// Length of the transport header.
    pub header_len: usize,
    /// The inline RPC reply (everything after the header); empty for RDMA_NOMSG.
    pub rpc_message: &'a [u8],
}

/// A reply as the requester receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// RDMA_MSG or RDMA_NOMSG.
    Rpc(RpcReply<'a>),
    /// RDMA_ERROR: ERR_VERS or ERR_CHUNK (with the request's `vers` echoed).
    Error(ErrorReply),
}

impl Reply<'_> {
    /// `rdma_xid`.
    pub fn xid(&self) -> u32 {
        match self {
            Reply::Rpc(r) => r.xid,
            Reply::Error(e) => e.xid,
        }
    }

    /// `rdma_credit`: the responder's grant.
    pub fn credits(&self) -> u32 {
        match self {
            Reply::Rpc(r) => r.credits,
            Reply::Error(e) => e.credits,
        }
    }

    /// `rdma_proc`.
    pub fn proc_(&self) -> Proc {
        match self {
            Reply::Rpc(r) => r.proc_,
            Reply::Error(_) => Proc::Error,
        }
    }
}

/// Parses a reply on the requester's side: `received` is exactly the bytes that arrived.
///
/// It accepts what a responder emits:
///
/// - **RDMA_MSG / RDMA_NOMSG**: the fixed header (`vers` 1), an empty read list, a write list
///   of at most [`MAX_WRITE_CHUNKS`] chunk(s) whose segments carry the lengths written
///   (possibly fewer than offered, possibly 0), an optional reply chunk with its written
///   lengths, then — for RDMA_MSG — the RPC reply inline. An RDMA_NOMSG reply went whole
///   through the reply chunk, so it must carry one and nothing may follow its header.
/// - **RDMA_ERROR**: the fixed header (its `vers` is the request's, echoed, so any value) and
///   ERR_VERS with the supported range, or ERR_CHUNK; nothing may follow.
///
/// Every word is bounds-checked before it is read, with the same helpers and fixed capacities
/// as the call decoder ([`decode`](super::decode)); segment counts are checked against
/// [`MAX_WRITE_SEGMENTS`] / [`MAX_REPLY_SEGMENTS`] before anything is multiplied. Never
/// panics.
///
/// # Errors
/// A [`ReplyError`] naming the first rule the reply breaks.
pub fn decode_reply(received: &[u8]) -> Result<Reply<'_>, ReplyError> {
    let header = Header::new_checked(received)?;
    let (xid, vers, credits) = (header.xid(), header.vers(), header.credits());
    let proc_raw = header.proc_raw();
    let proc_ = match Proc::from_wire(proc_raw) {
        Some(Proc::Error) => return decode_error(received, xid, vers, credits).map(Reply::Error),
        Some(p @ (Proc::Msg | Proc::Nomsg)) => p,
        Some(Proc::Msgp | Proc::Done) | None => {
            return Err(ReplyError::UnexpectedProc { proc_: proc_raw })
        }
    };
    if vers != RPCRDMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { vers }.into());
    }

    let mut at = FIXED_HEADER_LEN;
    if present(received, at, ListKind::Read)? {
        return Err(ReplyError::ReadListInReply);
    }
    at += XDR_UNIT;

    let mut write_chunk = None;
    let mut write_count = 0;
    while present(received, at, ListKind::Write)? {
        if write_count == MAX_WRITE_CHUNKS {
            return Err(DecodeError::TooManyWriteChunks.into());
        }
        let (segments, end) =
            counted_segments(received, at + XDR_UNIT, ListKind::Write, MAX_WRITE_SEGMENTS)?;
        write_chunk = Some(segments);
        write_count += 1;
        at = end;
    }
    at += XDR_UNIT;

    let reply_chunk = if present(received, at, ListKind::Reply)? {
        let (segments, end) =
            counted_segments(received, at + XDR_UNIT, ListKind::Reply, MAX_REPLY_SEGMENTS)?;
        at = end;
        Some(segments)
    } else {
        at += XDR_UNIT;
        None
    };

    let rpc_message = match proc_ {
        Proc::Nomsg if reply_chunk.is_none() => return Err(ReplyError::NomsgWithoutReplyChunk),
        Proc::Nomsg => {
            whole(received, at)?;
            &[]
        }
        _ => received.get(at..).unwrap_or_default(),
    };
    Ok(Reply::Rpc(RpcReply {
        xid,
        credits,
        proc_,
        write_chunk,
        reply_chunk,
        header_len: at,
        rpc_message,
    }))
}

/// The body of an RDMA_ERROR after its fixed header.
fn decode_error(
    received: &[u8],
    xid: u32,
    vers: u32,
    credits: u32,
) -> Result<ErrorReply, ReplyError> {
    let at = FIXED_HEADER_LEN;
    let (kind, len) = match word(received, at)? {
        rdma_err::ERR_VERS => {
            let low = word(received, at + XDR_UNIT)?;
            let high = word(received, at + 2 * XDR_UNIT)?;
            (ErrorReplyKind::Vers { low, high }, ERR_VERS_LEN)
        }
        rdma_err::ERR_CHUNK => (ErrorReplyKind::Chunk, ERR_CHUNK_LEN),
        code => return Err(ReplyError::UnknownErrorCode { code }),
    };
    whole(received, len)?;
    Ok(ErrorReply {
        xid,
        vers,
        credits,
        kind,
    })
}

/// Checks that a header of `header_len` bytes is the whole message.
fn whole(received: &[u8], header_len: usize) -> Result<(), ReplyError> {
    if received.len() == header_len {
        Ok(())
    } else {
        Err(ReplyError::TrailingBytes {
            header_len,
            len: received.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Segment;

    /// `words` big-endian in a buffer, and their byte length.
    fn fixture(words: &[u32]) -> ([u8; 256], usize) {
        let mut out = [0u8; 256];
        let n = crate::wire::put_xdr_words(&mut out, words).unwrap();
        (out, n)
    }

    const MSG_INLINE: &[u32] = &[0x11, 1, 32, 0, 0, 0, 0, 0x11, 1, 0];
    #[rustfmt::skip]
    const MSG_WRITE: &[u32] = &[
        0x12, 1, 31, 0,
        0,
        1, 2, 0xd1, 1500, 0, 0x1000, 0xd2, 0, 1, 0x2000,
        0,
        0,
        0x12, 1, 0, 0, 1500,
    ];
    #[rustfmt::skip]
    const NOMSG_REPLY: &[u32] = &[
        0x13, 1, 30, 1,
        0,
        0,
        1, 1, 0xc3, 2000, 3, 0,
    ];
    const ERR_VERS: &[u32] = &[0x14, 2, 29, 4, 1, 1, 1];
    const ERR_CHUNK: &[u32] = &[0x15, 1, 28, 4, 2];

    #[test]
    fn test_parse_msg_inline() {
        let (b, n) = fixture(MSG_INLINE);
        let Ok(Reply::Rpc(r)) = decode_reply(&b[..n]) else {
            panic!("not an RPC reply");
        };
        assert_eq!((r.xid, r.credits, r.proc_), (0x11, 32, Proc::Msg));
        assert_eq!((r.write_chunk, r.reply_chunk), (None, None));
        assert_eq!(r.header_len, 28);
        assert_eq!(r.rpc_message, &[0, 0, 0, 0x11, 0, 0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn test_parse_write_chunk() {
        let (b, n) = fixture(MSG_WRITE);
        let Ok(Reply::Rpc(r)) = decode_reply(&b[..n]) else {
            panic!("not an RPC reply");
        };
        assert_eq!((r.xid, r.credits, r.proc_), (0x12, 31, Proc::Msg));
        let w = r.write_chunk.unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            w.get(0),
            Some(Segment {
                handle: 0xd1,
                length: 1500,
                offset: 0x1000
            })
        );
        assert_eq!(
            w.get(1).map(|s| (s.length, s.offset)),
            Some((0, 0x1_0000_2000))
        );
        assert_eq!(w.total_len(), 1500);
        assert_eq!(r.reply_chunk, None);
        assert_eq!(r.header_len, 16 + 4 + 8 + 32 + 4 + 4);
        assert_eq!(r.rpc_message.len(), 5 * 4);
    }

    #[test]
    fn test_parse_nomsg_reply_chunk() {
        let (b, n) = fixture(NOMSG_REPLY);
        let Ok(Reply::Rpc(r)) = decode_reply(&b[..n]) else {
            panic!("not an RPC reply");
        };
        assert_eq!((r.xid, r.credits, r.proc_), (0x13, 30, Proc::Nomsg));
        assert_eq!(r.write_chunk, None);
        let c = r.reply_chunk.unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.get(0).map(|s| (s.handle, s.length, s.offset)),
            Some((0xc3, 2000, 3 << 32))
        );
        assert_eq!(r.header_len, 48);
        assert!(r.rpc_message.is_empty());
    }

    #[test]
    fn test_parse_err_vers() {
        let (b, n) = fixture(ERR_VERS);
        let r = decode_reply(&b[..n]).unwrap();
        assert_eq!(
            r,
            Reply::Error(ErrorReply {
                xid: 0x14,
                vers: 2,
                credits: 29,
                kind: ErrorReplyKind::Vers { low: 1, high: 1 },
            })
        );
        assert_eq!((r.xid(), r.credits(), r.proc_()), (0x14, 29, Proc::Error));
    }

    #[test]
    fn test_parse_err_chunk() {
        let (b, n) = fixture(ERR_CHUNK);
        let r = decode_reply(&b[..n]).unwrap();
        assert_eq!(
            r,
            Reply::Error(ErrorReply {
                xid: 0x15,
                vers: 1,
                credits: 28,
                kind: ErrorReplyKind::Chunk,
            })
        );
    }

    /// What [`ErrorReply::emit`] writes, [`decode_reply`] reads back.
    #[test]
    fn test_parse_emitted_error_replies() {
        for kind in [
            ErrorReplyKind::Chunk,
            ErrorReplyKind::Vers { low: 1, high: 1 },
        ] {
            let reply = ErrorReply {
                xid: 9,
                vers: 7,
                credits: 3,
                kind,
            };
            let mut out = [0u8; 32];
            let n = reply.emit(&mut out).unwrap();
            assert_eq!(decode_reply(&out[..n]), Ok(Reply::Error(reply)));
        }
    }

    #[test]
    fn test_parse_rejects() {
        use DecodeError as D;
        use ReplyError as R;
        let cases: &[(&[u32], ReplyError)] = &[
            (
                &[1, 2, 32, 0, 0, 0, 0],
                R::Malformed(D::UnsupportedVersion { vers: 2 }),
            ),
            (&[1, 1, 32, 2, 0, 0, 0], R::UnexpectedProc { proc_: 2 }),
            (&[1, 1, 32, 3], R::UnexpectedProc { proc_: 3 }),
            (&[1, 1, 32, 9, 0, 0, 0], R::UnexpectedProc { proc_: 9 }),
            (
                &[1, 1, 32, 0, 1, 0, 1, 8, 0, 0, 0, 0, 0],
                R::ReadListInReply,
            ),
            (
                &[1, 1, 32, 0, 0, 7, 0],
                R::Malformed(D::BadDiscriminator {
                    list: ListKind::Write,
                    value: 7,
                    at: 20,
                }),
            ),
            (
                &[1, 1, 32, 0, 0, 0, 2],
                R::Malformed(D::BadDiscriminator {
                    list: ListKind::Reply,
                    value: 2,
                    at: 24,
                }),
            ),
            (
                &[1, 1, 32, 0, 0, 1, 0, 0, 0],
                R::Malformed(D::EmptyChunk {
                    list: ListKind::Write,
                }),
            ),
            (
                &[1, 1, 32, 0, 0, 1, 0x1000_0001, 0, 0],
                R::Malformed(D::TooManySegments {
                    list: ListKind::Write,
                    count: 0x1000_0001,
                    max: MAX_WRITE_SEGMENTS,
                }),
            ),
            (
                &[1, 1, 32, 0, 0, 0, 1, 17],
                R::Malformed(D::TooManySegments {
                    list: ListKind::Reply,
                    count: 17,
                    max: MAX_REPLY_SEGMENTS,
                }),
            ),
            (
                &[1, 1, 32, 0, 0, 1, 1, 5, 0, 0, 0, 1, 1, 5, 0, 0, 0, 0, 0],
                R::Malformed(D::TooManyWriteChunks),
            ),
            (&[1, 1, 32, 1, 0, 0, 0], R::NomsgWithoutReplyChunk),
            (
                &[1, 1, 32, 1, 0, 0, 1, 1, 5, 9, 0, 0, 0xff],
                R::TrailingBytes {
                    header_len: 48,
                    len: 52,
                },
            ),
            (&[1, 1, 32, 4, 3], R::UnknownErrorCode { code: 3 }),
            (
                &[1, 1, 32, 4, 2, 0],
                R::TrailingBytes {
                    header_len: 20,
                    len: 24,
                },
            ),
            (
                &[1, 2, 32, 4, 1, 1, 1, 0],
                R::TrailingBytes {
                    header_len: 28,
                    len: 32,
                },
            ),
        ];
        for (words, error) in cases {
            let (b, n) = fixture(words);
            assert_eq!(decode_reply(&b[..n]), Err(*error), "{words:?}");
        }
    }

    /// Every strict prefix of every valid reply with a chunk or an error body is an error
    /// (inline replies are valid at any length past their header), and no prefix panics.
    #[test]
    fn test_truncated() {
        for words in [MSG_INLINE, MSG_WRITE, NOMSG_REPLY, ERR_VERS, ERR_CHUNK] {
            let (buf, n) = fixture(words);
            let header_len = match decode_reply(&buf[..n]) {
                Ok(Reply::Rpc(r)) => r.header_len,
                Ok(Reply::Error(e)) => e.buffer_len(),
                Err(e) => panic!("fixture {words:?} does not parse: {e}"),
            };
            for len in 0..header_len {
                let error = decode_reply(&buf[..len]).unwrap_err();
                let expected_kind = match len {
                    0..16 => matches!(
                        error,
                        ReplyError::Malformed(DecodeError::TooShortForHeader { .. })
                    ),
                    _ => matches!(error, ReplyError::Malformed(DecodeError::Truncated { .. })),
                };
                assert!(expected_kind, "{words:?} cut at {len}: {error:?}");
            }
            for len in header_len..n {
                let _ = decode_reply(&buf[..len]);
            }
        }
    }
}
