//! What travels between the driver and an executor: a task (which partition of which
//! stage, the plan of the stage's nodes for that partition as entry points and
//! captures, and the action to run on it) and its result (the action's serialized
//! output, accumulator updates, cache blocks added and evicted).
//!
//! These are plain serde types encoded with postcard, the same in `local` (the task
//! is encoded and decoded in this process) and on a cluster (the next session sends
//! the same bytes over flint-rpc). Only append enum variants.

use serde::{Deserialize, Serialize};

use crate::entry::EntryPoint;

/// A cached partition: which cached dataset, which partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct BlockId {
    /// The cache id of the dataset (one per `cache()` call).
    pub cache: u64,
    /// The partition.
    pub partition: u32,
}

/// How one partition of a node is computed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum PlanNode {
    /// Run `entry` with `captures` on the partitions `inputs` compute.
    Op {
        /// The operation.
        entry: EntryPoint,
        /// Its serialized captures (a source's data, a `_with` value, ...).
        captures: Vec<u8>,
        /// The input partitions, computed first.
        inputs: Vec<PlanNode>,
    },
    /// A cached partition: read `block` from the executor's block cache (`decode`), or
    /// compute `input`, serialize it (`encode`), keep it and decode it.
    Cached {
        /// The block.
        block: BlockId,
        /// Serializes the computed partition.
        encode: EntryPoint,
        /// Decodes the serialized partition.
        decode: EntryPoint,
        /// How to compute it when it is not cached.
        input: Box<PlanNode>,
    },
}

/// A task: one partition of one stage, one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskDescription {
    /// Unique in the application; first, so [`TaskHeader`] can read it alone.
    pub task_id: u64,
    /// The job.
    pub job_id: u64,
    /// The stage.
    pub stage_id: u64,
    /// The partition.
    pub partition: u32,
    /// 0 for the first attempt of this partition, then 1, 2, ...
    pub attempt: u32,
    /// The stage's nodes for this partition.
    pub plan: PlanNode,
    /// The action run on the partition the plan computes.
    pub action: EntryPoint,
    /// The action's captures.
    pub action_captures: Vec<u8>,
}

/// The first field of a [`TaskDescription`], readable even when the rest is not.
#[derive(Debug, Deserialize)]
pub(crate) struct TaskHeader {
    /// The task's id.
    pub task_id: u64,
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum TaskError {
    /// An entry point or its inputs did not match (different binaries, a forged task).
    #[error("{0}")]
    Entry(String),
    /// Captures, a cached block or the task could not be decoded or encoded.
    #[error("serialization failed: {0}")]
    Codec(String),
    /// The task's code panicked.
    #[error("task panicked: {0}")]
    Panic(String),
    /// An I/O error (reading input, writing output).
    #[error("{0}")]
    Io(String),
    /// The driver killed the task (its job ended).
    #[error("task killed: its job ended")]
    Killed,
    /// A reduce task could not read a map output (its executor gone, its file
    /// missing, a checksum mismatch): the map task runs again.
    #[error("fetch failed: shuffle {shuffle}, map {map} at executor {executor}: {reason}")]
    FetchFailed {
        /// The shuffle.
        shuffle: u64,
        /// The map partition.
        map: u32,
        /// The executor the output was registered at.
        executor: String,
        /// Whether the server holding it could not be reached (everything it holds is
        /// lost), rather than this one output being unreadable (missing, corrupt).
        unreachable: bool,
        /// What went wrong.
        reason: String,
    },
}

/// How a task ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum TaskOutcome {
    /// The action's serialized output for this partition.
    Success(Vec<u8>),
    /// The error.
    Failed(TaskError),
}

/// A task's result, sent back to the driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskResult {
    /// The task.
    pub task_id: u64,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// Accumulator updates `(accumulator id, amount)` of a successful task.
    pub accumulators: Vec<(u64, u64)>,
    /// Blocks this task put in the executor's cache.
    pub blocks_added: Vec<BlockId>,
    /// Blocks evicted from the executor's cache while this task ran.
    pub blocks_evicted: Vec<BlockId>,
    /// What it did in shuffles.
    pub shuffle: ShuffleMetrics,
}

/// What tasks did in shuffles, summed over an application's tasks by
/// [`Context::shuffle_metrics`](crate::Context::shuffle_metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuffleMetrics {
    /// Map outputs written.
    pub map_outputs: u64,
    /// Records written by map tasks (after map-side combining).
    pub records_written: u64,
    /// Bytes of map output written (compressed).
    pub bytes_written: u64,
    /// Sorted runs spilled to disk (map and reduce side), beyond the memory budget.
    pub spills: u64,
    /// Bytes spilled.
    pub bytes_spilled: u64,
    /// Blocks read by reduce tasks.
    pub blocks_read: u64,
    /// Bytes of blocks read.
    pub bytes_read: u64,
    /// Of those, bytes fetched from another process.
    pub remote_bytes_read: u64,
}

impl ShuffleMetrics {
    /// Adds `o` to these.
    pub(crate) fn add(&mut self, o: &ShuffleMetrics) {
        self.map_outputs += o.map_outputs;
        self.records_written += o.records_written;
        self.bytes_written += o.bytes_written;
        self.spills += o.spills;
        self.bytes_spilled += o.bytes_spilled;
        self.blocks_read += o.blocks_read;
        self.bytes_read += o.bytes_read;
        self.remote_bytes_read += o.remote_bytes_read;
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, TaskError> {
    postcard::to_allocvec(v)
        .map_err(|e| TaskError::Codec(format!("{}: {e}", std::any::type_name::<T>())))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, TaskError> {
    postcard::from_bytes(b)
        .map_err(|e| TaskError::Codec(format!("{}: {e}", std::any::type_name::<T>())))
}
