//! The receive pool end to end over the software NIC model: posting, completion validation,
//! zero-copy hand-up, release, flush, drain — and every bad completion as a named test.

use rpcrdma_core::device::Device;
use rpcrdma_core::dma::{CoherentDma, DmaError, DmaRegion};
use rpcrdma_core::pool::{
    Completed, Completion, CompletionError, CompletionStatus, Counters, DescState, PoolConfig,
    PoolError, Received, RecvPool, RecvWr, StaleToken,
};
use rpcrdma_core::wire::{DecodeError, DecodeLimits, ErrorReplyKind};
use rpcrdma_tests::fixtures::*;
use rpcrdma_tests::nic::{DmaMemory, RecordingSync, SoftNic, IOVA_BASE, LKEY, WC_LOC_LEN_ERR};

const N: usize = 16;
const CONFIG: PoolConfig = PoolConfig {
    buffer_size: 1024,
    credits: 8,
    batch: 4,
    limits: DecodeLimits::DEFAULT,
    buffers: N as u16,
    epoch: 0,
};

fn memory() -> DmaMemory {
    DmaMemory::new(PoolConfig::region_len(N, CONFIG.buffer_size))
}

fn post(pool: &mut RecvPool<'_, N>, nic: &mut SoftNic) -> usize {
    let mut wrs = [RecvWr::default(); N];
    let n = pool.post(&mut wrs);
    if n > 0 {
        nic.post_recv(&wrs[..n])
            .expect("model NIC accepts the pool's WRs");
    }
    n
}

fn next(pool: &mut RecvPool<'_, N>, nic: &mut SoftNic) -> Result<Completed, CompletionError> {
    let mut c = [Completion {
        wr_id: 0,
        status: CompletionStatus::Success,
        byte_len: 0,
        qp: 0,
    }];
    assert_eq!(nic.poll(&mut c), 1, "a completion is pending");
    pool.complete(&c[0], &mut CoherentDma)
}

fn message(c: Result<Completed, CompletionError>) -> Received {
    match c {
        Ok(Completed::Message(rx)) => rx,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn assert_accounting(pool: &RecvPool<'_, N>) {
    assert_eq!(pool.posted() + pool.held() + pool.free(), N);
    let states = (0..N).map(|i| pool.state(i).unwrap());
    assert_eq!(
        states.clone().filter(|s| *s == DescState::Posted).count(),
        pool.posted()
    );
    assert_eq!(
        states.filter(|s| *s == DescState::Held).count(),
        pool.held()
    );
}

// ---------------------------------------------------------------------------------------------
// Construction

#[test]
fn test_config_errors_at_construction() {
    let mem = memory();
    let cases = [
        (
            PoolConfig {
                buffer_size: 1023,
                ..CONFIG
            },
            PoolError::BufferSize { size: 1023 },
        ),
        (
            PoolConfig {
                buffer_size: 65537,
                ..CONFIG
            },
            PoolError::BufferSize { size: 65537 },
        ),
        (
            PoolConfig {
                credits: 0,
                ..CONFIG
            },
            PoolError::ZeroCredits,
        ),
        (PoolConfig { batch: 0, ..CONFIG }, PoolError::ZeroBatch),
        (
            PoolConfig {
                credits: 13,
                ..CONFIG
            },
            PoolError::TooFewDescriptors { n: 16, needed: 17 },
        ),
        (
            PoolConfig {
                buffer_size: 2048,
                ..CONFIG
            },
            PoolError::RegionTooSmall {
                needed: 16 * 2048,
                len: 16 * 1024,
            },
        ),
    ];
    for (config, err) in cases {
        let e = RecvPool::<N>::new(mem.region(), config).unwrap_err();
        assert_eq!(e, err);
        assert!(!e.to_string().is_empty());
    }
}

#[test]
// `DmaRegion::new` is an unsafe constructor: the test hands it bad pointers to be rejected.
#[allow(unsafe_code)]
fn test_region_misaligned_or_null() {
    let mem = memory();
    // SAFETY: only constructs (and rejects) descriptors; nothing is accessed.
    let e = unsafe { DmaRegion::new(mem.cpu().add(8), IOVA_BASE, 1024, LKEY) }.unwrap_err();
    assert!(matches!(e, DmaError::Misaligned { .. }));
    let e = unsafe { DmaRegion::new(mem.cpu(), IOVA_BASE + 4, 1024, LKEY) }.unwrap_err();
    assert!(matches!(e, DmaError::Misaligned { .. }));
    let e = unsafe { DmaRegion::new(std::ptr::null_mut(), 0, 1024, LKEY) }.unwrap_err();
    assert_eq!(e, DmaError::NullPointer);
    let e = unsafe { DmaRegion::new(mem.cpu(), u64::MAX - 63, 1024, LKEY) }.unwrap_err();
    assert_eq!(e, DmaError::AddressOverflow);
}

#[test]
fn test_stride_rounds_to_cache_line() {
    // 1000-byte buffers are refused (below 1024); 1100 rounds to a 1152-byte stride.
    let config = PoolConfig {
        buffer_size: 1100,
        ..CONFIG
    };
    let mem = DmaMemory::new(PoolConfig::region_len(N, 1100));
    assert_eq!(mem.len(), 16 * 1152);
    let mut pool = RecvPool::<N>::new(mem.region(), config).unwrap();
    let mut wrs = [RecvWr::default(); N];
    let n = pool.post(&mut wrs);
    for w in wrs[..n].windows(2) {
        assert_eq!(w[1].addr - w[0].addr, 1152);
    }
}

// ---------------------------------------------------------------------------------------------
// Posting

#[test]
fn test_post_batch_one_sge_each() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut wrs = [RecvWr::default(); N];
    let n = pool.post(&mut wrs);
    assert_eq!(n, 12, "credits + batch");
    let mut addrs: Vec<u64> = wrs[..n].iter().map(|w| w.addr).collect();
    for w in &wrs[..n] {
        assert_eq!((w.length, w.lkey), (1024, LKEY));
        assert!(w.addr >= IOVA_BASE && w.addr < IOVA_BASE + mem.len() as u64);
        assert_eq!((w.addr - IOVA_BASE) % 64, 0);
    }
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), n, "every WR has its own buffer");
    let c = pool.counters();
    assert_eq!((c.posted, c.batches), (12, 1));
    assert_eq!(pool.post(&mut wrs), 0, "nothing more until the watermark");
}

