//! `cargo xtask bench core`: the core receive-path cycle over the grid
//! N ∈ {16, 256, 4096} × buffer ∈ {1, 4, 64 KiB} × message ∈ {empty lists, write list + reply
//! chunk}, for the pool, the plain reference loop (no pool), the harness alone and the whole
//! responder cycle:
//! median ns per message (wall clock, 11 repetitions, side by side) and instructions per
//! message from callgrind (deterministic), with the pool/reference ratios. Writes the table into
//! `BENCHMARKS.md` between `<!-- bench-core -->` markers and prints it.

use crate::util::{self, Context, Result};

const NS: &[usize] = &[16, 256, 4096];
const BUFS: &[usize] = &[1024, 4096, 65536];
const SHAPES: &[(&str, &str)] = &[
    ("empty", "RDMA_MSG, empty lists"),
    ("chunks", "RDMA_MSG, write list (2 segs) + reply chunk"),
];

pub fn bench(which: &str) -> Result<()> {
    match which {
        "core" => core(),
        "vm" => crate::rdma::bench_vm(),
        "wire" => crate::wire::bench(),
        other => {
            Err(format!("unknown benchmark `{other}`: use `cargo xtask bench core|vm|wire`").into())
        }
    }
}

fn bench_bin() -> std::path::PathBuf {
    util::root().join("target/release/rpcrdma-bench-core")
}

