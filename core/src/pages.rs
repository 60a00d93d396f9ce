//! Pages of DMA memory registered once: the persistent-registration idea applied to Read-chunk
//! sinks and to reply payloads.
//!
//! A [`PagePool`] carves one [`DmaRegion`] into `count` pages of `page_size` bytes and hands out
//! contiguous runs of pages ([`PageRun`]). A run is one SGE for the device (an RDMA Read lands
//! in it, an RDMA Write is read from it) and one slice for the CPU, so the XDR view's `pages`
//! part is a plain `&[u8]`.
//!
//! # Invariants
//! - every page is free or belongs to exactly one live run; runs never overlap;
//! - a run is a token (not `Clone`); [`PagePool::free`] consumes it and checks its generation,
//!   so a run cannot be freed twice;
//! - the CPU borrows a run's bytes only through the pool (`&self` / `&mut self`); the owner of
//!   the run (the responder) borrows it only while no device work request on it is posted.
//!
//! Allocation is first fit over a fixed table (O(pages) in the worst case, only for calls that
//! carry Read chunks or payloads); freeing is O(pages of the run).

use crate::dma::DmaRegion;

/// Why a page pool could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PagePoolError {
    /// The page size is not a power of two of at least 64 bytes.
    PageSize {
        /// The size asked for.
        size: usize,
    },
    /// The region holds no page, or more pages than the capacity `P` (or 65535).
    PageCount {
        /// Pages the region holds.
        pages: usize,
        /// Capacity.
        capacity: usize,
    },
}

impl core::fmt::Display for PagePoolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PagePoolError::PageSize { size } => write!(
                f,
                "page size {size} is not a power of two of at least 64 bytes"
            ),
            PagePoolError::PageCount { pages, capacity } => write!(
                f,
                "the region holds {pages} pages; a page pool takes 1..={capacity}: resize the \
                 region or the pool capacity"
            ),
        }
    }
}

impl core::error::Error for PagePoolError {}

/// A contiguous run of pages: the token that owns them. Not `Clone`.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "free the run with PagePool::free, or its pages stay taken until reset"]
pub struct PageRun {
    first: u16,
    pages: u16,
    generation: u16,
    len: u32,
}

impl PageRun {
    /// Bytes the run was asked for (at most its pages' size).
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the run holds no bytes (never, for a run the pool handed out).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pages in the run.
    #[inline]
    pub fn pages(&self) -> usize {
        self.pages as usize
    }
}

/// A pool of `P` (at most) pages over one DMA region.
#[derive(Debug)]
pub struct PagePool<'a, const P: usize> {
    region: DmaRegion<'a>,
    page_size: usize,
    /// `log2(page_size)`: page arithmetic by shifts (no division, so no panic path).
    page_shift: u32,
    count: u16,
    free_pages: u16,
    /// Per page: 0 when free, else the generation of the run that holds it.
    owner: [u16; P],
    next_generation: u16,
}

impl<'a, const P: usize> PagePool<'a, P> {
    /// Carves `region` into as many pages of `page_size` bytes as fit (at most `P`).
    ///
    /// # Errors
    /// [`PagePoolError`] for a bad page size or a region with no page.
    pub fn new(region: DmaRegion<'a>, page_size: usize) -> Result<Self, PagePoolError> {
        if !page_size.is_power_of_two() || page_size < crate::dma::CACHE_LINE {
            return Err(PagePoolError::PageSize { size: page_size });
        }
        let page_shift = page_size.trailing_zeros();
        let pages = region.len() >> page_shift;
        let capacity = P.min(u16::MAX as usize);
        if pages == 0 {
            return Err(PagePoolError::PageCount { pages, capacity });
        }
        let count = pages.min(capacity) as u16;
        Ok(PagePool {
            region,
            page_size,
            page_shift,
            count,
            free_pages: count,
            owner: [0; P],
            next_generation: 1,
        })
    }

