//! The XDR view handed to the RPC layer: `head`, `pages`, `tail`, like the kernel's `xdr_buf`.
//!
//! Built in constant time, without copying the message:
//! - **no Read chunks**: `head` is the inline RPC message, a slice of the Receive buffer;
//!   `pages` and `tail` are empty;
//! - **a data chunk** (RDMA_MSG with a Read chunk at position P): `head` is the inline bytes
//!   before the chunk's place, `pages` the chunk data that RDMA Read pulled into a page run
//!   (registered once, see [`crate::pages`]), `tail` the inline bytes after it;
//! - **a call chunk** (RDMA_NOMSG, or RDMA_MSG with a position-zero chunk): the call itself was
//!   pulled into the page run; `head` is its bytes (up to the first data chunk inside it, if
//!   any), `pages` / `tail` as above.
//!
//! `pages` holds exactly the data the chunks carried: the XDR roundup of the last data item is
//! not in it (RFC 8166 leaves it out of both the chunk and the inline stream), so the stream is
//! `head ‖ pages ‖ pad ‖ tail` with `pad` zero bytes up to a multiple of four. When one call
//! carries several data chunks, the inline bytes between them are placed between the chunks'
//! data in the page run (the only copy, bounded by the inline size), so `pages` stays one slice.
//!
//! A view made by [`XdrView::new`] from a bare [`Message`] (no responder, no pages) has empty
//! `pages` and splits the inline bytes at the first data chunk's place;
//! [`XdrView::read_payload_len`] says how much belongs there.

use crate::wire::Message;

/// A received RPC message as `head` / `pages` / `tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdrView<'a> {
    message: Message<'a>,
    head: &'a [u8],
    pages: &'a [u8],
    tail: &'a [u8],
}

impl<'a> XdrView<'a> {
    /// The view of a decoded message whose Read chunks (if any) were not pulled.
    #[inline]
    pub fn new(message: Message<'a>) -> Self {
        let inline = message.rpc_message();
        if !message.has_read_chunks() {
            return XdrView {
                message,
                head: inline,
                pages: &[],
                tail: &[],
            };
        }
        Self::split_at_read_chunk(message, inline)
    }

    /// The view of a message known to have no Read chunks: `head` is its inline message.
    #[inline(always)]
    pub(crate) fn inline(message: Message<'a>) -> Self {
        XdrView {
            head: message.rpc_message(),
            message,
            pages: &[],
            tail: &[],
        }
    }

    #[cold]
    fn split_at_read_chunk(message: Message<'a>, inline: &'a [u8]) -> Self {
        let at = message
            .read_list()
            .chunks()
            .find(|c| c.position != 0)
            .map_or(inline.len(), |c| {
                usize::try_from(c.inline_offset).unwrap_or(usize::MAX)
            })
            .min(inline.len());
        let (head, tail) = inline.split_at(at);
        XdrView {
            message,
            head,
            pages: &[],
            tail,
        }
    }

    /// A view from its parts (the responder builds these once the Read chunks arrived).
    #[inline]
    pub fn from_parts(
        message: Message<'a>,
        head: &'a [u8],
        pages: &'a [u8],
        tail: &'a [u8],
    ) -> Self {
        XdrView {
            message,
            head,
            pages,
            tail,
        }
    }

    /// The bytes before the first data chunk (all of the call without one).
    #[inline]
    pub fn head(&self) -> &'a [u8] {
        self.head
    }

    /// The data the Read chunks carried (empty without data chunks, or when not pulled).
    #[inline]
    pub fn pages(&self) -> &'a [u8] {
        self.pages
    }

    /// The bytes after the last data chunk's place.
    #[inline]
    pub fn tail(&self) -> &'a [u8] {
        self.tail
    }

    /// Zero bytes between `pages` and `tail` in the XDR stream (the last data item's roundup).
    #[inline]
    pub fn pad_len(&self) -> usize {
        if self.pages.is_empty() {
            0
        } else {
            (4 - self.pages.len() % 4) % 4
        }
    }

    /// Length of the whole XDR stream: `head + pages + pad + tail`.
    #[inline]
    pub fn len(&self) -> usize {
        self.head.len() + self.pages.len() + self.pad_len() + self.tail.len()
    }

    /// Whether the stream is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the Read chunks carry (0 without Read chunks).
    pub fn read_payload_len(&self) -> u64 {
        self.message.read_list().total_len()
    }

    /// The transport header and chunk lists the view came from.
    #[inline]
    pub fn message(&self) -> &Message<'a> {
        &self.message
    }

    /// Inline length: `head().len() + tail().len()`.
    #[inline]
    pub fn inline_len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The stream's four parts in order: `head`, `pages`, the pad (zeros), `tail`.
    #[inline]
    pub fn parts(&self) -> [&'a [u8]; 4] {
        static ZEROS: [u8; 3] = [0; 3];
        [
            self.head,
            self.pages,
            ZEROS.get(..self.pad_len()).unwrap_or_default(),
            self.tail,
        ]
    }

    /// Calls `f` with the slices that make up stream bytes `offset .. offset + len` (fewer if
    /// the stream ends first), in order, without copying.
    pub fn for_each_slice(&self, offset: usize, len: usize, mut f: impl FnMut(&'a [u8])) {
        let mut skip = offset;
        let mut left = len;
        for part in self.parts() {
            if left == 0 {
                break;
            }
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let piece = part.get(skip..).unwrap_or_default();
            skip = 0;
            let piece = piece.get(..left.min(piece.len())).unwrap_or_default();
            left -= piece.len();
            f(piece);
        }
    }

    /// The big-endian word at stream offset `offset`.
    #[inline]
    pub fn word(&self, offset: usize) -> Option<u32> {
        // Most words of a call (its RPC header) lie in `head`: read them in place. (The check
        // `wire::xdr_u32` makes, kept in this shape: every RPC header word the services read
        // on the measured path comes through here.)
        if let Some(w) = self.head.get(offset..).and_then(<[u8]>::first_chunk::<4>) {
            return Some(u32::from_be_bytes(*w));
        }
        self.word_across(offset)
    }

    /// [`XdrView::word`] for a word that is not wholly in `head`.
    #[inline(never)]
    fn word_across(&self, offset: usize) -> Option<u32> {
        let mut b = [0u8; 4];
        (self.copy_out(offset, &mut b) == 4).then(|| u32::from_be_bytes(b))
    }

    /// The byte at `offset` of the XDR stream, for decoders that read across the parts.
    pub fn byte_at(&self, offset: usize) -> Option<u8> {
        let mut at = offset;
        for part in [self.head, self.pages] {
            if at < part.len() {
                return part.get(at).copied();
            }
            at -= part.len();
        }
        let pad = self.pad_len();
        if at < pad {
            return Some(0);
        }
        self.tail.get(at - pad).copied()
    }

    /// Copies the XDR stream from `offset` into `out`; returns how many bytes were copied
    /// (fewer when the stream ends first).
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) -> usize {
        let mut done = 0;
        self.for_each_slice(offset, out.len(), |piece| {
            if let Some(dst) = out.get_mut(done..done + piece.len()) {
                dst.copy_from_slice(piece);
            }
            done += piece.len();
        });
        done
    }
}
