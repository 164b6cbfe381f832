//! The master's records of workers, applications, executors and drivers.

use std::collections::BTreeMap;

use super::health::{AppWorkerFailures, WorkerHealth};
use super::{DriverAddress, Now};
use flint_proto::{
    AppId, ApplicationDescription, ApplicationState, DriverDescription, DriverId, DriverState,
    ExecutorId, ExecutorState, WorkerId, WorkerState,
};

/// Cores and memory held by one executor or driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resources {
    pub cores: u32,
    pub memory_mb: u64,
}

/// A worker (Spark's `WorkerInfo`).
#[derive(Debug, Clone)]
pub(super) struct WorkerInfo {
    pub id: WorkerId,
    pub host: String,
    pub port: u16,
    pub cores: u32,
    pub memory_mb: u64,
    pub web_ui_url: String,
    pub state: WorkerState,
    /// When the master last heard from it (monotonic ms): what timeouts use.
    pub last_heartbeat_mono_ms: u64,
    /// The same moment on the wall clock (epoch ms), for display only.
    pub last_heartbeat_wall_ms: u64,
    pub cores_used: u32,
    pub memory_used_mb: u64,
    /// Executors holding resources here, with what they hold.
    pub executors: BTreeMap<(AppId, ExecutorId), Resources>,
    /// Drivers holding resources here.
    pub drivers: BTreeMap<DriverId, Resources>,
    /// Whether executor launches here keep failing.
    pub health: WorkerHealth,
}

impl WorkerInfo {
    pub fn new(reg: &crate::state::WorkerRegistration, now: Now) -> Self {
        Self {
            id: reg.id.clone(),
            host: reg.host.clone(),
            port: reg.port,
            cores: reg.cores,
            memory_mb: reg.memory_mb,
            web_ui_url: reg.web_ui_url.clone(),
            state: WorkerState::Alive,
            last_heartbeat_mono_ms: now.mono_ms,
            last_heartbeat_wall_ms: now.wall_ms,
            cores_used: 0,
            memory_used_mb: 0,
            executors: BTreeMap::new(),
            drivers: BTreeMap::new(),
            health: WorkerHealth::default(),
        }
    }

    /// Whether new executors may be placed here at `now`: ALIVE and not in
    /// an unhealthy worker's back-off.
    pub fn accepts_executors(&self, now: Now) -> bool {
        self.state == WorkerState::Alive && !self.health.backing_off(now)
    }

    /// Records that the master heard from the worker at `now`.
    pub fn heard_from(&mut self, now: Now) {
        self.last_heartbeat_mono_ms = now.mono_ms;
        self.last_heartbeat_wall_ms = now.wall_ms;
    }

    pub fn address(&self) -> (String, u16) {
        (self.host.clone(), self.port)
    }

    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn cores_free(&self) -> u32 {
        self.cores.saturating_sub(self.cores_used)
    }

    pub fn memory_free(&self) -> u64 {
        self.memory_mb.saturating_sub(self.memory_used_mb)
    }

    /// Whether `need` fits in what is free now.
    pub fn fits(&self, need: Resources) -> bool {
        self.cores_free() >= need.cores && self.memory_free() >= need.memory_mb
    }

    pub fn add_executor(&mut self, app_id: AppId, exec_id: ExecutorId, res: Resources) {
        if let Some(old) = self.executors.insert((app_id, exec_id), res) {
            self.release(old);
        }
        self.acquire(res);
    }

    pub fn remove_executor(&mut self, app_id: &AppId, exec_id: ExecutorId) -> bool {
        match self.executors.remove(&(app_id.clone(), exec_id)) {
            Some(res) => {
                self.release(res);
                true
            }
            None => false,
        }
    }

    pub fn add_driver(&mut self, driver_id: DriverId, res: Resources) {
        if let Some(old) = self.drivers.insert(driver_id, res) {
            self.release(old);
        }
        self.acquire(res);
    }

