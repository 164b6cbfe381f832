//! The shell around [`MasterState`]: one lock holding the state machine and
//! the maps from worker and application ids to their endpoints (and from
//! connection addresses back to ids), and the code that turns each
//! [`Effect`] into a message, a reply, a timer or a log line.
//!
//! Every event, whether it comes from the endpoint, the timer or a
//! disconnection, goes through [`Shared::handle`]: lock, `state.handle`,
//! carry out the effects in order, forget endpoints of workers and
//! applications that are gone, unlock. Carrying out an effect never waits:
//! sends are queued by the RPC layer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flint_proto::messages::{
    AppClientMsg, ApplicationFinished, ApplicationRemoved, DecommissionWorker,
    DriverAttemptResponse, DriverUpdate, DriverWatchMsg, ExecutorAdded, ExecutorUpdated,
    KillDriver, KillExecutor, LaunchDriver, LaunchExecutor, MasterChanged, MasterInStandby,
    MasterMsg, ReconnectWorker, RegisterWorkerFailed, RegisteredApplication, RegisteredWorker,
    WorkerMsg, WorkerRemoved,
};
use flint_proto::status::MasterStatusJson;
use flint_proto::{AppId, DriverId, WorkerId, WorkerState};
use flint_rpc::{EndpointRef, Reply, RpcAddress};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::{Effect, Event, LogLevel, MasterState, Reply as StateReply};
use flint_daemon::Clock;

/// Where the event being handled came from, so registration answers reach
/// the registering endpoint before the master has it on file.
pub(crate) enum Origin {
    /// A timer, start-up or the master's own bookkeeping.
    Internal,
    /// A worker's message that carried its endpoint.
    Worker {
        /// The worker's endpoint, from the message.
        worker: EndpointRef<WorkerMsg>,
        /// The address of the connection it came over.
        conn: Option<RpcAddress>,
        /// The master address the worker used (echoed in `RegisteredWorker`).
        master_address: Option<RpcAddress>,
    },
    /// An application client's registration.
    App {
        /// The client's endpoint, from the message.
        driver: EndpointRef<AppClientMsg>,
        /// The address of the connection it came over.
        conn: Option<RpcAddress>,
    },
}

/// An endpoint the master talks to, and the connection address it was
/// registered over (how a dropped connection is traced back to it).
struct Link<M> {
    endpoint: EndpointRef<M>,
    conn: Option<RpcAddress>,
}

/// Everything behind the lock.
pub(crate) struct Core {
    pub(crate) state: MasterState,
    master_url: String,
    web_ui_url: String,
    own_address: RpcAddress,
    /// The master's own endpoint, set when it starts.
    pub(crate) master_ref: Option<EndpointRef<MasterMsg>>,
    workers: HashMap<WorkerId, Link<WorkerMsg>>,
    worker_by_conn: HashMap<RpcAddress, WorkerId>,
    apps: HashMap<AppId, Link<AppClientMsg>>,
    app_by_conn: HashMap<RpcAddress, AppId>,
    /// The uploaded binary (by SHA-256) each live driver runs, pinned in the binary
    /// store until the driver is removed.
    driver_binaries: HashMap<DriverId, String>,
    /// Tools following a driver by push (`WatchDriver`), at most `max_watches`.
    watches: Vec<Watch>,
    /// `master.max_driver_watches`.
    pub(crate) max_watches: usize,
}

/// One `WatchDriver`: who gets the updates and what it was told last.
struct Watch {
    driver: DriverId,
    watcher: EndpointRef<DriverWatchMsg>,
    /// The connection it came over (the watch goes when it closes).
    conn: Option<RpcAddress>,
    last: Option<DriverAttemptResponse>,
}

/// What the endpoint, the timers and the web UI share.
pub(crate) struct Shared {
    pub(crate) core: Mutex<Core>,
    /// The one token every loop of the master selects on.
    pub(crate) token: CancellationToken,
    /// Every task the master spawns.
    pub(crate) tracker: TaskTracker,
    /// Stamps every event and status snapshot.
    clock: Clock,
    /// Whether RPC authentication is on (shown in the status).
    auth: bool,
    /// The store of uploaded driver binaries, once it exists: live drivers' binaries
    /// are pinned in it.
    pub(crate) binaries: std::sync::OnceLock<Arc<super::binary_store::StoreShell>>,
}

