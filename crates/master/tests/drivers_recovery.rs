//! Cluster-mode drivers, leader election and recovery.

mod common;

use common::*;
use flint_master::state::{
    AppRecord, DriverRecord, Effect, Event, MasterConfig, MasterState, Reply, StoredState,
    BACKUP_MASTER_PREFIX,
};
use flint_proto::{
    ApplicationState, DriverDescription, DriverId, DriverState, ExecutorCommand,
    ExecutorDescription, ExecutorId, ExecutorState, MasterStatus, WorkerState,
};

fn driver_desc(cores: u32, memory_mb: u64, supervise: bool) -> DriverDescription {
    let mut d = DriverDescription::new("flint://h:1/files/app", ExecutorCommand::new("/bin/app"));
    d.cores = cores;
    d.memory_mb = memory_mb;
    d.supervise = supervise;
    d
}

fn submit(m: &mut MasterState, d: DriverDescription) -> (DriverId, Vec<Effect>) {
    let fx = m.handle(at(T0), Event::SubmitDriver { desc: d });
    let id = replies(&fx)
        .into_iter()
        .find_map(|r| match r {
            Reply::SubmitDriver(flint_proto::messages::SubmitDriverResponse {
                success: true,
                driver_id,
                ..
            }) => driver_id,
            _ => None,
        })
        .expect("submitted");
    (id, fx)
}

fn driver_launches(fx: &[Effect]) -> Vec<(flint_proto::WorkerId, DriverId)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::LaunchDriver {
                worker_id,
                driver_id,
                ..
            } => Some((worker_id.clone(), driver_id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn drivers_are_placed_before_executors() {
    let mut m = master();
    let (app, _) = add_app(&mut m, T0, desc("greedy", None, None, 1024));
    let (driver, fx) = submit(&mut m, driver_desc(1, 1024, false));
    assert_eq!(driver.as_str(), "driver-20261122035500-0000");
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::PersistDriver(r) if r.id == driver)));
    assert!(driver_launches(&fx).is_empty(), "no worker yet");

    let fx = add_worker(&mut m, T0, 1, 4, 4096);
    assert_eq!(driver_launches(&fx), vec![(worker_id(1), driver.clone())]);
    // The app gets what the driver left: 3 cores.
    assert_eq!(launches(&fx), vec![(worker_id(1), app, ExecutorId(0), 3)]);
    let s = m.status(at(T0));
    assert_eq!(s.active_drivers[0].state, DriverState::Running);
    assert_eq!(s.active_drivers[0].worker_id, Some(worker_id(1)));
    assert_ok(&m);

    let fx = m.handle(
        at(T0),
        Event::RequestDriverStatus {
            driver_id: driver.clone(),
        },
    );
    assert_eq!(
        replies(&fx),
        vec![Reply::DriverStatus(
            flint_proto::messages::DriverStatusResponse {
                found: true,
                state: Some(DriverState::Running),
                worker_id: Some(worker_id(1)),
                worker_host_port: Some("10.0.0.1:7078".into()),
                exception: None,
            }
        )]
    );

    // The driver ends; its resources go back.
    m.handle(
        at(T0),
        Event::DriverStateChanged {
            driver_id: driver.clone(),
            state: DriverState::Finished,
            exception: None,
        },
    );
    let s = m.status(at(T0));
    assert!(s.active_drivers.is_empty());
    assert_eq!(s.completed_drivers[0].state, DriverState::Finished);
    assert_ok(&m);
}

