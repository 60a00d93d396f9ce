//! The Cortex-A53 board, a DPU-class Arm core (QEMU `virt`, EL1, aarch64-rt start-up): the pool
//! configuration ([`CONFIG`]: [`N`] = 64 Receive buffers of 4 KiB, 32 credits, batches of 8),
//! the static DMA memory sized for it ([`DMA`], in `.bss`), the [`BOARD`] description (the
//! device address and key the NIC sees that memory under), the identity map aarch64-rt loads
//! before it turns the MMU and caches on (the first GiB as device memory, the second — DRAM,
//! where the image runs — as normal cacheable memory), and an exception vector whose every
//! entry logs the exception and exits with status 1.
//!
//! Used by the four programs in `src/bin/`: the example (`receive_path`) and the three size
//! programs (`size_probe`: every core entry point the example uses; `size_pool`: the receive
//! pool and decoder alone; `size_baseline`: the runtime without the core, also the panic
//! canary of `cargo xtask cross`).
#![no_std]

use aarch64_rt::{
    exception_handlers, initial_pagetable, ExceptionHandlers, InitialPagetable, RegisterStateRef,
};
use rpcrdma_core::pool::PoolConfig;
use rpcrdma_core::wire::DecodeLimits;
use rpcrdma_fw_common::dma::DmaMemory;
use rpcrdma_fw_common::{fault, Board};

/// Receive buffers.
pub const N: usize = 64;
/// The pool.
pub const CONFIG: PoolConfig = PoolConfig {
    buffer_size: 4096,
    credits: 32,
    batch: 8,
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
    target: "aarch64-unknown-none",
    machine: "QEMU virt, Cortex-A53, EL1, MMU and caches on",
    iova: 0x0000_00c3_0000_0000,
    lkey: 0x0000_a053,
};

// Level-1 block descriptors (4 KiB granule, 1 GiB blocks): valid, access flag, MAIR index.

/// Attribute index 0 (Device-nGnRE), execute-never.
const BLOCK_DEVICE: usize = 1 | (1 << 10) | (1 << 54);
/// Attribute index 1 (normal, write-back), inner shareable.
const BLOCK_NORMAL: usize = 1 | (1 << 2) | (3 << 8) | (1 << 10);

// Identity map: the first GiB (flash, GIC, UART) as device memory, the second (DRAM, where the
// image lives) as normal cacheable memory. MAIR_EL1 (aarch64-rt's default): attr 0 =
// Device-nGnRE, attr 1 = normal write-back read/write-allocate.
initial_pagetable!({
    let mut table = [0; 512];
    table[0] = BLOCK_DEVICE;
    table[1] = BLOCK_NORMAL | 0x4000_0000;
    InitialPagetable(table)
});

struct Faults;

impl ExceptionHandlers for Faults {
    extern "C" fn sync_current(_state: RegisterStateRef) {
        fault("synchronous exception")
    }
    extern "C" fn irq_current(_state: RegisterStateRef) {
        fault("IRQ")
    }
    extern "C" fn fiq_current(_state: RegisterStateRef) {
        fault("FIQ")
    }
    extern "C" fn serror_current(_state: RegisterStateRef) {
        fault("SError")
    }
    extern "C" fn sync_lower(_state: RegisterStateRef) {
        fault("synchronous exception from a lower EL")
    }
    extern "C" fn irq_lower(_state: RegisterStateRef) {
        fault("IRQ from a lower EL")
    }
    extern "C" fn fiq_lower(_state: RegisterStateRef) {
        fault("FIQ from a lower EL")
    }
    extern "C" fn serror_lower(_state: RegisterStateRef) {
        fault("SError from a lower EL")
    }
}

exception_handlers!(Faults);
