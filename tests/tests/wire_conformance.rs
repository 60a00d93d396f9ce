//! RPC-over-RDMA Version 1 conformance: byte fixtures for every valid header form, the exact
//! bytes of the replies we emit, and one named test per malformed input in docs/design.md's list,
//! each asserting the typed error and the responder's disposition.

use rpcrdma_core::wire::{
    decode, DecodeError, DecodeLimits, Disposition, ErrorReply, ErrorReplyKind, HeaderRepr,
    ListKind, Proc, ReadSegment, Segment, MAX_READ_SEGMENTS, MAX_WRITE_CHUNKS,
};
use rpcrdma_tests::fixtures::*;

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

fn decode_words(words: &[u32]) -> Result<(Vec<u8>, usize), DecodeError> {
    let b = bytes(words);
    let m = decode(&b, b.len(), &limits())?;
    let hl = m.header_len();
    Ok((b, hl))
}

/// Decodes `words`, expects `error`, and checks its disposition and the reply it produces.
fn expect_err(words: &[u32], error: DecodeError, disposition: Disposition) {
    expect_err_with(words, error, disposition, &limits())
}

fn expect_err_with(words: &[u32], error: DecodeError, disposition: Disposition, l: &DecodeLimits) {
    let b = bytes(words);
    let got = decode(&b, b.len(), l).expect_err("malformed input decoded");
    assert_eq!(got, error);
    assert_eq!(got.disposition(), disposition, "{got}");
    let reply = ErrorReply::for_error(&b, &got, 7);
    match disposition {
        Disposition::Drop => assert_eq!(reply, None),
        Disposition::ReplyErrVers => {
            let r = reply.unwrap();
            assert_eq!(
                (r.xid, r.vers, r.kind),
                (words[0], words[1], ErrorReplyKind::Vers { low: 1, high: 1 })
            );
        }
        Disposition::ReplyErrChunk => {
            let r = reply.unwrap();
            assert_eq!(
                (r.xid, r.vers, r.kind),
                (words[0], words[1], ErrorReplyKind::Chunk)
            );
        }
    }
    assert_message_names_the_rule(&got);
}

/// What a log line must say for each error: the field or rule (words), and every value the
/// error carries (numbers, matched as whole tokens).
fn message_content(e: &DecodeError) -> (Vec<&'static str>, Vec<u64>) {
    use DecodeError as D;
    let n = |v: usize| v as u64;
    match *e {
        D::ByteLenExceedsBuffer {
            byte_len,
            buffer_len,
        } => (
            vec!["byte_len", "Receive buffer"],
            vec![n(byte_len), n(buffer_len)],
        ),
        D::TooShortForHeader { len } => (vec!["fixed header"], vec![n(len), 16]),
        D::UnsupportedVersion { vers } => (vec!["version"], vec![vers.into(), 1]),
        D::UnsupportedProc { proc_ } => (vec!["rdma_proc", "RDMA_MSG"], vec![proc_.into()]),
        D::UnexpectedProc { proc_ } => (vec!["rdma_proc", "requester"], vec![proc_.into()]),
        D::Truncated { at, len } => (vec!["truncated"], vec![n(at), n(len)]),
        D::BadDiscriminator { list, value, at } => (
            vec![list_name(list), "discriminator"],
            vec![value.into(), n(at)],
        ),
        D::TooManyReadSegments => (vec!["read segments"], vec![n(MAX_READ_SEGMENTS)]),
        D::ZeroLengthReadSegment { index } => (vec!["read segment", "length"], vec![n(index), 0]),
        D::ReadSegmentTooLong { length, max } => (
            vec!["read segment", "maximum payload"],
            vec![length.into(), max.into()],
        ),
        D::ReadLengthOverflow => (vec!["read segment lengths", "overflow"], vec![32]),
        D::ReadPayloadTooLong { total, max } => (
            vec!["read chunks", "maximum payload"],
            vec![total.into(), max.into()],
        ),
        D::MisalignedReadPosition { position } => (
            vec!["read position", "multiple of"],
            vec![position.into(), 4],
        ),
        D::ReadPositionBeyondInline {
            position,
            inline_len,
        } => (
            vec!["read position", "inline"],
            vec![position.into(), n(inline_len)],
        ),
        D::ReadPositionsOutOfOrder { previous, position } => (
            vec!["read position", "follows"],
            vec![position.into(), previous.into()],
        ),
        D::OverlappingReadChunks { previous, position } => (
            vec!["Read chunk", "overlaps"],
            vec![position.into(), previous.into()],
        ),
        D::NomsgWithoutCallChunk => (vec!["RDMA_NOMSG", "position-zero Read chunk"], vec![]),
        D::EmptyChunk { list } => (vec![list_name(list), "segment count"], vec![0]),
        D::TooManySegments { list, count, max } => (
            vec![list_name(list), "segment count"],
            vec![count.into(), n(max)],
        ),
        D::TooManyWriteChunks => (vec!["write chunks"], vec![n(MAX_WRITE_CHUNKS)]),
        _ => panic!("a DecodeError this test does not know: {e:?}"),
    }
}

