//! `rpcrdma-serve`: an RPC-over-RDMA server on the core's responder.
//!
//! Answers the NULL procedure of the configured programs (default NFS 100003 v3 and v4) and
//! the test program (checksum, generate, echo, bulk: calls and replies of any size through
//! Read chunks, write chunks and reply chunks); answers malformed transport headers with the
//! RDMA_ERROR the core decides; prints its counters on exit (SIGINT / SIGTERM, or
//! `--exit-after`) as one JSON line, `rpcrdma-serve: stats {…}` (an
//! `rpcrdma_report::ServeReport`), and with `--report-every N` a `rpcrdma-serve: progress {…}`
//! line every N closed connections.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::Parser;
use rpcrdma_hosted::report::{self, Progress};
use rpcrdma_hosted::server::{program_exit, program_init, rss_kib, Server, ServerConfig};
use rpcrdma_services::Program;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "RPC-over-RDMA v1 server (NULL + test program) on rpcrdma-core's responder"
)]
struct Args {
    /// Address to listen on (an address of an RDMA device; 0.0.0.0 for all).
    #[arg(long, default_value = "0.0.0.0")]
    addr: Ipv4Addr,
    /// Port (NFS/RDMA's is 20049).
    #[arg(long, default_value_t = 20049)]
    port: u16,
    /// Use only this RDMA device (e.g. rxe0).
    #[arg(long)]
    device: Option<String>,
    /// Receive buffer size in bytes (1024..=65536).
    #[arg(long, default_value_t = 4096)]
    buffer_size: usize,
    /// Largest inline reply in bytes (send slot size, 1024..=65536).
    #[arg(long, default_value_t = 4096)]
    send_size: usize,
    /// Credits granted per connection (all connections together with --srq).
    #[arg(long, default_value_t = 64)]
    credits: u16,
    /// Receives per refill doorbell.
    #[arg(long, default_value_t = 16)]
    batch: u16,
    /// Share one SRQ (and one receive pool) among all connections.
    #[arg(long)]
    srq: bool,
    /// Sleep on completion channels instead of busy-polling.
    #[arg(long)]
    event: bool,
    /// Signal every Send and Write (default: the last Send of each batch; for comparison).
    #[arg(long)]
    signal_all: bool,
    /// Register/deregister an MR around every Receive (the old design; benchmark only).
    #[arg(long)]
    register_per_receive: bool,
    /// A program whose NULL procedure to answer, as PROG:LOW-HIGH or PROG:V (repeatable).
    #[arg(long = "program", value_parser = parse_program)]
    programs: Vec<Program>,
    /// MiB of Read-sink pages shared by all connections.
    #[arg(long, default_value_t = 8)]
    sink_mib: usize,
    /// MiB of reply-payload pages shared by all connections.
    #[arg(long, default_value_t = 8)]
    payload_mib: usize,
    /// Exit after this many connections have closed (for tests).
    #[arg(long)]
    exit_after: Option<u64>,
    /// Print a progress line (closed connections, RSS, leaks) every this many closed
    /// connections (for leak tests).
    #[arg(long)]
    report_every: Option<u64>,
}

fn parse_program(s: &str) -> Result<Program, String> {
    let (p, v) = s
        .split_once(':')
        .ok_or("expected PROG:LOW-HIGH or PROG:V")?;
    let prog = p.parse().map_err(|_| format!("bad program number `{p}`"))?;
    let (low, high) = v.split_once('-').unwrap_or((v, v));
    let num = |x: &str| x.parse::<u32>().map_err(|_| format!("bad version `{x}`"));
    Ok(Program {
        prog,
        low: num(low)?,
        high: num(high)?,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stop = match program_init() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("rpcrdma-serve: cannot handle SIGINT / SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cfg = ServerConfig {
        addr: args.addr,
        port: args.port,
        device: args.device,
        buffer_size: args.buffer_size,
        send_size: args.send_size,
        credits: args.credits,
        batch: args.batch,
        srq: args.srq,
        event_mode: args.event,
        signal_all: args.signal_all,
        register_per_receive: args.register_per_receive,
        sink_bytes: args.sink_mib << 20,
        payload_bytes: args.payload_mib << 20,
        ..ServerConfig::default()
    };
    if !args.programs.is_empty() {
        cfg.programs = args.programs;
    }
    let mut server = match Server::bind(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rpcrdma-serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("rpcrdma-serve: ready");
    let mut next_report = args.report_every.unwrap_or(u64::MAX);
    let result = server.run_until(|s| {
        if s.closed >= next_report {
            let progress = Progress {
                closed: s.closed,
                rss_kib: rss_kib(),
                leaked: s.leaked,
            };
            println!(
                "{}",
                report::format_line("rpcrdma-serve", report::PROGRESS, &progress)
            );
            next_report += args.report_every.unwrap_or(u64::MAX);
        }
        stop.load(Ordering::Relaxed) || args.exit_after.is_some_and(|n| s.closed >= n)
    });
    if program_exit("rpcrdma-serve", &server, result) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
