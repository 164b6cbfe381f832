//! The executor side: a plain task runner. [`run_task`] takes a task's bytes and an
//! executor's environment and returns the result's bytes; the local backend calls it on
//! its task threads now, the executor process will call it on its pool later.
//!
//! The environment holds what outlives a task: the block cache (cached partitions,
//! serialized, within `executor.memory`) and the broadcast cache (values fetched from
//! the driver once). A task runs with a thread-local [`TaskContext`] so that broadcasts
//! and accumulators decoded from its captures find their executor and task. A panic in
//! the task's code fails that task only.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::block_cache::BlockCache;
use crate::entry::{self, ErasedPartition};
use crate::ops::ActionOutput;
use crate::shared::{BroadcastCache, BroadcastSource};
use crate::wire::{
    decode, BlockId, PlanNode, TaskDescription, TaskError, TaskHeader, TaskOutcome, TaskResult,
};

/// What outlives a task on one executor.
pub(crate) struct ExecutorEnv {
    /// The executor's id ("driver" for the local backend's in-process executor).
    pub id: String,
    /// Cached partitions.
    pub cache: Mutex<BlockCache>,
    /// Broadcast values.
    pub broadcasts: BroadcastCache,
    /// Partitions computed because they were not cached (for tests and metrics).
    pub cache_misses: AtomicU64,
}

impl ExecutorEnv {
    pub fn new(id: &str, memory: u64, broadcasts: Arc<dyn BroadcastSource>) -> Self {
        Self {
            id: id.to_string(),
            cache: Mutex::new(BlockCache::new(memory)),
            broadcasts: BroadcastCache::new(broadcasts),
            cache_misses: AtomicU64::new(0),
        }
    }

    /// Drops every cached block of dataset `cache`.
    pub fn remove_cache(&self, cache: u64) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove_cache(cache);
        }
    }
}

/// The task running on this thread.
pub(crate) struct TaskContext {
    pub env: Arc<ExecutorEnv>,
    pub partition: u32,
    pub task_id: u64,
    accumulators: RefCell<BTreeMap<u64, Arc<AtomicU64>>>,
}

impl TaskContext {
    /// This task's counter of accumulator `id`.
    pub fn accumulator(&self, id: u64) -> Arc<AtomicU64> {
        self.accumulators
            .borrow_mut()
            .entry(id)
            .or_default()
            .clone()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<TaskContext>>> = const { RefCell::new(None) };
}

/// Runs `f` with the current task's context, or returns `None` outside a task.
pub(crate) fn with_task<R>(f: impl FnOnce(&TaskContext) -> R) -> Option<R> {
    let ctx = CURRENT.with(|c| c.borrow().clone())?;
    Some(f(&ctx))
}

/// Clears the thread's task context when the task ends, panic or not.
struct Current;
impl Drop for Current {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Blocks touched while a task ran.
#[derive(Default)]
struct Blocks {
    added: Vec<BlockId>,
    evicted: Vec<BlockId>,
}

fn eval(
    node: &PlanNode,
    env: &ExecutorEnv,
    blocks: &mut Blocks,
) -> Result<ErasedPartition, TaskError> {
    match node {
        PlanNode::Op {
            entry,
            captures,
            inputs,
        } => {
            let mut parts = Vec::with_capacity(inputs.len());
            for i in inputs {
                parts.push(eval(i, env, blocks)?);
            }
            entry::call(*entry, captures, parts)
        }
        PlanNode::Cached {
            block,
            encode,
            decode,
            input,
        } => {
            let hit = env.cache.lock().ok().and_then(|mut c| c.get(block));
            if let Some(bytes) = hit {
                return entry::call(*decode, &bytes, vec![]);
            }
            env.cache_misses.fetch_add(1, Ordering::Relaxed);
            let part = eval(input, env, blocks)?;
            let out = entry::call(*encode, &[], vec![part])?;
            let bytes = Arc::new(ActionOutput::take(out)?);
            if let Ok(mut c) = env.cache.lock() {
                let put = c.put(*block, bytes.clone());
                if put.stored {
                    blocks.added.push(*block);
                }
                blocks.evicted.extend(put.evicted);
            }
            entry::call(*decode, &bytes, vec![])
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Runs one task and returns its encoded [`TaskResult`]. Never panics because of the
/// task: undecodable bytes, a refused entry point and a panic in the task's code all
/// become a failed result.
pub(crate) fn run_task(task: &[u8], env: &Arc<ExecutorEnv>) -> Vec<u8> {
    let result = run_decoded(task, env);
    match postcard::to_allocvec(&result) {
        Ok(b) => b,
        Err(e) => {
            let failed = TaskResult {
                task_id: result.task_id,
                outcome: TaskOutcome::Failed(TaskError::Codec(format!("task result: {e}"))),
                accumulators: vec![],
                blocks_added: result.blocks_added,
                blocks_evicted: result.blocks_evicted,
            };
            // A result of plain integers, strings and ids always encodes.
            postcard::to_allocvec(&failed).unwrap_or_default()
        }
    }
}

fn failed(task_id: u64, e: TaskError) -> TaskResult {
    TaskResult {
        task_id,
        outcome: TaskOutcome::Failed(e),
        accumulators: vec![],
        blocks_added: vec![],
        blocks_evicted: vec![],
    }
}

fn run_decoded(task: &[u8], env: &Arc<ExecutorEnv>) -> TaskResult {
    let task_id = match postcard::take_from_bytes::<TaskHeader>(task) {
        Ok((h, _)) => h.task_id,
        Err(e) => return failed(u64::MAX, TaskError::Codec(format!("task header: {e}"))),
    };
    let desc: TaskDescription = match decode(task) {
        Ok(d) => d,
        Err(e) => return failed(task_id, e),
    };
    let ctx = Rc::new(TaskContext {
        env: env.clone(),
        partition: desc.partition,
        task_id,
        accumulators: RefCell::new(BTreeMap::new()),
    });
    CURRENT.with(|c| *c.borrow_mut() = Some(ctx.clone()));
    let _clear = Current;
    let mut blocks = Blocks::default();
    let ran = catch_unwind(AssertUnwindSafe(|| {
        let part = eval(&desc.plan, env, &mut blocks)?;
        let out = entry::call(desc.action, &desc.action_captures, vec![part])?;
        ActionOutput::take(out)
    }));
    let outcome = match ran {
        Ok(Ok(bytes)) => TaskOutcome::Success(bytes),
        Ok(Err(e)) => TaskOutcome::Failed(e),
        Err(p) => TaskOutcome::Failed(TaskError::Panic(panic_message(&*p))),
    };
    let accumulators = match outcome {
        TaskOutcome::Success(_) => ctx
            .accumulators
            .borrow()
            .iter()
            .map(|(id, v)| (*id, v.load(Ordering::Relaxed)))
            .filter(|(_, v)| *v != 0)
            .collect(),
        TaskOutcome::Failed(_) => vec![],
    };
    TaskResult {
        task_id,
        outcome,
        accumulators,
        blocks_added: blocks.added,
        blocks_evicted: blocks.evicted,
    }
}
