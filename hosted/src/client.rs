//! The requester side: an RPC-over-RDMA client for `rpcrdma-load` and the end-to-end tests.
//!
//! Not the product (the product is the server side), but a real peer: it connects through
//! rdma_cm with RFC 8797 private data, keeps persistently registered Receive and Send
//! buffers, respects the credits the server grants, and can move call data through Read
//! chunks (RDMA_MSG with a chunk at the data's position, or RDMA_NOMSG with the whole call in a
//! position-zero chunk) and offer write and reply chunks for the reply, from memory registered
//! once with remote access. Every reply header is parsed; chunk data is read back from the
//! memory the server wrote.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use rdma_sys::{ibv_access_flags, ibv_wc_status, rdma_cm_event_type};
use rpcrdma_core::device::{Device, RecvWr, SendOp, SendWr, Sge};
use rpcrdma_core::wire::{
    decode_reply, Header, HeaderRepr, PrivateData, Proc, ReadSegment, Reply as WireReply, Segment,
    SegmentList, DEFAULT_INLINE_THRESHOLD,
};

use crate::cm::{private_data_for, CmId, EventChannel};
use crate::error::{Error, Result};
use crate::memory::Registered;
use crate::verbs::{require_device, wc_array, Cq, Pd, QpCaps, QueuePair, VerbsDevice, POLL_BATCH};

/// Largest segment the client puts in a chunk (larger chunks get several segments).
pub const SEGMENT_MAX: usize = 256 * 1024;

/// A reply as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// RDMA_MSG or RDMA_NOMSG: the RPC reply.
    Msg {
        /// xid.
        xid: u32,
        /// Credits granted.
        credits: u32,
        /// The RPC reply stream: inline bytes, or what the server wrote into the reply chunk.
        rpc: Vec<u8>,
        /// Whether it came through the reply chunk (RDMA_NOMSG).
        via_reply_chunk: bool,
        /// What the server wrote into the write chunk (its reported lengths), if it echoed one
        /// and the client reads chunk data back ([`Client::read_back`]).
        write_chunk: Option<Vec<u8>>,
        /// Bytes the server reported writing into the write chunk, if it echoed one.
        write_written: Option<usize>,
    },
    /// RDMA_ERROR with its `rdma_err` code (1 ERR_VERS, 2 ERR_CHUNK).
    Error {
        /// xid.
        xid: u32,
        /// Credits granted.
        credits: u32,
        /// `rdma_err`.
        code: u32,
        /// Total length of the error message.
        len: usize,
    },
}

impl Reply {
    /// The xid.
    pub fn xid(&self) -> u32 {
        match self {
            Reply::Msg { xid, .. } | Reply::Error { xid, .. } => *xid,
        }
    }
    /// The credit grant.
    pub fn credits(&self) -> u32 {
        match self {
            Reply::Msg { credits, .. } | Reply::Error { credits, .. } => *credits,
        }
    }
}

/// How a call travels.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallShape<'a> {
    /// Data that goes through a Read chunk at `position` (the offset in the RPC stream
    /// where it belongs), instead of inline.
    pub read: Option<(u32, &'a [u8])>,
    /// A Read chunk at `position` of `len` bytes of whatever the chunk area holds (no copy:
    /// transport benchmarks that do not check the data).
    pub read_in_place: Option<(u32, usize)>,
    /// Send the whole call in a position-zero Read chunk (RDMA_NOMSG).
    pub nomsg: bool,
    /// Offer a write chunk of this many bytes for a DDP-eligible reply payload.
    pub write_chunk: Option<usize>,
    /// Offer a reply chunk of this many bytes.
    pub reply_chunk: Option<usize>,
}

/// A connected client. Field order is drop order: QP, id, buffers (MRs), CQs, PD, channel.
pub struct Client {
    qp: QueuePair,
    id: CmId,
    recv: Registered,
    send: Registered,
    source: Registered,
    target: Registered,
    recv_cq: Cq,
    send_cq: Cq,
    pd: Pd,
    events: EventChannel,
    slots: usize,
    slot_size: usize,
    chunk_bytes: usize,
    free_send: Vec<usize>,
    free_chunk: Vec<usize>,
    chunk_of: HashMap<u32, usize>,
    granted: u32,
    /// The server's private data.
    pub server: Option<PrivateData>,
    /// Whether replies carry a copy of the write-chunk data (default true; benchmarks that
    /// check lengths only turn it off).
    pub read_back: bool,
}

