//! # rpcrdma-tests
//!
//! Cross-crate integration tests live in `tests/tests/`: RPC-over-RDMA conformance vectors
//! (byte fixtures for every valid header form and every malformed one docs/design.md lists), property
//! tests of emit/decode round trips, and — as the pool and the hosted binding land — runs over a
//! software NIC model and on Soft-RoCE.
//!
//! This library holds the fixture builders the test files share.

pub mod fixtures;
pub mod nic;
pub mod rig;
