//! The simulated requester (client): a script of RPC-over-RDMA messages, its registered memory,
//! what it expects back for each message, and the checks of every reply it receives.
//!
//! The script has valid calls (inline, with a Read chunk, RDMA_NOMSG with a call chunk, with a
//! write list and a reply chunk, to an unknown program, a backchannel reply, a burst the server
//! holds at once, a reply payload into a write chunk, a reply through the reply chunk), malformed
//! headers from the design's list of bad inputs (each answered with ERR_VERS or ERR_CHUNK, or
//! dropped), and faulty completions (a lying `byte_len`, a duplicate, a stale and a
//! forged wr_id). Every expected outcome also feeds a tally of what the core's counters must read
//! at the end, so the final check compares the pool's own accounting with the script's.

use core::ptr::NonNull;

use rpcrdma_core::device::{Completion, CompletionStatus};
use rpcrdma_core::pool::Counters;
use rpcrdma_core::responder::ResponderCounters;
use rpcrdma_core::wire::{
    decode_reply, put_xdr_u32, put_xdr_words, xdr_u32, ErrorReply, ErrorReplyKind, Proc, Reply,
};
use rpcrdma_services::{oncrpc, pattern_byte, NFS_PROG, PROC_BULK, PROC_GENERATE, TEST_PROG};

use crate::server::Server;
use crate::Nic;

const CHECKSUM_PROG: u32 = TEST_PROG;

/// Credits every call asks for.
const ASK: u32 = 32;
/// Placeholder the requester replaces with a fresh xid.
const X: u32 = 0;

/// Requester memory: the Read chunk data of the checksum call (600 bytes).
pub const HANDLE_A: u32 = 0xa1a1_0001;
/// Its address.
pub const ADDR_A: u64 = 0x0000_0001_0000_0000;
/// Requester memory: the RDMA_NOMSG call in its call chunk.
pub const HANDLE_B: u32 = 0xb2b2_0002;
/// Its address.
pub const ADDR_B: u64 = 0x0000_0002_0000_0000;
/// Requester memory: its reply chunk (first half) and write chunk (second half), writable.
pub const HANDLE_C: u32 = 0xc3c3_0003;
/// Its address.
pub const ADDR_C: u64 = 0x0000_0003_0000_0000;
/// Size of region C.
pub const REGION_C_LEN: usize = 8192;
/// Size of the reply chunk.
pub const REPLY_CHUNK_LEN: usize = 4096;
/// Address of the write chunk (second half of region C).
pub const ADDR_W: u64 = ADDR_C + REPLY_CHUNK_LEN as u64;
/// Size of the write chunk.
pub const WRITE_CHUNK_LEN: usize = 2048;
/// Bytes GENERATE returns into the write chunk.
pub const GENERATE_LEN: u32 = 1500;
/// Bytes BULK returns through the reply chunk.
pub const BULK_LEN: u32 = 2000;
/// The seed of GENERATE and BULK.
pub const SEED: u32 = 0x5eed;

const A_LEN: usize = 600;
/// The xid of the RDMA_NOMSG call (its RPC header lives in requester memory).
pub const NOMSG_XID: u32 = 0x4e4f_4d53;
const B_DATA_LEN: usize = 300;
const B_LEN: usize = 44 + B_DATA_LEN;
const B_SEG1: u32 = 200;

const fn pattern<const L: usize>(seed: u8) -> [u8; L] {
    let mut out = [0u8; L];
    let mut i = 0;
    while i < L {
        out[i] = (i as u8).wrapping_mul(31).wrapping_add(seed);
        i += 1;
    }
    out
}

/// Region A: the data item of the checksum call, pulled by RDMA Read.
pub static REGION_A: [u8; A_LEN] = pattern::<A_LEN>(7);

/// Region B: a whole checksum call (RPC header, opaque length, 300 data bytes). Built at compile
/// time, so with a `const` loop rather than the core's (run-time) `put_xdr_u32`.
pub static REGION_B: [u8; B_LEN] = {
    #[rustfmt::skip]
    let head: [u32; 11] = [NOMSG_XID, 0, 2, CHECKSUM_PROG, 1, 1, 0, 0, 0, 0, B_DATA_LEN as u32];
    let data = pattern::<B_DATA_LEN>(99);
    let mut out = [0u8; B_LEN];
    let mut i = 0;
    while i < 11 {
        let b = head[i].to_be_bytes();
        out[4 * i] = b[0];
        out[4 * i + 1] = b[1];
        out[4 * i + 2] = b[2];
        out[4 * i + 3] = b[3];
        i += 1;
    }
    let mut j = 0;
    while j < B_DATA_LEN {
        out[44 + j] = data[j];
        j += 1;
    }
    out
};