impl Client {
    /// Connects to `addr:port` with `slots` Receive and Send buffers of `slot_size` bytes, and
    /// `areas` areas of `chunk_bytes` for chunk data each way (calls with chunks outstanding at
    /// most).
    ///
    /// # Errors
    /// No device, resolution or connection failure.
    pub fn connect(
        addr: Ipv4Addr,
        port: u16,
        slots: usize,
        slot_size: usize,
        chunk_bytes: usize,
        areas: usize,
    ) -> Result<Client> {
        let areas = areas.clamp(1, slots);
        require_device(None)?;
        let events = EventChannel::new()?;
        let id = CmId::new(&events)?;
        id.resolve(&events, addr, port)?;
        let ctx = id.verbs().ok_or(Error::NoDevice)?;
        let pd = Pd::new(ctx)?;
        let recv_cq = Cq::new(ctx, (slots * 2) as i32, None)?;
        let send_cq = Cq::new(ctx, (slots * 4) as i32, None)?;
        let qp = QueuePair::create(
            &id,
            &pd,
            &send_cq,
            &recv_cq,
            None,
            QpCaps {
                max_send_wr: slots as u32,
                max_recv_wr: slots as u32,
            },
        )?;
        let recv = Registered::local_write(&pd, slots * slot_size)?;
        let send = Registered::local_write(&pd, slots * slot_size)?;
        let chunk = chunk_bytes.max(4096);
        let source = Registered::with_access(
            &pd,
            areas * chunk,
            ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 | ibv_access_flags::IBV_ACCESS_REMOTE_READ.0,
        )?;
        let target = Registered::with_access(
            &pd,
            areas * 2 * chunk,
            ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
                | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0,
        )?;
        let mut client = Client {
            qp,
            id,
            recv,
            send,
            source,
            target,
            recv_cq,
            send_cq,
            pd,
            events,
            slots,
            slot_size,
            chunk_bytes: chunk,
            free_send: (0..slots).rev().collect(),
            free_chunk: (0..areas).rev().collect(),
            chunk_of: HashMap::new(),
            granted: 1,
            server: None,
            read_back: true,
        };
        let wrs: Vec<RecvWr> = (0..slots).map(|i| client.recv_wr(i)).collect();
        VerbsDevice::new(&client.qp, None, None)
            .post_recv(&wrs)
            .map_err(|e| Error::Verb {
                verb: "ibv_post_recv",
                errno: e.code,
            })?;
        client.id.connect(&private_data_for(slot_size, slot_size))?;
        let ev = client
            .events
            .expect(rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED, "ESTABLISHED")?;
        client.server = ev.private_data();
        Ok(client)
    }

    fn recv_wr(&self, i: usize) -> RecvWr {
        RecvWr {
            wr_id: i as u64,
            addr: self.recv.as_ptr() as u64 + (i * self.slot_size) as u64,
            length: self.slot_size as u32,
            lkey: self.recv.lkey(),
        }
    }

    /// Credits the server granted last (1 until the first reply, RFC 8166 §3.3.1).
    pub fn credits(&self) -> u32 {
        self.granted
    }

    /// Largest message the server receives inline.
    pub fn server_inline(&self) -> usize {
        self.server
            .map_or(DEFAULT_INLINE_THRESHOLD, |p| p.recv_size as usize)
    }

    /// Bytes of chunk memory per call.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// Sends an RDMA_MSG call with everything inline.
    ///
    /// # Errors
    /// No free Send slot, or a post failure.
    pub fn send_call(&mut self, xid: u32, call: &[u8]) -> Result<()> {
        self.send_shaped(xid, call, &CallShape::default())
    }

    fn segments(handle: u32, addr: u64, len: usize) -> Vec<Segment> {
        (0..len)
            .step_by(SEGMENT_MAX)
            .map(|off| Segment {
                handle,
                length: (len - off).min(SEGMENT_MAX) as u32,
                offset: addr + off as u64,
            })
            .collect()
    }