fn list_name(list: ListKind) -> &'static str {
    match list {
        ListKind::Read => "Read list",
        ListKind::Write => "Write",
        ListKind::Reply => "Reply",
    }
}

/// The `Display` of `e` names its rule and carries its values, so a log line says what broke.
fn assert_message_names_the_rule(e: &DecodeError) {
    let message = e.to_string();
    let tokens: Vec<&str> = message
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .collect();
    let (words, numbers) = message_content(e);
    for word in words {
        assert!(
            message.contains(word),
            "{e:?}: {message:?} does not say {word:?}"
        );
    }
    for number in numbers {
        let number = number.to_string();
        assert!(
            tokens.contains(&number.as_str()),
            "{e:?}: {message:?} does not carry {number}"
        );
    }
}

/// Every error's message, with values no fixture produces, names its rule and its values.
#[test]
fn test_every_error_message_names_its_rule() {
    use DecodeError as D;
    for e in [
        D::ByteLenExceedsBuffer {
            byte_len: 70000,
            buffer_len: 4096,
        },
        D::TooShortForHeader { len: 13 },
        D::UnsupportedVersion { vers: 77 },
        D::UnsupportedProc { proc_: 9 },
        D::UnexpectedProc { proc_: 3 },
        D::Truncated { at: 44, len: 47 },
        D::BadDiscriminator {
            list: ListKind::Reply,
            value: 5,
            at: 24,
        },
        D::TooManyReadSegments,
        D::ZeroLengthReadSegment { index: 3 },
        D::ReadSegmentTooLong {
            length: 2_000_000,
            max: 1_048_576,
        },
        D::ReadLengthOverflow,
        D::ReadPayloadTooLong {
            total: 1_500_000,
            max: 1_048_576,
        },
        D::MisalignedReadPosition { position: 42 },
        D::ReadPositionBeyondInline {
            position: 400,
            inline_len: 120,
        },
        D::ReadPositionsOutOfOrder {
            previous: 80,
            position: 40,
        },
        D::OverlappingReadChunks {
            previous: 40,
            position: 44,
        },
        D::NomsgWithoutCallChunk,
        D::EmptyChunk {
            list: ListKind::Write,
        },
        D::TooManySegments {
            list: ListKind::Reply,
            count: 17,
            max: 16,
        },
        D::TooManyWriteChunks,
    ] {
        assert_message_names_the_rule(&e);
    }
}

fn with_header(proc_: u32, lists: &[u32], rpc: &[u32]) -> Vec<u32> {
    let mut w = vec![XID, 1, 32, proc_];
    w.extend_from_slice(lists);
    w.extend_from_slice(rpc);
    w
}

// ---------------------------------------------------------------------------------------------
// Valid forms

#[test]
fn test_parse_msg_empty_lists() {
    let b = bytes(&MSG_EMPTY_LISTS);
    let m = decode(&b, b.len(), &limits()).unwrap();
    assert_eq!(m.xid(), XID);
    assert_eq!(m.credits(), 32);
    assert_eq!(m.proc_(), Proc::Msg);
    assert_eq!(m.header_len(), 28);
    assert!(m.lists_empty());
    assert_eq!(m.inline_range(), 28..68);
    assert_eq!(&b[m.inline_range()], &bytes(&RPC_NULL_CALL)[..]);
    assert!(!m.is_backchannel_reply());
}

#[test]
fn test_parse_msg_read_chunk() {
    let b = bytes(&MSG_READ_CHUNK);
    let m = decode(&b, b.len(), &limits()).unwrap();
    assert_eq!(m.header_len(), 52);
    assert_eq!(m.inline_range(), 52..92);
    let reads: Vec<ReadSegment> = m.read_list().iter().collect();
    assert_eq!(
        reads,
        [ReadSegment {
            position: 40,
            segment: Segment {
                handle: 0x1122_3344,
                length: 8192,
                offset: 0x1_0000_2000
            }
        }]
    );
    let chunks: Vec<_> = m.read_list().chunks().collect();
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        (
            chunks[0].position,
            chunks[0].inline_offset,
            chunks[0].length
        ),
        (40, 40, 8192)
    );
    assert!(m.read_list().call_chunk().is_none());
    assert!(m.write_list().is_empty() && m.reply_chunk().is_none());
}

