//! Cluster-mode drivers: submission, kill, status, final states, relaunch.

use flint_proto::{DriverDescription, DriverId, DriverState, MasterStatus};
use flint_types::log::Logs as _;

use super::model::DriverInfo;
use super::{Effect, MasterState, Now, Reply, BACKUP_MASTER_PREFIX};

impl MasterState {
    /// Queues a driver (ALIVE only), persists it and schedules.
    pub(super) fn submit_driver(
        &mut self,
        now: Now,
        desc: DriverDescription,
        out: &mut Vec<Effect>,
    ) {
        if self.status != MasterStatus::Alive {
            out.push(Effect::Reply(Reply::SubmitDriver(flint_proto::messages::SubmitDriverResponse {
                success: false,
                driver_id: None,
                message: format!(
                    "{BACKUP_MASTER_PREFIX}: {}. Can only accept driver submissions in ALIVE state.",
                    self.status
                ),
            })));
            return;
        }
        if desc.command.program.is_empty() {
            out.push(Effect::Reply(Reply::SubmitDriver(
                flint_proto::messages::SubmitDriverResponse {
                    success: false,
                    driver_id: None,
                    message: "Invalid driver description: the command has an empty program".into(),
                },
            )));
            return;
        }
        out.info(format!("Driver submitted {}", desc.command.program));
        let driver_id = self.enqueue_new_driver(now, desc, out);
        out.push(Effect::Reply(Reply::SubmitDriver(
            flint_proto::messages::SubmitDriverResponse {
                success: true,
                message: format!("Driver successfully submitted as {driver_id}"),
                driver_id: Some(driver_id),
            },
        )));
    }

    fn enqueue_new_driver(
        &mut self,
        now: Now,
        desc: DriverDescription,
        out: &mut Vec<Effect>,
    ) -> DriverId {
        let driver_id = DriverId::generate(now.wall_ms, self.next_driver_number);
        self.next_driver_number = self.next_driver_number.wrapping_add(1);
        let driver = DriverInfo::new(driver_id.clone(), desc, now.wall_ms);
        out.push(Effect::PersistDriver(driver.record()));
        self.drivers.insert(driver_id.clone(), driver);
        self.waiting_drivers.push(driver_id.clone());
        self.pending_schedule = true;
        driver_id
    }

    /// Kills one driver (ALIVE only): a queued one ends KILLED at once, a
    /// running one is killed on its worker and ends when the worker reports.
    pub(super) fn kill_driver(&mut self, driver_id: DriverId, out: &mut Vec<Effect>) {
        if self.status != MasterStatus::Alive {
            let message = format!(
                "{BACKUP_MASTER_PREFIX}: {}. Can only kill drivers in ALIVE state.",
                self.status
            );
            out.push(Effect::Reply(Reply::KillDriver(
                flint_proto::messages::KillDriverResponse {
                    driver_id,
                    success: false,
                    message,
                },
            )));
            return;
        }
        out.info(format!("Asked to kill driver {driver_id}"));
        if self.drivers.contains_key(&driver_id) {
            self.start_driver_kill(&driver_id, out);
            let message = format!("Kill request for {driver_id} submitted");
            out.info(message.clone());
            out.push(Effect::Reply(Reply::KillDriver(
                flint_proto::messages::KillDriverResponse {
                    driver_id,
                    success: true,
                    message,
                },
            )));
        } else {
            let message = format!("Driver {driver_id} has already finished or does not exist");
            out.warn(message.clone());
            out.push(Effect::Reply(Reply::KillDriver(
                flint_proto::messages::KillDriverResponse {
                    driver_id,
                    success: false,
                    message,
                },
            )));
        }
    }

    /// Kills every active driver (ALIVE only).
    pub(super) fn kill_all_drivers(&mut self, out: &mut Vec<Effect>) {
        if self.status != MasterStatus::Alive {
            let message = format!(
                "{BACKUP_MASTER_PREFIX}: {}. Can only kill drivers in ALIVE state.",
                self.status
            );
            out.push(Effect::Reply(Reply::KillAllDrivers(
                flint_proto::messages::KillAllDriversResponse {
                    success: false,
                    message,
                },
            )));
            return;
        }
        out.info("Asked to kill all drivers".into());
        let ids: Vec<DriverId> = self.drivers.keys().cloned().collect();
        for id in ids {
            self.start_driver_kill(&id, out);
        }
        out.push(Effect::Reply(Reply::KillAllDrivers(
            flint_proto::messages::KillAllDriversResponse {
                success: true,
                message: "Kill request for all drivers submitted".into(),
            },
        )));
    }

