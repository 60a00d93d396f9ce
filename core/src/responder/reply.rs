//! Reply headers and the mapping of local bytes onto the requester's segments.

use heapless::Vec;

use crate::device::{SendOp, SendWr, Sge};
use crate::wire::{
    put_xdr_u32, Proc, SegmentList, FIXED_HEADER_LEN, MIN_HEADER_LEN, RPCRDMA_VERSION, SEGMENT_LEN,
};

/// Most segments a chunk carries (the decoder's caps for write and reply chunks).
pub(crate) const MAX_CHUNK_SEGMENTS: usize = 16;

/// Lengths written into each segment of one chunk.
pub(crate) type Written = Vec<u32, MAX_CHUNK_SEGMENTS>;

/// Offset of the credits word in a reply header.
pub(crate) const CREDITS_OFFSET: usize = 8;

/// Bytes of a reply header: fixed header, empty read list, the write list echoed (`write`:
/// segment counts of the call's write chunks), and the reply chunk (`reply`: its segment count
/// when the reply uses it, else absent).
#[inline]
pub(crate) fn header_len(write: Option<usize>, reply: Option<usize>) -> usize {
    let writes = write.map_or(0, |n| 8 + n * SEGMENT_LEN);
    let reply = reply.map_or(4, |n| 8 + n * SEGMENT_LEN);
    FIXED_HEADER_LEN + 4 + writes + 4 + reply
}

