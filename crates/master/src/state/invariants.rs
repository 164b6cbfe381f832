//! A self-check of the master's bookkeeping, for tests and debug builds.

use std::collections::BTreeSet;

use flint_proto::{ApplicationState, DriverState, ExecutorState, MasterStatus, WorkerState};

use super::MasterState;

impl MasterState {
    /// Checks that the master's records agree with each other; returns the
    /// first inconsistency found. Holds after every [`handle`](Self::handle):
    ///
    /// - every worker's used cores and memory are the sum of what its
    ///   executors and drivers hold, and never exceed what it offers;
    /// - a DEAD worker holds nothing;
    /// - every executor an active app counts sits on a live worker that
    ///   holds it, and is not finished; none on a DEAD worker is RUNNING;
    /// - an app's granted cores are the sum of its executors' cores;
    /// - the FIFO queue holds exactly the active apps, which are not
    ///   finished; completed apps are finished and within the retention;
    /// - the address index maps each live worker's address to it;
    /// - queued drivers are SUBMITTED and unplaced; placed drivers are
    ///   RUNNING on a live worker that holds them;
    /// - outside recovery nothing is UNKNOWN;
    /// - a worker is unhealthy exactly when it has strikes, and only an
    ///   unhealthy one backs off.
    pub fn check_invariants(&self) -> Result<(), String> {
        for w in self.workers.values() {
            let cores: u64 = w
                .executors
                .values()
                .chain(w.drivers.values())
                .map(|r| u64::from(r.cores))
                .sum();
            let memory: u64 = w
                .executors
                .values()
                .chain(w.drivers.values())
                .map(|r| r.memory_mb)
                .sum();
            if cores != u64::from(w.cores_used) || memory != w.memory_used_mb {
                return Err(format!(
                    "worker {}: used {}c/{}MB but holds {cores}c/{memory}MB",
                    w.id, w.cores_used, w.memory_used_mb
                ));
            }
            if w.cores_used > w.cores || w.memory_used_mb > w.memory_mb {
                return Err(format!(
                    "worker {}: uses {}c/{}MB of {}c/{}MB",
                    w.id, w.cores_used, w.memory_used_mb, w.cores, w.memory_mb
                ));
            }
            if w.state == WorkerState::Dead && (!w.executors.is_empty() || !w.drivers.is_empty()) {
                return Err(format!(
                    "DEAD worker {} still holds executors or drivers",
                    w.id
                ));
            }
            let h = &w.health;
            if h.unhealthy.is_some() != (h.strikes > 0)
                || (h.backoff_until_mono_ms > 0 && h.unhealthy.is_none())
                || u32::try_from(h.failing_apps.len()).unwrap_or(u32::MAX) > h.apps_failed
                || h.apps_failed > h.failures
            {
                return Err(format!("worker {}: inconsistent health {h:?}", w.id));
            }
            if w.state != WorkerState::Dead
                && self.worker_by_address.get(&w.address()) != Some(&w.id)
            {
                return Err(format!(
                    "live worker {} missing from the address index",
                    w.id
                ));
            }
        }
        for ((host, port), id) in &self.worker_by_address {
            match self.workers.get(id) {
                Some(w) if w.state != WorkerState::Dead && &w.host == host && w.port == *port => {}
                _ => return Err(format!("address index {host}:{port} -> {id} is stale")),
            }
        }

        let queued: BTreeSet<_> = self.app_order.iter().collect();
        if queued.len() != self.app_order.len()
            || queued.len() != self.apps.len()
            || self.apps.keys().any(|id| !queued.contains(id))
        {
            return Err("the FIFO app queue does not match the active apps".into());
        }
        for app in self.apps.values() {
            if app.state.is_finished() {
                return Err(format!("active app {} is {}", app.id, app.state));
            }
            let granted: u64 = app.executors.values().map(|e| u64::from(e.cores)).sum();
            if granted != u64::from(app.cores_granted) {
                return Err(format!(
                    "app {}: granted {} cores but its executors hold {granted}",
                    app.id, app.cores_granted
                ));
            }
            for e in app.executors.values() {
                let Some(w) = self.workers.get(&e.worker_id) else {
                    return Err(format!("executor {}/{} on unknown worker", app.id, e.id));
                };
                if w.state == WorkerState::Dead {
                    return Err(format!(
                        "executor {}/{} ({}) counted on DEAD worker {}",
                        app.id, e.id, e.state, w.id
                    ));
                }
                if !w.executors.contains_key(&(app.id.clone(), e.id)) {
                    return Err(format!(
                        "executor {}/{} not held by its worker {}",
                        app.id, e.id, w.id
                    ));
                }
                if e.state.is_finished() {
                    return Err(format!(
                        "active executor {}/{} is {}",
                        app.id, e.id, e.state
                    ));
                }
            }
            for e in &app.removed_executors {
                let dead = self
                    .workers
                    .get(&e.worker_id)
                    .is_none_or(|w| w.state == WorkerState::Dead);
                if dead && e.state == ExecutorState::Running {
                    return Err(format!(
                        "executor {}/{} RUNNING on a DEAD worker",
                        app.id, e.id
                    ));
                }
            }
            if self.status == MasterStatus::Alive && app.state == ApplicationState::Unknown {
                return Err(format!("app {} UNKNOWN outside recovery", app.id));
            }
        }
        if self.completed_apps.len() > self.config.retained_applications.max(1) {
            return Err(format!(
                "{} completed apps retained, limit {}",
                self.completed_apps.len(),
                self.config.retained_applications
            ));
        }
        for app in &self.completed_apps {
            if !app.state.is_finished() {
                return Err(format!("completed app {} is {}", app.id, app.state));
            }
        }

        for id in &self.waiting_drivers {
            match self.drivers.get(id) {
                Some(d) if d.state == DriverState::Submitted && d.worker_id.is_none() => {}
                _ => {
                    return Err(format!(
                        "queued driver {id} is not a SUBMITTED, unplaced driver"
                    ))
                }
            }
        }
        for d in self.drivers.values() {
            if let Some(wid) = &d.worker_id {
                let held = self
                    .workers
                    .get(wid)
                    .is_some_and(|w| w.state != WorkerState::Dead && w.drivers.contains_key(&d.id));
                if !held || !matches!(d.state, DriverState::Running | DriverState::Relaunching) {
                    return Err(format!(
                        "driver {} placed on {wid} but not held there",
                        d.id
                    ));
                }
            }
        }
        if self.completed_drivers.len() > self.config.retained_drivers.max(1) {
            return Err("too many completed drivers retained".into());
        }
        if self.status == MasterStatus::Alive
            && self
                .workers
                .values()
                .any(|w| w.state == WorkerState::Unknown)
        {
            return Err("a worker is UNKNOWN outside recovery".into());
        }
        Ok(())
    }
}
