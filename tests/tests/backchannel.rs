//! The backward direction (RFC 8167) over the software NIC: the responder sends RPC calls to
//! the requester on the same connection, within the backward credits the requester grants,
//! matches the replies by xid, and reports the calls that end without one.

use rpcrdma_core::responder::{
    BackchannelError, BackchannelFailure, Call, ReplyWriter, Service, Verdict,
};
use rpcrdma_core::wire::{HeaderRepr, Proc};
use rpcrdma_core::xdr::XdrView;
use rpcrdma_services::oncrpc;
use rpcrdma_tests::rig::*;

/// A service with no forward calls here that records the backward replies handed to it.
#[derive(Default)]
struct Callbacks {
    replies: Vec<u32>,
}

impl Service for Callbacks {
    fn serve(&mut self, _call: &Call<'_>, _reply: &mut ReplyWriter<'_>) -> Verdict {
        Verdict::NoReply
    }
    fn backchannel_reply(&mut self, _epoch: u16, view: &XdrView<'_>) {
        self.replies.push(view.word(0).unwrap_or(0));
    }
}

fn rig() -> Rig<Callbacks> {
    Rig::new(RigConfig::default(), Callbacks::default())
}

/// A callback call (NFSv4.1's callback program is chosen by the client; any number will do).
fn send(rig: &mut Rig<Callbacks>, xid: u32, deadline: u64) -> Result<bool, BackchannelError> {
    rig.endpoint.send_backchannel(deadline, |buf| {
        oncrpc::emit_call(buf, xid, 0x4000_0000, 1, 1).unwrap_or(0)
    })
}

/// The requester's backward reply to `xid`, granting `credits` backward credits.
fn reply(rig: &mut Rig<Callbacks>, xid: u32, credits: u32) {
    let mut msg = vec![0u8; 28 + 32];
    let h = HeaderRepr {
        credits,
        ..HeaderRepr::reply(xid, credits)
    }
    .emit(&mut msg)
    .unwrap();
    let n = oncrpc::emit_accepted_reply(&mut msg[h..], xid, oncrpc::AcceptStat::Success).unwrap();
    msg.truncate(h + n);
    rig.nic.deliver(&msg).expect("a Receive is posted");
    rig.pump();
}

#[test]
fn a_backward_call_goes_out_and_its_reply_comes_back_to_the_service() {
    let mut rig = rig();
    assert_eq!(send(&mut rig, 0x77, 100), Ok(true));
    rig.pump();
    assert_eq!(rig.backward.len(), 1);
    let call = &rig.backward[0];
    assert_eq!(
        (call.xid, call.proc_),
        (0x77, Proc::Msg),
        "RDMA_MSG, inline"
    );
    assert_eq!(call.write_lengths, None);
    assert_eq!(call.credits, 8, "the backward credits it asks for");
    let (xid, prog) = (
        u32::from_be_bytes(call.inline[..4].try_into().unwrap()),
        u32::from_be_bytes(call.inline[12..16].try_into().unwrap()),
    );
    assert_eq!((xid, prog), (0x77, 0x4000_0000));
    assert!(rig.replies.is_empty(), "no forward reply: it is a call");
    reply(&mut rig, 0x77, 4);
    assert_eq!(rig.service.replies, [0x77]);
    let c = rig.endpoint.connection();
    assert_eq!(c.counters().backchannel_calls, 1);
    assert_eq!(c.counters().backchannel, 1);
    assert_eq!(c.backchannel_outstanding(), 0);
    assert_eq!(
        c.backchannel_limit(),
        4,
        "the requester's grant, from its reply"
    );
    rig.assert_quiet();
}

