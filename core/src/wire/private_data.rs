//! RFC 8797 connection private data: exchanged in the rdma_cm connect request and accept.
//!
//! ```text
//!  0                   1                   2                   3
//! +---------------------------------------------------------------+
//! |                     magic 0xf6ab0e18                          |
//! +---------------+---------------+---------------+---------------+
//! |    version    |     flags     |   send_size   |   recv_size   |
//! +---------------+---------------+---------------+---------------+
//! ```
//! Sizes are encoded as `bytes / 1024 - 1`, so one byte covers 1 KiB ..= 256 KiB.

use bitflags::bitflags;
use static_assertions::const_assert_eq;

use super::be32_checked;

/// `magic` of RPC-over-RDMA private data.
pub const PRIVATE_DATA_MAGIC: u32 = 0xf6ab_0e18;
/// The private-data format version.
pub const PRIVATE_DATA_VERSION: u8 = 1;
/// Bytes of private data.
pub const PRIVATE_DATA_LEN: usize = 8;
const SIZE_UNIT: u32 = 1024;
/// Smallest size the format can express.
pub const MIN_ENCODED_SIZE: u32 = SIZE_UNIT;
/// Largest size the format can express.
pub const MAX_ENCODED_SIZE: u32 = 256 * SIZE_UNIT;

const_assert_eq!(MAX_ENCODED_SIZE, (u8::MAX as u32 + 1) * SIZE_UNIT);

bitflags! {
    /// The private-data flags byte.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PrivateDataFlags: u8 {
        /// The sender accepts Send With Invalidate.
        const REMOTE_INVALIDATE = 1 << 0;
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for PrivateDataFlags {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "PrivateDataFlags({=u8:#x})", self.bits())
    }
}

/// Why private data was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PrivateDataError {
    /// Fewer than 8 bytes: the peer sent none or another protocol's data.
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// The magic is not 0xf6ab0e18: not RPC-over-RDMA private data.
    BadMagic {
        /// The value found.
        magic: u32,
    },
    /// A format version other than 1.
    BadVersion {
        /// The value found.
        version: u8,
    },
    /// A size to emit is outside 1 KiB ..= 256 KiB.
    SizeOutOfRange {
        /// The size.
        bytes: u32,
    },
}

impl core::fmt::Display for PrivateDataError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PrivateDataError::TooShort { len } => {
                write!(
                    f,
                    "private data of {len} bytes is shorter than the 8 bytes RFC 8797 defines"
                )
            }
            PrivateDataError::BadMagic { magic } => {
                write!(
                    f,
                    "private data magic {magic:#010x} is not RPC-over-RDMA's 0xf6ab0e18"
                )
            }
            PrivateDataError::BadVersion { version } => {
                write!(
                    f,
                    "private data version {version} is not supported (only 1)"
                )
            }
            PrivateDataError::SizeOutOfRange { bytes } => {
                write!(f, "inline size {bytes} is outside 1024..=262144 bytes")
            }
        }
    }
}

impl core::error::Error for PrivateDataError {}

/// Parsed RFC 8797 private data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PrivateData {
    /// Flags.
    pub flags: PrivateDataFlags,
    /// Largest message the sender will send, in bytes (a multiple of 1024).
    pub send_size: u32,
    /// Largest message the sender can receive, in bytes: its Receive buffer size.
    pub recv_size: u32,
}

impl PrivateData {
    /// Private data advertising `send_size` / `recv_size`, each rounded down to a multiple of
    /// 1024.
    ///
    /// # Errors
    /// [`PrivateDataError::SizeOutOfRange`] if a size is below 1 KiB or above 256 KiB.
    pub fn new(
        flags: PrivateDataFlags,
        send_size: u32,
        recv_size: u32,
    ) -> Result<Self, PrivateDataError> {
        for bytes in [send_size, recv_size] {
            if !(MIN_ENCODED_SIZE..=MAX_ENCODED_SIZE).contains(&bytes) {
                return Err(PrivateDataError::SizeOutOfRange { bytes });
            }
        }
        Ok(PrivateData {
            flags,
            send_size: send_size / SIZE_UNIT * SIZE_UNIT,
            recv_size: recv_size / SIZE_UNIT * SIZE_UNIT,
        })
    }

