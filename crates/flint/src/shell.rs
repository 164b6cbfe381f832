//! The driver's shell around the [`Scheduler`]: one thread that turns messages (jobs
//! submitted by user threads, task results, executor events, timers) into scheduler
//! events and carries out the effects — encoding launched tasks ([`TaskDescription`],
//! postcard) for an [`Executors`] transport, handing first results to the job's caller,
//! adding accumulator updates once per partition.
//!
//! The shell does not know where executors are: the local backend's [`Executors`] is a
//! task pool in this process (`crate::local`); the cluster backend's will send the same
//! bytes over flint-rpc and feed [`Backend::scheduler_event`] with the executors that
//! register, heartbeat and go away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dataset::Node;
use crate::entry::EntryPoint;
use crate::scheduler::{
    Effect, Event, FetchFailed, JobFailure, JobId, MapStatus, Scheduler, SchedulerConf, ShuffleId,
    ShuffleReport, StageId, StageSpec, TaskId,
};
use crate::shuffle::{BlockSource, MapOutputReport};
use crate::wire::{ShuffleMetrics, TaskDescription, TaskError, TaskOutcome, TaskResult};

/// The driver's accumulators, by id (weak: a dropped accumulator is no longer added to).
pub(crate) type Accumulators = Mutex<HashMap<u64, Weak<AtomicU64>>>;

/// What the tasks of one stage run: the plan of `node`'s partition, then `action`
/// (the job's action for the result stage, the shuffle writer for a map stage).
pub(crate) struct StageWork {
    pub node: Arc<Node>,
    pub action: EntryPoint,
    pub action_captures: Vec<u8>,
}

/// A job for the shell.
pub(crate) struct JobRequest {
    pub job: JobId,
    /// Its stages, parents first, the result stage last.
    pub stages: Vec<StageSpec>,
    /// What each stage runs, by stage id.
    pub work: HashMap<StageId, StageWork>,
    pub events: Sender<JobEvent>,
}

/// Tells the shell a shuffle is no longer reachable (its dependency was dropped).
#[derive(Clone)]
pub(crate) struct ShuffleCleaner(Option<Sender<Msg>>);

impl ShuffleCleaner {
    /// Shuffle `id`'s files can go.
    pub fn remove(&self, id: ShuffleId) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Msg::Scheduler(Event::ShuffleRemoved { shuffle: id }));
        }
    }
}

/// What a job's caller hears.
#[derive(Debug)]
pub(crate) enum JobEvent {
    /// The first successful output of a result partition.
    Result { partition: u32, bytes: Vec<u8> },
    /// Every partition succeeded.
    Succeeded,
    /// The job failed.
    Failed(JobFailure),
    /// The context stopped.
    Stopped,
}

/// Where launched tasks go: the executors as the shell sees them.
pub(crate) trait Executors: Send + 'static {
    /// Starts the encoded task on `executor`.
    fn launch(&mut self, executor: &str, task: Vec<u8>);
    /// Asks `executor` to stop task `task` (best effort).
    fn kill(&mut self, executor: &str, task: u64);
    /// Drops cached dataset `cache`'s blocks on `executor`.
    fn remove_blocks(&mut self, executor: &str, cache: u64);
    /// Stops `executor` (it timed out).
    fn kill_executor(&mut self, executor: &str, reason: &str);
    /// Deletes shuffle `shuffle`'s files everywhere.
    fn remove_shuffle(&mut self, shuffle: ShuffleId);
}

pub(crate) enum Msg {
    Submit(Box<JobRequest>),
    Cancel(JobId, String),
    TaskDone(Vec<u8>),
    Unpersist(u64),
    Scheduler(Event),
    Recorder(crate::ui::Recorder),
    Stop,
}

/// Where an [`Executors`] transport hands encoded task results.
#[derive(Clone)]
pub(crate) struct ResultSink(Sender<Msg>);

impl ResultSink {
    /// Hands an encoded task result to the shell; false when it has stopped.
    pub fn send(&self, result: Vec<u8>) -> bool {
        self.0.send(Msg::TaskDone(result)).is_ok()
    }

    /// Feeds the scheduler an executor event (cluster backend); false when stopped.
    pub fn scheduler_event(&self, event: Event) -> bool {
        self.0.send(Msg::Scheduler(event)).is_ok()
    }
}

/// A running shell: what a context talks to, whatever the executors are.
pub(crate) struct Backend {
    tx: Sender<Msg>,
    metrics: Arc<Mutex<ShuffleMetrics>>,
    shell: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    /// Starts the shell thread; `executors` makes the transport, given where results go.
    pub fn start<E: Executors>(
        conf: SchedulerConf,
        accumulators: Arc<Accumulators>,
        app_id: &str,
        executors: impl FnOnce(ResultSink) -> std::io::Result<E>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let executors = executors(ResultSink(tx.clone()))?;
        let metrics = Arc::new(Mutex::new(ShuffleMetrics::default()));
        let shell_metrics = metrics.clone();
        let span = tracing::info_span!("flint-driver", app = %app_id);
        let shell = std::thread::Builder::new()
            .name("flint-scheduler".into())
            .spawn(move || {
                let _g = span.enter();
                Shell {
                    sched: Scheduler::new(conf),
                    jobs: HashMap::new(),
                    map_tasks: HashMap::new(),
                    executors,
                    accumulators,
                    metrics: shell_metrics,
                    started: Instant::now(),
                    recorder: crate::ui::Recorder::default(),
                }
                .run(&rx)
            })?;
        Ok(Self {
            tx,
            metrics,
            shell: Mutex::new(Some(shell)),
        })
    }

