//! The userland of an aarch64 node. The VM shares the host's root file system, whose programs
//! are x86_64; what an arm64 node runs comes from two places:
//! - the arm64 shared libraries installed beside the host's (`/usr/lib/aarch64-linux-gnu`,
//!   Multi-Arch packages that `cargo xtask setup --aarch64` installs: libc, the verbs and
//!   rdma_cm libraries with the rxe provider, and what `rdma` and perftest link against);
//! - the programs, unpacked (`apt-get download` + `dpkg -x`, nothing installed) from Debian's
//!   arm64 packages into `target/rxe-vm/arm64-root/`: static busybox (the shell and the small
//!   tools), iproute2 (`rdma link add`, `ip`) and perftest.
//!
//! Inside the node, commands run in the host's root with `/.xtask/bin` (busybox's applets) and
//! this tree's `bin` directories first in `PATH`; the arm64 programs find their libraries
//! through the arm64 dynamic loader (`/lib/ld-linux-aarch64.so.1`, from `libc6:arm64`).

use std::fs;
use std::path::{Path, PathBuf};

use super::{need_tool, PrepLock};
use crate::util::{self, Context, Result};

/// The packages unpacked into the tree.
const PACKAGES: &[&str] = &["busybox-static", "iproute2", "perftest"];
/// Files that must be there once the tree is made (relative to its root).
const EXPECTED: &[&str] = &["bin/busybox", "usr/bin/rdma", "usr/bin/ib_send_bw"];
/// Libraries of the host's arm64 multiarch directory the node's programs need.
const HOST_LIBS: &[(&str, &str)] = &[
    ("/lib/ld-linux-aarch64.so.1", "libc6:arm64"),
    (
        "/usr/lib/aarch64-linux-gnu/libibverbs/librxe-rdmav34.so",
        "ibverbs-providers:arm64",
    ),
    (
        "/usr/lib/aarch64-linux-gnu/librdmacm.so.1",
        "librdmacm1:arm64",
    ),
    ("/usr/lib/aarch64-linux-gnu/libmnl.so.0", "libmnl0:arm64"),
    ("/usr/lib/aarch64-linux-gnu/libcap.so.2", "libcap2:arm64"),
    (
        "/usr/lib/aarch64-linux-gnu/libibumad.so.3",
        "libibumad3:arm64",
    ),
    ("/usr/lib/aarch64-linux-gnu/libpci.so.3", "libpci3:arm64"),
];
const STAMP: &str = ".xtask-arm64-root";

/// The unpacked arm64 tree (`dir/arm64-root`), made first if it is not there.
pub fn ensure_userland(dir: &Path) -> Result<PathBuf> {
    need_tool("qemu-system-aarch64", "qemu-system-arm")?;
    let missing: Vec<&str> = HOST_LIBS
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "vm: an aarch64 node needs the arm64 libraries of {} — run `cargo xtask setup \
             --aarch64` (it adds the arm64 dpkg architecture to this machine)",
            missing.join(", ")
        )
        .into());
    }
    let root = dir.join("arm64-root");
    let complete =
        |root: &Path| root.join(STAMP).is_file() && EXPECTED.iter().all(|f| root.join(f).is_file());
    if complete(&root) {
        return Ok(root);
    }
    let _lock = PrepLock::take(dir)?;
    if complete(&root) {
        return Ok(root);
    }
    let debs = dir.join("arm64-debs");
    fs::create_dir_all(&debs).context(format_args!("vm: cannot create {}", debs.display()))?;
    let sh = util::shell()?;
    sh.change_dir(&debs);
    let names: Vec<String> = PACKAGES.iter().map(|p| format!("{p}:arm64")).collect();
    eprintln!(
        "vm: unpacking the aarch64 node's programs ({}) into {}",
        PACKAGES.join(", "),
        root.display()
    );
    sh.cmd("apt-get")
        .args(["download", "-q"])
        .args(&names)
        .run()
        .context(
            "vm: could not download the arm64 packages; run `cargo xtask setup --aarch64` \
             (the arm64 dpkg architecture and its package lists) and check the network",
        )?;
    if root.exists() {
        fs::remove_dir_all(&root)
            .context(format_args!("vm: cannot remove the old {}", root.display()))?;
    }
    fs::create_dir_all(&root).context(format_args!("vm: cannot create {}", root.display()))?;
    for pkg in PACKAGES {
        let deb = super::kernel::find_deb(&debs, pkg)
            .ok_or_else(|| format!("vm: apt-get download left no {pkg} arm64 package"))?;
        sh.cmd("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .run()
            .context(format_args!("vm: could not unpack {}", deb.display()))?;
    }
    if let Some(f) = EXPECTED.iter().find(|f| !root.join(f).is_file()) {
        return Err(format!("vm: the arm64 packages gave no {f}").into());
    }
    fs::write(root.join(STAMP), "")?;
    Ok(root)
}
