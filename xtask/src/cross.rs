//! `cargo xtask cross [--run] [--write] [--target TRIPLE]...`: the core and the firmware examples
//! on four bare-metal targets.
//!
//! For every target in [`TARGETS`]:
//! 1. builds `rpcrdma-core` alone for the target with each feature set in [`CORE_FEATURES`]
//!    (through `firmware-examples/core-check`, so the examples' `defmt` does not leak in);
//! 2. builds the firmware project (`firmware-examples/<dir>`, from its own directory so its
//!    `.cargo/config.toml` applies) in release: the example and the two size programs. Release
//!    builds link only if no panic path survived (the panic handler calls an undefined symbol);
//!    when one did, a second link with `--why-live` names the chain of callers;
//! 3. checks that the proof is not vacuous: the size baseline rebuilt with one deliberate
//!    out-of-bounds index (`--cfg rpcrdma_panic_canary`) must fail to link;
//! 4. reads the section sizes of the images: the example's, and the core's share
//!    (`size_probe − size_baseline`);
//! 5. with `--run`, runs the example under QEMU (the runner line of the project's
//!    `.cargo/config.toml`), decodes its defmt output with `defmt-print`, and checks the exit
//!    status, the `PASS` line and that nothing failed; the RAM figures come from its `ram:` line.
//!
//! `--write` (with `--run`) puts the figures into BENCHMARKS.md between `<!-- cross:start -->`
//! and `<!-- cross:end -->`.
//!
//! # Toolchain routes
//!
//! Chosen per target, automatically:
//! - **rustup**: the target's standard library is installed (`rustup target add …`): the running
//!   cargo builds as usual, linking with rust-lld;
//! - **debian**: otherwise, Debian's `rustc-web` / `cargo-web` / `rust-web-src` / `lld-22` build
//!   `core` from source: `RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build
//!   -Zbuild-std=core -Zbuild-std-features=compiler-builtins-mem`, linker `ld.lld-22`
//!   (`cargo xtask setup` installs them).
//!
//! Everything is cached under `target/firmware/<route>/` (and `defmt-print`, installed on first
//! use when it is not on PATH, under `target/firmware/tools/`); a warm run only relinks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, show};

/// One firmware target: a triple and the project that runs on it.
struct Target {
    triple: &'static str,
    /// The project under `firmware-examples/`.
    dir: &'static str,
    /// The core it stands for.
    cpu: &'static str,
}

/// The targets, in the order they are built and reported.
const TARGETS: &[Target] = &[
    Target {
        triple: "thumbv7em-none-eabihf",
        dir: "cortex-m4",
        cpu: "Cortex-M4F",
    },
    Target {
        triple: "riscv32imac-unknown-none-elf",
        dir: "riscv32",
        cpu: "RV32IMAC",
    },
    Target {
        triple: "riscv64gc-unknown-none-elf",
        dir: "riscv64",
        cpu: "RV64GC",
    },
    Target {
        triple: "aarch64-unknown-none",
        dir: "aarch64",
        cpu: "Cortex-A53",
    },
];

/// Feature sets `rpcrdma-core` is built with on every target.
const CORE_FEATURES: &[&[&str]] = &[&[], &["defmt"]];

/// The example program of each project.
const EXAMPLE: &str = "receive_path";
/// The image with every core entry point the example uses.
const PROBE: &str = "size_probe";
/// The same runtime without the core.
const BASELINE: &str = "size_baseline";
/// The symbol the release panic handler references and nothing defines.
const PANIC_SYMBOL: &str = "rpcrdma_firmware_release_build_has_a_panic_path";
/// The defmt log level compiled into every build (one value, so builds never thrash on it).
const DEFMT_LOG: &str = "debug";
/// The defmt-print installed when none is on PATH (defmt 1.x wire format).
const DEFMT_PRINT_VERSION: &str = "1.2.0";
/// A QEMU run that takes longer has hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

const HELP: &str = "\
cargo xtask cross [--run] [--write] [--target TRIPLE]...

Builds rpcrdma-core (with and without defmt) and the firmware examples for thumbv7em-none-eabihf,
riscv32imac-unknown-none-elf, riscv64gc-unknown-none-elf and aarch64-unknown-none; proves the
release images panic-free (the link fails otherwise) and reports their sizes.

  --run            also run every example under QEMU and check exit status and output
  --write          with --run: write the figures into BENCHMARKS.md (section `cross`)
  --target TRIPLE  only this target (repeatable)

