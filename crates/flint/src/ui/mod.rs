//! The driver's UI, after Spark's `SparkUI` and its REST API (`/api/v1`): JSON of this
//! application's jobs, stages and task attempts on `ui.port` (4040, retrying upward
//! `ui.port_max_retries` times when taken, as `spark.port.maxRetries` does), served by
//! flint-daemon's bounded HTTP shell on a thread of its own; and the console progress
//! bar on a TTY (`progress`).
//!
//! The scheduler's shell feeds a [`Recorder`] with the events and effects it handles.
//! Recording is a push of a small record onto an inbox (one short lock per event, so
//! the scheduler's hot path stays cheap); the records are applied to the record
//! ([`status::AppStatus`], bounded by `ui.retained_jobs` and `ui.retained_tasks`)
//! lazily: by whoever reads it (an HTTP request, the progress bar), by the recorder's
//! aggregator thread once 4,096 are waiting, and by the recorder itself past 65,536
//! (so the inbox is bounded even when the aggregator falls behind).
//!
//! Routes: `/api/v1/applications`, `/api/v1/applications/<id>/jobs`,
//! `…/jobs/<job>`, `…/stages`, `…/stages/<stage>` (a list of its attempts, each with
//! its tasks by task id), plus the daemons' `/` summary and `/api/v1/status`.

pub(crate) mod progress;
pub mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, LockResult, Mutex, MutexGuard};
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

use crate::scheduler::{Effect, Event, JobFailure, JobId, StageId, TaskId};
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

/// The shared record: the aggregated [`AppStatus`] and the events not yet applied to
/// it. [`StatusCell::lock`] applies them first, so every reader sees everything
/// recorded so far.
pub(crate) type Shared = Arc<StatusCell>;

/// Events recorded past this many wake the aggregator thread.
const AGGREGATE_AT: usize = 4096;
/// Events recorded past this many are applied by the recorder itself (the
/// aggregator fell behind): the inbox stays bounded.
const INBOX_CAP: usize = 1 << 16;

/// The record and its inbox; see [`Shared`]. Lock order: the record, then the inbox.
pub(crate) struct StatusCell {
    status: Mutex<AppStatus>,
    inbox: Arc<Inbox>,
}

/// Events the scheduler's shell recorded, waiting to be applied.
struct Inbox {
    recs: Mutex<Vec<Rec>>,
    wake: Condvar,
    closed: AtomicBool,
}

/// One recorded event: what the shell thread pays for (a push), applied later.
enum Rec {
    Submitted {
        job: JobId,
        stages: Vec<(StageId, u32)>,
        at: u64,
    },
    Launched {
        task: TaskId,
        job: JobId,
        stage: StageId,
        partition: u32,
        attempt: u32,
        executor: Arc<str>,
        at: u64,
    },
    Ended {
        task: TaskId,
        error: Option<String>,
        at: u64,
    },
    Lost {
        executor: String,
        reason: String,
        at: u64,
    },
    JobEnded {
        job: JobId,
        failure: Option<String>,
        at: u64,
    },
}

