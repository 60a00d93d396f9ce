//! The core's responder end to end on the software NIC: every chunk shape of RFC 8166 in and
//! out, failures mid-chunk, and the credit promise (no requester Send ever meets RNR; no grant
//! exceeds the Receives posted when it was sent).

use rpcrdma_core::device::{Completion, CompletionStatus, WrId, WrKind};
use rpcrdma_core::responder::{Call, ReplyWriter, Service, Verdict};
use rpcrdma_core::wire::{put_xdr_u32, Proc, ReadSegment, Segment};
use rpcrdma_services::{
    oncrpc, pattern_byte, ExampleService, NFS_PROG, PROC_BULK, PROC_CHECKSUM, PROC_ECHO,
    PROC_GENERATE, TEST_PROG, TEST_VERS,
};
use rpcrdma_tests::fixtures::bytes;
use rpcrdma_tests::nic::Op;
use rpcrdma_tests::rig::*;

fn rig() -> Rig<ExampleService> {
    Rig::new(RigConfig::default(), ExampleService::default())
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| pattern_byte(seed, i)).collect()
}

/// (xid, accept_stat, results) of an inline RPC reply.
fn accepted(rpc: &[u8]) -> (u32, u32, Vec<u8>) {
    let (xid, stat, at) = oncrpc::parse_accepted_reply(rpc).expect("accepted reply");
    (xid, stat, rpc[at.min(rpc.len())..].to_vec())
}

fn read_seg(position: u32, segment: Segment) -> ReadSegment {
    ReadSegment { position, segment }
}

/// A CHECKSUM call whose data travels in a Read chunk at its position (after the length word).
fn checksum_msg(rig: &mut Rig<ExampleService>, xid: u32, data: &[u8], pieces: usize) -> Vec<u8> {
    let inline = rpc_call(
        xid,
        TEST_PROG,
        TEST_VERS,
        PROC_CHECKSUM,
        &bytes(&[data.len() as u32]),
    );
    let step = data.len().div_ceil(pieces);
    let reads: Vec<ReadSegment> = data
        .chunks(step)
        .enumerate()
        .map(|(k, part)| read_seg(44, rig.source_segment(k * step, part)))
        .collect();
    call_message(xid, Proc::Msg, &reads, None, None, &inline)
}

#[test]
fn null_call_is_answered_inline_with_the_full_grant() {
    let mut rig = rig();
    let msg = call_message(
        1,
        Proc::Msg,
        &[],
        None,
        None,
        &rpc_call(1, NFS_PROG, 3, 0, &[]),
    );
    let r = rig.round_trip(&msg);
    assert_eq!((r.xid, r.proc_, r.credits), (1, Proc::Msg, 32));
    assert_eq!(accepted(&r.inline).1, 0, "SUCCESS");
    assert!(r.posted_at_send >= 32);
    rig.assert_quiet();
}

#[test]
fn checksum_call_through_a_read_chunk_at_its_position() {
    let mut rig = rig();
    let data = pattern(9, 65536);
    let msg = checksum_msg(&mut rig, 2, &data, 1);
    let r = rig.round_trip(&msg);
    let (xid, stat, rest) = accepted(&r.inline);
    assert_eq!((xid, stat), (2, 0));
    assert_eq!(rest, oncrpc::checksum(&data).to_be_bytes());
    assert_eq!(rig.endpoint.connection().counters().read_bytes, 65536);
    assert_eq!(rig.nic.counters.read_bytes, 65536);
    rig.assert_quiet();
}

#[test]
fn read_chunk_of_several_segments_and_odd_length() {
    let mut rig = rig();
    let data = pattern(3, 10_001);
    let msg = checksum_msg(&mut rig, 3, &data, 5);
    let r = rig.round_trip(&msg);
    assert_eq!(accepted(&r.inline).2, oncrpc::checksum(&data).to_be_bytes());
    rig.assert_quiet();
}

#[test]
fn nomsg_call_travels_whole_in_the_position_zero_chunk() {
    let mut rig = rig();
    let data = pattern(4, 100_000);
    let mut args = bytes(&[data.len() as u32]);
    args.extend_from_slice(&data);
    let call = rpc_call(4, TEST_PROG, TEST_VERS, PROC_CHECKSUM, &args);
    let seg = rig.source_segment(0, &call);
    let msg = call_message(4, Proc::Nomsg, &[read_seg(0, seg)], None, None, &[]);
    let r = rig.round_trip(&msg);
    let (xid, stat, rest) = accepted(&r.inline);
    assert_eq!((xid, stat), (4, 0), "the RPC xid comes from the chunk");
    assert_eq!(rest, oncrpc::checksum(&data).to_be_bytes());
    rig.assert_quiet();
}

