//! Minimal ONC RPC (RFC 5531) call parsing and reply building, zero-copy, for the services the
//! examples run on top of the transport (NULL procedures, a checksum test program).
//!
//! This is the upper layer's part, not RPC-over-RDMA's: it reads the RPC message the transport
//! hands up (`XdrView::head`) and writes reply bodies into send buffers.

use rpcrdma_core::wire::{put_xdr_u32, xdr_u32, XDR_UNIT};

/// `msg_type` CALL.
pub const CALL: u32 = 0;
/// `msg_type` REPLY.
pub const REPLY: u32 = 1;
/// The ONC RPC version this module speaks.
pub const RPC_VERSION: u32 = 2;
/// Largest opaque auth body (RFC 5531).
pub const MAX_AUTH_BYTES: u32 = 400;

/// Why an RPC call header did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RpcError {
    /// The message ends inside the call header.
    Truncated,
    /// `msg_type` is not CALL.
    NotACall,
    /// `rpcvers` is not 2: answer MSG_DENIED / RPC_MISMATCH.
    RpcVersion {
        /// The version sent.
        vers: u32,
    },
    /// An auth body longer than 400 bytes.
    AuthTooLong,
}

/// A parsed call header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CallHeader {
    /// Transaction id.
    pub xid: u32,
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: u32,
    /// Offset of the procedure arguments in the message.
    pub args_offset: usize,
}

/// Parses the call header at the start of `msg`.
///
/// # Errors
/// [`RpcError`] saying what is wrong.
pub fn parse_call(msg: &[u8]) -> Result<CallHeader, RpcError> {
    let w = |at: usize| xdr_u32(msg, at).ok_or(RpcError::Truncated);
    let xid = w(0)?;
    if w(4)? != CALL {
        return Err(RpcError::NotACall);
    }
    let rpcvers = w(8)?;
    if rpcvers != RPC_VERSION {
        return Err(RpcError::RpcVersion { vers: rpcvers });
    }
    let (prog, vers, proc_) = (w(12)?, w(16)?, w(20)?);
    let mut at = 24;
    for _ in 0..2 {
        // opaque_auth: flavor, length, body padded to 4
        let len = w(at + XDR_UNIT)?;
        if len > MAX_AUTH_BYTES {
            return Err(RpcError::AuthTooLong);
        }
        at += 2 * XDR_UNIT + (len as usize).div_ceil(4) * 4;
    }
    if at > msg.len() {
        return Err(RpcError::Truncated);
    }
    Ok(CallHeader {
        xid,
        prog,
        vers,
        proc_,
        args_offset: at,
    })
}

/// `accept_stat` of an accepted reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AcceptStat {
    /// Executed; results follow.
    Success,
    /// Program not served here.
    ProgUnavail,
    /// Program served, not this version: the supported range.
    ProgMismatch {
        /// Lowest version.
        low: u32,
        /// Highest version.
        high: u32,
    },
    /// Procedure unknown.
    ProcUnavail,
    /// Arguments could not be decoded.
    GarbageArgs,
    /// The server could not execute the call (resources).
    SystemErr,
}

/// Writes an accepted reply header (AUTH_NONE verifier) for `xid`; returns its length, or
/// `None` if `buf` is too small. Results, if any, follow at the returned offset.
pub fn emit_accepted_reply(buf: &mut [u8], xid: u32, stat: AcceptStat) -> Option<usize> {
    let (code, extra) = match stat {
        AcceptStat::Success => (0, None),
        AcceptStat::ProgUnavail => (1, None),
        AcceptStat::ProgMismatch { low, high } => (2, Some((low, high))),
        AcceptStat::ProcUnavail => (3, None),
        AcceptStat::GarbageArgs => (4, None),
        AcceptStat::SystemErr => (5, None),
    };
    let len = if extra.is_some() { 32 } else { 24 };
    let out = buf.get_mut(..len)?;
    for (i, v) in [
        xid, REPLY, 0, /* MSG_ACCEPTED */
        0, 0, /* verf AUTH_NONE */
        code,
    ]
    .iter()
    .enumerate()
    {
        put_xdr_u32(out, i * 4, *v);
    }
    if let Some((low, high)) = extra {
        put_xdr_u32(out, 24, low);
        put_xdr_u32(out, 28, high);
    }
    Some(len)
}

