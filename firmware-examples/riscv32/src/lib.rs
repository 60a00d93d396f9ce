//! The RV32IMAC board (QEMU `virt` with `-bios none`, M-mode, riscv-rt start-up): the pool
//! configuration ([`CONFIG`]: [`N`] = 16 Receive buffers of 1 KiB, 8 credits, batches of 4), the
//! static DMA memory sized for it ([`DMA`], in `.bss`), the [`BOARD`] description (the device
//! address and key the NIC sees that memory under), and the exception and default interrupt
//! handlers riscv-rt links by name, which log the trap and exit with status 1.
//!
//! Used by the four programs in `src/bin/`: the example (`receive_path`) and the three size
//! programs (`size_probe`: every core entry point the example uses; `size_pool`: the receive
//! pool and decoder alone; `size_baseline`: the runtime without the core, also the panic
//! canary of `cargo xtask cross`).
#![no_std]

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
    target: "riscv32imac-unknown-none-elf",
    machine: "QEMU virt, -bios none, M-mode",
    iova: 0x0000_00c1_0000_0000,
    lkey: 0x0000_5232,
};

/// Any exception (illegal instruction, access fault, …) ends the run with status 1. riscv-rt
/// calls the handlers through `extern "C"` declarations.
// riscv-rt links the handlers by symbol name (`export_name`, which the lint counts as unsafe).
#[allow(unsafe_code)]
#[export_name = "ExceptionHandler"]
extern "C" fn exception_handler(_frame: &riscv_rt::TrapFrame) -> ! {
    fault("exception")
}

/// No interrupt is enabled; one arriving ends the run with status 1.
#[allow(unsafe_code)]
#[export_name = "DefaultHandler"]
extern "C" fn default_handler() -> ! {
    fault("unexpected interrupt")
}
