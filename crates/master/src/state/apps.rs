//! Application lifecycle and executor state changes.

use flint_proto::{
    AppId, ApplicationDescription, ApplicationState, ExecutorId, ExecutorState, MasterStatus,
    WorkerId, WorkerState,
};
use flint_types::log::Logs as _;

use super::health::failure_text;
use super::model::AppInfo;
use super::{DriverAddress, Effect, LogLevel, MasterState, Now, Reply};

impl MasterState {
    /// Registers an application (FIFO), persists it, replies
    /// `RegisteredApplication` and schedules. Ignored in STANDBY, as Spark.
    ///
    /// A registration from a driver address whose app is still active is a
    /// retry: it is answered with the existing id instead of creating a
    /// second app. A description that can never be scheduled
    /// (`cores_per_executor == Some(0)`, empty program) is registered and
    /// immediately FAILED with the reason.
    pub(super) fn register_application(
        &mut self,
        now: Now,
        desc: ApplicationDescription,
        driver_address: DriverAddress,
        out: &mut Vec<Effect>,
    ) {
        if self.status == MasterStatus::Standby {
            out.info(format!(
                "Ignoring registration of app {} in STANDBY",
                desc.name
            ));
            return;
        }
        if let Some(existing) = self
            .app_order
            .iter()
            .filter_map(|id| self.apps.get(id))
            .find(|a| a.driver_address == driver_address)
        {
            let app_id = existing.id.clone();
            out.warn(format!("Attempted to re-register application at same address {driver_address}; it is {app_id}"),
            );
            out.push(Effect::RegisteredApplication { app_id });
            return;
        }
        out.info(format!("Registering app {}", desc.name));
        let app_id = self.new_app_id(now.wall_ms);
        let invalid = desc.validate().err();
        let app = AppInfo::new(
            app_id.clone(),
            desc,
            now.wall_ms,
            driver_address,
            self.config.default_cores,
        );
        out.info(format!("Registered app {} with ID {app_id}", app.desc.name));
        out.push(Effect::PersistApp(app.record()));
        self.apps.insert(app_id.clone(), app);
        self.app_order.push(app_id.clone());
        out.push(Effect::RegisteredApplication {
            app_id: app_id.clone(),
        });
        if let Some(err) = invalid {
            let message = format!("FAILED: invalid application description: {err}");
            out.error(format!("Application {app_id}: {message}"));
            self.remove_application(now, &app_id, ApplicationState::Failed, message, out);
            return;
        }
        self.pending_schedule = true;
    }

    /// A new app id: `app-<timestamp>-<counter>`, the counter wrapping at
    /// `app_number_modulo` when set.
    fn new_app_id(&mut self, wall_ms: u64) -> AppId {
        let id = AppId::generate(wall_ms, self.next_app_number);
        self.next_app_number = self.next_app_number.wrapping_add(1);
        if let Some(m) = self.config.app_number_modulo.filter(|m| *m > 0) {
            self.next_app_number %= m;
        }
        id
    }

    /// Unregister or driver disconnect: the app ends FINISHED.
    pub(super) fn finish_application(&mut self, now: Now, app_id: &AppId, out: &mut Vec<Effect>) {
        self.remove_application(
            now,
            app_id,
            ApplicationState::Finished,
            ApplicationState::Finished.to_string(),
            out,
        );
    }

    /// The driver unregisters: the app ends in the final state it names
    /// (FINISHED when none, or when it names a state that is not final).
    pub(super) fn unregister_application(
        &mut self,
        now: Now,
        app_id: &AppId,
        final_state: Option<ApplicationState>,
        out: &mut Vec<Effect>,
    ) {
        let state = match final_state {
            Some(s) if s.is_finished() => s,
            Some(s) => {
                out.warn(format!("Application {app_id} unregistered naming {s}, which is not a final state; it ends FINISHED"),
                );
                ApplicationState::Finished
            }
            None => ApplicationState::Finished,
        };
        let message = match state {
            ApplicationState::Finished => state.to_string(),
            s => format!("{s}: reported by the driver"),
        };
        self.remove_application(now, app_id, state, message, out);
        // The driver said how it ended: it needs no ApplicationRemoved back.
        out.retain(|e| !matches!(e, Effect::ApplicationRemoved { app_id: a, .. } if a == app_id));
    }

    pub(super) fn app_disconnected(&mut self, now: Now, app_id: &AppId, out: &mut Vec<Effect>) {
        if self.apps.contains_key(app_id) {
            out.info(format!(
                "Driver of {app_id} got disassociated, removing it."
            ));
            self.finish_application(now, app_id, out);
        }
        self.maybe_complete_recovery(now, out);
    }

