//! The executor side: a plain task runner. [`run_task`] takes a task's bytes and an
//! executor's environment and returns the result's bytes; the local backend calls it on
//! its task threads now, the executor process will call it on its pool later.
//!
//! The environment holds what outlives a task: the block cache (cached partitions,
//! serialized, within `executor.memory`) and the broadcast cache (values fetched from
//! the driver once). A task runs with a thread-local [`TaskContext`] so that broadcasts
//! and accumulators decoded from its captures find their executor and task. A panic in
//! the task's code fails that task only. [`TaskPool`] runs tasks on threads sized to
//! the executor's cores (never on an async runtime: tasks block). A killed task stops at
//! its next element with [`TaskError::Killed`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use std::sync::OnceLock;

use flint_rpc::RpcEnv;
use flint_shuffle::{Layout, ShuffleConf};

use crate::block_cache::BlockCache;
use crate::entry::{self, unerase, ErasedPartition, Partition};
use crate::ops::ActionOutput;
use crate::shared::{BroadcastCache, BroadcastSource};
use crate::wire::{
    decode, BlockId, PlanNode, ShuffleMetrics, TaskDescription, TaskError, TaskHeader, TaskOutcome,
    TaskResult,
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
    /// The kill flags of the tasks running now.
    running: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    /// Where this executor's shuffle files are and how it fetches others' (set once
    /// the application's id is known).
    shuffle: OnceLock<ShuffleEnv>,
    /// Wakes tasks waiting for [`Self::shuffle`]: the driver may launch tasks the
    /// moment it registered this executor, before the registration's answer has been
    /// turned into the shuffle side here.
    shuffle_set: (Mutex<()>, std::sync::Condvar),
}

/// How long a task waits for the executor's shuffle side to be set up.
const SHUFFLE_SETUP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// An executor's shuffle side: settings, its files, where others fetch them from.
pub(crate) struct ShuffleEnv {
    /// The shuffle settings (`local.dir`, `shuffle.*`).
    pub conf: ShuffleConf,
    /// This application's shuffle files under `local.dir`.
    pub layout: Layout,
    /// The address reduce tasks fetch this executor's map outputs from: its own
    /// RPC server, or its worker's shuffle service; `local` in-process.
    pub server: String,
    /// The RPC environment and runtime remote fetches run on (cluster executors).
    pub remote: Option<(tokio::runtime::Handle, RpcEnv)>,
}

impl ExecutorEnv {
    pub fn new(id: &str, memory: u64, broadcasts: Arc<dyn BroadcastSource>) -> Self {
        Self {
            shuffle: OnceLock::new(),
            shuffle_set: (Mutex::new(()), std::sync::Condvar::new()),
            id: id.to_string(),
            cache: Mutex::new(BlockCache::new(memory)),
            broadcasts: BroadcastCache::new(broadcasts),
            cache_misses: AtomicU64::new(0),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Asks task `task_id` to stop if it is running here (it stops at its next element).
    pub fn kill(&self, task_id: u64) {
        if let Some(f) = self
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&task_id).cloned())
        {
            f.store(true, Ordering::Relaxed);
        }
    }

    /// How many tasks are running here.
    #[cfg(test)]
    pub fn running_tasks(&self) -> usize {
        self.running.lock().map_or(0, |r| r.len())
    }

    fn register(&self, task_id: u64) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut r) = self.running.lock() {
            r.insert(task_id, flag.clone());
        }
        flag
    }

    fn unregister(&self, task_id: u64) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&task_id);
        }
    }

    /// Sets the shuffle side (once; later calls are ignored) and wakes the tasks
    /// waiting for it.
    pub fn set_shuffle(&self, s: ShuffleEnv) {
        let _ = self.shuffle.set(s);
        let (lock, cv) = &self.shuffle_set;
        let _g = lock.lock();
        cv.notify_all();
    }

    /// The shuffle side; a task that arrived before it was set up (the driver's first
    /// tasks can overtake the registration's answer) waits for it, at most
    /// [`SHUFFLE_SETUP_WAIT`].
    pub fn shuffle(&self) -> Result<&ShuffleEnv, TaskError> {
        if let Some(s) = self.shuffle.get() {
            return Ok(s);
        }
        let deadline = std::time::Instant::now() + SHUFFLE_SETUP_WAIT;
        let (lock, cv) = &self.shuffle_set;
        let mut g = lock.lock().map_err(|_| {
            TaskError::Io(format!(
                "executor {}: shuffle set-up lock poisoned",
                self.id
            ))
        })?;
        loop {
            if let Some(s) = self.shuffle.get() {
                return Ok(s);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(TaskError::Io(format!(
                    "executor {} has no shuffle directory set up after {}s",
                    self.id,
                    SHUFFLE_SETUP_WAIT.as_secs()
                )));
            }
            g = match cv.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(_) => {
                    return Err(TaskError::Io(format!(
                        "executor {}: shuffle set-up lock poisoned",
                        self.id
                    )))
                }
            };
        }
    }

    /// Deletes shuffle `id`'s files here.
    pub fn remove_shuffle(&self, id: u64) {
        if let (Some(s), Ok(id)) = (self.shuffle.get(), u32::try_from(id)) {
            if let Err(e) = s.layout.remove_shuffle(id) {
                tracing::warn!(executor = %self.id, "removing shuffle {id}: {e}");
            }
        }
    }

    /// Deletes every shuffle file of the application here (it ended).
    pub fn remove_all_shuffles(&self) {
        if let Some(s) = self.shuffle.get() {
            if let Err(e) = s.layout.remove_app() {
                tracing::warn!(executor = %self.id, "removing the application's shuffle files: {e}");
            }
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
    /// What this task did in shuffles.
    pub metrics: RefCell<ShuffleMetrics>,
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

/// The panic payload that unwinds a killed task (through `resume_unwind`, so the panic
/// hook stays quiet).
struct Killed;

/// Unwinds out of the task (caught as a kill) when its kill flag is set: checked per
/// element of the partition an action consumes ([`Partition::with_kill_flag`]).
#[inline]
pub(crate) fn unwind_if_killed(flag: &AtomicBool) {
    if flag.load(Ordering::Relaxed) {
        killed();
    }
}

#[cold]
fn killed() {
    std::panic::resume_unwind(Box::new(Killed));
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
                shuffle: result.shuffle,
            };
            // A result of plain integers, strings and ids always encodes.
            postcard::to_allocvec(&failed).unwrap_or_default()
        }
    }
}

