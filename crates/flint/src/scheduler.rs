//! The driver's scheduler as a pure state machine: state + [`Event`] (with the time
//! passed in) → [`Effect`]s. No sockets, no threads, no clock: the local backend's shell
//! (and the cluster backend's, next) feeds it events and carries out its effects.
//!
//! Modelled on Spark's `DAGScheduler` and `TaskSchedulerImpl`:
//! - a job is a DAG of stages (one stage until the shuffle arrives; a stage runs once
//!   its parents are complete), a stage's partitions are its tasks;
//! - executors are slots with an id, a host and cores; free cores are offered to task
//!   sets in FIFO order of jobs, round-robin over executors, and every launch decided by
//!   one event leaves in one batched [`Effect::Launch`];
//! - **cache locality**: a task that reads a cached partition prefers an executor that
//!   holds it, and waits up to `locality.wait` (since the stage last launched a task
//!   where it preferred) before it runs elsewhere, as Spark's delay scheduling does;
//! - a failed task is retried until `task.max_failures` attempts of that partition
//!   failed, then the job fails with every attempt's error, naming stage and partition;
//!   a retry avoids the executor its last attempt failed on (a full disk, a broken
//!   library) for up to `locality.wait` while another executor is registered, then
//!   runs wherever cores are free;
//! - a lost executor's running tasks count as failed attempts and run again elsewhere,
//!   and the blocks it held are forgotten (recomputed from lineage where needed);
//! - results and status of tasks the scheduler no longer waits for (a lost executor's,
//!   a finished or failed job's) are ignored; only the first success of a partition is
//!   reported as first, so its output is used and its accumulator updates counted once;
//! - the results a job sends to the driver are limited by `driver.max_result_size`;
//! - **shuffles**: a job's stages are shuffle map stages (each writes one shuffle's
//!   map outputs) and a result stage; the scheduler is the driver's map output
//!   tracker (`MapStatus`: where each map output lives and its blocks' sizes, kept
//!   across jobs), so a map stage whose outputs are all available is skipped and a
//!   stage whose parents' outputs are complete runs only its missing partitions;
//! - a **fetch failure** (a reduce task could not read a map output) is not a task
//!   failure: the output is unregistered (every output of that executor, or of that
//!   host when the shuffle service serves them), the lost map tasks run again, then
//!   the reduce stage; `stage.max_consecutive_attempts` fetch-failed attempts of one
//!   stage in a row fail the job with each attempt's reason (Spark's default 4); a
//!   losing executor's outputs are lost without the shuffle service, kept with it; a
//!   lost host (worker) loses its outputs either way;
//! - an executor silent (no heartbeat, no status) for the executor timeout is lost,
//!   as Spark's `HeartbeatReceiver` decides (`network.timeout`; 0 for the local
//!   backend's in-process executor, which cannot go silent);
//! - while no task has ever launched, a warning repeats every `starvation.timeout`:
//!   "Initial job has not accepted any resources; check that workers are registered
//!   and have sufficient resources".

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flint_shuffle::BlockMeta;

use crate::wire::BlockId;

/// A job's id.
pub(crate) type JobId = u64;
/// A stage's id, unique in the application.
pub(crate) type StageId = u64;
/// A task's id, unique in the application (every attempt has its own).
pub(crate) type TaskId = u64;
/// A shuffle's id, unique in the application.
pub(crate) type ShuffleId = u64;

/// Spark's starvation warning.
pub(crate) const NO_RESOURCES_WARNING: &str = "Initial job has not accepted any resources; check that workers are registered and have sufficient resources";

/// The scheduler's settings.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerConf {
    /// `task.max_failures`: failed attempts of one partition that fail its job.
    pub max_failures: u32,
    /// `locality.wait` in milliseconds.
    pub locality_wait_ms: u64,
    /// `starvation.timeout` in milliseconds.
    pub starvation_timeout_ms: u64,
    /// `driver.max_result_size` in bytes; 0 is unlimited.
    pub max_result_size: u64,
    /// An executor not heard from for this long is lost (`network.timeout`); 0: never.
    pub executor_timeout_ms: u64,
    /// `shuffle.service.enabled`: map outputs outlive their executor (served by its
    /// worker's shuffle service).
    pub shuffle_service: bool,
    /// `stage.max_consecutive_attempts`: fetch-failed attempts of one stage in a row
    /// that fail its job.
    pub max_stage_attempts: u32,
}

/// Where one map output lives and its blocks (one per reduce partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapStatus {
    /// The executor that wrote it.
    pub executor: String,
    /// That executor's host.
    pub host: String,
    /// Where reduce tasks fetch it (the executor's server or its worker's shuffle
    /// service; `local` in-process).
    pub server: String,
    /// Its blocks (length, checksum, records), by reduce partition.
    pub blocks: Vec<BlockMeta>,
    /// The task that wrote it: a fetch failure of a task launched before it was
    /// registered is about an older output and does not unregister it.
    pub writer: TaskId,
}

/// A reduce task could not read a map output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchFailed {
    /// The shuffle.
    pub shuffle: ShuffleId,
    /// The map output's partition.
    pub map: u32,
    /// The executor the output was registered at.
    pub executor: String,
    /// The server holding it could not be reached: every output it serves is lost
    /// (else only this one, found missing or corrupt).
    pub unreachable: bool,
    /// What went wrong.
    pub reason: String,
}

/// What a task tells the scheduler about a shuffle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum ShuffleReport {
    /// Nothing (not a shuffle task, or it failed otherwise).
    #[default]
    None,
    /// A map task wrote its output: where it is served and its blocks.
    Written {
        /// Where reduce tasks fetch it.
        server: String,
        /// Its blocks, by reduce partition.
        blocks: Vec<BlockMeta>,
    },
    /// A reduce task could not fetch a map output.
    FetchFailed(FetchFailed),
}

/// A stage of a submitted job.
#[derive(Debug, Clone)]
pub(crate) struct StageSpec {
    /// Its id.
    pub id: StageId,
    /// Stages that must complete first.
    pub parents: Vec<StageId>,
    /// The partitions to compute.
    pub partitions: Vec<u32>,
    /// For each entry of `partitions`, the cached blocks its task reads.
    pub blocks: Vec<Vec<BlockId>>,
    /// A shuffle map stage writes this shuffle (its partitions are all the map
    /// partitions, `0..n`); `None` for the result stage.
    pub shuffle: Option<ShuffleId>,
}

/// Something that happened.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A job: its stages, the last being the result stage.
    SubmitJob {
        /// The job's id.
        job: JobId,
        /// Its stages.
        stages: Vec<StageSpec>,
    },
    /// Stop a job (the driver gave up on it).
    CancelJob {
        /// The job.
        job: JobId,
        /// Why.
        reason: String,
    },
    /// An executor can run tasks.
    ExecutorAdded {
        /// Its id.
        id: String,
        /// Its host.
        host: String,
        /// Its cores.
        cores: u32,
    },
    /// An executor is gone (sent by the cluster backend; the local executor never goes).
    #[cfg_attr(not(test), allow(dead_code))]
    ExecutorLost {
        /// Its id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A task ended.
    TaskEnded {
        /// The task.
        task: TaskId,
        /// The size of its serialized output, or its error.
        outcome: Result<u64, String>,
        /// Blocks it cached on its executor.
        blocks_added: Vec<BlockId>,
        /// Blocks its executor evicted meanwhile.
        blocks_evicted: Vec<BlockId>,
        /// A map task's output, or a reduce task's fetch failure.
        shuffle: ShuffleReport,
    },
    /// A worker is gone, and with it its shuffle service: the map outputs its
    /// executors wrote are lost whoever serves them, and those executors with it.
    /// (By worker, not by host: several workers may share a host.)
    WorkerLost {
        /// Every executor the master ever placed on that worker.
        executors: Vec<String>,
    },
    /// No dataset on the driver reaches this shuffle any more: forget its outputs.
    ShuffleRemoved {
        /// The shuffle.
        shuffle: ShuffleId,
    },
    /// An executor is alive (a heartbeat; every status update counts as one too).
    #[cfg_attr(not(test), allow(dead_code))]
    Heartbeat {
        /// The executor.
        id: String,
    },
    /// A cached dataset was unpersisted: its blocks go everywhere.
    CacheRemoved {
        /// The cache id.
        cache: u64,
    },
    /// Time passed.
    Tick,
}

