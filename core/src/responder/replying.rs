//! From a ready call to its reply: the service runs into a send slot, and the reply goes
//! inline, into the write chunk, through the reply chunk, or as ERR_CHUNK (RFC 8166 §3.5).

use crate::device::{SendOp, SendWr, Sge, WrKind};
use crate::pages::PagePool;
use crate::pool::RecvPool;
use crate::wire::{copy_prefix, move_within, ErrorReply, Message, Proc};
use crate::xdr::XdrView;

use super::call::{CallId, CallState, NO_SLOT};
use super::reply::{
    emit_header, header_len, max_writes, plan_writes, Piece, ReplyPlan, ReplyRoute, ReplySizes,
};
use super::service::{Payload, PayloadSource};
use super::sink::SinkLayout;
use super::{
    Call, CallHandle, Connection, PayloadPages, ReplyWriter, Resources, Service, StaleHandle,
    Verdict, CHAIN,
};

impl<'a, const C: usize> Connection<'a, C> {
    /// Builds and queues the reply of ready call `i` if a send slot and room in the chain and
    /// send queue are free. Returns whether it did (the call is then Replying or Free).
    pub(super) fn try_reply<S: Service + ?Sized, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        service: &mut S,
        i: CallId,
    ) -> bool {
        if self.closing {
            return false;
        }
        let Some(c) = self.call(i) else {
            return false;
        };
        let need = match (&c.error_reply, c.rx.as_ref().map(|rx| res.pool.message(rx))) {
            (None, Some(Ok(m))) => reply_work_requests(&m),
            _ => 1,
        };
        if self.sq_room() < need || CHAIN - self.chain.len() < need {
            return false;
        }
        let Some(slot) = self.free_slots.pop() else {
            return false;
        };
        let error_reply = self.call_mut(i).and_then(|c| {
            c.send_slot = slot;
            c.error_reply.take()
        });
        if let Some(reply) = error_reply {
            self.send_error_reply(res, i, slot, &reply);
            return true;
        }
        if self.serve(res, service, i, slot) {
            return true;
        }
        // Deferred: the slot goes back, the call stays Ready for a later round.
        if let Some(c) = self.call_mut(i) {
            c.send_slot = NO_SLOT;
        }
        let _ = self.free_slots.push(slot);
        self.counters.deferred += 1;
        false
    }

    pub(super) fn slot_offset(&self, slot: u16) -> usize {
        slot as usize * self.stride
    }

    pub(super) fn send_error_reply<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
        slot: u16,
        reply: &ErrorReply,
    ) {
        let off = self.slot_offset(slot);
        let len = self
            .send
            .bytes_mut(off, self.send_size)
            .and_then(|b| reply.emit(b))
            .unwrap_or(0);
        // The Receive (if the call had one) is no longer needed.
        if let Some(rx) = self.call_mut(i).and_then(|c| c.rx.take()) {
            let _ = res.pool.release(rx);
        }
        if let Some(c) = self.call_mut(i) {
            if let Some(sink) = c.sink.take() {
                res.sinks.free(sink);
            }
            c.header_at = 0;
        }
        self.queue_send(i, off, len);
    }

    pub(super) fn queue_send(&mut self, i: CallId, offset: usize, len: usize) {
        let wr = SendWr {
            wr_id: self.wr_id(WrKind::Send, i),
            op: SendOp::Send,
            local: Sge {
                addr: self.send.device_addr(offset),
                length: len as u32,
                lkey: self.send.lkey(),
            },
            // Set when the chain is posted (flush).
            signaled: true,
        };
        // try_reply checked the room.
        let _ = self.chain.push(wr);
        if let Some(c) = self.call_mut(i) {
            c.outstanding += 1;
            c.state = CallState::Replying;
        }
    }

    /// Runs the service for call `i` into send slot `slot` and queues the reply. Returns false
    /// when the service deferred the call (nothing queued).
    pub(super) fn serve<S: Service + ?Sized, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        service: &mut S,
        i: CallId,
        slot: u16,
    ) -> bool {
        let handle = self.handle_of(i);
        let Some(c) = self.call(i) else {
            return true;
        };
        let (Some(rx), sink) = (c.rx.as_ref(), c.sink.as_ref()) else {
            return true;
        };
        let Ok(inline_view) = res.pool.view(rx) else {
            return true;
        };
        let message = *inline_view.message();
        let view = match sink {
            Some(sink) => SinkLayout::of(&message).view(message, res.sinks.bytes(sink)),
            None => inline_view,
        };
        let verdict = self.run_writer(res.payloads, slot, view, handle, |call, writer| {
            service.serve(call, writer)
        });
        self.after_verdict(res, i, slot, verdict)
    }

    /// The handle a service keeps for a pending call.
    pub(super) fn handle_of(&self, i: CallId) -> CallHandle {
        CallHandle {
            epoch: self.epoch,
            index: i.0,
            generation: self.call(i).map_or(0, |c| c.generation),
        }
    }

    /// Builds the [`Call`] and a [`ReplyWriter`] over send slot `slot` (the body after room for
    /// the largest header the reply may need) and runs `f`. Returns the verdict, the body
    /// length and the payload.
    pub(super) fn run_writer<'v>(
        &mut self,
        payloads: &mut dyn PayloadPages,
        slot: u16,
        view: XdrView<'v>,
        handle: CallHandle,
        f: impl FnOnce(&Call<'v>, &mut ReplyWriter<'_>) -> Verdict,
    ) -> (Verdict, usize, Option<Payload>) {
        let message = *view.message();
        let write_chunk = message.write_list().iter().next();
        let reply_chunk = message.reply_chunk();
        let body_at = Self::body_at(&message);
        let slot_off = self.slot_offset(slot);
        let call = Call {
            view,
            xid: message.xid(),
            write_chunk_len: write_chunk.map_or(0, |s| s.total_len()),
            reply_chunk_len: reply_chunk.map_or(0, |s| s.total_len()),
            peer_inline: self.peer_inline(),
            handle,
        };
        let Some(slot_bytes) = self.send.bytes_mut(slot_off, self.send_size) else {
            return (Verdict::NoReply, 0, None);
        };
        let (_, body_buf) = slot_bytes.split_at_mut(body_at.min(slot_bytes.len()));
        let mut writer = ReplyWriter::new(body_buf, payloads);
        let verdict = f(&call, &mut writer);
        let body_len = writer.len();
        let payload = writer.payload.take();
        (verdict, body_len, payload)
    }

    /// Where the reply body starts in a send slot: after the longest header the reply to
    /// `message` may need.
    pub(super) fn body_at(message: &Message<'_>) -> usize {
        if message.lists_empty() {
            // No chunks: the reply header is the fixed header and three empty lists.
            return crate::wire::MIN_HEADER_LEN;
        }
        let write_segs = message.write_list().iter().next().map(|s| s.len());
        let reply_segs = message.reply_chunk().map(|s| s.len());
        header_len(write_segs, reply_segs).max(header_len(write_segs, None))
    }

    /// Acts on a service's verdict for call `i` in send slot `slot`. Returns false when the call
    /// was deferred.
    pub(super) fn after_verdict<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
        slot: u16,
        (verdict, body_len, payload): (Verdict, usize, Option<Payload>),
    ) -> bool {
        match verdict {
            Verdict::Defer => {
                self.keep_payload(res, i, payload, false);
                return false;
            }
            Verdict::Pending => {
                // The service answers later (Connection::complete_pending): the Receive stays
                // held (its chunk lists say where the reply goes), the send slot stays taken,
                // and so do the sink pages: the call's whole view stays readable
                // (Connection::pending_view) until it is answered, so a service that forwards
                // it (and may have to forward it again) never copies it.
                self.keep_payload(res, i, payload, false);
                self.counters.pending += 1;
                if let Some(c) = self.call_mut(i) {
                    c.state = CallState::Pending;
                }
                return true;
            }
            Verdict::NoReply => {
                self.counters.calls += 1;
                self.counters.no_reply += 1;
                self.keep_payload(res, i, payload, false);
                self.finish(res, i);
                return true;
            }
            Verdict::Reply => self.counters.calls += 1,
        }
        self.send_reply(res, i, slot, body_len, payload);
        true
    }

    /// The view of a call the service left pending ([`Verdict::Pending`]): the same head /
    /// pages / tail [`Service::serve`] saw (Read chunk data included), straight over the
    /// Receive buffer and the sink pages, in constant time. A service that forwards calls reads
    /// them from here when it sends them, and again if it has to resend.
    ///
    /// # Errors
    /// [`StaleHandle`] if the handle names no pending call of this connection.
    pub fn pending_view<'v, const N: usize, const P: usize>(
        &self,
        pool: &'v RecvPool<'a, N>,
        sinks: &'v PagePool<'a, P>,
        handle: CallHandle,
    ) -> Result<XdrView<'v>, StaleHandle> {
        let c = match self.call(CallId(handle.index)) {
            Some(c)
                if handle.epoch == self.epoch
                    && c.generation == handle.generation
                    && c.state == CallState::Pending =>
            {
                c
            }
            _ => return Err(StaleHandle),
        };
        let rx = c.rx.as_ref().ok_or(StaleHandle)?;
        let inline_view = pool.view(rx).map_err(|_| StaleHandle)?;
        let message = *inline_view.message();
        Ok(match c.sink.as_ref() {
            Some(sink) => SinkLayout::of(&message).view(message, sinks.bytes(sink)),
            None => inline_view,
        })
    }

    /// Answers a call the service left pending ([`Verdict::Pending`]): `f` writes the reply as
    /// [`Service::serve`] would, over the same view (Read chunk data included), and the reply
    /// goes out with the next [`Connection::flush`]. Returns `Ok(false)`
    /// when nothing was sent: no room in the send queue now (flush, then try again), or `f`
    /// returned [`Verdict::Pending`] or [`Verdict::Defer`] to keep waiting.
    ///
    /// # Errors
    /// [`StaleHandle`] if the handle names no pending call of this connection (answered
    /// already, or the connection closed).
    pub fn complete_pending<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        handle: CallHandle,
        f: impl FnOnce(&Call<'_>, &mut ReplyWriter<'_>) -> Verdict,
    ) -> Result<bool, StaleHandle> {
        let i = CallId(handle.index);
        let slot = match self.call(i) {
            Some(c)
                if handle.epoch == self.epoch
                    && c.generation == handle.generation
                    && c.state == CallState::Pending =>
            {
                c.send_slot
            }
            _ => return Err(StaleHandle),
        };
        if self.closing {
            return Err(StaleHandle);
        }
        let view = self.pending_view(res.pool, res.sinks, handle)?;
        let need = reply_work_requests(view.message());
        if self.sq_room() < need || CHAIN - self.chain.len() < need {
            // No room now: the caller flushes and tries again.
            return Ok(false);
        }
        let out = self.run_writer(res.payloads, slot, view, handle, f);
        if out.0 == Verdict::Pending || out.0 == Verdict::Defer {
            self.keep_payload(res, i, out.2, false);
            return Ok(false);
        }
        self.counters.pending -= 1;
        if let Some(c) = self.call_mut(i) {
            c.state = CallState::Ready;
        }
        self.after_verdict(res, i, slot, out);
        Ok(true)
    }

    /// Builds the reply of call `i` (body of `body_len` bytes in send slot `slot`, and the
    /// payload) and queues its Writes and Send.
    pub(super) fn send_reply<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
        slot: u16,
        body_len: usize,
        payload: Option<Payload>,
    ) {
        let slot_off = self.slot_offset(slot);
        let send_size = self.send_size;
        let peer_inline = self.peer_inline();
        let zero_addr = self.send.device_addr(self.zero_at);
        let send_lkey = self.send.lkey();
        let send_base = self.send.device_addr(slot_off);
        let write_wr = self.wr_id(WrKind::Write, i);
        let Some(rx) = self.call(i).and_then(|c| c.rx.as_ref()) else {
            return;
        };
        let Ok(message) = res.pool.message(rx) else {
            return;
        };
        let write_chunk = message.write_list().iter().next();
        let reply_chunk = message.reply_chunk();
        let write_segs = write_chunk.map(|s| s.len());
        let reply_segs = reply_chunk.map(|s| s.len());
        let body_at = Self::body_at(&message);
        let (pos, plen) = payload
            .as_ref()
            .map_or((0, 0), |p| (p.position.min(body_len), p.len));
        let payload_piece = payload.as_ref().map(|p| match &p.source {
            PayloadSource::Lent(run) => Piece {
                addr: res.payloads.device_addr(run, 0),
                lkey: res.payloads.lkey(),
                len: p.len as u32,
            },
            PayloadSource::External {
                device_addr, lkey, ..
            } => Piece {
                addr: *device_addr,
                lkey: *lkey,
                len: p.len as u32,
            },
        });
        let pad = (4 - plen % 4) % 4;
        let mark = self.chain.len();
        let plan = ReplyPlan::new(ReplySizes {
            body_len,
            payload: payload.as_ref().map(|p| (p.len, p.ddp)),
            write_chunk: write_chunk.as_ref(),
            reply_chunk: reply_chunk.as_ref(),
            inline_max: peer_inline.min(send_size),
        });
        if let ReplyRoute::Nowhere(why) = plan.route {
            self.reply_failed(res, i, slot, payload, why);
            return;
        }

        // 1. A DDP-eligible payload goes into the write chunk.
        let mut write_written = None;
        let in_stream = payload.is_some() && !plan.payload_in_write_chunk;
        if let (true, Some(segments), Some(piece)) =
            (plan.payload_in_write_chunk, write_chunk, payload_piece)
        {
            match plan_writes(&[piece], segments, write_wr, &mut self.chain) {
                Some(w) => {
                    write_written = Some(w);
                    self.counters.write_chunk_replies += 1;
                    self.counters.write_chunk_bytes += plen as u64;
                }
                None => {
                    self.reply_failed(
                        res,
                        i,
                        slot,
                        payload,
                        "no room for the write chunk's Writes",
                    );
                    return;
                }
            }
        }
        static ZEROS: [u32; 16] = [0; 16];
        let zeros = &ZEROS;
        let write_echo = write_chunk.map(|segs| {
            (
                segs,
                write_written
                    .as_ref()
                    .map_or(&zeros[..segs.len().min(16)], |w| &w[..]),
            )
        });
        let stream_len = plan.stream_len;
        let msg_header = header_len(write_segs, None);
        let xid = message.xid();

        // 2. Inline, when header and stream fit the requester's inline size.
        if matches!(plan.route, ReplyRoute::Inline) {
            let Some(bytes) = self.send.bytes_mut(slot_off, send_size) else {
                return;
            };
            // Body to just after the header, the payload (if inline) copied into place.
            move_within(bytes, body_at, body_len, msg_header);
            if in_stream {
                let tail_from = msg_header + pos;
                move_within(bytes, tail_from, body_len - pos, tail_from + plen + pad);
                let src = match payload.as_ref().map(|p| &p.source) {
                    Some(PayloadSource::Lent(run)) => res.payloads.bytes(run),
                    Some(PayloadSource::External { bytes, .. }) => bytes,
                    None => &[],
                };
                if let Some(dst) = bytes.get_mut(tail_from..) {
                    copy_prefix(dst, src.get(..plen).unwrap_or_default());
                }
                if let Some(p) = bytes.get_mut(tail_from + plen..tail_from + plen + pad) {
                    p.fill(0);
                }
            }
            let h = emit_header(bytes, xid, 0, Proc::Msg, write_echo, None);
            self.counters.inline_replies += 1;
            let added = self.chain.len() - mark;
            if let Some(c) = self.call_mut(i) {
                c.outstanding += added as u16;
            }
            self.release_call_inputs(res, i);
            self.keep_payload(res, i, payload, write_written.is_some());
            if let Some(c) = self.call_mut(i) {
                c.header_at = 0;
            }
            self.queue_send(i, slot_off, h + stream_len);
            return;
        }

        // 3. Through the reply chunk.
        if let (ReplyRoute::ReplyChunk, Some(segments)) = (plan.route, reply_chunk) {
            let body = Piece {
                addr: send_base + body_at as u64,
                lkey: send_lkey,
                len: pos as u32,
            };
            let rest = Piece {
                addr: send_base + (body_at + pos) as u64,
                lkey: send_lkey,
                len: (body_len - pos) as u32,
            };
            let pad_piece = Piece {
                addr: zero_addr,
                lkey: send_lkey,
                len: pad as u32,
            };
            let none = Piece {
                addr: 0,
                lkey: 0,
                len: 0,
            };
            let pieces = match (in_stream, payload_piece) {
                (true, Some(p)) => [body, p, pad_piece, rest],
                _ => [
                    Piece {
                        len: body_len as u32,
                        ..body
                    },
                    none,
                    none,
                    none,
                ],
            };
            if let Some(written) = plan_writes(&pieces, segments, write_wr, &mut self.chain) {
                let h_len = header_len(write_segs, reply_segs);
                let at = body_at - h_len;
                let Some(bytes) = self.send.bytes_mut(slot_off + at, h_len) else {
                    return;
                };
                emit_header(
                    bytes,
                    xid,
                    0,
                    Proc::Nomsg,
                    write_echo,
                    Some((segments, &written[..])),
                );
                self.counters.reply_chunk_replies += 1;
                self.counters.reply_chunk_bytes += stream_len as u64;
                self.release_call_inputs(res, i);
                self.keep_payload(res, i, payload, true);
                if let Some(c) = self.call_mut(i) {
                    c.header_at = at as u16;
                }
                let added = self.chain.len() - mark;
                if let Some(c) = self.call_mut(i) {
                    c.outstanding += added as u16;
                }
                self.queue_send(i, slot_off + at, h_len);
                return;
            }
        }
        // 4. Nowhere.
        self.chain.truncate(mark);
        self.reply_failed(
            res,
            i,
            slot,
            payload,
            "reply fits neither inline nor the reply chunk",
        );
    }

    /// The Receive and sink pages of call `i` are no longer needed once its reply is built.
    pub(super) fn release_call_inputs<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
    ) {
        if let Some(c) = self.call_mut(i) {
            if let Some(rx) = c.rx.take() {
                let _ = res.pool.release(rx);
            }
            if let Some(sink) = c.sink.take() {
                res.sinks.free(sink);
            }
        }
    }

    /// Keeps a lent payload with call `i` until its Send completes when the device reads it
    /// (`device_reads`), else frees it now.
    pub(super) fn keep_payload<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
        payload: Option<Payload>,
        device_reads: bool,
    ) {
        let Some(Payload {
            source: PayloadSource::Lent(run),
            ..
        }) = payload
        else {
            return;
        };
        if device_reads {
            if let Some(c) = self.call_mut(i) {
                c.payload = Some(run);
                return;
            }
        }
        res.payloads.free(run);
    }

    #[cold]
    pub(super) fn reply_failed<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
        slot: u16,
        payload: Option<Payload>,
        why: &'static str,
    ) {
        warn!("rpcrdma: reply not sendable ({}): ERR_CHUNK", why);
        let _ = why;
        self.keep_payload(res, i, payload, false);
        let xid = self
            .call(i)
            .and_then(|c| c.rx.as_ref())
            .map_or(0, |rx| rx.xid());
        self.counters.reply_too_large += 1;
        let reply = ErrorReply {
            xid,
            vers: crate::wire::RPCRDMA_VERSION,
            credits: 0,
            kind: crate::wire::ErrorReplyKind::Chunk,
        };
        self.send_error_reply(res, i, slot, &reply);
    }
}

/// Send-queue work requests the reply to `message` needs at most: the Send, plus the Writes of
/// a payload into the write chunk and of up to four pieces into the reply chunk.
#[inline]
pub(super) fn reply_work_requests(message: &Message<'_>) -> usize {
    if message.lists_empty() {
        1 // the Send alone
    } else {
        reply_work_requests_with_chunks(message)
    }
}

#[inline(never)]
pub(super) fn reply_work_requests_with_chunks(message: &Message<'_>) -> usize {
    let w = message.write_list().iter().next().map_or(0, |s| s.len());
    let r = message.reply_chunk().map_or(0, |s| s.len());
    1 + max_writes(1, w) + max_writes(4, r)
}
