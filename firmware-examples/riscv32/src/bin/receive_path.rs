//! The example: the scripted RPC-over-RDMA traffic through the core's receive path, checked;
//! exit status 0 when every check passed.
#![no_std]
#![no_main]

use riscv_rt::entry;
use rpcrdma_fw_common::run;
use rpcrdma_fw_common::semihosting;
use rpcrdma_fw_riscv32::{BOARD, CONFIG, DMA, N, REGION_LEN};

#[entry]
fn main() -> ! {
    semihosting::exit(run::<N, REGION_LEN>(&BOARD, &DMA, CONFIG))
}