#[test]
fn test_parse_nomsg_call_chunk() {
    let b = bytes(&NOMSG_CALL_CHUNK);
    let m = decode(&b, b.len(), &limits()).unwrap();
    assert_eq!(m.proc_(), Proc::Nomsg);
    assert_eq!(m.header_len(), 52);
    assert!(m.inline_range().is_empty());
    let call = m.read_list().call_chunk().expect("call chunk");
    assert_eq!(
        (call.position, call.length, call.segment_count()),
        (0, 2048, 1)
    );
    let seg = call.segments().next().unwrap();
    assert_eq!(
        seg,
        Segment {
            handle: 0xaabb_ccdd,
            length: 2048,
            offset: 0x8000
        }
    );
}

#[test]
fn test_parse_msg_write_and_reply() {
    let b = bytes(&MSG_WRITE_AND_REPLY);
    let m = decode(&b, b.len(), &limits()).unwrap();
    assert_eq!(m.header_len(), 88);
    assert_eq!(m.inline_range(), 88..128);
    let chunks: Vec<Vec<Segment>> = m.write_list().iter().map(|c| c.iter().collect()).collect();
    assert_eq!(
        chunks,
        [vec![
            Segment {
                handle: 0xa01,
                length: 4096,
                offset: 0x1_0000
            },
            Segment {
                handle: 0xa02,
                length: 4096,
                offset: 0x1_1000
            },
        ]]
    );
    let reply: Vec<Segment> = m.reply_chunk().unwrap().iter().collect();
    assert_eq!(
        reply,
        [Segment {
            handle: 0xb01,
            length: 1024,
            offset: 0xffff_ffff_ffff_f000
        }]
    );
    assert_eq!(m.reply_chunk().unwrap().total_len(), 1024);
}

#[test]
fn test_backchannel_reply_detected() {
    let b = bytes(&MSG_BACKCHANNEL_REPLY);
    let m = decode(&b, b.len(), &limits()).unwrap();
    assert!(m.is_backchannel_reply());
    // A call is not a backchannel reply; neither is a reply with chunk lists (RFC 8167 sends
    // backchannel replies inline only) nor a message too short to hold msg_type.
    for words in [
        &MSG_EMPTY_LISTS[..],
        &MSG_WRITE_AND_REPLY[..],
        &MSG_EMPTY_LISTS[..8],
    ] {
        let b = bytes(words);
        let m = decode(&b, b.len(), &limits()).unwrap();
        assert!(!m.is_backchannel_reply());
    }
    let mut w = MSG_WRITE_AND_REPLY.to_vec();
    w[25] = 1; // msg_type REPLY, but lists are not empty
    let b = bytes(&w);
    assert!(!decode(&b, b.len(), &limits())
        .unwrap()
        .is_backchannel_reply());
}

#[test]
fn test_emit_reply_header_empty_lists() {
    let mut out = [0u8; 64];
    let repr = HeaderRepr::reply(XID, 32);
    assert_eq!(repr.buffer_len(), 28);
    assert_eq!(repr.emit(&mut out), Ok(28));
    assert_eq!(&out[..28], &bytes(&MSG_EMPTY_LISTS)[..28]);
}

#[test]
fn test_emit_reply_header_write_and_reply() {
    let repr = HeaderRepr::reply(XID, 32)
        .with_write_chunk(&[
            Segment {
                handle: 0xa01,
                length: 4096,
                offset: 0x1_0000,
            },
            Segment {
                handle: 0xa02,
                length: 4096,
                offset: 0x1_1000,
            },
        ])
        .unwrap()
        .with_reply_chunk(&[Segment {
            handle: 0xb01,
            length: 1024,
            offset: 0xffff_ffff_ffff_f000,
        }])
        .unwrap();
    let mut out = [0u8; 88];
    assert_eq!(repr.emit(&mut out), Ok(88));
    assert_eq!(&out[..], &bytes(&MSG_WRITE_AND_REPLY)[..88]);
    assert_eq!(
        repr.emit(&mut [0u8; 87]),
        Err(rpcrdma_core::wire::EmitError::BufferTooSmall {
            needed: 88,
            available: 87
        })
    );
}

