//! The deploy messages exchanged by the master, the workers and the
//! application client over flint's RPC layer, after Spark's `DeployMessages`.
//!
//! Three protocols, one per kind of endpoint:
//!
//! - [`MasterMsg`] (`"flint.master/4"`): everything the master's endpoint
//!   (named [`MASTER_ENDPOINT`]) accepts, from workers, from application
//!   clients and from tools;
//! - [`WorkerMsg`] (`"flint.worker/2"`): what the master tells a worker
//!   (endpoint [`WORKER_ENDPOINT`]);
//! - [`AppClientMsg`] (`"flint.app-client/1"`): what the master tells an
//!   application's client (endpoint [`APP_CLIENT_ENDPOINT`]).
//!
//! Beside them, two tool protocols: [`BinaryStoreMsg`] (the master's store of
//! uploaded driver binaries) and [`WorkerLogMsg`] (`"flint.worker-logs/1"`, every
//! worker's [`WORKER_LOGS_ENDPOINT`], which `flint logs` reads children's output
//! from).
//!
//! Every message is its own struct, convertible into its protocol enum with
//! `From`, so `master.send(Heartbeat { .. })` and `master.ask(RequestMasterState)`
//! read naturally. Messages Spark sends one-way are one-way here; the ones
//! Spark asks (with a reply) implement [`Ask`] with the reply type. As in
//! Spark, registration is one-way: the registering side includes its own
//! [`EndpointRef`] and the master answers by sending to it, so a standby
//! master can stay silent.
//!
//! Changing a message's shape is a protocol change: bump the version in the
//! enum's `NAME` so peers of different builds refuse each other by name.

use flint_rpc::{Ask, EndpointRef, Protocol, RpcAddress};
use serde::{Deserialize, Serialize};

use crate::status::MasterStatusJson;
use crate::{
    AppId, ApplicationDescription, ApplicationState, DriverDescription, DriverId, DriverState,
    ExecutorDescription, ExecutorId, ExecutorState, WorkerId,
};

/// The name the master registers its endpoint under.
pub const MASTER_ENDPOINT: &str = "Master";
/// The name a worker registers its endpoint under.
pub const WORKER_ENDPOINT: &str = "Worker";
/// The name an application client registers its endpoint under.
pub const APP_CLIENT_ENDPOINT: &str = "AppClient";

/// Implements `From<$ty> for $enum` (wrapping into variant `$variant`).
macro_rules! into_enum {
    ($enum:ident :: $variant:ident ($ty:ty)) => {
        impl From<$ty> for $enum {
            fn from(m: $ty) -> Self {
                $enum::$variant(m)
            }
        }
    };
}

/// Implements `Ask` for a request with its reply type.
macro_rules! ask {
    ($ty:ty => $reply:ty) => {
        impl Ask for $ty {
            type Reply = $reply;
        }
    };
}

// ===================================================================
// The master's protocol
// ===================================================================

/// Everything the master's endpoint accepts. See the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MasterMsg {
    // ----- from workers -----
    /// See [`RegisterWorker`].
    RegisterWorker(RegisterWorker),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`WorkerLatestState`].
    WorkerLatestState(WorkerLatestState),
    /// See [`WorkerSchedulerStateResponse`].
    WorkerSchedulerStateResponse(WorkerSchedulerStateResponse),
    /// See [`WorkerDecommissioning`].
    WorkerDecommissioning(WorkerDecommissioning),
    /// See [`ExecutorStateChanged`] (an ask).
    ExecutorStateChanged(ExecutorStateChanged),
    /// See [`DriverStateChanged`].
    DriverStateChanged(DriverStateChanged),

    // ----- from application clients -----
    /// See [`RegisterApplication`].
    RegisterApplication(RegisterApplication),
    /// See [`UnregisterApplication`].
    UnregisterApplication(UnregisterApplication),
    /// See [`MasterChangeAcknowledged`].
    MasterChangeAcknowledged(MasterChangeAcknowledged),
    /// See [`RequestExecutors`] (an ask).
    RequestExecutors(RequestExecutors),
    /// See [`KillExecutors`] (an ask).
    KillExecutors(KillExecutors),

    // ----- from tools (CLI, web UI, REST server) -----
    /// See [`RequestMasterState`] (an ask).
    RequestMasterState(RequestMasterState),
    /// See [`RequestReadyz`] (an ask).
    RequestReadyz(RequestReadyz),
    /// See [`KillApplication`] (an ask).
    KillApplication(KillApplication),
    /// See [`DecommissionWorkersOnHosts`] (an ask).
    DecommissionWorkersOnHosts(DecommissionWorkersOnHosts),
    /// See [`RequestSubmitDriver`] (an ask).
    RequestSubmitDriver(RequestSubmitDriver),
    /// See [`RequestKillDriver`] (an ask).
    RequestKillDriver(RequestKillDriver),
    /// See [`RequestKillAllDrivers`] (an ask).
    RequestKillAllDrivers(RequestKillAllDrivers),
    /// See [`RequestDriverStatus`] (an ask).
    RequestDriverStatus(RequestDriverStatus),
    /// See [`RequestClearCompletedDriversAndApps`] (an ask).
    RequestClearCompletedDriversAndApps(RequestClearCompletedDriversAndApps),
    /// See [`RequestWebUiUrl`] (an ask).
    RequestWebUiUrl(RequestWebUiUrl),
    /// See [`RequestDriverAttempt`] (an ask).
    RequestDriverAttempt(RequestDriverAttempt),
    /// See [`WatchDriver`].
    WatchDriver(WatchDriver),
}

