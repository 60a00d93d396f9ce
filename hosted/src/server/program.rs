//! What `rpcrdma-serve` and `rpcrdma-gateway` share around a server: logging, the stop flag,
//! the exit report and status, the process's RSS.

use std::sync::atomic::AtomicBool;

use super::{App, LoopRun, Report, Server};
use crate::error::Result;

/// Event loops by default: the cores this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

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
    exit_with(name, &server.report(), result)
}

/// [`program_exit`] for a server of several event loops ([`super::run_loops`]): one report,
/// the loops' counters summed, with each loop's line in `loops`; the run succeeded if every
/// loop ended without error and none held anything after its teardown.
pub fn program_exit_loops(name: &str, run: &LoopRun) -> bool {
    exit_with(name, &run.report(), run.result())
}

fn exit_with(name: &str, report: &Report, result: Result<()>) -> bool {
    let stats = report.server;
    println!(
        "{}",
        rpcrdma_report::format_line(name, rpcrdma_report::STATS, report)
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
