//! Applications: registration, placement, executor state changes, retries,
//! removal, waiting reasons, dynamic allocation.

mod common;

use common::*;
use flint_master::state::{Effect, Event, MasterConfig, MasterState, Reply, WorkerSelectionPolicy};
use flint_proto::{AppId, ApplicationState, ExecutorId, ExecutorState, WorkerId};

fn three_by_four(config: MasterConfig) -> MasterState {
    let mut m = elected(config);
    for n in 1..=3 {
        add_worker(&mut m, T0, n, 4, 8192);
    }
    m
}

fn placement(fx: &[Effect]) -> Vec<(WorkerId, u32)> {
    let mut v: Vec<_> = launches(fx)
        .into_iter()
        .map(|(w, _, _, c)| (w, c))
        .collect();
    v.sort();
    v
}

fn exec_state(
    m: &mut MasterState,
    app: &AppId,
    exec_id: ExecutorId,
    state: ExecutorState,
    exit_status: Option<i32>,
) -> Vec<Effect> {
    m.handle(
        at(T0),
        Event::ExecutorStateChanged {
            app_id: app.clone(),
            exec_id,
            state,
            message: Some(format!("{state}")),
            exit_status,
        },
    )
}

fn exec_state_at(
    m: &mut MasterState,
    now_ms: u64,
    app: &AppId,
    exec_id: ExecutorId,
    state: ExecutorState,
    exit_status: Option<i32>,
) -> Vec<Effect> {
    m.handle(
        at(now_ms),
        Event::ExecutorStateChanged {
            app_id: app.clone(),
            exec_id,
            state,
            message: Some(format!("{state}")),
            exit_status,
        },
    )
}

#[test]
fn app_ids_follow_sparks_format_and_registration_is_persisted() {
    let mut m = master();
    let (a, fx) = add_app(&mut m, T0, desc("first", None, None, 1024));
    assert_eq!(a.as_str(), "app-20261122035500-0000");
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::PersistApp(r) if r.id == a)));
    let (b, _) = add_app(&mut m, T0 + 1000, desc("second", None, None, 1024));
    assert_eq!(b.as_str(), "app-20261122035501-0001");
    let s = m.status(at(T0));
    assert_eq!(
        s.active_apps.iter().map(|a| a.state).collect::<Vec<_>>(),
        [ApplicationState::Waiting, ApplicationState::Waiting]
    );
}

