//! The launcher: start a flint application from a program and follow it through an
//! [`AppHandle`], after Spark's `SparkLauncher` / `SparkAppHandle`.
//!
//! [`Launcher`] builds a `flint submit …` command line. [`Launcher::launch`] only
//! starts it; [`Launcher::start_application`] also registers a handle with this
//! process's [`server`] (one per process, flint RPC on 127.0.0.1 only) and hands the
//! child, in its environment, the server's port, a fresh key id and a single-use
//! random secret for it ([`protocol::PORT_ENV`], [`protocol::KEY_ID_ENV`],
//! [`protocol::SECRET_ENV`]). Whoever reports for the application — the driver (the
//! flint library, client mode) or `flint submit` itself (cluster mode, relaying what
//! the master says) — connects with [`backend::Backend`], proves that key in the RPC
//! handshake, says hello and reports the app id and states.
//!
//! States ([`State`]): UNKNOWN → CONNECTED → SUBMITTED → RUNNING (→ RELAUNCHING →
//! SUBMITTED … for a supervised cluster-mode driver) → FINISHED | FAILED | KILLED, or
//! LOST. Final states are sticky, except that a child exiting non-zero turns FINISHED
//! into FAILED (as Spark does).

pub mod backend;
mod error;
mod handle;
mod launcher;
pub mod protocol;
pub mod server;

pub use error::LauncherError;
pub use handle::{AppHandle, Listener};
pub use launcher::{DeployMode, Launcher, Redirect, CLI_ENV};
pub use protocol::State;
