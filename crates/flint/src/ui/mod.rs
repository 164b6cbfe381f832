//! The driver's UI, after Spark's `SparkUI` and its REST API (`/api/v1`): JSON of this
//! application's jobs, stages and task attempts on `ui.port` (4040, retrying upward
//! `ui.port_max_retries` times when taken, as `spark.port.maxRetries` does), served by
//! flint-daemon's bounded HTTP shell on a thread of its own; and the console progress
//! bar on a TTY (`progress`).
//!
//! The scheduler's shell feeds a [`Recorder`] with the events and effects it handles;
//! the record ([`status::AppStatus`]) is bounded by `ui.retained_jobs` and
//! `ui.retained_tasks`.
//!
//! Routes: `/api/v1/applications`, `/api/v1/applications/<id>/jobs`,
//! `…/jobs/<job>`, `…/stages`, `…/stages/<stage>` (a list of its attempts, each with
//! its tasks by task id), plus the daemons' `/` summary and `/api/v1/status`.

pub(crate) mod progress;
pub mod status;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flint_conf::Conf;
use flint_daemon::http::{status_routes, HttpLimits, HttpServer};
use flint_daemon::DaemonError;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::scheduler::{Effect, Event, JobFailure};
use crate::{Error, Result};
use status::AppStatus;

/// `ui.enabled`: serve the driver's UI.
pub(crate) const ENABLED: &str = "ui.enabled";
/// `ui.port`: the driver UI's first port.
pub(crate) const PORT: &str = "ui.port";
/// `ui.port_max_retries`: later ports tried when it is taken.
pub(crate) const PORT_MAX_RETRIES: &str = "ui.port_max_retries";
/// `ui.host`: the address the UI binds.
pub(crate) const HOST: &str = "ui.host";
/// `ui.retained_jobs`: finished jobs kept.
pub(crate) const RETAINED_JOBS: &str = "ui.retained_jobs";
/// `ui.retained_tasks`: task records kept per stage.
pub(crate) const RETAINED_TASKS: &str = "ui.retained_tasks";
/// `ui.show_console_progress`: the progress bar on a TTY.
pub(crate) const SHOW_PROGRESS: &str = "ui.show_console_progress";
/// `ui.advertised_url`: the UI URL the master's app entry shows.
pub(crate) const ADVERTISED_URL: &str = "ui.advertised_url";

/// Milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The shared record.
pub(crate) type Shared = Arc<Mutex<AppStatus>>;

/// Feeds the record from the scheduler's shell (a no-op until one is set).
#[derive(Default)]
pub(crate) struct Recorder {
    status: Option<Shared>,
}

impl Recorder {
    /// A recorder filling `status`.
    pub fn new(status: Shared) -> Self {
        Recorder {
            status: Some(status),
        }
    }

    /// Records what an event the scheduler is about to handle says.
    pub fn event(&self, event: &Event) {
        let Some(s) = &self.status else { return };
        let Ok(mut s) = s.lock() else { return };
        let now = wall_ms();
        match event {
            Event::SubmitJob { job, stages } => s.job_submitted(*job, stages, now),
            Event::TaskEnded { task, outcome, .. } => s.task_ended(
                *task,
                outcome.as_ref().map(|_| ()).map_err(String::as_str),
                now,
            ),
            Event::ExecutorLost { id, reason } => s.executor_lost(id, reason, now),
            _ => {}
        }
    }

    /// Records the effects the scheduler answered with.
    pub fn effects(&self, effects: &[Effect]) {
        let Some(s) = &self.status else { return };
        if !effects.iter().any(|e| {
            matches!(
                e,
                Effect::Launch(_) | Effect::JobSucceeded(_) | Effect::JobFailed(..)
            )
        }) {
            return;
        }
        let Ok(mut s) = s.lock() else { return };
        let now = wall_ms();
        for e in effects {
            match e {
                Effect::Launch(launches) => {
                    for l in launches {
                        s.launched(l, now);
                    }
                }
                Effect::JobSucceeded(job) => s.job_ended(*job, None, now),
                Effect::JobFailed(job, f) => s.job_ended(*job, Some(failure_reason(f)), now),
                _ => {}
            }
        }
    }
}

