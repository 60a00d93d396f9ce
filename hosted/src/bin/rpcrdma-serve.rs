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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use rpcrdma_hosted::report::{self, Progress};
use rpcrdma_hosted::server::{
    default_threads, listen_addr, program_exit_loops, program_init, rss_kib, run_loops,
    ServerConfig,
};
use rpcrdma_services::{ExampleService, Program};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "RPC-over-RDMA v1 server (NULL + test program) on rpcrdma-core's responder"
)]
struct Args {
    /// Address to listen on (an address of an RDMA device; 0.0.0.0 for all).
    #[arg(long, default_value = "0.0.0.0")]
    addr: Ipv4Addr,
    /// Use only this RDMA device (e.g. mlx5_2, rxe0); without --addr, listen on the IPv4
    /// address of the network device it sits on.
    #[arg(long, value_name = "NAME")]
    device: Option<String>,
    /// Seconds with nothing received and no call in progress after which a connection is
    /// disconnected (a client that vanished without a disconnect; a quiet live one reconnects
    /// when it calls again). Keep it well above the clients' RPC timeout (60 s for Linux's
    /// NFS over RDMA). 0: never.
    #[arg(long, default_value_t = 360, value_name = "SECS")]
    idle_timeout: u64,
    /// Port (NFS/RDMA's is 20049).
    #[arg(long, default_value_t = 20049)]
    port: u16,
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
    /// Event loops, one per core: each owns its CQs, completion channel, SRQ and pools, and
    /// new connections go to the one with the fewest. Default: the cores available.
    #[arg(long)]
    threads: Option<usize>,
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
    let addr = match listen_addr(args.addr, args.device.as_deref()) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("rpcrdma-serve: --device: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cfg = ServerConfig {
        addr,
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
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
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let (max_payload, programs) = (cfg.max_read_payload, cfg.programs.clone());
    // Per loop, what it last reported: the totals decide `--exit-after` and the progress
    // lines. Read between batches only (when idle or every 256 turns), never per message.
    let closed: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let leaked: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let next_report = Mutex::new(args.report_every.unwrap_or(u64::MAX));
    let run = run_loops(
        cfg,
        threads,
        |_| {
            let mut service = ExampleService::new(&programs);
            service.max_payload = max_payload;
            service
        },
        || println!("rpcrdma-serve: ready"),
        |i, s| {
            closed[i].store(s.closed, Ordering::Relaxed);
            leaked[i].store(s.leaked, Ordering::Relaxed);
            let total: u64 = closed.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            if let Ok(mut next) = next_report.lock() {
                if total >= *next {
                    let progress = Progress {
                        closed: total,
                        rss_kib: rss_kib(),
                        leaked: leaked.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
                    };
                    println!(
                        "{}",
                        report::format_line("rpcrdma-serve", report::PROGRESS, &progress)
                    );
                    *next += args.report_every.unwrap_or(u64::MAX);
                }
            }
            stop.load(Ordering::Relaxed) || args.exit_after.is_some_and(|n| total >= n)
        },
    );
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            eprintln!("rpcrdma-serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    if program_exit_loops("rpcrdma-serve", &run) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
