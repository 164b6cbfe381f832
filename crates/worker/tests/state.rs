//! The worker's state machine: registration schedule, master changes,
//! heartbeats, executor and driver bookkeeping, decommission, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use flint_proto::{
    AppId, ApplicationDescription, DriverDescription, DriverId, DriverState, ExecutorCommand,
    ExecutorId, ExecutorState, WorkerId, WorkerState,
};
use flint_worker::runner::ExitStatus;
use flint_worker::state::{
    AuthRefusal, ChildId, DecommissionTrigger, Effect, Event, ExecutorReport, LogLevel, Now,
    WorkerConfig, WorkerCore, AUTH_REFUSAL_LOG_INTERVAL_MS,
};
use proptest::prelude::*;

const T0: u64 = 1_795_319_700_000;
const M1: &str = "flint://m1:7077";
const M2: &str = "flint://m2:7077";
const M1_UI: &str = "http://m1:8080";

/// `ms` on both clocks (monotonic and wall agree: no clock jumps).
fn at(ms: u64) -> Now {
    Now::new(ms, ms)
}

fn worker_id() -> WorkerId {
    WorkerId::generate(T0, "127.0.0.1", 7078).unwrap()
}

/// Two masters, 4 cores, 4096 MB, random factor fixed at 1.0 (10 s / 60 s).
fn config() -> WorkerConfig {
    let mut c = WorkerConfig::new(vec![M1.into(), M2.into()], 4, 4096);
    c.registration_retry_fuzz = Some(1.0);
    c
}

fn started(c: WorkerConfig) -> (WorkerCore, Vec<Effect>) {
    let mut w = WorkerCore::new(worker_id(), c);
    let fx = w.handle(at(T0), Event::Start);
    (w, fx)
}

fn registered_event(master: &str) -> Event {
    Event::Registered {
        master_url: master.into(),
        master_web_ui_url: M1_UI.into(),
        master_address: master.into(),
        duplicate: false,
    }
}

/// Started and registered with M1.
fn registered(c: WorkerConfig) -> WorkerCore {
    let (mut w, _) = started(c);
    w.handle(at(T0), registered_event(M1));
    w
}

fn app(n: u32) -> AppId {
    AppId::generate(T0, n)
}

fn driver(n: u32) -> DriverId {
    DriverId::generate(T0, n)
}

fn app_desc() -> Box<ApplicationDescription> {
    let mut cmd = ExecutorCommand::new("/bin/app");
    cmd.args = vec!["--executor-id".into(), "{{EXECUTOR_ID}}".into()];
    Box::new(ApplicationDescription::new("pi", cmd))
}

fn driver_desc(cores: u32, memory_mb: u64, supervise: bool) -> Box<DriverDescription> {
    let mut d = DriverDescription::new("flint://h:1/files/app", ExecutorCommand::new("/bin/app"));
    d.cores = cores;
    d.memory_mb = memory_mb;
    d.supervise = supervise;
    Box::new(d)
}

fn launch_from(master: &str, a: &AppId, exec: u32, cores: u32, memory_mb: u64) -> Event {
    Event::LaunchExecutor {
        master_url: master.into(),
        app_id: a.clone(),
        exec_id: ExecutorId(exec),
        cores,
        memory_mb,
        desc: app_desc(),
    }
}

fn launch(w: &mut WorkerCore, a: &AppId, exec: u32, cores: u32, memory_mb: u64) -> Vec<Effect> {
    w.handle(at(T0), launch_from(M1, a, exec, cores, memory_mb))
}

fn start_exec(w: &mut WorkerCore, a: &AppId, exec: u32) -> Vec<Effect> {
    w.handle(
        at(T0),
        Event::ExecutorStarted {
            app_id: a.clone(),
            exec_id: ExecutorId(exec),
        },
    )
}

fn exited(w: &mut WorkerCore, a: &AppId, exec: u32, status: ExitStatus) -> Vec<Effect> {
    w.handle(
        at(T0),
        Event::ExecutorExited {
            app_id: a.clone(),
            exec_id: ExecutorId(exec),
            status,
        },
    )
}

fn registrations(fx: &[Effect]) -> Vec<(String, Option<usize>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::RegisterWithMaster {
                master_url,
                master_index,
            } => Some((master_url.clone(), *master_index)),
            _ => None,
        })
        .collect()
}

fn retry_timer(fx: &[Effect]) -> Option<(u64, u64)> {
    fx.iter().find_map(|e| match e {
        Effect::ScheduleRegistrationRetry {
            delay_ms,
            generation,
        } => Some((*delay_ms, *generation)),
        _ => None,
    })
}

fn reports(fx: &[Effect]) -> Vec<(String, ExecutorReport)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::ReportExecutorState { master_url, report } => {
                Some((master_url.clone(), report.clone()))
            }
            _ => None,
        })
        .collect()
}

fn exit_of(fx: &[Effect]) -> Option<(i32, String)> {
    fx.iter().find_map(|e| match e {
        Effect::Exit { code, reason } => Some((*code, reason.clone())),
        _ => None,
    })
}

fn starts(fx: &[Effect]) -> usize {
    fx.iter()
        .filter(|e| matches!(e, Effect::StartExecutor { .. }))
        .count()
}

fn has_warning(fx: &[Effect], needle: &str) -> bool {
    fx.iter().any(
        |e| matches!(e, Effect::Log { level: LogLevel::Warn, message } if message.contains(needle)),
    )
}

fn heartbeats(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::SendHeartbeat { master_url } => Some(master_url.clone()),
            _ => None,
        })
        .collect()
}

// ----- registration -----

#[test]
fn start_registers_with_every_master_in_parallel() {
    let (w, fx) = started(config());
    assert_eq!(
        registrations(&fx),
        [(M1.to_owned(), Some(0)), (M2.to_owned(), Some(1))]
    );
    assert_eq!(retry_timer(&fx).map(|t| t.0), Some(10_000));
    assert!(!w.is_registered());
    assert!(!w.is_connected());
}

/// Follows the retry timer until the worker gives up; returns, per
/// registration round, (time since start in s, masters contacted), and the
/// exit (time, code, reason).
fn run_retry_schedule(c: WorkerConfig) -> (Vec<(u64, usize)>, (u64, i32, String)) {
    let (mut w, fx) = started(c);
    let mut rounds = vec![(0, registrations(&fx).len())];
    let (mut delay, mut generation) = retry_timer(&fx).expect("a retry timer");
    let mut now = T0;
    loop {
        now += delay;
        let fx = w.handle(at(now), Event::RegistrationRetryTick { generation });
        if let Some((code, reason)) = exit_of(&fx) {
            assert!(registrations(&fx).is_empty());
            assert!(retry_timer(&fx).is_none());
            return (rounds, ((now - T0) / 1000, code, reason));
        }
        rounds.push(((now - T0) / 1000, registrations(&fx).len()));
        (delay, generation) = retry_timer(&fx).expect("re-armed");
        assert!(rounds.len() < 100, "never gives up");
    }
}