const fn hi(a: u64) -> u32 {
    (a >> 32) as u32
}
const fn lo(a: u64) -> u32 {
    a as u32
}

/// A message as XDR words, and how to fill in its xid.
#[derive(Debug)]
pub struct Template {
    /// The words.
    pub words: &'static [u32],
    /// Word index of the inline RPC xid, set to the same fresh xid as `rdma_xid`.
    pub rpc_xid_word: Option<usize>,
    /// A fixed xid instead of a fresh one (the RPC header is in requester memory).
    pub fixed_xid: Option<u32>,
    /// Deliver only this many bytes (a truncated header).
    pub truncate_to: Option<usize>,
}

const fn t(words: &'static [u32], rpc_xid_word: Option<usize>) -> Template {
    Template {
        words,
        rpc_xid_word,
        fixed_xid: None,
        truncate_to: None,
    }
}

// The messages, one row per header part, as a capture would show them (rustfmt would put each
// word on its own line).

/// RDMA_MSG, empty lists, NFSv3 NULL call inline.
#[rustfmt::skip]
pub static CALL_NULL: Template = t(
    &[
        X, 1, ASK, 0,                                   // xid, vers, credits, RDMA_MSG
        0, 0, 0,                                        // read list, write list, reply chunk
        X, 0, 2, NFS_PROG, 3, 0, 0, 0, 0, 0,            // NFSv3 NULL call
    ],
    Some(7),
);
/// RDMA_MSG with a Read chunk at position 44: the checksum call's `opaque<>` data (600 bytes in
/// requester region A); inline: the call header and the opaque length.
#[rustfmt::skip]
pub static CALL_CHECKSUM_READ_CHUNK: Template = t(
    &[
        X, 1, ASK, 0,
        1, 44, HANDLE_A, A_LEN as u32, hi(ADDR_A), lo(ADDR_A), 0, // read list: one item
        0,                                                        // write list
        0,                                                        // reply chunk
        X, 0, 2, CHECKSUM_PROG, 1, 1, 0, 0, 0, 0, A_LEN as u32,   // call, opaque length
    ],
    Some(13),
);
/// RDMA_NOMSG: the whole checksum call in a position-zero Read chunk of two segments (region B).
#[rustfmt::skip]
pub static CALL_CHECKSUM_NOMSG: Template = Template {
    words: &[
        X, 1, ASK, 1,
        1, 0, HANDLE_B, B_SEG1, hi(ADDR_B), lo(ADDR_B),
        1, 0, HANDLE_B, B_LEN as u32 - B_SEG1, hi(ADDR_B + B_SEG1 as u64), lo(ADDR_B + B_SEG1 as u64),
        0,                                              // end of read list
        0,                                              // write list
        0,                                              // reply chunk
    ],
    rpc_xid_word: None,
    fixed_xid: Some(NOMSG_XID),
    truncate_to: None,
};
/// RDMA_MSG with a write list (one chunk, two segments) and a reply chunk (region C); NULL call.
#[rustfmt::skip]
pub static CALL_NULL_WRITE_AND_REPLY_CHUNK: Template = t(
    &[
        X, 1, ASK, 0,
        0,                                              // read list
        1, 2,                                           // write chunk of 2 segments
        0x0000_0d01, 4096, 0, 0x0001_0000,
        0x0000_0d02, 4096, 0, 0x0001_1000,
        0,                                              // end of write list
        1, 1, HANDLE_C, REPLY_CHUNK_LEN as u32, hi(ADDR_C), lo(ADDR_C), // reply chunk
        X, 0, 2, NFS_PROG, 3, 0, 0, 0, 0, 0,
    ],
    Some(22),
);
/// GENERATE 1500 bytes with a write chunk of 2048 (region C, second half): the payload goes
/// there by RDMA Write, the reply's write list says 1500, the rest is inline.
#[rustfmt::skip]
pub static CALL_GENERATE_WRITE_CHUNK: Template = t(
    &[
        X, 1, ASK, 0,
        0,                                              // read list
        1, 1, HANDLE_C, WRITE_CHUNK_LEN as u32, hi(ADDR_W), lo(ADDR_W), // write chunk
        0,                                              // end of write list
        0,                                              // reply chunk
        X, 0, 2, TEST_PROG, 1, PROC_GENERATE, 0, 0, 0, 0, GENERATE_LEN, SEED,
    ],
    Some(13),
);
/// BULK 2000 bytes (not DDP-eligible, larger than the 1 KiB inline size) with a reply chunk
/// (region C, first half): the whole reply goes there, the Send carries RDMA_NOMSG.
#[rustfmt::skip]
pub static CALL_BULK_REPLY_CHUNK: Template = t(
    &[
        X, 1, ASK, 0,
        0, 0,                                           // read list, write list
        1, 1, HANDLE_C, REPLY_CHUNK_LEN as u32, hi(ADDR_C), lo(ADDR_C), // reply chunk
        X, 0, 2, TEST_PROG, 1, PROC_BULK, 0, 0, 0, 0, BULK_LEN, SEED,
    ],
    Some(12),
);
/// A call to a program this server does not run.
#[rustfmt::skip]
pub static CALL_UNKNOWN_PROGRAM: Template = t(
    &[X, 1, ASK, 0, 0, 0, 0, X, 0, 2, 0x2000_0099, 1, 0, 0, 0, 0, 0],
    Some(7),
);
/// RFC 8167: a backchannel *reply* (RPC msg_type REPLY) on the forward channel.
pub static BACKCHANNEL_REPLY: Template = t(&[X, 1, ASK, 0, 0, 0, 0, X, 1, 0, 0, 0, 0], Some(7));
/// `rdma_vers` 2.
#[rustfmt::skip]
pub static BAD_VERSION: Template = t(
    &[X, 2, ASK, 0, 0, 0, 0, X, 0, 2, NFS_PROG, 3, 0, 0, 0, 0, 0],
    Some(7),
);
/// A write chunk with a segment count of 0.
pub static WRITE_CHUNK_EMPTY: Template = t(&[X, 1, ASK, 0, 0, 1, 0, 0, 0], None);
/// A read segment of length 0 (Linux 6.1 crashed a thread on it).
#[rustfmt::skip]
pub static READ_SEGMENT_ZERO: Template = t(
    &[
        X, 1, ASK, 0,
        1, 44, HANDLE_A, 0, hi(ADDR_A), lo(ADDR_A), 0,  // read segment of length 0
        0, 0,
        X, 0, 2, CHECKSUM_PROG, 1, 1, 0, 0, 0, 0, 0,
    ],
    Some(13),
);
/// A write chunk whose segment count × 16 overflows 32 bits (the shape of CVE-2024-53151).
pub static WRITE_COUNT_OVERFLOW: Template = t(&[X, 1, ASK, 0, 0, 1, 0x1000_0001, 0, 0, 0, 0], None);
/// A read list discriminator of 2.
pub static BAD_DISCRIMINATOR: Template = t(&[X, 1, ASK, 0, 2, 0, 0, 0], None);
/// RDMA_NOMSG without a call chunk.
pub static NOMSG_WITHOUT_CALL_CHUNK: Template = t(&[X, 1, ASK, 1, 0, 0, 0], None);
/// The Read-chunk call cut off inside its read segment (30 bytes).
pub static TRUNCATED_READ_LIST: Template = Template {
    truncate_to: Some(30),
    ..t(CALL_CHECKSUM_READ_CHUNK.words, None)
};
/// RDMA_MSGP (deprecated).
pub static MSGP: Template = t(&[X, 1, ASK, 2, 0, 0, 0, 0, 0], None);
/// RDMA_DONE from a requester.
pub static DONE: Template = t(&[X, 1, ASK, 3], None);
/// RDMA_ERROR from a requester.
pub static ERROR_FROM_REQUESTER: Template = t(&[X, 1, ASK, 4, 2], None);
/// Twelve bytes: no whole fixed header, so no xid to answer.
pub static SHORT: Template = t(&[X, 1, ASK], None);

