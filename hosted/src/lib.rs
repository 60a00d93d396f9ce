//! # rpcrdma-hosted
//!
//! The binding of [`rpcrdma_core`] to Linux verbs through `rdma-sys`: device and protection
//! domain, one memory region per receive pool registered once with `LOCAL_WRITE` only,
//! completion queues, RC queue pairs through `rdma_cm`, and the `rpcrdma-serve` /
//! `rpcrdma-load` programs. It makes no protocol decisions: those live in the core.
//!
//! Until the verbs binding lands, this crate re-exports the core so hosted users have one
//! dependency to name.

pub use rpcrdma_core as core;
