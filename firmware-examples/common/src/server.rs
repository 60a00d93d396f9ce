//! The receive path a firmware server runs on rpcrdma-core: this is the part a customer writes.
//!
//! One [`Server::poll`] round:
//! 1. **replenish** — when the pool is at its watermark, take a batch of Receive WRs from it and
//!    post them with one doorbell; WRs the device refuses go back with `cancel`;
//! 2. **complete** — poll up to [`POLL_BATCH`] completions; each goes through
//!    [`RecvPool::complete`], which validates the wr_id, syncs exactly `byte_len` bytes, decodes,
//!    and either hands the call up (Held) or says which RDMA_ERROR to send (or to drop);
//! 3. **serve** — for each call received in this round: pull Read chunk data with RDMA Read,
//!    reassemble the XDR stream (head, chunk data, tail), run the RPC service, send the reply
//!    inline (RDMA_MSG) or through the requester's reply chunk (RDMA Write, then RDMA_NOMSG),
//!    and release the Receive buffer.
//!
//! Nothing here allocates or panics; every failure is counted in [`ServerStats`].

use heapless::{Deque, Vec};
use rpcrdma_core::dma::DmaSync;
use rpcrdma_core::oncrpc::{self, AcceptStat, RpcError};
use rpcrdma_core::pool::{
    Completed, Completion, CompletionError, CompletionStatus, Received, RecvPool, RecvWr,
};
use rpcrdma_core::wire::{
    ErrorReply, HeaderRepr, Message, Proc, Segment, MAX_REPLY_SEGMENTS, MAX_WRITE_SEGMENTS,
};
use rpcrdma_core::xdr::XdrView;

use crate::nic::{SimNic, MAX_SEND};

/// Completions taken per poll.
pub const POLL_BATCH: usize = 8;
/// Bytes of reassembly space for a call with Read chunks (head + chunk data + tail).
pub const CALL_SPACE: usize = 2048;
/// Largest RPC reply this service produces.
const RPC_REPLY_SPACE: usize = 64;

/// The checksum test program (the hosted server's): procedure 1 takes `opaque<>` and returns
/// its FNV-1a checksum.
pub const CHECKSUM_PROG: u32 = 0x2000_5250;
/// Its version.
pub const CHECKSUM_VERS: u32 = 1;
/// Its procedure.
pub const CHECKSUM_PROC: u32 = 1;
/// NFS: only its NULL procedure is served.
pub const NFS_PROG: u32 = 100_003;
/// The NFS version served.
pub const NFS_VERS: u32 = 3;

/// What the server did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, defmt::Format)]
pub struct ServerStats {
    /// Calls answered inline (RDMA_MSG).
    pub inline_replies: u32,
    /// Calls answered through the reply chunk (RDMA Write + RDMA_NOMSG).
    pub reply_chunk_replies: u32,
    /// Backchannel replies received (RFC 8167), handed to the backchannel, not answered.
    pub backchannel_replies: u32,
    /// RDMA_ERROR messages sent (ERR_VERS or ERR_CHUNK).
    pub error_replies: u32,
    /// Malformed messages dropped without a reply.
    pub dropped: u32,
    /// Completions refused by the pool (unknown, stale or duplicate wr_id).
    pub refused_completions: u32,
    /// Flush completions.
    pub flushed: u32,
    /// Bytes pulled by RDMA Read.
    pub read_chunk_bytes: u32,
    /// Work requests the device refused and the pool took back.
    pub cancelled: u32,
    /// Anything that went wrong on the server side (send refused, reply did not fit, …).
    pub failures: u32,
}

/// The DMA sync hook for QEMU's cache-coherent memory: nothing to do, but counted, so the run
/// checks the pool calls it once per successful completion with exactly `byte_len` bytes.
#[derive(Debug, Default)]
pub struct CountingSync {
    /// Calls.
    pub calls: u32,
    /// Bytes synced.
    pub bytes: u64,
}

impl DmaSync for CountingSync {
    fn sync_for_cpu(&mut self, _device_addr: u64, _cpu: *const u8, len: usize) {
        self.calls += 1;
        self.bytes += len as u64;
    }
}

/// The receive-path server over a pool of `N` Receive buffers.
pub struct Server<'d, const N: usize> {
    /// The core's pool.
    pub pool: RecvPool<'d, N>,
    /// The sync hook.
    pub sync: CountingSync,
    /// What happened.
    pub stats: ServerStats,
    wrs: [RecvWr; N],
    held: Deque<Received, POLL_BATCH>,
    call: [u8; CALL_SPACE],
    send: [u8; MAX_SEND],
}

