//! # rpcrdma-services
//!
//! The RPC services the examples run on the core's responder: plain ONC RPC (RFC 5531) parsing
//! and reply building ([`oncrpc`]), and [`ExampleService`], which `rpcrdma-serve`, the firmware
//! examples and the tests all use:
//!
//! - the NULL procedure of configured programs (NFS 100003 versions 3 and 4 by default);
//! - the test program [`TEST_PROG`] version 1, whose procedures exercise every way an
//!   RPC-over-RDMA call and reply can travel:
//!   - [`PROC_CHECKSUM`]`(opaque data<>) -> u32`: FNV-1a of the data (a large call arrives
//!     through a Read chunk, or entirely in a position-zero chunk);
//!   - [`PROC_GENERATE`]`(u32 len, u32 seed) -> opaque<>`: `len` pattern bytes as a
//!     DDP-eligible payload (into the requester's write chunk when it offered one);
//!   - [`PROC_ECHO`]`(opaque data<>) -> opaque<>`: the data back, DDP-eligible;
//!   - [`PROC_BULK`]`(u32 len, u32 seed) -> opaque<>`: pattern bytes that are *not*
//!     DDP-eligible, like a READDIR reply: inline if small, else the whole reply through the
//!     reply chunk;
//!   - [`PROC_SINK`] and [`PROC_SOURCE`]: the same transport paths as CHECKSUM and GENERATE
//!     without touching the data, for measuring the transport rather than the service.
//!
//! Nothing here knows RPC-over-RDMA: the service reads the call from an [`XdrView`] and writes
//! its reply through a [`ReplyWriter`]; the core's responder decides how it travels.
#![cfg_attr(not(test), no_std)]

pub mod ddp;
pub mod nfs3;
pub mod nfs4;
pub mod oncrpc;

use heapless::Vec;
use rpcrdma_core::responder::{Call, ReplyWriter, Service, Verdict};
use rpcrdma_core::xdr::XdrView;

use oncrpc::{AcceptStat, CallHeader, RpcError};

/// NFS.
pub const NFS_PROG: u32 = 100_003;
/// The test program.
pub const TEST_PROG: u32 = 0x2000_5250;
/// Its version.
pub const TEST_VERS: u32 = 1;
/// `CHECKSUM(opaque data<>) -> u32`.
pub const PROC_CHECKSUM: u32 = 1;
/// `GENERATE(u32 len, u32 seed) -> opaque<>` (DDP-eligible).
pub const PROC_GENERATE: u32 = 2;
/// `ECHO(opaque data<>) -> opaque<>` (DDP-eligible).
pub const PROC_ECHO: u32 = 3;
/// `BULK(u32 len, u32 seed) -> opaque<>` (not DDP-eligible).
pub const PROC_BULK: u32 = 4;
/// `SINK(opaque data<>) -> u32 len`: takes the data without touching it (transport benchmarks).
pub const PROC_SINK: u32 = 5;
/// `SOURCE(u32 len) -> opaque<>` (DDP-eligible): `len` pattern bytes (seed 0) from memory the
/// service registered once ([`ExampleService::set_source`]), with no copy (transport
/// benchmarks); without a source, from lent pages filled per call.
pub const PROC_SOURCE: u32 = 6;

/// Programs whose NULL procedure is served, at most.
pub const MAX_PROGRAMS: usize = 8;

/// The byte at `index` of the pattern for `seed` (what GENERATE and BULK return).
#[inline]
pub fn pattern_byte(seed: u32, index: usize) -> u8 {
    let x = (index as u32).wrapping_mul(0x9e37_79b1) ^ seed.rotate_left(7);
    (x >> 24) as u8 ^ (index as u8)
}

/// Fills `out` with the pattern for `seed`, starting at pattern index `from`.
pub fn fill_pattern(seed: u32, from: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = pattern_byte(seed, from + i);
    }
}

/// A program whose NULL procedure is served: versions `low..=high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Program {
    /// Program number.
    pub prog: u32,
    /// Lowest version.
    pub low: u32,
    /// Highest version.
    pub high: u32,
}

/// What the service answered, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServiceStats {
    /// NULL calls answered.
    pub null: u64,
    /// CHECKSUM calls answered.
    pub checksum: u64,
    /// GENERATE / ECHO / BULK calls answered with a payload.
    pub payloads: u64,
    /// Calls answered with an error status (unknown program, garbage arguments, …).
    pub errors: u64,
    /// Backchannel replies seen (ignored: no backchannel here).
    pub backchannel: u64,
    /// Calls deferred because payload pages were all lent.
    pub deferred: u64,
}

