//! rdma_cm: the event channel, connection ids, and RFC 8797 private data on connect/accept.

// FFI to librdmacm (rdma-sys): raw ids and events owned by the wrappers.
#![allow(unsafe_code)]

use std::net::Ipv4Addr;
use std::ptr::{self, NonNull};

use rdma_sys::*;
use rpcrdma_core::wire::{PrivateData, PrivateDataFlags, DEFAULT_INLINE_THRESHOLD};

use crate::error::{check, verb_error, Error, Result};
use crate::verbs::set_nonblocking;

/// An rdma_cm event channel.
#[derive(Debug)]
pub struct EventChannel {
    raw: NonNull<rdma_event_channel>,
}

impl EventChannel {
    /// Creates a channel.
    ///
    /// # Errors
    /// `rdma_create_event_channel` failure.
    pub fn new() -> Result<EventChannel> {
        // SAFETY: plain constructor.
        let raw = unsafe { rdma_create_event_channel() };
        NonNull::new(raw)
            .map(|raw| EventChannel { raw })
            .ok_or_else(|| verb_error("rdma_create_event_channel"))
    }

    /// Makes `get` return `None` instead of blocking.
    ///
    /// # Errors
    /// `fcntl` failure.
    pub fn set_nonblocking(&self) -> Result<()> {
        set_nonblocking(self.fd())
    }

    /// The channel's file descriptor.
    pub fn fd(&self) -> i32 {
        // SAFETY: live channel.
        unsafe { (*self.raw.as_ptr()).fd }
    }

    /// The raw pointer.
    pub fn as_raw(&self) -> *mut rdma_event_channel {
        self.raw.as_ptr()
    }

    /// The next event, copied out and acknowledged; `None` if non-blocking and none is pending.
    ///
    /// # Errors
    /// `rdma_get_cm_event` failure.
    pub fn get(&self) -> Result<Option<CmEvent>> {
        let mut ev: *mut rdma_cm_event = ptr::null_mut();
        // SAFETY: live channel, valid out-pointer.
        let rc = unsafe { rdma_get_cm_event(self.as_raw(), &mut ev) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(verb_error("rdma_get_cm_event"))
            };
        }
        // SAFETY: ev is a valid event until acked; we copy what we need first.
        let out = unsafe {
            let e = &*ev;
            let conn = e.param.conn;
            let private = if conn.private_data.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(
                    conn.private_data.cast::<u8>(),
                    conn.private_data_len as usize,
                )
                .to_vec()
            };
            CmEvent {
                kind: e.event,
                status: e.status,
                id: e.id,
                listen_id: e.listen_id,
                private,
                responder_resources: conn.responder_resources,
                initiator_depth: conn.initiator_depth,
            }
        };
        // SAFETY: acknowledge exactly once.
        unsafe { rdma_ack_cm_event(ev) };
        Ok(Some(out))
    }

    /// Blocks for the next event and checks it is `expected`.
    ///
    /// # Errors
    /// [`Error::CmEvent`] for any other event.
    pub fn expect(
        &self,
        expected: rdma_cm_event_type::Type,
        name: &'static str,
    ) -> Result<CmEvent> {
        loop {
            if let Some(ev) = self.get()? {
                if ev.kind == expected {
                    return Ok(ev);
                }
                return Err(Error::CmEvent {
                    expected: name,
                    got: ev.name(),
                    status: ev.status,
                });
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }
}

// SAFETY: a channel is a file descriptor and a librdmacm object whose operations
// (`rdma_get_cm_event`, `rdma_migrate_id` onto it) take its own locks; the server's loops only
// read events from their own channel and migrate ids onto another loop's.
unsafe impl Send for EventChannel {}
// SAFETY: as above.
unsafe impl Sync for EventChannel {}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: owned; every id on it was destroyed first.
        unsafe { rdma_destroy_event_channel(self.raw.as_ptr()) };
    }
}

