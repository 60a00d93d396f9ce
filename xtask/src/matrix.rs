//! Everything the xtask builds, as data, in one place: the workspaces `setup` fetches, the host
//! checks `test` runs, the bare-metal targets and the libraries built alone for each of them,
//! and the fuzz targets. Adding a crate or a target is an edit here.
//!
//! - A crate added to the root workspace is fetched, linted and tested with it; nothing to add.
//! - A `no_std` crate meant for firmware: add it (as a dependency) to a checking package in
//!   `firmware-examples/` and list that package in [`TARGET_LIBRARIES`].
//! - A new cargo workspace (its own `Cargo.lock`): add it to [`WORKSPACES`].

/// Which toolchain builds a workspace; `setup` fetches each workspace with that toolchain's
/// cargo, because that is the cargo that will later want the crates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toolchain {
    /// The cargo running the xtask (`$CARGO`).
    Host,
    /// The firmware toolchain of [`crate::cross`]: rustup targets or Debian's cargo with
    /// `-Zbuild-std=core` (which needs the standard library's own dependencies fetched too).
    Firmware,
    /// rustup's nightly (cargo-fuzz).
    Nightly,
}

/// A cargo workspace of the repository (its own `Cargo.lock`).
#[derive(Clone, Copy, Debug)]
pub struct Workspace {
    /// Directory relative to the repository root.
    pub dir: &'static str,
    pub toolchain: Toolchain,
}

pub const WORKSPACES: &[Workspace] = &[
    Workspace {
        dir: ".",
        toolchain: Toolchain::Host,
    },
    Workspace {
        dir: "firmware-examples",
        toolchain: Toolchain::Firmware,
    },
    Workspace {
        dir: "fuzz",
        toolchain: Toolchain::Nightly,
    },
];

/// One cargo invocation of `cargo xtask test` in the root workspace.
pub struct HostCheck {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// Environment variables set for it (names and values).
    pub env: &'static [(&'static str, &'static str)],
}

/// The host checks, in order.
pub const HOST_CHECKS: &[HostCheck] = &[
    HostCheck {
        name: "fmt",
        args: &["fmt", "--all", "--", "--check"],
        env: &[],
    },
    HostCheck {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    HostCheck {
        name: "clippy core --features log",
        args: &[
            "clippy",
            "-p",
            "rpcrdma-core",
            "--features",
            "log",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    HostCheck {
        name: "check core --features defmt",
        args: &["check", "-p", "rpcrdma-core", "--features", "defmt"],
        env: &[],
    },
    HostCheck {
        name: "doc -D warnings",
        args: &["doc", "--workspace", "--no-deps"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    HostCheck {
        // Also the doctests of every library.
        name: "test",
        args: &["test", "--workspace"],
        env: &[],
    },
    HostCheck {
        // The newcomer's first program: a service of one's own over the software NIC.
        name: "example kv (software NIC)",
        args: &["run", "-q", "-p", "rpcrdma-examples", "--example", "kv"],
        env: &[],
    },
];

/// A bare-metal target and the firmware project that runs on it.
#[derive(Debug)]
pub struct Target {
    pub triple: &'static str,
    /// The project under `firmware-examples/` (its `.cargo/config.toml` holds the QEMU runner).
    pub dir: &'static str,
    /// The core it stands for, for reports.
    pub cpu: &'static str,
}

/// The targets, in the order they are built and reported.
pub const TARGETS: &[Target] = &[
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

/// A library built alone for every target with each feature set (through a package of
/// `firmware-examples/`, so the examples' features do not leak in).
pub struct TargetLibrary {
    /// What the report calls it.
    pub name: &'static str,
    /// The package of `firmware-examples/` that builds it.
    pub package: &'static str,
    pub feature_sets: &'static [&'static [&'static str]],
}

pub const TARGET_LIBRARIES: &[TargetLibrary] = &[TargetLibrary {
    name: "rpcrdma-core",
    package: "rpcrdma-core-check",
    feature_sets: &[&[], &["defmt"]],
}];

/// The fuzz targets (files in `fuzz/fuzz_targets/`).
pub const FUZZ_TARGETS: &[&str] = &["decode", "respond"];