/// Tool → master (**ask**, reply: the master's web UI URL, `http://host:port`, the
/// one it advertises): how `flint start-cluster` learns where the status is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestWebUiUrl;
into_enum!(MasterMsg::RequestWebUiUrl(RequestWebUiUrl));
ask!(RequestWebUiUrl => String);

impl Protocol for MasterMsg {
    const NAME: &'static str = "flint.master/4";
}

// ----- from workers -----

/// Worker → master (one-way, to every configured master in parallel): a
/// worker registers, or registers again. The master answers by sending
/// [`RegisteredWorker`], [`RegisterWorkerFailed`] or [`MasterInStandby`] to
/// `worker`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterWorker {
    /// The worker's id (`worker-<timestamp>-<host>-<port>`).
    pub id: WorkerId,
    /// The host of the worker's RPC environment.
    pub host: String,
    /// The port of the worker's RPC environment.
    pub port: u16,
    /// The worker's endpoint; every later message to the worker goes here.
    pub worker: EndpointRef<WorkerMsg>,
    /// Cores the worker offers.
    pub cores: u32,
    /// Memory the worker offers, in MB.
    pub memory_mb: u64,
    /// The worker's web UI (`http://host:port`).
    pub web_ui_url: String,
    /// The master address the worker used to reach this master; echoed back
    /// in [`RegisteredWorker::master_address`].
    pub master_address: RpcAddress,
}
into_enum!(MasterMsg::RegisterWorker(RegisterWorker));

/// Worker → master (one-way, every `worker.timeout / 4` once registered):
/// the worker is alive. A master that does not know the id answers
/// [`ReconnectWorker`] to `worker`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's id.
    pub worker_id: WorkerId,
    /// The sender's endpoint, for the [`ReconnectWorker`] answer.
    pub worker: EndpointRef<WorkerMsg>,
}
into_enum!(MasterMsg::Heartbeat(Heartbeat));

/// Worker → master (one-way, after every successful registration): what the
/// worker runs. Executors and drivers the master does not know on that
/// worker are killed ([`KillExecutor`], [`KillDriver`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerLatestState {
    /// The sender's id.
    pub worker_id: WorkerId,
    /// The executors it runs.
    pub executors: Vec<ExecutorDescription>,
    /// The drivers it runs.
    pub driver_ids: Vec<DriverId>,
}
into_enum!(MasterMsg::WorkerLatestState(WorkerLatestState));

/// Worker → master (one-way, the answer to [`MasterChanged`] during a new
/// leader's recovery): what the worker runs, so the master can re-attach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSchedulerStateResponse {
    /// The sender's id.
    pub worker_id: WorkerId,
    /// The executors it runs.
    pub executors: Vec<ExecutorDescription>,
    /// The drivers it runs.
    pub driver_ids: Vec<DriverId>,
}
into_enum!(MasterMsg::WorkerSchedulerStateResponse(
    WorkerSchedulerStateResponse
));

/// Worker → master (one-way, after the worker received its decommission
/// signal): stop placing work on it. A standby master answers
/// [`MasterInStandby`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerDecommissioning {
    /// The sender's id.
    pub worker_id: WorkerId,
    /// The sender's endpoint.
    pub worker: EndpointRef<WorkerMsg>,
}
into_enum!(MasterMsg::WorkerDecommissioning(WorkerDecommissioning));

/// Worker → master (**ask**, reply `true`, as Spark): an executor changed
/// state (RUNNING, or a final state with its exit status). The master
/// forwards it to the application as [`ExecutorUpdated`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorStateChanged {
    /// The executor's application.
    pub app_id: AppId,
    /// The executor.
    pub exec_id: ExecutorId,
    /// Its new state.
    pub state: ExecutorState,
    /// A human explanation, if any.
    pub message: Option<String>,
    /// The process's exit status, when it exited.
    pub exit_status: Option<i32>,
}
into_enum!(MasterMsg::ExecutorStateChanged(ExecutorStateChanged));
ask!(ExecutorStateChanged => bool);

/// Worker → master (one-way): a cluster-mode driver reached a final state
/// (ERROR, FINISHED, KILLED or FAILED).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStateChanged {
    /// The driver.
    pub driver_id: DriverId,
    /// Its final state.
    pub state: DriverState,
    /// The error, when it failed.
    pub exception: Option<String>,
}
into_enum!(MasterMsg::DriverStateChanged(DriverStateChanged));

