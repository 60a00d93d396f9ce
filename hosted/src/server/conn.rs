//! What the server holds per connection ([`Conn`], by QP number in a [`ConnMap`]) and for all
//! of them ([`Shared`]), and the [`Resources`] a connection's responder works with.

use std::collections::HashMap;
use std::time::Instant;

use rpcrdma_core::pages::PagePool;
use rpcrdma_core::pool::RecvPool;
use rpcrdma_core::responder::{BackchannelError, CallHandle, Connections, PayloadPages, Resources};
use rpcrdma_core::srq::SharedSlot;
use rpcrdma_core::xdr::XdrView;

use super::{MAX_CALLS, MAX_PAGES, MAX_RECV};
use crate::cm::CmId;
use crate::memory::{Pages, RecvBuffers, ResponderMemory, SourceMemory};
use crate::verbs::{CompChannel, Context, Cq, Pd, QueuePair, Srq};

/// Connections by QP number. QP numbers are small distinct integers, so the map hashes them with
/// the identity instead of SipHash: the lookup is on every completion.
pub(super) type ConnMap = HashMap<u32, Conn, std::hash::BuildHasherDefault<QpNumHasher>>;

/// The identity hash of a `u32` key.
#[derive(Default)]
pub(super) struct QpNumHasher(u64);

impl std::hash::Hasher for QpNumHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        // Spread the low bits into the high ones hashbrown uses for its control bytes.
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// One connection: its queue pair, rdma_cm id, responder and (without an SRQ) receive buffers.
pub(super) struct Conn {
    // Field order is drop order: the QP first (the device stops touching memory), then the id,
    // then the responder and its send slots, then the connection's own receive buffers.
    pub(super) qp: QueuePair,
    pub(super) id: CmId,
    pub(super) responder: Box<ResponderMemory<MAX_CALLS>>,
    pub(super) recv: Option<Box<RecvBuffers<MAX_RECV>>>,
    /// Its row in the shared queue's credit ledger (every connection has one: the table
    /// also bounds how many are open; only SRQ connections share credits).
    pub(super) slot: SharedSlot,
    pub(super) disconnecting: Option<Instant>,
    pub(super) failed: bool,
    /// Messages received when last looked at, and when that number last changed (the idle
    /// reaper's clock; see `ServerConfig::idle_timeout`).
    pub(super) seen: (u64, Instant),
}

impl Conn {
    /// Messages of any kind received on this connection (calls, backward replies, and those
    /// answered with an error or dropped).
    pub(super) fn received(&self) -> u64 {
        let c = self.responder.conn().counters();
        c.calls + c.backchannel + c.err_vers + c.err_chunk + c.dropped
    }
}

/// Verbs resources shared by all connections, made on the first connection request (the
/// listener may be bound to every device). Field order is drop order.
pub(super) struct Shared {
    pub(super) srq: Option<Srq>,
    #[allow(dead_code)] // owned: the memory behind the service's SOURCE payloads
    pub(super) source: SourceMemory,
    pub(super) srq_recv: Option<Box<RecvBuffers<MAX_RECV>>>,
    pub(super) sinks: Box<Pages<MAX_PAGES>>,
    pub(super) payloads: Box<Pages<MAX_PAGES>>,
    pub(super) recv_cq: Cq,
    pub(super) send_cq: Cq,
    pub(super) channel: Option<CompChannel>,
    pub(super) pd: Pd,
    /// The device all of this was made on (a handle; rdma_cm owns the context). A connection
    /// request that arrives on another device is refused with both names: its QP could not
    /// use this PD and these CQs.
    pub(super) ctx: Context,
}

/// Starts a connection's teardown (once): `rdma_disconnect`, and the clock for the reaper.
pub(super) fn start_disconnect(conn: &mut Conn) {
    if conn.disconnecting.is_none() {
        conn.id.disconnect();
        conn.disconnecting = Some(Instant::now());
    }
}

/// The resources a connection's responder works with: its own pool or the shared one (a
/// connection without its own pool exists only with an SRQ, whose pool is made first).
pub(super) fn resources<'r>(
    sh: &'r mut Shared,
    own: Option<&'r mut RecvBuffers<MAX_RECV>>,
) -> Option<Resources<'r, 'static, MAX_RECV, MAX_PAGES>> {
    let (sinks, payloads) = (sh.sinks.pool_mut(), sh.payloads.pool_mut());
    Some(match own {
        Some(side) => Resources::own(side.pool_mut(), sinks, payloads),
        None => Resources::shared(sh.srq_recv.as_mut()?.pool_mut(), sinks, payloads),
    })
}

/// The pending calls of one event loop's connections, for its app's own I/O
/// ([`super::App::poll`]): a call's view straight over the registered Receive and sink pages,
/// and the loop's payload pages (one pool for all its connections, so a run taken for a
/// connection that closed goes back to the same pages).
pub(super) struct LoopCalls<'s> {
    conns: &'s mut ConnMap,
    epochs: &'s HashMap<u16, u32>,
    srq_pool: Option<&'s RecvPool<'static, MAX_RECV>>,
    sinks: &'s PagePool<'static, MAX_PAGES>,
    payloads: &'s mut PagePool<'static, MAX_PAGES>,
    /// QPs with work queued for this turn's flush (a backward call).
    touched: &'s mut Vec<u32>,
    /// Whether a backward call was queued this turn.
    sent_backward: bool,
}

impl<'s> LoopCalls<'s> {
    /// Whether the app queued a backward call through this.
    pub(super) fn sent_backward(&self) -> bool {
        self.sent_backward
    }

    pub(super) fn new(
        conns: &'s mut ConnMap,
        epochs: &'s HashMap<u16, u32>,
        sh: &'s mut Shared,
        touched: &'s mut Vec<u32>,
    ) -> LoopCalls<'s> {
        LoopCalls {
            touched,
            sent_backward: false,
            conns,
            epochs,
            srq_pool: sh.srq_recv.as_deref().map(|side| side.pool()),
            sinks: sh.sinks.pool(),
            payloads: sh.payloads.pool_mut(),
        }
    }
}

impl Connections for LoopCalls<'_> {
    fn pending_view(&self, handle: CallHandle) -> Option<XdrView<'_>> {
        let conn = self.conns.get(self.epochs.get(&handle.epoch)?)?;
        let pool = match conn.recv.as_deref() {
            Some(side) => side.pool(),
            None => self.srq_pool?,
        };
        conn.responder
            .conn()
            .pending_view(pool, self.sinks, handle)
            .ok()
    }

    fn payload_pages(&mut self, _epoch: u16) -> Option<&mut dyn PayloadPages> {
        Some(&mut *self.payloads)
    }

    fn send_backchannel(
        &mut self,
        epoch: u16,
        deadline: u64,
        call: &[u8],
    ) -> Result<bool, BackchannelError> {
        let Some((qp, conn)) = self
            .epochs
            .get(&epoch)
            .and_then(|qp| Some((*qp, self.conns.get_mut(qp)?)))
        else {
            return Err(BackchannelError::Closed);
        };
        let sent = conn
            .responder
            .conn_mut()
            .send_backchannel_call(deadline, call)?;
        self.sent_backward |= sent;
        if sent && !self.touched.contains(&qp) {
            self.touched.push(qp);
        }
        Ok(sent)
    }
}