impl<'d, const N: usize> Server<'d, N> {
    /// A server over `pool`.
    pub fn new(pool: RecvPool<'d, N>) -> Self {
        Server {
            pool,
            sync: CountingSync::default(),
            stats: ServerStats::default(),
            wrs: [RecvWr::default(); N],
            held: Deque::new(),
            call: [0; CALL_SPACE],
            send: [0; MAX_SEND],
        }
    }

    /// Posts a batch of Receives if the pool is at its watermark (one doorbell). Returns how many
    /// the device accepted.
    pub fn replenish(&mut self, nic: &mut SimNic<'_>) -> usize {
        let n = self.pool.post(&mut self.wrs);
        let Some(batch) = self.wrs.get(..n) else {
            return 0;
        };
        if n == 0 {
            return 0;
        }
        match nic.post_recv(batch) {
            Ok(()) => n,
            Err(e) => {
                let bad = match e {
                    crate::nic::NicError::BadWr(i) | crate::nic::NicError::QueueFull(i) => i,
                    _ => 0,
                };
                defmt::error!("post_recv refused WR {=usize}: {}", bad, e);
                let refused = batch.get(bad..).unwrap_or_default();
                self.stats.cancelled += self.pool.cancel(refused) as u32;
                self.stats.failures += 1;
                bad
            }
        }
    }

    /// One round: replenish, complete up to [`POLL_BATCH`] completions, serve the calls among
    /// them. Returns how many completions it consumed.
    pub fn poll(&mut self, nic: &mut SimNic<'_>) -> usize {
        self.replenish(nic);
        let mut wcs = [Completion {
            wr_id: 0,
            status: CompletionStatus::Success,
            byte_len: 0,
        }; POLL_BATCH];
        let n = nic.poll(&mut wcs);
        for wc in wcs.iter().take(n) {
            self.on_completion(nic, wc);
        }
        while let Some(rx) = self.held.pop_front() {
            self.serve(nic, rx);
        }
        n
    }

    fn on_completion(&mut self, nic: &mut SimNic<'_>, wc: &Completion) {
        match self.pool.complete(wc, &mut self.sync) {
            Ok(Completed::Message(rx)) => {
                if let Err(rx) = self.held.push_back(rx) {
                    // Cannot happen (at most POLL_BATCH per round); serve it now rather than hold.
                    self.serve(nic, rx);
                }
            }
            Ok(Completed::Rejected { error, reply }) => match reply {
                Some(reply) => {
                    defmt::info!("  rejected: {} -> RDMA_ERROR {}", error, reply.kind);
                    self.send_error(nic, &reply);
                }
                None => {
                    defmt::info!("  rejected: {} -> dropped", error);
                    self.stats.dropped += 1;
                }
            },
            Ok(Completed::Flushed) => self.stats.flushed += 1,
            Err(CompletionError::DeviceError { wr_id, code }) => {
                defmt::error!(
                    "  Receive {=u64:#x} completed with device error {=u32}",
                    wr_id,
                    code
                );
                self.stats.failures += 1;
            }
            Err(e) => {
                defmt::info!("  completion refused: {}", e);
                self.stats.refused_completions += 1;
            }
        }
    }

    fn send_error(&mut self, nic: &mut SimNic<'_>, reply: &ErrorReply) {
        match reply.emit(&mut self.send) {
            Some(len) => {
                let bytes = self.send.get(..len).unwrap_or_default();
                if nic.post_send(bytes).is_ok() {
                    self.stats.error_replies += 1;
                    return;
                }
                self.stats.failures += 1;
            }
            None => self.stats.failures += 1,
        }
    }

    /// Serves one received call and releases its Receive buffer.
    fn serve(&mut self, nic: &mut SimNic<'_>, rx: Received) {
        match self.pool.view(&rx) {
            Ok(view) => {
                let credits = self.pool.credits();
                let outcome = serve_view(nic, &view, credits, &mut self.call, &mut self.send);
                match outcome {
                    Ok(Served::Inline) => self.stats.inline_replies += 1,
                    Ok(Served::ReplyChunk) => self.stats.reply_chunk_replies += 1,
                    Ok(Served::Backchannel) => self.stats.backchannel_replies += 1,
                    Ok(Served::ReadBytes(n)) => {
                        self.stats.inline_replies += 1;
                        self.stats.read_chunk_bytes += n;
                    }
                    Err(e) => {
                        defmt::error!("  xid {=u32:#010x}: not served: {}", rx.xid(), e);
                        self.stats.failures += 1;
                    }
                }
            }
            Err(_) => self.stats.failures += 1,
        }
        if self.pool.release(rx).is_err() {
            self.stats.failures += 1;
        }
    }
}