#[test]
fn retry_schedule_is_six_quick_then_prolonged_then_exit_after_sixteen() {
    let (rounds, (exit_at, code, reason)) = run_retry_schedule(config());
    let times: Vec<u64> = rounds.iter().map(|r| r.0).collect();
    // The first round at start, 6 retries every 10 s, 10 more every 60 s.
    assert_eq!(
        times,
        [0, 10, 20, 30, 40, 50, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 660]
    );
    assert!(
        rounds.iter().all(|r| r.1 == 2),
        "every round reaches both masters"
    );
    // The 17th tick finds all 16 retries used up.
    assert_eq!(exit_at, 720);
    assert_eq!(code, 1);
    assert!(reason.contains("All masters are unresponsive"), "{reason}");
    assert!(reason.contains(M1) && reason.contains(M2), "{reason}");
    assert!(reason.contains("16 registration retries"), "{reason}");
}

#[test]
fn retry_intervals_follow_the_random_factor_at_both_ends() {
    let mut c = config();
    c.registration_retry_fuzz = Some(0.5);
    let (rounds, (exit_at, _, _)) = run_retry_schedule(c);
    assert_eq!(rounds[1].0, 5);
    assert_eq!(rounds[6].0, 30);
    assert_eq!(rounds[7].0, 60);
    assert_eq!(exit_at, 6 * 5 + 11 * 30);

    let mut c = config();
    c.registration_retry_fuzz = Some(1.4999);
    let w = WorkerCore::new(worker_id(), c.clone());
    assert_eq!(w.registration_retry_intervals_ms(), (15_000, 90_000));
    let (_, (exit_at, _, _)) = run_retry_schedule(c);
    assert_eq!(exit_at, 6 * 15 + 11 * 90);

    // Drawn from the seed: whole seconds in 5–15 s and 30–90 s, the same
    // factor for both, and the same for the same seed.
    let mut seen = BTreeSet::new();
    for seed in 0..200u64 {
        let mut c = config();
        c.registration_retry_fuzz = None;
        c.rng_seed = seed;
        let (i, p) = WorkerCore::new(worker_id(), c.clone()).registration_retry_intervals_ms();
        assert!((5_000..=15_000).contains(&i) && i / 1000 * 1000 == i, "{i}");
        assert!(
            (30_000..=90_000).contains(&p) && p / 1000 * 1000 == p,
            "{p}"
        );
        assert!(p.abs_diff(6 * i) <= 3_000, "{i} {p}");
        assert_eq!(
            WorkerCore::new(worker_id(), c).registration_retry_intervals_ms(),
            (i, p)
        );
        seen.insert(i);
    }
    assert!(seen.len() > 5, "the seed spreads workers: {seen:?}");
}

#[test]
fn registration_cancels_retries_starts_heartbeats_and_reports_state() {
    let (mut w, fx) = started(config());
    let (_, generation) = retry_timer(&fx).unwrap();
    let fx = w.handle(at(T0 + 1), registered_event(M1));
    assert_eq!(
        fx.iter()
            .filter(|e| !matches!(e, Effect::Log { .. }))
            .cloned()
            .collect::<Vec<_>>(),
        [
            Effect::SendHeartbeat {
                master_url: M1.into()
            },
            Effect::ScheduleHeartbeat { delay_ms: 15_000 },
            Effect::ScheduleCleanup {
                delay_ms: 1_800_000
            },
            Effect::SendWorkerLatestState {
                master_url: M1.into(),
                executors: vec![],
                driver_ids: vec![],
            },
        ]
    );
    assert!(w.is_registered() && w.is_connected());
    assert_eq!(w.master_url(), Some(M1));
    // The retry timer that was armed is now stale.
    assert!(w
        .handle(at(T0 + 10_000), Event::RegistrationRetryTick { generation })
        .is_empty());
    // A duplicate registration only warns; heartbeats and cleanup are not
    // started twice.
    let fx = w.handle(
        at(T0 + 2),
        Event::Registered {
            master_url: M1.into(),
            master_web_ui_url: M1_UI.into(),
            master_address: M1.into(),
            duplicate: true,
        },
    );
    assert!(has_warning(&fx, "Duplicate registration"));
    assert!(!fx.iter().any(|e| matches!(
        e,
        Effect::ScheduleHeartbeat { .. } | Effect::ScheduleCleanup { .. }
    )));
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::SendWorkerLatestState { .. })));
}

#[test]
fn cleanup_is_not_started_when_disabled() {
    let mut c = config();
    c.cleanup_enabled = false;
    let (mut w, _) = started(c);
    let fx = w.handle(at(T0), registered_event(M1));
    assert!(!fx
        .iter()
        .any(|e| matches!(e, Effect::ScheduleCleanup { .. })));
    assert!(w.handle(at(T0), Event::CleanupTick).is_empty());
}

#[test]
fn register_failed_exits_only_when_not_registered() {
    let (mut w, _) = started(config());
    let fx = w.handle(
        at(T0),
        Event::RegisterFailed {
            message: "Attempted to re-register worker at same address".into(),
        },
    );
    let (code, reason) = exit_of(&fx).unwrap();
    assert_eq!(code, 1);
    assert!(
        reason.contains("Worker registration failed: Attempted"),
        "{reason}"
    );
    assert!(w.is_stopped());

    let mut w = registered(config());
    let fx = w.handle(
        at(T0),
        Event::RegisterFailed {
            message: "late".into(),
        },
    );
    assert!(exit_of(&fx).is_none());
    assert!(!w.is_stopped());
}

#[test]
fn master_in_standby_is_ignored() {
    let (mut w, _) = started(config());
    assert!(w.handle(at(T0), Event::MasterInStandby).is_empty());
    assert!(!w.is_registered());
}

#[test]
fn reregistration_after_disconnect_goes_only_to_the_known_master() {
    let (mut w, _) = started(config());
    w.handle(at(T0), registered_event(M2));
    // A connection to some other process dropping is not the master.
    assert!(w
        .handle(
            at(T0),
            Event::MasterDisconnected {
                address: "flint://h:9".into()
            }
        )
        .is_empty());
    let fx = w.handle(at(T0), Event::MasterDisconnected { address: M2.into() });
    assert_eq!(registrations(&fx), [(M2.to_owned(), Some(1))]);
    assert!(!w.is_connected() && !w.is_registered());
    // At once, then quickly (see tests/reregistration.rs).
    let (delay, generation) = retry_timer(&fx).unwrap();
    assert_eq!(delay, 50);
    // A repeated notice does not start a second round.
    let fx = w.handle(at(T0), Event::MasterDisconnected { address: M2.into() });
    assert!(registrations(&fx).is_empty() && retry_timer(&fx).is_none());
    // Retries also go to M2 only.
    let fx = w.handle(at(T0 + delay), Event::RegistrationRetryTick { generation });
    assert_eq!(registrations(&fx), [(M2.to_owned(), Some(1))]);
    // No heartbeats while disconnected, but the timer keeps running.
    assert_eq!(
        w.handle(at(T0), Event::HeartbeatTick),
        [Effect::ScheduleHeartbeat { delay_ms: 15_000 }]
    );
    // The master answers: registered again, heartbeats resume.
    w.handle(at(T0), registered_event(M2));
    assert_eq!(heartbeats(&w.handle(at(T0), Event::HeartbeatTick)), [M2]);
}

