//! The shell around [`WorkerCore`]: one lock holding the state machine, the
//! worker's own endpoint and its child processes, and the code that turns
//! each [`Effect`] into a message, a timer, a child process, a cleanup or a
//! log line.
//!
//! Every event, whether it comes from the endpoint, a timer, a child or an
//! ask's answer, goes through [`Shared::handle`]: lock, `core.handle`, carry
//! out the effects in order, unlock. Carrying out an effect never waits:
//! sends are queued by the RPC layer, and anything slow (starting or
//! killing a child, asking the master, cleaning the work dir, waiting for a
//! timer) runs in a spawned task that feeds its outcome back as another
//! event. An effect whose outcome is known at once (an executor whose
//! directory name is unusable) queues its event behind the current one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flint_daemon::Clock;
use flint_proto::messages::{
    DriverStateChanged, ExecutorStateChanged, Heartbeat, MasterMsg, RegisterWorker,
    WorkerDecommissioning, WorkerLatestState, WorkerMsg, WorkerSchedulerStateResponse,
    MASTER_ENDPOINT,
};
use flint_proto::{AppId, BinarySource, ExecutorCommand, WorkerId};
use flint_rpc::{AskError, EndpointRef, RpcAddress, RpcEnv};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{settings, status_doc, WorkerStatusDoc};
use crate::binaries::{BinaryCache, BinaryLease};
use crate::error_chain;
use crate::runner::{self, ChildKind, ExitStatus, LaunchSpec, Placeholders, RunningChild};
use crate::state::{AuthRefusal, ChildId, Effect, Event, ExecutorReport, LogLevel, WorkerCore};

/// What the worker is, fixed at start.
pub(crate) struct Info {
    /// The worker's id.
    pub(crate) worker_id: WorkerId,
    /// The RPC environment's address.
    pub(crate) address: RpcAddress,
    /// The worker endpoint's address, `flint://Worker@host:port`.
    pub(crate) worker_url: String,
    /// The web UI's base URL.
    pub(crate) webui_url: String,
    /// The work directory, absolute.
    pub(crate) work_dir: PathBuf,
    /// Whether RPC authentication is on (shown in the status).
    pub(crate) auth: bool,
    /// Fetched binaries, `<work_dir>/binaries`.
    pub(crate) binaries: Arc<BinaryCache>,
    /// The shuffle service (`shuffle.service.enabled`): the block server on the
    /// worker's RPC environment, serving its local dirs.
    pub(crate) shuffle: Option<Arc<flint_shuffle::BlockServer>>,
}

/// A child process of the worker, by the state machine's [`ChildId`].
enum Slot {
    /// Its start is under way; a kill asked meanwhile waits here (grace).
    Starting { kill_grace: Option<Duration> },
    /// It runs (or has exited and is about to be reported).
    Running(Arc<RunningChild>),
}

/// Everything behind the lock.
pub(crate) struct Core {
    state: WorkerCore,
    /// The worker's own endpoint, set once it is set up in the RPC env.
    self_ref: Option<EndpointRef<WorkerMsg>>,
    children: HashMap<ChildId, Slot>,
    /// `(code, reason)` once the state machine decided to exit.
    outcome: Option<(i32, String)>,
}

/// What the endpoint, the timers, the child tasks, the web UI and the
/// handle share.
pub(crate) struct Shared {
    core: Mutex<Core>,
    pub(crate) info: Info,
    pub(crate) env: RpcEnv,
    /// The one token every task of the worker selects on. Cancelled once
    /// the children are gone, after the worker decided to exit.
    pub(crate) token: CancellationToken,
    /// Timers, asks, the web UI, cleanups.
    tracker: TaskTracker,
    /// Child processes: starting, waiting for, killing. Drained before the
    /// token is cancelled, so children are reaped before the worker stops.
    children: TaskTracker,
    /// The runtime the worker was started on, so events can be handled
    /// (and tasks spawned) from outside it, e.g. when the handle is dropped.
    runtime: tokio::runtime::Handle,
    /// The `worker` span (with the worker id) every log line goes under.
    pub(crate) span: tracing::Span,
    /// Stamps every event.
    clock: Clock,
}

