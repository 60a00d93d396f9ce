//! Fuzzes the whole responder on the software NIC: arbitrary messages (each input is split into
//! messages at 0xff 0xff 0xff 0xff markers) arrive at a connection whose requester has memory
//! registered at the addresses a Read, write or reply chunk may name, so chunk lists that the
//! decoder accepts really move data. Checks, beyond "no panic": the requester never meets RNR,
//! every reply decodes with the requester-side decoder (`wire::decode_reply`), no grant exceeds
//! the Receives posted when it went out, and after a disconnect and drain
//! nothing is held (no Receive, page, call slot or send-queue work request).
#![no_main]
// The NIC's registrations and the DMA regions are raw memory handed over by pointer.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use libfuzzer_sys::fuzz_target;
use rpcrdma_core::device::{Completion, Device};
use rpcrdma_core::dma::{CoherentDma, DmaRegion};
use rpcrdma_core::pages::PagePool;
use rpcrdma_core::pool::{PoolConfig, RecvPool};
use rpcrdma_core::responder::{Connection, Resources, ResponderConfig};
use rpcrdma_core::wire::{decode_reply, DecodeLimits};
use rpcrdma_services::ExampleService;
use rpcrdma_softnic::{Access, SoftNic};

type Nic = SoftNic<64, 256, 512, 4096, 64>;

#[repr(C, align(4096))]
struct Mem<const L: usize>([u8; L]);

const IOVA: u64 = 0x7000_0000_0000;
const LKEY: u32 = 0x11;
/// Requester memory: a segment naming handle 1 at address 0 .. 64 KiB is valid.
const REMOTE_LEN: usize = 65536;

fuzz_target!(|data: &[u8]| {
    let pool_cfg = PoolConfig {
        buffer_size: 1024,
        credits: 8,
        batch: 4,
        limits: DecodeLimits {
            max_read_payload: 16384,
        },
        buffers: 0,
        epoch: 3,
    };
    let rcfg = ResponderConfig {
        credits: 8,
        send_size: 1024,
        initiator_depth: 2,
        sq_depth: 128,
        epoch: 4,
        signal_all: false,
    };
    let mut local = Box::new(Mem::<{ 64 * 1024 }>([0; 64 * 1024]));
    let mut remote = vec![0x5au8; REMOTE_LEN];
    let base = local.0.as_mut_ptr();
    let mut nic: Box<Nic> = Box::new(SoftNic::new());
    // SAFETY: both buffers outlive the NIC and are touched only through it and the core.
    unsafe {
        nic.register_local(LKEY, IOVA, NonNull::new(base).unwrap(), 64 * 1024)
            .unwrap();
        nic.register_remote(
            1,
            0,
            NonNull::new(remote.as_mut_ptr()).unwrap(),
            REMOTE_LEN,
            Access::ReadWrite,
        )
        .unwrap();
    }
    let part = |off: usize, len: usize| {
        // SAFETY: disjoint parts of `local`, which outlives every user; the NIC writes them only
        // through work requests the core posted.
        unsafe { DmaRegion::new(base.add(off), IOVA + off as u64, len, LKEY) }.unwrap()
    };
    let mut pool: RecvPool<'_, 16> = RecvPool::new(part(0, 16 * 1024), pool_cfg).unwrap();
    let conn: Connection<'_, 16> =
        Connection::new(part(16 * 1024, rcfg.send_region_len()), rcfg, 1024).unwrap();
    let sinks: PagePool<'_, 16> = PagePool::new(part(32 * 1024, 16 * 1024), 1024).unwrap();
    let payloads: PagePool<'_, 16> = PagePool::new(part(48 * 1024, 16 * 1024), 1024).unwrap();
    pool.refill(&mut *nic).unwrap();

    let mut rig = Rig {
        nic,
        pool,
        conn,
        sinks,
        payloads,
        service: ExampleService::default(),
    };
    for msg in data
        .split(|b| *b == 0xff)
        .filter(|m| !m.is_empty())
        .take(32)
    {
        if rig.nic.in_error() {
            break;
        }
        // A requester within its credits never meets RNR.
        assert!(rig.nic.deliver(msg).is_ok() || rig.nic.in_error(), "RNR");
        rig.pump();
    }
    rig.nic.flush();
    rig.pump();
    let mut res = Resources::own(&mut rig.pool, &mut rig.sinks, &mut rig.payloads);
    let report = rig.conn.drain(&mut res);
    assert_eq!(
        report.work_requests, 0,
        "flushes returned every work request"
    );
    assert_eq!(report.calls, 0, "flushes finished every call");
    rig.pool.drain();
    assert_eq!(rig.pool.in_flight(), 0);
    assert_eq!(rig.sinks.free_pages(), rig.sinks.page_count());
    assert_eq!(rig.payloads.free_pages(), rig.payloads.page_count());
});

struct Rig<'a> {
    nic: Box<Nic>,
    pool: RecvPool<'a, 16>,
    conn: Connection<'a, 16>,
    sinks: PagePool<'a, 16>,
    payloads: PagePool<'a, 16>,
    service: ExampleService,
}

impl Rig<'_> {
    fn pump(&mut self) {
        let mut wcs = [Completion::EMPTY; 8];
        for _ in 0..1000 {
            let n = self.nic.poll(&mut wcs);
            let mut res = Resources::own(&mut self.pool, &mut self.sinks, &mut self.payloads);
            let _ = self.conn.process(
                &mut res,
                &mut *self.nic,
                &mut CoherentDma,
                &mut self.service,
                &wcs[..n],
            );
            while let Some(sent) = self.nic.take_sent() {
                let reply = match decode_reply(&sent.bytes) {
                    Ok(reply) => reply,
                    Err(e) => panic!("the responder sent a reply that does not decode: {e}"),
                };
                let grant = reply.credits() as usize;
                assert!(grant <= sent.posted_at_send, "grant above posted Receives");
            }
            if n == 0 && self.nic.queued() == 0 && self.nic.pending() == 0 {
                break;
            }
        }
    }
}