Toolchains: rustup targets when installed, else Debian's rustc-web + rust-web-src + lld-22 with
-Zbuild-std=core (`cargo xtask setup` installs them). Cache: target/firmware/.
";

pub fn main(args: &[String]) -> Result<(), String> {
    let (mut run, mut write) = (false, false);
    let mut wanted: Vec<&str> = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--run" => run = true,
            "--write" => write = true,
            "--target" => {
                let t = args.next().ok_or("--target needs a triple")?;
                if !TARGETS.iter().any(|x| x.triple == t) {
                    return Err(format!(
                        "unknown target `{t}`; known: {}",
                        triples().join(", ")
                    ));
                }
                wanted.push(t);
            }
            "--help" | "-h" => {
                print!("{HELP}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n\n{HELP}")),
        }
    }
    if write && !run {
        return Err(
            "--write needs --run (the RAM figures and QEMU results come from the runs)".into(),
        );
    }
    let targets: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| wanted.is_empty() || wanted.contains(&t.triple))
        .collect();
    cross(&targets, run, write)
}

fn triples() -> Vec<&'static str> {
    TARGETS.iter().map(|t| t.triple).collect()
}

/// Why `cargo xtask cross --run` cannot run here, or `None` when every tool is installed.
pub fn missing_tools() -> Option<String> {
    let mut missing = Vec::new();
    for t in TARGETS {
        if let Err(e) = Route::choose(t.triple) {
            missing.push(e);
            break;
        }
        match runner(t) {
            Ok(cmd) if util::have(&cmd[0]) => {}
            Ok(cmd) => missing.push(format!("{} (cargo xtask setup)", cmd[0])),
            Err(e) => missing.push(e),
        }
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

// ---------------------------------------------------------------------------------------------
// Toolchain routes

#[derive(Clone, Debug)]
enum Route {
    /// The target's standard library is installed for the running toolchain.
    Rustup { cargo: PathBuf },
    /// Debian's rustc-web builds `core` from rust-web-src; lld-22 links.
    Debian {
        rustc: PathBuf,
        cargo: PathBuf,
        lld: PathBuf,
    },
}

impl Route {
    fn choose(triple: &str) -> Result<Route, String> {
        if rustup_has_target(triple) {
            let cargo = std::env::var_os("CARGO").map_or_else(|| "cargo".into(), PathBuf::from);
            return Ok(Route::Rustup { cargo });
        }
        debian_toolchain().map_err(|e| {
            format!(
                "no toolchain for {triple}: the running toolchain lacks the target \
                 (`rustup target add {triple}`) and {e}"
            )
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Route::Rustup { .. } => "rustup",
            Route::Debian { .. } => "debian",
        }
    }

    fn describe(&self) -> String {
        match self {
            Route::Rustup { cargo } => {
                let v = util::output(Command::new(cargo).arg("--version")).unwrap_or_default();
                format!("rustup target installed ({v}; rust-lld)")
            }
            Route::Debian { rustc, lld, .. } => {
                let v = util::output(Command::new(rustc).arg("--version")).unwrap_or_default();
                format!(
                    "Debian toolchain, -Zbuild-std=core ({v} = {}; linker {})",
                    rustc.display(),
                    lld.file_name().unwrap_or_default().to_string_lossy()
                )
            }
        }
    }

    /// `cargo` set up for this route and target: environment cleaned of host-build settings,
    /// one target directory per route, `DEFMT_LOG` fixed.
    fn cargo(&self, triple: &str, dir: &Path) -> Command {
        let mut cmd = match self {
            Route::Rustup { cargo } => Command::new(cargo),
            Route::Debian { cargo, .. } => Command::new(cargo),
        };
        cmd.current_dir(dir);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_BUILD_RUSTC_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("CARGO_TARGET_DIR", target_dir(self))
            .env("DEFMT_LOG", DEFMT_LOG)
            .env("CARGO_TERM_COLOR", "never");
        if let Route::Debian { rustc, lld, .. } = self {
            let linker_var = format!(
                "CARGO_TARGET_{}_LINKER",
                triple.to_uppercase().replace('-', "_")
            );
            cmd.env("RUSTC", rustc)
                .env("RUSTC_BOOTSTRAP", "1")
                .env(linker_var, lld);
        }
        cmd
    }

    /// The arguments of a release build for `triple`.
    fn build_args(&self, sub: &str, triple: &str) -> Vec<String> {
        let mut a: Vec<String> = [sub, "--release", "--locked", "--target", triple]
            .map(String::from)
            .to_vec();
        if let Route::Debian { .. } = self {
            a.push("-Zbuild-std=core".into());
            a.push("-Zbuild-std-features=compiler-builtins-mem".into());
        }
        a
    }
}

/// Whether the running toolchain has `triple`'s `core` installed.
fn rustup_has_target(triple: &str) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    util::output(Command::new(rustc).args(["--print", "target-libdir", "--target", triple]))
        .map(PathBuf::from)
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .is_some_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libcore-") && name.ends_with(".rlib")
            })
        })
}

