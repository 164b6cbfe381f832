//! The driver's record of its jobs, stages and task attempts, after Spark's
//! `AppStatusStore`: a pure structure the scheduler's shell feeds with what it sees
//! (a job submitted, tasks launched, tasks ended, an executor lost, a job's end) and
//! the UI and the console progress bar read. Bounded: at most `ui.retained_jobs`
//! finished jobs (their stages go with them) and `ui.retained_tasks` task records per
//! stage (the oldest dropped; counters keep counting).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::scheduler::{JobId, StageId, TaskId};

/// A job's, stage's or task's state, as Spark's REST API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Submitted, waiting for its parents (stages only).
    Pending,
    /// Running.
    Running,
    /// Finished well.
    Succeeded,
    /// Failed.
    Failed,
    /// Stopped because its job ended (tasks only).
    Killed,
}

/// One task attempt.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    /// The task's id (unique per attempt).
    pub task_id: TaskId,
    /// The partition it computes (Spark's `index`).
    pub index: u32,
    /// 0 for the first attempt of the partition.
    pub attempt: u32,
    /// The executor it ran on.
    #[serde(serialize_with = "as_str")]
    pub executor_id: Arc<str>,
    /// Its state.
    pub status: Status,
    /// When it launched (milliseconds since the Unix epoch).
    pub launch_time: u64,
    /// How long it ran, once ended (milliseconds).
    pub duration: Option<u64>,
    /// Why it failed.
    pub error_message: Option<String>,
}

fn as_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

/// One stage (Spark's stage data, without the metrics).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRecord {
    /// The stage's id.
    pub stage_id: StageId,
    /// Its attempt (stages are not retried yet: 0).
    pub attempt_id: u32,
    /// Its job.
    pub job_id: JobId,
    /// Its state.
    pub status: Status,
    /// Its partitions.
    pub num_tasks: u32,
    /// Attempts running now.
    pub num_active_tasks: u32,
    /// Attempts that succeeded.
    pub num_complete_tasks: u32,
    /// Attempts that failed.
    pub num_failed_tasks: u32,
    /// Attempts killed.
    pub num_killed_tasks: u32,
    /// Task records dropped past `ui.retained_tasks`.
    pub num_dropped_tasks: u64,
    /// When its first task launched (ms since the epoch).
    pub submission_time: Option<u64>,
    /// When it ended (ms since the epoch).
    pub completion_time: Option<u64>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Its tasks, by task id (only in `/stages/<id>`).
    #[serde(skip)]
    pub tasks: BTreeMap<TaskId, TaskRecord>,
}

/// One job.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// The job's id.
    pub job_id: JobId,
    /// Its state.
    pub status: Status,
    /// Its stages.
    pub stage_ids: Vec<StageId>,
    /// Partitions over all its stages.
    pub num_tasks: u32,
    /// Attempts running now.
    pub num_active_tasks: u32,
    /// Attempts that succeeded.
    pub num_completed_tasks: u32,
    /// Attempts that failed.
    pub num_failed_tasks: u32,
    /// Attempts killed.
    pub num_killed_tasks: u32,
    /// Stages complete.
    pub num_completed_stages: u32,
    /// When it was submitted (ms since the epoch).
    pub submission_time: u64,
    /// When it ended (ms since the epoch).
    pub completion_time: Option<u64>,
    /// Why it failed.
    pub failure_reason: Option<String>,
}

/// The parts of a launch a record needs.
struct LaunchRef {
    task: TaskId,
    job: JobId,
    stage: StageId,
    partition: u32,
    attempt: u32,
}

/// A running attempt: where its record is.
#[derive(Debug, Clone)]
struct Running {
    job: JobId,
    stage: StageId,
    executor: Arc<str>,
    launched: u64,
}

/// The driver's jobs, stages and tasks; see the [module docs](self).
#[derive(Debug)]
pub struct AppStatus {
    /// The application's id.
    pub app_id: String,
    /// The application's name.
    pub app_name: String,
    /// When the context started (ms since the epoch).
    pub start_time: u64,
    retained_jobs: usize,
    retained_tasks: usize,
    jobs: BTreeMap<JobId, JobRecord>,
    stages: BTreeMap<StageId, StageRecord>,
    running: HashMap<TaskId, Running>,
    dropped_jobs: u64,
}