/// The example service.
#[derive(Debug, Clone)]
pub struct ExampleService {
    programs: Vec<Program, MAX_PROGRAMS>,
    source: Option<(&'static [u8], u64, u32)>,
    /// Largest GENERATE / BULK / ECHO reply it produces.
    pub max_payload: u32,
    /// What it did.
    pub stats: ServiceStats,
}

impl Default for ExampleService {
    fn default() -> Self {
        Self::new(&[Program {
            prog: NFS_PROG,
            low: 3,
            high: 4,
        }])
    }
}

impl ExampleService {
    /// Serves NULL of `programs` (at most [`MAX_PROGRAMS`]) and the test program.
    pub fn new(programs: &[Program]) -> Self {
        let mut list = Vec::new();
        for p in programs.iter().take(MAX_PROGRAMS) {
            let _ = list.push(*p);
        }
        ExampleService {
            programs: list,
            source: None,
            max_payload: 1 << 20,
            stats: ServiceStats::default(),
        }
    }

    /// Registered memory holding the SOURCE pattern (seed 0): `bytes`, reached by the device at
    /// `device_addr` under `lkey`.
    pub fn set_source(&mut self, bytes: &'static [u8], device_addr: u64, lkey: u32) {
        self.source = Some((bytes, device_addr, lkey));
    }

    /// Forgets the SOURCE memory (before its owner unregisters and unmaps it).
    pub fn clear_source(&mut self) {
        self.source = None;
    }

    fn error(&mut self, reply: &mut ReplyWriter<'_>, xid: u32, stat: AcceptStat) -> Verdict {
        self.stats.errors += 1;
        let n = oncrpc::emit_accepted_reply(reply.buffer(), xid, stat).unwrap_or(0);
        reply.set_len(n);
        Verdict::Reply
    }

    fn success(reply: &mut ReplyWriter<'_>, xid: u32) -> usize {
        let n = oncrpc::emit_accepted_reply(reply.buffer(), xid, AcceptStat::Success).unwrap_or(0);
        reply.set_len(n);
        n
    }