/// An rdma_cm event, copied out of the channel.
#[derive(Debug, Clone)]
pub struct CmEvent {
    /// `rdma_cm_event_type`.
    pub kind: rdma_cm_event_type::Type,
    /// Status (0 or a negative errno / reject reason).
    pub status: i32,
    /// The id the event is for (a new id for CONNECT_REQUEST).
    pub id: *mut rdma_cm_id,
    /// The listening id, for CONNECT_REQUEST.
    pub listen_id: *mut rdma_cm_id,
    /// The private data that came with it.
    pub private: Vec<u8>,
    /// From this side's point of view (rdma_cm swaps the peer's values for a listener): RDMA
    /// Reads the peer may issue to this side in flight.
    pub responder_resources: u8,
    /// From this side's point of view: RDMA Reads this side may issue to the peer in flight
    /// (the peer's responder resources).
    pub initiator_depth: u8,
}

impl CmEvent {
    /// The event's name.
    pub fn name(&self) -> String {
        // SAFETY: returns a static string.
        unsafe { std::ffi::CStr::from_ptr(rdma_event_str(self.kind)) }
            .to_string_lossy()
            .into_owned()
    }

    /// The peer's RFC 8797 private data, or `None` when there is none to use: absent, too short,
    /// or with the wrong magic or version (rdma_cm hands a listener 56 zero bytes when the
    /// client sent nothing). RFC 8797 says to treat all of these as "no private data": the
    /// RFC 8166 defaults (1 KiB inline each way) apply.
    pub fn private_data(&self) -> Option<PrivateData> {
        match PrivateData::parse(&self.private) {
            Ok(p) => Some(p),
            Err(e) => {
                if !self.private.iter().all(|b| *b == 0) {
                    log::debug!("connection private data not RFC 8797 ({e}): using the defaults");
                }
                None
            }
        }
    }
}

/// An rdma_cm id. Destroying it destroys its QP first.
#[derive(Debug)]
pub struct CmId {
    raw: NonNull<rdma_cm_id>,
}

// SAFETY: an id is used from one thread at a time by its owner.
unsafe impl Send for CmId {}

impl CmId {
    /// A new TCP-port-space id on `channel`.
    ///
    /// # Errors
    /// `rdma_create_id` failure.
    pub fn new(channel: &EventChannel) -> Result<CmId> {
        let mut id = ptr::null_mut();
        // SAFETY: live channel; valid out-pointer.
        check("rdma_create_id", unsafe {
            rdma_create_id(
                channel.as_raw(),
                &mut id,
                ptr::null_mut(),
                rdma_port_space::RDMA_PS_TCP,
            )
        })?;
        NonNull::new(id)
            .map(|raw| CmId { raw })
            .ok_or_else(|| verb_error("rdma_create_id"))
    }

    /// Takes ownership of the new id a CONNECT_REQUEST event carries (`None` for any other
    /// event).
    pub fn from_event(ev: &CmEvent) -> Option<CmId> {
        if ev.kind != rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST {
            return None;
        }
        // SAFETY: a CONNECT_REQUEST's id is new, made for this listener, and owned by nobody
        // else; the event is consumed once by the server's loop.
        unsafe { CmId::from_raw(ev.id) }
    }

    /// Takes ownership of an id rdma_cm created (a CONNECT_REQUEST's).
    ///
    /// # Safety
    /// `raw` is a live id nobody else owns.
    pub unsafe fn from_raw(raw: *mut rdma_cm_id) -> Option<CmId> {
        NonNull::new(raw).map(|raw| CmId { raw })
    }

    /// The raw pointer.
    pub fn as_raw(&self) -> *mut rdma_cm_id {
        self.raw.as_ptr()
    }

    /// The verbs context rdma_cm bound this id to (`None` before bind/resolve to a device).
    /// rdma_cm keeps it open while any id on the device exists; owners keep the id (or the
    /// listener) alive longer than the objects made on the context.
    pub fn verbs(&self) -> Option<crate::verbs::Context> {
        // SAFETY: live id; rdma_cm keeps the context open while ids on it exist.
        unsafe { crate::verbs::Context::from_raw((*self.as_raw()).verbs) }
    }