impl AppStatus {
    /// An empty record keeping at most `retained_jobs` finished jobs and
    /// `retained_tasks` task records per stage.
    pub fn new(
        app_name: &str,
        start_time: u64,
        retained_jobs: usize,
        retained_tasks: usize,
    ) -> Self {
        AppStatus {
            app_id: String::new(),
            app_name: app_name.to_string(),
            start_time,
            retained_jobs,
            retained_tasks,
            jobs: BTreeMap::new(),
            stages: BTreeMap::new(),
            running: HashMap::new(),
            dropped_jobs: 0,
        }
    }

    /// A job was submitted with these stages.
    #[cfg(test)]
    pub fn job_submitted(&mut self, job: JobId, stages: &[crate::scheduler::StageSpec], now: u64) {
        let sizes: Vec<(StageId, u32)> = stages
            .iter()
            .map(|s| (s.id, u32::try_from(s.partitions.len()).unwrap_or(u32::MAX)))
            .collect();
        self.job_submitted_sizes(job, &sizes, now);
    }

    /// A job was submitted with these stages: (id, partitions) each.
    pub fn job_submitted_sizes(&mut self, job: JobId, stages: &[(StageId, u32)], now: u64) {
        let mut num_tasks = 0u32;
        for &(id, n) in stages {
            num_tasks = num_tasks.saturating_add(n);
            self.stages.insert(
                id,
                StageRecord {
                    stage_id: id,
                    attempt_id: 0,
                    job_id: job,
                    status: Status::Pending,
                    num_tasks: n,
                    num_active_tasks: 0,
                    num_complete_tasks: 0,
                    num_failed_tasks: 0,
                    num_killed_tasks: 0,
                    num_dropped_tasks: 0,
                    submission_time: None,
                    completion_time: None,
                    failure_reason: None,
                    tasks: BTreeMap::new(),
                },
            );
        }
        self.jobs.insert(
            job,
            JobRecord {
                job_id: job,
                status: Status::Running,
                stage_ids: stages.iter().map(|s| s.0).collect(),
                num_tasks,
                num_active_tasks: 0,
                num_completed_tasks: 0,
                num_failed_tasks: 0,
                num_killed_tasks: 0,
                num_completed_stages: 0,
                submission_time: now,
                completion_time: None,
                failure_reason: None,
            },
        );
        self.trim_jobs();
    }

    /// A task attempt launched.
    #[cfg(test)]
    pub fn launched(&mut self, l: &crate::scheduler::Launch, now: u64) {
        let executor: Arc<str> = Arc::from(l.executor.as_str());
        self.launched_on(
            l.task,
            l.job,
            l.stage,
            l.partition,
            l.attempt,
            executor,
            now,
        );
    }