    /// Answers with `len` bytes as an `opaque<>` result: the length word in the body, the
    /// bytes as a payload (filled by `fill`) at the position after it.
    fn opaque_reply(
        &mut self,
        reply: &mut ReplyWriter<'_>,
        xid: u32,
        len: usize,
        ddp: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> Verdict {
        let n = Self::success(reply, xid);
        if !reply.push(&(len as u32).to_be_bytes()) {
            return self.error(reply, xid, AcceptStat::SystemErr);
        }
        if len == 0 {
            self.stats.payloads += 1;
            return Verdict::Reply;
        }
        let fits = reply.payload_fits(len);
        match reply.lend_payload(len, n + 4, ddp) {
            Ok(bytes) => {
                fill(bytes);
                self.stats.payloads += 1;
                Verdict::Reply
            }
            // Pages are taken by replies in flight: try again when they complete.
            Err(_) if fits => {
                self.stats.deferred += 1;
                Verdict::Defer
            }
            Err(_) => self.error(reply, xid, AcceptStat::SystemErr),
        }
    }

    fn serve_test(
        &mut self,
        view: &XdrView<'_>,
        h: &CallHeader,
        reply: &mut ReplyWriter<'_>,
    ) -> Verdict {
        let args = h.args_offset;
        match h.proc_ {
            0 => {
                self.stats.null += 1;
                Self::success(reply, h.xid);
                Verdict::Reply
            }
            PROC_CHECKSUM => {
                let Some(len) = view.word(args) else {
                    return self.error(reply, h.xid, AcceptStat::GarbageArgs);
                };
                let len = len as usize;
                if args + 4 + len > view.len() {
                    return self.error(reply, h.xid, AcceptStat::GarbageArgs);
                }
                let mut sum = oncrpc::Checksum::new();
                view.for_each_slice(args + 4, len, |piece| sum.update(piece));
                let n = Self::success(reply, h.xid);
                reply.set_len(n);
                reply.push(&sum.value().to_be_bytes());
                self.stats.checksum += 1;
                Verdict::Reply
            }
            PROC_GENERATE | PROC_BULK => {
                let (Some(len), Some(seed)) = (view.word(args), view.word(args + 4)) else {
                    return self.error(reply, h.xid, AcceptStat::GarbageArgs);
                };
                if len > self.max_payload {
                    return self.error(reply, h.xid, AcceptStat::GarbageArgs);
                }
                let ddp = h.proc_ == PROC_GENERATE;
                self.opaque_reply(reply, h.xid, len as usize, ddp, |out| {
                    fill_pattern(seed, 0, out)
                })
            }
            PROC_ECHO => {
                let Some(len) = view.word(args) else {
                    return self.error(reply, h.xid, AcceptStat::GarbageArgs);
                };
                let len = len as usize;
                if args + 4 + len > view.len() || len > self.max_payload as usize {
                    return self.error(reply, h.xid, AcceptStat::GarbageArgs);
                }
                self.opaque_reply(reply, h.xid, len, true, |out| {
                    view.copy_out(args + 4, out);
                })
            }
            PROC_SINK => {
                let Some(len) = view.word(args) else {
                    return self.error(reply, h.xid, AcceptStat::GarbageArgs);
                };
                if args + 4 + len as usize > view.len() {
                    return self.error(reply, h.xid, AcceptStat::GarbageArgs);
                }
                Self::success(reply, h.xid);
                reply.push(&len.to_be_bytes());
                self.stats.checksum += 1;
                Verdict::Reply
            }
            PROC_SOURCE => {
                let Some(len) = view.word(args) else {
                    return self.error(reply, h.xid, AcceptStat::GarbageArgs);
                };
                let len = len as usize;
                match self.source {
                    Some((bytes, addr, lkey)) if len <= bytes.len() => {
                        let n = Self::success(reply, h.xid);
                        reply.push(&(len as u32).to_be_bytes());
                        let part = bytes.get(..len).unwrap_or_default();
                        match reply.external_payload(part, addr, lkey, n + 4, true) {
                            Ok(()) => {
                                self.stats.payloads += 1;
                                Verdict::Reply
                            }
                            Err(_) => self.error(reply, h.xid, AcceptStat::SystemErr),
                        }
                    }
                    _ if len > self.max_payload as usize => {
                        self.error(reply, h.xid, AcceptStat::GarbageArgs)
                    }
                    _ => self.opaque_reply(reply, h.xid, len, true, |out| fill_pattern(0, 0, out)),
                }
            }
            _ => self.error(reply, h.xid, AcceptStat::ProcUnavail),
        }
    }
}

/// Parses the call header from `view`: from `head` when it holds it (the common case, no
/// copy), else from a copy of the stream's first bytes.
fn parse_call_header(view: &XdrView<'_>) -> Result<CallHeader, RpcError> {
    match oncrpc::parse_call(view.head()) {
        Err(RpcError::Truncated) if view.len() > view.head().len() => {
            let mut buf = [0u8; 1024];
            let n = view.copy_out(0, &mut buf);
            oncrpc::parse_call(buf.get(..n).unwrap_or_default())
        }
        other => other,
    }
}

impl Service for ExampleService {
    fn serve(&mut self, call: &Call<'_>, reply: &mut ReplyWriter<'_>) -> Verdict {
        let view = &call.view;
        let xid = view.word(0).unwrap_or(call.xid);
        let h = match parse_call_header(view) {
            Ok(h) => h,
            Err(RpcError::RpcVersion { .. }) => {
                self.stats.errors += 1;
                let n = oncrpc::emit_rpc_mismatch(reply.buffer(), xid).unwrap_or(0);
                reply.set_len(n);
                return Verdict::Reply;
            }
            Err(RpcError::NotACall) => return Verdict::NoReply,
            Err(_) => return self.error(reply, xid, AcceptStat::GarbageArgs),
        };
        if h.prog == TEST_PROG {
            if h.vers != TEST_VERS {
                let stat = AcceptStat::ProgMismatch {
                    low: TEST_VERS,
                    high: TEST_VERS,
                };
                return self.error(reply, h.xid, stat);
            }
            return self.serve_test(view, &h, reply);
        }
        match self.programs.iter().find(|p| p.prog == h.prog).copied() {
            None => self.error(reply, h.xid, AcceptStat::ProgUnavail),
            Some(p) if !(p.low..=p.high).contains(&h.vers) => {
                let stat = AcceptStat::ProgMismatch {
                    low: p.low,
                    high: p.high,
                };
                self.error(reply, h.xid, stat)
            }
            Some(_) if h.proc_ != 0 => self.error(reply, h.xid, AcceptStat::ProcUnavail),
            Some(_) => {
                self.stats.null += 1;
                Self::success(reply, h.xid);
                Verdict::Reply
            }
        }
    }

