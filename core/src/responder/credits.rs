//! Credit bookkeeping for connections that share one receive pool.

/// Credit bookkeeping for connections that share one receive pool (SRQ).
///
/// It keeps, per connection, the connection's *demand*
/// ([`Connection::credit_demand`](super::Connection::credit_demand)): how many more messages its
/// requester may send before it sees a reply it has not seen yet. The invariant, which is what
/// keeps every requester that obeys its grant clear of RNR:
///
/// ```text
/// sum over connections of demand  <=  Receives posted on the shared queue
/// ```
///
/// A message that arrives lowers both sides by one; a reply raises its connection's demand by
/// at most what the grant limit allows (the share [`crate::srq::SharedQueue`] computes); a new connection is
/// admitted only with a posted Receive for its first call. Used through
/// [`crate::srq::SharedQueue`], which runs it in the right order.
#[derive(Debug)]
pub struct CreditLedger<const M: usize> {
    demand: [u32; M],
    live: [bool; M],
}

impl<const M: usize> Default for CreditLedger<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const M: usize> CreditLedger<M> {
    /// An empty ledger for up to `M` connections.
    pub const fn new() -> Self {
        CreditLedger {
            demand: [0; M],
            live: [false; M],
        }
    }

    /// Registers connection `slot`: until its first reply a requester may send one call
    /// (RFC 8166 §3.3.1), so its demand starts at 1. Returns false if the slot is out of range.
    pub fn open(&mut self, slot: usize) -> bool {
        match (self.demand.get_mut(slot), self.live.get_mut(slot)) {
            (Some(d), Some(l)) => {
                *d = 1;
                *l = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets connection `slot` (its queue pair is gone: it sends nothing more).
    pub fn close(&mut self, slot: usize) {
        if let (Some(d), Some(l)) = (self.demand.get_mut(slot), self.live.get_mut(slot)) {
            *d = 0;
            *l = false;
        }
    }

    /// Connections registered.
    pub fn connections(&self) -> usize {
        self.live.iter().filter(|l| **l).count()
    }

    /// The demands of all connections, summed: Receives promised.
    pub fn total(&self) -> u64 {
        self.demand.iter().map(|d| *d as u64).sum()
    }

    /// The demands of the connections other than `slot`, summed.
    pub fn others(&self, slot: usize) -> u64 {
        self.total() - self.demand.get(slot).copied().unwrap_or(0) as u64
    }

    /// Records connection `slot`'s demand, as its connection computes it.
    pub fn record(&mut self, slot: usize, demand: u32) {
        if let (Some(d), Some(true)) = (self.demand.get_mut(slot), self.live.get(slot)) {
            *d = demand;
        }
    }
}
