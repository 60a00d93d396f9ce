//! `cargo xtask fuzz [--seconds N]`: runs the cargo-fuzz targets in `fuzz/`
//! ([`crate::matrix::FUZZ_TARGETS`]).
//!
//! Needs a nightly toolchain (libFuzzer's instrumentation is nightly-only); uses rustup's
//! `nightly` when installed and says how to get one when not. `cargo xtask setup` installs
//! `cargo-fuzz` (into `~/.cargo/bin`); this command does too on first use.

use xshell::{Cmd, Shell};

use crate::matrix::FUZZ_TARGETS;
use crate::util::{self, Context, Result};

/// `cargo +nightly` through the rustup proxy, with the outer stable cargo's settings cleared.
pub fn nightly_cargo(sh: &Shell) -> Cmd<'_> {
    sh.cmd("cargo")
        .arg("+nightly")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
}

/// Whether a nightly toolchain is available through rustup.
pub fn have_nightly() -> bool {
    util::shell().is_ok_and(|sh| {
        sh.cmd("rustup")
            .args(["run", "nightly", "rustc", "--version"])
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
    })
}

/// Installs cargo-fuzz unless it is there.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let sh = util::shell()?;
    let present = nightly_cargo(&sh)
        .args(["fuzz", "--version"])
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if !present {
        eprintln!("fuzz: installing cargo-fuzz (first use)");
        nightly_cargo(&sh)
            .args(["install", "cargo-fuzz", "--locked"])
            .run()?;
    }
    Ok(())
}

/// Runs every target for `seconds` each.
pub fn fuzz(seconds: u64) -> Result<()> {
    fuzz_targets(None, seconds)
}

/// Runs `only` (or every target) for `seconds` each; libFuzzer prints its final statistics
/// (executions, rate, peak memory) at the end of each.
pub fn fuzz_targets(only: Option<&str>, seconds: u64) -> Result<()> {
    let targets: Vec<&str> = match only {
        None => FUZZ_TARGETS.to_vec(),
        Some(t) if FUZZ_TARGETS.contains(&t) => vec![t],
        Some(t) => {
            return Err(format!(
                "no fuzz target `{t}`: the targets are {}",
                FUZZ_TARGETS.join(", ")
            )
            .into())
        }
    };
    if !have_nightly() {
        return Err(
            "no nightly toolchain: install one with `rustup toolchain install nightly` \
                    (cargo-fuzz needs nightly for libFuzzer's sanitizer flags)"
                .into(),
        );
    }
    ensure_cargo_fuzz()?;
    let dir = util::root().join("fuzz");
    let sh = util::shell()?;
    sh.change_dir(&dir);
    for target in targets {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).context(format_args!("create {}", corpus.display()))?;
        let seeds = dir.join("seeds");
        let max_time = format!("-max_total_time={seconds}");
        nightly_cargo(&sh)
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .args(["--", &max_time, "-print_final_stats=1"])
            .run()?;
    }
    Ok(())
}
