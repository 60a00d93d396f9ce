//! Connections that share one receive queue (an SRQ): the credit side of sharing, once.
//!
//! With a shared receive queue every connection's Receives come from one pool, so a grant is
//! not a connection's own business any more. What every requester may still send (its
//! *demand*: [`Connection::credit_demand`]), summed over the connections, must stay within the
//! Receives posted on the shared queue at every instant, or a requester that keeps within its
//! grant meets RNR (fatal for a Linux client, which sets its RNR retry count to 0).
//! [`SharedQueue`] keeps that invariant:
//!
//! - **Admission** ([`SharedQueue::open`]): a new connection's requester may send one call
//!   before any reply, so it is admitted only if a posted Receive is not promised to anyone;
//!   otherwise it is refused with [`AdmitError`] (the front end rejects the connection and says
//!   why). Grants keep a fair share free for one more connection, so under load the next
//!   newcomer normally finds its Receive.
//! - **Each batch** ([`SharedQueue::flush`]), for each connection with replies to send:
//!
//!   ```text
//!   build the replies (their calls' Receives come free) ──▶ refill the shared queue
//!     ──▶ grant ≤ posted − the others' demands + the calls it still holds (fair share)
//!     ──▶ post the chain ──▶ record the connection's demand
//!   ```
//!
//!   A grant that was cut frees its share only as replies go out under the new grant (the
//!   requester may still act on the old one until it reads them).
//! - **A requester that breaks its grant** ([`SharedQueue::handle`]): a message that arrives
//!   when its connection's demand is 0 took a Receive promised to someone else. It is counted
//!   (`grant_overruns`) and the connection is closed at once (RFC 8166 §3.3.1 allows it; the
//!   Linux server does the same); the front end disconnects it, so the rest of its burst finds
//!   a queue pair in error instead of the others' Receives. What the excess consumed before
//!   that is covered by the free fair share.
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
    Share, StaleHandle, Verdict, SPARE,
};

/// Why [`SharedQueue::open`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AdmitError {
    /// `M` connections share the queue already.
    Full {
        /// Connections the queue was built for.
        connections: usize,
    },
    /// Every posted Receive is promised to the connections already open: the newcomer's first
    /// call could meet RNR.
    NoReceive {
        /// Receives posted on the shared queue.
        posted: usize,
        /// Receives promised to the open connections.
        promised: u64,
    },
}

impl core::fmt::Display for AdmitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AdmitError::Full { connections } => write!(
                f,
                "the shared receive queue serves {connections} connections already (its                  configured maximum): raise it, or spread clients over more servers"
            ),
            AdmitError::NoReceive { posted, promised } => write!(
                f,
                "all {posted} Receives posted on the shared receive queue are promised to the                  open connections ({promised}): a newcomer's first call could meet RNR; retry                  when calls drain, or give the shared queue more Receives"
            ),
        }
    }
}

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

    /// Admits a connection, with `posted` Receives on the shared queue (refill it first):
    /// until its first reply the requester may send one call (RFC 8166 §3.3.1), so a posted
    /// Receive must be free of promises for it.
    ///
    /// # Errors
    /// [`AdmitError`] says why the connection must be refused.
    pub fn open(&mut self, posted: usize) -> Result<SharedSlot, AdmitError> {
        let promised = self.ledger.total();
        if promised + 1 + SPARE > posted as u64 {
            return Err(AdmitError::NoReceive { posted, promised });
        }
        let i = self.free.pop().ok_or(AdmitError::Full { connections: M })?;
        self.ledger.open(i as usize);
        Ok(SharedSlot(i))
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

    /// Receives promised: the demands of all connections together (never above the Receives
    /// posted).
    pub fn promised(&self) -> u64 {
        self.ledger.total()
    }

    /// Hands one completion to its connection in `slot` (`wc.qp` named it): a Receive from the
    /// shared pool, or one of the connection's Sends, RDMA Reads or RDMA Writes. A message its
    /// requester was not allowed to send closes the connection (see the module docs): the
    /// front end disconnects a connection that [`Connection::is_closing`].
    pub fn handle<'a, const N: usize, const P: usize, const C: usize, S, Y>(
        &mut self,
        slot: SharedSlot,
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
        let overruns = conn.counters().grant_overruns;
        conn.handle(res, sync, service, wc);
        if conn.counters().grant_overruns != overruns && !conn.is_closing() {
            warn!("rpcrdma: a requester sent more calls than its credit grant: closing it");
            conn.close(res);
        }
        self.ledger.record(slot.index(), conn.credit_demand());
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
        res.set_share(Share {
            others: self.ledger.others(slot.index()),
            connections: self.ledger.connections() as u32,
        });
        res.refill_error = None;
        let flushed = conn.flush(res, device, service);
        self.ledger.record(slot.index(), conn.credit_demand());
        let late = res.refill_error.take();
        flushed
            .and(refilled.map(|_| ()))
            .and(late.map_or(Ok(()), Err))
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