impl Shared {
    pub(crate) fn new(
        state: MasterState,
        own_address: RpcAddress,
        web_ui_url: String,
        token: CancellationToken,
        clock: Clock,
        auth: bool,
    ) -> Arc<Self> {
        Arc::new(Shared {
            core: Mutex::new(Core {
                master_url: own_address.to_string(),
                state,
                web_ui_url,
                own_address,
                master_ref: None,
                workers: HashMap::new(),
                worker_by_conn: HashMap::new(),
                apps: HashMap::new(),
                app_by_conn: HashMap::new(),
                driver_binaries: HashMap::new(),
                watches: Vec::new(),
                max_watches: 1024,
            }),
            token,
            tracker: TaskTracker::new(),
            clock,
            auth,
            binaries: std::sync::OnceLock::new(),
        })
    }

    /// Handles one event: see the module docs.
    pub(crate) fn handle(self: &Arc<Self>, event: Event, origin: Origin, reply: Option<Reply>) {
        let mut core = self.core.lock();
        self.handle_locked(&mut core, event, origin, reply);
    }

    pub(crate) fn handle_locked(
        self: &Arc<Self>,
        core: &mut Core,
        event: Event,
        origin: Origin,
        mut reply: Option<Reply>,
    ) {
        let sweep = matches!(event, Event::Tick);
        let effects = core.state.handle(self.clock.now(), event);
        let mut gone_workers = Vec::new();
        let mut gone_apps = Vec::new();
        for effect in effects {
            match &effect {
                Effect::UnpersistWorker(id) => gone_workers.push(id.clone()),
                Effect::UnpersistApp(id) => gone_apps.push(id.clone()),
                _ => {}
            }
            self.execute(core, effect, &origin, &mut reply);
        }
        if sweep {
            gone_workers = core.workers.keys().cloned().collect();
            gone_apps = core.apps.keys().cloned().collect();
        }
        core.forget(gone_workers, gone_apps);
        if !core.watches.is_empty() {
            core.push_watches();
        }
    }

    /// Starts pushing `driver_id`'s newest attempt to `watcher` (at once, then on each
    /// change); refused past `master.max_driver_watches`.
    pub(crate) fn watch_driver(
        &self,
        driver_id: DriverId,
        watcher: EndpointRef<DriverWatchMsg>,
        conn: Option<RpcAddress>,
    ) {
        let mut core = self.core.lock();
        if core.watches.len() >= core.max_watches {
            tracing::warn!(
                driver_id = %driver_id,
                "refused a watch of driver {driver_id}: {} watches already \
                 (master.max_driver_watches); that tool polls instead",
                core.watches.len()
            );
            return;
        }
        core.watches.push(Watch {
            driver: driver_id,
            watcher,
            conn,
            last: None,
        });
        core.push_watches();
    }

    /// The status document, as `GET /api/v1/status` and `RequestMasterState`
    /// serve it.
    pub(crate) fn status(&self) -> MasterStatusJson {
        let mut doc = self.core.lock().state.status(self.clock.now());
        doc.auth = self.auth;
        doc
    }

    /// A connection dropped: the worker or application registered over it
    /// is disconnected (Spark's `onDisconnected`).
    pub(crate) fn disconnected(self: &Arc<Self>, remote: &RpcAddress) {
        let mut core = self.core.lock();
        core.watches.retain(|w| w.conn.as_ref() != Some(remote));
        if let Some(worker_id) = core.worker_by_conn.get(remote).cloned() {
            let span = tracing::info_span!("worker", worker_id = %worker_id);
            let _g = span.enter();
            tracing::debug!("connection from {remote} closed");
            self.handle_locked(
                &mut core,
                Event::WorkerDisconnected { worker_id },
                Origin::Internal,
                None,
            );
        }
        if let Some(app_id) = core.app_by_conn.get(remote).cloned() {
            let span = tracing::info_span!("app", app_id = %app_id);
            let _g = span.enter();
            tracing::debug!("connection from {remote} closed");
            self.handle_locked(
                &mut core,
                Event::AppDisconnected { app_id },
                Origin::Internal,
                None,
            );
        }
    }