    pub fn remove_driver(&mut self, driver_id: &DriverId) {
        if let Some(res) = self.drivers.remove(driver_id) {
            self.release(res);
        }
    }

    /// Forgets every executor and driver (the worker is gone).
    pub fn clear(&mut self) {
        self.executors.clear();
        self.drivers.clear();
        self.cores_used = 0;
        self.memory_used_mb = 0;
    }

    fn acquire(&mut self, res: Resources) {
        self.cores_used = self.cores_used.saturating_add(res.cores);
        self.memory_used_mb = self.memory_used_mb.saturating_add(res.memory_mb);
    }

    fn release(&mut self, res: Resources) {
        self.cores_used = self.cores_used.saturating_sub(res.cores);
        self.memory_used_mb = self.memory_used_mb.saturating_sub(res.memory_mb);
    }
}

/// An executor as its application sees it (Spark's `ExecutorDesc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExecutorInfo {
    pub id: ExecutorId,
    pub worker_id: WorkerId,
    pub cores: u32,
    pub memory_mb: u64,
    pub state: ExecutorState,
    /// When it reported RUNNING (monotonic ms), if it has.
    pub running_since_mono_ms: Option<u64>,
    /// When the master asked for it (monotonic ms; 0 for executors learnt
    /// from a worker during recovery).
    pub launched_mono_ms: u64,
}

impl ExecutorInfo {
    /// RUNNING for at least `stable_ms`: proof the app's executors can run.
    pub fn is_stable(&self, now: Now, stable_ms: u64) -> bool {
        self.state == ExecutorState::Running
            && self
                .running_since_mono_ms
                .is_some_and(|t| now.mono_since(t) >= stable_ms)
    }
}

/// How many removed executors an app remembers (for display and for telling
/// the driver about decommissioned executors that are later lost).
const MAX_REMOVED_EXECUTORS: usize = 1000;

/// An application (Spark's `ApplicationInfo`).
#[derive(Debug, Clone)]
pub(super) struct AppInfo {
    pub id: AppId,
    pub desc: ApplicationDescription,
    /// Wall clock (epoch ms): for the id and display.
    pub submit_ms: u64,
    pub driver_address: DriverAddress,
    pub state: ApplicationState,
    /// Wall clock (epoch ms), for display.
    pub end_ms: Option<u64>,
    /// Executors counted against the app's cores.
    pub executors: BTreeMap<ExecutorId, ExecutorInfo>,
    /// Executors that left, most recent last.
    pub removed_executors: Vec<ExecutorInfo>,
    pub cores_granted: u32,
    next_executor_id: ExecutorId,
    pub retry_count: u32,
    pub executor_limit: u32,
    requested_cores: u32,
    pub waiting_reason: Option<String>,
    /// Quick executor failures per worker; at
    /// `max_failures_per_worker` the app gets no more executors there.
    pub worker_failures: BTreeMap<WorkerId, AppWorkerFailures>,
    /// No new executors before this (monotonic ms): the relaunch back-off
    /// after a failure.
    pub relaunch_at_mono_ms: u64,
}

impl AppInfo {
    pub fn new(
        id: AppId,
        desc: ApplicationDescription,
        submit_ms: u64,
        driver_address: DriverAddress,
        default_cores: u32,
    ) -> Self {
        Self {
            id,
            requested_cores: desc.max_cores.unwrap_or(default_cores),
            executor_limit: desc.initial_executor_limit.unwrap_or(u32::MAX),
            desc,
            submit_ms,
            driver_address,
            state: ApplicationState::Waiting,
            end_ms: None,
            executors: BTreeMap::new(),
            removed_executors: Vec::new(),
            cores_granted: 0,
            next_executor_id: ExecutorId(0),
            retry_count: 0,
            waiting_reason: None,
            worker_failures: BTreeMap::new(),
            relaunch_at_mono_ms: 0,
        }
    }

    /// Whether the app gets no more executors on `worker_id`.
    pub fn excludes(&self, worker_id: &WorkerId, max_failures: u32) -> bool {
        self.worker_failures
            .get(worker_id)
            .is_some_and(|f| f.count >= max_failures)
    }

