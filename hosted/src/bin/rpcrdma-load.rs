//! `rpcrdma-load`: an RPC-over-RDMA load generator that verifies every reply.
//!
//! Keeps `-d` calls outstanding per connection (never more than the server's credit grant),
//! checks that every reply's xid matches exactly one outstanding call (none lost, none
//! duplicated) and that every result byte is right, and prints calls/s, bytes/s and latency
//! percentiles. Calls and replies of any size: argument data inline, through a Read chunk at
//! its position, or with the whole call in a position-zero chunk (RDMA_NOMSG); replies inline,
//! with the payload in a write chunk, or whole through a reply chunk. `--malformed` sends bad
//! transport headers and checks the server's answers.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rpcrdma_core::wire::{put_xdr_words, xdr_u32, XDR_UNIT};
use rpcrdma_hosted::client::{CallShape, Client, Reply};
use rpcrdma_services::{
    fill_pattern, oncrpc, NFS_PROG, PROC_BULK, PROC_CHECKSUM, PROC_ECHO, PROC_GENERATE, PROC_SINK,
    PROC_SOURCE, TEST_PROG, TEST_VERS,
};

/// The procedure each call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProcKind {
    /// NFS NULL (v3).
    Null,
    /// CHECKSUM of `--size` argument bytes.
    Checksum,
    /// GENERATE `--reply-size` bytes (DDP-eligible reply payload).
    Generate,
    /// ECHO `--size` bytes (Read chunk in, write chunk out).
    Echo,
    /// BULK `--reply-size` bytes (not DDP-eligible: inline or reply chunk).
    Bulk,
    /// SINK `--size` bytes: the server does not touch them (transport benchmark).
    Sink,
    /// SOURCE `--reply-size` bytes from memory the server registered once, no copy
    /// (transport benchmark; the pattern of seed 0).
    Source,
}

/// How much of each reply is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Verify {
    /// Every byte.
    Full,
    /// xid, status and lengths only (benchmarks: the data is not touched on either side).
    Len,
}

/// How argument data travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CallChunk {
    /// A Read chunk when the call does not fit the server's inline size, else inline.
    Auto,
    /// Always inline.
    Inline,
    /// Always a Read chunk at the data's position.
    Read,
    /// The whole call in a position-zero Read chunk (RDMA_NOMSG).
    Nomsg,
}

/// What the client offers for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReplyChunk {
    /// A write chunk for GENERATE / ECHO, a reply chunk for BULK, when the reply may not fit
    /// inline.
    Auto,
    /// Nothing: the reply must fit inline.
    None,
    /// A write chunk.
    Write,
    /// A reply chunk.
    Reply,
    /// Both.
    Both,
}

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
    /// Argument bytes of CHECKSUM / ECHO; with the default procedure, 0 sends NFS NULL calls
    /// and anything else CHECKSUM calls.
    #[arg(short = 's', long, default_value_t = 0)]
    size: usize,
    /// The procedure (default: NULL, or CHECKSUM when --size is given).
    #[arg(long, value_enum)]
    proc_: Option<ProcKind>,
    /// Reply bytes of GENERATE / BULK.
    #[arg(long, default_value_t = 0)]
    reply_size: usize,
    /// How argument data travels.
    #[arg(long, value_enum, default_value_t = CallChunk::Auto)]
    call_chunk: CallChunk,
    /// What the client offers for the reply.
    #[arg(long, value_enum, default_value_t = ReplyChunk::Auto)]
    reply_chunk: ReplyChunk,
    /// How much of each reply is checked.
    #[arg(long, value_enum, default_value_t = Verify::Full)]
    verify: Verify,
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
    /// After the calls, keep the connection open and quiet for this many seconds before
    /// disconnecting (to see a server's idle timeout at work).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    hold: u64,
    /// Misbehave: send one message of --buffer-size bytes (larger than the server's Receive
    /// buffers) and check that the server drops this connection, and only this one.
    #[arg(long)]
    oversized: bool,
    /// Receive/Send buffer size.
    #[arg(long, default_value_t = 4096)]
    buffer_size: usize,
    /// Give up waiting for replies after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

impl Args {
    fn proc_kind(&self) -> ProcKind {
        self.proc_.unwrap_or(if self.size == 0 {
            ProcKind::Null
        } else {
            ProcKind::Checksum
        })
    }
}

/// What a reply must contain.
enum Expect {
    Null,
    Checksum(u32),
    /// The opaque result bytes (GENERATE / ECHO / BULK / SOURCE).
    Opaque(Vec<u8>),
    /// An opaque result of this length (contents not checked).
    OpaqueLen(usize),
    /// A u32 result equal to this length (SINK).
    Length(usize),
}