#[test]
fn killing_a_queued_driver_ends_it_and_a_running_one_asks_its_worker() {
    let mut m = master();
    let (queued, _) = submit(&mut m, driver_desc(1, 1, false));
    let fx = m.handle(
        at(T0),
        Event::KillDriver {
            driver_id: queued.clone(),
        },
    );
    assert!(matches!(
        &replies(&fx)[..],
        [Reply::KillDriver(
            flint_proto::messages::KillDriverResponse { success: true, .. }
        )]
    ));
    assert_eq!(
        m.status(at(T0)).completed_drivers[0].state,
        DriverState::Killed
    );

    add_worker(&mut m, T0, 1, 4, 4096);
    let (running, _) = submit(&mut m, driver_desc(1, 1, false));
    let fx = m.handle(
        at(T0),
        Event::KillDriver {
            driver_id: running.clone(),
        },
    );
    assert!(fx.contains(&Effect::KillDriver {
        worker_id: worker_id(1),
        driver_id: running.clone()
    }));
    assert_eq!(
        m.status(at(T0)).active_drivers.len(),
        1,
        "ends when the worker reports"
    );

    let fx = m.handle(at(T0), Event::KillDriver { driver_id: queued });
    assert!(
        matches!(&replies(&fx)[..], [Reply::KillDriver(flint_proto::messages::KillDriverResponse { success: false, message, .. })]
        if message.ends_with("has already finished or does not exist"))
    );

    let fx = m.handle(at(T0), Event::KillAllDrivers);
    assert!(fx.contains(&Effect::KillDriver {
        worker_id: worker_id(1),
        driver_id: running
    }));
    assert!(matches!(
        &replies(&fx)[..],
        [Reply::KillAllDrivers(
            flint_proto::messages::KillAllDriversResponse { success: true, .. }
        )]
    ));
}

#[test]
fn a_lost_workers_drivers_are_relaunched_when_supervised() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    let (supervised, _) = submit(&mut m, driver_desc(1, 512, true));
    let (plain, _) = submit(&mut m, driver_desc(1, 512, false));
    add_worker(&mut m, T0, 2, 4, 4096);

    let fx = m.handle(
        at(T0),
        Event::WorkerDisconnected {
            worker_id: worker_id(1),
        },
    );
    let relaunched = driver_launches(&fx);
    assert_eq!(relaunched.len(), 1);
    assert_eq!(relaunched[0].0, worker_id(2));
    assert_ne!(relaunched[0].1, supervised, "a relaunch gets a new id");

    let s = m.status(at(T0));
    let state_of = |id: &DriverId| {
        s.completed_drivers
            .iter()
            .find(|d| &d.id == id)
            .map(|d| d.state)
    };
    assert_eq!(state_of(&supervised), Some(DriverState::Relaunching));
    assert_eq!(state_of(&plain), Some(DriverState::Error));
    assert_ok(&m);
}

#[test]
fn driver_requests_need_an_alive_master() {
    let mut m = MasterState::new("flint://h:7077", MasterConfig::default());
    let fx = m.handle(
        at(T0),
        Event::SubmitDriver {
            desc: driver_desc(1, 1, false),
        },
    );
    assert_eq!(
        replies(&fx),
        vec![Reply::SubmitDriver(flint_proto::messages::SubmitDriverResponse {
            success: false,
            driver_id: None,
            message: format!("{BACKUP_MASTER_PREFIX}: STANDBY. Can only accept driver submissions in ALIVE state."),
        })]
    );
    let fx = m.handle(
        at(T0),
        Event::RequestDriverStatus {
            driver_id: "driver-1".parse().expect("id"),
        },
    );
    assert!(
        matches!(&replies(&fx)[..], [Reply::DriverStatus(flint_proto::messages::DriverStatusResponse { found: false, exception: Some(e), .. })]
        if e.starts_with(BACKUP_MASTER_PREFIX))
    );
}

#[test]
fn revoked_leadership_shuts_the_master_down() {
    let mut m = master();
    let fx = m.handle(at(T0), Event::RevokedLeadership);
    assert!(matches!(&fx[..], [Effect::Shutdown { .. }]));
}

fn stored() -> StoredState {
    let app_id = flint_proto::AppId::generate(T0 - 60_000, 0);
    StoredState {
        apps: vec![AppRecord {
            id: app_id,
            desc: desc("survivor", Some(4), Some(2), 1024),
            submit_ms: T0 - 60_000,
            driver_address: "flint://AppClient@d:1".into(),
        }],
        drivers: vec![DriverRecord {
            id: "driver-20261122035400-0000".parse().expect("id"),
            desc: driver_desc(1, 512, true),
            submit_ms: T0 - 60_000,
        }],
        workers: vec![reg(1, 4, 4096), reg(2, 4, 4096)],
    }
}