/// Debian's rustc-web, cargo-web, rust-web-src and an lld, or what is missing.
fn debian_toolchain() -> Result<Route, String> {
    let setup =
        "run `cargo xtask setup` (Debian packages rustc-web, cargo-web, rust-web-src, lld-22)";
    let rustc = ["/usr/bin/rustc", "/usr/bin/rustc-web"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            let sysroot = util::output(Command::new(p).args(["--print", "sysroot"]));
            sysroot.is_some_and(|s| {
                Path::new(&s)
                    .join("lib/rustlib/src/rust/library/core/Cargo.toml")
                    .is_file()
            })
        })
        .ok_or_else(|| format!("Debian's rustc with rust-web-src is not installed: {setup}"))?;
    let cargo = ["/usr/bin/cargo", "/usr/bin/cargo-web"]
        .iter()
        .map(PathBuf::from)
        .find(|p| util::output(Command::new(p).arg("--version")).is_some())
        .ok_or_else(|| format!("Debian's cargo is not installed: {setup}"))?;
    let lld = find_lld().ok_or_else(|| format!("no ld.lld found: {setup}"))?;
    Ok(Route::Debian { rustc, cargo, lld })
}

/// `ld.lld-22`, else the newest `ld.lld-NN`, else `ld.lld`, on PATH.
fn find_lld() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let on_path = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    if let Some(p) = on_path("ld.lld-22") {
        return Some(p);
    }
    let mut versioned: Vec<(u32, PathBuf)> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix("ld.lld-")?.parse().ok()?;
            Some((v, e.path()))
        })
        .collect();
    versioned.sort();
    versioned
        .pop()
        .map(|(_, p)| p)
        .or_else(|| on_path("ld.lld"))
}

fn target_dir(route: &Route) -> PathBuf {
    firmware_cache().join(route.name())
}

fn firmware_cache() -> PathBuf {
    util::root().join("target/firmware")
}

fn firmware_root() -> PathBuf {
    util::root().join("firmware-examples")
}

fn image(route: &Route, triple: &str, bin: &str) -> PathBuf {
    target_dir(route).join(triple).join("release").join(bin)
}

// ---------------------------------------------------------------------------------------------
// The command

/// What one target produced.
struct Outcome {
    triple: &'static str,
    cpu: &'static str,
    route: Option<Route>,
    failures: Vec<String>,
    core_builds: Vec<String>,
    sizes: Option<Sizes>,
    panic_free: Vec<(String, PanicProof)>,
    canary: Option<bool>,
    run: Option<RunReport>,
}

#[derive(Clone, Debug)]
enum PanicProof {
    /// Linked with the undefined-symbol panic handler: no panic path.
    Proved,
    /// Did not link; the chain of references that keeps a panic alive.
    PanicPath(String),
}

struct Sizes {
    example: SectionSizes,
    probe: SectionSizes,
    baseline: SectionSizes,
}

struct RunReport {
    command: String,
    status: String,
    key_lines: Vec<String>,
    ram: BTreeMap<String, u64>,
    passed: bool,
}

