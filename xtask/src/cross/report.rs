//! The report of a cross run: printed, and with `--write` the `cross` section of BENCHMARKS.md.

use std::fmt::Write as _;

use super::build::PanicProof;
use super::{Outcome, BASELINE, DEFMT_LOG, EXAMPLE, PANIC_SYMBOL, POOL_PROBE, PROBE};
use crate::matrix::TARGET_LIBRARIES;

fn kib(b: u64) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

pub(super) fn report(outcomes: &[Outcome], run: bool) -> String {
    let mut s = String::from(
        "## Firmware: cross builds, QEMU runs, size, RAM, panic-freedom\n\n\
         rpcrdma-core embedded in `no_std` firmware without an allocator \
         (`firmware-examples/`), on four bare-metal targets under QEMU.\n\n",
    );
    let routes: Vec<String> = outcomes
        .iter()
        .map(|o| match &o.route {
            Some(r) => format!("{}: {}", o.target.triple, r.describe()),
            None => format!("{}: no toolchain", o.target.triple),
        })
        .collect();
    let _ = writeln!(
        s,
        "Command: `cargo xtask cross --run --write`. Release \
         profile of `firmware-examples/`: opt-level \"s\", fat LTO, codegen-units 1, \
         panic = \"abort\"; defmt on semihosting, decoded with defmt-print.\n"
    );
    let _ = writeln!(s, "Toolchain route per target:\n");
    for r in &routes {
        let _ = writeln!(s, "- {r}");
    }

    // Builds and runs.
    let _ = writeln!(s, "\n### Builds and QEMU runs\n");
    let _ = writeln!(
        s,
        "| target | CPU | libraries alone | example under QEMU | result |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    let feature_sets = TARGET_LIBRARIES
        .iter()
        .flat_map(|l| l.feature_sets.iter())
        .map(|f| match f {
            [] => "no features".to_string(),
            f => format!("`{}`", f.join(",")),
        })
        .collect::<Vec<_>>()
        .join("; ");
    for o in outcomes {
        let wanted: usize = TARGET_LIBRARIES.iter().map(|l| l.feature_sets.len()).sum();
        let builds = if o.library_builds.len() == wanted {
            feature_sets.clone()
        } else {
            format!("{} of {wanted}", o.library_builds.len())
        };
        let (cmd, result) = match &o.run {
            Some(r) => (format!("`{}`", r.command), r.status.clone()),
            None if run => ("—".into(), "not run (build failed)".into()),
            None => ("—".into(), "not run (no --run)".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {builds} | {cmd} | {result} |",
            o.target.triple, o.target.cpu
        );
    }
    for o in outcomes {
        if let Some(r) = &o.run {
            let _ = writeln!(s, "\n`{}`:\n\n```text", o.target.triple);
            for l in &r.key_lines {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "```");
        }
    }

    // Sizes.
    let _ = writeln!(s, "\n### Size\n");
    let _ = writeln!(
        s,
        "Section sizes of the release images (`size -A` classes: .text = executable, \
         .rodata = read-only data incl. vector tables, .data, .bss without stacks; the defmt \
         string table is not loaded). **Core** = `size_probe` − `size_baseline`: the same \
         runtime, logger and DMA memory with and without every core entry point the example uses \
         (pool, decode, XDR view, the responder — Read chunks into page runs, the reply paths, \
         credits, teardown — reply and RDMA_ERROR encoders) and the example service it runs \
         (ONC RPC parsing and replies, the test program), because with LTO the core is inlined \
         into its callers and has no symbols of its own. **Pool + decoder** = `size_pool` − \
         `size_baseline`: the receive pool, the decoder, the XDR view and the RDMA_ERROR \
         encoder alone, what a firmware with its own RPC layer on the pool links. \
         The core has no statics: its RAM is the pool the caller places (next table). \
         `size -A target/firmware/<route>/<target>/release/size_probe` (and the same for \
         the other images) shows the same sections.\n"
    );
    let _ = writeln!(
        s,
        "| target | example .text | .rodata | .data | .bss | **core .text** | core .rodata | core .data | core .bss | **pool + decoder .text** |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        if let Some(z) = &o.sizes {
            let core = z.probe.minus(&z.baseline);
            let pool = z.pool_probe.minus(&z.baseline)[0];
            let e = z.example;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | **{}** ({}) | {} | {} | {} | **{pool}** ({}) |",
                o.target.triple,
                e.text,
                e.rodata,
                e.data,
                e.bss,
                core[0],
                kib(core[0].max(0) as u64),
                core[1],
                core[2],
                core[3],
                kib(pool.max(0) as u64)
            );
        }
    }
    if let Some(z) = outcomes
        .iter()
        .find(|o| o.target.triple == "thumbv7em-none-eabihf")
        .and_then(|o| o.sizes.as_ref())
    {
        let core = z.probe.minus(&z.baseline)[0];
        let pool = z.pool_probe.minus(&z.baseline)[0];
        let verdict = |n: i64| if n <= 16 * 1024 { "met" } else { "MISSED" };
        let _ = writeln!(
            s,
            "\nGoal: ≤ 16 KiB of code on thumbv7em, set for the receive pool and decoder — \
             **{}**: {pool} bytes ({}) with their defmt trace points compiled in \
             (`DEFMT_LOG={DEFMT_LOG}`). The whole core as the examples run it — the responder \
             (Read chunks, every reply path, credits, teardown) and the example service as well \
             — is {core} bytes ({}): **{}** against the same 16 KiB.",
            verdict(pool),
            kib(pool.max(0) as u64),
            kib(core.max(0) as u64),
            verdict(core)
        );
    }

    // RAM.
    let _ = writeln!(s, "\n### RAM\n");
    let _ = writeln!(
        s,
        "RAM of the receive path = the DMA memory (the column shows `N × buffer_size = the whole \
         static region`: N Receive buffers, each `buffer_size` rounded up to the 64-byte cache \
         line, plus the send slots, Read sinks and payload pages the responder uses) + \
         `size_of::<RecvPool<N>>()` (bookkeeping: `per_descriptor × N + fixed`; per descriptor a \
         16-byte entry: the key — generation, tag, state — and a word that is the free-list link \
         while Free and the packed decoded layout while Held). Measured on each target by the \
         example (its `ram:` line); `server` is the example's state around the pool (the \
         responder's call slots and the service), for comparison.\n"
    );
    let _ = writeln!(
        s,
        "| target | N | buffer_size | DMA memory N × stride | pool bookkeeping | per descriptor | fixed | total | example server state |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    if outcomes.iter().all(|o| o.run.is_none()) {
        let _ = writeln!(
            s,
            "| (run with `--run`: the figures come from the examples) |||||||||"
        );
    }
    for o in outcomes {
        let Some(r) = &o.run else { continue };
        let g = |k: &str| r.ram.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} × {} = {} | {} | {} | {} | {} ({}) | {} |",
            o.target.triple,
            g("N"),
            g("buffer"),
            g("N"),
            g("stride"),
            g("region"),
            g("pool"),
            g("per_descriptor"),
            g("fixed"),
            g("region") + g("pool"),
            kib(g("region") + g("pool")),
            g("server")
        );
    }

    // Panic-freedom.
    let _ = writeln!(s, "\n### Panic-freedom\n");
    let _ = writeln!(
        s,
        "Every release image is linked with a panic handler that calls `{PANIC_SYMBOL}`, which \
         nothing defines: an image links only if no panic path survived optimisation. Inputs \
         reach the core through `black_box`, so the decoder is compiled for arbitrary bytes. \
         `receive_path` covers decode + pool + reply / RDMA_ERROR encoding as the example drives \
         them (and the example's own code); `size_probe` every core entry point it uses, \
         `HeaderRepr::parse` included; `size_pool` the pool and decoder alone. The canary rebuilds `size_baseline` with one deliberate \
         out-of-bounds index and must fail to link — it shows the check is live on that \
         toolchain. Release builds have no overflow checks and no debug assertions (Rust's \
         release defaults), so integer overflow is not a panic path here; debug builds keep \
         them and a reporting panic handler.\n\n\
         The one panic path this check found in the core was removed: `HeaderRepr::parse` \
         collected chunk segments with heapless's `FromIterator`, which panics on overflow \
         (unreachable after decode, which caps every chunk at the capacity, but the path \
         survived optimisation); it now pushes and stops at the capacity \
         (`core/src/wire/repr.rs`, `segment_vec`).\n"
    );
    let _ = writeln!(
        s,
        "| target | receive_path | size_probe | size_pool | size_baseline | canary |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for o in outcomes {
        let cell = |bin: &str| match o.panic_free.iter().find(|(b, _)| b == bin) {
            Some((_, PanicProof::Proved)) => "no panic path".to_string(),
            Some((_, PanicProof::PanicPath(_))) => "**PANIC PATH**".to_string(),
            None => "not built".to_string(),
        };
        let canary = match o.canary {
            Some(true) => "link failed, as it must",
            Some(false) => "**linked: check not live**",
            None => "not run",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {canary} |",
            o.target.triple,
            cell(EXAMPLE),
            cell(PROBE),
            cell(POOL_PROBE),
            cell(BASELINE)
        );
    }
    for o in outcomes {
        for (bin, proof) in &o.panic_free {
            if let PanicProof::PanicPath(chain) = proof {
                let _ = writeln!(s, "\n{} `{bin}`:\n\n```text\n{chain}\n```", o.target.triple);
            }
        }
    }
    let failures: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.failures
                .iter()
                .map(move |f| format!("- {}: {f}", o.target.triple))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\n### Failures\n\n{}", failures.join("\n"));
    }
    s
}