    /// An operator kills the app: it ends KILLED; replies whether it was
    /// active.
    pub(super) fn kill_application(&mut self, now: Now, app_id: &AppId, out: &mut Vec<Effect>) {
        let found = self.apps.contains_key(app_id);
        if found {
            out.info(format!("Killing application {app_id} on request"));
            self.remove_application(
                now,
                app_id,
                ApplicationState::Killed,
                ApplicationState::Killed.to_string(),
                out,
            );
        } else {
            out.warn(format!("Asked to kill unknown application {app_id}"));
        }
        out.push(Effect::Reply(Reply::Ack(found)));
    }

    /// Spark's `removeApplication`: moves the app to the completed list
    /// (trimming it to `retained_applications` the way Spark does), kills its
    /// executors, tells the driver unless it FINISHED, unpersists it and
    /// tells every worker the app is gone.
    pub(super) fn remove_application(
        &mut self,
        now: Now,
        app_id: &AppId,
        state: ApplicationState,
        message: String,
        out: &mut Vec<Effect>,
    ) {
        let Some(mut app) = self.apps.remove(app_id) else {
            return;
        };
        out.info(format!("Removing app {app_id} ({state})"));
        self.app_order.retain(|id| id != app_id);
        let retained = self.config.retained_applications;
        if self.completed_apps.len() >= retained {
            let drop = (retained / 10).max(1).min(self.completed_apps.len());
            self.completed_apps.drain(..drop);
        }
        for exec in app.executors.values_mut() {
            if let Some(worker) = self.workers.get_mut(&exec.worker_id) {
                worker.remove_executor(app_id, exec.id);
            }
            out.push(Effect::KillExecutor {
                worker_id: exec.worker_id.clone(),
                app_id: app_id.clone(),
                exec_id: exec.id,
            });
            exec.state = ExecutorState::Killed;
        }
        app.state = state;
        app.end_ms = Some(now.wall_ms);
        app.waiting_reason = None;
        if state != ApplicationState::Finished {
            out.push(Effect::ApplicationRemoved {
                app_id: app_id.clone(),
                message,
            });
        }
        out.push(Effect::UnpersistApp(app_id.clone()));
        for worker in self.workers.values() {
            if worker.state != WorkerState::Dead {
                out.push(Effect::ApplicationFinished {
                    worker_id: worker.id.clone(),
                    app_id: app_id.clone(),
                });
            }
        }
        self.completed_apps.push_back(app);
        self.forget_failing_app(app_id);
        self.pending_schedule = true;
    }

    /// Dynamic allocation: sets the app's executor limit (lowering it kills
    /// nothing) and schedules. Replies whether the app is known.
    pub(super) fn request_executors(&mut self, app_id: &AppId, total: u32, out: &mut Vec<Effect>) {
        let known = match self.apps.get_mut(app_id) {
            Some(app) => {
                app.executor_limit = total;
                self.pending_schedule = true;
                true
            }
            None => false,
        };
        if known {
            out.info(format!(
                "Application {app_id} requested to set total executors to {total}."
            ));
        } else {
            out.warn(format!(
                "Unknown application {app_id} requested {total} total executors."
            ));
        }
        out.push(Effect::Reply(Reply::Ack(known)));
    }

    /// Dynamic allocation: kills the named executors of the app (unknown ids
    /// are logged and skipped) and schedules. Replies whether the app is
    /// known.
    pub(super) fn kill_executors(
        &mut self,
        app_id: &AppId,
        exec_ids: &[ExecutorId],
        out: &mut Vec<Effect>,
    ) {
        let Some(app) = self.apps.get_mut(app_id) else {
            out.warn(format!(
                "Unregistered application {app_id} requested us to kill executors!"
            ));
            out.push(Effect::Reply(Reply::Ack(false)));
            return;
        };
        let mut unknown = Vec::new();
        let mut kills = Vec::new();
        for &exec_id in exec_ids {
            match app.executors.get_mut(&exec_id) {
                Some(exec) => {
                    exec.state = ExecutorState::Killed;
                    if let Some(exec) = app.remove_executor(exec_id) {
                        kills.push(exec);
                    }
                }
                None => unknown.push(exec_id.to_string()),
            }
        }
        // The worker keeps the killed executors' cores and memory until it reports
        // them ended (`orphan_executor_state` then frees them and schedules): placing a
        // replacement there before the process is gone would be refused for lack of
        // resources, and count as a failure of the application.
        for exec in kills {
            out.push(Effect::KillExecutor {
                worker_id: exec.worker_id,
                app_id: app_id.clone(),
                exec_id: exec.id,
            });
        }
        if !unknown.is_empty() {
            out.warn(format!(
                "Application {app_id} attempted to kill non-existent executors: {}",
                unknown.join(", ")
            ));
        }
        self.pending_schedule = true;
        out.push(Effect::Reply(Reply::Ack(true)));
    }

