//! Size probes: what linking the core's receive path costs a firmware image.
//!
//! With whole-program LTO the core's functions are inlined into their callers, so the symbols of
//! an example do not say which bytes are the core's. Each target therefore links two more
//! programs with the same runtime, logger, profile and DMA memory as its example:
//!
//! - [`baseline`]: start-up, one defmt line, semihosting exit; no core call;
//! - [`core_receive_path`]: the same plus every core entry point the example uses — pool
//!   construction, refill, complete (wr_id validation, sync hook, decode), the responder (Read
//!   chunks into sink pages, the service, replies inline / write chunk / reply chunk / RDMA_ERROR,
//!   the chained post), release, drain, counters — and the example service (ONC RPC parsing and
//!   reply encoding).
//!
//! - [`pool_receive_path`]: the same runtime plus only the receive pool and the decoder — pool
//!   construction, refill, complete (wr_id validation, sync hook, decode), the XDR view,
//!   release, the RDMA_ERROR reply a malformed header gets, drain, counters — for a firmware
//!   that runs its own RPC layer on the pool.
//!
//! `core_receive_path − baseline`, section by section, is the core's share of an image;
//! `pool_receive_path − baseline` the share of the pool and decoder alone. Inputs
//! come through `black_box`, so nothing is specialised to constants; both are release builds
//! with the undefined-symbol panic handler, so both also prove the absence of panic paths.

// Carves the static DMA memory into regions by raw pointer, as `run` does.
#![allow(unsafe_code)]

use core::hint::black_box;

use rpcrdma_core::device::{Completion, Device, PostError, RecvWr, SendWr};
use rpcrdma_core::dma::CoherentDma;
use rpcrdma_core::endpoint::Endpoint;
use rpcrdma_core::pool::{Completed, PoolConfig, RecvPool};
use rpcrdma_core::wire::HeaderRepr;
use rpcrdma_services::ExampleService;

use crate::dma::DmaMemory;
use crate::server::{CALLS, PAGES};
use crate::{endpoint_config, Board};

/// The runtime without the core: what [`core_receive_path`] is measured against.
pub fn baseline<const LEN: usize>(board: &Board, dma: &'static DmaMemory<LEN>) -> bool {
    defmt::info!("size baseline on {=str}", board.target);
    black_box(dma.claim(board.iova, board.lkey)).is_some()
}

/// A device whose completions and refusals come from `black_box`: nothing is specialised.
struct OpaqueDevice;

impl Device for OpaqueDevice {
    fn post_recv(&mut self, wrs: &[RecvWr]) -> Result<(), PostError> {
        black_box(wrs);
        black_box(Ok(()))
    }
    fn post_send(&mut self, wrs: &[SendWr]) -> Result<(), PostError> {
        black_box(wrs);
        black_box(Ok(()))
    }
    fn poll(&mut self, out: &mut [Completion]) -> usize {
        let n = black_box(out.len().min(1));
        for c in out.iter_mut().take(n) {
            *c = black_box(Completion::EMPTY);
        }
        n
    }
}

/// Every core entry point the example uses, on opaque inputs.
pub fn core_receive_path<const N: usize, const LEN: usize>(
    board: &Board,
    dma: &'static DmaMemory<LEN>,
    config: PoolConfig,
) -> bool {
    defmt::info!("size probe on {=str}", board.target);
    let Some((region, _)) = dma.claim(board.iova, board.lkey) else {
        return false;
    };
    let config = endpoint_config(&black_box(config));
    let Ok(mut endpoint) = Endpoint::<N, CALLS, PAGES>::new(region, &config) else {
        return false;
    };
    let mut service = ExampleService::default();
    let mut device = OpaqueDevice;
    for _ in 0..black_box(2u32) {
        black_box(endpoint.poll(&mut device, &mut service).is_ok());
    }
    // The owned header (the decoder's `Repr`), as a service that keeps headers would use it.
    black_box(HeaderRepr::reply(black_box(1), black_box(2)).buffer_len());
    black_box(endpoint.counters());
    black_box(endpoint.drain());
    let pool = endpoint.pool();
    black_box((pool.posted(), pool.held(), pool.free(), pool.is_closing()));
    true
}

/// The receive pool and decoder alone, on opaque inputs: what a firmware that runs its own RPC
/// layer on top of the pool links.
pub fn pool_receive_path<const N: usize, const LEN: usize>(
    board: &Board,
    dma: &'static DmaMemory<LEN>,
    config: PoolConfig,
) -> bool {
    defmt::info!("pool size probe on {=str}", board.target);
    let Some((region, _)) = dma.claim(board.iova, board.lkey) else {
        return false;
    };
    let config = black_box(config);
    let Ok(mut pool) = RecvPool::<N>::new(region, config) else {
        return false;
    };
    let mut device = OpaqueDevice;
    let mut wcs = [Completion::EMPTY; 4];
    let mut reply = [0u8; 32];
    for _ in 0..black_box(2u32) {
        black_box(pool.refill(&mut device).is_ok());
        let n = device.poll(&mut wcs);
        for wc in wcs.iter().take(n) {
            match pool.complete(wc, &mut CoherentDma) {
                Ok(Completed::Message(rx)) => {
                    if let Ok(view) = pool.view(&rx) {
                        black_box((view.head(), view.pages(), view.tail()));
                        black_box(view.message().write_list().len());
                        black_box(view.message().reply_chunk().map(|c| c.len()));
                    }
                    black_box(pool.release(rx).is_ok());
                }
                Ok(Completed::Rejected {
                    reply: Some(error), ..
                }) => {
                    black_box(error.emit(&mut reply));
                }
                other => {
                    black_box(other.is_ok());
                }
            }
        }
    }
    black_box(pool.counters());
    black_box(pool.drain());
    black_box((pool.posted(), pool.held(), pool.free(), pool.is_closing()));
    true
}