#[test]
fn msg_with_a_position_zero_chunk_is_served_from_the_chunk() {
    let mut rig = rig();
    let call = rpc_call(5, NFS_PROG, 3, 0, &[]);
    let seg = rig.source_segment(0, &call);
    // RFC 8166 permits it; the inline bytes are not part of the call.
    let msg = call_message(5, Proc::Msg, &[read_seg(0, seg)], None, None, &[0xee; 8]);
    let r = rig.round_trip(&msg);
    assert_eq!(accepted(&r.inline).0, 5);
    assert_eq!(accepted(&r.inline).1, 0);
    rig.assert_quiet();
}

/// What a service saw of one call: head, pages, tail, and the whole stream.
type Seen = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// Records the XDR stream the service saw.
#[derive(Default)]
struct Recorder {
    streams: Vec<Seen>,
}

impl Service for Recorder {
    fn serve(&mut self, call: &Call<'_>, reply: &mut ReplyWriter<'_>) -> Verdict {
        let v = &call.view;
        let mut all = vec![0u8; v.len()];
        assert_eq!(v.copy_out(0, &mut all), v.len());
        self.streams.push((
            v.head().to_vec(),
            v.pages().to_vec(),
            v.tail().to_vec(),
            all,
        ));
        reply.push(&call.xid.to_be_bytes());
        Verdict::Reply
    }
}

#[test]
fn two_data_chunks_reassemble_in_order() {
    let mut rig = Rig::new(RigConfig::default(), Recorder::default());
    let (a, b, c) = ([1u8; 8], [2u8; 8], [3u8; 8]);
    let d1 = [0xd1u8; 5];
    let d2 = [0xd2u8; 3];
    let s1 = rig.source.bytes_mut();
    s1[..5].copy_from_slice(&d1);
    s1[64..67].copy_from_slice(&d2);
    let seg1 = Segment {
        handle: SOURCE_RKEY,
        length: 5,
        offset: SOURCE_ADDR,
    };
    let seg2 = Segment {
        handle: SOURCE_RKEY,
        length: 3,
        offset: SOURCE_ADDR + 64,
    };
    let inline: Vec<u8> = [a, b, c].concat();
    // Stream: A | d1 + pad(3) | B | d2 + pad(1) | C; positions count in the stream.
    let reads = [read_seg(8, seg1), read_seg(8 + 8 + 8, seg2)];
    let msg = call_message(6, Proc::Msg, &reads, None, None, &inline);
    rig.round_trip(&msg);
    let (head, pages, tail, all) = rig.service.streams.pop().unwrap();
    let expected: Vec<u8> = [&a[..], &d1, &[0; 3], &b, &d2, &[0], &c].concat();
    assert_eq!(all, expected);
    assert_eq!(head, a);
    assert_eq!(pages, [&d1[..], &[0; 3], &b, &d2].concat());
    assert_eq!(tail, c);
    rig.assert_quiet();
}

#[test]
fn nomsg_call_chunk_with_a_data_chunk_inside_it() {
    let mut rig = Rig::new(RigConfig::default(), Recorder::default());
    // The call chunk carries 16 bytes of call with a data item removed at offset 8; the data
    // chunk (6 bytes) goes there: stream = call[..8] | data + pad(2) | call[8..].
    let call: Vec<u8> = (0u8..16).collect();
    let data = [0xaau8; 6];
    let s = rig.source.bytes_mut();
    s[..16].copy_from_slice(&call);
    s[128..134].copy_from_slice(&data);
    let reads = [
        read_seg(
            0,
            Segment {
                handle: SOURCE_RKEY,
                length: 16,
                offset: SOURCE_ADDR,
            },
        ),
        read_seg(
            8,
            Segment {
                handle: SOURCE_RKEY,
                length: 6,
                offset: SOURCE_ADDR + 128,
            },
        ),
    ];
    let msg = call_message(7, Proc::Nomsg, &reads, None, None, &[]);
    rig.round_trip(&msg);
    let (head, pages, tail, all) = rig.service.streams.pop().unwrap();
    assert_eq!(head, &call[..8]);
    assert_eq!(pages, data);
    assert_eq!(tail, &call[8..]);
    assert_eq!(all, [&call[..8], &data[..], &[0, 0], &call[8..]].concat());
    rig.assert_quiet();
}

fn generate_msg(
    xid: u32,
    proc_: u32,
    len: u32,
    seed: u32,
    write: Option<&[Segment]>,
    reply: Option<&[Segment]>,
) -> Vec<u8> {
    let inline = rpc_call(xid, TEST_PROG, TEST_VERS, proc_, &bytes(&[len, seed]));
    call_message(xid, Proc::Msg, &[], write, reply, &inline)
}

