//! Fuzzes `wire::decode` the way a persistent Receive buffer feeds it: the input is placed at
//! the start of a 4 KiB buffer still holding a previous message's bytes, and decoded with
//! `byte_len` = input length. Checks, beyond "no panic":
//! - a decoded message stays within `byte_len` and round-trips through `HeaderRepr`;
//! - every error has a disposition, and an error reply exists exactly when it is not a drop,
//!   echoes the xid and vers that arrived, and never reads past `byte_len`.
//!
//! The same input is also a reply for the requester-side decoder (`wire::decode_reply`): no
//! panic, every view within the input, and an RDMA_ERROR it accepts re-emits to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcrdma_core::wire::{
    decode, decode_reply, xdr_u32, DecodeLimits, Disposition, ErrorReply, HeaderRepr, Reply,
    MAX_REPLY_SEGMENTS, MAX_WRITE_SEGMENTS,
};

const BUF: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut buf = [0xa5u8; BUF];
    let byte_len = data.len().min(BUF + 8); // also exercise byte_len > buffer
    let copy = data.len().min(BUF);
    buf[..copy].copy_from_slice(&data[..copy]);
    match decode(&buf, byte_len, &DecodeLimits::default()) {
        Ok(m) => {
            assert!(m.header_len() <= byte_len && m.inline_range().end <= byte_len);
            let repr = HeaderRepr::parse(&m);
            let mut out = [0u8; BUF];
            assert_eq!(repr.emit(&mut out), Ok(m.header_len()));
            assert_eq!(&out[..m.header_len()], &buf[..m.header_len()]);
            // Data chunks go into the inline body, or into the call chunk when there is one.
            let base = m
                .read_list()
                .call_chunk()
                .map_or(m.inline_range().len() as u64, |c| c.length);
            for chunk in m.read_list().chunks().filter(|c| c.position != 0) {
                assert!(chunk.inline_offset <= base);
            }
            let _ = m.is_backchannel_reply();
        }
        Err(e) => {
            let received = &buf[..byte_len.min(BUF)];
            let reply = ErrorReply::for_error(received, &e, 32);
            assert_eq!(reply.is_none(), e.disposition() == Disposition::Drop);
            if let Some(r) = reply {
                assert_eq!(Some(r.xid), xdr_u32(received, 0));
                assert_eq!(Some(r.vers), xdr_u32(received, 4));
                let mut out = [0u8; 28];
                assert_eq!(r.emit(&mut out), Some(r.buffer_len()));
            }
        }
    }
    match decode_reply(data) {
        Ok(Reply::Rpc(r)) => {
            assert!(r.header_len <= data.len());
            assert_eq!(r.header_len + r.rpc_message.len(), data.len());
            assert!(r
                .write_chunk
                .is_none_or(|c| (1..=MAX_WRITE_SEGMENTS).contains(&c.len())));
            assert!(r
                .reply_chunk
                .is_none_or(|c| (1..=MAX_REPLY_SEGMENTS).contains(&c.len())));
        }
        Ok(Reply::Error(e)) => {
            let mut out = [0u8; 28];
            assert_eq!(e.emit(&mut out), Some(data.len()));
            assert_eq!(&out[..data.len()], data);
        }
        Err(_) => {}
    }
});