    /// Quick failures of the app's executors on `worker_id`.
    pub fn failures_on(&self, worker_id: &WorkerId) -> u32 {
        self.worker_failures.get(worker_id).map_or(0, |f| f.count)
    }
    pub fn record(&self) -> crate::state::AppRecord {
        crate::state::AppRecord {
            id: self.id.clone(),
            desc: self.desc.clone(),
            submit_ms: self.submit_ms,
            driver_address: self.driver_address.clone(),
        }
    }

    pub fn requested_cores(&self) -> u32 {
        self.requested_cores
    }

    pub fn cores_left(&self) -> u32 {
        self.requested_cores.saturating_sub(self.cores_granted)
    }

    /// Cores per executor, with Spark's "one executor per worker" default
    /// counted as needing at least one core.
    pub fn min_cores_per_executor(&self) -> u32 {
        self.desc.cores_per_executor.unwrap_or(1).max(1)
    }

    /// Adds an executor; `use_id` keeps a recovered executor's id.
    pub fn add_executor(
        &mut self,
        worker_id: WorkerId,
        res: Resources,
        state: ExecutorState,
        use_id: Option<ExecutorId>,
    ) -> ExecutorId {
        let id = match use_id {
            Some(id) => {
                self.next_executor_id = self.next_executor_id.max(id.next());
                id
            }
            None => {
                let id = self.next_executor_id;
                self.next_executor_id = id.next();
                id
            }
        };
        let exec = ExecutorInfo {
            id,
            worker_id,
            cores: res.cores,
            memory_mb: res.memory_mb,
            state,
            running_since_mono_ms: None,
            launched_mono_ms: 0,
        };
        if let Some(old) = self.executors.insert(id, exec) {
            self.cores_granted = self.cores_granted.saturating_sub(old.cores);
        }
        self.cores_granted = self.cores_granted.saturating_add(res.cores);
        self.waiting_reason = None;
        id
    }

    /// Moves an executor to the removed list; returns it.
    pub fn remove_executor(&mut self, id: ExecutorId) -> Option<ExecutorInfo> {
        let exec = self.executors.remove(&id)?;
        self.cores_granted = self.cores_granted.saturating_sub(exec.cores);
        if self.removed_executors.len() >= MAX_REMOVED_EXECUTORS {
            self.removed_executors.remove(0);
        }
        self.removed_executors.push(exec.clone());
        Some(exec)
    }

    /// Whether some executor has been RUNNING for at least `stable_ms`.
    pub fn has_stable_executor(&self, now: Now, stable_ms: u64) -> bool {
        self.executors.values().any(|e| e.is_stable(now, stable_ms))
    }
}

/// A cluster-mode driver (Spark's `DriverInfo`).
#[derive(Debug, Clone)]
pub(super) struct DriverInfo {
    pub id: DriverId,
    pub desc: DriverDescription,
    pub submit_ms: u64,
    pub state: DriverState,
    pub worker_id: Option<WorkerId>,
    pub message: Option<String>,
    /// Relaunches so far (by the master elsewhere, or by its worker).
    pub relaunches: u32,
    /// The id the master relaunched it as (this record ended RELAUNCHING).
    pub relaunched_as: Option<DriverId>,
}

impl DriverInfo {
    pub fn new(id: DriverId, desc: DriverDescription, submit_ms: u64) -> Self {
        Self {
            id,
            desc,
            submit_ms,
            state: DriverState::Submitted,
            worker_id: None,
            message: None,
            relaunches: 0,
            relaunched_as: None,
        }
    }

    pub fn record(&self) -> crate::state::DriverRecord {
        crate::state::DriverRecord {
            id: self.id.clone(),
            desc: self.desc.clone(),
            submit_ms: self.submit_ms,
        }
    }

    pub fn resources(&self) -> Resources {
        Resources {
            cores: self.desc.cores,
            memory_mb: self.desc.memory_mb,
        }
    }
}
