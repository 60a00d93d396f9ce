//! `cargo xtask setup`: installs the Debian/Ubuntu packages the project needs, idempotently.
//!
//! The package list is data, grouped by what needs it. Packages already installed are skipped;
//! when nothing is missing no command is run. The Linux kernel the Soft-RoCE VM boots is *not*
//! installed here: `cargo xtask vm` downloads and extracts it into `target/`.

use std::process::Command;

use crate::util::{self, run};

/// (package, what needs it)
pub const PACKAGES: &[(&str, &str)] = &[
    // Building the hosted crate (rdma-sys runs bindgen over the verbs headers).
    ("pkg-config", "hosted build"),
    ("libclang-dev", "hosted build (bindgen)"),
    ("libibverbs-dev", "hosted build"),
    ("librdmacm-dev", "hosted build"),
    // The Soft-RoCE VM.
    ("qemu-system-x86", "Soft-RoCE VM"),
    ("busybox-static", "Soft-RoCE VM initramfs"),
    ("kmod", "Soft-RoCE VM initramfs (modprobe, depmod)"),
    ("cpio", "Soft-RoCE VM initramfs"),
    ("iproute2", "Soft-RoCE VM (rdma link add)"),
    ("rdma-core", "Soft-RoCE VM"),
    ("ibverbs-providers", "Soft-RoCE VM (rxe provider)"),
    ("ibverbs-utils", "Soft-RoCE VM (ibv_devinfo)"),
    ("perftest", "Soft-RoCE benchmarks (ib_send_bw, ib_send_lat)"),
    // Cross builds and firmware runs.
    ("rustc-web", "cross builds (-Zbuild-std=core)"),
    ("cargo-web", "cross builds"),
    ("rust-web-src", "cross builds (core sources)"),
    ("lld-22", "cross builds (linker)"),
    ("qemu-system-arm", "firmware runs (Cortex-M4, Cortex-A53)"),
    ("qemu-system-misc", "firmware runs (RISC-V)"),
    // Benchmarks.
    ("valgrind", "instruction counts (callgrind)"),
];

fn installed(pkg: &str) -> bool {
    util::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.ends_with("install ok installed"))
}

pub fn run_setup() -> Result<(), String> {
    if !util::have("dpkg-query") || !util::have("apt-get") {
        return Err(format!(
            "this machine has no apt-get/dpkg: install these packages (or your distribution's \
             equivalents) by hand:\n  {}",
            PACKAGES.iter().map(|p| p.0).collect::<Vec<_>>().join(" ")
        ));
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|p| p.0)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "setup: all {} system packages are installed",
            PACKAGES.len()
        );
    } else {
        eprintln!("setup: missing packages: {}", missing.join(" "));
        let root = util::output(Command::new("id").arg("-u")).as_deref() == Some("0");
        let sudo = !root && util::have("sudo");
        if !root && !sudo {
            return Err(format!(
                "not root and no sudo: run as root:\n  apt-get update && apt-get install -y \
                 --no-install-recommends {}",
                missing.join(" ")
            ));
        }
        let apt = |args: &[&str]| {
            let mut cmd = if sudo {
                Command::new("sudo")
            } else {
                Command::new("apt-get")
            };
            if sudo {
                cmd.arg("apt-get");
            }
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            cmd
        };
        run(&mut apt(&["update", "-q"]))?;
        let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
        install.args(&missing);
        run(&mut install).map_err(|e| {
            format!(
                "{e}\n  a package may be missing from your apt sources (Debian 12 bookworm \
                     has all of them in main, with bookworm-updates)"
            )
        })?;
    }
    if util::output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])).is_none()
    {
        eprintln!(
            "setup: note: no nightly toolchain; `cargo xtask fuzz` needs one \
             (`rustup toolchain install nightly`). Everything else works on stable."
        );
    }
    Ok(())
}

pub fn main(_args: &[String]) -> Result<(), String> {
    run_setup()
}
