//! The toolchain route of a target, chosen automatically (`docs/design.md#cross-builds`):
//! - **rustup**: the running toolchain has the target's standard library
//!   (`rustup target add …`): the running cargo builds as usual, linking with rust-lld;
//! - **debian**: otherwise Debian's `rustc-web` / `cargo-web` / `rust-web-src` / `lld-22` build
//!   `core` from source: `RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build
//!   -Zbuild-std=core -Zbuild-std-features=compiler-builtins-mem`, linker `ld.lld-22`
//!   (`cargo xtask setup` installs them).

use std::path::{Path, PathBuf};

use xshell::{Cmd, Shell};

use super::{firmware_cache, DEFMT_LOG};
use crate::util::{self, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The target's standard library is installed for the running toolchain.
    Rustup { cargo: PathBuf },
    /// Debian's rustc-web builds `core` from rust-web-src; an lld links.
    Debian {
        rustc: PathBuf,
        cargo: PathBuf,
        lld: PathBuf,
    },
}

/// Host-build settings that must not reach a cross build.
const CLEARED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
];

impl Route {
    pub fn choose(triple: &str) -> Result<Route> {
        if rustup_has_target(triple) {
            return Ok(Route::Rustup {
                cargo: util::cargo_program().into(),
            });
        }
        debian_toolchain().map_err(|e| {
            format!(
                "no toolchain for {triple}: the running toolchain lacks the target \
                 (`rustup target add {triple}`) and {e}"
            )
            .into()
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Route::Rustup { .. } => "rustup",
            Route::Debian { .. } => "debian",
        }
    }

    fn version(program: &Path) -> String {
        util::shell()
            .and_then(|sh| Ok(sh.cmd(program).arg("--version").quiet().read()?))
            .unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        match self {
            Route::Rustup { cargo } => {
                format!(
                    "rustup target installed ({}; rust-lld)",
                    Self::version(cargo)
                )
            }
            Route::Debian { rustc, lld, .. } => format!(
                "Debian toolchain, -Zbuild-std=core ({} = {}; linker {})",
                Self::version(rustc),
                rustc.display(),
                lld.file_name().unwrap_or_default().to_string_lossy()
            ),
        }
    }

    /// The target directory of this route's builds.
    pub fn target_dir(&self) -> PathBuf {
        firmware_cache().join(self.name())
    }

    /// A release image of `bin` for `triple`.
    pub fn image(&self, triple: &str, bin: &str) -> PathBuf {
        self.target_dir().join(triple).join("release").join(bin)
    }

    /// `cargo <sub>` for this route in `sh`'s directory: environment cleaned of host-build
    /// settings, one target directory per route, `DEFMT_LOG` fixed.
    pub fn cargo<'a>(&self, sh: &'a Shell, sub: &str) -> Cmd<'a> {
        let program = match self {
            Route::Rustup { cargo } | Route::Debian { cargo, .. } => cargo,
        };
        let mut cmd = sh.cmd(program).arg(sub);
        for var in CLEARED_ENV {
            cmd = cmd.env_remove(var);
        }
        cmd = cmd
            .env("CARGO_TARGET_DIR", self.target_dir())
            .env("DEFMT_LOG", DEFMT_LOG)
            .env("CARGO_TERM_COLOR", "never");
        if let Route::Debian { rustc, lld, .. } = self {
            cmd = cmd.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
            for t in crate::matrix::TARGETS {
                let var = format!(
                    "CARGO_TARGET_{}_LINKER",
                    t.triple.to_uppercase().replace('-', "_")
                );
                cmd = cmd.env(var, lld);
            }
        }
        cmd
    }

    /// A release build of `sub` (`build`, `rustc`) for `triple`.
    pub fn build<'a>(&self, sh: &'a Shell, sub: &str, triple: &str) -> Cmd<'a> {
        let cmd = self
            .cargo(sh, sub)
            .args(["--release", "--locked", "--target", triple]);
        cmd.args(self.build_std())
    }

    /// The arguments that build `core` from source on this route (none on rustup).
    pub fn build_std(&self) -> &'static [&'static str] {
        match self {
            Route::Rustup { .. } => &[],
            Route::Debian { .. } => &[
                "-Zbuild-std=core",
                "-Zbuild-std-features=compiler-builtins-mem",
            ],
        }
    }
}

/// Whether the running toolchain has `triple`'s `core` installed.
fn rustup_has_target(triple: &str) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(sh) = util::shell() else { return false };
    sh.cmd(rustc)
        .args(["--print", "target-libdir", "--target", triple])
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
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
fn debian_toolchain() -> Result<Route> {
    let setup =
        "run `cargo xtask setup` (Debian packages rustc-web, cargo-web, rust-web-src, lld-22)";
    let sh = util::shell()?;
    let rustc = ["/usr/bin/rustc", "/usr/bin/rustc-web"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            let sysroot = sh.cmd(p).args(["--print", "sysroot"]).quiet().read();
            sysroot.is_ok_and(|s| {
                Path::new(&s)
                    .join("lib/rustlib/src/rust/library/core/Cargo.toml")
                    .is_file()
            })
        })
        .ok_or_else(|| format!("Debian's rustc with rust-web-src is not installed: {setup}"))?;
    let cargo = ["/usr/bin/cargo", "/usr/bin/cargo-web"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| format!("Debian's cargo is not installed: {setup}"))?;
    let lld = find_lld().ok_or_else(|| format!("no ld.lld found: {setup}"))?;
    Ok(Route::Debian { rustc, cargo, lld })
}

/// `ld.lld-22`, else the newest versioned `ld.lld-NN`, else `ld.lld`, on PATH.
fn find_lld() -> Option<PathBuf> {
    let newest_first = (14..=40).rev().map(|v| format!("ld.lld-{v}"));
    std::iter::once("ld.lld-22".to_string())
        .chain(newest_first)
        .chain(["ld.lld".to_string()])
        .find_map(|name| which::which(name).ok())
}