/// Writes MSG_DENIED / RPC_MISMATCH (supported 2..=2) for `xid`; returns 24, or `None` if
/// `buf` is too small.
pub fn emit_rpc_mismatch(buf: &mut [u8], xid: u32) -> Option<usize> {
    let out = buf.get_mut(..24)?;
    for (i, v) in [
        xid, REPLY, 1, /* MSG_DENIED */
        0, /* RPC_MISMATCH */
        2, 2,
    ]
    .iter()
    .enumerate()
    {
        put_xdr_u32(out, i * 4, *v);
    }
    Some(24)
}

/// Writes an ONC RPC call header with AUTH_NONE credentials and verifier; returns its length
/// (40), or `None` if `buf` is too small. For requesters (tests, load generators).
pub fn emit_call(buf: &mut [u8], xid: u32, prog: u32, vers: u32, proc_: u32) -> Option<usize> {
    let out = buf.get_mut(..40)?;
    for (i, v) in [xid, CALL, RPC_VERSION, prog, vers, proc_, 0, 0, 0, 0]
        .iter()
        .enumerate()
    {
        put_xdr_u32(out, i * 4, *v);
    }
    Some(40)
}

/// Parses an accepted reply header; returns `(xid, accept_stat code, results offset)`.
pub fn parse_accepted_reply(msg: &[u8]) -> Option<(u32, u32, usize)> {
    let w = |at: usize| xdr_u32(msg, at);
    if w(4)? != REPLY || w(8)? != 0 {
        return None;
    }
    let verf_len = w(16)?;
    let at = 20 + (verf_len as usize).div_ceil(4) * 4;
    Some((w(0)?, w(at)?, at + 4))
}

/// The checksum the test program returns for its argument bytes: 32-bit FNV-1a.
pub fn checksum(data: &[u8]) -> u32 {
    let mut c = Checksum::new();
    c.update(data);
    c.value()
}

/// [`checksum`] over data that comes in pieces.
#[derive(Debug, Clone, Copy)]
pub struct Checksum(u32);

impl Default for Checksum {
    fn default() -> Self {
        Self::new()
    }
}

impl Checksum {
    /// The initial state.
    pub const fn new() -> Self {
        Checksum(0x811c_9dc5)
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0 = data
            .iter()
            .fold(self.0, |h, &b| (h ^ b as u32).wrapping_mul(0x0100_0193));
    }
    /// The checksum so far.
    pub fn value(&self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_call_round_trip() {
        let mut b = [0u8; 64];
        let n = emit_call(&mut b, 7, 100_003, 3, 0).unwrap();
        let h = parse_call(&b[..n]).unwrap();
        assert_eq!(
            (h.xid, h.prog, h.vers, h.proc_, h.args_offset),
            (7, 100_003, 3, 0, 40)
        );
        for len in 0..n {
            assert!(parse_call(&b[..len]).is_err());
        }
    }

    #[test]
    fn test_reply_round_trip() {
        let mut b = [0u8; 64];
        let n = emit_accepted_reply(&mut b, 9, AcceptStat::Success).unwrap();
        assert_eq!(parse_accepted_reply(&b[..n + 4]), Some((9, 0, 24)));
        let n =
            emit_accepted_reply(&mut b, 9, AcceptStat::ProgMismatch { low: 3, high: 4 }).unwrap();
        assert_eq!(n, 32);
    }

    #[test]
    fn test_bad_calls() {
        let mut b = [0u8; 64];
        emit_call(&mut b, 1, 2, 3, 4).unwrap();
        b[11] = 3;
        assert_eq!(parse_call(&b), Err(RpcError::RpcVersion { vers: 3 }));
        b[11] = 2;
        b[7] = 1;
        assert_eq!(parse_call(&b), Err(RpcError::NotACall));
        b[7] = 0;
        b[28..32].copy_from_slice(&401u32.to_be_bytes());
        assert_eq!(parse_call(&b), Err(RpcError::AuthTooLong));
    }

    #[test]
    fn test_checksum_known_value() {
        assert_eq!(checksum(b""), 0x811c_9dc5);
        assert_eq!(checksum(b"a"), 0xe40c_292c);
    }
}
