//! A responder on the software NIC with a scripted requester: the rig the responder tests,
//! property tests and the core benchmark share.
//!
//! Memory is leaked (`'static`) so the endpoint can live in one struct next to the NIC that
//! reaches the same bytes; a test leaks a few MiB at most.

use rpcrdma_core::endpoint::{Endpoint, EndpointConfig};
use rpcrdma_core::responder::Service;
use rpcrdma_core::wire::{
    decode_reply, DecodeLimits, HeaderRepr, Proc, ReadSegment, Reply as WireReply, Segment,
    SegmentList, MAX_READ_SEGMENTS,
};
use rpcrdma_services::oncrpc;

use crate::nic::DmaMemory;
use crate::nic::{Access, NicError, SoftNic};

/// Receive descriptors (capacity).
pub const N: usize = 512;
/// Page-pool capacity.
pub const P: usize = 1024;
/// Call-slot capacity.
pub const C: usize = 512;

/// Device address of this side's memory (the endpoint's one region).
pub const LOCAL_IOVA: u64 = 0x0000_7e00_0000_0000;
/// Its local key.
pub const LOCAL_LKEY: u32 = 0x1001;

/// The requester's memory the responder RDMA-Reads (call data).
pub const SOURCE_ADDR: u64 = 0x1_0000_0000;
/// Its key.
pub const SOURCE_RKEY: u32 = 0x7001;
/// The requester's memory the responder RDMA-Writes (write and reply chunks).
pub const TARGET_ADDR: u64 = 0x2_0000_0000;
/// Its key.
pub const TARGET_RKEY: u32 = 0x7002;
/// Size of each requester region.
pub const REQUESTER_MEM: usize = 4 << 20;

/// Rig settings.
#[derive(Debug, Clone, Copy)]
pub struct RigConfig {
    /// Receive buffer size.
    pub buffer_size: usize,
    /// Credits.
    pub credits: u16,
    /// Refill batch.
    pub batch: u16,
    /// Send slot size.
    pub send_size: usize,
    /// What the requester receives inline.
    pub peer_inline: usize,
    /// Reads in flight at most.
    pub initiator_depth: u8,
    /// Bytes of sink pages.
    pub sink_bytes: usize,
    /// Bytes of payload pages.
    pub payload_bytes: usize,
    /// Signal every send-queue work request ([`ResponderConfig::signal_all`](rpcrdma_core::responder::ResponderConfig::signal_all)).
    pub signal_all: bool,
}

impl Default for RigConfig {
    fn default() -> Self {
        RigConfig {
            buffer_size: 4096,
            credits: 32,
            batch: 8,
            send_size: 4096,
            peer_inline: 4096,
            initiator_depth: 4,
            sink_bytes: 2 << 20,
            payload_bytes: 2 << 20,
            signal_all: false,
        }
    }
}

/// A reply as the requester parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// xid.
    pub xid: u32,
    /// Credit grant.
    pub credits: u32,
    /// Receives the responder had posted when the reply went out.
    pub posted_at_send: usize,
    /// RDMA_MSG, RDMA_NOMSG or RDMA_ERROR.
    pub proc_: Proc,
    /// `rdma_err` for RDMA_ERROR.
    pub error: Option<u32>,
    /// Lengths written per segment of the write chunk (if echoed).
    pub write_lengths: Option<Vec<u32>>,
    /// Lengths written per segment of the reply chunk (if used).
    pub reply_lengths: Option<Vec<u32>>,
    /// The inline RPC reply (RDMA_MSG).
    pub inline: Vec<u8>,
    /// Total message length.
    pub len: usize,
}

