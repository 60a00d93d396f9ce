//! Size baseline: the runtime without the core (see `rpcrdma_fw_common::probe`); also the
//! panic canary of `cargo xtask cross`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use rpcrdma_fw_common::probe;
use rpcrdma_fw_common::semihosting;
use rpcrdma_fw_cortex_m4::{BOARD, DMA};

#[entry]
fn main() -> ! {
    // `cargo xtask cross` also links this program with `--cfg rpcrdma_panic_canary` and expects
    // that link to fail: one index the optimiser cannot prove in bounds is a panic path, so a
    // passing link would mean the panic-freedom check is not live.
    #[cfg(rpcrdma_panic_canary)]
    core::hint::black_box([0u8; 4][core::hint::black_box(4usize)]);
    semihosting::exit(probe::baseline(&BOARD, &DMA))
}