#[test]
fn a_new_leader_recovers_workers_apps_and_drivers_that_answer() {
    let mut m = MasterState::new("flint://h:7077", MasterConfig::default());
    let st = stored();
    let app = st.apps[0].id.clone();
    let driver = st.drivers[0].id.clone();
    let fx = m.handle(at(T0), Event::ElectedLeader { stored: st });
    assert_eq!(m.master_status(), MasterStatus::Recovering);
    assert!(m.is_ready());
    let acts = actions(&fx);
    assert!(acts.contains(&Effect::MasterChangedToApp {
        app_id: app.clone()
    }));
    assert!(acts.contains(&Effect::MasterChangedToWorker {
        worker_id: worker_id(1)
    }));
    assert!(acts.contains(&Effect::ScheduleCompleteRecovery { delay_ms: 60_000 }));
    assert!(m
        .status(at(T0))
        .workers
        .iter()
        .all(|w| w.state == WorkerState::Unknown));

    // Worker 1 reports the app's executor 5 and the driver.
    m.handle(
        at(T0 + 10),
        Event::WorkerSchedulerState {
            worker_id: worker_id(1),
            executors: vec![ExecutorDescription {
                app_id: app.clone(),
                exec_id: ExecutorId(5),
                cores: 2,
                memory_mb: 1024,
                state: ExecutorState::Running,
            }],
            driver_ids: vec![driver.clone()],
        },
    );
    m.handle(
        at(T0 + 20),
        Event::MasterChangeAcknowledged {
            app_id: app.clone(),
        },
    );
    assert_eq!(
        m.master_status(),
        MasterStatus::Recovering,
        "worker 2 is silent"
    );

    // Worker 2 re-registers instead (it restarted): that completes recovery.
    let fx = add_worker(&mut m, T0 + 30, 2, 4, 4096);
    assert!(actions(&fx).contains(&Effect::RegisteredWorker {
        worker_id: worker_id(2),
        duplicate: true
    }));
    assert_eq!(m.master_status(), MasterStatus::Alive);
    // The app kept executor 5 and gets 2 more cores; new ids continue at 6.
    let placed = launches(&fx);
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].2, ExecutorId(6));
    let a = active_app(&m, &app);
    assert_eq!(a.state, ApplicationState::Running);
    assert_eq!(a.cores, 4);
    let s = m.status(at(T0));
    assert_eq!(s.active_drivers[0].id, driver);
    assert_eq!(s.active_drivers[0].state, DriverState::Running);
    assert_ok(&m);

    // A late CompleteRecovery does nothing.
    let fx = m.handle(at(T0 + 60_000), Event::CompleteRecovery);
    assert!(actions(&fx).is_empty());
}

#[test]
fn recovery_times_out_on_silent_workers_and_apps() {
    let mut m = MasterState::new("flint://h:7077", MasterConfig::default());
    let st = stored();
    let app = st.apps[0].id.clone();
    let driver = st.drivers[0].id.clone();
    m.handle(at(T0), Event::ElectedLeader { stored: st });
    let fx = m.handle(at(T0 + 60_000), Event::CompleteRecovery);
    assert_eq!(m.master_status(), MasterStatus::Alive);
    let s = m.status(at(T0));
    assert!(s.workers.iter().all(|w| w.state == WorkerState::Dead));
    assert_eq!(completed_app(&m, &app).state, ApplicationState::Finished);
    // The unclaimed supervised driver is relaunched under a new id.
    assert!(s
        .completed_drivers
        .iter()
        .any(|d| d.id == driver && d.state == DriverState::Relaunching));
    assert_eq!(s.active_drivers.len(), 1);
    assert_eq!(s.active_drivers[0].state, DriverState::Submitted);
    assert!(fx.iter().any(|e| matches!(e, Effect::UnpersistWorker(_))));
    assert_ok(&m);
}