#[test]
fn generate_payload_goes_into_the_write_chunk_full_and_short() {
    let mut rig = rig();
    // Full: 64 KiB into a 64 KiB chunk of two segments.
    let w = [
        rig.target_segment(0, 32768),
        rig.target_segment(65536, 32768),
    ];
    let r = rig.round_trip(&generate_msg(8, PROC_GENERATE, 65536, 11, Some(&w), None));
    assert_eq!(r.proc_, Proc::Msg);
    assert_eq!(r.write_lengths, Some(vec![32768, 32768]));
    let (_, stat, rest) = accepted(&r.inline);
    assert_eq!(
        (stat, rest),
        (0, 65536u32.to_be_bytes().to_vec()),
        "length inline, data in the chunk"
    );
    let expected = pattern(11, 65536);
    assert_eq!(&rig.target_bytes()[..32768], &expected[..32768]);
    assert_eq!(&rig.target_bytes()[65536..98304], &expected[32768..]);
    // Short: 5,000 bytes offered 64 KiB: the write list says what was written.
    let w = [rig.target_segment(200_000, 65536)];
    let r = rig.round_trip(&generate_msg(9, PROC_GENERATE, 5000, 12, Some(&w), None));
    assert_eq!(r.write_lengths, Some(vec![5000]));
    assert_eq!(
        &rig.target_bytes()[200_000..205_000],
        &pattern(12, 5000)[..]
    );
    assert_eq!(
        rig.endpoint.connection().counters().write_chunk_bytes,
        70_536
    );
    rig.assert_quiet();
}

#[test]
fn payload_larger_than_the_write_chunk_is_err_chunk() {
    let mut rig = rig();
    let w = [rig.target_segment(0, 1000)];
    let r = rig.round_trip(&generate_msg(10, PROC_GENERATE, 4000, 1, Some(&w), None));
    assert_eq!((r.xid, r.proc_, r.error), (10, Proc::Error, Some(2)));
    assert_eq!(rig.endpoint.connection().counters().reply_too_large, 1);
    rig.assert_quiet();
}

#[test]
fn large_reply_goes_whole_through_the_reply_chunk() {
    let mut rig = rig();
    let rc = [
        rig.target_segment(0, 100_000),
        rig.target_segment(300_000, 100_000),
    ];
    let r = rig.round_trip(&generate_msg(11, PROC_BULK, 150_000, 5, None, Some(&rc)));
    assert_eq!(r.proc_, Proc::Nomsg);
    assert!(r.inline.is_empty());
    let total = 28 + 150_000; // accepted reply header, length word, data (no pad: 150000 % 4 == 0)
    assert_eq!(
        r.reply_lengths,
        Some(vec![100_000, (total - 100_000) as u32])
    );
    let mut stream = rig.target_bytes()[..100_000].to_vec();
    stream.extend_from_slice(&rig.target_bytes()[300_000..300_000 + total - 100_000]);
    let (xid, stat, rest) = accepted(&stream);
    assert_eq!((xid, stat), (11, 0));
    assert_eq!(&rest[..4], &150_000u32.to_be_bytes());
    assert_eq!(&rest[4..], &pattern(5, 150_000)[..]);
    rig.assert_quiet();
}

#[test]
fn ddp_payload_in_the_write_chunk_and_small_rest_inline_even_with_a_reply_chunk() {
    let mut rig = rig();
    let w = [rig.target_segment(0, 65536)];
    let rc = [rig.target_segment(100_000, 65536)];
    let r = rig.round_trip(&generate_msg(
        12,
        PROC_GENERATE,
        30_000,
        6,
        Some(&w),
        Some(&rc),
    ));
    assert_eq!(r.proc_, Proc::Msg);
    assert_eq!(r.write_lengths, Some(vec![30_000]));
    assert_eq!(r.reply_lengths, None);
    assert_eq!(&rig.target_bytes()[..30_000], &pattern(6, 30_000)[..]);
    rig.assert_quiet();
}

#[test]
fn echo_uses_both_chunks_with_an_odd_length() {
    let mut rig = rig();
    let data = pattern(77, 70_001);
    let inline = rpc_call(
        13,
        TEST_PROG,
        TEST_VERS,
        PROC_ECHO,
        &bytes(&[data.len() as u32]),
    );
    let seg = rig.source_segment(0, &data);
    let w = [rig.target_segment(0, 131_072)];
    let msg = call_message(13, Proc::Msg, &[read_seg(44, seg)], Some(&w), None, &inline);
    let r = rig.round_trip(&msg);
    assert_eq!(r.write_lengths, Some(vec![70_001]));
    assert_eq!(&rig.target_bytes()[..70_001], &data[..]);
    rig.assert_quiet();
}

#[test]
fn small_payload_without_chunks_is_copied_inline_with_its_pad() {
    let mut rig = rig();
    let r = rig.round_trip(&generate_msg(14, PROC_GENERATE, 7, 2, None, None));
    assert_eq!(r.proc_, Proc::Msg);
    let (_, stat, rest) = accepted(&r.inline);
    assert_eq!(stat, 0);
    assert_eq!(&rest[..4], &7u32.to_be_bytes());
    assert_eq!(&rest[4..11], &pattern(2, 7)[..]);
    assert_eq!(&rest[11..], &[0]);
    rig.assert_quiet();
}

