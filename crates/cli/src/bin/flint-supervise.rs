//! `flint-supervise PROGRAM ARGS…`: the per-child supervisor a flint worker starts
//! each executor and driver under, so that nothing they start outlives the worker
//! (see `flint_worker::supervise`). Not meant to be run by hand.

fn main() {
    flint_worker::supervise::main(std::env::args_os().skip(1).collect())
}
