//! Fuzzes the whole responder on the software NIC: arbitrary messages (each input is split into
//! messages at 0xff bytes) arrive at an endpoint whose requester has memory registered at the
//! addresses a Read, write or reply chunk may name, so chunk lists that the decoder accepts
//! really move data. Checks, beyond "no panic": the requester never meets RNR, every reply
//! decodes with the requester-side decoder (`wire::decode_reply`), no grant exceeds the Receives
//! posted when it went out, and after a disconnect and drain nothing is held (no Receive, page,
//! call slot or send-queue work request).
//!
//! The memory and the NIC are made once per process and reused: each input is a new
//! connection (the NIC is reset, a new endpoint is carved from the same memory), which is what
//! a server does between connections too, and costs a fraction of allocating and registering
//! everything again.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use rpcrdma_core::endpoint::{Endpoint, EndpointConfig};
use rpcrdma_core::wire::{decode_reply, DecodeLimits};
use rpcrdma_services::ExampleService;
use rpcrdma_softnic::memory::DmaMemory;
use rpcrdma_softnic::{Access, SoftNic};

type Nic = SoftNic<64, 256, 512, 4096, 64>;

const IOVA: u64 = 0x7000_0000_0000;
const LKEY: u32 = 0x11;
/// Requester memory: a segment naming handle 1 at address 0 .. 64 KiB is valid.
const REMOTE_LEN: usize = 65536;

const CONFIG: EndpointConfig = EndpointConfig {
    credits: 8,
    buffer_size: 1024,
    batch: 4,
    receive_buffers: 0,
    send_size: 1024,
    peer_inline: 1024,
    initiator_depth: 2,
    sq_depth: 128,
    page_size: 1024,
    sink_bytes: 16 * 1024,
    payload_bytes: 16 * 1024,
    limits: DecodeLimits {
        max_read_payload: 16384,
    },
    epoch: 3,
    signal_all: false,
};

struct World {
    local: DmaMemory,
    // Registered on the NIC as the requester's memory; kept alive with it.
    _remote: DmaMemory,
    nic: Box<Nic>,
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World::new());
}

impl World {
    fn new() -> World {
        let local = DmaMemory::new(CONFIG.region_len());
        let remote = DmaMemory::new(REMOTE_LEN);
        let mut nic: Box<Nic> = Box::new(SoftNic::new());
        local.register(&mut nic, IOVA, LKEY);
        remote.register_remote(&mut nic, 1, 0, Access::ReadWrite);
        World {
            local,
            _remote: remote,
            nic,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    WORLD.with(|w| run(&mut w.borrow_mut(), data));
});

fn run(world: &mut World, data: &[u8]) {
    let World { local, nic, .. } = world;
    let nic = &mut **nic;
    nic.reset();
    let mut endpoint: Endpoint<'_, 16, 16, 16> =
        Endpoint::new(local.region_at(IOVA, LKEY), &CONFIG).unwrap();
    endpoint.refill(nic).unwrap();
    let mut service = ExampleService::default();
    for msg in data
        .split(|b| *b == 0xff)
        .filter(|m| !m.is_empty())
        .take(32)
    {
        if nic.in_error() {
            break;
        }
        // A requester within its credits never meets RNR.
        assert!(nic.deliver(msg).is_ok() || nic.in_error(), "RNR");
        pump(&mut endpoint, nic, &mut service);
    }
    nic.flush();
    pump(&mut endpoint, nic, &mut service);
    let report = endpoint.drain();
    assert_eq!(
        report.connection.work_requests, 0,
        "flushes returned every work request"
    );
    assert_eq!(report.connection.calls, 0, "flushes finished every call");
    assert_eq!(report.leaked, 0, "nothing held after the drain");
    assert_eq!(endpoint.pool().in_flight(), 0);
}

fn pump(endpoint: &mut Endpoint<'_, 16, 16, 16>, nic: &mut Nic, service: &mut ExampleService) {
    for _ in 0..1000 {
        let n = endpoint.poll(nic, service).unwrap_or(0);
        while let Some(sent) = nic.take_sent() {
            let reply = match decode_reply(&sent.bytes) {
                Ok(reply) => reply,
                Err(e) => panic!("the responder sent a reply that does not decode: {e}"),
            };
            assert!(
                reply.credits() as usize <= sent.posted_at_send,
                "grant above posted Receives"
            );
        }
        if n == 0 && nic.queued() == 0 && nic.pending() == 0 {
            break;
        }
    }
}
