//! Credit bookkeeping for connections that share one receive pool.

/// Credit bookkeeping for connections that share one receive pool (SRQ): the grants of all
/// connections together never exceed the Receives posted when a reply is sent. Used through
/// [`crate::srq::SharedQueue`], which runs it in the right order.
#[derive(Debug)]
pub struct CreditLedger<const M: usize> {
    grants: [u32; M],
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
            grants: [0; M],
            live: [false; M],
        }
    }

    /// Registers connection `slot`: until its first reply a requester may send one call
    /// (RFC 8166 §3.3.1), so it starts holding one credit. Returns false if the slot is out
    /// of range.
    pub fn open(&mut self, slot: usize) -> bool {
        match (self.grants.get_mut(slot), self.live.get_mut(slot)) {
            (Some(g), Some(l)) => {
                *g = 1;
                *l = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets connection `slot`.
    pub fn close(&mut self, slot: usize) {
        if let (Some(g), Some(l)) = (self.grants.get_mut(slot), self.live.get_mut(slot)) {
            *g = 0;
            *l = false;
        }
    }

    /// Connections registered.
    pub fn connections(&self) -> usize {
        self.live.iter().filter(|l| **l).count()
    }

    /// Sum of the grants outstanding.
    pub fn total(&self) -> u64 {
        self.grants.iter().map(|g| *g as u64).sum()
    }

    /// The most connection `slot` may be granted now, with `posted` Receives in the shared
    /// pool: what is posted less the other connections' grants, and no more than a fair share
    /// (`posted / connections`), so no connection starves the others; at least 1.
    pub fn limit(&self, slot: usize, posted: usize) -> u32 {
        let others = self.total() - self.grants.get(slot).copied().unwrap_or(0) as u64;
        let available = (posted as u64).saturating_sub(others);
        let fair = posted as u64 / self.connections().max(1) as u64;
        available.min(fair).clamp(1, u32::MAX as u64) as u32
    }

    /// Records the grant connection `slot` was sent.
    pub fn record(&mut self, slot: usize, grant: u32) {
        if let Some(g) = self.grants.get_mut(slot) {
            *g = grant;
        }
    }
}
