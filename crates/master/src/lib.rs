//! The flint master: keeps track of workers, applications, executors and
//! cluster-mode drivers, and decides where executors and drivers run.
//!
//! [`state`] is the pure state machine (no sockets, no clock reads); the
//! async shell that feeds it network events is built on top of it.

pub mod state;
