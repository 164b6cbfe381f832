//! [`ClientError`]: why an application client could not start, or why a
//! request it forwarded to the master failed.

use flint_proto::DescriptionError;
use flint_rpc::{AskError, RpcError};

/// Errors of the application client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A setting did not parse.
    #[error(transparent)]
    Conf(#[from] flint_conf::ConfError),
    /// A setting parsed but is out of range.
    #[error("setting {key}: {message}")]
    Setting {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No master address was given.
    #[error("no master to register with: give at least one flint://host:port")]
    NoMasters,
    /// The application description cannot be scheduled by any master.
    #[error("invalid application description: {0}")]
    InvalidDescription(#[from] DescriptionError),
    /// The client's endpoint could not be registered (for example, the RPC
    /// environment has stopped).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A request forwarded to the master failed.
    #[error(transparent)]
    Ask(#[from] AskError),
}
