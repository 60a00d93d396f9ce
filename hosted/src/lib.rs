//! # rpcrdma-hosted
//!
//! The binding of [`rpcrdma_core`] to Linux verbs and rdma_cm through `rdma-sys`. It makes no
//! protocol decisions: the core decides what every received message means and what to answer;
//! this crate moves bytes between the core and the device.
//!
//! - [`verbs`]: one owner per verbs object (PD, MR, CQ, completion channel, SRQ, QP) with
//!   `Drop` in dependency order, and [`verbs::VerbsDevice`], the core's
//!   [`Device`](rpcrdma_core::device::Device) on a queue pair: chained `ibv_post_recv` /
//!   `ibv_post_srq_recv` and chained `ibv_post_send` of Sends, RDMA Writes and RDMA Reads (one
//!   doorbell per batch). Completions do not come through its `poll` (every front end builds it
//!   without a CQ, so it returns 0): the server polls its two CQs, which every connection
//!   shares, with [`verbs::Cq::poll`] (`ibv_poll_cq`, [`verbs::POLL_BATCH`] = 16 at a time) and
//!   hands each completion to its connection by `qp_num`; the client polls its own CQs the same
//!   way.
//! - [`memory`]: aligned (huge pages when available) mappings registered once — Receive
//!   buffers, send slots, Read sinks and payload pages, all `IBV_ACCESS_LOCAL_WRITE` only —
//!   and the per-Receive registration of the comparison mode.
//! - [`cm`]: rdma_cm event channel and ids, RFC 8797 private data on connect and accept.
//! - [`server`]: the `rpcrdma-serve` engine: completions in, the core's responder per
//!   connection, per-connection receive queues or one shared SRQ; its exit report is a
//!   [`report::Report`] printed as one JSON line (`NAME: stats {…}`, see [`report`]).
//! - [`client`]: the requester side used by `rpcrdma-load` and the tests.
//! - [`gateway`]: an app of the server that forwards every call to an ONC RPC server over TCP
//!   (`rpcrdma-gateway`, in front of the kernel's nfsd), with the NFSv3 DDP binding.
//!
//! `unsafe` lives in `verbs`, `cm` and `memory` only, which allow it; the workspace lints deny
//! it everywhere else.

pub mod client;
pub mod cm;
pub mod error;
pub mod gateway;
pub mod memory;
pub mod server;
pub mod verbs;

pub use error::{Error, Result};
pub use rpcrdma_core as core;
pub use rpcrdma_report as report;
