//! The NFSv4 upper-layer binding of RPC-over-RDMA (RFC 8267 §4–5), for NFSv4.0, 4.1 and 4.2:
//! where a COMPOUND reply's DDP-eligible item lies.
//!
//! NFSv4 has one procedure that does work, COMPOUND, and DDP eligibility is per operation: the
//! data of READ and the link text of READLINK are the reply items that may travel in the
//! requester's write chunk (RFC 8267 §5.3). A requester offers a write chunk only for a
//! COMPOUND that carries such an operation, so the offer itself says the reply may have an item;
//! where it lies is found by walking the reply's results up to it (RFC 7530 / 8881 / 7862 for
//! the XDR): the kernel client's READ is `SEQUENCE, PUTFH, READ` (4.1, 4.2) or `PUTFH, READ`
//! (4.0). Only results whose shape this walk knows may come before the item; anything else
//! ends the walk without an item, and the reply then goes whole through the reply chunk (or, if
//! the requester offered none, the transport answers with an error) — never a malformed reply.

use rpcrdma_core::wire::xdr_u32;

use crate::oncrpc;

/// NFS version 4 (all minor versions).
pub const NFS_V4: u32 = 4;
/// COMPOUND.
pub const PROC_COMPOUND: u32 = 1;

/// Operation numbers (RFC 8881 §16.2, RFC 7862 §15).
pub mod op {
    /// ACCESS.
    pub const ACCESS: u32 = 3;
    /// GETATTR.
    pub const GETATTR: u32 = 9;
    /// GETFH.
    pub const GETFH: u32 = 10;
    /// PUTFH.
    pub const PUTFH: u32 = 22;
    /// PUTPUBFH.
    pub const PUTPUBFH: u32 = 23;
    /// PUTROOTFH.
    pub const PUTROOTFH: u32 = 24;
    /// READ.
    pub const READ: u32 = 25;
    /// READLINK.
    pub const READLINK: u32 = 27;
    /// RESTOREFH.
    pub const RESTOREFH: u32 = 31;
    /// SAVEFH.
    pub const SAVEFH: u32 = 32;
    /// SEQUENCE (4.1).
    pub const SEQUENCE: u32 = 53;
    /// READ_PLUS (4.2).
    pub const READ_PLUS: u32 = 68;
}

/// NFS4_OK.
const OK: u32 = 0;
/// Bytes of a SEQUENCE4resok: session id (16), sequence id, slot id, highest slot id, target
/// highest slot id, status flags.
const SEQUENCE_OK_LEN: usize = 16 + 5 * 4;

/// Whether a call may have a DDP-eligible item in its reply: an NFSv4 COMPOUND for which the
/// requester offered a write chunk (it offers one only for READ and READLINK).
pub fn reply_has_ddp_item(prog: u32, vers: u32, proc_: u32, offered_write_chunk: bool) -> bool {
    prog == crate::nfs3::NFS_PROGRAM
        && vers == NFS_V4
        && proc_ == PROC_COMPOUND
        && offered_write_chunk
}

/// An XDR `opaque<>`'s length at `at`; returns `(bytes offset, length, offset past its pad)`.
fn opaque(record: &[u8], at: usize) -> Option<(usize, usize, usize)> {
    let len = xdr_u32(record, at)? as usize;
    let data = at.checked_add(4)?;
    let end = data.checked_add(len.checked_add(3)? & !3)?;
    Some((data, len, end))
}

