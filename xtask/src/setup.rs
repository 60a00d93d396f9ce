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

/// The hosted crate's aarch64 Linux build (`cargo xtask setup --aarch64`, then `cargo xtask
/// cross --hosted`): arm64 packages beside the host's, which needs the arm64 dpkg
/// architecture on this machine.
pub const AARCH64_PACKAGES: &[(&str, &str)] = &[
    ("gcc-aarch64-linux-gnu", "aarch64 hosted build (linker)"),
    ("libc6-dev-arm64-cross", "aarch64 hosted build (C library)"),
    ("libibverbs-dev:arm64", "aarch64 hosted build (verbs)"),
    ("librdmacm-dev:arm64", "aarch64 hosted build (rdma_cm)"),
    (
        "libstd-rust-web-dev:arm64",
        "aarch64 hosted build (the aarch64 std of Debian's rustc)",
    ),
    (
        "pkgconf:arm64",
        "aarch64 hosted build (aarch64-linux-gnu-pkg-config)",
    ),
    (
        "qemu-user-static",
        "aarch64 hosted build (runs the binaries without a VM)",
    ),
    // The aarch64 node of the wire tests runs arm64 programs (rdma, perftest) unpacked from
    // Debian's packages against these libraries.
    (
        "ibverbs-providers:arm64",
        "aarch64 VM node (the rxe provider)",
    ),
    ("libmnl0:arm64", "aarch64 VM node (rdma link add)"),
    ("libcap2:arm64", "aarch64 VM node (rdma link add)"),
    ("libibumad3:arm64", "aarch64 VM node (perftest)"),
    ("libpci3:arm64", "aarch64 VM node (perftest)"),
];

/// `cargo xtask setup [--aarch64]`.
pub fn setup(aarch64: bool) -> Result<()> {
    let mut steps = Steps::default();
    steps.step("system packages", packages);
    if aarch64 {
        steps.step("arm64 packages (aarch64 hosted build)", aarch64_packages);
    }
    steps.step("tools", tools);
    steps.step(
        "fetch the crates of every workspace",
        crate::fetch::fetch_all,
    );
    steps.step("the VM's kernel and initramfs", crate::vm::ensure_ready);
    if aarch64 {
        steps.step(
            "the aarch64 VM node's kernel, programs and initramfs",
            || crate::vm::prepare_image_for(crate::vm::Arch::Aarch64).map(|_| ()),
        );
    }
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
    install(PACKAGES)
}

/// Adds the arm64 dpkg architecture when it is missing (said out loud: it changes this
/// machine's package configuration), then installs [`AARCH64_PACKAGES`].
pub fn aarch64_packages() -> Result<()> {
    let sh = util::shell()?;
    let foreign = sh
        .cmd("dpkg")
        .arg("--print-foreign-architectures")
        .quiet()
        .read()
        .unwrap_or_default();
    if !foreign.lines().any(|a| a.trim() == "arm64") {
        eprintln!(
            "setup: adding the arm64 dpkg architecture to this machine \
             (`dpkg --add-architecture arm64`; undo with `dpkg --remove-architecture arm64` \
             after removing the :arm64 packages)"
        );
        as_root(&sh, "dpkg", "dpkg --add-architecture arm64")?
            .args(["--add-architecture", "arm64"])
            .run()?;
    }
    install(AARCH64_PACKAGES)
}

/// `program` run as root: as is when this process is root, else through sudo; an error that
/// says what to run by hand (`what`) when neither is possible.
fn as_root<'a>(sh: &'a xshell::Shell, program: &str, what: &str) -> Result<xshell::Cmd<'a>> {
    let root = sh
        .cmd("id")
        .arg("-u")
        .quiet()
        .read()
        .is_ok_and(|u| u == "0");
    if root {
        return Ok(sh.cmd(program));
    }
    if !util::have("sudo") {
        return Err(format!("not root and no sudo: run as root:\n  {what}").into());
    }
    Ok(sh.cmd("sudo").arg(program))
}

/// Installs the packages of `list` that are missing.
fn install(list: &[(&str, &str)]) -> Result<()> {
    if !util::have("dpkg-query") || !util::have("apt-get") {
        return Err(format!(
            "this machine has no apt-get/dpkg: install these packages (or your distribution's \
             equivalents) by hand:\n  {}",
            list.iter().map(|p| p.0).collect::<Vec<_>>().join(" ")
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
    let missing: Vec<&str> = list.iter().map(|p| p.0).filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("setup: all {} system packages are installed", list.len());
        return Ok(());
    }
    eprintln!("setup: missing packages: {}", missing.join(" "));
    let what = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    let apt = || as_root(&sh, "apt-get", &what);
    let _frontend = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    apt()?.args(["update", "-q"]).run()?;
    apt()?
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
