//! JSON status documents served by the daemons' `/api/v1/` endpoints.
//!
//! Field names are snake_case and fixed: they are what scripts and the CLI
//! parse. Ids and states serialize as strings (`"app-20261122035500-0000"`,
//! `"ALIVE"`), sizes in MB, times in epoch milliseconds.

use serde::{Deserialize, Serialize};

use crate::{
    AppId, ApplicationState, DriverId, DriverState, ExecutorId, ExecutorState, MasterStatus,
    WorkerId, WorkerState,
};

/// The master's `GET /api/v1/status` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatusJson {
    /// The master's URL, `flint://host:port`.
    pub url: String,
    /// The master's own state.
    pub status: MasterStatus,
    /// Whether RPC authentication is on (a shared secret or TLS). When it is
    /// off, anyone who can reach the master's port can run code on the
    /// cluster. Absent in documents from older masters (read as false).
    #[serde(default)]
    pub auth: bool,
    /// Every worker the master lists, DEAD ones included until culled.
    pub workers: Vec<WorkerStatusJson>,
    /// How many workers are ALIVE.
    pub alive_workers: u32,
    /// Cores of the ALIVE workers.
    pub cores: u64,
    /// Cores in use on the ALIVE workers.
    pub cores_used: u64,
    /// Memory of the ALIVE workers, in MB.
    pub memory_mb: u64,
    /// Memory in use on the ALIVE workers, in MB.
    pub memory_used_mb: u64,
    /// Applications that are WAITING or RUNNING (or UNKNOWN during recovery),
    /// in registration order.
    pub active_apps: Vec<AppStatusJson>,
    /// Finished applications, oldest first, up to `deploy.retained_applications`.
    pub completed_apps: Vec<AppStatusJson>,
    /// Drivers that are queued or running.
    pub active_drivers: Vec<DriverStatusJson>,
    /// Finished drivers, oldest first, up to `deploy.retained_drivers`.
    pub completed_drivers: Vec<DriverStatusJson>,
}

/// One worker in [`MasterStatusJson::workers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatusJson {
    /// The worker's id.
    pub id: WorkerId,
    /// The worker's host.
    pub host: String,
    /// The worker's RPC port.
    pub port: u16,
    /// The worker's state.
    pub state: WorkerState,
    /// Cores the worker offers.
    pub cores: u32,
    /// Cores held by executors and drivers on it.
    pub cores_used: u32,
    /// Memory the worker offers, in MB.
    pub memory_mb: u64,
    /// Memory held by executors and drivers on it, in MB.
    pub memory_used_mb: u64,
    /// When the master last heard from it (epoch ms).
    pub last_heartbeat_ms: u64,
    /// Why the master considers the worker unhealthy: executor launches
    /// there keep failing, so it gets no new executors for a while (e.g.
    /// "3 executors of app-… failed here while it runs on worker-…; last:
    /// FAILED: …; no new executors for 1 seconds"). `null` while healthy;
    /// absent in documents from older masters.
    #[serde(default)]
    pub unhealthy: Option<String>,
}

/// One application in [`MasterStatusJson::active_apps`] or
/// [`MasterStatusJson::completed_apps`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatusJson {
    /// The application's id.
    pub id: AppId,
    /// The application's name.
    pub name: String,
    /// The application's state.
    pub state: ApplicationState,
    /// Cores granted to its executors.
    pub cores: u32,
    /// Its executors (for a completed app, the ones it had when it ended).
    pub executors: Vec<ExecutorStatusJson>,
    /// Why an active application has no executors, when the master can tell
    /// (e.g. "needs 8 cores per executor but the largest worker has 4");
    /// `null` otherwise.
    pub waiting_reason: Option<String>,
    /// The application's own UI (a flint driver's `ctx.ui_url()`), when it
    /// serves one.
    #[serde(default)]
    pub ui_url: Option<String>,
}

/// One executor in [`AppStatusJson::executors`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorStatusJson {
    /// The executor's id within its application.
    pub id: ExecutorId,
    /// The worker it runs on.
    pub worker_id: WorkerId,
    /// Its state.
    pub state: ExecutorState,
    /// Cores it holds.
    pub cores: u32,
}

/// One driver in [`MasterStatusJson::active_drivers`] or
/// [`MasterStatusJson::completed_drivers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStatusJson {
    /// The driver's id.
    pub id: DriverId,
    /// Its state.
    pub state: DriverState,
    /// The worker it was placed on, if any.
    pub worker_id: Option<WorkerId>,
    /// Cores it asked for.
    pub cores: u32,
    /// Memory it asked for, in MB.
    pub memory_mb: u64,
    /// When it was submitted (epoch ms).
    pub submitted_ms: u64,
    /// Why it ended, when the worker said (an error message).
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_status_has_the_documented_field_names() {
        let doc = MasterStatusJson {
            url: "flint://127.0.0.1:7077".into(),
            status: MasterStatus::Alive,
            auth: true,
            workers: vec![WorkerStatusJson {
                id: "worker-20261122035500-127.0.0.1-7078".parse().expect("id"),
                host: "127.0.0.1".into(),
                port: 7078,
                state: WorkerState::Alive,
                cores: 4,
                cores_used: 2,
                memory_mb: 4096,
                memory_used_mb: 1024,
                last_heartbeat_ms: 5,
                unhealthy: Some("launches fail".into()),
            }],
            alive_workers: 1,
            cores: 4,
            cores_used: 2,
            memory_mb: 4096,
            memory_used_mb: 1024,
            active_apps: vec![AppStatusJson {
                id: AppId::generate(0, 0),
                name: "pi".into(),
                state: ApplicationState::Running,
                cores: 2,
                executors: vec![ExecutorStatusJson {
                    id: ExecutorId(0),
                    worker_id: "worker-20261122035500-127.0.0.1-7078".parse().expect("id"),
                    state: ExecutorState::Running,
                    cores: 2,
                }],
                waiting_reason: None,
                ui_url: Some("http://127.0.0.1:4040".into()),
            }],
            completed_apps: vec![],
            active_drivers: vec![],
            completed_drivers: vec![],
        };
        let value = serde_json::to_value(&doc).expect("json");
        let mut keys: Vec<_> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort_unstable();
        let mut expected = vec![
            "url",
            "status",
            "auth",
            "workers",
            "alive_workers",
            "cores",
            "cores_used",
            "memory_mb",
            "memory_used_mb",
            "active_apps",
            "completed_apps",
            "active_drivers",
            "completed_drivers",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(value["status"], "ALIVE");
        assert_eq!(value["auth"], true);
        assert_eq!(value["workers"][0]["last_heartbeat_ms"], 5);
        assert_eq!(value["workers"][0]["unhealthy"], "launches fail");
        assert_eq!(value["active_apps"][0]["state"], "RUNNING");
        assert_eq!(
            value["active_apps"][0]["executors"][0]["worker_id"],
            "worker-20261122035500-127.0.0.1-7078"
        );
        assert!(value["active_apps"][0]["waiting_reason"].is_null());

        let back: MasterStatusJson = serde_json::from_value(value.clone()).expect("parses back");
        assert_eq!(back, doc);

        // A document from a master that knows no worker health still parses.
        let mut old = value;
        if let Some(w) = old["workers"][0].as_object_mut() {
            w.remove("unhealthy");
        }
        let back: MasterStatusJson = serde_json::from_value(old).expect("parses");
        assert_eq!(back.workers[0].unhealthy, None);
    }
}
