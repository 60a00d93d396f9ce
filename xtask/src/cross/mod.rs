//! `cargo xtask cross [--run] [--write] [--target TRIPLE]...`: the core and the firmware
//! examples on four bare-metal targets ([`crate::matrix::TARGETS`]).
//!
//! For every target:
//! 1. builds each library of [`crate::matrix::TARGET_LIBRARIES`] alone for the target with each
//!    of its feature sets (through a package of `firmware-examples/`, so the examples' `defmt`
//!    does not leak in);
//! 2. checks that the panic-freedom proof is not vacuous: the size baseline rebuilt with one
//!    deliberate out-of-bounds index (`--cfg rpcrdma_panic_canary`) must fail to link;
//! 3. builds the firmware project (`firmware-examples/<dir>`, from its own directory so its
//!    `.cargo/config.toml` applies) in release: the example and the three size programs. Release
//!    builds link only if no panic path survived (the panic handler calls an undefined symbol);
//!    when one did, a second link with `--why-live` names the chain of callers;
//! 4. reads the section sizes of the images: the example's, the core's share
//!    (`size_probe − size_baseline`) and the pool's (`size_pool − size_baseline`);
//! 5. with `--run`, runs the example under QEMU (the runner of the project's
//!    `.cargo/config.toml`), decodes its defmt output with `defmt-print`, and checks the exit
//!    status, the `PASS` line and that nothing failed; the RAM figures come from its `ram:` line.
//!
//! `--write` (with `--run`) puts the figures into BENCHMARKS.md between `<!-- cross:start -->`
//! and `<!-- cross:end -->`. By idea: [`toolchain`] (which cargo, rustc and linker),
//! [`build`] (steps 1-4), [`run`] (step 5), [`report`] (the tables).
//!
//! Everything is cached under `target/firmware/<route>/` (and `defmt-print`, when it is not on
//! PATH, under `target/firmware/tools/`, installed by `cargo xtask setup`); a warm run only
//! relinks.

mod build;
pub mod hosted;
mod report;
mod run;
mod toolchain;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use run::ensure_defmt_print;
pub use toolchain::Route;

use crate::flags;
use crate::matrix::{Target, TARGETS};
use crate::util::{self, Result};

/// The example program of each project.
const EXAMPLE: &str = "receive_path";
/// The image with every core entry point the example uses.
const PROBE: &str = "size_probe";
/// The image with the receive pool and decoder alone.
const POOL_PROBE: &str = "size_pool";
/// The same runtime without the core.
const BASELINE: &str = "size_baseline";
/// The symbol the release panic handler references and nothing defines.
const PANIC_SYMBOL: &str = "rpcrdma_firmware_release_build_has_a_panic_path";
/// The defmt log level compiled into every build (one value, so builds never thrash on it).
const DEFMT_LOG: &str = "debug";
/// A QEMU run that takes longer has hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What one target produced.
struct Outcome {
    target: &'static Target,
    route: Option<Route>,
    failures: Vec<String>,
    /// The library builds that passed (report labels).
    library_builds: Vec<String>,
    sizes: Option<build::Sizes>,
    panic_free: Vec<(String, build::PanicProof)>,
    /// Whether the deliberate panic path failed the link, as it must.
    canary: Option<bool>,
    run: Option<run::RunReport>,
}

/// `cargo xtask cross …`
pub fn cross(f: &flags::Cross) -> Result<()> {
    if f.hosted {
        if f.run || f.write {
            return Err(
                "--run and --write are for the firmware; --hosted runs its own check".into(),
            );
        }
        return hosted::cross_hosted(&f.target);
    }
    for t in &f.target {
        if !TARGETS.iter().any(|x| x.triple == t) {
            let known: Vec<&str> = TARGETS.iter().map(|t| t.triple).collect();
            return Err(format!("unknown target `{t}`; known: {}", known.join(", ")).into());
        }
    }
    if f.write && !f.run {
        return Err(
            "--write needs --run (the RAM figures and QEMU results come from the runs)".into(),
        );
    }
    let targets: Vec<&'static Target> = TARGETS
        .iter()
        .filter(|t| f.target.is_empty() || f.target.iter().any(|x| x == t.triple))
        .collect();
    cross_targets(&targets, f.run, f.write)
}

fn cross_targets(targets: &[&'static Target], run: bool, write: bool) -> Result<()> {
    let started = Instant::now();
    let defmt_print = if run {
        Some(
            ensure_defmt_print()
                .map_err(|e| format!("cannot decode the firmware's defmt output: {e}"))?,
        )
    } else {
        None
    };
    let mut outcomes = Vec::new();
    for &t in targets {
        eprintln!("\n==> cross: {} ({})", t.triple, t.dir);
        let mut o = Outcome {
            target: t,
            route: None,
            failures: Vec::new(),
            library_builds: Vec::new(),
            sizes: None,
            panic_free: Vec::new(),
            canary: None,
            run: None,
        };
        match Route::choose(t.triple) {
            Ok(route) => {
                eprintln!("toolchain route: {} — {}", route.name(), route.describe());
                build::build_target(t, &route, &mut o);
                if let (Some(dp), true) = (&defmt_print, o.failures.is_empty()) {
                    match run::run_example(t, &route, dp) {
                        Ok(r) => {
                            if !r.passed {
                                o.failures.push(format!("QEMU run: {}", r.status));
                            }
                            o.run = Some(r);
                        }
                        Err(e) => o.failures.push(format!("QEMU run: {e}")),
                    }
                }
                o.route = Some(route);
            }
            Err(e) => o.failures.push(e.to_string()),
        }
        outcomes.push(o);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report = report::report(&outcomes, run);
    println!("{report}");
    let failed: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.failures
                .iter()
                .map(move |f| format!("{}: {f}", o.target.triple))
        })
        .collect();
    if write {
        if failed.is_empty() && outcomes.len() == TARGETS.len() {
            let path = util::root().join("BENCHMARKS.md");
            util::write_section(&path, "cross", &report)?;
            eprintln!("cross: wrote the `cross` section of {}", path.display());
        } else {
            eprintln!("cross: BENCHMARKS.md not written (a target failed or was left out)");
        }
    }
    if failed.is_empty() {
        eprintln!(
            "cross: all {} target(s) passed in {elapsed:.0} s",
            outcomes.len()
        );
        Ok(())
    } else {
        Err(format!(
            "cross: {} failure(s):\n  {}",
            failed.len(),
            failed.join("\n  ")
        )
        .into())
    }
}

/// Why `cargo xtask cross --run` cannot run here, or `None` when every tool is installed.
pub fn missing_tools() -> Option<String> {
    let mut missing = Vec::new();
    for t in TARGETS {
        if let Err(e) = Route::choose(t.triple) {
            missing.push(e.to_string());
            break;
        }
        match run::runner(t) {
            Ok(cmd) if util::have(&cmd[0]) => {}
            Ok(cmd) => missing.push(format!("{} (cargo xtask setup)", cmd[0])),
            Err(e) => missing.push(e.to_string()),
        }
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

fn firmware_cache() -> PathBuf {
    util::root().join("target/firmware")
}

fn firmware_root() -> PathBuf {
    util::root().join("firmware-examples")
}