#[test]
fn reconnect_request_reregisters_with_the_known_master_only() {
    let mut w = registered(config());
    let fx = w.handle(
        at(T0),
        Event::ReconnectWorker {
            master_url: M1.into(),
        },
    );
    assert_eq!(registrations(&fx), [(M1.to_owned(), Some(0))]);
    assert!(!w.is_registered());
    // Still connected (Spark keeps heartbeating until a disconnect).
    assert!(w.is_connected());
}

#[test]
fn a_master_at_a_changed_address_is_reached_where_configured_if_preferred() {
    let advertised = "flint://10.0.0.5:7077";
    for prefer in [false, true] {
        let mut c = config();
        c.prefer_configured_master_address = prefer;
        let (mut w, _) = started(c);
        w.handle(
            at(T0),
            Event::Registered {
                master_url: advertised.into(),
                master_web_ui_url: M1_UI.into(),
                master_address: M1.into(),
                duplicate: false,
            },
        );
        // A drop of either address counts.
        let fx = w.handle(at(T0), Event::MasterDisconnected { address: M1.into() });
        let expected = if prefer {
            (M1.to_owned(), Some(0))
        } else {
            (advertised.to_owned(), None)
        };
        assert_eq!(registrations(&fx), [expected]);
    }
}

#[test]
fn master_changed_switches_master_and_replies_with_what_runs() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 1, 512);
    launch(&mut w, &a, 1, 1, 1024);
    start_exec(&mut w, &a, 1);
    w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: driver(0),
            desc: driver_desc(1, 256, false),
        },
    );
    let fx = w.handle(
        at(T0),
        Event::MasterChanged {
            master_url: M2.into(),
            master_web_ui_url: "http://m2:8080".into(),
        },
    );
    let reply = fx
        .iter()
        .find_map(|e| match e {
            Effect::SendWorkerSchedulerState {
                master_url,
                executors,
                driver_ids,
            } => Some((master_url.clone(), executors.clone(), driver_ids.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(reply.0, M2);
    let execs: Vec<_> = reply
        .1
        .iter()
        .map(|d| (d.exec_id.0, d.cores, d.memory_mb, d.state))
        .collect();
    assert_eq!(
        execs,
        [
            (0, 1, 512, ExecutorState::Launching),
            (1, 1, 1024, ExecutorState::Running)
        ]
    );
    assert_eq!(reply.2, [driver(0)]);
    assert_eq!(w.master_url(), Some(M2));
    assert_eq!(
        w.status().master_web_ui_url.as_deref(),
        Some("http://m2:8080")
    );
    // The old master is now stale; the new one is obeyed.
    let fx = w.handle(at(T0), launch_from(M1, &a, 2, 1, 1));
    assert_eq!(starts(&fx), 0);
    assert!(has_warning(&fx, "Invalid Master (flint://m1:7077)"));
    assert_eq!(starts(&w.handle(at(T0), launch_from(M2, &a, 2, 1, 1))), 1);
    assert_eq!(heartbeats(&w.handle(at(T0), Event::HeartbeatTick)), [M2]);
}

#[test]
fn master_changed_during_reregistration_cancels_the_retries() {
    let mut w = registered(config());
    let fx = w.handle(at(T0), Event::MasterDisconnected { address: M1.into() });
    let (_, generation) = retry_timer(&fx).unwrap();
    w.handle(
        at(T0),
        Event::MasterChanged {
            master_url: M2.into(),
            master_web_ui_url: "http://m2:8080".into(),
        },
    );
    assert!(w.is_connected());
    assert!(w
        .handle(at(T0 + 10_000), Event::RegistrationRetryTick { generation })
        .is_empty());
}

// ----- heartbeats -----

#[test]
fn heartbeats_go_out_only_when_registered_and_connected() {
    let (mut w, _) = started(config());
    assert!(w.handle(at(T0), Event::HeartbeatTick).is_empty());
    w.handle(at(T0), registered_event(M1));
    let fx = w.handle(at(T0 + 15_000), Event::HeartbeatTick);
    assert_eq!(
        fx,
        [
            Effect::SendHeartbeat {
                master_url: M1.into()
            },
            Effect::ScheduleHeartbeat { delay_ms: 15_000 }
        ]
    );
    let mut c = config().with_worker_timeout_ms(2_000);
    c.cleanup_enabled = false;
    let (mut w, _) = started(c);
    let fx = w.handle(at(T0), registered_event(M1));
    assert!(fx.contains(&Effect::ScheduleHeartbeat { delay_ms: 500 }));
}

// ----- executors -----

#[test]
fn executor_launches_runs_and_exit_is_reported_with_resources_freed() {
    let mut w = registered(config());
    let a = app(0);
    let fx = launch(&mut w, &a, 0, 2, 1024);
    assert!(fx.contains(&Effect::StartExecutor {
        app_id: a.clone(),
        exec_id: ExecutorId(0),
        cores: 2,
        memory_mb: 1024,
        command: app_desc().command,
    }));
    assert!(reports(&fx).is_empty(), "LAUNCHING is not reported");
    assert_eq!((w.cores_used(), w.memory_used_mb()), (2, 1024));
    assert_eq!(w.status().executors[0].state, ExecutorState::Launching);

    let fx = start_exec(&mut w, &a, 0);
    let r = reports(&fx);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, M1);
    assert_eq!(r[0].1.state, ExecutorState::Running);
    assert_eq!(w.status().executors[0].state, ExecutorState::Running);

    let fx = exited(&mut w, &a, 0, ExitStatus::Exited(1));
    let r = reports(&fx);
    assert_eq!(
        r[0].1,
        ExecutorReport {
            app_id: a.clone(),
            exec_id: ExecutorId(0),
            state: ExecutorState::Exited,
            message: Some("Command exited with code 1".into()),
            exit_status: Some(1),
        }
    );
    assert_eq!((w.cores_used(), w.memory_used_mb()), (0, 0));
    let s = w.status();
    assert!(s.executors.is_empty());
    assert_eq!(s.finished_executors.len(), 1);
    assert_eq!(s.finished_executors[0].state, ExecutorState::Exited);
    assert_eq!(s.finished_executors[0].app_name, "pi");
}

#[test]
fn resources_are_never_overcommitted() {
    let mut w = registered(config()); // 4 cores, 4096 MB
    let a = app(0);
    assert_eq!(starts(&launch(&mut w, &a, 0, 2, 1024)), 1);
    assert_eq!(starts(&launch(&mut w, &a, 1, 2, 1024)), 1);
    assert_eq!(w.cores_free(), 0);
    // One core too many: refused and reported FAILED.
    let fx = launch(&mut w, &a, 2, 1, 512);
    assert_eq!(starts(&fx), 0);
    let r = reports(&fx);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1.state, ExecutorState::Failed);
    let msg = r[0].1.message.clone().unwrap();
    assert!(
        msg.contains("needs 1 cores") && msg.contains("0 cores"),
        "{msg}"
    );
    assert_eq!((w.cores_used(), w.memory_used_mb()), (4, 2048));
    // Memory is checked too.
    exited(&mut w, &a, 0, ExitStatus::Exited(0));
    let fx = launch(&mut w, &a, 3, 1, 3073);
    assert_eq!(starts(&fx), 0);
    assert_eq!(reports(&fx)[0].1.state, ExecutorState::Failed);
    assert_eq!(starts(&launch(&mut w, &a, 3, 2, 3072)), 1);
    assert_eq!((w.cores_used(), w.memory_used_mb()), (4, 4096));
    // Drivers count against the same totals.
    let fx = w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: driver(0),
            desc: driver_desc(1, 1, false),
        },
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::StartDriver { .. })));
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::ReportDriverState {
            state: DriverState::Error,
            ..
        }
    )));
    w.check_invariants().unwrap();
}

