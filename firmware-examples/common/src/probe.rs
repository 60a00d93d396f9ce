//! Size probes: what linking the core's receive path costs a firmware image.
//!
//! With whole-program LTO the core's functions are inlined into their callers, so the symbols of
//! an example do not say which bytes are the core's. Each target therefore links two more
//! programs with the same runtime, logger, profile and DMA memory as its example:
//!
//! - [`baseline`]: start-up, one defmt line, semihosting exit; no core call;
//! - [`core_receive_path`]: the same plus every core entry point the example uses — pool
//!   construction, post, cancel, complete (wr_id validation, sync hook, decode), view (XDR head /
//!   tail, Read chunks), the owned header (`HeaderRepr::parse`), release, drain, counters; reply
//!   headers with write and reply chunks, RDMA_ERROR replies, the ONC RPC call parser and reply
//!   encoders.
//!
//! `core_receive_path − baseline`, section by section, is the core's share of an image. Inputs
//! come through `black_box`, so nothing is specialised to constants; both are release builds
//! with the undefined-symbol panic handler, so both also prove the absence of panic paths.

use core::hint::black_box;

use rpcrdma_core::dma::{CoherentDma, DmaRegion};
use rpcrdma_core::oncrpc::{self, AcceptStat};
use rpcrdma_core::pool::{Completed, Completion, CompletionStatus, PoolConfig, RecvPool, RecvWr};
use rpcrdma_core::wire::{HeaderRepr, Proc};

use crate::dma::DmaMemory;
use crate::Board;

/// The runtime without the core: what [`core_receive_path`] is measured against.
pub fn baseline<const LEN: usize>(board: &Board, dma: &'static DmaMemory<LEN>) -> bool {
    defmt::info!("size baseline on {=str}", board.target);
    black_box(dma.claim()).is_some()
}

/// Every core entry point the example uses, on opaque inputs.
pub fn core_receive_path<const N: usize, const LEN: usize>(
    board: &Board,
    dma: &'static DmaMemory<LEN>,
    config: PoolConfig,
) -> bool {
    defmt::info!("size probe on {=str}", board.target);
    let Some(cpu) = dma.claim() else {
        return false;
    };
    // SAFETY: the static DMA memory, claimed once; no device writes it in this program.
    let Ok(region) = (unsafe { DmaRegion::new(cpu.as_ptr(), board.iova, LEN, board.lkey) }) else {
        return false;
    };
    let Ok(mut pool) = RecvPool::<N>::new(region, black_box(config)) else {
        return false;
    };
    let mut wrs = [RecvWr::default(); N];
    let n = pool.post(&mut wrs);
    let refused = black_box(wrs.get(n / 2..n).unwrap_or_default());
    black_box(pool.cancel(refused));

    let mut send = [0u8; 256];
    let mut sent = 0usize;
    for _ in 0..black_box(1u32) {
        let wc = black_box(Completion {
            wr_id: wrs.first().map_or(0, |w| w.wr_id),
            status: CompletionStatus::Success,
            byte_len: 0,
        });
        match pool.complete(&wc, &mut CoherentDma) {
            Ok(Completed::Message(rx)) => {
                if let Ok(view) = pool.view(&rx) {
                    let msg = view.message();
                    black_box((view.head(), view.tail(), view.read_payload_len()));
                    black_box(msg.is_backchannel_reply());
                    for chunk in msg.read_list().chunks() {
                        black_box(chunk.inline_offset);
                        for seg in chunk.segments() {
                            black_box(seg);
                        }
                    }
                    // The upper layer: parse the call, encode its reply.
                    let mut rpc = [0u8; 64];
                    let rpc_len = match oncrpc::parse_call(view.head()) {
                        Ok(h) => oncrpc::emit_accepted_reply(&mut rpc, h.xid, AcceptStat::Success)
                            .map(|n| n + black_box(oncrpc::checksum(view.tail())) as usize % 4),
                        Err(_) => oncrpc::emit_rpc_mismatch(&mut rpc, msg.xid()),
                    };
                    black_box((&rpc, rpc_len));
                    // The owned header (the decoder's `Repr`), then the reply header with the
                    // write list returned and the reply chunk used.
                    let call = HeaderRepr::parse(msg);
                    black_box(&call.read_list);
                    let mut header = HeaderRepr::reply(msg.xid(), pool.credits());
                    for chunk in call.write_list.iter() {
                        if let Ok(h) = header.clone().with_write_chunk(chunk) {
                            header = h;
                        }
                    }
                    if let Some(chunk) = &call.reply_chunk {
                        header.proc_ = Proc::Nomsg;
                        if let Ok(h) = header.clone().with_reply_chunk(chunk) {
                            header = h;
                        }
                    }
                    sent += header.emit(&mut send).unwrap_or(0);
                }
                black_box(rx.xid());
                black_box(pool.release(rx).is_ok());
            }
            Ok(Completed::Rejected { error, reply }) => {
                black_box(error);
                if let Some(reply) = reply {
                    sent += reply.emit(&mut send).unwrap_or(0);
                }
            }
            Ok(Completed::Flushed) => {}
            Err(e) => {
                black_box(e);
            }
        }
    }
    black_box((&send, sent));
    black_box(pool.counters());
    black_box(pool.drain());
    black_box((pool.posted(), pool.held(), pool.free(), pool.is_closing()));
    true
}