fn grid_args(mode: &str, n: usize, buf: usize, shape: &str) -> Vec<String> {
    [
        "--mode",
        mode,
        "--n",
        &n.to_string(),
        "--buf",
        &buf.to_string(),
        "--msg",
        shape,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Instructions per message: callgrind counts only `measured_cycles`; two runs of different
/// lengths cancel the constant entry/exit cost.
fn instructions(mode: &str, n: usize, buf: usize, shape: &str) -> Result<f64> {
    let count = |iters: u64| -> Result<u64> {
        let mut args = grid_args(mode, n, buf, shape);
        args.extend(["--iters".into(), iters.to_string(), "--callgrind".into()]);
        callgrind_total(&bench_bin(), &args, Some("*measured_cycles*"))
    };
    let (a, b) = (count(50_000)?, count(150_000)?);
    Ok((b - a) as f64 / 100_000.0)
}

/// Instructions callgrind counts for one run of `bin args` (within functions matching
/// `toggle` when given, else the whole run).
fn callgrind_total(bin: &std::path::Path, args: &[String], toggle: Option<&str>) -> Result<u64> {
    let sh = util::shell()?;
    let out_file = std::env::temp_dir().join(format!(
        "rpcrdma-cg-{}-{}",
        std::process::id(),
        args.join("_").replace(['/', ' '], "")
    ));
    let mut cmd = sh.cmd("valgrind").arg("--tool=callgrind");
    if let Some(t) = toggle {
        cmd = cmd.arg(format!("--toggle-collect={t}"));
    }
    let out = cmd
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(bin)
        .args(args)
        .quiet()
        .ignore_status()
        .output()
        .context("valgrind (install it: cargo xtask setup)")?;
    let _ = std::fs::remove_file(&out_file);
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no callgrind total in valgrind output:\n{text}").into())
}

/// Median ns per message (11 runs of 10^6 messages; the responder 11 of 2·10^5).
fn median_ns(mode: &str, n: usize, buf: usize, shape: &str) -> Result<f64> {
    let sh = util::shell()?;
    let iters = if mode == "responder" {
        "200000"
    } else {
        "1000000"
    };
    let out = sh
        .cmd(bench_bin())
        .args(grid_args(mode, n, buf, shape))
        .args(["--iters", iters, "--reps", "11"])
        .quiet()
        .read()
        .context(format_args!("bench run {mode} n={n} buf={buf} {shape}"))?;
    let f: Vec<&str> = out.split_whitespace().collect();
    Ok(f.get(3)
        .and_then(|v| v.parse().ok())
        .ok_or("bad bench output")?)
}

/// One grid point: (ns, instructions) of the pool, the reference and the responder.
struct Point {
    shape: &'static str,
    pool: (f64, Option<f64>),
    reference: (f64, Option<f64>),
    harness: Option<f64>,
    responder: (f64, Option<f64>),
}

/// Builds benchmark binary `name` of `rpcrdma-tests` (release); returns its path.
fn build_bench(name: &str) -> Result<std::path::PathBuf> {
    let sh = util::shell()?;
    util::cargo(&sh)
        .args(["build", "--release", "-p", "rpcrdma-tests", "--bin", name])
        .run()?;
    Ok(util::root().join("target/release").join(name))
}

fn core() -> Result<()> {
    build_bench("rpcrdma-bench-core")?;
    let have_valgrind = util::have("valgrind");
    if !have_valgrind {
        eprintln!("bench: valgrind not found: instruction counts skipped (cargo xtask setup)");
    }
    let measure = |mode: &str, n: usize, buf: usize, shape: &str| -> Result<(f64, Option<f64>)> {
        let ns = median_ns(mode, n, buf, shape)?;
        let ir = if have_valgrind {
            Some(instructions(mode, n, buf, shape)?)
        } else {
            None
        };
        eprintln!("bench: {mode} {shape} N={n} buf={buf}: {ns:.2} ns, {ir:?} instr");
        Ok((ns, ir))
    };
    let mut rows = Vec::new();
    let mut points = Vec::new();
    let fmt_ir = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    for &(shape, _) in SHAPES {
        for &n in NS {
            for &buf in BUFS {
                let pool = measure("pool", n, buf, shape)?;
                // The reference decodes the fixed header only: it runs the empty-lists message.
                let reference = measure("reference", n, buf, "empty")?;
                // The ring, loop and black_box alone (instructions only).
                let harness = if have_valgrind {
                    Some(instructions("harness", n, buf, shape)?)
                } else {
                    None
                };
                let responder = measure("responder", n, buf, shape)?;
                let ratio_ir = match (pool.1, reference.1) {
                    (Some(p), Some(r)) => format!("{:.2}", p / r),
                    _ => "–".into(),
                };
                let ratio_own = match (pool.1, reference.1, harness) {
                    (Some(p), Some(r), Some(h)) => format!("{:.2}", (p - h) / (r - h)),
                    _ => "–".into(),
                };
                rows.push(format!(
                    "| {shape} | {n} | {} KiB | {} | {} | {} | {ratio_ir} | {ratio_own} | {:.1} | {:.1} | {:.2} | {} | {:.1} |",
                    buf / 1024,
                    fmt_ir(pool.1),
                    fmt_ir(reference.1),
                    fmt_ir(harness),
                    pool.0,
                    reference.0,
                    pool.0 / reference.0,
                    fmt_ir(responder.1),
                    responder.0,
                ));
                points.push(Point {
                    shape,
                    pool,
                    reference,
                    harness,
                    responder,
                });
            }
        }
    }
    let spread = |shape: &str, pick: &dyn Fn(&Point) -> Option<f64>| {
        let xs: Vec<f64> = points
            .iter()
            .filter(|p| p.shape == shape)
            .filter_map(pick)
            .collect();
        let (lo, hi) = xs
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        if xs.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2}", hi / lo)
        }
    };
    let mut table = String::new();
    table.push_str(
        "Command: `cargo xtask bench core` (release build; credits 8, batch 4 at every point, \
         N buffers carved (`PoolConfig::buffers = N`), one post per completion batch of 4; \
         median of 11 runs of 10^6 messages (responder: 2·10^5); instructions from `valgrind \
         --tool=callgrind --toggle-collect=*measured_cycles*`, difference of 150k and 50k \
         messages). **pool**: complete → sync → decode → view → release through `RecvPool`; \
         **ref**: the plain loop of the same binary (`--mode reference`: same ring, same \
         batching, no pool; fixed-header decode of the empty-lists message, so both rows \
         compare with it); **harness**: the ring pop, loop, `black_box` and chained re-post of the \
         same ids alone (`--mode harness`), paid by pool and ref alike; **own ratio** = (pool − \
         harness) / (ref − harness); **responder**: `Connection::handle` + `flush` per message — \
         Receive → decode → NULL (ExampleService) → inline reply posted → release, Send \
         completion included.\n\n",
    );
    table.push_str(
        "| message | N | buffer | pool instr | ref instr | harness instr | instr ratio | own ratio | pool ns | ref ns | ns ratio | responder instr | responder ns |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        table.push_str(r);
        table.push('\n');
    }
    table.push_str(
        "\nFlatness (max/min across the 9 grid points):\n\n| message | pool instr | pool ns | ref instr | harness instr | responder instr | responder ns |\n|---|---|---|---|---|---|---|\n",
    );
    for &(shape, _) in SHAPES {
        table.push_str(&format!(
            "| {shape} | {} | {} | {} | {} | {} | {} |\n",
            spread(shape, &|p| p.pool.1),
            spread(shape, &|p| Some(p.pool.0)),
            spread(shape, &|p| p.reference.1),
            spread(shape, &|p| p.harness),
            spread(shape, &|p| p.responder.1),
            spread(shape, &|p| Some(p.responder.0)),
        ));
    }
    println!("{table}");
    util::write_section(&util::root().join("BENCHMARKS.md"), "bench-core", &table)
}