/// A partition with the kill flag of its task. The runner cannot wrap the iterator
/// itself (it does not know the element type); the action's entry, which does, unwraps
/// it with [`action_input`].
pub(crate) struct KillFlag {
    part: ErasedPartition,
    flag: Arc<AtomicBool>,
}

/// The action's input: a plain partition, or one carrying its task's kill flag.
pub(crate) fn action_input<T: 'static>(
    mut inputs: Vec<ErasedPartition>,
) -> Result<Partition<T>, TaskError> {
    if inputs.len() != 1 {
        return Err(TaskError::Entry(format!(
            "an action takes one input partition, got {}",
            inputs.len()
        )));
    }
    let Some(input) = inputs.pop() else {
        return Err(TaskError::Entry("no input partition".into()));
    };
    match input.downcast::<KillFlag>() {
        Ok(k) => {
            let inner = unerase::<T>(k.part)?;
            Ok(inner.with_kill_flag(k.flag))
        }
        Err(plain) => unerase::<T>(plain),
    }
}

fn failed(task_id: u64, e: TaskError) -> TaskResult {
    TaskResult {
        task_id,
        outcome: TaskOutcome::Failed(e),
        accumulators: vec![],
        blocks_added: vec![],
        blocks_evicted: vec![],
        shuffle: ShuffleMetrics::default(),
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
        metrics: RefCell::new(ShuffleMetrics::default()),
    });
    CURRENT.with(|c| *c.borrow_mut() = Some(ctx.clone()));
    let _clear = Current;
    let mut blocks = Blocks::default();
    let flag = env.register(task_id);
    let ran = catch_unwind(AssertUnwindSafe(|| {
        let part = eval(&desc.plan, env, &mut blocks)?;
        let part: ErasedPartition = Box::new(KillFlag { part, flag });
        let out = entry::call(desc.action, &desc.action_captures, vec![part])?;
        ActionOutput::take(out)
    }));
    env.unregister(task_id);
    let outcome = match ran {
        Ok(Ok(bytes)) => TaskOutcome::Success(bytes),
        Ok(Err(e)) => TaskOutcome::Failed(e),
        Err(p) if p.is::<Killed>() => TaskOutcome::Failed(TaskError::Killed),
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
    let shuffle = *ctx.metrics.borrow();
    TaskResult {
        task_id,
        outcome,
        accumulators,
        blocks_added: blocks.added,
        blocks_evicted: blocks.evicted,
        shuffle,
    }
}

/// Task threads sized to an executor's cores: [`run_task`] on each submitted task, the
/// result handed to `on_result` on the same thread. Threads end when the pool is
/// dropped (after their current task) or when `on_result` returns false.
pub(crate) struct TaskPool {
    tx: Sender<Vec<u8>>,
}

impl TaskPool {
    /// Starts `cores` threads named `flint-task-N`.
    pub fn start(
        cores: u32,
        env: Arc<ExecutorEnv>,
        on_result: Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..cores {
            let (rx, env, on_result) = (rx.clone(), env.clone(), on_result.clone());
            std::thread::Builder::new()
                .name(format!("flint-task-{i}"))
                .spawn(move || task_thread(&rx, &env, &*on_result))?;
        }
        Ok(Self { tx })
    }

    /// Queues a task; false when every thread has ended.
    pub fn submit(&self, task: Vec<u8>) -> bool {
        self.tx.send(task).is_ok()
    }
}

fn task_thread(
    rx: &Mutex<Receiver<Vec<u8>>>,
    env: &Arc<ExecutorEnv>,
    on_result: &(dyn Fn(Vec<u8>) -> bool + Send + Sync),
) {
    loop {
        let task = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(task) = task else {
            return; // the pool was dropped
        };
        if !on_result(run_task(&task, env)) {
            return;
        }
    }
}
