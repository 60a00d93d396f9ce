//! Fetching the crates of every workspace ([`crate::matrix::WORKSPACES`]), each with the cargo
//! that builds it, so that nothing later needs the network (`docs/design.md#the-cargo-cache-rule`).
//!
//! The firmware workspace is fetched by each toolchain route its targets use; the Debian route
//! builds `core` from source with `-Zbuild-std`, whose own dependencies (the standard library's
//! lock file) are fetched by `cargo fetch -Zbuild-std=core --target …`.
//!
//! `cargo xtask test --fresh` checks the rule: it points `CARGO_HOME` at an empty directory,
//! runs the same fetch into it, and then sets `CARGO_NET_OFFLINE=true` for every later step, so
//! a crate the fetch missed fails the test instead of a user's first run.

use std::path::PathBuf;

use crate::cross::Route;
use crate::matrix::{Toolchain, Workspace, TARGETS, WORKSPACES};
use crate::util::{self, Context, Result};

/// Fetches every workspace; all failures are reported together.
pub fn fetch_all() -> Result<()> {
    let mut failures = Vec::new();
    for ws in WORKSPACES {
        if let Err(e) = fetch(ws) {
            failures.push(format!("{}: {e}", ws.dir));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("fetch failed:\n  {}", failures.join("\n  ")).into())
    }
}

fn fetch(ws: &Workspace) -> Result<()> {
    let sh = util::shell()?;
    sh.change_dir(util::root().join(ws.dir));
    match ws.toolchain {
        Toolchain::Host => util::cargo(&sh).args(["fetch", "--locked"]).run()?,
        Toolchain::Nightly => {
            if !crate::fuzz::have_nightly() {
                eprintln!(
                    "fetch: {}: no nightly toolchain, skipped (fuzzing needs one)",
                    ws.dir
                );
                return Ok(());
            }
            crate::fuzz::nightly_cargo(&sh)
                .args(["fetch", "--locked"])
                .run()?
        }
        Toolchain::Firmware => {
            let mut routes: Vec<(Route, Vec<&str>)> = Vec::new();
            for t in TARGETS {
                let route = Route::choose(t.triple)?;
                match routes.iter_mut().find(|(r, _)| *r == route) {
                    Some((_, triples)) => triples.push(t.triple),
                    None => routes.push((route, vec![t.triple])),
                }
            }
            for (route, triples) in routes {
                route.cargo(&sh, "fetch").arg("--locked").run()?;
                if !route.build_std().is_empty() {
                    let mut cmd = route
                        .cargo(&sh, "fetch")
                        .args(["--locked", "-Zbuild-std=core"]);
                    for t in triples {
                        cmd = cmd.args(["--target", t]);
                    }
                    cmd.run()?;
                }
            }
        }
    }
    Ok(())
}

/// Points this process (and so every command it runs) at an empty `CARGO_HOME` under
/// `target/`, fetches every workspace into it, then goes offline.
pub fn fresh_cargo_home() -> Result<()> {
    let home: PathBuf = util::root().join("target/fresh-cargo-home");
    if home.exists() {
        std::fs::remove_dir_all(&home).context(format_args!("remove {}", home.display()))?;
    }
    std::fs::create_dir_all(&home).context(format_args!("create {}", home.display()))?;
    eprintln!("fresh: CARGO_HOME={} (empty)", home.display());
    // Single-threaded here: no other thread reads the environment.
    std::env::set_var("CARGO_HOME", &home);
    std::env::remove_var("CARGO_NET_OFFLINE");
    fetch_all()?;
    eprintln!("fresh: fetched; every later step runs with CARGO_NET_OFFLINE=true");
    std::env::set_var("CARGO_NET_OFFLINE", "true");
    Ok(())
}
