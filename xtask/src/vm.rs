//! `cargo xtask vm`: runs a command inside a QEMU virtual machine that has a Soft-RoCE device.
//!
//! The build machines have no RDMA NIC and their kernel has no RDMA support, so the VM boots
//! Debian's own kernel (package `linux-image-amd64`), which has `rdma_rxe`. The kernel package is
//! downloaded with `apt-get download` and unpacked with `dpkg -x` into `target/rxe-vm/kernel/`
//! (nothing is installed into `/boot`); everything is cached there.
//!
//! Inside the VM:
//! - an initramfs of our own (static busybox, the kernel modules below, an `/init` script) loads
//!   the modules, shares the host's root file system read-only over virtio-9p and puts a tmpfs
//!   overlay on top (the command can write anywhere; the writes are thrown away);
//! - `dummy0` gets 10.0.2.15/24 and Soft-RoCE device `rxe0` runs on it. The VM has no network
//!   device to the outside (`-nic none`): no packet of any test leaves it;
//! - the command runs in the caller's current directory with the caller's environment and
//!   `ulimit -l unlimited`; its stdout and stderr come out on the host's stdout (through the
//!   second serial port) and its exit status comes back through the kernel console.
//!
//! Usage:
//!   cargo xtask vm [--timeout SECS] [--smp N] [--mem MiB] -- CMD [ARGS...]
//!   cargo xtask vm --check        # ibv_devinfo + ib_send_bw over rxe0, reports pass/fail
//!   cargo xtask vm --prepare      # download the kernel and build the initramfs only
//!   eval "$(cargo xtask vm --print-runner)"   # then `cargo test` runs the tests in the VM
//!
//! As a cargo runner (every test binary of `cargo test` runs inside the VM):
//!   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="/abs/path/target/debug/xtask vm --" cargo test
//! (cargo splits the value on spaces and appends the test binary and its arguments).

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, has_flag, run};

