//! The VM's base initramfs: static busybox, the kernel modules Soft-RoCE, the host share and
//! the wire need (with their dependencies, as `modprobe --show-depends` lists them), the
//! `/init` script and what differs between architectures (`/etc/xtask-arch.conf`). Cached under
//! a key of its contents; each run appends a second, small archive with the command script and,
//! for a node of a pair, its address ([`super::boot`]).

use std::fs;
use std::path::{Path, PathBuf};

use super::kernel::Kernel;
use super::{need_tool, Arch, PrepLock};
use crate::util::{self, Context, Result};

/// Modules loaded in the VM, with their dependencies, in this order. `crc32_generic` first:
/// `rdma_rxe` needs a "crc32" shash and Debian builds the generic one as a module.
const MODULES: &[&str] = &[
    "crc32_generic",
    "virtio_pci",
    "virtio_net",
    "9pnet_virtio",
    "9p",
    "overlay",
    "dummy",
    "rdma_rxe",
    "rdma_ucm",
    "ib_uverbs",
    "ib_umad",
];
/// Modules whose absence is tolerated.
const OPTIONAL_MODULES: &[&str] = &["ib_umad"];
/// Bump when the initramfs layout changes in a way the init script's text does not show.
const INITRAMFS_FORMAT: u32 = 2;

/// The VM's `/init` (busybox sh). Its text is part of the initramfs cache key: edit it and the
/// next run rebuilds the initramfs. The markers it prints are read by [`super::boot`].
const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
warn() { echo "XTASK-VM-WARN: $*"; }
die() { warn "$*"; echo "<2>XTASK-VM-FATAL: $*" > /dev/kmsg; poweroff -f; }
# ARCH, OUT (where the command's output goes), MARK (set: OUT is the console too), RDMA (the
# rdma program in the new root), RUNNER (how the command script is run in the new root)
. /etc/xtask-arch.conf
# A node of a pair: XTASK_NODE, XTASK_NODE_ADDR, XTASK_PEER_ADDR (absent for a lone VM)
[ -e /etc/xtask-run.conf ] && . /etc/xtask-run.conf
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
echo "xtask-vm: init at $(cut -d' ' -f1 /proc/uptime) s"
while read -r ko; do insmod "$ko" || warn "insmod $ko failed"; done < /etc/modules
ip link set lo up
if [ -n "${XTASK_NODE_ADDR:-}" ]; then
  # the wire to the other node: the VM's one network device
  NETDEV=eth0
  n=0; while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
  ip addr add "$XTASK_NODE_ADDR/24" dev eth0 || warn "no eth0 for the wire"
  ip link set eth0 up
else
  NETDEV=dummy0
  [ -e /sys/class/net/dummy0 ] || ip link add dummy0 type dummy || warn "no dummy0"
  ip addr add 10.0.2.15/24 dev dummy0
  ip link set dummy0 up
fi
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host ||
  die "could not mount the host file system (virtio-9p)"
mount -t tmpfs tmpfs /ovl && mkdir -p /ovl/upper /ovl/work &&
  mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/upper,workdir=/ovl/work /newroot ||
  die "could not mount the overlay on the host file system"
for d in proc sys dev dev/pts dev/shm; do mount --bind /$d /newroot/$d; done
mount -t tmpfs tmpfs /newroot/run
if [ "$ARCH" = aarch64 ]; then
  # the host's programs are x86_64: busybox's applets come first in the node's PATH
  mkdir -p /newroot/.xtask/bin && cp /bin/busybox /newroot/.xtask/busybox &&
    chroot /newroot /.xtask/busybox --install -s /.xtask/bin || die "could not install busybox"
fi
chroot /newroot $RDMA link add rxe0 type rxe netdev $NETDEV ||
  warn "rdma link add rxe0 failed (is iproute2 installed on the host?)"
echo "xtask-vm: rxe0 ready on $NETDEV at $(cut -d' ' -f1 /proc/uptime) s"
stty -F $OUT raw -echo
ulimit -l unlimited
cp /cmd.sh /newroot/.xtask-vm-cmd.sh
# where the output shares the console, markers set it apart
[ -n "${MARK:-}" ] && echo "XTASK-VM-OUTPUT-BEGIN" > $OUT
# The command's output goes through a pipe (not a tty, as in CI) to its serial port; the last
# close of the port (by cat) waits until the UART has sent everything.
{ chroot /newroot $RUNNER /.xtask-vm-cmd.sh < /dev/null 2>&1; echo $? > /rc; } | cat > $OUT
[ -n "${MARK:-}" ] && echo "XTASK-VM-OUTPUT-END" > $OUT
echo "xtask-vm: done at $(cut -d' ' -f1 /proc/uptime) s"
# printk writes to the serial console synchronously: the line is out before the power-off
echo "<2>XTASK-VM-EXIT-STATUS=$(cat /rc)" > /dev/kmsg
poweroff -f
"#;

