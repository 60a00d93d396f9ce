//! Property tests of the NFS bindings that place a reply's DDP-eligible item (RFC 8267): on any
//! bytes they never panic and never name an item outside the reply; from a prefix of a reply
//! they place the item where the whole reply does; a well-formed READ reply of any shape the
//! walk knows has its data found, NFSv3 and NFSv4.

use proptest::prelude::*;
use rpcrdma_services::ddp::DdpReply;
use rpcrdma_services::nfs4::op;
use rpcrdma_tests::fixtures::bytes as words;

fn bindings() -> [DdpReply; 3] {
    [
        DdpReply::Nfs3 { proc_: 6 },
        DdpReply::Nfs3 { proc_: 5 },
        DdpReply::Nfs4,
    ]
}

/// An NFSv4 COMPOUND reply: accepted, a tag of `tag` bytes, SEQUENCE, PUTFH, then `getattrs`
/// GETATTR results of the given sizes, then READ with `data`.
fn compound_read(tag: usize, getattrs: &[(u32, usize)], data: &[u8]) -> (Vec<u8>, usize) {
    let mut r = words(&[9, 1, 0, 0, 0, 0, 0, tag as u32]);
    r.extend(vec![0x74; tag.next_multiple_of(4)]);
    r.extend(words(&[2 + getattrs.len() as u32 + 1, op::SEQUENCE, 0]));
    r.extend([0x11; 16]);
    r.extend(words(&[1, 0, 7, 7, 0, op::PUTFH, 0]));
    for &(bitmap_words, values) in getattrs {
        r.extend(words(&[op::GETATTR, 0, bitmap_words]));
        r.extend(vec![0xff; 4 * bitmap_words as usize]);
        r.extend(words(&[values as u32]));
        r.extend(vec![0x22; values.next_multiple_of(4)]);
    }
    r.extend(words(&[op::READ, 0, 1, data.len() as u32]));
    let at = r.len();
    r.extend(data);
    r.resize(r.len().next_multiple_of(4), 0);
    (r, at)
}

proptest! {
    #[test]
    fn any_bytes_give_no_panic_and_no_item_outside_the_reply(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        total_extra in 0usize..100_000,
    ) {
        for b in bindings() {
            let total = bytes.len() + total_extra;
            if let Some((at, len)) = b.item_in(&bytes, total) {
                prop_assert!(at + len <= total);
            }
            if let Some((at, len)) = b.item(&bytes) {
                prop_assert!(at + len <= bytes.len());
            }
        }
    }

    #[test]
    fn a_read_reply_has_its_data_found_from_its_start_alone(
        tag in 0usize..40,
        getattrs in proptest::collection::vec((0u32..4, 0usize..60), 0..3),
        len in 0usize..5000,
        cut in 0usize..512,
    ) {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let (reply, at) = compound_read(tag, &getattrs, &data);
        prop_assert_eq!(DdpReply::Nfs4.item(&reply), Some((at, len)));
        // From the header alone (what the reader has before the data arrives), and from any
        // prefix that holds it, the same place; from a shorter one, none.
        let prefix = &reply[..(at + cut).min(reply.len())];
        prop_assert_eq!(DdpReply::Nfs4.item_in(prefix, reply.len()), Some((at, len)));
        if at > 4 {
            let short = &reply[..at - 4 - cut.min(at - 4)];
            prop_assert_eq!(DdpReply::Nfs4.item_in(short, reply.len()), None);
        }
    }
}
