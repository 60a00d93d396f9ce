//! # rpcrdma-hosted
//!
//! The binding of [`rpcrdma_core`] to Linux verbs and rdma_cm through `rdma-sys`. It makes no
//! protocol decisions: the core decides what every received message means and what to answer;
//! this crate moves bytes between the core and the device.
//!
//! - [`verbs`]: one owner per verbs object (PD, MR, CQ, completion channel, SRQ) with `Drop`
//!   in dependency order; batched `ibv_post_recv` / `ibv_post_srq_recv` (one doorbell per core
//!   batch) and `ibv_poll_cq` in batches of 16.
//! - [`memory`]: an aligned (huge pages when available) mapping registered once; Receive
//!   memory with `IBV_ACCESS_LOCAL_WRITE` only.
//! - [`cm`]: rdma_cm event channel and ids, RFC 8797 private data on connect and accept.
//! - [`server`]: the `rpcrdma-serve` engine: many connections, per-connection receive queues
//!   or one shared SRQ, a persistent Send buffer set per connection.
//! - [`client`]: the requester side used by `rpcrdma-load` and the tests.
#![warn(missing_docs)]

pub mod client;
pub mod cm;
pub mod error;
pub mod memory;
pub mod server;
pub mod verbs;

pub use error::{Error, Result};
pub use rpcrdma_core as core;