#[test]
fn test_emit_builder_limits() {
    use rpcrdma_core::wire::EmitError;
    let seg = Segment::default();
    assert_eq!(
        HeaderRepr::reply(1, 1).with_write_chunk(&[]),
        Err(EmitError::EmptyChunk {
            list: ListKind::Write
        })
    );
    assert_eq!(
        HeaderRepr::reply(1, 1).with_reply_chunk(&[seg; 17]),
        Err(EmitError::CapacityExceeded {
            list: ListKind::Reply
        })
    );
    let one = HeaderRepr::reply(1, 1).with_write_chunk(&[seg]).unwrap();
    assert_eq!(
        one.with_write_chunk(&[seg]),
        Err(EmitError::CapacityExceeded {
            list: ListKind::Write
        })
    );
}

#[test]
fn test_repr_parse_emit_round_trip_fixtures() {
    for (name, words) in VALID_CALLS {
        let b = bytes(words);
        let m = decode(&b, b.len(), &limits()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let repr = HeaderRepr::parse(&m);
        let mut out = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut out), Ok(m.header_len()), "{name}");
        assert_eq!(&out[..], &b[..m.header_len()], "{name}");
    }
}

#[test]
fn test_emit_err_vers_bytes() {
    let r = ErrorReply {
        xid: XID,
        vers: 1,
        credits: 32,
        kind: ErrorReplyKind::Vers { low: 1, high: 1 },
    };
    let mut out = [0xffu8; 40];
    assert_eq!(r.emit(&mut out), Some(28));
    assert_eq!(out[..28], ERR_VERS_BYTES);
    assert_eq!(r.emit(&mut [0u8; 27]), None);
}

#[test]
fn test_emit_err_chunk_bytes() {
    let r = ErrorReply {
        xid: XID,
        vers: 1,
        credits: 32,
        kind: ErrorReplyKind::Chunk,
    };
    let mut out = [0xffu8; 40];
    assert_eq!(r.emit(&mut out), Some(20));
    assert_eq!(out[..20], ERR_CHUNK_BYTES);
    assert_eq!(r.emit(&mut [0u8; 19]), None);
}

#[test]
fn test_err_vers_reply_echoes_xid_and_vers() {
    let b = bytes(&[XID, 2, 32, 0, 0, 0, 0]);
    let err = decode(&b, b.len(), &limits()).unwrap_err();
    let r = ErrorReply::for_error(&b, &err, 32).unwrap();
    let mut out = [0u8; 28];
    r.emit(&mut out).unwrap();
    let mut expected = ERR_VERS_BYTES;
    expected[7] = 2; // the request's vers word, echoed
    assert_eq!(out, expected);
}

#[test]
fn test_error_reply_uses_only_bytes_that_arrived() {
    // A persistent Receive buffer still holding a previous, longer message: the new one is
    // 12 bytes (too short for a header). Its reply must not be built from the stale bytes.
    let mut buf = bytes(&MSG_EMPTY_LISTS);
    buf[..12].copy_from_slice(&bytes(&[0xdead_beef, 1, 5]));
    let err = decode(&buf, 12, &limits()).unwrap_err();
    assert_eq!(err, DecodeError::TooShortForHeader { len: 12 });
    assert_eq!(ErrorReply::for_error(&buf[..12], &err, 32), None);
    // A message shorter than an xid gets no reply either.
    let err = decode(&buf, 3, &limits()).unwrap_err();
    assert_eq!(ErrorReply::for_error(&buf[..3], &err, 32), None);
}

// ---------------------------------------------------------------------------------------------
// Bad input (docs/design.md's list), each with its typed error and disposition

#[test]
fn test_truncated_at_every_byte_boundary() {
    for (name, words) in VALID_CALLS {
        let full = bytes(words);
        let header_len = decode(&full, full.len(), &limits()).unwrap().header_len();
        // Decode prefixes of the *full* buffer: the bytes past byte_len are stale, as in a
        // persistent Receive buffer, and must not be read.
        for len in 0..full.len() {
            let r = decode(&full, len, &limits());
            if len < 16 {
                assert_eq!(
                    r.unwrap_err(),
                    DecodeError::TooShortForHeader { len },
                    "{name} at {len}"
                );
                assert_eq!(
                    DecodeError::TooShortForHeader { len }.disposition(),
                    Disposition::Drop
                );
            } else if len < header_len {
                let e = r.expect_err(&format!("{name} truncated at {len} decoded"));
                assert!(
                    matches!(e, DecodeError::Truncated { .. }),
                    "{name} at {len}: {e:?}"
                );
                assert_eq!(e.disposition(), Disposition::ReplyErrChunk);
                if let DecodeError::Truncated { at, len: l } = e {
                    assert_eq!(l, len);
                    // `at` is where the word or item that did not fit starts.
                    assert!(at <= len && at >= 16, "{name}: Truncated.at {at} for {len}");
                }
            } else {
                // Only the inline RPC message is cut: the header is still whole. A Read chunk
                // whose position now lies past the inline body must be caught.
                match r {
                    Ok(m) => {
                        let end = if m.proc_() == Proc::Nomsg {
                            header_len
                        } else {
                            len
                        };
                        assert_eq!(m.inline_range(), header_len..end, "{name} at {len}");
                    }
                    Err(e) => assert_eq!(
                        e,
                        DecodeError::ReadPositionBeyondInline {
                            position: 40,
                            inline_len: len - header_len
                        },
                        "{name} at {len}"
                    ),
                }
            }
        }
    }
}

