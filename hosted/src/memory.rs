//! DMA memory for hosted verbs: one aligned anonymous mapping (2 MiB huge pages when the system
//! has them, else normal pages), registered once for the life of the pool.

// mmap/munmap and the DMA regions handed to the core are raw memory the NIC writes.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use rdma_sys::ibv_access_flags;
use rpcrdma_core::device::{Completion, Device, PostError, RecvWr, SendWr, WrId};
use rpcrdma_core::dma::DmaRegion;
use rpcrdma_core::pages::PagePool;
use rpcrdma_core::pool::{DescState, PoolConfig, RecvPool, REFILL_CHAIN};
use rpcrdma_core::responder::{Connection, ResponderConfig};

use crate::error::{verb_error, Result};
use crate::verbs::{Mr, Pd};

const HUGE_PAGE: usize = 2 << 20;

/// An anonymous mapping, unmapped on drop.
#[derive(Debug)]
pub struct HostMemory {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: plain memory, owned.
unsafe impl Send for HostMemory {}

impl HostMemory {
    /// Maps `len` bytes (rounded up to the page size), trying huge pages first.
    ///
    /// # Errors
    /// `mmap` failure.
    pub fn new(len: usize) -> Result<HostMemory> {
        let len = len.max(1);
        if len >= HUGE_PAGE {
            let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            if let Some(ptr) = map(huge_len, libc::MAP_HUGETLB) {
                return Ok(HostMemory {
                    ptr,
                    len: huge_len,
                    huge: true,
                });
            }
        }
        let len = len.div_ceil(4096) * 4096;
        let ptr = map(len, 0).ok_or_else(|| verb_error("mmap"))?;
        Ok(HostMemory {
            ptr,
            len,
            huge: false,
        })
    }

    /// CPU address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping uses huge pages.
    pub fn is_huge(&self) -> bool {
        self.huge
    }
}

fn map(len: usize, extra: i32) -> Option<NonNull<u8>> {
    // SAFETY: anonymous private mapping; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        // SAFETY: our mapping; every MR over it was deregistered first (Registered's field order).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Memory registered once. Field order is drop order: the MR is deregistered before the
/// memory is unmapped.
#[derive(Debug)]
pub struct Registered {
    mr: Mr,
    mem: HostMemory,
}

impl Registered {
    /// Maps `len` bytes and registers them with `LOCAL_WRITE` only — receive and send memory
    /// never carries remote rights.
    ///
    /// # Errors
    /// `mmap` / `ibv_reg_mr` failure.
    pub fn local_write(pd: &Pd, len: usize) -> Result<Registered> {
        Self::with_access(pd, len, ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0)
    }

    /// Maps `len` bytes and registers them with `access` (a requester's chunk memory needs
    /// `REMOTE_READ` or `REMOTE_WRITE`; a server's never does).
    ///
    /// # Errors
    /// `mmap` / `ibv_reg_mr` failure.
    pub fn with_access(pd: &Pd, len: usize, access: u32) -> Result<Registered> {
        let mem = HostMemory::new(len)?;
        // SAFETY: the mapping lives in `self.mem`, dropped after `self.mr`.
        let mr = unsafe { Mr::register(pd, mem.as_ptr(), mem.len(), access) }?;
        Ok(Registered { mr, mem })
    }

    /// Remote key.
    pub fn rkey(&self) -> u32 {
        self.mr.rkey()
    }

    /// `len` bytes at `offset` (clamped to the mapping), for the CPU to read. The owner reads
    /// only bytes no posted work request is writing (a Receive that completed, chunk memory
    /// whose reply arrived).
    pub fn area(&self, offset: usize, len: usize) -> &[u8] {
        let start = offset.min(self.mem.len());
        let len = len.min(self.mem.len() - start);
        // SAFETY: `start .. start + len` lies inside the mapping, valid while `self` lives.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr().add(start), len) }
    }

    /// `len` bytes at `offset` (clamped), for the CPU to write; only bytes no posted work
    /// request touches.
    pub fn area_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        let start = offset.min(self.mem.len());
        let len = len.min(self.mem.len() - start);
        // SAFETY: as `area`; `&mut self` excludes other CPU borrows through this owner.
        unsafe { std::slice::from_raw_parts_mut(self.mem.as_ptr().add(start), len) }
    }

    /// The region for a receive pool.
    ///
    /// # Safety
    /// The pool built on it must be dropped before `self` (declare it before this field), and
    /// the device writes only into Receives that pool posted: the caller posts only the pool's
    /// work requests on the queue this memory serves.
    ///
    /// # Errors
    /// [`crate::Error::Dma`] if the mapping were misaligned (mmap is page-aligned).
    pub unsafe fn region(&self) -> Result<DmaRegion<'static>> {
        // SAFETY: the mapping is valid for len bytes and outlives the pool (caller); user-space
        // verbs use virtual addresses as device addresses.
        Ok(unsafe {
            DmaRegion::new(
                self.mem.as_ptr(),
                self.mem.as_ptr() as u64,
                self.mem.len(),
                self.mr.lkey(),
            )
        }?)
    }