#[test]
fn reply_that_fits_nowhere_is_err_chunk() {
    let mut rig = rig();
    let r = rig.round_trip(&generate_msg(15, PROC_BULK, 10_000, 2, None, None));
    assert_eq!((r.proc_, r.error), (Proc::Error, Some(2)));
    let rc = [rig.target_segment(0, 512)];
    let r = rig.round_trip(&generate_msg(16, PROC_BULK, 10_000, 2, None, Some(&rc)));
    assert_eq!(
        (r.proc_, r.error),
        (Proc::Error, Some(2)),
        "reply chunk too small"
    );
    assert_eq!(rig.endpoint.connection().counters().reply_too_large, 2);
    rig.assert_quiet();
}

#[test]
fn malformed_header_gets_err_chunk_and_nothing_is_held() {
    let mut rig = rig();
    let mut msg = call_message(
        17,
        Proc::Msg,
        &[],
        None,
        None,
        &rpc_call(17, NFS_PROG, 3, 0, &[]),
    );
    put_xdr_u32(&mut msg, 16, 7); // read list discriminator 7
    let r = rig.round_trip(&msg);
    assert_eq!((r.xid, r.proc_, r.error), (17, Proc::Error, Some(2)));
    put_xdr_u32(&mut msg, 4, 2); // version 2
    let r = rig.round_trip(&msg);
    assert_eq!((r.proc_, r.error, r.len), (Proc::Error, Some(1), 28));
    rig.assert_quiet();
}

#[test]
fn read_error_mid_chunk_closes_the_connection_and_leaks_nothing() {
    let mut rig = rig();
    let data = pattern(1, 40_000);
    let msg = checksum_msg(&mut rig, 18, &data, 8);
    rig.nic.fail_next(Op::Read, 10);
    rig.send(&msg).unwrap();
    rig.pump();
    assert!(rig.endpoint.connection().is_closing());
    assert!(
        rig.replies.is_empty(),
        "no reply to a call whose data never arrived"
    );
    assert!(
        rig.endpoint.pool().is_closing(),
        "the connection's own pool stops posting"
    );
    rig.assert_quiet();
    assert_eq!(
        rig.endpoint.pool().posted(),
        0,
        "every posted Receive flushed"
    );
}

#[test]
fn flush_with_reads_outstanding_returns_pages_and_receive() {
    let mut rig = rig();
    let data = pattern(1, 40_000);
    let msg = checksum_msg(&mut rig, 19, &data, 8);
    rig.nic.hold(true);
    rig.send(&msg).unwrap();
    rig.pump();
    assert!(
        rig.endpoint.connection().sq_in_flight() > 0,
        "Reads outstanding"
    );
    assert!(rig.endpoint.sinks().free_pages() < rig.endpoint.sinks().page_count());
    rig.disconnect();
    assert!(rig.endpoint.connection().is_closing());
    rig.assert_quiet();
}

#[test]
fn disconnect_with_writes_outstanding_returns_everything() {
    let mut rig = rig();
    let w = [rig.target_segment(0, 65536)];
    rig.nic.hold(true);
    rig.send(&generate_msg(20, PROC_GENERATE, 60_000, 3, Some(&w), None))
        .unwrap();
    rig.pump();
    assert!(
        rig.endpoint.connection().sq_in_flight() >= 2,
        "Write and Send outstanding"
    );
    assert!(rig.endpoint.payloads().free_pages() < rig.endpoint.payloads().page_count());
    rig.disconnect();
    rig.assert_quiet();
}

#[test]
fn drain_reclaims_calls_whose_completions_never_came() {
    let mut rig = rig();
    let w = [rig.target_segment(0, 65536)];
    rig.nic.hold(true);
    rig.send(&generate_msg(21, PROC_GENERATE, 60_000, 3, Some(&w), None))
        .unwrap();
    rig.pump();
    let report = rig.endpoint.drain();
    assert_eq!(
        (report.connection.calls, report.connection.work_requests),
        (1, 2)
    );
    rig.assert_quiet();
}

#[test]
fn pipelined_requester_never_meets_rnr_and_grants_stay_backed() {
    // Credits 64, refill batch 16: the requester sends a new call for every reply it gets.
    let config = RigConfig {
        credits: 64,
        batch: 16,
        ..RigConfig::default()
    };
    let mut rig = Rig::new(config, ExampleService::default());
    let null = |xid: u32| {
        call_message(
            xid,
            Proc::Msg,
            &[],
            None,
            None,
            &rpc_call(xid, NFS_PROG, 3, 0, &[]),
        )
    };
    rig.send(&null(0)).unwrap();
    rig.pump();
    let mut xid = 1;
    for _ in 0..300 {
        while rig.outstanding < rig.granted as usize {
            rig.send(&null(xid))
                .expect("no RNR: a Receive is posted for every call within the grant");
            xid += 1;
        }
        rig.pump();
    }
    assert_eq!(rig.nic.counters.rnr, 0);
    assert_eq!(rig.grant_violations, 0);
    assert!(rig.replies.len() > 10_000);
    assert!(rig.replies.iter().all(|r| r.credits == 64));
    rig.assert_quiet();
}

