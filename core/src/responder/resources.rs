//! The memory a connection borrows per batch: its receive pool (own or shared) and the page
//! pools.

use crate::pages::PagePool;
use crate::pool::RecvPool;

/// The receive side a connection uses: its pool (own, or shared by an SRQ), the sink pages
/// for Read chunks and the payload pages it lends services. Built by the front end per batch:
/// [`Resources::own`] for a connection with its own receive queue, [`Resources::shared`] for one
/// of the connections of a [`crate::srq::SharedQueue`].
pub struct Resources<'r, 'a, const N: usize, const P: usize> {
    /// The receive pool.
    pub pool: &'r mut RecvPool<'a, N>,
    /// Sink pages for Read-chunk data.
    pub sinks: &'r mut PagePool<'a, P>,
    /// Pages lent to services for reply payloads.
    pub payloads: &'r mut PagePool<'a, P>,
    /// `true` when the pool is shared with other connections (SRQ): this connection never
    /// refills or closes it and releases only its own Receives at drain.
    pub(super) shared_pool: bool,
    /// With a shared pool, this connection's share of the posted Receives (set by
    /// [`crate::srq::SharedQueue::flush`]). `None`: the pool's posted count.
    pub(crate) share: Option<Share>,
    /// A refill of the shared pool the device refused during the last flush.
    pub(crate) refill_error: Option<crate::device::PostError>,
}

/// Receives a shared queue keeps unpromised: what a requester that breaks its grant takes
/// before its connection is closed comes from here, not from another connection's share.
pub(crate) const SPARE: u64 = 1;

/// What a connection of a shared queue may be granted: the posted Receives not promised to
/// the other connections, and no more than a fair share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    /// The other connections' demands ([`super::Connection::credit_demand`]), summed.
    pub(crate) others: u64,
    /// Connections sharing the pool (this one included).
    pub(crate) connections: u32,
}

impl Share {
    /// The grant limit with `posted` Receives posted, for a connection that will still hold
    /// `in_hand_after` calls once its replies are posted: its demand after the replies,
    /// `grant − in_hand_after`, must fit in what the others are not promised. A fair share keeps
    /// room for one more connection (`posted / (connections + 1)`), so a newcomer can be
    /// admitted while the others are busy. At least 1 (the invariant leaves at least that).
    pub(crate) fn limit(self, posted: usize, in_hand_after: u32) -> u32 {
        let posted = posted as u64;
        let free = posted.saturating_sub(self.others + SPARE) + in_hand_after as u64;
        let fair = posted / (self.connections as u64 + 1);
        free.min(fair.max(1)).clamp(1, u32::MAX as u64) as u32
    }
}

impl<'r, 'a, const N: usize, const P: usize> Resources<'r, 'a, N, P> {
    /// The resources of a connection with its own receive pool (no SRQ): the grant follows the
    /// pool's posted Receives.
    pub fn own(
        pool: &'r mut RecvPool<'a, N>,
        sinks: &'r mut PagePool<'a, P>,
        payloads: &'r mut PagePool<'a, P>,
    ) -> Self {
        Resources {
            pool,
            sinks,
            payloads,
            shared_pool: false,
            share: None,
            refill_error: None,
        }
    }

    /// The resources of a connection sharing `pool` with others through a
    /// [`crate::srq::SharedQueue`], which refills the pool and sets the grant limit.
    pub fn shared(
        pool: &'r mut RecvPool<'a, N>,
        sinks: &'r mut PagePool<'a, P>,
        payloads: &'r mut PagePool<'a, P>,
    ) -> Self {
        Resources {
            pool,
            sinks,
            payloads,
            shared_pool: true,
            share: None,
            refill_error: None,
        }
    }

    /// Whether the pool is shared (built by [`Resources::shared`]).
    pub fn is_shared(&self) -> bool {
        self.shared_pool
    }

    pub(crate) fn set_share(&mut self, share: Share) {
        self.share = Some(share);
    }
}