    /// CPU address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.as_ptr()
    }

    /// Local key.
    pub fn lkey(&self) -> u32 {
        self.mr.lkey()
    }

    /// Mapped length.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// Whether huge pages back it.
    pub fn is_huge(&self) -> bool {
        self.mem.is_huge()
    }
}

/// A receive pool over memory registered once (or, in the comparison mode, per Receive). Field
/// order is drop order: the pool, the per-Receive MRs, the region MR, then the memory.
///
/// The pool's `'static` region really borrows `mem`; the pool never leaves this struct (only
/// `&mut` access inside the crate), so it cannot outlive the memory.
#[derive(Debug)]
pub struct RecvBuffers<const N: usize> {
    pool: RecvPool<'static, N>,
    per_recv: Vec<Option<(u64, Mr)>>,
    mr: Option<Mr>,
    mem: HostMemory,
}

impl<const N: usize> RecvBuffers<N> {
    /// Maps and registers (`LOCAL_WRITE` only) the buffers `config` asks for and builds the
    /// pool. With `per_receive`, nothing is registered now: every Receive gets its own MR when
    /// posted (through [`PerReceiveDevice`]), the design the persistent pool replaced.
    ///
    /// # Errors
    /// Mapping, registration or pool configuration failure.
    pub fn new(pd: &Pd, config: PoolConfig, per_receive: bool) -> Result<Box<Self>> {
        let mem = HostMemory::new(config.needed_region_len())?;
        let mr = if per_receive {
            None
        } else {
            // SAFETY: `mem` outlives `mr` (field order).
            Some(unsafe {
                Mr::register(
                    pd,
                    mem.as_ptr(),
                    mem.len(),
                    ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0,
                )
            }?)
        };
        let lkey = mr.as_ref().map_or(0, Mr::lkey);
        // SAFETY: the mapping lives in this struct and is dropped after the pool; the device
        // writes only into Receives this pool posted (the caller posts nothing else on its
        // queue); user-space verbs address memory by its virtual address.
        let region = unsafe { DmaRegion::new(mem.as_ptr(), mem.as_ptr() as u64, mem.len(), lkey) }?;
        let pool = RecvPool::new(region, config)?;
        let per_recv = (0..N.min(config.buffer_count())).map(|_| None).collect();
        Ok(Box::new(RecvBuffers {
            pool,
            per_recv,
            mr,
            mem,
        }))
    }