#[test]
fn credits_above_the_refill_chain_are_backed() {
    let config = RigConfig {
        credits: 200,
        batch: 16,
        ..RigConfig::default()
    };
    let mut rig = Rig::new(config, ExampleService::default());
    assert!(
        rig.endpoint.pool().posted() >= 200,
        "posted {}",
        rig.endpoint.pool().posted()
    );
    let null = |xid: u32| {
        call_message(
            xid,
            Proc::Msg,
            &[],
            None,
            None,
            &rpc_call(xid, NFS_PROG, 3, 0, &[]),
        )
    };
    let r = rig.round_trip(&null(1));
    assert_eq!(r.credits, 200);
    for x in 0..200 {
        rig.send(&null(100 + x)).unwrap();
    }
    rig.pump();
    assert_eq!(rig.replies.len(), 201);
    assert_eq!(rig.grant_violations, 0);
    assert_eq!(rig.nic.counters.rnr, 0);
}

#[test]
fn stale_foreign_and_unknown_send_completions_are_refused() {
    let mut rig = rig();
    let msg = call_message(
        22,
        Proc::Msg,
        &[],
        None,
        None,
        &rpc_call(22, NFS_PROG, 3, 0, &[]),
    );
    rig.round_trip(&msg);
    let bad = [
        WrId::new(WrKind::Send, 8, 0, 1).0, // the first call's Send: done, stale now
        WrId::new(WrKind::Send, 9, 0, 2).0, // another connection's epoch
        WrId::new(WrKind::Write, 8, 400, 1).0, // a call slot never used
        WrId::new(WrKind::Read, 8, 0, 2).0, // a Read for a call that is not reading
    ];
    for wr_id in bad {
        rig.nic
            .inject(Completion {
                wr_id,
                status: CompletionStatus::Success,
                byte_len: 0,
                qp: 0,
            })
            .unwrap();
    }
    rig.pump();
    assert_eq!(rig.endpoint.connection().counters().refused_completions, 4);
    assert!(!rig.endpoint.connection().is_closing());
    let r = rig.round_trip(&msg);
    assert_eq!(r.proc_, Proc::Msg, "still serving");
    rig.assert_quiet();
}

#[test]
fn reads_in_flight_stay_within_the_initiator_depth() {
    let config = RigConfig {
        initiator_depth: 2,
        ..RigConfig::default()
    };
    let mut rig = Rig::new(config, ExampleService::default());
    let data = pattern(8, 16 * 1000);
    let msg = checksum_msg(&mut rig, 23, &data, 16);
    let r = rig.round_trip(&msg);
    assert_eq!(accepted(&r.inline).2, oncrpc::checksum(&data).to_be_bytes());
    assert!(rig.nic.counters.max_reads_outstanding <= 2);
    assert_eq!(rig.nic.counters.reads, 16);
    rig.assert_quiet();
}

#[test]
fn a_requester_without_responder_resources_gets_err_chunk_and_no_read() {
    // Initiator depth 0: the requester advertised no responder resources, so an RDMA Read
    // from this side would be refused by its NIC (and tear the connection down).
    let config = RigConfig {
        initiator_depth: 0,
        ..RigConfig::default()
    };
    let mut rig = Rig::new(config, ExampleService::default());
    let data = pattern(3, 4096);
    let msg = checksum_msg(&mut rig, 24, &data, 1);
    let r = rig.round_trip(&msg);
    assert_eq!(
        (r.xid, r.proc_, r.error),
        (24, Proc::Error, Some(2)),
        "ERR_CHUNK"
    );
    assert_eq!(rig.nic.counters.reads, 0, "no Read issued");
    assert!(!rig.endpoint.is_closing(), "the connection goes on");
    // Calls without Read chunks are served as ever.
    let null = call_message(
        25,
        Proc::Msg,
        &[],
        None,
        None,
        &rpc_call(25, NFS_PROG, 3, 0, &[]),
    );
    assert_eq!(rig.round_trip(&null).proc_, Proc::Msg);
    rig.assert_quiet();
}

#[test]
fn message_longer_than_the_receive_closes_only_this_connection() {
    let mut rig = rig();
    let big = vec![0u8; 5000];
    let _ = rig.nic.deliver(&big);
    rig.pump();
    assert!(rig.endpoint.connection().is_closing());
    rig.assert_quiet();
}

/// A service that answers later: it keeps every call's handle and the length asked for.
#[derive(Default)]
struct Later {
    handles: Vec<(rpcrdma_core::responder::CallHandle, u32)>,
}

