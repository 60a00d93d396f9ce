//! The upper-layer interface: what an RPC service sees of a call and how it hands back a reply.

use super::BackchannelError;
use crate::pages::PageRun;
use crate::xdr::XdrView;

/// A call ready to be served: its XDR view and what the requester offered for the reply.
#[derive(Debug, Clone, Copy)]
pub struct Call<'v> {
    /// The call as head / pages / tail.
    pub view: XdrView<'v>,
    /// The RPC-over-RDMA xid (the RPC message's own xid is its first word).
    pub xid: u32,
    /// Bytes the requester's first write chunk can take (0 without one): room for a
    /// DDP-eligible reply payload.
    pub write_chunk_len: u64,
    /// Bytes the requester's reply chunk can take (0 without one).
    pub reply_chunk_len: u64,
    /// Largest reply (transport header included) the requester receives inline.
    pub peer_inline: usize,
    /// What names this call when the service answers later ([`Verdict::Pending`]).
    pub handle: CallHandle,
}

/// Names a call a service answers later: the connection's epoch, the call slot and its
/// generation, so a handle kept past the call's end (or from another connection) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CallHandle {
    /// The connection's epoch.
    pub epoch: u16,
    /// The call slot.
    pub index: u16,
    /// The slot's generation.
    pub generation: u32,
}

/// A [`CallHandle`] that names no pending call of this connection, or a reply that cannot be
/// queued right now (flush and try again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StaleHandle;

impl core::fmt::Display for StaleHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "the call handle names no pending call (answered, or the connection closed)"
        )
    }
}

impl core::error::Error for StaleHandle {}

/// What the service did with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// The reply is in the [`ReplyWriter`]: send it.
    Reply,
    /// No reply (for example a message the service discards). The Receive is released.
    NoReply,
    /// Not now: a resource the reply needs (payload pages) is short. The reply is discarded
    /// and the call is offered again once work in flight completes. Only when the resource
    /// can be had at all ([`ReplyWriter::payload_fits`]); otherwise answer with an error.
    Defer,
    /// The service answers later, through `Connection::complete_pending` with
    /// [`Call::handle`] (for example after asking another server). Whatever was written now is
    /// discarded. The call keeps its Receive, its sink pages (Read chunk data) and a send slot
    /// until then, and its view stays readable ([`Connections`]): a call pending for a long
    /// time holds memory that later calls with Read chunks wait for.
    Pending,
}

/// An RPC service on top of the transport.
pub trait Service {
    /// Serves one call: read it from `call.view`, write the RPC reply into `reply`.
    fn serve(&mut self, call: &Call<'_>, reply: &mut ReplyWriter<'_>) -> Verdict;

    /// The reply to a backward-direction call this side sent on connection `epoch` (RFC 8167;
    /// see `Connection::send_backchannel`), matched by xid. Default: ignored (a service
    /// without a backchannel).
    fn backchannel_reply(&mut self, _epoch: u16, _view: &XdrView<'_>) {}
}

/// What a service's own work between batches reaches of its connections: the calls it left
/// pending ([`Verdict::Pending`]; a gateway writes them to its backend straight from the
/// Receive buffer and the sink pages, and again after a reconnect, without copying them), the
/// payload pages its replies are built from, and the backward direction (RFC 8167).
/// [`crate::endpoint::Endpoint`] implements it for its connection; a front end with many
/// connections implements it over all of them.
pub trait Connections {
    /// The view of the pending call `handle` names (as [`Service::serve`] saw it), or `None`
    /// if it names none (answered, or its connection closed).
    fn pending_view(&self, handle: CallHandle) -> Option<XdrView<'_>>;

    /// The payload pages the replies of connection `epoch` are built from, for a service that
    /// fills a reply's payload before it answers (see [`ReplyWriter::give_payload`]); also
    /// where a run taken for a connection that has since closed goes back. `None` if there are
    /// none (the pages were reset with their connection: a run taken from them is void).
    fn payload_pages(&mut self, epoch: u16) -> Option<&mut dyn PayloadPages>;

    /// Sends the RPC CALL `call` (its xid first) to the requester of connection `epoch` in the
    /// backward direction, failing at `deadline` (see `Connection::send_backchannel`).
    /// `Ok(false)`: not now, keep it and try again later.
    ///
    /// # Errors
    /// [`BackchannelError`]: no such connection (or it is closing), or the call is refused.
    fn send_backchannel(
        &mut self,
        epoch: u16,
        deadline: u64,
        call: &[u8],
    ) -> Result<bool, BackchannelError>;
}

/// No connections at all (a front end before its first one).
impl Connections for () {
    fn pending_view(&self, _handle: CallHandle) -> Option<XdrView<'_>> {
        None
    }
    fn payload_pages(&mut self, _epoch: u16) -> Option<&mut dyn PayloadPages> {
        None
    }
    fn send_backchannel(&mut self, _: u16, _: u64, _: &[u8]) -> Result<bool, BackchannelError> {
        Err(BackchannelError::Closed)
    }
}