/// What `/init` reads from `/etc/xtask-arch.conf` for `arch` (`userland`: the unpacked arm64
/// programs of an aarch64 node).
fn arch_conf(arch: Arch, userland: Option<&Path>) -> String {
    match (arch, userland) {
        (Arch::Aarch64, Some(tree)) => format!(
            "ARCH=aarch64\nOUT=/dev/ttyAMA0\nMARK=1\nRDMA={}\nRUNNER='/.xtask/busybox sh'\n",
            tree.join("usr/bin/rdma").display()
        ),
        _ => "ARCH=x86_64\nOUT=/dev/ttyS1\nRDMA=rdma\nRUNNER=/bin/bash\n".to_string(),
    }
}

/// FNV-1a, 64 bits: a stable hash for cache keys (std's hasher may change between releases).
fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn initramfs_key(conf: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    h = fnv1a(&INITRAMFS_FORMAT.to_le_bytes(), h);
    h = fnv1a(INIT_SCRIPT.as_bytes(), h);
    h = fnv1a(conf.as_bytes(), h);
    for m in MODULES {
        h = fnv1a(m.as_bytes(), h);
        h = fnv1a(b"\0", h);
    }
    h
}

/// The cached base initramfs for `kernel`, built first if it is not there.
pub fn ensure_initramfs(
    dir: &Path,
    kernel: &Kernel,
    arch: Arch,
    userland: Option<&Path>,
) -> Result<PathBuf> {
    let conf = arch_conf(arch, userland);
    let name = format!("base-{}-{:016x}.cpio.gz", kernel.kver, initramfs_key(&conf));
    let path = dir.join(&name);
    if path.is_file() {
        return Ok(path);
    }
    let _lock = PrepLock::take(dir)?;
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("vm: building the initramfs {}", path.display());
    let busybox = match userland {
        Some(tree) => tree.join("bin/busybox"),
        None => PathBuf::from("/bin/busybox"),
    };
    let bb = fs::read(&busybox).map_err(|_| {
        format!(
            "vm: {} not found — run `cargo xtask setup` (Debian package busybox-static)",
            busybox.display()
        )
    })?;
    if !is_static_elf(&bb) {
        return Err(
            "vm: /bin/busybox is dynamically linked; the initramfs needs the static one \
             — run `cargo xtask setup` (Debian package busybox-static)"
                .into(),
        );
    }

    let mut cpio = Cpio::default();
    for d in [
        "bin", "dev", "etc", "host", "lib", "newroot", "ovl", "proc", "run", "sys", "tmp",
    ] {
        cpio.dir(d);
    }
    cpio.node("dev/console", 0o020_600, (5, 1));
    cpio.file("bin/busybox", 0o755, &bb);
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
    cpio.file("etc/xtask-arch.conf", 0o644, conf.as_bytes());

    let order = module_closure(kernel)?;
    let root = kernel.root.to_string_lossy().into_owned();
    let mut list = String::new();
    let mut dirs: Vec<String> = Vec::new();
    for ko in &order {
        let rel = ko.strip_prefix(&root).unwrap_or(ko).trim_start_matches('/');
        let (rel, data) = read_module(&kernel.root.join(rel), rel)?;
        let parents: Vec<&Path> = Path::new(&rel).ancestors().skip(1).collect();
        for p in parents.into_iter().rev() {
            let p = p.to_string_lossy().into_owned();
            if !p.is_empty() && p != "lib" && !dirs.contains(&p) {
                cpio.dir(&p);
                dirs.push(p);
            }
        }
        cpio.file(&rel, 0o644, &data);
        list.push('/');
        list.push_str(&rel);
        list.push('\n');
    }
    cpio.file("etc/modules", 0o644, list.as_bytes());
    let mut gz = gzip(&cpio.finish())?;
    // The per-run archive is appended to this one: it must start on a 512-byte boundary or the
    // kernel does not find it ("invalid magic at start of compressed archive").
    gz.resize(gz.len().next_multiple_of(512), 0);
    let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
    fs::write(&tmp, &gz).context(format_args!("vm: cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &path).context(format_args!("vm: cannot create {}", path.display()))?;
    // Earlier initramfs versions are of no further use.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let same_kernel = n.starts_with(&format!("base-{}-", kernel.kver));
            if same_kernel && n.ends_with(".cpio.gz") && n != name {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    eprintln!(
        "vm: initramfs: busybox + {} modules, {} KiB",
        order.len(),
        gz.len() / 1024
    );
    Ok(path)
}

/// The module files to load, dependencies first, each once.
fn module_closure(kernel: &Kernel) -> Result<Vec<String>> {
    let modprobe = need_tool("modprobe", "kmod")?;
    let sh = util::shell()?;
    let mut order: Vec<String> = Vec::new();
    for &m in MODULES {
        let out = sh
            .cmd(&modprobe)
            .arg("-d")
            .arg(&kernel.root)
            .args(["-S", &kernel.kver, "--show-depends", m])
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() {
            if OPTIONAL_MODULES.contains(&m) {
                continue;
            }
            return Err(format!(
                "vm: kernel {} has no module {m}: {}",
                kernel.kver,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("insmod") {
                continue; // "builtin NAME"
            }
            let Some(ko) = words.next() else { continue };
            if !order.iter().any(|o| o == ko) {
                order.push(ko.to_string());
            }
        }
    }
    Ok(order)
}

/// A module's bytes and its path in the initramfs; compressed modules are unpacked (busybox's
/// insmod takes plain `.ko` files only).
fn read_module(host: &Path, rel: &str) -> Result<(String, Vec<u8>)> {
    for (ext, tool) in [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")] {
        if let Some(plain) = rel.strip_suffix(ext) {
            let sh = util::shell()?;
            let out = sh
                .cmd(tool)
                .arg("-dc")
                .arg(host)
                .quiet()
                .output()
                .context(format_args!("vm: cannot unpack {}", host.display()))?;
            return Ok((plain.to_string(), out.stdout));
        }
    }
    let data = fs::read(host).context(format_args!("vm: cannot read module {}", host.display()))?;
    Ok((rel.to_string(), data))
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let sh = util::shell()?;
    let out = sh
        .cmd("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(data)
        .quiet()
        .output()
        .context("vm: gzip")?;
    Ok(out.stdout)
}

/// Whether `elf` is an executable without a program interpreter (statically linked).
fn is_static_elf(elf: &[u8]) -> bool {
    use object::{Object, ObjectKind};
    match object::File::parse(elf) {
        Ok(file) => {
            matches!(file.kind(), ObjectKind::Executable | ObjectKind::Dynamic)
                && file.section_by_name(".interp").is_none()
        }
        Err(_) => false,
    }
}

/// A `newc` cpio archive (what the kernel unpacks as an initramfs), built in memory.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("cpio member under 4 GiB"),
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad4();
        self.buf.extend_from_slice(data);
        self.pad4();
    }

    fn pad4(&mut self) {
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, (0, 0), data);
    }

    pub fn node(&mut self, name: &str, mode: u32, rdev: (u32, u32)) {
        self.entry(name, mode, rdev, &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_layout() {
        let mut c = Cpio::default();
        c.file("a", 0o644, b"xyz");
        let bytes = c.finish();
        // header 110 + "a\0" = 112, data 3 + 1 pad, then the trailer
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[112..115], b"xyz");
        assert_eq!(&bytes[116..122], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    /// Whether an ELF image asks for a program interpreter (a `PT_INTERP` program header):
    /// what makes an executable dynamically linked, read from the program headers rather than
    /// the section table `is_static_elf` looks at.
    fn has_pt_interp(elf: &[u8]) -> bool {
        use object::read::elf::{ElfFile64, ProgramHeader};
        let file = ElfFile64::<object::Endianness>::parse(elf).expect("a 64-bit ELF image");
        let endian = file.endian();
        file.elf_program_headers()
            .iter()
            .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP)
    }

    /// Whether Debian's `busybox-static` package is installed (`None`: no dpkg to ask).
    fn busybox_static_installed() -> Option<bool> {
        let out = std::process::Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", "busybox-static"])
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
    }

    #[test]
    fn static_busybox_is_static() {
        // The running test binary is dynamically linked: both checks must say so.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_pt_interp(&me));
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"not an elf"));
        // The busybox the initramfs is built from (`ensure_initramfs` reads this path).
        match busybox_static_installed() {
            Some(true) => {}
            Some(false) => {
                eprintln!("skipped: busybox-static is not installed (`cargo xtask setup`)");
                return;
            }
            None => {
                eprintln!("skipped: no dpkg-query to ask whether busybox-static is installed");
                return;
            }
        }
        let bb = fs::read("/bin/busybox").expect("busybox-static installs /bin/busybox");
        assert!(!has_pt_interp(&bb), "/bin/busybox has a PT_INTERP header");
        assert!(
            is_static_elf(&bb),
            "is_static_elf rejects the static busybox"
        );
    }
}
