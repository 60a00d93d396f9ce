//! Debian's kernel for the VM: found with `apt-cache depends linux-image-amd64` (or
//! `linux-image-arm64:arm64` for an aarch64 node), downloaded with `apt-get download`, unpacked
//! with `dpkg -x` into `target/rxe-vm/kernel/` (`kernel-arm64/`; never into `/boot`), module
//! index rebuilt with `depmod -b`. When an x86_64 kernel has a PVH entry point, the ELF
//! `vmlinux` is unpacked from the `vmlinuz` once: QEMU boots it directly, a few seconds faster
//! under TCG than letting the compressed kernel unpack itself. The arm64 package's `vmlinuz` is
//! an uncompressed `Image`, booted as is.

use std::fs;
use std::path::{Path, PathBuf};

use super::{need_tool, Arch, PrepLock};
use crate::util::{self, Context, Result};

/// The file in the unpacked tree that records which kernel release it holds.
const KVER_STAMP: &str = ".xtask-vm-kver";

/// An unpacked kernel package.
pub struct Kernel {
    pub kver: String,
    /// The root of the unpacked package (`target/rxe-vm/kernel`).
    pub root: PathBuf,
    vmlinuz: PathBuf,
}

impl Kernel {
    fn vmlinux(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinux-{}", self.kver))
    }

    /// What QEMU boots: the unpacked ELF kernel if there is one, else the `vmlinuz`.
    pub fn boot_image(&self) -> PathBuf {
        let vmlinux = self.vmlinux();
        if vmlinux.is_file() {
            vmlinux
        } else {
            self.vmlinuz.clone()
        }
    }

    /// Unpacks the ELF kernel from the xz stream inside the `vmlinuz`, if the kernel has a PVH
    /// entry point (QEMU boots an ELF kernel only through that). Best effort: without it the VM
    /// boots the `vmlinuz`, only slower.
    fn unpack_vmlinux(&self) -> Result<()> {
        let config = self.root.join("boot").join(format!("config-{}", self.kver));
        let config = fs::read_to_string(&config).unwrap_or_default();
        if !config.lines().any(|l| l == "CONFIG_PVH=y") {
            return Err("the kernel has no PVH entry point (CONFIG_PVH)".into());
        }
        let xz = util::find_tool("xz").ok_or("xz not found (Debian package xz-utils)")?;
        let packed = fs::read(&self.vmlinuz)?;
        let start = packed
            .windows(6)
            .position(|w| w == b"\xfd7zXZ\0")
            .ok_or("no xz stream in the vmlinuz")?;
        // xz reads the stream from a file and ignores what follows it (`--single-stream`).
        let stream = self.root.join("boot").join(".vmlinux.xz");
        fs::write(&stream, &packed[start..])?;
        let sh = util::shell()?;
        let out = sh
            .cmd(xz)
            .args(["-dc", "--single-stream"])
            .arg(&stream)
            .quiet()
            .output();
        let _ = fs::remove_file(&stream);
        let elf = out.context("xz could not unpack the vmlinuz")?.stdout;
        if object::FileKind::parse(&elf[..]).is_err() {
            return Err("the unpacked vmlinuz is not an ELF file".into());
        }
        let tmp = self.vmlinux().with_extension("tmp");
        fs::write(&tmp, &elf)?;
        fs::rename(&tmp, self.vmlinux())?;
        Ok(())
    }
}

fn cached_kernel(root: &Path) -> Option<Kernel> {
    let kver = fs::read_to_string(root.join(KVER_STAMP)).ok()?;
    let kver = kver.trim().to_string();
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{kver}"));
    let dep = root.join("lib/modules").join(&kver).join("modules.dep");
    (vmlinuz.is_file() && dep.is_file()).then(|| Kernel {
        kver,
        root: root.to_path_buf(),
        vmlinuz,
    })
}

/// The concrete kernel package in `apt-cache depends <meta>` output (with its `:arch` suffix
/// for a foreign architecture).
fn kernel_package_from_depends(depends: &str, meta: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let dep = line.trim().trim_start_matches('|').trim();
        let name = dep
            .strip_prefix("Depends:")?
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        (name.starts_with("linux-image-") && name != meta).then(|| name.to_string())
    })
}