    /// The pool.
    pub fn pool(&self) -> &RecvPool<'static, N> {
        &self.pool
    }

    /// The pool, to post and complete.
    pub(crate) fn pool_mut(&mut self) -> &mut RecvPool<'static, N> {
        &mut self.pool
    }

    /// Whether every Receive is registered on its own (the comparison mode).
    pub fn per_receive(&self) -> bool {
        self.mr.is_none()
    }

    /// Registered bytes.
    pub fn registered_bytes(&self) -> usize {
        self.mem.len()
    }

    /// The pool and, in per-Receive mode, the device wrapper that registers each Receive as it
    /// is posted.
    pub(crate) fn parts<'d, D: Device>(
        &'d mut self,
        pd: &'d Pd,
        device: &'d mut D,
    ) -> (&'d mut RecvPool<'static, N>, PerReceiveDevice<'d, D>) {
        let mrs = if self.mr.is_none() {
            Some(&mut self.per_recv[..])
        } else {
            None
        };
        (
            &mut self.pool,
            PerReceiveDevice {
                inner: device,
                pd,
                mrs,
            },
        )
    }

    /// After a Receive completion was handed to the pool: in per-Receive mode, deregisters its
    /// buffer's MR once the pool has accepted the completion as its own (a stale or forged
    /// wr_id never matches the stored one, so it cannot deregister a live Receive).
    pub(crate) fn completed(&mut self, wr_id: u64) {
        if self.mr.is_some() {
            return;
        }
        let index = WrId(wr_id).index() as usize;
        let posted = self.pool.state(index) == Some(DescState::Posted);
        if let Some(slot) = self.per_recv.get_mut(index) {
            if !posted && slot.as_ref().is_some_and(|(id, _)| *id == wr_id) {
                slot.take();
            }
        }
    }
}

/// A [`Device`] that registers every Receive's buffer just before posting it (per-Receive
/// mode), or passes through (persistent mode). A registration that fails refuses that Receive
/// and the ones after it, which the pool takes back.
pub struct PerReceiveDevice<'d, D: Device> {
    inner: &'d mut D,
    pd: &'d Pd,
    mrs: Option<&'d mut [Option<(u64, Mr)>]>,
}

impl<D: Device> Device for PerReceiveDevice<'_, D> {
    fn post_recv(&mut self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
        let Some(mrs) = self.mrs.as_deref_mut() else {
            return self.inner.post_recv(wrs);
        };
        let mut patched = [RecvWr::default(); REFILL_CHAIN];
        for (start, part) in (0..).step_by(REFILL_CHAIN).zip(wrs.chunks(REFILL_CHAIN)) {
            let mut ok = 0;
            let mut failure = None;
            for (i, wr) in part.iter().enumerate() {
                // SAFETY: the buffer lies inside the pool's mapping, which outlives every MR in
                // `mrs` (RecvBuffers' field order).
                let mr = unsafe {
                    Mr::register(
                        self.pd,
                        wr.addr as *mut u8,
                        wr.length as usize,
                        ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0,
                    )
                };
                match mr {
                    Ok(mr) => {
                        patched[i] = RecvWr {
                            lkey: mr.lkey(),
                            ..*wr
                        };
                        if let Some(slot) = mrs.get_mut(WrId(wr.wr_id).index() as usize) {
                            *slot = Some((wr.wr_id, mr));
                        }
                        ok += 1;
                    }
                    Err(e) => {
                        log::warn!("per-Receive registration failed: {e}");
                        failure = Some(PostError {
                            index: start + i,
                            code: libc::ENOMEM,
                        });
                        break;
                    }
                }
            }
            if let Err(e) = self.inner.post_recv(&patched[..ok]) {
                return Err(PostError {
                    index: start + e.index,
                    code: e.code,
                });
            }
            if let Some(f) = failure {
                return Err(f);
            }
        }
        Ok(())
    }

    fn post_send(&mut self, wrs: &[SendWr]) -> std::result::Result<(), PostError> {
        self.inner.post_send(wrs)
    }

    fn poll(&mut self, out: &mut [Completion]) -> usize {
        self.inner.poll(out)
    }
}

/// A page pool over memory registered once with `LOCAL_WRITE` (Read sinks, reply payloads).
/// Field order is drop order; the pool's `'static` region borrows `mem` and never leaves.
#[derive(Debug)]
pub struct Pages<const P: usize> {
    pool: PagePool<'static, P>,
    mem: Registered,
}

