//! Worker registration, heartbeats, timeouts, reconciliation, decommission.

mod common;

use common::*;
use flint_master::state::{Effect, Event, MasterConfig, MasterState, Reply};
use flint_proto::{ExecutorDescription, ExecutorId, ExecutorState, MasterStatus, WorkerState};

#[test]
fn a_worker_registers_and_is_persisted() {
    let mut m = master();
    let fx = add_worker(&mut m, T0, 1, 4, 4096);
    assert_eq!(
        actions(&fx),
        vec![
            Effect::PersistWorker(reg(1, 4, 4096)),
            Effect::RegisteredWorker {
                worker_id: worker_id(1),
                duplicate: false
            },
        ]
    );
    let s = m.status(at(T0));
    assert_eq!(s.status, MasterStatus::Alive);
    assert_eq!(s.alive_workers, 1);
    assert_eq!((s.cores, s.memory_mb), (4, 4096));
    assert_eq!(s.workers[0].state, WorkerState::Alive);
    assert_eq!(s.workers[0].last_heartbeat_ms, T0);
    assert_eq!(
        m.worker_web_ui_url(&worker_id(1)),
        Some("http://10.0.0.1:8081")
    );
    assert_ok(&m);
}

#[test]
fn a_standby_master_refuses_workers_and_ignores_apps() {
    let mut m = MasterState::new("flint://h:7077", MasterConfig::default());
    assert!(!m.is_ready());
    let fx = add_worker(&mut m, T0, 1, 4, 4096);
    assert_eq!(
        actions(&fx),
        vec![Effect::MasterInStandby {
            worker_id: worker_id(1)
        }]
    );
    let fx = m.handle(
        at(T0),
        Event::RegisterApplication {
            desc: desc("a", None, None, 1),
            driver_address: "d".into(),
        },
    );
    assert!(actions(&fx).is_empty(), "no reply in STANDBY: {fx:?}");
    // Heartbeats to a standby master are not answered either.
    let fx = m.handle(
        at(T0),
        Event::Heartbeat {
            worker_id: worker_id(1),
        },
    );
    assert!(actions(&fx).is_empty());
    assert_eq!(m.status(at(T0)).workers.len(), 0);
}

#[test]
fn a_duplicate_registration_from_the_same_address_is_a_warning_not_a_kill() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    let (app, fx) = add_app(&mut m, T0, desc("a", None, None, 1024));
    assert_eq!(launches(&fx).len(), 1);

    let fx = add_worker(&mut m, T0 + 1000, 1, 4, 4096);
    assert_eq!(
        actions(&fx),
        vec![Effect::RegisteredWorker {
            worker_id: worker_id(1),
            duplicate: true
        }]
    );
    assert_eq!(warnings(&fx).len(), 1, "{fx:?}");
    // Nothing was killed or lost: the executor is still there.
    assert_eq!(active_app(&m, &app).executors.len(), 1);
    assert_eq!(m.status(at(T0)).workers.len(), 1);
    assert_eq!(m.status(at(T0)).workers[0].last_heartbeat_ms, T0 + 1000);
    assert_ok(&m);
}

#[test]
fn a_duplicate_id_from_another_address_is_refused() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    let mut other = reg(1, 4, 4096);
    other.host = "10.9.9.9".into();
    let fx = m.handle(at(T0), Event::RegisterWorker(other));
    assert!(matches!(
        actions(&fx).as_slice(),
        [Effect::RegisterWorkerFailed { worker_id, message }]
            if *worker_id == common::worker_id(1) && message.contains("Duplicate worker ID")
    ));
    assert_eq!(m.status(at(T0)).workers[0].host, "10.0.0.1");
}

#[test]
fn a_new_id_at_a_live_workers_address_is_refused_as_spark() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    let mut imposter = reg(1, 8, 4096);
    imposter.id = "worker-20261122040000-10.0.0.1-7078".parse().expect("id");
    let fx = m.handle(at(T0), Event::RegisterWorker(imposter.clone()));
    assert!(matches!(
        actions(&fx).as_slice(),
        [Effect::RegisterWorkerFailed { message, .. }]
            if message == "Attempted to re-register worker at same address: 10.0.0.1:7078"
    ));

    // Once the old one is DEAD, the new one takes the address and the dead
    // entry at that address is dropped.
    m.handle(
        at(T0),
        Event::WorkerDisconnected {
            worker_id: worker_id(1),
        },
    );
    let fx = m.handle(at(T0), Event::RegisterWorker(imposter.clone()));
    assert!(actions(&fx).contains(&Effect::RegisteredWorker {
        worker_id: imposter.id.clone(),
        duplicate: false
    }));
    let ids: Vec<_> = m.status(at(T0)).workers.into_iter().map(|w| w.id).collect();
    assert_eq!(ids, vec![imposter.id]);
    assert_ok(&m);
}

