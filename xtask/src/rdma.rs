//! Everything that runs on Soft-RoCE inside `cargo xtask vm`:
//!
//! - `cargo xtask demo`: set-up of what is missing, release build, one VM boot that starts
//!   `rpcrdma-serve`, drives it with `rpcrdma-load` (verified calls, then malformed headers),
//!   and prints a short table; exits 0 only if every reply was verified.
//! - the verbs end-to-end tests (`hosted/tests/verbs_e2e.rs`), run by `cargo xtask test`;
//! - `cargo xtask bench vm`: in one VM boot, side by side: perftest `ib_send_bw` vs
//!   rpcrdma calls/s, persistent registration vs register-per-Receive, and depth-1 latency vs
//!   `ib_send_lat`, written to BENCHMARKS.md.

use std::collections::HashMap;
use std::time::Duration;

use rpcrdma_report::{parse_last, ServeReport, STATS};

use crate::util::{self, Context, Result};
use crate::vm::{self, VmOptions};

pub(crate) fn build_release() -> Result<()> {
    let sh = util::shell()?;
    util::cargo(&sh)
        .args(["build", "--release", "-p", "rpcrdma-hosted", "--bins"])
        .run()?;
    Ok(())
}

pub(crate) fn bin(name: &str) -> String {
    util::root()
        .join("target/release")
        .join(name)
        .display()
        .to_string()
}