#[test]
fn a_duplicate_launch_is_ignored() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 1, 1);
    let fx = launch(&mut w, &a, 0, 1, 1);
    assert_eq!(starts(&fx), 0);
    assert!(reports(&fx).is_empty());
    assert_eq!(w.cores_used(), 1);
}

#[test]
fn kill_path_kills_once_and_reports_killed() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 1, 100);
    start_exec(&mut w, &a, 0);
    let kill = Event::KillExecutor {
        master_url: M1.into(),
        app_id: a.clone(),
        exec_id: ExecutorId(0),
    };
    let fx = w.handle(at(T0), kill.clone());
    assert!(fx.contains(&Effect::KillProcess {
        child: ChildId::Executor {
            app_id: a.clone(),
            exec_id: ExecutorId(0)
        },
        grace_ms: 10_000,
    }));
    assert!(!w
        .handle(at(T0), kill)
        .iter()
        .any(|e| matches!(e, Effect::KillProcess { .. })));
    let fx = exited(
        &mut w,
        &a,
        0,
        ExitStatus::Signaled {
            signal: 15,
            core_dumped: false,
        },
    );
    let r = &reports(&fx)[0].1;
    assert_eq!(r.state, ExecutorState::Killed);
    assert_eq!(r.exit_status, Some(143));
    assert_eq!(w.cores_used(), 0);
    // Unknown executors: only a log line.
    let fx = w.handle(
        at(T0),
        Event::KillExecutor {
            master_url: M1.into(),
            app_id: a,
            exec_id: ExecutorId(9),
        },
    );
    assert!(fx.iter().all(|e| matches!(e, Effect::Log { .. })));
}

#[test]
fn an_executor_killed_while_launching_is_not_reported_running() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 1, 100);
    w.handle(
        at(T0),
        Event::KillExecutor {
            master_url: M1.into(),
            app_id: a.clone(),
            exec_id: ExecutorId(0),
        },
    );
    assert!(reports(&start_exec(&mut w, &a, 0)).is_empty());
    let fx = exited(&mut w, &a, 0, ExitStatus::Exited(0));
    assert_eq!(reports(&fx)[0].1.state, ExecutorState::Killed);
}

#[test]
fn a_failed_launch_is_reported_failed_and_frees_resources() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 3, 100);
    let fx = w.handle(
        at(T0),
        Event::ExecutorLaunchFailed {
            app_id: a.clone(),
            exec_id: ExecutorId(0),
            message: "cannot start /bin/app: No such file or directory".into(),
        },
    );
    let r = &reports(&fx)[0].1;
    assert_eq!(r.state, ExecutorState::Failed);
    assert!(r.message.as_deref().unwrap().contains("No such file"));
    assert_eq!(w.cores_used(), 0);
}

#[test]
fn launches_and_kills_from_a_stale_or_unknown_master_are_ignored() {
    let (mut w, _) = started(config());
    let a = app(0);
    // No master yet.
    let fx = w.handle(at(T0), launch_from(M1, &a, 0, 1, 1));
    assert_eq!(starts(&fx), 0);
    assert!(has_warning(&fx, "Invalid Master"));
    w.handle(at(T0), registered_event(M1));
    let fx = w.handle(at(T0), launch_from(M2, &a, 0, 1, 1));
    assert_eq!(starts(&fx), 0);
    assert!(reports(&fx).is_empty());
    assert!(has_warning(&fx, "Invalid Master (flint://m2:7077)"));
    assert_eq!(w.cores_used(), 0);
    launch(&mut w, &a, 0, 1, 1);
    let fx = w.handle(
        at(T0),
        Event::KillExecutor {
            master_url: M2.into(),
            app_id: a,
            exec_id: ExecutorId(0),
        },
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::KillProcess { .. })));
    assert!(has_warning(&fx, "Invalid Master"));
}

#[test]
fn failed_reports_are_retried_then_the_worker_exits() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 1, 1);
    let report = reports(&start_exec(&mut w, &a, 0))[0].1.clone();
    // A timeout is retried at once, another failure after the ask timeout.
    let fx = w.handle(
        at(T0),
        Event::ExecutorStateSyncFailed {
            report: report.clone(),
            timed_out: true,
        },
    );
    assert_eq!(reports(&fx), [(M1.to_owned(), report.clone())]);
    let fx = w.handle(
        at(T0),
        Event::ExecutorStateSyncFailed {
            report: report.clone(),
            timed_out: false,
        },
    );
    assert!(fx.contains(&Effect::ScheduleExecutorStateRetry {
        delay_ms: 120_000,
        report: report.clone()
    }));
    let fx = w.handle(
        at(T0),
        Event::RetryExecutorState {
            report: report.clone(),
        },
    );
    assert_eq!(reports(&fx).len(), 1);
    // A success resets the count.
    w.handle(
        at(T0),
        Event::ExecutorStateSynced {
            app_id: a.clone(),
            exec_id: ExecutorId(0),
        },
    );
    for _ in 0..4 {
        let fx = w.handle(
            at(T0),
            Event::ExecutorStateSyncFailed {
                report: report.clone(),
                timed_out: true,
            },
        );
        assert!(exit_of(&fx).is_none());
    }
    let fx = w.handle(
        at(T0),
        Event::ExecutorStateSyncFailed {
            report,
            timed_out: true,
        },
    );
    let (code, reason) = exit_of(&fx).unwrap();
    assert_eq!(code, 1);
    assert!(reason.contains("for 5 times"), "{reason}");
    // The executor is killed on the way out.
    assert!(fx.iter().any(|e| matches!(e, Effect::KillProcess { .. })));
}

#[test]
fn application_dirs_are_cleaned_once_its_last_executor_is_gone() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 1, 1);
    launch(&mut w, &a, 1, 1, 1);
    let cleanup = |fx: &[Effect]| {
        fx.iter()
            .any(|e| matches!(e, Effect::CleanupAppDirs { app_id } if *app_id == a))
    };
    assert!(!cleanup(&w.handle(
        at(T0),
        Event::ApplicationFinished { app_id: a.clone() }
    )));
    assert!(!cleanup(&exited(&mut w, &a, 0, ExitStatus::Exited(0))));
    assert!(cleanup(&exited(&mut w, &a, 1, ExitStatus::Exited(0))));
    // An application with nothing here is cleaned at once.
    let b = app(1);
    assert!(w
        .handle(at(T0), Event::ApplicationFinished { app_id: b.clone() })
        .contains(&Effect::CleanupAppDirs { app_id: b }));
}