impl Shared {
    pub(crate) fn new(
        state: WorkerCore,
        info: Info,
        env: RpcEnv,
        span: tracing::Span,
    ) -> Arc<Self> {
        Arc::new(Shared {
            core: Mutex::new(Core {
                state,
                self_ref: None,
                children: HashMap::new(),
                outcome: None,
            }),
            info,
            env,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            children: TaskTracker::new(),
            runtime: tokio::runtime::Handle::current(),
            span,
            clock: Clock::new(),
        })
    }

    /// Whether the child runs or may run again (see [`WorkerCore::child_active`]).
    pub(crate) fn child_active(&self, id: &ChildId) -> bool {
        self.core.lock().state.child_active(id)
    }

    /// Records the worker's own endpoint (sent in registrations and
    /// heartbeats).
    pub(crate) fn set_self_ref(&self, r: EndpointRef<WorkerMsg>) {
        self.core.lock().self_ref = Some(r);
    }

    /// Spawns a tracked task on the worker's runtime.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn_on(task, &self.runtime);
    }

    /// Handles one event: see the module docs. Log lines go to the current
    /// span; callers run under the worker's span or a child of it.
    pub(crate) fn handle(self: &Arc<Self>, event: Event) {
        let mut core = self.core.lock();
        self.handle_locked(&mut core, event);
    }

    fn handle_locked(self: &Arc<Self>, core: &mut Core, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let effects = core.state.handle(self.clock.now(), event);
            for effect in effects {
                self.execute(core, effect, &mut queue);
            }
        }
    }

    /// Reports a master's handshake refusal when `reason` (from the RPC
    /// layer) is one; other failures are not about credentials.
    pub(crate) fn auth_refused(self: &Arc<Self>, master_url: &str, reason: &str) {
        if let Some(refusal) = AuthRefusal::classify(reason) {
            self.handle(Event::MasterRefusedAuth {
                master_url: master_url.to_string(),
                refusal,
                detail: reason.to_string(),
            });
        }
    }

    /// The status document.
    pub(crate) fn status(&self) -> WorkerStatusDoc {
        let status = self.core.lock().state.status();
        status_doc(status, &self.info)
    }

    /// The exit code and reason, once the worker decided to exit.
    pub(crate) fn outcome(&self) -> Option<(i32, String)> {
        self.core.lock().outcome.clone()
    }

    /// Waits until the worker has stopped: the token is cancelled, every
    /// task and child has ended and the RPC environment is down. Then drops
    /// what the worker held.
    pub(crate) async fn finished(&self) {
        self.token.cancelled().await;
        self.tracker.close();
        self.tracker.wait().await;
        self.children.close();
        self.children.wait().await;
        self.env.shutdown();
        self.env.await_termination().await;
        let mut core = self.core.lock();
        core.self_ref = None;
        // Anything still here would be SIGKILLed by its drop; after an
        // orderly exit nothing is.
        core.children.clear();
    }

    fn execute(self: &Arc<Self>, core: &mut Core, effect: Effect, queue: &mut VecDeque<Event>) {
        match effect {
            // ----- to masters -----
            Effect::RegisterWithMaster { master_url, .. } => {
                let Some(me) = core.self_ref.clone() else {
                    tracing::error!(
                        "worker endpoint not registered; cannot register with {master_url}"
                    );
                    return;
                };
                let Some((master, address)) = self.master(&master_url) else {
                    return;
                };
                let msg = RegisterWorker {
                    id: self.info.worker_id.clone(),
                    host: self.info.address.host.clone(),
                    port: self.info.address.port,
                    worker: me,
                    cores: core.state.config().cores,
                    memory_mb: core.state.config().memory_mb,
                    web_ui_url: self.info.webui_url.clone(),
                    master_address: address,
                };
                send(&master, msg);
            }
            Effect::SendHeartbeat { master_url } => {
                let (Some(me), Some((master, _))) =
                    (core.self_ref.clone(), self.master(&master_url))
                else {
                    return;
                };
                tracing::trace!("heartbeat to {master_url}");
                send(
                    &master,
                    Heartbeat {
                        worker_id: self.info.worker_id.clone(),
                        worker: me,
                    },
                );
            }
            Effect::SendWorkerLatestState {
                master_url,
                executors,
                driver_ids,
            } => {
                if let Some((master, _)) = self.master(&master_url) {
                    send(
                        &master,
                        WorkerLatestState {
                            worker_id: self.info.worker_id.clone(),
                            executors,
                            driver_ids,
                        },
                    );
                }
            }
            Effect::SendWorkerSchedulerState {
                master_url,
                executors,
                driver_ids,
            } => {
                if let Some((master, _)) = self.master(&master_url) {
                    send(
                        &master,
                        WorkerSchedulerStateResponse {
                            worker_id: self.info.worker_id.clone(),
                            executors,
                            driver_ids,
                        },
                    );
                }
            }
            Effect::ReportExecutorState { master_url, report } => match self.master(&master_url) {
                Some((master, _)) => self.report_executor(master, report),
                None => queue.push_back(Event::ExecutorStateSyncFailed {
                    report,
                    timed_out: false,
                }),
            },
            Effect::ReportDriverState {
                master_url,
                driver_id,
                state,
                exception,
            } => {
                if let Some((master, _)) = self.master(&master_url) {
                    send(
                        &master,
                        DriverStateChanged {
                            driver_id,
                            state,
                            exception,
                        },
                    );
                }
            }
            Effect::SendWorkerDecommissioning { master_url } => {
                if let (Some(me), Some((master, _))) =
                    (core.self_ref.clone(), self.master(&master_url))
                {
                    send(
                        &master,
                        WorkerDecommissioning {
                            worker_id: self.info.worker_id.clone(),
                            worker: me,
                        },
                    );
                }
            }

            // ----- timers -----
            Effect::ScheduleRegistrationRetry {
                delay_ms,
                generation,
            } => self.timer(delay_ms, Event::RegistrationRetryTick { generation }),
            Effect::ScheduleHeartbeat { delay_ms } => self.timer(delay_ms, Event::HeartbeatTick),
            Effect::ScheduleCleanup { delay_ms } => self.timer(delay_ms, Event::CleanupTick),
            Effect::ScheduleExecutorStateRetry { delay_ms, report } => {
                self.timer(delay_ms, Event::RetryExecutorState { report })
            }
            Effect::ScheduleDriverRelaunch {
                driver_id,
                delay_ms,
            } => self.timer(delay_ms, Event::DriverRelaunchTick { driver_id }),

            // ----- children -----
            Effect::StartExecutor {
                app_id,
                exec_id,
                cores,
                memory_mb,
                command,
            } => {
                let id = ChildId::Executor {
                    app_id: app_id.clone(),
                    exec_id,
                };
                match runner::executor_work_dir(
                    &self.info.work_dir,
                    app_id.as_str(),
                    &exec_id.to_string(),
                ) {
                    Ok(dir) => {
                        let placeholders = self.placeholders(exec_id.to_string(), cores, &app_id);
                        let (mut spec, binary) =
                            launch_spec(ChildKind::Executor, command, dir, placeholders);
                        spec.env
                            .push(("FLINT_EXECUTOR_MEMORY_MB".into(), memory_mb.to_string()));
                        if let Some(s) = &self.info.shuffle {
                            // The executor writes its map output where the shuffle
                            // service serves it, and reports the service's address.
                            let dirs: Vec<String> = s
                                .local_dirs()
                                .iter()
                                .map(|d| d.display().to_string())
                                .collect();
                            spec.env.push((
                                flint_conf::registry::env_name(settings::LOCAL_DIR),
                                dirs.join(","),
                            ));
                            spec.env.push((
                                flint_conf::registry::env_name(settings::SHUFFLE_SERVICE_ENABLED),
                                "true".into(),
                            ));
                            spec.env.push((
                                "FLINT_SHUFFLE_SERVICE_ADDRESS".into(),
                                self.info.address.to_string(),
                            ));
                        }
                        self.start_child(core, id, spec, binary);
                    }
                    Err(e) => queue.push_back(Event::ExecutorLaunchFailed {
                        app_id,
                        exec_id,
                        message: error_chain(&e),
                    }),
                }
            }
            Effect::StartDriver { driver_id, desc } => {
                let id = ChildId::Driver {
                    driver_id: driver_id.clone(),
                };
                match runner::driver_work_dir(&self.info.work_dir, driver_id.as_str()) {
                    Ok(dir) => {
                        // A driver has no executor or application id yet.
                        let placeholders = Placeholders {
                            executor_id: String::new(),
                            hostname: self.info.address.host.clone(),
                            cores: desc.cores,
                            app_id: String::new(),
                            worker_url: self.info.worker_url.clone(),
                            binary: None,
                        };
                        let (mut spec, binary) =
                            launch_spec(ChildKind::Driver, desc.command.clone(), dir, placeholders);
                        spec.env
                            .push(("FLINT_DRIVER_MEMORY_MB".into(), desc.memory_mb.to_string()));
                        self.start_child(core, id, spec, binary);
                    }
                    Err(e) => queue.push_back(Event::DriverLaunchFailed {
                        driver_id,
                        message: error_chain(&e),
                    }),
                }
            }
            Effect::KillProcess { child, grace_ms } => {
                let grace = Duration::from_millis(grace_ms);
                match core.children.get_mut(&child) {
                    Some(Slot::Running(c)) => {
                        let c = c.clone();
                        self.kill_child(&child, c, grace);
                    }
                    Some(Slot::Starting { kill_grace }) => {
                        tracing::debug!(
                            "{} is still starting; it is killed once started",
                            describe(&child)
                        );
                        *kill_grace = Some(grace);
                    }
                    None => tracing::debug!("{} has no process to kill", describe(&child)),
                }
            }
            Effect::CleanupWorkDir {
                keep,
                app_data_ttl_ms,
            } => {
                let dir = self.info.work_dir.clone();
                let keep: HashSet<String> = keep.into_iter().collect();
                let ttl = Duration::from_millis(app_data_ttl_ms);
                let span = self.span.clone();
                let binaries = self.info.binaries.clone();
                let shuffle_dirs: Vec<PathBuf> = self
                    .info
                    .shuffle
                    .as_ref()
                    .map(|s| s.local_dirs().to_vec())
                    .unwrap_or_default();
                self.tracker.spawn_blocking_on(
                    move || {
                        let _g = span.enter();
                        // The shuffle service's files of applications that no longer
                        // run here and are older than the TTL (an application that
                        // ended while the worker was down never got its
                        // ApplicationFinished here).
                        for d in &shuffle_dirs {
                            let root = d.join(flint_shuffle::layout::ROOT);
                            if !root.is_dir() {
                                continue;
                            }
                            match runner::cleanup_old_app_dirs(&root, ttl, &keep, SystemTime::now()) {
                                Ok(removed) if removed.is_empty() => {}
                                Ok(removed) => tracing::info!(
                                    "shuffle cleanup removed the shuffle files of {} old application{} under {}",
                                    removed.len(),
                                    if removed.len() == 1 { "" } else { "s" },
                                    d.display()
                                ),
                                Err(e) => tracing::warn!(
                                    "shuffle cleanup of {} failed: {}",
                                    d.display(),
                                    error_chain(&e)
                                ),
                            }
                        }
                        if let Some(cutoff) = SystemTime::now().checked_sub(ttl) {
                            let removed = binaries.remove_unused_since(cutoff);
                            if !removed.is_empty() {
                                tracing::info!(
                                    "work dir cleanup removed {} cached binar{} unused for {ttl:?}",
                                    removed.len(),
                                    if removed.len() == 1 { "y" } else { "ies" }
                                );
                            }
                        }
                        match runner::cleanup_old_app_dirs(&dir, ttl, &keep, SystemTime::now()) {
                            Ok(removed) if removed.is_empty() => {
                                tracing::debug!("work dir cleanup: nothing to remove")
                            }
                            Ok(removed) => tracing::info!(
                                "work dir cleanup removed {} old application director{}",
                                removed.len(),
                                if removed.len() == 1 { "y" } else { "ies" }
                            ),
                            Err(e) => {
                                tracing::warn!("work dir cleanup failed: {}", error_chain(&e))
                            }
                        }
                    },
                    &self.runtime,
                );
            }
            Effect::CleanupAppDirs { app_id } => match &self.info.shuffle {
                Some(s) => {
                    let dirs = s.local_dirs().to_vec();
                    let span = self.span.clone();
                    self.tracker.spawn_blocking_on(
                        move || {
                            let _g = span.enter();
                            match flint_shuffle::remove_app(&dirs, app_id.as_str()) {
                                Ok(()) => tracing::info!(app_id = %app_id, "removed the shuffle files of application {app_id}"),
                                Err(e) => tracing::warn!(app_id = %app_id, "cannot remove the shuffle files of application {app_id}: {e}"),
                            }
                        },
                        &self.runtime,
                    );
                }
                None => {
                    tracing::debug!(app_id = %app_id, "application {app_id} finished; no shuffle service, no local directories to clean")
                }
            },

            // ----- process -----
            Effect::Exit { code, reason } => {
                if code != 0 {
                    tracing::error!("worker exiting with code {code}");
                }
                if core.outcome.is_none() {
                    core.outcome = Some((code, reason));
                    self.begin_stop(core);
                }
            }
            Effect::Log { level, message } => match level {
                LogLevel::Info => tracing::info!("{message}"),
                LogLevel::Warn => tracing::warn!("{message}"),
                LogLevel::Error => tracing::error!("{message}"),
            },
        }
    }

    /// The `Master` endpoint at `master_url`, and its address.
    fn master(&self, master_url: &str) -> Option<(EndpointRef<MasterMsg>, RpcAddress)> {
        match master_url.parse::<RpcAddress>() {
            Ok(address) => Some((self.env.endpoint_ref(&address, MASTER_ENDPOINT), address)),
            Err(e) => {
                tracing::error!("cannot reach master: {}", error_chain(&e));
                None
            }
        }
    }

    /// Asks the master `ExecutorStateChanged` and feeds the outcome back.
    ///
    /// The request is queued here, when `ask` is called (flint-rpc queues an ask
    /// at the call, not at the first poll), so the reports of one executor reach
    /// the master in the order the state machine made them (RUNNING before
    /// EXITED); only the wait for the answer runs in the spawned task.
    fn report_executor(self: &Arc<Self>, master: EndpointRef<MasterMsg>, report: ExecutorReport) {
        let shared = self.clone();
        let span = tracing::info_span!(parent: &self.span, "executor", app_id = %report.app_id, exec_id = %report.exec_id);
        let msg = ExecutorStateChanged {
            app_id: report.app_id.clone(),
            exec_id: report.exec_id,
            state: report.state,
            message: report.message.clone(),
            exit_status: report.exit_status,
        };
        let master_url = master.rpc_address().map(|a| a.to_string());
        let ask = {
            let _runtime = self.runtime.enter();
            master.ask(msg)
        };
        self.spawn(
            async move {
                if shared.token.is_cancelled() {
                    return;
                }
                let answer = tokio::select! {
                    _ = shared.token.cancelled() => return,
                    a = ask => a,
                };
                let event = match answer {
                    Ok(_) => Event::ExecutorStateSynced {
                        app_id: report.app_id,
                        exec_id: report.exec_id,
                    },
                    Err(e) => {
                        tracing::warn!(
                            "executor state report not acknowledged: {}",
                            error_chain(&e)
                        );
                        if let (AskError::NotDelivered { reason, .. }, Some(master_url)) =
                            (&e, master_url.as_ref())
                        {
                            shared.auth_refused(master_url, reason);
                        }
                        let timed_out = matches!(e, AskError::Timeout { .. });
                        Event::ExecutorStateSyncFailed { report, timed_out }
                    }
                };
                shared.handle(event);
            }
            .instrument(span),
        );
    }

    /// Delivers `event` after `delay_ms`, unless the worker stops first.
    fn timer(self: &Arc<Self>, delay_ms: u64, event: Event) {
        let shared = self.clone();
        self.spawn(
            async move {
                tokio::select! {
                    _ = shared.token.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => shared.handle(event),
                }
            }
            .instrument(self.span.clone()),
        );
    }

    fn placeholders(&self, executor_id: String, cores: u32, app_id: &AppId) -> Placeholders {
        Placeholders {
            executor_id,
            hostname: self.info.address.host.clone(),
            cores,
            app_id: app_id.to_string(),
            worker_url: self.info.worker_url.clone(),
            binary: None,
        }
    }

    /// Starts a child in a task that then waits for its exit; both outcomes
    /// come back as events.
    fn start_child(
        self: &Arc<Self>,
        core: &mut Core,
        id: ChildId,
        spec: LaunchSpec,
        binary: Option<BinarySource>,
    ) {
        if core.children.contains_key(&id) {
            // The state machine never starts a child twice; keep the first.
            tracing::error!(
                "{} already has a process; not starting another",
                describe(&id)
            );
            return;
        }
        core.children
            .insert(id.clone(), Slot::Starting { kill_grace: None });
        let span = child_span(&self.span, &id);
        let shared = self.clone();
        self.children.spawn_on(
            run_child(shared, id, spec, binary).instrument(span),
            &self.runtime,
        );
    }

    /// Kills a started child (TERM, KILL after `grace`); its exit is
    /// reported by the task waiting for it.
    fn kill_child(self: &Arc<Self>, id: &ChildId, child: Arc<RunningChild>, grace: Duration) {
        let shared = self.clone();
        let span = child_span(&self.span, id);
        self.children.spawn_on(
            async move {
                tracing::info!(pid = child.pid(), "killing {} (grace {grace:?})", child.command());
                tokio::select! {
                    _ = shared.token.cancelled() => {}
                    status = child.kill(grace) => tracing::debug!(pid = child.pid(), "killed: {status}"),
                }
            }
            .instrument(span),
            &self.runtime,
        );
    }

    /// The worker decided to exit: once every child has been killed and
    /// reaped (the state machine asked for the kills just before), cancel
    /// the token, which stops everything else.
    fn begin_stop(self: &Arc<Self>, core: &Core) {
        let config = core.state.config();
        let limit = Duration::from_millis(
            config
                .executor_kill_grace_ms
                .max(config.driver_terminate_timeout_ms),
        ) + Duration::from_secs(5);
        let shared = self.clone();
        self.spawn(
            async move {
                shared.children.close();
                if tokio::time::timeout(limit, shared.children.wait())
                    .await
                    .is_err()
                {
                    tracing::error!(
                        "child processes still running {limit:?} after they were told to stop; \
                         killing them with SIGKILL"
                    );
                }
                shared.token.cancel();
            }
            .instrument(self.span.clone()),
        );
    }
}

