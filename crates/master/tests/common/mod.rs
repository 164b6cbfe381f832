//! Helpers shared by the master state-machine tests.
#![allow(dead_code)]

use flint_master::state::{
    Effect, Event, LogLevel, MasterConfig, MasterState, Now, Reply, WorkerRegistration,
};
use flint_proto::{
    status::AppStatusJson, AppId, ApplicationDescription, ExecutorCommand, ExecutorId, WorkerId,
};

/// 2026-11-22 03:55:00 UTC.
pub const T0: u64 = 1_795_319_700_000;

/// `ms` on both clocks (monotonic and wall agree: no clock jumps).
pub fn at(ms: u64) -> Now {
    Now::new(ms, ms)
}

pub fn elected(config: MasterConfig) -> MasterState {
    let mut m = MasterState::new("flint://127.0.0.1:7077", config);
    m.handle(
        at(T0),
        Event::ElectedLeader {
            stored: Default::default(),
        },
    );
    m
}

pub fn master() -> MasterState {
    elected(MasterConfig::default())
}

pub fn worker_id(n: u8) -> WorkerId {
    format!("worker-20261122035500-10.0.0.{n}-7078")
        .parse()
        .expect("valid id")
}

pub fn reg(n: u8, cores: u32, memory_mb: u64) -> WorkerRegistration {
    WorkerRegistration {
        id: worker_id(n),
        host: format!("10.0.0.{n}"),
        port: 7078,
        cores,
        memory_mb,
        web_ui_url: format!("http://10.0.0.{n}:8081"),
    }
}

pub fn add_worker(m: &mut MasterState, now: u64, n: u8, cores: u32, memory_mb: u64) -> Vec<Effect> {
    m.handle(at(now), Event::RegisterWorker(reg(n, cores, memory_mb)))
}

pub fn desc(
    name: &str,
    max_cores: Option<u32>,
    per_exec: Option<u32>,
    mem: u64,
) -> ApplicationDescription {
    let mut d = ApplicationDescription::new(name, ExecutorCommand::new("/bin/app"));
    d.max_cores = max_cores;
    d.cores_per_executor = per_exec;
    d.memory_per_executor_mb = mem;
    d
}

/// Registers an app and returns its id and the effects.
pub fn add_app(m: &mut MasterState, now: u64, d: ApplicationDescription) -> (AppId, Vec<Effect>) {
    let addr = format!("flint://AppClient@driver-{}:1", d.name);
    let fx = m.handle(
        at(now),
        Event::RegisterApplication {
            desc: d,
            driver_address: addr.into(),
        },
    );
    let id = fx
        .iter()
        .find_map(|e| match e {
            Effect::RegisteredApplication { app_id } => Some(app_id.clone()),
            _ => None,
        })
        .expect("registered");
    (id, fx)
}

/// (worker, app, executor, cores) of every LaunchExecutor effect.
pub fn launches(fx: &[Effect]) -> Vec<(WorkerId, AppId, ExecutorId, u32)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::LaunchExecutor {
                worker_id,
                app_id,
                exec_id,
                cores,
                ..
            } => Some((worker_id.clone(), app_id.clone(), *exec_id, *cores)),
            _ => None,
        })
        .collect()
}

pub fn replies(fx: &[Effect]) -> Vec<Reply> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Reply(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub fn warnings(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Log {
                level: LogLevel::Warn,
                message,
            } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Effects other than log lines.
pub fn actions(fx: &[Effect]) -> Vec<Effect> {
    fx.iter()
        .filter(|e| !matches!(e, Effect::Log { .. }))
        .cloned()
        .collect()
}

pub fn active_app(m: &MasterState, id: &AppId) -> AppStatusJson {
    m.status(at(T0))
        .active_apps
        .into_iter()
        .find(|a| &a.id == id)
        .expect("active app")
}

pub fn completed_app(m: &MasterState, id: &AppId) -> AppStatusJson {
    m.status(at(T0))
        .completed_apps
        .into_iter()
        .find(|a| &a.id == id)
        .expect("completed app")
}

/// Cores used per worker, in status order.
pub fn cores_used(m: &MasterState) -> Vec<(WorkerId, u32)> {
    m.status(at(T0))
        .workers
        .into_iter()
        .map(|w| (w.id, w.cores_used))
        .collect()
}

pub fn assert_ok(m: &MasterState) {
    if let Err(e) = m.check_invariants() {
        panic!("invariant broken: {e}");
    }
}