/// A job failure as the UI shows it.
fn failure_reason(f: &JobFailure) -> String {
    match f {
        JobFailure::Task {
            stage,
            partition,
            attempts,
        } => format!(
            "stage {stage}, partition {partition} failed {} times: {}",
            attempts.len(),
            attempts.join("; ")
        ),
        JobFailure::ResultTooLarge { size, limit } => format!(
            "total size of serialized results ({size} bytes) is bigger than driver.max_result_size ({limit} bytes)"
        ),
        JobFailure::Cancelled(reason) => format!("cancelled: {reason}"),
    }
}

/// The UI's settings.
#[derive(Debug, Clone)]
pub(crate) struct UiConf {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub max_retries: u16,
    pub retained_jobs: usize,
    pub retained_tasks: usize,
    pub show_progress: bool,
    pub limits: HttpLimits,
}

impl UiConf {
    /// Reads the `ui.*` settings.
    pub fn from_conf(conf: &Conf) -> Result<Self> {
        let port = conf.u64(PORT, 4040)?;
        let port = u16::try_from(port).map_err(|_| {
            Error::InvalidArgument(format!("{PORT} = {port} is not a port (0..65535)"))
        })?;
        let max_retries = u16::try_from(conf.u64(PORT_MAX_RETRIES, 16)?).unwrap_or(u16::MAX);
        Ok(UiConf {
            enabled: conf.bool(ENABLED, true)?,
            host: conf.get(HOST).unwrap_or("127.0.0.1").to_string(),
            port,
            max_retries,
            retained_jobs: usize::try_from(conf.u64(RETAINED_JOBS, 1000)?).unwrap_or(usize::MAX),
            retained_tasks: usize::try_from(conf.u64(RETAINED_TASKS, 100_000)?)
                .unwrap_or(usize::MAX),
            show_progress: conf.bool(SHOW_PROGRESS, true)?,
            limits: HttpLimits::from_conf(conf)?,
        })
    }
}

