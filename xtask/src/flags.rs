//! The command line, declared with `xflags` (the grammar below generates the structs).

#![allow(unreachable_pub)]

use std::ffi::OsString;

xflags::xflags! {
    /// Tasks of the rpcrdma repository. Run as `cargo xtask <command>`.
    cmd xtask {
        /// Print every command and its options.
        cmd help {}
        /// Install the Debian packages the project needs, fetch the crates of every workspace
        /// (root, firmware-examples, fuzz) with the cargo that builds it, install defmt-print
        /// (and cargo-fuzz with a nightly toolchain) and download the VM's kernel. Idempotent;
        /// after it nothing needs the network.
        cmd setup {
            /// Also what `cross --hosted` needs for aarch64 Linux: adds the arm64 dpkg
            /// architecture to this machine and installs the arm64 verbs libraries, Debian's
            /// aarch64 Rust std, the cross linker and qemu-user-static.
            optional --aarch64
        }
        /// Everything CI checks: set-up, fmt, clippy -D warnings, the docs with -D warnings,
        /// every workspace test and doctest, the verbs tests in the Soft-RoCE VM, the NFS interop
        /// run, the aarch64 hosted build, the firmware on 4 targets under QEMU, a short fuzz
        /// run (`cargo xtask wire` runs separately). Every step runs; all failures are reported at
        /// the end. Installs the arm64 packages (adding the arm64 dpkg architecture, as `setup
        /// --aarch64` does) unless --no-aarch64.
        cmd test {
            /// Use an empty CARGO_HOME (target/fresh-cargo-home) filled only by setup's fetch,
            /// then build and test offline: a crate the fetch missed fails here (CI runs this).
            optional --fresh
            /// Seconds of fuzzing (default 20; 0 skips the fuzz step).
            optional --fuzz-seconds seconds: u64
            /// Leave this machine's dpkg architectures alone: no arm64 packages, no aarch64
            /// build.
            optional --no-aarch64
        }
        /// The main job: a Soft-RoCE VM, rpcrdma-serve driven by rpcrdma-load, a verified table.
        cmd demo {}
        /// The Linux kernel's NFS/RDMA client on this transport: one VM boot with the kernel's
        /// nfsd serving a tmpfs over TCP, rpcrdma-gateway in front of it on rdma 20049, and the
        /// kernel client mounting through the gateway; files written and read back (checksums),
        /// a large directory listed, rename / symlink / readlink / remove, unmount; then the
        /// gateway's counters.
        cmd interop {}
        /// Two kernels joined by a wire (`vm --nodes 2`), node B aarch64: the aarch64
        /// rpcrdma-serve driven by rpcrdma-load from node A (every call kind, verified), the DPU
        /// picture (the aarch64 gateway on node B in front of node A's nfsd, node A's kernel
        /// client mounting through it with the default NFS version), node A's link down for
        /// 5 s mid-write, node B powered off mid-write and booted again. Needs `cargo xtask
        /// setup --aarch64`; builds the aarch64 binaries (`cross --hosted`) first.
        cmd wire {
            /// Node B's architecture: aarch64 (default) or x86_64.
            optional --arch-b arch: String
        }
        /// `core`: the core cycle grid (ns, instructions); `vm`: Soft-RoCE rates against
        /// perftest; `wire`: the same across a wire between two VMs, node B x86_64 and then
        /// aarch64. Each writes BENCHMARKS.md.
        cmd bench {
            /// core | vm | wire
            required which: String
            /// With `vm`: `kernel` compares rpcrdma-serve and rpcrdma-gateway with the kernel's
            /// own NFS/RDMA server in one boot.
            optional --rival rival: String
            /// With `core`: event loops to compare, e.g. `1,2` — the whole responder cycle with
            /// one software NIC per loop, one thread per loop (section `bench-loops`).
            optional --threads threads: String
        }
        /// The core and the firmware examples on 4 bare-metal targets: builds, panic-freedom
        /// proofs, sizes. Toolchain: rustup targets when installed, else Debian's rustc-web with
        /// -Zbuild-std=core. Cache: target/firmware/.
        cmd cross {
            /// Instead: the hosted binaries (rpcrdma-serve, -load, -gateway) for aarch64 Linux
            /// (a DPU's Arm cores), built with Debian's rustc, checked to be AArch64 and run with
            /// `--help` under qemu-aarch64-static. Needs `cargo xtask setup --aarch64`.
            optional --hosted
            /// Also run every example under QEMU and check exit status and decoded defmt output.
            optional --run
            /// With --run: write the figures into BENCHMARKS.md (section `cross`).
            optional --write
            /// Only this target (repeatable).
            repeated --target triple: String
        }
        /// Run the two fuzz targets in turn: `decode` (the call decoder, its error replies and
        /// the reply decoder) and `respond` (the whole responder on the software NIC). Nightly
        /// toolchain; installs cargo-fuzz on first use.
        cmd fuzz {
            /// Only this target (`decode` or `respond`); default: both.
            optional target: String
            /// Seconds per target (default 60).
            optional --seconds seconds: u64
        }
        /// Run a command in a QEMU VM with Soft-RoCE device rxe0 on dummy0 (10.0.2.15/24, no
        /// network to the outside): `cargo xtask vm [options] -- CMD [ARGS...]`. The host root
        /// is shared read-only with a tmpfs overlay; CMD runs in the current directory with the
        /// current environment; its output goes to stdout and the exit status is CMD's (125: the
        /// VM gave none). Cache: target/rxe-vm/ (XTASK_VM_DIR overrides); the last console log
        /// is target/rxe-vm/console.log. XTASK_VM_KERNEL_ARGS replaces the extra kernel
        /// parameters (default `mitigations=off tsc=reliable`). As a cargo runner: evaluate
        /// the line `cargo xtask vm --print-runner` prints in your shell, then `cargo test`
        /// runs each test binary in the VM.
        cmd vm {
            /// Boot, run ibv_devinfo and an ib_send_bw pair over rxe0, report.
            optional --check
            /// Only download the kernel and build the initramfs (cached).
            optional --prepare
            /// Print the `export` line that makes cargo run test binaries in the VM.
            optional --print-runner
            /// Kill the VM after this many seconds (default 1800).
            optional --timeout seconds: u64
            /// Virtual CPUs (default 2).
            optional --smp n: u32
            /// Memory in MiB (default 2048).
            optional --mem mib: u32
            /// 2: two VMs, each its own kernel, joined by a wire (node A x86_64 10.0.3.1, node
            /// B 10.0.3.2, rxe0 on each eth0); the command after `--` runs on node A, `--b`'s
            /// on node B, each with XTASK_NODE, XTASK_NODE_ADDR, XTASK_PEER_ADDR, XTASK_BOOT.
            /// Node B boots again if it powers off while node A runs, and is stopped 30 s after
            /// node A's command ends. One vCPU each unless --smp.
            optional --nodes n: u32
            /// Node B's architecture: x86_64 (default) or aarch64 (needs `cargo xtask setup
            /// --aarch64`).
            optional --arch-b arch: String
            /// Node B's command (a shell command line) with --nodes 2.
            optional --b command: String
            /// The command and its arguments (after `--`).
            repeated command: OsString
        }
    }
}

/// The generated help text.
pub fn help() -> String {
    match Xtask::from_vec(vec!["--help".into()]) {
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    }
}
