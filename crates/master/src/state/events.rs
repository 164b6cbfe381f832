//! What goes into the state machine ([`Event`]) and what comes out of it
//! ([`Effect`]), plus the records it asks the shell to persist.
//!
//! Events and effects name workers, applications and drivers by id; the shell
//! keeps the map from ids to network endpoints. Rules the shell follows:
//!
//! - A reply effect to a registration ([`Effect::RegisteredWorker`],
//!   [`Effect::RegisterWorkerFailed`], [`Effect::MasterInStandby`],
//!   [`Effect::RegisteredApplication`]) goes to the sender of the event being
//!   handled; it is the moment the shell learns the id ↔ endpoint pairing.
//! - Events documented as *asks* produce exactly one [`Effect::Reply`],
//!   which answers the asker. Other events produce none.
//! - Effects are to be carried out in order.

use flint_proto::{
    AppId, ApplicationDescription, ApplicationState, DriverDescription, DriverId, DriverState,
    ExecutorDescription, ExecutorId, ExecutorState, WorkerId,
};
use serde::{Deserialize, Serialize};

/// A worker's registration, as it sends it (Spark's `RegisterWorker` without
/// the endpoint reference). Also the record persisted for a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRegistration {
    /// The worker's id.
    pub id: WorkerId,
    /// The host of the worker's RPC endpoint.
    pub host: String,
    /// The port of the worker's RPC endpoint. Together with `host`, the
    /// worker's address: two live workers may not share one.
    pub port: u16,
    /// Cores it offers.
    pub cores: u32,
    /// Memory it offers, in MB.
    pub memory_mb: u64,
    /// Its web UI.
    pub web_ui_url: String,
}

/// Where an application's driver is, as the master tells repeated registrations
/// apart: its endpoint's address and, for a driver in a client-only environment
/// (whose endpoint addresses all print alike), the connection it registered over.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DriverAddress {
    /// The driver endpoint's address (`flint://name@host:port`, or
    /// `flint-client://name` for a client-only environment).
    pub endpoint: String,
    /// For a client-only driver: the peer address of the connection it came over.
    pub via: Option<String>,
}

impl DriverAddress {
    /// A driver whose endpoint address alone identifies it.
    pub fn endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            via: None,
        }
    }
}

impl From<String> for DriverAddress {
    fn from(endpoint: String) -> Self {
        Self::endpoint(endpoint)
    }
}

impl From<&str> for DriverAddress {
    fn from(endpoint: &str) -> Self {
        Self::endpoint(endpoint)
    }
}

impl std::fmt::Display for DriverAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.via {
            None => f.write_str(&self.endpoint),
            Some(via) => write!(f, "{} (over the connection from {via})", self.endpoint),
        }
    }
}

/// The record persisted for an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    /// The application's id.
    pub id: AppId,
    /// What it asked for.
    pub desc: ApplicationDescription,
    /// When it registered (epoch ms).
    pub submit_ms: u64,
    /// Where its driver is, as given at registration.
    pub driver_address: DriverAddress,
}

/// The record persisted for a cluster-mode driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverRecord {
    /// The driver's id.
    pub id: DriverId,
    /// What it asked for.
    pub desc: DriverDescription,
    /// When it was submitted (epoch ms).
    pub submit_ms: u64,
}

/// Everything read back from persistence when this master is elected.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredState {
    /// Applications that were active.
    pub apps: Vec<AppRecord>,
    /// Drivers that were active.
    pub drivers: Vec<DriverRecord>,
    /// Workers that were registered.
    pub workers: Vec<WorkerRegistration>,
}

impl StoredState {
    /// `true` when nothing was stored.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty() && self.drivers.is_empty() && self.workers.is_empty()
    }
}