// ----- from application clients -----

/// App client → master (one-way, to every configured master): register an
/// application. The master answers [`RegisteredApplication`] to `driver`; a
/// standby master ignores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterApplication {
    /// What the application asks for.
    pub desc: ApplicationDescription,
    /// The application client's endpoint; every later message about the
    /// application goes here.
    pub driver: EndpointRef<AppClientMsg>,
}
into_enum!(MasterMsg::RegisterApplication(RegisterApplication));

/// App client → master (one-way, when the application stops): the
/// application ends in `final_state` (FINISHED when `None`) and its executors
/// are killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisterApplication {
    /// The application.
    pub app_id: AppId,
    /// How the driver says it ended: FINISHED, FAILED (a panic, an unrecovered
    /// job failure) or KILLED (SIGINT/SIGTERM). `None` and non-final states mean
    /// FINISHED, as Spark's unregister does.
    pub final_state: Option<ApplicationState>,
}
into_enum!(MasterMsg::UnregisterApplication(UnregisterApplication));

/// App client → master (one-way, the answer to [`MasterChanged`] during a
/// new leader's recovery): the application is still there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterChangeAcknowledged {
    /// The application.
    pub app_id: AppId,
}
into_enum!(MasterMsg::MasterChangeAcknowledged(
    MasterChangeAcknowledged
));

/// App client → master (**ask**, reply: whether the application is known):
/// set the application's total executor target (dynamic allocation).
/// Lowering it kills nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestExecutors {
    /// The application.
    pub app_id: AppId,
    /// The new total number of executors wanted.
    pub total: u32,
}
into_enum!(MasterMsg::RequestExecutors(RequestExecutors));
ask!(RequestExecutors => bool);

/// App client → master (**ask**, reply: whether the application is known):
/// kill some of the application's executors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillExecutors {
    /// The application.
    pub app_id: AppId,
    /// The executors to kill.
    pub exec_ids: Vec<ExecutorId>,
}
into_enum!(MasterMsg::KillExecutors(KillExecutors));
ask!(KillExecutors => bool);

// ----- from tools -----

/// Tool → master (**ask**): the master's status, the same document
/// `GET /api/v1/status` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMasterState;
into_enum!(MasterMsg::RequestMasterState(RequestMasterState));
ask!(RequestMasterState => MasterStatusJson);

/// Tool → master (**ask**): is the master ready (anything but STANDBY)?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestReadyz;
into_enum!(MasterMsg::RequestReadyz(RequestReadyz));
ask!(RequestReadyz => bool);

/// Tool → master (**ask**, reply: whether the application was active): an
/// operator kills an application; it ends KILLED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillApplication {
    /// The application.
    pub app_id: AppId,
}
into_enum!(MasterMsg::KillApplication(KillApplication));
ask!(KillApplication => bool);

/// Tool → master (**ask**, reply: how many workers matched; 0 in STANDBY):
/// decommission every worker on these hosts (compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecommissionWorkersOnHosts {
    /// Host names, without ports.
    pub hosts: Vec<String>,
}
into_enum!(MasterMsg::DecommissionWorkersOnHosts(
    DecommissionWorkersOnHosts
));
ask!(DecommissionWorkersOnHosts => u32);

/// Submission client → master (**ask**): queue a cluster-mode driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSubmitDriver {
    /// What to run.
    pub desc: DriverDescription,
}
into_enum!(MasterMsg::RequestSubmitDriver(RequestSubmitDriver));
ask!(RequestSubmitDriver => SubmitDriverResponse);

/// The answer to [`RequestSubmitDriver`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitDriverResponse {
    /// Whether the driver was queued.
    pub success: bool,
    /// Its id, when queued.
    pub driver_id: Option<DriverId>,
    /// What happened (a non-leader's refusal starts with "Current state is
    /// not alive").
    pub message: String,
}

/// Submission client → master (**ask**): kill a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestKillDriver {
    /// The driver.
    pub driver_id: DriverId,
}
into_enum!(MasterMsg::RequestKillDriver(RequestKillDriver));
ask!(RequestKillDriver => KillDriverResponse);

/// The answer to [`RequestKillDriver`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillDriverResponse {
    /// The driver.
    pub driver_id: DriverId,
    /// Whether a kill was started.
    pub success: bool,
    /// What happened.
    pub message: String,
}

/// REST server → master (**ask**): kill every driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestKillAllDrivers;
into_enum!(MasterMsg::RequestKillAllDrivers(RequestKillAllDrivers));
ask!(RequestKillAllDrivers => KillAllDriversResponse);

/// The answer to [`RequestKillAllDrivers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillAllDriversResponse {
    /// Whether kills were started.
    pub success: bool,
    /// What happened.
    pub message: String,
}