    /// What the application's tasks did in shuffles so far.
    pub fn shuffle_metrics(&self) -> ShuffleMetrics {
        self.metrics.lock().map(|m| *m).unwrap_or_default()
    }

    /// A cleaner for shuffle dependencies of this shell's context.
    pub fn cleaner(&self) -> ShuffleCleaner {
        ShuffleCleaner(Some(self.tx.clone()))
    }

    /// A sink feeding this shell (for transports started after it).
    pub fn sink(&self) -> ResultSink {
        ResultSink(self.tx.clone())
    }

    /// Feeds the scheduler an executor event (added, lost, heartbeat).
    pub fn scheduler_event(&self, event: Event) {
        let _ = self.tx.send(Msg::Scheduler(event));
    }

    /// Records what the scheduler sees for the driver UI from now on.
    pub fn set_recorder(&self, recorder: crate::ui::Recorder) {
        let _ = self.tx.send(Msg::Recorder(recorder));
    }

    /// Submits a job; false when the backend has stopped.
    pub fn submit(&self, req: JobRequest) -> bool {
        self.tx.send(Msg::Submit(Box::new(req))).is_ok()
    }

    /// Cancels a job.
    pub fn cancel(&self, job: JobId, reason: String) {
        let _ = self.tx.send(Msg::Cancel(job, reason));
    }

    /// Drops a cached dataset's blocks.
    pub fn unpersist(&self, cache: u64) {
        let _ = self.tx.send(Msg::Unpersist(cache));
    }

