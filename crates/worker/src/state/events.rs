//! What goes into the worker's state machine ([`Event`]) and what comes out
//! of it ([`Effect`]).
//!
//! Rules the shell follows:
//!
//! - Effects are carried out in order.
//! - Timers are one-shot: a `Schedule*` effect asks for one event after a
//!   delay. The machine re-arms periodic timers itself. A registration retry
//!   timer carries a `generation`; the machine ignores ticks of a generation
//!   it has since cancelled, so the shell never needs to cancel a timer
//!   (it may, as an optimisation, drop older registration timers when it
//!   arms a newer one).
//! - Effects addressed to the master carry the URL of the master to send to
//!   (`flint://host:port`); the shell resolves its `Master` endpoint there.
//! - Child processes are named by [`ChildId`]; the shell keeps the map from
//!   ids to running processes and reports their fate back as events.

use flint_proto::{
    AppId, ApplicationDescription, DriverDescription, DriverId, DriverState, ExecutorCommand,
    ExecutorDescription, ExecutorId, ExecutorState,
};

use crate::runner::ExitStatus;

/// Where a decommission request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecommissionTrigger {
    /// The operator signalled the worker process (Spark: SIGPWR). The worker
    /// tells the master (Spark's `WorkerDecommissioning`).
    Signal,
    /// The master asked (Spark's `DecommissionWorker`); it already knows.
    Master,
}

/// One child process of the worker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildId {
    /// An executor, `<app id>/<executor id>`.
    Executor {
        /// Its application.
        app_id: AppId,
        /// Its id within the application.
        exec_id: ExecutorId,
    },
    /// A cluster-mode driver.
    Driver {
        /// The driver.
        driver_id: DriverId,
    },
}

/// An executor state change as the worker reports it to the master (Spark's
/// `ExecutorStateChanged`, sent as an *ask* whose failure is retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorReport {
    /// The executor's application.
    pub app_id: AppId,
    /// The executor.
    pub exec_id: ExecutorId,
    /// Its new state.
    pub state: ExecutorState,
    /// A human explanation, if any.
    pub message: Option<String>,
    /// The process exit status, when it ended (a signal `n` is reported as
    /// `128 + n`, as a shell or the JVM would).
    pub exit_status: Option<i32>,
}