/// Modules loaded in the VM, with their dependencies, in this order. `crc32_generic` first:
/// `rdma_rxe` needs a "crc32" shash and Debian builds the generic one as a module.
const MODULES: &[&str] = &[
    "crc32_generic",
    "virtio_pci",
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
/// The Debian metapackage that names the current kernel package.
const KERNEL_META: &str = "linux-image-amd64";
/// Bump when the initramfs layout changes in a way the init script's text does not show.
const INITRAMFS_FORMAT: u32 = 1;
/// The address of `dummy0` inside the VM (Soft-RoCE runs on it).
pub const VM_ADDR: &str = "10.0.2.15";
/// The Soft-RoCE device inside the VM.
pub const RXE_DEV: &str = "rxe0";
/// Exit status when the VM reported none (timeout, kernel panic, QEMU failure).
pub const NO_STATUS: i32 = 125;
/// Set inside the VM; `run_in_vm` then runs the command directly (no nested VM).
const INSIDE_ENV: &str = "XTASK_VM_INSIDE";
/// The line (on the kernel console) that carries the command's exit status.
const STATUS_TAG: &str = "XTASK-VM-EXIT-STATUS=";
/// Lines of the console that the host repeats on stderr.
const WARN_TAG: &str = "XTASK-VM-WARN:";
/// Environment variables not carried into the VM.
const ENV_SKIP: &[&str] = &[
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "TERM",
    // read-only in bash: `export` would fail with a message in the command's output
    "SHELLOPTS",
    "BASHOPTS",
    "BASH_VERSINFO",
    "EUID",
    "PPID",
    "UID",
    INSIDE_ENV,
];

/// The VM's `/init` (busybox sh). Its text is part of the initramfs cache key: edit it and the
/// next run rebuilds the initramfs.
const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
warn() { echo "XTASK-VM-WARN: $*"; }
die() { warn "$*"; echo "<2>XTASK-VM-FATAL: $*" > /dev/kmsg; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
echo "xtask-vm: init at $(cut -d' ' -f1 /proc/uptime) s"
while read -r ko; do insmod "$ko" || warn "insmod $ko failed"; done < /etc/modules
ip link set lo up
[ -e /sys/class/net/dummy0 ] || ip link add dummy0 type dummy || warn "no dummy0"
ip addr add 10.0.2.15/24 dev dummy0
ip link set dummy0 up
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host ||
  die "could not mount the host file system (virtio-9p)"
mount -t tmpfs tmpfs /ovl && mkdir -p /ovl/upper /ovl/work &&
  mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/upper,workdir=/ovl/work /newroot ||
  die "could not mount the overlay on the host file system"
for d in proc sys dev dev/pts dev/shm; do mount --bind /$d /newroot/$d; done
mount -t tmpfs tmpfs /newroot/run
# rdma (iproute2) comes from the host file system
chroot /newroot rdma link add rxe0 type rxe netdev dummy0 ||
  warn "rdma link add rxe0 failed (is iproute2 installed on the host?)"
echo "xtask-vm: rxe0 ready at $(cut -d' ' -f1 /proc/uptime) s"
stty -F /dev/ttyS1 raw -echo
ulimit -l unlimited
cp /cmd.sh /newroot/.xtask-vm-cmd.sh
# The command's output goes through a pipe (not a tty, as in CI) to the second serial port;
# the last close of ttyS1 (by cat) waits until the UART has sent everything.
{ chroot /newroot /bin/bash /.xtask-vm-cmd.sh < /dev/null 2>&1; echo $? > /rc; } | cat > /dev/ttyS1
echo "xtask-vm: done at $(cut -d' ' -f1 /proc/uptime) s"
# printk writes to the serial console synchronously: the line is out before the power-off
echo "<2>XTASK-VM-EXIT-STATUS=$(cat /rc)" > /dev/kmsg
poweroff -f
"#;

const USAGE: &str = "\
cargo xtask vm [--timeout SECS] [--smp N] [--mem MiB] -- CMD [ARGS...]
cargo xtask vm --check      boot, run ibv_devinfo and an ib_send_bw pair over rxe0, report
cargo xtask vm --prepare    only download the kernel and build the initramfs (cached)
cargo xtask vm --print-runner   print the `export` line that makes cargo run tests in the VM

Runs CMD inside a QEMU VM (Debian's kernel, TCG) with Soft-RoCE device rxe0 on dummy0
(10.0.2.15/24, no network to the outside). The host root is shared read-only with a tmpfs
overlay (writes are discarded). CMD runs in the current directory with the current
environment; its stdout+stderr go to stdout; the exit status is CMD's (125: the VM gave none).
Defaults: --timeout 1800 --smp 2 --mem 2048. Cache: target/rxe-vm/ (delete it to refresh the
kernel); the last run's console log is target/rxe-vm/console.log.
Environment: XTASK_VM_DIR (cache directory instead of target/rxe-vm), XTASK_VM_KERNEL_ARGS
(kernel parameters instead of `mitigations=off tsc=reliable`).

As a cargo runner (each test binary runs in the VM):
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=\"<workspace>/target/debug/xtask vm --\" cargo test
";

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

/// What a VM boots, all under `target/rxe-vm/`.
#[derive(Clone, Debug)]
pub struct VmImage {
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    pub kver: String,
    /// What QEMU boots: `target/rxe-vm/kernel/boot/vmlinux-<kver>` (unpacked from the
    /// `vmlinuz`, booted through its PVH entry point: saves the 3-4 s the compressed kernel
    /// takes to unpack itself under TCG) or, if that could not be made, `boot/vmlinuz-<kver>`.
    pub kernel: PathBuf,
    /// The cached base initramfs (busybox, modules, /init), padded to 512 bytes.
    pub initramfs: PathBuf,
}

/// `cargo xtask vm …`
pub fn main(args: &[String]) -> Result<(), String> {
    let (flags, cmd) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    if has_flag(flags, "-h") || has_flag(flags, "--help") {
        print!("{USAGE}");
        return Ok(());
    }
    let mut opts = VmOptions::default();
    let (mut check, mut prepare) = (false, false);
    let mut i = 0;
    while i < flags.len() {
        let flag = flags[i].as_str();
        let mut value = || {
            i += 1;
            flags
                .get(i)
                .map(String::as_str)
                .ok_or(format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag {
            "--timeout" => opts.timeout = Duration::from_secs(parse_num(flag, value()?)?),
            "--smp" => opts.smp = parse_num(flag, value()?)?,
            "--mem" => opts.mem_mib = parse_num(flag, value()?)?,
            "--check" => check = true,
            "--prepare" => prepare = true,
            "--print-runner" => {
                let (name, value) = runner_env();
                println!(
                    "export {name}={}",
                    String::from_utf8_lossy(&sh_quote(value.as_bytes()))
                );
                return Ok(());
            }
            _ if !flag.starts_with('-') => {
                return Err(format!(
                    "vm: `{flag}`: put `--` before the command (`cargo xtask vm -- {flag} …`)"
                ))
            }
            _ => return Err(format!("vm: unknown option `{flag}`\n\n{USAGE}")),
        }
        i += 1;
    }
    if opts.smp == 0 || opts.mem_mib < 256 {
        return Err("vm: --smp must be at least 1 and --mem at least 256 (MiB)".into());
    }
    if prepare {
        let image = prepare_image()?;
        eprintln!(
            "vm: ready: kernel {} ({}), initramfs {}",
            image.kver,
            image.kernel.display(),
            image.initramfs.display()
        );
        if !check && cmd.is_empty() {
            return Ok(());
        }
    }
    if check {
        return self_check(&opts);
    }
    if cmd.is_empty() {
        return Err(format!("vm: no command to run\n\n{USAGE}"));
    }
    let code = run_in_vm(cmd, &opts)?;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn parse_num<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("vm: {flag} takes a number, not `{s}`"))
}

/// Downloads and unpacks the kernel and builds the base initramfs if they are not cached.
pub fn ensure_ready() -> Result<(), String> {
    prepare_image().map(|_| ())
}

/// Like [`ensure_ready`], and says what the VM will boot.
pub fn prepare_image() -> Result<VmImage, String> {
    check_host_tools()?;
    let dir = vm_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("vm: cannot create {}: {e}", dir.display()))?;
    let kernel = ensure_kernel(&dir)?;
    let initramfs = ensure_initramfs(&dir, &kernel)?;
    Ok(VmImage {
        kernel: kernel.boot_image(),
        kver: kernel.kver,
        initramfs,
    })
}

/// The cargo runner setting that runs every test binary in the VM: (variable, value).
/// Cargo splits the value on whitespace, so the xtask path must not contain spaces.
pub fn runner_env() -> (String, String) {
    let exe = std::env::current_exe()
        .unwrap_or_else(|_| target_dir().join("debug").join("xtask"))
        .to_string_lossy()
        .into_owned();
    (
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER".to_string(),
        format!("{exe} vm --"),
    )
}

/// Runs `cmd` in the VM; its output goes to stdout. Returns its exit status (125 if the VM gave
/// none, after printing the end of the console log on stderr).
pub fn run_in_vm(cmd: &[String], opts: &VmOptions) -> Result<i32, String> {
    run_vm(cmd, opts, false).map(|(code, _)| code)
}

/// Like [`run_in_vm`], and also returns the command's output (stdout and stderr, interleaved).
pub fn run_in_vm_capture(cmd: &[String], opts: &VmOptions) -> Result<(i32, String), String> {
    run_vm(cmd, opts, true)
}

fn run_vm(cmd: &[String], opts: &VmOptions, capture: bool) -> Result<(i32, String), String> {
    if cmd.is_empty() {
        return Err("vm: no command to run".into());
    }
    if std::env::var_os(INSIDE_ENV).is_some() {
        // Already inside the VM (e.g. `cargo test` run in the VM with the runner variable set).
        return run_here(cmd, capture);
    }
    let image = prepare_image()?;
    let dir = vm_dir();
    let run_dir = new_run_dir(&dir)?;
    let result = boot(&image, &run_dir, cmd, opts, capture);
    let console = run_dir.join("console.log");
    let _ = fs::copy(&console, dir.join("console.log"));
    let _ = fs::remove_dir_all(&run_dir);
    result
}

fn run_here(cmd: &[String], capture: bool) -> Result<(i32, String), String> {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    if capture {
        let out = c
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("vm: cannot run `{}`: {e}", cmd[0]))?;
        std::io::stdout().write_all(&out.stdout).ok();
        Ok((
            status_code(out.status),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    } else {
        let status = c
            .status()
            .map_err(|e| format!("vm: cannot run `{}`: {e}", cmd[0]))?;
        Ok((status_code(status), String::new()))
    }
}

fn status_code(s: ExitStatus) -> i32 {
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

fn boot(
    image: &VmImage,
    run_dir: &Path,
    cmd: &[String],
    opts: &VmOptions,
    capture: bool,
) -> Result<(i32, String), String> {
    let cwd = std::env::current_dir().map_err(|e| format!("vm: no current directory: {e}"))?;
    let script = command_script(cmd, &cwd, std::env::vars_os());
    let mut initrd = fs::read(&image.initramfs)
        .map_err(|e| format!("vm: cannot read {}: {e}", image.initramfs.display()))?;
    let mut extra = Cpio::default();
    extra.file("cmd.sh", 0o755, &script);
    initrd.extend_from_slice(&extra.finish());
    let initrd_path = run_dir.join("initrd");
    fs::write(&initrd_path, &initrd)
        .map_err(|e| format!("vm: cannot write {}: {e}", initrd_path.display()))?;
    let console = run_dir.join("console.log");

    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max"])
        .args([
            "-smp",
            &opts.smp.to_string(),
            "-m",
            &opts.mem_mib.to_string(),
        ])
        .args([
            "-nic",
            "none",
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&initrd_path)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet loglevel=3 panic=-1 {}",
            kernel_args()
        ))
        // ttyS0: kernel console and init's messages, to a file; ttyS1: the command's output.
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args(["-serial", "stdio"])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let started = Instant::now();
    let mut child = qemu.spawn().map_err(|e| {
        format!("vm: cannot start qemu-system-x86_64: {e} — run `cargo xtask setup`")
    })?;
    let mut out = child.stdout.take().expect("piped stdout");
    let tee = std::thread::spawn(move || {
        let mut captured = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let stdout = std::io::stdout();
        loop {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut lock = stdout.lock();
                    // A closed stdout must not stall the VM: keep draining.
                    let _ = lock.write_all(&buf[..n]).and_then(|_| lock.flush());
                    if capture {
                        captured.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        captured
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() >= opts.timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("vm: waiting for QEMU failed: {e}"));
            }
        }
    };
    let captured = tee.join().unwrap_or_default();
    let log = fs::read(&console).unwrap_or_default();
    let log = String::from_utf8_lossy(&log).replace('\r', "");
    for line in log.lines().filter(|l| l.contains(WARN_TAG)) {
        eprintln!("vm: warning from the VM: {}", line.trim());
    }
    let code = match exit_status_from_console(&log) {
        Some(code) => code,
        None => {
            let why = if timed_out {
                format!(
                    "timed out after {} s and killed QEMU (raise --timeout)",
                    opts.timeout.as_secs()
                )
            } else {
                match status {
                    Some(s) if s.success() => "QEMU exited without one (kernel panic?)".into(),
                    Some(s) => format!("QEMU failed ({s}; its messages are above)"),
                    None => "QEMU's status is unknown".into(),
                }
            };
            eprintln!("vm: no exit status from the VM: {why}; end of the console log:");
            let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                eprintln!("  (empty: the kernel printed nothing yet)");
            }
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("  | {l}");
            }
            NO_STATUS
        }
    };
    Ok((code, String::from_utf8_lossy(&captured).into_owned()))
}

/// Kernel parameters after the fixed ones: `$XTASK_VM_KERNEL_ARGS`, by default
/// `mitigations=off tsc=reliable` (about 1 s less boot time under TCG; a throwaway test VM).
fn kernel_args() -> String {
    std::env::var("XTASK_VM_KERNEL_ARGS").unwrap_or_else(|_| "mitigations=off tsc=reliable".into())
}

/// `cargo xtask vm --check`: Soft-RoCE works end to end in the VM.
fn self_check(opts: &VmOptions) -> Result<(), String> {
    need_tool("ib_send_bw", "perftest")?;
    let t = Instant::now();
    ensure_ready()?;
    let prep = t.elapsed();
    let script = format!(
        r#"set -u
echo "== ibv_devinfo -d {dev}"
ibv_devinfo -d {dev} || exit 10
echo "== ib_send_bw -d {dev} -x 1 -s 64 -n 2000: server in the background, client to {addr}"
ib_send_bw -d {dev} -x 1 -s 64 -n 2000 > /tmp/ib_send_bw.server 2>&1 &
server=$!
ok=0
for i in 1 2 3 4 5 6 7 8 9 10; do
  sleep 0.5
  if ib_send_bw -d {dev} -x 1 -s 64 -n 2000 {addr} > /tmp/ib_send_bw.client 2>&1; then ok=1; break; fi
  kill -0 $server 2>/dev/null || break
done
wait $server; srv=$?
echo "-- client"; cat /tmp/ib_send_bw.client
echo "-- server"; cat /tmp/ib_send_bw.server
[ $ok = 1 ] || exit 11
[ $srv = 0 ] || exit 12
"#,
        dev = RXE_DEV,
        addr = VM_ADDR
    );
    let cmd = ["bash".to_string(), "-c".to_string(), script];
    let t = Instant::now();
    let (code, output) = run_in_vm_capture(&cmd, opts)?;
    let took = t.elapsed();
    let rates = msg_rates_mpps(&output);
    let devinfo = output.contains("transport:") && output.contains("PORT_ACTIVE");
    eprintln!(
        "\nvm check: preparation {:.1} s, VM run {:.1} s (boot + ibv_devinfo + ib_send_bw)",
        prep.as_secs_f64(),
        took.as_secs_f64()
    );
    eprintln!(
        "vm check: ibv_devinfo -d {RXE_DEV}: {}",
        if devinfo {
            "ok (PORT_ACTIVE)"
        } else {
            "FAILED"
        }
    );
    match rates[..] {
        [client, server, ..] => eprintln!(
            "vm check: ib_send_bw 64 B over {RXE_DEV}: client {client} Mpps, server {server} Mpps \
             ({:.1} k msg/s received)",
            server * 1000.0
        ),
        _ => eprintln!("vm check: ib_send_bw: FAILED (no result lines from client and server)"),
    }
    if code == 0 && devinfo && rates.len() >= 2 {
        eprintln!("vm check: PASS");
        Ok(())
    } else {
        Err(format!(
            "vm check FAILED (exit status {code}; 10 = ibv_devinfo failed, 11/12 = ib_send_bw \
             client/server failed, 125 = no status from the VM). The console log is {}; \
             check that rdma-core, ibverbs-providers, ibverbs-utils and perftest are installed \
             (`cargo xtask setup`)",
            vm_dir().join("console.log").display()
        ))
    }
}

/// The `MsgRate[Mpps]` column of each of perftest's result lines (the last column of the first
/// line that starts with a number after each `#bytes` header).
fn msg_rates_mpps(output: &str) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut after_header = false;
    for line in output.lines() {
        let line = line.trim();
        if line.starts_with("#bytes") {
            after_header = true;
        } else if after_header && line.starts_with(|c: char| c.is_ascii_digit()) {
            after_header = false;
            if let Some(r) = line.split_whitespace().last().and_then(|r| r.parse().ok()) {
                rates.push(r);
            }
        }
    }
    rates
}

// ---------------------------------------------------------------------------------------------
// Host tools, directories

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

/// `program` on PATH or in the sbin directories (which a user's PATH may lack).
fn find_tool(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn need_tool(program: &str, package: &str) -> Result<PathBuf, String> {
    find_tool(program).ok_or_else(|| {
        format!("vm: {program} not found — run `cargo xtask setup` (Debian package {package})")
    })
}

fn check_host_tools() -> Result<(), String> {
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
    if find_file_prefix(Path::new("/usr/lib/x86_64-linux-gnu/libibverbs"), "librxe").is_none() {
        return Err(
            "vm: the rxe verbs provider (librxe) is not installed — run `cargo xtask setup` \
             (Debian package ibverbs-providers)"
                .into(),
        );
    }
    Ok(())
}

fn find_file_prefix(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
}

/// A fresh `target/rxe-vm/run/<pid>-<n>/`; removes those left by runs that died.
fn new_run_dir(dir: &Path) -> Result<PathBuf, String> {
    let runs = dir.join("run");
    if let Ok(entries) = fs::read_dir(&runs) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or("");
            if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    for n in 0u32.. {
        let d = runs.join(format!("{}-{n}", std::process::id()));
        fs::create_dir_all(&runs)
            .map_err(|e| format!("vm: cannot create {}: {e}", runs.display()))?;
        match fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("vm: cannot create {}: {e}", d.display())),
        }
    }
    unreachable!()
}