#[test]
fn the_status_shows_the_apps_own_ui_url() {
    let mut m = master();
    let mut d = desc("with-ui", None, None, 1024);
    d.app_ui_url = Some("http://127.0.0.1:4041".into());
    let (a, _) = add_app(&mut m, T0, d);
    let (b, _) = add_app(&mut m, T0, desc("without", None, None, 1024));
    assert_eq!(
        active_app(&m, &a).ui_url.as_deref(),
        Some("http://127.0.0.1:4041")
    );
    assert_eq!(active_app(&m, &b).ui_url, None);
    let json = serde_json::to_value(m.status(at(T0))).unwrap();
    assert!(json["active_apps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|app| app["ui_url"] == "http://127.0.0.1:4041"));
}

#[test]
fn a_repeated_registration_from_the_same_driver_gets_the_same_id() {
    let mut m = master();
    let (a, _) = add_app(&mut m, T0, desc("x", None, None, 1));
    let (again, fx) = add_app(&mut m, T0 + 20_000, desc("x", None, None, 1));
    assert_eq!(again, a);
    assert_eq!(warnings(&fx).len(), 1);
    assert_eq!(m.status(at(T0)).active_apps.len(), 1);
}

#[test]
fn spread_out_places_one_executor_per_worker() {
    // 3 workers × 4 cores, app with 6 cores max and 2 cores per executor.
    let mut m = three_by_four(MasterConfig::default());
    let (app, fx) = add_app(&mut m, T0, desc("spread", Some(6), Some(2), 1024));
    assert_eq!(
        placement(&fx),
        vec![(worker_id(1), 2), (worker_id(2), 2), (worker_id(3), 2)]
    );
    // Each launch is announced to the app, with the worker's address.
    assert!(fx.contains(&Effect::ExecutorAdded {
        app_id: app.clone(),
        exec_id: ExecutorId(0),
        worker_id: worker_id(3),
        host_port: "10.0.0.3:7078".into(),
        cores: 2,
        memory_mb: 1024,
    }));
    let a = active_app(&m, &app);
    assert_eq!(a.state, ApplicationState::Running);
    assert_eq!(a.cores, 6);
    assert_eq!(a.waiting_reason, None);
    assert_ok(&m);
}

#[test]
fn packed_placement_fills_workers_one_by_one() {
    let config = MasterConfig {
        spread_out_apps: false,
        ..MasterConfig::default()
    };
    let mut m = three_by_four(config);
    let (_, fx) = add_app(&mut m, T0, desc("packed", Some(6), Some(2), 1024));
    // CORES_FREE_DESC with equal free cores: highest worker id first.
    assert_eq!(
        launches(&fx)
            .iter()
            .map(|(w, _, e, c)| (w.clone(), *e, *c))
            .collect::<Vec<_>>(),
        vec![
            (worker_id(3), ExecutorId(0), 2),
            (worker_id(3), ExecutorId(1), 2),
            (worker_id(2), ExecutorId(2), 2),
        ]
    );
    assert_ok(&m);
}

#[test]
fn without_cores_per_executor_each_worker_gets_one_executor() {
    let mut m = three_by_four(MasterConfig::default());
    let (_, fx) = add_app(&mut m, T0, desc("one-per-worker", Some(6), None, 1024));
    assert_eq!(
        placement(&fx),
        vec![(worker_id(1), 2), (worker_id(2), 2), (worker_id(3), 2)]
    );

    let config = MasterConfig {
        spread_out_apps: false,
        ..MasterConfig::default()
    };
    let mut m = three_by_four(config);
    let (_, fx) = add_app(&mut m, T0, desc("one-per-worker", Some(6), None, 1024));
    assert_eq!(placement(&fx), vec![(worker_id(2), 2), (worker_id(3), 4)]);

    // Unlimited cores take every free core, one executor per worker.
    let mut m = three_by_four(MasterConfig::default());
    let (_, fx) = add_app(&mut m, T0, desc("all", None, None, 1024));
    assert_eq!(
        placement(&fx),
        vec![(worker_id(1), 4), (worker_id(2), 4), (worker_id(3), 4)]
    );
}

#[test]
fn worker_selection_policy_orders_placement() {
    let config = MasterConfig {
        spread_out_apps: false,
        worker_selection_policy: WorkerSelectionPolicy::WorkerId,
        ..MasterConfig::default()
    };
    let mut m = three_by_four(config);
    let (_, fx) = add_app(&mut m, T0, desc("by-id", Some(6), Some(2), 1024));
    assert_eq!(
        placement(&fx),
        vec![(worker_id(1), 2), (worker_id(1), 2), (worker_id(2), 2)]
    );
}

#[test]
fn apps_are_served_first_in_first_out() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 8192);
    let (first, fx) = add_app(&mut m, T0, desc("first", None, None, 1024));
    assert_eq!(launches(&fx).len(), 1);
    let (second, fx) = add_app(&mut m, T0, desc("second", None, None, 1024));
    assert!(launches(&fx).is_empty());
    assert!(active_app(&m, &second)
        .waiting_reason
        .is_some_and(|r| r.starts_with("waiting for a worker with 1 free cores")));
    // When the first finishes, the second gets the worker.
    let fx = m.handle(
        at(T0),
        Event::UnregisterApplication {
            app_id: first,
            final_state: None,
        },
    );
    assert_eq!(launches(&fx).len(), 1);
    assert_eq!(launches(&fx)[0].1, second);
    assert_eq!(active_app(&m, &second).waiting_reason, None);
    assert_ok(&m);
}