/// Life of one child: fetch its binary (if it has one), start it, report it
/// started (or not), kill it if that was asked meanwhile, wait for its exit
/// and report that. The binary's lease is held until the child has exited.
async fn run_child(
    shared: Arc<Shared>,
    id: ChildId,
    mut spec: LaunchSpec,
    binary: Option<BinarySource>,
) {
    let dir = spec.dir.clone();
    let _lease: Option<BinaryLease> = match binary {
        None => None,
        Some(source) => {
            let ensured = tokio::select! {
                _ = shared.token.cancelled() => {
                    shared.core.lock().children.remove(&id);
                    return;
                }
                r = shared.info.binaries.ensure(&shared.env, &source) => r,
            };
            match ensured {
                Ok(lease) => {
                    spec.placeholders.binary = Some(lease.path().display().to_string());
                    Some(lease)
                }
                Err(e) => {
                    let message = error_chain(&e);
                    tracing::warn!("cannot launch {}: {message}", describe(&id));
                    return launch_failed(&shared, &id, message);
                }
            }
        }
    };
    let spawned = tokio::select! {
        _ = shared.token.cancelled() => {
            // Dropping the spawn future kills a child that did start.
            shared.core.lock().children.remove(&id);
            return;
        }
        r = runner::spawn(spec) => r,
    };
    let child = match spawned {
        Ok(c) => Arc::new(c),
        Err(e) => return launch_failed(&shared, &id, error_chain(&e)),
    };
    tracing::info!(pid = child.pid(), dir = %dir.display(), "started {}", child.command());
    let pending_kill = {
        let mut core = shared.core.lock();
        let pending = match core
            .children
            .insert(id.clone(), Slot::Running(child.clone()))
        {
            Some(Slot::Starting { kill_grace }) => kill_grace,
            _ => None,
        };
        let event = match &id {
            ChildId::Executor { app_id, exec_id } => Event::ExecutorStarted {
                app_id: app_id.clone(),
                exec_id: *exec_id,
            },
            ChildId::Driver { driver_id } => Event::DriverStarted {
                driver_id: driver_id.clone(),
            },
        };
        shared.handle_locked(&mut core, event);
        pending
    };
    if let Some(grace) = pending_kill {
        shared.kill_child(&id, child.clone(), grace);
    }
    let status = tokio::select! {
        _ = shared.token.cancelled() => return,
        s = child.wait() => s,
    };
    tracing::info!(pid = child.pid(), "process {status}");
    let mut core = shared.core.lock();
    if matches!(core.children.get(&id), Some(Slot::Running(c)) if Arc::ptr_eq(c, &child)) {
        core.children.remove(&id);
    }
    shared.handle_locked(&mut core, exited_event(id, status));
}

