//! `rpcrdma-load`: an RPC-over-RDMA load generator that verifies every reply.
//!
//! Keeps `-d` calls outstanding per connection (never more than the server's credit grant),
//! checks that every reply's xid matches exactly one outstanding call (none lost, none
//! duplicated) and that the checksum program's result is right, and prints calls/s and latency
//! percentiles. `--malformed` sends bad transport headers and checks the server's answers.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use rpcrdma_core::oncrpc;
use rpcrdma_hosted::client::{Client, Reply};
use rpcrdma_hosted::server::{CHECKSUM_PROC, CHECKSUM_PROG, CHECKSUM_VERS, NFS_PROG};

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "RPC-over-RDMA v1 load generator that verifies every reply"
)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "10.0.2.15")]
    addr: Ipv4Addr,
    /// Server port.
    #[arg(long, default_value_t = 20049)]
    port: u16,
    /// Calls per connection.
    #[arg(short = 'n', long, default_value_t = 10000)]
    calls: u64,
    /// Calls outstanding per connection (bounded by the granted credits).
    #[arg(short = 'd', long, default_value_t = 16)]
    depth: usize,
    /// Argument bytes of the checksum procedure; 0 sends NFS NULL calls.
    #[arg(short = 's', long, default_value_t = 0)]
    size: usize,
    /// Connections, each on its own thread.
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// Connect, run the calls, disconnect — this many times per connection thread.
    #[arg(long, default_value_t = 1)]
    cycles: u64,
    /// Send malformed transport headers and check the answers (then a valid call).
    #[arg(long)]
    malformed: bool,
    /// Disconnect with calls still outstanding (after half of them).
    #[arg(long)]
    disconnect_mid: bool,
    /// Receive/Send buffer size.
    #[arg(long, default_value_t = 4096)]
    buffer_size: usize,
    /// Give up waiting for replies after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Default)]
struct Outcome {
    calls: u64,
    latencies_ns: Vec<u64>,
    credits: u32,
    malformed_checked: u64,
    elapsed: Duration,
}

fn call_bytes(xid: u32, size: usize) -> (Vec<u8>, Option<u32>) {
    let mut b = vec![0u8; 40 + 4 + size.div_ceil(4) * 4];
    if size == 0 {
        oncrpc::emit_call(&mut b, xid, NFS_PROG, 3, 0);
        b.truncate(40);
        return (b, None);
    }
    oncrpc::emit_call(&mut b, xid, CHECKSUM_PROG, CHECKSUM_VERS, CHECKSUM_PROC);
    b[40..44].copy_from_slice(&(size as u32).to_be_bytes());
    let mut x = xid.wrapping_mul(2_654_435_761);
    for byte in &mut b[44..44 + size] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    let sum = oncrpc::checksum(&b[44..44 + size]);
    (b, Some(sum))
}

fn verify(reply: &Reply, expected: Option<u32>) -> Result<(), String> {
    let Reply::Msg { rpc, xid, .. } = reply else {
        return Err(format!(
            "xid {:#x}: RDMA_ERROR for a valid call: {reply:?}",
            reply.xid()
        ));
    };
    let (rxid, stat, at) =
        oncrpc::parse_accepted_reply(rpc).ok_or(format!("xid {xid:#x}: unparsable RPC reply"))?;
    if rxid != *xid || stat != 0 {
        return Err(format!(
            "xid {xid:#x}: RPC reply xid {rxid:#x} accept_stat {stat}"
        ));
    }
    if let Some(sum) = expected {
        let got = rpc
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if got != Some(sum) {
            return Err(format!("xid {xid:#x}: checksum {got:?}, expected {sum:#x}"));
        }
    }
    Ok(())
}

