//! One VM run: the per-run initramfs (base + command script), QEMU's command line, the
//! timeout, and the exit status read back from the kernel console.
//!
//! Serial ports: ttyS0 is the kernel console and `/init`'s messages, written to
//! `console.log` in the run directory; ttyS1 carries the command's output to QEMU's stdout,
//! which is the xtask's own (live), and QEMU also logs it to `output.log` for callers that
//! parse it.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::initramfs::Cpio;
use super::{script, VmImage, VmOptions, NO_STATUS};
use crate::util::{self, Context, Result};

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
/// `mitigations=off tsc=reliable` (about 1 s less boot time under TCG; a throwaway test VM).
fn kernel_args() -> String {
    std::env::var("XTASK_VM_KERNEL_ARGS").unwrap_or_else(|_| "mitigations=off tsc=reliable".into())
}

/// Boots `image` with `cmd` as the command; returns its exit status and its output.
pub fn boot(
    image: &VmImage,
    run_dir: &Path,
    cmd: &[OsString],
    opts: &VmOptions,
) -> Result<(i32, String)> {
    let cwd = std::env::current_dir().context("vm: no current directory")?;
    let mut initrd = fs::read(&image.initramfs).context(format_args!(
        "vm: cannot read {}",
        image.initramfs.display()
    ))?;
    let mut extra = Cpio::default();
    extra.file(
        "cmd.sh",
        0o755,
        &script::command_script(cmd, &cwd, std::env::vars_os()),
    );
    initrd.extend_from_slice(&extra.finish());
    let initrd_path = run_dir.join("initrd");
    fs::write(&initrd_path, &initrd)
        .context(format_args!("vm: cannot write {}", initrd_path.display()))?;
    let console = run_dir.join("console.log");
    let output = run_dir.join("output.log");

    let sh = util::shell()?;
    let kernel = &image.kernel;
    let (smp, mem) = (opts.smp.to_string(), opts.mem_mib.to_string());
    let append = format!("console=ttyS0 quiet loglevel=3 panic=-1 {}", kernel_args());
    let console_arg = format!("file:{}", console.display());
    let output_arg = format!("stdio,id=out,signal=off,logfile={}", output.display());
    let qemu = xshell::cmd!(
        sh,
        "qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp {smp} -m {mem}
         -nic none -display none -no-reboot -monitor none
         -kernel {kernel} -initrd {initrd_path} -append {append}
         -serial {console_arg} -chardev {output_arg} -serial chardev:out
         -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
    );
    let mut qemu = Command::from(qemu);
    qemu.stdin(Stdio::null());
    let status = util::status_within(qemu, opts.timeout)
        .context("vm: cannot start qemu-system-x86_64 (run `cargo xtask setup`)")?;

    let captured = fs::read(&output).unwrap_or_default();
    let log = fs::read(&console).unwrap_or_default();
    let log = String::from_utf8_lossy(&log).replace('\r', "");
    for line in log.lines().filter(|l| l.contains(WARN_TAG)) {
        eprintln!("vm: warning from the VM: {}", line.trim());
    }
    let code = match exit_status_from_console(&log) {
        Some(code) => code,
        None => {
            let why = match status {
                None => format!(
                    "timed out after {} s and killed QEMU (raise --timeout)",
                    opts.timeout.as_secs()
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
    Ok((code, String::from_utf8_lossy(&captured).into_owned()))
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
    }
}