    /// Sends a call shaped by `shape`: `call` is the whole RPC call; with `shape.read`, the
    /// data at that position is left out of the inline part and read by the server from this
    /// client's memory; with `shape.nomsg` the whole call is.
    ///
    /// # Errors
    /// No free chunk area or Send slot, a chunk larger than the area, or a post failure.
    pub fn send_shaped(&mut self, xid: u32, call: &[u8], shape: &CallShape<'_>) -> Result<()> {
        let needs_chunks = shape.read.is_some()
            || shape.read_in_place.is_some()
            || shape.nomsg
            || shape.write_chunk.is_some()
            || shape.reply_chunk.is_some();
        let mut header = HeaderRepr::reply(xid, self.slots as u32);
        let mut inline: &[u8] = call;
        if needs_chunks {
            let area = self
                .free_chunk
                .pop()
                .ok_or_else(|| Error::Protocol("no free chunk area".into()))?;
            self.chunk_of.insert(xid, area);
            let src_off = area * self.chunk_bytes;
            let src_addr = self.source.as_ptr() as u64 + src_off as u64;
            let rkey = self.source.rkey();
            let too_big = |n: usize| Error::Protocol(format!("{n} bytes exceed the chunk area"));
            let read_items =
                |position: u32, data: &[u8], src: &mut [u8]| -> Result<Vec<ReadSegment>> {
                    let dst = src
                        .get_mut(..data.len())
                        .ok_or_else(|| too_big(data.len()))?;
                    dst.copy_from_slice(data);
                    Ok(Self::segments(rkey, src_addr, data.len())
                        .into_iter()
                        .map(|segment| ReadSegment { position, segment })
                        .collect())
                };
            let src = self.source.area_mut(src_off, self.chunk_bytes);
            if shape.nomsg {
                header.proc_ = Proc::Nomsg;
                for r in read_items(0, call, src)? {
                    header.read_list.push(r).map_err(|_| too_big(call.len()))?;
                }
                inline = &[];
            } else if let Some((position, data)) = shape.read {
                for r in read_items(position, data, src)? {
                    header.read_list.push(r).map_err(|_| too_big(data.len()))?;
                }
            } else if let Some((position, len)) = shape.read_in_place {
                if len > self.chunk_bytes {
                    return Err(too_big(len));
                }
                for segment in Self::segments(rkey, src_addr, len) {
                    header
                        .read_list
                        .push(ReadSegment { position, segment })
                        .map_err(|_| too_big(len))?;
                }
            }
            let tgt_addr = self.target.as_ptr() as u64 + (area * 2 * self.chunk_bytes) as u64;
            if let Some(len) = shape.write_chunk {
                if len > self.chunk_bytes {
                    return Err(too_big(len));
                }
                let segs = Self::segments(self.target.rkey(), tgt_addr, len);
                header = header
                    .with_write_chunk(&segs)
                    .map_err(|e| Error::Protocol(e.to_string()))?;
            }
            if let Some(len) = shape.reply_chunk {
                if len > self.chunk_bytes {
                    return Err(too_big(len));
                }
                let segs =
                    Self::segments(self.target.rkey(), tgt_addr + self.chunk_bytes as u64, len);
                header = header
                    .with_reply_chunk(&segs)
                    .map_err(|e| Error::Protocol(e.to_string()))?;
            }
        }
        let result = self.send_with(|out| {
            let n = header.emit(out).unwrap_or(0);
            let m = inline.len().min(out.len() - n);
            out[n..n + m].copy_from_slice(&inline[..m]);
            n + m
        });
        if result.is_err() {
            if let Some(area) = self.chunk_of.remove(&xid) {
                self.free_chunk.push(area);
            }
        }
        result
    }