#[test]
fn work_dir_cleanup_keeps_what_runs_and_rearms() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 1, 1);
    launch(&mut w, &a, 1, 1, 1);
    w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: driver(3),
            desc: driver_desc(1, 1, false),
        },
    );
    let fx = w.handle(at(T0), Event::CleanupTick);
    assert_eq!(
        fx,
        [
            Effect::CleanupWorkDir {
                keep: vec![a.to_string(), driver(3).to_string()],
                app_data_ttl_ms: 604_800_000,
            },
            Effect::ScheduleCleanup {
                delay_ms: 1_800_000
            },
        ]
    );
}

#[test]
fn finished_executors_are_trimmed_as_spark() {
    let mut c = config();
    c.retained_executors = 10;
    let mut w = registered(c);
    let a = app(0);
    for n in 0..11 {
        launch(&mut w, &a, n, 1, 1);
        exited(&mut w, &a, n, ExitStatus::Exited(0));
    }
    let s = w.status();
    assert_eq!(s.finished_executors.len(), 10);
    assert_eq!(s.finished_executors[0].exec_id, ExecutorId(1));
}

// ----- drivers -----

fn driver_reports(fx: &[Effect]) -> Vec<(DriverId, DriverState)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::ReportDriverState {
                driver_id, state, ..
            } => Some((driver_id.clone(), *state)),
            _ => None,
        })
        .collect()
}

fn relaunch_delay(fx: &[Effect]) -> Option<u64> {
    fx.iter().find_map(|e| match e {
        Effect::ScheduleDriverRelaunch { delay_ms, .. } => Some(*delay_ms),
        _ => None,
    })
}

#[test]
fn drivers_run_and_report_their_final_state() {
    let mut w = registered(config());
    let d = driver(0);
    let fx = w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: d.clone(),
            desc: driver_desc(1, 1024, false),
        },
    );
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::StartDriver { driver_id, .. } if *driver_id == d)));
    assert_eq!((w.cores_used(), w.memory_used_mb()), (1, 1024));
    w.handle(
        at(T0),
        Event::DriverStarted {
            driver_id: d.clone(),
        },
    );
    assert_eq!(w.status().drivers[0].state, DriverState::Running);
    let fx = w.handle(
        at(T0),
        Event::DriverExited {
            driver_id: d.clone(),
            status: ExitStatus::Exited(0),
        },
    );
    assert_eq!(driver_reports(&fx), [(d.clone(), DriverState::Finished)]);
    assert_eq!(w.cores_used(), 0);
    assert_eq!(w.status().finished_drivers[0].state, DriverState::Finished);

    // Non-zero without supervision: FAILED; a launch error: ERROR.
    let d1 = driver(1);
    w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: d1.clone(),
            desc: driver_desc(1, 1, false),
        },
    );
    let fx = w.handle(
        at(T0),
        Event::DriverExited {
            driver_id: d1.clone(),
            status: ExitStatus::Exited(3),
        },
    );
    assert_eq!(driver_reports(&fx), [(d1, DriverState::Failed)]);
    let d2 = driver(2);
    w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: d2.clone(),
            desc: driver_desc(1, 1, false),
        },
    );
    let fx = w.handle(
        at(T0),
        Event::DriverLaunchFailed {
            driver_id: d2.clone(),
            message: "cannot fetch binary".into(),
        },
    );
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::ReportDriverState { state: DriverState::Error, exception: Some(x), .. }
            if x == "cannot fetch binary"
    )));
}

#[test]
fn supervised_drivers_are_relaunched_with_exponential_backoff() {
    let mut w = registered(config());
    let d = driver(0);
    w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: d.clone(),
            desc: driver_desc(2, 100, true),
        },
    );
    let mut now = T0;
    let mut delays = Vec::new();
    for (i, run_ms) in [100, 100, 100, 6_000, 100].into_iter().enumerate() {
        let fx = w.handle(
            at(now),
            Event::DriverStarted {
                driver_id: d.clone(),
            },
        );
        // A relaunched driver is reported RUNNING again; the first start is not
        // reported (the master marked it RUNNING when it placed it).
        let expected: &[(DriverId, DriverState)] = if i == 0 {
            &[]
        } else {
            &[(d.clone(), DriverState::Running)]
        };
        assert_eq!(driver_reports(&fx), expected);
        now += run_ms;
        let fx = w.handle(
            at(now),
            Event::DriverExited {
                driver_id: d.clone(),
                status: ExitStatus::Exited(1),
            },
        );
        assert_eq!(driver_reports(&fx), [(d.clone(), DriverState::Relaunching)]);
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::ReportDriverState { exception: Some(m), .. }
                if m.starts_with("command exited with code 1; relaunching in ")
        )));
        let delay = relaunch_delay(&fx).unwrap();
        delays.push(delay);
        now += delay;
        let fx = w.handle(
            at(now),
            Event::DriverRelaunchTick {
                driver_id: d.clone(),
            },
        );
        assert!(fx.iter().any(|e| matches!(e, Effect::StartDriver { .. })));
    }
    assert_eq!(delays, [1000, 2000, 4000, 1000, 2000]);
    assert_eq!(w.cores_used(), 2, "resources stay held between runs");
    // Failing fast again and again: the back-off doubles up to one minute.
    for _ in 0..8 {
        w.handle(
            at(now),
            Event::DriverStarted {
                driver_id: d.clone(),
            },
        );
        let fx = w.handle(
            at(now),
            Event::DriverExited {
                driver_id: d.clone(),
                status: ExitStatus::Exited(1),
            },
        );
        delays.push(relaunch_delay(&fx).unwrap());
        now += delays.last().unwrap();
        w.handle(
            at(now),
            Event::DriverRelaunchTick {
                driver_id: d.clone(),
            },
        );
    }
    assert_eq!(
        delays[5..],
        [4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000]
    );
    w.handle(
        at(now),
        Event::DriverStarted {
            driver_id: d.clone(),
        },
    );
    // Killed while waiting to be relaunched: KILLED at once.
    let fx = w.handle(
        at(now),
        Event::DriverExited {
            driver_id: d.clone(),
            status: ExitStatus::Exited(1),
        },
    );
    assert!(relaunch_delay(&fx).is_some());
    let fx = w.handle(
        at(now),
        Event::KillDriver {
            driver_id: d.clone(),
        },
    );
    assert_eq!(driver_reports(&fx), [(d.clone(), DriverState::Killed)]);
    assert!(!fx.iter().any(|e| matches!(e, Effect::KillProcess { .. })));
    assert!(w
        .handle(at(now + 10_000), Event::DriverRelaunchTick { driver_id: d })
        .is_empty());
    assert_eq!(w.cores_used(), 0);
}