fn cross(targets: &[&Target], run: bool, write: bool) -> Result<(), String> {
    let started = Instant::now();
    let defmt_print = if run {
        Some(defmt_print().map_err(|e| format!("cannot decode the firmware's defmt output: {e}"))?)
    } else {
        None
    };
    let mut outcomes = Vec::new();
    for t in targets {
        eprintln!("\n==> cross: {} ({})", t.triple, t.dir);
        let mut o = Outcome {
            triple: t.triple,
            cpu: t.cpu,
            route: None,
            failures: Vec::new(),
            core_builds: Vec::new(),
            sizes: None,
            panic_free: Vec::new(),
            canary: None,
            run: None,
        };
        match Route::choose(t.triple) {
            Ok(route) => {
                eprintln!("toolchain route: {} — {}", route.name(), route.describe());
                o.route = Some(route.clone());
                build_target(t, &route, &mut o);
                if run && o.failures.is_empty() {
                    if let Some(dp) = &defmt_print {
                        match run_example(t, &route, dp) {
                            Ok(r) => {
                                if !r.passed {
                                    o.failures.push(format!("QEMU run: {}", r.status));
                                }
                                o.run = Some(r);
                            }
                            Err(e) => o.failures.push(format!("QEMU run: {e}")),
                        }
                    }
                }
            }
            Err(e) => o.failures.push(e),
        }
        outcomes.push(o);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report = report(&outcomes, run);
    println!("{report}");
    let failed: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.failures.iter().map(move |f| format!("{}: {f}", o.triple)))
        .collect();
    if write {
        if failed.is_empty() && outcomes.len() == TARGETS.len() {
            let path = util::root().join("BENCHMARKS.md");
            crate::bench::write_section(&path, "cross", &report)?;
            eprintln!("cross: wrote the `cross` section of {}", path.display());
        } else {
            eprintln!("cross: BENCHMARKS.md not written (a target failed or was left out)");
        }
    }
    if failed.is_empty() {
        eprintln!(
            "cross: all {} target(s) passed in {elapsed:.0} s",
            outcomes.len()
        );
        Ok(())
    } else {
        Err(format!(
            "cross: {} failure(s):\n  {}",
            failed.len(),
            failed.join("\n  ")
        ))
    }
}

fn build_target(t: &Target, route: &Route, o: &mut Outcome) {
    let fw = firmware_root();
    // 1. The core alone, each feature set.
    for features in CORE_FEATURES {
        let mut args = route.build_args("build", t.triple);
        args.extend(["-p".into(), "rpcrdma-core-check".into()]);
        if !features.is_empty() {
            args.extend(["--features".into(), features.join(",")]);
        }
        let label = if features.is_empty() {
            "rpcrdma-core (no features)".to_string()
        } else {
            format!("rpcrdma-core --features {}", features.join(","))
        };
        match run_streaming(route.cargo(t.triple, &fw).args(&args), true) {
            Ok(_) => o.core_builds.push(label),
            Err(e) => o.failures.push(format!("{label}: {}", e.summary)),
        }
    }
    let project = fw.join(t.dir);
    // 2. The non-vacuity check first: it relinks the baseline, which step 3 then rebuilds.
    let mut canary = route.build_args("rustc", t.triple);
    canary.extend(["--bin".into(), BASELINE.into(), "--".into()]);
    canary.extend(["--cfg".into(), "rpcrdma_panic_canary".into()]);
    match run_streaming(route.cargo(t.triple, &project).args(&canary), false) {
        Ok(_) => {
            o.canary = Some(false);
            o.failures.push(format!(
                "panic canary: {BASELINE} with a deliberate out-of-bounds index linked, so a \
                 surviving panic path would not fail the build (the proof is vacuous here)"
            ));
        }
        Err(e) if e.output.contains(PANIC_SYMBOL) => {
            eprintln!("panic canary: the deliberate panic path failed the link, as it must");
            o.canary = Some(true);
        }
        Err(e) => o
            .failures
            .push(format!("panic canary build: {}", e.summary)),
    }
    // 3. The firmware project: example and size programs, release, the panic-freedom proof.
    let mut args = route.build_args("build", t.triple);
    args.push("--bins".into());
    let build = run_streaming(route.cargo(t.triple, &project).args(&args), true);
    for bin in [EXAMPLE, PROBE, BASELINE] {
        let failed_here = match &build {
            Ok(_) => false,
            Err(e) => e.output.contains(&format!("(bin \"{bin}\")")),
        };
        if failed_here
            && build
                .as_ref()
                .is_err_and(|e| e.output.contains(PANIC_SYMBOL))
        {
            let chain = why_live(t, route, &project, bin);
            o.failures
                .push(format!("{bin}: a panic path survived:\n{chain}"));
            o.panic_free
                .push((bin.into(), PanicProof::PanicPath(chain)));
        } else if !failed_here && image(route, t.triple, bin).is_file() && build.is_ok() {
            o.panic_free.push((bin.into(), PanicProof::Proved));
        }
    }
    if let Err(e) = &build {
        if !e.output.contains(PANIC_SYMBOL) {
            o.failures.push(format!("firmware build: {}", e.summary));
        }
        return;
    }
    // 4. Sizes.
    let sizes = (|| -> Result<Sizes, String> {
        Ok(Sizes {
            example: section_sizes(&image(route, t.triple, EXAMPLE))?,
            probe: section_sizes(&image(route, t.triple, PROBE))?,
            baseline: section_sizes(&image(route, t.triple, BASELINE))?,
        })
    })();
    match sizes {
        Ok(s) => o.sizes = Some(s),
        Err(e) => o.failures.push(format!("sizes: {e}")),
    }
}