/// An input to [`WorkerCore::handle`](super::WorkerCore::handle).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    // ----- life cycle -----
    /// The worker's endpoint started (work dir created, RPC env and web UI
    /// bound): register with every configured master (Spark's `onStart`).
    Start,
    /// Stop: kill every child, then exit (Spark's `onStop`).
    Shutdown,
    /// Decommission this worker: refuse further launches and, when
    /// signalled, tell the master. Honoured only with
    /// [`decommission_enabled`](super::WorkerConfig::decommission_enabled).
    Decommission {
        /// Who asked.
        trigger: DecommissionTrigger,
    },

    // ----- registration and masters -----
    /// A master accepted the registration (Spark's `RegisteredWorker`).
    Registered {
        /// The master's own URL, as it advertises it; launch and kill
        /// requests must come with this URL.
        master_url: String,
        /// The master's web UI.
        master_web_ui_url: String,
        /// The address this worker sent the registration to (one of the
        /// configured masters, or the known master's address when
        /// re-registering). Re-registration uses it when
        /// [`prefer_configured_master_address`](super::WorkerConfig::prefer_configured_master_address)
        /// is set.
        master_address: String,
        /// The master already knew this worker; only a warning.
        duplicate: bool,
    },
    /// A master refused the registration (Spark's `RegisterWorkerFailed`).
    /// A worker not yet registered exits.
    RegisterFailed {
        /// Why.
        message: String,
    },
    /// A master that is not the leader answered; ignored (the leader will).
    MasterInStandby,
    /// The registration retry timer fired (see
    /// [`Effect::ScheduleRegistrationRetry`]).
    RegistrationRetryTick {
        /// The generation of the timer that fired.
        generation: u64,
    },
    /// The master does not know this worker any more and asks it to register
    /// again (Spark's `ReconnectWorker`).
    ReconnectWorker {
        /// The master that asked.
        master_url: String,
    },
    /// A newly elected master took over (Spark's `MasterChanged`); the
    /// worker switches to it and answers with what it runs.
    MasterChanged {
        /// The new master's URL.
        master_url: String,
        /// The new master's web UI.
        master_web_ui_url: String,
    },
    /// The connection to a remote address dropped (Spark's
    /// `onDisconnected`). Acted on only when the address is the known
    /// master's (advertised or configured) address: the worker re-registers.
    MasterDisconnected {
        /// The address that dropped, `flint://host:port`.
        address: String,
    },
    /// Talking to a master failed because the RPC handshake refused this
    /// worker's credentials (the shell recognises the RPC layer's reason
    /// with [`AuthRefusal::classify`](super::AuthRefusal::classify)). The
    /// worker says so clearly, at most once per master every
    /// [`AUTH_REFUSAL_LOG_INTERVAL_MS`](super::AUTH_REFUSAL_LOG_INTERVAL_MS),
    /// and names it when it gives up registering.
    MasterRefusedAuth {
        /// The master's address, `flint://host:port`.
        master_url: String,
        /// What kind of refusal.
        refusal: super::AuthRefusal,
        /// The RPC layer's reason, verbatim.
        detail: String,
    },
    /// The heartbeat timer fired.
    HeartbeatTick,
    /// The work dir cleanup timer fired.
    CleanupTick,

    // ----- executors -----
    /// The master asks for an executor (Spark's `LaunchExecutor`).
    LaunchExecutor {
        /// The URL of the master that sent it; must be the current master.
        master_url: String,
        /// The executor's application.
        app_id: AppId,
        /// The executor's id within the application.
        exec_id: ExecutorId,
        /// Cores it gets.
        cores: u32,
        /// Memory it gets, in MB.
        memory_mb: u64,
        /// The application's description (name, command).
        desc: Box<ApplicationDescription>,
    },
    /// The shell started the executor's process (LAUNCHING → RUNNING).
    ExecutorStarted {
        /// The executor's application.
        app_id: AppId,
        /// The executor.
        exec_id: ExecutorId,
    },
    /// The shell could not start the executor's process (→ FAILED).
    ExecutorLaunchFailed {
        /// The executor's application.
        app_id: AppId,
        /// The executor.
        exec_id: ExecutorId,
        /// Why.
        message: String,
    },
    /// The executor's process ended (→ EXITED, or KILLED when the worker
    /// killed it).
    ExecutorExited {
        /// The executor's application.
        app_id: AppId,
        /// The executor.
        exec_id: ExecutorId,
        /// How it ended.
        status: ExitStatus,
    },
    /// The master asks to kill an executor (Spark's `KillExecutor`).
    KillExecutor {
        /// The URL of the master that sent it; must be the current master.
        master_url: String,
        /// The executor's application.
        app_id: AppId,
        /// The executor.
        exec_id: ExecutorId,
    },
    /// The master acknowledged an [`Effect::ReportExecutorState`].
    ExecutorStateSynced {
        /// The executor's application.
        app_id: AppId,
        /// The executor.
        exec_id: ExecutorId,
    },
    /// An [`Effect::ReportExecutorState`] ask failed.
    ExecutorStateSyncFailed {
        /// The report that was not acknowledged.
        report: ExecutorReport,
        /// Whether the ask timed out (then it is retried at once; otherwise
        /// after `rpc.ask_timeout`, as Spark).
        timed_out: bool,
    },
    /// The delay of an [`Effect::ScheduleExecutorStateRetry`] passed.
    RetryExecutorState {
        /// The report to send again.
        report: ExecutorReport,
    },
    /// The master removed an application (Spark's `ApplicationFinished`):
    /// its local directories go once none of its executors remain here.
    ApplicationFinished {
        /// The application.
        app_id: AppId,
    },

    // ----- drivers -----
    /// The master asks for a cluster-mode driver (Spark's `LaunchDriver`).
    LaunchDriver {
        /// The driver.
        driver_id: DriverId,
        /// What to run.
        desc: Box<DriverDescription>,
    },
    /// The shell started the driver's process.
    DriverStarted {
        /// The driver.
        driver_id: DriverId,
    },
    /// The shell could not prepare or start the driver (→ ERROR).
    DriverLaunchFailed {
        /// The driver.
        driver_id: DriverId,
        /// Why.
        message: String,
    },
    /// The driver's process ended.
    DriverExited {
        /// The driver.
        driver_id: DriverId,
        /// How it ended.
        status: ExitStatus,
    },
    /// The back-off of an [`Effect::ScheduleDriverRelaunch`] passed.
    DriverRelaunchTick {
        /// The driver.
        driver_id: DriverId,
    },
    /// The master asks to kill a driver (Spark's `KillDriver`).
    KillDriver {
        /// The driver.
        driver_id: DriverId,
    },
}

pub use flint_types::log::LogLevel;

impl flint_types::log::LogEffect for Effect {
    fn log(level: LogLevel, message: String) -> Self {
        Effect::Log { level, message }
    }
}

