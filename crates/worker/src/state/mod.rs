//! The worker as a pure state machine: [`WorkerCore::handle`] takes the
//! current time ([`Now`]: monotonic for every deadline, wall clock for
//! display only) and one [`Event`], updates the state and returns the
//! [`Effect`]s to carry out. No sockets, no timers, no clock reads, no
//! ambient randomness (the one random factor comes from
//! [`WorkerConfig::rng_seed`]): the async shell turns RPC messages, timers and
//! child-process outcomes into events, and effects into messages, timers,
//! child processes (with [`runner`](crate::runner)) and log lines.
//!
//! The behaviour follows Spark's standalone `Worker`:
//!
//! - **Registration.** On [`Event::Start`] the worker registers with every
//!   configured master in parallel and arms a retry timer: the first
//!   `worker.initial_registration_retries` (6) retries every
//!   `round(10 s × f)`, then every `round(60 s × f)`, with `f` a per-process
//!   factor in [0.5, 1.5); after `worker.max_registration_retries` (16)
//!   retries without success it exits. Once a master is known, re-registering
//!   (after a disconnect or a `ReconnectWorker`) goes to that master only.
//! - **Re-registration is quick** (not in Spark): after losing its master the
//!   worker registers at once, then retries after
//!   `reregistration_retry_interval_ms` (50 ms × `f`), doubling while
//!   below the short interval (50, 100, … 6400 ms: about 10 s in all), and
//!   only then follows Spark's schedule. A restarted master has its workers
//!   back within a second instead of 5–15 s.
//! - **Once registered** it heartbeats every `worker.timeout / 4`, tells the
//!   master what it runs, and cleans its work dir periodically.
//! - **Executors and drivers** are launched on the master's request when the
//!   free cores and memory allow, reported RUNNING once started, and
//!   reported with their final state when they end; supervised drivers that
//!   fail are relaunched with exponential back-off.
//! - **Decommissioning** refuses further launches; **shutdown** kills every
//!   child, then exits.
//! - **A master refusing this worker's secret** is reported as such (once
//!   per master every few minutes), and named when registration gives up.
//!
//! Where flint deliberately differs from Spark, the handler's docs say so.

mod auth;
mod config;
mod drivers;
mod events;
mod executors;
mod registration;
mod status;
mod time;

use flint_types::log::Logs as _;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use flint_proto::{AppId, DriverId, ExecutorId, WorkerId};

pub use auth::{AuthRefusal, AUTH_REFUSAL_LOG_INTERVAL_MS};
pub use config::{
    fuzzed_interval_ms, reregistration_delays_ms, ConfigError, WorkerConfig,
    DEFAULT_WORKER_TIMEOUT_MS,
};
pub use events::{ChildId, DecommissionTrigger, Effect, Event, ExecutorReport, LogLevel};
pub use status::{DriverEntry, ExecutorEntry, WorkerStatus};
pub use time::Now;

use auth::RefusalRecord;
use drivers::DriverInfo;
use executors::ExecutorInfo;

/// The master this worker last registered with or was handed over to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KnownMaster {
    /// The URL it advertises (Spark's `activeMasterUrl`); launch and kill
    /// requests must name it, and messages go there.
    url: String,
    /// Its web UI.
    web_ui_url: String,
    /// The address this worker reached it at (Spark's
    /// `masterAddressToConnect`).
    address_to_connect: String,
}