/// A serving driver UI: stopped (and its thread joined) on [`stop`](Self::stop) or drop.
pub(crate) struct Ui {
    url: String,
    token: CancellationToken,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Ui {
    /// Binds `ui.host:ui.port` (or the next free of `ui.port_max_retries` ports above it)
    /// and serves `status` on a thread of its own. `None`, with a WARN naming the
    /// settings, when every one of those ports is taken: the program runs without a UI.
    pub fn start(conf: &UiConf, status: Shared) -> Result<Option<Ui>> {
        let ui_error = |reason: String| Error::Io {
            path: "the driver UI".into(),
            reason,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ui_error(format!("starting its runtime: {e}")))?;
        let Some(server) = rt.block_on(bind(conf))? else {
            return Ok(None);
        };
        let url = server.url().to_string();
        let token = CancellationToken::new();
        let router = routes(status);
        let stop = token.clone();
        let thread = std::thread::Builder::new()
            .name("flint-driver-ui".into())
            .spawn(move || rt.block_on(server.serve(router, stop)))
            .map_err(|e| ui_error(format!("starting its thread: {e}")))?;
        Ok(Some(Ui {
            url,
            token,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Its base URL, `http://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops serving and waits for the server thread.
    pub fn stop(&self) {
        self.token.cancel();
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds the first free port of `port ..= port + max_retries` (port 0: any).
async fn bind(conf: &UiConf) -> Result<Option<HttpServer>> {
    let mut port = conf.port;
    let last = if conf.port == 0 {
        0
    } else {
        conf.port.saturating_add(conf.max_retries)
    };
    loop {
        match HttpServer::bind(&conf.host, port, conf.limits, None).await {
            Ok(s) => return Ok(Some(s)),
            Err(DaemonError::PortInUse { .. }) if port < last => {
                tracing::warn!(
                    "the driver UI could not bind on port {port}; attempting port {}",
                    port + 1
                );
                port += 1;
            }
            Err(DaemonError::PortInUse { .. }) => {
                tracing::warn!(
                    "the driver UI is off: ports {}..={last} on {} are all in use; set {PORT} to a free port (0: any) or raise {PORT_MAX_RETRIES}",
                    conf.port, conf.host
                );
                return Ok(None);
            }
            Err(e) => {
                return Err(Error::Io {
                    path: "the driver UI".into(),
                    reason: format!("{e}; set {HOST} / {PORT} or {ENABLED} = false"),
                })
            }
        }
    }
}

/// `/api/v1/applications/<id>/stages/<stage>`: one attempt with its tasks.
#[derive(Serialize)]
struct StageWithTasks<'a> {
    #[serde(flatten)]
    stage: &'a status::StageRecord,
    tasks: std::collections::BTreeMap<String, &'a status::TaskRecord>,
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "message": what }))).into_response()
}

fn with_app<F>(status: &Shared, app: &str, f: F) -> Response
where
    F: FnOnce(&AppStatus) -> Response,
{
    let Ok(s) = status.lock() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the status record is poisoned",
        )
            .into_response();
    };
    if app != s.app_id {
        return not_found(format!("no such app: {app}; this driver runs {}", s.app_id));
    }
    f(&s)
}

fn routes(status: Shared) -> Router {
    let snap = status.clone();
    let snapshot = move || -> serde_json::Value {
        match snap.lock() {
            Ok(s) => json!({
                "id": s.app_id,
                "name": s.app_name,
                "jobs": s.jobs().count(),
                "runningTasks": s.running_tasks(),
                "droppedJobs": s.dropped_jobs(),
            }),
            Err(_) => json!({}),
        }
    };
    let summary = |v: &serde_json::Value| -> String {
        format!(
            "flint driver: application {} ({}), {} jobs retained, {} tasks running\n\
             JSON: /api/v1/applications/{}/jobs and /stages\n",
            v["id"].as_str().unwrap_or(""),
            v["name"].as_str().unwrap_or(""),
            v["jobs"],
            v["runningTasks"],
            v["id"].as_str().unwrap_or(""),
        )
    };
    let api = Router::new()
        .route("/api/v1/applications", get(applications))
        .route("/api/v1/applications/{app}/jobs", get(jobs))
        .route("/api/v1/applications/{app}/jobs/{job}", get(job))
        .route("/api/v1/applications/{app}/stages", get(stages))
        .route("/api/v1/applications/{app}/stages/{stage}", get(stage))
        .with_state(status);
    status_routes(snapshot, summary).merge(api)
}

async fn applications(State(status): State<Shared>) -> Response {
    let Ok(s) = status.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    Json(json!([{
        "id": s.app_id,
        "name": s.app_name,
        "attempts": [{ "startTime": s.start_time, "completed": false }],
    }]))
    .into_response()
}

async fn jobs(State(status): State<Shared>, Path(app): Path<String>) -> Response {
    with_app(&status, &app, |s| {
        Json(s.jobs().collect::<Vec<_>>()).into_response()
    })
}

async fn job(State(status): State<Shared>, Path((app, job)): Path<(String, String)>) -> Response {
    with_app(&status, &app, |s| {
        match job.parse::<u64>().ok().and_then(|j| s.job(j)) {
            Some(j) => Json(j).into_response(),
            None => not_found(format!("unknown job: {job}")),
        }
    })
}

async fn stages(State(status): State<Shared>, Path(app): Path<String>) -> Response {
    with_app(&status, &app, |s| {
        Json(s.stages().collect::<Vec<_>>()).into_response()
    })
}

async fn stage(
    State(status): State<Shared>,
    Path((app, stage)): Path<(String, String)>,
) -> Response {
    with_app(&status, &app, |s| {
        match stage.parse::<u64>().ok().and_then(|id| s.stage(id)) {
            Some(st) => Json([StageWithTasks {
                stage: st,
                tasks: st.tasks.iter().map(|(id, t)| (id.to_string(), t)).collect(),
            }])
            .into_response(),
            None => not_found(format!("unknown stage: {stage}")),
        }
    })
}
