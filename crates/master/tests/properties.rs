//! Property tests: invariants hold across random event sequences.

mod common;

use std::collections::BTreeMap;

use common::*;
use flint_master::state::{
    AppRecord, Effect, Event, MasterConfig, MasterState, StoredState, WorkerSelectionPolicy,
};
use flint_proto::{
    AppId, DriverDescription, DriverId, DriverState, ExecutorCommand, ExecutorDescription,
    ExecutorId, ExecutorState, WorkerState,
};
use proptest::prelude::*;

const WORKERS: u8 = 5;
const APPS: u8 = 4;

#[derive(Debug, Clone)]
enum Op {
    RegisterWorker {
        w: u8,
        cores: u32,
        mem: u64,
    },
    Heartbeat {
        w: u8,
    },
    Advance {
        ms: u64,
    },
    Tick,
    WorkerDisconnected {
        w: u8,
    },
    Decommission {
        w: u8,
    },
    LatestState {
        w: u8,
        pick: usize,
    },
    SchedulerState {
        w: u8,
        pick: usize,
        cores: u32,
    },
    CompleteRecovery,
    RegisterApp {
        a: u8,
        max: Option<u32>,
        per: Option<u32>,
        mem: u64,
        limit: Option<u32>,
    },
    Unregister {
        a: u8,
    },
    KillApp {
        a: u8,
    },
    AppDisconnected {
        a: u8,
    },
    Ack {
        a: u8,
    },
    ExecState {
        pick: usize,
        state: ExecutorState,
        exit: Option<i32>,
    },
    RequestExecutors {
        a: u8,
        total: u32,
    },
    KillExecutors {
        a: u8,
        pick: usize,
    },
    SubmitDriver {
        cores: u32,
        mem: u64,
        supervise: bool,
    },
    DriverDone {
        pick: usize,
        state: DriverState,
    },
    KillDriver {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WORKERS;
    let a = 0..APPS;
    prop_oneof![
        3 => (w.clone(), 0u32..9, 0u64..5).prop_map(|(w, cores, mem)| Op::RegisterWorker { w, cores, mem: mem * 1024 }),
        4 => w.clone().prop_map(|w| Op::Heartbeat { w }),
        3 => (0u64..40_000).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Tick),
        1 => w.clone().prop_map(|w| Op::WorkerDisconnected { w }),
        1 => w.clone().prop_map(|w| Op::Decommission { w }),
        1 => (w.clone(), any::<usize>()).prop_map(|(w, pick)| Op::LatestState { w, pick }),
        1 => (w.clone(), any::<usize>(), 0u32..4).prop_map(|(w, pick, cores)| Op::SchedulerState { w, pick, cores }),
        1 => Just(Op::CompleteRecovery),
        3 => (a.clone(), proptest::option::of(0u32..12), proptest::option::of(1u32..5), 0u64..3, proptest::option::of(0u32..4))
            .prop_map(|(a, max, per, mem, limit)| Op::RegisterApp { a, max, per, mem: mem * 512, limit }),
        1 => a.clone().prop_map(|a| Op::Unregister { a }),
        1 => a.clone().prop_map(|a| Op::KillApp { a }),
        1 => a.clone().prop_map(|a| Op::AppDisconnected { a }),
        1 => a.clone().prop_map(|a| Op::Ack { a }),
        6 => (any::<usize>(), prop::sample::select(ExecutorState::ALL.to_vec()), proptest::option::of(-1i32..2))
            .prop_map(|(pick, state, exit)| Op::ExecState { pick, state, exit }),
        1 => (a.clone(), 0u32..5).prop_map(|(a, total)| Op::RequestExecutors { a, total }),
        1 => (a, any::<usize>()).prop_map(|(a, pick)| Op::KillExecutors { a, pick }),
        1 => (0u32..3, 0u64..3, any::<bool>()).prop_map(|(cores, mem, supervise)| Op::SubmitDriver { cores, mem: mem * 512, supervise }),
        1 => (any::<usize>(), prop::sample::select(DriverState::ALL.to_vec())).prop_map(|(pick, state)| Op::DriverDone { pick, state }),
        1 => any::<usize>().prop_map(|pick| Op::KillDriver { pick }),
    ]
}

