//! Small helpers: running commands, finding the workspace root, collecting failures.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// `cargo` as the running cargo named it (falls back to `cargo` on PATH).
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, echoing it; `Err` with the command line if it fails.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let line = show(cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

/// Runs `cmd` and returns its stdout (trimmed) if it succeeds.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A command line for messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Collects the failures of independent steps so every step runs and all failures are reported.
#[derive(Default)]
pub struct Steps {
    failures: Vec<String>,
    passed: Vec<String>,
}

impl Steps {
    /// Runs one named step, recording its outcome.
    pub fn step(&mut self, name: &str, f: impl FnOnce() -> Result<(), String>) {
        eprintln!("\n==> {name}");
        match f() {
            Ok(()) => self.passed.push(name.to_string()),
            Err(e) => {
                eprintln!("xtask: step `{name}` failed: {e}");
                self.failures.push(format!("{name}: {e}"));
            }
        }
    }

    /// Records a step that was skipped and why.
    pub fn skip(&mut self, name: &str, why: &str) {
        eprintln!("\n==> {name}: skipped: {why}");
    }

    /// The summary; `Err` if any step failed.
    pub fn finish(self) -> Result<(), String> {
        eprintln!(
            "\n==> summary: {} passed, {} failed",
            self.passed.len(),
            self.failures.len()
        );
        for p in &self.passed {
            eprintln!("    ok   {p}");
        }
        for f in &self.failures {
            eprintln!("    FAIL {f}");
        }
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(format!("{} step(s) failed", self.failures.len()))
        }
    }
}

/// Parses `--name value` from `args`.
pub fn flag_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Whether `--name` is in `args`.
pub fn has_flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}
