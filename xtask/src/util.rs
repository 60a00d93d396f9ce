//! Shared plumbing: the workspace root, a shell, cargo, tools on PATH, errors, and the step
//! collector that lets every step run and reports all failures at the end.
//!
//! Commands run through `xshell` (it echoes each command line and checks its status). Two
//! things xshell does not do are here on top of it: returning a child's exit status (the VM
//! harness passes it on) and killing a child that outlives a timeout (QEMU).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use wait_timeout::ChildExt;
use xshell::{Cmd, Shell};

/// An error message for the user; every failure of the xtask ends as one.
#[derive(Debug)]
pub struct Error(pub String);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_string())
    }
}

impl From<xshell::Error> for Error {
    fn from(e: xshell::Error) -> Self {
        Error(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(e.to_string())
    }
}

/// Adds what was being done to an error.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{what}: {e}")))
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// A shell in the workspace root.
pub fn shell() -> Result<Shell> {
    let sh = Shell::new()?;
    sh.change_dir(root());
    Ok(sh)
}

/// The cargo that runs this xtask (`$CARGO`), else `cargo` on PATH.
pub fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cargo` in the shell's directory.
pub fn cargo(sh: &Shell) -> Cmd<'_> {
    sh.cmd(cargo_program())
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    which::which(program).is_ok()
}

/// `program` on PATH or in the sbin directories (which a user's PATH may lack).
pub fn find_tool(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    let search = std::env::join_paths(dirs).ok()?;
    which::which_in(program, Some(search), root()).ok()
}

/// Runs `cmd` (echoed, streams inherited) and returns its exit status, whatever it is.
pub fn status(cmd: Cmd<'_>) -> Result<ExitStatus> {
    eprintln!("$ {cmd}");
    let line = cmd.to_string();
    Command::from(cmd)
        .status()
        .context(format_args!("cannot run `{line}`"))
}

/// Runs `cmd` as set up by the caller (streams and all); kills it after `timeout`.
/// `Ok(None)`: it timed out and was killed.
pub fn status_within(mut cmd: Command, timeout: Duration) -> Result<Option<ExitStatus>> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().context(format_args!("cannot start {name}"))?;
    match child.wait_timeout(timeout)? {
        Some(status) => Ok(Some(status)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Ok(None)
        }
    }
}

/// The process exit code that stands for `status` (128 + signal when killed).
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Collects the outcomes of independent steps so every step runs and all failures are
/// reported.
#[derive(Default)]
pub struct Steps {
    failures: Vec<String>,
    passed: Vec<String>,
    skipped: Vec<String>,
}

impl Steps {
    /// Runs one named step, recording its outcome.
    pub fn step(&mut self, name: &str, f: impl FnOnce() -> Result<()>) {
        eprintln!("\n==> {name}");
        let started = std::time::Instant::now();
        match f() {
            Ok(()) => self
                .passed
                .push(format!("{name} ({:.0} s)", started.elapsed().as_secs_f64())),
            Err(e) => {
                eprintln!("xtask: step `{name}` failed: {e}");
                self.failures.push(format!("{name}: {e}"));
            }
        }
    }

    /// Records a step that was skipped and why.
    pub fn skip(&mut self, name: &str, why: &str) {
        eprintln!("\n==> {name}: skipped: {why}");
        self.skipped.push(format!("{name}: {why}"));
    }

    /// The summary; `Err` if any step failed.
    pub fn finish(self) -> Result<()> {
        eprintln!(
            "\n==> summary: {} passed, {} skipped, {} failed",
            self.passed.len(),
            self.skipped.len(),
            self.failures.len()
        );
        for p in &self.passed {
            eprintln!("    ok   {p}");
        }
        for s in &self.skipped {
            eprintln!("    skip {s}");
        }
        for f in &self.failures {
            eprintln!("    FAIL {f}");
        }
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(format!("{} step(s) failed", self.failures.len()).into())
        }
    }
}

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in `path`
/// (appending the section if absent).
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let start = format!("<!-- {name}:start -->");
    let end = format!("<!-- {name}:end -->");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{start}\n{body}\n{end}");
    let new = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &text[..a], section, &text[b + end.len()..])
        }
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(path, new).context(format_args!("write {}", path.display()))
}
