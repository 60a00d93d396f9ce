//! Puts `memory.x` where the linker finds them, links with riscv-rt's `link.x`, and derives
//! `defmt-rv64.x` from the defmt crate's own linker script (`defmt.x.in`, located through
//! `cargo metadata`) with one change: the interned-string section starts at `DEFMT_BASE`
//! instead of 1.
//!
//! Why: defmt's log statements load each interned string's *address* (its index, < 65534) with
//! `auipc`, which reaches ±2 GiB around the instruction. QEMU virt runs this image from DRAM at
//! 0x8000_0000, so code at 0x8000_0000 + off reaches addresses down to about `off`: with the
//! section at 1, every log statement past the first few KiB of .text fails to link
//! (R_RISCV_PCREL_HI20 out of range). Starting the indices above the end of .text keeps every
//! reference in range while they still fit defmt's 16-bit index (defmt-print maps them from the
//! ELF symbol table as usual). RV32 wraps addresses at 4 GiB, so only RV64 needs this. The
//! script is generated, not copied, so it always matches the defmt version in Cargo.lock.

use std::{env, fs, path::PathBuf, process::Command};

const DEFMT_BASE: &str = "0xC000";

fn defmt_script() -> String {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).expect("utf-8 metadata");
    // Find the defmt package's manifest path without a JSON parser: the metadata lists
    // `"name":"defmt"` … `"manifest_path":"…/defmt-1.x.y/Cargo.toml"` in each package object.
    let pkg = json
        .split("{\"name\":\"defmt\",")
        .nth(1)
        .expect("defmt in cargo metadata");
    let key = "\"manifest_path\":\"";
    let start = pkg.find(key).expect("defmt manifest_path") + key.len();
    let path = &pkg[start..start + pkg[start..].find('"').expect("end of path")];
    let script_in = PathBuf::from(path).with_file_name("defmt.x.in");
    println!("cargo:rerun-if-changed={}", script_in.display());
    let text = fs::read_to_string(&script_in)
        .unwrap_or_else(|e| panic!("read {}: {e}", script_in.display()));
    let moved = text
        .replace(".defmt 1 (INFO)", &format!(".defmt {DEFMT_BASE} (INFO)"))
        .replace(". = 1;", &format!(". = {DEFMT_BASE};"));
    assert!(
        moved.contains(&format!(".defmt {DEFMT_BASE} (INFO)"))
            && moved.contains(&format!(". = {DEFMT_BASE};")),
        "defmt.x.in changed shape: update riscv64/build.rs"
    );
    format!(
        "{moved}\nASSERT(__etext - __stext < {DEFMT_BASE} + 0x800, \"riscv64: .text grew past DEFMT_BASE: raise it in riscv64/build.rs\");\n"
    )
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    fs::write(out.join("defmt-rv64.x"), defmt_script()).expect("write defmt-rv64.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    // Set only by `cargo xtask cross` for its panic canary (see src/bin/size_baseline.rs).
    println!("cargo::rustc-check-cfg=cfg(rpcrdma_panic_canary)");
    println!("cargo:rustc-link-arg-bins=-Tmemory.x");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt-rv64.x");
}