/// A call: its RPC bytes, where its argument data starts, and what the reply must hold.
struct Built {
    rpc: Vec<u8>,
    data_at: usize,
    data_len: usize,
    expect: Expect,
}

fn build_call(args: &Args, xid: u32) -> Built {
    let mut rpc = vec![0u8; 40];
    let (prog, vers, proc_) = match args.proc_kind() {
        ProcKind::Null => (NFS_PROG, 3, 0),
        ProcKind::Checksum => (TEST_PROG, TEST_VERS, PROC_CHECKSUM),
        ProcKind::Generate => (TEST_PROG, TEST_VERS, PROC_GENERATE),
        ProcKind::Echo => (TEST_PROG, TEST_VERS, PROC_ECHO),
        ProcKind::Bulk => (TEST_PROG, TEST_VERS, PROC_BULK),
        ProcKind::Sink => (TEST_PROG, TEST_VERS, PROC_SINK),
        ProcKind::Source => (TEST_PROG, TEST_VERS, PROC_SOURCE),
    };
    let full = args.verify == Verify::Full;
    oncrpc::emit_call(&mut rpc, xid, prog, vers, proc_);
    match args.proc_kind() {
        ProcKind::Null => Built {
            rpc,
            data_at: 40,
            data_len: 0,
            expect: Expect::Null,
        },
        ProcKind::Sink if !full => {
            // The data is never looked at: it stays wherever it is (a Read chunk of the chunk
            // area as it is, or zeros inline).
            rpc.extend_from_slice(&(args.size as u32).to_be_bytes());
            Built {
                rpc,
                data_at: 44,
                data_len: args.size,
                expect: Expect::Length(args.size),
            }
        }
        ProcKind::Checksum | ProcKind::Echo | ProcKind::Sink => {
            let mut data = vec![0u8; args.size];
            if full {
                fill_pattern(xid, 0, &mut data);
            }
            rpc.extend_from_slice(&(args.size as u32).to_be_bytes());
            rpc.extend_from_slice(&data);
            rpc.resize(rpc.len().div_ceil(4) * 4, 0);
            let expect = match args.proc_kind() {
                ProcKind::Checksum => Expect::Checksum(oncrpc::checksum(&data)),
                ProcKind::Sink => Expect::Length(args.size),
                _ if full => Expect::Opaque(data),
                _ => Expect::OpaqueLen(args.size),
            };
            Built {
                rpc,
                data_at: 44,
                data_len: args.size,
                expect,
            }
        }
        ProcKind::Generate | ProcKind::Bulk | ProcKind::Source => {
            let source = args.proc_kind() == ProcKind::Source;
            let seed = if source { 0 } else { xid };
            rpc.extend_from_slice(&(args.reply_size as u32).to_be_bytes());
            if !source {
                rpc.extend_from_slice(&seed.to_be_bytes());
            }
            let expect = if full {
                let mut data = vec![0u8; args.reply_size];
                fill_pattern(seed, 0, &mut data);
                Expect::Opaque(data)
            } else {
                Expect::OpaqueLen(args.reply_size)
            };
            Built {
                rpc,
                data_at: 48,
                data_len: 0,
                expect,
            }
        }
    }
}

