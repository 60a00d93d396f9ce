//! `cargo xtask …`: set-up, tests, fuzzing, the Soft-RoCE VM, cross builds and benchmarks.
//!
//! One binary, one subcommand per task (the cargo-xtask pattern); arguments are parsed by
//! `xflags` ([`flags`]) and commands run through `xshell`. Cargo is run through the `CARGO`
//! environment variable that `cargo run` sets. What gets built — workspaces, host checks,
//! targets × feature sets — is data in [`matrix`]. Every step that can fail is collected and
//! reported at the end, and the process exits non-zero if any failed.

mod bench;
mod cross;
mod examples;
mod fetch;
mod flags;
mod fuzz;
mod interop;
mod matrix;
mod rdma;
mod setup;
mod test;
mod util;
mod vm;
mod wire;

use std::process::ExitCode;

use flags::XtaskCmd;

fn main() -> ExitCode {
    if std::env::args_os().len() <= 1 {
        print!("{}", flags::help());
        return ExitCode::SUCCESS;
    }
    let flags = flags::Xtask::from_env().unwrap_or_else(|e| e.exit());
    let result = match flags.subcommand {
        XtaskCmd::Help(_) => {
            print!("{}", flags::help());
            Ok(())
        }
        XtaskCmd::Setup(f) => setup::setup(f.aarch64),
        XtaskCmd::Test(f) => test::test(&f),
        XtaskCmd::Demo(_) => rdma::demo(),
        XtaskCmd::Interop(_) => interop::interop(),
        XtaskCmd::Wire(f) => match f.arch_b.as_deref().map(vm::Arch::parse) {
            None => wire::wire(vm::Arch::Aarch64),
            Some(Ok(arch)) => wire::wire(arch),
            Some(Err(e)) => Err(e),
        },
        XtaskCmd::Bench(f) => match (f.which.as_str(), f.rival.as_deref()) {
            ("core", None) if f.threads.is_some() => {
                bench::loops(f.threads.as_deref().unwrap_or("1,2"))
            }
            ("vm", Some("kernel")) => interop::bench_rival(),
            (_, Some(other)) => Err(format!(
                "unknown rival `{other}`: `cargo xtask bench vm --rival kernel`"
            )
            .into()),
            (which, None) => bench::bench(which),
        },
        XtaskCmd::Cross(f) => cross::cross(&f),
        XtaskCmd::Fuzz(f) => fuzz::fuzz_targets(f.target.as_deref(), f.seconds.unwrap_or(60)),
        XtaskCmd::Vm(f) => vm::main(f),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
