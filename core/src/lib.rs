//! # rpcrdma-core
//!
//! The server-side receive path of RPC-over-RDMA Version 1 (RFC 8166), without an allocator and
//! without an OS.
//!
//! - [`wire`]: the transport header — zero-copy views, a hardened decoder whose every error maps
//!   to ERR_VERS, ERR_CHUNK or a drop, encoders for reply and RDMA_ERROR headers and RFC 8797
//!   private data, and the requester's reply decoder ([`wire::decode_reply`]).
//! - [`dma`]: the caller's DMA region (the only module with `unsafe`) and the sync hook.
//! - [`pool`]: the receive descriptor pool — persistent Receive buffers, batched posting with a
//!   credit watermark, completion validation, O(1) hand-up as an [`xdr::XdrView`] and release.
//! - [`pages`]: page runs of memory registered once — Read-chunk sinks and reply payloads.
//! - [`device`]: the small trait a NIC implements (post Receives, post Sends / RDMA Writes /
//!   RDMA Reads, poll) and the one wr_id space for every kind of work request.
//! - [`responder`]: the layer above the pool, once for every front end — Read chunks pulled
//!   into sink pages, the [`responder::Service`] API, replies inline / into the write chunk /
//!   through the reply chunk, credit grants that never exceed the Receives posted, and the
//!   teardown of a failed connection.
//! - [`srq`]: connections sharing one receive queue — the credit ledger and the order a
//!   batch ends in (refill, grant within the shared Receives, record), once.
//! - [`xdr`]: the head / pages / tail view of a received message.
//! - [`endpoint`]: the whole receive path of one connection owned in one value — one DMA
//!   region carved safely, one `poll(&mut device, &mut service)`. Start here.
//!
//! The design the code follows is written out in the repository's `docs/design.md`.
//!
//! Logging goes through the `fmt` mux: feature `defmt` (firmware) or `log` (hosted), or nothing.
//!
//! Feature `serde` derives `Serialize` and `Deserialize` on the counters and drain reports
//! ([`pool::Counters`], [`responder::ResponderCounters`], [`endpoint::EndpointCounters`] and the
//! drain reports), for hosts that report them; serde is used without `std`, and nothing in the
//! receive path calls it.
#![no_std]

#[macro_use]
mod fmt;

pub mod device;
pub mod dma;
pub mod endpoint;
pub mod pages;
pub mod pool;
pub mod responder;
pub mod srq;
pub mod wire;
pub mod xdr;