/// Sends one call shaped as the arguments ask.
fn send(client: &mut Client, args: &Args, xid: u32, call: &Built) -> Result<(), String> {
    let header_room = 28 + 16 * 24 + 600; // transport header with chunk lists, generously
    let call_len = call
        .rpc
        .len()
        .max(call.data_at + call.data_len.div_ceil(4) * 4);
    let fits_inline = call_len + header_room <= client.server_inline();
    let reply_len = match &call.expect {
        Expect::Opaque(d) => 28 + d.len() + 4,
        Expect::OpaqueLen(n) => 28 + n + 4,
        _ => 64,
    };
    let reply_inline = reply_len + header_room <= client.server_inline().min(args.buffer_size);
    let proc_ = args.proc_kind();
    let ddp = matches!(
        proc_,
        ProcKind::Generate | ProcKind::Echo | ProcKind::Source
    );
    let (write, reply) = match args.reply_chunk {
        ReplyChunk::None => (false, false),
        ReplyChunk::Write => (true, false),
        ReplyChunk::Reply => (false, true),
        ReplyChunk::Both => (true, true),
        ReplyChunk::Auto if reply_inline => (false, false),
        ReplyChunk::Auto => (ddp, !ddp),
    };
    let chunk = client.chunk_bytes();
    let mut shape = CallShape {
        write_chunk: write.then_some(chunk),
        reply_chunk: reply.then_some(chunk),
        ..CallShape::default()
    };
    let mode = match args.call_chunk {
        CallChunk::Auto if fits_inline || call.data_len == 0 => CallChunk::Inline,
        CallChunk::Auto => CallChunk::Read,
        CallChunk::Read if call.data_len == 0 => CallChunk::Inline,
        m => m,
    };
    let inline: Vec<u8>;
    let rpc: &[u8] = match mode {
        CallChunk::Nomsg => {
            shape.nomsg = true;
            &call.rpc
        }
        CallChunk::Read if call.rpc.len() < call.data_at + call.data_len => {
            // Data not materialised (--verify len): read the chunk area in place.
            shape.read_in_place = Some((call.data_at as u32, call.data_len));
            &call.rpc
        }
        CallChunk::Read => {
            let data = &call.rpc[call.data_at..call.data_at + call.data_len];
            shape.read = Some((call.data_at as u32, data));
            // The inline part: everything but the data item (and its XDR pad).
            let pad_end = call.data_at + call.data_len.div_ceil(4) * 4;
            inline = [
                &call.rpc[..call.data_at],
                &call.rpc[pad_end.min(call.rpc.len())..],
            ]
            .concat();
            &inline
        }
        _ if call.rpc.len() < call_len => {
            // Inline, with data that was not materialised: zeros.
            inline = [&call.rpc[..], &vec![0u8; call_len - call.rpc.len()]].concat();
            &inline
        }
        _ => &call.rpc,
    };
    client
        .send_shaped(xid, rpc, &shape)
        .map_err(|e| format!("send: {e}"))
}

