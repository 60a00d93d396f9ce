//! One VM run: the per-run initramfs (base + command script), QEMU's command line, the
//! timeout, and the exit status read back from the kernel console.
//!
//! Serial ports on x86_64: ttyS0 is the kernel console and `/init`'s messages, written to
//! `console.log` in the run directory; ttyS1 carries the command's output to QEMU's stdout,
//! which is the xtask's own (live), and QEMU also logs it to `output.log` for callers that
//! parse it (a node of a pair writes it to `output.log` only). The aarch64 `virt` machine has
//! one UART (ttyAMA0): the command's output goes to the console between two marker lines, and
//! the kernel stays quiet (`loglevel=3`).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

use super::initramfs::Cpio;
use super::{script, Arch, VmImage, VmOptions, NO_STATUS};
use crate::util::{Context, Result};

/// The line (on the kernel console) that carries the command's exit status.
const STATUS_TAG: &str = "XTASK-VM-EXIT-STATUS=";
/// Lines of the console that the host repeats on stderr.
const WARN_TAG: &str = "XTASK-VM-WARN:";

/// A fresh `run/<pid>-<n>/` under the VM directory; removes those left by runs that died.
pub fn new_run_dir(dir: &Path) -> Result<PathBuf> {
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
    fs::create_dir_all(&runs).context(format_args!("vm: cannot create {}", runs.display()))?;
    for n in 0u32.. {
        let d = runs.join(format!("{}-{n}", std::process::id()));
        match fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("vm: cannot create {}: {e}", d.display()).into()),
        }
    }
    unreachable!("a free run directory name")
}

/// Kernel parameters after the fixed ones: `$XTASK_VM_KERNEL_ARGS`, by default
/// `mitigations=off` (and `tsc=reliable` on x86_64: about 1 s less boot time under TCG; a
/// throwaway test VM).
fn kernel_args(arch: Arch) -> String {
    std::env::var("XTASK_VM_KERNEL_ARGS").unwrap_or_else(|_| match arch {
        Arch::X86_64 => "mitigations=off tsc=reliable".into(),
        Arch::Aarch64 => "mitigations=off".into(),
    })
}

/// A node's end of the wire between two VMs: a virtio-net NIC whose frames QEMU carries as UDP
/// datagrams on the host's loopback (`-netdev socket,udp=…,localaddr=…`). Connectionless, so
/// either node can power off and boot again while the other keeps its end.
#[derive(Clone, Debug)]
pub struct Wire {
    /// `a` or `b`.
    pub node: char,
    /// This node's address on eth0 (/24).
    pub addr: String,
    /// The other node's address.
    pub peer: String,
    /// The NIC's MAC address.
    pub mac: String,
    /// The loopback UDP port this node's QEMU receives on.
    pub local_port: u16,
    /// The loopback UDP port the other node's QEMU receives on.
    pub peer_port: u16,
    /// Which boot of this node this is (1, then 2 after a reboot, …).
    pub boot: u32,
}

/// A VM that was started: wait for it with [`Running::finish`] or [`Running::poll`].
pub struct Running {
    child: Child,
    started: Instant,
    timeout: Duration,
    arch: Arch,
    console: PathBuf,
    output: PathBuf,
    /// Whether a missing exit status is reported with the end of the console log (not for a
    /// node of a pair that may be rebooted on purpose: its caller decides).
    explain: bool,
}

/// Boots `image` with `cmd` as the command; returns its exit status and its output.
pub fn boot(
    image: &VmImage,
    run_dir: &Path,
    cmd: &[OsString],
    opts: &VmOptions,
    wire: Option<&Wire>,
) -> Result<(i32, String)> {
    start(image, run_dir, cmd, opts, wire)?.finish()
}

