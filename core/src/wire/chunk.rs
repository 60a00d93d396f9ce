//! Segments and chunk lists: owned values ([`Segment`], [`ReadSegment`], [`ReadChunk`]) and
//! zero-copy views over validated header bytes ([`SegmentList`], [`ReadList`], [`WriteList`]).
//!
//! The views are only built by [`super::decode`] after it validated the bytes, so iteration
//! needs no error path; it still reads through checked accessors and stops early rather than
//! panic if handed inconsistent bytes.

use static_assertions::assert_eq_size;

use super::{put_xdr_u32, xdr_roundup, xdr_u32, READ_ITEM_LEN, SEGMENT_LEN, XDR_UNIT};

/// An RDMA segment: a region of the requester's registered memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Segment {
    /// `rdma_handle`: the remote key (R_key) of the region.
    pub handle: u32,
    /// `rdma_length` in bytes.
    pub length: u32,
    /// `rdma_offset`: the remote address.
    pub offset: u64,
}

assert_eq_size!(Segment, [u8; SEGMENT_LEN]);

impl Segment {
    /// Parses a segment from 16 bytes at `at`, `None` if they are not all there.
    #[inline]
    pub(crate) fn read(buf: &[u8], at: usize) -> Option<Segment> {
        let bytes = buf.get(at..at.checked_add(SEGMENT_LEN)?)?;
        let hi = xdr_u32(bytes, 8)? as u64;
        let lo = xdr_u32(bytes, 12)? as u64;
        Some(Segment {
            handle: xdr_u32(bytes, 0)?,
            length: xdr_u32(bytes, 4)?,
            offset: (hi << 32) | lo,
        })
    }

    /// Writes the segment's 16 bytes at `at` (the caller checked the room).
    #[inline]
    pub(crate) fn write(&self, buf: &mut [u8], at: usize) {
        let Some(end) = at.checked_add(SEGMENT_LEN) else {
            return;
        };
        if let Some(bytes) = buf.get_mut(at..end) {
            put_xdr_u32(bytes, 0, self.handle);
            put_xdr_u32(bytes, 4, self.length);
            put_xdr_u32(bytes, 8, (self.offset >> 32) as u32);
            put_xdr_u32(bytes, 12, self.offset as u32);
        }
    }
}

/// One read-list item: a segment and the XDR position its data goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReadSegment {
    /// Byte offset in the reassembled RPC message; 0 means the call chunk.
    pub position: u32,
    /// The requester's memory to RDMA Read from.
    pub segment: Segment,
}

/// A counted array of segments (one write chunk, or the reply chunk), as validated wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentList<'a> {
    bytes: &'a [u8],
}

impl<'a> SegmentList<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        SegmentList { bytes }
    }

    /// Number of segments.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() / SEGMENT_LEN
    }

    /// Whether there are no segments (never true for a decoded chunk).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.len() < SEGMENT_LEN
    }

    /// Segment `i`, if it exists.
    pub fn get(&self, i: usize) -> Option<Segment> {
        Segment::read(self.bytes, i.checked_mul(SEGMENT_LEN)?)
    }

    /// Iterates the segments.
    pub fn iter(&self) -> Segments<'a> {
        Segments {
            bytes: self.bytes,
            at: 0,
        }
    }

    /// Sum of the segment lengths, in u64 so it cannot overflow.
    pub fn total_len(&self) -> u64 {
        self.iter().map(|s| s.length as u64).sum()
    }
}

impl<'a> IntoIterator for SegmentList<'a> {
    type Item = Segment;
    type IntoIter = Segments<'a>;
    fn into_iter(self) -> Segments<'a> {
        self.iter()
    }
}

/// Iterator over a [`SegmentList`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Iterator for Segments<'_> {
    type Item = Segment;
    #[inline]
    fn next(&mut self) -> Option<Segment> {
        let seg = Segment::read(self.bytes, self.at)?;
        self.at += SEGMENT_LEN;
        Some(seg)
    }
}

/// The read list of a decoded message: items `1, position, segment`, as validated wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadList<'a> {
    /// The items, each `discriminator(1), position, segment` (24 bytes), without the final 0.
    items: &'a [u8],
}

const READ_STRIDE: usize = XDR_UNIT + READ_ITEM_LEN;

impl<'a> ReadList<'a> {
    pub(crate) fn new(items: &'a [u8]) -> Self {
        ReadList { items }
    }

    /// Number of read segments.
    #[inline]
    pub fn len(&self) -> usize {
        self.items.len() / READ_STRIDE
    }