/// Submission client → master (**ask**): a driver's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestDriverStatus {
    /// The driver.
    pub driver_id: DriverId,
}
into_enum!(MasterMsg::RequestDriverStatus(RequestDriverStatus));
ask!(RequestDriverStatus => DriverStatusResponse);

/// The answer to [`RequestDriverStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStatusResponse {
    /// Whether the driver is known (active or completed).
    pub found: bool,
    /// Its state.
    pub state: Option<DriverState>,
    /// The worker it was placed on.
    pub worker_id: Option<WorkerId>,
    /// That worker's `host:port`.
    pub worker_host_port: Option<String>,
    /// Its error, or why the master cannot answer.
    pub exception: Option<String>,
}

/// REST server → master (**ask**, reply `true`): forget completed
/// applications and drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestClearCompletedDriversAndApps;
into_enum!(MasterMsg::RequestClearCompletedDriversAndApps(
    RequestClearCompletedDriversAndApps
));
ask!(RequestClearCompletedDriversAndApps => bool);

/// Tool → master (**ask**): the *current attempt* of a driver. A supervised driver
/// the master relaunched after losing its worker gets a new id (SPARK-19900: the old
/// process may still run behind a partition); this follows the chain from any id
/// of it to the newest, so `flint status` and `flint submit` keep following one
/// logical driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestDriverAttempt {
    /// Any id the driver had.
    pub driver_id: DriverId,
}
into_enum!(MasterMsg::RequestDriverAttempt(RequestDriverAttempt));
ask!(RequestDriverAttempt => DriverAttemptResponse);

/// The answer to [`RequestDriverAttempt`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverAttemptResponse {
    /// The id of the newest attempt (the asked id when it was never relaunched
    /// elsewhere); `None` when the driver is unknown.
    pub driver_id: Option<DriverId>,
    /// How often it was relaunched so far: by the master on a new worker, or by
    /// its worker after a non-zero exit (`--supervise`).
    pub relaunches: u32,
    /// The newest attempt's status. Its state is RELAUNCHING only while its
    /// worker waits out the back-off before starting it again.
    pub status: DriverStatusResponse,
}

/// Tool → master (one-way): push every change of this driver's newest attempt to
/// `watcher` as a [`DriverUpdate`] — at once (the current one), then on each change,
/// until a final state or the watcher's connection closes. How `flint submit`
/// follows its driver without missing a short state (polling stays its fallback).
/// The master keeps a bounded number of watches; past it a watch is dropped (with a
/// log line) and the tool's polling carries on alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchDriver {
    /// Any id the driver had.
    pub driver_id: DriverId,
    /// Where the updates go.
    pub watcher: EndpointRef<DriverWatchMsg>,
}
into_enum!(MasterMsg::WatchDriver(WatchDriver));

/// What the master pushes to a [`WatchDriver`] watcher.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DriverWatchMsg {
    /// See [`DriverUpdate`].
    DriverUpdate(DriverUpdate),
}

impl Protocol for DriverWatchMsg {
    const NAME: &'static str = "flint.driver-watch/1";
}

/// Master → watcher: the watched driver's newest attempt changed (or, first, what it
/// is now): the same answer [`RequestDriverAttempt`] gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverUpdate {
    /// The id the watch was made with.
    pub watched: DriverId,
    /// Its newest attempt.
    pub attempt: DriverAttemptResponse,
}
into_enum!(DriverWatchMsg::DriverUpdate(DriverUpdate));

// ===================================================================
// The worker's protocol
// ===================================================================

/// What the master tells a worker. See the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// See [`RegisteredWorker`].
    RegisteredWorker(RegisteredWorker),
    /// See [`RegisterWorkerFailed`].
    RegisterWorkerFailed(RegisterWorkerFailed),
    /// See [`MasterInStandby`].
    MasterInStandby(MasterInStandby),
    /// See [`ReconnectWorker`].
    ReconnectWorker(ReconnectWorker),
    /// See [`MasterChanged`].
    MasterChanged(MasterChanged),
    /// See [`LaunchExecutor`].
    LaunchExecutor(LaunchExecutor),
    /// See [`KillExecutor`].
    KillExecutor(KillExecutor),
    /// See [`LaunchDriver`].
    LaunchDriver(LaunchDriver),
    /// See [`KillDriver`].
    KillDriver(KillDriver),
    /// See [`ApplicationFinished`].
    ApplicationFinished(ApplicationFinished),
    /// See [`DecommissionWorker`].
    DecommissionWorker(DecommissionWorker),
}

impl Protocol for WorkerMsg {
    const NAME: &'static str = "flint.worker/2";
}

/// Master → worker (one-way, the answer to [`RegisterWorker`]): the worker is
/// registered. It remembers `master`, starts heartbeating and sends
/// [`WorkerLatestState`]; with `duplicate` it only logs a warning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisteredWorker {
    /// The master's endpoint.
    pub master: EndpointRef<MasterMsg>,
    /// The master's web UI (`http://host:port`).
    pub master_web_ui_url: String,
    /// The master address the worker registered through (echoed from
    /// [`RegisterWorker::master_address`]).
    pub master_address: RpcAddress,
    /// Whether the worker was already registered.
    pub duplicate: bool,
}
into_enum!(WorkerMsg::RegisteredWorker(RegisteredWorker));