/// Where the DDP-eligible item (READ data, READLINK link text) of a COMPOUND reply lies:
/// `(offset, length)` in the reply of `total` bytes whose first bytes are `prefix` (enough to
/// hold every result before the item). `None` when the reply has none: an RPC or COMPOUND
/// error before it, no READ or READLINK result, a result of a shape this walk does not know
/// before it, or a header cut short by `prefix`.
pub fn ddp_item_in(prefix: &[u8], total: usize) -> Option<(usize, usize)> {
    let w = |at: usize| xdr_u32(prefix, at);
    let (_, accept, mut at) = oncrpc::parse_accepted_reply(prefix)?;
    if accept != 0 {
        return None;
    }
    // COMPOUND4res: status, tag, then the results. A failed COMPOUND's last result is the
    // failed operation's, so an item can only be in a result with status NFS4_OK.
    at += 4;
    let (_, _, after_tag) = opaque(prefix, at)?;
    at = after_tag;
    let results = w(at)?;
    at += 4;
    for _ in 0..results {
        let (opnum, status) = (w(at)?, w(at + 4)?);
        at += 8;
        if status != OK {
            return None;
        }
        match opnum {
            op::READ => {
                // eof, then the data.
                let (data, len, _) = opaque(prefix, at + 4)?;
                return (data.checked_add(len)? <= total).then_some((data, len));
            }
            op::READLINK => {
                let (data, len, _) = opaque(prefix, at)?;
                return (data.checked_add(len)? <= total).then_some((data, len));
            }
            op::SEQUENCE => at += SEQUENCE_OK_LEN,
            op::PUTFH | op::PUTPUBFH | op::PUTROOTFH | op::SAVEFH | op::RESTOREFH => {}
            op::GETFH => at = opaque(prefix, at)?.2,
            op::ACCESS => at += 8, // supported, access
            op::GETATTR => {
                // fattr4: a bitmap4 (count, words), then the attribute values as opaque<>.
                let words = w(at)? as usize;
                at = at.checked_add(4)?.checked_add(words.checked_mul(4)?)?;
                at = opaque(prefix, at)?.2;
            }
            // READ_PLUS and anything else: its shape is not walked (the reply goes through the
            // reply chunk).
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcrdma_tests::fixtures::bytes as words;
    use std::vec::Vec;

    /// An accepted SUCCESS RPC reply header (AUTH_NONE verifier), then COMPOUND4res status
    /// and the tag "t".
    fn compound_ok(results: u32) -> Vec<u8> {
        let mut r = words(&[9, 1, 0, 0, 0, 0]);
        r.extend(words(&[0, 1]));
        r.extend(b"t\0\0\0");
        r.extend(words(&[results]));
        r
    }

    fn sequence_ok(r: &mut Vec<u8>) {
        r.extend(words(&[op::SEQUENCE, 0]));
        r.extend([0xaa; 16]);
        r.extend(words(&[1, 0, 63, 63, 0]));
    }

    #[test]
    fn read_data_after_sequence_and_putfh_as_the_linux_client_sends_it() {
        // 4.1 / 4.2: SEQUENCE, PUTFH, READ.
        let mut r = compound_ok(3);
        sequence_ok(&mut r);
        r.extend(words(&[op::PUTFH, 0]));
        r.extend(words(&[op::READ, 0, 1, 5]));
        let at = r.len();
        r.extend(b"hello\0\0\0");
        assert_eq!(ddp_item_in(&r, r.len()), Some((at, 5)));
        // From the header alone, before the data arrived.
        assert_eq!(ddp_item_in(&r[..at], r.len()), Some((at, 5)));
        assert_eq!(
            ddp_item_in(&r[..at], at + 4),
            None,
            "the item runs past the reply"
        );
        // 4.0: PUTFH, READ.
        let mut r = compound_ok(2);
        r.extend(words(&[op::PUTFH, 0]));
        r.extend(words(&[op::READ, 0, 0, 3]));
        let at = r.len();
        r.extend(b"abc\0");
        assert_eq!(ddp_item_in(&r, r.len()), Some((at, 3)));
    }

    #[test]
    fn readlink_text_and_results_with_bodies_before_it() {
        let mut r = compound_ok(4);
        sequence_ok(&mut r);
        r.extend(words(&[op::PUTFH, 0]));
        // GETATTR: bitmap of 2 words, 8 bytes of values.
        r.extend(words(&[op::GETATTR, 0, 2, 0x18, 0x2, 8, 1, 2]));
        r.extend(words(&[op::READLINK, 0, 4]));
        let at = r.len();
        r.extend(b"/tmp");
        assert_eq!(ddp_item_in(&r, r.len()), Some((at, 4)));
    }

    #[test]
    fn no_item_on_an_error_an_unknown_result_or_a_short_header() {
        // READ failed: the COMPOUND stops there.
        let mut e = compound_ok(2);
        e.extend(words(&[op::PUTFH, 0]));
        e.extend(words(&[op::READ, 10_008]));
        assert_eq!(ddp_item_in(&e, e.len()), None);
        // A result this walk does not know before the READ.
        let mut u = compound_ok(2);
        u.extend(words(&[op::READ_PLUS, 0, 1, 0]));
        assert_eq!(ddp_item_in(&u, u.len()), None);
        // No READ at all.
        let mut n = compound_ok(1);
        n.extend(words(&[op::PUTFH, 0]));
        assert_eq!(ddp_item_in(&n, n.len()), None);
        // A denied RPC reply, a cut-short prefix, absurd lengths.
        assert_eq!(ddp_item_in(&words(&[9, 1, 1, 0, 2, 2]), 24), None);
        let mut r = compound_ok(3);
        sequence_ok(&mut r);
        assert_eq!(ddp_item_in(&r[..r.len() - 8], 1 << 20), None);
        let mut big = compound_ok(u32::MAX);
        big.extend(words(&[op::GETATTR, 0, u32::MAX]));
        assert_eq!(ddp_item_in(&big, big.len()), None);
        assert!(reply_has_ddp_item(100_003, 4, 1, true));
        assert!(!reply_has_ddp_item(100_003, 4, 1, false));
        assert!(!reply_has_ddp_item(100_003, 3, 6, true));
    }
}
