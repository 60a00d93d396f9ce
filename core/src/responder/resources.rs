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
    /// With a shared pool, the most this connection may be granted now (set by
    /// [`crate::srq::SharedQueue::flush`]). `None`: the pool's posted count.
    pub(super) grant_limit: Option<u32>,
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
            grant_limit: None,
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
            grant_limit: None,
        }
    }

    /// Whether the pool is shared (built by [`Resources::shared`]).
    pub fn is_shared(&self) -> bool {
        self.shared_pool
    }

    pub(crate) fn set_grant_limit(&mut self, limit: u32) {
        self.grant_limit = Some(limit);
    }
}