/// Writes a reply header at the start of `out`: RDMA_MSG or RDMA_NOMSG, the call's write chunk
/// (if any) with the lengths written (zero for unused segments), and the reply chunk with its
/// written lengths when `reply` is given. Returns its length (0 if `out` is too small).
#[inline]
pub(crate) fn emit_header(
    out: &mut [u8],
    xid: u32,
    credits: u32,
    proc_: Proc,
    write: Option<(SegmentList<'_>, &[u32])>,
    reply: Option<(SegmentList<'_>, &[u32])>,
) -> usize {
    if write.is_some() || reply.is_some() {
        return emit_header_with_chunks(out, xid, credits, proc_, write, reply);
    }
    // The common reply: fixed header and three empty lists, written at once.
    let Some(out) = out.first_chunk_mut::<MIN_HEADER_LEN>() else {
        return 0;
    };
    let mut h = [0u8; MIN_HEADER_LEN];
    for (i, w) in [xid, RPCRDMA_VERSION, credits, proc_.to_wire()]
        .into_iter()
        .enumerate()
    {
        put_xdr_u32(&mut h, 4 * i, w);
    }
    *out = h;
    MIN_HEADER_LEN
}

/// [`emit_header`] for a reply that echoes a write chunk or uses the reply chunk.
#[inline(never)]
fn emit_header_with_chunks(
    out: &mut [u8],
    xid: u32,
    credits: u32,
    proc_: Proc,
    write: Option<(SegmentList<'_>, &[u32])>,
    reply: Option<(SegmentList<'_>, &[u32])>,
) -> usize {
    let len = header_len(
        write.as_ref().map(|(s, _)| s.len()),
        reply.as_ref().map(|(s, _)| s.len()),
    );
    let Some(out) = out.get_mut(..len) else {
        return 0;
    };
    put_xdr_u32(out, 0, xid);
    put_xdr_u32(out, 4, RPCRDMA_VERSION);
    put_xdr_u32(out, CREDITS_OFFSET, credits);
    put_xdr_u32(out, 12, proc_.to_wire());
    put_xdr_u32(out, 16, 0); // read list: empty
    let mut at = 20;
    if let Some((segments, written)) = write {
        at = emit_chunk(out, at, segments, written);
    }
    put_xdr_u32(out, at, 0); // write list ends
    at += 4;
    match reply {
        Some((segments, written)) => at = emit_chunk(out, at, segments, written),
        None => {
            put_xdr_u32(out, at, 0);
            at += 4;
        }
    }
    at
}

fn emit_chunk(out: &mut [u8], mut at: usize, segments: SegmentList<'_>, written: &[u32]) -> usize {
    put_xdr_u32(out, at, 1);
    put_xdr_u32(out, at + 4, segments.len() as u32);
    at += 8;
    for (i, seg) in segments.iter().enumerate() {
        put_xdr_u32(out, at, seg.handle);
        put_xdr_u32(out, at + 4, written.get(i).copied().unwrap_or(0));
        put_xdr_u32(out, at + 8, (seg.offset >> 32) as u32);
        put_xdr_u32(out, at + 12, seg.offset as u32);
        at += SEGMENT_LEN;
    }
    at
}

/// A piece of local registered memory to move into the requester's segments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    pub(crate) addr: u64,
    pub(crate) lkey: u32,
    pub(crate) len: u32,
}

/// Plans RDMA Writes of `pieces`, in order, into `segments`, filling each segment before the
/// next. Pushes the work requests to `out`, returns the bytes written per segment, or `None`
/// if the pieces do not fit the segments or `out` has no room (nothing is left pushed).
pub(crate) fn plan_writes<const K: usize>(
    pieces: &[Piece],
    segments: SegmentList<'_>,
    wr_id: u64,
    out: &mut Vec<SendWr, K>,
) -> Option<Written> {
    let mark = out.len();
    let mut written = Written::new();
    for _ in 0..segments.len() {
        written.push(0).ok()?;
    }
    let mut seg_index = 0;
    let mut seg_used: u32 = 0;
    for piece in pieces {
        let mut done: u32 = 0;
        while done < piece.len {
            let Some(seg) = segments.get(seg_index) else {
                out.truncate(mark);
                return None;
            };
            let room = seg.length - seg_used;
            if room == 0 {
                seg_index += 1;
                seg_used = 0;
                continue;
            }
            let n = room.min(piece.len - done);
            let wr = SendWr {
                wr_id,
                op: SendOp::Write {
                    remote: seg.offset.wrapping_add(seg_used as u64),
                    rkey: seg.handle,
                },
                local: Sge {
                    addr: piece.addr + done as u64,
                    length: n,
                    lkey: piece.lkey,
                },
                // Set when the chain is posted (Connection::flush).
                signaled: true,
            };
            if out.push(wr).is_err() {
                out.truncate(mark);
                return None;
            }
            if let Some(w) = written.get_mut(seg_index) {
                *w += n;
            }
            seg_used += n;
            done += n;
        }
    }
    Some(written)
}

/// Work requests [`plan_writes`] needs at most for `pieces` pieces into `segments` segments
/// (none without a chunk to write into).
pub(crate) const fn max_writes(pieces: usize, segments: usize) -> usize {
    if pieces == 0 || segments == 0 {
        0
    } else {
        pieces + segments
    }
}

/// A chunk the requester offered, as the plan sees it: its segment count (the header echoes
/// it) and the bytes it can take (asked only when the plan needs it).
pub(crate) trait ChunkRoom: Copy {
    /// Segments in the chunk.
    fn segments(&self) -> usize;
    /// Bytes the chunk can take.
    fn room(&self) -> u64;
}

impl ChunkRoom for SegmentList<'_> {
    #[inline(always)]
    fn segments(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn room(&self) -> u64 {
        self.total_len()
    }
}

/// The sizes a reply's route is decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplySizes<'c, W, R> {
    /// Bytes of the RPC reply the service wrote into the send slot.
    pub(crate) body_len: usize,
    /// The payload the service attached: its length and whether it is DDP-eligible.
    pub(crate) payload: Option<(usize, bool)>,
    /// The requester's first write chunk.
    pub(crate) write_chunk: Option<&'c W>,
    /// The requester's reply chunk.
    pub(crate) reply_chunk: Option<&'c R>,
    /// The largest message the requester receives inline and this side can send.
    pub(crate) inline_max: usize,
}

/// Where the RPC reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyRoute {
    /// RDMA_MSG: header and RPC reply in one Send.
    Inline,
    /// RDMA_NOMSG: the RPC reply RDMA-written into the reply chunk, the Send carries the header.
    ReplyChunk,
    /// It fits nowhere: the requester gets ERR_CHUNK (what the Linux server does too).
    Nowhere(&'static str),
}

/// A reply's route, decided from sizes alone (RFC 8166 §3.5), before any work request is
/// planned: a DDP-eligible payload goes into the write chunk when the call offered one (and
/// must fit it); the rest — the RPC reply with any payload that stays in the stream, padded —
/// goes inline if header and stream fit the inline size, else through the reply chunk if it
/// fits there, else nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyPlan {
    /// The payload is RDMA-written into the write chunk (not part of the stream).
    pub(crate) payload_in_write_chunk: bool,
    /// Bytes of the RPC reply stream: the body, plus the payload and its XDR pad when it stays
    /// in the stream.
    pub(crate) stream_len: usize,
    /// Where the stream goes.
    pub(crate) route: ReplyRoute,
}

impl ReplyPlan {
    /// Plans the reply for `sizes`.
    #[inline(always)]
    pub(crate) fn new<W: ChunkRoom, R: ChunkRoom>(sizes: ReplySizes<'_, W, R>) -> ReplyPlan {
        let mut plan = ReplyPlan {
            payload_in_write_chunk: false,
            stream_len: sizes.body_len,
            route: ReplyRoute::Inline,
        };
        if let Some((plen, ddp)) = sizes.payload {
            match sizes.write_chunk {
                Some(w) if ddp => {
                    if plen as u64 > w.room() {
                        plan.route = ReplyRoute::Nowhere("payload larger than the write chunk");
                        return plan;
                    }
                    plan.payload_in_write_chunk = true;
                }
                _ => plan.stream_len += plen + (4 - plen % 4) % 4,
            }
        }
        let header = header_len(sizes.write_chunk.map(|w| w.segments()), None);
        if header + plan.stream_len > sizes.inline_max {
            plan.route = match sizes.reply_chunk {
                Some(r) if plan.stream_len as u64 <= r.room() => ReplyRoute::ReplyChunk,
                _ => ReplyRoute::Nowhere("reply fits neither inline nor the reply chunk"),
            };
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INLINE: usize = 1024;

    /// A chunk of `.0` segments taking `.1` bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Chunk(usize, u64);

    impl ChunkRoom for Chunk {
        fn segments(&self) -> usize {
            self.0
        }
        fn room(&self) -> u64 {
            self.1
        }
    }

    fn sizes(body_len: usize) -> ReplySizes<'static, Chunk, Chunk> {
        ReplySizes {
            body_len,
            payload: None,
            write_chunk: None,
            reply_chunk: None,
            inline_max: INLINE,
        }
    }

    #[test]
    fn test_small_reply_goes_inline() {
        let p = ReplyPlan::new(sizes(100));
        assert_eq!((p.route, p.stream_len), (ReplyRoute::Inline, 100));
        // Exactly the inline size with the 28-byte header: still inline.
        assert_eq!(ReplyPlan::new(sizes(INLINE - 28)).route, ReplyRoute::Inline);
        assert_ne!(ReplyPlan::new(sizes(INLINE - 27)).route, ReplyRoute::Inline);
    }

    #[test]
    fn test_large_reply_without_reply_chunk_fits_nowhere() {
        let p = ReplyPlan::new(sizes(4000));
        assert!(matches!(p.route, ReplyRoute::Nowhere(_)));
    }

    #[test]
    fn test_large_reply_goes_through_the_reply_chunk_when_it_fits() {
        let s = ReplySizes {
            reply_chunk: Some(&Chunk(2, 8192)),
            ..sizes(4000)
        };
        assert_eq!(ReplyPlan::new(s).route, ReplyRoute::ReplyChunk);
        let s = ReplySizes {
            reply_chunk: Some(&Chunk(1, 3999)),
            ..sizes(4000)
        };
        assert!(matches!(ReplyPlan::new(s).route, ReplyRoute::Nowhere(_)));
    }

    #[test]
    fn test_ddp_payload_goes_into_the_write_chunk_and_leaves_the_stream() {
        let s = ReplySizes {
            payload: Some((65536, true)),
            write_chunk: Some(&Chunk(1, 65536)),
            ..sizes(120)
        };
        let p = ReplyPlan::new(s);
        assert!(p.payload_in_write_chunk);
        assert_eq!((p.route, p.stream_len), (ReplyRoute::Inline, 120));
        // The write list echoed in the header counts against the inline size.
        let s = ReplySizes {
            write_chunk: Some(&Chunk(16, 65536)),
            ..s
        };
        let h = header_len(Some(16), None);
        let s = ReplySizes {
            body_len: INLINE - h,
            ..s
        };
        assert_eq!(ReplyPlan::new(s).route, ReplyRoute::Inline);
        let s = ReplySizes {
            body_len: INLINE - h + 1,
            ..s
        };
        assert!(matches!(ReplyPlan::new(s).route, ReplyRoute::Nowhere(_)));
    }

    #[test]
    fn test_ddp_payload_larger_than_the_write_chunk_fits_nowhere() {
        let s = ReplySizes {
            payload: Some((65537, true)),
            write_chunk: Some(&Chunk(1, 65536)),
            reply_chunk: Some(&Chunk(1, 1 << 20)),
            ..sizes(120)
        };
        let p = ReplyPlan::new(s);
        assert_eq!(
            p.route,
            ReplyRoute::Nowhere("payload larger than the write chunk")
        );
    }

    #[test]
    fn test_payload_without_write_chunk_stays_in_the_stream_padded() {
        // DDP-eligible but no write chunk offered, and not DDP-eligible with one: both in the
        // stream, padded to 4.
        for (ddp, write_chunk) in [(true, None), (false, Some(&Chunk(1, 4096)))] {
            let s = ReplySizes {
                payload: Some((101, ddp)),
                write_chunk,
                ..sizes(100)
            };
            let p = ReplyPlan::new(s);
            assert!(!p.payload_in_write_chunk);
            assert_eq!(p.stream_len, 100 + 104);
            assert_eq!(p.route, ReplyRoute::Inline);
        }
    }
}