/// What the script does in a step.
#[derive(Debug)]
pub enum Action {
    /// A message arrives.
    Deliver(&'static Template),
    /// A message arrives; the completion claims `extra` bytes more than the Receive buffer.
    DeliverClaimingPastBuffer(&'static Template, u32),
    /// `count` messages arrive before the server polls: it holds them at once.
    Burst(&'static Template, u32),
    /// A message arrives and its completion is delivered twice.
    DeliverThenDuplicate(&'static Template),
    /// A completion for the previous post of a descriptor that is posted again.
    InjectStale,
    /// A completion for an id the pool never handed out.
    InjectForged(u64),
}

/// What the requester expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum Expect {
    /// An accepted RPC reply with `accept_stat` `stat`, inline (RDMA_MSG) or through the reply
    /// chunk, and for the checksum program the checksum of `data`.
    Reply {
        /// `accept_stat`.
        stat: u32,
        /// Through the reply chunk rather than inline.
        via_reply_chunk: bool,
        /// The checksum the result must carry.
        checksum: Option<u32>,
        /// An `opaque<>` result of this many pattern bytes (seed [`SEED`]); in the write chunk
        /// when the bool is set.
        payload: Option<(u32, bool)>,
    },
    /// Nothing on the wire: the server hands it to its backchannel.
    Backchannel,
    /// RDMA_ERROR / ERR_VERS echoing `vers`.
    ErrVers {
        /// The version word sent (echoed).
        vers: u32,
    },
    /// RDMA_ERROR / ERR_CHUNK.
    ErrChunk,
    /// Nothing on the wire.
    Drop,
    /// The pool refuses the completion: nothing on the wire, counted.
    Refused(Refusal),
}

/// Which counter a refused completion lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum Refusal {
    /// `rejected_unknown`.
    Unknown,
    /// `rejected_stale`.
    Stale,
    /// `rejected_duplicate`.
    Duplicate,
}

/// One step of the script.
#[derive(Debug)]
pub struct Step {
    /// Name for the log.
    pub name: &'static str,
    /// What happens.
    pub action: Action,
}

/// The script, run once per round.
pub static SCRIPT: &[Step] = &[
    Step {
        name: "NULL call, empty lists",
        action: Action::Deliver(&CALL_NULL),
    },
    Step {
        name: "checksum call, Read chunk at 44",
        action: Action::Deliver(&CALL_CHECKSUM_READ_CHUNK),
    },
    Step {
        name: "checksum call, RDMA_NOMSG call chunk",
        action: Action::Deliver(&CALL_CHECKSUM_NOMSG),
    },
    Step {
        name: "NULL call, write list + reply chunk",
        action: Action::Deliver(&CALL_NULL_WRITE_AND_REPLY_CHUNK),
    },
    Step {
        name: "GENERATE into the write chunk",
        action: Action::Deliver(&CALL_GENERATE_WRITE_CHUNK),
    },
    Step {
        name: "BULK through the reply chunk",
        action: Action::Deliver(&CALL_BULK_REPLY_CHUNK),
    },
    Step {
        name: "call to an unknown program",
        action: Action::Deliver(&CALL_UNKNOWN_PROGRAM),
    },
    Step {
        name: "backchannel reply with no backward call outstanding (RFC 8167): dropped",
        action: Action::Deliver(&BACKCHANNEL_REPLY),
    },
    Step {
        name: "burst of NULL calls held at once",
        action: Action::Burst(&CALL_NULL, 6),
    },
    Step {
        name: "rdma_vers 2",
        action: Action::Deliver(&BAD_VERSION),
    },
    Step {
        name: "write chunk with 0 segments",
        action: Action::Deliver(&WRITE_CHUNK_EMPTY),
    },
    Step {
        name: "read segment of length 0",
        action: Action::Deliver(&READ_SEGMENT_ZERO),
    },
    Step {
        name: "write chunk count x16 overflows",
        action: Action::Deliver(&WRITE_COUNT_OVERFLOW),
    },
    Step {
        name: "read list discriminator 2",
        action: Action::Deliver(&BAD_DISCRIMINATOR),
    },
    Step {
        name: "RDMA_NOMSG without call chunk",
        action: Action::Deliver(&NOMSG_WITHOUT_CALL_CHUNK),
    },
    Step {
        name: "read list truncated at 30 bytes",
        action: Action::Deliver(&TRUNCATED_READ_LIST),
    },
    Step {
        name: "RDMA_MSGP",
        action: Action::Deliver(&MSGP),
    },
    Step {
        name: "RDMA_DONE from the requester",
        action: Action::Deliver(&DONE),
    },
    Step {
        name: "RDMA_ERROR from the requester",
        action: Action::Deliver(&ERROR_FROM_REQUESTER),
    },
    Step {
        name: "12 bytes: no fixed header",
        action: Action::Deliver(&SHORT),
    },
    Step {
        name: "byte_len past the buffer",
        action: Action::DeliverClaimingPastBuffer(&CALL_NULL, 64),
    },
    Step {
        name: "duplicate completion",
        action: Action::DeliverThenDuplicate(&CALL_NULL),
    },
    Step {
        name: "stale wr_id",
        action: Action::InjectStale,
    },
    Step {
        name: "forged wr_id (index past N)",
        action: Action::InjectForged((1 << 32) | 0xffff),
    },
    Step {
        name: "forged wr_id (another pool's epoch)",
        action: Action::InjectForged((1 << 32) | (0x3fff << 18)),
    },
];

/// The expected outcome of a message.
fn expect(template: &Template) -> Expect {
    let ptr = template as *const Template;
    let is = |other: &Template| core::ptr::eq(ptr, other);
    if is(&CALL_NULL) {
        Expect::Reply {
            stat: 0,
            via_reply_chunk: false,
            checksum: None,
            payload: None,
        }
    } else if is(&CALL_CHECKSUM_READ_CHUNK) {
        Expect::Reply {
            stat: 0,
            via_reply_chunk: false,
            checksum: Some(oncrpc::checksum(&REGION_A)),
            payload: None,
        }
    } else if is(&CALL_CHECKSUM_NOMSG) {
        let data = REGION_B.get(44..).unwrap_or_default();
        Expect::Reply {
            stat: 0,
            via_reply_chunk: false,
            checksum: Some(oncrpc::checksum(data)),
            payload: None,
        }
    } else if is(&CALL_NULL_WRITE_AND_REPLY_CHUNK) {
        // The reply fits inline: the chunks go unused (the write chunk echoed with 0 written).
        Expect::Reply {
            stat: 0,
            via_reply_chunk: false,
            checksum: None,
            payload: None,
        }
    } else if is(&CALL_GENERATE_WRITE_CHUNK) {
        Expect::Reply {
            stat: 0,
            via_reply_chunk: false,
            checksum: None,
            payload: Some((GENERATE_LEN, true)),
        }
    } else if is(&CALL_BULK_REPLY_CHUNK) {
        Expect::Reply {
            stat: 0,
            via_reply_chunk: true,
            checksum: None,
            payload: Some((BULK_LEN, false)),
        }
    } else if is(&CALL_UNKNOWN_PROGRAM) {
        Expect::Reply {
            stat: 1,
            via_reply_chunk: false,
            checksum: None,
            payload: None,
        }
    } else if is(&BACKCHANNEL_REPLY) {
        Expect::Backchannel
    } else if is(&BAD_VERSION) {
        Expect::ErrVers { vers: 2 }
    } else if is(&DONE) || is(&ERROR_FROM_REQUESTER) || is(&SHORT) {
        Expect::Drop
    } else {
        Expect::ErrChunk
    }
}

/// What the core's counters must read, built from the script's expectations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Successful completions.
    pub completed: u64,
    /// Their bytes (as claimed).
    pub bytes: u64,
    /// Calls and backchannel replies handed up.
    pub delivered: u64,
    /// Of those, backchannel replies.
    pub backchannel: u64,
    /// ERR_VERS replies.
    pub err_vers: u64,
    /// ERR_CHUNK replies.
    pub err_chunk: u64,
    /// Drops.
    pub dropped: u64,
    /// Refused completions by kind.
    pub rejected_unknown: u64,
    /// Stale.
    pub rejected_stale: u64,
    /// Duplicate.
    pub rejected_duplicate: u64,
    /// Flushes.
    pub flushed: u64,
    /// Replies the requester checked.
    pub replies_checked: u64,
    /// Messages the requester sent.
    pub messages: u64,
}

/// The requester.
pub struct Requester {
    credits: u32,
    buffer_size: usize,
    next_xid: u32,
    msg: [u8; 256],
    region_c: NonNull<u8>,
    last: Option<Completion>,
    /// Expected counters.
    pub tally: Tally,
    /// Checks that failed.
    pub failures: u32,
}

impl Requester {
    /// A requester talking to a server that grants `credits`, with Receive buffers of
    /// `buffer_size` bytes.
    ///
    /// `region_c` is its writable memory ([`REGION_C_LEN`] bytes, registered on the NIC).
    pub fn new(credits: u32, buffer_size: usize, region_c: NonNull<u8>) -> Self {
        Requester {
            credits,
            buffer_size,
            next_xid: 0x5eed_0000,
            msg: [0; 256],
            region_c,
            last: None,
            tally: Tally::default(),
            failures: 0,
        }
    }