/// One task to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    /// Its id.
    pub task: TaskId,
    /// Its job.
    pub job: JobId,
    /// Its stage.
    pub stage: StageId,
    /// The partition.
    pub partition: u32,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// Where.
    pub executor: String,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobFailure {
    /// A partition failed `task.max_failures` times.
    Task {
        /// The stage.
        stage: StageId,
        /// The partition.
        partition: u32,
        /// Every attempt's error.
        attempts: Vec<String>,
    },
    /// Its results exceed `driver.max_result_size`.
    ResultTooLarge {
        /// Bytes received.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// It was cancelled.
    Cancelled(String),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Start these tasks (one batch per event).
    Launch(Vec<Launch>),
    /// A task succeeded. `first`: the first success of its partition (use its output,
    /// count its accumulators); `result`: it belongs to the job's result stage.
    TaskSucceeded {
        /// The job.
        job: JobId,
        /// The task.
        task: TaskId,
        /// The partition.
        partition: u32,
        /// The first success of this partition in this job.
        first: bool,
        /// A task of the result stage.
        result: bool,
    },
    /// The job is complete.
    JobSucceeded(JobId),
    /// The job failed.
    JobFailed(JobId, JobFailure),
    /// Stop these tasks if possible; their results will be ignored.
    KillTasks(Vec<(String, TaskId)>),
    /// The executor timed out: stop it (its tasks already run elsewhere).
    KillExecutor {
        /// The executor.
        executor: String,
        /// Why.
        reason: String,
    },
    /// Drop cached dataset `cache`'s blocks on `executor`.
    RemoveBlocks {
        /// The executor.
        executor: String,
        /// The cache id.
        cache: u64,
    },
    /// Delete shuffle `shuffle`'s files on every executor (and shuffle service).
    RemoveShuffle {
        /// The shuffle.
        shuffle: ShuffleId,
    },
    /// Log this warning.
    Warn(String),
}

#[derive(Debug)]
struct Exec {
    host: String,
    free: u32,
    last_seen: u64,
}

#[derive(Debug)]
struct Running {
    job: JobId,
    stage: StageId,
    index: usize,
    attempt: u32,
    stage_attempt: u32,
    executor: String,
    /// False once the scheduler stopped waiting for it (its job ended).
    live: bool,
}

#[derive(Debug)]
struct Stage {
    parents: Vec<StageId>,
    partitions: Vec<u32>,
    blocks: Vec<Vec<BlockId>>,
    any_blocks: bool,
    pending: BTreeSet<usize>,
    running: usize,
    done: Vec<bool>,
    done_count: usize,
    failures: Vec<Vec<String>>,
    attempts: Vec<u32>,
    submitted: bool,
    locality_since: u64,
    shuffle: Option<ShuffleId>,
    /// This stage's attempt (raised on each fetch failure that resubmits it).
    attempt: u32,
    /// The reasons of its fetch-failed attempts in a row.
    fetch_failures: Vec<String>,
    /// Per partition: the executor its last attempt failed on, and when.
    failed_on: Vec<Option<(String, u64)>>,
}

impl Stage {
    fn complete(&self) -> bool {
        self.done_count == self.partitions.len()
    }
}

#[derive(Debug)]
struct Job {
    stages: BTreeMap<StageId, Stage>,
    result_stage: StageId,
    result_bytes: u64,
}

/// The scheduler's state.
#[derive(Debug)]
pub(crate) struct Scheduler {
    conf: SchedulerConf,
    executors: BTreeMap<String, Exec>,
    jobs: BTreeMap<JobId, Job>,
    tasks: HashMap<TaskId, Running>,
    blocks: HashMap<BlockId, BTreeSet<String>>,
    outputs: HashMap<ShuffleId, Vec<Option<MapStatus>>>,
    next_task: TaskId,
    launched_any: bool,
    warn_at: Option<u64>,
}

impl Scheduler {
    /// A scheduler with no executors and no jobs.
    pub fn new(conf: SchedulerConf) -> Self {
        Self {
            conf,
            executors: BTreeMap::new(),
            jobs: BTreeMap::new(),
            tasks: HashMap::new(),
            blocks: HashMap::new(),
            outputs: HashMap::new(),
            next_task: 0,
            launched_any: false,
            warn_at: None,
        }
    }

    /// Jobs not yet finished.
    #[cfg(test)]
    pub fn active_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Tasks running on executors (including those of finished jobs not yet ended).
    #[cfg(test)]
    pub fn running_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Whether `stage` of `job` is a shuffle map stage.
    pub fn is_map_stage(&self, job: JobId, stage: StageId) -> bool {
        self.jobs
            .get(&job)
            .and_then(|j| j.stages.get(&stage))
            .is_some_and(|s| s.shuffle.is_some())
    }

    /// The map outputs of `shuffle` by map partition (`None`: missing).
    pub fn map_outputs(&self, shuffle: ShuffleId) -> Option<&[Option<MapStatus>]> {
        self.outputs.get(&shuffle).map(Vec::as_slice)
    }

    /// When the scheduler next needs a [`Event::Tick`], if ever.
    pub fn next_wakeup(&self) -> Option<u64> {
        let mut at = self
            .warn_at
            .filter(|_| !self.launched_any && !self.jobs.is_empty());
        if self.conf.executor_timeout_ms > 0 {
            if let Some(t) = self
                .executors
                .values()
                .map(|e| e.last_seen + self.conf.executor_timeout_ms)
                .min()
            {
                at = Some(at.map_or(t, |a: u64| a.min(t)));
            }
        }
        if self.executors.values().any(|e| e.free > 0) {
            for job in self.jobs.values() {
                for s in job.stages.values() {
                    if s.submitted && s.any_blocks && !s.pending.is_empty() {
                        let t = s.locality_since + self.conf.locality_wait_ms;
                        at = Some(at.map_or(t, |a: u64| a.min(t)));
                    }
                    // A retry keeping off the executor it failed on runs anywhere then.
                    for &i in &s.pending {
                        if let Some((_, f)) = &s.failed_on[i] {
                            let t = f + self.conf.locality_wait_ms;
                            at = Some(at.map_or(t, |a: u64| a.min(t)));
                        }
                    }
                }
            }
        }
        at
    }

    /// Handles `event` at time `now` (milliseconds, monotonic).
    pub fn handle(&mut self, now: u64, event: Event) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            Event::SubmitJob { job, stages } => self.submit(now, job, stages, &mut fx),
            Event::CancelJob { job, reason } => {
                if self.jobs.contains_key(&job) {
                    self.fail_job(job, JobFailure::Cancelled(reason), &mut fx);
                }
            }
            Event::ExecutorAdded { id, host, cores } => {
                let busy = self.tasks.values().filter(|t| t.executor == id).count() as u32;
                self.executors.insert(
                    id,
                    Exec {
                        host,
                        free: cores.saturating_sub(busy),
                        last_seen: now,
                    },
                );
            }
            Event::ExecutorLost { id, reason } => {
                self.executor_lost(&id, &reason, &mut fx);
                self.resync_all(now, &mut fx);
            }
            Event::TaskEnded {
                task,
                outcome,
                blocks_added,
                blocks_evicted,
                shuffle,
            } => self.task_ended(
                now,
                task,
                (outcome, shuffle),
                blocks_added,
                blocks_evicted,
                &mut fx,
            ),
            Event::WorkerLost { executors } => {
                self.unregister(|m| executors.contains(&m.executor));
                for id in executors {
                    if self.executors.contains_key(&id) {
                        self.executor_lost(&id, "its worker is gone", &mut fx);
                    }
                }
                self.resync_all(now, &mut fx);
            }
            Event::ShuffleRemoved { shuffle } => {
                if self.outputs.remove(&shuffle).is_some() {
                    fx.push(Effect::RemoveShuffle { shuffle });
                }
            }
            Event::CacheRemoved { cache } => {
                let mut holders = BTreeSet::new();
                self.blocks.retain(|b, execs| {
                    if b.cache == cache {
                        holders.extend(execs.iter().cloned());
                        false
                    } else {
                        true
                    }
                });
                for executor in holders {
                    fx.push(Effect::RemoveBlocks { executor, cache });
                }
            }
            Event::Heartbeat { id } => {
                if let Some(e) = self.executors.get_mut(&id) {
                    e.last_seen = now;
                }
            }
            Event::Tick => {}
        }
        self.expire(now, &mut fx);
        if let Some(at) = self.warn_at {
            if !self.launched_any && !self.jobs.is_empty() && now >= at {
                fx.push(Effect::Warn(NO_RESOURCES_WARNING.to_string()));
                self.warn_at = Some(now + self.conf.starvation_timeout_ms);
            }
        }
        let launches = self.schedule(now);
        if !launches.is_empty() {
            fx.push(Effect::Launch(launches));
        }
        fx
    }

    fn submit(&mut self, now: u64, job: JobId, specs: Vec<StageSpec>, fx: &mut Vec<Effect>) {
        let Some(result_stage) = specs.last().map(|s| s.id) else {
            return;
        };
        let mut stages = BTreeMap::new();
        for s in specs {
            let n = s.partitions.len();
            let mut blocks = s.blocks;
            blocks.resize(n, Vec::new());
            stages.insert(
                s.id,
                Stage {
                    any_blocks: blocks.iter().any(|b| !b.is_empty()),
                    parents: s.parents,
                    partitions: s.partitions,
                    blocks,
                    pending: BTreeSet::new(),
                    running: 0,
                    done: vec![false; n],
                    done_count: 0,
                    failures: vec![Vec::new(); n],
                    attempts: vec![0; n],
                    submitted: false,
                    locality_since: now,
                    shuffle: s.shuffle,
                    attempt: 0,
                    fetch_failures: Vec::new(),
                    failed_on: vec![None; n],
                },
            );
        }
        for s in stages.values() {
            if let Some(sh) = s.shuffle {
                let n = s.partitions.len();
                let out = self.outputs.entry(sh).or_default();
                if out.len() != n {
                    *out = vec![None; n];
                }
            }
        }
        let job_state = Job {
            stages,
            result_stage,
            result_bytes: 0,
        };
        if !self.launched_any && self.warn_at.is_none() {
            self.warn_at = Some(now + self.conf.starvation_timeout_ms);
        }
        self.jobs.insert(job, job_state);
        if self.resync(job, now) {
            self.end_job(job);
            fx.push(Effect::JobSucceeded(job));
        }
    }

    /// Brings job `job`'s stages in line with the map outputs available: a map stage's
    /// partitions are done when their outputs are registered; the stages needed are the
    /// result stage and, transitively, the parents of needed stages that are not
    /// complete; a needed stage whose parents are complete runs its partitions neither
    /// done nor running, the others wait. Returns whether the result stage is complete.
    fn resync(&mut self, job: JobId, now: u64) -> bool {
        let running: BTreeSet<(StageId, usize)> = self
            .tasks
            .values()
            .filter(|t| t.live && t.job == job)
            .map(|t| (t.stage, t.index))
            .collect();
        let outputs = &self.outputs;
        let Some(job) = self.jobs.get_mut(&job) else {
            return false;
        };
        for s in job.stages.values_mut() {
            if let Some(out) = s.shuffle.and_then(|sh| outputs.get(&sh)) {
                for (i, d) in s.done.iter_mut().enumerate() {
                    *d = out.get(i).is_some_and(Option::is_some);
                }
                s.done_count = s.done.iter().filter(|d| **d).count();
            }
        }
        let complete: BTreeSet<StageId> = job
            .stages
            .iter()
            .filter(|(_, s)| s.complete())
            .map(|(id, _)| *id)
            .collect();
        let mut needed = BTreeSet::new();
        let mut todo = vec![job.result_stage];
        while let Some(id) = todo.pop() {
            if !needed.insert(id) {
                continue;
            }
            if id == job.result_stage || !complete.contains(&id) {
                if let Some(s) = job.stages.get(&id) {
                    todo.extend(s.parents.iter().copied());
                }
            }
        }
        for (id, s) in job.stages.iter_mut() {
            let ready = needed.contains(id) && s.parents.iter().all(|p| complete.contains(p));
            if !ready {
                s.submitted = false;
                s.pending.clear();
                continue;
            }
            if !s.submitted {
                s.submitted = true;
                s.locality_since = now;
            }
            s.pending = (0..s.partitions.len())
                .filter(|i| !s.done[*i] && !running.contains(&(*id, *i)))
                .collect();
        }
        complete.contains(&job.result_stage)
    }

    /// [`Self::resync`] on every job; ends those whose result stage is complete.
    fn resync_all(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in ids {
            if self.resync(job, now) {
                self.end_job(job);
                fx.push(Effect::JobSucceeded(job));
            }
        }
    }

    /// Forgets every map output `lost` says is gone.
    fn unregister(&mut self, lost: impl Fn(&MapStatus) -> bool) -> bool {
        let mut any = false;
        for out in self.outputs.values_mut() {
            for o in out.iter_mut() {
                if o.as_ref().is_some_and(&lost) {
                    *o = None;
                    any = true;
                }
            }
        }
        any
    }

    /// Executors alive that hold any of `blocks`.
    fn holders(&self, blocks: &[BlockId]) -> BTreeSet<&str> {
        blocks
            .iter()
            .filter_map(|b| self.blocks.get(b))
            .flatten()
            .filter(|e| self.executors.contains_key(*e))
            .map(String::as_str)
            .collect()
    }

    /// Whether partition `i` of `s` keeps off `exec` for now: its last attempt failed
    /// there less than `locality.wait` ago and another executor is registered.
    fn avoids(&self, s: &Stage, i: usize, exec: &str, now: u64) -> bool {
        s.failed_on[i].as_ref().is_some_and(|(e, at)| {
            e == exec
                && now < at + self.conf.locality_wait_ms
                && self.executors.keys().any(|k| k != exec)
        })
    }

    /// The task to run on `exec` next: FIFO over jobs, stages in id order.
    fn pick(&self, exec: &str, now: u64) -> Option<(JobId, StageId, usize, bool)> {
        for (job_id, job) in &self.jobs {
            for (stage_id, s) in &job.stages {
                if !s.submitted || s.pending.is_empty() {
                    continue;
                }
                let avoid = |i: usize| self.avoids(s, i, exec, now);
                if !s.any_blocks {
                    if let Some(&i) = s.pending.iter().find(|&&i| !avoid(i)) {
                        return Some((*job_id, *stage_id, i, false));
                    }
                    continue;
                }
                let expired = now >= s.locality_since + self.conf.locality_wait_ms;
                let mut fallback = None;
                for &i in &s.pending {
                    if avoid(i) {
                        continue;
                    }
                    let h = self.holders(&s.blocks[i]);
                    if h.contains(exec) {
                        return Some((*job_id, *stage_id, i, true));
                    }
                    if fallback.is_none() && (h.is_empty() || expired) {
                        fallback = Some(i);
                    }
                }
                if let Some(i) = fallback {
                    return Some((*job_id, *stage_id, i, false));
                }
            }
        }
        None
    }

    fn schedule(&mut self, now: u64) -> Vec<Launch> {
        // Forget avoidances that ran out, so `next_wakeup` only names future times.
        let wait = self.conf.locality_wait_ms;
        for job in self.jobs.values_mut() {
            for st in job.stages.values_mut() {
                for f in &mut st.failed_on {
                    if f.as_ref().is_some_and(|(_, at)| now >= at + wait) {
                        *f = None;
                    }
                }
            }
        }
        let mut out = Vec::new();
        loop {
            let mut progressed = false;
            let ids: Vec<String> = self
                .executors
                .iter()
                .filter(|(_, e)| e.free > 0)
                .map(|(id, _)| id.clone())
                .collect();
            for exec in ids {
                let Some((job_id, stage_id, index, local)) = self.pick(&exec, now) else {
                    continue;
                };
                let Some(s) = self
                    .jobs
                    .get_mut(&job_id)
                    .and_then(|j| j.stages.get_mut(&stage_id))
                else {
                    continue;
                };
                s.pending.remove(&index);
                s.running += 1;
                if local {
                    s.locality_since = now;
                }
                let attempt = s.attempts[index];
                s.attempts[index] += 1;
                let stage_attempt = s.attempt;
                let partition = s.partitions[index];
                let task = self.next_task;
                self.next_task += 1;
                if let Some(e) = self.executors.get_mut(&exec) {
                    e.free -= 1;
                }
                self.tasks.insert(
                    task,
                    Running {
                        job: job_id,
                        stage: stage_id,
                        index,
                        attempt,
                        stage_attempt,
                        executor: exec.clone(),
                        live: true,
                    },
                );
                self.launched_any = true;
                out.push(Launch {
                    task,
                    job: job_id,
                    stage: stage_id,
                    partition,
                    attempt,
                    executor: exec,
                });
                progressed = true;
            }
            if !progressed {
                return out;
            }
        }
    }

    fn task_ended(
        &mut self,
        now: u64,
        task: TaskId,
        (outcome, report): (Result<u64, String>, ShuffleReport),
        added: Vec<BlockId>,
        evicted: Vec<BlockId>,
        fx: &mut Vec<Effect>,
    ) {
        let Some(t) = self.tasks.remove(&task) else {
            return; // a stale attempt: its executor was lost, or a duplicate report
        };
        let host = match self.executors.get_mut(&t.executor) {
            Some(e) => {
                e.free += 1;
                e.last_seen = now;
                for b in added {
                    self.blocks.entry(b).or_default().insert(t.executor.clone());
                }
                e.host.clone()
            }
            None => String::new(),
        };
        for b in evicted {
            if let Some(set) = self.blocks.get_mut(&b) {
                set.remove(&t.executor);
                if set.is_empty() {
                    self.blocks.remove(&b);
                }
            }
        }
        if !t.live {
            return;
        }
        let max_failures = self.conf.max_failures;
        let limit = self.conf.max_result_size;
        let Some(job) = self.jobs.get_mut(&t.job) else {
            return;
        };
        let result_stage = job.result_stage == t.stage;
        let Some(s) = job.stages.get_mut(&t.stage) else {
            return;
        };
        s.running = s.running.saturating_sub(1);
        let partition = s.partitions[t.index];
        let shuffle = s.shuffle;
        match (outcome, report) {
            (Ok(bytes), report) => {
                let first = !s.done[t.index];
                if first {
                    s.done[t.index] = true;
                    s.done_count += 1;
                    s.pending.remove(&t.index);
                }
                let complete = s.complete();
                if complete {
                    s.fetch_failures.clear();
                }
                if first && result_stage {
                    job.result_bytes += bytes;
                    if limit > 0 && job.result_bytes > limit {
                        let size = job.result_bytes;
                        self.fail_job(t.job, JobFailure::ResultTooLarge { size, limit }, fx);
                        return;
                    }
                }
                fx.push(Effect::TaskSucceeded {
                    job: t.job,
                    task,
                    partition,
                    first,
                    result: result_stage,
                });
                if let (Some(sh), ShuffleReport::Written { server, blocks }) = (shuffle, report) {
                    if let Some(o) = self.outputs.get_mut(&sh).and_then(|o| o.get_mut(t.index)) {
                        *o = Some(MapStatus {
                            executor: t.executor.clone(),
                            host: host.clone(),
                            server,
                            blocks,
                            writer: task,
                        });
                    }
                    if complete {
                        self.resync_all(now, fx);
                    }
                } else if first && complete && self.resync(t.job, now) {
                    self.end_job(t.job);
                    fx.push(Effect::JobSucceeded(t.job));
                }
            }
            (Err(error), ShuffleReport::FetchFailed(ff)) => {
                // Not a failure of the task: its input is gone. The output is
                // unregistered with everything else lost with it, the map stage runs
                // the lost partitions again, then this stage its missing ones.
                let counts = t.stage_attempt == s.attempt;
                if counts {
                    s.attempt += 1;
                    s.fetch_failures.push(format!(
                        "stage attempt {} (task attempt {} of partition {partition} on executor {}): {error}",
                        t.stage_attempt + 1,
                        t.attempt + 1,
                        t.executor
                    ));
                }
                let tries = s.fetch_failures.clone();
                let mapped_at = self
                    .outputs
                    .get(&ff.shuffle)
                    .and_then(|o| o.get(ff.map as usize))
                    .and_then(|o| o.as_ref())
                    .filter(|m| m.executor == ff.executor && m.writer < task)
                    .map(|m| m.host.clone());
                if let Some(host) = mapped_at {
                    if !ff.unreachable {
                        if let Some(o) = self
                            .outputs
                            .get_mut(&ff.shuffle)
                            .and_then(|o| o.get_mut(ff.map as usize))
                        {
                            *o = None;
                        }
                    } else if self.conf.shuffle_service {
                        self.unregister(|m| m.host == host);
                    } else {
                        self.unregister(|m| m.executor == ff.executor);
                    }
                }
                if counts && tries.len() as u32 >= self.conf.max_stage_attempts {
                    let failure = JobFailure::Task {
                        stage: t.stage,
                        partition,
                        attempts: tries,
                    };
                    self.fail_job(t.job, failure, fx);
                }
                self.resync_all(now, fx);
            }
            (Err(error), _) => {
                let at = if host.is_empty() {
                    t.executor.clone()
                } else {
                    format!("{} ({host})", t.executor)
                };
                let attempts = self.record_failure(t.job, t.stage, t.index, t.attempt, &at, &error);
                if let Some(s) = self
                    .jobs
                    .get_mut(&t.job)
                    .and_then(|j| j.stages.get_mut(&t.stage))
                {
                    s.failed_on[t.index] = Some((t.executor.clone(), now));
                }
                if let Some(attempts) = attempts {
                    if attempts.len() as u32 >= max_failures {
                        let failure = JobFailure::Task {
                            stage: t.stage,
                            partition,
                            attempts,
                        };
                        self.fail_job(t.job, failure, fx);
                    }
                }
            }
        }
    }

    /// Records a failed attempt and queues the partition again; returns its attempts'
    /// errors so far.
    fn record_failure(
        &mut self,
        job: JobId,
        stage: StageId,
        index: usize,
        attempt: u32,
        at: &str,
        error: &str,
    ) -> Option<Vec<String>> {
        let s = self.jobs.get_mut(&job)?.stages.get_mut(&stage)?;
        if s.done[index] {
            return None;
        }
        s.failures[index].push(format!("attempt {} on executor {at}: {error}", attempt + 1));
        s.pending.insert(index);
        Some(s.failures[index].clone())
    }

    /// Loses every executor silent for longer than the executor timeout.
    fn expire(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let timeout = self.conf.executor_timeout_ms;
        if timeout == 0 {
            return;
        }
        let silent: Vec<(String, u64)> = self
            .executors
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.last_seen) > timeout)
            .map(|(id, e)| (id.clone(), now - e.last_seen))
            .collect();
        let any = !silent.is_empty();
        for (id, ms) in silent {
            let reason = format!("executor heartbeat timed out after {ms} ms");
            self.executor_lost(&id, &reason, fx);
            fx.push(Effect::KillExecutor {
                executor: id,
                reason,
            });
        }
        if any {
            self.resync_all(now, fx);
        }
    }

    fn executor_lost(&mut self, id: &str, reason: &str, fx: &mut Vec<Effect>) {
        let Some(exec) = self.executors.remove(id) else {
            return;
        };
        if !self.conf.shuffle_service {
            self.unregister(|m| m.executor == id);
        }
        for set in self.blocks.values_mut() {
            set.remove(id);
        }
        self.blocks.retain(|_, set| !set.is_empty());
        let mut lost: Vec<(TaskId, Running)> = Vec::new();
        let ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.executor == id)
            .map(|(k, _)| *k)
            .collect();
        for k in ids {
            if let Some(t) = self.tasks.remove(&k) {
                lost.push((k, t));
            }
        }
        lost.sort_by_key(|(k, _)| *k);
        let at = format!("{id} ({})", exec.host);
        for (_, t) in lost {
            if !t.live {
                continue;
            }
            if let Some(s) = self
                .jobs
                .get_mut(&t.job)
                .and_then(|j| j.stages.get_mut(&t.stage))
            {
                s.running = s.running.saturating_sub(1);
            }
            let error = format!("executor lost: {reason}");
            if let Some(attempts) =
                self.record_failure(t.job, t.stage, t.index, t.attempt, &at, &error)
            {
                if attempts.len() as u32 >= self.conf.max_failures {
                    let partition = self
                        .jobs
                        .get(&t.job)
                        .and_then(|j| j.stages.get(&t.stage))
                        .map_or(0, |s| s.partitions[t.index]);
                    let failure = JobFailure::Task {
                        stage: t.stage,
                        partition,
                        attempts,
                    };
                    self.fail_job(t.job, failure, fx);
                }
            }
        }
    }

    /// Forgets job `job`: its running tasks keep their cores until they end, ignored.
    fn end_job(&mut self, job: JobId) -> Vec<(String, TaskId)> {
        self.jobs.remove(&job);
        let mut kill = Vec::new();
        for (id, t) in &mut self.tasks {
            if t.job == job && t.live {
                t.live = false;
                kill.push((t.executor.clone(), *id));
            }
        }
        kill.sort_by_key(|(_, id)| *id);
        kill
    }

    fn fail_job(&mut self, job: JobId, failure: JobFailure, fx: &mut Vec<Effect>) {
        let kill = self.end_job(job);
        if !kill.is_empty() {
            fx.push(Effect::KillTasks(kill));
        }
        fx.push(Effect::JobFailed(job, failure));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> SchedulerConf {
        SchedulerConf {
            max_failures: 4,
            locality_wait_ms: 3000,
            starvation_timeout_ms: 15_000,
            max_result_size: 1000,
            executor_timeout_ms: 0,
            shuffle_service: false,
            max_stage_attempts: 4,
        }
    }

    fn stage(id: StageId, n: u32) -> StageSpec {
        StageSpec {
            id,
            parents: vec![],
            partitions: (0..n).collect(),
            blocks: vec![],
            shuffle: None,
        }
    }

    fn job(s: &mut Scheduler, now: u64, job: JobId, n: u32) -> Vec<Effect> {
        s.handle(
            now,
            Event::SubmitJob {
                job,
                stages: vec![stage(job * 10, n)],
            },
        )
    }

    fn exec(s: &mut Scheduler, now: u64, id: &str, cores: u32) -> Vec<Effect> {
        s.handle(
            now,
            Event::ExecutorAdded {
                id: id.into(),
                host: format!("host-{id}"),
                cores,
            },
        )
    }

    fn ok(s: &mut Scheduler, now: u64, task: TaskId, bytes: u64) -> Vec<Effect> {
        s.handle(
            now,
            Event::TaskEnded {
                task,
                outcome: Ok(bytes),
                blocks_added: vec![],
                blocks_evicted: vec![],
                shuffle: ShuffleReport::None,
            },
        )
    }

    fn fail(s: &mut Scheduler, now: u64, task: TaskId, e: &str) -> Vec<Effect> {
        s.handle(
            now,
            Event::TaskEnded {
                task,
                outcome: Err(e.into()),
                blocks_added: vec![],
                blocks_evicted: vec![],
                shuffle: ShuffleReport::None,
            },
        )
    }

    fn launches(fx: &[Effect]) -> Vec<Launch> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Launch(l) => Some(l.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn every_free_core_gets_a_task_in_one_batch_and_the_job_completes() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 4);
        let fx = job(&mut s, 0, 1, 10);
        let batches: Vec<&Effect> = fx
            .iter()
            .filter(|e| matches!(e, Effect::Launch(_)))
            .collect();
        assert_eq!(batches.len(), 1);
        let l = launches(&fx);
        assert_eq!(
            l.iter().map(|l| l.partition).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(l
            .iter()
            .all(|l| l.executor == "a" && l.attempt == 0 && l.stage == 10));
        let mut next = l.into_iter().map(|l| l.task).collect::<Vec<_>>();
        let mut done = 0;
        while let Some(t) = next.pop() {
            let fx = ok(&mut s, 1, t, 1);
            done += 1;
            next.extend(launches(&fx).into_iter().map(|l| l.task));
            if done == 10 {
                assert!(fx.contains(&Effect::JobSucceeded(1)), "{fx:?}");
            }
        }
        assert_eq!(done, 10);
        assert_eq!(s.active_jobs(), 0);
        assert_eq!(s.running_tasks(), 0);
    }

    #[test]
    fn jobs_are_served_first_in_first_out() {
        let mut s = Scheduler::new(conf());
        job(&mut s, 0, 1, 2);
        job(&mut s, 0, 2, 2);
        let l = launches(&exec(&mut s, 0, "a", 1));
        assert_eq!((l[0].job, l[0].partition), (1, 0));
        let l = launches(&ok(&mut s, 1, l[0].task, 1));
        assert_eq!((l[0].job, l[0].partition), (1, 1));
        let l = launches(&ok(&mut s, 2, l[0].task, 1));
        assert_eq!((l[0].job, l[0].partition), (2, 0));
    }

    #[test]
    fn cores_are_spread_round_robin_over_executors() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 2);
        exec(&mut s, 0, "b", 2);
        let l = launches(&job(&mut s, 0, 1, 3));
        let on: Vec<&str> = l.iter().map(|l| l.executor.as_str()).collect();
        assert_eq!(on, vec!["a", "b", "a"]);
    }

    #[test]
    fn a_task_failing_max_failures_times_fails_its_job_with_every_attempt() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        job(&mut s, 0, 1, 1);
        let mut task = 0;
        for attempt in 0..3 {
            let fx = fail(&mut s, 1, task, &format!("boom {attempt}"));
            let l = launches(&fx);
            assert_eq!(l.len(), 1, "{fx:?}");
            assert_eq!((l[0].partition, l[0].attempt), (0, attempt + 1));
            task = l[0].task;
        }
        let fx = fail(&mut s, 2, task, "boom 3");
        let Some(Effect::JobFailed(
            1,
            JobFailure::Task {
                stage,
                partition,
                attempts,
            },
        )) = fx.last()
        else {
            panic!("{fx:?}")
        };
        assert_eq!((*stage, *partition), (10, 0));
        assert_eq!(attempts.len(), 4);
        assert_eq!(attempts[0], "attempt 1 on executor a (host-a): boom 0");
        assert_eq!(attempts[3], "attempt 4 on executor a (host-a): boom 3");
        assert_eq!(s.active_jobs(), 0);
        // The next job runs on the freed core.
        let l = launches(&job(&mut s, 3, 2, 1));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_retry_keeps_off_the_executor_it_failed_on_for_the_locality_wait() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        exec(&mut s, 0, "b", 1);
        let l = launches(&job(&mut s, 0, 1, 3));
        assert_eq!(l.len(), 2);
        let on_a = l.iter().find(|l| l.executor == "a").unwrap().clone();
        let on_b = l.iter().find(|l| l.executor == "b").unwrap().clone();
        // The task failing on a is not retried there while b will be free: a takes
        // the next partition instead.
        let l = launches(&fail(&mut s, 10, on_a.task, "disk full"));
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].executor.as_str(), l[0].attempt), ("a", 0));
        assert_ne!(l[0].partition, on_a.partition);
        let next_a = l[0].task;
        // b frees up: the retry goes there.
        let l = launches(&ok(&mut s, 20, on_b.task, 1));
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].executor.as_str(), l[0].partition, l[0].attempt),
            ("b", on_a.partition, 1)
        );
        // It fails on b too: b is free but the retry keeps off it while a is
        // registered; only the last failure counts, so when a frees up it runs there.
        let l = launches(&fail(&mut s, 30, l[0].task, "disk full"));
        assert!(
            l.is_empty(),
            "b must not retry what just failed there: {l:?}"
        );
        assert_eq!(s.next_wakeup(), Some(30 + 3000));
        let l = launches(&ok(&mut s, 40, next_a, 1));
        assert_eq!(
            (l[0].executor.as_str(), l[0].partition, l[0].attempt),
            ("a", on_a.partition, 2)
        );
    }

    #[test]
    fn with_one_executor_a_retry_runs_there_at_once_and_after_the_wait_anywhere() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        let l = launches(&job(&mut s, 0, 1, 1));
        let l = launches(&fail(&mut s, 5, l[0].task, "boom"));
        assert_eq!((l[0].executor.as_str(), l[0].attempt), ("a", 1));
        // With b registered but a the only free one, a gets it once the wait ran out.
        exec(&mut s, 6, "b", 1);
        let busy = launches(&job(&mut s, 7, 2, 1));
        assert_eq!(busy[0].executor, "b");
        let l = launches(&fail(&mut s, 10, l[0].task, "boom"));
        assert!(l.is_empty(), "{l:?}");
        assert_eq!(s.next_wakeup(), Some(10 + 3000));
        let l = launches(&s.handle(3010, Event::Tick));
        assert_eq!((l[0].executor.as_str(), l[0].attempt), ("a", 2));
    }

    #[test]
    fn a_failure_then_a_success_completes_the_job_and_is_first_once() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        job(&mut s, 0, 1, 1);
        let l = launches(&fail(&mut s, 1, 0, "once"));
        let fx = ok(&mut s, 2, l[0].task, 5);
        assert_eq!(
            fx,
            vec![
                Effect::TaskSucceeded {
                    job: 1,
                    task: l[0].task,
                    partition: 0,
                    first: true,
                    result: true
                },
                Effect::JobSucceeded(1)
            ]
        );
    }

    #[test]
    fn a_lost_executor_s_tasks_run_again_elsewhere_and_its_late_results_are_ignored() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        let l = launches(&job(&mut s, 0, 1, 1));
        assert_eq!(l[0].executor, "a");
        exec(&mut s, 1, "b", 1);
        let fx = s.handle(
            2,
            Event::ExecutorLost {
                id: "a".into(),
                reason: "killed".into(),
            },
        );
        let l2 = launches(&fx);
        assert_eq!((l2[0].executor.as_str(), l2[0].attempt), ("b", 1));
        // The lost attempt's result arrives anyway: ignored.
        assert!(ok(&mut s, 3, l[0].task, 1).is_empty());
        assert_eq!(s.active_jobs(), 1);
        let fx = ok(&mut s, 4, l2[0].task, 1);
        assert!(fx.contains(&Effect::JobSucceeded(1)));
    }

    #[test]
    fn losing_executors_counts_as_failures() {
        let mut s = Scheduler::new(conf());
        job(&mut s, 0, 1, 1);
        for i in 0..4 {
            let id = format!("e{i}");
            exec(&mut s, i, &id, 1);
            let fx = s.handle(
                i,
                Event::ExecutorLost {
                    id: id.clone(),
                    reason: "exit 137".into(),
                },
            );
            if i == 3 {
                let Some(Effect::JobFailed(1, JobFailure::Task { attempts, .. })) = fx.last()
                else {
                    panic!("{fx:?}")
                };
                assert_eq!(
                    attempts[3],
                    "attempt 4 on executor e3 (host-e3): executor lost: exit 137"
                );
            }
        }
    }

    fn cached(
        s: &mut Scheduler,
        now: u64,
        job: JobId,
        holder_blocks: Vec<Vec<BlockId>>,
    ) -> Vec<Effect> {
        let n = holder_blocks.len() as u32;
        s.handle(
            now,
            Event::SubmitJob {
                job,
                stages: vec![StageSpec {
                    id: job * 10,
                    parents: vec![],
                    partitions: (0..n).collect(),
                    blocks: holder_blocks,
                    shuffle: None,
                }],
            },
        )
    }

    fn block(p: u32) -> BlockId {
        BlockId {
            cache: 7,
            partition: p,
        }
    }

    #[test]
    fn a_task_waits_for_the_executor_holding_its_cached_partition_up_to_the_locality_wait() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        exec(&mut s, 0, "b", 1);
        // Job 1 caches partition 0 on a.
        let l = launches(&cached(&mut s, 0, 1, vec![vec![block(0)]]));
        assert_eq!(l[0].executor, "a");
        s.handle(
            1,
            Event::TaskEnded {
                task: l[0].task,
                outcome: Ok(1),
                blocks_added: vec![block(0)],
                blocks_evicted: vec![],
                shuffle: ShuffleReport::None,
            },
        );
        // Keep a busy, so only b is free, and submit a job reading block 0.
        let busy = launches(&job(&mut s, 2, 2, 1));
        assert_eq!(busy[0].executor, "a");
        let fx = cached(&mut s, 10, 3, vec![vec![block(0)]]);
        assert!(launches(&fx).is_empty(), "ran away from its block: {fx:?}");
        assert_eq!(s.next_wakeup(), Some(10 + 3000));
        assert!(launches(&s.handle(2999, Event::Tick)).is_empty());
        let l = launches(&s.handle(3010, Event::Tick));
        assert_eq!((l[0].job, l[0].executor.as_str()), (3, "b"));
    }

    #[test]
    fn a_task_goes_to_the_holder_when_it_is_free() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        exec(&mut s, 0, "b", 1);
        let l = launches(&cached(&mut s, 0, 1, vec![vec![block(0)], vec![block(1)]]));
        assert_eq!(l.len(), 2);
        for x in &l {
            s.handle(
                1,
                Event::TaskEnded {
                    task: x.task,
                    outcome: Ok(1),
                    blocks_added: vec![block(x.partition)],
                    blocks_evicted: vec![],
                    shuffle: ShuffleReport::None,
                },
            );
        }
        let holder = |p: u32| {
            l.iter()
                .find(|x| x.partition == p)
                .unwrap()
                .executor
                .clone()
        };
        let l2 = launches(&cached(&mut s, 5, 2, vec![vec![block(0)], vec![block(1)]]));
        for x in l2 {
            assert_eq!(x.executor, holder(x.partition));
        }
    }

    #[test]
    fn a_lost_executor_s_blocks_are_forgotten_and_evicted_blocks_too() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        exec(&mut s, 0, "b", 1);
        let l = launches(&cached(&mut s, 0, 1, vec![vec![block(0)], vec![block(1)]]));
        for x in &l {
            s.handle(
                1,
                Event::TaskEnded {
                    task: x.task,
                    outcome: Ok(1),
                    blocks_added: vec![block(x.partition)],
                    blocks_evicted: vec![],
                    shuffle: ShuffleReport::None,
                },
            );
        }
        s.handle(
            2,
            Event::ExecutorLost {
                id: "a".into(),
                reason: "gone".into(),
            },
        );
        assert!(s.blocks.values().all(|h| !h.contains("a")));
        // b evicts its block: nobody holds anything, and a new job runs at once.
        let held_by_b = *s.blocks.keys().next().unwrap();
        let t = launches(&job(&mut s, 3, 5, 1))[0].task;
        s.handle(
            4,
            Event::TaskEnded {
                task: t,
                outcome: Ok(1),
                blocks_added: vec![],
                blocks_evicted: vec![held_by_b],
                shuffle: ShuffleReport::None,
            },
        );
        assert!(s.blocks.is_empty());
        let l = launches(&cached(&mut s, 5, 2, vec![vec![block(0)]]));
        assert_eq!(l[0].executor, "b");
    }

    #[test]
    fn the_starvation_warning_repeats_until_a_task_launches() {
        let mut s = Scheduler::new(conf());
        job(&mut s, 1000, 1, 1);
        assert_eq!(s.next_wakeup(), Some(16_000));
        assert!(s.handle(15_999, Event::Tick).is_empty());
        let fx = s.handle(16_000, Event::Tick);
        assert_eq!(fx, vec![Effect::Warn(NO_RESOURCES_WARNING.into())]);
        assert!(s.handle(20_000, Event::Tick).is_empty());
        assert_eq!(
            s.handle(31_000, Event::Tick),
            vec![Effect::Warn(NO_RESOURCES_WARNING.into())]
        );
        let fx = exec(&mut s, 32_000, "a", 1);
        assert_eq!(launches(&fx).len(), 1);
        assert!(s.handle(100_000, Event::Tick).is_empty());
        assert_eq!(s.next_wakeup(), None);
    }

    #[test]
    fn results_over_the_limit_fail_the_job() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 2);
        let l = launches(&job(&mut s, 0, 1, 2));
        let fx = ok(&mut s, 1, l[0].task, 600);
        assert!(matches!(fx[0], Effect::TaskSucceeded { first: true, .. }));
        let fx = ok(&mut s, 1, l[1].task, 600);
        assert_eq!(
            fx,
            vec![Effect::JobFailed(
                1,
                JobFailure::ResultTooLarge {
                    size: 1200,
                    limit: 1000
                }
            )]
        );
    }

    #[test]
    fn a_child_stage_starts_when_its_parent_is_complete() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 4);
        let fx = s.handle(
            0,
            Event::SubmitJob {
                job: 1,
                stages: vec![
                    StageSpec {
                        id: 1,
                        parents: vec![],
                        partitions: vec![0, 1],
                        blocks: vec![],
                        shuffle: None,
                    },
                    StageSpec {
                        id: 2,
                        parents: vec![1],
                        partitions: vec![0, 1, 2],
                        blocks: vec![],
                        shuffle: None,
                    },
                ],
            },
        );
        let l = launches(&fx);
        assert!(l.iter().all(|l| l.stage == 1) && l.len() == 2);
        let fx = ok(&mut s, 1, l[0].task, 1);
        assert!(launches(&fx).is_empty());
        assert!(matches!(
            fx[0],
            Effect::TaskSucceeded {
                result: false,
                first: true,
                ..
            }
        ));
        let l2 = launches(&ok(&mut s, 2, l[1].task, 1));
        assert_eq!(
            l2.iter()
                .map(|l| (l.stage, l.partition))
                .collect::<Vec<_>>(),
            vec![(2, 0), (2, 1), (2, 2)]
        );
    }

    #[test]
    fn a_cancelled_job_s_tasks_are_killed_and_their_results_ignored() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        let l = launches(&job(&mut s, 0, 1, 2));
        let fx = s.handle(
            1,
            Event::CancelJob {
                job: 1,
                reason: "stop".into(),
            },
        );
        assert_eq!(
            fx,
            vec![
                Effect::KillTasks(vec![("a".into(), l[0].task)]),
                Effect::JobFailed(1, JobFailure::Cancelled("stop".into()))
            ]
        );
        // The core stays busy until the killed task ends; then the next job gets it.
        assert!(launches(&job(&mut s, 2, 2, 1)).is_empty());
        let fx = ok(&mut s, 3, l[0].task, 1);
        assert_eq!(launches(&fx)[0].job, 2);
        assert!(!fx
            .iter()
            .any(|e| matches!(e, Effect::TaskSucceeded { job: 1, .. })));
    }

    #[test]
    fn unpersisting_removes_blocks_where_they_are() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        let l = launches(&cached(&mut s, 0, 1, vec![vec![block(0)]]));
        s.handle(
            1,
            Event::TaskEnded {
                task: l[0].task,
                outcome: Ok(1),
                blocks_added: vec![block(0)],
                blocks_evicted: vec![],
                shuffle: ShuffleReport::None,
            },
        );
        let fx = s.handle(2, Event::CacheRemoved { cache: 7 });
        assert_eq!(
            fx,
            vec![Effect::RemoveBlocks {
                executor: "a".into(),
                cache: 7
            }]
        );
        assert!(s.blocks.is_empty());
    }

    #[test]
    fn a_silent_executor_expires_and_its_tasks_run_elsewhere() {
        let mut s = Scheduler::new(SchedulerConf {
            executor_timeout_ms: 1000,
            ..conf()
        });
        exec(&mut s, 0, "a", 1);
        exec(&mut s, 0, "b", 1);
        let l = launches(&job(&mut s, 0, 1, 2));
        assert_eq!(l.len(), 2);
        let on_b = l.iter().find(|l| l.executor == "b").unwrap().task;
        // b heartbeats, a stays silent.
        s.handle(600, Event::Heartbeat { id: "b".into() });
        assert_eq!(s.next_wakeup(), Some(1000));
        assert!(s.handle(1000, Event::Tick).is_empty());
        let fx = s.handle(1001, Event::Tick);
        let relaunched = launches(&fx);
        assert_eq!(relaunched.len(), 0, "b is busy: {fx:?}");
        assert!(
            fx.contains(&Effect::KillExecutor {
                executor: "a".into(),
                reason: "executor heartbeat timed out after 1001 ms".into()
            }),
            "{fx:?}"
        );
        // b's status is also a sign of life; a's partition goes to b.
        let fx = ok(&mut s, 1500, on_b, 1);
        let l2 = launches(&fx);
        assert_eq!((l2[0].executor.as_str(), l2[0].attempt), ("b", 1));
        assert!(s.handle(2400, Event::Tick).is_empty(), "b was seen at 1500");
    }

    // ---- shuffles ----

    /// A job of one map stage (`maps` partitions writing shuffle 5) and a result
    /// stage of `reduces` partitions reading it.
    fn shuffle_job(
        s: &mut Scheduler,
        now: u64,
        job: JobId,
        maps: u32,
        reduces: u32,
    ) -> Vec<Effect> {
        s.handle(
            now,
            Event::SubmitJob {
                job,
                stages: vec![
                    StageSpec {
                        id: job * 10,
                        parents: vec![],
                        partitions: (0..maps).collect(),
                        blocks: vec![],
                        shuffle: Some(5),
                    },
                    StageSpec {
                        id: job * 10 + 1,
                        parents: vec![job * 10],
                        partitions: (0..reduces).collect(),
                        blocks: vec![],
                        shuffle: None,
                    },
                ],
            },
        )
    }

    fn written(s: &mut Scheduler, now: u64, task: TaskId) -> Vec<Effect> {
        s.handle(
            now,
            Event::TaskEnded {
                task,
                outcome: Ok(8),
                blocks_added: vec![],
                blocks_evicted: vec![],
                shuffle: ShuffleReport::Written {
                    server: "s".into(),
                    blocks: vec![BlockMeta::default(); 2],
                },
            },
        )
    }

    fn fetch_failed(
        s: &mut Scheduler,
        now: u64,
        task: TaskId,
        map: u32,
        executor: &str,
        unreachable: bool,
    ) -> Vec<Effect> {
        s.handle(
            now,
            Event::TaskEnded {
                task,
                outcome: Err(format!("fetch failed: map {map}")),
                blocks_added: vec![],
                blocks_evicted: vec![],
                shuffle: ShuffleReport::FetchFailed(FetchFailed {
                    shuffle: 5,
                    map,
                    executor: executor.into(),
                    unreachable,
                    reason: "gone".into(),
                }),
            },
        )
    }

    /// Runs every map task of the launches in `fx` to success; returns the launches
    /// that follow (the reduce stage's).
    fn finish_maps(s: &mut Scheduler, now: u64, fx: &[Effect]) -> Vec<Launch> {
        let mut next = launches(fx);
        let mut reduces = Vec::new();
        while let Some(l) = next.pop() {
            if s.is_map_stage(l.job, l.stage) {
                next.extend(launches(&written(s, now, l.task)));
            } else {
                reduces.push(l);
            }
        }
        reduces.sort_by_key(|l| l.partition);
        reduces
    }

    fn maps_at(s: &Scheduler) -> Vec<Option<String>> {
        s.map_outputs(5)
            .unwrap()
            .iter()
            .map(|o| o.as_ref().map(|m| m.executor.clone()))
            .collect()
    }

    #[test]
    fn a_reduce_stage_runs_after_its_map_stage_and_a_later_job_skips_the_map_stage() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 2);
        exec(&mut s, 0, "b", 2);
        let fx = shuffle_job(&mut s, 0, 1, 4, 2);
        assert!(launches(&fx).iter().all(|l| l.stage == 10));
        let reduces = finish_maps(&mut s, 1, &fx);
        assert_eq!(reduces.len(), 2);
        assert_eq!(maps_at(&s).iter().filter(|m| m.is_some()).count(), 4);
        assert_eq!(
            s.map_outputs(5).unwrap()[0].as_ref().unwrap().blocks.len(),
            2
        );
        ok(&mut s, 2, reduces[0].task, 1);
        let fx = ok(&mut s, 2, reduces[1].task, 1);
        assert!(fx.contains(&Effect::JobSucceeded(1)), "{fx:?}");
        // The next job on the same shuffle: only its result stage runs.
        let l = launches(&shuffle_job(&mut s, 3, 2, 4, 2));
        assert_eq!(l.iter().map(|l| l.stage).collect::<Vec<_>>(), vec![21, 21]);
    }

    #[test]
    fn a_corrupt_output_reruns_only_that_map_task_then_the_reduce_partition() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 2);
        exec(&mut s, 0, "b", 2);
        let fx = shuffle_job(&mut s, 0, 1, 4, 2);
        let reduces = finish_maps(&mut s, 1, &fx);
        let at = maps_at(&s)[2].clone().unwrap();
        let fx = fetch_failed(&mut s, 2, reduces[0].task, 2, &at, false);
        let l = launches(&fx);
        assert_eq!(l.len(), 1, "{fx:?}");
        assert_eq!((l[0].stage, l[0].partition, l[0].attempt), (10, 2, 1));
        // The other reduce task of the same stage attempt fails on it too: no second
        // stage attempt is counted and nothing more runs yet.
        let fx = fetch_failed(&mut s, 2, reduces[1].task, 2, &at, false);
        assert!(launches(&fx).is_empty(), "{fx:?}");
        let again = launches(&written(&mut s, 3, l[0].task));
        assert_eq!(
            again
                .iter()
                .map(|l| (l.stage, l.partition))
                .collect::<Vec<_>>(),
            vec![(11, 0), (11, 1)]
        );
        ok(&mut s, 4, again[0].task, 1);
        let fx = ok(&mut s, 4, again[1].task, 1);
        assert!(fx.contains(&Effect::JobSucceeded(1)), "{fx:?}");
    }

    #[test]
    fn an_unreachable_executor_loses_all_its_outputs_without_the_shuffle_service() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 2);
        exec(&mut s, 0, "b", 2);
        let fx = shuffle_job(&mut s, 0, 1, 4, 1);
        let reduces = finish_maps(&mut s, 1, &fx);
        let on_a = maps_at(&s)
            .iter()
            .filter(|m| m.as_deref() == Some("a"))
            .count();
        assert!(on_a > 0);
        let map_on_a = maps_at(&s)
            .iter()
            .position(|m| m.as_deref() == Some("a"))
            .unwrap() as u32;
        let fx = fetch_failed(&mut s, 2, reduces[0].task, map_on_a, "a", true);
        assert_eq!(launches(&fx).len(), on_a, "{fx:?}");
        assert!(maps_at(&s).iter().all(|m| m.as_deref() != Some("a")));
    }

    #[test]
    fn a_stage_failing_fetches_max_consecutive_attempts_times_fails_its_job() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 1);
        let mut fx = shuffle_job(&mut s, 0, 1, 1, 1);
        for round in 0..4 {
            let reduces = finish_maps(&mut s, 1, &fx);
            assert_eq!(reduces.len(), 1, "round {round}");
            fx = fetch_failed(&mut s, 2, reduces[0].task, 0, "a", false);
        }
        let Some(Effect::JobFailed(
            1,
            JobFailure::Task {
                stage, attempts, ..
            },
        )) = fx.last()
        else {
            panic!("{fx:?}")
        };
        assert_eq!(*stage, 11);
        assert_eq!(attempts.len(), 4);
        assert!(attempts[3].starts_with("stage attempt 4"), "{attempts:?}");
        assert!(attempts[3].contains("fetch failed: map 0"), "{attempts:?}");
    }

    #[test]
    fn a_lost_executor_keeps_its_outputs_only_with_the_shuffle_service() {
        for service in [false, true] {
            let mut s = Scheduler::new(SchedulerConf {
                shuffle_service: service,
                ..conf()
            });
            exec(&mut s, 0, "a", 2);
            exec(&mut s, 0, "b", 2);
            let fx = shuffle_job(&mut s, 0, 1, 4, 1);
            let reduces = finish_maps(&mut s, 1, &fx);
            let on_a = maps_at(&s)
                .iter()
                .filter(|m| m.as_deref() == Some("a"))
                .count();
            // The reduce task runs on b; a goes away.
            let reduce_on_a = reduces[0].executor == "a";
            let fx = s.handle(
                2,
                Event::ExecutorLost {
                    id: "a".into(),
                    reason: "SIGKILL".into(),
                },
            );
            let l = launches(&fx);
            let maps: Vec<&Launch> = l.iter().filter(|l| l.stage == 10).collect();
            if service {
                assert!(maps.is_empty(), "{fx:?}");
                assert_eq!(maps_at(&s).iter().filter(|m| m.is_some()).count(), 4);
            } else {
                assert_eq!(maps.len(), on_a.min(2), "{fx:?}");
                assert!(maps.iter().all(|l| l.executor == "b"));
            }
            let _ = reduce_on_a;
        }
    }

    #[test]
    fn a_lost_worker_loses_its_outputs_even_with_the_shuffle_service_and_only_its_own() {
        let mut s = Scheduler::new(SchedulerConf {
            shuffle_service: true,
            ..conf()
        });
        exec(&mut s, 0, "a", 2);
        exec(&mut s, 0, "b", 2);
        let fx = shuffle_job(&mut s, 0, 1, 4, 1);
        finish_maps(&mut s, 1, &fx);
        let on_b = maps_at(&s)
            .iter()
            .filter(|m| m.as_deref() == Some("b"))
            .count();
        assert!(on_b > 0);
        s.handle(
            2,
            Event::WorkerLost {
                executors: vec!["a".into(), "gone-long-ago".into()],
            },
        );
        assert!(maps_at(&s).iter().all(|m| m.as_deref() != Some("a")));
        assert!(maps_at(&s).iter().any(Option::is_none));
        // The other worker's outputs and executor stay (even on the same host).
        assert_eq!(
            maps_at(&s)
                .iter()
                .filter(|m| m.as_deref() == Some("b"))
                .count(),
            on_b
        );
        assert!(s.executors.contains_key("b") && !s.executors.contains_key("a"));
    }

    #[test]
    fn a_removed_shuffle_is_deleted_and_computed_again_when_needed() {
        let mut s = Scheduler::new(conf());
        exec(&mut s, 0, "a", 2);
        let fx = shuffle_job(&mut s, 0, 1, 2, 1);
        let r = finish_maps(&mut s, 1, &fx);
        ok(&mut s, 2, r[0].task, 1);
        assert_eq!(
            s.handle(3, Event::ShuffleRemoved { shuffle: 5 }),
            vec![Effect::RemoveShuffle { shuffle: 5 }]
        );
        assert!(s.handle(3, Event::ShuffleRemoved { shuffle: 5 }).is_empty());
        let l = launches(&shuffle_job(&mut s, 4, 2, 2, 1));
        assert!(l.iter().all(|l| l.stage == 20) && l.len() == 2);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            Submit(u32),
            Add(u8, u32),
            Lose(u8),
            EndOk(usize),
            EndErr(usize),
            Tick(u64),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (1u32..5).prop_map(Step::Submit),
                (0u8..3, 1u32..3).prop_map(|(e, c)| Step::Add(e, c)),
                (0u8..3).prop_map(Step::Lose),
                any::<usize>().prop_map(Step::EndOk),
                any::<usize>().prop_map(Step::EndErr),
                (0u64..5000).prop_map(Step::Tick),
            ]
        }

        proptest! {
            /// Over any sequence of events: cores never over-booked, one running attempt
            /// per partition at a time, each partition reported first at most once, and
            /// a job ends at most once.
            #[test]
            fn invariants_hold(steps in proptest::collection::vec(step(), 1..80)) {
                let mut s = Scheduler::new(SchedulerConf { max_failures: 3, locality_wait_ms: 100, starvation_timeout_ms: 1000, max_result_size: 0, executor_timeout_ms: 2000, shuffle_service: false, max_stage_attempts: 4 });
                let mut now = 0;
                let mut next_job = 1;
                let mut running: Vec<Launch> = Vec::new();
                let mut cores: BTreeMap<String, u32> = BTreeMap::new();
                let mut firsts = BTreeSet::new();
                let mut ended = BTreeSet::new();
                for st in steps {
                    let fx = match st {
                        Step::Submit(n) => { next_job += 1; job(&mut s, now, next_job, n) }
                        Step::Add(e, c) => {
                            let id = format!("e{e}");
                            if cores.contains_key(&id) { continue; }
                            cores.insert(id.clone(), c);
                            exec(&mut s, now, &id, c)
                        }
                        Step::Lose(e) => {
                            let id = format!("e{e}");
                            cores.remove(&id);
                            running.retain(|l| l.executor != id);
                            s.handle(now, Event::ExecutorLost { id, reason: "x".into() })
                        }
                        Step::EndOk(i) | Step::EndErr(i) if running.is_empty() => { let _ = i; continue; }
                        Step::EndOk(i) => { let l = running.remove(i % running.len()); ok(&mut s, now, l.task, 1) }
                        Step::EndErr(i) => { let l = running.remove(i % running.len()); fail(&mut s, now, l.task, "e") }
                        Step::Tick(d) => { now += d; s.handle(now, Event::Tick) }
                    };
                    for e in &fx {
                        match e {
                            Effect::Launch(ls) => running.extend(ls.iter().cloned()),
                            Effect::KillExecutor { executor, .. } => {
                                running.retain(|l| &l.executor != executor);
                                cores.remove(executor);
                            }
                            Effect::TaskSucceeded { job, partition, first: true, .. } => {
                                prop_assert!(firsts.insert((*job, *partition)), "first twice: {e:?}");
                            }
                            Effect::JobSucceeded(j) | Effect::JobFailed(j, _) => {
                                prop_assert!(ended.insert(*j), "job ended twice: {e:?}");
                            }
                            _ => {}
                        }
                    }
                    for (id, c) in &cores {
                        let n = running.iter().filter(|l| &l.executor == id).count() as u32;
                        prop_assert!(n <= *c, "{id} runs {n} tasks on {c} cores");
                    }
                    let live: Vec<(JobId, u32)> = running.iter().filter(|l| !ended.contains(&l.job)).map(|l| (l.job, l.partition)).collect();
                    let unique: BTreeSet<_> = live.iter().collect();
                    prop_assert_eq!(unique.len(), live.len(), "two live attempts of one partition");
                }
            }
        }
    }
}
