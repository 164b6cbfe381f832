//! The `GET /api/v1/status` snapshot.

use flint_proto::status::{
    AppStatusJson, DriverStatusJson, ExecutorStatusJson, MasterStatusJson, WorkerStatusJson,
};
use flint_proto::WorkerState;

use super::model::{AppInfo, DriverInfo};
use super::{MasterState, Now};

impl MasterState {
    /// A snapshot of the cluster for the status page. Totals count ALIVE
    /// workers only, as Spark's page does. `now` is the time of the
    /// snapshot (the basis of any age shown).
    pub fn status(&self, now: Now) -> MasterStatusJson {
        let _ = now;
        let mut doc = MasterStatusJson {
            url: self.url.clone(),
            status: self.status,
            // A property of the RPC environment, not of the state: the shell
            // fills it in.
            auth: false,
            workers: Vec::with_capacity(self.workers.len()),
            alive_workers: 0,
            cores: 0,
            cores_used: 0,
            memory_mb: 0,
            memory_used_mb: 0,
            active_apps: self
                .app_order
                .iter()
                .filter_map(|id| self.apps.get(id))
                .map(app_json)
                .collect(),
            completed_apps: self.completed_apps.iter().map(app_json).collect(),
            active_drivers: self.drivers.values().map(driver_json).collect(),
            completed_drivers: self.completed_drivers.iter().map(driver_json).collect(),
        };
        for w in self.workers.values() {
            if w.state == WorkerState::Alive {
                doc.alive_workers += 1;
                doc.cores += u64::from(w.cores);
                doc.cores_used += u64::from(w.cores_used);
                doc.memory_mb += w.memory_mb;
                doc.memory_used_mb += w.memory_used_mb;
            }
            doc.workers.push(WorkerStatusJson {
                id: w.id.clone(),
                host: w.host.clone(),
                port: w.port,
                state: w.state,
                cores: w.cores,
                cores_used: w.cores_used,
                memory_mb: w.memory_mb,
                memory_used_mb: w.memory_used_mb,
                last_heartbeat_ms: w.last_heartbeat_wall_ms,
                unhealthy: w.health.unhealthy.clone(),
            });
        }
        doc
    }
}

fn app_json(app: &AppInfo) -> AppStatusJson {
    AppStatusJson {
        id: app.id.clone(),
        name: app.desc.name.clone(),
        state: app.state,
        cores: app.cores_granted,
        executors: app
            .executors
            .values()
            .map(|e| ExecutorStatusJson {
                id: e.id,
                worker_id: e.worker_id.clone(),
                state: e.state,
                cores: e.cores,
            })
            .collect(),
        waiting_reason: app.waiting_reason.clone(),
        ui_url: app.desc.app_ui_url.clone(),
    }
}

fn driver_json(d: &DriverInfo) -> DriverStatusJson {
    DriverStatusJson {
        id: d.id.clone(),
        state: d.state,
        worker_id: d.worker_id.clone(),
        cores: d.desc.cores,
        memory_mb: d.desc.memory_mb,
        submitted_ms: d.submit_ms,
        message: d.message.clone(),
    }
}