/// Reports that a child could not be started (its start slot is freed).
fn launch_failed(shared: &Arc<Shared>, id: &ChildId, message: String) {
    let mut core = shared.core.lock();
    core.children.remove(id);
    let event = match id {
        ChildId::Executor { app_id, exec_id } => Event::ExecutorLaunchFailed {
            app_id: app_id.clone(),
            exec_id: *exec_id,
            message,
        },
        ChildId::Driver { driver_id } => Event::DriverLaunchFailed {
            driver_id: driver_id.clone(),
            message,
        },
    };
    shared.handle_locked(&mut core, event);
}

fn exited_event(id: ChildId, status: ExitStatus) -> Event {
    match id {
        ChildId::Executor { app_id, exec_id } => Event::ExecutorExited {
            app_id,
            exec_id,
            status,
        },
        ChildId::Driver { driver_id } => Event::DriverExited { driver_id, status },
    }
}

/// The child's launch spec, and the binary to fetch before it starts.
fn launch_spec(
    kind: ChildKind,
    command: ExecutorCommand,
    dir: PathBuf,
    placeholders: Placeholders,
) -> (LaunchSpec, Option<BinarySource>) {
    let spec = LaunchSpec {
        kind,
        program: PathBuf::from(command.program),
        args: command.args,
        env: command.env.into_iter().collect(),
        dir,
        placeholders,
    };
    (spec, command.binary)
}

/// `executor app-…/3` or `driver driver-…`, for log lines.
fn describe(id: &ChildId) -> String {
    match id {
        ChildId::Executor { app_id, exec_id } => format!("executor {app_id}/{exec_id}"),
        ChildId::Driver { driver_id } => format!("driver {driver_id}"),
    }
}

/// A span naming the child's application and executor (or driver).
fn child_span(parent: &tracing::Span, id: &ChildId) -> tracing::Span {
    match id {
        ChildId::Executor { app_id, exec_id } => {
            tracing::info_span!(parent: parent, "executor", app_id = %app_id, exec_id = %exec_id)
        }
        ChildId::Driver { driver_id } => {
            tracing::info_span!(parent: parent, "driver", driver_id = %driver_id)
        }
    }
}

/// Sends `msg` to the master, logging (not failing) when it cannot be
/// queued.
fn send(to: &EndpointRef<MasterMsg>, msg: impl Into<MasterMsg>) {
    if let Err(e) = to.send(msg) {
        tracing::warn!("cannot send to master: {}", error_chain(&e));
    }
}
