//! The launcher's errors.

use std::path::PathBuf;

/// What can go wrong starting or talking to an application.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    /// A builder setting is missing or wrong.
    #[error("launcher: {0}")]
    Invalid(String),
    /// The `flint` command was not found.
    #[error(
        "cannot find the flint command: {0}; set Launcher::flint_binary or FLINT_CLI to its path"
    )]
    NoFlintBinary(String),
    /// The child process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A redirect file could not be opened.
    #[error("cannot open {path} for the application's output: {source}")]
    Redirect {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The launcher server could not start.
    #[error("cannot start the launcher server: {0}")]
    Server(String),
    /// `stop()` before the application connected.
    #[error("the application is not connected to the launcher yet (state {0}); kill() it instead")]
    NotConnected(crate::State),
    /// The application side: the launcher environment variables are incomplete or bad.
    #[error("launcher environment: {0}")]
    Environment(String),
    /// The application side: connecting or saying hello failed.
    #[error("cannot connect to the launcher at 127.0.0.1:{port}: {reason}")]
    Connect {
        /// The launcher server's port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// A setting's value is wrong.
    #[error(transparent)]
    Conf(#[from] flint_conf::ConfError),
}
