//! What `rpcrdma-serve` and `rpcrdma-gateway` share around a server: logging, the stop flag,
//! the exit report and status, the process's RSS.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::{App, LoopRun, Report, Server};
use crate::error::Result;

/// Event loops by default: the cores this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The IPv4 address of the network device RDMA device `device` sits on (its port 1's first
/// GID names it; RoCE and Soft-RoCE), for `--device NAME`: how a user names the device when
/// the address is not at hand (a DPU's `mlx5_2`, Soft-RoCE's `rxe0`). rdma_cm binds addresses,
/// so listening on this one listens on that device.
///
/// # Errors
/// A message that says what is missing and what to give instead: no such device (with the
/// devices there are), no network device on its port (InfiniBand: give `--addr`, its IPoIB
/// address), or no IPv4 address on that network device.
pub fn device_ipv4(device: &str) -> std::result::Result<Ipv4Addr, String> {
    let class = Path::new("/sys/class/infiniband");
    let sys = class.join(device);
    if device.contains('/') || !sys.exists() {
        let mut names: Vec<String> = std::fs::read_dir(class)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        return Err(format!(
            "no RDMA device `{device}` (this machine has: {}; `rdma link` lists them)",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
    let netdev = std::fs::read_to_string(sys.join("ports/1/gid_attrs/ndevs/0"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            format!(
                "RDMA device `{device}` has no network device on port 1 (an InfiniBand port?): \
                 give --addr, the address clients reach it by"
            )
        })?;
    crate::cm::interface_ipv4(&netdev).ok_or_else(|| {
        format!(
            "network device {netdev} (under RDMA device `{device}`) has no IPv4 address: \
             add one (`ip addr add … dev {netdev}`) or give --addr"
        )
    })
}

/// The address to listen on from `--addr` and `--device`: `addr` as given, or, when it is
/// 0.0.0.0 and a device is named, the IPv4 address of that device's network device
/// ([`device_ipv4`]), so that only it receives the connections.
///
/// # Errors
/// [`device_ipv4`]'s.
pub fn listen_addr(addr: Ipv4Addr, device: Option<&str>) -> std::result::Result<Ipv4Addr, String> {
    match device {
        Some(device) if addr.is_unspecified() => device_ipv4(device),
        _ => Ok(addr),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_device_says_what_there_is() {
        let e = device_ipv4("no-such-rdma-device").unwrap_err();
        assert!(e.contains("no RDMA device `no-such-rdma-device`"), "{e}");
        assert!(e.contains("rdma link"), "{e}");
        assert!(device_ipv4("../net/lo").is_err());
    }

    #[test]
    fn loopback_has_its_address() {
        assert_eq!(crate::cm::interface_ipv4("lo"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(crate::cm::interface_ipv4("no-such-interface"), None);
    }
}
