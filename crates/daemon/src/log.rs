//! Log set-up ([`init`]: stderr, filtered by `FLINT_LOG`) and the lines every daemon
//! logs the same way: where it listens, that RPC authentication is off (a WARN,
//! since anyone who reaches the port can then run code), and where its web UI is.

use flint_rpc::{RpcAddress, RpcConf};

/// Whether RPC authentication is on: a shared secret or TLS.
pub fn auth_enabled(conf: &RpcConf) -> bool {
    conf.secret.is_some() || conf.tls.is_some()
}

/// The WARN a daemon logs at start-up when RPC authentication is off.
pub fn auth_disabled_warning(address: &RpcAddress) -> String {
    format!(
        "RPC authentication is disabled (auth.enabled = false): anyone who can reach {address} \
         can run code on this cluster"
    )
}

/// Logs a daemon's start-up lines, in the current span:
/// `flint <role> listening on <address><detail>`, the
/// [`auth_disabled_warning`] when `auth` is off, and
/// `<role> web UI at <url>`.
pub fn started(role: &str, address: &RpcAddress, detail: &str, auth: bool, webui_url: &str) {
    tracing::info!("flint {role} listening on {address}{detail}");
    if !auth {
        tracing::warn!("{}", auth_disabled_warning(address));
    }
    tracing::info!("{role} web UI at {webui_url}");
}

/// The variable holding the log filter (tracing's `EnvFilter` syntax).
pub const LOG_ENV: &str = "FLINT_LOG";

/// Installs the process's log output: to stderr (coloured on a terminal), filtered
/// by `$FLINT_LOG`, else by `default_filter` (`info` for daemons; tools pass a
/// quieter one). Call once, first thing; a second call changes nothing.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
