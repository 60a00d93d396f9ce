//! `rpcrdma-serve`: an RPC-over-RDMA server on the core's receive path.
//!
//! Answers the NULL procedure of the configured programs (default NFS 100003 v3 and v4) and a
//! checksum test program; answers malformed transport headers with the RDMA_ERROR the core
//! decides; prints its counters on exit (SIGINT / SIGTERM, or `--exit-after`).

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use rpcrdma_hosted::server::{rss_kib, Server, ServerConfig, ServerStats};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "RPC-over-RDMA v1 server (NULL + checksum test program) on rpcrdma-core"
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
    /// Credits granted per connection.
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
    /// Register/deregister an MR around every Receive (the pre-2018 design; benchmark only).
    #[arg(long)]
    register_per_receive: bool,
    /// A program whose NULL procedure to answer, as PROG:V1,V2 (repeatable).
    #[arg(long = "program", value_parser = parse_program)]
    programs: Vec<(u32, Vec<u32>)>,
    /// Exit after this many connections have closed (for tests).
    #[arg(long)]
    exit_after: Option<u64>,
    /// Print RSS and counters every this many closed connections (for leak tests).
    #[arg(long)]
    report_every: Option<u64>,
}

fn parse_program(s: &str) -> Result<(u32, Vec<u32>), String> {
    let (p, v) = s.split_once(':').ok_or("expected PROG:V1,V2")?;
    let prog = p.parse().map_err(|_| format!("bad program number `{p}`"))?;
    let vers = v
        .split(',')
        .map(|x| x.parse().map_err(|_| format!("bad version `{x}`")))
        .collect::<Result<_, _>>()?;
    Ok((prog, vers))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn print_stats(server: &Server, s: &ServerStats) {
    let p = &s.pool;
    println!(
        "rpcrdma-serve: stats accepted={} closed={} calls={} err_vers={} err_chunk={} dropped={} \
         backchannel={} bad_completions={} send_failures={} leaked_descriptors={} \
         pool_posted={} pool_batches={} pool_completed={} pool_flushed={} pool_released={} \
         pool_drained={} bytes={} rss_kib={} mem_per_conn={}",
        s.accepted,
        s.closed,
        s.calls,
        s.err_vers_sent,
        s.err_chunk_sent,
        s.dropped,
        s.backchannel,
        s.bad_completions,
        s.send_failures,
        s.leaked_descriptors,
        p.posted,
        p.batches,
        p.completed,
        p.flushed,
        p.released,
        p.drained,
        p.bytes,
        rss_kib(),
        server.memory_per_connection()
    );
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger_init();
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut cfg = ServerConfig {
        addr: args.addr,
        port: args.port,
        device: args.device,
        buffer_size: args.buffer_size,
        credits: args.credits,
        batch: args.batch,
        srq: args.srq,
        event_mode: args.event,
        register_per_receive: args.register_per_receive,
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
            println!(
                "rpcrdma-serve: report closed={} rss_kib={} leaked={}",
                s.closed,
                rss_kib(),
                s.leaked_descriptors
            );
            next_report += args.report_every.unwrap_or(u64::MAX);
        }
        STOP.load(Ordering::Relaxed) || args.exit_after.is_some_and(|n| s.closed >= n)
    });
    let stats = server.stats();
    print_stats(&server, &stats);
    match result {
        Ok(()) if stats.leaked_descriptors == 0 => ExitCode::SUCCESS,
        Ok(()) => {
            eprintln!(
                "rpcrdma-serve: {} descriptors still in flight after teardown",
                stats.leaked_descriptors
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rpcrdma-serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_logger_init() {
    struct Stderr(log::LevelFilter);
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= self.0
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!("[{}] {}", r.level(), r.args());
            }
        }
        fn flush(&self) {}
    }
    let level = match std::env::var("RPCRDMA_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Info,
    };
    let logger: &'static Stderr = Box::leak(Box::new(Stderr(level)));
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}
