//! The firmware's front end to the core's responder: this is the part a customer writes, and
//! it holds no protocol logic.
//!
//! One [`Server::poll`] round: poll up to [`POLL_BATCH`] completions from the NIC, hand each to
//! the core's [`Connection`] (which validates it, decodes, pulls Read chunks, runs the service
//! and builds the reply), then [`Connection::flush`]: the pool is refilled until its watermark
//! holds, the credit grant goes into every reply, and the batch's RDMA Reads, RDMA Writes and
//! Sends go to the NIC as one chain. The service is the shared example service
//! ([`rpcrdma_services::ExampleService`]: NFS NULL and the test program).
//!
//! Nothing here allocates or panics.

use rpcrdma_core::device::{Completion, Device};
use rpcrdma_core::dma::DmaSync;
use rpcrdma_core::pages::PagePool;
use rpcrdma_core::pool::RecvPool;
use rpcrdma_core::responder::{Connection, Resources, ResponderCounters};
use rpcrdma_services::ExampleService;

use crate::Nic;

/// Completions taken per poll.
pub const POLL_BATCH: usize = 8;
/// Call slots per connection (capacity).
pub const CALLS: usize = 32;
/// Pages per page pool (capacity).
pub const PAGES: usize = 16;

/// The DMA sync hook for QEMU's cache-coherent memory: nothing to do, but counted, so the run
/// checks the pool calls it once per successful completion with exactly `byte_len` bytes.
#[derive(Debug, Default)]
pub struct CountingSync {
    /// Calls.
    pub calls: u32,
    /// Bytes synced.
    pub bytes: u64,
}

impl DmaSync for CountingSync {
    fn sync_for_cpu(&mut self, _device_addr: u64, _cpu: *const u8, len: usize) {
        self.calls += 1;
        self.bytes += len as u64;
    }
}

/// The server over a pool of `N` Receive buffers, one connection, and the example service.
pub struct Server<'d, const N: usize> {
    /// The core's receive pool.
    pub pool: RecvPool<'d, N>,
    /// Read sinks.
    pub sinks: PagePool<'d, PAGES>,
    /// Reply payload pages.
    pub payloads: PagePool<'d, PAGES>,
    /// The core's responder for the connection.
    pub conn: Connection<'d, CALLS>,
    /// The service.
    pub service: ExampleService,
    /// The sync hook.
    pub sync: CountingSync,
    /// Posts the device refused (the pool took those work requests back).
    pub post_failures: u32,
}

impl<'d, const N: usize> Server<'d, N> {
    /// A server over its parts.
    pub fn new(
        pool: RecvPool<'d, N>,
        sinks: PagePool<'d, PAGES>,
        payloads: PagePool<'d, PAGES>,
        conn: Connection<'d, CALLS>,
    ) -> Self {
        Server {
            pool,
            sinks,
            payloads,
            conn,
            service: ExampleService::default(),
            sync: CountingSync::default(),
            post_failures: 0,
        }
    }

    /// Posts Receives until the pool's watermark holds (one doorbell per chain).
    pub fn replenish(&mut self, nic: &mut Nic) {
        if let Err(e) = self.pool.refill(nic) {
            defmt::error!("post_recv refused: {}", e);
            self.post_failures += 1;
        }
    }

    /// One round: poll, handle, flush. Returns how many completions it consumed.
    pub fn poll(&mut self, nic: &mut Nic) -> usize {
        let mut wcs = [Completion::EMPTY; POLL_BATCH];
        let n = nic.poll(&mut wcs);
        let mut res = Resources::own(&mut self.pool, &mut self.sinks, &mut self.payloads);
        let polled = wcs.get(..n).unwrap_or_default();
        let result = self
            .conn
            .process(&mut res, nic, &mut self.sync, &mut self.service, polled);
        if let Err(e) = result {
            defmt::error!("post_send refused: {}", e);
            self.post_failures += 1;
        }
        n
    }

    /// The responder's counters.
    pub fn counters(&self) -> ResponderCounters {
        self.conn.counters()
    }
}