    fn execute(
        self: &Arc<Self>,
        core: &mut Core,
        effect: Effect,
        origin: &Origin,
        reply: &mut Option<Reply>,
    ) {
        match effect {
            // ----- to workers -----
            Effect::RegisteredWorker {
                worker_id,
                duplicate,
            } => {
                let Origin::Worker {
                    worker,
                    conn,
                    master_address,
                } = origin
                else {
                    tracing::error!(worker_id = %worker_id, "registration answer without a registering worker; dropped");
                    return;
                };
                let Some(master) = core.master_ref.clone() else {
                    tracing::error!(worker_id = %worker_id, "master endpoint not started; cannot answer registration");
                    return;
                };
                let msg = RegisteredWorker {
                    master,
                    master_web_ui_url: core.web_ui_url.clone(),
                    master_address: master_address
                        .clone()
                        .unwrap_or_else(|| core.own_address.clone()),
                    duplicate,
                };
                send(worker, msg, "worker", &worker_id);
                core.link_worker(worker_id, worker.clone(), conn.clone());
            }
            Effect::RegisterWorkerFailed { worker_id, message } => {
                core.to_origin_worker(origin, &worker_id, RegisterWorkerFailed { message });
            }
            Effect::MasterInStandby { worker_id } => {
                core.to_origin_worker(origin, &worker_id, MasterInStandby);
            }
            Effect::ReconnectWorker { worker_id } => {
                let master_url = core.master_url.clone();
                core.to_origin_worker(origin, &worker_id, ReconnectWorker { master_url });
            }
            Effect::LaunchExecutor {
                worker_id,
                app_id,
                exec_id,
                cores,
                memory_mb,
                desc,
            } => {
                tracing::debug!(worker_id = %worker_id, app_id = %app_id, exec_id = %exec_id,
                    "sending LaunchExecutor {app_id}/{exec_id} ({cores} cores, {memory_mb} MB) to worker {worker_id}");
                let msg = LaunchExecutor {
                    master_url: core.master_url.clone(),
                    app_id,
                    exec_id,
                    desc: *desc,
                    cores,
                    memory_mb,
                };
                core.to_worker(&worker_id, msg);
            }
            Effect::KillExecutor {
                worker_id,
                app_id,
                exec_id,
            } => {
                tracing::debug!(worker_id = %worker_id, app_id = %app_id, exec_id = %exec_id,
                    "asking worker {worker_id} to kill executor {app_id}/{exec_id}");
                let msg = KillExecutor {
                    master_url: core.master_url.clone(),
                    app_id,
                    exec_id,
                };
                core.to_worker(&worker_id, msg);
            }
            Effect::LaunchDriver {
                worker_id,
                driver_id,
                desc,
            } => {
                tracing::debug!(worker_id = %worker_id, driver_id = %driver_id,
                    "launching driver {driver_id} on worker {worker_id}");
                core.to_worker(
                    &worker_id,
                    LaunchDriver {
                        driver_id,
                        desc: *desc,
                    },
                );
            }
            Effect::KillDriver {
                worker_id,
                driver_id,
            } => {
                tracing::debug!(worker_id = %worker_id, driver_id = %driver_id,
                    "asking worker {worker_id} to kill driver {driver_id}");
                core.to_worker(&worker_id, KillDriver { driver_id });
            }
            Effect::ApplicationFinished { worker_id, app_id } => {
                core.to_worker(&worker_id, ApplicationFinished { app_id });
            }
            Effect::DecommissionWorker { worker_id } => {
                core.to_worker(&worker_id, DecommissionWorker);
            }
            Effect::MasterChangedToWorker { worker_id } => {
                if let Some(msg) = core.master_changed() {
                    core.to_worker(&worker_id, msg);
                }
            }

            // ----- to application clients -----
            Effect::RegisteredApplication { app_id } => {
                let Origin::App { driver, conn } = origin else {
                    tracing::error!(app_id = %app_id, "registration answer without a registering application; dropped");
                    return;
                };
                let Some(master) = core.master_ref.clone() else {
                    tracing::error!(app_id = %app_id, "master endpoint not started; cannot answer registration");
                    return;
                };
                let msg = RegisteredApplication {
                    app_id: app_id.clone(),
                    master,
                };
                send(driver, msg, "app", &app_id);
                core.link_app(app_id, driver.clone(), conn.clone());
            }
            Effect::ExecutorAdded {
                app_id,
                exec_id,
                worker_id,
                host_port,
                cores,
                memory_mb,
            } => core.to_app(
                &app_id,
                ExecutorAdded {
                    exec_id,
                    worker_id,
                    host_port,
                    cores,
                    memory_mb,
                },
            ),
            Effect::ExecutorUpdated {
                app_id,
                exec_id,
                state,
                message,
                exit_status,
                worker_host,
            } => core.to_app(
                &app_id,
                ExecutorUpdated {
                    exec_id,
                    state,
                    message,
                    exit_status,
                    worker_host,
                },
            ),
            Effect::WorkerRemoved {
                app_id,
                worker_id,
                host,
                message,
            } => core.to_app(
                &app_id,
                WorkerRemoved {
                    worker_id,
                    host,
                    message,
                },
            ),
            Effect::ApplicationRemoved { app_id, message } => {
                core.to_app(&app_id, ApplicationRemoved { message })
            }
            Effect::MasterChangedToApp { app_id } => {
                if let Some(msg) = core.master_changed() {
                    core.to_app(&app_id, msg);
                }
            }

            // ----- persistence: none without HA -----
            Effect::PersistWorker(_)
            | Effect::UnpersistWorker(_)
            | Effect::PersistApp(_)
            | Effect::UnpersistApp(_) => {}
            // A live driver's uploaded binary stays in the store until it is removed
            // (a supervised relaunch keeps the same description, so the same pin).
            Effect::PersistDriver(record) => {
                let sha = record
                    .desc
                    .command
                    .binary
                    .as_ref()
                    .map(|b| b.sha256.clone());
                if let (Some(sha), Some(store)) = (sha, self.binaries.get()) {
                    if !core.driver_binaries.contains_key(&record.id) && store.pin(&sha) {
                        core.driver_binaries.insert(record.id.clone(), sha);
                    }
                }
            }
            Effect::UnpersistDriver(id) => {
                if let (Some(sha), Some(store)) =
                    (core.driver_binaries.remove(&id), self.binaries.get())
                {
                    store.unpin(&sha);
                }
            }

            // ----- to the shell -----
            Effect::Reply(answer) => match reply.take() {
                Some(r) => send_reply(r, answer),
                None => tracing::debug!("answer {answer:?} to a request sent one-way; dropped"),
            },
            Effect::ScheduleCompleteRecovery { delay_ms } => {
                let shared = self.clone();
                self.tracker.spawn(async move {
                    tokio::select! {
                        _ = shared.token.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {
                            shared.handle(Event::CompleteRecovery, Origin::Internal, None);
                        }
                    }
                });
            }
            Effect::Shutdown { message } => {
                tracing::error!("{message}");
                self.token.cancel();
            }
            Effect::Log { level, message } => match level {
                LogLevel::Info => tracing::info!("{message}"),
                LogLevel::Warn => tracing::warn!("{message}"),
                LogLevel::Error => tracing::error!("{message}"),
            },
        }
    }
}

