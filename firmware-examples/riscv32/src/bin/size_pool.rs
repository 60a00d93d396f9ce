//! Pool size probe: the runtime plus the receive pool and decoder alone (see
//! `rpcrdma_fw_common::probe`). Built for its size; it also runs.
#![no_std]
#![no_main]

use riscv_rt::entry;
use rpcrdma_fw_common::probe;
use rpcrdma_fw_common::semihosting;
use rpcrdma_fw_riscv32::{BOARD, CONFIG, DMA, N, REGION_LEN};

#[entry]
fn main() -> ! {
    semihosting::exit(probe::pool_receive_path::<N, REGION_LEN>(
        &BOARD, &DMA, CONFIG,
    ))
}
