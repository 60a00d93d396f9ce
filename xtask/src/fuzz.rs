//! `cargo xtask fuzz [--seconds N] [--target NAME]`: runs the cargo-fuzz targets in `fuzz/`.
//!
//! Needs a nightly toolchain (libFuzzer's instrumentation is nightly-only); uses rustup's
//! `nightly` when installed and says how to get one when not. Installs `cargo-fuzz` into
//! `~/.cargo/bin` on first use.

use std::process::Command;

use crate::util::{self, flag_value, run};

/// The fuzz targets (files in `fuzz/fuzz_targets/`).
pub const TARGETS: &[&str] = &["decode"];

/// Whether a nightly toolchain is available through rustup.
pub fn have_nightly() -> bool {
    util::output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])).is_some()
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    let ok = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz (first use)");
    run(Command::new("cargo").args(["+nightly", "install", "cargo-fuzz", "--locked"]))
}

/// Runs every target for `seconds` each; returns the executions reported.
pub fn fuzz(seconds: u64) -> Result<(), String> {
    if !have_nightly() {
        return Err(
            "no nightly toolchain: install one with `rustup toolchain install nightly` \
                    (cargo-fuzz needs nightly for libFuzzer's sanitizer flags)"
                .into(),
        );
    }
    ensure_cargo_fuzz()?;
    let dir = util::root().join("fuzz");
    for target in TARGETS {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .map_err(|e| format!("create {}: {e}", corpus.display()))?;
        let mut cmd = Command::new("cargo");
        // The rustup proxy picks the toolchain; clear CARGO/RUSTC set by the outer stable cargo.
        cmd.env_remove("RUSTC")
            .env_remove("RUSTDOC")
            .env_remove("CARGO")
            .env_remove("RUSTUP_TOOLCHAIN")
            .current_dir(&dir)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .arg(dir.join("seeds"))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-print_final_stats=1",
            ]);
        run(&mut cmd)?;
    }
    Ok(())
}

pub fn main(args: &[String]) -> Result<(), String> {
    let seconds = match flag_value(args, "--seconds") {
        Some(s) => s
            .parse()
            .map_err(|_| format!("--seconds takes a number, not `{s}`"))?,
        None => 60,
    };
    fuzz(seconds)
}
