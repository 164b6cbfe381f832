//! Cluster-mode drivers: launch, supervised relaunch with back-off, kill and
//! final state reports (Spark's `DriverRunner` and the worker's driver
//! handling).

use flint_proto::{DriverDescription, DriverId, DriverState};
use flint_types::log::Logs as _;

use super::{reported_exit_status, trim_retained, ChildId, Effect, Now, WorkerCore};
use crate::runner::ExitStatus;

/// The longest back-off between a supervised driver's relaunches. Spark's
/// `DriverRunner.runCommandWithRetry` starts at 1 s, doubles after every
/// failure and never caps it; flint caps it at one minute so a driver that
/// keeps failing is still retried every minute.
pub(super) const MAX_RELAUNCH_BACKOFF_MS: u64 = 60_000;

/// Where a driver that has not finished is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DriverPhase {
    /// The shell is starting its process.
    Starting,
    /// Its process runs.
    Running,
    /// A supervised driver failed and waits to be relaunched (no process).
    Backoff,
}

/// One driver this worker runs or ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DriverInfo {
    pub(super) driver_id: DriverId,
    pub(super) desc: Box<DriverDescription>,
    pub(super) phase: DriverPhase,
    /// The master asked to kill it.
    pub(super) killed: bool,
    /// When its current process started (monotonic ms).
    pub(super) started_mono_ms: u64,
    /// The next relaunch back-off.
    pub(super) backoff_ms: u64,
    /// Its final state, once finished.
    pub(super) final_state: Option<DriverState>,
    /// The error reported with ERROR.
    pub(super) exception: Option<String>,
    /// The exit status of its last process.
    pub(super) exit_status: Option<i32>,
    /// How often this worker relaunched it.
    pub(super) relaunches: u32,
}

impl DriverInfo {
    /// Whether a process exists (or is being started) for it.
    pub(super) fn has_process(&self) -> bool {
        self.phase != DriverPhase::Backoff
    }
}