/// How a call was answered.
enum Served {
    Inline,
    ReadBytes(u32),
    ReplyChunk,
    Backchannel,
}

/// Why a call could not be answered.
#[derive(Debug, Clone, Copy, defmt::Format)]
enum ServeError {
    /// The call's chunk data does not fit the reassembly space.
    CallTooLarge,
    /// RDMA Read, RDMA Write or Send refused by the NIC.
    Nic(crate::nic::NicError),
    /// The reply header could not be built.
    Header,
}

fn serve_view(
    nic: &mut SimNic<'_>,
    view: &XdrView<'_>,
    credits: u32,
    call_space: &mut [u8; CALL_SPACE],
    send: &mut [u8; MAX_SEND],
) -> Result<Served, ServeError> {
    let msg = view.message();
    if msg.is_backchannel_reply() {
        defmt::info!(
            "  backchannel reply, {=usize} bytes: to the backchannel",
            view.inline_len()
        );
        return Ok(Served::Backchannel);
    }
    // The call as one XDR stream: inline bytes, with each Read chunk's data pulled in at its
    // position. Without Read chunks the head is the whole call, read in place (no copy).
    let (call, pulled): (&[u8], u32) = if msg.has_read_chunks() {
        let (len, pulled) = reassemble(nic, msg, call_space)?;
        (call_space.get(..len).unwrap_or_default(), pulled)
    } else {
        (view.head(), 0)
    };
    let mut rpc_reply = [0u8; RPC_REPLY_SPACE];
    let rpc_len = serve_call(call, &mut rpc_reply);
    let rpc_reply = rpc_reply.get(..rpc_len).unwrap_or_default();

    if let Some(reply_chunk) = msg.reply_chunk() {
        // The requester provided a reply chunk: RDMA Write the reply there, then send an
        // RDMA_NOMSG header carrying the reply chunk with the lengths written and the write list
        // returned with nothing written.
        let mut used: Vec<Segment, MAX_REPLY_SEGMENTS> = Vec::new();
        let mut rest = rpc_reply;
        for seg in reply_chunk.iter() {
            if rest.is_empty() {
                break;
            }
            let n = (seg.length as usize).min(rest.len());
            let (now, later) = rest.split_at(n);
            nic.rdma_write(&seg, now).map_err(ServeError::Nic)?;
            let _ = used.push(Segment {
                length: n as u32,
                ..seg
            });
            rest = later;
        }
        if !rest.is_empty() {
            return Err(ServeError::CallTooLarge);
        }
        let mut header = HeaderRepr::reply(msg.xid(), credits);
        header.proc_ = Proc::Nomsg;
        for chunk in msg.write_list().iter() {
            let mut unused: Vec<Segment, MAX_WRITE_SEGMENTS> = Vec::new();
            for seg in chunk.iter() {
                let _ = unused.push(Segment { length: 0, ..seg });
            }
            header = header
                .with_write_chunk(&unused)
                .map_err(|_| ServeError::Header)?;
        }
        header = header
            .with_reply_chunk(&used)
            .map_err(|_| ServeError::Header)?;
        let len = header.emit(send).map_err(|_| ServeError::Header)?;
        nic.post_send(send.get(..len).unwrap_or_default())
            .map_err(ServeError::Nic)?;
        defmt::info!(
            "  reply: {=usize} bytes RDMA-written to the reply chunk, RDMA_NOMSG header",
            rpc_reply.len()
        );
        return Ok(Served::ReplyChunk);
    }

    let header_len = HeaderRepr::reply(msg.xid(), credits)
        .emit(send)
        .map_err(|_| ServeError::Header)?;
    let total = header_len + rpc_reply.len();
    let body = send
        .get_mut(header_len..total)
        .ok_or(ServeError::CallTooLarge)?;
    body.copy_from_slice(rpc_reply);
    nic.post_send(send.get(..total).unwrap_or_default())
        .map_err(ServeError::Nic)?;
    defmt::info!("  reply: RDMA_MSG inline, {=usize} bytes", total);
    Ok(if pulled > 0 {
        Served::ReadBytes(pulled)
    } else {
        Served::Inline
    })
}