#[test]
fn test_watermark_refills_in_batches() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    assert_eq!(post(&mut pool, &mut nic), 12);
    let msg = bytes(&MSG_EMPTY_LISTS);
    let mut held = Vec::new();
    for i in 1..=3 {
        nic.deliver(&msg).unwrap();
        held.push(message(next(&mut pool, &mut nic)));
        assert_eq!(
            post(&mut pool, &mut nic),
            0,
            "posted {} > credits: no doorbell",
            12 - i
        );
    }
    nic.deliver(&msg).unwrap();
    held.push(message(next(&mut pool, &mut nic)));
    assert_eq!(pool.posted(), 8);
    // Posted fell to the credit grant: refill a whole batch in one post.
    assert_eq!(post(&mut pool, &mut nic), 4);
    assert_eq!(pool.posted(), 12);
    assert_eq!(nic.counters.recv_doorbells, 2);
    for rx in held {
        pool.release(rx).unwrap();
    }
    assert_accounting(&pool);
}

#[test]
fn test_post_bounded_by_free_descriptors() {
    // All but 4 descriptors held: a refill posts what is free, never more.
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    let msg = bytes(&MSG_EMPTY_LISTS);
    let mut held = Vec::new();
    for _ in 0..12 {
        if pool.posted() == 0 || pool.needs_post() {
            post(&mut pool, &mut nic);
        }
        nic.deliver(&msg).unwrap();
        held.push(message(next(&mut pool, &mut nic)));
    }
    post(&mut pool, &mut nic);
    assert_eq!(pool.held(), 12);
    assert!(pool.posted() <= N - 12);
    assert_accounting(&pool);
}

#[test]
fn test_cancel_returns_refused_wrs() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut wrs = [RecvWr::default(); N];
    let n = pool.post(&mut wrs);
    // The device accepted the first 5 and refused the rest (bad_wr = 5).
    assert_eq!(pool.cancel(&wrs[5..n]), n - 5);
    assert_eq!(pool.posted(), 5);
    assert_eq!(
        pool.cancel(&wrs[5..n]),
        0,
        "cancelling twice changes nothing"
    );
    assert_eq!(pool.counters().cancelled, (n - 5) as u64);
    assert_accounting(&pool);
}

// ---------------------------------------------------------------------------------------------
// The receive path