#[test]
fn an_empty_store_makes_the_master_alive_at_once() {
    let mut m = MasterState::new("flint://h:7077", MasterConfig::default());
    m.handle(
        at(T0),
        Event::ElectedLeader {
            stored: StoredState::default(),
        },
    );
    assert_eq!(m.master_status(), MasterStatus::Alive);
    // Electing twice is a warning, not a reset.
    let fx = m.handle(at(T0), Event::ElectedLeader { stored: stored() });
    assert_eq!(warnings(&fx).len(), 1);
    assert_eq!(m.master_status(), MasterStatus::Alive);
    assert!(m.status(at(T0)).workers.is_empty());
}

fn attempt(m: &mut MasterState, id: &DriverId) -> flint_proto::messages::DriverAttemptResponse {
    let fx = m.handle(
        at(T0),
        Event::RequestDriverAttempt {
            driver_id: id.clone(),
        },
    );
    match replies(&fx).as_slice() {
        [Reply::DriverAttempt(a)] => a.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn relaunches_are_followed_counted_and_an_old_attempt_is_killed_when_its_worker_returns() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    let (old, _) = submit(&mut m, driver_desc(1, 512, true));
    add_worker(&mut m, T0, 2, 4, 4096);
    let fx = m.handle(
        at(T0),
        Event::WorkerDisconnected {
            worker_id: worker_id(1),
        },
    );
    let new = driver_launches(&fx)[0].1.clone();

    // Asked by the old id: the new attempt, RUNNING on worker 2, one relaunch.
    let a = attempt(&mut m, &old);
    assert_eq!(a.driver_id.as_ref(), Some(&new));
    assert_eq!(a.relaunches, 1);
    assert_eq!(a.status.state, Some(DriverState::Running));
    assert_eq!(a.status.worker_id, Some(worker_id(2)));

    // Its worker relaunches it after a non-zero exit: RELAUNCHING, counted once,
    // still held on worker 2; then RUNNING again.
    for _ in 0..2 {
        m.handle(
            at(T0),
            Event::DriverStateChanged {
                driver_id: new.clone(),
                state: DriverState::Relaunching,
                exception: Some("command exited with code 1; relaunching in 100 ms".into()),
            },
        );
    }
    let a = attempt(&mut m, &old);
    assert_eq!(
        (a.status.state, a.relaunches),
        (Some(DriverState::Relaunching), 2)
    );
    assert_ok(&m);
    m.handle(
        at(T0),
        Event::DriverStateChanged {
            driver_id: new.clone(),
            state: DriverState::Running,
            exception: None,
        },
    );
    assert_eq!(
        attempt(&mut m, &new).status.state,
        Some(DriverState::Running)
    );

    // SPARK-19900: worker 1 comes back still running the old attempt; the master
    // tells it to kill that one, and the old attempt's reports change nothing.
    add_worker(&mut m, T0, 1, 4, 4096);
    let fx = m.handle(
        at(T0),
        Event::WorkerLatestState {
            worker_id: worker_id(1),
            executors: vec![],
            driver_ids: vec![old.clone()],
        },
    );
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::KillDriver { worker_id: w, driver_id } if *w == worker_id(1) && *driver_id == old
    )));
    for state in [DriverState::Running, DriverState::Killed] {
        m.handle(
            at(T0),
            Event::DriverStateChanged {
                driver_id: old.clone(),
                state,
                exception: None,
            },
        );
    }
    let a = attempt(&mut m, &old);
    assert_eq!(a.driver_id.as_ref(), Some(&new));
    assert_eq!(a.status.state, Some(DriverState::Running));
    assert_ok(&m);

    // An unknown id: not found.
    let unknown = DriverId::generate(1, 99);
    let a = attempt(&mut m, &unknown);
    assert_eq!((a.driver_id, a.status.found), (None, false));
}
