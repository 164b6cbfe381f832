//! Worker lifecycle: registration, heartbeats, state reports,
//! decommissioning, loss and timeouts.

use flint_types::log::Logs as _;
use std::collections::BTreeSet;

use flint_proto::{
    DriverId, ExecutorDescription, ExecutorState, MasterStatus, WorkerId, WorkerState,
};

use super::model::WorkerInfo;
use super::{human_duration, Effect, MasterState, Now, Reply, WorkerRegistration};

impl MasterState {
    /// Spark's `handleRegisterWorker`:
    ///
    /// - STANDBY → `MasterInStandby`;
    /// - an id already registered → `RegisteredWorker { duplicate: true }`
    ///   and a warning (an UNKNOWN worker becomes ALIVE); flint refuses it
    ///   instead when the id is registered from another address, since an
    ///   id embeds its worker's host and port;
    /// - a new id at an address a live worker holds → `RegisterWorkerFailed`
    ///   (unless that worker is UNKNOWN: it restarted during recovery and is
    ///   replaced);
    /// - otherwise the worker is added, persisted, acknowledged and
    ///   `schedule()` runs.
    ///
    /// A registration also refreshes the worker's heartbeat time.
    pub(super) fn register_worker(
        &mut self,
        now: Now,
        reg: WorkerRegistration,
        out: &mut Vec<Effect>,
    ) {
        out.info(format!(
            "Registering worker {}:{} with {} cores, {} MB RAM",
            reg.host, reg.port, reg.cores, reg.memory_mb
        ));
        if self.status == MasterStatus::Standby {
            out.push(Effect::MasterInStandby { worker_id: reg.id });
            return;
        }
        if let Some(existing) = self.workers.get_mut(&reg.id) {
            if existing.state != WorkerState::Dead {
                if existing.host != reg.host || existing.port != reg.port {
                    let message = format!(
                        "Duplicate worker ID {}: already registered from {}, refusing {}:{}",
                        reg.id,
                        existing.host_port(),
                        reg.host,
                        reg.port
                    );
                    out.warn(message.clone());
                    out.push(Effect::RegisterWorkerFailed {
                        worker_id: reg.id,
                        message,
                    });
                    return;
                }
                existing.heard_from(now);
                let was_unknown = existing.state == WorkerState::Unknown;
                if was_unknown {
                    existing.state = WorkerState::Alive;
                    out.info(format!("Worker has been re-registered: {}", reg.id));
                } else {
                    out.warn(format!(
                        "Worker {} registered again from the same address {}:{}; keeping it",
                        reg.id, reg.host, reg.port
                    ));
                }
                out.push(Effect::RegisteredWorker {
                    worker_id: reg.id,
                    duplicate: true,
                });
                if was_unknown {
                    self.maybe_complete_recovery(now, out);
                }
                return;
            }
        }
        let worker = WorkerInfo::new(&reg, now);
        if !self.add_worker(now, worker, out) {
            let message = format!(
                "Attempted to re-register worker at same address: {}:{}",
                reg.host, reg.port
            );
            out.warn(format!("Worker registration failed. {message}"));
            out.push(Effect::RegisterWorkerFailed {
                worker_id: reg.id,
                message,
            });
            return;
        }
        out.push(Effect::PersistWorker(reg.clone()));
        out.push(Effect::RegisteredWorker {
            worker_id: reg.id,
            duplicate: false,
        });
        self.pending_schedule = true;
    }