fn run_connection(args: &Args, conn_index: usize, cycle: u64) -> Result<Outcome, String> {
    let mut client = Client::connect(args.addr, args.port, 64.max(args.depth), args.buffer_size)
        .map_err(|e| format!("connect: {e}"))?;
    let mut out = Outcome::default();
    let mut replies = Vec::new();
    let base = ((conn_index as u32) << 24) ^ ((cycle as u32) << 16);
    if args.malformed {
        out.malformed_checked = malformed(&mut client, base)?;
    }
    let mut outstanding: HashMap<u32, (Instant, Option<u32>)> = HashMap::new();
    let (mut sent, mut done) = (0u64, 0u64);
    let limit = if args.disconnect_mid {
        args.calls / 2
    } else {
        args.calls
    };
    let start = Instant::now();
    let mut last_progress = Instant::now();
    while done < limit {
        let window = args.depth.min(client.credits() as usize).max(1);
        while outstanding.len() < window && sent < args.calls {
            let xid = base.wrapping_add(sent as u32 + 1);
            let (call, sum) = call_bytes(xid, args.size);
            client
                .send_call(xid, &call)
                .map_err(|e| format!("send: {e}"))?;
            outstanding.insert(xid, (Instant::now(), sum));
            sent += 1;
        }
        replies.clear();
        client
            .poll_replies(&mut replies)
            .map_err(|e| format!("poll: {e}"))?;
        for r in &replies {
            let Some((t, sum)) = outstanding.remove(&r.xid()) else {
                return Err(format!(
                    "reply for xid {:#x} matches no outstanding call (duplicate or unknown)",
                    r.xid()
                ));
            };
            verify(r, sum)?;
            out.latencies_ns.push(t.elapsed().as_nanos() as u64);
            done += 1;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(args.timeout) {
            return Err(format!(
                "{} calls got no reply within {} s (lost)",
                outstanding.len(),
                args.timeout
            ));
        }
    }
    out.elapsed = start.elapsed();
    out.calls = done;
    out.credits = client.credits();
    if !args.disconnect_mid && !outstanding.is_empty() {
        return Err(format!("{} calls unanswered", outstanding.len()));
    }
    client.disconnect();
    Ok(out)
}

/// Sends malformed headers; checks each answer (ERR_VERS, ERR_CHUNK, or nothing for a drop)
/// and that a valid call still works afterwards. Returns the cases checked.
fn malformed(client: &mut Client, base: u32) -> Result<u64, String> {
    let w = |words: &[u32]| -> Vec<u8> { words.iter().flat_map(|x| x.to_be_bytes()).collect() };
    let x = base | 0xe000;
    // (bytes, expected rdma_err: Some(1) ERR_VERS, Some(2) ERR_CHUNK, None = dropped)
    let cases: Vec<(Vec<u8>, Option<u32>)> = vec![
        (w(&[x + 1, 2, 8, 0, 0, 0, 0]), Some(1)), // version 2
        (w(&[x + 2, 1, 8, 0, 7, 0, 0]), Some(2)), // bad discriminator
        (
            w(&[x + 3, 1, 8, 0, 0, 1, 0x1000_0001, 1, 100, 0, 0, 0, 0]),
            Some(2),
        ), // CVE-2024-53151 shape
        (w(&[x + 4, 1, 8, 1, 0, 0, 0]), Some(2)), // NOMSG without call chunk
        (w(&[x + 5, 1, 8, 0, 1, 40, 1, 0, 0, 0, 0, 0, 0]), Some(2)), // zero-length read segment
        (w(&[x + 6, 1, 8, 2, 0, 0, 0]), Some(2)), // RDMA_MSGP
        (w(&[x + 7, 1, 8, 3]), None),             // RDMA_DONE: dropped
        (w(&[x + 8, 1]), None),                   // too short: dropped
    ];
    let mut checked = 0;
    let mut replies = Vec::new();
    for (bytes, expect) in &cases {
        client
            .send_raw(bytes)
            .map_err(|e| format!("send malformed: {e}"))?;
        let xid = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if let Some(code) = expect {
            let deadline = Instant::now() + Duration::from_secs(5);
            replies.clear();
            while replies.is_empty() && Instant::now() < deadline {
                client
                    .poll_replies(&mut replies)
                    .map_err(|e| format!("poll: {e}"))?;
            }
            match replies.first() {
                Some(Reply::Error {
                    xid: rx,
                    code: c,
                    len,
                    ..
                }) if *rx == xid && c == code => {
                    let want = if *code == 1 { 28 } else { 20 };
                    if *len != want {
                        return Err(format!(
                            "RDMA_ERROR for {xid:#x} is {len} bytes, expected {want}"
                        ));
                    }
                }
                other => {
                    return Err(format!(
                        "malformed header {xid:#x}: expected rdma_err {code}, got {other:?}"
                    ))
                }
            }
            checked += 1;
        } else {
            checked += 1;
        }
    }
    // Dropped messages got no answer; the connection still serves a valid call.
    let xid = x + 0x100;
    let (call, sum) = call_bytes(xid, 16);
    client
        .send_call(xid, &call)
        .map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    replies.clear();
    while replies.is_empty() && Instant::now() < deadline {
        client
            .poll_replies(&mut replies)
            .map_err(|e| format!("poll: {e}"))?;
    }
    match replies.as_slice() {
        [r] if r.xid() == xid => verify(r, sum)?,
        other => {
            return Err(format!(
                "after malformed headers: expected one reply to {xid:#x}, got {other:?}"
            ))
        }
    }
    Ok(checked)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> ExitCode {
    let args = Args::parse();
    let t0 = Instant::now();
    let results: Vec<Result<Outcome, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.connections)
            .map(|c| {
                let args = &args;
                s.spawn(move || {
                    let mut total = Outcome::default();
                    for cycle in 0..args.cycles {
                        let o = run_connection(args, c, cycle)?;
                        total.calls += o.calls;
                        total.latencies_ns.extend(o.latencies_ns);
                        total.credits = o.credits;
                        total.malformed_checked += o.malformed_checked;
                        total.elapsed += o.elapsed;
                    }
                    Ok(total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let wall = t0.elapsed();
    let mut lat = Vec::new();
    let (mut calls, mut credits, mut malformed_checked, mut failures) = (0u64, 0u32, 0u64, 0);
    for r in results {
        match r {
            Ok(o) => {
                calls += o.calls;
                lat.extend(o.latencies_ns);
                credits = credits.max(o.credits);
                malformed_checked += o.malformed_checked;
            }
            Err(e) => {
                eprintln!("rpcrdma-load: FAILED: {e}");
                failures += 1;
            }
        }
    }
    lat.sort_unstable();
    let secs = wall.as_secs_f64();
    println!(
        "rpcrdma-load: calls={calls} verified={calls} seconds={secs:.3} calls_per_sec={:.0} p50_us={:.1} p99_us={:.1} credits={credits} connections={} cycles={} size={} depth={} malformed_checked={malformed_checked} failures={failures}",
        calls as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        args.connections,
        args.cycles,
        args.size,
        args.depth
    );
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