impl WorkerCore {
    /// Spark's `LaunchDriver` handling: record the driver, take its cores
    /// and memory, start it.
    ///
    /// Deviations from Spark: a driver that does not fit in the free cores
    /// or memory, or that arrives while the worker is decommissioned, is
    /// refused and reported ERROR (Spark launches it anyway); a driver id
    /// that already runs here is ignored with a warning.
    pub(super) fn launch_driver(
        &mut self,
        now: Now,
        driver_id: DriverId,
        desc: Box<DriverDescription>,
        out: &mut Vec<Effect>,
    ) {
        out.info(format!("Asked to launch driver {driver_id}"));
        if self.drivers.contains_key(&driver_id) {
            out.warn(format!(
                "Driver {driver_id} already runs here; ignoring the launch request."
            ));
            return;
        }
        let mut info = DriverInfo {
            driver_id: driver_id.clone(),
            desc,
            phase: DriverPhase::Starting,
            killed: false,
            started_mono_ms: now.mono_ms,
            backoff_ms: self.config.driver_relaunch_initial_backoff_ms,
            final_state: None,
            exception: None,
            exit_status: None,
            relaunches: 0,
        };
        let refusal = if self.decommissioned {
            Some(format!(
                "Worker {} is decommissioned; not launching driver {driver_id}",
                self.worker_id
            ))
        } else if !self.fits(info.desc.cores, info.desc.memory_mb) {
            Some(format!(
                "Not enough free resources on worker {} to launch driver {driver_id}: it needs \
                 {} cores and {} MB, {} cores and {} MB are free",
                self.worker_id,
                info.desc.cores,
                info.desc.memory_mb,
                self.cores_free(),
                self.memory_free_mb()
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            out.warn(message.clone());
            info.final_state = Some(DriverState::Error);
            info.exception = Some(message);
            self.report_driver(&info, out);
            self.retain_finished_driver(info);
            return;
        }
        self.acquire(info.desc.cores, info.desc.memory_mb);
        out.push(Effect::StartDriver {
            driver_id: driver_id.clone(),
            desc: info.desc.clone(),
        });
        self.drivers.insert(driver_id, info);
    }

    /// The driver's process started; a relaunched one is reported RUNNING again.
    pub(super) fn driver_started(&mut self, now: Now, driver_id: &DriverId, out: &mut Vec<Effect>) {
        let Some(info) = self.drivers.get_mut(driver_id) else {
            return;
        };
        if info.phase != DriverPhase::Starting {
            return;
        }
        info.phase = DriverPhase::Running;
        info.started_mono_ms = now.mono_ms;
        if info.relaunches > 0 {
            let n = info.relaunches;
            self.report_driver_progress(
                driver_id,
                DriverState::Running,
                Some(format!("relaunch {n} started")),
                out,
            );
        }
    }

    /// The driver could not be prepared or started: ERROR.
    pub(super) fn driver_launch_failed(
        &mut self,
        driver_id: &DriverId,
        message: String,
        out: &mut Vec<Effect>,
    ) {
        self.finish_driver(driver_id, DriverState::Error, Some(message), None, out);
    }

    /// The driver's process ended. A supervised driver that exited non-zero
    /// and was not killed is relaunched after a back-off that starts at
    /// `worker.driver_relaunch_initial_backoff` (1 s) and doubles up to
    /// [`MAX_RELAUNCH_BACKOFF_MS`], reset when the run lasted longer than
    /// `worker.driver_relaunch_stable_run` (5 s) (Spark's `runCommandWithRetry`:
    /// `waitSeconds = 1`, doubled, reset when `processStart + successfulRunDuration
    /// (5 s) < now`); the master hears RELAUNCHING, then RUNNING once it runs
    /// again. Otherwise its final state is FINISHED (exit 0), KILLED (killed) or
    /// FAILED.
    pub(super) fn driver_exited(
        &mut self,
        now: Now,
        driver_id: &DriverId,
        status: ExitStatus,
        out: &mut Vec<Effect>,
    ) {
        let initial = self.config.driver_relaunch_initial_backoff_ms;
        let stable = self.config.driver_relaunch_stable_run_ms;
        let max_backoff = MAX_RELAUNCH_BACKOFF_MS;
        let Some(info) = self.drivers.get_mut(driver_id) else {
            out.info(format!("Unknown driver {driver_id} ended: {status}"));
            return;
        };
        info.exit_status = reported_exit_status(status);
        if info.desc.supervise && !status.success() && !info.killed {
            if now.mono_since(info.started_mono_ms) > stable {
                info.backoff_ms = initial;
            }
            let delay_ms = info.backoff_ms;
            info.backoff_ms = info
                .backoff_ms
                .saturating_mul(2)
                .clamp(1, max_backoff.max(initial));
            info.phase = DriverPhase::Backoff;
            info.relaunches = info.relaunches.saturating_add(1);
            out.info(format!(
                "Driver {driver_id}: command {status}, re-launching after {delay_ms} ms."
            ));
            out.push(Effect::ScheduleDriverRelaunch {
                driver_id: driver_id.clone(),
                delay_ms,
            });
            self.report_driver_progress(
                driver_id,
                DriverState::Relaunching,
                Some(format!("command {status}; relaunching in {delay_ms} ms")),
                out,
            );
            return;
        }
        let state = if status.success() {
            DriverState::Finished
        } else if info.killed {
            DriverState::Killed
        } else {
            DriverState::Failed
        };
        let exit_status = info.exit_status;
        self.finish_driver(driver_id, state, None, exit_status, out);
    }

    /// The back-off passed: start the supervised driver again, unless it was
    /// killed meanwhile.
    pub(super) fn driver_relaunch_tick(
        &mut self,
        now: Now,
        driver_id: &DriverId,
        out: &mut Vec<Effect>,
    ) {
        let Some(info) = self.drivers.get_mut(driver_id) else {
            return;
        };
        if info.phase != DriverPhase::Backoff || info.killed {
            return;
        }
        info.phase = DriverPhase::Starting;
        info.started_mono_ms = now.mono_ms;
        out.push(Effect::StartDriver {
            driver_id: driver_id.clone(),
            desc: info.desc.clone(),
        });
    }

    /// Spark's `KillDriver` handling: kill the process (once); a driver
    /// waiting to be relaunched is KILLED at once.
    pub(super) fn kill_driver(&mut self, driver_id: &DriverId, out: &mut Vec<Effect>) {
        let grace_ms = self.config.driver_terminate_timeout_ms;
        let Some(info) = self.drivers.get_mut(driver_id) else {
            out.error(format!("Asked to kill unknown driver {driver_id}"));
            return;
        };
        if info.killed {
            return;
        }
        info.killed = true;
        let phase = info.phase;
        let exit_status = info.exit_status;
        out.info(format!("Asked to kill driver {driver_id}"));
        if phase == DriverPhase::Backoff {
            self.finish_driver(driver_id, DriverState::Killed, None, exit_status, out);
        } else {
            out.push(Effect::KillProcess {
                child: ChildId::Driver {
                    driver_id: driver_id.clone(),
                },
                grace_ms,
            });
        }
    }

    /// Spark's `handleDriverStateChanged`: log, report the final state,
    /// move to the finished list, release resources.
    fn finish_driver(
        &mut self,
        driver_id: &DriverId,
        state: DriverState,
        exception: Option<String>,
        exit_status: Option<i32>,
        out: &mut Vec<Effect>,
    ) {
        let Some(mut info) = self.drivers.remove(driver_id) else {
            out.info(format!(
                "Unknown driver {driver_id} finished with state {state}"
            ));
            return;
        };
        self.release(info.desc.cores, info.desc.memory_mb);
        match state {
            DriverState::Error => out.warn(format!(
                "Driver {driver_id} failed with unrecoverable exception: {}",
                exception.as_deref().unwrap_or("(none)")
            )),
            DriverState::Failed => out.warn(format!("Driver {driver_id} exited with failure")),
            DriverState::Finished => out.info(format!("Driver {driver_id} exited successfully")),
            DriverState::Killed => out.info(format!("Driver {driver_id} was killed by user")),
            other => out.info(format!("Driver {driver_id} changed state to {other}")),
        }
        info.final_state = Some(state);
        info.exception = exception;
        info.exit_status = exit_status;
        self.report_driver(&info, out);
        self.retain_finished_driver(info);
    }

    /// Reports a supervised driver's RELAUNCHING (waiting out its back-off) or
    /// RUNNING (started again) to the master; dropped without a master, as the
    /// master learns the driver's state from `WorkerLatestState` then.
    fn report_driver_progress(
        &self,
        driver_id: &DriverId,
        state: DriverState,
        message: Option<String>,
        out: &mut Vec<Effect>,
    ) {
        if let Some(m) = &self.master {
            out.push(Effect::ReportDriverState {
                master_url: m.url.clone(),
                driver_id: driver_id.clone(),
                state,
                exception: message,
            });
        }
    }

    fn report_driver(&mut self, info: &DriverInfo, out: &mut Vec<Effect>) {
        let state = info.final_state.unwrap_or(DriverState::Error);
        match &self.master {
            Some(m) => out.push(Effect::ReportDriverState {
                master_url: m.url.clone(),
                driver_id: info.driver_id.clone(),
                state,
                exception: info.exception.clone(),
            }),
            None => out.warn(format!(
                "Dropping the {state} report of driver {} because the connection to master \
                     has not yet been established",
                info.driver_id
            )),
        }
    }

    fn retain_finished_driver(&mut self, info: DriverInfo) {
        self.finished_drivers.push_back(info);
        trim_retained(&mut self.finished_drivers, self.config.retained_drivers);
    }
}