    /// Whether the list is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.items.len() < READ_STRIDE
    }

    /// Read segment `i`, if it exists.
    pub fn get(&self, i: usize) -> Option<ReadSegment> {
        let at = i.checked_mul(READ_STRIDE)?;
        Some(ReadSegment {
            position: xdr_u32(self.items, at.checked_add(XDR_UNIT)?)?,
            segment: Segment::read(self.items, at.checked_add(2 * XDR_UNIT)?)?,
        })
    }

    /// Iterates the read segments in wire order.
    pub fn iter(&self) -> impl Iterator<Item = ReadSegment> + 'a {
        let list = *self;
        (0..list.len()).map_while(move |i| list.get(i))
    }

    /// Groups the segments into Read chunks (consecutive items with the same position).
    pub fn chunks(&self) -> ReadChunks<'a> {
        ReadChunks {
            list: *self,
            next: 0,
            data_before: 0,
        }
    }

    /// The position-zero (call) chunk, if the first chunk has position 0.
    pub fn call_chunk(&self) -> Option<ReadChunk<'a>> {
        self.chunks().next().filter(|c| c.position == 0)
    }

    /// Sum of all read segment lengths.
    pub fn total_len(&self) -> u64 {
        self.iter().map(|s| s.segment.length as u64).sum()
    }
}

/// A Read chunk: the read segments that share one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadChunk<'a> {
    /// Position in the reassembled RPC message.
    pub position: u32,
    /// Where the chunk data goes in the base it is inserted into — the inline body, or the
    /// call chunk's data when there is one: `position` less the (XDR-padded) data of the data
    /// chunks before it. The call chunk itself has offset 0 and is not counted. The XDR head
    /// is `base[..inline_offset]`.
    pub inline_offset: u64,
    /// Total data length (sum of the segment lengths).
    pub length: u64,
    segments: ReadList<'a>,
}

impl<'a> ReadChunk<'a> {
    /// The chunk's segments.
    pub fn segments(&self) -> impl Iterator<Item = Segment> + 'a {
        self.segments.iter().map(|r| r.segment)
    }

    /// Number of segments in the chunk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// Iterator over the Read chunks of a [`ReadList`].
#[derive(Debug, Clone)]
pub struct ReadChunks<'a> {
    list: ReadList<'a>,
    next: usize,
    data_before: u64,
}

impl<'a> Iterator for ReadChunks<'a> {
    type Item = ReadChunk<'a>;
    fn next(&mut self) -> Option<ReadChunk<'a>> {
        let first = self.list.get(self.next)?;
        let start = self.next;
        let mut length = 0u64;
        while let Some(item) = self.list.get(self.next) {
            if item.position != first.position {
                break;
            }
            length += item.segment.length as u64;
            self.next += 1;
        }
        let items = self
            .list
            .items
            .get(start * READ_STRIDE..self.next * READ_STRIDE)
            .unwrap_or_default();
        let chunk = ReadChunk {
            position: first.position,
            inline_offset: (first.position as u64).saturating_sub(self.data_before),
            length,
            segments: ReadList::new(items),
        };
        if first.position != 0 {
            self.data_before += xdr_roundup_u64(length);
        }
        Some(chunk)
    }
}

#[inline]
pub(crate) fn xdr_roundup_u64(len: u64) -> u64 {
    len.saturating_add(3) & !3
}

// Keep the two roundups in agreement.
const _: () = assert!(xdr_roundup(5) == 8 && xdr_roundup(u32::MAX) == 0x1_0000_0000);

/// The write list of a decoded message: chunks `1, count, count × segment`, validated bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteList<'a> {
    /// The chunks without the final 0 discriminator.
    bytes: &'a [u8],
    count: usize,
}

impl<'a> WriteList<'a> {
    pub(crate) fn new(bytes: &'a [u8], count: usize) -> Self {
        WriteList { bytes, count }
    }

    /// Number of write chunks.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the list is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Iterates the write chunks.
    pub fn iter(&self) -> impl Iterator<Item = SegmentList<'a>> + 'a {
        let bytes = self.bytes;
        let mut at = 0usize;
        core::iter::from_fn(move || {
            // Each chunk: discriminator (1), count, segments.
            let count = xdr_u32(bytes, at.checked_add(XDR_UNIT)?)? as usize;
            let start = at.checked_add(2 * XDR_UNIT)?;
            let end = start.checked_add(count.checked_mul(SEGMENT_LEN)?)?;
            let segs = bytes.get(start..end)?;
            at = end;
            Some(SegmentList::new(segs))
        })
    }
}
