//! Builds rpcrdma-core by itself for a cross target: `cargo build -p rpcrdma-core-check` selects
//! only this package, so the core gets exactly the features asked for here (`--features defmt`
//! or none), not the `defmt` the examples unify in.
#![no_std]

pub use rpcrdma_core;