/// Builds the call's XDR stream in `out`: inline bytes up to each Read chunk's inline offset,
/// then the chunk's data (RDMA Read, padded to 4), then the rest of the inline bytes. Returns
/// the stream length and the bytes pulled.
fn reassemble(
    nic: &mut SimNic<'_>,
    msg: &Message<'_>,
    out: &mut [u8],
) -> Result<(usize, u32), ServeError> {
    let inline = msg.rpc_message();
    let mut at = 0usize; // write position in `out`
    let mut taken = 0usize; // inline bytes copied so far
    let mut pulled = 0u32;
    for chunk in msg.read_list().chunks() {
        let upto = usize::try_from(chunk.inline_offset)
            .unwrap_or(usize::MAX)
            .min(inline.len());
        let piece = inline.get(taken..upto).unwrap_or_default();
        copy_to(out, &mut at, piece)?;
        taken = upto;
        for seg in chunk.segments() {
            let len = seg.length as usize;
            let dst = out
                .get_mut(at..at.saturating_add(len))
                .ok_or(ServeError::CallTooLarge)?;
            nic.rdma_read(&seg, dst).map_err(ServeError::Nic)?;
            at += len;
            pulled = pulled.saturating_add(seg.length);
        }
        // XDR pad of the chunk's data.
        while at % 4 != 0 {
            copy_to(out, &mut at, &[0])?;
        }
    }
    copy_to(out, &mut at, inline.get(taken..).unwrap_or_default())?;
    Ok((at, pulled))
}

fn copy_to(out: &mut [u8], at: &mut usize, bytes: &[u8]) -> Result<(), ServeError> {
    let end = at
        .checked_add(bytes.len())
        .ok_or(ServeError::CallTooLarge)?;
    let dst = out.get_mut(*at..end).ok_or(ServeError::CallTooLarge)?;
    dst.copy_from_slice(bytes);
    *at = end;
    Ok(())
}

/// The RPC service: NFSv3 NULL and the checksum program. Writes the RPC reply into `out` and
/// returns its length.
pub fn serve_call(call: &[u8], out: &mut [u8]) -> usize {
    let xid = rpc_xid(call);
    let h = match oncrpc::parse_call(call) {
        Ok(h) => h,
        Err(RpcError::RpcVersion { .. }) => {
            return oncrpc::emit_rpc_mismatch(out, xid).unwrap_or(0)
        }
        Err(_) => {
            return oncrpc::emit_accepted_reply(out, xid, AcceptStat::GarbageArgs).unwrap_or(0)
        }
    };
    let stat = match (h.prog, h.vers, h.proc_) {
        (NFS_PROG, NFS_VERS, 0) | (CHECKSUM_PROG, CHECKSUM_VERS, 0) => AcceptStat::Success,
        (NFS_PROG, NFS_VERS, _) => AcceptStat::ProcUnavail,
        (NFS_PROG, _, _) => AcceptStat::ProgMismatch {
            low: NFS_VERS,
            high: NFS_VERS,
        },
        (CHECKSUM_PROG, CHECKSUM_VERS, CHECKSUM_PROC) => {
            let args = call.get(h.args_offset..).unwrap_or_default();
            let data = word(args, 0).and_then(|len| args.get(4..4usize.checked_add(len as usize)?));
            let Some(data) = data else {
                return oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::GarbageArgs)
                    .unwrap_or(0);
            };
            let n = oncrpc::emit_accepted_reply(out, h.xid, AcceptStat::Success).unwrap_or(0);
            let sum = oncrpc::checksum(data);
            return match out.get_mut(n..n + 4) {
                Some(dst) => {
                    dst.copy_from_slice(&sum.to_be_bytes());
                    n + 4
                }
                None => n,
            };
        }
        (CHECKSUM_PROG, CHECKSUM_VERS, _) => AcceptStat::ProcUnavail,
        (CHECKSUM_PROG, _, _) => AcceptStat::ProgMismatch {
            low: CHECKSUM_VERS,
            high: CHECKSUM_VERS,
        },
        _ => AcceptStat::ProgUnavail,
    };
    oncrpc::emit_accepted_reply(out, h.xid, stat).unwrap_or(0)
}

fn rpc_xid(call: &[u8]) -> u32 {
    word(call, 0).unwrap_or(0)
}

/// The big-endian word at `at`.
pub fn word(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([
        *w.first()?,
        *w.get(1)?,
        *w.get(2)?,
        *w.get(3)?,
    ]))
}
