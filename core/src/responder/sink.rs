//! Where a call's Read-chunk data lands in its run of sink pages, and the view over it.

use heapless::Vec;

use crate::wire::{copy_prefix, xdr_roundup, Message, MAX_READ_SEGMENTS};
use crate::xdr::XdrView;

/// Where a call's Read-chunk data goes in its sink run:
/// `[call chunk, padded] [data chunk 1, padded] [inline between 1 and 2] [data chunk 2] …`.
#[derive(Debug)]
pub(super) struct SinkLayout {
    pub(super) call_len: usize,
    /// Per data chunk: (offset in the base, length, offset in the sink run).
    pub(super) chunks: Vec<(usize, usize, usize), MAX_READ_SEGMENTS>,
    pub(super) data_chunks: usize,
    pub(super) total: usize,
}

impl SinkLayout {
    pub(super) fn of(message: &Message<'_>) -> SinkLayout {
        let list = message.read_list();
        let call_len = list.call_chunk().map_or(0, |c| c.length as usize);
        let base_len = if call_len != 0 {
            call_len
        } else {
            message.rpc_message().len()
        };
        let mut at = xdr_roundup(call_len as u32) as usize;
        let mut chunks = Vec::new();
        let mut prev_base: Option<usize> = None;
        for chunk in list.chunks().filter(|c| c.position != 0) {
            let base_off = (chunk.inline_offset as usize).min(base_len);
            if let Some(prev) = prev_base {
                // Inline bytes between the previous chunk's place and this one.
                at += base_off.saturating_sub(prev);
            }
            let _ = chunks.push((base_off, chunk.length as usize, at));
            at += xdr_roundup(chunk.length as u32) as usize;
            prev_base = Some(base_off);
        }
        // The last chunk's roundup is not part of `pages`.
        let total = match chunks.last() {
            Some(&(_, len, off)) => off + len,
            None => at,
        };
        SinkLayout {
            call_len,
            data_chunks: chunks.len(),
            chunks,
            total: total.max(1),
        }
    }

    /// Sink offset of read segment `index`: the call chunk's segments are placed one after
    /// the other from 0, each data chunk's from its own offset.
    pub(super) fn segment_offset(&self, list: &crate::wire::ReadList<'_>, index: usize) -> usize {
        let mut call_at = 0;
        let mut chunk: Option<usize> = None;
        let mut previous: Option<u32> = None;
        let mut within = 0;
        for (k, item) in list.iter().enumerate() {
            let len = item.segment.length as usize;
            if item.position == 0 {
                if k == index {
                    return call_at;
                }
                call_at += len;
                continue;
            }
            if previous != Some(item.position) {
                chunk = Some(chunk.map_or(0, |c| c + 1));
                within = 0;
                previous = Some(item.position);
            }
            let base = chunk
                .and_then(|c| self.chunks.get(c))
                .map_or(0, |&(_, _, at)| at);
            if k == index {
                return base + within;
            }
            within += len;
        }
        0
    }

    pub(super) fn view<'v>(&self, message: Message<'v>, sink: &'v [u8]) -> XdrView<'v> {
        let base: &'v [u8] = if self.call_len != 0 {
            sink.get(..self.call_len).unwrap_or_default()
        } else {
            message.rpc_message()
        };
        match (self.chunks.first(), self.chunks.last()) {
            (Some(&(first_off, _, first_at)), Some(&(last_off, last_len, last_at))) => {
                let head = base.get(..first_off).unwrap_or_default();
                let pages = sink.get(first_at..last_at + last_len).unwrap_or_default();
                let tail = base.get(last_off..).unwrap_or_default();
                XdrView::from_parts(message, head, pages, tail)
            }
            _ => XdrView::from_parts(message, base, &[], &[]),
        }
    }

    /// Copies the base bytes between consecutive data chunks into the gaps of the sink run.
    pub(super) fn place_middles(&self, inline: &[u8], sink: &mut [u8]) {
        for pair in self.chunks.windows(2) {
            let (Some(&(a_off, a_len, a_at)), Some(&(b_off, _, _))) = (pair.first(), pair.get(1))
            else {
                continue;
            };
            let pad_from = a_at + a_len;
            let gap_at = a_at + xdr_roundup(a_len as u32) as usize;
            if let Some(p) = sink.get_mut(pad_from..gap_at) {
                p.fill(0);
            }
            if self.call_len != 0 {
                // The base is the call chunk at the start of the sink run.
                let (base, rest) = sink.split_at_mut(self.call_len.min(sink.len()));
                let src = base.get(a_off..b_off).unwrap_or_default();
                let dst_at = gap_at - self.call_len.min(gap_at);
                if let Some(dst) = rest.get_mut(dst_at..) {
                    copy_prefix(dst, src);
                }
            } else {
                let src = inline.get(a_off..b_off).unwrap_or_default();
                if let Some(dst) = sink.get_mut(gap_at..) {
                    copy_prefix(dst, src);
                }
            }
        }
    }
}
