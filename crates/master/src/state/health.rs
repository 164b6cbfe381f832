//! Bad workers isolated: executors that fail quickly count against the
//! worker they failed on, and relaunches back off.
//!
//! A *quick failure* is an executor that ended abnormally (not exit 0, not
//! after being decommissioned) before it had stayed RUNNING for
//! `executor_stable_ms`: it could not start, or started and died at once.
//! Spark's master counts these only per application and keeps choosing the
//! same worker, so one worker with a read-only or full disk uses up an app's
//! ten retries in a millisecond while a healthy worker idles. flint:
//!
//! - **per application and worker**: after `max_failures_per_worker` quick
//!   failures of an app's executors on a worker, the app gets no more
//!   executors there; workers where it failed less are tried first;
//! - **per application**: after each failure the app waits
//!   `relaunch_backoff_initial_ms`, doubling with every failure in a row (its
//!   retry count) up to `relaunch_backoff_max_ms`, before it gets another
//!   executor anywhere;
//! - **per worker**: a worker is *unhealthy* when the evidence says the
//!   worker, not the app, is at fault: an app excluded from it runs on
//!   another worker, or quick failures there (at least
//!   `max_failures_per_worker`) come from [`UNHEALTHY_AFTER_APPS`] or more
//!   apps. It then gets no new executors of any app for
//!   `worker_backoff_initial_ms`, doubling every time it is found unhealthy
//!   again (an executor launched after its back-off fails too), up to
//!   `worker_backoff_max_ms`. The status shows why. An executor that stays
//!   RUNNING there for `executor_stable_ms` makes it healthy again.
//!
//! An application fails when its retries run out (as before, now spread
//! over the back-off) or when every ALIVE worker that could hold one of its
//! executors excludes it; one bad worker beside a healthy one never fails it.
//! Back-offs end on the first [`Event::Tick`](super::Event::Tick) after their
//! deadline, which then runs placement.

use flint_types::log::Logs as _;
use std::collections::BTreeSet;

use flint_proto::{AppId, ExecutorState, WorkerId, WorkerState};

use super::config::backoff_ms;
use super::{human_duration, Effect, MasterState, Now};

/// How many applications must have failed on a worker (with at least
/// `max_failures_per_worker` quick failures in all) before that alone makes
/// it unhealthy. One app failing everywhere is the app's fault.
pub const UNHEALTHY_AFTER_APPS: u32 = 2;

/// Quick failures of one application's executors on one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct AppWorkerFailures {
    /// How many.
    pub count: u32,
    /// What the last one said.
    pub last_failure: String,
}

/// Whether executor launches on a worker keep failing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct WorkerHealth {
    /// Quick failures here since an executor last proved stable here.
    pub failures: u32,
    /// How many applications those failures were of.
    pub apps_failed: u32,
    /// Those of them that are still active.
    pub failing_apps: BTreeSet<AppId>,
    /// What the last one said.
    pub last_failure: Option<String>,
    /// Why the worker is unhealthy (shown in the status); `None` while it is
    /// healthy.
    pub unhealthy: Option<String>,
    /// Times in a row it was found unhealthy: the back-off's exponent.
    pub strikes: u32,
    /// No new executors before this (monotonic ms).
    pub backoff_until_mono_ms: u64,
}

impl WorkerHealth {
    /// Whether the worker is in its back-off at `now`.
    pub fn backing_off(&self, now: Now) -> bool {
        now.mono_ms < self.backoff_until_mono_ms
    }

    /// Nothing has failed here since the last proof of health.
    pub fn is_clean(&self) -> bool {
        self.failures == 0 && self.unhealthy.is_none()
    }
}

/// How a failed executor's end reads in the status and logs:
/// `FAILED: <message> (exit status 1)`.
pub(super) fn failure_text(
    state: ExecutorState,
    message: Option<&str>,
    exit_status: Option<i32>,
) -> String {
    let mut text = state.to_string();
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        text.push_str(": ");
        text.push_str(m);
    }
    if let Some(code) = exit_status {
        text.push_str(&format!(" (exit status {code})"));
    }
    text
}