impl Service for Later {
    fn serve(&mut self, call: &Call<'_>, _reply: &mut ReplyWriter<'_>) -> Verdict {
        let len = call.view.word(40).unwrap_or(0);
        self.handles.push((call.handle, len));
        Verdict::Pending
    }
}

fn complete(rig: &mut Rig<Later>, handle: rpcrdma_core::responder::CallHandle, len: u32) -> bool {
    let done = rig.endpoint.complete_pending(handle, |call, w| {
        let n =
            oncrpc::emit_accepted_reply(w.buffer(), call.xid, oncrpc::AcceptStat::Success).unwrap();
        w.set_len(n);
        w.push(&len.to_be_bytes());
        let data = w.lend_payload(len as usize, n + 4, true).unwrap();
        data.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = pattern_byte(7, i));
        Verdict::Reply
    }) == Ok(true);
    done
}

/// A service that answers later and keeps each call's whole stream as it saw it in `serve`.
#[derive(Default)]
struct Forwarder {
    seen: Vec<(rpcrdma_core::responder::CallHandle, Vec<u8>)>,
}

impl Service for Forwarder {
    fn serve(&mut self, call: &Call<'_>, _reply: &mut ReplyWriter<'_>) -> Verdict {
        let mut stream = Vec::new();
        call.view
            .for_each_slice(0, call.view.len(), |part| stream.extend_from_slice(part));
        self.seen.push((call.handle, stream));
        Verdict::Pending
    }
}

fn stream_of(view: &rpcrdma_core::xdr::XdrView<'_>) -> Vec<u8> {
    let mut stream = Vec::new();
    view.for_each_slice(0, view.len(), |part| stream.extend_from_slice(part));
    stream
}

#[test]
fn a_pending_call_keeps_its_read_chunk_data_readable_until_it_is_answered() {
    let mut rig = Rig::new(RigConfig::default(), Forwarder::default());
    let data = pattern(3, 40_000);
    let inline = rpc_call(
        300,
        TEST_PROG,
        TEST_VERS,
        PROC_CHECKSUM,
        &bytes(&[data.len() as u32]),
    );
    let reads: Vec<ReadSegment> = data
        .chunks(16_000)
        .enumerate()
        .map(|(k, part)| read_seg(44, rig.source_segment(k * 16_000, part)))
        .collect();
    let msg = call_message(300, Proc::Msg, &reads, None, None, &inline);
    rig.send(&msg).unwrap();
    rig.pump();
    let (handle, served) = rig.service.seen.pop().expect("served");
    assert_eq!(&served[served.len() - data.len()..], &data[..]);
    // Many turns later the view is the same bytes, straight from the Receive and sink pages.
    for _ in 0..3 {
        rig.pump();
        let view = rig.endpoint.pending_view(handle).expect("still pending");
        assert_eq!(stream_of(&view), served, "the stream serve saw");
        assert!(!view.pages().is_empty(), "the data is in the sink pages");
    }
    let held = rig.endpoint.sinks().page_count() - rig.endpoint.sinks().free_pages();
    assert!(held > 0, "the sink pages stay taken while pending");
    // The answer sees the same view, data included; then everything is given back.
    let done = rig.endpoint.complete_pending(handle, |call, w| {
        assert_eq!(stream_of(&call.view), served);
        let n =
            oncrpc::emit_accepted_reply(w.buffer(), call.xid, oncrpc::AcceptStat::Success).unwrap();
        w.set_len(n);
        Verdict::Reply
    });
    assert_eq!(done, Ok(true));
    assert!(
        rig.endpoint.pending_view(handle).is_err(),
        "answered: stale"
    );
    rig.pump();
    assert_eq!(rig.replies.len(), 1);
    rig.assert_quiet();
}

#[test]
fn a_connection_closed_with_pending_calls_gives_their_sink_pages_back() {
    let mut rig = Rig::new(RigConfig::default(), Forwarder::default());
    for k in 0..3u32 {
        let data = pattern(k, 9000);
        let inline = rpc_call(
            400 + k,
            TEST_PROG,
            TEST_VERS,
            PROC_CHECKSUM,
            &bytes(&[data.len() as u32]),
        );
        let seg = rig.source_segment(k as usize * 9000, &data);
        let msg = call_message(
            400 + k,
            Proc::Msg,
            &[read_seg(44, seg)],
            None,
            None,
            &inline,
        );
        rig.granted = 8;
        rig.send(&msg).unwrap();
    }
    rig.pump();
    let handles: Vec<_> = rig.service.seen.iter().map(|(h, _)| *h).collect();
    assert_eq!(handles.len(), 3);
    rig.disconnect();
    for h in handles {
        assert!(rig.endpoint.pending_view(h).is_err(), "closed: stale");
    }
    assert!(rig.replies.is_empty());
    rig.assert_quiet();
}