    fn fail(&mut self) {
        self.failures += 1;
    }

    /// Builds `template` with a fresh xid into the message buffer; returns (xid, length).
    fn build(&mut self, template: &Template) -> (u32, usize) {
        let xid = match template.fixed_xid {
            Some(x) => x,
            None => {
                self.next_xid = self.next_xid.wrapping_add(1);
                self.next_xid
            }
        };
        // Every template fits the 256-byte message buffer; one that did not would be sent empty.
        let len = put_xdr_words(&mut self.msg, template.words).unwrap_or(0);
        put_xdr_u32(&mut self.msg, 0, xid);
        if let Some(i) = template.rpc_xid_word {
            put_xdr_u32(&mut self.msg, 4 * i, xid);
        }
        (xid, template.truncate_to.map_or(len, |t| t.min(len)))
    }

    /// Region C as the requester reads it (between polls: no RDMA Write is queued then).
    // The NIC writes region C by pointer; the requester reads it back as a slice.
    #[allow(unsafe_code)]
    fn region_c(&self) -> &[u8] {
        // SAFETY: region C is REGION_C_LEN bytes that outlive the requester; the NIC writes it
        // only while executing RDMA Writes inside `poll`, never while this borrow lives.
        unsafe { core::slice::from_raw_parts(self.region_c.as_ptr(), REGION_C_LEN) }
    }

