//! Registration with masters, master changes and disconnects, heartbeats,
//! work dir cleanup timers and decommissioning.

use flint_types::log::Logs as _;
use std::collections::BTreeSet;

use flint_proto::{DriverId, ExecutorDescription};

use super::{DecommissionTrigger, Effect, KnownMaster, WorkerCore};

impl WorkerCore {
    /// Spark's `onStart`: register with every configured master.
    pub(super) fn start(&mut self, out: &mut Vec<Effect>) {
        if self.started {
            out.warn("Worker already started; ignoring a second start".into());
            return;
        }
        self.started = true;
        out.info(format!(
            "Starting flint worker {} with {} cores, {} MB RAM",
            self.worker_id, self.config.cores, self.config.memory_mb
        ));
        self.register_with_master(false, out);
    }

    /// Spark's `registerWithMaster`: unless a retry timer is already armed
    /// (disconnect notices can repeat), forget being registered, send a
    /// registration round and arm the retry timer at the short interval.
    ///
    /// Deviation from Spark: when the worker lost its master (`quick`: after
    /// a disconnect or `ReconnectWorker`, not at start), the timer is armed
    /// at the first quick re-registration delay instead; see
    /// [`registration_retry_tick`](Self::registration_retry_tick).
    ///
    /// Deviation from Spark: when a master is known, this first round also
    /// goes to that master only (Spark sends its first round after a
    /// disconnect or `ReconnectWorker` to every configured master and only
    /// the retries to the known one). Registering with one master only keeps
    /// the SPARK-4592 guarantee from the first message: a standby that took
    /// over contacts the worker itself with `MasterChanged`.
    pub(super) fn register_with_master(&mut self, quick: bool, out: &mut Vec<Effect>) {
        if self.retry_armed {
            out.info(
                "Not spawning another attempt to register with the master, since there is an \
                 attempt scheduled already."
                    .into(),
            );
            return;
        }
        self.registered = false;
        self.send_registrations(out);
        self.attempts = 0;
        match self.reregistration_delays_ms.first() {
            Some(&first) if quick => {
                self.quick_retry = Some(0);
                self.arm_retry(first, out);
            }
            _ => {
                self.quick_retry = None;
                self.arm_retry(self.initial_retry_ms, out);
            }
        }
    }

    /// Spark's `reregisterWithMaster`, run by the retry timer: count the
    /// attempt; stop if registered; send another round while retries remain
    /// (switching to the long interval after
    /// `worker.initial_registration_retries`); exit after
    /// `worker.max_registration_retries`.
    ///
    /// While re-registering quickly, a tick sends another round and arms
    /// the next, doubled delay; after the last quick delay the short
    /// interval follows and Spark's count of attempts begins.
    pub(super) fn registration_retry_tick(&mut self, generation: u64, out: &mut Vec<Effect>) {
        if !self.retry_armed || generation != self.retry_generation {
            return;
        }
        self.retry_armed = false;
        if let Some(index) = self.quick_retry.take() {
            if self.registered {
                self.cancel_retry();
                return;
            }
            let delay = self
                .reregistration_delays_ms
                .get(index)
                .copied()
                .unwrap_or(0);
            out.info(format!(
                "Retrying connection to master (quick retry after {delay} ms)"
            ));
            self.send_registrations(out);
            match self.reregistration_delays_ms.get(index + 1) {
                Some(&next) => {
                    self.quick_retry = Some(index + 1);
                    self.arm_retry(next, out);
                }
                None => self.arm_retry(self.initial_retry_ms, out),
            }
            return;
        }
        self.attempts = self.attempts.saturating_add(1);
        if self.registered {
            self.cancel_retry();
            return;
        }
        if self.attempts <= self.config.max_registration_retries {
            out.info(format!(
                "Retrying connection to master (attempt # {})",
                self.attempts
            ));
            self.send_registrations(out);
            let delay = if self.attempts >= self.config.initial_registration_retries {
                self.prolonged_retry_ms
            } else {
                self.initial_retry_ms
            };
            self.arm_retry(delay, out);
        } else {
            let targets = self.registration_targets();
            let refused = self.refusals_of(&targets);
            let reason = if refused.is_empty() {
                format!(
                    "All masters are unresponsive! Giving up: no master at {} accepted worker {} \
                     after {} registration retries (worker.max_registration_retries).",
                    targets.join(", "),
                    self.worker_id,
                    self.config.max_registration_retries
                )
            } else {
                // Say what is wrong, not that the masters are silent.
                let silent: Vec<&str> = targets
                    .iter()
                    .filter(|t| self.refusals_of(std::slice::from_ref(t)).is_empty())
                    .map(String::as_str)
                    .collect();
                let mut reason = format!(
                    "Giving up registering worker {} after {} registration retries \
                     (worker.max_registration_retries): {}",
                    self.worker_id,
                    self.config.max_registration_retries,
                    refused.join("; ")
                );
                if !silent.is_empty() {
                    reason.push_str(&format!("; no answer from {}", silent.join(", ")));
                }
                reason
            };
            self.exit(1, reason, out);
        }
    }