/// An output of [`WorkerCore::handle`](super::WorkerCore::handle).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    // ----- to masters -----
    /// Send `RegisterWorker` (id, host, port, cores, memory, web UI URL,
    /// `master_url` as the address used) to this master.
    RegisterWithMaster {
        /// Where to send it.
        master_url: String,
        /// Its position in [`WorkerConfig::master_urls`](super::WorkerConfig::master_urls),
        /// when it is a configured master.
        master_index: Option<usize>,
    },
    /// Send `Heartbeat` to the master.
    SendHeartbeat {
        /// The master.
        master_url: String,
    },
    /// Send `WorkerLatestState` (what this worker runs) to the master it just
    /// registered with; the master kills what it does not know.
    SendWorkerLatestState {
        /// The master.
        master_url: String,
        /// Executors not yet finished.
        executors: Vec<ExecutorDescription>,
        /// Drivers not yet finished.
        driver_ids: Vec<DriverId>,
    },
    /// Answer `MasterChanged` with `WorkerSchedulerStateResponse`.
    SendWorkerSchedulerState {
        /// The new master.
        master_url: String,
        /// Executors not yet finished.
        executors: Vec<ExecutorDescription>,
        /// Drivers not yet finished.
        driver_ids: Vec<DriverId>,
    },
    /// *Ask* the master `ExecutorStateChanged`; report the outcome as
    /// [`Event::ExecutorStateSynced`] or [`Event::ExecutorStateSyncFailed`].
    ReportExecutorState {
        /// The master.
        master_url: String,
        /// The change.
        report: ExecutorReport,
    },
    /// Send `DriverStateChanged` (a final state) to the master.
    ReportDriverState {
        /// The master.
        master_url: String,
        /// The driver.
        driver_id: DriverId,
        /// Its final state.
        state: DriverState,
        /// The error, for ERROR.
        exception: Option<String>,
    },
    /// Send `WorkerDecommissioning` to the master.
    SendWorkerDecommissioning {
        /// The master.
        master_url: String,
    },

    // ----- timers -----
    /// Deliver [`Event::RegistrationRetryTick`] with this generation after
    /// the delay.
    ScheduleRegistrationRetry {
        /// Delay in ms.
        delay_ms: u64,
        /// The timer's generation.
        generation: u64,
    },
    /// Deliver [`Event::HeartbeatTick`] after the delay.
    ScheduleHeartbeat {
        /// Delay in ms (`worker.timeout / 4`).
        delay_ms: u64,
    },
    /// Deliver [`Event::CleanupTick`] after the delay.
    ScheduleCleanup {
        /// Delay in ms (`worker.cleanup.interval`).
        delay_ms: u64,
    },
    /// Deliver [`Event::RetryExecutorState`] with this report after the
    /// delay.
    ScheduleExecutorStateRetry {
        /// Delay in ms (`rpc.ask_timeout`).
        delay_ms: u64,
        /// The report to retry.
        report: ExecutorReport,
    },
    /// Deliver [`Event::DriverRelaunchTick`] after the delay.
    ScheduleDriverRelaunch {
        /// The driver.
        driver_id: DriverId,
        /// Delay in ms (the supervise back-off).
        delay_ms: u64,
    },

    // ----- children -----
    /// Start an executor process (`work/<app-id>/<exec-id>/`), then report
    /// [`Event::ExecutorStarted`] or [`Event::ExecutorLaunchFailed`], and
    /// later [`Event::ExecutorExited`].
    StartExecutor {
        /// Its application.
        app_id: AppId,
        /// Its id.
        exec_id: ExecutorId,
        /// Its cores (for `{{CORES}}`).
        cores: u32,
        /// Its memory in MB.
        memory_mb: u64,
        /// The command, placeholders not yet substituted.
        command: ExecutorCommand,
    },
    /// Start (or, for a supervised driver, restart) a driver process
    /// (`work/<driver-id>/`), then report [`Event::DriverStarted`] or
    /// [`Event::DriverLaunchFailed`], and later [`Event::DriverExited`].
    StartDriver {
        /// The driver.
        driver_id: DriverId,
        /// What to run.
        desc: Box<DriverDescription>,
    },
    /// Kill a child: SIGTERM to its process group, SIGKILL after the grace.
    /// Its exit is still reported as an exit event. A child whose start is
    /// still under way is killed as soon as it has started.
    KillProcess {
        /// The child.
        child: ChildId,
        /// Time between SIGTERM and SIGKILL, in ms.
        grace_ms: u64,
    },
    /// Remove old application and driver directories under the work dir
    /// (Spark's `WorkDirCleanup`; see `runner::cleanup_old_app_dirs`).
    CleanupWorkDir {
        /// Directory names to keep: applications with executors here and
        /// drivers here.
        keep: Vec<String>,
        /// Remove a directory when nothing in it is newer than this, in ms.
        app_data_ttl_ms: u64,
    },
    /// An application finished and none of its executors remain: remove its
    /// local (scratch) directories and tell the shuffle service (Spark's
    /// `maybeCleanupApplication`).
    CleanupAppDirs {
        /// The application.
        app_id: AppId,
    },

    // ----- process -----
    /// Exit the process with this code. Always preceded by
    /// [`Effect::KillProcess`] for every live child; the shell should let
    /// those kills finish (up to their grace) before exiting.
    Exit {
        /// The exit code (0 for a requested shutdown, 1 for failures).
        code: i32,
        /// Why, for the log.
        reason: String,
    },
    /// A log line.
    Log {
        /// How loud.
        level: LogLevel,
        /// The text.
        message: String,
    },
}
