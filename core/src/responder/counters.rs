//! What a connection counts (plain integers, summed over connections when read).

/// Counters of one connection (plain integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ResponderCounters {
    /// Calls handed to the service.
    pub calls: u64,
    /// Replies sent inline (RDMA_MSG).
    pub inline_replies: u64,
    /// Replies whose payload went into the write chunk.
    pub write_chunk_replies: u64,
    /// Replies sent through the reply chunk (RDMA_NOMSG).
    pub reply_chunk_replies: u64,
    /// ERR_VERS replies to malformed headers.
    pub err_vers: u64,
    /// ERR_CHUNK replies to malformed headers.
    pub err_chunk: u64,
    /// ERR_CHUNK replies because the reply fit neither inline, nor the write chunk, nor the
    /// reply chunk.
    pub reply_too_large: u64,
    /// Malformed messages dropped without a reply.
    pub dropped: u64,
    /// Backward-direction replies (RFC 8167) matched to a call and handed to the service.
    pub backchannel: u64,
    /// Backward-direction calls sent.
    #[cfg_attr(feature = "serde", serde(default))]
    pub backchannel_calls: u64,
    /// Backward-direction replies with an xid no outstanding call had: dropped.
    #[cfg_attr(feature = "serde", serde(default))]
    pub backchannel_unmatched: u64,
    /// Backward-direction calls that ended without a reply (deadline, or the connection
    /// closed).
    #[cfg_attr(feature = "serde", serde(default))]
    pub backchannel_failed: u64,
    /// Calls the service answered with [`Verdict::NoReply`](super::Verdict::NoReply).
    pub no_reply: u64,
    /// Times the service deferred a call ([`Verdict::Defer`](super::Verdict::Defer): payload pages short).
    pub deferred: u64,
    /// Calls the service is answering later ([`Verdict::Pending`](super::Verdict::Pending)), now.
    pub pending: u64,
    /// Messages that arrived with every call slot taken (the requester exceeded its credits):
    /// dropped.
    pub overruns: u64,
    /// Bytes pulled by RDMA Read.
    pub read_bytes: u64,
    /// Bytes RDMA-written into write chunks.
    pub write_chunk_bytes: u64,
    /// Bytes RDMA-written into reply chunks.
    pub reply_chunk_bytes: u64,
    /// Completions refused (unknown, stale or foreign wr_id).
    pub refused_completions: u64,
    /// Send-queue completions in error (a status other than success or flushed): the device or
    /// the peer refused a work request. The connection closes.
    pub failed_completions: u64,
    /// Send-queue completions flushed: the queue pair was already in error (the peer
    /// disconnected, or an earlier work request failed). At a peer's orderly disconnect the last
    /// replies' Sends can be flushed while their acknowledgements are still on the way; these
    /// are not failures of their own.
    pub flushed_completions: u64,
    /// Doorbells rung for the send queue.
    pub send_doorbells: u64,
    /// Sends posted unsignaled (their completion was implied by a later signaled one).
    pub unsignaled_sends: u64,
    /// The last credit grant sent.
    pub last_grant: u32,
    /// Credits the requester asked for in its last call.
    pub requested_credits: u32,
    /// Calls that carried Read chunks (data or call chunks).
    pub calls_with_read_chunks: u64,
    /// Calls whose RPC message came in a position-zero Read chunk.
    pub calls_in_call_chunk: u64,
    /// Calls that offered a write chunk.
    pub calls_with_write_chunk: u64,
    /// Calls that offered a reply chunk.
    pub calls_with_reply_chunk: u64,
    /// Replies sent with a grant below the configured credits (Receives were short).
    pub reduced_grants: u64,
    /// Messages that arrived when the requester had no credit left (it sent more calls than
    /// its grant allowed): with a shared receive queue the connection is closed at the first.
    pub grant_overruns: u64,
}

impl ResponderCounters {
    /// Adds `other` into `self` (summing connections); `last_grant` keeps the larger.
    pub fn accumulate(&mut self, other: &ResponderCounters) {
        let o = other;
        self.calls += o.calls;
        self.inline_replies += o.inline_replies;
        self.write_chunk_replies += o.write_chunk_replies;
        self.reply_chunk_replies += o.reply_chunk_replies;
        self.err_vers += o.err_vers;
        self.err_chunk += o.err_chunk;
        self.reply_too_large += o.reply_too_large;
        self.dropped += o.dropped;
        self.backchannel += o.backchannel;
        self.backchannel_calls += o.backchannel_calls;
        self.backchannel_unmatched += o.backchannel_unmatched;
        self.backchannel_failed += o.backchannel_failed;
        self.no_reply += o.no_reply;
        self.deferred += o.deferred;
        self.pending += o.pending;
        self.overruns += o.overruns;
        self.read_bytes += o.read_bytes;
        self.write_chunk_bytes += o.write_chunk_bytes;
        self.reply_chunk_bytes += o.reply_chunk_bytes;
        self.refused_completions += o.refused_completions;
        self.failed_completions += o.failed_completions;
        self.flushed_completions += o.flushed_completions;
        self.send_doorbells += o.send_doorbells;
        self.unsignaled_sends += o.unsignaled_sends;
        self.last_grant = self.last_grant.max(o.last_grant);
        self.requested_credits = self.requested_credits.max(o.requested_credits);
        self.calls_with_read_chunks += o.calls_with_read_chunks;
        self.calls_in_call_chunk += o.calls_in_call_chunk;
        self.calls_with_write_chunk += o.calls_with_write_chunk;
        self.calls_with_reply_chunk += o.calls_with_reply_chunk;
        self.reduced_grants += o.reduced_grants;
        self.grant_overruns += o.grant_overruns;
    }
}
