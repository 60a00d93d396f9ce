//! What the four firmware examples share: a static DMA region, the core's receive pool over it, a
//! simulated NIC that "receives" a scripted sequence of RPC-over-RDMA messages into the posted
//! buffers, the server loop that decodes, replies and releases, and the checks at the end.
//!
//! Each target crate (`cortex-m4`, `riscv32`, `riscv64`, `aarch64`) only brings its start-up code,
//! memory map and fault handlers, and calls [`run`] with its pool size; [`run`]'s verdict becomes
//! the exit status through semihosting ([`semihosting::exit`]).
//!
//! Logging: `defmt` everywhere — the core's trace points (its `fmt` mux, feature `defmt`) and this
//! crate's lines — framed by [`logger`] onto semihosting standard output; decode on the host with
//! `defmt-print -e <ELF>`.
//!
//! # Panic-freedom proof
//!
//! In release builds the panic handler calls a function that does not exist, so an example links
//! only if the optimiser removed every panic path from everything it runs: the core's decoder,
//! pool and reply encoders, and this crate. Inputs reach the core through `black_box`
//! ([`nic`]), so the decoder is compiled for arbitrary bytes, not for the script's. Debug builds
//! keep an ordinary handler that reports the location and exits with status 1.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod dma;
mod logger;
pub mod nic;
pub mod probe;
pub mod requester;
pub mod semihosting;
pub mod server;

use core::mem::size_of;

use rpcrdma_core::dma::DmaRegion;
use rpcrdma_core::pool::{PoolConfig, RecvPool};

use crate::dma::DmaMemory;
use crate::nic::{RemoteRegion, RequesterMemory, SimNic};
use crate::requester::{
    teardown, Requester, ADDR_A, ADDR_B, ADDR_C, HANDLE_A, HANDLE_B, HANDLE_C, REGION_A, REGION_B,
    REPLY_CHUNK_LEN, SCRIPT,
};
use crate::server::Server;

/// Times the script runs (buffers are reused across rounds: persistent Receive buffers).
pub const ROUNDS: u32 = 4;

/// Where an example runs and how its NIC sees the DMA memory.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    /// Target triple.
    pub target: &'static str,
    /// The QEMU machine.
    pub machine: &'static str,
    /// The device address (IOVA) of the DMA memory: deliberately not its CPU address.
    pub iova: u64,
    /// The local key the memory is registered under.
    pub lkey: u32,
}