impl StatusCell {
    /// A cell around `status`.
    pub fn new(status: AppStatus) -> Shared {
        Arc::new(StatusCell {
            status: Mutex::new(status),
            inbox: Arc::new(Inbox {
                recs: Mutex::new(Vec::new()),
                wake: Condvar::new(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The record, with every event recorded so far applied.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, AppStatus>> {
        let mut status = self.status.lock();
        if let Ok(s) = status.as_mut() {
            let recs = self
                .inbox
                .recs
                .lock()
                .map(|mut r| std::mem::take(&mut *r))
                .unwrap_or_default();
            for r in recs {
                apply(s, r);
            }
        }
        status
    }

    /// Queues `recs` (called on the scheduler's thread: no aggregation here unless
    /// the inbox is full).
    fn push(&self, recs: impl IntoIterator<Item = Rec>) {
        let Ok(mut inbox) = self.inbox.recs.lock() else {
            return;
        };
        let before = inbox.len();
        inbox.extend(recs);
        let after = inbox.len();
        drop(inbox);
        if after >= INBOX_CAP {
            drop(self.lock());
        } else if before < AGGREGATE_AT && after >= AGGREGATE_AT {
            self.inbox.wake.notify_one();
        }
    }
}

fn apply(s: &mut AppStatus, r: Rec) {
    match r {
        Rec::Submitted { job, stages, at } => s.job_submitted_sizes(job, &stages, at),
        Rec::Launched {
            task,
            job,
            stage,
            partition,
            attempt,
            executor,
            at,
        } => s.launched_on(task, job, stage, partition, attempt, executor, at),
        Rec::Ended { task, error, at } => {
            s.task_ended(task, error.as_deref().map_or(Ok(()), Err), at)
        }
        Rec::Lost {
            executor,
            reason,
            at,
        } => s.executor_lost(&executor, &reason, at),
        Rec::JobEnded { job, failure, at } => s.job_ended(job, failure, at),
    }
}

/// Feeds the record from the scheduler's shell (a no-op until one is set). The shell
/// thread only queues small records; a thread of the recorder's applies them when
/// many are waiting, and readers apply the rest when they look.
#[derive(Default)]
pub(crate) struct Recorder {
    status: Option<Shared>,
    aggregator: Option<JoinHandle<()>>,
    /// Executor ids seen, shared by their records (no allocation per launch).
    executors: std::cell::RefCell<Vec<Arc<str>>>,
}

impl Recorder {
    /// A recorder filling `status`, with its aggregator thread.
    pub fn new(status: Shared) -> Self {
        let cell = Arc::downgrade(&status);
        let inbox = status.inbox.clone();
        let aggregator = std::thread::Builder::new()
            .name("flint-ui-status".into())
            .spawn(move || loop {
                let Ok(recs) = inbox.recs.lock() else { return };
                let Ok(recs) = inbox.wake.wait_while(recs, |r| {
                    r.len() < AGGREGATE_AT && !inbox.closed.load(Ordering::Acquire)
                }) else {
                    return;
                };
                drop(recs);
                if inbox.closed.load(Ordering::Acquire) {
                    return;
                }
                match cell.upgrade() {
                    Some(c) => drop(c.lock()),
                    None => return,
                }
            })
            .ok();
        Recorder {
            status: Some(status),
            aggregator,
            executors: Default::default(),
        }
    }

    fn executor(&self, id: &str) -> Arc<str> {
        let mut known = self.executors.borrow_mut();
        if let Some(e) = known.iter().find(|e| &***e == id) {
            return e.clone();
        }
        let e: Arc<str> = Arc::from(id);
        if known.len() >= 1024 {
            known.clear(); // a long-lived app with many executors: start over
        }
        known.push(e.clone());
        e
    }

    /// Records what an event the scheduler is about to handle says.
    pub fn event(&self, event: &Event) {
        let Some(s) = &self.status else { return };
        let rec = match event {
            Event::SubmitJob { job, stages } => Rec::Submitted {
                job: *job,
                stages: stages
                    .iter()
                    .map(|st| {
                        let n = u32::try_from(st.partitions.len()).unwrap_or(u32::MAX);
                        (st.id, n)
                    })
                    .collect(),
                at: wall_ms(),
            },
            Event::TaskEnded { task, outcome, .. } => Rec::Ended {
                task: *task,
                error: outcome.as_ref().err().cloned(),
                at: wall_ms(),
            },
            Event::ExecutorLost { id, reason } => Rec::Lost {
                executor: id.clone(),
                reason: reason.clone(),
                at: wall_ms(),
            },
            _ => return,
        };
        s.push([rec]);
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
        let at = wall_ms();
        let mut recs = Vec::new();
        for e in effects {
            match e {
                Effect::Launch(launches) => {
                    recs.extend(launches.iter().map(|l| Rec::Launched {
                        task: l.task,
                        job: l.job,
                        stage: l.stage,
                        partition: l.partition,
                        attempt: l.attempt,
                        executor: self.executor(&l.executor),
                        at,
                    }));
                }
                Effect::JobSucceeded(job) => recs.push(Rec::JobEnded {
                    job: *job,
                    failure: None,
                    at,
                }),
                Effect::JobFailed(job, f) => recs.push(Rec::JobEnded {
                    job: *job,
                    failure: Some(failure_reason(f)),
                    at,
                }),
                _ => {}
            }
        }
        s.push(recs);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(s) = &self.status {
            s.inbox.closed.store(true, Ordering::Release);
            // Taken and released so the aggregator is either waiting (and woken) or
            // about to see `closed`.
            drop(s.inbox.recs.lock());
            s.inbox.wake.notify_all();
        }
        if let Some(t) = self.aggregator.take() {
            let _ = t.join();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Launch, StageSpec};

    fn submit(job: JobId, stage: StageId, n: u32) -> Event {
        Event::SubmitJob {
            job,
            stages: vec![StageSpec {
                id: stage,
                parents: vec![],
                partitions: (0..n).collect(),
                blocks: vec![],
                shuffle: None,
            }],
        }
    }

    fn launch(task: TaskId, job: JobId, stage: StageId, partition: u32) -> Launch {
        Launch {
            task,
            job,
            stage,
            partition,
            attempt: 0,
            executor: "e1".into(),
        }
    }

    fn ended(task: TaskId, outcome: std::result::Result<u64, String>) -> Event {
        Event::TaskEnded {
            task,
            outcome,
            blocks_added: vec![],
            blocks_evicted: vec![],
            shuffle: Default::default(),
        }
    }

    #[test]
    fn a_reader_sees_every_recorded_event_applied_in_order() {
        let cell = StatusCell::new(AppStatus::new("t", 0, 10, 10));
        let r = Recorder::new(cell.clone());
        r.event(&submit(0, 1, 2));
        r.effects(&[Effect::Launch(vec![
            launch(10, 0, 1, 0),
            launch(11, 0, 1, 1),
        ])]);
        r.event(&ended(10, Err("boom".into())));
        r.event(&ended(11, Ok(1)));
        {
            let s = cell.lock().unwrap();
            let st = s.stage(1).unwrap();
            assert_eq!((st.num_failed_tasks, st.num_complete_tasks), (1, 1));
            assert_eq!(st.tasks[&10].error_message.as_deref(), Some("boom"));
            assert_eq!(s.job(0).unwrap().status, status::Status::Running);
        }
        r.effects(&[Effect::JobSucceeded(0)]);
        assert_eq!(
            cell.lock().unwrap().job(0).unwrap().status,
            status::Status::Succeeded
        );
        drop(r); // joins the aggregator thread
    }

    #[test]
    fn the_inbox_stays_bounded_without_readers() {
        let cell = StatusCell::new(AppStatus::new("t", 0, 10, 100));
        let r = Recorder::new(cell.clone());
        let n = 3 * INBOX_CAP as u64;
        r.event(&submit(0, 1, u32::try_from(n).unwrap()));
        for t in 0..n {
            r.effects(&[Effect::Launch(vec![launch(t, 0, 1, t as u32)])]);
            r.event(&ended(t, Ok(0)));
            assert!(cell.inbox.recs.lock().unwrap().len() < INBOX_CAP);
        }
        let s = cell.lock().unwrap();
        let st = s.stage(1).unwrap();
        assert_eq!(u64::from(st.num_complete_tasks), n);
        assert_eq!(st.tasks.len(), 100);
        drop(s);
        drop(r);
    }
}