#[test]
fn executor_updates_are_relayed_and_running_resets_retries() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 8192);
    let (app, fx) = add_app(&mut m, T0, desc("a", Some(2), Some(2), 1024));
    let exec = launches(&fx)[0].2;
    let fx = exec_state(&mut m, &app, exec, ExecutorState::Running, None);
    assert_eq!(
        actions(&fx),
        vec![
            Effect::ExecutorUpdated {
                app_id: app.clone(),
                exec_id: exec,
                state: ExecutorState::Running,
                message: Some("RUNNING".into()),
                exit_status: None,
                worker_host: None,
            },
            Effect::Reply(Reply::Ack(true)),
        ]
    );
    // An unknown executor still gets its ack.
    let fx = exec_state(&mut m, &app, ExecutorId(99), ExecutorState::Running, None);
    assert_eq!(replies(&fx), vec![Reply::Ack(true)]);
    assert_eq!(warnings(&fx).len(), 1);
}

/// One worker per app in these tests: exclusion from it would end the
/// retry tests early (the isolation of bad workers has its own tests).
fn retries_only() -> MasterConfig {
    MasterConfig {
        max_failures_per_worker: 1000,
        ..MasterConfig::default()
    }
}

/// Moves the clock to the end of the app's relaunch back-off, if one runs,
/// and ticks there (the workers heartbeat first: the waits add up to more
/// than the worker timeout); returns the tick's effects and the wait.
fn wait_out_relaunch(
    m: &mut MasterState,
    now: &mut u64,
    app: &AppId,
) -> (Vec<Effect>, Option<u64>) {
    let Some(t) = m.app_relaunch_at(app, at(*now)) else {
        return (Vec::new(), None);
    };
    let waited = t - *now;
    *now = t;
    for w in m.status(at(t)).workers {
        m.handle(at(t), Event::Heartbeat { worker_id: w.id });
    }
    (m.handle(at(t), Event::Tick), Some(waited))
}

/// Fails the app's current executor `n` times in a row at `now`; after each
/// failure (which relaunches nothing at once) the clock moves on to the end
/// of the relaunch back-off, where a tick launches the replacement. Returns
/// the effects of the last failure and its tick, the current executor and
/// the back-offs waited.
fn fail_executors(
    m: &mut MasterState,
    now: &mut u64,
    app: &AppId,
    mut exec: ExecutorId,
    n: u32,
) -> (Vec<Effect>, ExecutorId, Vec<u64>) {
    let mut last = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..n {
        last = exec_state_at(m, *now, app, exec, ExecutorState::Failed, Some(1));
        assert!(
            launches(&last).is_empty(),
            "relaunched in the same millisecond"
        );
        let (fx, waited) = wait_out_relaunch(m, now, app);
        last.extend(fx);
        waits.extend(waited);
        if let Some((_, _, next, _)) = launches(&last).first() {
            exec = *next;
        }
        assert_ok(m);
    }
    (last, exec, waits)
}

#[test]
fn an_app_whose_executors_keep_failing_fails_after_max_retries_over_time() {
    let mut m = elected(retries_only());
    add_worker(&mut m, T0, 1, 4, 8192);
    let (app, fx) = add_app(&mut m, T0, desc("doomed", Some(2), Some(2), 1024));
    let first = launches(&fx)[0].2;

    let mut now = T0;
    let (fx, exec, waits) = fail_executors(&mut m, &mut now, &app, first, 9);
    assert_eq!(launches(&fx).len(), 1, "9 failures: still replaced");
    assert_eq!(active_app(&m, &app).state, ApplicationState::Running);
    // Each relaunch waits twice as long as the one before, up to 30 s.
    assert_eq!(
        waits,
        [200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000]
    );

    let (fx, _, waits) = fail_executors(&mut m, &mut now, &app, exec, 1);
    assert!(waits.is_empty() && launches(&fx).is_empty());
    assert!(fx.contains(&Effect::ApplicationRemoved {
        app_id: app.clone(),
        message: "FAILED".into()
    }));
    assert!(fx.contains(&Effect::UnpersistApp(app.clone())));
    assert!(fx.contains(&Effect::ApplicationFinished {
        worker_id: worker_id(1),
        app_id: app.clone()
    }));
    assert_eq!(completed_app(&m, &app).state, ApplicationState::Failed);
    assert_eq!(m.status(at(T0)).cores_used, 0);
    // Ten failures took their back-offs, not a millisecond.
    assert_eq!(now - T0, 81_000);
    assert_ok(&m);
}

