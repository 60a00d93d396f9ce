//! The NFSv3 upper-layer binding of RPC-over-RDMA (RFC 8267): the only code that knows NFS.
//!
//! RFC 8267 names the data items of NFSv3 that may travel in chunks (DDP-eligible):
//! the data of WRITE and the path of SYMLINK (arguments: the requester chooses, in Read chunks),
//! and the data of a READ reply and the path of a READLINK reply (results: into the requester's
//! write chunk). Everything else travels inline, or — for a large reply such as READDIR or
//! READDIRPLUS — whole through the reply chunk. A server therefore needs one piece of NFS
//! knowledge: where the DDP-eligible item of a READ or READLINK reply lies.

use rpcrdma_core::wire::xdr_u32;

/// NFS.
pub const NFS_PROGRAM: u32 = 100_003;
/// NFS version 3.
pub const NFS_V3: u32 = 3;
/// READLINK.
pub const PROC_READLINK: u32 = 5;
/// READ.
pub const PROC_READ: u32 = 6;
/// Bytes of an `fattr3`.
pub const FATTR3_LEN: usize = 84;

/// Whether a call to `prog`/`vers`/`proc_` has a DDP-eligible item in its reply.
pub fn reply_has_ddp_item(prog: u32, vers: u32, proc_: u32) -> bool {
    prog == NFS_PROGRAM && vers == NFS_V3 && (proc_ == PROC_READ || proc_ == PROC_READLINK)
}

/// Where the DDP-eligible item of an NFSv3 READ or READLINK reply lies in the RPC reply
/// `record`: `(offset, length)` of the `opaque` / `nfspath3` bytes (after their length word),
/// or `None` when the reply has none (an error status, a denied or unsuccessful RPC reply, a
/// malformed reply, another procedure).
pub fn ddp_reply_item(proc_: u32, record: &[u8]) -> Option<(usize, usize)> {
    ddp_item_in(proc_, record, record.len())
}

/// [`ddp_reply_item`] from the start of a reply of `total` bytes (`prefix` holds its first
/// bytes: enough for the header before the item, or the answer is `None`), so a reader can
/// place the item before it arrives.
pub fn ddp_item_in(proc_: u32, prefix: &[u8], total: usize) -> Option<(usize, usize)> {
    let record = prefix;
    let w = |at: usize| xdr_u32(record, at);
    // Accepted reply: xid, REPLY, MSG_ACCEPTED, verifier (flavor, length, body), SUCCESS.
    if w(4)? != 1 || w(8)? != 0 {
        return None;
    }
    let verf_len = w(16)? as usize;
    let mut at = 20 + verf_len.div_ceil(4) * 4;
    if w(at)? != 0 {
        return None;
    }
    at += 4;
    // NFS status.
    if w(at)? != 0 {
        return None;
    }
    at += 4;
    // post_op_attr: a boolean, then fattr3 when it is true.
    let follows = w(at)?;
    at += 4;
    if follows == 1 {
        at += FATTR3_LEN;
    } else if follows != 0 {
        return None;
    }
    match proc_ {
        PROC_READ => at += 8, // count, eof
        PROC_READLINK => {}
        _ => return None,
    }
    let len = w(at)? as usize;
    at += 4;
    (at.checked_add(len)? <= total).then_some((at, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcrdma_tests::fixtures::bytes as words;
    use std::vec::Vec;

    /// An accepted SUCCESS RPC reply header (AUTH_NONE verifier).
    fn rpc_ok() -> Vec<u8> {
        words(&[9, 1, 0, 0, 0, 0])
    }

    #[test]
    fn read_reply_data_is_located_with_and_without_attributes() {
        let mut r = rpc_ok();
        r.extend(words(&[0, 1])); // NFS3_OK, attributes follow
        r.extend([0u8; FATTR3_LEN]);
        r.extend(words(&[5, 1, 5])); // count 5, eof, data length 5
        r.extend(b"hello\0\0\0");
        assert_eq!(ddp_reply_item(PROC_READ, &r), Some((24 + 8 + 84 + 12, 5)));
        let mut r = rpc_ok();
        r.extend(words(&[0, 0, 3, 0, 3]));
        r.extend(b"abc\0");
        assert_eq!(ddp_reply_item(PROC_READ, &r), Some((24 + 8 + 12, 3)));
    }

    #[test]
    fn the_item_is_located_from_the_start_of_a_reply_before_it_arrives() {
        let mut r = rpc_ok();
        r.extend(words(&[0, 1]));
        r.extend([0u8; FATTR3_LEN]);
        r.extend(words(&[9000, 0, 9000]));
        let header = r.len();
        r.extend([7u8; 9000]);
        let whole = ddp_reply_item(PROC_READ, &r);
        assert_eq!(whole, Some((header, 9000)));
        // The header alone, with the reply's length, places the item.
        assert_eq!(ddp_item_in(PROC_READ, &r[..header], r.len()), whole);
        assert_eq!(ddp_item_in(PROC_READ, &r[..512], r.len()), whole);
        // A prefix that stops inside the header, or a length the item does not fit in: none.
        assert_eq!(ddp_item_in(PROC_READ, &r[..header - 4], r.len()), None);
        assert_eq!(ddp_item_in(PROC_READ, &r[..header], r.len() - 1), None);
    }

    #[test]
    fn readlink_path_and_the_cases_without_an_item() {
        let mut r = rpc_ok();
        r.extend(words(&[0, 0, 4]));
        r.extend(b"/tmp");
        assert_eq!(ddp_reply_item(PROC_READLINK, &r), Some((24 + 12, 4)));
        // An error status: nothing to place.
        let mut e = rpc_ok();
        e.extend(words(&[2, 0]));
        assert_eq!(ddp_reply_item(PROC_READ, &e), None);
        // A length past the record, a denied reply, another procedure.
        let mut bad = rpc_ok();
        bad.extend(words(&[0, 0, 1, 1, 1000]));
        assert_eq!(ddp_reply_item(PROC_READ, &bad), None);
        assert_eq!(ddp_reply_item(PROC_READ, &words(&[9, 1, 1, 0, 2, 2])), None);
        assert_eq!(ddp_reply_item(1, &r), None);
        assert!(reply_has_ddp_item(NFS_PROGRAM, 3, PROC_READ));
        assert!(!reply_has_ddp_item(NFS_PROGRAM, 4, PROC_READ));
    }
}