#[test]
fn test_full_cycle_zero_copy_view() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    let wr_id = nic.deliver(&bytes(&MSG_EMPTY_LISTS)).unwrap();
    let rx = message(next(&mut pool, &mut nic));
    assert_eq!((rx.xid(), rx.byte_len()), (XID, 68));
    assert_eq!(pool.state(rx.index()), Some(DescState::Held));
    {
        let view = pool.view(&rx).unwrap();
        assert_eq!(view.head(), &bytes(&RPC_NULL_CALL)[..]);
        assert!(view.pages().is_empty() && view.tail().is_empty());
        // No copy: head points into the Receive buffer, just after the 28-byte header.
        let buffer = mem.cpu() as usize + (wr_id & 0xffff) as usize * 1024;
        assert_eq!(view.head().as_ptr() as usize, buffer + 28);
        assert_eq!(view.message().credits(), 32);
    }
    pool.release(rx).unwrap();
    let c = pool.counters();
    assert_eq!(
        (c.completed, c.delivered, c.released, c.bytes),
        (1, 1, 1, 68)
    );
    assert_accounting(&pool);
}

#[test]
fn test_sync_hook_gets_exactly_byte_len() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    let mut sync = RecordingSync::default();
    for words in [&MSG_EMPTY_LISTS[..], &NOMSG_CALL_CHUNK[..]] {
        let msg = bytes(words);
        let wr_id = nic.deliver(&msg).unwrap();
        let mut c = [Completion {
            wr_id: 0,
            status: CompletionStatus::Success,
            byte_len: 0,
            qp: 0,
        }];
        nic.poll(&mut c);
        let rx = match pool.complete(&c[0], &mut sync).unwrap() {
            Completed::Message(rx) => rx,
            other => panic!("{other:?}"),
        };
        let index = (wr_id & 0xffff) as usize;
        let (dev, cpu, len) = *sync.calls.last().unwrap();
        assert_eq!(dev, IOVA_BASE + index as u64 * 1024);
        assert_eq!(cpu, mem.cpu() as usize + index * 1024);
        assert_eq!(len, msg.len());
        pool.release(rx).unwrap();
    }
    assert_eq!(sync.calls.len(), 2);
}

#[test]
fn test_view_with_read_chunk_splits_head_and_tail() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    // Read chunk at position 32 of a 40-byte inline call: head 32 bytes, tail 8.
    let mut w = MSG_READ_CHUNK.to_vec();
    w[5] = 32;
    nic.deliver(&bytes(&w)).unwrap();
    let rx = message(next(&mut pool, &mut nic));
    let view = pool.view(&rx).unwrap();
    assert_eq!(
        (
            view.head().len(),
            view.tail().len(),
            view.read_payload_len()
        ),
        (32, 8, 8192)
    );
    assert_eq!(view.tail(), &bytes(&RPC_NULL_CALL)[32..]);
    // NOMSG: the whole call is in the call chunk.
    pool.release(rx).unwrap();
    nic.deliver(&bytes(&NOMSG_CALL_CHUNK)).unwrap();
    let rx = message(next(&mut pool, &mut nic));
    let view = pool.view(&rx).unwrap();
    assert_eq!((view.inline_len(), view.read_payload_len()), (0, 2048));
    pool.release(rx).unwrap();
}

#[test]
fn test_malformed_message_gets_reply_and_descriptor_back() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    nic.deliver(&bytes(&[XID, 2, 32, 0, 0, 0, 0])).unwrap();
    match next(&mut pool, &mut nic) {
        Ok(Completed::Rejected {
            error,
            reply: Some(r),
        }) => {
            assert_eq!(error, DecodeError::UnsupportedVersion { vers: 2 });
            assert_eq!((r.xid, r.vers, r.credits), (XID, 2, 8));
            assert_eq!(r.kind, ErrorReplyKind::Vers { low: 1, high: 1 });
        }
        other => panic!("{other:?}"),
    }
    nic.deliver(&bytes(&[XID, 1, 32, 0, 0, 1, 0, 0])).unwrap();
    match next(&mut pool, &mut nic) {
        Ok(Completed::Rejected {
            error: DecodeError::EmptyChunk { .. },
            reply: Some(r),
        }) => {
            assert_eq!(r.kind, ErrorReplyKind::Chunk)
        }
        other => panic!("{other:?}"),
    }
    nic.deliver(&bytes(&[XID, 1, 32, 3])).unwrap();
    assert!(matches!(
        next(&mut pool, &mut nic),
        Ok(Completed::Rejected {
            error: DecodeError::UnexpectedProc { proc_: 3 },
            reply: None
        })
    ));
    let c = pool.counters();
    assert_eq!(
        (c.err_vers, c.err_chunk, c.dropped, c.delivered),
        (1, 1, 1, 0)
    );
    assert_eq!(pool.held(), 0);
    assert_accounting(&pool);
}