/// Everything the worker knows. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct WorkerCore {
    worker_id: WorkerId,
    config: WorkerConfig,
    /// The short registration retry interval, random factor applied.
    initial_retry_ms: u64,
    /// The long registration retry interval, random factor applied.
    prolonged_retry_ms: u64,
    /// The quick retry delays after losing a master, random factor applied
    /// ([`reregistration_delays_ms`]).
    reregistration_delays_ms: Vec<u64>,
    /// While re-registering quickly: the index of the armed delay in
    /// `reregistration_delays_ms`. These retries do not count as Spark's
    /// attempts.
    quick_retry: Option<usize>,
    started: bool,
    /// Set once the worker decided to exit; later events are ignored.
    stopped: bool,
    /// Spark's `registered`: a master accepted this worker and no
    /// re-registration has begun since.
    registered: bool,
    /// Spark's `connected`: heartbeats go out.
    connected: bool,
    decommissioned: bool,
    master: Option<KnownMaster>,
    /// Whether a registration retry timer is armed.
    retry_armed: bool,
    /// The generation of the armed retry timer; ticks of other generations
    /// are stale.
    retry_generation: u64,
    /// Spark's `connectionAttemptCount`: retries since registration began.
    attempts: u32,
    heartbeat_armed: bool,
    cleanup_armed: bool,
    cores_used: u32,
    memory_used_mb: u64,
    /// Executors not yet finished.
    executors: BTreeMap<(AppId, ExecutorId), ExecutorInfo>,
    /// Finished executors, oldest first, for display.
    finished_executors: VecDeque<ExecutorInfo>,
    /// Drivers not yet finished.
    drivers: BTreeMap<DriverId, DriverInfo>,
    /// Finished drivers, oldest first, for display.
    finished_drivers: VecDeque<DriverInfo>,
    /// Applications the master declared finished whose directories are not
    /// yet cleaned (some executor of theirs still runs here).
    finished_apps: BTreeSet<AppId>,
    /// Consecutive failed reports per executor.
    sync_failures: BTreeMap<(AppId, ExecutorId), u32>,
    /// The last authentication refusal per master URL, until a master
    /// accepts this worker.
    auth_refusals: BTreeMap<String, RefusalRecord>,
}

impl WorkerCore {
    /// A worker that has not started yet; it registers on [`Event::Start`].
    /// The random factor of the registration retry intervals is drawn here,
    /// once per process, as Spark does.
    pub fn new(worker_id: WorkerId, config: WorkerConfig) -> Self {
        let fuzz = config.registration_fuzz();
        let initial_retry_ms =
            fuzzed_interval_ms(config.initial_registration_retry_interval_ms, fuzz);
        let prolonged_retry_ms =
            fuzzed_interval_ms(config.prolonged_registration_retry_interval_ms, fuzz);
        let reregistration_delays_ms = reregistration_delays_ms(
            config.reregistration_retry_interval_ms,
            fuzz,
            initial_retry_ms,
        );
        Self {
            worker_id,
            config,
            initial_retry_ms,
            prolonged_retry_ms,
            reregistration_delays_ms,
            quick_retry: None,
            started: false,
            stopped: false,
            registered: false,
            connected: false,
            decommissioned: false,
            master: None,
            retry_armed: false,
            retry_generation: 0,
            attempts: 0,
            heartbeat_armed: false,
            cleanup_armed: false,
            cores_used: 0,
            memory_used_mb: 0,
            executors: BTreeMap::new(),
            finished_executors: VecDeque::new(),
            drivers: BTreeMap::new(),
            finished_drivers: VecDeque::new(),
            finished_apps: BTreeSet::new(),
            sync_failures: BTreeMap::new(),
            auth_refusals: BTreeMap::new(),
        }
    }

