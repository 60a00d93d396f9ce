//! `cargo xtask vm`: runs a command inside a QEMU virtual machine that has a Soft-RoCE device.
//!
//! The build machines have no RDMA NIC and their kernel has no RDMA support, so the VM boots
//! Debian's own kernel (package `linux-image-amd64`), which has `rdma_rxe`
//! (`docs/design.md#the-vm-harness`). By idea:
//! - [`kernel`]: download (`apt-get download`) and unpack (`dpkg -x`) the kernel package into
//!   `target/rxe-vm/kernel/` — nothing is installed into `/boot`;
//! - [`initramfs`]: static busybox, the kernel modules, the `/init` script, as a cached cpio;
//! - [`script`]: the per-run command script (environment, directory, command);
//! - [`boot`]: QEMU's command line, the run, the exit status from the console;
//! - [`check`]: `vm --check`, Soft-RoCE end to end with perftest;
//! - [`arm64`]: the userland an aarch64 node needs beside the host's (static busybox, `rdma`,
//!   perftest), unpacked from Debian's arm64 packages;
//! - [`pair`]: two nodes, each its own kernel, joined by a wire (`vm --nodes 2`).
//!
//! Inside the VM: the host's root file system is shared read-only over virtio-9p with a tmpfs
//! overlay on top (the command can write anywhere; the writes are thrown away); `dummy0` has
//! 10.0.2.15/24 and Soft-RoCE device `rxe0` runs on it; the VM has no network device to the
//! outside (`-nic none`), so no packet of any test leaves it. The command runs in the caller's
//! directory with the caller's environment and `ulimit -l unlimited`; its stdout and stderr
//! come out on the host's stdout (second serial port) and its exit status comes back through
//! the kernel console.
//!
//! As a cargo runner (every test binary of `cargo test` runs inside the VM):
//!   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="/abs/path/target/debug/xtask vm --" cargo test
//! (cargo splits the value on spaces and appends the test binary and its arguments).

mod arm64;
mod boot;
mod check;
mod initramfs;
mod kernel;
pub mod pair;
mod script;

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::flags;
use crate::util::{self, Context, Result};

/// The address of `dummy0` inside the VM (Soft-RoCE runs on it).
pub const VM_ADDR: &str = "10.0.2.15";
/// The Soft-RoCE device inside the VM.
pub const RXE_DEV: &str = "rxe0";
/// Exit status when the VM reported none (timeout, kernel panic, QEMU failure).
pub const NO_STATUS: i32 = 125;
/// Set inside the VM; `run_in_vm` then runs the command directly (no nested VM).
const INSIDE_ENV: &str = "XTASK_VM_INSIDE";

/// How to run the VM.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// Hard limit: QEMU is killed after this long and the run reports status 125.
    pub timeout: Duration,
    /// Virtual CPUs (polling latency tests need at least 2).
    pub smp: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            timeout: Duration::from_secs(1800),
            smp: 2,
            mem_mib: 2048,
        }
    }
}

/// The architecture a VM emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `qemu-system-x86_64 -cpu max`, Debian's amd64 kernel, the host's userland.
    X86_64,
    /// `qemu-system-aarch64 -M virt -cpu cortex-a57` (a DPU's Arm cores), Debian's arm64
    /// kernel, static busybox and the arm64 tools beside the host's multiarch libraries.
    Aarch64,
}

impl Arch {
    /// From a command-line word.
    pub fn parse(s: &str) -> Result<Arch> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(format!("unknown architecture `{s}` (x86_64 or aarch64)").into()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's kernel metapackage for this architecture.
    fn kernel_meta(self) -> &'static str {
        match self {
            Arch::X86_64 => "linux-image-amd64",
            Arch::Aarch64 => "linux-image-arm64:arm64",
        }
    }

    /// Where the kernel package is unpacked, under the VM directory.
    fn kernel_dir(self) -> &'static str {
        match self {
            Arch::X86_64 => "kernel",
            Arch::Aarch64 => "kernel-arm64",
        }
    }

    fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }
}

/// What a VM boots, all under `target/rxe-vm/`.
#[derive(Clone, Debug)]
pub struct VmImage {
    pub arch: Arch,
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    pub kver: String,
    /// What QEMU boots: the ELF `vmlinux` unpacked from the `vmlinuz` (booted through its PVH
    /// entry point, which saves the seconds the compressed kernel takes to unpack itself under
    /// TCG) or, if that could not be made, the `vmlinuz`.
    pub kernel: PathBuf,
    /// The cached base initramfs (busybox, modules, /init), padded to 512 bytes.
    pub initramfs: PathBuf,
}

