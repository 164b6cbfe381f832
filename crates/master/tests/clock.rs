//! Time in the master's decisions: deadlines run on the monotonic clock, so
//! wall-clock jumps change nothing, and the shell's tick schedule declares a
//! silent worker DEAD within 1.25 × `worker.timeout`. Pure: the state
//! machine is driven with hand-made [`Now`]s, no sockets, no sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use flint_master::service::{settings, timeout_check_interval};
use flint_master::state::{Effect, Event, MasterConfig, MasterState, Now};
use flint_proto::{AppId, ExecutorId, ExecutorState, WorkerState};

const TWO_HOURS_MS: i64 = 2 * 3600 * 1000;

/// What one simulated run did: every effect with the monotonic time of the
/// event that produced it, and the final state.
struct Run {
    effects: Vec<(u64, Effect)>,
    master: MasterState,
    app: AppId,
}

impl Run {
    fn removed_workers(&self) -> Vec<(u64, String)> {
        let mut ids: Vec<(u64, String)> = self
            .effects
            .iter()
            .filter_map(|(t, e)| match e {
                Effect::UnpersistWorker(id) => Some((*t, id.to_string())),
                _ => None,
            })
            .collect();
        ids.dedup();
        ids
    }

    fn lost_executors(&self) -> Vec<ExecutorId> {
        self.effects
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::ExecutorUpdated {
                    exec_id,
                    state: ExecutorState::Lost,
                    ..
                } => Some(*exec_id),
                _ => None,
            })
            .collect()
    }
}

/// Three workers and an app with one executor on each, for six minutes of
/// monotonic time: a tick every check interval, heartbeats every
/// `worker.timeout / 4`, worker 3 silent after 100 s, an executor failing
/// at 90 s (after a stable run, so it must not fail the app), relaunched
/// executors reported RUNNING a second later. `wall_offset(mono)` is added
/// to the wall clock: a jump is a step in it.
fn simulate(wall_offset: impl Fn(u64) -> i64) -> Run {
    // One failure without a stable executor would fail the app: a wall
    // clock that made the stable executors look fresh would show.
    let config = MasterConfig {
        max_executor_retries: 1,
        ..MasterConfig::default()
    };
    let tick = u64::try_from(timeout_check_interval(&config).as_millis()).unwrap();
    let heartbeat = config.heartbeat_interval_ms;
    let now = |mono: u64| {
        let wall = i64::try_from(T0 + mono).unwrap() + wall_offset(mono);
        Now::new(mono, u64::try_from(wall).unwrap())
    };
    let mut m = MasterState::new("flint://127.0.0.1:7077", config);
    let mut effects = Vec::new();
    let record = |t: u64, fx: Vec<Effect>, effects: &mut Vec<(u64, Effect)>| {
        effects.extend(fx.iter().cloned().map(|e| (t, e)));
        fx
    };
    let fx = m.handle(
        now(0),
        Event::ElectedLeader {
            stored: Default::default(),
        },
    );
    record(0, fx, &mut effects);
    for n in 1..=3 {
        let fx = m.handle(now(1_000), Event::RegisterWorker(reg(n, 4, 8192)));
        record(1_000, fx, &mut effects);
    }
    let fx = m.handle(
        now(2_000),
        Event::RegisterApplication {
            desc: desc("steady", Some(6), Some(2), 1024),
            driver_address: "flint://AppClient@driver:1".into(),
        },
    );
    let fx = record(2_000, fx, &mut effects);
    let app = fx
        .iter()
        .find_map(|e| match e {
            Effect::RegisteredApplication { app_id } => Some(app_id.clone()),
            _ => None,
        })
        .expect("registered");
    // Executors launched and not yet reported RUNNING, by report time.
    let mut to_report: BTreeMap<u64, Vec<ExecutorId>> = BTreeMap::new();
    to_report.insert(3_000, launches(&fx).iter().map(|l| l.2).collect());
    let first_on_w1 = launches(&fx)
        .iter()
        .find(|l| l.0 == worker_id(1))
        .map(|l| l.2)
        .expect("an executor on worker 1");

    let mut mono = 2_250;
    while mono <= 6 * 60_000 {
        let mut fx = Vec::new();
        if mono % heartbeat == 7_250 % heartbeat {
            for n in 1..=3u8 {
                if n == 3 && mono > 100_000 {
                    continue;
                }
                fx.extend(m.handle(
                    now(mono),
                    Event::Heartbeat {
                        worker_id: worker_id(n),
                    },
                ));
            }
        }
        if let Some(execs) = to_report.remove(&mono) {
            for exec_id in execs {
                fx.extend(m.handle(
                    now(mono),
                    Event::ExecutorStateChanged {
                        app_id: app.clone(),
                        exec_id,
                        state: ExecutorState::Running,
                        message: None,
                        exit_status: None,
                    },
                ));
            }
        }
        if mono == 90_000 {
            fx.extend(m.handle(
                now(mono),
                Event::ExecutorStateChanged {
                    app_id: app.clone(),
                    exec_id: first_on_w1,
                    state: ExecutorState::Exited,
                    message: Some("exit 1".into()),
                    exit_status: Some(1),
                },
            ));
        }
        if mono % tick == 0 {
            fx.extend(m.handle(now(mono), Event::Tick));
        }
        let relaunched: Vec<ExecutorId> = launches(&fx).iter().map(|l| l.2).collect();
        if !relaunched.is_empty() {
            to_report
                .entry(mono + 1_000)
                .or_default()
                .extend(relaunched);
        }
        record(mono, fx, &mut effects);
        mono += 250;
    }
    assert_ok(&m);
    Run {
        effects,
        master: m,
        app,
    }
}