    /// The peer's IPv4 address and port (a CONNECT_REQUEST's id: the requester's); `None` for
    /// another address family.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddrV4> {
        // SAFETY: live id; rdma_cm filled its route's destination for a connect request.
        let sa = unsafe { rdma_get_peer_addr(&*self.as_raw()) };
        if i32::from(sa.sa_family) != libc::AF_INET {
            return None;
        }
        // SAFETY: the family says it is a sockaddr_in, which the union's storage holds.
        let sin = unsafe { &*(sa as *const libc::sockaddr).cast::<libc::sockaddr_in>() };
        Some(std::net::SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        ))
    }

    /// The id's QP (after [`crate::verbs::QueuePair::create`]).
    pub fn qp(&self) -> *mut ibv_qp {
        // SAFETY: live id.
        unsafe { (*self.as_raw()).qp }
    }

    /// Binds to `addr:port` and listens.
    ///
    /// # Errors
    /// `rdma_bind_addr` / `rdma_listen` failure (EADDRINUSE, or EADDRNOTAVAIL when no RDMA
    /// device has that address).
    pub fn listen(&self, addr: Ipv4Addr, port: u16, backlog: i32) -> Result<()> {
        let mut sin = sockaddr_in(addr, port);
        // SAFETY: live id; sin is a valid sockaddr_in for the call.
        check("rdma_bind_addr", unsafe {
            rdma_bind_addr(self.as_raw(), (&mut sin as *mut libc::sockaddr_in).cast())
        })?;
        // SAFETY: live, bound id.
        check("rdma_listen", unsafe {
            rdma_listen(self.as_raw(), backlog)
        })
    }

    /// Resolves `addr:port` and its route (blocking on `channel`).
    ///
    /// # Errors
    /// Resolution failure or an unexpected event.
    pub fn resolve(&self, channel: &EventChannel, addr: Ipv4Addr, port: u16) -> Result<()> {
        let mut dst = sockaddr_in(addr, port);
        // SAFETY: live id, valid sockaddr for the call.
        check("rdma_resolve_addr", unsafe {
            rdma_resolve_addr(
                self.as_raw(),
                ptr::null_mut(),
                (&mut dst as *mut libc::sockaddr_in).cast(),
                2000,
            )
        })?;
        channel.expect(
            rdma_cm_event_type::RDMA_CM_EVENT_ADDR_RESOLVED,
            "ADDR_RESOLVED",
        )?;
        // SAFETY: live id with a resolved address.
        check("rdma_resolve_route", unsafe {
            rdma_resolve_route(self.as_raw(), 2000)
        })?;
        channel.expect(
            rdma_cm_event_type::RDMA_CM_EVENT_ROUTE_RESOLVED,
            "ROUTE_RESOLVED",
        )?;
        Ok(())
    }

    /// Accepts a connection request, sending `private`, issuing at most `initiator_depth`
    /// RDMA Reads in flight (no more than the peer's responder resources).
    ///
    /// # Errors
    /// `rdma_accept` failure.
    pub fn accept(&self, private: &PrivateData, initiator_depth: u8) -> Result<()> {
        let bytes = private.to_bytes();
        let mut param = conn_param(&bytes);
        param.initiator_depth = initiator_depth;
        param.responder_resources = 0;
        // SAFETY: live id with a QP; param and bytes live across the call.
        check("rdma_accept", unsafe {
            rdma_accept(self.as_raw(), &mut param)
        })
    }

    /// Rejects a connection request.
    pub fn reject(&self) {
        // SAFETY: live id.
        unsafe { rdma_reject(self.as_raw(), ptr::null(), 0) };
    }

    /// Connects, sending `private` and accepting up to 16 RDMA Reads in flight from the server
    /// (a requester does not issue Reads itself, like Linux's client).
    ///
    /// # Errors
    /// `rdma_connect` failure.
    pub fn connect(&self, private: &PrivateData) -> Result<()> {
        let bytes = private.to_bytes();
        let mut param = conn_param(&bytes);
        param.responder_resources = 16;
        param.initiator_depth = 0;
        // SAFETY: live id with a QP; param and bytes live across the call.
        check("rdma_connect", unsafe {
            rdma_connect(self.as_raw(), &mut param)
        })
    }

    /// Moves this id's future events to `channel` (another event loop's): after this the id's
    /// ESTABLISHED and DISCONNECTED events arrive there. Every event of the id so far was
    /// acknowledged ([`EventChannel::get`] acknowledges as it copies).
    ///
    /// # Errors
    /// `rdma_migrate_id` failure.
    pub fn migrate(&self, channel: &EventChannel) -> Result<()> {
        // SAFETY: live id and channel; the id has no unacknowledged event.
        check("rdma_migrate_id", unsafe {
            rdma_migrate_id(self.as_raw(), channel.as_raw())
        })
    }

    /// Starts a disconnect (moves the QP to error: its posted Receives flush).
    pub fn disconnect(&self) {
        // SAFETY: live id.
        unsafe { rdma_disconnect(self.as_raw()) };
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: owned id; destroy its QP (if any) first, then the id.
        unsafe {
            if !(*self.as_raw()).qp.is_null() {
                rdma_destroy_qp(self.as_raw());
            }
            rdma_destroy_id(self.as_raw());
        }
    }
}