fn config() -> impl Strategy<Value = MasterConfig> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![
            WorkerSelectionPolicy::CoresFreeAsc,
            WorkerSelectionPolicy::CoresFreeDesc,
            WorkerSelectionPolicy::MemoryFreeAsc,
            WorkerSelectionPolicy::MemoryFreeDesc,
            WorkerSelectionPolicy::WorkerId,
        ]),
        -1i32..4,
        0usize..4,
    )
        .prop_map(
            |(spread, spread_drivers, policy, retries, retained)| MasterConfig {
                spread_out_apps: spread,
                spread_out_drivers: spread_drivers,
                worker_selection_policy: policy,
                max_executor_retries: retries,
                retained_applications: retained,
                retained_drivers: retained,
                max_drivers: 2,
                ..MasterConfig::default()
            },
        )
}

fn app_desc(
    slot: u8,
    max: Option<u32>,
    per: Option<u32>,
    mem: u64,
    limit: Option<u32>,
) -> flint_proto::ApplicationDescription {
    let mut d = desc(&format!("app{slot}"), max, per, mem);
    d.initial_executor_limit = limit;
    d
}

fn stored_state() -> StoredState {
    StoredState {
        apps: (0..2)
            .map(|slot| AppRecord {
                id: AppId::generate(T0 - 1000, u32::from(slot)),
                desc: app_desc(slot, Some(4), Some(1), 512, None),
                submit_ms: T0 - 1000,
                driver_address: format!("flint://AppClient@driver-app{slot}:1").into(),
            })
            .collect(),
        drivers: vec![],
        workers: (0..3).map(|n| reg(n, 4, 4096)).collect(),
    }
}

/// What the test remembers between steps.
struct World {
    m: MasterState,
    now: u64,
    apps: BTreeMap<u8, AppId>,
    max_cores: BTreeMap<AppId, Option<u32>>,
}

impl World {
    fn executors(&self) -> Vec<(AppId, ExecutorId)> {
        let s = self.m.status(at(self.now));
        s.active_apps
            .iter()
            .chain(&s.completed_apps)
            .flat_map(|a| a.executors.iter().map(move |e| (a.id.clone(), e.id)))
            .collect()
    }

    fn drivers(&self) -> Vec<DriverId> {
        let s = self.m.status(at(self.now));
        s.active_drivers.iter().map(|d| d.id.clone()).collect()
    }

