//! Puts `memory.x` and `defmt-rv64.x` (this project's own defmt linker script, see its
//! comment: defmt's interned strings numbered from 0xC000 so RV64's PC-relative references reach
//! them) where the linker finds them, and links with them and riscv-rt's `link.x`.
//!
//! Nothing here runs cargo or reads other crates' files: the build needs only what
//! `cargo fetch` put in the cargo cache.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    fs::write(out.join("defmt-rv64.x"), include_bytes!("defmt-rv64.x"))
        .expect("write defmt-rv64.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=defmt-rv64.x");
    println!("cargo:rerun-if-changed=build.rs");
    // Set only by `cargo xtask cross` for its panic canary (see src/bin/size_baseline.rs).
    println!("cargo::rustc-check-cfg=cfg(rpcrdma_panic_canary)");
    println!("cargo:rustc-link-arg-bins=-Tmemory.x");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt-rv64.x");
}