    /// Stops the shell: running jobs end with [`JobEvent::Stopped`]. Task threads end
    /// when their current task does.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.shell.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

struct ShellJob {
    work: HashMap<StageId, StageWork>,
    events: Sender<JobEvent>,
}

struct Shell<E> {
    sched: Scheduler,
    jobs: HashMap<JobId, ShellJob>,
    /// The running tasks of shuffle map stages (their output is the blocks' sizes).
    map_tasks: HashMap<TaskId, JobId>,
    executors: E,
    accumulators: Arc<Accumulators>,
    metrics: Arc<Mutex<ShuffleMetrics>>,
    started: Instant,
    recorder: crate::ui::Recorder,
}

impl<E: Executors> Shell<E> {
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            let now = self.now();
            let msg = match self.sched.next_wakeup() {
                Some(at) if at <= now => Err(RecvTimeoutError::Timeout),
                Some(at) => rx.recv_timeout(Duration::from_millis(at - now)),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Submit(req)) => {
                    let req = *req;
                    self.jobs.insert(
                        req.job,
                        ShellJob {
                            work: req.work,
                            events: req.events,
                        },
                    );
                    self.event(
                        Event::SubmitJob {
                            job: req.job,
                            stages: req.stages,
                        },
                        None,
                    );
                }
                Ok(Msg::Cancel(job, reason)) => self.event(Event::CancelJob { job, reason }, None),
                Ok(Msg::Unpersist(cache)) => self.event(Event::CacheRemoved { cache }, None),
                Ok(Msg::Scheduler(event)) => self.event(event, None),
                Ok(Msg::Recorder(r)) => self.recorder = r,
                Ok(Msg::TaskDone(bytes)) => match postcard::from_bytes::<TaskResult>(&bytes) {
                    Ok(r) => {
                        let map_task = self.map_tasks.remove(&r.task_id).is_some();
                        if let Ok(mut m) = self.metrics.lock() {
                            m.add(&r.shuffle);
                        }
                        let (outcome, shuffle) = report(&r.outcome, map_task);
                        let event = Event::TaskEnded {
                            task: r.task_id,
                            outcome,
                            blocks_added: r.blocks_added.clone(),
                            blocks_evicted: r.blocks_evicted.clone(),
                            shuffle,
                        };
                        self.event(event, Some(r));
                    }
                    Err(e) => tracing::error!("a task result does not decode: {e}"),
                },
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => self.event(Event::Tick, None),
            }
        }
        for (_, job) in self.jobs.drain() {
            let _ = job.events.send(JobEvent::Stopped);
        }
    }

    fn event(&mut self, event: Event, mut result: Option<TaskResult>) {
        let now = self.now();
        self.recorder.event(&event);
        let effects = self.sched.handle(now, event);
        self.recorder.effects(&effects);
        for effect in effects {
            match effect {
                Effect::Launch(launches) => {
                    for l in launches {
                        let Some(work) = self.jobs.get(&l.job).and_then(|j| j.work.get(&l.stage))
                        else {
                            continue;
                        };
                        let sched = &self.sched;
                        let sources = |shuffle: ShuffleId, reduce: u32| {
                            block_sources(sched.map_outputs(shuffle), reduce)
                        };
                        let desc = TaskDescription {
                            task_id: l.task,
                            job_id: l.job,
                            stage_id: l.stage,
                            partition: l.partition,
                            attempt: l.attempt,
                            plan: work.node.plan(l.partition, &sources),
                            action: work.action,
                            action_captures: work.action_captures.clone(),
                        };
                        if self.sched.is_map_stage(l.job, l.stage) {
                            self.map_tasks.insert(l.task, l.job);
                        }
                        match postcard::to_allocvec(&desc) {
                            Ok(bytes) => self.executors.launch(&l.executor, bytes),
                            Err(e) => tracing::error!(task = l.task, "a task does not encode: {e}"),
                        }
                    }
                }
                Effect::TaskSucceeded {
                    job,
                    task,
                    partition,
                    first,
                    result: is_result,
                } => {
                    let Some(r) = result.as_mut().filter(|r| r.task_id == task) else {
                        continue;
                    };
                    if !first {
                        continue;
                    }
                    self.add_accumulators(&r.accumulators);
                    if is_result {
                        if let (Some(j), TaskOutcome::Success(bytes)) = (
                            self.jobs.get(&job),
                            std::mem::replace(&mut r.outcome, TaskOutcome::Success(Vec::new())),
                        ) {
                            let _ = j.events.send(JobEvent::Result { partition, bytes });
                        }
                    }
                }
                Effect::JobSucceeded(job) => {
                    self.map_tasks.retain(|_, j| *j != job);
                    if let Some(j) = self.jobs.remove(&job) {
                        let _ = j.events.send(JobEvent::Succeeded);
                    }
                }
                Effect::JobFailed(job, failure) => {
                    self.map_tasks.retain(|_, j| *j != job);
                    if let Some(j) = self.jobs.remove(&job) {
                        let _ = j.events.send(JobEvent::Failed(failure));
                    }
                }
                Effect::RemoveShuffle { shuffle } => self.executors.remove_shuffle(shuffle),
                Effect::KillTasks(tasks) => {
                    for (executor, task) in tasks {
                        self.executors.kill(&executor, task);
                    }
                }
                Effect::RemoveBlocks { executor, cache } => {
                    self.executors.remove_blocks(&executor, cache)
                }
                Effect::KillExecutor { executor, reason } => {
                    tracing::warn!(executor, "{reason}");
                    self.executors.kill_executor(&executor, &reason);
                }
                Effect::Warn(w) => tracing::warn!("{w}"),
            }
        }
    }

    fn add_accumulators(&self, updates: &[(u64, u64)]) {
        if updates.is_empty() {
            return;
        }
        if let Ok(map) = self.accumulators.lock() {
            for (id, v) in updates {
                if let Some(cell) = map.get(id).and_then(Weak::upgrade) {
                    cell.fetch_add(*v, Ordering::Relaxed);
                }
            }
        }
    }
}

/// What the scheduler hears of a task's outcome: its output's size or its error, and
/// for a map task its blocks' sizes (its output), for a fetch failure which output.
fn report(outcome: &TaskOutcome, map_task: bool) -> (Result<u64, String>, ShuffleReport) {
    match outcome {
        TaskOutcome::Success(b) if map_task => match postcard::from_bytes::<MapOutputReport>(b) {
            Ok(r) => (
                Ok(b.len() as u64),
                ShuffleReport::Written {
                    server: r.server,
                    blocks: r.blocks,
                },
            ),
            Err(e) => (
                Err(format!("a map task's output sizes do not decode: {e}")),
                ShuffleReport::None,
            ),
        },
        TaskOutcome::Success(b) => (Ok(b.len() as u64), ShuffleReport::None),
        TaskOutcome::Failed(
            e @ TaskError::FetchFailed {
                shuffle,
                map,
                executor,
                unreachable,
                reason,
            },
        ) => (
            Err(e.to_string()),
            ShuffleReport::FetchFailed(FetchFailed {
                shuffle: *shuffle,
                map: *map,
                executor: executor.clone(),
                unreachable: *unreachable,
                reason: reason.clone(),
            }),
        ),
        TaskOutcome::Failed(e) => (Err(e.to_string()), ShuffleReport::None),
    }
}

/// Where a reduce task finds each map output: from the tracker's statuses.
fn block_sources(outputs: Option<&[Option<MapStatus>]>, reduce: u32) -> Vec<BlockSource> {
    outputs
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(m, o)| BlockSource {
            map: m as u32,
            executor: o.as_ref().map(|s| s.executor.clone()),
            server: o.as_ref().map(|s| s.server.clone()).unwrap_or_default(),
            meta: o
                .as_ref()
                .and_then(|s| s.blocks.get(reduce as usize).copied())
                .unwrap_or_default(),
        })
        .collect()
}
