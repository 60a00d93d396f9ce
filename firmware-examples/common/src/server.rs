//! The firmware's front end to the core's responder: this is the part a customer writes, and
//! it holds no protocol logic.
//!
//! One [`Server::poll`] round is one [`Endpoint::poll_with`]: up to [`POLL_BATCH`] completions
//! from the NIC, each validated, decoded, its Read chunks pulled, the service run and the reply
//! built by the core; then the pool is refilled until its watermark holds, the credit grant goes
//! into every reply, and the batch's RDMA Reads, RDMA Writes and Sends go to the NIC as one
//! chain. The service is the shared example service
//! ([`rpcrdma_services::ExampleService`]: NFS NULL and the test program).
//!
//! Nothing here allocates or panics.

use rpcrdma_core::dma::DmaSync;
use rpcrdma_core::endpoint::Endpoint;
pub use rpcrdma_core::endpoint::POLL_BATCH;
use rpcrdma_core::responder::ResponderCounters;
use rpcrdma_services::ExampleService;

use crate::Nic;

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

/// The server: the core's [`Endpoint`] over `N` Receive buffers, and the example service.
pub struct Server<'d, const N: usize> {
    /// The core's endpoint: receive pool, page pools and the connection's responder.
    pub endpoint: Endpoint<'d, N, CALLS, PAGES>,
    /// The service.
    pub service: ExampleService,
    /// The sync hook.
    pub sync: CountingSync,
    /// Posts the device refused (the pool took those work requests back).
    pub post_failures: u32,
}

impl<'d, const N: usize> Server<'d, N> {
    /// A server over its endpoint.
    pub fn new(endpoint: Endpoint<'d, N, CALLS, PAGES>) -> Self {
        Server {
            endpoint,
            service: ExampleService::default(),
            sync: CountingSync::default(),
            post_failures: 0,
        }
    }

    /// Posts Receives until the pool's watermark holds (one doorbell per chain).
    pub fn replenish(&mut self, nic: &mut Nic) {
        if let Err(e) = self.endpoint.refill(nic) {
            defmt::error!("post_recv refused: {}", e);
            self.post_failures += 1;
        }
    }

    /// One round: poll up to [`POLL_BATCH`] completions, handle, flush. Returns how many
    /// completions it consumed.
    pub fn poll(&mut self, nic: &mut Nic) -> usize {
        match self
            .endpoint
            .poll_with(nic, &mut self.sync, &mut self.service)
        {
            Ok(n) => n,
            Err(e) => {
                defmt::error!("post_send refused: {}", e);
                self.post_failures += 1;
                0
            }
        }
    }

    /// The responder's counters.
    pub fn counters(&self) -> ResponderCounters {
        self.endpoint.connection().counters()
    }
}
