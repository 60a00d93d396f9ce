//! The send queue's bookkeeping: room, the list of posted replies in posting order, which
//! work requests are signaled, and what a send-queue completion retires.

use crate::device::{Completion, CompletionStatus, SendOp, WrId, WrKind};

use super::call::{CallId, CallState, NO_CALL};
use super::{Connection, Resources, Service};

impl<'a, const C: usize> Connection<'a, C> {
    pub(super) fn sq_room(&self) -> usize {
        (self.sq_depth as usize).saturating_sub(self.sq_in_flight as usize + self.chain.len())
    }

    /// Appends call `i` (its Send just posted) to the posted-replies list.
    pub(super) fn link_posted(&mut self, i: CallId) {
        let tail = self.posted_tail;
        let Some(c) = self.call_mut(i) else {
            return;
        };
        if c.posted {
            return;
        }
        c.posted = true;
        c.prev = tail;
        c.next = NO_CALL;
        match self.call_mut(tail) {
            Some(t) => t.next = i,
            None => self.posted_head = i,
        }
        self.posted_tail = i;
    }

    /// Takes call `i` out of the posted-replies list (if it is in it).
    pub(super) fn unlink_posted(&mut self, i: CallId) {
        let Some(c) = self.call_mut(i) else {
            return;
        };
        if !c.posted {
            return;
        }
        c.posted = false;
        let (prev, next) = (c.prev, c.next);
        c.prev = NO_CALL;
        c.next = NO_CALL;
        match self.call_mut(prev) {
            Some(p) => p.next = next,
            None => self.posted_head = next,
        }
        match self.call_mut(next) {
            Some(n) => n.prev = prev,
            None => self.posted_tail = prev,
        }
    }

    /// A completion arrived for a Write or Send of call `i`: every reply posted before `i`'s
    /// has completed, signaled or not. They are finished. Nothing happens when `i`'s Send was
    /// never posted (a chain the device refused part of).
    pub(super) fn retire_before<const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        i: CallId,
    ) {
        if !self.call(i).is_some_and(|c| c.posted) {
            return;
        }
        while self.posted_head != i && self.posted_head != NO_CALL {
            let j = self.posted_head;
            self.unlink_posted(j);
            let Some(c) = self.calls.get_mut(j.index()) else {
                break;
            };
            self.sq_in_flight = self.sq_in_flight.saturating_sub(c.outstanding);
            c.outstanding = 0;
            self.finish(res, j);
        }
    }

    pub(super) fn on_send_queue<S: Service + ?Sized, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        service: &mut S,
        kind: WrKind,
        wc: &Completion,
    ) {
        let id = WrId(wc.wr_id);
        let i = CallId(id.index());
        let valid = id.tag() == self.tag(kind)
            && self.call(i).is_some_and(|c| {
                c.generation == id.generation()
                    && c.outstanding > 0
                    && match kind {
                        WrKind::Read => c.state == CallState::Reading,
                        _ => c.state == CallState::Replying,
                    }
            });
        if !valid || self.sq_in_flight == 0 {
            self.counters.refused_completions += 1;
            warn!("rpcrdma: refused a send-queue completion (unknown, stale or foreign wr_id)");
            return;
        }
        if kind != WrKind::Read {
            // Everything posted before this work request has completed: the replies ahead of
            // this one whose Sends were unsignaled are done.
            self.retire_before(res, i);
        }
        let failed = match wc.status {
            CompletionStatus::Success => false,
            CompletionStatus::Flushed => {
                self.counters.flushed_completions += 1;
                true
            }
            CompletionStatus::Error { code } => {
                self.counters.failed_completions += 1;
                warn!(
                    "rpcrdma: a send-queue work request ({}) failed with status {}",
                    kind.name(),
                    code
                );
                true
            }
        };
        let Some(c) = self.calls.get_mut(i.index()) else {
            return;
        };
        // A posted reply's Send comes after its Writes (unsignaled, or already reported): its
        // completion, whatever the status, accounts for all of them. A Send the device refused
        // (never posted) accounts for itself only: its Writes may still be in the device.
        let done = if kind == WrKind::Send && c.posted {
            c.outstanding
        } else {
            1
        };
        c.outstanding -= done;
        self.sq_in_flight = self.sq_in_flight.saturating_sub(done);
        c.failed |= failed;
        let outstanding = c.outstanding;
        let call_failed = c.failed;
        let state = c.state;
        if kind == WrKind::Read {
            self.reads_in_flight = self.reads_in_flight.saturating_sub(1);
        }
        if failed {
            self.close(res);
        }
        if outstanding != 0 {
            return;
        }
        match state {
            CallState::Reading => {
                let all_posted = self
                    .call(i)
                    .is_some_and(|c| c.reads_posted == c.reads_total);
                if call_failed || self.closing {
                    self.finish(res, i);
                } else if all_posted {
                    self.reads_done(res, i);
                    if let Some(c) = self.call_mut(i) {
                        c.state = CallState::Ready;
                    }
                    if !self.try_reply(res, service, i) {
                        let _ = self.waiting.push_back(i);
                    }
                }
            }
            _ => self.finish(res, i),
        }
    }

    /// Marks which work requests of the chain the device reports: every Read (each one moves
    /// its call on), and the last Send, whose completion retires every reply before it. With
    /// `signal_all`, every one.
    pub(super) fn set_signaling(&mut self) {
        let last_send = self.chain.iter().rposition(|wr| wr.op == SendOp::Send);
        let signal_all = self.signal_all;
        let mut unsignaled = 0;
        for (k, wr) in self.chain.iter_mut().enumerate() {
            wr.signaled =
                signal_all || matches!(wr.op, SendOp::Read { .. }) || Some(k) == last_send;
            unsignaled += (wr.op == SendOp::Send && !wr.signaled) as u64;
        }
        self.counters.unsignaled_sends += unsignaled;
    }
}