/// An input to [`MasterState::handle`](super::MasterState::handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    // ----- leadership and recovery -----
    /// Leader election chose this master; `stored` is what persistence holds
    /// (empty without HA). STANDBY → ALIVE, or → RECOVERING when something
    /// was stored.
    ElectedLeader {
        /// What persistence holds.
        stored: StoredState,
    },
    /// Leadership was lost: yields [`Effect::Shutdown`], as Spark exits.
    RevokedLeadership,
    /// The recovery timer fired (see [`Effect::ScheduleCompleteRecovery`]).
    CompleteRecovery,

    // ----- workers -----
    /// A worker registers (or re-registers).
    RegisterWorker(WorkerRegistration),
    /// A worker's periodic heartbeat.
    Heartbeat {
        /// The sender.
        worker_id: WorkerId,
    },
    /// A worker lists what it runs after registering; executors and drivers
    /// the master does not know are killed.
    WorkerLatestState {
        /// The sender.
        worker_id: WorkerId,
        /// Executors it runs.
        executors: Vec<ExecutorDescription>,
        /// Drivers it runs.
        driver_ids: Vec<DriverId>,
    },
    /// A worker answers [`Effect::MasterChangedToWorker`] during recovery
    /// (Spark's `WorkerSchedulerStateResponse`).
    WorkerSchedulerState {
        /// The sender.
        worker_id: WorkerId,
        /// Executors it runs.
        executors: Vec<ExecutorDescription>,
        /// Drivers it runs.
        driver_ids: Vec<DriverId>,
    },
    /// A worker reports it is decommissioning itself.
    WorkerDecommissioning {
        /// The sender.
        worker_id: WorkerId,
    },
    /// *Ask* (reply [`Reply::WorkersDecommissioned`]): decommission every
    /// worker on these hosts (case-insensitive).
    DecommissionWorkersOnHosts {
        /// Host names without ports.
        hosts: Vec<String>,
    },
    /// The connection to a worker dropped.
    WorkerDisconnected {
        /// The worker.
        worker_id: WorkerId,
    },
    /// Periodic timer (every [`MasterConfig::timeout_check_interval_ms`](super::MasterConfig)):
    /// times out silent workers and culls long-dead ones.
    Tick,

    // ----- executors -----
    /// *Ask* (reply `Ack(true)`): a worker reports an executor's new state.
    ExecutorStateChanged {
        /// The executor's application.
        app_id: AppId,
        /// The executor.
        exec_id: ExecutorId,
        /// Its new state.
        state: ExecutorState,
        /// A human explanation, if any.
        message: Option<String>,
        /// The process exit status, when it exited.
        exit_status: Option<i32>,
    },

    // ----- applications -----
    /// An application's driver registers it. Ignored (no reply) in STANDBY,
    /// as Spark. A second registration from the same `driver_address` while
    /// the first app is active is answered with the first app's id.
    RegisterApplication {
        /// What it asks for.
        desc: ApplicationDescription,
        /// Where its driver is (used to recognise repeated registrations and
        /// persisted for recovery).
        driver_address: DriverAddress,
    },
    /// The driver unregisters its application (→ `final_state`, FINISHED when
    /// `None` or not a final state).
    UnregisterApplication {
        /// The application.
        app_id: AppId,
        /// The state the driver says it ended in.
        final_state: Option<ApplicationState>,
    },
    /// The connection to an application's driver dropped (→ FINISHED).
    AppDisconnected {
        /// The application.
        app_id: AppId,
    },
    /// A driver answers [`Effect::MasterChangedToApp`] during recovery.
    MasterChangeAcknowledged {
        /// The application.
        app_id: AppId,
    },
    /// *Ask* (reply `Ack(found)`): an operator kills an application (→ KILLED).
    KillApplication {
        /// The application.
        app_id: AppId,
    },
    /// *Ask* (reply `Ack(known)`): set the app's executor limit (dynamic
    /// allocation). Lowering it kills nothing.
    RequestExecutors {
        /// The application.
        app_id: AppId,
        /// The new total executor limit.
        total: u32,
    },
    /// *Ask* (reply `Ack(known)`): kill some of the app's executors.
    KillExecutors {
        /// The application.
        app_id: AppId,
        /// The executors to kill.
        exec_ids: Vec<ExecutorId>,
    },

    // ----- cluster-mode drivers -----
    /// *Ask* (reply [`Reply::SubmitDriver`]): queue a driver.
    SubmitDriver {
        /// What it asks for.
        desc: DriverDescription,
    },
    /// *Ask* (reply [`Reply::KillDriver`]).
    KillDriver {
        /// The driver.
        driver_id: DriverId,
    },
    /// *Ask* (reply [`Reply::KillAllDrivers`]).
    KillAllDrivers,
    /// A worker reports a driver's final state, or that a supervised driver
    /// waits to be relaunched (RELAUNCHING) and runs again (RUNNING).
    DriverStateChanged {
        /// The driver.
        driver_id: DriverId,
        /// Its state (ERROR, FINISHED, KILLED, FAILED; RELAUNCHING, RUNNING).
        state: DriverState,
        /// The error, when it failed.
        exception: Option<String>,
    },
    /// *Ask* (reply [`Reply::DriverStatus`]).
    RequestDriverStatus {
        /// The driver.
        driver_id: DriverId,
    },
    /// *Ask* (reply `Ack(true)`): forget completed apps and drivers.
    ClearCompleted,
    /// *Ask* (reply [`Reply::DriverAttempt`]): the newest attempt of a driver,
    /// following the master's relaunches from any of its ids.
    RequestDriverAttempt {
        /// Any id the driver had.
        driver_id: DriverId,
    },
}

