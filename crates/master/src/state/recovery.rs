//! Leader election and recovery from persisted state.

use flint_proto::{
    AppId, ApplicationState, DriverId, DriverState, ExecutorDescription, MasterStatus, WorkerId,
    WorkerState,
};
use flint_types::log::Logs as _;

use super::model::{AppInfo, DriverInfo, Resources, WorkerInfo};
use super::{Effect, MasterState, Now, StoredState};

impl MasterState {
    /// Spark's `ElectedLeader`: with nothing stored the master becomes ALIVE;
    /// otherwise it becomes RECOVERING, re-adds the stored apps and workers
    /// as UNKNOWN and tells each about the new master, re-adds stored drivers
    /// (not queued), and asks for [`Event::CompleteRecovery`](super::Event::CompleteRecovery)
    /// after `recovery_timeout_ms` — or completes at once when there is no
    /// worker or app to wait for.
    pub(super) fn elected_leader(&mut self, now: Now, stored: StoredState, out: &mut Vec<Effect>) {
        if self.status != MasterStatus::Standby {
            out.warn(format!(
                "Elected leader again while {}; ignoring",
                self.status
            ));
            return;
        }
        if stored.is_empty() {
            self.status = MasterStatus::Alive;
            out.info("I have been elected leader! New state: ALIVE".into());
            self.pending_schedule = true;
            return;
        }
        self.status = MasterStatus::Recovering;
        out.info("I have been elected leader! New state: RECOVERING".into());

        for record in stored.apps {
            if self.apps.contains_key(&record.id)
                || self
                    .apps
                    .values()
                    .any(|a| a.driver_address == record.driver_address)
            {
                out.warn(format!("Skipping duplicate stored app {}", record.id));
                continue;
            }
            out.info(format!("Trying to recover app: {}", record.id));
            let mut app = AppInfo::new(
                record.id.clone(),
                record.desc,
                record.submit_ms,
                record.driver_address,
                self.config.default_cores,
            );
            app.state = ApplicationState::Unknown;
            self.apps.insert(record.id.clone(), app);
            self.app_order.push(record.id.clone());
            out.push(Effect::MasterChangedToApp { app_id: record.id });
        }

        for record in stored.drivers {
            if self.drivers.contains_key(&record.id) {
                continue;
            }
            self.drivers.insert(
                record.id.clone(),
                DriverInfo::new(record.id, record.desc, record.submit_ms),
            );
        }

        for reg in stored.workers {
            if self.workers.contains_key(&reg.id) {
                out.warn(format!("Skipping duplicate stored worker {}", reg.id));
                continue;
            }
            out.info(format!("Trying to recover worker: {}", reg.id));
            let mut worker = WorkerInfo::new(&reg, now);
            worker.state = WorkerState::Unknown;
            if self.add_worker(now, worker, out) {
                out.push(Effect::MasterChangedToWorker { worker_id: reg.id });
            } else {
                out.warn(format!(
                    "Stored worker {} shares an address with another; skipped",
                    reg.id
                ));
            }
        }

        if self.can_complete_recovery() {
            self.complete_recovery(now, out);
        } else {
            out.push(Effect::ScheduleCompleteRecovery {
                delay_ms: self.config.recovery_timeout_ms,
            });
        }
    }

    /// No worker and no app is still UNKNOWN.
    fn can_complete_recovery(&self) -> bool {
        !self
            .workers
            .values()
            .any(|w| w.state == WorkerState::Unknown)
            && !self
                .apps
                .values()
                .any(|a| a.state == ApplicationState::Unknown)
    }

    /// Completes recovery early when everything answered.
    pub(super) fn maybe_complete_recovery(&mut self, now: Now, out: &mut Vec<Effect>) {
        if self.status == MasterStatus::Recovering && self.can_complete_recovery() {
            self.complete_recovery(now, out);
        }
    }