/// The kernel for `arch` in `dir/kernel` (`dir/kernel-arm64`), downloaded and unpacked first if
/// it is not there.
pub fn ensure_kernel(dir: &Path, arch: Arch) -> Result<Kernel> {
    let root = dir.join(arch.kernel_dir());
    if let Some(k) = cached_kernel(&root) {
        return Ok(k);
    }
    let _lock = PrepLock::take(dir)?;
    if let Some(k) = cached_kernel(&root) {
        return Ok(k);
    }
    let apt_cache = need_tool("apt-cache", "apt")
        .map_err(|_| no_apt("there is no apt-cache on this machine"))?;
    let apt_get = need_tool("apt-get", "apt").map_err(|_| no_apt("there is no apt-get"))?;
    let dpkg = need_tool("dpkg", "dpkg").map_err(|_| no_apt("there is no dpkg"))?;
    let depmod = need_tool("depmod", "kmod")?;
    let sh = util::shell()?;
    sh.change_dir(dir);

    let meta = arch.kernel_meta();
    let depends = sh
        .cmd(&apt_cache)
        .args(["depends", meta])
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    let pkg = kernel_package_from_depends(&depends, meta).ok_or_else(|| match arch {
        Arch::X86_64 => no_apt(&format!(
            "apt-cache knows no package {meta} (Debian's kernel metapackage)"
        )),
        Arch::Aarch64 => format!(
            "vm: apt-cache knows no package {meta}: the aarch64 node needs the arm64 dpkg \
             architecture — run `cargo xtask setup --aarch64`"
        )
        .into(),
    })?;
    let kver = pkg["linux-image-".len()..]
        .trim_end_matches(":arm64")
        .to_string();
    let file_prefix = pkg.trim_end_matches(":arm64");
    eprintln!(
        "vm: preparing kernel {kver} (package {pkg}) in {}",
        dir.display()
    );

    let deb = match find_deb(dir, file_prefix) {
        Some(deb) => deb,
        None => {
            sh.cmd(&apt_get)
                .args(["download", "-q", &pkg])
                .run()
                .context(format_args!(
                    "vm: could not download the kernel package {pkg}; check your apt sources \
                     (Debian 12 bookworm main and bookworm-security) and network, run \
                     `apt-get update`, then `cargo xtask setup`"
                ))?;
            find_deb(dir, file_prefix).ok_or_else(|| {
                format!(
                    "vm: `apt-get download {pkg}` left no {pkg}_*.deb in {}",
                    dir.display()
                )
            })?
        }
    };
    if root.exists() {
        fs::remove_dir_all(&root)
            .context(format_args!("vm: cannot remove the old {}", root.display()))?;
    }
    fs::create_dir_all(&root).context(format_args!("vm: cannot create {}", root.display()))?;
    sh.cmd(&dpkg)
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .run()
        .context(format_args!("vm: could not unpack {}", deb.display()))?;
    // Packages built for merged /usr put the modules in usr/lib/modules; modprobe -d wants lib/.
    if !root.join("lib/modules").exists() && root.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).context(format_args!(
            "vm: cannot link lib -> usr/lib in {}",
            root.display()
        ))?;
    }
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{kver}"));
    if !vmlinuz.is_file() || !root.join("lib/modules").join(&kver).is_dir() {
        return Err(format!(
            "vm: {} does not hold boot/vmlinuz-{kver} and lib/modules/{kver}/ as expected",
            deb.display()
        )
        .into());
    }
    sh.cmd(&depmod)
        .arg("-b")
        .arg(&root)
        .arg(&kver)
        .run()
        .context("vm: depmod failed — run `cargo xtask setup` (kmod)")?;
    let kernel = Kernel {
        kver,
        root,
        vmlinuz,
    };
    if arch == Arch::X86_64 {
        if let Err(e) = kernel.unpack_vmlinux() {
            eprintln!("vm: note: booting the compressed kernel (3-4 s slower): {e}");
        }
    }
    fs::write(kernel.root.join(KVER_STAMP), &kernel.kver).context(format_args!(
        "vm: cannot write in {}",
        kernel.root.display()
    ))?;
    Ok(kernel)
}

fn no_apt(what: &str) -> util::Error {
    format!(
        "vm: cannot get Debian's kernel: {what}. The VM boots Debian's linux-image-amd64 \
         (it has Soft-RoCE); on Debian/Ubuntu-like systems check your apt sources (Debian 12 \
         bookworm main), run `apt-get update` and `cargo xtask setup`"
    )
    .into()
}

/// The `PKG_*.deb` file `apt-get download PKG` left in `dir`.
pub(super) fn find_deb(dir: &Path, pkg: &str) -> Option<PathBuf> {
    let prefix = format!("{pkg}_");
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_package() {
        let deps = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            kernel_package_from_depends(deps, "linux-image-amd64").as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            kernel_package_from_depends("linux-image-amd64\n", "linux-image-amd64"),
            None
        );
        let deps = "linux-image-arm64:arm64\n  Depends: linux-image-6.1.0-57-arm64:arm64\n";
        assert_eq!(
            kernel_package_from_depends(deps, "linux-image-arm64:arm64").as_deref(),
            Some("linux-image-6.1.0-57-arm64:arm64")
        );
    }
}