/// Writes `body` to a script under target/ and runs it in the VM; returns (status, output).
pub(crate) fn run_script(name: &str, body: &str, timeout: Duration) -> Result<(i32, String)> {
    let dir = util::root().join("target/rxe-vm-scripts");
    std::fs::create_dir_all(&dir).context(format_args!("create {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, body).context(format_args!("write {}", path.display()))?;
    let opts = VmOptions {
        timeout,
        ..VmOptions::default()
    };
    vm::run_in_vm_capture(&["bash".into(), path.into_os_string()], &opts)
}

pub(crate) fn kv(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `cargo xtask demo`.
pub fn demo() -> Result<()> {
    crate::setup::packages()?;
    build_release()?;
    vm::ensure_ready()?;
    let (serve, load) = (bin("rpcrdma-serve"), bin("rpcrdma-load"));
    let script = format!(
        r#"set -u
{serve} --addr 10.0.2.15 --credits 64 > /tmp/serve.out 2> /tmp/serve.err &
S=$!
for i in $(seq 50); do grep -q ready /tmp/serve.out 2>/dev/null && break; sleep 0.1; done
{load} --addr 10.0.2.15 -n 20000 -d 16 -s 64; A=$?
{load} --addr 10.0.2.15 -n 400 -d 8 -s 65536 --call-chunk read; B=$?
{load} --addr 10.0.2.15 -n 200 -d 8 -s 65536 --call-chunk nomsg; C=$?
{load} --addr 10.0.2.15 -n 40 -d 4 --proc generate --reply-size 1048576 --reply-chunk write; E=$?
{load} --addr 10.0.2.15 -n 200 -d 8 --proc bulk --reply-size 65536 --reply-chunk reply; F=$?
{load} --addr 10.0.2.15 -n 100 -d 4 --malformed; G=$?
kill -INT $S; wait $S; D=$?
cat /tmp/serve.out
[ $D = 0 ] || tail -20 /tmp/serve.err
echo "demo-status null=$A read=$B nomsg=$C write=$E reply=$F malformed=$G serve=$D"
[ $A = 0 ] && [ $B = 0 ] && [ $C = 0 ] && [ $E = 0 ] && [ $F = 0 ] && [ $G = 0 ] && [ $D = 0 ]
"#
    );
    eprintln!("demo: booting the Soft-RoCE VM (rxe0 on a dummy interface; nothing leaves the VM)");
    let (status, out) = run_script("demo.sh", &script, Duration::from_secs(600))?;
    let loads: Vec<HashMap<String, String>> = out
        .lines()
        .filter(|l| l.starts_with("rpcrdma-load: calls="))
        .map(kv)
        .collect();
    let report = parse_last::<ServeReport>(&out, "rpcrdma-serve", STATS);
    let g = |m: &HashMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_else(|| "?".into());
    println!("\nrpcrdma demo — rpcrdma-serve ← rpcrdma-load over Soft-RoCE (rxe0) inside QEMU\n");
    println!("| run | calls verified | calls/s | MiB/s | p50 µs | p99 µs | credits |");
    println!("|---|---|---|---|---|---|---|");
    for (name, l) in [
        "CHECKSUM, 64 B args inline, depth 16",
        "CHECKSUM, 64 KiB args through a Read chunk, depth 8",
        "CHECKSUM, whole 64 KiB call in a position-zero chunk (RDMA_NOMSG), depth 8",
        "GENERATE, 1 MiB reply payload into the write chunk, depth 4",
        "BULK, 64 KiB reply through the reply chunk (RDMA_NOMSG), depth 8",
        "malformed headers, then calls",
    ]
    .iter()
    .zip(&loads)
    {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            g(l, "verified"),
            g(l, "calls_per_sec"),
            g(l, "mib_per_sec"),
            g(l, "p50_us"),
            g(l, "p99_us"),
            g(l, "credits")
        );
    }
    match &report {
        Ok(r) => {
            let (s, c) = (&r.server, &r.server.responder);
            println!(
                "\nserver: {} connections, {} calls answered ({} inline, {} into write chunks, {} through reply chunks); \
                 {} KiB pulled by RDMA Read, {} KiB written to write chunks, {} KiB to reply chunks",
                s.accepted,
                c.calls,
                c.inline_replies,
                c.write_chunk_replies,
                c.reply_chunk_replies,
                c.read_bytes / 1024,
                c.write_chunk_bytes / 1024,
                c.reply_chunk_bytes / 1024,
            );
            println!(
                "bad headers answered: {} ERR_VERS, {} ERR_CHUNK, {} dropped; descriptors, calls or pages leaked: {}",
                c.err_vers, c.err_chunk, c.dropped, s.leaked,
            );
            println!(
                "registered memory: {} KiB per connection (Receive buffers = credits + batch, send slots = credits), \
                 {} KiB shared by all connections (Read sinks, payload pages)",
                r.memory.per_connection / 1024,
                r.memory.shared / 1024,
            );
        }
        Err(e) => println!("\nserver: {e}"),
    }
    match (status, report) {
        (0, Ok(_)) => {
            println!("\ndemo: PASS — every reply verified");
            Ok(())
        }
        (0, Err(e)) => {
            eprintln!("{out}");
            Err(format!("demo: rpcrdma-serve's report: {e}").into())
        }
        _ => {
            eprintln!("{out}");
            Err(format!("demo failed (status {status}); output above").into())
        }
    }
}

/// The verbs end-to-end tests inside the VM (a step of `cargo xtask test`).
pub fn vm_tests() -> Result<()> {
    // Every server the suite starts runs 2 event loops, then 1 (`--threads`), unless a test
    // names its own.
    for threads in ["2", "1"] {
        eprintln!("verbs tests: servers with {threads} event loop(s)");
        vm::cargo_in_vm_env(
            &[
                "test",
                "--release",
                "-p",
                "rpcrdma-hosted",
                "--test",
                "verbs_e2e",
                "--",
                "--ignored",
                "--test-threads=1",
            ],
            900,
            &[("RPCRDMA_TEST_THREADS", threads)],
        )?;
    }
    Ok(())
}

/// Whether the VM can run here (QEMU and a static busybox present).
pub fn vm_available() -> bool {
    util::have("qemu-system-x86_64") && std::path::Path::new("/bin/busybox").is_file()
}

/// `cargo xtask bench vm`.
pub fn bench_vm() -> Result<()> {
    build_release()?;
    vm::ensure_ready()?;
    let (serve, load) = (bin("rpcrdma-serve"), bin("rpcrdma-load"));
    let script = format!(
        r#"set -u
IP=10.0.2.15
pt() {{ # pt NAME CMD... : perftest server + client, prints "NAME <last result line>"
  local name=$1; shift
  "$@" > /tmp/pt-srv.log 2>&1 & local s=$!; sleep 0.7
  local line=$("$@" $IP 2>&1 | grep -E '^ *[0-9]+ +[0-9]+ ' | tail -1 | tr -s ' ')
  wait $s; echo "perftest $name $line"
}}
rl() {{ # rl NAME SERVE-ARGS -- LOAD-ARGS
  local name=$1; shift; local sargs=(); while [ "$1" != "--" ]; do sargs+=("$1"); shift; done; shift
  {serve} --addr $IP --port 20049 "${{sargs[@]}}" > /tmp/s.out 2>/tmp/s.err & local s=$!
  for i in $(seq 50); do grep -q ready /tmp/s.out 2>/dev/null && break; sleep 0.1; done
  local line=$({load} --addr $IP --port 20049 "$@" | grep '^rpcrdma-load:')
  kill -INT $s; wait $s
  echo "rpcrdma $name $line"
}}
pt send_bw_64 ib_send_bw -d rxe0 -x 1 -s 64 -n 20000
rl msg_64 -- -n 20000 -d 16 -s 0
rl signal_all_64 --signal-all -- -n 20000 -d 16 -s 0
grep '^rpcrdma-serve: stats ' /tmp/s.out
pt send_bw_1024 ib_send_bw -d rxe0 -x 1 -s 1024 -n 20000
rl msg_1024 -- -n 20000 -d 16 -s 952
rl persistent_1024 -- -n 10000 -d 16 -s 952
rl per_receive_1024 --register-per-receive -- -n 10000 -d 16 -s 952
pt send_lat_64 ib_send_lat -d rxe0 -x 1 -s 64 -n 5000
rl lat_64 -- -n 5000 -d 1 -s 0
pt read_64k ib_read_bw -d rxe0 -x 1 -s 65536 -n 2000
rl read_64k -- -n 2000 -d 16 -s 65536 --proc sink --call-chunk read --verify len
pt write_64k ib_write_bw -d rxe0 -x 1 -s 65536 -n 2000
rl write_64k -- -n 2000 -d 16 --proc source --reply-size 65536 --reply-chunk write --verify len
pt read_1m ib_read_bw -d rxe0 -x 1 -s 1048576 -n 200
rl read_1m -- -n 200 -d 8 -s 1048576 --proc sink --call-chunk read --verify len
pt write_1m ib_write_bw -d rxe0 -x 1 -s 1048576 -n 200
rl write_1m -- -n 200 -d 8 --proc source --reply-size 1048576 --reply-chunk write --verify len
rl checksum_1m -- -n 100 -d 8 -s 1048576 --call-chunk read
rl generate_1m -- -n 100 -d 8 --proc generate --reply-size 1048576 --reply-chunk write
for d in 16 64; do
  for t in 1 2; do rl loops${{t}}_d$d --threads $t -- -n 10000 -d $d -c 4 -s 0; done
  for t in 1 2; do rl loops${{t}}_d${{d}}_again --threads $t -- -n 10000 -d $d -c 4 -s 0; done
done
"#
    );
    let (status, out) = run_script("bench.sh", &script, Duration::from_secs(900))?;
    if status != 0 {
        eprintln!("{out}");
        return Err(format!("bench vm failed (status {status})").into());
    }
    let perftest = |name: &str| -> Vec<f64> {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("perftest {name} ")))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let ours = |name: &str| -> HashMap<String, f64> {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("rpcrdma {name} ")))
            .map(|rest| {
                kv(rest)
                    .into_iter()
                    .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let rate = |v: Vec<f64>| v.get(4).map(|mpps| mpps * 1e6).unwrap_or(f64::NAN);
    let (bw64, bw1k) = (rate(perftest("send_bw_64")), rate(perftest("send_bw_1024")));
    let (m64, m1k) = (
        ours("msg_64")["calls_per_sec"],
        ours("msg_1024")["calls_per_sec"],
    );
    let sig_all = ours("signal_all_64")["calls_per_sec"];
    let (pers, perrecv) = (
        ours("persistent_1024")["calls_per_sec"],
        ours("per_receive_1024")["calls_per_sec"],
    );
    let lat = perftest("send_lat_64");
    let lat_rt = lat.get(4).map_or(f64::NAN, |typ| 2.0 * typ); // ib_send_lat reports RTT/2
    let l64 = ours("lat_64");
    let mut md = String::new();
    md.push_str("Command: `cargo xtask bench vm` (one VM boot: QEMU TCG, 2 vCPUs, Soft-RoCE rxe0 on a dummy interface; release builds; pairs run back to back in that boot).\n\n");
    md.push_str("| pair | rpcrdma | reference | ratio | goal |\n|---|---|---|---|---|\n");
    md.push_str(&format!(
        "| calls/s vs `ib_send_bw -x 1` msg/s, 64 B (NULL call, 68 B message), depth 16 | {m64:.0} | {bw64:.0} | {:.2} | ≥ 0.45 |\n",
        m64 / bw64
    ));
    md.push_str(&format!(
        "| calls/s vs `ib_send_bw -x 1` msg/s, 1 KiB message, depth 16 | {m1k:.0} | {bw1k:.0} | {:.2} | ≥ 0.45 |\n",
        m1k / bw1k
    ));
    md.push_str(&format!(
        "| persistent registration vs register+deregister per Receive, 1 KiB, calls/s | {pers:.0} | {perrecv:.0} | {:.2} | > 1 |\n",
        pers / perrecv
    ));
    md.push_str(&format!(
        "| one signaled Send per batch vs every Send signaled (`--signal-all`), NULL calls/s, depth 16 | {m64:.0} | {sig_all:.0} | {:.2} | > 1 |\n",
        m64 / sig_all
    ));
    md.push_str(&format!(
        "| depth-1 latency p50 (p99) vs `ib_send_lat` round trip (2 × t_typical), 64 B, µs | {:.1} ({:.1}) | {lat_rt:.1} | {:.2} | ≤ 2 |\n",
        l64["p50_us"],
        l64["p99_us"],
        l64["p50_us"] / lat_rt
    ));
    md.push_str("\nEvent loops (`--threads`), same boot: NULL calls from 4 client connections (`rpcrdma-load -c 4`), busy-polling server; each figure the mean of two runs, 1 and 2 loops interleaved. Soft-RoCE's own work (its kernel threads and softirqs), the four clients and the server's loops all share the VM's 2 vCPUs, so a second busy-polling loop mostly takes CPU from Soft-RoCE and the clients: this measures the VM, not the design's scaling — `cargo xtask bench core --threads 1,2` does that, without Soft-RoCE in the way.\n\n| depth (per connection) | 1 loop calls/s | 2 loops calls/s | ratio |\n|---|---|---|---|\n");
    for d in [16, 64] {
        let mean = |t: u32| {
            let a = ours(&format!("loops{t}_d{d}"))
                .get("calls_per_sec")
                .copied();
            let b = ours(&format!("loops{t}_d{d}_again"))
                .get("calls_per_sec")
                .copied();
            match (a, b) {
                (Some(a), Some(b)) => (a + b) / 2.0,
                (Some(x), None) | (None, Some(x)) => x,
                _ => f64::NAN,
            }
        };
        let (one, two) = (mean(1), mean(2));
        md.push_str(&format!(
            "| {d} | {one:.0} | {two:.0} | {:.2} |\n",
            two / one
        ));
    }
    // Bandwidth: perftest's "BW average" column (MB/sec, 2^20 bytes) vs rpcrdma-load's MiB/s
    // over its calls phase.
    let bw = |v: Vec<f64>| v.get(2).copied().unwrap_or(f64::NAN);
    md.push_str("\nBulk data, same boot (perftest `BW average` in MiB/s; rpcrdma-load MiB/s of argument or result data over its calls phase; SINK / SOURCE do not touch the data, so the transport is measured, not the service):\n\n");
    md.push_str(
        "| pair | rpcrdma MiB/s | perftest MiB/s | ratio | goal |\n|---|---|---|---|---|\n",
    );
    for (name, what, pt) in [
        ("read_64k", "64 KiB calls through a Read chunk (SINK) vs `ib_read_bw -s 65536`, depth 16", "read_64k"),
        ("read_1m", "1 MiB calls through a Read chunk (SINK, 4 segments) vs `ib_read_bw -s 1048576`, depth 8", "read_1m"),
        ("write_64k", "64 KiB replies into the write chunk (SOURCE) vs `ib_write_bw -s 65536`, depth 16", "write_64k"),
        ("write_1m", "1 MiB replies into the write chunk (SOURCE, 4 segments) vs `ib_write_bw -s 1048576`, depth 8", "write_1m"),
    ] {
        let ours = ours(name).get("mib_per_sec").copied().unwrap_or(f64::NAN);
        let theirs = bw(perftest(pt));
        md.push_str(&format!(
            "| {what} | {ours:.1} | {theirs:.1} | {:.2} | ≥ 0.8 |\n",
            ours / theirs
        ));
    }
    for (name, what) in [
        (
            "checksum_1m",
            "1 MiB CHECKSUM calls through a Read chunk, every byte checksummed and verified",
        ),
        (
            "generate_1m",
            "1 MiB GENERATE replies into the write chunk, every byte filled and verified",
        ),
    ] {
        md.push_str(&format!(
            "| {what} (service cost included) | {:.1} | — | — | — |\n",
            ours(name).get("mib_per_sec").copied().unwrap_or(f64::NAN)
        ));
    }
    // The memory figures of the report of the server that ran `signal_all_64` (defaults).
    let (per_conn, shared) = match parse_last::<ServeReport>(&out, "rpcrdma-serve", STATS) {
        Ok(r) => (
            r.memory.per_connection as f64 / 1024.0,
            r.memory.shared as f64 / 1024.0,
        ),
        Err(e) => {
            eprintln!("bench vm: warning: no memory figures: {e}");
            (f64::NAN, f64::NAN)
        }
    };
    md.push_str(&format!(
        "\nRegistered memory per connection at the defaults (64 credits, refill batch 16, 4 KiB buffers and send slots): **{per_conn:.0} KiB** (80 Receive buffers + 64 send slots; Linux's server uses about 540 KiB at 64 credits). Shared by all connections: {shared:.0} KiB of Read sinks and payload pages.\n",
    ));
    md.push_str("\nRaw lines from the run:\n\n```\n");
    for l in out
        .lines()
        .filter(|l| l.starts_with("perftest ") || l.starts_with("rpcrdma "))
    {
        md.push_str(l);
        md.push('\n');
    }
    md.push_str("```\n");
    println!("{md}");
    util::write_section(&util::root().join("BENCHMARKS.md"), "bench-vm", &md)
}