    /// Spark's `RegisteredWorker` handling: switch to the master, start
    /// heartbeats (once; the first goes out at once) and the cleanup timer
    /// (once, if enabled), and tell the master what this worker runs.
    pub(super) fn registered(
        &mut self,
        master_url: String,
        master_web_ui_url: String,
        master_address: String,
        duplicate: bool,
        out: &mut Vec<Effect>,
    ) {
        let preferred = if self.config.prefer_configured_master_address {
            &master_address
        } else {
            &master_url
        };
        if duplicate {
            out.warn(format!("Duplicate registration at master {preferred}"));
        }
        out.info(format!("Successfully registered with master {preferred}"));
        self.registered = true;
        self.auth_refusals.clear();
        self.change_master(master_url.clone(), master_web_ui_url, master_address);
        self.start_heartbeats(out);
        if self.config.cleanup_enabled && !self.cleanup_armed {
            self.cleanup_armed = true;
            out.info(
                "Worker cleanup enabled; old application directories will be deleted from the \
                 work dir"
                    .into(),
            );
            out.push(Effect::ScheduleCleanup {
                delay_ms: self.config.cleanup_interval_ms,
            });
        }
        let (executors, driver_ids) = self.running_state();
        out.push(Effect::SendWorkerLatestState {
            master_url,
            executors,
            driver_ids,
        });
    }

    /// Spark's `RegisterWorkerFailed` handling: a worker not yet registered
    /// exits; a registered one ignores it.
    pub(super) fn register_failed(&mut self, message: String, out: &mut Vec<Effect>) {
        if self.registered {
            out.warn(format!(
                "Ignoring a registration failure while registered: {message}"
            ));
        } else {
            self.exit(1, format!("Worker registration failed: {message}"), out);
        }
    }

    /// Spark's `MasterChanged` handling: switch to the new master and answer
    /// with what this worker runs. Also starts heartbeats if they never
    /// started (Spark relies on an earlier registration having started them).
    pub(super) fn master_changed(
        &mut self,
        master_url: String,
        master_web_ui_url: String,
        out: &mut Vec<Effect>,
    ) {
        out.info(format!("Master has changed, new master is at {master_url}"));
        self.change_master(master_url.clone(), master_web_ui_url, master_url.clone());
        let (executors, driver_ids) = self.running_state();
        out.push(Effect::SendWorkerSchedulerState {
            master_url,
            executors,
            driver_ids,
        });
        self.start_heartbeats(out);
    }

    /// Spark's `onDisconnected` + `masterDisconnected`: when the dropped
    /// address is the master's, stop heartbeating and re-register.
    pub(super) fn master_disconnected(&mut self, address: &str, out: &mut Vec<Effect>) {
        let is_master = self
            .master
            .as_ref()
            .is_some_and(|m| m.url == address || m.address_to_connect == address);
        if !is_master {
            return;
        }
        out.error(format!(
            "Connection to master {address} failed! Waiting for master to reconnect..."
        ));
        self.connected = false;
        self.register_with_master(true, out);
    }

    /// Spark's `SendHeartbeat`: heartbeat while connected; the timer keeps
    /// running either way.
    pub(super) fn heartbeat_tick(&mut self, out: &mut Vec<Effect>) {
        if !self.heartbeat_armed {
            return;
        }
        if self.connected {
            if let Some(m) = &self.master {
                out.push(Effect::SendHeartbeat {
                    master_url: m.url.clone(),
                });
            }
        }
        out.push(Effect::ScheduleHeartbeat {
            delay_ms: self.config.heartbeat_interval_ms,
        });
    }