/// Serialises the preparation steps between concurrent `xtask vm` processes.
struct PrepLock(PathBuf);

impl PrepLock {
    fn take(dir: &Path) -> Result<PrepLock, String> {
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
                        ));
                    }
                    if !said {
                        eprintln!("vm: waiting for process {holder}, which prepares the VM");
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(format!("vm: cannot create {}: {e}", path.display())),
            }
        }
    }
}

impl Drop for PrepLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel

struct Kernel {
    kver: String,
    /// The root of the unpacked package (`target/rxe-vm/kernel`).
    root: PathBuf,
    vmlinuz: PathBuf,
}

impl Kernel {
    fn vmlinux(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinux-{}", self.kver))
    }

    fn boot_image(&self) -> PathBuf {
        let vmlinux = self.vmlinux();
        if vmlinux.is_file() {
            vmlinux
        } else {
            self.vmlinuz.clone()
        }
    }

    /// Unpacks the ELF kernel from the xz-compressed `vmlinuz` if the kernel has a PVH entry
    /// point (QEMU boots an ELF kernel only through that). Best effort: without it the VM
    /// boots the `vmlinuz`, only slower.
    fn unpack_vmlinux(&self) -> Result<(), String> {
        let config = self.root.join("boot").join(format!("config-{}", self.kver));
        let config = fs::read_to_string(&config).unwrap_or_default();
        if !config.lines().any(|l| l == "CONFIG_PVH=y") {
            return Err("the kernel has no PVH entry point (CONFIG_PVH)".into());
        }
        let xz = find_tool("xz").ok_or("xz not found (Debian package xz-utils)")?;
        let packed = fs::read(&self.vmlinuz).map_err(|e| e.to_string())?;
        let start = packed
            .windows(6)
            .position(|w| w == b"\xfd7zXZ\0")
            .ok_or("no xz stream in the vmlinuz")?;
        let vmlinux = self.vmlinux();
        let tmp = self
            .root
            .join("boot")
            .join(format!("vmlinux-{}.tmp", self.kver));
        let file = fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let mut child = Command::new(xz)
            .args(["-dc", "--single-stream"])
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .map_err(|e| format!("cannot run xz: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // xz stops reading at the end of the stream: the rest of the file meets a closed pipe.
        let write = stdin
            .write_all(&packed[start..])
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => Ok(()),
                _ => Err(e),
            });
        drop(stdin);
        let status = child.wait().map_err(|e| e.to_string())?;
        let mut head = [0u8; 4];
        let head = fs::File::open(&tmp)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && &head == b"\x7fELF";
        if write.is_err() || !status.success() || !head {
            let _ = fs::remove_file(&tmp);
            return Err("xz could not unpack the vmlinuz".into());
        }
        fs::rename(&tmp, &vmlinux).map_err(|e| e.to_string())
    }
}

