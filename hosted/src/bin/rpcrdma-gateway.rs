//! `rpcrdma-gateway`: an RPC-over-RDMA server that forwards every call to an ONC RPC server over
//! TCP and sends its reply back over RDMA — in front of the kernel's nfsd, the Linux NFS/RDMA
//! client mounts through this project's transport:
//!
//! ```sh
//! rpcrdma-gateway --addr 10.0.2.15 --backend 127.0.0.1:2049 &
//! mount -t nfs -o vers=3,proto=rdma,port=20049,mountproto=tcp,nolock 10.0.2.15:/export /mnt
//! ```
//!
//! NFSv3 READ data and READLINK paths go into the client's write chunk (RFC 8267); other large
//! replies through its reply chunk; WRITE data arrives through Read chunks and goes into the TCP
//! record. Prints its counters on exit (SIGINT / SIGTERM, or `--exit-after`) as one JSON line,
//! `rpcrdma-gateway: stats {…}` (an `rpcrdma_report::GatewayReport`).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use rpcrdma_hosted::gateway::{Gateway, GatewayConfig};
use rpcrdma_hosted::server::{
    default_threads, listen_addr, program_exit_loops, program_init, run_loops, AllowRule,
    ServerConfig,
};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "RPC-over-RDMA v1 gateway to an ONC RPC server over TCP (NFSv3 DDP binding)"
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
    /// RDMA port (NFS/RDMA's is 20049).
    #[arg(long, default_value_t = 20049)]
    port: u16,
    /// The ONC RPC server to forward to.
    #[arg(long, default_value = "127.0.0.1:2049")]
    backend: SocketAddr,
    /// Seconds a call may wait for the backend (reconnects included) before it is answered
    /// with SYSTEM_ERR (EIO for the client's application).
    #[arg(long, default_value_t = 600)]
    call_timeout: u64,
    /// MiB of calls held for the backend per RDMA connection before its credit grant drops to 1.
    #[arg(long, default_value_t = 32)]
    max_held_mib: usize,
    /// MiB of calls held for the backend by all connections before their grants drop to 1.
    #[arg(long, default_value_t = 256)]
    max_held_total_mib: usize,
    /// Peers allowed to connect, ADDR/PREFIX (repeatable; default: every peer). nfsd sees
    /// every client through the gateway as the gateway itself, so the export's host rules can
    /// no longer tell clients apart: this list is where that decision moves.
    #[arg(long = "allow", value_name = "ADDR/PREFIX")]
    allow: Vec<AllowRule>,
    /// Connect to the backend from an ephemeral port even when a reserved one (< 1024) could
    /// be bound (the export then needs `insecure`).
    #[arg(long)]
    no_reserved_port: bool,
    /// Credits granted per connection.
    #[arg(long, default_value_t = 64)]
    credits: u16,
    /// Receive buffer size in bytes.
    #[arg(long, default_value_t = 4096)]
    buffer_size: usize,
    /// Largest inline reply in bytes.
    #[arg(long, default_value_t = 4096)]
    send_size: usize,
    /// MiB of Read-sink pages.
    #[arg(long, default_value_t = 16)]
    sink_mib: usize,
    /// MiB of reply-payload pages.
    #[arg(long, default_value_t = 16)]
    payload_mib: usize,
    /// Sleep on completion channels and sockets instead of busy-polling.
    #[arg(long)]
    event: bool,
    /// Event loops, one per core; each has its own backend connections, and the caps on held
    /// bytes are split between them. Default: the cores available.
    #[arg(long)]
    threads: Option<usize>,
    /// Exit after this many connections have closed (for tests).
    #[arg(long)]
    exit_after: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stop = match program_init() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("rpcrdma-gateway: cannot handle SIGINT / SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listen_addr(args.addr, args.device.as_deref()) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("rpcrdma-gateway: --device: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = ServerConfig {
        addr,
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
        port: args.port,
        buffer_size: args.buffer_size,
        send_size: args.send_size,
        credits: args.credits,
        event_mode: args.event,
        sink_bytes: args.sink_mib << 20,
        payload_bytes: args.payload_mib << 20,
        // Calls wait for the backend with their Receive held: keep the grant backed.
        extra_receives: args.credits,
        allow: args.allow.clone(),
        device: args.device.clone(),
        ..ServerConfig::default()
    };
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let gateway_cfg = GatewayConfig {
        backend: args.backend,
        call_timeout: Duration::from_secs(args.call_timeout),
        reserved_port: !args.no_reserved_port,
        max_held_per_connection: args.max_held_mib << 20,
        // The total cap holds for the whole process: each loop gets its share.
        max_held: (args.max_held_total_mib << 20) / threads,
    };
    let closed: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let run = run_loops(
        cfg,
        threads,
        |_| Gateway::new(gateway_cfg.clone()),
        || println!("rpcrdma-gateway: ready (backend {})", args.backend),
        |i, s| {
            closed[i].store(s.closed, Ordering::Relaxed);
            let total: u64 = closed.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            stop.load(Ordering::Relaxed) || args.exit_after.is_some_and(|n| total >= n)
        },
    );
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            eprintln!("rpcrdma-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    if program_exit_loops("rpcrdma-gateway", &run) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
