//! The hosted crate's one error type: each variant names what failed and carries the errno.

use rpcrdma_core::dma::DmaError;
use rpcrdma_core::pool::PoolError;
use rpcrdma_core::wire::PrivateDataError;

/// Errors of the verbs binding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A verbs or rdma_cm call failed.
    #[error("{verb} failed: {} (errno {errno})", std::io::Error::from_raw_os_error(*errno))]
    Verb {
        /// The call, e.g. `ibv_reg_mr`.
        verb: &'static str,
        /// errno after the call.
        errno: i32,
    },
    /// No RDMA device is present.
    #[error(
        "no RDMA device found: this machine has no RDMA NIC or Soft-RoCE device; run inside \
         `cargo xtask vm -- …` (Soft-RoCE rxe0), or add one with `rdma link add rxe0 type rxe \
         netdev <dev>`"
    )]
    NoDevice,
    /// The named device does not exist.
    #[error("RDMA device `{0}` not found (see `ibv_devices`)")]
    DeviceNotFound(String),
    /// An unexpected rdma_cm event.
    #[error("rdma_cm: expected {expected}, got {got} (status {status})")]
    CmEvent {
        /// What we waited for.
        expected: &'static str,
        /// What came.
        got: String,
        /// The event status (negative errno or a reject reason).
        status: i32,
    },
    /// The peer's private data was malformed.
    #[error("connection private data: {0}")]
    PrivateData(#[from] PrivateDataError),
    /// The receive pool refused its configuration.
    #[error("receive pool: {0}")]
    Pool(#[from] PoolError),
    /// The DMA region was refused.
    #[error("DMA region: {0}")]
    Dma(#[from] DmaError),
    /// An address did not parse or resolve.
    #[error("address `{0}`: expected IPv4 a.b.c.d")]
    Address(String),
    /// A work completion reported an error the binding cannot recover from.
    #[error("{what}: work completion status {status} (vendor error {vendor_err:#x})")]
    Completion {
        /// Which queue.
        what: &'static str,
        /// `ibv_wc_status`.
        status: u32,
        /// Vendor error.
        vendor_err: u32,
    },
    /// A protocol-level failure seen by the load generator.
    #[error("{0}")]
    Protocol(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The error for a failed verb, reading errno now.
pub(crate) fn verb_error(verb: &'static str) -> Error {
    Error::Verb {
        verb,
        errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
    }
}

/// Checks a C return code (0 = success; otherwise errno is set, or the code is a negative or
/// positive errno, as verbs calls differ).
pub(crate) fn check(verb: &'static str, rc: i32) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Err(Error::Verb {
            verb,
            errno: if errno != 0 { errno } else { rc.abs() },
        })
    }
}

/// Checks a call that returns the errno itself (the post and poll verbs).
pub(crate) fn check_rc(verb: &'static str, rc: i32) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Verb {
            verb,
            errno: rc.abs(),
        })
    }
}
