//! Errors of the RPC environment. An [`AskError`] says what the caller may assume about
//! the outcome: not delivered (safe to retry), connection lost (outcome unknown), the
//! remote handler's own error, or no reply before the deadline.

use std::time::Duration;

use crate::address::AddressError;

/// Why an `ask` (or a `send` that failed on the spot) did not produce a reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AskError {
    /// The message never reached the endpoint: connecting failed, the endpoint does not
    /// exist there, the environment is stopped, or the message is too large. Safe to retry.
    #[error("message to {to} not delivered: {reason}")]
    NotDelivered {
        /// The endpoint the message was for.
        to: String,
        /// Why it was not delivered.
        reason: String,
    },
    /// The message was sent but the connection closed before a reply arrived: the remote
    /// handler may or may not have run.
    #[error("connection to {to} lost before a reply arrived (outcome unknown): {reason}")]
    ConnectionLost {
        /// The endpoint the message was for.
        to: String,
        /// What ended the connection.
        reason: String,
    },
    /// The remote endpoint received the message and answered with an error (its handler
    /// failed or panicked, the message could not be decoded, or the reply type was wrong).
    #[error("{to} failed the request: {message}")]
    Remote {
        /// The endpoint that failed.
        to: String,
        /// The failure it reported.
        message: String,
    },
    /// The connection's outbound queue is at its byte budget
    /// (`rpc.connection.max_queued_bytes`); nothing was queued. Retry later, or use
    /// `send_async`, which waits for room.
    #[error("message to {to} not sent: the connection's outbound queue is full ({queued} bytes queued, rpc.connection.max_queued_bytes = {budget}); retry later or use send_async")]
    Full {
        /// The endpoint the message was for.
        to: String,
        /// Bytes queued at the time.
        queued: usize,
        /// The budget in force.
        budget: usize,
    },
    /// The remote endpoint's inbox is full; the request was not handled. Retry later.
    #[error("{to} is busy: {reason}")]
    Busy {
        /// The endpoint that was busy.
        to: String,
        /// What the peer said.
        reason: String,
    },
    /// No reply within the deadline.
    #[error("no reply from {to} within {after:?}; this timeout is controlled by {setting}")]
    Timeout {
        /// The endpoint that did not answer.
        to: String,
        /// How long the caller waited.
        after: Duration,
        /// The setting that controls the deadline.
        setting: &'static str,
    },
}

impl AskError {
    /// True if the request certainly did not reach its handler, so retrying cannot run
    /// it twice.
    pub fn is_not_delivered(&self) -> bool {
        matches!(
            self,
            AskError::NotDelivered { .. } | AskError::Full { .. } | AskError::Busy { .. }
        )
    }

    /// True if the failure is temporary back-pressure (`Full` or `Busy`): the same
    /// request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AskError::Full { .. } | AskError::Busy { .. })
    }
}

/// Errors of the environment itself: binding, configuration, lookup, TLS, files.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// A setting is missing or wrong.
    #[error(transparent)]
    Conf(#[from] flint_conf::ConfError),
    /// An address did not parse.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// `host:port` tried.
        address: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// An endpoint of that name is already registered in this environment.
    #[error("an endpoint named {0:?} is already registered")]
    NameTaken(String),
    /// Lookup found no endpoint of that name at that address.
    #[error("no endpoint named {name} at {address}")]
    EndpointNotFound {
        /// The name looked up.
        name: String,
        /// Where it was looked up.
        address: String,
    },
    /// Lookup found the endpoint but it speaks another protocol.
    #[error("endpoint {name} at {address} speaks {actual}, not {expected}")]
    ProtocolMismatch {
        /// The name looked up.
        name: String,
        /// Where it was looked up.
        address: String,
        /// The protocol the caller expected.
        expected: &'static str,
        /// The protocol the endpoint speaks.
        actual: String,
    },
    /// An ask on the way failed.
    #[error(transparent)]
    Ask(#[from] AskError),
    /// TLS material could not be loaded.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// A file could not be registered, served or fetched.
    #[error("{0}")]
    File(String),
    /// This operation needs a listening (server-mode) environment.
    #[error("{0} needs a server-mode RpcEnv; this one is client-only")]
    ClientOnly(&'static str),
}
