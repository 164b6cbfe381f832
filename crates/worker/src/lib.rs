//! The flint worker daemon (Spark's standalone `Worker`).
//!
//! A worker registers with the master, heartbeats it, and runs executors and
//! drivers as child processes on the master's behalf, reporting their exit
//! back. [`runner`] launches a child in its own process group with its
//! output in its work directory, makes sure it never outlives the worker,
//! kills it politely then forcibly, and cleans up old application
//! directories. [`state`] is the worker's decisions as a pure state machine:
//! registration with masters, heartbeats, executor and driver bookkeeping,
//! decommission and shutdown. [`service`] is the daemon: the async shell
//! that feeds the state machine RPC messages, timers and child exits,
//! carries out its effects and serves the status page; [`service::start`]
//! runs a worker. [`binaries`] is the cache of fetched application binaries
//! (`{{BINARY}}`), shared by applications and bounded.

pub mod binaries;
pub mod runner;
pub mod service;
pub mod state;
pub mod supervise;