#[test]
fn killing_a_running_driver_reports_killed() {
    let mut w = registered(config());
    let d = driver(0);
    w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: d.clone(),
            desc: driver_desc(1, 1, true),
        },
    );
    let fx = w.handle(
        at(T0),
        Event::KillDriver {
            driver_id: d.clone(),
        },
    );
    assert!(fx.contains(&Effect::KillProcess {
        child: ChildId::Driver {
            driver_id: d.clone()
        },
        grace_ms: 10_000,
    }));
    let fx = w.handle(
        at(T0),
        Event::DriverExited {
            driver_id: d.clone(),
            status: ExitStatus::Signaled {
                signal: 15,
                core_dumped: false,
            },
        },
    );
    // Supervised, but killed: not relaunched.
    assert!(relaunch_delay(&fx).is_none());
    assert_eq!(driver_reports(&fx), [(d, DriverState::Killed)]);
}

// ----- decommission and shutdown -----

#[test]
fn decommission_refuses_launches_and_tells_the_master_when_signalled() {
    let mut w = registered(config());
    let fx = w.handle(
        at(T0),
        Event::Decommission {
            trigger: DecommissionTrigger::Signal,
        },
    );
    assert!(has_warning(&fx, "decommission feature is disabled"));
    assert!(!w.is_decommissioned());

    let mut c = config();
    c.decommission_enabled = true;
    let mut w = registered(c.clone());
    let fx = w.handle(
        at(T0),
        Event::Decommission {
            trigger: DecommissionTrigger::Signal,
        },
    );
    assert!(fx.contains(&Effect::SendWorkerDecommissioning {
        master_url: M1.into()
    }));
    assert!(w.is_decommissioned());
    assert_eq!(w.status().state, WorkerState::Decommissioned);
    let a = app(0);
    let fx = launch(&mut w, &a, 0, 1, 1);
    assert_eq!(starts(&fx), 0);
    assert!(has_warning(&fx, "while decommissioned"));
    let fx = w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: driver(0),
            desc: driver_desc(1, 1, false),
        },
    );
    assert_eq!(driver_reports(&fx), [(driver(0), DriverState::Error)]);
    assert_eq!(w.cores_used(), 0);

    // From the master: it already knows, nothing is sent.
    let mut w = registered(c);
    let fx = w.handle(
        at(T0),
        Event::Decommission {
            trigger: DecommissionTrigger::Master,
        },
    );
    assert!(!fx
        .iter()
        .any(|e| matches!(e, Effect::SendWorkerDecommissioning { .. })));
    assert!(w.is_decommissioned());
}

#[test]
fn shutdown_kills_every_child_then_exits() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 1, 1);
    launch(&mut w, &a, 1, 1, 1);
    start_exec(&mut w, &a, 1);
    w.handle(
        at(T0),
        Event::LaunchDriver {
            driver_id: driver(0),
            desc: driver_desc(1, 1, false),
        },
    );
    let fx: Vec<Effect> = w
        .handle(at(T0), Event::Shutdown)
        .into_iter()
        .filter(|e| !matches!(e, Effect::Log { .. }))
        .collect();
    assert_eq!(
        fx,
        [
            Effect::KillProcess {
                child: ChildId::Executor {
                    app_id: a.clone(),
                    exec_id: ExecutorId(0)
                },
                grace_ms: 10_000
            },
            Effect::KillProcess {
                child: ChildId::Executor {
                    app_id: a.clone(),
                    exec_id: ExecutorId(1)
                },
                grace_ms: 10_000
            },
            Effect::KillProcess {
                child: ChildId::Driver {
                    driver_id: driver(0)
                },
                grace_ms: 10_000
            },
            Effect::Exit {
                code: 0,
                reason: "Worker shutting down".into()
            },
        ]
    );
    assert!(w.is_stopped());
    assert_eq!(w.status().state, WorkerState::Dead);
    // Nothing more happens: no heartbeats, no reports.
    assert!(w.handle(at(T0), Event::HeartbeatTick).is_empty());
    assert!(exited(&mut w, &a, 0, ExitStatus::Exited(0)).is_empty());
}

#[test]
fn status_snapshot_lists_resources_and_children() {
    let mut w = registered(config());
    let a = app(0);
    launch(&mut w, &a, 0, 2, 1500);
    start_exec(&mut w, &a, 0);
    let s = w.status();
    assert_eq!(s.id, worker_id());
    assert_eq!(s.state, WorkerState::Alive);
    assert!(s.registered && s.connected);
    assert_eq!(s.master_url.as_deref(), Some(M1));
    assert_eq!((s.cores, s.cores_used), (4, 2));
    assert_eq!((s.memory_mb, s.memory_used_mb), (4096, 1500));
    assert_eq!(s.executors.len(), 1);
    assert_eq!(s.executors[0].app_id, a);
    assert_eq!(s.executors[0].state, ExecutorState::Running);
}

// ----- property: random event sequences -----

#[derive(Debug, Clone)]
enum Op {
    Launch {
        app: u32,
        exec: u32,
        cores: u32,
        memory_mb: u64,
        stale: bool,
    },
    Started(u32, u32),
    LaunchFailed(u32, u32),
    Exited(u32, u32, i32),
    Kill(u32, u32, bool),
    AppFinished(u32),
    LaunchDriver {
        id: u32,
        cores: u32,
        memory_mb: u64,
        supervise: bool,
    },
    DriverStarted(u32),
    DriverExited(u32, i32),
    DriverRelaunch(u32),
    KillDriver(u32),
    Registered(bool),
    MasterChanged(bool),
    Disconnect,
    Reconnect,
    RetryTick,
    Heartbeat,
    Cleanup,
    Decommission,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u32, 0..4u32, 0..4u32, 0..3000u64, prop::bool::weighted(0.1)).prop_map(
            |(app, exec, cores, memory_mb, stale)| Op::Launch { app, exec, cores, memory_mb, stale }
        ),
        3 => (0..3u32, 0..4u32).prop_map(|(a, e)| Op::Started(a, e)),
        1 => (0..3u32, 0..4u32).prop_map(|(a, e)| Op::LaunchFailed(a, e)),
        3 => (0..3u32, 0..4u32, -1..3i32).prop_map(|(a, e, c)| Op::Exited(a, e, c)),
        2 => (0..3u32, 0..4u32, prop::bool::weighted(0.2)).prop_map(|(a, e, s)| Op::Kill(a, e, s)),
        1 => (0..3u32).prop_map(Op::AppFinished),
        2 => (0..3u32, 0..3u32, 0..2000u64, any::<bool>()).prop_map(
            |(id, cores, memory_mb, supervise)| Op::LaunchDriver { id, cores, memory_mb, supervise }
        ),
        1 => (0..3u32).prop_map(Op::DriverStarted),
        2 => (0..3u32, 0..2i32).prop_map(|(d, c)| Op::DriverExited(d, c)),
        1 => (0..3u32).prop_map(Op::DriverRelaunch),
        1 => (0..3u32).prop_map(Op::KillDriver),
        1 => any::<bool>().prop_map(Op::Registered),
        1 => any::<bool>().prop_map(Op::MasterChanged),
        1 => Just(Op::Disconnect),
        1 => Just(Op::Reconnect),
        1 => Just(Op::RetryTick),
        1 => Just(Op::Heartbeat),
        1 => Just(Op::Cleanup),
        1 => Just(Op::Decommission),
    ]
}