/// Sends `msg` to `to`, logging (not failing) when it cannot be queued.
fn send<M: flint_rpc::Protocol>(
    to: &EndpointRef<M>,
    msg: impl Into<M>,
    kind: &str,
    id: &dyn std::fmt::Display,
) {
    if let Err(e) = to.send(msg) {
        tracing::warn!("cannot send to {kind} {id}: {e}");
    }
}

/// Answers an ask. The state machine's answers are the protocol's reply types
/// themselves; `Reply::send` checks at run time that the type is the one the request
/// expects, so a wrong pairing fails that request by name instead of decoding as garbage.
fn send_reply(reply: Reply, answer: StateReply) {
    match answer {
        StateReply::Ack(b) => reply.send(b),
        StateReply::WorkersDecommissioned(n) => reply.send(n),
        StateReply::SubmitDriver(r) => reply.send(r),
        StateReply::KillDriver(r) => reply.send(r),
        StateReply::KillAllDrivers(r) => reply.send(r),
        StateReply::DriverStatus(r) => reply.send(r),
        StateReply::DriverAttempt(r) => reply.send(r),
    }
}

impl Core {
    /// Sends each watch whose driver's newest attempt changed its new state; a
    /// watch ends after a final state, an unknown driver or a send that fails. A
    /// standby master (which answers nothing) keeps its watches quiet.
    fn push_watches(&mut self) {
        let state = &self.state;
        self.watches.retain_mut(|w| {
            let Some(a) = state.driver_attempt(&w.driver) else {
                return true;
            };
            if w.last.as_ref() == Some(&a) {
                return true;
            }
            let done = !a.status.found || a.status.state.is_some_and(|s| s.is_final());
            let update = DriverUpdate {
                watched: w.driver.clone(),
                attempt: a.clone(),
            };
            if w.watcher.send(update).is_err() {
                return false;
            }
            w.last = Some(a);
            !done
        });
    }