/// Pages the responder lends a service for a reply payload: registered once, carved into
/// runs (see [`crate::pages::PagePool`]).
pub trait PayloadPages {
    /// A run for `len` bytes, or `None` if none is free.
    fn alloc(&mut self, len: usize) -> Option<PageRun>;
    /// Whether a run for `len` bytes could ever be allocated.
    fn fits(&self, len: usize) -> bool;
    /// The run's bytes for the CPU to fill.
    fn bytes_mut(&mut self, run: &PageRun) -> &mut [u8];
    /// Gives a run back.
    fn free(&mut self, run: PageRun) -> bool;
    /// Whether `run` is a live run of these pages.
    fn owns(&self, run: &PageRun) -> bool;
}

impl<const P: usize> PayloadPages for crate::pages::PagePool<'_, P> {
    fn alloc(&mut self, len: usize) -> Option<PageRun> {
        crate::pages::PagePool::alloc(self, len)
    }
    fn fits(&self, len: usize) -> bool {
        crate::pages::PagePool::fits(self, len)
    }
    fn bytes_mut(&mut self, run: &PageRun) -> &mut [u8] {
        crate::pages::PagePool::bytes_mut(self, run)
    }
    fn free(&mut self, run: PageRun) -> bool {
        crate::pages::PagePool::free(self, run)
    }
    fn owns(&self, run: &PageRun) -> bool {
        crate::pages::PagePool::owns(self, run)
    }
}

/// Where a reply's payload lives.
#[derive(Debug)]
pub(crate) enum PayloadSource {
    /// Pages lent by the responder.
    Lent(PageRun),
    /// Memory the service registered itself, alive for the program's life.
    External {
        bytes: &'static [u8],
        device_addr: u64,
        lkey: u32,
    },
}

/// A reply payload: bytes that belong at `position` of the RPC reply.
#[derive(Debug)]
pub(crate) struct Payload {
    pub(crate) position: usize,
    pub(crate) len: usize,
    /// DDP-eligible (RFC 8267: READ data, READLINK path): may go into the write chunk.
    pub(crate) ddp: bool,
    pub(crate) source: PayloadSource,
}

/// Why a payload could not be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PayloadError {
    /// The reply already has a payload (one per reply).
    AlreadySet,
    /// No page run of that size is free now (or ever, if larger than the pool).
    NoPages {
        /// Bytes asked for.
        len: usize,
    },
    /// `position` is past the reply body or not a multiple of 4.
    BadPosition {
        /// The position.
        position: usize,
    },
    /// A run given with [`ReplyWriter::give_payload`] is not a live run of this connection's
    /// payload pages.
    NotOurs,
}

impl core::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PayloadError::AlreadySet => write!(f, "the reply already carries a payload"),
            PayloadError::NoPages { len } => write!(
                f,
                "no free page run for a {len}-byte payload: raise the payload pool or lower \
                 the largest reply"
            ),
            PayloadError::BadPosition { position } => write!(
                f,
                "payload position {position} is not a multiple of 4 inside the reply body"
            ),
            PayloadError::NotOurs => write!(
                f,
                "the payload run is not one of this connection's payload pages (allocate it \
                 from the pages Connections::payload_pages gives for the call's connection)"
            ),
        }
    }
}

impl core::error::Error for PayloadError {}

/// The service's side of a reply: the RPC reply body in the send buffer, and at most one
/// payload (lent pages or the service's own registered memory) inserted at a position of it.
///
/// The reply stream is `body[..position] ‖ payload ‖ pad ‖ body[position..]`. The responder
/// chooses how it travels (RFC 8166 §3.5): a DDP-eligible payload goes into the requester's
/// write chunk when it offered one; the rest goes inline if it fits the requester's inline
/// size, else through its reply chunk; a reply that fits nowhere is answered with ERR_CHUNK.
pub struct ReplyWriter<'w> {
    body: &'w mut [u8],
    len: usize,
    pages: &'w mut dyn PayloadPages,
    pub(crate) payload: Option<Payload>,
}

impl<'w> ReplyWriter<'w> {
    /// A writer over `body` lending from `pages`. The responder makes one per call; a service's
    /// own tests can make one to run the service without a connection.
    pub fn new(body: &'w mut [u8], pages: &'w mut dyn PayloadPages) -> Self {
        ReplyWriter {
            body,
            len: 0,
            pages,
            payload: None,
        }
    }