    /// Bytes per page.
    #[inline]
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Pages in the pool.
    #[inline]
    pub fn page_count(&self) -> usize {
        self.count as usize
    }

    /// Free pages.
    #[inline]
    pub fn free_pages(&self) -> usize {
        self.free_pages as usize
    }

    /// Pages `len` bytes need.
    #[inline]
    pub fn pages_for(&self, len: usize) -> usize {
        (len.saturating_add(self.page_size - 1) >> self.page_shift).max(1)
    }

    /// Whether a run of `len` bytes could ever be allocated (the pool is large enough).
    #[inline]
    pub fn fits(&self, len: usize) -> bool {
        self.pages_for(len) <= self.count as usize
    }

    /// A contiguous run for `len` bytes (first fit), or `None` if no such run is free now.
    pub fn alloc(&mut self, len: usize) -> Option<PageRun> {
        let want = self.pages_for(len);
        if want > self.free_pages as usize || len > u32::MAX as usize {
            return None;
        }
        let count = self.count as usize;
        let mut start = 0;
        while start + want <= count {
            let window = self.owner.get(start..start + want)?;
            match window.iter().rposition(|&o| o != 0) {
                // Skip past the last taken page in the window.
                Some(taken) => start += taken + 1,
                None => {
                    let generation = self.next_generation;
                    self.next_generation = match self.next_generation.wrapping_add(1) {
                        0 => 1,
                        g => g,
                    };
                    for o in self.owner.get_mut(start..start + want)? {
                        *o = generation;
                    }
                    self.free_pages -= want as u16;
                    return Some(PageRun {
                        first: start as u16,
                        pages: want as u16,
                        generation,
                        len: len as u32,
                    });
                }
            }
        }
        None
    }

    /// Whether `run` is a live run of this pool.
    pub fn owns(&self, run: &PageRun) -> bool {
        let first = run.first as usize;
        run.pages != 0
            && self
                .owner
                .get(first..first + run.pages as usize)
                .is_some_and(|o| o.iter().all(|&g| g == run.generation))
    }

    /// Returns a run's pages. A run that is not live here (freed by [`PagePool::reset`], or
    /// from another pool) is ignored and `false` returned.
    pub fn free(&mut self, run: PageRun) -> bool {
        if !self.owns(&run) {
            return false;
        }
        let first = run.first as usize;
        if let Some(pages) = self.owner.get_mut(first..first + run.pages as usize) {
            pages.fill(0);
        }
        self.free_pages += run.pages;
        true
    }

    /// Frees every page (teardown, after the device stopped touching the memory). Runs still
    /// out become stale: [`PagePool::free`] ignores them.
    pub fn reset(&mut self) {
        self.owner.fill(0);
        self.free_pages = self.count;
    }

    /// Device address of byte `offset` of `run`.
    #[inline]
    pub fn device_addr(&self, run: &PageRun, offset: usize) -> u64 {
        self.region
            .device_addr(run.first as usize * self.page_size + offset)
    }

    /// The local key of the pool's region.
    #[inline]
    pub fn lkey(&self) -> u32 {
        self.region.lkey()
    }

    /// The run's `len` bytes for the CPU to read. The caller (the responder) asks only for
    /// runs no posted work request writes.
    #[inline]
    pub fn bytes(&self, run: &PageRun) -> &[u8] {
        if !self.owns(run) {
            return &[];
        }
        self.region
            .bytes(run.first as usize * self.page_size, run.len as usize)
            .unwrap_or_default()
    }

    /// The run's `len` bytes for the CPU to write (fill a payload, place inline pieces). The
    /// caller asks only for runs no posted work request touches.
    #[inline]
    pub fn bytes_mut(&mut self, run: &PageRun) -> &mut [u8] {
        if !self.owns(run) {
            return &mut [];
        }
        self.region
            .bytes_mut(run.first as usize * self.page_size, run.len as usize)
            .unwrap_or_default()
    }
}
