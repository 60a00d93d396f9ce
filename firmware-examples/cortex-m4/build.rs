//! Puts `memory.x` where cortex-m-rt's `link.x` finds it and links with `link.x` and defmt's
//! `defmt.x`.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    // Set only by `cargo xtask cross` for its panic canary (see src/bin/size_baseline.rs).
    println!("cargo::rustc-check-cfg=cfg(rpcrdma_panic_canary)");
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
