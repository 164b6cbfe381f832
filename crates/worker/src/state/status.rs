//! The worker's `GET /api/v1/status` snapshot (Spark's worker `/json`) and
//! the state machine's invariants.

use flint_proto::{AppId, DriverId, DriverState, ExecutorId, ExecutorState, WorkerId, WorkerState};
use serde::{Deserialize, Serialize};

use super::drivers::DriverInfo;
use super::executors::ExecutorInfo;
use super::WorkerCore;

/// The worker's `GET /api/v1/status` document. Field names are snake_case;
/// ids and states serialize as strings, sizes in MB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker's id.
    pub id: WorkerId,
    /// ALIVE, DECOMMISSIONED once decommissioned, DEAD once it decided to
    /// exit.
    pub state: WorkerState,
    /// Whether a master accepted it (and no re-registration is under way).
    pub registered: bool,
    /// Whether it heartbeats a master.
    pub connected: bool,
    /// The current master's URL, once one is known.
    pub master_url: Option<String>,
    /// The current master's web UI, once one is known.
    pub master_web_ui_url: Option<String>,
    /// Cores it offers.
    pub cores: u32,
    /// Cores held by executors and drivers.
    pub cores_used: u32,
    /// Memory it offers, in MB.
    pub memory_mb: u64,
    /// Memory held by executors and drivers, in MB.
    pub memory_used_mb: u64,
    /// Executors not yet finished, by application then id.
    pub executors: Vec<ExecutorEntry>,
    /// Finished executors, oldest first, up to `worker.ui.retained_executors`.
    pub finished_executors: Vec<ExecutorEntry>,
    /// Drivers not yet finished, by id.
    pub drivers: Vec<DriverEntry>,
    /// Finished drivers, oldest first, up to `worker.ui.retained_drivers`.
    pub finished_drivers: Vec<DriverEntry>,
}

/// One executor in [`WorkerStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorEntry {
    /// Its application.
    pub app_id: AppId,
    /// Its id within the application.
    pub exec_id: ExecutorId,
    /// The application's name.
    pub app_name: String,
    /// Cores it holds (or held).
    pub cores: u32,
    /// Memory it holds (or held), in MB.
    pub memory_mb: u64,
    /// Its state.
    pub state: ExecutorState,
    /// Its exit status, once it ended.
    pub exit_status: Option<i32>,
    /// Why it ended, once it did.
    pub message: Option<String>,
}

/// One driver in [`WorkerStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverEntry {
    /// The driver.
    pub driver_id: DriverId,
    /// Cores it holds (or held).
    pub cores: u32,
    /// Memory it holds (or held), in MB.
    pub memory_mb: u64,
    /// Whether it is relaunched when it fails.
    pub supervise: bool,
    /// RUNNING until it finishes (also while waiting to be relaunched, as
    /// Spark shows it), then its final state.
    pub state: DriverState,
    /// Its last exit status, once a process of it ended.
    pub exit_status: Option<i32>,
    /// The error, for ERROR.
    pub exception: Option<String>,
}

impl WorkerCore {
    /// A snapshot for the status page.
    pub fn status(&self) -> WorkerStatus {
        let state = if self.stopped {
            WorkerState::Dead
        } else if self.decommissioned {
            WorkerState::Decommissioned
        } else {
            WorkerState::Alive
        };
        WorkerStatus {
            id: self.worker_id.clone(),
            state,
            registered: self.registered,
            connected: self.connected,
            master_url: self.master.as_ref().map(|m| m.url.clone()),
            master_web_ui_url: self.master.as_ref().map(|m| m.web_ui_url.clone()),
            cores: self.config.cores,
            cores_used: self.cores_used,
            memory_mb: self.config.memory_mb,
            memory_used_mb: self.memory_used_mb,
            executors: self.executors.values().map(executor_entry).collect(),
            finished_executors: self.finished_executors.iter().map(executor_entry).collect(),
            drivers: self.drivers.values().map(driver_entry).collect(),
            finished_drivers: self.finished_drivers.iter().map(driver_entry).collect(),
        }
    }

    /// Checks the bookkeeping: used cores and memory are the sums over
    /// unfinished executors and drivers and never exceed the totals;
    /// unfinished executors are LAUNCHING or RUNNING; finished lists respect
    /// their limits. For tests and debugging.
    pub fn check_invariants(&self) -> Result<(), String> {
        let cores: u64 = self
            .executors
            .values()
            .map(|e| u64::from(e.cores))
            .chain(self.drivers.values().map(|d| u64::from(d.desc.cores)))
            .sum();
        let memory: u64 = self
            .executors
            .values()
            .map(|e| e.memory_mb)
            .chain(self.drivers.values().map(|d| d.desc.memory_mb))
            .sum();
        if cores != u64::from(self.cores_used) {
            return Err(format!(
                "cores_used is {} but executors and drivers hold {cores}",
                self.cores_used
            ));
        }
        if memory != self.memory_used_mb {
            return Err(format!(
                "memory_used_mb is {} but executors and drivers hold {memory}",
                self.memory_used_mb
            ));
        }
        if self.cores_used > self.config.cores {
            return Err(format!(
                "{} cores used of {}",
                self.cores_used, self.config.cores
            ));
        }
        if self.memory_used_mb > self.config.memory_mb {
            return Err(format!(
                "{} MB used of {}",
                self.memory_used_mb, self.config.memory_mb
            ));
        }
        if let Some(e) = self
            .executors
            .values()
            .find(|e| !matches!(e.state, ExecutorState::Launching | ExecutorState::Running))
        {
            return Err(format!(
                "unfinished executor {}/{} is {}",
                e.app_id, e.exec_id, e.state
            ));
        }
        if let Some(e) = self
            .finished_executors
            .iter()
            .find(|e| !e.state.is_finished())
        {
            return Err(format!(
                "finished executor {}/{} is {}",
                e.app_id, e.exec_id, e.state
            ));
        }
        if self.finished_executors.len() > self.config.retained_executors {
            return Err("too many finished executors retained".into());
        }
        if self.finished_drivers.len() > self.config.retained_drivers {
            return Err("too many finished drivers retained".into());
        }
        Ok(())
    }
}

fn executor_entry(e: &ExecutorInfo) -> ExecutorEntry {
    ExecutorEntry {
        app_id: e.app_id.clone(),
        exec_id: e.exec_id,
        app_name: e.app_name.clone(),
        cores: e.cores,
        memory_mb: e.memory_mb,
        state: e.state,
        exit_status: e.exit_status,
        message: e.message.clone(),
    }
}

fn driver_entry(d: &DriverInfo) -> DriverEntry {
    DriverEntry {
        driver_id: d.driver_id.clone(),
        cores: d.desc.cores,
        memory_mb: d.desc.memory_mb,
        supervise: d.desc.supervise,
        state: d.final_state.unwrap_or(DriverState::Running),
        exit_status: d.exit_status,
        exception: d.exception.clone(),
    }
}