fn verify(reply: &Reply, expect: &Expect) -> Result<u64, String> {
    let Reply::Msg {
        rpc,
        xid,
        write_chunk,
        write_written,
        ..
    } = reply
    else {
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
    let word = |at: usize| xdr_u32(rpc, at);
    match expect {
        Expect::Null => Ok(0),
        Expect::Checksum(sum) => match word(at) {
            Some(got) if got == *sum => Ok(0),
            got => Err(format!("xid {xid:#x}: checksum {got:?}, expected {sum:#x}")),
        },
        Expect::Length(n) => match word(at) {
            Some(got) if got as usize == *n => Ok(0),
            got => Err(format!("xid {xid:#x}: length {got:?}, expected {n}")),
        },
        Expect::OpaqueLen(n) => {
            let got = match write_written {
                Some(w) if *n > 0 => *w,
                _ => rpc.len().saturating_sub(at + 4),
            };
            if word(at) != Some(*n as u32) || got < *n {
                return Err(format!(
                    "xid {xid:#x}: result length {:?} ({got} bytes), expected {n}",
                    word(at)
                ));
            }
            Ok(*n as u64)
        }
        Expect::Opaque(data) => {
            if word(at) != Some(data.len() as u32) {
                return Err(format!("xid {xid:#x}: result length {:?}", word(at)));
            }
            let got: &[u8] = match write_chunk {
                Some(w) if !data.is_empty() => w,
                _ => rpc.get(at + 4..at + 4 + data.len()).unwrap_or_default(),
            };
            if got != data.as_slice() {
                let first = got.iter().zip(data).position(|(a, b)| a != b);
                return Err(format!(
                    "xid {xid:#x}: {} result bytes wrong (got {}, first difference at {first:?})",
                    data.len(),
                    got.len()
                ));
            }
            Ok(data.len() as u64)
        }
    }
}

#[derive(Default)]
struct Outcome {
    calls: u64,
    bytes: u64,
    latencies_ns: Vec<u64>,
    credits: u32,
    malformed_checked: u64,
    elapsed: Duration,
}

fn run_connection(args: &Args, conn_index: usize, cycle: u64) -> Result<Outcome, String> {
    let chunk = (args.size.max(args.reply_size) + 4096).div_ceil(4096) * 4096;
    let mut client = Client::connect(
        args.addr,
        args.port,
        64.max(args.depth),
        args.buffer_size,
        chunk,
        args.depth.max(2),
    )
    .map_err(|e| format!("connect: {e}"))?;
    client.read_back = args.verify == Verify::Full;
    let mut out = Outcome::default();
    let mut replies = Vec::new();
    let base = ((conn_index as u32) << 24) ^ ((cycle as u32) << 16);
    if args.malformed {
        out.malformed_checked = malformed(&mut client, base)?;
    }
    if args.oversized {
        return oversized(client, args, base).map(|()| out);
    }
    let mut outstanding: HashMap<u32, (Instant, Expect)> = HashMap::new();
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
            let call = build_call(args, xid);
            send(&mut client, args, xid, &call)?;
            outstanding.insert(xid, (Instant::now(), call.expect));
            sent += 1;
        }
        replies.clear();
        client
            .poll_replies(&mut replies)
            .map_err(|e| format!("poll: {e}"))?;
        for r in &replies {
            let Some((t, expect)) = outstanding.remove(&r.xid()) else {
                return Err(format!(
                    "reply for xid {:#x} matches no outstanding call (duplicate or unknown)",
                    r.xid()
                ));
            };
            out.bytes += verify(r, &expect)? + args.size as u64;
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
    if args.hold > 0 {
        std::thread::sleep(Duration::from_secs(args.hold));
    }
    client.disconnect();
    Ok(out)
}

/// Sends malformed headers; checks each answer (ERR_VERS, ERR_CHUNK, or nothing for a drop)
/// and that a valid call still works afterwards. Returns the cases checked.
fn malformed(client: &mut Client, base: u32) -> Result<u64, String> {
    let w = |words: &[u32]| -> Vec<u8> {
        let mut bytes = vec![0; words.len() * XDR_UNIT];
        put_xdr_words(&mut bytes, words);
        bytes
    };
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
        let xid = xdr_u32(bytes, 0).unwrap_or_default();
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
    let mut rpc = vec![0u8; 40];
    oncrpc::emit_call(&mut rpc, xid, TEST_PROG, TEST_VERS, PROC_CHECKSUM);
    rpc.extend_from_slice(&16u32.to_be_bytes());
    rpc.extend_from_slice(&[7u8; 16]);
    let sum = Expect::Checksum(oncrpc::checksum(&[7u8; 16]));
    client
        .send_call(xid, &rpc)
        .map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    replies.clear();
    while replies.is_empty() && Instant::now() < deadline {
        client
            .poll_replies(&mut replies)
            .map_err(|e| format!("poll: {e}"))?;
    }
    match replies.as_slice() {
        [r] if r.xid() == xid => {
            verify(r, &sum)?;
        }
        other => {
            return Err(format!(
                "after malformed headers: expected one reply to {xid:#x}, got {other:?}"
            ))
        }
    }
    Ok(checked)
}

/// Sends a message longer than the server's Receive buffers: the server's Receive completes
/// with a length error and it must close this connection (this client's Send or next Receive
/// fails, or the connection is reset); the other connections keep working.
fn oversized(mut client: Client, args: &Args, base: u32) -> Result<(), String> {
    let len = args.buffer_size;
    if len <= client.server_inline() {
        return Err(format!(
            "--oversized needs --buffer-size above the server's {} B",
            client.server_inline()
        ));
    }
    let mut msg = vec![0u8; len];
    put_xdr_words(&mut msg, &[base | 0xf000, 1]);
    client.send_raw(&msg).map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut replies = Vec::new();
    while Instant::now() < deadline {
        match client.poll_replies(&mut replies) {
            Err(e) => {
                println!("rpcrdma-load: oversized message: connection closed by the server ({e})");
                return Ok(());
            }
            Ok(_) if !replies.is_empty() => {
                return Err(format!("oversized message answered: {replies:?}"));
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    Err("the server kept a connection whose Receive overflowed".into())
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
                        total.bytes += o.bytes;
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
    let mut busy = Duration::ZERO;
    let mut lat = Vec::new();
    let (mut calls, mut credits, mut malformed_checked, mut failures) = (0u64, 0u32, 0u64, 0);
    let mut bytes = 0u64;
    for r in results {
        match r {
            Ok(o) => {
                calls += o.calls;
                bytes += o.bytes;
                busy = busy.max(o.elapsed);
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
    // Rates over the calls phase (connection set-up and memory registration excluded, as
    // perftest excludes its own); the slowest connection's time when there are several.
    let secs = if busy.is_zero() { wall } else { busy }.as_secs_f64();
    println!(
        "rpcrdma-load: calls={calls} verified={calls} seconds={secs:.3} wall_seconds={:.3} calls_per_sec={:.0} bytes={bytes} mib_per_sec={:.1} p50_us={:.1} p99_us={:.1} credits={credits} connections={} cycles={} size={} reply_size={} depth={} malformed_checked={malformed_checked} failures={failures}",
        wall.as_secs_f64(),
        calls as f64 / secs,
        bytes as f64 / secs / (1 << 20) as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        args.connections,
        args.cycles,
        args.size,
        args.reply_size,
        args.depth
    );
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
