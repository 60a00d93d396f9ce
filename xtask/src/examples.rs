//! The examples that need real verbs, run in the Soft-RoCE VM (part of `cargo xtask test`):
//! `kv_verbs`, the key-value service of `examples/kv.rs` served by `rpcrdma-hosted` and called
//! by its verbs client over rxe0.

use crate::util::Result;
use crate::vm;

/// Builds the verbs example and runs it inside the VM (cargo's runner is the VM).
pub fn vm_examples() -> Result<()> {
    vm::cargo_in_vm(
        &[
            "run",
            "-q",
            "--release",
            "-p",
            "rpcrdma-examples",
            "--example",
            "kv_verbs",
            "--",
            "--addr",
            vm::VM_ADDR,
        ],
        300,
    )
}