#[test]
fn test_byte_len_larger_than_buffer() {
    let b = bytes(&MSG_EMPTY_LISTS);
    let e = decode(&b, b.len() + 1, &limits()).unwrap_err();
    assert_eq!(
        e,
        DecodeError::ByteLenExceedsBuffer {
            byte_len: 69,
            buffer_len: 68
        }
    );
    assert_eq!(e.disposition(), Disposition::Drop);
    assert_eq!(ErrorReply::for_error(&b, &e, 1), None);
}

#[test]
fn test_version_0() {
    expect_err(
        &[XID, 0, 32, 0, 0, 0, 0],
        DecodeError::UnsupportedVersion { vers: 0 },
        Disposition::ReplyErrVers,
    );
}

#[test]
fn test_version_2() {
    expect_err(
        &[XID, 2, 32, 0, 0, 0, 0],
        DecodeError::UnsupportedVersion { vers: 2 },
        Disposition::ReplyErrVers,
    );
}

#[test]
fn test_version_all_ones() {
    // Only the fixed header is needed to answer ERR_VERS.
    expect_err(
        &[XID, 0xffff_ffff, 32, 0],
        DecodeError::UnsupportedVersion { vers: 0xffff_ffff },
        Disposition::ReplyErrVers,
    );
}

#[test]
fn test_proc_msgp() {
    expect_err(
        &with_header(2, &[0, 0, 0], &[]),
        DecodeError::UnsupportedProc { proc_: 2 },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_proc_done_dropped() {
    expect_err(
        &with_header(3, &[], &[]),
        DecodeError::UnexpectedProc { proc_: 3 },
        Disposition::Drop,
    );
}

#[test]
fn test_proc_error_dropped() {
    expect_err(
        &with_header(4, &[2], &[]),
        DecodeError::UnexpectedProc { proc_: 4 },
        Disposition::Drop,
    );
}

#[test]
fn test_proc_unknown() {
    for p in [5, 0x100, 0xffff_ffff] {
        expect_err(
            &with_header(p, &[0, 0, 0], &[]),
            DecodeError::UnsupportedProc { proc_: p },
            Disposition::ReplyErrChunk,
        );
    }
}

#[test]
fn test_read_list_bad_discriminator() {
    for v in [2, 0xffff_ffff] {
        expect_err(
            &with_header(0, &[v, 0, 0], &[]),
            DecodeError::BadDiscriminator {
                list: ListKind::Read,
                value: v,
                at: 16,
            },
            Disposition::ReplyErrChunk,
        );
    }
}

#[test]
fn test_write_list_bad_discriminator() {
    expect_err(
        &with_header(0, &[0, 2, 0], &[]),
        DecodeError::BadDiscriminator {
            list: ListKind::Write,
            value: 2,
            at: 20,
        },
        Disposition::ReplyErrChunk,
    );
    // After one valid chunk, the continuation discriminator is checked too.
    expect_err(
        &with_header(0, &[0, 1, 1, 1, 100, 0, 0, 7, 0], &[]),
        DecodeError::BadDiscriminator {
            list: ListKind::Write,
            value: 7,
            at: 44,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_reply_chunk_bad_discriminator() {
    expect_err(
        &with_header(0, &[0, 0, 0xffff_ffff], &[]),
        DecodeError::BadDiscriminator {
            list: ListKind::Reply,
            value: 0xffff_ffff,
            at: 24,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_read_segment_length_zero() {
    expect_err(
        &with_header(0, &[1, 0x28, 1, 0, 0, 0, 0, 0, 0], &RPC_NULL_CALL),
        DecodeError::ZeroLengthReadSegment { index: 0 },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_read_segment_above_max_payload() {
    let max = DecodeLimits::default().max_read_payload;
    expect_err(
        &with_header(0, &[1, 40, 1, max + 1, 0, 0, 0, 0, 0], &RPC_NULL_CALL),
        DecodeError::ReadSegmentTooLong {
            length: max + 1,
            max,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_read_lengths_sum_above_max_payload() {
    let max = DecodeLimits::default().max_read_payload;
    expect_err(
        &with_header(
            0,
            &[1, 40, 1, max, 0, 0, 1, 40, 2, 1, 0, 0, 0, 0, 0],
            &RPC_NULL_CALL,
        ),
        DecodeError::ReadPayloadTooLong {
            total: max + 1,
            max,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_read_lengths_sum_overflows_u32() {
    let unlimited = DecodeLimits {
        max_read_payload: u32::MAX,
    };
    expect_err_with(
        &with_header(
            0,
            &[
                1,
                40,
                1,
                0x8000_0000,
                0,
                0,
                1,
                40,
                2,
                0x8000_0000,
                0,
                0,
                0,
                0,
                0,
            ],
            &RPC_NULL_CALL,
        ),
        DecodeError::ReadLengthOverflow,
        Disposition::ReplyErrChunk,
        &unlimited,
    );
}

#[test]
fn test_read_position_unaligned() {
    expect_err(
        &with_header(0, &[1, 38, 1, 8, 0, 0, 0, 0, 0], &RPC_NULL_CALL),
        DecodeError::MisalignedReadPosition { position: 38 },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_read_position_beyond_inline_body() {
    expect_err(
        &with_header(0, &[1, 44, 1, 8, 0, 0, 0, 0, 0], &RPC_NULL_CALL),
        DecodeError::ReadPositionBeyondInline {
            position: 44,
            inline_len: 40,
        },
        Disposition::ReplyErrChunk,
    );
    // The second chunk's position counts the first chunk's (padded) data: 8 + 12 + 24 = 44
    // puts it at inline offset 32 (fine), 8 + 12 + 36 = 56 at 44 (beyond 40).
    assert!(decode_words(&with_header(
        0,
        &[1, 8, 1, 10, 0, 0, 1, 44, 2, 4, 0, 0, 0, 0, 0],
        &RPC_NULL_CALL
    ))
    .is_ok());
    expect_err(
        &with_header(
            0,
            &[1, 8, 1, 10, 0, 0, 1, 56, 2, 4, 0, 0, 0, 0, 0],
            &RPC_NULL_CALL,
        ),
        DecodeError::ReadPositionBeyondInline {
            position: 56,
            inline_len: 40,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_read_chunks_overlapping() {
    // Chunk at 8 carries 16 bytes, so the next may start at 24 at the earliest.
    expect_err(
        &with_header(
            0,
            &[1, 8, 1, 16, 0, 0, 1, 16, 2, 4, 0, 0, 0, 0, 0],
            &RPC_NULL_CALL,
        ),
        DecodeError::OverlappingReadChunks {
            previous: 8,
            position: 16,
        },
        Disposition::ReplyErrChunk,
    );
    // An unpadded length still occupies whole XDR words: 13 bytes end at 8 + 16.
    expect_err(
        &with_header(
            0,
            &[1, 8, 1, 13, 0, 0, 1, 20, 2, 4, 0, 0, 0, 0, 0],
            &RPC_NULL_CALL,
        ),
        DecodeError::OverlappingReadChunks {
            previous: 8,
            position: 20,
        },
        Disposition::ReplyErrChunk,
    );
    assert!(decode_words(&with_header(
        0,
        &[1, 8, 1, 13, 0, 0, 1, 24, 2, 4, 0, 0, 0, 0, 0],
        &RPC_NULL_CALL
    ))
    .is_ok());
}

#[test]
fn test_read_positions_out_of_order() {
    expect_err(
        &with_header(
            0,
            &[1, 32, 1, 4, 0, 0, 1, 8, 2, 4, 0, 0, 0, 0, 0],
            &RPC_NULL_CALL,
        ),
        DecodeError::ReadPositionsOutOfOrder {
            previous: 32,
            position: 8,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_read_segments_same_position_form_one_chunk() {
    let (b, _) = decode_words(&with_header(
        0,
        &[1, 40, 1, 4096, 0, 0, 1, 40, 2, 100, 0, 0, 0, 0, 0],
        &RPC_NULL_CALL,
    ))
    .unwrap();
    let m = decode(&b, b.len(), &limits()).unwrap();
    let chunks: Vec<_> = m.read_list().chunks().collect();
    assert_eq!(chunks.len(), 1);
    assert_eq!((chunks[0].segment_count(), chunks[0].length), (2, 4196));
}

#[test]
fn test_too_many_read_segments() {
    let mut lists = Vec::new();
    for i in 0..=MAX_READ_SEGMENTS as u32 {
        lists.extend_from_slice(&[1, 40, i, 4, 0, 0]);
    }
    lists.extend_from_slice(&[0, 0, 0]);
    expect_err(
        &with_header(0, &lists, &RPC_NULL_CALL),
        DecodeError::TooManyReadSegments,
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_write_chunk_segment_count_zero() {
    expect_err(
        &with_header(0, &[0, 1, 0, 0, 0], &RPC_NULL_CALL),
        DecodeError::EmptyChunk {
            list: ListKind::Write,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_reply_chunk_segment_count_zero() {
    expect_err(
        &with_header(0, &[0, 0, 1, 0], &RPC_NULL_CALL),
        DecodeError::EmptyChunk {
            list: ListKind::Reply,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_write_chunk_count_times_16_overflows_u32() {
    // CVE-2024-53151's shape: 0x1000_0001 × 16 wraps to 16 in 32 bits, so a wrapping
    // bounds check would pass with one segment present.
    let count = 0x1000_0001u32;
    assert_eq!(count.wrapping_mul(16), 16);
    expect_err(
        &with_header(0, &[0, 1, count, 1, 100, 0, 0, 0, 0], &RPC_NULL_CALL),
        DecodeError::TooManySegments {
            list: ListKind::Write,
            count,
            max: 16,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_reply_chunk_count_times_16_overflows_u32() {
    let count = 0x1000_0001u32;
    expect_err(
        &with_header(0, &[0, 0, 1, count, 1, 100, 0, 0], &RPC_NULL_CALL),
        DecodeError::TooManySegments {
            list: ListKind::Reply,
            count,
            max: 16,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_write_chunk_count_above_capacity() {
    expect_err(
        &with_header(0, &[0, 1, 17], &[]),
        DecodeError::TooManySegments {
            list: ListKind::Write,
            count: 17,
            max: 16,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_write_chunk_count_runs_past_byte_len() {
    // Count 2, one segment present, then the message ends.
    expect_err(
        &with_header(0, &[0, 1, 2, 1, 100, 0, 0], &[]),
        DecodeError::Truncated { at: 28, len: 44 },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_reply_chunk_count_runs_past_byte_len() {
    expect_err(
        &with_header(0, &[0, 0, 1, 3, 1, 100, 0, 0, 2, 100, 0, 0], &[]),
        DecodeError::Truncated { at: 32, len: 64 },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_two_write_chunks_when_one_supported() {
    expect_err(
        &with_header(
            0,
            &[0, 1, 1, 1, 100, 0, 0, 1, 1, 2, 100, 0, 0, 0, 0],
            &RPC_NULL_CALL,
        ),
        DecodeError::TooManyWriteChunks,
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_nomsg_without_call_chunk() {
    expect_err(
        &with_header(1, &[0, 0, 0], &[]),
        DecodeError::NomsgWithoutCallChunk,
        Disposition::ReplyErrChunk,
    );
    // A reply chunk alone does not make a call.
    expect_err(
        &with_header(1, &[0, 0, 1, 1, 9, 4096, 0, 0], &[]),
        DecodeError::NomsgWithoutCallChunk,
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_msg_with_call_chunk_is_accepted() {
    // RFC 8166 lets an RDMA_MSG move its call into a position-zero chunk (Linux accepts it).
    let b = bytes(&with_header(
        0,
        &[1, 0, 1, 100, 0, 0, 0, 0, 0],
        &RPC_NULL_CALL,
    ));
    let m = decode(&b, b.len(), &DecodeLimits::default()).expect("accepted");
    assert_eq!(m.read_list().call_chunk().map(|c| c.length), Some(100));
}

#[test]
fn test_data_chunk_inside_the_call_chunk() {
    // NOMSG: call chunk of 64 bytes, a data chunk at position 40 (inside it): valid.
    let ok = with_header(1, &[1, 0, 1, 64, 0, 0, 1, 40, 2, 8, 0, 0, 0, 0, 0], &[]);
    let b = bytes(&ok);
    let m = decode(&b, b.len(), &DecodeLimits::default()).expect("valid");
    let chunks: Vec<_> = m.read_list().chunks().collect();
    assert_eq!((chunks[1].position, chunks[1].inline_offset), (40, 40));
    // Position 68 lies past the 64-byte call chunk: the base is the call chunk, not the
    // (empty) inline body.
    expect_err(
        &with_header(1, &[1, 0, 1, 64, 0, 0, 1, 68, 2, 8, 0, 0, 0, 0, 0], &[]),
        DecodeError::ReadPositionBeyondInline {
            position: 68,
            inline_len: 64,
        },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_read_list_ends_exactly_at_byte_len() {
    // The read list's terminating 0 is the last word: no room for the write-list discriminator.
    expect_err(
        &[XID, 1, 32, 0, 0],
        DecodeError::Truncated { at: 20, len: 20 },
        Disposition::ReplyErrChunk,
    );
    // A read item that ends exactly at byte_len, without its list terminator.
    expect_err(
        &[XID, 1, 32, 0, 1, 40, 1, 8, 0, 0],
        DecodeError::Truncated { at: 40, len: 40 },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_write_list_ends_exactly_at_byte_len() {
    expect_err(
        &[XID, 1, 32, 0, 0, 0],
        DecodeError::Truncated { at: 24, len: 24 },
        Disposition::ReplyErrChunk,
    );
    // A write chunk whose segments end exactly at byte_len: no list terminator.
    expect_err(
        &[XID, 1, 32, 0, 0, 1, 1, 1, 100, 0, 0],
        DecodeError::Truncated { at: 44, len: 44 },
        Disposition::ReplyErrChunk,
    );
}

#[test]
fn test_all_lists_end_exactly_at_byte_len() {
    // 28 bytes: a complete header and an empty RPC message. The header is valid; the empty
    // call is the upper layer's to reject (GARBAGE_ARGS), not the transport's.
    let (b, hl) = decode_words(&[XID, 1, 32, 0, 0, 0, 0]).unwrap();
    assert_eq!((b.len(), hl), (28, 28));
    // A reply chunk ending exactly at byte_len is complete too.
    assert!(decode_words(&[XID, 1, 32, 0, 0, 0, 1, 1, 9, 100, 0, 0]).is_ok());
}

/// One function maps errors to responder actions; every variant is covered here.
#[test]
fn test_disposition_mapping() {
    use DecodeError::*;
    let cases = [
        (
            ByteLenExceedsBuffer {
                byte_len: 2,
                buffer_len: 1,
            },
            Disposition::Drop,
        ),
        (TooShortForHeader { len: 15 }, Disposition::Drop),
        (UnexpectedProc { proc_: 3 }, Disposition::Drop),
        (UnexpectedProc { proc_: 4 }, Disposition::Drop),
        (UnsupportedVersion { vers: 2 }, Disposition::ReplyErrVers),
        (UnsupportedProc { proc_: 2 }, Disposition::ReplyErrChunk),
        (Truncated { at: 16, len: 16 }, Disposition::ReplyErrChunk),
        (
            BadDiscriminator {
                list: ListKind::Read,
                value: 2,
                at: 16,
            },
            Disposition::ReplyErrChunk,
        ),
        (TooManyReadSegments, Disposition::ReplyErrChunk),
        (
            ZeroLengthReadSegment { index: 0 },
            Disposition::ReplyErrChunk,
        ),
        (
            ReadSegmentTooLong { length: 2, max: 1 },
            Disposition::ReplyErrChunk,
        ),
        (ReadLengthOverflow, Disposition::ReplyErrChunk),
        (
            ReadPayloadTooLong { total: 2, max: 1 },
            Disposition::ReplyErrChunk,
        ),
        (
            MisalignedReadPosition { position: 1 },
            Disposition::ReplyErrChunk,
        ),
        (
            ReadPositionBeyondInline {
                position: 8,
                inline_len: 4,
            },
            Disposition::ReplyErrChunk,
        ),
        (
            ReadPositionsOutOfOrder {
                previous: 8,
                position: 4,
            },
            Disposition::ReplyErrChunk,
        ),
        (
            OverlappingReadChunks {
                previous: 8,
                position: 12,
            },
            Disposition::ReplyErrChunk,
        ),
        (NomsgWithoutCallChunk, Disposition::ReplyErrChunk),
        (
            EmptyChunk {
                list: ListKind::Write,
            },
            Disposition::ReplyErrChunk,
        ),
        (
            TooManySegments {
                list: ListKind::Reply,
                count: 17,
                max: 16,
            },
            Disposition::ReplyErrChunk,
        ),
        (TooManyWriteChunks, Disposition::ReplyErrChunk),
    ];
    for (e, d) in cases {
        assert_eq!(e.disposition(), d, "{e:?}");
    }
}