    /// Spark's `completeRecovery` (only once, only while RECOVERING):
    /// workers still UNKNOWN are removed, apps still UNKNOWN are finished,
    /// the rest become RUNNING, drivers no worker claimed are relaunched
    /// (supervised) or end in ERROR; then the master is ALIVE and schedules.
    pub(super) fn complete_recovery(&mut self, now: Now, out: &mut Vec<Effect>) {
        if self.status != MasterStatus::Recovering {
            return;
        }
        self.status = MasterStatus::CompletingRecovery;

        let unknown_workers: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Unknown)
            .map(|w| w.id.clone())
            .collect();
        for id in unknown_workers {
            self.remove_worker(now, &id, "Not responding for recovery", out);
        }
        let unknown_apps: Vec<AppId> = self
            .apps
            .values()
            .filter(|a| a.state == ApplicationState::Unknown)
            .map(|a| a.id.clone())
            .collect();
        for id in unknown_apps {
            self.finish_application(now, &id, out);
        }
        for app in self.apps.values_mut() {
            if app.state == ApplicationState::Waiting {
                app.state = ApplicationState::Running;
            }
        }
        let unclaimed: Vec<(DriverId, bool)> = self
            .drivers
            .values()
            .filter(|d| d.worker_id.is_none() && !self.waiting_drivers.contains(&d.id))
            .map(|d| (d.id.clone(), d.desc.supervise))
            .collect();
        for (id, supervise) in unclaimed {
            out.warn(format!("Driver {id} was not found after master recovery"));
            if supervise {
                out.warn(format!("Re-launching {id}"));
                self.relaunch_driver(now, &id, out);
            } else {
                out.warn(format!(
                    "Did not re-launch {id} because it was not supervised"
                ));
                self.remove_driver(&id, DriverState::Error, None, out);
            }
        }
        self.status = MasterStatus::Alive;
        self.pending_schedule = true;
        out.info("Recovery complete - resuming operations!".into());
    }

    /// A recovered app's driver answered: UNKNOWN → WAITING.
    pub(super) fn master_change_acknowledged(
        &mut self,
        now: Now,
        app_id: &AppId,
        out: &mut Vec<Effect>,
    ) {
        match self.apps.get_mut(app_id) {
            Some(app) => {
                app.state = ApplicationState::Waiting;
                out.info(format!("Application has been re-registered: {app_id}"));
            }
            None => out.warn(format!("Master change ack from unknown app: {app_id}")),
        }
        self.maybe_complete_recovery(now, out);
    }

    /// A recovered worker answered with what it runs: it becomes ALIVE, its
    /// executors of known apps are re-attached with their ids and states,
    /// its drivers re-attached as RUNNING.
    ///
    /// Spark trusts the report blindly; flint skips an executor or driver it
    /// already tracks, and kills one that would overfill the worker (which
    /// only a corrupt report can cause).
    pub(super) fn worker_scheduler_state(
        &mut self,
        now: Now,
        worker_id: &WorkerId,
        executors: Vec<ExecutorDescription>,
        driver_ids: Vec<DriverId>,
        out: &mut Vec<Effect>,
    ) {
        let Some(worker) = self
            .workers
            .get_mut(worker_id)
            .filter(|w| w.state != WorkerState::Dead)
        else {
            out.warn(format!("Scheduler state from unknown worker: {worker_id}"));
            self.maybe_complete_recovery(now, out);
            return;
        };
        worker.state = WorkerState::Alive;
        worker.heard_from(now);
        out.info(format!("Worker has been re-registered: {worker_id}"));

        for exec in executors {
            let res = Resources {
                cores: exec.cores,
                memory_mb: exec.memory_mb,
            };
            let Some(app) = self.apps.get_mut(&exec.app_id) else {
                continue;
            };
            let Some(worker) = self.workers.get_mut(worker_id) else {
                continue;
            };
            if exec.state.is_finished() || app.executors.contains_key(&exec.exec_id) {
                continue;
            }
            if !worker.fits(res) {
                out.push(Effect::KillExecutor {
                    worker_id: worker_id.clone(),
                    app_id: exec.app_id.clone(),
                    exec_id: exec.exec_id,
                });
                continue;
            }
            app.add_executor(worker_id.clone(), res, exec.state, Some(exec.exec_id));
            worker.add_executor(exec.app_id, exec.exec_id, res);
        }

        for driver_id in driver_ids {
            let Some(driver) = self.drivers.get_mut(&driver_id) else {
                continue;
            };
            let Some(worker) = self.workers.get_mut(worker_id) else {
                continue;
            };
            if driver.worker_id.is_some() {
                continue;
            }
            let res = driver.resources();
            if !worker.fits(res) {
                out.push(Effect::KillDriver {
                    worker_id: worker_id.clone(),
                    driver_id,
                });
                continue;
            }
            driver.worker_id = Some(worker_id.clone());
            driver.state = DriverState::Running;
            // It runs there, so it is no longer queued.
            self.waiting_drivers.retain(|d| *d != driver_id);
            worker.add_driver(driver_id, res);
        }
        self.pending_schedule = true;
        self.maybe_complete_recovery(now, out);
    }
}