const KVER_STAMP: &str = ".xtask-vm-kver";

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

/// The concrete kernel package in `apt-cache depends linux-image-amd64` output.
fn kernel_package_from_depends(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let dep = line.trim().trim_start_matches('|').trim();
        let name = dep
            .strip_prefix("Depends:")?
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        (name.starts_with("linux-image-") && name != KERNEL_META).then(|| name.to_string())
    })
}

fn ensure_kernel(dir: &Path) -> Result<Kernel, String> {
    let root = dir.join("kernel");
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

    let depends =
        util::output(Command::new(&apt_cache).args(["depends", KERNEL_META])).unwrap_or_default();
    let pkg = kernel_package_from_depends(&depends).ok_or_else(|| {
        no_apt(&format!(
            "apt-cache knows no package {KERNEL_META} (Debian's kernel metapackage)"
        ))
    })?;
    let kver = pkg["linux-image-".len()..].to_string();
    eprintln!(
        "vm: preparing kernel {kver} (package {pkg}) in {}",
        dir.display()
    );

    let deb = match find_deb(dir, &pkg) {
        Some(deb) => deb,
        None => {
            run(Command::new(&apt_get)
                .args(["download", "-q", &pkg])
                .current_dir(dir)
                .stdout(std::io::stderr()))
            .map_err(|e| {
                format!(
                    "vm: could not download the kernel package {pkg}: {e}\n  check your apt \
                     sources (Debian 12 bookworm main and bookworm-security) and network, run \
                     `apt-get update`, then `cargo xtask setup`"
                )
            })?;
            find_deb(dir, &pkg).ok_or_else(|| {
                format!(
                    "vm: `apt-get download {pkg}` left no {pkg}_*.deb in {}",
                    dir.display()
                )
            })?
        }
    };
    if root.exists() {
        fs::remove_dir_all(&root)
            .map_err(|e| format!("vm: cannot remove the old {}: {e}", root.display()))?;
    }
    fs::create_dir_all(&root).map_err(|e| format!("vm: cannot create {}: {e}", root.display()))?;
    run(Command::new(&dpkg)
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .stdout(std::io::stderr()))
    .map_err(|e| format!("vm: could not unpack {}: {e}", deb.display()))?;
    // Packages built for merged /usr put the modules in usr/lib/modules; modprobe -d wants lib/.
    if !root.join("lib/modules").exists() && root.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))
            .map_err(|e| format!("vm: cannot link lib -> usr/lib in {}: {e}", root.display()))?;
    }
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{kver}"));
    if !vmlinuz.is_file() || !root.join("lib/modules").join(&kver).is_dir() {
        return Err(format!(
            "vm: {} does not hold boot/vmlinuz-{kver} and lib/modules/{kver}/ as expected",
            deb.display()
        ));
    }
    run(Command::new(&depmod)
        .arg("-b")
        .arg(&root)
        .arg(&kver)
        .stdout(std::io::stderr()))
    .map_err(|e| format!("vm: depmod failed: {e} — run `cargo xtask setup` (kmod)"))?;
    let kernel = Kernel {
        kver,
        root,
        vmlinuz,
    };
    if let Err(e) = kernel.unpack_vmlinux() {
        eprintln!("vm: note: booting the compressed kernel (3-4 s slower): {e}");
    }
    fs::write(kernel.root.join(KVER_STAMP), &kernel.kver)
        .map_err(|e| format!("vm: cannot write in {}: {e}", kernel.root.display()))?;
    Ok(kernel)
}

