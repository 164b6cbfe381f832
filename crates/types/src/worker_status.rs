//! The worker's `GET /api/v1/status` document (Spark's worker `/json`).
//!
//! Field names are snake_case and fixed: they are what scripts and the CLI
//! parse. Ids and states serialize as strings, sizes in MB. Every field is
//! spelled out (no flattening), so the document reads the same in JSON and
//! in postcard.

use serde::{Deserialize, Serialize};

use crate::{AppId, DriverId, DriverState, ExecutorId, ExecutorState, WorkerId, WorkerState};

/// The worker's `GET /api/v1/status` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatusDoc {
    /// The worker's id.
    pub id: WorkerId,
    /// ALIVE, DECOMMISSIONED, or DEAD once it decided to exit.
    pub state: WorkerState,
    /// Whether a master accepted it (and no re-registration is under way).
    pub registered: bool,
    /// Whether it heartbeats a master.
    pub connected: bool,
    /// The current master's URL, once one is known.
    pub master_url: Option<String>,
    /// The current master's web UI, once one is known.
    pub master_web_ui_url: Option<String>,
    /// Whether RPC authentication is on (a shared secret or TLS). When it
    /// is off, anyone who can reach the worker's port can run code on it.
    #[serde(default)]
    pub auth: bool,
    /// The worker's endpoint, `flint://Worker@host:port` (what executors get
    /// as `{{WORKER_URL}}`).
    pub worker_url: String,
    /// The worker's web UI, `http://host:port`.
    pub web_ui_url: String,
    /// The work directory (absolute).
    pub work_dir: String,
    /// Cores it offers.
    pub cores: u32,
    /// Cores held by executors and drivers.
    pub cores_used: u32,
    /// Memory it offers, in MB.
    pub memory_mb: u64,
    /// Memory held by executors and drivers, in MB.
    pub memory_used_mb: u64,
    /// Executors not yet finished, by application then id.
    pub executors: Vec<ExecutorDoc>,
    /// Finished executors, oldest first, up to `worker.ui.retained_executors`.
    pub finished_executors: Vec<ExecutorDoc>,
    /// Drivers not yet finished, by id.
    pub drivers: Vec<DriverDoc>,
    /// Finished drivers, oldest first, up to `worker.ui.retained_drivers`.
    pub finished_drivers: Vec<DriverDoc>,
    /// Binaries fetched into the worker's binary cache since it started
    /// (`<work_dir>/binaries`). Absent in documents from older workers.
    #[serde(default)]
    pub binary_fetches: u64,
    /// Launches whose binary was already in the cache. Absent in documents
    /// from older workers.
    #[serde(default)]
    pub binary_cache_hits: u64,
    /// The worker's shuffle service, when `shuffle.service.enabled`. Absent when
    /// it is off and in documents from older workers.
    #[serde(default)]
    pub shuffle_service: Option<ShuffleServiceDoc>,
}

/// The shuffle service in [`WorkerStatusDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuffleServiceDoc {
    /// The directories it serves (its `local.dir`, handed to its executors).
    pub local_dirs: Vec<String>,
    /// Block requests served in full since the worker started.
    pub requests: u64,
    /// Blocks served.
    pub blocks_served: u64,
    /// Block bytes served.
    pub bytes_served: u64,
    /// Requests refused or failed (unknown output, bad ids).
    pub failed_requests: u64,
}

/// One executor in [`WorkerStatusDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorDoc {
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
    /// `work/<app-id>/<exec-id>`, holding its `stdout` and `stderr`.
    pub work_dir: String,
}

/// One driver in [`WorkerStatusDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverDoc {
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
    /// `work/<driver-id>`, holding its `stdout` and `stderr`.
    pub work_dir: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_status_has_flat_documented_field_names() {
        let doc = WorkerStatusDoc {
            id: "worker-20261122035500-127.0.0.1-7078".parse().expect("id"),
            state: WorkerState::Alive,
            registered: true,
            connected: true,
            master_url: Some("flint://127.0.0.1:7077".into()),
            master_web_ui_url: None,
            auth: true,
            worker_url: "flint://Worker@127.0.0.1:7078".into(),
            web_ui_url: "http://127.0.0.1:8081".into(),
            work_dir: "/w".into(),
            cores: 4,
            cores_used: 2,
            memory_mb: 2048,
            memory_used_mb: 512,
            executors: vec![ExecutorDoc {
                app_id: AppId::generate(0, 0),
                exec_id: ExecutorId(1),
                app_name: "pi".into(),
                cores: 2,
                memory_mb: 512,
                state: ExecutorState::Running,
                exit_status: None,
                message: None,
                work_dir: "/w/app-19700101000000-0000/1".into(),
            }],
            finished_executors: vec![],
            drivers: vec![],
            finished_drivers: vec![DriverDoc {
                driver_id: "driver-20261122035500-0003".parse().expect("id"),
                cores: 1,
                memory_mb: 1024,
                supervise: false,
                state: DriverState::Finished,
                exit_status: Some(0),
                exception: None,
                work_dir: "/w/driver-20261122035500-0003".into(),
            }],
            binary_fetches: 1,
            binary_cache_hits: 2,
            shuffle_service: Some(ShuffleServiceDoc {
                local_dirs: vec!["/tmp".into()],
                requests: 3,
                blocks_served: 4,
                bytes_served: 5,
                failed_requests: 0,
            }),
        };
        let value = serde_json::to_value(&doc).expect("json");
        let e = &value["executors"][0];
        assert_eq!(e["app_id"], "app-19700101000000-0000");
        assert_eq!(e["exec_id"], 1);
        assert_eq!(e["state"], "RUNNING");
        assert_eq!(e["work_dir"], "/w/app-19700101000000-0000/1");
        assert_eq!(value["finished_drivers"][0]["state"], "FINISHED");
        assert_eq!(value["state"], "ALIVE");
        assert_eq!(value["shuffle_service"]["blocks_served"], 4);
        assert_eq!(
            (&value["binary_fetches"], &value["binary_cache_hits"]),
            (&1.into(), &2.into())
        );
        let back: WorkerStatusDoc = serde_json::from_value(value).expect("parses back");
        assert_eq!(back, doc);
        // Flat fields also survive a non-self-describing format.
        let bytes = postcard::to_allocvec(&doc).expect("postcard");
        assert_eq!(
            postcard::from_bytes::<WorkerStatusDoc>(&bytes).ok(),
            Some(doc)
        );
    }
}
