//! Executors: launch, start, exit, kill, state reports to the master and
//! application cleanup.

use flint_proto::{AppId, ApplicationDescription, ExecutorDescription, ExecutorId, ExecutorState};
use flint_types::log::Logs as _;

use super::{reported_exit_status, trim_retained, ChildId, Effect, ExecutorReport, WorkerCore};
use crate::runner::ExitStatus;

/// One executor this worker runs or ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExecutorInfo {
    pub(super) app_id: AppId,
    pub(super) exec_id: ExecutorId,
    /// The application's name, for display.
    pub(super) app_name: String,
    pub(super) cores: u32,
    pub(super) memory_mb: u64,
    pub(super) state: ExecutorState,
    /// The master asked to kill it (its exit is then KILLED).
    pub(super) kill_requested: bool,
    /// The status reported with its final state.
    pub(super) exit_status: Option<i32>,
    /// The message reported with its final state.
    pub(super) message: Option<String>,
}

impl ExecutorInfo {
    /// The executor as reported in `WorkerLatestState` and
    /// `WorkerSchedulerStateResponse`.
    pub(super) fn description(&self) -> ExecutorDescription {
        ExecutorDescription {
            app_id: self.app_id.clone(),
            exec_id: self.exec_id,
            cores: self.cores,
            memory_mb: self.memory_mb,
            state: self.state,
        }
    }
}