/// `cargo xtask vm …`
pub fn main(f: flags::Vm) -> Result<()> {
    if f.print_runner {
        let (name, value) = runner_env();
        println!(
            "export {name}={}",
            String::from_utf8_lossy(&script::sh_quote(value.as_bytes()))
        );
        return Ok(());
    }
    let defaults = VmOptions::default();
    let opts = VmOptions {
        timeout: f.timeout.map_or(defaults.timeout, Duration::from_secs),
        smp: f.smp.unwrap_or(defaults.smp),
        mem_mib: f.mem.unwrap_or(defaults.mem_mib),
    };
    if opts.smp == 0 || opts.mem_mib < 256 {
        return Err("vm: --smp must be at least 1 and --mem at least 256 (MiB)".into());
    }
    if f.prepare {
        let image = prepare_image()?;
        eprintln!(
            "vm: ready: kernel {} ({}), initramfs {}",
            image.kver,
            image.kernel.display(),
            image.initramfs.display()
        );
        if !f.check && f.command.is_empty() {
            return Ok(());
        }
    }
    if f.check {
        return check::self_check(&opts);
    }
    match f.nodes {
        None | Some(1) => {
            if f.arch_b.is_some() || f.b.is_some() {
                return Err("vm: --arch-b and --b go with --nodes 2".into());
            }
        }
        Some(2) => {
            let Some(cmd_b) = f.b.as_deref() else {
                return Err("vm: --nodes 2 needs node B's command: --b 'CMD'".into());
            };
            if f.command.is_empty() {
                return Err("vm: --nodes 2 needs node A's command after `--`".into());
            }
            let mut pair = pair::PairOptions::default();
            if let Some(arch) = &f.arch_b {
                pair.arch_b = Arch::parse(arch)?;
            }
            for node in [&mut pair.a, &mut pair.b] {
                node.timeout = opts.timeout;
                node.smp = f.smp.unwrap_or(node.smp);
                node.mem_mib = f.mem.unwrap_or(node.mem_mib);
            }
            let code = pair::main(&f.command, cmd_b, &pair)?;
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
        Some(n) => return Err(format!("vm: --nodes {n}: 1 or 2 nodes").into()),
    }
    if f.command.is_empty() {
        return Err("vm: no command to run: `cargo xtask vm [options] -- CMD [ARGS...]`".into());
    }
    let code = run_in_vm(&f.command, &opts)?;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// Downloads and unpacks the kernel and builds the base initramfs if they are not cached.
pub fn ensure_ready() -> Result<()> {
    prepare_image().map(|_| ())
}

/// Like [`ensure_ready`], and says what the VM will boot.
pub fn prepare_image() -> Result<VmImage> {
    prepare_image_for(Arch::X86_64)
}

/// The kernel and initramfs of a VM of `arch`, made first if they are not cached.
pub fn prepare_image_for(arch: Arch) -> Result<VmImage> {
    check_host_tools()?;
    let dir = vm_dir();
    fs::create_dir_all(&dir).context(format_args!("vm: cannot create {}", dir.display()))?;
    let userland = match arch {
        Arch::X86_64 => None,
        Arch::Aarch64 => Some(arm64::ensure_userland(&dir)?),
    };
    let kernel = kernel::ensure_kernel(&dir, arch)?;
    let initramfs = initramfs::ensure_initramfs(&dir, &kernel, arch, userland.as_deref())?;
    Ok(VmImage {
        arch,
        kernel: kernel.boot_image(),
        kver: kernel.kver,
        initramfs,
    })
}

/// The root of the unpacked kernel package of `arch` (its `lib/modules` is what `modprobe -d`
/// wants inside the VM).
pub fn kernel_root(arch: Arch) -> PathBuf {
    vm_dir().join(arch.kernel_dir())
}

/// Runs `cargo ARGS…` with every binary it runs (tests, examples) started inside the VM, each
/// boot allowed `timeout` seconds. Makes sure the VM's kernel is there and the xtask (the
/// runner) is built first.
pub fn cargo_in_vm(args: &[&str], timeout: u32) -> crate::util::Result<()> {
    cargo_in_vm_env(args, timeout, &[])
}

/// [`cargo_in_vm`] with environment variables set for the commands (the VM's command script
/// carries the environment in).
pub fn cargo_in_vm_env(
    args: &[&str],
    timeout: u32,
    env: &[(&str, &str)],
) -> crate::util::Result<()> {
    ensure_ready()?;
    let sh = crate::util::shell()?;
    crate::util::cargo(&sh)
        .args(["build", "-q", "-p", "xtask"])
        .run()?;
    let (var, value) = runner_env();
    let value = value.replacen(" vm --", &format!(" vm --timeout {timeout} --"), 1);
    let mut cmd = crate::util::cargo(&sh).env(var, value).args(args);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.run()?;
    Ok(())
}

/// The cargo runner setting that runs every test binary in the VM: (variable, value).
/// Cargo splits the value on whitespace, so the xtask path must not contain spaces.
pub fn runner_env() -> (String, String) {
    let exe = std::env::current_exe()
        .unwrap_or_else(|_| target_dir().join("debug").join("xtask"))
        .to_string_lossy()
        .into_owned();
    // When cargo has rebuilt the xtask while it runs (`vm_tests` builds it; a changed
    // CARGO_HOME makes that a real rebuild), Linux names the running image "<path> (deleted)":
    // the new binary is at <path>.
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_string();
    (
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER".to_string(),
        format!("{exe} vm --"),
    )
}

/// Runs `cmd` in the VM; its output goes to stdout. Returns its exit status (125 if the VM gave
/// none, after printing the end of the console log on stderr).
pub fn run_in_vm(cmd: &[OsString], opts: &VmOptions) -> Result<i32> {
    run_vm(cmd, opts).map(|(code, _)| code)
}

/// Like [`run_in_vm`], and also returns the command's output (stdout and stderr, interleaved).
pub fn run_in_vm_capture(cmd: &[OsString], opts: &VmOptions) -> Result<(i32, String)> {
    run_vm(cmd, opts)
}

fn run_vm(cmd: &[OsString], opts: &VmOptions) -> Result<(i32, String)> {
    if cmd.is_empty() {
        return Err("vm: no command to run".into());
    }
    if std::env::var_os(INSIDE_ENV).is_some() {
        // Already inside the VM (e.g. `cargo test` run in the VM with the runner variable set).
        let sh = util::shell()?;
        sh.change_dir(std::env::current_dir()?);
        let status = util::status(sh.cmd(&cmd[0]).args(&cmd[1..]))?;
        return Ok((util::exit_code(status), String::new()));
    }
    let image = prepare_image()?;
    let dir = vm_dir();
    let run_dir = boot::new_run_dir(&dir)?;
    let result = boot::boot(&image, &run_dir, cmd, opts, None);
    let _ = fs::copy(run_dir.join("console.log"), dir.join("console.log"));
    let _ = fs::remove_dir_all(&run_dir);
    result
}

/// The target directory xtask was built in (found from the running binary, so that a runner
/// started by cargo for another target directory still finds the cache), else
/// `<workspace>/target`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    exe.as_deref()
        .into_iter()
        .flat_map(Path::ancestors)
        .skip(1)
        .take(3)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| util::root().join("target"))
}

