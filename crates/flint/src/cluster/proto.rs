//! The messages between a driver and its executors: the driver's endpoint
//! ([`DriverMsg`], `"flint.driver/1"`) and each executor's ([`ExecutorMsg`],
//! `"flint.executor/1"`). Tasks and results travel as the bytes `crate::wire` encodes;
//! these are plain serde types around them, after Spark's
//! `CoarseGrainedClusterMessages`.

use flint_rpc::{Ask, EndpointRef, Protocol};
use serde::{Deserialize, Serialize};

/// The driver's endpoint name.
pub(crate) const DRIVER_ENDPOINT: &str = "flint-driver";
/// An executor's endpoint name (in its own client-only environment).
pub(crate) const EXECUTOR_ENDPOINT: &str = "flint-executor";

/// Executor → driver.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DriverMsg {
    /// Ask: register; the answer is [`Registered`] or why not.
    Register(RegisterExecutor),
    /// Send: results of finished tasks, each an encoded `TaskResult`.
    Status(StatusUpdate),
    /// Send: one chunk of a result too large to go inline.
    ResultChunk(ResultChunk),
    /// Ask: the executor is alive.
    Heartbeat(Heartbeat),
    /// Ask: a broadcast's serialized value.
    FetchBroadcast(FetchBroadcast),
}

impl Protocol for DriverMsg {
    const NAME: &'static str = "flint.driver/1";
}

/// An executor introduces itself, proving which binary it runs.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RegisterExecutor {
    /// The id the master gave it (`{{EXECUTOR_ID}}`).
    pub executor_id: String,
    /// Its host.
    pub host: String,
    /// Its cores (task threads).
    pub cores: u32,
    /// SHA-256 of its own executable, lowercase hex.
    pub binary_sha256: String,
    /// Where the driver sends its tasks.
    pub endpoint: EndpointRef<ExecutorMsg>,
}

/// The driver accepted an executor.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Registered {
    /// The application.
    pub app_id: String,
    /// Bytes of cached partitions the executor may keep (`executor.memory`).
    pub memory: u64,
    /// How often to heartbeat, ms.
    pub heartbeat_ms: u64,
    /// Results above this many bytes go in chunks.
    pub inline_limit: u64,
    /// The application's shuffle settings (`shuffle.*`, `executor.memory`), which the
    /// executor applies over its own (`local.dir` stays the worker's).
    pub shuffle_conf: Vec<(String, String)>,
}

impl Ask for RegisterExecutor {
    type Reply = Result<Registered, String>;
}

/// Finished tasks' results (batched).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StatusUpdate {
    /// The executor.
    pub executor_id: String,
    /// Encoded `TaskResult`s.
    pub results: Vec<Vec<u8>>,
}

/// A piece of one large encoded `TaskResult`; the last piece completes it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResultChunk {
    /// The executor.
    pub executor_id: String,
    /// The task.
    pub task_id: u64,
    /// The whole result's size in bytes.
    pub total: u64,
    /// This chunk's bytes.
    pub bytes: Vec<u8>,
}

/// The executor is alive.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    /// The executor.
    pub executor_id: String,
    /// Tasks running there now.
    pub running: u32,
}

impl Ask for Heartbeat {
    /// False: the driver does not know this executor (it should exit).
    type Reply = bool;
}

/// A broadcast value.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FetchBroadcast {
    /// The broadcast's id.
    pub id: u64,
}

impl Ask for FetchBroadcast {
    type Reply = Result<Vec<u8>, String>;
}

macro_rules! into_msg {
    ($t:ident, $v:ident) => {
        impl From<$t> for DriverMsg {
            fn from(m: $t) -> Self {
                DriverMsg::$v(m)
            }
        }
    };
}
into_msg!(RegisterExecutor, Register);
into_msg!(StatusUpdate, Status);
into_msg!(ResultChunk, ResultChunk);
into_msg!(Heartbeat, Heartbeat);
into_msg!(FetchBroadcast, FetchBroadcast);

/// Driver → executor (all one-way).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ExecutorMsg {
    /// Encoded `TaskDescription`s to run.
    Launch(Vec<Vec<u8>>),
    /// Stop a task.
    Kill(u64),
    /// Drop a cached dataset's blocks.
    RemoveBlocks(u64),
    /// Exit.
    Stop(String),
    /// Delete a shuffle's map output files.
    RemoveShuffle(u64),
}

impl Protocol for ExecutorMsg {
    const NAME: &'static str = "flint.executor/1";
}
