//! Which NFS binding (RFC 8267) places a reply's DDP-eligible item: the one question a
//! forwarding server asks of NFS, answered for NFSv3 and NFSv4.x in one place.

use crate::{nfs3, nfs4};

/// The binding a call's reply follows when it may carry a DDP-eligible item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdpReply {
    /// NFSv3 READ or READLINK (`proc_`).
    Nfs3 {
        /// The procedure.
        proc_: u32,
    },
    /// An NFSv4.x COMPOUND for which the requester offered a write chunk.
    Nfs4,
}

impl DdpReply {
    /// The binding of a call to `prog` / `vers` / `proc_`, given whether the requester offered a
    /// write chunk; `None` when its reply has no DDP-eligible item.
    pub fn of_call(prog: u32, vers: u32, proc_: u32, offered_write_chunk: bool) -> Option<Self> {
        if nfs3::reply_has_ddp_item(prog, vers, proc_) {
            Some(DdpReply::Nfs3 { proc_ })
        } else if nfs4::reply_has_ddp_item(prog, vers, proc_, offered_write_chunk) {
            Some(DdpReply::Nfs4)
        } else {
            None
        }
    }

    /// Where the item lies in a reply of `total` bytes starting with `prefix`:
    /// `(offset, length)`, or `None` if it has none.
    pub fn item_in(self, prefix: &[u8], total: usize) -> Option<(usize, usize)> {
        match self {
            DdpReply::Nfs3 { proc_ } => nfs3::ddp_item_in(proc_, prefix, total),
            DdpReply::Nfs4 => nfs4::ddp_item_in(prefix, total),
        }
    }

    /// [`DdpReply::item_in`] for a whole reply.
    pub fn item(self, record: &[u8]) -> Option<(usize, usize)> {
        self.item_in(record, record.len())
    }
}