/// Relinks `bin` reporting why the panic handler is live: the chain of callers.
fn why_live(t: &Target, route: &Route, project: &Path, bin: &str) -> String {
    let mut args = route.build_args("rustc", t.triple);
    args.extend(["--bin".into(), bin.into(), "--".into()]);
    args.extend([
        "-C".into(),
        "link-arg=--why-live=*rust_begin_unwind*".into(),
        "-C".into(),
        "link-arg=--noinhibit-exec".into(),
        "-W".into(),
        "linker-messages".into(),
    ]);
    let out = match run_streaming(route.cargo(t.triple, project).args(&args), false) {
        Ok(out) => out,
        Err(e) => e.output,
    };
    // `--noinhibit-exec` wrote an image with the symbol unresolved: never leave it to be run.
    let _ = std::fs::remove_file(image(route, t.triple, bin));
    let chain: Vec<String> = out
        .lines()
        .filter_map(|l| l.split("referenced by: ").nth(1))
        .map(|l| {
            let l = l.trim_end();
            let (l, entry) = match l.strip_suffix(" (entry point)") {
                Some(rest) => (rest, " (entry point)"),
                None => (l, ""),
            };
            let symbol = match l.find(":(") {
                Some(i) => l[i + 2..].strip_suffix(')').unwrap_or(&l[i + 2..]),
                None => l,
            };
            format!("    <- {symbol}{entry}")
        })
        .collect();
    if chain.is_empty() {
        format!("    (no --why-live chain; linker output:)\n{out}")
    } else {
        format!("    panic handler\n{}", chain.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// Running cargo, QEMU and defmt-print

struct CommandError {
    summary: String,
    output: String,
}

/// Runs `cmd`, echoing its stderr as it comes (without cargo's per-crate progress; nothing with
/// `echo` false), and returns stdout + stderr.
fn run_streaming(cmd: &mut Command, echo: bool) -> Result<String, CommandError> {
    let line = show(cmd);
    eprintln!("$ {line}");
    let fail = |summary: String, output: String| CommandError { summary, output };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("could not start `{line}`: {e}"), String::new()))?;
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_to_string(&mut s);
        }
        s
    });
    let mut output = String::new();
    if let Some(err) = child.stderr.take() {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let progress =
                l.trim_start().starts_with("Compiling ") || l.trim_start().starts_with("Fresh ");
            if echo && !progress {
                eprintln!("{l}");
            }
            output.push_str(&l);
            output.push('\n');
        }
    }
    output.push_str(&reader.join().unwrap_or_default());
    let status = child
        .wait()
        .map_err(|e| fail(format!("`{line}`: {e}"), output.clone()))?;
    if status.success() {
        Ok(output)
    } else {
        Err(fail(format!("`{line}` failed ({status})"), output))
    }
}

/// The QEMU command of a project: its `.cargo/config.toml` runner line.
fn runner(t: &Target) -> Result<Vec<String>, String> {
    let path = firmware_root().join(t.dir).join(".cargo/config.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| {
            let v = l
                .trim()
                .strip_prefix("runner")?
                .trim_start()
                .strip_prefix('=')?;
            let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some(v.split_whitespace().map(String::from).collect::<Vec<_>>())
        })
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{}: no `runner = \"…\"` line", path.display()))
}