#[test]
fn test_short_message_in_reused_buffer_is_dropped_not_answered_from_stale_bytes() {
    // One descriptor cycles: a full message, then a 12-byte one into the same buffer.
    let mem = memory();
    let config = PoolConfig {
        credits: 1,
        batch: 1,
        buffers: 2,
        ..CONFIG
    };
    let mut pool = RecvPool::<2>::new(mem.region(), config).unwrap();
    let mut nic = mem.nic();
    let mut wrs = [RecvWr::default(); 2];
    let n = pool.post(&mut wrs);
    nic.post_recv(&wrs[..n]).unwrap();
    for _ in 0..2 {
        nic.deliver(&bytes(&MSG_EMPTY_LISTS)).unwrap();
    }
    let mut c = [Completion {
        wr_id: 0,
        status: CompletionStatus::Success,
        byte_len: 0,
        qp: 0,
    }; 2];
    nic.poll(&mut c);
    for c in c {
        match pool.complete(&c, &mut CoherentDma).unwrap() {
            Completed::Message(rx) => pool.release(rx).unwrap(),
            other => panic!("{other:?}"),
        }
    }
    let n = pool.post(&mut wrs);
    nic.post_recv(&wrs[..n]).unwrap();
    nic.deliver(&bytes(&[0xdead_beef, 1, 5])).unwrap();
    nic.poll(&mut c[..1]);
    let out = pool.complete(&c[0], &mut CoherentDma).unwrap();
    assert_eq!(
        out,
        Completed::Rejected {
            error: DecodeError::TooShortForHeader { len: 12 },
            reply: None
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Bad completions

/// A successful completion with `wr_id` arrives: the pool must refuse it as unknown.
fn assert_unknown(pool: &mut RecvPool<'_, N>, nic: &mut SoftNic, wr_id: u64) {
    nic.inject(Completion {
        wr_id,
        status: CompletionStatus::Success,
        byte_len: 28,
        qp: 0,
    })
    .unwrap();
    assert_eq!(next(pool, nic), Err(CompletionError::UnknownWrId { wr_id }));
}

#[test]
fn test_completion_unknown_wr_id_out_of_range() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    assert_unknown(&mut pool, &mut nic, (1u64 << 32) | N as u64);
    assert_eq!(pool.counters().rejected_unknown, 1);
    assert_eq!(pool.posted(), 12);
    assert_accounting(&pool);
}

#[test]
fn test_completion_forged_wr_id_reserved_bits() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    // A real posted id with junk in the reserved bits, and an all-ones id.
    for wr_id in [(1u64 << 32) | 0x0001_0000, u64::MAX] {
        assert_unknown(&mut pool, &mut nic, wr_id);
    }
    assert_eq!(pool.counters().rejected_unknown, 2);
    assert_accounting(&pool);
}

/// The descriptor key marks Posted and Free with 0xffff / 0xfffe in the index bits: a forged
/// id carrying either marker (on a real generation and tag, or where a Held key would match)
/// is unknown, never a match.
#[test]
fn test_completion_forged_wr_id_with_state_markers() {
    use rpcrdma_core::device::{WrId, WrKind};
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    nic.deliver(&bytes(&MSG_EMPTY_LISTS)).unwrap();
    let rx = message(next(&mut pool, &mut nic));
    let held = WrId::new(WrKind::Recv, 0, rx.index() as u16, 1).0;
    let posted = WrId::new(WrKind::Recv, 0, 1, 1).0;
    for wr_id in [
        held | 0xffff,
        held & !0xffff | 0xfffe,
        posted | 0xffff,
        posted | 0xfffe,
    ] {
        assert_unknown(&mut pool, &mut nic, wr_id);
    }
    // The Held one is still Held and its token still works; the Posted one still completes.
    assert_eq!(pool.state(rx.index()), Some(DescState::Held));
    assert!(pool.view(&rx).is_ok());
    pool.release(rx).unwrap();
    assert_eq!(pool.counters().rejected_unknown, 4);
    assert_accounting(&pool);
}

#[test]
fn test_completion_stale_wr_id() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    let old = nic.deliver(&bytes(&MSG_EMPTY_LISTS)).unwrap();
    let rx = message(next(&mut pool, &mut nic));
    pool.release(rx).unwrap();
    // Run the pool until the same descriptor is posted again under a new generation.
    let msg = bytes(&MSG_EMPTY_LISTS);
    loop {
        post(&mut pool, &mut nic);
        let id = nic.deliver(&msg).unwrap();
        let rx = message(next(&mut pool, &mut nic));
        pool.release(rx).unwrap();
        if id & 0xffff == old & 0xffff {
            break;
        }
    }
    post(&mut pool, &mut nic);
    nic.inject(Completion {
        wr_id: old,
        status: CompletionStatus::Success,
        byte_len: 68,
        qp: 0,
    })
    .unwrap();
    assert_eq!(
        next(&mut pool, &mut nic),
        Err(CompletionError::StaleWrId { wr_id: old })
    );
    assert_eq!(pool.counters().rejected_stale, 1);
    assert_accounting(&pool);
}

