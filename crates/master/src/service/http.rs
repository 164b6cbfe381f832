//! The master's read-only web UI: `GET /api/v1/status` (the
//! [`MasterStatusJson`] document) and `GET /`, a plain-text summary. Human
//! HTML pages come later. The HTTP shell with its limits is
//! [`flint_daemon::http`].

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use flint_proto::status::MasterStatusJson;
use flint_proto::WorkerState;

use super::shell::Shared;

pub use flint_daemon::STATUS_PATH;

/// The web UI's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    flint_daemon::http::status_routes(move || shared.status(), summary)
}

/// The plain-text summary `GET /` serves.
pub(crate) fn summary(s: &MasterStatusJson) -> String {
    let count = |state| s.workers.iter().filter(|w| w.state == state).count();
    let mut out = String::new();
    let _ = writeln!(out, "flint master at {} ({})", s.url, s.status);
    let _ = writeln!(
        out,
        "workers: {} alive, {} dead, {} decommissioned, {} unknown",
        s.alive_workers,
        count(WorkerState::Dead),
        count(WorkerState::Decommissioned),
        count(WorkerState::Unknown),
    );
    let _ = writeln!(
        out,
        "cores: {} used of {}; memory: {} MB used of {} MB",
        s.cores_used, s.cores, s.memory_used_mb, s.memory_mb
    );
    let _ = writeln!(
        out,
        "applications: {} active, {} completed; drivers: {} active, {} completed",
        s.active_apps.len(),
        s.completed_apps.len(),
        s.active_drivers.len(),
        s.completed_drivers.len()
    );
    for w in &s.workers {
        let _ = writeln!(
            out,
            "  worker {} {}:{} {} cores {}/{} memory {}/{} MB",
            w.id, w.host, w.port, w.state, w.cores_used, w.cores, w.memory_used_mb, w.memory_mb
        );
    }
    for a in &s.active_apps {
        let _ = write!(
            out,
            "  app {} {:?} {} cores {} executors {}",
            a.id,
            a.name,
            a.state,
            a.cores,
            a.executors.len()
        );
        if let Some(why) = &a.waiting_reason {
            let _ = write!(out, " (waiting: {why})");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "status JSON: {STATUS_PATH}");
    out
}