fn run_example(t: &Target, route: &Route, defmt_print: &Path) -> Result<RunReport, String> {
    let elf = image(route, t.triple, EXAMPLE);
    let mut qemu = runner(t)?;
    qemu.push(elf.display().to_string());
    let frames_path = elf.with_extension("defmt");
    let log_path = elf.with_extension("log");
    let command = qemu.join(" ");
    eprintln!("$ {command} > {}", frames_path.display());
    let frames = std::fs::File::create(&frames_path)
        .map_err(|e| format!("{}: {e}", frames_path.display()))?;
    let started = Instant::now();
    let mut child = Command::new(&qemu[0])
        .args(&qemu[1..])
        .stdin(Stdio::null())
        .stdout(frames)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {}: {e} (cargo xtask setup)", qemu[0]))?;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > RUN_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "timed out after {} s; QEMU killed",
                    RUN_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("QEMU ran {seconds:.2} s");
    let mut qemu_stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut qemu_stderr);
    }
    // Decode the frames.
    let decoded = Command::new(defmt_print)
        .arg("-e")
        .arg(&elf)
        .stdin(std::fs::File::open(&frames_path).map_err(|e| e.to_string())?)
        .output()
        .map_err(|e| format!("defmt-print: {e}"))?;
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
    let passed = code == Some(0) && pass.is_some() && fails.is_empty() && decoded.status.success();
    let status_text = match (code, pass, fails.first()) {
        (Some(0), Some(_), None) if decoded.status.success() => "exit 0, PASS".to_string(),
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
        .map(|l| l.trim().to_string())
        .chain(fails.iter().take(5).map(|l| l.trim().to_string()))
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
        command: format!("{} …/{EXAMPLE}", qemu[..qemu.len() - 1].join(" ")),
        status: status_text,
        key_lines,
        ram,
        passed,
    })
}

/// `defmt-print` 1.x: on PATH, or installed once under `target/firmware/tools`.
fn defmt_print() -> Result<PathBuf, String> {
    let usable = |p: &Path| {
        util::output(Command::new(p).arg("--version")).is_some_and(|v| v.contains("defmt-print 1."))
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(p) = std::env::split_paths(&path)
        .map(|d| d.join("defmt-print"))
        .find(|p| p.is_file() && usable(p))
    {
        return Ok(p);
    }
    let root = firmware_cache().join("tools");
    let cached = root.join("bin/defmt-print");
    if cached.is_file() && usable(&cached) {
        return Ok(cached);
    }
    eprintln!(
        "cross: installing defmt-print {DEFMT_PRINT_VERSION} into {} (once)",
        root.display()
    );
    let started = Instant::now();
    util::run(
        util::cargo()
            .args(["install", "defmt-print", "--locked", "--debug", "--version"])
            .arg(format!("={DEFMT_PRINT_VERSION}"))
            .arg("--root")
            .arg(&root)
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    eprintln!(
        "cross: defmt-print installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if usable(&cached) {
        Ok(cached)
    } else {
        Err(format!("{} does not run", cached.display()))
    }
}

// ---------------------------------------------------------------------------------------------
// ELF section sizes

/// Bytes per kind of section, as `size -A` would add them up.
#[derive(Clone, Copy, Debug, Default)]
struct SectionSizes {
    /// Allocated, executable.
    text: u64,
    /// Allocated, read-only data (vector tables, constants).
    rodata: u64,
    /// Allocated, writable, with contents (initialised data).
    data: u64,
    /// Allocated, writable, no contents (zeroed data), stacks and heaps left out.
    bss: u64,
}

impl SectionSizes {
    fn minus(&self, other: &SectionSizes) -> [i64; 4] {
        [
            self.text as i64 - other.text as i64,
            self.rodata as i64 - other.rodata as i64,
            self.data as i64 - other.data as i64,
            self.bss as i64 - other.bss as i64,
        ]
    }
}

fn section_sizes(path: &Path) -> Result<SectionSizes, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = || format!("{}: not a little-endian ELF file", path.display());
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(5) != Some(&1) {
        return Err(bad());
    }
    let is64 = match bytes.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(bad()),
    };
    let rd = |at: usize, n: usize| -> Result<u64, String> {
        let b = bytes.get(at..at + n).ok_or_else(bad)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    };
    let word = if is64 { 8 } else { 4 };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (rd(0x28, 8)?, rd(0x3a, 2)?, rd(0x3c, 2)?, rd(0x3e, 2)?)
    } else {
        (rd(0x20, 4)?, rd(0x2e, 2)?, rd(0x30, 2)?, rd(0x32, 2)?)
    };
    struct Section {
        name: u64,
        kind: u64,
        flags: u64,
        offset: u64,
        size: u64,
    }
    let section = |i: u64| -> Result<Section, String> {
        let at = (shoff + i * shentsize) as usize;
        Ok(Section {
            name: rd(at, 4)?,
            kind: rd(at + 4, 4)?,
            flags: rd(at + 8, word)?,
            offset: rd(at + 8 + 2 * word, word)?,
            size: rd(at + 8 + 3 * word, word)?,
        })
    };
    let strtab = section(shstrndx)?;
    let name_of = |s: &Section| -> String {
        let start = (strtab.offset + s.name) as usize;
        let rest = bytes.get(start..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(0);
        String::from_utf8_lossy(&rest[..end]).into_owned()
    };
    const SHT_NOBITS: u64 = 8;
    const SHF_WRITE: u64 = 1;
    const SHF_ALLOC: u64 = 2;
    const SHF_EXECINSTR: u64 = 4;
    let mut sizes = SectionSizes::default();
    for i in 0..shnum {
        let s = section(i)?;
        if s.flags & SHF_ALLOC == 0 {
            continue;
        }
        let name = name_of(&s);
        if s.flags & SHF_EXECINSTR != 0 {
            sizes.text += s.size;
        } else if s.flags & SHF_WRITE == 0 {
            sizes.rodata += s.size;
        } else if s.kind != SHT_NOBITS {
            sizes.data += s.size;
        } else if !(name.starts_with(".stack") || name.starts_with(".heap")) {
            sizes.bss += s.size;
        }
    }
    Ok(sizes)
}

