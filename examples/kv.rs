//! A service of your own over the software NIC, in one file: `cargo run --example kv`.
//!
//! The server side is three lines — describe the memory, build an [`Endpoint`], call
//! [`Endpoint::poll`] — around the [`KvService`] of this crate (an ONC RPC program with PUT
//! and GET). The requester side plays the RDMA peer: it builds RPC-over-RDMA calls, "sends"
//! them (the software NIC lands each in a posted Receive buffer), and reads the replies the
//! endpoint sent. Swap the software NIC for `rpcrdma-hosted`'s verbs device (see
//! `kv_verbs.rs`) or a DPU's own NIC, and the server side stays the same.

use rpcrdma_core::endpoint::{Endpoint, EndpointConfig};
use rpcrdma_core::wire::{decode_reply, HeaderRepr, Proc, Reply};
use rpcrdma_examples::{
    parse_result, put_args, KvService, KV_NOT_FOUND, KV_OK, KV_PROG, KV_VERS, PROC_GET, PROC_PUT,
};
use rpcrdma_services::oncrpc;
use rpcrdma_softnic::memory::DmaMemory;

/// The software NIC: 64 Receives, 64 send-queue work requests, 128 completions, an inbox of 16
/// messages of up to 4 KiB for the requester.
type Nic = rpcrdma_softnic::SoftNic<64, 64, 128, 4096, 16>;

/// The endpoint's shape: 16 credits, 4 KiB buffers both ways, small page pools.
const CONFIG: EndpointConfig = EndpointConfig {
    credits: 16,
    sink_bytes: 16 * 1024,
    payload_bytes: 16 * 1024,
    ..EndpointConfig::DEFAULT
};

fn main() {
    // 1. Memory the NIC can address, described once. `DmaMemory` (heap, page aligned) stands
    //    in for a hosted MR or a DPU's static DMA region; it registers itself on the NIC.
    let mut memory = DmaMemory::new(CONFIG.region_len());
    let mut nic: Box<Nic> = Box::new(Nic::new());
    memory.register(&mut nic, 0x7e00_0000_0000, 1);

    // 2. One endpoint owns the receive path: it carves the region into Receive buffers, send
    //    slots and pages. Capacities: 64 Receive descriptors, 64 call slots, 16 pages.
    let mut endpoint: Endpoint<'_, 64, 64, 16> =
        Endpoint::new(memory.region_at(0x7e00_0000_0000, 1), &CONFIG).expect("endpoint");
    endpoint.refill(&mut *nic).expect("post the first Receives");
    let mut service = KvService::default();

    // 3. The requester: PUT three keys, GET them back, GET one that is not there.
    let mut requester = Requester { xid: 1 };
    let puts: [(u32, &[u8]); 3] = [(1, b"one"), (2, b"two, a little longer"), (3, &[0xab; 200])];
    for (key, value) in puts {
        let mut args = [0u8; 512];
        let n = put_args(&mut args, key, value).expect("value fits");
        let reply = requester.call(&mut nic, &mut endpoint, &mut service, PROC_PUT, &args[..n]);
        let (status, _) = parse_result(&reply).expect("PUT result");
        assert_eq!(status, KV_OK);
        println!("PUT {key} ({} bytes): ok", value.len());
    }
    for (key, value) in puts {
        let reply = requester.call(
            &mut nic,
            &mut endpoint,
            &mut service,
            PROC_GET,
            &key.to_be_bytes(),
        );
        let (status, got) = parse_result(&reply).expect("GET result");
        assert_eq!((status, got), (KV_OK, value));
        println!("GET {key}: {} bytes, as stored", got.len());
    }
    let reply = requester.call(
        &mut nic,
        &mut endpoint,
        &mut service,
        PROC_GET,
        &9u32.to_be_bytes(),
    );
    assert_eq!(parse_result(&reply).map(|r| r.0), Ok(KV_NOT_FOUND));
    println!("GET 9: not found");

    // 4. The connection goes down: the NIC flushes what is posted, the endpoint takes every
    //    flush, and the drain proves nothing is held.
    nic.flush();
    while endpoint.poll(&mut *nic, &mut service).unwrap_or(0) > 0 {}
    let drain = endpoint.drain();
    let c = endpoint.counters();
    println!(
        "{} calls answered, {} Receives posted in {} doorbells; after the drain {} held",
        c.responder.calls, c.pool.posted, c.pool.batches, drain.leaked
    );
    assert_eq!(drain.leaked, 0);
}

/// The RDMA peer's side of the example.
struct Requester {
    xid: u32,
}

impl Requester {
    /// Sends one call and runs the endpoint until its reply came; returns the RPC reply.
    fn call(
        &mut self,
        nic: &mut Nic,
        endpoint: &mut Endpoint<'_, 64, 64, 16>,
        service: &mut KvService,
        proc_: u32,
        args: &[u8],
    ) -> Vec<u8> {
        self.xid += 1;
        let xid = self.xid;
        // RPC-over-RDMA header (RDMA_MSG, no chunks), then the ONC RPC call inline.
        let mut header = HeaderRepr::reply(xid, 16);
        header.proc_ = Proc::Msg;
        let mut msg = vec![0u8; header.buffer_len() + 40];
        let h = header.emit(&mut msg).expect("header");
        let c = oncrpc::emit_call(&mut msg[h..], xid, KV_PROG, KV_VERS, proc_).expect("call");
        msg.truncate(h + c);
        msg.extend_from_slice(args);
        nic.deliver(&msg)
            .expect("a Receive was posted (credits kept)");
        loop {
            endpoint.poll(&mut *nic, service).expect("post");
            if let Some(sent) = nic.take_sent() {
                // The reply's transport header, decoded as a requester does.
                match decode_reply(&sent.bytes).expect("a reply header") {
                    Reply::Rpc(r) if r.xid == xid => return r.rpc_message.to_vec(),
                    other => panic!("unexpected reply {other:?}"),
                }
            }
        }
    }
}