/// Starts QEMU for `image` with `cmd` as the command. A lone VM (no `wire`) on x86_64 writes
/// the command's output to this process's stdout as it comes; a node of a pair keeps it for
/// [`Running::finish`].
pub fn start(
    image: &VmImage,
    run_dir: &Path,
    cmd: &[OsString],
    opts: &VmOptions,
    wire: Option<&Wire>,
) -> Result<Running> {
    let cwd = std::env::current_dir().context("vm: no current directory")?;
    let mut initrd = fs::read(&image.initramfs).context(format_args!(
        "vm: cannot read {}",
        image.initramfs.display()
    ))?;
    let mut node_env = String::new();
    if let Some(w) = wire {
        node_env = format!(
            "export XTASK_NODE={} XTASK_NODE_ADDR={} XTASK_PEER_ADDR={} XTASK_BOOT={}\n",
            w.node, w.addr, w.peer, w.boot
        );
    }
    if image.arch == Arch::Aarch64 {
        let tree = super::vm_dir().join("arm64-root");
        let tree = tree.display();
        node_env.push_str(&format!(
            "export PATH={tree}/usr/bin:{tree}/usr/sbin:{tree}/bin:{tree}/sbin:/.xtask/bin:$PATH\n"
        ));
    }
    let mut extra = Cpio::default();
    extra.file(
        "cmd.sh",
        0o755,
        &script::command_script(cmd, &cwd, std::env::vars_os(), &node_env),
    );
    if let Some(w) = wire {
        let conf = format!(
            "XTASK_NODE={}\nXTASK_NODE_ADDR={}\nXTASK_PEER_ADDR={}\n",
            w.node, w.addr, w.peer
        );
        extra.file("etc/xtask-run.conf", 0o644, conf.as_bytes());
    }
    initrd.extend_from_slice(&extra.finish());
    let initrd_path = run_dir.join("initrd");
    fs::write(&initrd_path, &initrd)
        .context(format_args!("vm: cannot write {}", initrd_path.display()))?;
    let console = run_dir.join("console.log");
    let output = run_dir.join("output.log");

    let mut qemu = Command::new(image.arch.qemu());
    match image.arch {
        Arch::X86_64 => qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
        Arch::Aarch64 => qemu.args([
            "-M",
            "virt",
            "-cpu",
            "cortex-a57",
            "-accel",
            "tcg,thread=multi",
        ]),
    };
    qemu.arg("-smp").arg(opts.smp.to_string());
    qemu.arg("-m").arg(opts.mem_mib.to_string());
    qemu.args(["-display", "none", "-no-reboot", "-monitor", "none"]);
    match wire {
        None => {
            qemu.args(["-nic", "none"]);
        }
        Some(w) => {
            qemu.args(["-nic", "none", "-netdev"]);
            qemu.arg(format!(
                "socket,id=wire,udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
                w.peer_port, w.local_port
            ));
            qemu.arg("-device")
                .arg(format!("virtio-net-pci,netdev=wire,mac={}", w.mac));
        }
    }
    let console_tty = match image.arch {
        Arch::X86_64 => "ttyS0",
        Arch::Aarch64 => "ttyAMA0",
    };
    let append = format!(
        "console={console_tty} quiet loglevel=3 panic=-1 {}",
        kernel_args(image.arch)
    );
    qemu.arg("-kernel").arg(&image.kernel);
    qemu.arg("-initrd").arg(&initrd_path);
    qemu.arg("-append").arg(append);
    qemu.arg("-serial")
        .arg(format!("file:{}", console.display()));
    if image.arch == Arch::X86_64 {
        // the command's output on the second serial port
        let chardev = match wire {
            None => format!("stdio,id=out,signal=off,logfile={}", output.display()),
            Some(_) => format!("file,id=out,path={}", output.display()),
        };
        qemu.arg("-chardev").arg(chardev);
        qemu.args(["-serial", "chardev:out"]);
    }
    qemu.args([
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]);
    qemu.stdin(Stdio::null());
    if wire.is_some() {
        qemu.stdout(Stdio::null());
    }
    let child = qemu.spawn().context(format_args!(
        "vm: cannot start {} (run `cargo xtask setup`)",
        image.arch.qemu()
    ))?;
    Ok(Running {
        child,
        started: Instant::now(),
        timeout: opts.timeout,
        arch: image.arch,
        console,
        output,
        explain: wire.is_none_or(|w| w.node == 'a'),
    })
}

impl Running {
    /// The exit status and output if the VM has ended (`Ok(None)`: still running).
    pub fn poll(&mut self) -> Result<Option<(i32, String)>> {
        if self.started.elapsed() > self.timeout {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Ok(Some(self.result(None)));
        }
        match self.child.try_wait()? {
            Some(status) => Ok(Some(self.result(Some(status)))),
            None => Ok(None),
        }
    }

    /// Waits for the VM to end (or kills it at its timeout).
    pub fn finish(mut self) -> Result<(i32, String)> {
        let left = self.timeout.saturating_sub(self.started.elapsed());
        let status = match self.child.wait_timeout(left)? {
            Some(status) => Some(status),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        };
        Ok(self.result(status))
    }

    /// Kills the VM now; returns what it had reported.
    pub fn kill(mut self) -> (i32, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.result(None)
    }

    fn result(&self, status: Option<ExitStatus>) -> (i32, String) {
        let log = fs::read(&self.console).unwrap_or_default();
        let log = String::from_utf8_lossy(&log).replace('\r', "");
        for line in log.lines().filter(|l| l.contains(WARN_TAG)) {
            eprintln!("vm: warning from the VM: {}", line.trim());
        }
        let captured = match self.arch {
            Arch::X86_64 => {
                String::from_utf8_lossy(&fs::read(&self.output).unwrap_or_default()).into_owned()
            }
            Arch::Aarch64 => output_from_console(&log),
        };
        let code = match exit_status_from_console(&log) {
            Some(code) => code,
            None if !self.explain => NO_STATUS,
            None => {
                let why = match status {
                    None => format!(
                        "timed out after {} s or was stopped, and QEMU was killed (raise --timeout)",
                        self.timeout.as_secs()
                    ),
                    Some(s) if s.success() => "QEMU exited without one (kernel panic?)".into(),
                    Some(s) => format!("QEMU failed ({s}; its messages are above)"),
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
        (code, captured)
    }
}

/// The command's output where it shares the console: the lines between the markers `/init`
/// prints (all of them after the first marker if the VM ended early).
fn output_from_console(log: &str) -> String {
    let Some(start) = log.find("XTASK-VM-OUTPUT-BEGIN\n") else {
        return String::new();
    };
    let rest = &log[start + "XTASK-VM-OUTPUT-BEGIN\n".len()..];
    let end = rest.find("XTASK-VM-OUTPUT-END").unwrap_or(rest.len());
    rest[..end].to_string()
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
    fn status() {
        let log = "[    1.0] boot\nxtask-vm: done\n[    3.2] XTASK-VM-EXIT-STATUS=42\r\n";
        assert_eq!(exit_status_from_console(log), Some(42));
        assert_eq!(exit_status_from_console("XTASK-VM-FATAL: x"), None);
        let console = "[ 1.0] boot\nXTASK-VM-OUTPUT-BEGIN\nhello\nworld\nXTASK-VM-OUTPUT-END\nx";
        assert_eq!(output_from_console(console), "hello\nworld\n");
        assert_eq!(output_from_console("XTASK-VM-OUTPUT-BEGIN\ncut"), "cut");
    }
}