/// Executors that report RUNNING and then exit 1 at once, `n` times, each
/// replacement launched after the back-off.
fn start_and_crash(
    m: &mut MasterState,
    now: &mut u64,
    app: &AppId,
    mut exec: ExecutorId,
    n: u32,
) -> ExecutorId {
    for _ in 0..n {
        exec_state_at(m, *now, app, exec, ExecutorState::Running, None);
        let mut fx = exec_state_at(m, *now, app, exec, ExecutorState::Failed, Some(1));
        fx.extend(wait_out_relaunch(m, now, app).0);
        if let Some((_, _, next, _)) = launches(&fx).first() {
            exec = *next;
        }
        assert_ok(m);
    }
    exec
}

const STABLE: u64 = 10_000;

#[test]
fn an_executor_that_starts_then_exits_1_every_time_fails_the_app() {
    // Spark resets the count on RUNNING and would relaunch such executors forever.
    let mut m = elected(retries_only());
    add_worker(&mut m, T0, 1, 4, 8192);
    let (app, fx) = add_app(&mut m, T0, desc("crashy", Some(2), Some(2), 1024));
    let mut now = T0;
    start_and_crash(&mut m, &mut now, &app, launches(&fx)[0].2, 9);
    assert_eq!(active_app(&m, &app).state, ApplicationState::Running);
    let exec = m_exec(&m, &app);
    start_and_crash(&mut m, &mut now, &app, exec, 1);
    assert!(m
        .status(at(T0))
        .completed_apps
        .iter()
        .any(|a| a.id == app && a.state == ApplicationState::Failed));
}

/// The app's one live executor.
fn m_exec(m: &MasterState, app: &AppId) -> ExecutorId {
    active_app(m, app).executors[0].id
}

#[test]
fn a_stable_executor_resets_the_retry_count() {
    let mut m = elected(retries_only());
    add_worker(&mut m, T0, 1, 4, 8192);
    let (app, fx) = add_app(&mut m, T0, desc("flaky", Some(2), Some(2), 1024));
    let mut now = T0;
    let (_, exec, _) = fail_executors(&mut m, &mut now, &app, launches(&fx)[0].2, 9);
    exec_state_at(&mut m, now, &app, exec, ExecutorState::Running, None);
    // After it has run for the stable time, a tick clears the count.
    now += STABLE;
    m.handle(at(now), Event::Tick);
    // Its own failure starts a new count, and a short back-off.
    let (_, exec, waits) = fail_executors(&mut m, &mut now, &app, exec, 1);
    assert_eq!(waits, [200]);
    start_and_crash(&mut m, &mut now, &app, exec, 8);
    assert_eq!(active_app(&m, &app).state, ApplicationState::Running);
}

