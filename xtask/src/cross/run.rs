//! Step 5: the example under QEMU, its defmt output decoded with `defmt-print`, the verdict.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::toolchain::Route;
use super::{firmware_cache, firmware_root, EXAMPLE, RUN_TIMEOUT};
use crate::matrix::Target;
use crate::util::{self, Context, Result};

/// The defmt-print installed when none is on PATH (defmt 1.x wire format).
const DEFMT_PRINT_VERSION: &str = "1.2.0";

pub struct RunReport {
    pub command: String,
    pub status: String,
    pub key_lines: Vec<String>,
    pub ram: BTreeMap<String, u64>,
    pub passed: bool,
}

/// The QEMU command of a project: the `runner` of its `.cargo/config.toml`.
pub fn runner(t: &Target) -> Result<Vec<String>> {
    let path = firmware_root().join(t.dir).join(".cargo/config.toml");
    let text = std::fs::read_to_string(&path).context(path.display())?;
    let config: toml::Table = text.parse().context(path.display())?;
    let runner = config
        .get("target")
        .and_then(|v| v.get(t.triple))
        .and_then(|v| v.get("runner"));
    let words: Vec<String> = match runner {
        Some(toml::Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    if words.is_empty() {
        return Err(format!("{}: no [target.{}] runner", path.display(), t.triple).into());
    }
    Ok(words)
}

pub fn run_example(t: &Target, route: &Route, defmt_print: &Path) -> Result<RunReport> {
    let elf = route.image(t.triple, EXAMPLE);
    let qemu = runner(t)?;
    let frames_path = elf.with_extension("defmt");
    let stderr_path = elf.with_extension("qemu-stderr");
    let log_path = elf.with_extension("log");
    let command = format!("{} {}", qemu.join(" "), elf.display());
    eprintln!("$ {command} > {}", frames_path.display());
    let mut cmd = Command::new(&qemu[0]);
    cmd.args(&qemu[1..])
        .arg(&elf)
        .stdin(Stdio::null())
        .stdout(File::create(&frames_path).context(frames_path.display())?)
        .stderr(File::create(&stderr_path).context(stderr_path.display())?);
    let started = Instant::now();
    let status = util::status_within(cmd, RUN_TIMEOUT)
        .context(format_args!(
            "could not run {} (cargo xtask setup)",
            qemu[0]
        ))?
        .ok_or_else(|| format!("timed out after {} s; QEMU killed", RUN_TIMEOUT.as_secs()))?;
    eprintln!("QEMU ran {:.2} s", started.elapsed().as_secs_f64());
    let qemu_stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // Decode the frames.
    let sh = util::shell()?;
    let decoded = sh
        .cmd(defmt_print)
        .arg("-e")
        .arg(&elf)
        .stdin(std::fs::read(&frames_path)?)
        .quiet()
        .ignore_status()
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&decoded.stdout),
        String::from_utf8_lossy(&decoded.stderr)
    );
    let _ = std::fs::write(&log_path, &text);
    eprint!("{text}");
    if !qemu_stderr.trim().is_empty() {
        eprintln!("qemu stderr: {}", qemu_stderr.trim());
    }
    let lines: Vec<&str> = text.lines().collect();
    let pass = lines.iter().find(|l| l.contains("PASS: "));
    let fails: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("FAIL") || l.trim_start().starts_with("ERROR"))
        .collect();
    let code = status.code();
    let exit = code.map_or_else(|| format!("killed ({status})"), |c| format!("exit {c}"));
    let decoded_ok = decoded.status.success();
    let passed = code == Some(0) && pass.is_some() && fails.is_empty() && decoded_ok;
    let status_text = match (code, pass, fails.first()) {
        (Some(0), Some(_), None) if decoded_ok => "exit 0, PASS".to_string(),
        (Some(0), Some(_), None) => format!("exit 0 but defmt-print failed ({})", decoded.status),
        (_, _, Some(f)) => format!("{exit}; {}", f.trim()),
        (_, None, None) => format!(
            "{exit}; no PASS line in the decoded output ({})",
            log_path.display()
        ),
        (_, Some(_), None) => format!("{exit} (expected 0)"),
    };
    let key_lines = lines
        .iter()
        .filter(|l| {
            l.contains("rpcrdma firmware example on")
                || l.contains("pool counters:")
                || l.contains("PASS: ")
        })
        .chain(fails.iter().take(5).copied())
        .map(|l| l.trim().to_string())
        .collect();
    let ram = lines
        .iter()
        .find_map(|l| l.split_once("ram: "))
        .map(|(_, kv)| {
            kv.split_whitespace()
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(RunReport {
        command: format!("{} …/{EXAMPLE}", qemu.join(" ")),
        status: status_text,
        key_lines,
        ram,
        passed,
    })
}

/// `defmt-print` 1.x: on PATH, or installed once under `target/firmware/tools` (by
/// `cargo xtask setup`, or here on first use).
pub fn ensure_defmt_print() -> Result<PathBuf> {
    let sh = util::shell()?;
    let usable = |p: &Path| {
        sh.cmd(p)
            .arg("--version")
            .quiet()
            .ignore_stderr()
            .read()
            .is_ok_and(|v| v.contains("defmt-print 1."))
    };
    if let Some(p) = which::which_all("defmt-print")
        .into_iter()
        .flatten()
        .find(|p| usable(p))
    {
        return Ok(p);
    }
    let root = firmware_cache().join("tools");
    let cached = root.join("bin/defmt-print");
    if usable(&cached) {
        return Ok(cached);
    }
    eprintln!(
        "cross: installing defmt-print {DEFMT_PRINT_VERSION} into {} (once)",
        root.display()
    );
    let started = Instant::now();
    util::cargo(&sh)
        .args(["install", "defmt-print", "--locked", "--debug", "--version"])
        .arg(format!("={DEFMT_PRINT_VERSION}"))
        .arg("--root")
        .arg(&root)
        .env_remove("CARGO_TARGET_DIR")
        .run()?;
    eprintln!(
        "cross: defmt-print installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if usable(&cached) {
        Ok(cached)
    } else {
        Err(format!("{} does not run", cached.display()).into())
    }
}