#[test]
fn test_completion_duplicate() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    let id = nic.deliver(&bytes(&MSG_EMPTY_LISTS)).unwrap();
    let rx = message(next(&mut pool, &mut nic));
    // The same completion again while the message is Held: rejected, the view is untouched.
    nic.inject(Completion {
        wr_id: id,
        status: CompletionStatus::Success,
        byte_len: 28,
        qp: 0,
    })
    .unwrap();
    assert_eq!(
        next(&mut pool, &mut nic),
        Err(CompletionError::DuplicateCompletion { wr_id: id })
    );
    assert_eq!(pool.view(&rx).unwrap().head().len(), 40);
    pool.release(rx).unwrap();
    // And again after release (descriptor Free).
    nic.inject(Completion {
        wr_id: id,
        status: CompletionStatus::Success,
        byte_len: 28,
        qp: 0,
    })
    .unwrap();
    assert_eq!(
        next(&mut pool, &mut nic),
        Err(CompletionError::DuplicateCompletion { wr_id: id })
    );
    assert_eq!(pool.counters().rejected_duplicate, 2);
    assert_accounting(&pool);
}

#[test]
fn test_completion_byte_len_larger_than_buffer() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    let mut sync = RecordingSync::default();
    nic.deliver_claiming(&bytes(&MSG_EMPTY_LISTS), Some(1025))
        .unwrap();
    let mut c = [Completion {
        wr_id: 0,
        status: CompletionStatus::Success,
        byte_len: 0,
        qp: 0,
    }];
    nic.poll(&mut c);
    let out = pool.complete(&c[0], &mut sync).unwrap();
    assert_eq!(
        out,
        Completed::Rejected {
            error: DecodeError::ByteLenExceedsBuffer {
                byte_len: 1025,
                buffer_len: 1024
            },
            reply: None
        }
    );
    assert_eq!(sync.calls[0].2, 1024, "never syncs past the buffer");
    assert_eq!(pool.counters().dropped, 1);
    assert_accounting(&pool);
}

#[test]
fn test_completion_byte_len_smaller_than_message() {
    // The device claims fewer bytes than it wrote: only byte_len counts.
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    nic.deliver_claiming(&bytes(&MSG_EMPTY_LISTS), Some(36))
        .unwrap();
    let rx = message(next(&mut pool, &mut nic));
    assert_eq!(pool.view(&rx).unwrap().head().len(), 8);
    pool.release(rx).unwrap();
}

#[test]
fn test_completion_device_error_is_reported_and_the_owner_closes() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    let big = vec![0u8; 2000];
    let id = nic.deliver(&big).unwrap();
    assert_eq!(
        next(&mut pool, &mut nic),
        Err(CompletionError::DeviceError {
            wr_id: id,
            code: WC_LOC_LEN_ERR
        })
    );
    // The error concerns one connection; with a shared receive queue the pool must stay
    // open for the others, so closing is the owner's decision.
    assert!(!pool.is_closing());
    pool.close();
    assert_eq!(post(&mut pool, &mut nic), 0, "nothing reposted after close");
    assert_eq!(pool.counters().device_errors, 1);
    assert_accounting(&pool);
}

#[test]
fn test_flush_then_close_reposts_nothing() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    nic.deliver(&bytes(&MSG_EMPTY_LISTS)).unwrap();
    let rx = message(next(&mut pool, &mut nic));
    let flushed = nic.flush();
    for i in 0..flushed {
        assert_eq!(next(&mut pool, &mut nic), Ok(Completed::Flushed));
        if i == 0 {
            assert!(
                !pool.is_closing(),
                "a flush does not close a (possibly shared) pool"
            );
        }
        // The connection that owns the pool closes it on its first flush.
        pool.close();
        let mut wrs = [RecvWr::default(); N];
        assert_eq!(pool.post(&mut wrs), 0);
    }
    assert_eq!(pool.posted(), 0);
    // A message still held when the connection died is released normally.
    pool.release(rx).unwrap();
    assert_eq!(pool.in_flight(), 0);
    assert_eq!(pool.counters().flushed, flushed as u64);
    assert_accounting(&pool);
}