    /// Spark's `WorkDirCleanup`: clean directories of applications and
    /// drivers that no longer run here, and re-arm the timer.
    pub(super) fn cleanup_tick(&mut self, out: &mut Vec<Effect>) {
        if !self.cleanup_armed {
            return;
        }
        let keep: BTreeSet<String> = self
            .executors
            .keys()
            .map(|(app_id, _)| app_id.to_string())
            .chain(self.drivers.keys().map(DriverId::to_string))
            .collect();
        let keep = keep.into_iter().collect();
        out.push(Effect::CleanupWorkDir {
            keep,
            app_data_ttl_ms: self.config.app_data_ttl_ms,
        });
        out.push(Effect::ScheduleCleanup {
            delay_ms: self.config.cleanup_interval_ms,
        });
    }

    /// Spark's `decommissionSelf` (and `WorkerDecommissionSigReceived`):
    /// refuse further launches; when signalled, tell the master so that it
    /// stops placing work here and tells the applications.
    pub(super) fn decommission(&mut self, trigger: DecommissionTrigger, out: &mut Vec<Effect>) {
        if !self.config.decommission_enabled {
            out.warn(
                "Receive decommission request, but decommission feature is disabled \
                 (decommission.enabled)."
                    .into(),
            );
            return;
        }
        if self.decommissioned {
            out.warn(format!(
                "Worker {} already started decommissioning.",
                self.worker_id
            ));
        } else {
            self.decommissioned = true;
            out.info(format!("Decommission worker {}.", self.worker_id));
        }
        if trigger == DecommissionTrigger::Signal {
            match &self.master {
                Some(m) => out.push(Effect::SendWorkerDecommissioning {
                    master_url: m.url.clone(),
                }),
                None => out.warn(
                    "Dropping WorkerDecommissioning because the connection to master has not yet \
                     been established"
                        .into(),
                ),
            }
        }
    }

    /// Spark's `changeMaster`: remember the master, mark connected, cancel
    /// registration retries.
    fn change_master(&mut self, url: String, web_ui_url: String, address_to_connect: String) {
        self.master = Some(KnownMaster {
            url,
            web_ui_url,
            address_to_connect,
        });
        self.connected = true;
        self.cancel_retry();
    }

    /// Starts the heartbeat timer unless it runs: one heartbeat now, the next
    /// after `worker.timeout / 4` (Spark's fixed rate starting at 0).
    fn start_heartbeats(&mut self, out: &mut Vec<Effect>) {
        if self.heartbeat_armed {
            return;
        }
        self.heartbeat_armed = true;
        if let Some(m) = &self.master {
            out.push(Effect::SendHeartbeat {
                master_url: m.url.clone(),
            });
        }
        out.push(Effect::ScheduleHeartbeat {
            delay_ms: self.config.heartbeat_interval_ms,
        });
    }

    /// Where a registration round goes: the known master (at its advertised
    /// address, or the configured one with
    /// `worker.prefer_configured_master_address`), else every configured
    /// master.
    fn registration_targets(&self) -> Vec<String> {
        match &self.master {
            Some(m) if self.config.prefer_configured_master_address => {
                vec![m.address_to_connect.clone()]
            }
            Some(m) => vec![m.url.clone()],
            None => self.config.master_urls.clone(),
        }
    }

    fn send_registrations(&self, out: &mut Vec<Effect>) {
        for url in self.registration_targets() {
            out.info(format!("Connecting to master {url}..."));
            let master_index = self.config.master_urls.iter().position(|u| *u == url);
            out.push(Effect::RegisterWithMaster {
                master_url: url,
                master_index,
            });
        }
    }

    fn arm_retry(&mut self, delay_ms: u64, out: &mut Vec<Effect>) {
        self.retry_generation = self.retry_generation.wrapping_add(1);
        self.retry_armed = true;
        out.push(Effect::ScheduleRegistrationRetry {
            delay_ms,
            generation: self.retry_generation,
        });
    }

    /// Spark's `cancelLastRegistrationRetry`; a tick already on its way is
    /// recognised as stale by its generation.
    fn cancel_retry(&mut self) {
        self.quick_retry = None;
        if self.retry_armed {
            self.retry_armed = false;
            self.retry_generation = self.retry_generation.wrapping_add(1);
        }
    }

    /// The executors and drivers this worker runs, as reported to a master.
    fn running_state(&self) -> (Vec<ExecutorDescription>, Vec<DriverId>) {
        (
            self.executors.values().map(|e| e.description()).collect(),
            self.drivers.keys().cloned().collect(),
        )
    }
}