    /// A task attempt launched on `executor`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launched_on(
        &mut self,
        task: TaskId,
        job: JobId,
        stage: StageId,
        partition: u32,
        attempt: u32,
        executor: Arc<str>,
        now: u64,
    ) {
        let l = LaunchRef {
            task,
            job,
            stage,
            partition,
            attempt,
        };
        let Some(stage) = self.stages.get_mut(&l.stage) else {
            return;
        };
        stage.status = Status::Running;
        stage.submission_time.get_or_insert(now);
        stage.num_active_tasks += 1;
        stage.tasks.insert(
            l.task,
            TaskRecord {
                task_id: l.task,
                index: l.partition,
                attempt: l.attempt,
                executor_id: executor.clone(),
                status: Status::Running,
                launch_time: now,
                duration: None,
                error_message: None,
            },
        );
        if stage.tasks.len() > self.retained_tasks {
            // Drop the oldest records, finished ones first as Spark does.
            let oldest_done = stage
                .tasks
                .iter()
                .find(|(_, t)| t.status != Status::Running)
                .map(|(id, _)| *id);
            let victim = oldest_done.or_else(|| stage.tasks.keys().next().copied());
            if let Some(v) = victim {
                stage.tasks.remove(&v);
                stage.num_dropped_tasks += 1;
            }
        }
        if let Some(j) = self.jobs.get_mut(&l.job) {
            j.num_active_tasks += 1;
        }
        self.running.insert(
            l.task,
            Running {
                job: l.job,
                stage: l.stage,
                executor,
                launched: now,
            },
        );
    }

    /// A task attempt ended (results of attempts no longer running are ignored).
    pub fn task_ended(&mut self, task: TaskId, outcome: Result<(), &str>, now: u64) {
        let status = if outcome.is_ok() {
            Status::Succeeded
        } else {
            Status::Failed
        };
        self.end_task(task, status, outcome.err().map(str::to_string), now);
    }

    /// An executor is gone: its running attempts failed.
    pub fn executor_lost(&mut self, executor: &str, reason: &str, now: u64) {
        let tasks: Vec<TaskId> = self
            .running
            .iter()
            .filter(|(_, r)| &*r.executor == executor)
            .map(|(t, _)| *t)
            .collect();
        for t in tasks {
            let error = format!("executor {executor} lost: {reason}");
            self.end_task(t, Status::Failed, Some(error), now);
        }
    }

    fn end_task(&mut self, task: TaskId, status: Status, error: Option<String>, now: u64) {
        let Some(r) = self.running.remove(&task) else {
            return;
        };
        if let Some(j) = self.jobs.get_mut(&r.job) {
            j.num_active_tasks = j.num_active_tasks.saturating_sub(1);
            match status {
                Status::Succeeded => j.num_completed_tasks += 1,
                Status::Failed => j.num_failed_tasks += 1,
                _ => j.num_killed_tasks += 1,
            }
        }
        let Some(stage) = self.stages.get_mut(&r.stage) else {
            return;
        };
        stage.num_active_tasks = stage.num_active_tasks.saturating_sub(1);
        match status {
            Status::Succeeded => stage.num_complete_tasks += 1,
            Status::Failed => stage.num_failed_tasks += 1,
            _ => stage.num_killed_tasks += 1,
        }
        if let Some(t) = stage.tasks.get_mut(&task) {
            t.status = status;
            t.duration = Some(now.saturating_sub(r.launched));
            t.error_message = error;
        }
    }

    /// A job ended: `None` when it succeeded, else why it failed. Its attempts still
    /// running are killed; its stages end with it.
    pub fn job_ended(&mut self, job: JobId, failure: Option<String>, now: u64) {
        let running: Vec<TaskId> = self
            .running
            .iter()
            .filter(|(_, r)| r.job == job)
            .map(|(t, _)| *t)
            .collect();
        for t in running {
            self.end_task(t, Status::Killed, None, now);
        }
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        j.status = if failure.is_some() {
            Status::Failed
        } else {
            Status::Succeeded
        };
        j.completion_time = Some(now);
        j.failure_reason = failure.clone();
        let mut completed = 0;
        for id in &j.stage_ids {
            if let Some(s) = self.stages.get_mut(id) {
                // A stage whose partitions all succeeded is complete even in a failed job.
                if s.num_complete_tasks >= s.num_tasks {
                    s.status = Status::Succeeded;
                    completed += 1;
                } else if failure.is_some() {
                    s.status = Status::Failed;
                    s.failure_reason = failure.clone();
                }
                s.completion_time = Some(now);
            }
        }
        j.num_completed_stages = completed;
        self.trim_jobs();
    }

    /// Drops the oldest finished jobs (and their stages) past `retained_jobs`.
    fn trim_jobs(&mut self) {
        while self.jobs.len() > self.retained_jobs {
            let Some(oldest) = self
                .jobs
                .iter()
                .find(|(_, j)| j.status != Status::Running)
                .map(|(id, _)| *id)
            else {
                break;
            };
            if let Some(j) = self.jobs.remove(&oldest) {
                for s in j.stage_ids {
                    self.stages.remove(&s);
                }
                self.dropped_jobs += 1;
            }
        }
    }

    /// Jobs, newest first (as Spark lists them).
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values().rev()
    }

    /// One job.
    pub fn job(&self, job: JobId) -> Option<&JobRecord> {
        self.jobs.get(&job)
    }

    /// Stages, newest first.
    pub fn stages(&self) -> impl Iterator<Item = &StageRecord> {
        self.stages.values().rev()
    }

    /// One stage.
    pub fn stage(&self, stage: StageId) -> Option<&StageRecord> {
        self.stages.get(&stage)
    }

    /// Finished jobs dropped past `ui.retained_jobs`.
    pub fn dropped_jobs(&self) -> u64 {
        self.dropped_jobs
    }

    /// Attempts running now.
    pub fn running_tasks(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Launch, StageSpec};

    fn spec(id: StageId, n: u32) -> StageSpec {
        StageSpec {
            id,
            parents: vec![],
            partitions: (0..n).collect(),
            blocks: vec![vec![]; n as usize],
            shuffle: None,
        }
    }

    fn launch(task: TaskId, job: JobId, stage: StageId, partition: u32, attempt: u32) -> Launch {
        Launch {
            task,
            job,
            stage,
            partition,
            attempt,
            executor: "e1".into(),
        }
    }

    #[test]
    fn a_retried_attempt_keeps_the_first_error() {
        let mut s = AppStatus::new("t", 0, 10, 10);
        s.job_submitted(0, &[spec(1, 1)], 5);
        s.launched(&launch(10, 0, 1, 0, 0), 6);
        s.task_ended(10, Err("boom"), 7);
        s.launched(&launch(11, 0, 1, 0, 1), 8);
        s.task_ended(11, Ok(()), 9);
        s.job_ended(0, None, 10);
        let st = s.stage(1).unwrap();
        assert_eq!(st.tasks.len(), 2);
        assert_eq!(st.tasks[&10].error_message.as_deref(), Some("boom"));
        assert_eq!(st.tasks[&11].status, Status::Succeeded);
        assert_eq!((st.num_complete_tasks, st.num_failed_tasks), (1, 1));
        assert_eq!(st.status, Status::Succeeded);
        assert_eq!(s.job(0).unwrap().status, Status::Succeeded);
    }

    #[test]
    fn a_lost_executor_fails_its_running_attempts_and_late_results_are_ignored() {
        let mut s = AppStatus::new("t", 0, 10, 10);
        s.job_submitted(0, &[spec(1, 2)], 0);
        s.launched(&launch(1, 0, 1, 0, 0), 0);
        s.launched(&launch(2, 0, 1, 1, 0), 0);
        s.executor_lost("e1", "gone", 1);
        s.task_ended(1, Ok(()), 2);
        let st = s.stage(1).unwrap();
        assert_eq!(st.num_failed_tasks, 2);
        assert_eq!(st.num_complete_tasks, 0);
        assert!(st.tasks[&1]
            .error_message
            .as_deref()
            .unwrap()
            .contains("e1 lost: gone"));
        assert_eq!(s.running_tasks(), 0);
    }

    #[test]
    fn old_finished_jobs_and_task_records_are_dropped() {
        let mut s = AppStatus::new("t", 0, 2, 3);
        for j in 0..5u64 {
            s.job_submitted(j, &[spec(100 + j, 5)], j);
            for p in 0..5 {
                s.launched(&launch(j * 10 + u64::from(p), j, 100 + j, p, 0), j);
                s.task_ended(j * 10 + u64::from(p), Ok(()), j);
            }
            s.job_ended(j, if j == 4 { Some("x".into()) } else { None }, j);
        }
        let ids: Vec<JobId> = s.jobs().map(|j| j.job_id).collect();
        assert_eq!(ids, vec![4, 3]);
        assert_eq!(s.dropped_jobs(), 3);
        assert!(s.stage(100).is_none());
        let st = s.stage(104).unwrap();
        assert_eq!(st.tasks.len(), 3);
        assert_eq!(st.num_dropped_tasks, 2);
        assert_eq!(st.num_complete_tasks, 5);
        assert_eq!(s.job(4).unwrap().status, Status::Failed);
        assert_eq!(s.job(4).unwrap().failure_reason.as_deref(), Some("x"));
    }
}
