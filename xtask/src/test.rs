//! `cargo xtask test`: everything CI checks, every step run, all failures reported.
//!
//! Steps: `cargo fmt --check`, `cargo clippy -D warnings` (all targets, with and without the
//! core's `log` feature), `cargo test --workspace`, `cargo xtask cross --run` when its toolchain
//! and QEMU are installed, and a short fuzz run when a nightly toolchain is installed
//! (`--fuzz-seconds N`, default 20; 0 skips it).

use crate::fuzz;
use crate::util::{cargo, flag_value, run, Steps};

pub fn main(args: &[String]) -> Result<(), String> {
    let fuzz_seconds: u64 = match flag_value(args, "--fuzz-seconds") {
        Some(s) => s
            .parse()
            .map_err(|_| format!("--fuzz-seconds takes a number, not `{s}`"))?,
        None => 20,
    };
    // The README promises one command does all the set-up: install what is missing first
    // (idempotent; nothing runs when every package is present). Without root the steps that
    // need the missing tools are skipped with the reason, and the rest still run.
    if let Err(e) = crate::setup::run_setup() {
        eprintln!("xtask test: warning: set-up incomplete: {e}");
    }
    let mut steps = Steps::default();
    steps.step("fmt", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    });
    steps.step("clippy", || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    });
    steps.step("clippy core --features log", || {
        run(cargo().args([
            "clippy",
            "-p",
            "rpcrdma-core",
            "--features",
            "log",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    });
    steps.step("check core --features defmt", || {
        run(cargo().args(["check", "-p", "rpcrdma-core", "--features", "defmt"]))
    });
    steps.step("test", || run(cargo().args(["test", "--workspace"])));
    if crate::rdma::vm_available() {
        steps.step("verbs tests in the Soft-RoCE VM", crate::rdma::vm_tests);
    } else {
        steps.skip(
            "verbs tests in the Soft-RoCE VM",
            "QEMU / busybox-static missing: run `cargo xtask setup`",
        );
    }
    match crate::cross::missing_tools() {
        None => steps.step("cross --run (firmware on 4 targets under QEMU)", || {
            crate::cross::main(&["--run".to_string()])
        }),
        Some(why) => steps.skip("cross --run (firmware on 4 targets under QEMU)", &why),
    }
    if fuzz_seconds == 0 {
        steps.skip("fuzz", "--fuzz-seconds 0");
    } else if fuzz::have_nightly() {
        steps.step("fuzz", || fuzz::fuzz(fuzz_seconds));
    } else {
        steps.skip(
            "fuzz",
            "no nightly toolchain (`rustup toolchain install nightly`)",
        );
    }
    steps.finish()
}