/// Master → worker (one-way, the answer to [`RegisterWorker`]): registration
/// refused. A worker that is not yet registered exits with this message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterWorkerFailed {
    /// Why.
    pub message: String,
}
into_enum!(WorkerMsg::RegisterWorkerFailed(RegisterWorkerFailed));

/// Master → worker (one-way, the answer to [`RegisterWorker`] or
/// [`WorkerDecommissioning`]): this master is not the leader. The worker
/// ignores it and keeps trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInStandby;
into_enum!(WorkerMsg::MasterInStandby(MasterInStandby));

/// Master → worker (one-way, the answer to a [`Heartbeat`] from a worker the
/// master does not know): register again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconnectWorker {
    /// The master's URL (`flint://host:port`).
    pub master_url: String,
}
into_enum!(WorkerMsg::ReconnectWorker(ReconnectWorker));

/// New leader → worker or app client (one-way, during recovery): switch to
/// this master. A worker answers [`WorkerSchedulerStateResponse`], an app
/// client [`MasterChangeAcknowledged`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MasterChanged {
    /// The new master's endpoint.
    pub master: EndpointRef<MasterMsg>,
    /// The new master's web UI.
    pub master_web_ui_url: String,
}
into_enum!(WorkerMsg::MasterChanged(MasterChanged));
into_enum!(AppClientMsg::MasterChanged(MasterChanged));

/// Master → worker (one-way): start an executor for an application. Ignored
/// when `master_url` is not the worker's active master. The worker reports
/// the outcome with [`ExecutorStateChanged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchExecutor {
    /// The sending master's URL.
    pub master_url: String,
    /// The application.
    pub app_id: AppId,
    /// The executor's id within the application.
    pub exec_id: ExecutorId,
    /// The application's description (the command to run, with
    /// placeholders).
    pub desc: ApplicationDescription,
    /// Cores the executor gets.
    pub cores: u32,
    /// Memory the executor gets, in MB.
    pub memory_mb: u64,
}
into_enum!(WorkerMsg::LaunchExecutor(LaunchExecutor));

/// Master → worker (one-way): kill an executor (TERM, then KILL after a
/// grace period). Ignored when `master_url` is not the active master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillExecutor {
    /// The sending master's URL.
    pub master_url: String,
    /// The executor's application.
    pub app_id: AppId,
    /// The executor.
    pub exec_id: ExecutorId,
}
into_enum!(WorkerMsg::KillExecutor(KillExecutor));

/// Master → worker (one-way): start a cluster-mode driver. The worker
/// reports its end with [`DriverStateChanged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchDriver {
    /// The driver.
    pub driver_id: DriverId,
    /// What to run.
    pub desc: DriverDescription,
}
into_enum!(WorkerMsg::LaunchDriver(LaunchDriver));

/// Master → worker (one-way): kill a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillDriver {
    /// The driver.
    pub driver_id: DriverId,
}
into_enum!(WorkerMsg::KillDriver(KillDriver));

/// Master → every live worker (one-way, when an application is removed): the
/// worker may delete the application's directories once none of its
/// executors remain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationFinished {
    /// The application.
    pub app_id: AppId,
}
into_enum!(WorkerMsg::ApplicationFinished(ApplicationFinished));

/// Master → worker (one-way): decommission yourself and accept no more
/// executors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecommissionWorker;
into_enum!(WorkerMsg::DecommissionWorker(DecommissionWorker));

// ===================================================================
// The application client's protocol
// ===================================================================

/// What the master tells an application's client. See the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AppClientMsg {
    /// See [`RegisteredApplication`].
    RegisteredApplication(RegisteredApplication),
    /// See [`ExecutorAdded`].
    ExecutorAdded(ExecutorAdded),
    /// See [`ExecutorUpdated`].
    ExecutorUpdated(ExecutorUpdated),
    /// See [`WorkerRemoved`].
    WorkerRemoved(WorkerRemoved),
    /// See [`ApplicationRemoved`].
    ApplicationRemoved(ApplicationRemoved),
    /// See [`MasterChanged`].
    MasterChanged(MasterChanged),
}

impl Protocol for AppClientMsg {
    const NAME: &'static str = "flint.app-client/1";
}

/// Master → app client (one-way, the answer to [`RegisterApplication`]): the
/// application is registered under `app_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisteredApplication {
    /// The application's id.
    pub app_id: AppId,
    /// The master's endpoint.
    pub master: EndpointRef<MasterMsg>,
}
into_enum!(AppClientMsg::RegisteredApplication(RegisteredApplication));

