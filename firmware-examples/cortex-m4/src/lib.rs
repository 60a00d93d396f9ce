//! The Cortex-M4F board (QEMU `mps2-an386`, cortex-m-rt start-up): the pool configuration
//! ([`CONFIG`]: [`N`] = 16 Receive buffers of 1 KiB, the RFC 8166 default inline threshold, 8
//! credits, batches of 4), the static DMA memory sized for it ([`DMA`], in `.bss`), the
//! [`BOARD`] description (the device address and key the NIC sees that memory under), and the
//! HardFault and default exception handlers, which log the fault and exit with status 1.
//!
//! Used by the four programs in `src/bin/`: the example (`receive_path`) and the three size
//! programs (`size_probe`: every core entry point the example uses; `size_pool`: the receive
//! pool and decoder alone; `size_baseline`: the runtime without the core, also the panic
//! canary of `cargo xtask cross`).
#![no_std]

use cortex_m_rt::{exception, ExceptionFrame};
use rpcrdma_core::pool::PoolConfig;
use rpcrdma_core::wire::DecodeLimits;
use rpcrdma_fw_common::dma::DmaMemory;
use rpcrdma_fw_common::{fault, Board};

/// Receive buffers.
pub const N: usize = 16;
/// The pool.
pub const CONFIG: PoolConfig = PoolConfig {
    buffer_size: 1024,
    credits: 8,
    batch: 4,
    limits: DecodeLimits::DEFAULT,
    buffers: N as u16,
    epoch: 1,
};
/// DMA memory the example needs: `N` Receive buffers (each rounded up to the cache line), the
/// send slots, the Read sinks and the payload pages.
pub const REGION_LEN: usize = rpcrdma_fw_common::dma_len(&CONFIG);

/// The DMA memory (`.bss`).
pub static DMA: DmaMemory<REGION_LEN> = DmaMemory::new();

/// This board.
pub const BOARD: Board = Board {
    target: "thumbv7em-none-eabihf",
    machine: "QEMU mps2-an386, Cortex-M4F",
    iova: 0x0000_00c0_0000_0000,
    lkey: 0x0000_4d34,
};

// cortex-m-rt requires the HardFault and DefaultHandler handlers to be `unsafe fn`.
#[allow(unsafe_code)]
#[exception]
unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
    fault("HardFault")
}

#[allow(unsafe_code)]
#[exception]
unsafe fn DefaultHandler(_irqn: i16) {
    fault("unexpected exception or interrupt")
}