#[test]
fn no_call_goes_past_the_backward_credits_and_replies_match_in_any_order() {
    let mut rig = rig();
    // One at a time until the requester has said how many it accepts.
    assert_eq!(send(&mut rig, 1, 100), Ok(true));
    assert_eq!(
        send(&mut rig, 2, 100),
        Ok(false),
        "the second waits for a grant"
    );
    rig.pump();
    reply(&mut rig, 1, 3);
    // Now 3 at once; the rest wait (the caller keeps them).
    let mut queued: Vec<u32> = (2..=7).collect();
    let mut sent = Vec::new();
    queued.retain(|&xid| {
        let ok = send(&mut rig, xid, 100) == Ok(true);
        if ok {
            sent.push(xid);
        }
        !ok
    });
    assert_eq!(sent, [2, 3, 4]);
    rig.pump();
    assert_eq!(rig.endpoint.connection().backchannel_outstanding(), 3);
    // Replies out of order; each frees a credit for a queued call.
    for xid in [4, 2] {
        reply(&mut rig, xid, 3);
        let next = queued.remove(0);
        assert_eq!(send(&mut rig, next, 100), Ok(true));
        assert_eq!(send(&mut rig, 99, 100), Ok(false), "still within 3");
        rig.pump();
    }
    for xid in [3, 6, 5] {
        reply(&mut rig, xid, 3);
    }
    assert_eq!(rig.service.replies, [1, 4, 2, 3, 6, 5]);
    assert_eq!(rig.backward.len(), 6, "every call sent once");
    assert!(rig.endpoint.connection().backchannel_outstanding() == 0);
    rig.assert_quiet();
}

#[test]
fn a_reply_with_an_unknown_xid_is_counted_and_dropped() {
    let mut rig = rig();
    reply(&mut rig, 0x999, 4);
    assert!(rig.service.replies.is_empty());
    let c = rig.endpoint.connection();
    assert_eq!(c.counters().backchannel_unmatched, 1);
    assert_eq!(c.backchannel_limit(), 1, "a stray reply grants nothing");
    rig.assert_quiet();
}

#[test]
fn an_unanswered_call_expires_and_a_late_reply_is_unmatched() {
    let mut rig = rig();
    assert_eq!(send(&mut rig, 0x10, 50), Ok(true));
    rig.pump();
    assert_eq!(rig.endpoint.expire_backchannel(49), 0);
    assert_eq!(rig.endpoint.expire_backchannel(50), 1);
    assert_eq!(
        rig.endpoint.take_backchannel_failure(),
        Some((0x10, BackchannelFailure::Expired))
    );
    assert_eq!(rig.endpoint.take_backchannel_failure(), None);
    reply(&mut rig, 0x10, 4);
    assert!(rig.service.replies.is_empty());
    assert_eq!(
        rig.endpoint.connection().counters().backchannel_unmatched,
        1
    );
    rig.assert_quiet();
}

#[test]
fn the_connection_lost_with_calls_outstanding_fails_them_and_leaks_nothing() {
    let mut rig = rig();
    assert_eq!(send(&mut rig, 0x20, 100), Ok(true));
    rig.pump();
    reply(&mut rig, 0x20, 2);
    assert_eq!(send(&mut rig, 0x21, 100), Ok(true));
    rig.pump();
    // One more queued in the batch, not posted yet, when the queue pair fails.
    assert_eq!(send(&mut rig, 0x22, 100), Ok(true));
    rig.disconnect();
    let mut lost = Vec::new();
    while let Some(f) = rig.endpoint.take_backchannel_failure() {
        lost.push(f);
    }
    lost.sort_unstable_by_key(|f| f.0);
    assert_eq!(
        lost,
        [
            (0x21, BackchannelFailure::ConnectionLost),
            (0x22, BackchannelFailure::ConnectionLost)
        ]
    );
    assert_eq!(send(&mut rig, 0x23, 100), Err(BackchannelError::Closed));
    rig.assert_quiet();
}

#[test]
fn what_is_not_a_call_or_does_not_fit_is_refused_and_sends_nothing() {
    let mut rig = rig();
    let not_a_call = rig.endpoint.send_backchannel(100, |buf| {
        oncrpc::emit_accepted_reply(buf, 5, oncrpc::AcceptStat::Success).unwrap_or(0)
    });
    assert_eq!(not_a_call, Err(BackchannelError::NotACall));
    let too_large = rig.endpoint.send_backchannel(100, |buf| buf.len() + 1);
    assert!(matches!(too_large, Err(BackchannelError::TooLarge { .. })));
    assert_eq!(send(&mut rig, 7, 100), Ok(true));
    rig.pump();
    reply(&mut rig, 7, 4);
    assert_eq!(send(&mut rig, 8, 100), Ok(true));
    assert_eq!(
        send(&mut rig, 8, 100),
        Err(BackchannelError::DuplicateXid { xid: 8 })
    );
    rig.pump();
    assert_eq!(rig.backward.len(), 2, "only the two good calls went out");
    reply(&mut rig, 8, 4);
    rig.assert_quiet();
}
