//! `cargo xtask setup`: everything a fresh machine needs, idempotently — the Debian packages,
//! the crates of every workspace ([`crate::fetch`]), the tools installed with cargo
//! (defmt-print; cargo-fuzz with a nightly toolchain) and the VM's kernel. After it, nothing
//! needs the network.
//!
//! The package list is data, grouped by what needs it. Packages already installed are skipped;
//! when nothing is missing no command is run. The Linux kernel the Soft-RoCE VM boots is *not*
//! installed: it is downloaded and extracted into `target/rxe-vm/`.

use crate::util::{self, Result, Steps};

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
    // NFS interop in the VM: the kernel's nfsd behind the gateway, its client in front. (On a
    // host running systemd, installing these also starts rpcbind and an nfsd that exports
    // nothing until /etc/exports says so.)
    (
        "nfs-kernel-server",
        "NFS interop in the VM (rpc.nfsd, rpc.mountd, exportfs)",
    ),
    ("nfs-common", "NFS interop in the VM (mount.nfs)"),
    ("rpcbind", "NFS interop in the VM"),
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

/// `cargo xtask setup`.
pub fn setup() -> Result<()> {
    let mut steps = Steps::default();
    steps.step("system packages", packages);
    steps.step("tools", tools);
    steps.step(
        "fetch the crates of every workspace",
        crate::fetch::fetch_all,
    );
    steps.step("the VM's kernel and initramfs", crate::vm::ensure_ready);
    steps.finish()
}

/// Tools installed with cargo: defmt-print (firmware logs); cargo-fuzz with a nightly toolchain.
pub fn tools() -> Result<()> {
    crate::cross::ensure_defmt_print()?;
    if crate::fuzz::have_nightly() {
        crate::fuzz::ensure_cargo_fuzz()?;
    } else {
        eprintln!(
            "setup: note: no nightly toolchain; `cargo xtask fuzz` needs one \
             (`rustup toolchain install nightly`). Everything else works on stable."
        );
    }
    Ok(())
}

/// Installs the Debian packages that are missing.
pub fn packages() -> Result<()> {
    if !util::have("dpkg-query") || !util::have("apt-get") {
        return Err(format!(
            "this machine has no apt-get/dpkg: install these packages (or your distribution's \
             equivalents) by hand:\n  {}",
            PACKAGES.iter().map(|p| p.0).collect::<Vec<_>>().join(" ")
        )
        .into());
    }
    let sh = util::shell()?;
    let installed = |pkg: &str| {
        sh.cmd("dpkg-query")
            .args(["-W", "-f=${Status}", pkg])
            .quiet()
            .ignore_stderr()
            .read()
            .is_ok_and(|s| s.ends_with("install ok installed"))
    };
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
        return Ok(());
    }
    eprintln!("setup: missing packages: {}", missing.join(" "));
    let root = sh
        .cmd("id")
        .arg("-u")
        .quiet()
        .read()
        .is_ok_and(|u| u == "0");
    let apt = || {
        if root {
            sh.cmd("apt-get")
        } else {
            sh.cmd("sudo").arg("apt-get")
        }
    };
    if !root && !util::have("sudo") {
        return Err(format!(
            "not root and no sudo: run as root:\n  apt-get update && apt-get install -y \
             --no-install-recommends {}",
            missing.join(" ")
        )
        .into());
    }
    let _frontend = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    apt().args(["update", "-q"]).run()?;
    apt()
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .run()
        .map_err(|e| {
            format!(
                "{e}\n  a package may be missing from your apt sources (Debian 12 bookworm \
                 has all of them in main, with bookworm-updates and bookworm-security)"
            )
        })?;
    Ok(())
}