    /// Parses the private data of a connect request or accept. Bytes after the first 8 are
    /// ignored (rdma_cm pads private data).
    ///
    /// # Errors
    /// A [`PrivateDataError`] saying which field is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, PrivateDataError> {
        let Some(b) = bytes.get(..PRIVATE_DATA_LEN) else {
            return Err(PrivateDataError::TooShort { len: bytes.len() });
        };
        let magic = be32_checked(b, 0);
        if magic != PRIVATE_DATA_MAGIC {
            return Err(PrivateDataError::BadMagic { magic });
        }
        if b[4] != PRIVATE_DATA_VERSION {
            return Err(PrivateDataError::BadVersion { version: b[4] });
        }
        // RFC 8797: a receiver ignores flag bits it does not know.
        let flags = PrivateDataFlags::from_bits_truncate(b[5]);
        Ok(PrivateData {
            flags,
            send_size: (b[6] as u32 + 1) * SIZE_UNIT,
            recv_size: (b[7] as u32 + 1) * SIZE_UNIT,
        })
    }

    /// The 8 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; PRIVATE_DATA_LEN] {
        let m = PRIVATE_DATA_MAGIC.to_be_bytes();
        [
            m[0],
            m[1],
            m[2],
            m[3],
            PRIVATE_DATA_VERSION,
            self.flags.bits(),
            encode_size(self.send_size),
            encode_size(self.recv_size),
        ]
    }
}

fn encode_size(bytes: u32) -> u8 {
    (bytes.clamp(MIN_ENCODED_SIZE, MAX_ENCODED_SIZE) / SIZE_UNIT - 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remote invalidate OK, send 4 KiB, receive 4 KiB.
    static PRIVATE_DATA_BYTES: [u8; 8] = [0xf6, 0xab, 0x0e, 0x18, 0x01, 0x01, 0x03, 0x03];

    #[test]
    fn test_parse() {
        let pd = PrivateData::parse(&PRIVATE_DATA_BYTES).unwrap();
        assert_eq!(pd.flags, PrivateDataFlags::REMOTE_INVALIDATE);
        assert_eq!(pd.send_size, 4096);
        assert_eq!(pd.recv_size, 4096);
    }

    #[test]
    fn test_emit() {
        let pd = PrivateData::new(PrivateDataFlags::REMOTE_INVALIDATE, 4096, 4096).unwrap();
        assert_eq!(pd.to_bytes(), PRIVATE_DATA_BYTES);
    }

    #[test]
    fn test_extremes_round_trip() {
        for (s, r) in [(1024, 262_144), (262_144, 1024), (65_536, 8192)] {
            let pd = PrivateData::new(PrivateDataFlags::empty(), s, r).unwrap();
            assert_eq!(PrivateData::parse(&pd.to_bytes()).unwrap(), pd);
        }
    }

    #[test]
    fn test_size_out_of_range() {
        let e = PrivateDataFlags::empty();
        assert_eq!(
            PrivateData::new(e, 1023, 4096),
            Err(PrivateDataError::SizeOutOfRange { bytes: 1023 })
        );
        assert_eq!(
            PrivateData::new(e, 4096, 262_145),
            Err(PrivateDataError::SizeOutOfRange { bytes: 262_145 })
        );
    }

    #[test]
    fn test_truncated() {
        for len in 0..8 {
            assert_eq!(
                PrivateData::parse(&PRIVATE_DATA_BYTES[..len]),
                Err(PrivateDataError::TooShort { len })
            );
        }
    }

    #[test]
    fn test_bad_magic() {
        let mut b = PRIVATE_DATA_BYTES;
        b[0] = 0xf7;
        assert_eq!(
            PrivateData::parse(&b),
            Err(PrivateDataError::BadMagic { magic: 0xf7ab0e18 })
        );
    }

    #[test]
    fn test_bad_version() {
        for v in [0u8, 2, 0xff] {
            let mut b = PRIVATE_DATA_BYTES;
            b[4] = v;
            assert_eq!(
                PrivateData::parse(&b),
                Err(PrivateDataError::BadVersion { version: v })
            );
        }
    }

    #[test]
    fn test_unknown_flags_are_ignored() {
        let mut b = PRIVATE_DATA_BYTES;
        b[5] = 0xff;
        let p = PrivateData::parse(&b).expect("unknown flag bits are ignored (RFC 8797)");
        assert_eq!(p.flags, PrivateDataFlags::all());
    }

    #[test]
    fn test_padding_ignored() {
        let mut b = [0u8; 56];
        b[..8].copy_from_slice(&PRIVATE_DATA_BYTES);
        b[8..].fill(0xee);
        assert!(PrivateData::parse(&b).is_ok());
    }
}
