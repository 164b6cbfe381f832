//! The flint master: keeps track of workers, applications, executors and
//! cluster-mode drivers, and decides where executors and drivers run.
//!
//! [`state`] is the pure state machine (no sockets, no clock reads);
//! [`service`] is the async shell that feeds it network events and timers
//! and serves the status page: [`service::start`] runs a master.

pub mod binaries;
pub mod service;
pub mod state;

pub use service::{start, MasterError, MasterHandle, MasterOptions};