fn master_of(second: bool) -> &'static str {
    if second {
        M2
    } else {
        M1
    }
}

fn status_of(code: i32) -> ExitStatus {
    if code < 0 {
        ExitStatus::Signaled {
            signal: 9,
            core_dumped: false,
        }
    } else {
        ExitStatus::Exited(code)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_event_sequences_keep_the_books_straight(ops in prop::collection::vec(op(), 1..120)) {
        let mut c = config();
        c.decommission_enabled = true;
        let (mut w, fx) = started(c);
        let mut generation = retry_timer(&fx).map(|t| t.1).unwrap_or(0);
        // Executors whose RUNNING (or final) state was reported, by key.
        let mut reported: BTreeMap<(AppId, ExecutorId), ExecutorState> = BTreeMap::new();
        let mut now = T0;
        for op in ops {
            now += 1000;
            let event = match op {
                Op::Launch { app: a, exec, cores, memory_mb, stale } => {
                    let current = w.master_url().unwrap_or(M1).to_owned();
                    let url = if stale { "flint://old:7077".to_owned() } else { current };
                    launch_from(&url, &app(a), exec, cores, memory_mb)
                }
                Op::Started(a, e) => Event::ExecutorStarted { app_id: app(a), exec_id: ExecutorId(e) },
                Op::LaunchFailed(a, e) => Event::ExecutorLaunchFailed {
                    app_id: app(a), exec_id: ExecutorId(e), message: "boom".into(),
                },
                Op::Exited(a, e, code) => Event::ExecutorExited {
                    app_id: app(a), exec_id: ExecutorId(e), status: status_of(code),
                },
                Op::Kill(a, e, stale) => Event::KillExecutor {
                    master_url: if stale { "flint://old:7077".into() } else { w.master_url().unwrap_or(M1).into() },
                    app_id: app(a),
                    exec_id: ExecutorId(e),
                },
                Op::AppFinished(a) => Event::ApplicationFinished { app_id: app(a) },
                Op::LaunchDriver { id, cores, memory_mb, supervise } => Event::LaunchDriver {
                    driver_id: driver(id), desc: driver_desc(cores, memory_mb, supervise),
                },
                Op::DriverStarted(d) => Event::DriverStarted { driver_id: driver(d) },
                Op::DriverExited(d, code) => Event::DriverExited { driver_id: driver(d), status: status_of(code) },
                Op::DriverRelaunch(d) => Event::DriverRelaunchTick { driver_id: driver(d) },
                Op::KillDriver(d) => Event::KillDriver { driver_id: driver(d) },
                Op::Registered(second) => registered_event(master_of(second)),
                Op::MasterChanged(second) => Event::MasterChanged {
                    master_url: master_of(second).into(),
                    master_web_ui_url: M1_UI.into(),
                },
                Op::Disconnect => Event::MasterDisconnected {
                    address: w.master_url().unwrap_or(M1).into(),
                },
                Op::Reconnect => Event::ReconnectWorker { master_url: M1.into() },
                Op::RetryTick => Event::RegistrationRetryTick { generation },
                Op::Heartbeat => Event::HeartbeatTick,
                Op::Cleanup => Event::CleanupTick,
                Op::Decommission => Event::Decommission { trigger: DecommissionTrigger::Signal },
            };
            let before = w.status();
            let fx = w.handle(at(now), event);
            if let Some(t) = retry_timer(&fx) {
                generation = t.1;
            }
            for (_, r) in reports(&fx) {
                reported.insert((r.app_id, r.exec_id), r.state);
            }
            prop_assert!(w.check_invariants().is_ok(), "{:?}", w.check_invariants());
            let s = w.status();
            prop_assert!(s.cores_used <= s.cores && s.memory_used_mb <= s.memory_mb);
            // Every running executor was reported RUNNING to a master.
            for e in &s.executors {
                if e.state == ExecutorState::Running {
                    prop_assert_eq!(
                        reported.get(&(e.app_id.clone(), e.exec_id)),
                        Some(&ExecutorState::Running),
                        "{}/{} runs unreported", e.app_id, e.exec_id
                    );
                }
            }
            // Every executor that finished in this step had its final state
            // reported.
            for e in &before.executors {
                if !s.executors.iter().any(|x| x.app_id == e.app_id && x.exec_id == e.exec_id)
                    && !w.is_stopped()
                {
                    let last = reported.get(&(e.app_id.clone(), e.exec_id)).copied();
                    prop_assert!(last.is_some_and(ExecutorState::is_finished),
                        "{}/{} finished unreported: {:?}", e.app_id, e.exec_id, last);
                }
            }
            // A state sent to a master lists exactly what runs.
            for effect in &fx {
                if let Effect::SendWorkerLatestState { executors, .. }
                | Effect::SendWorkerSchedulerState { executors, .. } = effect
                {
                    let listed: Vec<_> = executors.iter().map(|d| (d.app_id.clone(), d.exec_id, d.state)).collect();
                    let running: Vec<_> = s.executors.iter().map(|e| (e.app_id.clone(), e.exec_id, e.state)).collect();
                    prop_assert_eq!(listed, running);
                }
            }
            if w.is_stopped() {
                break;
            }
        }
        // Shutting down kills every child that is left.
        if !w.is_stopped() {
            let live = w.status().executors.len();
            let fx = w.handle(at(now), Event::Shutdown);
            let kills = fx.iter().filter(|e| matches!(e, Effect::KillProcess { child: ChildId::Executor { .. }, .. })).count();
            prop_assert_eq!(kills, live);
            let exits_cleanly = matches!(fx.last(), Some(Effect::Exit { code: 0, .. }));
            prop_assert!(exits_cleanly);
        }
    }
}

// ----- time: deadlines are monotonic -----

/// A supervised driver that fails after runs of `runs_ms` (monotonic);
/// `wall(mono)` gives the wall clock. Returns the relaunch delays.
fn driver_backoffs(runs_ms: &[u64], wall: impl Fn(u64) -> u64) -> Vec<u64> {
    let mut w = registered(config());
    let d = driver(0);
    let now = |mono: u64| Now::new(mono, wall(mono));
    w.handle(
        now(T0),
        Event::LaunchDriver {
            driver_id: d.clone(),
            desc: driver_desc(1, 100, true),
        },
    );
    let mut mono = T0;
    let mut delays = Vec::new();
    for run_ms in runs_ms {
        w.handle(
            now(mono),
            Event::DriverStarted {
                driver_id: d.clone(),
            },
        );
        mono += run_ms;
        let fx = w.handle(
            now(mono),
            Event::DriverExited {
                driver_id: d.clone(),
                status: ExitStatus::Exited(1),
            },
        );
        let delay = relaunch_delay(&fx).unwrap();
        delays.push(delay);
        mono += delay;
        w.handle(
            now(mono),
            Event::DriverRelaunchTick {
                driver_id: d.clone(),
            },
        );
    }
    delays
}

#[test]
fn wall_clock_jumps_do_not_change_a_supervised_drivers_back_off() {
    // Short runs double the back-off; a run over 5 s resets it.
    let runs = [100, 100, 6_000, 100, 100];
    let baseline = driver_backoffs(&runs, |mono| mono);
    assert_eq!(baseline, [1000, 2000, 1000, 2000, 4000]);
    const TWO_HOURS: u64 = 2 * 3600 * 1000;
    // The wall clock jumps by two hours, either way, during the long run
    // (T0 + 3.2 s to T0 + 9.2 s) or during the short one after it (T0 +
    // 10.2 s to T0 + 10.3 s).
    for jump_at in [T0 + 5_000, T0 + 10_250] {
        let forward = driver_backoffs(&runs, |mono| {
            if mono >= jump_at {
                mono + TWO_HOURS
            } else {
                mono
            }
        });
        assert_eq!(forward, baseline, "wall clock +2 h at {jump_at}");
        let back = driver_backoffs(&runs, |mono| {
            if mono >= jump_at {
                mono - TWO_HOURS
            } else {
                mono
            }
        });
        assert_eq!(back, baseline, "wall clock -2 h at {jump_at}");
    }
}

// ----- masters refusing this worker's credentials -----

const REFUSED: &str = "handshake with flint://m1:7077 failed: refused by peer: authentication \
                       failed (wrong secret?)";
const NO_SECRET: &str = "handshake with flint://m2:7077 failed: the peer requires \
                         authentication; set auth.secret (or auth.secret_file, \
                         FLINT_AUTH_SECRET) to the cluster secret";

fn errors(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Log {
                level: LogLevel::Error,
                message,
            } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn refused(master: &str, detail: &str) -> Event {
    Event::MasterRefusedAuth {
        master_url: master.into(),
        refusal: AuthRefusal::classify(detail).expect("an auth refusal"),
        detail: detail.into(),
    }
}

#[test]
fn rpc_reasons_are_classified_as_auth_refusals_or_not() {
    assert_eq!(
        AuthRefusal::classify(REFUSED),
        Some(AuthRefusal::WrongSecret)
    );
    assert_eq!(
        AuthRefusal::classify(
            "handshake with flint://m:1 failed: authentication failed: the peer's proof does \
             not match (wrong secret)"
        ),
        Some(AuthRefusal::WrongSecret)
    );
    assert_eq!(
        AuthRefusal::classify(NO_SECRET),
        Some(AuthRefusal::NoSecret)
    );
    assert_eq!(
        AuthRefusal::classify(
            "handshake with flint://m:1 failed: refused by peer: authentication required: this \
             node has auth.secret set and the peer has none"
        ),
        Some(AuthRefusal::NoSecret)
    );
    assert_eq!(
        AuthRefusal::classify(
            "handshake with flint://m:1 failed: the peer does not authenticate, but auth.secret \
             is set here; refusing an unauthenticated connection"
        ),
        Some(AuthRefusal::MasterUnauthenticated)
    );
    for other in [
        "cannot connect to flint://m:1: Connection refused (os error 111)",
        "connecting to flint://m:1 took over 5s; this timeout is controlled by rpc.connect_timeout",
        "handshake with flint://m:1 failed: protocol version mismatch: peer speaks v2, this \
         node speaks v1",
    ] {
        assert_eq!(AuthRefusal::classify(other), None, "{other}");
    }
}

#[test]
fn a_refused_secret_is_logged_clearly_once_per_master_rate_limited() {
    let (mut w, _) = started(config());
    let fx = w.handle(at(T0 + 10), refused(M1, REFUSED));
    let e = errors(&fx);
    assert_eq!(e.len(), 1, "{fx:?}");
    assert!(
        e[0].starts_with("master flint://m1:7077 refused this worker's secret: "),
        "{}",
        e[0]
    );
    assert!(e[0].contains(REFUSED), "{}", e[0]);
    assert!(
        e[0].contains("copy the master's secret file (~/.flint/secret by default) here")
            && e[0].contains("auth.secret_file / FLINT_AUTH_SECRET_FILE"),
        "{}",
        e[0]
    );
    // Every retry fails the same way: quiet until the interval passed (on
    // the monotonic clock, whatever the wall clock does).
    for k in 1..30 {
        let mono = T0 + 10 + k * 10_000;
        let fx = w.handle(Now::new(mono, mono + 7_200_000), refused(M1, REFUSED));
        assert!(errors(&fx).is_empty(), "logged again after {k} retries");
    }
    let fx = w.handle(
        Now::new(T0 + 10 + AUTH_REFUSAL_LOG_INTERVAL_MS, 0),
        refused(M1, REFUSED),
    );
    assert_eq!(errors(&fx).len(), 1, "not logged again after the interval");
    // Another master is logged on its own; so is a different refusal.
    let fx = w.handle(at(T0 + 20), refused(M2, NO_SECRET));
    let e = errors(&fx);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("master flint://m2:7077 requires a secret and this worker has none"),
        "{}",
        e[0]
    );
    // A peer that is not one of this worker's masters is not a master.
    let fx = w.handle(at(T0 + 30), refused("flint://elsewhere:1", REFUSED));
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn giving_up_after_refused_secrets_says_so_instead_of_unresponsive_masters() {
    let mut c = config();
    c.max_registration_retries = 2;
    let (mut w, fx) = started(c);
    let (mut delay, mut generation) = retry_timer(&fx).unwrap();
    let mut now = T0;
    let reason = loop {
        w.handle(at(now + 1), refused(M1, REFUSED));
        now += delay;
        let fx = w.handle(at(now), Event::RegistrationRetryTick { generation });
        if let Some((code, reason)) = exit_of(&fx) {
            assert_eq!(code, 1);
            break reason;
        }
        (delay, generation) = retry_timer(&fx).unwrap();
    };
    assert!(!reason.contains("unresponsive"), "{reason}");
    assert!(
        reason.contains("master flint://m1:7077 refused this worker's secret")
            && reason.contains("~/.flint/secret")
            && reason.contains("worker.max_registration_retries"),
        "{reason}"
    );
    // M2 never answered and never refused: named as silent.
    assert!(
        reason.ends_with("; no answer from flint://m2:7077"),
        "{reason}"
    );

    // Without refusals the message is Spark's.
    let mut c = config();
    c.max_registration_retries = 2;
    let (_, (_, _, reason)) = run_retry_schedule(c);
    assert!(
        reason.starts_with("All masters are unresponsive!"),
        "{reason}"
    );
}

#[test]
fn a_successful_registration_forgets_earlier_refusals() {
    let (mut w, _) = started(config());
    assert_eq!(errors(&w.handle(at(T0 + 1), refused(M1, REFUSED))).len(), 1);
    w.handle(at(T0 + 2), registered_event(M1));
    // Refused again later (the master changed its secret): logged at once.
    assert_eq!(errors(&w.handle(at(T0 + 3), refused(M1, REFUSED))).len(), 1);
}
