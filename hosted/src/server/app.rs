//! The [`App`] trait: what a [`Server`](super::Server) runs, and its impl for the example
//! service.

use rpcrdma_core::responder::{
    BackchannelFailure, Call, CallHandle, Connections, PayloadPages, ReplyWriter, Service, Verdict,
};
use rpcrdma_services::ExampleService;

/// What a [`Server`](super::Server) runs: a [`Service`], plus — for services that answer some
/// calls later ([`Verdict::Pending`], like a gateway waiting for another server) — a way to
/// hand those answers back. The server calls [`App::poll`] on every turn of its loop (never
/// blocking), then [`App::next_answer`] until it returns `None`, and writes each answer through
/// [`App::write_answer`] into the pending call's reply.
pub trait App: Service {
    /// What the app keeps for a pending call until it can answer it.
    type Answer;
    /// An RDMA connection was accepted; its calls' [`CallHandle::epoch`] is `epoch` until it
    /// closes (a gateway opens its backend connection here).
    fn connection_opened(&mut self, _epoch: u16) {}
    /// The RDMA connection with `epoch` closed: its pending calls are gone (answers for them
    /// are refused as stale) and the epoch may be given to a later connection.
    fn connection_closed(&mut self, _epoch: u16) {}
    /// The most credits the connection with `epoch` may be granted now (`None`: no brake).
    /// Asked before every batch of replies; an app that holds too much for one requester (a
    /// gateway whose backend is slow) lowers it, and the requester slows down instead of a
    /// call being dropped (RFC 8166 §3.3).
    fn credit_cap(&self, _epoch: u16) -> Option<u16> {
        None
    }
    /// Does the app's own non-blocking I/O. `calls` reads the calls it left pending straight
    /// from registered memory (a gateway writes them to its backend from there, and again
    /// after a reconnect) and lends the payload pages a reply may be read into before it is
    /// answered ([`ReplyWriter::give_payload`]). Returns how much work it did (0: idle).
    fn poll(&mut self, _calls: &mut dyn Connections) -> usize {
        0
    }
    /// The next answer ready for a pending call.
    fn next_answer(&mut self) -> Option<(CallHandle, Self::Answer)> {
        None
    }
    /// Writes `answer` as the reply to `call`, as [`Service::serve`] would; it may move a page
    /// run out of the answer into the reply ([`ReplyWriter::give_payload`]).
    fn write_answer(
        &mut self,
        _answer: &mut Self::Answer,
        _call: &Call<'_>,
        _reply: &mut ReplyWriter<'_>,
    ) -> Verdict {
        Verdict::NoReply
    }
    /// An answer is done with: written, or its call is gone (answered by a deadline, or its
    /// connection closed). Page runs still in it go back to `pages`, the pages they came from.
    fn release_answer(&mut self, _answer: Self::Answer, _pages: &mut dyn PayloadPages) {}
    /// A backward call the app sent ([`Connections::send_backchannel`]) on connection `epoch`
    /// ended without a reply: its deadline passed (or the connection closed).
    fn backchannel_failed(&mut self, _epoch: u16, _xid: u32, _why: BackchannelFailure) {}
    /// Adds the file descriptors the server also waits on in event mode, and for what: a
    /// socket with bytes still to write waits for room to write, a connect in progress for
    /// its completion (writable), any open socket for replies (readable).
    fn wait_fds(&self, _fds: &mut Vec<WaitFd>) {}
    /// Registered memory of the server's the app may hand out as reply payloads without
    /// copying (`bytes` at `device_addr` under `lkey`); taken back (`None`) before it is freed.
    fn set_source(&mut self, _source: Option<(&'static [u8], u64, u32)>) {}
    /// The app's own counters for the exit report (its `app` field, see
    /// [`Report`](super::Report)); `null` unless the app says otherwise. Serialise a typed
    /// struct (`serde_json::to_value`) that readers of the report can deserialise again, as the
    /// gateway does with [`rpcrdma_report::GatewayApp`].
    fn report(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// A descriptor the server waits on in event mode, and what wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitFd {
    /// The descriptor.
    pub fd: i32,
    /// Wake when it is readable.
    pub read: bool,
    /// Wake when it is writable.
    pub write: bool,
}

impl WaitFd {
    /// Wake when `fd` is readable.
    pub fn readable(fd: i32) -> WaitFd {
        WaitFd {
            fd,
            read: true,
            write: false,
        }
    }
}

impl App for ExampleService {
    type Answer = ();

    fn set_source(&mut self, source: Option<(&'static [u8], u64, u32)>) {
        match source {
            Some((bytes, addr, lkey)) => ExampleService::set_source(self, bytes, addr, lkey),
            None => self.clear_source(),
        }
    }

    fn report(&self) -> serde_json::Value {
        // Its counters are plain integers: serialising them cannot fail.
        serde_json::to_value(self.stats).unwrap_or_default()
    }
}
