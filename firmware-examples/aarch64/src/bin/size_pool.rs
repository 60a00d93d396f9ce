//! Pool size probe: the runtime plus the receive pool and decoder alone (see
//! `rpcrdma_fw_common::probe`). Built for its size; it also runs.
#![no_std]
#![no_main]

use aarch64_rt::entry;
use rpcrdma_fw_aarch64::{BOARD, CONFIG, DMA, N, REGION_LEN};
use rpcrdma_fw_common::probe;
use rpcrdma_fw_common::semihosting;

entry!(main, 32);
fn main(_x0: u64, _x1: u64, _x2: u64, _x3: u64) -> ! {
    semihosting::exit(probe::pool_receive_path::<N, REGION_LEN>(
        &BOARD, &DMA, CONFIG,
    ))
}
