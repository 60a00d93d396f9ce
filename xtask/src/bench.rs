//! `cargo xtask bench core`: the core receive-path cycle over the grid
//! N ∈ {16, 256, 4096} × buffer ∈ {1, 4, 64 KiB} × message ∈ {empty lists, write list + reply
//! chunk}: median ns per message (wall clock, 11 repetitions, one run side by side) and
//! instructions per message from callgrind (deterministic). Writes the table into
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
        other => {
            Err(format!("unknown benchmark `{other}`: use `cargo xtask bench core|vm`").into())
        }
    }
}

fn bench_bin() -> std::path::PathBuf {
    util::root().join("target/release/rpcrdma-bench-core")
}

/// Instructions per message: callgrind counts only `measured_cycles`; two runs of different
/// lengths cancel the constant entry/exit cost.
fn instructions(n: usize, buf: usize, shape: &str) -> Result<f64> {
    let sh = util::shell()?;
    let count = |iters: u64| -> Result<u64> {
        let out_file = std::env::temp_dir().join(format!("rpcrdma-cg-{n}-{buf}-{shape}-{iters}"));
        let out = sh
            .cmd("valgrind")
            .args(["--tool=callgrind", "--toggle-collect=*measured_cycles*"])
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(bench_bin())
            .args([
                "--n",
                &n.to_string(),
                "--buf",
                &buf.to_string(),
                "--msg",
                shape,
            ])
            .args(["--iters", &iters.to_string(), "--callgrind"])
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
    };
    let (a, b) = (count(50_000)?, count(150_000)?);
    Ok((b - a) as f64 / 100_000.0)
}

fn core() -> Result<()> {
    let sh = util::shell()?;
    util::cargo(&sh)
        .args([
            "build",
            "--release",
            "-p",
            "rpcrdma-tests",
            "--bin",
            "rpcrdma-bench-core",
        ])
        .run()?;
    let have_valgrind = util::have("valgrind");
    if !have_valgrind {
        eprintln!("bench: valgrind not found: instruction counts skipped (cargo xtask setup)");
    }
    let mut rows = Vec::new();
    let mut medians: Vec<(&str, f64)> = Vec::new();
    let mut instrs: Vec<(&str, f64)> = Vec::new();
    for &(shape, _) in SHAPES {
        for &n in NS {
            for &buf in BUFS {
                let out = sh
                    .cmd(bench_bin())
                    .args([
                        "--n",
                        &n.to_string(),
                        "--buf",
                        &buf.to_string(),
                        "--msg",
                        shape,
                    ])
                    .args(["--iters", "1000000", "--reps", "11"])
                    .quiet()
                    .read()
                    .context(format_args!("bench run n={n} buf={buf} {shape}"))?;
                let f: Vec<&str> = out.split_whitespace().collect();
                let median: f64 = f
                    .get(3)
                    .and_then(|v| v.parse().ok())
                    .ok_or("bad bench output")?;
                let ir = if have_valgrind {
                    Some(instructions(n, buf, shape)?)
                } else {
                    None
                };
                eprintln!("bench: {shape} N={n} buf={buf}: {median:.2} ns, {ir:?} instr");
                medians.push((shape, median));
                if let Some(ir) = ir {
                    instrs.push((shape, ir));
                }
                rows.push(format!(
                    "| {shape} | {n} | {} KiB | {median:.1} | {} |",
                    buf / 1024,
                    ir.map_or("–".into(), |v| format!("{v:.0}"))
                ));
            }
        }
    }
    let spread = |v: &[(&str, f64)], shape: &str| {
        let xs: Vec<f64> = v
            .iter()
            .filter(|(s, _)| *s == shape)
            .map(|(_, x)| *x)
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
        "Command: `cargo xtask bench core` (release build; credits 8, batch 4 at every point; \
         median of 11 runs of 10^6 messages; instructions from `valgrind --tool=callgrind \
         --toggle-collect=*measured_cycles*`, difference of 150k and 50k messages).\n\n",
    );
    table.push_str(
        "| message | N | buffer | median ns/msg | instructions/msg |\n|---|---|---|---|---|\n",
    );
    for r in &rows {
        table.push_str(r);
        table.push('\n');
    }
    table.push_str("\nFlatness (max/min across the 9 grid points):\n\n| message | ns max/min | instructions max/min |\n|---|---|---|\n");
    for &(shape, _) in SHAPES {
        table.push_str(&format!(
            "| {shape} | {} | {} |\n",
            spread(&medians, shape),
            spread(&instrs, shape)
        ));
    }
    println!("{table}");
    util::write_section(&util::root().join("BENCHMARKS.md"), "bench-core", &table)
}