    /// Whether the child runs, is starting, or (a supervised driver) waits to be
    /// relaunched: its logs may still grow.
    pub fn child_active(&self, id: &ChildId) -> bool {
        match id {
            ChildId::Executor { app_id, exec_id } => {
                self.executors.contains_key(&(app_id.clone(), *exec_id))
            }
            ChildId::Driver { driver_id } => self.drivers.contains_key(driver_id),
        }
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &WorkerId {
        &self.worker_id
    }

    /// The settings in use.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The registration retry intervals in ms, random factor applied:
    /// (initial, prolonged), e.g. (8000, 48000).
    pub fn registration_retry_intervals_ms(&self) -> (u64, u64) {
        (self.initial_retry_ms, self.prolonged_retry_ms)
    }

    /// The quick retry delays in ms after losing a master, random factor
    /// applied, e.g. `[40, 80, … 5120]`; Spark's schedule follows them.
    pub fn reregistration_retry_delays_ms(&self) -> &[u64] {
        &self.reregistration_delays_ms
    }

    /// Whether a master accepted this worker (and no re-registration is
    /// under way).
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Whether heartbeats go out.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the worker is decommissioned (refuses launches).
    pub fn is_decommissioned(&self) -> bool {
        self.decommissioned
    }

    /// Whether the worker decided to exit.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The current master's URL, once one is known.
    pub fn master_url(&self) -> Option<&str> {
        self.master.as_ref().map(|m| m.url.as_str())
    }

    /// Cores held by executors and drivers.
    pub fn cores_used(&self) -> u32 {
        self.cores_used
    }

    /// Memory held by executors and drivers, in MB.
    pub fn memory_used_mb(&self) -> u64 {
        self.memory_used_mb
    }

    /// Cores not held.
    pub fn cores_free(&self) -> u32 {
        self.config.cores.saturating_sub(self.cores_used)
    }

    /// Memory not held, in MB.
    pub fn memory_free_mb(&self) -> u64 {
        self.config.memory_mb.saturating_sub(self.memory_used_mb)
    }

    /// Handles one event at time `now` and returns the effects to carry
    /// out, in order. Deadlines use `now.mono_ms` only. After the worker
    /// decided to exit, events are ignored.
    pub fn handle(&mut self, now: Now, event: Event) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.stopped {
            return out;
        }
        match event {
            Event::Start => self.start(&mut out),
            Event::Shutdown => self.exit(0, "Worker shutting down".into(), &mut out),
            Event::Decommission { trigger } => self.decommission(trigger, &mut out),
            Event::Registered {
                master_url,
                master_web_ui_url,
                master_address,
                duplicate,
            } => self.registered(
                master_url,
                master_web_ui_url,
                master_address,
                duplicate,
                &mut out,
            ),
            Event::RegisterFailed { message } => self.register_failed(message, &mut out),
            Event::MasterInStandby => {}
            Event::RegistrationRetryTick { generation } => {
                self.registration_retry_tick(generation, &mut out)
            }
            Event::ReconnectWorker { master_url } => {
                out.info(format!(
                    "Master with url {master_url} requested this worker to reconnect."
                ));
                self.register_with_master(true, &mut out);
            }
            Event::MasterChanged {
                master_url,
                master_web_ui_url,
            } => self.master_changed(master_url, master_web_ui_url, &mut out),
            Event::MasterDisconnected { address } => self.master_disconnected(&address, &mut out),
            Event::MasterRefusedAuth {
                master_url,
                refusal,
                detail,
            } => self.master_refused_auth(now, master_url, refusal, &detail, &mut out),
            Event::HeartbeatTick => self.heartbeat_tick(&mut out),
            Event::CleanupTick => self.cleanup_tick(&mut out),
            Event::LaunchExecutor {
                master_url,
                app_id,
                exec_id,
                cores,
                memory_mb,
                desc,
            } => self.launch_executor(
                &master_url,
                app_id,
                exec_id,
                cores,
                memory_mb,
                *desc,
                &mut out,
            ),
            Event::ExecutorStarted { app_id, exec_id } => {
                self.executor_started(app_id, exec_id, &mut out)
            }
            Event::ExecutorLaunchFailed {
                app_id,
                exec_id,
                message,
            } => self.executor_launch_failed(app_id, exec_id, message, &mut out),
            Event::ExecutorExited {
                app_id,
                exec_id,
                status,
            } => self.executor_exited(app_id, exec_id, status, &mut out),
            Event::KillExecutor {
                master_url,
                app_id,
                exec_id,
            } => self.kill_executor(&master_url, app_id, exec_id, &mut out),
            Event::ExecutorStateSynced { app_id, exec_id } => {
                self.sync_failures.remove(&(app_id, exec_id));
            }
            Event::ExecutorStateSyncFailed { report, timed_out } => {
                self.executor_state_sync_failed(report, timed_out, &mut out)
            }
            Event::RetryExecutorState { report } => self.report_executor(report, &mut out),
            Event::ApplicationFinished { app_id } => {
                self.finished_apps.insert(app_id.clone());
                self.maybe_cleanup_application(&app_id, &mut out);
            }
            Event::LaunchDriver { driver_id, desc } => {
                self.launch_driver(now, driver_id, desc, &mut out)
            }
            Event::DriverStarted { driver_id } => self.driver_started(now, &driver_id, &mut out),
            Event::DriverLaunchFailed { driver_id, message } => {
                self.driver_launch_failed(&driver_id, message, &mut out)
            }
            Event::DriverExited { driver_id, status } => {
                self.driver_exited(now, &driver_id, status, &mut out)
            }
            Event::DriverRelaunchTick { driver_id } => {
                self.driver_relaunch_tick(now, &driver_id, &mut out)
            }
            Event::KillDriver { driver_id } => self.kill_driver(&driver_id, &mut out),
        }
        out
    }