    fn send(
        &mut self,
        nic: &mut Nic,
        template: &Template,
        claim_extra: Option<u32>,
    ) -> Option<(u32, Expect)> {
        let (xid, len) = self.build(template);
        let bytes = self.msg.get(..len).unwrap_or_default();
        let byte_len = match claim_extra {
            Some(extra) => self.buffer_size as u32 + extra,
            None => len as u32,
        };
        let sent = match claim_extra {
            Some(_) => nic.deliver_claiming(bytes, Some(byte_len)),
            None => nic.deliver(bytes),
        };
        match sent {
            Ok(wr_id) => {
                self.last = Some(Completion {
                    wr_id,
                    status: CompletionStatus::Success,
                    byte_len,
                    qp: 0,
                })
            }
            Err(e) => {
                defmt::error!("  NIC refused the message: {}", e);
                self.fail();
                return None;
            }
        }
        let expect = match claim_extra {
            Some(_) => Expect::Drop,
            None => expect(template),
        };
        self.tally.messages += 1;
        self.tally.completed += 1;
        self.tally.bytes += byte_len as u64;
        match expect {
            Expect::Reply { .. } => self.tally.delivered += 1,
            Expect::Backchannel => {
                self.tally.delivered += 1;
                self.tally.backchannel += 1;
            }
            Expect::ErrVers { .. } => self.tally.err_vers += 1,
            Expect::ErrChunk => self.tally.err_chunk += 1,
            Expect::Drop => self.tally.dropped += 1,
            Expect::Refused(_) => {}
        }
        Some((xid, expect))
    }

