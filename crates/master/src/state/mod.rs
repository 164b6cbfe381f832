//! The master as a pure state machine: [`MasterState::handle`] takes the
//! current time ([`Now`]: monotonic and wall clock) and one [`Event`],
//! updates the state and returns the [`Effect`]s to carry out. No sockets, no
//! timers, no clock reads: the async shell turns network messages and timers
//! into events and effects into messages, replies, persistence writes and log
//! lines. Every timeout is measured on the monotonic clock; the wall clock
//! only names things (app and driver ids) and dates them for display.
//!
//! The behaviour follows Spark's standalone `Master`:
//!
//! - workers register, heartbeat, report what they run, decommission, time
//!   out (`worker_timeout_ms`) and are culled after
//!   `(dead_worker_persistence + 1) * worker_timeout_ms`;
//! - applications register into a FIFO queue, get executors placed by
//!   `schedule()` (drivers first, then executors, spread out or packed), are
//!   told about executor changes and fail after `max_executor_retries`
//!   abnormal executor exits with none RUNNING;
//! - flint isolates bad workers ([`health`]): executors that fail quickly
//!   count against their worker as well as their app, an app stops getting
//!   executors on a worker after `max_failures_per_worker` of them, an
//!   unhealthy worker gets none for a while, and relaunches back off;
//! - cluster-mode drivers are queued, placed, killed and relaunched with a
//!   new id when their worker is lost and they are supervised;
//! - a newly elected leader recovers stored workers, apps and drivers.
//!
//! Where flint deliberately differs from Spark, the handler's docs say so.

mod apps;
mod config;
mod drivers;
mod events;
pub mod health;
mod invariants;
mod model;
mod recovery;
mod schedule;
mod status;
mod time;
mod workers;

use flint_types::log::Logs as _;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use flint_proto::{AppId, DriverId, MasterStatus, WorkerId};

pub use config::{
    backoff_ms, timeout_check_interval_ms, ConfigError, MasterConfig, WorkerSelectionPolicy,
    DEFAULT_WORKER_TIMEOUT_MS, MAX_TICK_INTERVAL_MS, MIN_TIMEOUT_CHECK_INTERVAL_MS,
};
pub use events::{
    AppRecord, DriverAddress, DriverRecord, Effect, Event, LogLevel, Reply, StoredState,
    WorkerRegistration,
};
pub use schedule::{assign_cores, AppDemand, FreeResources};
pub use time::Now;

use model::{AppInfo, DriverInfo, WorkerInfo};

/// The prefix of every refusal a non-ALIVE master gives to driver requests
/// (Spark's `BACKUP_STANDALONE_MASTER_PREFIX`); clients that ask every master
/// ignore replies starting with it.
pub const BACKUP_MASTER_PREFIX: &str = "Current state is not alive";

/// Everything the master knows. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct MasterState {
    url: String,
    config: MasterConfig,
    status: MasterStatus,
    /// Every listed worker, DEAD ones included until culled.
    workers: BTreeMap<WorkerId, WorkerInfo>,
    /// `host:port` → id, for workers that are not DEAD.
    worker_by_address: BTreeMap<(String, u16), WorkerId>,
    /// Active applications.
    apps: BTreeMap<AppId, AppInfo>,
    /// Active applications in registration order (Spark's `waitingApps`).
    app_order: Vec<AppId>,
    completed_apps: VecDeque<AppInfo>,
    next_app_number: u32,
    /// Active drivers (queued or running).
    drivers: BTreeMap<DriverId, DriverInfo>,
    /// Queued drivers, in submission order.
    waiting_drivers: Vec<DriverId>,
    completed_drivers: VecDeque<DriverInfo>,
    next_driver_number: u32,
    /// State of the generator that shuffles workers for driver placement.
    rng: u64,
    /// Set by handlers that change what can be scheduled; `handle` then runs
    /// `schedule()` once at the end.
    pending_schedule: bool,
    /// Monotonic deadlines of running back-offs (an app's relaunch, an
    /// unhealthy worker's exclusion); the first tick after one runs
    /// `schedule()`.
    wakeups: BTreeSet<u64>,
}