    /// Kills every child, then exits with `code` (Spark's `onStop`, and the
    /// JVM shutdown hooks that kill children on `System.exit`).
    ///
    /// Executors are not reported FAILED to the master on the way out: the
    /// master marks them LOST when it loses this worker, and LOST does not
    /// count against the application's executor retry budget.
    fn exit(&mut self, code: i32, reason: String, out: &mut Vec<Effect>) {
        for info in self.executors.values() {
            out.push(Effect::KillProcess {
                child: ChildId::Executor {
                    app_id: info.app_id.clone(),
                    exec_id: info.exec_id,
                },
                grace_ms: self.config.executor_kill_grace_ms,
            });
        }
        for info in self.drivers.values() {
            if info.has_process() {
                out.push(Effect::KillProcess {
                    child: ChildId::Driver {
                        driver_id: info.driver_id.clone(),
                    },
                    grace_ms: self.config.driver_terminate_timeout_ms,
                });
            }
        }
        if code == 0 {
            out.info(reason.clone());
        } else {
            out.error(reason.clone());
        }
        self.stopped = true;
        self.connected = false;
        self.retry_armed = false;
        self.quick_retry = None;
        out.push(Effect::Exit { code, reason });
    }

    /// Adds the resources of a new executor or driver.
    fn acquire(&mut self, cores: u32, memory_mb: u64) {
        self.cores_used = self.cores_used.saturating_add(cores);
        self.memory_used_mb = self.memory_used_mb.saturating_add(memory_mb);
    }

    /// Releases the resources of a finished executor or driver.
    fn release(&mut self, cores: u32, memory_mb: u64) {
        self.cores_used = self.cores_used.saturating_sub(cores);
        self.memory_used_mb = self.memory_used_mb.saturating_sub(memory_mb);
    }

    /// Whether `cores` and `memory_mb` fit in what is free.
    fn fits(&self, cores: u32, memory_mb: u64) -> bool {
        cores <= self.cores_free() && memory_mb <= self.memory_free_mb()
    }
}

/// Drops the oldest `max(n / 10, 1)` entries once there are more than
/// `retained` (Spark's `trimFinishedExecutorsIfNecessary`).
fn trim_retained<T>(list: &mut VecDeque<T>, retained: usize) {
    if list.len() > retained {
        let drop = (list.len() / 10).max(1).min(list.len());
        list.drain(..drop);
    }
}

/// The exit status reported to the master for a child's end: the exit code,
/// `128 + n` for a child killed by signal `n` (as a shell or the JVM would
/// report it), none when unknown.
fn reported_exit_status(status: crate::runner::ExitStatus) -> Option<i32> {
    use crate::runner::ExitStatus;
    match status {
        ExitStatus::Exited(code) => Some(code),
        ExitStatus::Signaled { signal, .. } => Some(128_i32.saturating_add(signal)),
        ExitStatus::Unknown => None,
    }
}