#[test]
fn wall_clock_jumps_of_two_hours_change_no_decision() {
    let baseline = simulate(|_| 0);

    // The baseline itself: only the silent worker 3 is removed, about a
    // timeout after its last heartbeat (97.25 s), and only its executor is
    // lost; the app survives the executor failure at 90 s.
    let removed = baseline.removed_workers();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].1, worker_id(3).to_string());
    assert!(
        removed[0].0 > 97_250 + 60_000 && removed[0].0 <= 97_250 + 75_000,
        "{removed:?}"
    );
    assert_eq!(baseline.lost_executors().len(), 1);
    assert!(baseline.master.is_active_app(&baseline.app));
    let status = baseline.master.status(Now::default());
    for n in 1..=2 {
        let w = status
            .workers
            .iter()
            .find(|w| w.id == worker_id(n))
            .unwrap();
        assert_eq!(w.state, WorkerState::Alive);
    }

    for (name, jump) in [("+2 h", TWO_HOURS_MS), ("-2 h", -TWO_HOURS_MS)] {
        // The wall clock jumps at 60 s, between heartbeats and ticks, and
        // again (back to normal) at 200 s, after worker 3 was removed.
        for jumps in [vec![(60_000, jump)], vec![(60_000, jump), (200_000, -jump)]] {
            let run = simulate(|mono| {
                jumps
                    .iter()
                    .filter(|(at, _)| mono >= *at)
                    .map(|(_, by)| by)
                    .sum()
            });
            assert_eq!(run.app, baseline.app);
            assert_eq!(
                run.effects.len(),
                baseline.effects.len(),
                "wall clock {name} ({jumps:?}) changed the number of effects"
            );
            for (got, want) in run.effects.iter().zip(&baseline.effects) {
                assert_eq!(
                    got, want,
                    "wall clock {name} ({jumps:?}) changed a decision"
                );
            }
            assert!(run.master.is_active_app(&run.app));
        }
    }
}

#[test]
fn displayed_heartbeat_times_are_wall_clock_times() {
    let mut m = master();
    add_worker(&mut m, T0, 1, 4, 4096);
    // Monotonic 5 s later, but the wall clock went back two hours.
    let back = T0 - 2 * 3600 * 1000 + 5_000;
    m.handle(
        Now::new(T0 + 5_000, back),
        Event::Heartbeat {
            worker_id: worker_id(1),
        },
    );
    let w = &m.status(Now::new(T0 + 5_000, back)).workers[0];
    assert_eq!(w.last_heartbeat_ms, back);
    assert_eq!(w.state, WorkerState::Alive);
}