    fn refused(&mut self, r: Refusal) {
        match r {
            Refusal::Unknown => self.tally.rejected_unknown += 1,
            Refusal::Stale => self.tally.rejected_stale += 1,
            Refusal::Duplicate => self.tally.rejected_duplicate += 1,
        }
    }

    /// Runs one step: the action, the server until the completion queue is empty, then the check
    /// of everything the server sent.
    pub fn step<const N: usize>(&mut self, server: &mut Server<'_, N>, nic: &mut Nic, step: &Step) {
        // The server keeps its Receives posted before anything arrives (an RC peer would get
        // RNR NAKs otherwise).
        server.replenish(nic);
        let mut expected: heapless::Vec<(u32, Expect), 8> = heapless::Vec::new();
        match step.action {
            Action::Deliver(template) => {
                if let Some(e) = self.send(nic, template, None) {
                    let _ = expected.push(e);
                }
            }
            Action::DeliverClaimingPastBuffer(template, extra) => {
                if let Some(e) = self.send(nic, template, Some(extra)) {
                    let _ = expected.push(e);
                }
            }
            Action::Burst(template, count) => {
                for _ in 0..count {
                    if let Some(e) = self.send(nic, template, None) {
                        let _ = expected.push(e);
                    }
                }
            }
            Action::DeliverThenDuplicate(template) => {
                if let Some(e) = self.send(nic, template, None) {
                    let _ = expected.push(e);
                }
                // The device completes the same Receive a second time.
                match self.last.map(|c| nic.inject(c).map(|()| c.wr_id)) {
                    Some(Ok(wr_id)) => {
                        self.refused(Refusal::Duplicate);
                        let _ = expected.push((wr_id as u32, Expect::Refused(Refusal::Duplicate)));
                    }
                    _ => self.fail(),
                }
            }
            Action::InjectStale => {
                // The previous post of a descriptor that is posted now: same index, one
                // generation back.
                let posted = nic.posted_wrs().next().map(|wr| wr.wr_id);
                match posted {
                    Some(wr_id) if nic.inject(success(wr_id.wrapping_sub(1 << 32), 68)).is_ok() => {
                        self.refused(Refusal::Stale);
                        let _ = expected.push((0, Expect::Refused(Refusal::Stale)));
                    }
                    _ => self.fail(),
                }
            }
            Action::InjectForged(wr_id) => {
                if nic.inject(success(wr_id, 28)).is_ok() {
                    self.refused(Refusal::Unknown);
                    let _ = expected.push((0, Expect::Refused(Refusal::Unknown)));
                } else {
                    self.fail();
                }
            }
        }
        while nic.pending() > 0 || nic.queued() > 0 {
            server.poll(nic);
        }
        for (xid, expect) in expected.iter() {
            defmt::info!("  expected {}", expect);
            if !self.check(nic, *xid, *expect) {
                defmt::error!(
                    "FAIL: step \"{=str}\": xid {=u32:#010x}: expected {}",
                    step.name,
                    xid,
                    expect
                );
                self.fail();
            }
        }
        if let Some(extra) = nic.take_sent() {
            defmt::error!(
                "FAIL: step \"{=str}\": unexpected send of {=usize} bytes",
                step.name,
                extra.bytes.len()
            );
            self.fail();
        }
    }