fn sockaddr_in(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn conn_param(private: &[u8; 8]) -> rdma_conn_param {
    // SAFETY: plain old data; fields set below.
    let mut p: rdma_conn_param = unsafe { std::mem::zeroed() };
    p.private_data = private.as_ptr().cast();
    p.private_data_len = private.len() as u8;
    p.responder_resources = 1;
    p.initiator_depth = 1;
    p.retry_count = 7;
    // Like Linux's client: no RNR retries, so a Send that finds no Receive fails the
    // connection instead of hiding a broken credit promise.
    p.rnr_retry_count = 0;
    p
}

/// Private data advertising our inline sizes, or the RFC 8166 default when the sizes cannot be
/// expressed.
pub fn private_data_for(send_size: usize, recv_size: usize) -> PrivateData {
    let clamp = |v: usize| v.clamp(1024, 256 * 1024) as u32;
    PrivateData::new(
        PrivateDataFlags::empty(),
        clamp(send_size),
        clamp(recv_size),
    )
    .unwrap_or(PrivateData {
        flags: PrivateDataFlags::empty(),
        send_size: DEFAULT_INLINE_THRESHOLD as u32,
        recv_size: DEFAULT_INLINE_THRESHOLD as u32,
    })
}

/// The first IPv4 address of network interface `name` (getifaddrs).
pub(crate) fn interface_ipv4(name: &str) -> Option<std::net::Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own into `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() && found.is_none() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_name is a NUL-terminated string of the node.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() == name.as_bytes() && !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points at a sockaddr of the node.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs gave, freed once; no reference into it outlives this.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(private: Vec<u8>) -> CmEvent {
        CmEvent {
            kind: rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST,
            status: 0,
            id: ptr::null_mut(),
            listen_id: ptr::null_mut(),
            private,
            responder_resources: 0,
            initiator_depth: 16,
        }
    }

    #[test]
    fn absent_or_unrecognised_private_data_means_the_defaults() {
        // rdma_cm hands a listener 56 zero bytes when the client sent none.
        assert_eq!(event(vec![0; 56]).private_data(), None);
        assert_eq!(event(Vec::new()).private_data(), None);
        assert_eq!(
            event(vec![0xf6, 0xab, 0x0e]).private_data(),
            None,
            "too short"
        );
        let mut wrong_version = private_data_for(4096, 4096).to_bytes().to_vec();
        wrong_version[4] = 2;
        assert_eq!(event(wrong_version).private_data(), None);
    }

    #[test]
    fn rfc_8797_private_data_is_used_and_unknown_flags_ignored() {
        let mut bytes = private_data_for(4096, 8192).to_bytes().to_vec();
        bytes[5] |= 0xfe; // flag bits no RFC defines yet
        bytes.resize(56, 0);
        let p = event(bytes).private_data().expect("recognised");
        assert_eq!((p.send_size, p.recv_size), (4096, 8192));
    }
}
