//! Connections that share one receive queue (an SRQ): the credit side of sharing, once.
//!
//! With a shared receive queue every connection's Receives come from one pool, so a grant is
//! not a connection's own business any more: the grants of all connections together must stay
//! within the Receives posted on the shared queue when each reply is sent, or a requester that
//! keeps within its grant meets RNR (fatal for a Linux client, which sets its RNR retry count
//! to 0). [`SharedQueue`] keeps that promise with one sequence at the end of every batch, for
//! each connection that has replies to send:
//!
//! ```text
//! refill the shared pool  ──▶  limit = what is posted − the others' grants (fair share)
//!                         ──▶  the connection flushes with its grant ≤ limit
//!                         ──▶  record the grant it sent
//! ```
//!
//! The memory stays the front end's (the pool, the page pools and each connection's send
//! slots are registered by it, with its own lifetimes); every call borrows it as
//! [`Resources`] built by [`Resources::shared`]. A connection sharing the pool never closes it
//! and, at teardown, gives back only its own Receives ([`SharedQueue::close`]).
//!
//! Completions name their connection: [`Completion::qp`] is the queue pair's number, which
//! the front end maps to the connection it accepted on that queue pair; so a Receive that
//! arrived for connection A is handled by A, whichever descriptor of the shared pool it used.

use heapless::Vec;

use crate::device::{Completion, Device, PostError, WrId, WrKind};
use crate::dma::DmaSync;
use crate::pool::Completed;
use crate::responder::{
    Call, CallHandle, Connection, ConnectionDrain, CreditLedger, ReplyWriter, Resources, Service,
    StaleHandle, Verdict,
};

/// A connection's place in a [`SharedQueue`]: its row in the credit ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SharedSlot(u16);

impl SharedSlot {
    /// The row's index (0..M).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The connections sharing one receive queue, up to `M` (see the module docs).
#[derive(Debug)]
pub struct SharedQueue<const M: usize> {
    ledger: CreditLedger<M>,
    free: Vec<u16, M>,
}

impl<const M: usize> Default for SharedQueue<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const M: usize> SharedQueue<M> {
    /// No connection yet, room for `M`.
    pub fn new() -> Self {
        let mut free = Vec::new();
        for i in (0..M.min(u16::MAX as usize) as u16).rev() {
            let _ = free.push(i);
        }
        SharedQueue {
            ledger: CreditLedger::new(),
            free,
        }
    }

    /// Admits a connection: until its first reply the requester may send one call (RFC 8166
    /// §3.3.1), so it starts holding one credit. `None` when `M` connections share the queue
    /// already: refuse the connection (its first call could meet RNR).
    pub fn open(&mut self) -> Option<SharedSlot> {
        let i = self.free.pop()?;
        self.ledger.open(i as usize);
        Some(SharedSlot(i))
    }

    /// Gives back a slot whose connection was never set up (its accept failed after
    /// [`SharedQueue::open`]).
    pub fn cancel(&mut self, slot: SharedSlot) {
        self.ledger.close(slot.index());
        if !self.free.contains(&slot.0) {
            let _ = self.free.push(slot.0);
        }
    }

    /// Connections sharing the queue.
    pub fn connections(&self) -> usize {
        self.ledger.connections()
    }

    /// The grants of all connections together (never above the Receives posted when the last
    /// reply went out).
    pub fn granted(&self) -> u64 {
        self.ledger.total()
    }

    /// Hands one completion to its connection (`wc.qp` named it): a Receive from the shared
    /// pool, or one of the connection's Sends, RDMA Reads or RDMA Writes.
    pub fn handle<'a, const N: usize, const P: usize, const C: usize, S, Y>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        conn: &mut Connection<'a, C>,
        sync: &mut Y,
        service: &mut S,
        wc: &Completion,
    ) where
        S: Service + ?Sized,
        Y: DmaSync + ?Sized,
    {
        debug_assert!(res.is_shared());
        conn.handle(res, sync, service, wc);
    }

    /// A completion for a connection that is gone (torn down, its queue pair destroyed): a
    /// Receive of the shared pool comes back to it (the pool validates the wr_id; a message in
    /// it is dropped); anything else is only counted by the caller. Returns whether a
    /// descriptor came back.
    pub fn stray<Y: DmaSync + ?Sized, const N: usize, const P: usize>(
        &mut self,
        res: &mut Resources<'_, '_, N, P>,
        sync: &mut Y,
        wc: &Completion,
    ) -> bool {
        if WrId(wc.wr_id).kind() != WrKind::Recv {
            return false;
        }
        match res.pool.complete(wc, sync) {
            Ok(Completed::Message(rx)) => res.pool.release(rx).is_ok(),
            Ok(Completed::Rejected { .. } | Completed::Flushed) => true,
            Err(_) => false,
        }
    }

    /// Ends a batch for the connection in `slot`: the shared pool is refilled through `device`
    /// (its Receives go to the shared queue), the connection's grant is capped at what is
    /// posted less the other connections' grants, its replies go out as one chain, and the
    /// grant it sent is recorded.
    ///
    /// # Errors
    /// A refused post: of the shared queue's Receives (the pool took them back; the
    /// connection still flushes within what is posted), or of the connection's send queue
    /// (that connection is then closing).
    pub fn flush<'a, const N: usize, const P: usize, const C: usize, D, S>(
        &mut self,
        slot: SharedSlot,
        res: &mut Resources<'_, 'a, N, P>,
        conn: &mut Connection<'a, C>,
        device: &mut D,
        service: &mut S,
    ) -> Result<(), PostError>
    where
        D: Device + ?Sized,
        S: Service + ?Sized,
    {
        let refilled = if res.pool.is_closing() {
            Ok(0)
        } else {
            res.pool.refill(device)
        };
        res.set_grant_limit(self.ledger.limit(slot.index(), res.pool.posted()));
        let flushed = conn.flush(res, device, service);
        self.ledger
            .record(slot.index(), conn.counters().last_grant.max(1));
        flushed.and(refilled.map(|_| ()))
    }

    /// Answers a call the service left pending on the connection in `slot`; the reply goes out
    /// with the connection's next [`SharedQueue::flush`]. See [`Connection::complete_pending`].
    ///
    /// # Errors
    /// [`StaleHandle`] if the handle names no pending call of this connection.
    pub fn complete_pending<'a, const N: usize, const P: usize, const C: usize>(
        &mut self,
        res: &mut Resources<'_, 'a, N, P>,
        conn: &mut Connection<'a, C>,
        handle: CallHandle,
        f: impl FnOnce(&Call<'_>, &mut ReplyWriter<'_>) -> Verdict,
    ) -> Result<bool, StaleHandle> {
        conn.complete_pending(res, handle, f)
    }

    /// Teardown of the connection in `slot`, once its queue pair is destroyed: its calls give
    /// back their Receives (to the shared pool), pages and send slots, and its grant stops
    /// counting.
    pub fn close<'a, const N: usize, const P: usize, const C: usize>(
        &mut self,
        slot: SharedSlot,
        res: &mut Resources<'_, 'a, N, P>,
        conn: &mut Connection<'a, C>,
    ) -> ConnectionDrain {
        let report = conn.drain(res);
        self.cancel(slot);
        report
    }
}