    fn app(&self, slot: u8) -> AppId {
        self.apps
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| AppId::generate(T0, 9000 + u32::from(slot)))
    }

    /// Translates an op to an event; `true` when the event is an ask.
    fn event(&mut self, op: &Op) -> (Event, bool) {
        match op.clone() {
            Op::RegisterWorker { w, cores, mem } => {
                (Event::RegisterWorker(reg(w, cores, mem)), false)
            }
            Op::Heartbeat { w } => (
                Event::Heartbeat {
                    worker_id: worker_id(w),
                },
                false,
            ),
            Op::Advance { ms } => {
                self.now += ms;
                (Event::Tick, false)
            }
            Op::Tick => (Event::Tick, false),
            Op::WorkerDisconnected { w } => (
                Event::WorkerDisconnected {
                    worker_id: worker_id(w),
                },
                false,
            ),
            Op::Decommission { w } => (
                Event::WorkerDecommissioning {
                    worker_id: worker_id(w),
                },
                false,
            ),
            Op::LatestState { w, pick } => {
                let execs = self.executors();
                let mut reported = Vec::new();
                if !execs.is_empty() {
                    let (app_id, exec_id) = execs[pick % execs.len()].clone();
                    reported.push(ExecutorDescription {
                        app_id,
                        exec_id,
                        cores: 1,
                        memory_mb: 1,
                        state: ExecutorState::Running,
                    });
                }
                reported.push(ExecutorDescription {
                    app_id: AppId::generate(T0, 7777),
                    exec_id: ExecutorId(0),
                    cores: 1,
                    memory_mb: 1,
                    state: ExecutorState::Running,
                });
                (
                    Event::WorkerLatestState {
                        worker_id: worker_id(w),
                        executors: reported,
                        driver_ids: self.drivers(),
                    },
                    false,
                )
            }
            Op::SchedulerState { w, pick, cores } => {
                let slot = u8::try_from(pick % 2).unwrap_or(0);
                let app_id = AppId::generate(T0 - 1000, u32::from(slot));
                let exec = ExecutorDescription {
                    app_id,
                    exec_id: ExecutorId(u32::try_from(pick % 7).unwrap_or(0)),
                    cores,
                    memory_mb: 512,
                    state: ExecutorState::Running,
                };
                (
                    Event::WorkerSchedulerState {
                        worker_id: worker_id(w),
                        executors: vec![exec],
                        driver_ids: self.drivers(),
                    },
                    false,
                )
            }
            Op::CompleteRecovery => (Event::CompleteRecovery, false),
            Op::RegisterApp {
                a,
                max,
                per,
                mem,
                limit,
            } => (
                Event::RegisterApplication {
                    desc: app_desc(a, max, per, mem, limit),
                    driver_address: format!("flint://AppClient@driver-app{a}:1").into(),
                },
                false,
            ),
            Op::Unregister { a } => (
                Event::UnregisterApplication {
                    app_id: self.app(a),
                    final_state: None,
                },
                false,
            ),
            Op::KillApp { a } => (
                Event::KillApplication {
                    app_id: self.app(a),
                },
                true,
            ),
            Op::AppDisconnected { a } => (
                Event::AppDisconnected {
                    app_id: self.app(a),
                },
                false,
            ),
            Op::Ack { a } => (
                Event::MasterChangeAcknowledged {
                    app_id: AppId::generate(T0 - 1000, u32::from(a % 2)),
                },
                false,
            ),
            Op::ExecState { pick, state, exit } => {
                let execs = self.executors();
                let (app_id, exec_id) = if execs.is_empty() {
                    (self.app(0), ExecutorId(0))
                } else {
                    execs[pick % execs.len()].clone()
                };
                (
                    Event::ExecutorStateChanged {
                        app_id,
                        exec_id,
                        state,
                        message: None,
                        exit_status: exit,
                    },
                    true,
                )
            }
            Op::RequestExecutors { a, total } => (
                Event::RequestExecutors {
                    app_id: self.app(a),
                    total,
                },
                true,
            ),
            Op::KillExecutors { a, pick } => {
                let app_id = self.app(a);
                let ids: Vec<ExecutorId> = self
                    .executors()
                    .into_iter()
                    .filter(|(x, _)| *x == app_id)
                    .map(|(_, e)| e)
                    .collect();
                let exec_ids = if ids.is_empty() {
                    vec![ExecutorId(3)]
                } else {
                    vec![ids[pick % ids.len()]]
                };
                (Event::KillExecutors { app_id, exec_ids }, true)
            }
            Op::SubmitDriver {
                cores,
                mem,
                supervise,
            } => {
                let mut d =
                    DriverDescription::new("flint://h:1/app", ExecutorCommand::new("/bin/app"));
                d.cores = cores;
                d.memory_mb = mem;
                d.supervise = supervise;
                (Event::SubmitDriver { desc: d }, true)
            }
            Op::DriverDone { pick, state } => {
                let ds = self.drivers();
                let driver_id = if ds.is_empty() {
                    "driver-none".parse().unwrap_or_else(|_| unreachable!())
                } else {
                    ds[pick % ds.len()].clone()
                };
                (
                    Event::DriverStateChanged {
                        driver_id,
                        state,
                        exception: None,
                    },
                    false,
                )
            }
            Op::KillDriver { pick } => {
                let ds = self.drivers();
                let driver_id = if ds.is_empty() {
                    "driver-none".parse().unwrap_or_else(|_| unreachable!())
                } else {
                    ds[pick % ds.len()].clone()
                };
                (Event::KillDriver { driver_id }, true)
            }
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let slot = match op {
            Op::RegisterApp { a, .. } => Some(*a),
            _ => None,
        };
        let max = match op {
            Op::RegisterApp { max, .. } => *max,
            _ => None,
        };
        let (event, is_ask) = self.event(op);
        let fx = self.m.handle(at(self.now), event);

        if let (Some(slot), Some(id)) = (
            slot,
            fx.iter().find_map(|e| match e {
                Effect::RegisteredApplication { app_id } => Some(app_id.clone()),
                _ => None,
            }),
        ) {
            self.apps.insert(slot, id.clone());
            self.max_cores.entry(id).or_insert(max);
        }

        if let Err(e) = self.m.check_invariants() {
            return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
        }
        let replies = fx.iter().filter(|e| matches!(e, Effect::Reply(_))).count();
        prop_assert_eq!(
            replies,
            usize::from(is_ask),
            "replies to {:?}: {:?}",
            op,
            fx
        );

        let s = self.m.status(at(self.now));
        let worker_state: BTreeMap<_, _> =
            s.workers.iter().map(|w| (w.id.clone(), w.state)).collect();
        for w in &s.workers {
            prop_assert!(w.cores_used <= w.cores, "{:?}", w);
            prop_assert!(w.memory_used_mb <= w.memory_mb, "{:?}", w);
        }
        let alive: Vec<_> = s
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Alive)
            .collect();
        prop_assert_eq!(s.alive_workers as usize, alive.len());
        prop_assert_eq!(
            s.cores_used,
            alive.iter().map(|w| u64::from(w.cores_used)).sum::<u64>()
        );

        for e in &fx {
            match e {
                Effect::LaunchExecutor {
                    worker_id,
                    app_id,
                    cores,
                    ..
                } => {
                    prop_assert_eq!(worker_state.get(worker_id), Some(&WorkerState::Alive));
                    prop_assert!(*cores >= 1);
                    // Bad workers isolated: never on a worker in its
                    // back-off, nor for an app that excludes it, nor during
                    // the app's relaunch back-off.
                    prop_assert_eq!(self.m.worker_backoff_until(worker_id, at(self.now)), None);
                    prop_assert!(!self.m.app_excludes_worker(app_id, worker_id));
                    prop_assert_eq!(self.m.app_relaunch_at(app_id, at(self.now)), None);
                }
                Effect::LaunchDriver { worker_id, .. } => {
                    prop_assert_eq!(worker_state.get(worker_id), Some(&WorkerState::Alive));
                }
                _ => {}
            }
        }
        for app in &s.active_apps {
            if app.waiting_reason.is_some() {
                prop_assert!(app.executors.is_empty(), "{:?}", app);
            }
            if let Some(Some(max)) = self.max_cores.get(&app.id) {
                prop_assert!(app.cores <= *max, "{:?} over its max {}", app, max);
            }
            for e in &app.executors {
                let ws = worker_state.get(&e.worker_id);
                prop_assert!(
                    ws.is_some_and(|s| *s != WorkerState::Dead),
                    "{:?} on {:?}",
                    e,
                    ws
                );
                prop_assert!(!e.state.is_finished(), "{:?}", e);
            }
        }
        for app in &s.completed_apps {
            prop_assert!(app.state.is_finished());
            for e in &app.executors {
                prop_assert!(
                    e.state != ExecutorState::Running,
                    "{:?} of completed {}",
                    e,
                    app.id
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_across_random_events(
        config in config(),
        recover in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut m = MasterState::new("flint://127.0.0.1:7077", config);
        let stored = if recover { stored_state() } else { StoredState::default() };
        m.handle(at(T0), Event::ElectedLeader { stored });
        let mut world = World { m, now: T0, apps: BTreeMap::new(), max_cores: BTreeMap::new() };
        if recover {
            // Recovered executors are taken as the workers report them, so
            // recovered apps are not held to their max cores here.
            for slot in 0..2u8 {
                let id = AppId::generate(T0 - 1000, u32::from(slot));
                world.apps.insert(slot, id.clone());
                world.max_cores.insert(id, None);
            }
        }
        for op in &ops {
            world.step(op)?;
        }
    }

    #[test]
    fn placement_never_overcommits_and_respects_the_apps_shape(
        workers in prop::collection::vec((0u32..9, 0u64..9), 1..6),
        spread in any::<bool>(),
        max in proptest::option::of(0u32..30),
        per in proptest::option::of(1u32..5),
        mem in 0u64..5,
    ) {
        let config = MasterConfig {
            spread_out_apps: spread,
            ..MasterConfig::default()
        };
        let mut m = elected(config);
        for (i, (cores, gb)) in workers.iter().enumerate() {
            add_worker(&mut m, T0, u8::try_from(i).unwrap_or(0), *cores, gb * 1024);
        }
        let (app, fx) = add_app(&mut m, T0, desc("p", max, per, mem * 1024));
        let placed = launches(&fx);
        let total: u32 = placed.iter().map(|l| l.3).sum();
        if let Some(max) = max {
            prop_assert!(total <= max);
        }
        if let Some(per) = per {
            prop_assert!(placed.iter().all(|l| l.3 == per));
        } else {
            // One executor per worker.
            let mut ws: Vec<_> = placed.iter().map(|l| l.0.clone()).collect();
            ws.dedup();
            prop_assert_eq!(ws.len(), placed.len());
        }
        let s = m.status(at(T0));
        for w in &s.workers {
            prop_assert!(w.cores_used <= w.cores && w.memory_used_mb <= w.memory_mb);
        }
        // Work-conserving: if the app still wants cores, no worker has room
        // for one more of its executors.
        let a = active_app(&m, &app);
        let need = per.unwrap_or(1);
        let wants_more = max.is_none_or(|mx| a.cores + need <= mx);
        if wants_more {
            for w in &s.workers {
                let room = w.cores - w.cores_used >= need && w.memory_mb - w.memory_used_mb >= mem * 1024;
                let has_one = per.is_none() && placed.iter().any(|l| l.0 == w.id);
                prop_assert!(!room || has_one, "worker {:?} left idle for {:?}", w, a);
            }
        }
        prop_assert!(m.check_invariants().is_ok());
    }
}