#[test]
fn a_payload_filled_before_the_answer_is_given_to_the_reply_and_comes_back() {
    use rpcrdma_core::responder::{Connections, PayloadError};
    let mut rig = Rig::new(RigConfig::default(), Later::default());
    let w = [rig.target_segment(0, 65536)];
    let inline = rpc_call(500, TEST_PROG, TEST_VERS, PROC_GENERATE, &bytes(&[3000, 0]));
    rig.send(&call_message(500, Proc::Msg, &[], Some(&w), None, &inline))
        .unwrap();
    rig.pump();
    let (handle, len) = rig.service.handles.pop().expect("pending");
    // The service fills pages of the call's connection before it answers (a gateway reads its
    // backend's data into them).
    let epoch = handle.epoch;
    let pages = Connections::payload_pages(&mut rig.endpoint, epoch).expect("its pages");
    let run = pages.alloc(len as usize).unwrap();
    pages
        .bytes_mut(&run)
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = pattern_byte(5, i));
    let other = Connections::payload_pages(&mut rig.endpoint, epoch)
        .unwrap()
        .alloc(8)
        .unwrap();
    let mut given = Some(run);
    let mut errors = Vec::new();
    let done = rig.endpoint.complete_pending(handle, |call, w| {
        let n =
            oncrpc::emit_accepted_reply(w.buffer(), call.xid, oncrpc::AcceptStat::Success).unwrap();
        w.set_len(n);
        w.push(&len.to_be_bytes());
        w.give_payload(given.take().unwrap(), n + 4, true).unwrap();
        // A second payload is refused, and its run given back at once.
        errors.push(w.give_payload(other, n + 4, true));
        Verdict::Reply
    });
    assert_eq!(done, Ok(true));
    assert_eq!(errors, [Err(PayloadError::AlreadySet)]);
    rig.pump();
    assert_eq!(rig.replies.len(), 1);
    assert_eq!(rig.replies[0].write_lengths, Some(vec![len]));
    assert_eq!(
        &rig.target_bytes()[..len as usize],
        &pattern(5, len as usize)[..]
    );
    rig.assert_quiet();
}

#[test]
fn pending_calls_are_answered_later_in_any_order() {
    let mut rig = Rig::new(RigConfig::default(), Later::default());
    for k in 0..4u32 {
        let w = [rig.target_segment(k as usize * 65536, 65536)];
        let inline = rpc_call(
            100 + k,
            TEST_PROG,
            TEST_VERS,
            PROC_GENERATE,
            &bytes(&[1000 * (k + 1), 0]),
        );
        let msg = call_message(100 + k, Proc::Msg, &[], Some(&w), None, &inline);
        rig.granted = 8;
        rig.send(&msg).unwrap();
    }
    rig.pump();
    assert!(rig.replies.is_empty(), "nothing answered yet");
    assert_eq!(rig.endpoint.connection().counters().pending, 4);
    assert_eq!(
        rig.endpoint.pool().held(),
        4,
        "a pending call keeps its Receive (its chunk lists)"
    );
    let handles = std::mem::take(&mut rig.service.handles);
    for (handle, len) in handles.iter().rev() {
        assert!(complete(&mut rig, *handle, *len));
    }
    // A handle already answered is stale.
    assert!(!complete(&mut rig, handles[0].0, 8));
    rig.pump();
    assert_eq!(rig.replies.len(), 4);
    for r in &rig.replies {
        let k = r.xid - 100;
        assert_eq!(r.write_lengths, Some(vec![1000 * (k + 1)]));
        let at = k as usize * 65536;
        assert_eq!(&rig.target_bytes()[at..at + 1000], &pattern(7, 1000)[..]);
    }
    assert_eq!(rig.endpoint.connection().counters().pending, 0);
    rig.assert_quiet();
}

#[test]
fn pending_calls_are_released_when_the_connection_closes() {
    let mut rig = Rig::new(RigConfig::default(), Later::default());
    let msg = call_message(
        1,
        Proc::Msg,
        &[],
        None,
        None,
        &rpc_call(1, NFS_PROG, 3, 0, &[0, 0, 0, 8]),
    );
    rig.send(&msg).unwrap();
    rig.pump();
    assert_eq!(rig.endpoint.pool().held(), 1);
    rig.nic.flush(); // disconnect
    rig.pump();
    assert!(rig.endpoint.connection().is_closing());
    let (handle, len) = rig.service.handles[0];
    assert!(
        !complete(&mut rig, handle, len),
        "the call went with the connection"
    );
    rig.assert_quiet();
}

// -------------------------------------------------------------------------------------------
// Send signaling: one signaled Send per posted chain; its completion retires the replies
// before it (an RC send queue completes in order).

fn null_call(xid: u32) -> Vec<u8> {
    call_message(
        xid,
        Proc::Msg,
        &[],
        None,
        None,
        &rpc_call(xid, NFS_PROG, 3, 0, &[]),
    )
}

