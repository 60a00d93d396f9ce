//! # rpcrdma-core
//!
//! The server-side receive path of RPC-over-RDMA Version 1 (RFC 8166), without an allocator and
//! without an OS.
//!
//! - [`wire`]: the transport header — zero-copy views, a hardened decoder whose every error maps
//!   to ERR_VERS, ERR_CHUNK or a drop, and encoders for reply and RDMA_ERROR headers and RFC 8797
//!   private data.
//! - [`dma`]: the caller's DMA region (the only module with `unsafe`) and the sync hook.
//! - [`pool`]: the receive descriptor pool — persistent Receive buffers, batched posting with a
//!   credit watermark, completion validation, O(1) hand-up as an [`xdr::XdrView`] and release.
//! - [`xdr`]: the head / pages / tail view of a received message.
//!
//! Logging goes through the `fmt` mux: feature `defmt` (firmware) or `log` (hosted), or nothing.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod fmt;

pub mod device;
pub mod dma;
pub mod pages;
pub mod pool;
pub mod responder;
pub mod wire;
pub mod xdr;