    /// Spark's `registerWorker`: drops DEAD entries at the same address,
    /// replaces an UNKNOWN worker at the same address, refuses when a live
    /// one holds it. Returns whether the worker was added.
    pub(super) fn add_worker(
        &mut self,
        now: Now,
        worker: WorkerInfo,
        out: &mut Vec<Effect>,
    ) -> bool {
        let dead_here: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| {
                w.state == WorkerState::Dead && w.host == worker.host && w.port == worker.port
            })
            .map(|w| w.id.clone())
            .collect();
        for id in dead_here {
            self.workers.remove(&id);
        }
        let address = worker.address();
        if let Some(old_id) = self.worker_by_address.get(&address).cloned() {
            let old_unknown = self
                .workers
                .get(&old_id)
                .is_some_and(|w| w.state == WorkerState::Unknown);
            if old_unknown {
                self.remove_worker(
                    now,
                    &old_id,
                    "Worker replaced by a new worker with same address",
                    out,
                );
            } else {
                return false;
            }
        }
        self.worker_by_address.insert(address, worker.id.clone());
        self.workers.insert(worker.id.clone(), worker);
        true
    }

    /// Records a heartbeat. A worker the master does not know (DEAD, culled
    /// or never registered) is told to reconnect; Spark ignores never-seen
    /// ids, flint asks them to register too (a master restarted without
    /// recovery gets its workers back that way). Ignored in STANDBY.
    pub(super) fn heartbeat(&mut self, now: Now, worker_id: WorkerId, out: &mut Vec<Effect>) {
        match self.workers.get_mut(&worker_id) {
            Some(w) if w.state != WorkerState::Dead => w.heard_from(now),
            _ if self.status == MasterStatus::Standby => {}
            _ => {
                out.warn(format!(
                    "Got heartbeat from unregistered worker {worker_id}. Asking it to re-register."
                ));
                out.push(Effect::ReconnectWorker { worker_id });
            }
        }
    }

    /// Reconciles a worker's report with what the master knows: executors
    /// and drivers the master does not know on that worker are killed.
    pub(super) fn worker_latest_state(
        &mut self,
        worker_id: &WorkerId,
        executors: &[ExecutorDescription],
        driver_ids: &[DriverId],
        out: &mut Vec<Effect>,
    ) {
        let Some(worker) = self.live_worker(worker_id) else {
            out.warn(format!("Worker state from unknown worker: {worker_id}"));
            return;
        };
        let mut kills = Vec::new();
        for exec in executors {
            if !worker
                .executors
                .contains_key(&(exec.app_id.clone(), exec.exec_id))
            {
                kills.push(Effect::KillExecutor {
                    worker_id: worker_id.clone(),
                    app_id: exec.app_id.clone(),
                    exec_id: exec.exec_id,
                });
            }
        }
        for driver_id in driver_ids {
            if !worker.drivers.contains_key(driver_id) {
                kills.push(Effect::KillDriver {
                    worker_id: worker_id.clone(),
                    driver_id: driver_id.clone(),
                });
            }
        }
        for kill in &kills {
            let what = match kill {
                Effect::KillExecutor {
                    app_id, exec_id, ..
                } => format!("executor {app_id}/{exec_id}"),
                Effect::KillDriver { driver_id, .. } => format!("driver {driver_id}"),
                _ => continue,
            };
            out.warn(format!(
                "Worker {worker_id} runs unknown {what}; telling it to kill it"
            ));
        }
        out.extend(kills);
    }

    /// A worker that is registered and not DEAD.
    pub(super) fn live_worker(&self, worker_id: &WorkerId) -> Option<&WorkerInfo> {
        self.workers
            .get(worker_id)
            .filter(|w| w.state != WorkerState::Dead)
    }

    /// The worker announced it is decommissioning itself.
    pub(super) fn worker_decommissioning(&mut self, worker_id: &WorkerId, out: &mut Vec<Effect>) {
        if self.status == MasterStatus::Standby {
            out.push(Effect::MasterInStandby {
                worker_id: worker_id.clone(),
            });
            return;
        }
        if self.live_worker(worker_id).is_some() {
            self.decommission_worker(worker_id, out);
        }
    }

    /// Decommissions every live worker on the given hosts and tells each
    /// one; replies with how many matched (0 in STANDBY).
    pub(super) fn decommission_workers_on_hosts(
        &mut self,
        hosts: &[String],
        out: &mut Vec<Effect>,
    ) {
        if self.status == MasterStatus::Standby {
            out.push(Effect::Reply(Reply::WorkersDecommissioned(0)));
            return;
        }
        let wanted: BTreeSet<String> = hosts.iter().map(|h| h.to_lowercase()).collect();
        let matched: Vec<WorkerId> = self
            .worker_by_address
            .iter()
            .filter(|((host, _), _)| wanted.contains(&host.to_lowercase()))
            .map(|(_, id)| id.clone())
            .collect();
        out.info(format!(
            "Decommissioning {} worker(s) on hosts {hosts:?}",
            matched.len()
        ));
        for id in &matched {
            self.decommission_worker(id, out);
            out.push(Effect::DecommissionWorker {
                worker_id: id.clone(),
            });
        }
        let count = u32::try_from(matched.len()).unwrap_or(u32::MAX);
        out.push(Effect::Reply(Reply::WorkersDecommissioned(count)));
    }

    /// Spark's `decommissionWorker`: the worker becomes DECOMMISSIONED, its
    /// executors are reported DECOMMISSIONED to their apps and stop counting
    /// against the apps' cores (they keep their worker resources until they
    /// exit). Spark waits for the next scheduling round to replace them;
    /// flint schedules at once.
    pub(super) fn decommission_worker(&mut self, worker_id: &WorkerId, out: &mut Vec<Effect>) {
        let Some(worker) = self.workers.get_mut(worker_id) else {
            return;
        };
        if worker.state == WorkerState::Decommissioned {
            let msg = format!(
                "Skipping decommissioning worker {worker_id} on {} as worker is already decommissioned",
                worker.host_port()
            );
            out.warn(msg);
            return;
        }
        worker.state = WorkerState::Decommissioned;
        let host = worker.host.clone();
        let host_port = worker.host_port();
        let execs: Vec<_> = worker.executors.keys().cloned().collect();
        out.info(format!("Decommissioning worker {worker_id} on {host_port}"));
        for (app_id, exec_id) in execs {
            let Some(app) = self.apps.get_mut(&app_id) else {
                continue;
            };
            let Some(exec) = app.executors.get_mut(&exec_id) else {
                continue;
            };
            exec.state = ExecutorState::Decommissioned;
            app.remove_executor(exec_id);
            out.push(Effect::ExecutorUpdated {
                app_id,
                exec_id,
                state: ExecutorState::Decommissioned,
                message: Some("worker decommissioned".into()),
                exit_status: None,
                worker_host: Some(host.clone()),
            });
        }
        out.push(Effect::UnpersistWorker(worker_id.clone()));
        self.pending_schedule = true;
    }

    /// The connection to a worker dropped: Spark removes it at once.
    pub(super) fn worker_disconnected(
        &mut self,
        now: Now,
        worker_id: &WorkerId,
        out: &mut Vec<Effect>,
    ) {
        if let Some(worker) = self.live_worker(worker_id) {
            let msg = format!("{} got disassociated", worker.host_port());
            out.info(format!("{msg}, removing it."));
            self.remove_worker(now, worker_id, &msg, out);
        }
        self.maybe_complete_recovery(now, out);
    }

    /// Spark's `removeWorker`: the worker becomes DEAD; its executors are
    /// reported LOST to their apps and leave them (so `schedule()` replaces
    /// them elsewhere); its drivers are relaunched when supervised and
    /// otherwise end in ERROR; every active app hears `WorkerRemoved`.
    ///
    /// Unlike Spark, the DEAD worker's executor and driver lists are cleared
    /// (it shows 0 cores used): nothing runs there as far as the master is
    /// concerned.
    pub(super) fn remove_worker(
        &mut self,
        now: Now,
        worker_id: &WorkerId,
        msg: &str,
        out: &mut Vec<Effect>,
    ) {
        let Some(worker) = self.workers.get_mut(worker_id) else {
            return;
        };
        if worker.state == WorkerState::Dead {
            return;
        }
        worker.state = WorkerState::Dead;
        let host = worker.host.clone();
        let host_port = worker.host_port();
        let address = worker.address();
        let execs: Vec<_> = worker.executors.keys().cloned().collect();
        let driver_ids: Vec<DriverId> = worker.drivers.keys().cloned().collect();
        worker.clear();
        if self.worker_by_address.get(&address) == Some(worker_id) {
            self.worker_by_address.remove(&address);
        }
        out.info(format!("Removing worker {worker_id} on {host_port}"));

        for (app_id, exec_id) in execs {
            let Some(app) = self.apps.get_mut(&app_id) else {
                continue;
            };
            if let Some(exec) = app.executors.get_mut(&exec_id) {
                exec.state = ExecutorState::Lost;
                app.remove_executor(exec_id);
            } else if let Some(exec) = app.removed_executors.iter_mut().rev().find(|e| {
                e.id == exec_id
                    && e.worker_id == *worker_id
                    && e.state == ExecutorState::Decommissioned
            }) {
                // Decommissioned earlier: the driver still waits for its end.
                exec.state = ExecutorState::Lost;
            } else {
                continue;
            }
            out.push(Effect::ExecutorUpdated {
                app_id,
                exec_id,
                state: ExecutorState::Lost,
                message: Some(format!("worker lost: {msg}")),
                exit_status: None,
                worker_host: Some(host.clone()),
            });
        }
        for driver_id in driver_ids {
            let supervised = self
                .drivers
                .get(&driver_id)
                .is_some_and(|d| d.desc.supervise);
            if supervised {
                out.info(format!("Re-launching {driver_id}"));
                self.relaunch_driver(now, &driver_id, out);
            } else {
                out.info(format!(
                    "Not re-launching {driver_id} because it was not supervised"
                ));
                self.remove_driver(&driver_id, flint_proto::DriverState::Error, None, out);
            }
        }
        for app_id in &self.app_order {
            out.push(Effect::WorkerRemoved {
                app_id: app_id.clone(),
                worker_id: worker_id.clone(),
                host: host.clone(),
                message: msg.to_owned(),
            });
        }
        out.push(Effect::UnpersistWorker(worker_id.clone()));
        self.pending_schedule = true;
    }

    /// Spark's `timeOutDeadWorkers`, run on every [`Event::Tick`](super::Event::Tick):
    /// workers silent for longer than the timeout become DEAD; DEAD workers
    /// silent for `(dead_worker_persistence + 1) * timeout` are forgotten.
    /// Silence is measured on the monotonic clock only: a wall-clock jump
    /// neither kills live workers nor keeps frozen ones alive.
    pub(super) fn timeout_dead_workers(&mut self, now: Now, out: &mut Vec<Effect>) {
        let timeout = self.config.worker_timeout_ms;
        let stale_before = now.mono_ms.saturating_sub(timeout);
        let cull_before = now
            .mono_ms
            .saturating_sub(self.config.dead_worker_retention_ms());
        let stale: Vec<(WorkerId, WorkerState, u64)> = self
            .workers
            .values()
            .filter(|w| w.last_heartbeat_mono_ms < stale_before)
            .map(|w| (w.id.clone(), w.state, w.last_heartbeat_mono_ms))
            .collect();
        for (id, state, last) in stale {
            if state != WorkerState::Dead {
                let human = human_duration(timeout);
                out.warn(format!(
                    "Removing {id} because we got no heartbeat in {human}"
                ));
                self.remove_worker(
                    now,
                    &id,
                    &format!("Not receiving heartbeat for {human}"),
                    out,
                );
            } else if last < cull_before {
                self.workers.remove(&id);
            }
        }
    }
}