    fn link_worker(
        &mut self,
        worker_id: WorkerId,
        endpoint: EndpointRef<WorkerMsg>,
        conn: Option<RpcAddress>,
    ) {
        if let Some(old) = self.workers.get(&worker_id).and_then(|l| l.conn.clone()) {
            if self.worker_by_conn.get(&old) == Some(&worker_id) {
                self.worker_by_conn.remove(&old);
            }
        }
        if let Some(c) = &conn {
            self.worker_by_conn.insert(c.clone(), worker_id.clone());
        }
        self.workers.insert(worker_id, Link { endpoint, conn });
    }

    fn link_app(
        &mut self,
        app_id: AppId,
        endpoint: EndpointRef<AppClientMsg>,
        conn: Option<RpcAddress>,
    ) {
        if let Some(c) = &conn {
            self.app_by_conn.insert(c.clone(), app_id.clone());
        }
        self.apps.insert(app_id, Link { endpoint, conn });
    }

    /// Drops the links of the given workers and apps that the state machine
    /// no longer lists as live / active.
    fn forget(&mut self, workers: Vec<WorkerId>, apps: Vec<AppId>) {
        for id in workers {
            let live = matches!(self.state.worker_state(&id), Some(s) if s != WorkerState::Dead);
            if live {
                continue;
            }
            if let Some(link) = self.workers.remove(&id) {
                if let Some(c) = link.conn {
                    if self.worker_by_conn.get(&c) == Some(&id) {
                        self.worker_by_conn.remove(&c);
                    }
                }
            }
        }
        for id in apps {
            if self.state.is_active_app(&id) {
                continue;
            }
            if let Some(link) = self.apps.remove(&id) {
                if let Some(c) = link.conn {
                    if self.app_by_conn.get(&c) == Some(&id) {
                        self.app_by_conn.remove(&c);
                    }
                }
            }
        }
    }

    fn to_worker(&self, worker_id: &WorkerId, msg: impl Into<WorkerMsg>) {
        match self.workers.get(worker_id) {
            Some(link) => send(&link.endpoint, msg, "worker", worker_id),
            None => {
                tracing::warn!(worker_id = %worker_id, "no endpoint known for worker {worker_id}; message dropped")
            }
        }
    }

    /// To the worker whose message is being handled, else by id.
    fn to_origin_worker(&self, origin: &Origin, worker_id: &WorkerId, msg: impl Into<WorkerMsg>) {
        match origin {
            Origin::Worker { worker, .. } => send(worker, msg, "worker", worker_id),
            _ => self.to_worker(worker_id, msg),
        }
    }

    fn to_app(&self, app_id: &AppId, msg: impl Into<AppClientMsg>) {
        match self.apps.get(app_id) {
            Some(link) => send(&link.endpoint, msg, "app", app_id),
            None => {
                tracing::warn!(app_id = %app_id, "no endpoint known for application {app_id}; message dropped")
            }
        }
    }

    /// The web UI URL the master advertises (`http://host:port`).
    pub(crate) fn web_ui_url(&self) -> &str {
        &self.web_ui_url
    }

    fn master_changed(&self) -> Option<MasterChanged> {
        let master = self.master_ref.clone()?;
        Some(MasterChanged {
            master,
            master_web_ui_url: self.web_ui_url.clone(),
        })
    }

    /// Clears every endpoint held, after the master stopped.
    pub(crate) fn clear(&mut self) {
        self.master_ref = None;
        self.workers.clear();
        self.worker_by_conn.clear();
        self.apps.clear();
        self.app_by_conn.clear();
    }
}