#[test]
fn test_second_flush_of_same_descriptor_is_harmless() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    nic.flush();
    let mut c = [Completion {
        wr_id: 0,
        status: CompletionStatus::Success,
        byte_len: 0,
        qp: 0,
    }];
    nic.poll(&mut c);
    assert_eq!(
        pool.complete(&c[0], &mut CoherentDma),
        Ok(Completed::Flushed)
    );
    let free_before = pool.free();
    assert_eq!(
        pool.complete(&c[0], &mut CoherentDma),
        Err(CompletionError::DuplicateCompletion { wr_id: c[0].wr_id })
    );
    assert_eq!(
        pool.free(),
        free_before,
        "the free list did not get the index twice"
    );
    assert_eq!(pool.counters().rejected_duplicate, 1);
    assert_accounting(&pool);
}

// ---------------------------------------------------------------------------------------------
// Release, tokens, teardown

#[test]
fn test_drain_returns_everything_and_stales_tokens() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    post(&mut pool, &mut nic);
    nic.deliver(&bytes(&MSG_EMPTY_LISTS)).unwrap();
    nic.deliver(&bytes(&MSG_EMPTY_LISTS)).unwrap();
    let a = message(next(&mut pool, &mut nic));
    let b = message(next(&mut pool, &mut nic));
    pool.release(b).unwrap();
    let report = pool.drain();
    assert_eq!((report.posted, report.held), (10, 1));
    assert_eq!(pool.in_flight(), 0);
    assert_eq!(pool.free(), N);
    assert_eq!(pool.view(&a).unwrap_err(), StaleToken);
    assert_eq!(pool.release(a), Err(StaleToken));
    let mut wrs = [RecvWr::default(); N];
    assert_eq!(pool.post(&mut wrs), 0, "a drained pool posts nothing");
    // Completions still in the NIC for drained descriptors are stale, never trusted.
    nic.flush();
    while nic.pending() > 0 {
        assert!(matches!(
            next(&mut pool, &mut nic),
            Err(CompletionError::StaleWrId { .. })
        ));
    }
    assert_eq!(pool.counters().drained, 11);
    assert_accounting(&pool);
}

#[test]
fn test_token_from_another_pool_is_refused() {
    let (m1, m2) = (memory(), memory());
    let mut p1 = RecvPool::<N>::new(m1.region(), CONFIG).unwrap();
    let p2 = RecvPool::<N>::new(m2.region(), CONFIG).unwrap();
    let mut nic = m1.nic();
    post(&mut p1, &mut nic);
    nic.deliver(&bytes(&MSG_EMPTY_LISTS)).unwrap();
    let rx = message(next(&mut p1, &mut nic));
    assert_eq!(p2.view(&rx).unwrap_err(), StaleToken);
    p1.release(rx).unwrap();
}

#[test]
fn test_counters_add_up_over_many_cycles() {
    let mem = memory();
    let mut pool = RecvPool::<N>::new(mem.region(), CONFIG).unwrap();
    let mut nic = mem.nic();
    let fixtures: Vec<Vec<u8>> = VALID_CALLS.iter().map(|(_, w)| bytes(w)).collect();
    let mut total_bytes = 0u64;
    for i in 0..1000 {
        post(&mut pool, &mut nic);
        let msg = &fixtures[i % fixtures.len()];
        total_bytes += msg.len() as u64;
        nic.deliver(msg).unwrap();
        let rx = message(next(&mut pool, &mut nic));
        assert_eq!(pool.view(&rx).unwrap().message().byte_len(), msg.len());
        pool.release(rx).unwrap();
    }
    let c: Counters = pool.counters();
    assert_eq!(
        (c.completed, c.delivered, c.released, c.bytes),
        (1000, 1000, 1000, total_bytes)
    );
    assert_eq!(c.posted, 1000 + pool.posted() as u64);
    assert!(
        c.batches <= 1 + 1000 / 4,
        "refills come in batches: {} doorbells",
        c.batches
    );
    assert_accounting(&pool);
}
