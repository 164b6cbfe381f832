//! Waiting for the signals that ask a daemon to stop (SIGTERM, SIGINT).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves with the signal's name when SIGTERM or SIGINT arrives. If handlers
/// cannot be installed, only Ctrl-C is awaited.
pub async fn terminated() -> &'static str {
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
