//! The requester side: an RPC-over-RDMA client for `rpcrdma-load` and the end-to-end tests.
//!
//! Not the product (the product is the server's receive path), but a real peer: it connects
//! through rdma_cm with RFC 8797 private data, keeps persistently registered Receive and Send
//! buffers, respects the credits the server grants, and parses every reply header.

use std::net::Ipv4Addr;

use rdma_sys::*;
use rpcrdma_core::wire::{self, Header, HeaderRepr, PrivateData, Proc, DEFAULT_INLINE_THRESHOLD};

use crate::cm::{private_data_for, CmId, EventChannel};
use crate::error::{Error, Result};
use crate::memory::{Registered, SendSlots};
use crate::verbs::{
    post_recv_batch, post_send, require_device, wc_array, Cq, Pd, RecvQueue, POLL_BATCH,
};
use rpcrdma_core::pool::RecvWr;

/// A reply as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// RDMA_MSG: the granted credits and the inline RPC reply.
    Msg {
        /// xid.
        xid: u32,
        /// Credits granted.
        credits: u32,
        /// The RPC reply bytes.
        rpc: Vec<u8>,
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

/// A connected client. Field order is drop order: id (QP), buffers (MRs), CQs, PD, channel.
pub struct Client {
    id: CmId,
    recv: Registered,
    send: SendSlots,
    recv_cq: Cq,
    send_cq: Cq,
    pd: Pd,
    events: EventChannel,
    slots: usize,
    slot_size: usize,
    granted: u32,
    sends_outstanding: usize,
    /// The server's private data.
    pub server: Option<PrivateData>,
}

impl Client {
    /// Connects to `addr:port` with `slots` Receive and Send buffers of `slot_size` bytes.
    ///
    /// # Errors
    /// No device, resolution or connection failure.
    pub fn connect(addr: Ipv4Addr, port: u16, slots: usize, slot_size: usize) -> Result<Client> {
        require_device(None)?;
        let events = EventChannel::new()?;
        let id = CmId::new(&events)?;
        id.resolve(&events, addr, port)?;
        let ctx = id.verbs().ok_or(Error::NoDevice)?;
        let pd = Pd::new(ctx)?;
        let recv_cq = Cq::new(ctx, (slots * 2) as i32, None)?;
        let send_cq = Cq::new(ctx, (slots * 2) as i32, None)?;
        // SAFETY: plain old data, fields set below.
        let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = send_cq.as_raw();
        attr.recv_cq = recv_cq.as_raw();
        attr.cap.max_send_wr = slots as u32;
        attr.cap.max_recv_wr = slots as u32;
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        id.create_qp(&pd, &mut attr)?;
        let recv = Registered::local_write(&pd, slots * slot_size)?;
        let send = SendSlots::new(&pd, slots, slot_size)?;
        let mut client = Client {
            id,
            recv,
            send,
            recv_cq,
            send_cq,
            pd,
            events,
            slots,
            slot_size,
            granted: 1,
            sends_outstanding: 0,
            server: None,
        };
        let wrs: Vec<RecvWr> = (0..slots).map(|i| client.recv_wr(i)).collect();
        // SAFETY: our QP; each WR is one distinct slot of the registered Receive memory.
        unsafe { post_recv_batch(RecvQueue::Qp(client.id.qp()), &wrs) }.map_err(|(_, e)| e)?;
        client.id.connect(&private_data_for(slot_size, slot_size))?;
        let ev = client
            .events
            .expect(rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED, "ESTABLISHED")?;
        client.server = ev.private_data().ok().flatten();
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

    /// Sends an RDMA_MSG call: transport header then the RPC `call` bytes.
    ///
    /// # Errors
    /// No free Send slot, or a post failure.
    pub fn send_call(&mut self, xid: u32, call: &[u8]) -> Result<()> {
        let hdr = HeaderRepr {
            credits: self.slots as u32,
            ..HeaderRepr::reply(xid, self.slots as u32)
        };
        self.send_with(|out| {
            let n = hdr.emit(out).unwrap_or(0);
            let m = call.len().min(out.len() - n);
            out[n..n + m].copy_from_slice(&call[..m]);
            n + m
        })
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
        while self.send.available() == 0 {
            self.reap_sends()?;
        }
        let (slot, bytes) = self
            .send
            .take()
            .ok_or_else(|| Error::Protocol("no Send slot".into()))?;
        let len = build(bytes);
        let (addr, lkey) = self.send.sge(slot);
        // SAFETY: the QP lives in `self.id`; the slot is registered and ours until its Send
        // completion gives it back.
        match unsafe { post_send(self.id.qp(), slot as u64, addr, len as u32, lkey) } {
            Ok(()) => {
                self.sends_outstanding += 1;
                Ok(())
            }
            Err(e) => {
                self.send.give_back(slot);
                Err(e)
            }
        }
    }

    fn reap_sends(&mut self) -> Result<()> {
        let mut wcs = wc_array::<POLL_BATCH>();
        let n = self.send_cq.poll(&mut wcs)?;
        for wc in &wcs[..n] {
            self.send.give_back(wc.wr_id as u16);
            self.sends_outstanding -= 1;
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
    /// A failed completion (the connection broke) or repost failure.
    pub fn poll_replies(&mut self, out: &mut Vec<Reply>) -> Result<usize> {
        self.reap_sends()?;
        let mut wcs = wc_array::<POLL_BATCH>();
        let n = self.recv_cq.poll(&mut wcs)?;
        let mut repost = [RecvWr::default(); POLL_BATCH];
        for (k, wc) in wcs[..n].iter().enumerate() {
            if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                return Err(Error::Completion {
                    what: "client Receive",
                    status: wc.status,
                    vendor_err: wc.vendor_err,
                });
            }
            let i = wc.wr_id as usize;
            // SAFETY: slot i lies in the registered memory; its Receive completed, so the
            // device is done writing it until we repost it below.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    self.recv.as_ptr().add(i * self.slot_size),
                    wc.byte_len as usize,
                )
            };
            out.push(parse_reply(bytes)?);
            if let Some(r) = out.last() {
                self.granted = r.credits().max(1);
            }
            repost[k] = self.recv_wr(i);
        }
        if n > 0 {
            // SAFETY: our QP; each slot's previous Receive completed above.
            unsafe { post_recv_batch(RecvQueue::Qp(self.id.qp()), &repost[..n]) }
                .map_err(|(_, e)| e)?;
        }
        Ok(n)
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

/// Parses a reply message.
///
/// # Errors
/// [`Error::Protocol`] for a header the client cannot use.
pub fn parse_reply(bytes: &[u8]) -> Result<Reply> {
    let h =
        Header::new_checked(bytes).map_err(|e| Error::Protocol(format!("reply header: {e}")))?;
    match Proc::from_wire(h.proc_raw()) {
        Some(Proc::Error) => {
            let code = bytes
                .get(16..20)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            Ok(Reply::Error {
                xid: h.xid(),
                credits: h.credits(),
                code,
                len: bytes.len(),
            })
        }
        Some(Proc::Msg) => {
            let m = wire::decode(bytes, bytes.len(), &wire::DecodeLimits::default())
                .map_err(|e| Error::Protocol(format!("reply header: {e}")))?;
            Ok(Reply::Msg {
                xid: m.xid(),
                credits: m.credits(),
                rpc: m.rpc_message().to_vec(),
            })
        }
        other => Err(Error::Protocol(format!("unexpected reply proc {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_msg_and_error_replies() {
        let mut b = [0u8; 64];
        let n = HeaderRepr::reply(5, 9).emit(&mut b).unwrap();
        b[n..n + 4].copy_from_slice(&5u32.to_be_bytes());
        let r = parse_reply(&b[..n + 4]).unwrap();
        assert_eq!(
            r,
            Reply::Msg {
                xid: 5,
                credits: 9,
                rpc: 5u32.to_be_bytes().to_vec()
            }
        );
        let e = wire::ErrorReply {
            xid: 6,
            vers: 1,
            credits: 3,
            kind: wire::ErrorReplyKind::Chunk,
        };
        let n = e.emit(&mut b).unwrap();
        assert_eq!(
            parse_reply(&b[..n]).unwrap(),
            Reply::Error {
                xid: 6,
                credits: 3,
                code: 2,
                len: 20
            }
        );
        assert!(parse_reply(&b[..10]).is_err());
    }
}