#[test]
fn heartbeats_from_unknown_or_dead_workers_ask_them_to_reconnect() {
    let mut m = master();
    let fx = m.handle(
        at(T0),
        Event::Heartbeat {
            worker_id: worker_id(7),
        },
    );
    assert_eq!(
        actions(&fx),
        vec![Effect::ReconnectWorker {
            worker_id: worker_id(7)
        }]
    );

    add_worker(&mut m, T0, 1, 4, 4096);
    let fx = m.handle(
        at(T0 + 5),
        Event::Heartbeat {
            worker_id: worker_id(1),
        },
    );
    assert!(fx.is_empty(), "a known heartbeat is silent: {fx:?}");
    assert_eq!(m.status(at(T0)).workers[0].last_heartbeat_ms, T0 + 5);

    m.handle(at(T0 + 61_000), Event::Tick);
    assert_eq!(m.status(at(T0)).workers[0].state, WorkerState::Dead);
    let fx = m.handle(
        at(T0 + 62_000),
        Event::Heartbeat {
            worker_id: worker_id(1),
        },
    );
    assert_eq!(
        actions(&fx),
        vec![Effect::ReconnectWorker {
            worker_id: worker_id(1)
        }]
    );
    // The heartbeat did not revive it.
    assert_eq!(m.status(at(T0)).workers[0].state, WorkerState::Dead);
}

#[test]
fn a_silent_worker_dies_its_executors_are_lost_and_replaced_elsewhere() {
    let mut m = master();
    for n in 1..=3 {
        add_worker(&mut m, T0, n, 4, 8192);
    }
    let (app, fx) = add_app(&mut m, T0, desc("spread", Some(6), Some(2), 1024));
    let placed = launches(&fx);
    assert_eq!(placed.len(), 3);
    for (_, _, exec_id, _) in &placed {
        m.handle(
            at(T0),
            Event::ExecutorStateChanged {
                app_id: app.clone(),
                exec_id: *exec_id,
                state: ExecutorState::Running,
                message: None,
                exit_status: None,
            },
        );
    }
    let on_w1 = placed
        .iter()
        .find(|(w, ..)| *w == worker_id(1))
        .map(|(_, _, e, _)| *e)
        .expect("an executor on worker 1");

    // Workers 2 and 3 keep heartbeating; worker 1 goes silent.
    for t in [15_000, 30_000, 45_000, 60_000] {
        for n in 2..=3 {
            m.handle(
                at(T0 + t),
                Event::Heartbeat {
                    worker_id: worker_id(n),
                },
            );
        }
    }
    // Not yet: exactly at the timeout nothing happens.
    let fx = m.handle(at(T0 + 60_000), Event::Tick);
    assert!(actions(&fx).is_empty(), "{fx:?}");

    let fx = m.handle(at(T0 + 61_000), Event::Tick);
    assert!(fx.contains(&Effect::ExecutorUpdated {
        app_id: app.clone(),
        exec_id: on_w1,
        state: ExecutorState::Lost,
        message: Some("worker lost: Not receiving heartbeat for 60 seconds".into()),
        exit_status: None,
        worker_host: Some("10.0.0.1".into()),
    }));
    assert!(fx.contains(&Effect::WorkerRemoved {
        app_id: app.clone(),
        worker_id: worker_id(1),
        host: "10.0.0.1".into(),
        message: "Not receiving heartbeat for 60 seconds".into(),
    }));
    assert!(fx.contains(&Effect::UnpersistWorker(worker_id(1))));
    let replacement = launches(&fx);
    assert_eq!(replacement.len(), 1, "{fx:?}");
    assert_ne!(replacement[0].0, worker_id(1));
    assert_eq!(
        replacement[0].2,
        ExecutorId(3),
        "new executor ids keep counting"
    );

    let s = m.status(at(T0));
    let w1 = s
        .workers
        .iter()
        .find(|w| w.id == worker_id(1))
        .expect("listed");
    assert_eq!(w1.state, WorkerState::Dead);
    assert_eq!(s.alive_workers, 2);
    let a = active_app(&m, &app);
    assert_eq!(a.cores, 6);
    assert!(a.executors.iter().all(|e| e.worker_id != worker_id(1)));
    assert_ok(&m);

    // The dead worker stays listed until (15 + 1) × 60 s after its last
    // heartbeat, then it is culled.
    let last_ok = T0 + 16 * 60_000;
    for n in 2..=3 {
        m.handle(
            at(last_ok),
            Event::Heartbeat {
                worker_id: worker_id(n),
            },
        );
    }
    m.handle(at(last_ok), Event::Tick);
    assert_eq!(m.status(at(T0)).workers.len(), 3);
    m.handle(at(last_ok + 1), Event::Tick);
    assert_eq!(m.status(at(T0)).workers.len(), 2);
    assert_ok(&m);
}

#[test]
fn timeouts_follow_the_configured_interval() {
    let mut m = elected(MasterConfig::new(400));
    add_worker(&mut m, T0, 1, 1, 1);
    m.handle(at(T0 + 400), Event::Tick);
    assert_eq!(m.status(at(T0)).workers[0].state, WorkerState::Alive);
    let fx = m.handle(at(T0 + 401), Event::Tick);
    assert!(warnings(&fx)
        .iter()
        .any(|w| w.contains("no heartbeat in 400 ms")));
    assert_eq!(m.status(at(T0)).workers[0].state, WorkerState::Dead);
    // Culled after (15 + 1) × 400 ms.
    m.handle(at(T0 + 6400), Event::Tick);
    assert_eq!(m.status(at(T0)).workers.len(), 1);
    m.handle(at(T0 + 6401), Event::Tick);
    assert_eq!(m.status(at(T0)).workers.len(), 0);
}

