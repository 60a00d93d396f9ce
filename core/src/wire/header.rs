//! Zero-copy view of the 16-byte fixed header: `xid`, `vers`, `credits`, `proc`.

use super::{be32_checked, put_xdr_u32, DecodeError, FIXED_HEADER_LEN};

mod field {
    pub const XID: usize = 0;
    pub const VERS: usize = 4;
    pub const CREDITS: usize = 8;
    pub const PROC: usize = 12;
}

/// A fixed-header view over a buffer (smoltcp's `Packet` pattern).
///
/// Getters never panic: on a buffer that failed [`Header::check_len`] they return 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Header { buffer }
    }

    /// Wraps a buffer that holds at least a fixed header.
    ///
    /// # Errors
    /// [`DecodeError::TooShortForHeader`] if fewer than 16 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks that the buffer holds a fixed header.
    ///
    /// # Errors
    /// [`DecodeError::TooShortForHeader`] if fewer than 16 bytes.
    pub fn check_len(&self) -> Result<(), DecodeError> {
        let len = self.buffer.as_ref().len();
        if len < FIXED_HEADER_LEN {
            Err(DecodeError::TooShortForHeader { len })
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// `rdma_xid`: the RPC transaction id this header travels with.
    #[inline]
    pub fn xid(&self) -> u32 {
        be32_checked(self.buffer.as_ref(), field::XID)
    }

    /// `rdma_vers`.
    #[inline]
    pub fn vers(&self) -> u32 {
        be32_checked(self.buffer.as_ref(), field::VERS)
    }

    /// `rdma_credit`: requested (call) or granted (reply) credits.
    #[inline]
    pub fn credits(&self) -> u32 {
        be32_checked(self.buffer.as_ref(), field::CREDITS)
    }

    /// `rdma_proc` as a raw word (see [`super::Proc::from_wire`]).
    #[inline]
    pub fn proc_raw(&self) -> u32 {
        be32_checked(self.buffer.as_ref(), field::PROC)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Sets `rdma_xid`.
    pub fn set_xid(&mut self, value: u32) {
        put_xdr_u32(self.buffer.as_mut(), field::XID, value)
    }
    /// Sets `rdma_vers`.
    pub fn set_vers(&mut self, value: u32) {
        put_xdr_u32(self.buffer.as_mut(), field::VERS, value)
    }
    /// Sets `rdma_credit`.
    pub fn set_credits(&mut self, value: u32) {
        put_xdr_u32(self.buffer.as_mut(), field::CREDITS, value)
    }
    /// Sets `rdma_proc`.
    pub fn set_proc_raw(&mut self, value: u32) {
        put_xdr_u32(self.buffer.as_mut(), field::PROC, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HEADER_BYTES: [u8; 16] = [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0, 0, 0, 32, 0, 0, 0, 0];

    #[test]
    fn test_getters() {
        let h = Header::new_checked(&HEADER_BYTES[..]).unwrap();
        assert_eq!(h.xid(), 0xdeadbeef);
        assert_eq!(h.vers(), 1);
        assert_eq!(h.credits(), 32);
        assert_eq!(h.proc_raw(), 0);
    }

    #[test]
    fn test_setters() {
        let mut bytes = [0u8; 16];
        let mut h = Header::new_unchecked(&mut bytes[..]);
        h.set_xid(0xdeadbeef);
        h.set_vers(1);
        h.set_credits(32);
        h.set_proc_raw(0);
        assert_eq!(bytes, HEADER_BYTES);
    }

    #[test]
    fn test_truncated() {
        for len in 0..16 {
            assert_eq!(
                Header::new_checked(&HEADER_BYTES[..len]).unwrap_err(),
                DecodeError::TooShortForHeader { len }
            );
        }
    }
}
