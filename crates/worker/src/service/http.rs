//! The worker's read-only web UI: `GET /api/v1/status` (the
//! [`WorkerStatusDoc`] document) and `GET /`, a plain-text summary. Human
//! HTML pages and log pages come later. The HTTP shell with its limits is
//! [`flint_daemon::http`].

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;

use super::shell::Shared;
use super::WorkerStatusDoc;

pub use flint_daemon::STATUS_PATH;

/// The web UI's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    flint_daemon::http::status_routes(move || shared.status(), summary)
}

/// The plain-text summary `GET /` serves.
fn summary(s: &WorkerStatusDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flint worker {} at {} ({})",
        s.id, s.worker_url, s.state
    );
    let _ = writeln!(
        out,
        "master: {} ({})",
        s.master_url.as_deref().unwrap_or("none yet"),
        if s.connected {
            "connected"
        } else {
            "not connected"
        }
    );
    let _ = writeln!(
        out,
        "cores: {} used of {}; memory: {} MB used of {} MB",
        s.cores_used, s.cores, s.memory_used_mb, s.memory_mb
    );
    let _ = writeln!(out, "work dir: {}", s.work_dir);
    let _ = writeln!(
        out,
        "binaries: {} fetched, {} cache hits",
        s.binary_fetches, s.binary_cache_hits
    );
    for e in &s.executors {
        let _ = writeln!(
            out,
            "  executor {}/{} {} {} cores {} MB {}",
            e.app_id, e.exec_id, e.state, e.cores, e.memory_mb, e.work_dir
        );
    }
    for d in &s.drivers {
        let _ = writeln!(
            out,
            "  driver {} {} {} cores {} MB {}",
            d.driver_id, d.state, d.cores, d.memory_mb, d.work_dir
        );
    }
    let _ = writeln!(
        out,
        "finished: {} executors, {} drivers",
        s.finished_executors.len(),
        s.finished_drivers.len()
    );
    let _ = writeln!(out, "status JSON: {STATUS_PATH}");
    out
}
