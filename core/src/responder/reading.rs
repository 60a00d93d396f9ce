//! Read chunks: a parked call gets its sink pages, its RDMA Reads go out within the
//! initiator depth, and the inline pieces between data chunks are placed when they are in.

use crate::device::{SendOp, SendWr, Sge, WrKind};
use crate::wire::ErrorReply;

use super::call::CallId;
use super::call::CallState;
use super::sink::SinkLayout;
use super::{Connection, Resources};

impl<'a, const C: usize> Connection<'a, C> {
    /// Allocates the sink run of a parked call with Read chunks. Returns whether it did.
    pub(super) fn start_reads<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
    ) -> bool {
        let Some(c) = self.call(i) else {
            return false;
        };
        let Some(rx) = c.rx.as_ref() else {
            return false;
        };
        let Ok(message) = res.pool.message(rx) else {
            return false;
        };
        let layout = SinkLayout::of(&message);
        let segments = message.read_list().len();
        if self.initiator_depth == 0 || !res.sinks.fits(layout.total) {
            // The requester accepts no RDMA Read from this side (it advertised no responder
            // resources), or the pool can never hold this call: answer ERR_CHUNK rather than
            // issue a Read the requester refuses, or wait forever.
            let reply = ErrorReply {
                xid: message.xid(),
                vers: crate::wire::RPCRDMA_VERSION,
                credits: 0,
                kind: crate::wire::ErrorReplyKind::Chunk,
            };
            warn!(
                "rpcrdma: Read chunks this side cannot read (no Read credit or no room); ERR_CHUNK"
            );
            if let Some(rx) = self.call_mut(i).and_then(|c| c.rx.take()) {
                let _ = res.pool.release(rx);
            }
            self.counters.err_chunk += 1;
            if let Some(c) = self.call_mut(i) {
                c.error_reply = Some(reply);
                c.state = CallState::Ready;
            }
            return true;
        }
        let Some(run) = res.sinks.alloc(layout.total) else {
            return false;
        };
        if let Some(c) = self.call_mut(i) {
            c.sink = Some(run);
            c.state = CallState::Reading;
            c.reads_total = segments as u8;
            c.reads_posted = 0;
        }
        true
    }

    /// Posts (into the chain) the Reads of call `i` that the initiator depth and the send
    /// queue allow.
    pub(super) fn post_reads<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
    ) {
        let wr_id = self.wr_id(WrKind::Read, i);
        let Some(c) = self.calls.get(i.index()) else {
            return;
        };
        let (Some(rx), Some(sink)) = (c.rx.as_ref(), c.sink.as_ref()) else {
            return;
        };
        let Ok(message) = res.pool.message(rx) else {
            return;
        };
        let list = message.read_list();
        let layout = SinkLayout::of(&message);
        let mut posted = c.reads_posted;
        let total = c.reads_total;
        let mut added: u16 = 0;
        while posted < total
            && self.reads_in_flight < self.initiator_depth
            && self.sq_room() > 0
            && !self.chain.is_full()
        {
            let Some(item) = list.get(posted as usize) else {
                break;
            };
            let at = layout.segment_offset(&list, posted as usize);
            let wr = SendWr {
                wr_id,
                op: SendOp::Read {
                    remote: item.segment.offset,
                    rkey: item.segment.handle,
                },
                local: Sge {
                    addr: res.sinks.device_addr(sink, at),
                    length: item.segment.length,
                    lkey: res.sinks.lkey(),
                },
                signaled: true,
            };
            if self.chain.push(wr).is_err() {
                break;
            }
            self.reads_in_flight += 1;
            posted += 1;
            added += 1;
        }
        if let Some(c) = self.call_mut(i) {
            c.reads_posted = posted;
            c.outstanding += added;
        }
    }

    /// All Reads of call `i` arrived: count them and place the inline pieces between data
    /// chunks (only when there are several) into the sink run.
    pub(super) fn reads_done<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
    ) {
        let Some(c) = self.calls.get(i.index()) else {
            return;
        };
        let (Some(rx), Some(sink)) = (c.rx.as_ref(), c.sink.as_ref()) else {
            return;
        };
        let Ok(message) = res.pool.message(rx) else {
            return;
        };
        self.counters.read_bytes += message.read_list().total_len();
        let layout = SinkLayout::of(&message);
        if layout.data_chunks < 2 {
            return;
        }
        let inline = message.rpc_message();
        let bytes = res.sinks.bytes_mut(sink);
        layout.place_middles(inline, bytes);
    }
}