#[test]
fn an_app_with_a_stable_running_executor_is_not_failed() {
    for config in [retries_only(), MasterConfig::default()] {
        let mut m = elected(config);
        add_worker(&mut m, T0, 1, 4, 8192);
        let (app, fx) = add_app(&mut m, T0, desc("half", Some(4), Some(2), 1024));
        let execs: Vec<_> = launches(&fx).into_iter().map(|l| l.2).collect();
        assert_eq!(execs.len(), 2);
        exec_state_at(&mut m, T0, &app, execs[0], ExecutorState::Running, None);
        let mut now = T0 + STABLE;
        // With exclusion, the worker is excluded after 3 failures: the app
        // keeps its stable executor and waits.
        let (_, _, waits) = fail_executors(&mut m, &mut now, &app, execs[1], 12);
        assert!(waits.len() >= 3, "{waits:?}");
        assert_eq!(active_app(&m, &app).state, ApplicationState::Running);
        assert_eq!(
            active_app(&m, &app).executors.len(),
            1 + usize::from(waits.len() == 12)
        );
        assert_ok(&m);
    }
}

#[test]
fn normal_exits_and_negative_max_retries_never_fail_an_app() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 8192);
    let (app, fx) = add_app(&mut m, T0, desc("ok", Some(2), Some(2), 1024));
    let mut exec = launches(&fx)[0].2;
    for _ in 0..15 {
        // A normal exit is replaced at once.
        let fx = exec_state(&mut m, &app, exec, ExecutorState::Exited, Some(0));
        exec = launches(&fx)[0].2;
    }
    assert_eq!(active_app(&m, &app).state, ApplicationState::Running);

    // Never failed, also when its only worker excluded it: the exclusion is
    // lifted and it keeps retrying, at most every 30 s.
    let config = MasterConfig {
        max_executor_retries: -1,
        ..MasterConfig::default()
    };
    let mut m = elected(config);
    add_worker(&mut m, T0, 1, 4, 8192);
    let (app, fx) = add_app(&mut m, T0, desc("forever", Some(2), Some(2), 1024));
    let mut now = T0;
    let (_, _, waits) = fail_executors(&mut m, &mut now, &app, launches(&fx)[0].2, 30);
    assert_eq!(waits.len(), 30);
    assert_eq!(waits[29], 30_000);
    assert_eq!(active_app(&m, &app).state, ApplicationState::Running);
}

#[test]
fn unregistering_with_a_final_state_ends_the_app_in_it() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 8192);
    for (name, given, want) in [
        (
            "killed",
            Some(ApplicationState::Killed),
            ApplicationState::Killed,
        ),
        (
            "failed",
            Some(ApplicationState::Failed),
            ApplicationState::Failed,
        ),
        (
            "done",
            Some(ApplicationState::Finished),
            ApplicationState::Finished,
        ),
        ("none", None, ApplicationState::Finished),
        // Not a final state: FINISHED, with a warning.
        (
            "odd",
            Some(ApplicationState::Running),
            ApplicationState::Finished,
        ),
    ] {
        let (app, fx) = add_app(&mut m, T0, desc(name, Some(1), Some(1), 1024));
        let placed = launches(&fx);
        assert_eq!(placed.len(), 1, "{name}: {fx:?}");
        let fx = m.handle(
            at(T0 + 5),
            Event::UnregisterApplication {
                app_id: app.clone(),
                final_state: given,
            },
        );
        let done = completed_app(&m, &app);
        assert_eq!(done.state, want, "{name}");
        assert!(done
            .executors
            .iter()
            .all(|e| e.state == ExecutorState::Killed));
        assert!(fx
            .iter()
            .any(|e| matches!(e, Effect::KillExecutor { app_id, .. } if *app_id == app)));
        // The driver said how it ended: no ApplicationRemoved is sent back to it.
        assert!(
            !fx.iter()
                .any(|e| matches!(e, Effect::ApplicationRemoved { .. })),
            "{name}: {fx:?}"
        );
        assert_eq!(
            warnings(&fx).len(),
            usize::from(name == "odd"),
            "{name}: {:?}",
            warnings(&fx)
        );
        assert_ok(&m);
    }
}