    /// Sends arbitrary bytes as one message (for malformed-header tests).
    ///
    /// # Errors
    /// No free Send slot, or a post failure.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.send_with(|out| {
            let m = bytes.len().min(out.len());
            out[..m].copy_from_slice(&bytes[..m]);
            m
        })
    }

    fn send_with(&mut self, build: impl FnOnce(&mut [u8]) -> usize) -> Result<()> {
        while self.free_send.is_empty() {
            self.reap_sends()?;
        }
        let slot = self
            .free_send
            .pop()
            .ok_or_else(|| Error::Protocol("no Send slot".into()))?;
        let off = slot * self.slot_size;
        let len = build(self.send.area_mut(off, self.slot_size));
        let wr = SendWr {
            wr_id: slot as u64,
            op: SendOp::Send,
            local: Sge {
                addr: self.send.as_ptr() as u64 + off as u64,
                length: len as u32,
                lkey: self.send.lkey(),
            },
            signaled: true,
        };
        match VerbsDevice::new(&self.qp, None, None).post_send(&[wr]) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.free_send.push(slot);
                Err(Error::Verb {
                    verb: "ibv_post_send",
                    errno: e.code,
                })
            }
        }
    }

    fn reap_sends(&mut self) -> Result<()> {
        let mut wcs = wc_array::<POLL_BATCH>();
        let n = self.send_cq.poll(&mut wcs)?;
        for wc in &wcs[..n] {
            self.free_send.push(wc.wr_id as usize);
            if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                return Err(Error::Completion {
                    what: "client Send",
                    status: wc.status,
                    vendor_err: wc.vendor_err,
                });
            }
        }
        Ok(())
    }

    /// Polls for replies; appends what arrived to `out` and reposts the Receives.
    ///
    /// # Errors
    /// A failed completion (the connection broke), an unparsable reply, or a repost failure.
    pub fn poll_replies(&mut self, out: &mut Vec<Reply>) -> Result<usize> {
        self.reap_sends()?;
        let mut wcs = wc_array::<POLL_BATCH>();
        let n = self.recv_cq.poll(&mut wcs)?;
        let mut repost = Vec::with_capacity(n);
        for wc in &wcs[..n] {
            if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                return Err(Error::Completion {
                    what: "client Receive",
                    status: wc.status,
                    vendor_err: wc.vendor_err,
                });
            }
            let i = wc.wr_id as usize;
            let bytes = self
                .recv
                .area(i * self.slot_size, wc.byte_len as usize)
                .to_vec();
            repost.push(self.recv_wr(i));
            let reply = self.parse_reply(&bytes)?;
            self.granted = reply.credits().max(1);
            out.push(reply);
        }
        if n > 0 {
            VerbsDevice::new(&self.qp, None, None)
                .post_recv(&repost)
                .map_err(|e| Error::Verb {
                    verb: "ibv_post_recv",
                    errno: e.code,
                })?;
        }
        Ok(n)
    }

    /// Parses a reply (with the core's [`decode_reply`]) and reads back the chunk data the
    /// server wrote.
    fn parse_reply(&mut self, bytes: &[u8]) -> Result<Reply> {
        let bad = |what: &str| Error::Protocol(format!("reply header: {what}"));
        // The chunk area is free again once a reply with its xid arrived, whatever it says.
        if let Ok(h) = Header::new_checked(bytes) {
            if let Some(a) = self.chunk_of.remove(&h.xid()) {
                self.free_chunk.push(a);
            }
        }
        let decoded = decode_reply(bytes).map_err(|e| Error::Protocol(e.to_string()))?;
        let r = match decoded {
            WireReply::Error(e) => {
                return Ok(Reply::Error {
                    xid: e.xid,
                    credits: e.credits,
                    code: e.kind.code(),
                    len: bytes.len(),
                })
            }
            WireReply::Rpc(r) => r,
        };
        let read_back = |segs: SegmentList<'_>, target: &Registered| -> Result<Vec<u8>> {
            let base = target.as_ptr() as u64;
            let mut v = Vec::new();
            for s in segs {
                let len = s.length as usize;
                let off = s
                    .offset
                    .checked_sub(base)
                    .filter(|off| (*off as usize) + len <= target.len())
                    .ok_or_else(|| bad("segment outside the client's memory"))?;
                v.extend_from_slice(target.area(off as usize, len));
            }
            Ok(v)
        };
        let write_written = r.write_chunk.map(|s| s.total_len() as usize);
        let write_chunk = match r.write_chunk {
            Some(s) if self.read_back => Some(read_back(s, &self.target)?),
            _ => None,
        };
        let (rpc, via_reply_chunk) = match (r.proc_, r.reply_chunk) {
            (Proc::Nomsg, Some(segs)) => (read_back(segs, &self.target)?, true),
            _ => (r.rpc_message.to_vec(), false),
        };
        Ok(Reply::Msg {
            xid: r.xid,
            credits: r.credits,
            rpc,
            via_reply_chunk,
            write_chunk,
            write_written,
        })
    }

    /// Disconnects and waits for the server to see it.
    pub fn disconnect(self) {
        self.id.disconnect();
        let _ = self.events.expect(
            rdma_cm_event_type::RDMA_CM_EVENT_DISCONNECTED,
            "DISCONNECTED",
        );
        let _ = &self.pd;
    }
}