/// `target/rxe-vm/` (or `$XTASK_VM_DIR`): the kernel, the initramfs, per-run scratch
/// directories.
pub fn vm_dir() -> PathBuf {
    match std::env::var_os("XTASK_VM_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => target_dir().join("rxe-vm"),
    }
}

fn need_tool(program: &str, package: &str) -> Result<PathBuf> {
    util::find_tool(program).ok_or_else(|| {
        format!("vm: {program} not found — run `cargo xtask setup` (Debian package {package})")
            .into()
    })
}

fn check_host_tools() -> Result<()> {
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        return Err("vm: the Soft-RoCE VM needs an x86_64 Linux host".into());
    }
    need_tool("qemu-system-x86_64", "qemu-system-x86")?;
    need_tool("gzip", "gzip")?;
    for (program, package) in [
        ("bash", "bash"),
        ("rdma", "iproute2"),
        ("ibv_devinfo", "ibverbs-utils"),
    ] {
        // These run inside the VM from the host's file system.
        need_tool(program, package)?;
    }
    let providers = Path::new("/usr/lib/x86_64-linux-gnu/libibverbs");
    let has_rxe = fs::read_dir(providers).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("librxe"))
    });
    if !has_rxe {
        return Err(
            "vm: the rxe verbs provider (librxe) is not installed — run `cargo xtask setup` \
             (Debian package ibverbs-providers)"
                .into(),
        );
    }
    Ok(())
}

/// Serialises the preparation steps between concurrent `xtask vm` processes: a lock file
/// holding the owner's pid, taken over when that process is gone.
struct PrepLock(PathBuf);

impl PrepLock {
    fn take(dir: &Path) -> Result<PrepLock> {
        let path = dir.join(".prepare.lock");
        let deadline = Instant::now() + Duration::from_secs(30 * 60);
        let mut said = false;
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(PrepLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim();
                    if !holder.is_empty() && !Path::new("/proc").join(holder).exists() {
                        let _ = fs::remove_file(&path); // its process is gone
                        continue;
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "vm: waited 30 min for process {holder} to finish preparing the VM; \
                             if no such process runs, delete {}",
                            path.display()
                        )
                        .into());
                    }
                    if !said {
                        eprintln!("vm: waiting for process {holder}, which prepares the VM");
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(format!("vm: cannot create {}: {e}", path.display()).into()),
            }
        }
    }
}

impl Drop for PrepLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