#[test]
fn unregistering_finishes_the_app_quietly_and_frees_its_workers() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 8192);
    add_worker(&mut m, T0, 2, 4, 8192);
    let (app, fx) = add_app(&mut m, T0, desc("done", Some(4), Some(2), 1024));
    let placed = launches(&fx);
    let fx = m.handle(
        at(T0 + 9),
        Event::UnregisterApplication {
            app_id: app.clone(),
            final_state: None,
        },
    );
    for (w, a, e, _) in &placed {
        assert!(fx.contains(&Effect::KillExecutor {
            worker_id: w.clone(),
            app_id: a.clone(),
            exec_id: *e
        }));
    }
    assert!(!fx
        .iter()
        .any(|e| matches!(e, Effect::ApplicationRemoved { .. })));
    assert_eq!(
        fx.iter()
            .filter(|e| matches!(e, Effect::ApplicationFinished { .. }))
            .count(),
        2
    );
    let done = completed_app(&m, &app);
    assert_eq!(done.state, ApplicationState::Finished);
    assert!(done
        .executors
        .iter()
        .all(|e| e.state == ExecutorState::Killed));
    assert_eq!(m.status(at(T0)).cores_used, 0);
    assert!(m.status(at(T0)).active_apps.is_empty());
    assert_ok(&m);
    // The workers then report the killed executors: expected after a normal
    // finish, so no warning (a finished app's executor is not "unknown").
    for (_, a, e, _) in &placed {
        let fx = exec_state(&mut m, a, *e, ExecutorState::Killed, None);
        assert!(warnings(&fx).is_empty(), "{:?}", warnings(&fx));
        assert!(replies(&fx) == vec![Reply::Ack(true)], "{fx:?}");
    }
    // A report for an app the master never had still warns.
    let ghost = AppId::generate(T0, 9999);
    let fx = exec_state(&mut m, &ghost, ExecutorId(1), ExecutorState::Killed, None);
    assert_eq!(warnings(&fx).len(), 1);

    // A driver disconnect finishes an app the same way.
    let (other, _) = add_app(&mut m, T0, desc("gone", None, None, 1));
    m.handle(
        at(T0),
        Event::AppDisconnected {
            app_id: other.clone(),
        },
    );
    assert_eq!(completed_app(&m, &other).state, ApplicationState::Finished);
}

#[test]
fn killing_an_app_tells_its_driver() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 8192);
    let (app, _) = add_app(&mut m, T0, desc("victim", None, None, 1024));
    let fx = m.handle(
        at(T0),
        Event::KillApplication {
            app_id: app.clone(),
        },
    );
    assert!(fx.contains(&Effect::ApplicationRemoved {
        app_id: app.clone(),
        message: "KILLED".into()
    }));
    assert_eq!(replies(&fx), vec![Reply::Ack(true)]);
    assert_eq!(completed_app(&m, &app).state, ApplicationState::Killed);
    let fx = m.handle(at(T0), Event::KillApplication { app_id: app });
    assert_eq!(replies(&fx), vec![Reply::Ack(false)]);
}

#[test]
fn completed_apps_are_trimmed_as_spark_does() {
    let config = MasterConfig {
        retained_applications: 20,
        ..MasterConfig::default()
    };
    let mut m = elected(config);
    let mut ids = Vec::new();
    for i in 0..25 {
        let (id, _) = add_app(&mut m, T0, desc(&format!("app{i}"), None, None, 1));
        m.handle(
            at(T0),
            Event::UnregisterApplication {
                app_id: id.clone(),
                final_state: None,
            },
        );
        ids.push(id);
    }
    // At 20 completed, the oldest 20 / 10 = 2 are dropped before adding.
    let kept: Vec<_> = m
        .status(at(T0))
        .completed_apps
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(kept.len(), 19);
    assert_eq!(kept.first(), Some(&ids[6]));
    assert_eq!(kept.last(), Some(&ids[24]));

    let fx = m.handle(at(T0), Event::ClearCompleted);
    assert_eq!(replies(&fx), vec![Reply::Ack(true)]);
    assert!(m.status(at(T0)).completed_apps.is_empty());
}