/// Parses a reply message the responder sent with the core's requester-side decoder
/// ([`decode_reply`]); panics if it does not parse (a reply carries no read list, one write
/// chunk at most, nothing after an RDMA_NOMSG or RDMA_ERROR header).
pub fn parse_reply(bytes: &[u8], posted_at_send: usize) -> Reply {
    let decoded = decode_reply(bytes).unwrap_or_else(|e| panic!("the reply does not parse: {e}"));
    let lengths = |chunk: Option<SegmentList<'_>>| {
        chunk.map(|segments| segments.iter().map(|s| s.length).collect())
    };
    let mut reply = Reply {
        xid: decoded.xid(),
        credits: decoded.credits(),
        posted_at_send,
        proc_: decoded.proc_(),
        error: None,
        write_lengths: None,
        reply_lengths: None,
        inline: Vec::new(),
        len: bytes.len(),
    };
    match decoded {
        WireReply::Error(e) => reply.error = Some(e.kind.code()),
        WireReply::Rpc(r) => {
            reply.write_lengths = lengths(r.write_chunk);
            reply.reply_lengths = lengths(r.reply_chunk);
            reply.inline = r.rpc_message.to_vec();
        }
    }
    reply
}

/// Builds a call message: transport header (`proc_`, read list, write chunk, reply chunk)
/// followed by `inline` (nothing is appended for RDMA_NOMSG unless given).
pub fn call_message(
    xid: u32,
    proc_: Proc,
    reads: &[ReadSegment],
    write: Option<&[Segment]>,
    reply: Option<&[Segment]>,
    inline: &[u8],
) -> Vec<u8> {
    let mut h = HeaderRepr::reply(xid, 32);
    h.proc_ = proc_;
    for r in reads.iter().take(MAX_READ_SEGMENTS) {
        h.read_list.push(*r).unwrap();
    }
    if let Some(w) = write {
        h = h.with_write_chunk(w).unwrap();
    }
    if let Some(r) = reply {
        h = h.with_reply_chunk(r).unwrap();
    }
    let mut out = vec![0u8; h.buffer_len()];
    h.emit(&mut out).unwrap();
    out.extend_from_slice(inline);
    out
}

/// An ONC RPC call header (AUTH_NONE) followed by `args`.
pub fn rpc_call(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    oncrpc::emit_call(&mut b, xid, prog, vers, proc_).unwrap();
    b.extend_from_slice(args);
    b
}

/// The responder (one [`Endpoint`]), the software NIC and the requester's memory.
pub struct Rig<S: Service> {
    /// The NIC.
    pub nic: Box<SoftNic>,
    /// The endpoint: receive pool, page pools and connection over one region.
    pub endpoint: Endpoint<'static, N, C, P>,
    /// The service.
    pub service: S,
    /// Requester memory the responder reads.
    pub source: &'static mut DmaMemory,
    /// Requester memory the responder writes.
    pub target: &'static mut DmaMemory,
    /// Credits the requester holds (1 until the first reply).
    pub granted: u32,
    /// Calls sent and not answered.
    pub outstanding: usize,
    /// Replies received.
    pub replies: Vec<Reply>,
    /// Every grant seen stayed within the Receives posted when it was sent.
    pub grant_violations: usize,
    /// Backward-direction calls (RFC 8167) the responder sent, as the requester received them.
    pub backward: Vec<Reply>,
}

impl RigConfig {
    /// The endpoint configuration this rig runs.
    pub fn endpoint(&self) -> EndpointConfig {
        EndpointConfig {
            credits: self.credits,
            buffer_size: self.buffer_size,
            batch: self.batch,
            receive_buffers: 0,
            send_size: self.send_size,
            peer_inline: self.peer_inline,
            initiator_depth: self.initiator_depth,
            sq_depth: 1024,
            page_size: 4096,
            sink_bytes: self.sink_bytes,
            payload_bytes: self.payload_bytes,
            limits: DecodeLimits::DEFAULT,
            epoch: 7,
            signal_all: self.signal_all,
        }
    }
}

impl<S: Service> Rig<S> {
    /// A rig with `config`, serving with `service`.
    pub fn new(config: RigConfig, service: S) -> Self {
        let ec = config.endpoint();
        let memory = DmaMemory::leak(ec.region_len());
        let source = DmaMemory::leak(REQUESTER_MEM);
        let target = DmaMemory::leak(REQUESTER_MEM);
        let mut nic = Box::new(SoftNic::new());
        memory.register(&mut nic, LOCAL_IOVA, LOCAL_LKEY);
        source.register_remote(&mut nic, SOURCE_RKEY, SOURCE_ADDR, Access::Read);
        target.register_remote(&mut nic, TARGET_RKEY, TARGET_ADDR, Access::Write);
        let mut endpoint =
            Endpoint::new(memory.region_at(LOCAL_IOVA, LOCAL_LKEY), &ec).expect("endpoint");
        endpoint.refill(&mut *nic).expect("initial Receives");
        Rig {
            nic,
            endpoint,
            service,
            source,
            target,
            granted: 1,
            outstanding: 0,
            replies: Vec::new(),
            grant_violations: 0,
            backward: Vec::new(),
        }
    }