/// Master → app client (one-way, when the master launches an executor): an
/// executor was placed on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorAdded {
    /// The executor's id within the application.
    pub exec_id: ExecutorId,
    /// The worker it runs on.
    pub worker_id: WorkerId,
    /// That worker's `host:port`.
    pub host_port: String,
    /// Its cores.
    pub cores: u32,
    /// Its memory, in MB.
    pub memory_mb: u64,
}
into_enum!(AppClientMsg::ExecutorAdded(ExecutorAdded));

/// Master → app client (one-way): an executor changed state. A finished
/// state (KILLED, FAILED, LOST, EXITED) means the executor is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorUpdated {
    /// The executor.
    pub exec_id: ExecutorId,
    /// Its new state.
    pub state: ExecutorState,
    /// Why, if known.
    pub message: Option<String>,
    /// Its exit status, if it exited.
    pub exit_status: Option<i32>,
    /// Set when the whole worker host was lost or decommissioned.
    pub worker_host: Option<String>,
}
into_enum!(AppClientMsg::ExecutorUpdated(ExecutorUpdated));

/// Master → app client (one-way, to every active application): a worker was
/// removed from the cluster; the driver forgets what lived there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRemoved {
    /// The worker.
    pub worker_id: WorkerId,
    /// Its host.
    pub host: String,
    /// Why.
    pub message: String,
}
into_enum!(AppClientMsg::WorkerRemoved(WorkerRemoved));

/// Master → app client (one-way): the master removed the application (FAILED
/// or KILLED; not sent when it FINISHED). The driver stops with an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationRemoved {
    /// Why; starts with the final state's name.
    pub message: String,
}
into_enum!(AppClientMsg::ApplicationRemoved(ApplicationRemoved));

// ===================================================================
// The master's store of uploaded driver binaries (cluster-mode submit)
// ===================================================================

/// The name the master registers its binary store endpoint under.
pub const BINARY_STORE_ENDPOINT: &str = "BinaryStore";
/// The stream handler on the master that takes binary uploads. The push's meta is
/// `"<sha256> <size>"` (UTF-8); the bytes follow. Ask [`LookupBinary`] afterwards.
pub const BINARY_UPLOAD_STREAM: &str = "flint.binary-upload/1";

/// What the master's binary store endpoint accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BinaryStoreMsg {
    /// See [`LookupBinary`] (an ask).
    LookupBinary(LookupBinary),
}

impl Protocol for BinaryStoreMsg {
    const NAME: &'static str = "flint.binary-store/1";
}

/// Submission client → master (**ask**): is the binary with this SHA-256 stored?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupBinary {
    /// 64 lowercase hex digits.
    pub sha256: String,
}
into_enum!(BinaryStoreMsg::LookupBinary(LookupBinary));
ask!(LookupBinary => BinaryLookup);

/// The answer to [`LookupBinary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryLookup {
    /// Where workers fetch it (`flint://master/files/<sha256>`), when stored.
    pub uri: Option<String>,
    /// An upload of it is in progress.
    pub uploading: bool,
    /// Why its last upload failed, if it did.
    pub error: Option<String>,
    /// Uploads the store completed so far (a known hash is never sent again).
    pub uploads: u64,
}

// ===================================================================
// The worker's log service (`flint logs`)
// ===================================================================

/// The name of the endpoint on every worker that serves its children's logs.
pub const WORKER_LOGS_ENDPOINT: &str = "WorkerLogs";

/// What the worker's log endpoint accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerLogMsg {
    /// See [`ReadLog`] (an ask).
    ReadLog(ReadLog),
}

impl Protocol for WorkerLogMsg {
    const NAME: &'static str = "flint.worker-logs/1";
}

/// Whose log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogSource {
    /// A cluster-mode driver (`<work_dir>/<driver-id>/`).
    Driver(DriverId),
    /// An executor (`<work_dir>/<app-id>/<executor-id>/`).
    Executor(AppId, ExecutorId),
}

/// Which of the child's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogFile {
    /// `stdout`.
    Stdout,
    /// `stderr`.
    Stderr,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStart {
    /// At this byte offset of the current file (0: its start).
    Offset(u64),
    /// At the start of the last this-many lines (read back at most a bounded
    /// amount).
    TailLines(u32),
}

/// Tool → worker (**ask**): up to `max_bytes` (capped by the worker) of a child's
/// stdout or stderr from `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLog {
    /// Whose log.
    pub source: LogSource,
    /// Which file.
    pub file: LogFile,
    /// Where to start.
    pub start: LogStart,
    /// The most bytes wanted.
    pub max_bytes: u32,
}
into_enum!(WorkerLogMsg::ReadLog(ReadLog));
ask!(ReadLog => LogChunk);