impl MasterState {
    /// The app's next executor waits for its relaunch back-off: the
    /// `retry_count`-th failure in a row waits `initial × 2^(retry_count − 1)`.
    pub(super) fn back_off_relaunch(&mut self, now: Now, app_id: &AppId, out: &mut Vec<Effect>) {
        let (initial, max) = (
            self.config.relaunch_backoff_initial_ms,
            self.config.relaunch_backoff_max_ms,
        );
        let Some(app) = self.apps.get_mut(app_id) else {
            return;
        };
        let delay = backoff_ms(initial, max, app.retry_count);
        app.relaunch_at_mono_ms = now.mono_ms.saturating_add(delay);
        let at = app.relaunch_at_mono_ms;
        let retries = app.retry_count;
        self.wakeups.insert(at);
        out.info(format!(
            "Relaunching executors of {app_id} in {} ({retries} failure(s) in a row)",
            human_duration(delay)
        ));
    }

    /// An executor of `app_id` launched on `worker_id` at `launched_mono_ms`
    /// failed quickly: counts it against the pair and the worker, excludes
    /// the worker for the app at `max_failures_per_worker`, and marks the
    /// worker unhealthy when the evidence points at it (see the module docs).
    pub(super) fn record_quick_failure(
        &mut self,
        now: Now,
        app_id: &AppId,
        worker_id: &WorkerId,
        launched_mono_ms: u64,
        text: &str,
        out: &mut Vec<Effect>,
    ) {
        let max = self.config.max_failures_per_worker;
        let Some(app) = self.apps.get_mut(app_id) else {
            return;
        };
        let pair = app.worker_failures.entry(worker_id.clone()).or_default();
        pair.count = pair.count.saturating_add(1);
        pair.last_failure = text.to_owned();
        let count = pair.count;
        let excluded = count >= max;
        let runs_on = app
            .executors
            .values()
            .find(|e| e.state == ExecutorState::Running && e.worker_id != *worker_id)
            .map(|e| e.worker_id.clone());
        if count == max {
            out.warn(format!(
                "Not placing executors of {app_id} on worker {worker_id} any more: {count} of \
                     them failed there (deploy.max_failures_per_worker = {max}); last: {text}"
            ));
        }
        let Some(worker) = self.workers.get_mut(worker_id) else {
            return;
        };
        let h = &mut worker.health;
        h.failures = h.failures.saturating_add(1);
        if h.failing_apps.insert(app_id.clone()) {
            h.apps_failed = h.apps_failed.saturating_add(1);
        }
        h.last_failure = Some(text.to_owned());
        let evidence = if h.unhealthy.is_some() {
            // Found unhealthy before: a launch after the back-off failing
            // too is the next strike; failures of earlier launches are not.
            (!h.backing_off(now) && launched_mono_ms >= h.backoff_until_mono_ms).then(|| {
                format!(
                    "an executor launched after its back-off failed too ({} failures since it \
                     was last healthy)",
                    h.failures
                )
            })
        } else if let (true, Some(other)) = (excluded, runs_on) {
            Some(format!(
                "{count} executors of {app_id} failed here while it runs on {other}"
            ))
        } else if h.apps_failed >= UNHEALTHY_AFTER_APPS && h.failures >= max {
            Some(format!(
                "{} executor launches failed here for {} applications",
                h.failures, h.apps_failed
            ))
        } else {
            None
        };
        if let Some(evidence) = evidence {
            self.mark_unhealthy(now, worker_id, &evidence, out);
        }
    }

    /// An executor of `app_id` reported RUNNING on `running_on`: the
    /// workers that excluded the app while failing it since they were last
    /// healthy are at fault, not the app.
    pub(super) fn blame_workers_excluding(
        &mut self,
        now: Now,
        app_id: &AppId,
        running_on: &WorkerId,
        out: &mut Vec<Effect>,
    ) {
        let max = self.config.max_failures_per_worker;
        let Some(app) = self.apps.get(app_id) else {
            return;
        };
        let blamed: Vec<(WorkerId, u32)> = app
            .worker_failures
            .iter()
            .filter(|(w, f)| f.count >= max && *w != running_on)
            .filter(|(w, _)| {
                self.workers.get(*w).is_some_and(|w| {
                    w.state != WorkerState::Dead
                        && w.health.unhealthy.is_none()
                        && w.health.failing_apps.contains(app_id)
                })
            })
            .map(|(w, f)| (w.clone(), f.count))
            .collect();
        for (worker_id, count) in blamed {
            let evidence =
                format!("{count} executors of {app_id} failed here while it runs on {running_on}");
            self.mark_unhealthy(now, &worker_id, &evidence, out);
        }
    }