impl WorkerCore {
    /// Spark's `LaunchExecutor` handling: ignored (with a warning) unless it
    /// comes from the current master and the worker is not decommissioned;
    /// otherwise the executor is recorded LAUNCHING, its cores and memory
    /// are taken and the shell starts it.
    ///
    /// Deviations from Spark: a launch that does not fit in the free cores
    /// or memory is refused and reported FAILED (Spark trusts the master and
    /// overcommits); a launch of an executor that already runs here is
    /// ignored with a warning (Spark would lose track of the first one).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_executor(
        &mut self,
        master_url: &str,
        app_id: AppId,
        exec_id: ExecutorId,
        cores: u32,
        memory_mb: u64,
        desc: ApplicationDescription,
        out: &mut Vec<Effect>,
    ) {
        if self.master_url() != Some(master_url) {
            out.warn(format!(
                "Invalid Master ({master_url}) attempted to launch executor {app_id}/{exec_id}."
            ));
            return;
        }
        if self.decommissioned {
            out.warn(
                "Asked to launch an executor while decommissioned. Not launching executor.".into(),
            );
            return;
        }
        let key = (app_id.clone(), exec_id);
        if self.executors.contains_key(&key) {
            out.warn(format!(
                "Asked to launch executor {app_id}/{exec_id}, which already runs here; ignoring."
            ));
            return;
        }
        out.info(format!(
            "Asked to launch executor {app_id}/{exec_id} for {}",
            desc.name
        ));
        let mut info = ExecutorInfo {
            app_id: app_id.clone(),
            exec_id,
            app_name: desc.name.clone(),
            cores,
            memory_mb,
            state: ExecutorState::Launching,
            kill_requested: false,
            exit_status: None,
            message: None,
        };
        if !self.fits(cores, memory_mb) {
            let message = format!(
                "Not enough free resources on worker {} to launch executor {app_id}/{exec_id}: \
                 it needs {cores} cores and {memory_mb} MB, {} cores and {} MB are free",
                self.worker_id,
                self.cores_free(),
                self.memory_free_mb()
            );
            out.warn(message.clone());
            info.state = ExecutorState::Failed;
            info.message = Some(message);
            self.report_final(&info, out);
            self.retain_finished_executor(info);
            return;
        }
        self.acquire(cores, memory_mb);
        self.executors.insert(key, info);
        out.push(Effect::StartExecutor {
            app_id,
            exec_id,
            cores,
            memory_mb,
            command: desc.command,
        });
    }

    /// The process started: LAUNCHING → RUNNING, reported to the master
    /// (Spark's `ExecutorRunner` reports RUNNING once the process exists).
    /// An executor the master asked to kill meanwhile stays LAUNCHING until
    /// its exit is reported as KILLED.
    pub(super) fn executor_started(
        &mut self,
        app_id: AppId,
        exec_id: ExecutorId,
        out: &mut Vec<Effect>,
    ) {
        let Some(info) = self.executors.get_mut(&(app_id.clone(), exec_id)) else {
            out.warn(format!("Unknown executor {app_id}/{exec_id} started"));
            return;
        };
        if info.state != ExecutorState::Launching || info.kill_requested {
            return;
        }
        info.state = ExecutorState::Running;
        let report = ExecutorReport {
            app_id,
            exec_id,
            state: ExecutorState::Running,
            message: None,
            exit_status: None,
        };
        self.report_executor(report, out);
    }

    /// The process could not be started: FAILED with the error, resources
    /// released.
    pub(super) fn executor_launch_failed(
        &mut self,
        app_id: AppId,
        exec_id: ExecutorId,
        message: String,
        out: &mut Vec<Effect>,
    ) {
        out.error(format!(
            "Failed to launch executor {app_id}/{exec_id}: {message}"
        ));
        self.finish_executor(
            &app_id,
            exec_id,
            ExecutorState::Failed,
            Some(message),
            None,
            out,
        );
    }

    /// The process ended: KILLED when the worker killed it on request,
    /// otherwise EXITED (whatever the code, as Spark), resources released.
    pub(super) fn executor_exited(
        &mut self,
        app_id: AppId,
        exec_id: ExecutorId,
        status: ExitStatus,
        out: &mut Vec<Effect>,
    ) {
        let Some(info) = self.executors.get(&(app_id.clone(), exec_id)) else {
            out.info(format!(
                "Unknown executor {app_id}/{exec_id} ended: {status}"
            ));
            return;
        };
        let (state, message) = if info.kill_requested {
            (
                ExecutorState::Killed,
                format!("Executor killed on request; its process {status}"),
            )
        } else {
            (ExecutorState::Exited, format!("Command {status}"))
        };
        self.finish_executor(
            &app_id,
            exec_id,
            state,
            Some(message),
            reported_exit_status(status),
            out,
        );
    }

    /// Spark's `KillExecutor` handling: ignored unless from the current
    /// master; otherwise the process is killed (once) and its exit later
    /// reported KILLED.
    pub(super) fn kill_executor(
        &mut self,
        master_url: &str,
        app_id: AppId,
        exec_id: ExecutorId,
        out: &mut Vec<Effect>,
    ) {
        if self.master_url() != Some(master_url) {
            out.warn(format!(
                "Invalid Master ({master_url}) attempted to kill executor {app_id}/{exec_id}"
            ));
            return;
        }
        let grace_ms = self.config.executor_kill_grace_ms;
        let Some(info) = self.executors.get_mut(&(app_id.clone(), exec_id)) else {
            out.info(format!("Asked to kill unknown executor {app_id}/{exec_id}"));
            return;
        };
        if info.kill_requested {
            return;
        }
        info.kill_requested = true;
        out.info(format!("Asked to kill executor {app_id}/{exec_id}"));
        out.push(Effect::KillProcess {
            child: ChildId::Executor { app_id, exec_id },
            grace_ms,
        });
    }

    /// Sends a state change to the current master (Spark's
    /// `syncExecutorStateWithMaster`); dropped with a warning when no master
    /// is known yet.
    pub(super) fn report_executor(&mut self, report: ExecutorReport, out: &mut Vec<Effect>) {
        match &self.master {
            Some(m) => out.push(Effect::ReportExecutorState {
                master_url: m.url.clone(),
                report,
            }),
            None => out.warn(format!(
                "Dropping the {} report of executor {}/{} because the connection to master \
                     has not yet been established",
                report.state, report.app_id, report.exec_id
            )),
        }
    }

    /// A report was not acknowledged: retry (at once after a timeout, else
    /// after `rpc.ask_timeout`) up to
    /// `worker.executor_state_sync.max_attempts`, then exit, as Spark
    /// (SPARK-34245: a lost report can hang an application).
    pub(super) fn executor_state_sync_failed(
        &mut self,
        report: ExecutorReport,
        timed_out: bool,
        out: &mut Vec<Effect>,
    ) {
        let max = self.config.executor_state_sync_max_attempts;
        let master = self.master_url().unwrap_or("(none)").to_owned();
        let key = (report.app_id.clone(), report.exec_id);
        let failures = self.sync_failures.get(&key).copied().unwrap_or(0) + 1;
        let what = format!(
            "ExecutorStateChanged({}/{} {})",
            report.app_id, report.exec_id, report.state
        );
        if failures < max {
            out.error(format!(
                "Failed to send {what} to master {master}, will retry ({failures}/{max})."
            ));
            self.sync_failures.insert(key, failures);
            if timed_out {
                self.report_executor(report, out);
            } else {
                out.push(Effect::ScheduleExecutorStateRetry {
                    delay_ms: self.config.ask_timeout_ms,
                    report,
                });
            }
        } else {
            self.sync_failures.remove(&key);
            let reason = format!(
                "Failed to send {what} to master {master} for {max} times \
                 (worker.executor_state_sync.max_attempts). Giving up."
            );
            self.exit(1, reason, out);
        }
    }

    /// Spark's `maybeCleanupApplication`: once the master declared the
    /// application finished and none of its executors run here, clean its
    /// local directories.
    pub(super) fn maybe_cleanup_application(&mut self, app_id: &AppId, out: &mut Vec<Effect>) {
        let runs_here = self.executors.keys().any(|(a, _)| a == app_id);
        if runs_here || !self.finished_apps.remove(app_id) {
            return;
        }
        out.info(format!(
            "Cleaning up local directories for application {app_id}"
        ));
        out.push(Effect::CleanupAppDirs {
            app_id: app_id.clone(),
        });
    }

    /// Moves an executor to the finished list with its final state, releases
    /// its resources, reports it and maybe cleans its application.
    fn finish_executor(
        &mut self,
        app_id: &AppId,
        exec_id: ExecutorId,
        state: ExecutorState,
        message: Option<String>,
        exit_status: Option<i32>,
        out: &mut Vec<Effect>,
    ) {
        let Some(mut info) = self.executors.remove(&(app_id.clone(), exec_id)) else {
            out.info(format!(
                "Unknown executor {app_id}/{exec_id} finished with state {state}"
            ));
            return;
        };
        self.release(info.cores, info.memory_mb);
        info.state = state;
        info.message = message;
        info.exit_status = exit_status;
        out.info(format!(
            "Executor {app_id}/{exec_id} finished with state {state}{}{}",
            info.message
                .as_deref()
                .map(|m| format!(" message {m}"))
                .unwrap_or_default(),
            info.exit_status
                .map(|s| format!(" exitStatus {s}"))
                .unwrap_or_default()
        ));
        self.report_final(&info, out);
        self.retain_finished_executor(info);
        self.maybe_cleanup_application(app_id, out);
    }

    fn report_final(&mut self, info: &ExecutorInfo, out: &mut Vec<Effect>) {
        let report = ExecutorReport {
            app_id: info.app_id.clone(),
            exec_id: info.exec_id,
            state: info.state,
            message: info.message.clone(),
            exit_status: info.exit_status,
        };
        self.report_executor(report, out);
    }

    fn retain_finished_executor(&mut self, info: ExecutorInfo) {
        self.finished_executors.push_back(info);
        trim_retained(&mut self.finished_executors, self.config.retained_executors);
    }
}
