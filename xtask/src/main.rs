//! `cargo xtask …`: set-up, tests, fuzzing, the Soft-RoCE VM, cross builds and benchmarks.
//!
//! One binary, one subcommand per task (the cargo-xtask pattern). Cargo is run through the
//! `CARGO` environment variable that `cargo run` sets. Every step that can fail is collected and
//! reported at the end, and the process exits non-zero if any failed.

mod bench;
mod cross;
mod fuzz;
mod rdma;
mod setup;
mod test;
mod util;
mod vm;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <command> [options]

Commands:
  setup              install the system packages the project needs (apt-get; idempotent)
  test               fmt check, clippy -D warnings, every workspace test, a short fuzz run
  fuzz [--seconds N] run the decode fuzz target (nightly toolchain + cargo-fuzz)
  demo               the main job: Soft-RoCE VM, rpcrdma-serve <- rpcrdma-load, verified table
  bench core|vm      core cycle grid / Soft-RoCE rates vs perftest -> BENCHMARKS.md
  cross [--run] [--write] [--target T]
                     core + firmware examples on 4 bare-metal targets (QEMU runs with --run),
                     size and panic-freedom proofs (-> BENCHMARKS.md with --write)
  vm [--check] [--timeout S] [--smp N] [--mem MiB] -- CMD [ARGS...]
                     run CMD in a QEMU VM with Soft-RoCE (rxe0); `vm --help` for more
  help               this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match cmd {
        "setup" => setup::main(rest),
        "test" => test::main(rest),
        "fuzz" => fuzz::main(rest),
        "bench" => bench::main(rest),
        "cross" => cross::main(rest),
        "demo" => rdma::demo(rest),
        "vm" => vm::main(rest),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
