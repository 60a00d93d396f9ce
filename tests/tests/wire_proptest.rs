//! Property tests: any valid header emitted then decoded gives the same representation and the
//! same length; decode never panics on arbitrary bytes and never reads past `byte_len`; the
//! RDMA_ERROR a rejected message gets follows the error-reply rule of docs/design.md, checked
//! against the bytes that arrived.

use proptest::prelude::*;
use rpcrdma_core::wire::{
    decode, put_xdr_u32, xdr_u32, DecodeLimits, ErrorReply, HeaderRepr, Proc, ReadSegment, Segment,
    MAX_READ_SEGMENTS, MAX_REPLY_SEGMENTS, MAX_WRITE_SEGMENTS,
};
use rpcrdma_tests::fixtures::bytes;

fn segment() -> impl Strategy<Value = Segment> {
    (any::<u32>(), 1u32..=4096, any::<u64>()).prop_map(|(handle, length, offset)| Segment {
        handle,
        length,
        offset,
    })
}

fn segments(max: usize) -> impl Strategy<Value = Vec<Segment>> {
    prop::collection::vec(segment(), 1..=max)
}

/// A valid header plus its inline RPC message length.
fn valid_message() -> impl Strategy<Value = (HeaderRepr, usize)> {
    (
        any::<bool>(),                                            // NOMSG?
        0usize..=64,                                              // inline words (MSG)
        prop::collection::vec((0usize..=64, segments(3)), 0..=5), // Read chunks: inline offset, segs
        prop::option::of(segments(MAX_WRITE_SEGMENTS)),
        prop::option::of(segments(MAX_REPLY_SEGMENTS)),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(nomsg, inline_words, mut chunks, write, reply, xid, credits)| {
                let inline_len = if nomsg { 0 } else { inline_words * 4 };
                let mut repr = HeaderRepr::reply(xid, credits);
                repr.proc_ = if nomsg { Proc::Nomsg } else { Proc::Msg };
                // MSG: data chunks at sorted offsets within the inline body (never position 0).
                // NOMSG: the first chunk is the call chunk (position 0); the others are data
                // chunks at offsets within the call chunk's data.
                if nomsg && chunks.is_empty() {
                    chunks.push((
                        0,
                        vec![Segment {
                            handle: 1,
                            length: 512,
                            offset: 0,
                        }],
                    ));
                }
                let mut base_len = inline_len as u64;
                if nomsg {
                    let (_, call) = chunks.remove(0);
                    base_len = call.iter().map(|s| s.length as u64).sum();
                    for segment in call {
                        repr.read_list
                            .push(ReadSegment {
                                position: 0,
                                segment,
                            })
                            .unwrap();
                    }
                }
                for c in chunks.iter_mut() {
                    c.0 = (c.0 * 4).clamp(4, (base_len as usize & !3).max(4));
                }
                chunks.sort_by_key(|c| c.0);
                let mut data_before = 0u64;
                for (offset, segs) in chunks {
                    if offset as u64 > base_len {
                        continue; // no room for a data chunk in an empty (or tiny) base
                    }
                    if repr.read_list.len() + segs.len() > MAX_READ_SEGMENTS {
                        break;
                    }
                    let position = (offset as u64 + data_before) as u32;
                    let len: u64 = segs.iter().map(|s| s.length as u64).sum();
                    for segment in segs {
                        repr.read_list
                            .push(ReadSegment { position, segment })
                            .unwrap();
                    }
                    data_before += (len + 3) & !3;
                }
                if let Some(w) = write {
                    repr = repr.with_write_chunk(&w).unwrap();
                }
                if let Some(r) = reply {
                    repr = repr.with_reply_chunk(&r).unwrap();
                }
                (repr, inline_len)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn emit_then_decode_round_trips((repr, inline_len) in valid_message(), stale in any::<u8>()) {
        let header_len = repr.buffer_len();
        // A persistent buffer: bigger than the message, stale bytes after it.
        let mut buf = vec![stale; header_len + inline_len + 64];
        prop_assert_eq!(repr.emit(&mut buf), Ok(header_len));
        for b in &mut buf[header_len..header_len + inline_len] {
            *b = 0x5a;
        }
        let byte_len = header_len + inline_len;
        let m = decode(&buf, byte_len, &DecodeLimits::default())
            .map_err(|e| TestCaseError::fail(format!("{e}: {repr:?}")))?;
        prop_assert_eq!(m.header_len(), header_len);
        prop_assert_eq!(m.inline_range().len(), inline_len);
        prop_assert_eq!(HeaderRepr::parse(&m), repr);
    }

    #[test]
    fn decode_arbitrary_bytes_never_panics(data in prop::collection::vec(any::<u8>(), 0..256), cut in any::<usize>()) {
        let byte_len = if data.is_empty() { 0 } else { cut % (data.len() + 2) };
        match decode(&data, byte_len, &DecodeLimits::default()) {
            Ok(m) => {
                prop_assert!(m.header_len() <= byte_len);
                prop_assert!(m.inline_range().end <= byte_len);
                let _ = HeaderRepr::parse(&m);
                let _ = m.read_list().chunks().count();
            }
            Err(e) => {
                let received = &data[..byte_len.min(data.len())];
                let _ = ErrorReply::for_error(received, &e, 1);
            }
        }
    }

    /// Words that look like headers (small values, so discriminators are often 0/1).
    #[test]
    fn decode_header_like_words_never_panics(words in prop::collection::vec(0u32..4, 4..48)) {
        let mut w = words;
        w[1] = 1;
        w[3] %= 2;
        let data = bytes(&w);
        if let Ok(m) = decode(&data, data.len(), &DecodeLimits::default()) {
            let repr = HeaderRepr::parse(&m);
            let mut out = vec![0u8; repr.buffer_len()];
            prop_assert_eq!(repr.emit(&mut out), Ok(m.header_len()));
            prop_assert_eq!(&out[..], &data[..m.header_len()]);
        }
    }

    /// The error-reply rule (docs/design.md), checked against the bytes themselves rather than
    /// the decoder's error: whatever follows `byte_len` in the buffer (two different tails)
    /// changes nothing; a message gets no reply exactly when fewer than 16 bytes arrived or it
    /// is a version-1 RDMA_DONE / RDMA_ERROR; otherwise the reply echoes the first two words
    /// that arrived, carries the grant and RDMA_ERROR, and is ERR_VERS 1..=1 (28 bytes) when the
    /// version word is not 1, else ERR_CHUNK (20 bytes).
    #[test]
    fn error_replies_follow_the_bytes_that_arrived(
        data in prop::collection::vec(any::<u8>(), 0..96),
        cut in any::<usize>(),
        version_one in any::<bool>(),
        proc_ in 0u32..6,
    ) {
        let mut data = data;
        // Half the cases get a version-1 header with a small proc, so every arm is reached.
        if version_one && data.len() >= 16 {
            put_xdr_u32(&mut data, 4, 1);
            put_xdr_u32(&mut data, 12, proc_);
        }
        let byte_len = cut % (data.len() + 1);
        let arrived = &data[..byte_len];
        let limits = DecodeLimits::default();
        let mut outcomes = Vec::new();
        for tail in [0x00u8, 0xff] {
            let mut buf = arrived.to_vec();
            buf.resize(byte_len + 64, tail);
            let outcome = match decode(&buf, byte_len, &limits) {
                Ok(m) => Ok((HeaderRepr::parse(&m), m.rpc_message().to_vec())),
                Err(e) => Err(ErrorReply::for_error(&buf[..byte_len], &e, 7).map(|r| {
                    let mut out = [0u8; 64];
                    let n = r.emit(&mut out).unwrap_or(0);
                    out[..n].to_vec()
                })),
            };
            outcomes.push(outcome);
        }
        prop_assert_eq!(&outcomes[0], &outcomes[1], "the bytes after byte_len mattered");
        let Err(reply) = &outcomes[0] else {
            return Ok(());
        };
        let vers = xdr_u32(arrived, 4);
        let proc_word = xdr_u32(arrived, 12);
        let dropped = byte_len < 16 || (vers == Some(1) && matches!(proc_word, Some(3 | 4)));
        prop_assert_eq!(reply.is_none(), dropped, "reply {:?} for {:?}", reply, arrived);
        if let Some(reply) = reply {
            prop_assert_eq!(&reply[..8], &arrived[..8], "xid and vers echoed");
            prop_assert_eq!(xdr_u32(reply, 8), Some(7), "the grant");
            prop_assert_eq!(xdr_u32(reply, 12), Some(4), "RDMA_ERROR");
            if vers == Some(1) {
                prop_assert_eq!(&reply[16..], &[0, 0, 0, 2][..], "ERR_CHUNK");
            } else {
                prop_assert_eq!(&reply[16..], &bytes(&[1, 1, 1])[..], "ERR_VERS 1..=1");
            }
        }
    }
}
