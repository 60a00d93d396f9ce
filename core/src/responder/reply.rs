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
