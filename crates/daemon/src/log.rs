//! The lines every daemon logs the same way: where it listens, that RPC
//! authentication is off (a WARN, since anyone who reaches the port can then
//! run code), and where its web UI is.

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