/// The answer to [`ReadLog`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The bytes read (empty at the end of the file).
    pub data: Vec<u8>,
    /// The offset of `data`'s first byte.
    pub offset: u64,
    /// The file's size when read. Smaller than a previous offset: the file
    /// rolled over (`worker.log.max_size`); read again from 0.
    pub size: u64,
    /// Whether the child's process runs (or is starting, or waits to be
    /// relaunched): more may come.
    pub running: bool,
    /// Why nothing could be read (unknown child, bad id, no such file).
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::ExecutorCommand;

    /// postcard round trip; the value must come back equal.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
        let bytes = postcard::to_allocvec(v).expect("encodes");
        let back: T = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(&back, v);
    }

    /// postcard round trip of a protocol enum (no `PartialEq`: some variants
    /// hold refs): decoding and re-encoding gives the same bytes.
    fn enum_round_trip<M: Serialize + DeserializeOwned>(m: M) {
        let bytes = postcard::to_allocvec(&m).expect("encodes");
        let back: M = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(postcard::to_allocvec(&back).expect("re-encodes"), bytes);
    }

    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,24}"
    }

    fn app_id() -> impl Strategy<Value = AppId> {
        (0u64..4_102_444_800_000, 0u32..100_000).prop_map(|(ms, n)| AppId::generate(ms, n))
    }

    fn driver_id() -> impl Strategy<Value = DriverId> {
        (0u64..4_102_444_800_000, 0u32..100_000).prop_map(|(ms, n)| DriverId::generate(ms, n))
    }

    fn worker_id() -> impl Strategy<Value = WorkerId> {
        (0u64..4_102_444_800_000, "[a-z0-9.]{1,20}", any::<u16>())
            .prop_map(|(ms, host, port)| WorkerId::generate(ms, &host, port).expect("valid host"))
    }

    fn exec_state() -> impl Strategy<Value = ExecutorState> {
        prop::sample::select(ExecutorState::ALL)
    }

    fn driver_state() -> impl Strategy<Value = DriverState> {
        prop::sample::select(DriverState::ALL)
    }

    fn command() -> impl Strategy<Value = ExecutorCommand> {
        (
            "[a-z/]{1,16}",
            prop::collection::vec(text(), 0..6),
            prop::collection::btree_map("[A-Z_]{1,8}", text(), 0..3),
            prop::option::of((text(), "[0-9a-f]{64}", any::<u64>())),
        )
            .prop_map(|(program, args, env, binary): (_, _, BTreeMap<_, _>, _)| {
                ExecutorCommand {
                    program,
                    args,
                    env,
                    binary: binary.map(|(uri, sha256, size)| crate::BinarySource {
                        uri,
                        sha256,
                        size,
                    }),
                }
            })
    }

    fn app_desc() -> impl Strategy<Value = ApplicationDescription> {
        (
            text(),
            any::<Option<u32>>(),
            any::<Option<u32>>(),
            any::<u64>(),
            command(),
            prop::option::of(text()),
            any::<Option<u32>>(),
        )
            .prop_map(|(name, max_cores, cpe, mem, command, ui, limit)| {
                ApplicationDescription {
                    name,
                    max_cores,
                    cores_per_executor: cpe,
                    memory_per_executor_mb: mem,
                    command,
                    app_ui_url: ui,
                    initial_executor_limit: limit,
                }
            })
    }

    fn driver_desc() -> impl Strategy<Value = DriverDescription> {
        (text(), any::<u64>(), any::<u32>(), any::<bool>(), command()).prop_map(
            |(url, memory_mb, cores, supervise, command)| DriverDescription {
                binary_url: url,
                memory_mb,
                cores,
                supervise,
                command,
            },
        )
    }

    fn exec_desc() -> impl Strategy<Value = ExecutorDescription> {
        (
            app_id(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            exec_state(),
        )
            .prop_map(
                |(app_id, id, cores, memory_mb, state)| ExecutorDescription {
                    app_id,
                    exec_id: ExecutorId(id),
                    cores,
                    memory_mb,
                    state,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn worker_reports_round_trip(
            worker_id in worker_id(),
            executors in prop::collection::vec(exec_desc(), 0..4),
            driver_ids in prop::collection::vec(driver_id(), 0..3),
            app_id in app_id(),
            exec_id in any::<u32>(),
            state in exec_state(),
            message in prop::option::of(text()),
            exit_status in any::<Option<i32>>(),
            dstate in driver_state(),
        ) {
            let latest = WorkerLatestState {
                worker_id: worker_id.clone(),
                executors: executors.clone(),
                driver_ids: driver_ids.clone(),
            };
            round_trip(&latest);
            enum_round_trip(MasterMsg::from(latest));
            let resp = WorkerSchedulerStateResponse { worker_id, executors, driver_ids: driver_ids.clone() };
            round_trip(&resp);
            enum_round_trip(MasterMsg::from(resp));
            let changed = ExecutorStateChanged {
                app_id, exec_id: ExecutorId(exec_id), state, message: message.clone(), exit_status,
            };
            round_trip(&changed);
            enum_round_trip(MasterMsg::from(changed));
            if let Some(driver_id) = driver_ids.first() {
                let d = DriverStateChanged { driver_id: driver_id.clone(), state: dstate, exception: message };
                round_trip(&d);
                enum_round_trip(MasterMsg::from(d));
            }
        }

        #[test]
        fn master_requests_round_trip(
            app_id in app_id(),
            total in any::<u32>(),
            exec_ids in prop::collection::vec(any::<u32>(), 0..5),
            hosts in prop::collection::vec(text(), 0..4),
            ddesc in driver_desc(),
            driver_id in driver_id(),
        ) {
            let msgs: Vec<MasterMsg> = vec![
                UnregisterApplication { app_id: app_id.clone(), final_state: Some(ApplicationState::Killed) }.into(),
                MasterChangeAcknowledged { app_id: app_id.clone() }.into(),
                RequestExecutors { app_id: app_id.clone(), total }.into(),
                KillExecutors { app_id: app_id.clone(), exec_ids: exec_ids.into_iter().map(ExecutorId).collect() }.into(),
                RequestMasterState.into(),
                RequestReadyz.into(),
                KillApplication { app_id }.into(),
                DecommissionWorkersOnHosts { hosts }.into(),
                RequestSubmitDriver { desc: ddesc }.into(),
                RequestKillDriver { driver_id: driver_id.clone() }.into(),
                RequestKillAllDrivers.into(),
                RequestDriverStatus { driver_id }.into(),
                RequestClearCompletedDriversAndApps.into(),
            ];
            for m in msgs {
                enum_round_trip(m);
            }
        }

        #[test]
        fn replies_round_trip(
            success in any::<bool>(),
            driver_id in driver_id(),
            worker_id in prop::option::of(worker_id()),
            message in text(),
            state in prop::option::of(driver_state()),
            host_port in prop::option::of(text()),
        ) {
            round_trip(&SubmitDriverResponse { success, driver_id: Some(driver_id.clone()), message: message.clone() });
            round_trip(&KillDriverResponse { driver_id, success, message: message.clone() });
            round_trip(&KillAllDriversResponse { success, message: message.clone() });
            round_trip(&DriverStatusResponse {
                found: success, state, worker_id, worker_host_port: host_port, exception: Some(message),
            });
        }

        #[test]
        fn worker_commands_round_trip(
            master_url in text(),
            app_id in app_id(),
            exec_id in any::<u32>(),
            desc in app_desc(),
            cores in any::<u32>(),
            memory_mb in any::<u64>(),
            ddesc in driver_desc(),
            driver_id in driver_id(),
            message in text(),
        ) {
            let launch = LaunchExecutor {
                master_url: master_url.clone(), app_id: app_id.clone(), exec_id: ExecutorId(exec_id),
                desc, cores, memory_mb,
            };
            round_trip(&launch);
            let msgs: Vec<WorkerMsg> = vec![
                launch.into(),
                KillExecutor { master_url: master_url.clone(), app_id: app_id.clone(), exec_id: ExecutorId(exec_id) }.into(),
                LaunchDriver { driver_id: driver_id.clone(), desc: ddesc }.into(),
                KillDriver { driver_id }.into(),
                ApplicationFinished { app_id }.into(),
                DecommissionWorker.into(),
                MasterInStandby.into(),
                ReconnectWorker { master_url }.into(),
                RegisterWorkerFailed { message }.into(),
            ];
            for m in msgs {
                enum_round_trip(m);
            }
        }

        #[test]
        fn app_client_events_round_trip(
            exec_id in any::<u32>(),
            worker_id in worker_id(),
            host_port in text(),
            cores in any::<u32>(),
            memory_mb in any::<u64>(),
            state in exec_state(),
            message in prop::option::of(text()),
            exit_status in any::<Option<i32>>(),
            worker_host in prop::option::of(text()),
        ) {
            let added = ExecutorAdded { exec_id: ExecutorId(exec_id), worker_id: worker_id.clone(), host_port: host_port.clone(), cores, memory_mb };
            round_trip(&added);
            let updated = ExecutorUpdated { exec_id: ExecutorId(exec_id), state, message: message.clone(), exit_status, worker_host };
            round_trip(&updated);
            let msgs: Vec<AppClientMsg> = vec![
                added.into(),
                updated.into(),
                WorkerRemoved { worker_id, host: host_port, message: message.clone().unwrap_or_default() }.into(),
                ApplicationRemoved { message: message.unwrap_or_default() }.into(),
            ];
            for m in msgs {
                enum_round_trip(m);
            }
        }
    }

    #[test]
    fn protocol_names_are_versioned_and_distinct() {
        let names = [MasterMsg::NAME, WorkerMsg::NAME, AppClientMsg::NAME];
        assert_eq!(
            names,
            ["flint.master/4", "flint.worker/2", "flint.app-client/1"]
        );
        assert_ne!(MasterMsg::ID, WorkerMsg::ID);
        assert_ne!(WorkerMsg::ID, AppClientMsg::ID);
    }
}