#[test]
fn waiting_reasons_explain_unplaceable_apps() {
    let mut m = master();
    let (app, _) = add_app(&mut m, T0, desc("big", None, Some(8), 1024));
    assert_eq!(
        active_app(&m, &app).waiting_reason.as_deref(),
        Some("no alive workers")
    );
    add_worker(&mut m, T0, 1, 4, 8192);
    assert_eq!(
        active_app(&m, &app).waiting_reason.as_deref(),
        Some("needs 8 cores per executor but the largest worker has 4")
    );

    let (fat, _) = add_app(&mut m, T0, desc("fat", None, Some(1), 16_384));
    assert_eq!(
        active_app(&m, &fat).waiting_reason.as_deref(),
        Some("needs 16384 MB per executor but the largest worker has 8192 MB")
    );

    // Worker 2 has room for the fat app but not for the 8-core one.
    let fx = add_worker(&mut m, T0, 2, 2, 32_768);
    assert_eq!(
        launches(&fx).len(),
        2,
        "2 one-core executors for the fat app"
    );
    assert_eq!(active_app(&m, &fat).waiting_reason, None);
    assert_eq!(
        active_app(&m, &app).waiting_reason.as_deref(),
        Some("needs 8 cores per executor but the largest worker has 4")
    );
    let fx = add_worker(&mut m, T0, 3, 8, 1024);
    assert_eq!(launches(&fx).len(), 1);
    assert_eq!(active_app(&m, &app).waiting_reason, None);
    assert_eq!(active_app(&m, &fat).waiting_reason, None);

    let (odd, _) = add_app(&mut m, T0, desc("odd", Some(2), Some(3), 1));
    assert_eq!(
        active_app(&m, &odd).waiting_reason.as_deref(),
        Some("its max cores (2) is less than the 3 cores per executor it needs")
    );

    let (both, _) = add_app(&mut m, T0, desc("both", None, Some(8), 2048));
    assert_eq!(
        active_app(&m, &both).waiting_reason.as_deref(),
        Some("needs 8 cores and 2048 MB on one worker but no alive worker has both")
    );
    assert_ok(&m);
}

#[test]
fn an_invalid_description_fails_the_app_with_a_reason() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 8192);
    let (app, fx) = add_app(&mut m, T0, desc("zero", None, Some(0), 1));
    assert!(fx.iter().any(|e| matches!(e,
        Effect::ApplicationRemoved { message, .. } if message.contains("cores per executor must be at least 1"))));
    assert_eq!(completed_app(&m, &app).state, ApplicationState::Failed);
    assert!(launches(&fx).is_empty());
}

#[test]
fn dynamic_allocation_sets_limits_and_kills_executors() {
    let mut m = master();
    for n in 1..=3 {
        add_worker(&mut m, T0, n, 4, 8192);
    }
    let mut d = desc("dyn", None, Some(1), 512);
    d.initial_executor_limit = Some(0);
    let (app, fx) = add_app(&mut m, T0, d);
    assert!(launches(&fx).is_empty());
    assert_eq!(
        active_app(&m, &app).waiting_reason.as_deref(),
        Some("its executor limit is 0 (it requested no executors)")
    );

    let fx = m.handle(
        at(T0),
        Event::RequestExecutors {
            app_id: app.clone(),
            total: 2,
        },
    );
    assert_eq!(replies(&fx), vec![Reply::Ack(true)]);
    let placed = launches(&fx);
    assert_eq!(placed.len(), 2);

    // Lowering the limit kills nothing; killing is explicit.
    let fx = m.handle(
        at(T0),
        Event::RequestExecutors {
            app_id: app.clone(),
            total: 1,
        },
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::KillExecutor { .. })));
    let fx = m.handle(
        at(T0),
        Event::KillExecutors {
            app_id: app.clone(),
            exec_ids: vec![placed[0].2, ExecutorId(42)],
        },
    );
    assert!(fx.contains(&Effect::KillExecutor {
        worker_id: placed[0].0.clone(),
        app_id: app.clone(),
        exec_id: placed[0].2
    }));
    assert_eq!(replies(&fx), vec![Reply::Ack(true)]);
    assert!(
        launches(&fx).is_empty(),
        "limit 1 is met by the other executor"
    );
    assert_eq!(active_app(&m, &app).executors.len(), 1);

    let ghost = AppId::generate(T0, 999);
    let fx = m.handle(
        at(T0),
        Event::RequestExecutors {
            app_id: ghost.clone(),
            total: 1,
        },
    );
    assert_eq!(replies(&fx), vec![Reply::Ack(false)]);
    let fx = m.handle(
        at(T0),
        Event::KillExecutors {
            app_id: ghost,
            exec_ids: vec![],
        },
    );
    assert_eq!(replies(&fx), vec![Reply::Ack(false)]);
    assert_ok(&m);
}