// ---------------------------------------------------------------------------------------------
// The report (printed, and the BENCHMARKS.md section)

fn kib(b: u64) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

fn report(outcomes: &[Outcome], run: bool) -> String {
    let mut s = String::from(
        "## Firmware: cross builds, QEMU runs, size, RAM, panic-freedom\n\n\
         rpcrdma-core embedded in `no_std` firmware without an allocator \
         (`firmware-examples/`), on four bare-metal targets under QEMU.\n\n",
    );
    let routes: Vec<String> = outcomes
        .iter()
        .map(|o| match &o.route {
            Some(r) => format!("{}: {}", o.triple, r.describe()),
            None => format!("{}: no toolchain", o.triple),
        })
        .collect();
    let _ = writeln!(
        s,
        "Command: `cargo xtask cross --run --write`. Release \
         profile of `firmware-examples/`: opt-level \"s\", fat LTO, codegen-units 1, \
         panic = \"abort\"; defmt on semihosting, decoded with defmt-print.\n"
    );
    let _ = writeln!(s, "Toolchain route per target:\n");
    for r in &routes {
        let _ = writeln!(s, "- {r}");
    }

    // Builds and runs.
    let _ = writeln!(s, "\n### Builds and QEMU runs\n");
    let _ = writeln!(
        s,
        "| target | CPU | core alone builds | example under QEMU | result |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for o in outcomes {
        let builds = if o.core_builds.len() == CORE_FEATURES.len() {
            "no features; `defmt`".to_string()
        } else {
            format!("{} of {}", o.core_builds.len(), CORE_FEATURES.len())
        };
        let (cmd, result) = match &o.run {
            Some(r) => (format!("`{}`", r.command), r.status.clone()),
            None if run => ("—".into(), "not run (build failed)".into()),
            None => ("—".into(), "not run (no --run)".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {builds} | {cmd} | {result} |",
            o.triple, o.cpu
        );
    }
    for o in outcomes {
        if let Some(r) = &o.run {
            let _ = writeln!(s, "\n`{}`:\n\n```text", o.triple);
            for l in &r.key_lines {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "```");
        }
    }

    // Sizes.
    let _ = writeln!(s, "\n### Size\n");
    let _ = writeln!(
        s,
        "Section sizes of the release images (`size -A` classes: .text = executable, \
         .rodata = read-only data incl. vector tables, .data, .bss without stacks; the defmt \
         string table is not loaded). **Core** = `size_probe` − `size_baseline`: the same \
         runtime, logger and DMA memory with and without every core entry point the example uses \
         (pool, decode, XDR view, `HeaderRepr`, reply and RDMA_ERROR encoders, ONC RPC helpers), \
         because with LTO the core is inlined into its callers and has no symbols of its own. \
         The core has no statics: its RAM is the pool the caller places (next table). \
         `size -A target/firmware/<route>/<target>/release/size_probe` (and the same for \
         the other two images) shows the same sections.\n"
    );
    let _ = writeln!(
        s,
        "| target | example .text | .rodata | .data | .bss | **core .text** | core .rodata | core .data | core .bss |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        if let Some(z) = &o.sizes {
            let core = z.probe.minus(&z.baseline);
            let e = z.example;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | **{}** ({}) | {} | {} | {} |",
                o.triple,
                e.text,
                e.rodata,
                e.data,
                e.bss,
                core[0],
                kib(core[0].max(0) as u64),
                core[1],
                core[2],
                core[3]
            );
        }
    }
    if let Some(z) = outcomes
        .iter()
        .find(|o| o.triple == "thumbv7em-none-eabihf")
        .and_then(|o| o.sizes.as_ref())
    {
        let core = z.probe.minus(&z.baseline)[0];
        let verdict = if core <= 16 * 1024 { "met" } else { "MISSED" };
        let _ = writeln!(
            s,
            "\nGoal: the core's code ≤ 16 KiB on thumbv7em — **{verdict}**: {core} bytes ({}) \
             with its defmt trace points compiled in (`DEFMT_LOG={DEFMT_LOG}`).",
            kib(core.max(0) as u64)
        );
    }

    // RAM.
    let _ = writeln!(s, "\n### RAM\n");
    let _ = writeln!(
        s,
        "RAM of the receive path = `N × stride` (DMA memory: N Receive buffers, each \
         `buffer_size` rounded up to the 64-byte cache line) + `size_of::<RecvPool<N>>()` \
         (bookkeeping: `per_descriptor × N + fixed`; per descriptor an 8-byte state — generation \
         and state — plus a 2-byte free-list slot). Measured on each target by the example \
         (its `ram:` line); `server` is the example's own server state around the pool (WR \
         array, reassembly and send buffers), for comparison.\n"
    );
    let _ = writeln!(
        s,
        "| target | N | buffer_size | DMA memory N × stride | pool bookkeeping | per descriptor | fixed | total | example server state |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    if outcomes.iter().all(|o| o.run.is_none()) {
        let _ = writeln!(
            s,
            "| (run with `--run`: the figures come from the examples) |||||||||"
        );
    }
    for o in outcomes {
        let Some(r) = &o.run else { continue };
        let g = |k: &str| r.ram.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} × {} = {} | {} | {} | {} | {} ({}) | {} |",
            o.triple,
            g("N"),
            g("buffer"),
            g("N"),
            g("stride"),
            g("region"),
            g("pool"),
            g("per_descriptor"),
            g("fixed"),
            g("region") + g("pool"),
            kib(g("region") + g("pool")),
            g("server")
        );
    }

    // Panic-freedom.
    let _ = writeln!(s, "\n### Panic-freedom\n");
    let _ = writeln!(
        s,
        "Every release image is linked with a panic handler that calls `{PANIC_SYMBOL}`, which \
         nothing defines: an image links only if no panic path survived optimisation. Inputs \
         reach the core through `black_box`, so the decoder is compiled for arbitrary bytes. \
         `receive_path` covers decode + pool + reply / RDMA_ERROR encoding as the example drives \
         them (and the example's own code); `size_probe` every core entry point it uses, \
         `HeaderRepr::parse` included. The canary rebuilds `size_baseline` with one deliberate \
         out-of-bounds index and must fail to link — it shows the check is live on that \
         toolchain. Release builds have no overflow checks and no debug assertions (Rust's \
         release defaults), so integer overflow is not a panic path here; debug builds keep \
         them and a reporting panic handler.\n\n\
         The one panic path this check found in the core was removed: `HeaderRepr::parse` \
         collected chunk segments with heapless's `FromIterator`, which panics on overflow \
         (unreachable after decode, which caps every chunk at the capacity, but the path \
         survived optimisation); it now pushes and stops at the capacity \
         (`core/src/wire/repr.rs`, `segment_vec`).\n"
    );
    let _ = writeln!(
        s,
        "| target | receive_path | size_probe | size_baseline | canary |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for o in outcomes {
        let cell = |bin: &str| match o.panic_free.iter().find(|(b, _)| b == bin) {
            Some((_, PanicProof::Proved)) => "no panic path".to_string(),
            Some((_, PanicProof::PanicPath(_))) => "**PANIC PATH**".to_string(),
            None => "not built".to_string(),
        };
        let canary = match o.canary {
            Some(true) => "link failed, as it must",
            Some(false) => "**linked: check not live**",
            None => "not run",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {canary} |",
            o.triple,
            cell(EXAMPLE),
            cell(PROBE),
            cell(BASELINE)
        );
    }
    for o in outcomes {
        for (bin, proof) in &o.panic_free {
            if let PanicProof::PanicPath(chain) = proof {
                let _ = writeln!(s, "\n{} `{bin}`:\n\n```text\n{chain}\n```", o.triple);
            }
        }
    }
    let failures: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.failures
                .iter()
                .map(move |f| format!("- {}: {f}", o.triple))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\n### Failures\n\n{}", failures.join("\n"));
    }
    s
}
