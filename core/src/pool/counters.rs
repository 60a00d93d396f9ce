//! What a pool counts, and what a drain reclaimed.

/// Counters: plain integers, read as a struct with [`RecvPool::counters`](super::RecvPool::counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Counters {
    /// Receive work requests handed out by `post`.
    pub posted: u64,
    /// Non-empty batches handed out (doorbells).
    pub batches: u64,
    /// Successful completions (valid or malformed).
    pub completed: u64,
    /// Bytes of successful completions.
    pub bytes: u64,
    /// Flush completions.
    pub flushed: u64,
    /// Device error completions.
    pub device_errors: u64,
    /// Valid calls handed up.
    pub delivered: u64,
    /// Held messages released.
    pub released: u64,
    /// Malformed messages answered with ERR_VERS.
    pub err_vers: u64,
    /// Malformed messages answered with ERR_CHUNK.
    pub err_chunk: u64,
    /// Malformed messages dropped.
    pub dropped: u64,
    /// Completions with an unknown wr_id.
    pub rejected_unknown: u64,
    /// Completions with a stale wr_id.
    pub rejected_stale: u64,
    /// Duplicate completions (including a second flush).
    pub rejected_duplicate: u64,
    /// Work requests returned by `cancel` (the binding failed to post them).
    pub cancelled: u64,
    /// Descriptors reclaimed by `drain` (Posted or Held at teardown).
    pub drained: u64,
}

impl Counters {
    /// Adds `other` into `self` (summing pools).
    pub fn accumulate(&mut self, other: &Counters) {
        let o = other;
        self.posted += o.posted;
        self.batches += o.batches;
        self.completed += o.completed;
        self.bytes += o.bytes;
        self.flushed += o.flushed;
        self.device_errors += o.device_errors;
        self.delivered += o.delivered;
        self.released += o.released;
        self.err_vers += o.err_vers;
        self.err_chunk += o.err_chunk;
        self.dropped += o.dropped;
        self.rejected_unknown += o.rejected_unknown;
        self.rejected_stale += o.rejected_stale;
        self.rejected_duplicate += o.rejected_duplicate;
        self.cancelled += o.cancelled;
        self.drained += o.drained;
    }

    /// Completions refused for any reason: unknown, stale or duplicate wr_id.
    pub fn rejected(&self) -> u64 {
        self.rejected_unknown + self.rejected_stale + self.rejected_duplicate
    }
}

/// What [`RecvPool::drain`](super::RecvPool::drain) reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DrainReport {
    /// Descriptors that were still Posted (their flush never came).
    pub posted: usize,
    /// Descriptors still Held by the upper layer (their tokens are now stale).
    pub held: usize,
}