#[test]
fn worker_latest_state_kills_what_the_master_does_not_know() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    let (app, fx) = add_app(&mut m, T0, desc("a", None, None, 1024));
    let (_, _, known, _) = launches(&fx)[0].clone();
    let stranger = flint_proto::AppId::generate(T0 - 3_600_000, 9);
    let report = |app_id: &flint_proto::AppId, exec_id| ExecutorDescription {
        app_id: app_id.clone(),
        exec_id,
        cores: 1,
        memory_mb: 1,
        state: ExecutorState::Running,
    };
    let old_driver: flint_proto::DriverId = "driver-20261122000000-0001".parse().expect("id");
    let fx = m.handle(
        at(T0),
        Event::WorkerLatestState {
            worker_id: worker_id(1),
            executors: vec![
                report(&app, known),
                report(&app, ExecutorId(17)),
                report(&stranger, ExecutorId(0)),
            ],
            driver_ids: vec![old_driver.clone()],
        },
    );
    assert_eq!(
        actions(&fx),
        vec![
            Effect::KillExecutor {
                worker_id: worker_id(1),
                app_id: app.clone(),
                exec_id: ExecutorId(17)
            },
            Effect::KillExecutor {
                worker_id: worker_id(1),
                app_id: stranger,
                exec_id: ExecutorId(0)
            },
            Effect::KillDriver {
                worker_id: worker_id(1),
                driver_id: old_driver
            },
        ]
    );
    // From a worker the master does not know: only a warning.
    let fx = m.handle(
        at(T0),
        Event::WorkerLatestState {
            worker_id: worker_id(5),
            executors: vec![report(&app, known)],
            driver_ids: vec![],
        },
    );
    assert!(actions(&fx).is_empty());
    assert_eq!(warnings(&fx).len(), 1);
}

#[test]
fn a_disconnected_worker_is_removed_at_once() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    add_worker(&mut m, T0, 2, 4, 4096);
    let (app, _) = add_app(&mut m, T0, desc("a", Some(4), None, 1024));
    let before = cores_used(&m);
    assert_eq!(before.iter().map(|(_, c)| c).sum::<u32>(), 4);
    let fx = m.handle(
        at(T0 + 1),
        Event::WorkerDisconnected {
            worker_id: worker_id(1),
        },
    );
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::WorkerRemoved { message, .. } if message == "10.0.0.1:7078 got disassociated")));
    // The app's lost cores come back on worker 2.
    assert_eq!(active_app(&m, &app).cores, 4);
    assert_eq!(cores_used(&m), vec![(worker_id(1), 0), (worker_id(2), 4)]);
    assert_ok(&m);
}

#[test]
fn decommissioning_reports_executors_and_replaces_them() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    let (app, fx) = add_app(&mut m, T0, desc("a", Some(2), Some(2), 1024));
    let (_, _, exec_id, _) = launches(&fx)[0].clone();
    add_worker(&mut m, T0, 2, 4, 4096);

    let fx = m.handle(
        at(T0),
        Event::DecommissionWorkersOnHosts {
            hosts: vec!["10.0.0.1".into(), "NOPE".into()],
        },
    );
    assert!(fx.contains(&Effect::ExecutorUpdated {
        app_id: app.clone(),
        exec_id,
        state: ExecutorState::Decommissioned,
        message: Some("worker decommissioned".into()),
        exit_status: None,
        worker_host: Some("10.0.0.1".into()),
    }));
    assert!(fx.contains(&Effect::DecommissionWorker {
        worker_id: worker_id(1)
    }));
    assert_eq!(replies(&fx), vec![Reply::WorkersDecommissioned(1)]);
    let placed = launches(&fx);
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].0, worker_id(2));
    let s = m.status(at(T0));
    assert_eq!(s.workers[0].state, WorkerState::Decommissioned);
    // The old executor still holds its cores until it exits.
    assert_eq!(s.workers[0].cores_used, 2);

    // A later failure of the decommissioned executor is not counted as a
    // retry and releases its cores.
    let fx = m.handle(
        at(T0),
        Event::ExecutorStateChanged {
            app_id: app.clone(),
            exec_id,
            state: ExecutorState::Exited,
            message: None,
            exit_status: Some(1),
        },
    );
    assert_eq!(replies(&fx), vec![Reply::Ack(true)]);
    assert_eq!(m.status(at(T0)).workers[0].cores_used, 0);
    assert_eq!(active_app(&m, &app).cores, 2);
    assert_ok(&m);

    // Decommissioning twice only warns; a DEAD worker is not decommissioned.
    let fx = m.handle(
        at(T0),
        Event::WorkerDecommissioning {
            worker_id: worker_id(1),
        },
    );
    assert_eq!(warnings(&fx).len(), 1);
}