fn no_apt(what: &str) -> String {
    format!(
        "vm: cannot get Debian's kernel: {what}. The VM boots Debian's linux-image-amd64 \
         (it has Soft-RoCE); on Debian/Ubuntu-like systems check your apt sources (Debian 12 \
         bookworm main), run `apt-get update` and `cargo xtask setup`"
    )
}

fn find_deb(dir: &Path, pkg: &str) -> Option<PathBuf> {
    let prefix = format!("{pkg}_");
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
}

// ---------------------------------------------------------------------------------------------
// The initramfs

/// FNV-1a, 64 bits: a stable hash for cache keys (std's hasher may change between releases).
fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn initramfs_key() -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    h = fnv1a(&INITRAMFS_FORMAT.to_le_bytes(), h);
    h = fnv1a(INIT_SCRIPT.as_bytes(), h);
    for m in MODULES {
        h = fnv1a(m.as_bytes(), h);
        h = fnv1a(b"\0", h);
    }
    h
}

fn ensure_initramfs(dir: &Path, kernel: &Kernel) -> Result<PathBuf, String> {
    let name = format!("base-{}-{:016x}.cpio.gz", kernel.kver, initramfs_key());
    let path = dir.join(&name);
    if path.is_file() {
        return Ok(path);
    }
    let _lock = PrepLock::take(dir)?;
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("vm: building the initramfs {}", path.display());
    let busybox = Path::new("/bin/busybox");
    let bb = fs::read(busybox).map_err(|_| {
        "vm: /bin/busybox not found — run `cargo xtask setup` (Debian package busybox-static)"
            .to_string()
    })?;
    if !is_static_elf(&bb) {
        return Err(
            "vm: /bin/busybox is dynamically linked; the initramfs needs the static one \
                    — run `cargo xtask setup` (Debian package busybox-static)"
                .into(),
        );
    }
    let modprobe = need_tool("modprobe", "kmod")?;

    let mut cpio = Cpio::default();
    for d in [
        "bin", "dev", "etc", "host", "lib", "newroot", "ovl", "proc", "run", "sys", "tmp",
    ] {
        cpio.dir(d);
    }
    cpio.node("dev/console", 0o020_600, (5, 1));
    cpio.file("bin/busybox", 0o755, &bb);
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());

    // The module closure, dependencies first, each module once.
    let mut order: Vec<String> = Vec::new();
    for &m in MODULES {
        let out = Command::new(&modprobe)
            .arg("-d")
            .arg(&kernel.root)
            .args(["-S", &kernel.kver, "--show-depends", m])
            .output()
            .map_err(|e| format!("vm: cannot run modprobe: {e}"))?;
        if !out.status.success() {
            if OPTIONAL_MODULES.contains(&m) {
                continue;
            }
            return Err(format!(
                "vm: kernel {} has no module {m}: {}",
                kernel.kver,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
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
    let root = kernel.root.to_string_lossy().into_owned();
    let mut list = String::new();
    let mut dirs: Vec<String> = Vec::new();
    for ko in &order {
        let rel = ko.strip_prefix(&root).unwrap_or(ko).trim_start_matches('/');
        let host = kernel.root.join(rel);
        let (rel, data) = read_module(&host, rel)?;
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
    let archive = cpio.finish();

    let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
    gzip_to(&archive, &tmp)?;
    // The per-run archive is appended to this one: it must start on a 512-byte boundary or the
    // kernel does not find it ("invalid magic at start of compressed archive").
    let len = fs::metadata(&tmp).map_err(|e| e.to_string())?.len();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&tmp)
        .map_err(|e| format!("vm: cannot open {}: {e}", tmp.display()))?;
    f.write_all(&vec![0u8; (512 - len % 512) as usize % 512])
        .map_err(|e| format!("vm: cannot write {}: {e}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| format!("vm: cannot create {}: {e}", path.display()))?;
    // Earlier initramfs versions are of no further use.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("base-") && n.ends_with(".cpio.gz") && n != name {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    eprintln!(
        "vm: initramfs: busybox + {} modules, {} KiB",
        order.len(),
        fs::metadata(&path).map(|m| m.len() / 1024).unwrap_or(0)
    );
    Ok(path)
}

/// A module's bytes and its path in the initramfs; compressed modules are unpacked (busybox's
/// insmod takes plain `.ko` files only).
fn read_module(host: &Path, rel: &str) -> Result<(String, Vec<u8>), String> {
    for (ext, tool) in [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")] {
        if let Some(plain) = rel.strip_suffix(ext) {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(host)
                .output()
                .map_err(|e| format!("vm: cannot run {tool} to unpack {}: {e}", host.display()))?;
            if !out.status.success() {
                return Err(format!("vm: `{tool} -dc {}` failed", host.display()));
            }
            return Ok((plain.to_string(), out.stdout));
        }
    }
    let data =
        fs::read(host).map_err(|e| format!("vm: cannot read module {}: {e}", host.display()))?;
    Ok((rel.to_string(), data))
}

fn gzip_to(data: &[u8], path: &Path) -> Result<(), String> {
    let file =
        fs::File::create(path).map_err(|e| format!("vm: cannot create {}: {e}", path.display()))?;
    let mut gz = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .map_err(|e| format!("vm: cannot run gzip: {e}"))?;
    let write = gz.stdin.take().expect("piped stdin").write_all(data);
    let status = gz.wait().map_err(|e| format!("vm: gzip: {e}"))?;
    match write {
        Ok(()) if status.success() => Ok(()),
        _ => Err(format!("vm: gzip failed writing {}", path.display())),
    }
}

/// Whether `elf` is an ELF64 executable without a program interpreter (statically linked).
fn is_static_elf(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|t| t != PT_INTERP)
    })
}

/// A `newc` cpio archive (what the kernel unpacks as an initramfs), built in memory.
#[derive(Default)]
struct Cpio {
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
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, (0, 0), data);
    }

    fn node(&mut self, name: &str, mode: u32, rdev: (u32, u32)) {
        self.entry(name, mode, rdev, &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

// ---------------------------------------------------------------------------------------------
// The command script

/// `s` as one bash word.
fn sh_quote(s: &[u8]) -> Vec<u8> {
    let plain = |c: &u8| c.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(c);
    if !s.is_empty() && s.iter().all(plain) {
        return s.to_vec();
    }
    let mut q = vec![b'\''];
    for &c in s {
        if c == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(c);
        }
    }
    q.push(b'\'');
    q
}

fn is_shell_name(s: &[u8]) -> bool {
    s.first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && s.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// The bash script the VM runs: the environment, `cd` to `cwd`, `exec` the command.
fn command_script<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    cmd: &[String],
    cwd: &Path,
    env: impl IntoIterator<Item = (K, V)>,
) -> Vec<u8> {
    let mut s = b"#!/bin/bash\n".to_vec();
    for (k, v) in env {
        let (k, v) = (k.as_ref().as_bytes(), v.as_ref().as_bytes());
        if !is_shell_name(k) || ENV_SKIP.iter().any(|skip| skip.as_bytes() == k) {
            continue;
        }
        s.extend_from_slice(b"export ");
        s.extend_from_slice(k);
        s.push(b'=');
        s.extend_from_slice(&sh_quote(v));
        s.push(b'\n');
    }
    s.extend_from_slice(format!("export {INSIDE_ENV}=1\ncd ").as_bytes());
    s.extend_from_slice(&sh_quote(cwd.as_os_str().as_bytes()));
    s.extend_from_slice(b" || exit 97\nexec");
    for a in cmd {
        s.push(b' ');
        s.extend_from_slice(&sh_quote(a.as_bytes()));
    }
    s.push(b'\n');
    s
}

/// The command's exit status in the console log.
fn exit_status_from_console(log: &str) -> Option<i32> {
    log.lines().rev().find_map(|line| {
        let rest = &line[line.find(STATUS_TAG)? + STATUS_TAG.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote(b"plain/path-1.0"), b"plain/path-1.0");
        assert_eq!(sh_quote(b""), b"''");
        assert_eq!(sh_quote(b"a b"), b"'a b'");
        assert_eq!(sh_quote(b"it's $HOME"), b"'it'\\''s $HOME'");
        assert_eq!(sh_quote(b"line\nbreak"), b"'line\nbreak'");
    }

    #[test]
    fn script() {
        let env = [
            ("HOME", "/root"),
            ("PWD", "/x"),
            ("BASH_FUNC_f%%", "() { :; }"),
            ("A", "x y"),
        ];
        let s = command_script(&["echo".into(), "a b".into()], Path::new("/w d"), env);
        let s = String::from_utf8(s).unwrap();
        assert_eq!(
            s,
            "#!/bin/bash\nexport HOME=/root\nexport A='x y'\nexport XTASK_VM_INSIDE=1\n\
             cd '/w d' || exit 97\nexec echo 'a b'\n"
        );
    }

    #[test]
    fn status_and_rate() {
        let log = "[    1.0] boot\nxtask-vm: done\n[    3.2] XTASK-VM-EXIT-STATUS=42\r\n";
        assert_eq!(exit_status_from_console(log), Some(42));
        assert_eq!(exit_status_from_console("XTASK-VM-FATAL: x"), None);
        let out = " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   \
                   MsgRate[Mpps]\n 64         2000             3.61               3.58  \
                   \t\t   0.058672\n";
        assert_eq!(msg_rates_mpps(out), [0.058672]);
        assert_eq!(
            msg_rates_mpps(&format!("{out}--\n{out}")),
            [0.058672, 0.058672]
        );
    }

    #[test]
    fn kernel_package() {
        let deps = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            kernel_package_from_depends(deps).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(kernel_package_from_depends("linux-image-amd64\n"), None);
    }

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
}
