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

/// `error: cause: cause …`, the way the worker writes an error into a log
/// line or into the reason a launch failed: the error's message and each of
/// its sources, each once. Worker errors keep their cause out of their own
/// message (it is their `source`); a cause whose text the line already holds
/// (an error from elsewhere that prints its source too) is skipped.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}