impl<const P: usize> Pages<P> {
    /// `bytes` of pages of `page_size` bytes.
    ///
    /// # Errors
    /// Mapping, registration or page-pool configuration failure.
    pub fn new(pd: &Pd, bytes: usize, page_size: usize) -> Result<Box<Self>> {
        let mem = Registered::local_write(pd, bytes)?;
        // SAFETY: the pool lives in this struct and is dropped before `mem`; the device writes
        // only into runs the responder posted Reads for.
        let region = unsafe { mem.region() }?;
        let pool = PagePool::new(region, page_size)
            .map_err(|e| crate::Error::Protocol(format!("page pool: {e}")))?;
        Ok(Box::new(Pages { pool, mem }))
    }

    /// The pool.
    pub(crate) fn pool_mut(&mut self) -> &mut PagePool<'static, P> {
        &mut self.pool
    }

    /// The pool (read-only).
    pub fn pool(&self) -> &PagePool<'static, P> {
        &self.pool
    }

    /// Registered bytes.
    pub fn registered_bytes(&self) -> usize {
        self.mem.len()
    }
}

/// A connection's responder with its send slots in memory registered once. Field order is
/// drop order; the responder's `'static` region borrows `mem` and never leaves this struct.
pub struct ResponderMemory<const C: usize> {
    conn: Connection<'static, C>,
    mem: Registered,
}

impl<const C: usize> ResponderMemory<C> {
    /// Registers the send slots `config` needs and builds the responder for a requester that
    /// receives `peer_inline` bytes inline.
    ///
    /// # Errors
    /// Mapping, registration or responder configuration failure.
    pub fn new(pd: &Pd, config: ResponderConfig, peer_inline: usize) -> Result<Box<Self>> {
        let mem = Registered::local_write(pd, config.send_region_len())?;
        // SAFETY: the responder lives in this struct and is dropped before `mem`; the device
        // reads a send slot only between the Send's post and its completion.
        let region = unsafe { mem.region() }?;
        let conn = Connection::new(region, config, peer_inline)
            .map_err(|e| crate::Error::Protocol(format!("responder: {e}")))?;
        Ok(Box::new(ResponderMemory { conn, mem }))
    }

    /// The responder.
    pub(crate) fn conn_mut(&mut self) -> &mut Connection<'static, C> {
        &mut self.conn
    }

    /// The responder (read-only).
    pub fn conn(&self) -> &Connection<'static, C> {
        &self.conn
    }

    /// Registered bytes.
    pub fn registered_bytes(&self) -> usize {
        self.mem.len()
    }
}

/// Registered memory filled once, that a service hands out as reply payloads without copying
/// (the example service's SOURCE procedure).
#[derive(Debug)]
pub struct SourceMemory {
    mem: Registered,
}

impl SourceMemory {
    /// `len` bytes registered with `LOCAL_WRITE`, filled by `fill`.
    ///
    /// # Errors
    /// Mapping or registration failure.
    pub fn new(pd: &Pd, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<SourceMemory> {
        let mut mem = Registered::local_write(pd, len)?;
        fill(mem.area_mut(0, len));
        Ok(SourceMemory { mem })
    }

    /// The bytes as the service keeps them, with their device address and key.
    ///
    /// Crate contract: the owner ([`crate::server::Server`]) takes them back from the service
    /// (`clear_source`) before this memory is dropped, so the `'static` never outlives it.
    pub(crate) fn for_service(&self, len: usize) -> (&'static [u8], u64, u32) {
        let len = len.min(self.mem.len());
        // SAFETY: the mapping is valid for `len` bytes while `self` lives and is never written
        // again after `new`; the server clears the service's copy before dropping `self`.
        let bytes = unsafe { std::slice::from_raw_parts(self.mem.as_ptr(), len) };
        (bytes, self.mem.as_ptr() as u64, self.mem.lkey())
    }
}