/// An executor the application asks to kill (a driver giving up on a silent one)
/// keeps its worker's cores until the worker reports it ended; then a replacement is
/// placed there, and nothing counts as a failure of the application.
#[test]
fn a_killed_executor_is_replaced_once_its_worker_frees_it() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 1, 1024);
    let (app, fx) = add_app(&mut m, T0, desc("frozen", None, Some(1), 512));
    let placed = launches(&fx);
    assert_eq!(placed.len(), 1);
    let (worker, _, exec, _) = placed[0].clone();

    let fx = m.handle(
        at(T0 + 10),
        Event::KillExecutors {
            app_id: app.clone(),
            exec_ids: vec![exec],
        },
    );
    assert!(fx.contains(&Effect::KillExecutor {
        worker_id: worker.clone(),
        app_id: app.clone(),
        exec_id: exec
    }));
    assert!(
        launches(&fx).is_empty(),
        "a replacement placed before the worker freed the core would be refused"
    );
    assert_eq!(cores_used(&m), vec![(worker.clone(), 1)]);
    assert!(active_app(&m, &app).executors.is_empty());
    assert_ok(&m);

    // The worker killed the process.
    let fx = m.handle(
        at(T0 + 20),
        Event::ExecutorStateChanged {
            app_id: app.clone(),
            exec_id: exec,
            state: ExecutorState::Killed,
            message: None,
            exit_status: Some(137),
        },
    );
    let again = launches(&fx);
    assert_eq!(again.len(), 1, "{fx:?}");
    assert_eq!(again[0].0, worker);
    assert_ne!(again[0].2, exec);
    assert!(warnings(&fx).is_empty(), "{:?}", warnings(&fx));
    assert_eq!(cores_used(&m), vec![(worker, 1)]);
    assert_eq!(active_app(&m, &app).state, "RUNNING".parse().unwrap());
    assert_ok(&m);
}

#[test]
fn status_serializes_to_the_documented_json() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    add_app(&mut m, T0, desc("pi", Some(2), Some(2), 1024));
    add_app(&mut m, T0, desc("huge", None, Some(64), 1024));
    let v = serde_json::to_value(m.status(at(T0))).expect("json");
    assert_eq!(v["url"], "flint://127.0.0.1:7077");
    assert_eq!(v["status"], "ALIVE");
    assert_eq!(v["alive_workers"], 1);
    assert_eq!(v["cores_used"], 2);
    assert_eq!(v["memory_used_mb"], 1024);
    assert_eq!(v["workers"][0]["cores_used"], 2);
    assert_eq!(v["active_apps"][0]["executors"][0]["state"], "LAUNCHING");
    assert_eq!(
        v["active_apps"][1]["waiting_reason"],
        "needs 64 cores per executor but the largest worker has 4"
    );
    assert!(v["active_drivers"].as_array().is_some_and(|a| a.is_empty()));
}
