//! The example: the scripted RPC-over-RDMA traffic through the core's receive path, checked;
//! exit status 0 when every check passed.
#![no_std]
#![no_main]

use aarch64_rt::entry;
use rpcrdma_fw_aarch64::{BOARD, CONFIG, DMA, N, REGION_LEN};
use rpcrdma_fw_common::run;
use rpcrdma_fw_common::semihosting;

entry!(main, 32);
fn main(_x0: u64, _x1: u64, _x2: u64, _x3: u64) -> ! {
    semihosting::exit(run::<N, REGION_LEN>(&BOARD, &DMA, CONFIG))
}
