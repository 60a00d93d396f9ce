//! What the four firmware examples share: a static DMA region carved into Receive buffers, send
//! slots, Read sinks and payload pages; the core's receive pool and responder over it; the
//! software NIC (`rpcrdma-softnic`, the same one the tests use) that "receives" a scripted
//! sequence of RPC-over-RDMA messages into the posted buffers and performs the responder's RDMA
//! Reads, Writes and Sends against the scripted requester's memory; and the checks at the end.
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

pub mod dma;
mod logger;
pub mod probe;
pub mod requester;
pub mod semihosting;
pub mod server;

use core::mem::size_of;

use core::ptr::NonNull;

use rpcrdma_core::endpoint::{Endpoint, EndpointConfig};
use rpcrdma_core::pool::{PoolConfig, RecvPool};
use rpcrdma_softnic::Access;

use crate::dma::DmaMemory;
use crate::requester::{
    teardown, Requester, ADDR_A, ADDR_B, ADDR_C, HANDLE_A, HANDLE_B, HANDLE_C, REGION_A, REGION_B,
    REGION_C_LEN, SCRIPT,
};
use crate::server::{Server, CALLS, PAGES};

/// The software NIC the examples use: 64 Receives, 64 send-queue work requests, 128
/// completions, an inbox of 16 messages of up to 1 KiB.
pub type Nic = rpcrdma_softnic::SoftNic<64, 64, 128, 1024, 16>;

/// Bytes of each send slot: the RFC 8166 default inline size.
pub const SEND_SIZE: usize = 1024;
/// Page size of the sink and payload pools.
pub const PAGE_SIZE: usize = 1024;
/// Bytes of Read-sink pages.
pub const SINK_BYTES: usize = 4096;
/// Bytes of payload pages.
pub const PAYLOAD_BYTES: usize = 4096;

/// The endpoint configuration for a board's pool: its Receive buffers and credits, 1 KiB send
/// slots (the RFC 8166 default inline size), 4 Reads in flight, a 64-entry send queue, 4 KiB
/// each of sink and payload pages.
pub const fn endpoint_config(pool: &PoolConfig) -> EndpointConfig {
    EndpointConfig {
        credits: pool.credits,
        buffer_size: pool.buffer_size,
        batch: pool.batch,
        receive_buffers: pool.buffers,
        send_size: SEND_SIZE,
        peer_inline: SEND_SIZE,
        initiator_depth: 4,
        sq_depth: 64,
        page_size: PAGE_SIZE,
        sink_bytes: SINK_BYTES,
        payload_bytes: PAYLOAD_BYTES,
        limits: pool.limits,
        epoch: pool.epoch,
        signal_all: false,
    }
}

/// DMA memory an example needs: the endpoint's region (Receive buffers, send slots, sink and
/// payload pages, each cache-line aligned).
pub const fn dma_len(pool: &PoolConfig) -> usize {
    endpoint_config(pool).region_len()
}

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
// Carves the static DMA memory into regions and registers it with the NIC: raw pointers.
#[allow(unsafe_code)]
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

    let Some((region, cpu)) = dma.claim(board.iova, board.lkey) else {
        defmt::error!("FAIL: DMA memory already claimed");
        return false;
    };
    // One region, carved by the endpoint: Receive buffers, send slots, sinks, payload pages.
    let endpoint = match Endpoint::<N, CALLS, PAGES>::new(region, &endpoint_config(&config)) {
        Ok(e) => e,
        Err(e) => {
            defmt::error!("FAIL: endpoint refused: {}", e);
            return false;
        }
    };
    // The requester's memory: two read-only regions (Read chunk sources) and one writable
    // region (its write and reply chunks).
    let mut region_c = [0u8; REGION_C_LEN];
    let region_c_ptr = NonNull::from(&mut region_c).cast::<u8>();
    let mut nic = Nic::new();
    // SAFETY: the DMA memory is valid for LEN bytes for the program's life; the NIC writes
    // into it only through work requests the core posted. Regions A and B are statics the NIC
    // only reads (registered for RDMA Read only); region C outlives the NIC and is read by the
    // requester only between polls, when no RDMA Write is queued.
    let registered = unsafe {
        nic.register_local(board.lkey, board.iova, cpu, LEN)
            .and_then(|()| {
                nic.register_remote(
                    HANDLE_A,
                    ADDR_A,
                    NonNull::from(&REGION_A).cast::<u8>(),
                    REGION_A.len(),
                    Access::Read,
                )
            })
            .and_then(|()| {
                nic.register_remote(
                    HANDLE_B,
                    ADDR_B,
                    NonNull::from(&REGION_B).cast::<u8>(),
                    REGION_B.len(),
                    Access::Read,
                )
            })
            .and_then(|()| {
                nic.register_remote(HANDLE_C, ADDR_C, region_c_ptr, REGION_C_LEN, Access::Write)
            })
    };
    if registered.is_err() {
        defmt::error!("FAIL: NIC registration table full");
        return false;
    }
    let mut server = Server::new(endpoint);
    let mut requester = Requester::new(
        server.endpoint.pool().credits(),
        server.endpoint.pool().buffer_size(),
        region_c_ptr,
    );

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

    let counters = server.endpoint.pool().counters();
    let r = server.counters();
    defmt::info!("pool counters: {}", counters);
    defmt::info!("responder counters: {}", r);
    defmt::info!("service: {}", server.service.stats);
    let counters_ok = requester.check_counters(&counters, &r);
    let t = &requester.tally;
    let consistent = counters.batches == nic.counters.recv_doorbells
        && server.sync.calls as u64 == counters.completed
        && server.post_failures == 0
        && r.err_vers + r.err_chunk == t.err_vers + t.err_chunk
        && r.dropped == t.dropped
        // The script's backward reply answers no backward call: counted as unmatched.
        && r.inline_replies + r.reply_chunk_replies + r.backchannel_unmatched == t.delivered
        && r.backchannel == 0
        && r.read_bytes == nic.counters.read_bytes
        && r.write_chunk_bytes + r.reply_chunk_bytes == nic.counters.write_bytes
        && nic.counters.rnr == 0;
    if !consistent {
        defmt::error!("FAIL: server, NIC and pool accounting disagree");
    }
    let passed = requester.failures == 0 && teardown_ok && counters_ok && consistent;
    if passed {
        defmt::info!(
            "PASS: {=u64} messages: {=u64} calls answered, {=u64} unsolicited backchannel replies dropped, {=u64} ERR_CHUNK, {=u64} ERR_VERS, {=u64} dropped; {=u64} replies checked, {=u64} completions refused, {=u64} Receives posted in {=u64} doorbells, {=u64} bytes RDMA-read",
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
            nic.counters.read_bytes
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
        "ram: N={=usize} buffer={=usize} stride={=usize} region={=usize} pool={=usize} per_descriptor={=usize} fixed={=usize} server={=usize} nic={=usize}",
        N,
        buffer_size,
        PoolConfig::region_len(1, buffer_size),
        region,
        size_of::<RecvPool<'static, N>>(),
        per_descriptor,
        fixed,
        size_of::<Server<'static, N>>(),
        size_of::<Nic>()
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
// Calls an undefined extern function, which is what makes a surviving panic path fail to link.
#[allow(unsafe_code)]
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