    /// Checks what the server sent for one message.
    fn check(&mut self, nic: &mut Nic, xid: u32, expect: Expect) -> bool {
        let credits = self.credits;
        let sent = match expect {
            Expect::Backchannel | Expect::Drop | Expect::Refused(_) => return true,
            _ => match nic.take_sent() {
                Some(sent) => sent,
                None => return false,
            },
        };
        self.tally.replies_checked += 1;
        let Ok(reply) = decode_reply(&sent.bytes) else {
            return false;
        };
        // The grant never exceeds the Receives posted (or consumed by calls the responder
        // has not polled yet) when the reply went out.
        if reply.credits() as usize > sent.posted_at_send {
            return false;
        }
        let error = |vers, kind| {
            Reply::Error(ErrorReply {
                xid,
                vers,
                credits,
                kind,
            })
        };
        match expect {
            Expect::ErrVers { vers } => {
                reply == error(vers, ErrorReplyKind::Vers { low: 1, high: 1 })
            }
            Expect::ErrChunk => reply == error(1, ErrorReplyKind::Chunk),
            Expect::Reply {
                stat,
                via_reply_chunk,
                checksum,
                payload,
            } => {
                // RDMA_MSG / RDMA_NOMSG replies of version 1 only decode as `Rpc`.
                let Reply::Rpc(parsed) = reply else {
                    return false;
                };
                if parsed.xid != xid || parsed.credits != credits {
                    return false;
                }
                let region_c = self.region_c();
                let rpc: &[u8] = match (via_reply_chunk, parsed.proc_, parsed.reply_chunk) {
                    (true, Proc::Nomsg, Some(chunk)) => region_c
                        .get(..chunk.total_len() as usize)
                        .unwrap_or_default(),
                    (false, Proc::Msg, None) => parsed.rpc_message,
                    _ => return false,
                };
                let Some((rpc_xid, got_stat, results)) = oncrpc::parse_accepted_reply(rpc) else {
                    return false;
                };
                let sum_ok = match checksum {
                    Some(sum) => xdr_u32(rpc, results) == Some(sum),
                    None => true,
                };
                let payload_ok = match payload {
                    None => true,
                    Some((len, in_write_chunk)) => {
                        let data = if in_write_chunk {
                            let at = REPLY_CHUNK_LEN;
                            let written = parsed.write_chunk.map(|c| c.total_len());
                            (written == Some(len as u64))
                                .then(|| region_c.get(at..at + len as usize))
                                .flatten()
                        } else {
                            rpc.get(results + 4..results + 4 + len as usize)
                        };
                        xdr_u32(rpc, results) == Some(len)
                            && data.is_some_and(|d| {
                                d.iter()
                                    .enumerate()
                                    .all(|(i, b)| *b == pattern_byte(SEED, i))
                            })
                    }
                };
                rpc_xid == xid && got_stat == stat && sum_ok && payload_ok
            }
            _ => false,
        }
    }

