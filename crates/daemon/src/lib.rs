//! What flint's daemons share — the master and worker now, the driver and
//! executor next — so each of them is only its own endpoint and state machine:
//!
//! - [`clock`]: the [`Now`] every state machine is handed and the [`Clock`]
//!   that stamps it (monotonic for deadlines, wall for display), and the tick
//!   loop.
//! - [`bind`](mod@bind): binding the RPC environment and the web UI in one step, with one
//!   set of bind errors ([`DaemonError`]) naming the port and the flag that
//!   changes it.
//! - [`advertise`]: the address peers are told — `network.advertise_address`,
//!   else the bind host, else (bound to `0.0.0.0` or `::`) the host name or the
//!   first non-loopback address; never `0.0.0.0`.
//! - [`http`]: the web UI's HTTP shell, bounded: a connection cap, idle and
//!   header-read timeouts, header and body size limits.
//! - [`rlimit`]: the soft `RLIMIT_NOFILE` raised to the hard limit at start-up.
//! - [`log`]: log set-up (stderr, `FLINT_LOG`) and the start-up lines every
//!   daemon logs, among them the warning when RPC authentication is off.
//! - [`signals`]: waiting for SIGTERM or SIGINT.
//! - [`scratch`]: scratch directories named by pid, and removing the ones of
//!   processes that were killed before they could.
//!
//! This crate knows the RPC environment and settings, nothing of masters,
//! workers or applications.

pub mod advertise;
pub mod bind;
pub mod clock;
pub mod http;
pub mod log;
pub mod rlimit;
pub mod scratch;
pub mod signals;

pub use bind::{bind, BindOptions, Bound, Port, RPC_PORT, WEBUI_PORT};
pub use clock::{wall_ms, Clock, Now};
pub use http::{HttpLimits, HttpServer, STATUS_PATH};

/// Every setting this crate reads, for `FLINT_*` environment mapping and docs.
pub const KEYS: &[&str] = &[
    advertise::ADVERTISE_ADDRESS,
    http::MAX_CONNECTIONS,
    http::IDLE_TIMEOUT,
    http::HEADER_READ_TIMEOUT,
    http::MAX_HEADER_BYTES,
    http::MAX_BODY_BYTES,
];

/// Why a daemon could not bind its sockets or read the settings this crate
/// owns.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A port is taken by another process.
    #[error("{what} {port} on {host} is in use; choose another with {flag}")]
    PortInUse {
        /// Which port ("port" or "web UI port").
        what: &'static str,
        /// The host it was bound on.
        host: String,
        /// The port.
        port: u16,
        /// The command-line flag that changes it.
        flag: &'static str,
    },
    /// A socket could not be bound for another reason.
    #[error("cannot listen on {address} for the {what}: {source}")]
    Bind {
        /// What the socket was for ("RPC environment" or "web UI").
        what: &'static str,
        /// `host:port` tried.
        address: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A setting of this crate's is wrong or out of range.
    #[error(transparent)]
    Conf(#[from] flint_conf::ConfError),
    /// The RPC environment could not be set up for another reason (TLS
    /// files, for example).
    #[error(transparent)]
    Rpc(#[from] flint_rpc::RpcError),
}

/// `host:port`, with an IPv6 literal in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