/// Runs the example: the script [`ROUNDS`] times over a pool of `N` Receive buffers carved from
/// `dma`, then the teardown and the final accounting. Returns whether every check passed.
pub fn run<const N: usize, const LEN: usize>(
    board: &Board,
    dma: &'static DmaMemory<LEN>,
    config: PoolConfig,
) -> bool {
    defmt::info!(
        "rpcrdma firmware example on {=str} ({=str}): N={=usize}, {=usize}-byte Receive buffers, credits {=u16}, batch {=u16}",
        board.target,
        board.machine,
        N,
        config.buffer_size,
        config.credits,
        config.batch
    );
    report_ram::<N>(config.buffer_size, LEN);

    let Some(cpu) = dma.claim() else {
        defmt::error!("FAIL: DMA memory already claimed");
        return false;
    };
    // SAFETY: `cpu .. cpu + LEN` is the static DMA memory, claimed once, so nothing else in the
    // program references it. Its only other user is the simulated NIC below, which writes a
    // buffer only while a Receive the pool posted is outstanding on it.
    let region = match unsafe { DmaRegion::new(cpu.as_ptr(), board.iova, LEN, board.lkey) } {
        Ok(r) => r,
        Err(e) => {
            defmt::error!("FAIL: DMA region refused: {}", e);
            return false;
        }
    };
    let pool = match RecvPool::<N>::new(region, config) {
        Ok(p) => p,
        Err(e) => {
            defmt::error!("FAIL: pool refused: {}", e);
            return false;
        }
    };
    let readable = [
        (
            RemoteRegion {
                handle: HANDLE_A,
                addr: ADDR_A,
                writable: false,
            },
            &REGION_A[..],
        ),
        (
            RemoteRegion {
                handle: HANDLE_B,
                addr: ADDR_B,
                writable: false,
            },
            &REGION_B[..],
        ),
    ];
    let mut reply_chunk_memory = [0u8; REPLY_CHUNK_LEN];
    let remote = RequesterMemory {
        readable: &readable,
        writable: RemoteRegion {
            handle: HANDLE_C,
            addr: ADDR_C,
            writable: true,
        },
        writable_bytes: &mut reply_chunk_memory,
    };
    // SAFETY: as for the region above: the NIC writes only into buffers of posted Receives.
    let mut nic = unsafe { SimNic::new(cpu, board.iova, LEN, board.lkey, remote) };
    let mut server = Server::new(pool);
    let mut requester = Requester::new(server.pool.credits(), server.pool.buffer_size());

    for round in 0..ROUNDS {
        for (i, step) in SCRIPT.iter().enumerate() {
            defmt::info!("[{=u32}.{=usize}] {=str}", round, i, step.name);
            requester.step(&mut server, &mut nic, step);
        }
    }
    let teardown_ok = teardown(&mut requester, &mut server, &mut nic);
    if !teardown_ok {
        defmt::error!("FAIL: teardown: pool not closed or not fully drained");
    }

    let counters = server.pool.counters();
    defmt::info!("pool counters: {}", counters);
    defmt::info!("server: {}", server.stats);
    let counters_ok = requester.check_counters(&counters);
    let s = &server.stats;
    let t = &requester.tally;
    let consistent = counters.batches == nic.doorbells
        && counters.posted == nic.wrs_accepted
        && server.sync.calls as u64 == counters.completed
        && s.failures == 0
        && s.error_replies as u64 == t.err_vers + t.err_chunk
        && s.dropped as u64 == t.dropped
        && s.refused_completions as u64
            == t.rejected_unknown + t.rejected_stale + t.rejected_duplicate
        && (s.inline_replies + s.reply_chunk_replies + s.backchannel_replies) as u64 == t.delivered;
    if !consistent {
        defmt::error!("FAIL: server, NIC and pool accounting disagree");
    }
    let passed = requester.failures == 0 && teardown_ok && counters_ok && consistent;
    if passed {
        defmt::info!(
            "PASS: {=u64} messages: {=u64} calls answered, {=u64} backchannel replies, {=u64} ERR_CHUNK, {=u64} ERR_VERS, {=u64} dropped; {=u64} replies checked, {=u64} completions refused, {=u64} Receives posted in {=u64} doorbells, {=u64} bytes RDMA-read",
            t.messages,
            t.delivered - t.backchannel,
            t.backchannel,
            t.err_chunk,
            t.err_vers,
            t.dropped,
            t.replies_checked,
            t.rejected_unknown + t.rejected_stale + t.rejected_duplicate,
            counters.posted,
            counters.batches,
            nic.read_bytes
        );
    } else {
        defmt::error!("FAIL: {=u32} failed checks", requester.failures);
    }
    passed
}

/// Logs the RAM the receive path takes: `N × stride` of DMA memory plus the pool's bookkeeping,
/// `N × per_descriptor + fixed` (measured on this target from two pool sizes).
fn report_ram<const N: usize>(buffer_size: usize, region: usize) {
    let one = size_of::<RecvPool<'static, 1>>();
    let many = size_of::<RecvPool<'static, 65>>();
    let per_descriptor = (many - one) / 64;
    let fixed = one - per_descriptor;
    defmt::info!(
        "ram: N={=usize} buffer={=usize} stride={=usize} region={=usize} pool={=usize} per_descriptor={=usize} fixed={=usize} server={=usize}",
        N,
        buffer_size,
        PoolConfig::region_len(1, buffer_size),
        region,
        size_of::<RecvPool<'static, N>>(),
        per_descriptor,
        fixed,
        size_of::<Server<'static, N>>()
    );
}

/// A fault (hard fault, trap, synchronous exception): logged, then exit status 1.
pub fn fault(what: &str) -> ! {
    defmt::error!("FAIL: fault: {=str}", what);
    semihosting::exit(false)
}

/// Release builds: the link fails if any panic path survived optimisation (see the crate docs).
#[cfg(not(debug_assertions))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    extern "C" {
        /// Deliberately undefined: referenced only if a panic can happen.
        fn rpcrdma_firmware_release_build_has_a_panic_path() -> !;
    }
    // SAFETY: never runs: the symbol does not exist, so a build that reaches here does not link.
    unsafe { rpcrdma_firmware_release_build_has_a_panic_path() }
}

/// Debug builds: report where, exit with status 1.
#[cfg(debug_assertions)]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(l) => defmt::error!("FAIL: panic at {=str}:{=u32}", l.file(), l.line()),
        None => defmt::error!("FAIL: panic"),
    }
    semihosting::exit(false)
}
