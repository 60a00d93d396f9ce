//! # rpcrdma-examples
//!
//! A service of your own on rpcrdma, in two programs that share it:
//!
//! - `cargo run --example kv`: the key-value service below served by one
//!   [`Endpoint`](rpcrdma_core::endpoint::Endpoint) over the software NIC, with a requester
//!   calling it — no RDMA hardware, no `unsafe`, five minutes.
//! - `cargo run --example kv_verbs -- --addr 10.0.2.15`: the same service on ibverbs through
//!   `rpcrdma-hosted`, with a verbs client calling it (inside the Soft-RoCE VM:
//!   `cargo xtask vm -- target/debug/examples/kv_verbs --addr 10.0.2.15`).
//!
//! The service is plain `no_std` code with fixed memory (a `heapless` map): it would run as it
//! is on a DPU core.

#![no_std]

/// The README's example, compiled and run as a doctest so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

use heapless::index_map::FnvIndexMap;
use heapless::Vec;
use rpcrdma_core::responder::{Call, ReplyWriter, Service, Verdict};
use rpcrdma_services::oncrpc::{self, AcceptStat};

/// The key-value program's number (in the range RFC 5531 leaves to users).
pub const KV_PROG: u32 = 0x2000_5251;
/// Its version.
pub const KV_VERS: u32 = 1;
/// `PUT(key: u32, value: opaque<MAX_VALUE>) -> status`.
pub const PROC_PUT: u32 = 1;
/// `GET(key: u32) -> status, value: opaque<MAX_VALUE>`.
pub const PROC_GET: u32 = 2;
/// Largest value.
pub const MAX_VALUE: usize = 256;
/// Keys held at most.
pub const MAX_KEYS: usize = 64;

/// `status`: done.
pub const KV_OK: u32 = 0;
/// `status`: GET of a key never PUT.
pub const KV_NOT_FOUND: u32 = 1;
/// `status`: PUT of a new key with the table full.
pub const KV_FULL: u32 = 2;

/// A key-value store served as an ONC RPC program: [`PROC_PUT`] and [`PROC_GET`], plus NULL.
#[derive(Debug, Default)]
pub struct KvService {
    table: FnvIndexMap<u32, Vec<u8, MAX_VALUE>, MAX_KEYS>,
    /// Calls served.
    pub calls: u64,
}

impl KvService {
    /// Keys stored.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn put(&mut self, call: &Call<'_>, args: usize) -> Option<u32> {
        let view = &call.view;
        let key = view.word(args)?;
        let len = view.word(args + 4)? as usize;
        if len > MAX_VALUE {
            return None; // GARBAGE_ARGS
        }
        let mut value: Vec<u8, MAX_VALUE> = Vec::new();
        value.resize(len, 0).ok()?;
        // The value may sit in the inline head or in Read-chunk pages: copy_out reads across.
        if view.copy_out(args + 8, &mut value) != len {
            return None;
        }
        Some(match self.table.insert(key, value) {
            Ok(_) => KV_OK,
            Err(_) => KV_FULL,
        })
    }
}

impl Service for KvService {
    fn serve(&mut self, call: &Call<'_>, reply: &mut ReplyWriter<'_>) -> Verdict {
        self.calls += 1;
        // The RPC call header is in the head of the view: a slice of the Receive buffer.
        let Ok(header) = oncrpc::parse_call(call.view.head()) else {
            return Verdict::NoReply; // not an ONC RPC call: nothing sensible to answer
        };
        let xid = header.xid;
        let (stat, results): (AcceptStat, Option<(u32, &[u8])>) = if header.prog != KV_PROG {
            (AcceptStat::ProgUnavail, None)
        } else if header.vers != KV_VERS {
            let range = AcceptStat::ProgMismatch {
                low: KV_VERS,
                high: KV_VERS,
            };
            (range, None)
        } else {
            match header.proc_ {
                0 => (AcceptStat::Success, None),
                PROC_PUT => match self.put(call, header.args_offset) {
                    Some(status) => (AcceptStat::Success, Some((status, &[][..]))),
                    None => (AcceptStat::GarbageArgs, None),
                },
                PROC_GET => match call.view.word(header.args_offset) {
                    Some(key) => match self.table.get(&key) {
                        Some(v) => (AcceptStat::Success, Some((KV_OK, &v[..]))),
                        None => (AcceptStat::Success, Some((KV_NOT_FOUND, &[][..]))),
                    },
                    None => (AcceptStat::GarbageArgs, None),
                },
                _ => (AcceptStat::ProcUnavail, None),
            }
        };
        let Some(n) = oncrpc::emit_accepted_reply(reply.buffer(), xid, stat) else {
            return Verdict::NoReply;
        };
        reply.set_len(n);
        if let Some((status, value)) = results {
            let mut ok = reply.push(&status.to_be_bytes());
            if header.proc_ == PROC_GET {
                ok &= reply.push(&(value.len() as u32).to_be_bytes());
                ok &= reply.push(value);
                ok &= reply.push(&[0u8; 3][..(4 - value.len() % 4) % 4]);
            }
            if !ok {
                return Verdict::NoReply;
            }
        }
        Verdict::Reply
    }
}

/// The arguments of a PUT, XDR-encoded into `out`; returns their length, or `None` if `out`
/// is too small or the value too long.
pub fn put_args(out: &mut [u8], key: u32, value: &[u8]) -> Option<usize> {
    if value.len() > MAX_VALUE {
        return None;
    }
    let padded = value.len().div_ceil(4) * 4;
    let out = out.get_mut(..8 + padded)?;
    out[..4].copy_from_slice(&key.to_be_bytes());
    out[4..8].copy_from_slice(&(value.len() as u32).to_be_bytes());
    out[8..8 + value.len()].copy_from_slice(value);
    out[8 + value.len()..].fill(0);
    Some(8 + padded)
}

/// A GET or PUT result as the requester reads it from the RPC reply: `(status, value)`.
///
/// # Errors
/// A reply that is not an accepted, successful one, or is truncated.
pub fn parse_result(rpc_reply: &[u8]) -> Result<(u32, &[u8]), &'static str> {
    let (_xid, stat, at) =
        oncrpc::parse_accepted_reply(rpc_reply).ok_or("not an accepted reply")?;
    if stat != 0 {
        return Err("the call was not executed (accept_stat not SUCCESS)");
    }
    let word = |at: usize| {
        rpc_reply
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let status = word(at).ok_or("truncated result")?;
    let value = match word(at + 4) {
        Some(len) => rpc_reply
            .get(at + 8..at + 8 + len as usize)
            .ok_or("truncated value")?,
        None => &[],
    };
    Ok((status, value))
}
