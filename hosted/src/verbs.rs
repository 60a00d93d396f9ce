//! One owner per verbs object (rust-ibverbs' model): each wrapper owns its raw pointer and
//! releases it in `Drop`. Parents must outlive children; the structs that hold several of them
//! ([`crate::memory::Registered`], [`crate::server::Server`], [`crate::client::Client`]) declare
//! their fields children-first so Rust's drop order tears them down in dependency order. Every
//! wrapper has `as_raw()`.

// FFI to libibverbs (rdma-sys): raw pointers owned by the wrappers, each use with a SAFETY note.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use rdma_sys::*;
use rpcrdma_core::device::{
    Completion, CompletionStatus, Device, PostError, RecvWr, SendOp, SendWr,
};

use crate::cm::CmId;
use crate::error::{check, check_rc, verb_error, Error, Result};

/// Names of the RDMA devices present.
pub fn device_names() -> Vec<String> {
    let mut n = 0;
    // SAFETY: ibv_get_device_list returns an array of n devices or null; freed below.
    let list = unsafe { ibv_get_device_list(&mut n) };
    if list.is_null() {
        return Vec::new();
    }
    let names = (0..n as usize)
        .map(|i| {
            // SAFETY: i < n entries; ibv_get_device_name returns a NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr(ibv_get_device_name(*list.add(i))) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: list came from ibv_get_device_list.
    unsafe { ibv_free_device_list(list) };
    names
}

/// Checks that an RDMA device exists (and, if named, that it is this one).
///
/// # Errors
/// [`Error::NoDevice`] or [`Error::DeviceNotFound`].
pub fn require_device(name: Option<&str>) -> Result<()> {
    let names = device_names();
    match name {
        _ if names.is_empty() => Err(Error::NoDevice),
        Some(n) if !names.iter().any(|d| d == n) => Err(Error::DeviceNotFound(n.to_string())),
        _ => Ok(()),
    }
}

/// A device context owned by rdma_cm (or an opened device) that outlives every object made
/// on it.
#[derive(Debug, Clone, Copy)]
pub struct Context(NonNull<ibv_context>);

impl Context {
    /// Wraps a context.
    ///
    /// # Safety
    /// `raw` is a live context that stays open while any object created through this handle
    /// (PD, CQ, completion channel) exists.
    pub unsafe fn from_raw(raw: *mut ibv_context) -> Option<Context> {
        NonNull::new(raw).map(Context)
    }

    /// The raw pointer.
    pub fn as_raw(&self) -> *mut ibv_context {
        self.0.as_ptr()
    }

    /// The device's name, e.g. `rxe0`.
    pub fn device_name(&self) -> String {
        // SAFETY: a live context has a device with a NUL-terminated name.
        unsafe { std::ffi::CStr::from_ptr(ibv_get_device_name((*self.as_raw()).device)) }
            .to_string_lossy()
            .into_owned()
    }
}

/// A protection domain.
#[derive(Debug)]
pub struct Pd {
    raw: NonNull<ibv_pd>,
}

impl Pd {
    /// Allocates a PD on `ctx` (a context owned by rdma_cm or an opened device that outlives it).
    ///
    /// # Errors
    /// `ibv_alloc_pd` failure.
    pub fn new(ctx: Context) -> Result<Pd> {
        // SAFETY: ctx is a live context (caller); a null return is handled.
        let raw = unsafe { ibv_alloc_pd(ctx.as_raw()) };
        NonNull::new(raw)
            .map(|raw| Pd { raw })
            .ok_or_else(|| verb_error("ibv_alloc_pd"))
    }

    /// The raw pointer.
    pub fn as_raw(&self) -> *mut ibv_pd {
        self.raw.as_ptr()
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: owned; children (MRs, QPs, SRQs) were dropped first by their owners.
        let rc = unsafe { ibv_dealloc_pd(self.raw.as_ptr()) };
        if rc != 0 {
            log::warn!("ibv_dealloc_pd failed: {rc} (a child object is still alive)");
        }
    }
}

/// A registered memory region.
#[derive(Debug)]
pub struct Mr {
    raw: NonNull<ibv_mr>,
}

impl Mr {
    /// Registers `len` bytes at `addr` with `access` rights.
    ///
    /// # Safety
    /// `addr..addr + len` must stay valid memory until this `Mr` is dropped.
    ///
    /// # Errors
    /// `ibv_reg_mr` failure (often `ENOMEM` from the locked-memory limit: `ulimit -l`).
    pub unsafe fn register(pd: &Pd, addr: *mut u8, len: usize, access: u32) -> Result<Mr> {
        // SAFETY: the caller keeps the memory valid; pd is live.
        let raw = unsafe { ibv_reg_mr(pd.as_raw(), addr.cast(), len, access as i32) };
        NonNull::new(raw)
            .map(|raw| Mr { raw })
            .ok_or_else(|| verb_error("ibv_reg_mr"))
    }

    /// Local key.
    pub fn lkey(&self) -> u32 {
        // SAFETY: live MR.
        unsafe { (*self.raw.as_ptr()).lkey }
    }

    /// Remote key (receive memory is never registered with remote rights).
    pub fn rkey(&self) -> u32 {
        // SAFETY: live MR.
        unsafe { (*self.raw.as_ptr()).rkey }
    }

    /// The raw pointer.
    pub fn as_raw(&self) -> *mut ibv_mr {
        self.raw.as_ptr()
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: owned MR; the memory is still mapped (owners drop the MR first).
        let rc = unsafe { ibv_dereg_mr(self.raw.as_ptr()) };
        if rc != 0 {
            log::warn!("ibv_dereg_mr failed: {rc}");
        }
    }
}

/// A completion channel (for event mode).
#[derive(Debug)]
pub struct CompChannel {
    raw: NonNull<ibv_comp_channel>,
}

impl CompChannel {
    /// Creates one on `ctx`.
    ///
    /// # Errors
    /// `ibv_create_comp_channel` failure.
    pub fn new(ctx: Context) -> Result<CompChannel> {
        // SAFETY: live context.
        let raw = unsafe { ibv_create_comp_channel(ctx.as_raw()) };
        NonNull::new(raw)
            .map(|raw| CompChannel { raw })
            .ok_or_else(|| verb_error("ibv_create_comp_channel"))
    }

    /// The file descriptor to poll.
    pub fn fd(&self) -> i32 {
        // SAFETY: live channel.
        unsafe { (*self.raw.as_ptr()).fd }
    }

    /// The raw pointer.
    pub fn as_raw(&self) -> *mut ibv_comp_channel {
        self.raw.as_ptr()
    }

    /// Consumes one pending CQ event (after `fd` became readable), acknowledging it, and
    /// re-arms the CQ. Returns whether an event was consumed.
    ///
    /// # Errors
    /// `ibv_get_cq_event` / `ibv_req_notify_cq` failure.
    pub fn consume_event(&self) -> Result<bool> {
        let mut cq = ptr::null_mut();
        let mut ctx = ptr::null_mut();
        // SAFETY: live channel; out-pointers are valid. Non-blocking fd: EAGAIN means none.
        let rc = unsafe { ibv_get_cq_event(self.as_raw(), &mut cq, &mut ctx) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::WouldBlock {
                Ok(false)
            } else {
                Err(verb_error("ibv_get_cq_event"))
            };
        }
        // SAFETY: cq came from the event; ack exactly one event, then re-arm.
        unsafe {
            ibv_ack_cq_events(cq, 1);
            check_rc("ibv_req_notify_cq", ibv_req_notify_cq(cq, 0))?;
        }
        Ok(true)
    }
}

impl Drop for CompChannel {
    fn drop(&mut self) {
        // SAFETY: owned; CQs using it were destroyed first.
        unsafe { ibv_destroy_comp_channel(self.raw.as_ptr()) };
    }
}

/// A completion queue.
#[derive(Debug)]
pub struct Cq {
    raw: NonNull<ibv_cq>,
}

/// Work completions polled per `ibv_poll_cq` call.
pub const POLL_BATCH: usize = 16;

impl Cq {
    /// Creates a CQ of `depth` entries, optionally bound to a completion channel (armed).
    ///
    /// # Errors
    /// `ibv_create_cq` / `ibv_req_notify_cq` failure.
    pub fn new(ctx: Context, depth: i32, channel: Option<&CompChannel>) -> Result<Cq> {
        let ch = channel.map_or(ptr::null_mut(), |c| c.as_raw());
        // SAFETY: live context; channel outlives the CQ (owner's field order).
        let raw = unsafe { ibv_create_cq(ctx.as_raw(), depth, ptr::null_mut(), ch, 0) };
        let cq = NonNull::new(raw)
            .map(|raw| Cq { raw })
            .ok_or_else(|| verb_error("ibv_create_cq"))?;
        if channel.is_some() {
            // SAFETY: live CQ.
            check_rc("ibv_req_notify_cq", unsafe {
                ibv_req_notify_cq(cq.as_raw(), 0)
            })?;
        }
        Ok(cq)
    }

    /// Polls up to `wcs.len()` completions; returns how many.
    ///
    /// # Errors
    /// `ibv_poll_cq` failure.
    #[inline]
    pub fn poll(&self, wcs: &mut [ibv_wc]) -> Result<usize> {
        // SAFETY: live CQ; wcs is valid for wcs.len() entries.
        let n = unsafe { ibv_poll_cq(self.as_raw(), wcs.len() as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            Err(Error::Verb {
                verb: "ibv_poll_cq",
                errno: -n,
            })
        } else {
            Ok(n as usize)
        }
    }

    /// The raw pointer.
    pub fn as_raw(&self) -> *mut ibv_cq {
        self.raw.as_ptr()
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: owned; QPs using it were destroyed first.
        let rc = unsafe { ibv_destroy_cq(self.raw.as_ptr()) };
        if rc != 0 {
            log::warn!("ibv_destroy_cq failed: {rc}");
        }
    }
}

/// An empty work completion array for polling.
pub fn wc_array<const K: usize>() -> [ibv_wc; K] {
    // SAFETY: ibv_wc is plain old data; all-zero is a valid (meaningless) value.
    unsafe { std::mem::zeroed() }
}

/// The core's view of a work completion.
#[inline]
pub fn to_completion(wc: &ibv_wc) -> Completion {
    let status = match wc.status {
        ibv_wc_status::IBV_WC_SUCCESS => CompletionStatus::Success,
        ibv_wc_status::IBV_WC_WR_FLUSH_ERR => CompletionStatus::Flushed,
        code => CompletionStatus::Error { code },
    };
    Completion {
        wr_id: wc.wr_id,
        status,
        byte_len: wc.byte_len,
        qp: wc.qp_num,
    }
}

/// A shared receive queue.
#[derive(Debug)]
pub struct Srq {
    raw: NonNull<ibv_srq>,
}

impl Srq {
    /// Creates an SRQ of `max_wr` one-SGE Receives.
    ///
    /// # Errors
    /// `ibv_create_srq` failure.
    pub fn new(pd: &Pd, max_wr: u32) -> Result<Srq> {
        let mut attr = ibv_srq_init_attr {
            srq_context: ptr::null_mut(),
            attr: ibv_srq_attr {
                max_wr,
                max_sge: 1,
                srq_limit: 0,
            },
        };
        // SAFETY: live PD; attr is valid for the call.
        let raw = unsafe { ibv_create_srq(pd.as_raw(), &mut attr) };
        NonNull::new(raw)
            .map(|raw| Srq { raw })
            .ok_or_else(|| verb_error("ibv_create_srq"))
    }

    /// The raw pointer.
    pub fn as_raw(&self) -> *mut ibv_srq {
        self.raw.as_ptr()
    }
}

impl Drop for Srq {
    fn drop(&mut self) {
        // SAFETY: owned; QPs attached to it were destroyed first.
        let rc = unsafe { ibv_destroy_srq(self.raw.as_ptr()) };
        if rc != 0 {
            log::warn!("ibv_destroy_srq failed: {rc}");
        }
    }
}

/// A reliable-connection queue pair created on an rdma_cm id: the owner that destroys it.
///
/// Declare it before the [`CmId`] it was made on (drop order): the QP goes first, then the id.
#[derive(Debug)]
pub struct QueuePair {
    id: NonNull<rdma_cm_id>,
    qp: NonNull<ibv_qp>,
}

// SAFETY: the QP is used from one thread at a time by its owner.
unsafe impl Send for QueuePair {}

/// Sizes of a queue pair.
#[derive(Debug, Clone, Copy)]
pub struct QpCaps {
    /// Send-queue work requests (Sends, RDMA Writes and Reads).
    pub max_send_wr: u32,
    /// Receive-queue work requests (0 with an SRQ).
    pub max_recv_wr: u32,
}

impl QueuePair {
    /// Creates an RC queue pair on `id` with one SGE per work request, completing into
    /// `send_cq` / `recv_cq`, receiving from `srq` when given.
    ///
    /// # Errors
    /// `rdma_create_qp` failure.
    pub fn create(
        id: &CmId,
        pd: &Pd,
        send_cq: &Cq,
        recv_cq: &Cq,
        srq: Option<&Srq>,
        caps: QpCaps,
    ) -> Result<QueuePair> {
        // SAFETY: plain old data; the fields used are set below.
        let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = send_cq.as_raw();
        attr.recv_cq = recv_cq.as_raw();
        attr.srq = srq.map_or(ptr::null_mut(), Srq::as_raw);
        attr.cap.max_send_wr = caps.max_send_wr;
        attr.cap.max_recv_wr = if srq.is_some() { 0 } else { caps.max_recv_wr };
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        // SAFETY: live id and PD; attr is valid for the call, its CQs and SRQ are live.
        check("rdma_create_qp", unsafe {
            rdma_create_qp(id.as_raw(), pd.as_raw(), &mut attr)
        })?;
        let qp = NonNull::new(id.qp()).ok_or_else(|| verb_error("rdma_create_qp"))?;
        Ok(QueuePair {
            id: NonNull::new(id.as_raw()).ok_or_else(|| verb_error("rdma_create_qp"))?,
            qp,
        })
    }

    /// The QP number (completions name it in `qp_num`).
    pub fn qp_num(&self) -> u32 {
        // SAFETY: live QP.
        unsafe { (*self.qp.as_ptr()).qp_num }
    }

    /// The raw pointer.
    pub fn as_raw(&self) -> *mut ibv_qp {
        self.qp.as_ptr()
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: the id outlives this QP (owner's field order); destroying the QP through
        // rdma_cm also clears the id's pointer to it.
        unsafe { rdma_destroy_qp(self.id.as_ptr()) };
    }
}

/// The core's [`Device`] on verbs: Sends, RDMA Writes and RDMA Reads go to a queue pair's send
/// queue, Receives to its receive queue or to an SRQ, and `poll` reads a completion queue.
/// Built per batch from borrowed objects, so it cannot outlive them.
#[derive(Debug)]
pub struct VerbsDevice<'a> {
    qp: *mut ibv_qp,
    srq: *mut ibv_srq,
    cq: *mut ibv_cq,
    _objects: PhantomData<&'a ()>,
}

impl<'a> VerbsDevice<'a> {
    /// A device on `qp`, receiving from `srq` if given (else the QP's own receive queue),
    /// polling `cq` if given.
    pub fn new(qp: &'a QueuePair, srq: Option<&'a Srq>, cq: Option<&'a Cq>) -> Self {
        VerbsDevice {
            qp: qp.as_raw(),
            srq: srq.map_or(ptr::null_mut(), Srq::as_raw),
            cq: cq.map_or(ptr::null_mut(), Cq::as_raw),
            _objects: PhantomData,
        }
    }

    /// A device that only posts Receives to `srq` (the shared pool's refill).
    pub fn srq_only(srq: &'a Srq) -> Self {
        VerbsDevice {
            qp: ptr::null_mut(),
            srq: srq.as_raw(),
            cq: ptr::null_mut(),
            _objects: PhantomData,
        }
    }
}

const CHAIN: usize = 64;

impl Device for VerbsDevice<'_> {
    fn post_recv(&mut self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
        // Only the entries a post uses are written: no per-post clearing of the whole chain.
        let mut sges = [const { MaybeUninit::<ibv_sge>::uninit() }; CHAIN];
        let mut chain = [const { MaybeUninit::<ibv_recv_wr>::uninit() }; CHAIN];
        let mut start = 0;
        while start < wrs.len() {
            let part = &wrs[start..wrs.len().min(start + CHAIN)];
            let base = chain.as_mut_ptr().cast::<ibv_recv_wr>();
            for (i, wr) in part.iter().enumerate() {
                let sge: *mut ibv_sge = sges[i].write(ibv_sge {
                    addr: wr.addr,
                    length: wr.length,
                    lkey: wr.lkey,
                });
                chain[i].write(ibv_recv_wr {
                    wr_id: wr.wr_id,
                    sg_list: sge,
                    num_sge: 1,
                    next: if i + 1 < part.len() {
                        // SAFETY: in-bounds pointer arithmetic within `chain` (the entry is
                        // written before the post).
                        unsafe { base.add(i + 1) }
                    } else {
                        ptr::null_mut()
                    },
                });
            }
            let mut bad: *mut ibv_recv_wr = ptr::null_mut();
            // SAFETY: the chain and SGEs live across the call; the QP or SRQ is live for 'a;
            // every WR is one of the core's Receive buffers in registered memory.
            let rc = unsafe {
                if self.srq.is_null() {
                    ibv_post_recv(self.qp, base, &mut bad)
                } else {
                    ibv_post_srq_recv(self.srq, base, &mut bad)
                }
            };
            if rc != 0 {
                // SAFETY: the post just returned `bad`: null or an element of `chain`.
                return Err(unsafe { refused(rc, bad, base, start) });
            }
            start += part.len();
        }
        Ok(())
    }

    fn post_send(&mut self, wrs: &[SendWr]) -> std::result::Result<(), PostError> {
        if self.qp.is_null() {
            return Err(PostError {
                index: 0,
                code: libc::EINVAL,
            });
        }
        // Only the entries a post uses are written: no per-post clearing of the whole chain.
        let mut sges = [const { MaybeUninit::<ibv_sge>::uninit() }; CHAIN];
        let mut chain = [const { MaybeUninit::<ibv_send_wr>::uninit() }; CHAIN];
        let mut start = 0;
        while start < wrs.len() {
            let part = &wrs[start..wrs.len().min(start + CHAIN)];
            let base = chain.as_mut_ptr().cast::<ibv_send_wr>();
            for (i, wr) in part.iter().enumerate() {
                let sge: *mut ibv_sge = sges[i].write(ibv_sge {
                    addr: wr.local.addr,
                    length: wr.local.length,
                    lkey: wr.local.lkey,
                });
                // SAFETY: ibv_send_wr is plain old data, valid all zero; the fields the post
                // reads are set below.
                let c = chain[i].write(unsafe { std::mem::zeroed() });
                c.wr_id = wr.wr_id;
                c.sg_list = sge;
                c.num_sge = 1;
                c.send_flags = if wr.signaled {
                    ibv_send_flags::IBV_SEND_SIGNALED.0
                } else {
                    0
                };
                match wr.op {
                    SendOp::Send => c.opcode = ibv_wr_opcode::IBV_WR_SEND,
                    SendOp::Write { remote, rkey } => {
                        c.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                        c.wr.rdma = rdma_t {
                            remote_addr: remote,
                            rkey,
                        };
                    }
                    SendOp::Read { remote, rkey } => {
                        c.opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
                        c.wr.rdma = rdma_t {
                            remote_addr: remote,
                            rkey,
                        };
                    }
                }
                c.next = if i + 1 < part.len() {
                    // SAFETY: in-bounds pointer arithmetic within `chain` (the entry is written
                    // before the post).
                    unsafe { base.add(i + 1) }
                } else {
                    ptr::null_mut()
                };
            }
            let mut bad: *mut ibv_send_wr = ptr::null_mut();
            // SAFETY: chain and SGEs live across the call; the QP is live for 'a; the core
            // hands out only registered memory it keeps untouched until the completion.
            let rc = unsafe { ibv_post_send(self.qp, base, &mut bad) };
            if rc != 0 {
                // SAFETY: the post just returned `bad`: null or an element of `chain`.
                return Err(unsafe { refused(rc, bad, base, start) });
            }
            start += part.len();
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut [Completion]) -> usize {
        if self.cq.is_null() {
            return 0;
        }
        let mut wcs = wc_array::<POLL_BATCH>();
        let want = out.len().min(POLL_BATCH);
        // SAFETY: live CQ for 'a; wcs holds `want` entries.
        let n = unsafe { ibv_poll_cq(self.cq, want as i32, wcs.as_mut_ptr()) };
        let n = n.max(0) as usize;
        for (o, wc) in out.iter_mut().zip(&wcs[..n]) {
            *o = to_completion(wc);
        }
        n
    }
}

/// Waits until one of `fds` is ready for what it asks (read, write) or `timeout` passes.
///
/// # Errors
/// `poll` failure other than an interrupt.
pub fn wait_fds(fds: &[crate::server::WaitFd], timeout: std::time::Duration) -> Result<()> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|w| libc::pollfd {
            fd: w.fd,
            events: if w.read { libc::POLLIN } else { 0 } | if w.write { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of pollfd for the call.
    let rc = unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            timeout.as_millis().min(i32::MAX as u128) as i32,
        )
    };
    if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
        return Err(verb_error("poll"));
    }
    Ok(())
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: i32) -> Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        check("fcntl", if flags < 0 { -1 } else { 0 })?;
        check(
            "fcntl",
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK),
        )
    }
}

/// The device's refusal of a chained post: which work request it stopped at and the errno.
/// `start` is the position of `base` (the chain) among all the work requests posted.
///
/// # Safety
/// `bad` is null or points into the chain starting at `base` (as `ibv_post_recv` and
/// `ibv_post_send` leave it).
unsafe fn refused<T>(rc: i32, bad: *mut T, base: *mut T, start: usize) -> PostError {
    let failed = if bad.is_null() {
        0
    } else {
        // SAFETY: the caller's promise: both pointers are into the same chain.
        unsafe { bad.offset_from(base) as usize }
    };
    PostError {
        index: start + failed,
        code: rc.abs(),
    }
}
