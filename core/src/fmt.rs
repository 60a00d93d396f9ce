//! Logging mux: `trace!` … `error!` forward to `defmt` (feature `defmt`), to the `log` facade
//! (feature `log`), or compile to nothing. Declared first in `lib.rs` so every module sees the macros.
//!
//! With neither feature the arguments are still type-checked (and counted as used) but no code is
//! emitted, so trace points cost nothing on the hot path of a firmware build without logging.
#![allow(unused_macros)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` of rpcrdma-core are mutually exclusive: enable one");

macro_rules! rr_log {
    ($level:ident, $s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::$level!($s $(, $x)*);
        #[cfg(feature = "log")]
        ::log::$level!($s $(, $x)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        {
            $( let _ = &$x; )*
        }
    }};
}

macro_rules! trace {
    ($($arg:tt)*) => { rr_log!(trace, $($arg)*) };
}
macro_rules! debug {
    ($($arg:tt)*) => { rr_log!(debug, $($arg)*) };
}
macro_rules! info {
    ($($arg:tt)*) => { rr_log!(info, $($arg)*) };
}
macro_rules! warn {
    ($($arg:tt)*) => { rr_log!(warn, $($arg)*) };
}
macro_rules! error {
    ($($arg:tt)*) => { rr_log!(error, $($arg)*) };
}
