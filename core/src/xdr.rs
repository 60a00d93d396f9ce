//! The XDR view handed to the RPC layer: `head`, `pages`, `tail`, like the kernel's `xdr_buf`.
//!
//! Built in constant time from a received [`Message`]: `head` is a slice of the Receive buffer
//! (no copy, independent of the buffer size and of the pool size). Without Read chunks the whole
//! inline RPC message is `head`, and `pages` and `tail` are empty. With Read chunks, `head` is
//! the inline bytes before the first chunk's inline offset and `tail` the inline bytes after it;
//! the chunk data is not in the Receive buffer (it arrives by RDMA Read into pages the caller
//! provides), so `pages` stays empty and [`XdrView::read_payload_len`] says how much belongs
//! there. An RDMA_NOMSG call has an empty `head`: the whole call is in the call chunk.

use crate::wire::Message;

/// A received RPC message as `head` / `pages` / `tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdrView<'a> {
    message: Message<'a>,
    head: &'a [u8],
    tail: &'a [u8],
}

impl<'a> XdrView<'a> {
    /// The view of a decoded message.
    #[inline]
    pub fn new(message: Message<'a>) -> Self {
        let inline = message.rpc_message();
        if !message.has_read_chunks() {
            return XdrView {
                message,
                head: inline,
                tail: &[],
            };
        }
        Self::split_at_read_chunk(message, inline)
    }

    #[cold]
    fn split_at_read_chunk(message: Message<'a>, inline: &'a [u8]) -> Self {
        let at = message
            .read_list()
            .chunks()
            .next()
            .map_or(inline.len(), |c| {
                usize::try_from(c.inline_offset).unwrap_or(usize::MAX)
            })
            .min(inline.len());
        let (head, tail) = inline.split_at(at);
        XdrView {
            message,
            head,
            tail,
        }
    }

    /// The inline bytes before the first Read chunk (all of them without Read chunks).
    #[inline]
    pub fn head(&self) -> &'a [u8] {
        self.head
    }

    /// The Read chunk data. Always empty here: the data arrives by RDMA Read into memory the
    /// caller provides; see [`XdrView::read_payload_len`].
    #[inline]
    pub fn pages(&self) -> &'a [&'a [u8]] {
        &[]
    }

    /// The inline bytes after the first Read chunk's position.
    #[inline]
    pub fn tail(&self) -> &'a [u8] {
        self.tail
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
}