    /// The whole body buffer; write the reply at its start, then call
    /// [`ReplyWriter::set_len`].
    #[inline]
    pub fn buffer(&mut self) -> &mut [u8] {
        self.body
    }

    /// Room for the body, in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.body.len()
    }

    /// Sets the body length (clamped to the capacity).
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.body.len());
    }

    /// Body length so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body written so far.
    #[inline]
    pub fn body(&self) -> &[u8] {
        self.body.get(..self.len).unwrap_or_default()
    }

    /// Appends bytes to the body; returns false (and writes nothing) if they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        match self.body.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = end;
                true
            }
            None => false,
        }
    }

    /// Whether a payload of `len` bytes can ever be lent (the page pool is large enough, even if
    /// its pages are taken right now).
    pub fn payload_fits(&self, len: usize) -> bool {
        self.pages.fits(len)
    }

    /// Borrows a run of registered pages for a payload of `len` bytes that belongs at
    /// `position` of the body (a multiple of 4, at most the body length when the reply is
    /// finished), and returns its bytes to fill. `ddp`: the payload is DDP-eligible (RFC 8267)
    /// and may travel in the requester's write chunk. The pages go back to the responder when
    /// the reply has been sent.
    ///
    /// # Errors
    /// [`PayloadError`] if a payload is already set, the position is misaligned, or no run is
    /// free.
    pub fn lend_payload(
        &mut self,
        len: usize,
        position: usize,
        ddp: bool,
    ) -> Result<&mut [u8], PayloadError> {
        if self.payload.is_some() {
            return Err(PayloadError::AlreadySet);
        }
        if position % 4 != 0 {
            return Err(PayloadError::BadPosition { position });
        }
        let run = self.pages.alloc(len).ok_or(PayloadError::NoPages { len })?;
        self.payload = Some(Payload {
            position,
            len,
            ddp,
            source: PayloadSource::Lent(run),
        });
        match &self.payload {
            Some(Payload {
                source: PayloadSource::Lent(run),
                ..
            }) => Ok(self.pages.bytes_mut(run)),
            _ => Ok(&mut []),
        }
    }

    /// Attaches a run of payload pages the service filled itself before the reply (a gateway
    /// reads a READ reply's data from its backend socket straight into pages it took from
    /// [`Connections::payload_pages`]): the payload is the run's `len` bytes at `position`,
    /// and the pages go back to the responder when the reply has been sent, as with
    /// [`ReplyWriter::lend_payload`].
    ///
    /// # Errors
    /// [`PayloadError::NotOurs`] if `run` is not a live run of these pages (it is left alone);
    /// [`PayloadError::AlreadySet`] or [`PayloadError::BadPosition`] as for
    /// [`ReplyWriter::lend_payload`], and then the run is given back here: nothing leaks.
    pub fn give_payload(
        &mut self,
        run: PageRun,
        position: usize,
        ddp: bool,
    ) -> Result<(), PayloadError> {
        if !self.pages.owns(&run) {
            return Err(PayloadError::NotOurs);
        }
        let refused = if self.payload.is_some() {
            Some(PayloadError::AlreadySet)
        } else if position % 4 != 0 {
            Some(PayloadError::BadPosition { position })
        } else {
            None
        };
        if let Some(e) = refused {
            self.pages.free(run);
            return Err(e);
        }
        self.payload = Some(Payload {
            position,
            len: run.len(),
            ddp,
            source: PayloadSource::Lent(run),
        });
        Ok(())
    }

    /// Attaches a payload in the service's own registered memory (`device_addr` under `lkey`
    /// is how the device reaches `bytes`), for the program's life.
    ///
    /// # Errors
    /// As [`ReplyWriter::lend_payload`], without the page shortage.
    pub fn external_payload(
        &mut self,
        bytes: &'static [u8],
        device_addr: u64,
        lkey: u32,
        position: usize,
        ddp: bool,
    ) -> Result<(), PayloadError> {
        if self.payload.is_some() {
            return Err(PayloadError::AlreadySet);
        }
        if position % 4 != 0 {
            return Err(PayloadError::BadPosition { position });
        }
        self.payload = Some(Payload {
            position,
            len: bytes.len(),
            ddp,
            source: PayloadSource::External {
                bytes,
                device_addr,
                lkey,
            },
        });
        Ok(())
    }

    /// The payload's position, length and DDP eligibility, if one is attached.
    pub fn payload(&self) -> Option<(usize, usize, bool)> {
        self.payload.as_ref().map(|p| (p.position, p.len, p.ddp))
    }

    /// Drops the payload (its pages go back).
    pub fn clear_payload(&mut self) {
        if let Some(Payload {
            source: PayloadSource::Lent(run),
            ..
        }) = self.payload.take()
        {
            self.pages.free(run);
        }
    }
}