    /// The final accounting: the core's counters against the tally.
    pub fn check_counters(&mut self, c: &Counters, r: &ResponderCounters) -> bool {
        let t = &self.tally;
        let ok = r.refused_completions
            == t.rejected_unknown + t.rejected_stale + t.rejected_duplicate
            && r.overruns == 0
            && r.reply_too_large == 0
            && c.completed == t.completed
            && c.bytes == t.bytes
            && c.delivered == t.delivered
            && c.released == t.delivered
            && c.err_vers == t.err_vers
            && c.err_chunk == t.err_chunk
            && c.dropped == t.dropped
            && c.rejected_unknown == t.rejected_unknown
            && c.rejected_stale == t.rejected_stale
            && c.rejected_duplicate == t.rejected_duplicate
            && c.flushed == t.flushed
            && c.device_errors == 0;
        if !ok {
            defmt::error!(
                "FAIL: counters: expected completed {=u64} bytes {=u64} delivered {=u64} err_vers {=u64} err_chunk {=u64} dropped {=u64} unknown {=u64} stale {=u64} duplicate {=u64} flushed {=u64}",
                t.completed, t.bytes, t.delivered, t.err_vers, t.err_chunk, t.dropped,
                t.rejected_unknown, t.rejected_stale, t.rejected_duplicate, t.flushed
            );
            self.fail();
        }
        ok
    }
}

fn success(wr_id: u64, byte_len: u32) -> Completion {
    Completion {
        wr_id,
        status: CompletionStatus::Success,
        byte_len,
        qp: 0,
    }
}

/// Flushes what is still posted (the connection goes down), checks the pool stops posting, that
/// a second flush of a returned descriptor is refused, and drains.
pub fn teardown<const N: usize>(
    req: &mut Requester,
    server: &mut Server<'_, N>,
    nic: &mut Nic,
) -> bool {
    let first = nic.posted_wrs().next().map(|wr| wr.wr_id);
    let flushed = nic.flush();
    req.tally.flushed += flushed as u64;
    while nic.pending() > 0 || nic.queued() > 0 {
        server.poll(nic);
    }
    let mut ok = server.endpoint.pool().is_closing() && server.endpoint.pool().posted() == 0;
    // A second flush of a descriptor already returned to the free list: refused as a duplicate.
    if let Some(wr_id) = first {
        let second = Completion {
            wr_id,
            status: CompletionStatus::Flushed,
            byte_len: 0,
            qp: 0,
        };
        if nic.inject(second).is_ok() {
            req.refused(Refusal::Duplicate);
        }
        while nic.pending() > 0 || nic.queued() > 0 {
            server.poll(nic);
        }
    }
    if nic.posted() != 0 {
        defmt::error!("FAIL: the pool posted Receives after the flush");
        ok = false;
    }
    let report = server.endpoint.drain();
    defmt::info!(
        "flushed {=usize} posted Receives; drain reclaimed {}",
        flushed,
        report
    );
    let pool = server.endpoint.pool();
    ok && report.receives.posted == 0
        && report.receives.held == 0
        && report.connection.calls == 0
        && report.connection.work_requests == 0
        && report.leaked == 0
        && pool.in_flight() == 0
        && pool.free() == N
}