/// A rig with the full grant already seen by the requester.
fn warmed(signal_all: bool) -> Rig<ExampleService> {
    let config = RigConfig {
        signal_all,
        ..RigConfig::default()
    };
    let mut rig = Rig::new(config, ExampleService::default());
    rig.round_trip(&null_call(1000));
    rig
}

/// Eight NULL calls in one batch: how many of their eight Sends went unsignaled.
fn unsignaled_in_a_batch_of_eight(signal_all: bool) -> u64 {
    let mut rig = warmed(signal_all);
    for xid in 0..8 {
        rig.send(&null_call(xid)).unwrap();
    }
    rig.pump();
    assert_eq!(rig.replies.len(), 9);
    rig.assert_quiet();
    rig.endpoint.connection().counters().unsignaled_sends
}

#[test]
fn a_batch_of_replies_signals_only_its_last_send() {
    assert_eq!(
        unsignaled_in_a_batch_of_eight(false),
        7,
        "eight replies in one chain: seven unsignaled"
    );
}

#[test]
fn signal_all_signals_every_send() {
    assert_eq!(unsignaled_in_a_batch_of_eight(true), 0);
}

/// Three GENERATE calls into write chunks, in one batch, the NIC held so their work requests
/// wait in the send queue.
fn three_generates_held(rig: &mut Rig<ExampleService>) {
    rig.nic.hold(true);
    for k in 0..3u32 {
        let w = [rig.target_segment(k as usize * 65536, 65536)];
        rig.send(&generate_msg(
            50 + k,
            PROC_GENERATE,
            20_000,
            30 + k,
            Some(&w),
            None,
        ))
        .unwrap();
    }
    rig.pump();
    assert_eq!(
        rig.endpoint.connection().sq_in_flight(),
        6,
        "three Writes and three Sends posted"
    );
    assert_eq!(rig.endpoint.connection().counters().unsignaled_sends, 2);
}

#[test]
fn unsignaled_replies_keep_their_pages_until_a_later_completion() {
    let mut rig = warmed(false);
    three_generates_held(&mut rig);
    let lent = rig.endpoint.payloads().page_count() - rig.endpoint.payloads().free_pages();
    assert!(
        lent >= 3,
        "each reply's payload stays lent while the device may read it"
    );
    rig.nic.hold(false);
    rig.pump();
    assert_eq!(rig.replies.len(), 4);
    for k in 0..3usize {
        let at = k * 65536;
        assert_eq!(
            &rig.target_bytes()[at..at + 20_000],
            &pattern(30 + k as u32, 20_000)[..]
        );
    }
    rig.assert_quiet();
}

#[test]
fn flush_with_unsignaled_replies_outstanding_returns_everything() {
    let mut rig = warmed(false);
    three_generates_held(&mut rig);
    rig.disconnect();
    assert!(rig.endpoint.connection().is_closing());
    rig.assert_quiet();
}

#[test]
fn a_failed_write_retires_the_silent_replies_before_it() {
    let mut rig = warmed(false);
    // Two NULL replies (unsignaled Sends), then a GENERATE whose Write fails: the error
    // completion says the two Sends before it completed.
    rig.nic.hold(true);
    rig.send(&null_call(70)).unwrap();
    rig.send(&null_call(71)).unwrap();
    let w = [rig.target_segment(0, 65536)];
    rig.send(&generate_msg(72, PROC_GENERATE, 20_000, 9, Some(&w), None))
        .unwrap();
    rig.pump();
    assert_eq!(rig.endpoint.connection().counters().unsignaled_sends, 2);
    rig.nic.fail_next(Op::Write, 10);
    rig.nic.hold(false);
    rig.pump();
    assert_eq!(
        rig.replies.len(),
        3,
        "the two NULL replies arrived, the GENERATE's did not"
    );
    assert!(rig.endpoint.connection().is_closing());
    let c = rig.endpoint.connection().counters();
    assert_eq!(c.failed_completions, 1, "the Write failed");
    assert_eq!(c.flushed_completions, 1, "then its Send flushed");
    rig.assert_quiet();
}

#[test]
fn silent_work_requests_hold_send_queue_slots_until_reaped() {
    // 40 pipelined rounds of 8 replies: with one signaled Send per chain the NIC's send queue
    // never overflows and everything is reaped.
    let mut rig = warmed(false);
    let mut xid = 0;
    for _ in 0..40 {
        for _ in 0..8 {
            rig.send(&null_call(xid)).unwrap();
            xid += 1;
        }
        rig.pump();
        assert_eq!(
            rig.nic.sq_occupied(),
            0,
            "every silent Send reaped by its chain's last"
        );
    }
    assert_eq!(rig.replies.len(), 321);
    assert!(rig.endpoint.connection().counters().unsignaled_sends >= 40 * 7);
    rig.assert_quiet();
}