    fn start_driver_kill(&mut self, driver_id: &DriverId, out: &mut Vec<Effect>) {
        if self.waiting_drivers.contains(driver_id) {
            self.waiting_drivers.retain(|d| d != driver_id);
            self.remove_driver(driver_id, DriverState::Killed, None, out);
        } else if let Some(worker_id) = self
            .drivers
            .get(driver_id)
            .and_then(|d| d.worker_id.clone())
        {
            out.push(Effect::KillDriver {
                worker_id,
                driver_id: driver_id.clone(),
            });
        }
    }

    /// A worker reports a driver's state. ERROR, FINISHED, KILLED and FAILED
    /// end it (Spark's `DriverStateChanged`). Beyond Spark, a supervised driver's
    /// worker reports RELAUNCHING when the process exited non-zero and waits out
    /// its back-off (counted in `relaunches`, the driver keeps its worker and
    /// resources), and RUNNING when it started again. Anything else, and
    /// non-final reports for a driver not running (an old attempt behind a
    /// partition), is refused with a warning.
    pub(super) fn driver_state_changed(
        &mut self,
        driver_id: &DriverId,
        state: DriverState,
        exception: Option<String>,
        out: &mut Vec<Effect>,
    ) {
        match state {
            DriverState::Error
            | DriverState::Finished
            | DriverState::Killed
            | DriverState::Failed => self.remove_driver(driver_id, state, exception, out),
            DriverState::Relaunching | DriverState::Running => {
                let Some(driver) = self
                    .drivers
                    .get_mut(driver_id)
                    .filter(|d| d.worker_id.is_some())
                else {
                    out.warn(format!(
                        "Ignoring {state} for driver {driver_id}: it does not run on a worker"
                    ));
                    return;
                };
                if state == DriverState::Relaunching && driver.state != DriverState::Relaunching {
                    driver.relaunches = driver.relaunches.saturating_add(1);
                    out.info(format!(
                        "Driver {driver_id} exited and is relaunched by its worker (relaunch {})",
                        driver.relaunches
                    ));
                }
                driver.state = state;
                driver.message = exception;
            }
            _ => out.warn(format!(
                "Received unexpected state update for driver {driver_id}: {state}"
            )),
        }
    }

    /// Answers [`Event::RequestDriverAttempt`](super::Event::RequestDriverAttempt):
    /// follows `relaunched_as` from `driver_id` to the newest attempt (bounded by the
    /// records kept) and answers its status.
    pub(super) fn request_driver_attempt(&self, driver_id: &DriverId, out: &mut Vec<Effect>) {
        let find = |id: &DriverId| {
            self.drivers
                .get(id)
                .or_else(|| self.completed_drivers.iter().find(|d| &d.id == id))
        };
        let mut current = driver_id.clone();
        let mut hops = 0usize;
        let limit = self.drivers.len() + self.completed_drivers.len();
        while let Some(next) = find(&current).and_then(|d| d.relaunched_as.clone()) {
            if hops > limit {
                break;
            }
            hops += 1;
            current = next;
        }
        let mut status_out = Vec::new();
        self.request_driver_status(&current, &mut status_out);
        let status = status_out.into_iter().find_map(|e| match e {
            Effect::Reply(Reply::DriverStatus(s)) => Some(s),
            _ => None,
        });
        let Some(status) = status else {
            return;
        };
        let known = status.found;
        out.push(Effect::Reply(Reply::DriverAttempt(
            flint_proto::messages::DriverAttemptResponse {
                driver_id: known.then_some(current.clone()),
                relaunches: find(&current).map_or(0, |d| d.relaunches),
                status,
            },
        )));
    }

    /// The newest attempt of `driver_id`, as [`Self::request_driver_attempt`] answers
    /// it; `None` when this master is not the one to ask (not ALIVE).
    pub fn driver_attempt(
        &self,
        driver_id: &DriverId,
    ) -> Option<flint_proto::messages::DriverAttemptResponse> {
        let mut out = Vec::new();
        self.request_driver_attempt(driver_id, &mut out);
        out.into_iter().find_map(|e| match e {
            Effect::Reply(Reply::DriverAttempt(a)) => Some(a),
            _ => None,
        })
    }

