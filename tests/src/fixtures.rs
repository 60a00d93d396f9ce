//! Byte fixtures for RPC-over-RDMA Version 1 messages, written out word by word as they appear
//! on the wire (big-endian XDR), and helpers to build malformed variants of them.

use rpcrdma_core::wire::{put_xdr_words, XDR_UNIT};

/// Big-endian bytes of a sequence of XDR words: the core's [`put_xdr_words`] into a `Vec`, the
/// one words-to-bytes helper of the tests, the benchmark and the services' unit tests.
pub fn bytes(words: &[u32]) -> Vec<u8> {
    let mut out = vec![0; words.len() * XDR_UNIT];
    put_xdr_words(&mut out, words).expect("the buffer is sized for the words");
    out
}

/// The xid every fixture uses.
pub const XID: u32 = 0x0102_0304;

/// An ONC RPC call header for the NULL procedure of NFSv3 with AUTH_NONE: 10 words, 40 bytes.
pub const RPC_NULL_CALL: [u32; 10] = [
    XID, 0, // xid, msg_type CALL
    2, 100_003, 3, 0, // rpcvers, prog NFS, vers 3, proc NULL
    0, 0, // cred AUTH_NONE, length 0
    0, 0, // verf AUTH_NONE, length 0
];

/// An ONC RPC reply header (accepted, SUCCESS): what a backchannel reply starts with.
pub const RPC_REPLY: [u32; 6] = [XID, 1, 0, 0, 0, 0];

/// RDMA_MSG, credits 32, three empty lists, then the NULL call inline. 68 bytes.
pub const MSG_EMPTY_LISTS: [u32; 17] = [
    XID, 1, 32, 0, // xid, vers, credits, RDMA_MSG
    0, // read list: empty
    0, // write list: empty
    0, // reply chunk: none
    XID, 0, 2, 100_003, 3, 0, 0, 0, 0, 0, // the RPC call
];

/// RDMA_MSG with one Read chunk at position 40 (the end of the inline call, where an NFS WRITE
/// puts its data): handle 0x11223344, 8192 bytes at 0x1_0000_2000. 92 bytes.
pub const MSG_READ_CHUNK: [u32; 23] = [
    XID,
    1,
    32,
    0, // fixed header
    1,
    40,
    0x1122_3344,
    8192,
    0x0000_0001,
    0x0000_2000, // read item
    0,           // end of read list
    0,           // write list
    0,           // reply chunk
    XID,
    0,
    2,
    100_003,
    3,
    0,
    0,
    0,
    0,
    0, // the RPC call (40 bytes)
];

/// RDMA_NOMSG with a position-zero (call) chunk of 2048 bytes; no inline message. 52 bytes.
pub const NOMSG_CALL_CHUNK: [u32; 13] = [
    XID,
    1,
    32,
    1, // fixed header, RDMA_NOMSG
    1,
    0,
    0xaabb_ccdd,
    2048,
    0,
    0x8000, // read item at position 0
    0,      // end of read list
    0,      // write list
    0,      // reply chunk
];

/// RDMA_MSG with a write list of one chunk of two segments and a one-segment reply chunk,
/// then the NULL call inline. 128 bytes.
pub const MSG_WRITE_AND_REPLY: [u32; 32] = [
    XID,
    1,
    32,
    0, // fixed header
    0, // read list
    1,
    2, // write chunk, 2 segments
    0x0000_0a01,
    4096,
    0,
    0x0001_0000, // segment 1
    0x0000_0a02,
    4096,
    0,
    0x0001_1000, // segment 2
    0,           // end of write list
    1,
    1, // reply chunk, 1 segment
    0x0000_0b01,
    1024,
    0xffff_ffff,
    0xffff_f000, // segment (64-bit offset)
    XID,
    0,
    2,
    100_003,
    3,
    0,
    0,
    0,
    0,
    0, // the RPC call
];

/// RDMA_MSG, all lists empty, carrying an RPC *reply*: a backchannel reply (RFC 8167).
pub const MSG_BACKCHANNEL_REPLY: [u32; 13] = [XID, 1, 32, 0, 0, 0, 0, XID, 1, 0, 0, 0, 0];

/// RDMA_ERROR / ERR_VERS for [`XID`], echoing vers 1, granting 32 credits, range 1..=1.
pub const ERR_VERS_BYTES: [u8; 28] = [
    0x01, 0x02, 0x03, 0x04, // xid
    0x00, 0x00, 0x00, 0x01, // vers
    0x00, 0x00, 0x00, 0x20, // credits 32
    0x00, 0x00, 0x00, 0x04, // RDMA_ERROR
    0x00, 0x00, 0x00, 0x01, // ERR_VERS
    0x00, 0x00, 0x00, 0x01, // low
    0x00, 0x00, 0x00, 0x01, // high
];

/// RDMA_ERROR / ERR_CHUNK for [`XID`], vers 1, granting 32 credits.
pub const ERR_CHUNK_BYTES: [u8; 20] = [
    0x01, 0x02, 0x03, 0x04, // xid
    0x00, 0x00, 0x00, 0x01, // vers
    0x00, 0x00, 0x00, 0x20, // credits 32
    0x00, 0x00, 0x00, 0x04, // RDMA_ERROR
    0x00, 0x00, 0x00, 0x02, // ERR_CHUNK
];

/// Every valid call fixture with its name.
pub const VALID_CALLS: [(&str, &[u32]); 5] = [
    ("MSG_EMPTY_LISTS", &MSG_EMPTY_LISTS),
    ("MSG_READ_CHUNK", &MSG_READ_CHUNK),
    ("NOMSG_CALL_CHUNK", &NOMSG_CALL_CHUNK),
    ("MSG_WRITE_AND_REPLY", &MSG_WRITE_AND_REPLY),
    ("MSG_BACKCHANNEL_REPLY", &MSG_BACKCHANNEL_REPLY),
];