impl MasterState {
    /// A master in STANDBY, as Spark starts; it becomes ALIVE on
    /// [`Event::ElectedLeader`]. `url` is what the status page shows
    /// (`flint://host:port`).
    pub fn new(url: impl Into<String>, config: MasterConfig) -> Self {
        Self {
            url: url.into(),
            config,
            status: MasterStatus::Standby,
            workers: BTreeMap::new(),
            worker_by_address: BTreeMap::new(),
            apps: BTreeMap::new(),
            app_order: Vec::new(),
            completed_apps: VecDeque::new(),
            next_app_number: 0,
            drivers: BTreeMap::new(),
            waiting_drivers: Vec::new(),
            completed_drivers: VecDeque::new(),
            next_driver_number: 0,
            rng: 0x5eed_f1a7_u64,
            pending_schedule: false,
            wakeups: BTreeSet::new(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &MasterConfig {
        &self.config
    }

    /// The master's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The master's own state.
    pub fn master_status(&self) -> MasterStatus {
        self.status
    }

    /// Whether readiness probes should succeed (anything but STANDBY).
    pub fn is_ready(&self) -> bool {
        self.status.is_ready()
    }

    /// The description of an active application.
    pub fn app_description(&self, app_id: &AppId) -> Option<&flint_proto::ApplicationDescription> {
        self.apps.get(app_id).map(|a| &a.desc)
    }

    /// The web UI URL a live or DEAD worker registered with.
    pub fn worker_web_ui_url(&self, worker_id: &WorkerId) -> Option<&str> {
        self.workers.get(worker_id).map(|w| w.web_ui_url.as_str())
    }

    /// The state of a listed worker (DEAD ones included until culled);
    /// `None` for a worker the master does not list.
    pub fn worker_state(&self, worker_id: &WorkerId) -> Option<flint_proto::WorkerState> {
        self.workers.get(worker_id).map(|w| w.state)
    }

    /// Whether the application is active (registered and not yet finished).
    pub fn is_active_app(&self, app_id: &AppId) -> bool {
        self.apps.contains_key(app_id)
    }

    /// Why a listed worker is unhealthy (see [`health`]); `None` while it is
    /// healthy or not listed.
    pub fn worker_unhealthy_reason(&self, worker_id: &WorkerId) -> Option<&str> {
        self.workers
            .get(worker_id)
            .and_then(|w| w.health.unhealthy.as_deref())
    }

    /// When an unhealthy worker's back-off ends (monotonic ms), while it
    /// lasts at `now`: until then it gets no new executors.
    pub fn worker_backoff_until(&self, worker_id: &WorkerId, now: Now) -> Option<u64> {
        self.workers
            .get(worker_id)
            .filter(|w| w.health.backing_off(now))
            .map(|w| w.health.backoff_until_mono_ms)
    }

    /// Whether the active application gets no more executors on the worker
    /// (`max_failures_per_worker` of its executors failed quickly there).
    pub fn app_excludes_worker(&self, app_id: &AppId, worker_id: &WorkerId) -> bool {
        self.apps
            .get(app_id)
            .is_some_and(|a| a.excludes(worker_id, self.config.max_failures_per_worker))
    }

    /// When the active application may get its next executor (monotonic
    /// ms), while its relaunch back-off lasts at `now`.
    pub fn app_relaunch_at(&self, app_id: &AppId, now: Now) -> Option<u64> {
        self.apps
            .get(app_id)
            .map(|a| a.relaunch_at_mono_ms)
            .filter(|t| *t > now.mono_ms)
    }

    /// Handles one event at time `now` and returns the effects to carry
    /// out, in order. Deadlines use `now.mono_ms`; `now.wall_ms` only goes
    /// into ids and displayed times.
    pub fn handle(&mut self, now: Now, event: Event) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            Event::ElectedLeader { stored } => self.elected_leader(now, stored, &mut out),
            Event::RevokedLeadership => out.push(Effect::Shutdown {
                message: "Leadership has been revoked -- master shutting down.".into(),
            }),
            Event::CompleteRecovery => self.complete_recovery(now, &mut out),
            Event::RegisterWorker(reg) => self.register_worker(now, reg, &mut out),
            Event::Heartbeat { worker_id } => self.heartbeat(now, worker_id, &mut out),
            Event::WorkerLatestState {
                worker_id,
                executors,
                driver_ids,
            } => self.worker_latest_state(&worker_id, &executors, &driver_ids, &mut out),
            Event::WorkerSchedulerState {
                worker_id,
                executors,
                driver_ids,
            } => self.worker_scheduler_state(now, &worker_id, executors, driver_ids, &mut out),
            Event::WorkerDecommissioning { worker_id } => {
                self.worker_decommissioning(&worker_id, &mut out)
            }
            Event::DecommissionWorkersOnHosts { hosts } => {
                self.decommission_workers_on_hosts(&hosts, &mut out)
            }
            Event::WorkerDisconnected { worker_id } => {
                self.worker_disconnected(now, &worker_id, &mut out)
            }
            Event::Tick => {
                self.timeout_dead_workers(now, &mut out);
                self.reset_retries_of_stable_apps(now);
                self.clear_proven_workers(now, &mut out);
                self.end_backoffs(now);
            }
            Event::ExecutorStateChanged {
                app_id,
                exec_id,
                state,
                message,
                exit_status,
            } => self.executor_state_changed(
                now,
                &app_id,
                exec_id,
                state,
                message,
                exit_status,
                &mut out,
            ),
            Event::RegisterApplication {
                desc,
                driver_address,
            } => self.register_application(now, desc, driver_address, &mut out),
            Event::UnregisterApplication {
                app_id,
                final_state,
            } => {
                out.info(format!(
                    "Received unregister request from application {app_id}"
                ));
                self.unregister_application(now, &app_id, final_state, &mut out);
            }
            Event::AppDisconnected { app_id } => self.app_disconnected(now, &app_id, &mut out),
            Event::MasterChangeAcknowledged { app_id } => {
                self.master_change_acknowledged(now, &app_id, &mut out)
            }
            Event::KillApplication { app_id } => self.kill_application(now, &app_id, &mut out),
            Event::RequestExecutors { app_id, total } => {
                self.request_executors(&app_id, total, &mut out)
            }
            Event::KillExecutors { app_id, exec_ids } => {
                self.kill_executors(&app_id, &exec_ids, &mut out)
            }
            Event::SubmitDriver { desc } => self.submit_driver(now, desc, &mut out),
            Event::KillDriver { driver_id } => self.kill_driver(driver_id, &mut out),
            Event::KillAllDrivers => self.kill_all_drivers(&mut out),
            Event::DriverStateChanged {
                driver_id,
                state,
                exception,
            } => self.driver_state_changed(&driver_id, state, exception, &mut out),
            Event::RequestDriverStatus { driver_id } => {
                self.request_driver_status(&driver_id, &mut out)
            }
            Event::ClearCompleted => {
                self.completed_apps.clear();
                self.completed_drivers.clear();
                out.push(Effect::Reply(Reply::Ack(true)));
            }
            Event::RequestDriverAttempt { driver_id } => {
                self.request_driver_attempt(&driver_id, &mut out)
            }
        }
        if std::mem::take(&mut self.pending_schedule) {
            self.schedule(now, &mut out);
        }
        out
    }
}

/// Formats a duration in ms as Spark's messages do ("60 seconds"), falling
/// back to ms for sub-second settings used in tests.
fn human_duration(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{} seconds", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}