    /// Answers a driver status request (ALIVE only).
    pub(super) fn request_driver_status(&self, driver_id: &DriverId, out: &mut Vec<Effect>) {
        if self.status != MasterStatus::Alive {
            out.push(Effect::Reply(Reply::DriverStatus(
                flint_proto::messages::DriverStatusResponse {
                    found: false,
                    state: None,
                    worker_id: None,
                    worker_host_port: None,
                    exception: Some(format!(
                    "{BACKUP_MASTER_PREFIX}: {}. Can only request driver status in ALIVE state.",
                    self.status
                )),
                },
            )));
            return;
        }
        let driver = self
            .drivers
            .get(driver_id)
            .or_else(|| self.completed_drivers.iter().find(|d| &d.id == driver_id));
        let reply = match driver {
            Some(d) => Reply::DriverStatus(flint_proto::messages::DriverStatusResponse {
                found: true,
                state: Some(d.state),
                worker_id: d.worker_id.clone(),
                worker_host_port: d
                    .worker_id
                    .as_ref()
                    .and_then(|w| self.workers.get(w))
                    .map(|w| w.host_port()),
                exception: d.message.clone(),
            }),
            None => Reply::DriverStatus(flint_proto::messages::DriverStatusResponse {
                found: false,
                state: None,
                worker_id: None,
                worker_host_port: None,
                exception: None,
            }),
        };
        out.push(Effect::Reply(reply));
    }

    /// Spark's `removeDriver`: the driver moves to the completed list
    /// (trimmed to `retained_drivers`), is unpersisted and releases its
    /// worker resources.
    pub(super) fn remove_driver(
        &mut self,
        driver_id: &DriverId,
        state: DriverState,
        exception: Option<String>,
        out: &mut Vec<Effect>,
    ) {
        let Some(mut driver) = self.drivers.remove(driver_id) else {
            out.warn(format!("Asked to remove unknown driver: {driver_id}"));
            return;
        };
        out.info(format!("Removing driver: {driver_id} ({state})"));
        self.waiting_drivers.retain(|d| d != driver_id);
        let retained = self.config.retained_drivers;
        if self.completed_drivers.len() >= retained {
            let drop = (retained / 10).max(1).min(self.completed_drivers.len());
            self.completed_drivers.drain(..drop);
        }
        out.push(Effect::UnpersistDriver(driver_id.clone()));
        driver.state = state;
        driver.message = exception;
        if let Some(worker) = driver
            .worker_id
            .as_ref()
            .and_then(|w| self.workers.get_mut(w))
        {
            worker.remove_driver(driver_id);
        }
        self.completed_drivers.push_back(driver);
        self.pending_schedule = true;
    }

    /// Spark's `relaunchDriver`: the old record ends RELAUNCHING and the same
    /// description is queued under a new id (SPARK-19900: the old process may
    /// still be running behind a partition).
    pub(super) fn relaunch_driver(
        &mut self,
        now: Now,
        driver_id: &DriverId,
        out: &mut Vec<Effect>,
    ) {
        let Some((desc, relaunches)) = self
            .drivers
            .get(driver_id)
            .map(|d| (d.desc.clone(), d.relaunches))
        else {
            return;
        };
        self.remove_driver(driver_id, DriverState::Relaunching, None, out);
        let new_id = self.enqueue_new_driver(now, desc, out);
        if let Some(new) = self.drivers.get_mut(&new_id) {
            new.relaunches = relaunches.saturating_add(1);
        }
        if let Some(old) = self
            .completed_drivers
            .iter_mut()
            .rev()
            .find(|d| &d.id == driver_id)
        {
            old.relaunched_as = Some(new_id.clone());
        }
        out.info(format!("Driver {driver_id} relaunched as {new_id}"));
    }

    /// Places a driver on a worker.
    pub(super) fn launch_driver(
        &mut self,
        worker_id: &flint_proto::WorkerId,
        driver_id: &DriverId,
        out: &mut Vec<Effect>,
    ) {
        out.info(format!(
            "Launching driver {driver_id} on worker {worker_id}"
        ));
        let Some(driver) = self.drivers.get_mut(driver_id) else {
            return;
        };
        let Some(worker) = self.workers.get_mut(worker_id) else {
            return;
        };
        worker.add_driver(driver_id.clone(), driver.resources());
        driver.worker_id = Some(worker_id.clone());
        driver.state = DriverState::Running;
        out.push(Effect::LaunchDriver {
            worker_id: worker_id.clone(),
            driver_id: driver_id.clone(),
            desc: Box::new(driver.desc.clone()),
        });
        self.waiting_drivers.retain(|d| d != driver_id);
    }
}