    /// Marks the worker unhealthy (another strike if it was) and starts its
    /// back-off.
    fn mark_unhealthy(
        &mut self,
        now: Now,
        worker_id: &WorkerId,
        evidence: &str,
        out: &mut Vec<Effect>,
    ) {
        let (initial, max) = (
            self.config.worker_backoff_initial_ms,
            self.config.worker_backoff_max_ms,
        );
        let Some(worker) = self.workers.get_mut(worker_id) else {
            return;
        };
        let h = &mut worker.health;
        h.strikes = h.strikes.saturating_add(1);
        let backoff = backoff_ms(initial, max, h.strikes);
        h.backoff_until_mono_ms = now.mono_ms.saturating_add(backoff);
        let last = h.last_failure.as_deref().unwrap_or("unknown");
        let reason = format!(
            "{evidence}; last: {last}; no new executors for {}",
            human_duration(backoff)
        );
        h.unhealthy = Some(reason.clone());
        let until = h.backoff_until_mono_ms;
        self.wakeups.insert(until);
        out.warn(format!("Worker {worker_id} is unhealthy: {reason}"));
    }

    /// On every tick: back-offs whose deadline passed end, and placement
    /// runs for them.
    pub(super) fn end_backoffs(&mut self, now: Now) {
        if self.wakeups.first().is_some_and(|t| *t <= now.mono_ms) {
            self.wakeups = self.wakeups.split_off(&now.mono_ms.saturating_add(1));
            self.pending_schedule = true;
        }
    }

    /// On every tick: a worker where some executor has stayed RUNNING for
    /// `executor_stable_ms` can run executors; its failures are forgotten.
    /// (An app's own exclusions stay: its failures there were real.)
    pub(super) fn clear_proven_workers(&mut self, now: Now, out: &mut Vec<Effect>) {
        let stable = self.config.executor_stable_ms;
        let mut healed = Vec::new();
        for w in self.workers.values().filter(|w| !w.health.is_clean()) {
            let proof = w.executors.keys().find(|(app_id, exec_id)| {
                self.apps
                    .get(app_id)
                    .and_then(|a| a.executors.get(exec_id))
                    .is_some_and(|e| e.is_stable(now, stable))
            });
            if let Some((app_id, exec_id)) = proof {
                healed.push((w.id.clone(), format!("{app_id}/{exec_id}")));
            }
        }
        for (worker_id, exec) in healed {
            let was_unhealthy = self
                .workers
                .get_mut(&worker_id)
                .map(|w| std::mem::take(&mut w.health).unhealthy.is_some())
                .unwrap_or(false);
            if was_unhealthy {
                out.info(format!(
                    "Worker {worker_id} is healthy again: executor {exec} has run there for {}",
                    human_duration(stable)
                ));
            }
        }
    }

    /// The app ended: workers stop remembering it (their counts stay).
    pub(super) fn forget_failing_app(&mut self, app_id: &AppId) {
        for w in self.workers.values_mut() {
            w.health.failing_apps.remove(app_id);
        }
    }

    /// The workers that could hold an executor of the app (ALIVE, big
    /// enough) when there are some and every one of them excludes it.
    pub(super) fn excluded_everywhere(&self, app_id: &AppId) -> Option<Vec<WorkerId>> {
        let app = self.apps.get(app_id)?;
        let max = self.config.max_failures_per_worker;
        let min_cores = app.min_cores_per_executor();
        let memory = app.desc.memory_per_executor_mb;
        let capable: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| {
                w.state == WorkerState::Alive && w.cores >= min_cores && w.memory_mb >= memory
            })
            .map(|w| w.id.clone())
            .collect();
        (!capable.is_empty() && capable.iter().all(|w| app.excludes(w, max))).then_some(capable)
    }
}
