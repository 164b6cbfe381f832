//! The flint worker daemon (Spark's standalone `Worker`).
//!
//! A worker registers with the master, heartbeats it, and runs executors and
//! drivers as child processes on the master's behalf, reporting their exit
//! back. Only the child-process side exists so far: [`runner`] launches a
//! child in its own process group with its output in its work directory, makes
//! sure it never outlives the worker, kills it politely then forcibly, and
//! cleans up old application directories. [`state`] is the worker's
//! decisions as a pure state machine: registration with masters,
//! heartbeats, executor and driver bookkeeping, decommission and shutdown.

pub mod runner;
pub mod state;