/// `cargo xtask bench core --threads 1,2`: aggregate calls/s of the whole responder cycle with
/// one event loop per thread, each with its own software NIC (nothing shared), for NULL calls
/// and 64 KiB Read-chunk calls; the medians of 7 interleaved 2-second runs; the ratio to one
/// loop; and instructions per call from callgrind (fixed work), which must not change with
/// the number of loops. Writes section `bench-loops` of BENCHMARKS.md.
pub fn loops(threads: &str) -> Result<()> {
    let counts: Vec<usize> = threads
        .split(',')
        .map(|t| t.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("--threads wants a list like `1,2`, got `{threads}`"))?;
    let sh = util::shell()?;
    let bin = build_bench("rpcrdma-bench-loops")?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let have_valgrind = util::have("valgrind");
    let mut rates: std::collections::HashMap<(usize, &str), Vec<f64>> = Default::default();
    let msgs = ["null", "read64k"];
    // Interleaved: every (loops, message) once per round, 7 rounds.
    for _round in 0..7 {
        for &msg in &msgs {
            for &n in &counts {
                let out = sh
                    .cmd(&bin)
                    .args(["--threads", &n.to_string(), "--msg", msg])
                    .args(["--secs", "2", "--reps", "1"])
                    .quiet()
                    .read()
                    .context(format_args!("bench loops {n} {msg}"))?;
                let rate = out
                    .lines()
                    .find_map(|l| l.strip_prefix("median "))
                    .and_then(|l| l.split("calls_per_sec=").nth(1))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .ok_or_else(|| format!("bad output from rpcrdma-bench-loops: {out}"))?;
                eprintln!("bench loops: {n} loop(s) {msg}: {rate:.0} calls/s");
                rates.entry((n, msg)).or_default().push(rate);
            }
        }
    }
    // Instructions per call (all threads together / calls): callgrind runs threads one at a
    // time, so this counts work, not contention.
    let instr = |n: usize, msg: &str| -> Result<Option<f64>> {
        if !have_valgrind {
            return Ok(None);
        }
        let count = |calls: u64| -> Result<u64> {
            let args: Vec<String> = [
                "--threads",
                &n.to_string(),
                "--msg",
                msg,
                "--reps",
                "1",
                "--no-pin",
                "--calls",
                &calls.to_string(),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            callgrind_total(&bin, &args, None)
        };
        // Two lengths: the difference cancels set-up and thread start.
        let (short, long) = if msg == "null" {
            (20_000, 60_000)
        } else {
            (1_000, 3_000)
        };
        let (a, b) = (count(short)?, count(long)?);
        Ok(Some((b - a) as f64 / ((long - short) as f64 * n as f64)))
    };
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut md = format!(
        "Command: `cargo xtask bench core --threads {threads}` (host, {cpus} CPUs, threads pinned \
         to CPUs 0..N; each loop has its own software NIC, endpoint and service and plays its own \
         requester, keeping its grant's worth of calls in flight; medians of 7 interleaved \
         2-second runs; instructions per call from callgrind, fixed work, all loops together).\n\n\
         | call | loops | calls/s (all loops) | vs 1 loop | instructions per call | goal |\n|---|---|---|---|---|---|\n"
    );
    for &msg in &msgs {
        let one = median(rates.get(&(1, msg)).map_or(&[][..], |v| v.as_slice()));
        for &n in &counts {
            let r = median(rates.get(&(n, msg)).map_or(&[][..], |v| v.as_slice()));
            let ir = instr(n, msg)?;
            let label = if msg == "null" {
                "NFS NULL"
            } else {
                "CHECKSUM, 64 KiB Read chunk"
            };
            md.push_str(&format!(
                "| {label} | {n} | {r:.0} | {:.2} | {} | {} |\n",
                r / one,
                ir.map_or("–".to_string(), |v| format!("{v:.0}")),
                if n == 2 { "≥ 1.8×" } else { "" }
            ));
        }
    }
    println!("{md}");
    util::write_section(&util::root().join("BENCHMARKS.md"), "bench-loops", &md)
}
