//! What `rpcrdma-serve` and `rpcrdma-gateway` share around a server: logging, the stop flag,
//! the exit report and status, the process's RSS.

use std::sync::atomic::AtomicBool;

use super::{App, Server};
use crate::error::Result;

/// Resident set size of this process in KiB (from /proc/self/statm).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

/// What `rpcrdma-serve` and `rpcrdma-gateway` share around a server: logging to stderr
/// (`RPCRDMA_LOG`, default `info`) and a stop flag set by SIGINT / SIGTERM.
///
/// # Errors
/// The signal handlers could not be installed.
pub fn program_init() -> std::io::Result<std::sync::Arc<AtomicBool>> {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("RPCRDMA_LOG", "info"))
        .format_timestamp(None)
        .init();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Prints `server`'s exit report as one line, `NAME: stats {json}` (a
/// [`Report`](super::Report), read back with [`rpcrdma_report::parse_last`]), and says whether
/// the run succeeded: no error, and nothing held after teardown.
pub fn program_exit<A: App>(name: &str, server: &Server<A>, result: Result<()>) -> bool {
    let report = server.report();
    let stats = report.server;
    println!(
        "{}",
        rpcrdma_report::format_line(name, rpcrdma_report::STATS, &report)
    );
    match result {
        Ok(()) if stats.leaked == 0 => true,
        Ok(()) => {
            eprintln!(
                "{name}: {} descriptors, calls or pages still held after teardown",
                stats.leaked
            );
            false
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            false
        }
    }
}
