//! `cargo xtask cross --hosted`: the hosted binaries for aarch64 Linux — what runs on a DPU's
//! Arm cores (Debian or Ubuntu arm64 with rdma-core), terminating NFS/RDMA and forwarding to
//! the host's nfsd (`rpcrdma-gateway`), or serving on its own (`rpcrdma-serve`).
//!
//! Built with Debian's compiler (`/usr/bin/rustc`, whose aarch64 std comes from
//! `libstd-rust-web-dev:arm64`; rustup's toolchain here has none), the cross linker
//! `aarch64-linux-gnu-gcc`, and the arm64 verbs libraries found through
//! `aarch64-linux-gnu-pkg-config`; rdma-sys's bindgen generates the aarch64 layouts itself (they
//! differ: `ibv_context` is 336 bytes there, 328 on x86_64). `cargo xtask setup --aarch64`
//! installs all of it. The result is checked to be AArch64 ELF and run with `--help` under
//! `qemu-aarch64-static`, with no VM. Its own target directory, `target/aarch64-hosted/`, keeps
//! Debian's compiler from rebuilding the host's artifacts.

use std::path::{Path, PathBuf};

use crate::util::{self, Result};

/// The one hosted cross target.
pub const TRIPLE: &str = "aarch64-unknown-linux-gnu";
/// The binaries built.
const BINS: &[&str] = &["rpcrdma-serve", "rpcrdma-load", "rpcrdma-gateway"];
/// ELF `e_machine` of AArch64.
const EM_AARCH64: u16 = 183;

/// What is missing for the build, as the command that installs it.
fn check_tools() -> Result<()> {
    let mut missing = Vec::new();
    for tool in [
        "aarch64-linux-gnu-gcc",
        "aarch64-linux-gnu-pkg-config",
        "qemu-aarch64-static",
    ] {
        if !util::have(tool) {
            missing.push(tool.to_string());
        }
    }
    let std_dir = Path::new("/usr/lib/rustlib").join(TRIPLE).join("lib");
    let has_std = std::fs::read_dir(&std_dir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
    });
    if !Path::new("/usr/bin/rustc").exists() || !has_std {
        missing.push(format!(
            "Debian's rustc with the {TRIPLE} std ({})",
            std_dir.display()
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the aarch64 hosted build needs: {}\n  install it with `cargo xtask setup --aarch64` \
         (it adds the arm64 dpkg architecture to this machine)",
        missing.join(", ")
    )
    .into())
}

/// The ELF machine of the file at `path`.
fn elf_machine(path: &Path) -> Result<u16> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match bytes.get(..20) {
        Some(h) if h.starts_with(b"\x7fELF") => Ok(u16::from_le_bytes([h[18], h[19]])),
        _ => Err(format!("{} is not an ELF file", path.display()).into()),
    }
}

/// `cargo xtask cross --hosted [--target aarch64-unknown-linux-gnu]`.
pub fn cross_hosted(targets: &[String]) -> Result<()> {
    if let Some(t) = targets.iter().find(|t| *t != TRIPLE) {
        return Err(format!("--hosted builds for {TRIPLE} only, not `{t}`").into());
    }
    check_tools()?;
    let root = util::root();
    let target_dir = root.join("target/aarch64-hosted");
    let sh = util::shell()?;
    let _dir = sh.push_dir(&root);
    let _rustc = sh.push_env("RUSTC", "/usr/bin/rustc");
    let _linker = sh.push_env(
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
        "aarch64-linux-gnu-gcc",
    );
    let _pkg = sh.push_env(
        "PKG_CONFIG_aarch64_unknown_linux_gnu",
        "aarch64-linux-gnu-pkg-config",
    );
    let _td = sh.push_env("CARGO_TARGET_DIR", &target_dir);
    eprintln!(
        "cross --hosted: building {} for {TRIPLE} with /usr/bin/rustc",
        BINS.join(", ")
    );
    util::cargo(&sh)
        .args([
            "build",
            "--release",
            "--target",
            TRIPLE,
            "-p",
            "rpcrdma-hosted",
        ])
        .args(BINS.iter().flat_map(|b| ["--bin", *b]))
        .run()
        .map_err(|e| format!("the aarch64 hosted build failed: {e}"))?;
    let out: PathBuf = target_dir.join(TRIPLE).join("release");
    for bin in BINS {
        let path = out.join(bin);
        let machine = elf_machine(&path)?;
        if machine != EM_AARCH64 {
            return Err(format!("{} is ELF machine {machine}, not AArch64", path.display()).into());
        }
        let help = sh
            .cmd("qemu-aarch64-static")
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(&path)
            .arg("--help")
            .ignore_stderr()
            .read()
            .map_err(|e| format!("{bin} --help under qemu-aarch64-static failed: {e}"))?;
        if !help.contains("Usage") {
            return Err(format!("{bin} --help printed no usage:\n{help}").into());
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "cross --hosted: {} ({} KiB, AArch64, `--help` runs under qemu-aarch64-static)",
            path.display(),
            size / 1024
        );
    }
    println!("cross --hosted: copy them to the DPU (its rdma-core libraries are the only runtime dependency)");
    Ok(())
}