    /// Runs the responder until the NIC is quiet: poll, handle, flush.
    pub fn pump(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..100_000 {
            let n = self
                .endpoint
                .poll(&mut *self.nic, &mut self.service)
                .unwrap_or(0);
            total += n;
            self.collect();
            if n == 0 && self.nic.queued() == 0 && self.nic.pending() == 0 {
                break;
            }
        }
        total
    }

    /// The queue pair goes to error (a disconnect) while work requests may be held in the send
    /// queue: they flush, the NIC resumes, and the responder takes every completion.
    pub fn disconnect(&mut self) {
        self.nic.flush();
        self.nic.hold(false);
        self.pump();
    }

    /// Takes the replies the requester received.
    pub fn collect(&mut self) {
        while let Some(sent) = self.nic.take_sent() {
            let r = parse_reply(&sent.bytes, sent.posted_at_send);
            if r.error.is_none() && r.inline.get(4..8) == Some(&[0, 0, 0, 0][..]) {
                // An RPC CALL: a backward-direction call, not a reply to this requester.
                self.backward.push(r);
                continue;
            }
            if r.credits as usize > r.posted_at_send {
                self.grant_violations += 1;
            }
            self.granted = r.credits.max(1);
            self.outstanding = self.outstanding.saturating_sub(1);
            self.replies.push(r);
        }
    }

    /// The requester sends a call (within its credits, or it panics: the tests keep within).
    ///
    /// # Errors
    /// The NIC's error: RNR means the responder broke the credit promise.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), NicError> {
        assert!(
            self.outstanding < self.granted as usize,
            "the requester would exceed its {} credits",
            self.granted
        );
        self.nic.deliver(msg)?;
        self.outstanding += 1;
        Ok(())
    }

    /// Sends a call and pumps until its reply; returns the reply.
    pub fn round_trip(&mut self, msg: &[u8]) -> Reply {
        let before = self.replies.len();
        self.send(msg).expect("a Receive is posted");
        self.pump();
        assert!(self.replies.len() > before, "no reply");
        self.replies.last().cloned().unwrap()
    }

    /// Writes `data` into the requester's source memory at `offset`; returns the segment.
    pub fn source_segment(&mut self, offset: usize, data: &[u8]) -> Segment {
        self.source.bytes_mut()[offset..offset + data.len()].copy_from_slice(data);
        Segment {
            handle: SOURCE_RKEY,
            length: data.len() as u32,
            offset: SOURCE_ADDR + offset as u64,
        }
    }

    /// A segment of `len` bytes of the requester's target memory at `offset`.
    pub fn target_segment(&self, offset: usize, len: u32) -> Segment {
        Segment {
            handle: TARGET_RKEY,
            length: len,
            offset: TARGET_ADDR + offset as u64,
        }
    }

    /// The requester's target memory.
    pub fn target_bytes(&self) -> &[u8] {
        self.target.bytes()
    }

    /// Whether nothing leaked: no call in progress, no Receive held, every page free.
    pub fn assert_quiet(&self) {
        let e = &self.endpoint;
        assert_eq!(e.connection().calls_in_progress(), 0, "calls in progress");
        assert_eq!(e.pool().held(), 0, "Receives held");
        assert_eq!(e.sinks().free_pages(), e.sinks().page_count(), "sink pages");
        assert_eq!(
            e.payloads().free_pages(),
            e.payloads().page_count(),
            "payload pages"
        );
        assert_eq!(e.held(), 0, "held");
        assert_eq!(e.connection().sq_in_flight(), 0, "send-queue work requests");
    }
}
