//! The local backend: one in-process executor (id `driver`) with N task threads, and a
//! shell thread that feeds the [`Scheduler`] events and carries out its effects.
//!
//! Tasks take the same path as on a cluster: the shell encodes each launched task
//! ([`TaskDescription`], postcard), a task thread runs [`run_task`] on the bytes and
//! sends back the encoded [`TaskResult`], and the shell decodes it. Only the transport
//! (a channel instead of flint-rpc) differs, so what works locally works on a cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dataset::Node;
use crate::entry::EntryPoint;
use crate::executor::{ExecutorEnv, TaskPool};
use crate::scheduler::{Effect, Event, JobFailure, JobId, Scheduler, SchedulerConf, StageSpec};
use crate::wire::{TaskDescription, TaskOutcome, TaskResult};

/// The driver's accumulators, by id (weak: a dropped accumulator is no longer added to).
pub(crate) type Accumulators = Mutex<HashMap<u64, Weak<AtomicU64>>>;

/// A job for the shell.
pub(crate) struct JobRequest {
    pub job: JobId,
    pub stages: Vec<StageSpec>,
    pub node: Arc<Node>,
    pub action: EntryPoint,
    pub action_captures: Vec<u8>,
    pub events: Sender<JobEvent>,
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

enum Msg {
    Submit(Box<JobRequest>),
    Cancel(JobId, String),
    TaskDone(Vec<u8>),
    Unpersist(u64),
    Stop,
}

/// The local backend of a context.
pub(crate) struct LocalBackend {
    tx: Sender<Msg>,
    shell: Mutex<Option<JoinHandle<()>>>,
    #[cfg_attr(not(test), allow(dead_code))]
    env: Arc<ExecutorEnv>,
}

impl LocalBackend {
    /// Starts the shell and `threads` task threads.
    pub fn start(
        threads: u32,
        conf: SchedulerConf,
        env: Arc<ExecutorEnv>,
        accumulators: Arc<Accumulators>,
        app_id: &str,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let done = tx.clone();
        let pool = TaskPool::start(
            threads,
            env.clone(),
            Arc::new(move |result| done.send(Msg::TaskDone(result)).is_ok()),
        )?;
        let mut sched = Scheduler::new(conf);
        sched.handle(
            0,
            Event::ExecutorAdded {
                id: env.id.clone(),
                host: "localhost".into(),
                cores: threads,
            },
        );
        let shell_env = env.clone();
        let span = tracing::info_span!("flint-local", app = %app_id);
        let shell = std::thread::Builder::new()
            .name("flint-scheduler".into())
            .spawn(move || {
                let _g = span.enter();
                Shell {
                    sched,
                    jobs: HashMap::new(),
                    pool,
                    env: shell_env,
                    accumulators,
                    started: Instant::now(),
                }
                .run(&rx)
            })?;
        Ok(Self {
            tx,
            shell: Mutex::new(Some(shell)),
            env,
        })
    }

    /// The in-process executor's environment.
    #[cfg(test)]
    pub fn env(&self) -> &Arc<ExecutorEnv> {
        &self.env
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
    node: Arc<Node>,
    action: EntryPoint,
    action_captures: Vec<u8>,
    events: Sender<JobEvent>,
}

struct Shell {
    sched: Scheduler,
    jobs: HashMap<JobId, ShellJob>,
    pool: TaskPool,
    env: Arc<ExecutorEnv>,
    accumulators: Arc<Accumulators>,
    started: Instant,
}

impl Shell {
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
                            node: req.node,
                            action: req.action,
                            action_captures: req.action_captures,
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
                Ok(Msg::TaskDone(bytes)) => match postcard::from_bytes::<TaskResult>(&bytes) {
                    Ok(r) => {
                        let event = Event::TaskEnded {
                            task: r.task_id,
                            outcome: match &r.outcome {
                                TaskOutcome::Success(b) => Ok(b.len() as u64),
                                TaskOutcome::Failed(e) => Err(e.to_string()),
                            },
                            blocks_added: r.blocks_added.clone(),
                            blocks_evicted: r.blocks_evicted.clone(),
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
        for effect in self.sched.handle(now, event) {
            match effect {
                Effect::Launch(launches) => {
                    for l in launches {
                        let Some(job) = self.jobs.get(&l.job) else {
                            continue;
                        };
                        let desc = TaskDescription {
                            task_id: l.task,
                            job_id: l.job,
                            stage_id: l.stage,
                            partition: l.partition,
                            attempt: l.attempt,
                            plan: job.node.plan(l.partition),
                            action: job.action,
                            action_captures: job.action_captures.clone(),
                        };
                        match postcard::to_allocvec(&desc) {
                            Ok(bytes) => {
                                self.pool.submit(bytes);
                            }
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
                    if let Some(j) = self.jobs.remove(&job) {
                        let _ = j.events.send(JobEvent::Succeeded);
                    }
                }
                Effect::JobFailed(job, failure) => {
                    if let Some(j) = self.jobs.remove(&job) {
                        let _ = j.events.send(JobEvent::Failed(failure));
                    }
                }
                Effect::KillTasks(tasks) => {
                    // A running task stops at its next element; a queued one runs (its
                    // result is ignored). Either way its core is freed when it ends.
                    for (_, task) in tasks {
                        self.env.kill(task);
                    }
                }
                Effect::RemoveBlocks { cache, .. } => self.env.remove_cache(cache),
                Effect::KillExecutor { executor, reason } => {
                    tracing::error!(
                        executor,
                        "{reason}; the in-process executor cannot be replaced"
                    );
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