    /// Spark's `ExecutorStateChanged` handler: records the state, relays it
    /// to the app, and when the executor finished removes it from its app
    /// and worker. An abnormal exit (status ≠ 0, not after DECOMMISSIONED)
    /// counts toward `max_executor_retries` and starts the app's relaunch
    /// back-off; once the retries are reached, the app FAILS if none of its
    /// executors is stable. One that also came before the executor was stable
    /// is a quick failure and counts against its worker too ([`health`](super::health));
    /// when every worker that could run the app excludes it, the app FAILS
    /// as well. Flint differs from Spark: a RUNNING report does not reset the
    /// count (only a stable executor does), and relaunches wait. Always
    /// replies `Ack(true)`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn executor_state_changed(
        &mut self,
        now: Now,
        app_id: &AppId,
        exec_id: ExecutorId,
        state: ExecutorState,
        message: Option<String>,
        exit_status: Option<i32>,
        out: &mut Vec<Effect>,
    ) {
        let known = self
            .apps
            .get(app_id)
            .and_then(|a| a.executors.get(&exec_id))
            .is_some();
        if !known {
            self.orphan_executor_state(app_id, exec_id, state, message, exit_status, out);
            out.push(Effect::Reply(Reply::Ack(true)));
            return;
        }
        let mut fail_app = None;
        let mut notes = Vec::new();
        let mut quick_failure = None;
        let mut failed = false;
        let mut running_on = None;
        'update: {
            let Some(app) = self.apps.get_mut(app_id) else {
                break 'update;
            };
            let Some(exec) = app.executors.get_mut(&exec_id) else {
                break 'update;
            };
            let old = exec.state;
            // Whether it had been stable before this report (a stable
            // executor's failure starts a new count).
            let was_stable = exec.is_stable(now, self.config.executor_stable_ms);
            exec.state = state;
            let worker_id = exec.worker_id.clone();
            let launched_mono_ms = exec.launched_mono_ms;
            if state == ExecutorState::Running {
                if old != ExecutorState::Launching {
                    notes.push((
                        LogLevel::Warn,
                        format!("executor {app_id}/{exec_id} state transfer from {old} to RUNNING is unexpected"),
                    ));
                }
                exec.running_since_mono_ms = Some(now.mono_ms);
                running_on = Some(worker_id.clone());
            }
            let text = failure_text(state, message.as_deref(), exit_status);
            out.push(Effect::ExecutorUpdated {
                app_id: app_id.clone(),
                exec_id,
                state,
                message,
                exit_status,
                worker_host: None,
            });
            if state.is_finished() {
                notes.push((
                    LogLevel::Info,
                    format!("Removing executor {app_id}/{exec_id} because it is {state}"),
                ));
                app.remove_executor(exec_id);
                if let Some(worker) = self.workers.get_mut(&worker_id) {
                    worker.remove_executor(app_id, exec_id);
                }
                let normal_exit = exit_status == Some(0);
                if !normal_exit && old != ExecutorState::Decommissioned {
                    failed = true;
                    // A failure after a stable run starts a new count.
                    if was_stable {
                        app.retry_count = 0;
                    } else {
                        quick_failure = Some((worker_id, launched_mono_ms, text));
                    }
                    app.retry_count = app.retry_count.saturating_add(1);
                    let max = self.config.max_executor_retries;
                    if max >= 0
                        && i64::from(app.retry_count) >= i64::from(max)
                        && !app.has_stable_executor(now, self.config.executor_stable_ms)
                    {
                        fail_app = Some((app.desc.name.clone(), app.retry_count, None));
                    }
                }
            }
        }
        for (level, message) in notes {
            out.push(Effect::Log { level, message });
        }
        if let Some(worker_id) = running_on {
            self.blame_workers_excluding(now, app_id, &worker_id, out);
        }
        if failed {
            self.back_off_relaunch(now, app_id, out);
        }
        if let Some((worker_id, launched_mono_ms, text)) = quick_failure {
            self.record_quick_failure(now, app_id, &worker_id, launched_mono_ms, &text, out);
            if fail_app.is_none() {
                fail_app = self.fail_if_excluded_everywhere(now, app_id, &text, out);
            }
        }
        if let Some((name, retries, why)) = fail_app {
            let why = why.map(|w| format!(": {w}")).unwrap_or_default();
            out.error(format!(
                "Application {name} with ID {app_id} failed {retries} times; removing it{why}"
            ));
            self.remove_application(
                now,
                app_id,
                ApplicationState::Failed,
                ApplicationState::Failed.to_string(),
                out,
            );
        }
        self.pending_schedule = true;
        out.push(Effect::Reply(Reply::Ack(true)));
    }

    /// After a quick failure: when every worker that could run the app
    /// excludes it and none of its executors is stable, the app is to fail
    /// (returns its name, retry count and why). With a negative
    /// `max_executor_retries` the app never fails: its exclusions are
    /// forgotten instead and it keeps relaunching under its back-off.
    fn fail_if_excluded_everywhere(
        &mut self,
        now: Now,
        app_id: &AppId,
        last: &str,
        out: &mut Vec<Effect>,
    ) -> Option<(String, u32, Option<String>)> {
        let workers = self.excluded_everywhere(app_id)?;
        let stable = self.config.executor_stable_ms;
        let never_fail = self.config.max_executor_retries < 0;
        let app = self.apps.get_mut(app_id)?;
        if app.has_stable_executor(now, stable) {
            return None;
        }
        let list = workers
            .iter()
            .map(WorkerId::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if never_fail {
            app.worker_failures.clear();
            out.warn(format!(
                "Executors of {app_id} failed on every worker that can run them ({list}); \
                     trying them again (deploy.max_executor_retries < 0)"
            ));
            return None;
        }
        Some((
            app.desc.name.clone(),
            app.retry_count,
            Some(format!(
                "its executors failed {} times on every worker that can run them ({list}); last: {last}",
                self.config.max_failures_per_worker
            )),
        ))
    }

    /// On every tick: an app with an executor that has stayed RUNNING for
    /// `executor_stable_ms` has proven its executors can run, so its failure
    /// count starts again from zero (Spark resets it on every RUNNING report).
    pub(super) fn reset_retries_of_stable_apps(&mut self, now: Now) {
        let stable = self.config.executor_stable_ms;
        for app in self.apps.values_mut() {
            if app.retry_count > 0 && app.has_stable_executor(now, stable) {
                app.retry_count = 0;
            }
        }
    }

    /// A state change for an executor that no active app counts: one of a
    /// decommissioned worker, or of an app already removed. Spark only logs
    /// it; flint also releases the worker resources it held once it finished.
    fn orphan_executor_state(
        &mut self,
        app_id: &AppId,
        exec_id: ExecutorId,
        state: ExecutorState,
        message: Option<String>,
        exit_status: Option<i32>,
        out: &mut Vec<Effect>,
    ) {
        // The last executors of an app that finished normally report KILLED after
        // the app is gone: expected, so not a warning.
        let of_finished_app =
            state.is_finished() && self.completed_apps.iter().any(|a| &a.id == app_id);
        // An executor the application asked to kill ends after the app let go of it.
        let killed_on_request = state.is_finished()
            && self.apps.get(app_id).is_some_and(|a| {
                a.removed_executors
                    .iter()
                    .any(|e| e.id == exec_id && e.state == ExecutorState::Killed)
            });
        if killed_on_request {
            out.info(format!(
                "Executor {app_id}/{exec_id}, killed at its application's request, ended ({state})"
            ));
        } else if of_finished_app {
            out.info(format!(
                "Executor {app_id}/{exec_id} of finished application {app_id} ended ({state})"
            ));
        } else {
            out.warn(format!(
                "Got status update for unknown executor {app_id}/{exec_id} ({state})"
            ));
        }
        if !state.is_finished() {
            return;
        }
        let key = (app_id.clone(), exec_id);
        let holder = self
            .workers
            .values()
            .find(|w| w.executors.contains_key(&key))
            .map(|w| w.id.clone());
        if let Some(worker_id) = holder {
            if let Some(worker) = self.workers.get_mut(&worker_id) {
                worker.remove_executor(app_id, exec_id);
            }
            if let Some(app) = self.apps.get_mut(app_id) {
                if let Some(exec) = app
                    .removed_executors
                    .iter_mut()
                    .rev()
                    .find(|e| e.id == exec_id && e.worker_id == worker_id)
                {
                    exec.state = state;
                }
                // The driver still tracks a decommissioned executor until it ends.
                out.push(Effect::ExecutorUpdated {
                    app_id: app_id.clone(),
                    exec_id,
                    state,
                    message,
                    exit_status,
                    worker_host: None,
                });
            }
            self.pending_schedule = true;
        }
    }
}
