//! Steps 1-4 of a target: the libraries alone, the panic canary, the firmware project with its
//! panic-freedom proof, and the section sizes of the images.

use std::path::Path;

use object::{Object, ObjectSection, SectionFlags};
use xshell::{Cmd, Shell};

use super::toolchain::Route;
use super::{firmware_root, Outcome, BASELINE, EXAMPLE, PANIC_SYMBOL, POOL_PROBE, PROBE};
use crate::matrix::{Target, TARGET_LIBRARIES};
use crate::util::{Context, Result};

#[derive(Clone, Debug)]
pub enum PanicProof {
    /// Linked with the undefined-symbol panic handler: no panic path.
    Proved,
    /// Did not link; the chain of references that keeps a panic alive.
    PanicPath(String),
}

/// Bytes per kind of section, as `size -A` would add them up.
#[derive(Clone, Copy, Debug, Default)]
pub struct SectionSizes {
    /// Allocated, executable.
    pub text: u64,
    /// Allocated, read-only data (vector tables, constants).
    pub rodata: u64,
    /// Allocated, writable, with contents (initialised data).
    pub data: u64,
    /// Allocated, writable, no contents (zeroed data), stacks and heaps left out.
    pub bss: u64,
}

impl SectionSizes {
    pub fn minus(&self, other: &SectionSizes) -> [i64; 4] {
        [
            self.text as i64 - other.text as i64,
            self.rodata as i64 - other.rodata as i64,
            self.data as i64 - other.data as i64,
            self.bss as i64 - other.bss as i64,
        ]
    }
}

pub struct Sizes {
    pub example: SectionSizes,
    pub probe: SectionSizes,
    pub pool_probe: SectionSizes,
    pub baseline: SectionSizes,
}

/// Runs `cmd` echoed, capturing its output instead of showing it; (succeeded, stdout+stderr).
fn captured(cmd: Cmd<'_>) -> Result<(bool, String)> {
    eprintln!("$ {cmd}");
    let out = cmd.quiet().ignore_status().output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

pub(super) fn build_target(t: &Target, route: &Route, o: &mut Outcome) {
    if let Err(e) = try_build_target(t, route, o) {
        o.failures.push(e.to_string());
    }
}

fn try_build_target(t: &Target, route: &Route, o: &mut Outcome) -> Result<()> {
    let sh = Shell::new()?;
    // 1. The libraries alone, each feature set.
    sh.change_dir(firmware_root());
    for lib in TARGET_LIBRARIES {
        for features in lib.feature_sets {
            let mut cmd = route
                .build(&sh, "build", t.triple)
                .args(["-p", lib.package]);
            let label = if features.is_empty() {
                format!("{} (no features)", lib.name)
            } else {
                cmd = cmd.args(["--features", &features.join(",")]);
                format!("{} --features {}", lib.name, features.join(","))
            };
            match cmd.run() {
                Ok(()) => o.library_builds.push(label),
                Err(e) => o.failures.push(format!("{label}: {e}")),
            }
        }
    }
    let project = firmware_root().join(t.dir);
    sh.change_dir(&project);
    // 2. The non-vacuity check first: it relinks the baseline, which step 3 then rebuilds.
    let canary = route.build(&sh, "rustc", t.triple).args([
        "--bin",
        BASELINE,
        "--",
        "--cfg",
        "rpcrdma_panic_canary",
    ]);
    match captured(canary)? {
        (true, _) => {
            o.canary = Some(false);
            o.failures.push(format!(
                "panic canary: {BASELINE} with a deliberate out-of-bounds index linked, so a \
                 surviving panic path would not fail the build (the proof is vacuous here)"
            ));
        }
        (false, out) if out.contains(PANIC_SYMBOL) => {
            eprintln!("panic canary: the deliberate panic path failed the link, as it must");
            o.canary = Some(true);
        }
        (false, out) => o
            .failures
            .push(format!("panic canary build failed:\n{out}")),
    }
    // 3. The firmware project: example and size programs, release, the panic-freedom proof.
    //    Built with its output shown; when it fails, built again captured to see why.
    let bins = || route.build(&sh, "build", t.triple).arg("--bins");
    let failure = match bins().run() {
        Ok(()) => None,
        Err(_) => Some(captured(bins())?.1),
    };
    for bin in [EXAMPLE, PROBE, POOL_PROBE, BASELINE] {
        let linked = route.image(t.triple, bin).is_file();
        match &failure {
            None if linked => o.panic_free.push((bin.into(), PanicProof::Proved)),
            Some(out)
                if out.contains(&format!("(bin \"{bin}\")")) && out.contains(PANIC_SYMBOL) =>
            {
                let chain = why_live(t, route, &sh, bin)?;
                o.failures
                    .push(format!("{bin}: a panic path survived:\n{chain}"));
                o.panic_free
                    .push((bin.into(), PanicProof::PanicPath(chain)));
            }
            _ => {}
        }
    }
    if let Some(out) = failure {
        if !out.contains(PANIC_SYMBOL) {
            o.failures.push(format!("firmware build failed:\n{out}"));
        }
        return Ok(());
    }
    // 4. Sizes.
    o.sizes = Some(Sizes {
        example: section_sizes(&route.image(t.triple, EXAMPLE))?,
        probe: section_sizes(&route.image(t.triple, PROBE))?,
        pool_probe: section_sizes(&route.image(t.triple, POOL_PROBE))?,
        baseline: section_sizes(&route.image(t.triple, BASELINE))?,
    });
    Ok(())
}

/// Relinks `bin` reporting why the panic handler is live: the chain of callers.
fn why_live(t: &Target, route: &Route, sh: &Shell, bin: &str) -> Result<String> {
    let cmd = route.build(sh, "rustc", t.triple).args([
        "--bin",
        bin,
        "--",
        "-C",
        "link-arg=--why-live=*rust_begin_unwind*",
        "-C",
        "link-arg=--noinhibit-exec",
        "-W",
        "linker-messages",
    ]);
    let (_, out) = captured(cmd)?;
    // `--noinhibit-exec` wrote an image with the symbol unresolved: never leave it to be run.
    let _ = std::fs::remove_file(route.image(t.triple, bin));
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
    Ok(if chain.is_empty() {
        format!("    (no --why-live chain; linker output:)\n{out}")
    } else {
        format!("    panic handler\n{}", chain.join("\n"))
    })
}

/// The section sizes of an ELF image, classified like `size -A`.
pub fn section_sizes(path: &Path) -> Result<SectionSizes> {
    use object::elf::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_NOBITS};
    let bytes = std::fs::read(path).context(path.display())?;
    let file = object::File::parse(&bytes[..]).context(path.display())?;
    let mut sizes = SectionSizes::default();
    for s in file.sections() {
        let SectionFlags::Elf { sh_flags, sh_type } = s.flags() else {
            return Err(format!("{}: not an ELF file", path.display()).into());
        };
        let has = |flag: object::elf::SectionFlags| sh_flags.0 & flag.0 != 0;
        if !has(SHF_ALLOC) {
            continue;
        }
        let name = s.name().unwrap_or_default();
        if has(SHF_EXECINSTR) {
            sizes.text += s.size();
        } else if !has(SHF_WRITE) {
            sizes.rodata += s.size();
        } else if sh_type != SHT_NOBITS {
            sizes.data += s.size();
        } else if !(name.starts_with(".stack") || name.starts_with(".heap")) {
            sizes.bss += s.size();
        }
    }
    Ok(sizes)
}