#[test]
fn app_and_driver_ids_come_from_the_wall_clock() {
    let mut m = master();
    // Monotonic time is tiny; the id names the wall-clock time.
    let (app, _) = {
        let fx = m.handle(
            Now::new(5, T0),
            Event::RegisterApplication {
                desc: desc("named", Some(1), None, 128),
                driver_address: "flint://AppClient@d:1".into(),
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
    };
    assert_eq!(app.as_str(), "app-20261122035500-0000");
}

/// The monotonic times of the shell's ticks: the first at once (as
/// `tokio::time::interval`), then every [`timeout_check_interval`].
fn ticks(config: &MasterConfig, until: u64) -> impl Iterator<Item = u64> {
    let every = u64::try_from(timeout_check_interval(config).as_millis()).unwrap();
    assert!(every > 0);
    (0..)
        .map(move |k| k * every)
        .take_while(move |t| *t <= until)
}

#[test]
fn a_silent_worker_is_dead_within_a_quarter_past_its_timeout() {
    for timeout in [60_000, 10_000, 3_000, 1_000, 400, 50] {
        let config = MasterConfig::new(timeout);
        let interval = u64::try_from(timeout_check_interval(&config).as_millis()).unwrap();
        assert!(
            interval <= timeout / 4,
            "ticks every {interval} ms for a {timeout} ms timeout"
        );
        // The last heartbeat at every phase of the tick schedule: on a
        // tick, just after one, just before the next, and between.
        let mut phases = vec![0, 1, interval / 2, interval - 1];
        phases.extend((1..7).map(|k| k * interval / 7));
        for phase in phases {
            let mut m = MasterState::new("flint://127.0.0.1:7077", config.clone());
            m.handle(
                Now::new(0, T0),
                Event::ElectedLeader {
                    stored: Default::default(),
                },
            );
            // Heartbeats every heartbeat interval, the last one at `last`
            // (a tick plus `phase`), a few heartbeats after registering.
            let every = config.heartbeat_interval_ms.max(1);
            let registered = 3 * interval + 1;
            let last = 11 * interval * every.div_ceil(interval) + phase;
            let mut heartbeats: Vec<u64> = (0..)
                .map_while(|k| last.checked_sub(k * every))
                .take_while(|h| *h > registered)
                .collect();
            heartbeats.reverse();
            let mut heartbeats = heartbeats.into_iter().peekable();
            let mut registered_yet = false;
            let mut dead_at = None;
            for t in ticks(&config, last + 3 * timeout) {
                // Everything up to this tick happens before it.
                if !registered_yet && registered <= t {
                    m.handle(
                        Now::new(registered, T0 + registered),
                        Event::RegisterWorker(reg(1, 1, 1)),
                    );
                    registered_yet = true;
                }
                while let Some(h) = heartbeats.next_if(|h| *h <= t) {
                    m.handle(
                        Now::new(h, T0 + h),
                        Event::Heartbeat {
                            worker_id: worker_id(1),
                        },
                    );
                }
                m.handle(Now::new(t, T0 + t), Event::Tick);
                if m.worker_state(&worker_id(1)) == Some(WorkerState::Dead) {
                    dead_at = Some(t);
                    break;
                }
            }
            assert!(
                heartbeats.next().is_none(),
                "DEAD before its last heartbeat"
            );
            let dead_at = dead_at.unwrap_or_else(|| {
                panic!("timeout {timeout} ms, phase {phase}: never declared DEAD")
            });
            let silent = dead_at - last;
            assert!(
                silent > timeout,
                "timeout {timeout} ms: DEAD after only {silent} ms of silence"
            );
            assert!(
                silent * 4 <= timeout * 5,
                "timeout {timeout} ms, phase {phase}: DEAD {silent} ms after the last heartbeat \
                 (over 1.25 × timeout)"
            );
        }
    }
}

#[test]
fn the_tick_interval_is_a_quarter_of_the_worker_timeout_at_most_the_tick_cap() {
    let conf = flint_conf::Conf::new().set("worker.timeout", "200ms");
    let config = settings::master_config(&conf).unwrap();
    assert_eq!(timeout_check_interval(&config), Duration::from_millis(50));
    // Ticks also end back-offs: at least every MAX_TICK_INTERVAL_MS.
    let conf = flint_conf::Conf::new().set("worker.timeout", "8s");
    let config = settings::master_config(&conf).unwrap();
    assert_eq!(
        timeout_check_interval(&config),
        Duration::from_millis(flint_master::state::MAX_TICK_INTERVAL_MS)
    );
    assert_eq!(
        timeout_check_interval(&MasterConfig::default()),
        Duration::from_millis(flint_master::state::MAX_TICK_INTERVAL_MS)
    );
    // Bounded below: a 1 ms timeout does not tick every 0 ms.
    assert_eq!(
        timeout_check_interval(&MasterConfig::new(1)),
        Duration::from_millis(flint_master::state::MIN_TIMEOUT_CHECK_INTERVAL_MS)
    );
}