pub use flint_types::log::LogLevel;

impl flint_types::log::LogEffect for Effect {
    fn log(level: LogLevel, message: String) -> Self {
        Effect::Log { level, message }
    }
}

/// The answer to an *ask* event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A yes/no answer (see the event).
    Ack(bool),
    /// How many workers matched [`Event::DecommissionWorkersOnHosts`].
    WorkersDecommissioned(u32),
    /// Answer to [`Event::SubmitDriver`].
    SubmitDriver(flint_proto::messages::SubmitDriverResponse),
    /// Answer to [`Event::KillDriver`].
    KillDriver(flint_proto::messages::KillDriverResponse),
    /// Answer to [`Event::KillAllDrivers`].
    KillAllDrivers(flint_proto::messages::KillAllDriversResponse),
    /// Answer to [`Event::RequestDriverStatus`] (`found` says whether the driver is
    /// known, active or completed; `exception` its error or why the master cannot
    /// answer).
    DriverStatus(flint_proto::messages::DriverStatusResponse),
    /// Answer to [`Event::RequestDriverAttempt`].
    DriverAttempt(flint_proto::messages::DriverAttemptResponse),
}

/// An output of [`MasterState::handle`](super::MasterState::handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    // ----- to a worker -----
    /// Registration accepted; `duplicate` when the worker was already
    /// registered (Spark's `RegisteredWorker(duplicate = true)`: the worker
    /// only logs a warning).
    RegisteredWorker {
        /// The worker.
        worker_id: WorkerId,
        /// Whether it was already registered.
        duplicate: bool,
    },
    /// Registration refused; a worker not yet registered exits.
    RegisterWorkerFailed {
        /// The worker.
        worker_id: WorkerId,
        /// Why.
        message: String,
    },
    /// This master is not the leader; the worker keeps trying the others.
    MasterInStandby {
        /// The worker.
        worker_id: WorkerId,
    },
    /// The master does not know this worker (any more): register again.
    ReconnectWorker {
        /// The worker.
        worker_id: WorkerId,
    },
    /// Start an executor.
    LaunchExecutor {
        /// Where.
        worker_id: WorkerId,
        /// For which application.
        app_id: AppId,
        /// Its id within the application.
        exec_id: ExecutorId,
        /// Cores it gets.
        cores: u32,
        /// Memory it gets, in MB.
        memory_mb: u64,
        /// The application's description (the command to run).
        desc: Box<ApplicationDescription>,
    },
    /// Stop an executor.
    KillExecutor {
        /// Where it runs.
        worker_id: WorkerId,
        /// Its application.
        app_id: AppId,
        /// The executor.
        exec_id: ExecutorId,
    },
    /// Start a cluster-mode driver.
    LaunchDriver {
        /// Where.
        worker_id: WorkerId,
        /// The driver.
        driver_id: DriverId,
        /// What to run.
        desc: Box<DriverDescription>,
    },
    /// Stop a driver.
    KillDriver {
        /// Where it runs.
        worker_id: WorkerId,
        /// The driver.
        driver_id: DriverId,
    },
    /// An application ended: the worker may clean its directories.
    ApplicationFinished {
        /// The worker.
        worker_id: WorkerId,
        /// The application.
        app_id: AppId,
    },
    /// Ask the worker to decommission itself.
    DecommissionWorker {
        /// The worker.
        worker_id: WorkerId,
    },
    /// Tell a recovered worker about its new master (it answers with
    /// [`Event::WorkerSchedulerState`]).
    MasterChangedToWorker {
        /// The worker.
        worker_id: WorkerId,
    },

    // ----- to an application's driver -----
    /// Registration accepted, under this id.
    RegisteredApplication {
        /// The application.
        app_id: AppId,
    },
    /// An executor was launched for the application.
    ExecutorAdded {
        /// The application.
        app_id: AppId,
        /// The executor.
        exec_id: ExecutorId,
        /// Where it runs.
        worker_id: WorkerId,
        /// That worker's `host:port`.
        host_port: String,
        /// Its cores.
        cores: u32,
        /// Its memory, in MB.
        memory_mb: u64,
    },
    /// An executor changed state.
    ExecutorUpdated {
        /// The application.
        app_id: AppId,
        /// The executor.
        exec_id: ExecutorId,
        /// Its new state.
        state: ExecutorState,
        /// Why, if known.
        message: Option<String>,
        /// Its exit status, if it exited.
        exit_status: Option<i32>,
        /// Set when the whole worker host was lost or decommissioned.
        worker_host: Option<String>,
    },
    /// A worker was removed from the cluster.
    WorkerRemoved {
        /// The application told.
        app_id: AppId,
        /// The worker.
        worker_id: WorkerId,
        /// Its host.
        host: String,
        /// Why.
        message: String,
    },
    /// The application was removed by the master (FAILED or KILLED; not
    /// sent for FINISHED, as Spark).
    ApplicationRemoved {
        /// The application.
        app_id: AppId,
        /// Why (starts with the final state's name).
        message: String,
    },
    /// Tell a recovered application about its new master (it answers with
    /// [`Event::MasterChangeAcknowledged`]).
    MasterChangedToApp {
        /// The application.
        app_id: AppId,
    },

    // ----- persistence -----
    /// Store a worker.
    PersistWorker(WorkerRegistration),
    /// Forget a stored worker.
    UnpersistWorker(WorkerId),
    /// Store an application.
    PersistApp(AppRecord),
    /// Forget a stored application.
    UnpersistApp(AppId),
    /// Store a driver.
    PersistDriver(DriverRecord),
    /// Forget a stored driver.
    UnpersistDriver(DriverId),

    // ----- to the shell -----
    /// The answer to the *ask* event being handled.
    Reply(Reply),
    /// Send [`Event::CompleteRecovery`] after this delay.
    ScheduleCompleteRecovery {
        /// Delay in ms ([`MasterConfig::recovery_timeout_ms`](super::MasterConfig)).
        delay_ms: u64,
    },
    /// Stop the master process (leadership revoked).
    Shutdown {
        /// Why.
        message: String,
    },
    /// A log line.
    Log {
        /// How loud.
        level: LogLevel,
        /// The text.
        message: String,
    },
}