    fn backchannel_reply(&mut self, _epoch: u16, _view: &XdrView<'_>) {
        self.stats.backchannel += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcrdma_core::dma::DmaRegion;
    use rpcrdma_core::pages::PagePool;
    use rpcrdma_core::wire::{decode, DecodeLimits};
    use std::vec;
    use std::vec::Vec;

    #[repr(align(4096))]
    struct Mem([u8; 16384]);

    /// Runs the service on an inline call; returns (accept_stat or u32::MAX for a denial,
    /// results, payload (position, len, ddp)).
    // `DmaRegion::from_slice` is unsafe: the caller vouches no device writes the memory.
    #[allow(unsafe_code)]
    fn serve(rpc: &[u8]) -> (u32, Vec<u8>, Option<(usize, usize, bool)>) {
        let mut msg = vec![
            0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        msg.extend_from_slice(rpc);
        let m = decode(&msg, msg.len(), &DecodeLimits::DEFAULT).unwrap();
        let call = Call {
            view: XdrView::new(m),
            xid: 1,
            write_chunk_len: 0,
            reply_chunk_len: 0,
            peer_inline: 1024,
            handle: rpcrdma_core::responder::CallHandle {
                epoch: 1,
                index: 0,
                generation: 1,
            },
        };
        let mut mem = Box::new(Mem([0; 16384]));
        // SAFETY: test memory, exclusively borrowed; no device.
        let region = unsafe { DmaRegion::from_slice(&mut mem.0, 0x1000, 1) }.unwrap();
        let mut pages: PagePool<'_, 4> = PagePool::new(region, 4096).unwrap();
        let mut body = [0u8; 512];
        let mut w = ReplyWriter::new(&mut body, &mut pages);
        let mut service = ExampleService::default();
        assert_eq!(service.serve(&call, &mut w), Verdict::Reply);
        let payload = w.payload();
        let out = w.body().to_vec();
        match oncrpc::parse_accepted_reply(&out) {
            Some((xid, stat, at)) => {
                assert_eq!(xid, rpcrdma_core::wire::xdr_u32(rpc, 0).unwrap());
                (stat, out[at..].to_vec(), payload)
            }
            None => (u32::MAX, out, payload),
        }
    }

    fn call(prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        oncrpc::emit_call(&mut b, 77, prog, vers, proc_).unwrap();
        b.extend_from_slice(args);
        b
    }

    #[test]
    fn nfs_null_v3_and_v4_succeed() {
        assert_eq!(serve(&call(NFS_PROG, 3, 0, &[])).0, 0);
        assert_eq!(serve(&call(NFS_PROG, 4, 0, &[])).0, 0);
    }

    #[test]
    fn unknown_program_version_procedure() {
        assert_eq!(serve(&call(100_005, 3, 0, &[])).0, 1, "PROG_UNAVAIL");
        let (stat, rest, _) = serve(&call(NFS_PROG, 2, 0, &[]));
        assert_eq!(
            (stat, rest),
            (2, vec![0, 0, 0, 3, 0, 0, 0, 4]),
            "PROG_MISMATCH 3..4"
        );
        assert_eq!(serve(&call(NFS_PROG, 3, 1, &[])).0, 3, "PROC_UNAVAIL");
        assert_eq!(serve(&call(TEST_PROG, 1, 99, &[])).0, 3, "PROC_UNAVAIL");
    }

    #[test]
    fn checksum_and_garbage_args() {
        let data = b"hello, rdma";
        let mut args = (data.len() as u32).to_be_bytes().to_vec();
        args.extend_from_slice(data);
        args.push(0);
        let (stat, rest, _) = serve(&call(TEST_PROG, 1, PROC_CHECKSUM, &args));
        assert_eq!(
            (stat, rest),
            (0, oncrpc::checksum(data).to_be_bytes().to_vec())
        );
        // A length past the message: GARBAGE_ARGS.
        let (stat, _, _) = serve(&call(TEST_PROG, 1, PROC_CHECKSUM, &[0, 0, 1, 0, 1]));
        assert_eq!(stat, 4);
    }

    #[test]
    fn generate_lends_a_ddp_payload_and_bulk_does_not() {
        let (stat, rest, payload) = serve(&call(
            TEST_PROG,
            1,
            PROC_GENERATE,
            &[0, 0, 0, 10, 0, 0, 0, 5],
        ));
        assert_eq!((stat, rest), (0, vec![0, 0, 0, 10]));
        assert_eq!(
            payload,
            Some((28, 10, true)),
            "after the header and the length word"
        );
        let (_, _, payload) = serve(&call(TEST_PROG, 1, PROC_BULK, &[0, 0, 0, 10, 0, 0, 0, 5]));
        assert_eq!(payload, Some((28, 10, false)));
    }

    #[test]
    fn rpc_version_mismatch_is_denied() {
        let mut c = call(NFS_PROG, 3, 0, &[]);
        c[11] = 3; // rpcvers 3
        let (stat, out, _) = serve(&c);
        assert_eq!(stat, u32::MAX);
        assert_eq!(&out[8..12], &1u32.to_be_bytes(), "MSG_DENIED");
        assert_eq!(out.len(), 24);
    }
}
