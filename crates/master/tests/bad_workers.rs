//! Bad workers isolated: executors that fail quickly count against their
//! worker, an app stops getting executors where they keep failing, an
//! unhealthy worker gets none for a while (1 s doubling to 60 s) and says
//! why in the status, relaunches back off, and an app fails only when every
//! worker that could run it failed it. Pure: a small simulation drives the
//! state machine with a clock, ticks every 100 ms, heartbeats, and workers
//! that answer each launch 10 ms later.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use flint_master::state::{
    Effect, Event, LogLevel, MasterConfig, MasterState, MAX_TICK_INTERVAL_MS,
};
use flint_proto::{AppId, ApplicationState, ExecutorId, ExecutorState, WorkerId};

/// What a worker with a read-only work dir reports for every launch.
const READ_ONLY: &str =
    "cannot create the executor's directory /work/app/0: Read-only file system (os error 30)";

/// How a simulated worker answers a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// The executor starts and keeps running.
    Runs,
    /// The launch fails (read-only work dir).
    CannotLaunch,
}

struct Sim {
    m: MasterState,
    now: u64,
    behaviour: BTreeMap<WorkerId, Behaviour>,
    /// Apps whose executors fail wherever they start (a broken program).
    broken_apps: BTreeSet<AppId>,
    /// Launch answers due: (time, app, executor, worker).
    due: Vec<(u64, AppId, ExecutorId, WorkerId)>,
    /// Every effect, with its time.
    effects: Vec<(u64, Effect)>,
}

impl Sim {
    fn new(config: MasterConfig) -> Sim {
        Sim {
            m: elected(config),
            now: T0,
            behaviour: BTreeMap::new(),
            broken_apps: BTreeSet::new(),
            due: Vec::new(),
            effects: Vec::new(),
        }
    }

    fn worker(&mut self, n: u8, cores: u32, behaviour: Behaviour) -> WorkerId {
        let fx = add_worker(&mut self.m, self.now, n, cores, 8192);
        self.record(fx);
        self.behaviour.insert(worker_id(n), behaviour);
        worker_id(n)
    }

    fn app(&mut self, name: &str, max_cores: u32) -> AppId {
        let (id, fx) = add_app(
            &mut self.m,
            self.now,
            desc(name, Some(max_cores), Some(1), 512),
        );
        self.record(fx);
        id
    }

    fn handle(&mut self, event: Event) -> Vec<Effect> {
        let fx = self.m.handle(at(self.now), event);
        assert_ok(&self.m);
        self.record(fx)
    }

    fn record(&mut self, fx: Vec<Effect>) -> Vec<Effect> {
        for (w, app, exec, _) in launches(&fx) {
            self.due.push((self.now + 10, app, exec, w));
        }
        self.effects
            .extend(fx.iter().cloned().map(|e| (self.now, e)));
        fx
    }

    /// Runs the cluster for `ms`: launch answers when due, a tick every
    /// 100 ms (the shell's interval), heartbeats every second.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 10;
            let due: Vec<_> = self
                .due
                .iter()
                .filter(|d| d.0 <= self.now)
                .cloned()
                .collect();
            self.due.retain(|d| d.0 > self.now);
            for (_, app_id, exec_id, w) in due {
                let fails = self.behaviour.get(&w) == Some(&Behaviour::CannotLaunch)
                    || self.broken_apps.contains(&app_id);
                let (state, message) = if fails {
                    (ExecutorState::Failed, Some(READ_ONLY.to_string()))
                } else {
                    (ExecutorState::Running, None)
                };
                self.handle(Event::ExecutorStateChanged {
                    app_id,
                    exec_id,
                    state,
                    message,
                    exit_status: None,
                });
            }
            if (self.now - T0) % 1000 == 0 {
                for w in self.behaviour.keys().cloned().collect::<Vec<_>>() {
                    self.handle(Event::Heartbeat { worker_id: w });
                }
            }
            if (self.now - T0) % MAX_TICK_INTERVAL_MS == 0 {
                self.handle(Event::Tick);
            }
        }
    }

    /// (time, worker) of every launch for `app`.
    fn launches_of(&self, app: &AppId) -> Vec<(u64, WorkerId)> {
        self.effects
            .iter()
            .filter_map(|(t, e)| match e {
                Effect::LaunchExecutor {
                    worker_id, app_id, ..
                } if app_id == app => Some((*t, worker_id.clone())),
                _ => None,
            })
            .collect()
    }

    fn failures_of(&self, app: &AppId, worker: &WorkerId) -> usize {
        let on: BTreeMap<_, _> = self
            .effects
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::LaunchExecutor {
                    worker_id,
                    app_id,
                    exec_id,
                    ..
                } if app_id == app => Some((*exec_id, worker_id.clone())),
                _ => None,
            })
            .collect();
        self.effects
            .iter()
            .filter(|(_, e)| {
                matches!(e, Effect::ExecutorUpdated { app_id, exec_id, state: ExecutorState::Failed, .. }
                    if app_id == app && on.get(exec_id) == Some(worker))
            })
            .count()
    }

    fn logged(&self, level: LogLevel, needle: &str) -> Vec<(u64, String)> {
        self.effects
            .iter()
            .filter_map(|(t, e)| match e {
                Effect::Log { level: l, message } if *l == level && message.contains(needle) => {
                    Some((*t, message.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn unhealthy(&self, w: &WorkerId) -> Option<String> {
        self.m
            .status(at(self.now))
            .workers
            .into_iter()
            .find(|s| &s.id == w)
            .and_then(|s| s.unhealthy)
    }

    fn backoff_left(&self, w: &WorkerId) -> Option<u64> {
        self.m
            .worker_backoff_until(w, at(self.now))
            .map(|t| t - self.now)
    }
}

#[test]
fn an_app_ends_up_on_the_healthy_worker_and_the_bad_one_says_why() {
    let mut s = Sim::new(MasterConfig::default());
    let bad = s.worker(1, 2, Behaviour::CannotLaunch);
    let good = s.worker(2, 2, Behaviour::Runs);
    // Four 1-core executors: two fit on each worker.
    let app = s.app("pi", 4);
    s.run(10_000);

    // Three failures on the bad worker (deploy.max_failures_per_worker),
    // spaced by the relaunch back-off, then no more executors there.
    assert_eq!(s.failures_of(&app, &bad), 3);
    assert!(s.m.app_excludes_worker(&app, &bad));
    assert!(!s.m.app_excludes_worker(&app, &good));
    let on_bad: Vec<u64> = s
        .launches_of(&app)
        .into_iter()
        .filter(|(_, w)| *w == bad)
        .map(|(t, _)| t - T0)
        .collect();
    // Two at first; once both relaunch back-offs (200 ms, then 400 ms) are
    // over, one: a worker where the app failed gets one executor at a time.
    assert_eq!(on_bad, [0, 0, 500]);
    assert_eq!(
        s.logged(LogLevel::Warn, "Not placing executors of").len(),
        1
    );

    // The app did not fail: it runs on the healthy worker.
    let a = active_app(&s.m, &app);
    assert_eq!(a.state, ApplicationState::Running);
    assert_eq!(a.executors.len(), 2);
    assert!(a
        .executors
        .iter()
        .all(|e| e.worker_id == good && e.state == ExecutorState::Running));
    assert!(s.logged(LogLevel::Error, "removing it").is_empty());

    // The bad worker is unhealthy, with the evidence and the last failure;
    // the healthy one is not.
    let why = s.unhealthy(&bad).expect("the bad worker is unhealthy");
    assert!(
        why.contains(&format!(
            "executors of {app} failed here while it runs on {good}"
        )),
        "{why}"
    );
    assert!(why.contains(READ_ONLY), "{why}");
    assert_eq!(s.unhealthy(&good), None);
    let json = serde_json::to_value(s.m.status(at(s.now))).unwrap();
    assert_eq!(json["workers"][0]["unhealthy"], why.as_str());
    assert!(json["workers"][1]["unhealthy"].is_null());
}

#[test]
fn an_unhealthy_worker_gets_nothing_for_a_while_and_its_back_off_doubles() {
    let mut s = Sim::new(MasterConfig::default());
    let bad = s.worker(1, 2, Behaviour::CannotLaunch);
    let good = s.worker(2, 2, Behaviour::Runs);
    let first = s.app("first", 4);
    // Until the bad worker is found unhealthy (the first app runs on the
    // good worker and is excluded from the bad one).
    let mut waited = 0;
    while s.unhealthy(&bad).is_none() {
        s.run(10);
        waited += 10;
        assert!(waited < 10_000, "never unhealthy");
    }
    assert_eq!(s.backoff_left(&bad), Some(1000));

    // A second app: the good worker is full, the bad one backs off, so it
    // waits and says why.
    let second = s.app("second", 1);
    let reason = active_app(&s.m, &second).waiting_reason.unwrap();
    assert!(
        reason.contains("unhealthy") && reason.contains(bad.as_str()),
        "{reason}"
    );
    assert!(s.launches_of(&second).is_empty());

    // After the back-off it is tried again; a launch after the back-off
    // that fails too doubles it: 2 s, then 4 s.
    for n in 0..2 {
        let left = s.backoff_left(&bad).unwrap();
        s.run(left - 10);
        assert_eq!(
            s.launches_of(&second).len(),
            n,
            "launched during the back-off"
        );
        while s.launches_of(&second).len() == n {
            s.run(10);
        }
        // Its launch fails 10 ms later.
        s.run(20);
    }
    let strikes: Vec<String> = s
        .logged(LogLevel::Warn, &format!("Worker {bad} is unhealthy"))
        .into_iter()
        .map(|(_, m)| m.rsplit("; ").next().unwrap().to_string())
        .collect();
    assert_eq!(
        strikes,
        [
            "no new executors for 1 seconds",
            "no new executors for 2 seconds",
            "no new executors for 4 seconds"
        ]
    );
    assert!(
        s.unhealthy(&bad)
            .unwrap()
            .contains("an executor launched after its back-off failed too"),
        "{:?}",
        s.unhealthy(&bad)
    );
    // Neither app failed: the good worker could run them.
    assert!(s.m.is_active_app(&first) && s.m.is_active_app(&second));
    assert!(!s.m.app_excludes_worker(&second, &good));
}

#[test]
fn the_back_off_stops_at_a_minute_and_a_stable_executor_heals_the_worker() {
    let mut s = Sim::new(MasterConfig::default());
    let flaky = s.worker(1, 1, Behaviour::CannotLaunch);
    let good = s.worker(2, 1, Behaviour::Runs);
    // `anchor` runs on the good worker and is excluded from the flaky one;
    // eight more apps wait for a core and probe the flaky worker whenever
    // its back-off ends, each until it excludes it.
    let anchor = s.app("anchor", 2);
    let waiting: Vec<AppId> = (0..8).map(|n| s.app(&format!("w{n}"), 1)).collect();
    s.run(300_000);
    let strikes: Vec<(u64, String)> = s
        .logged(LogLevel::Warn, &format!("Worker {flaky} is unhealthy"))
        .into_iter()
        .map(|(t, m)| (t, m.rsplit("; ").next().unwrap().to_string()))
        .collect();
    let backoffs: Vec<&str> = strikes.iter().map(|(_, m)| m.as_str()).take(8).collect();
    assert_eq!(
        backoffs,
        [1, 2, 4, 8, 16, 32, 60, 60].map(|s| format!("no new executors for {s} seconds")),
        "{strikes:?}"
    );
    // Each strike comes from a launch after the previous back-off.
    for w in strikes.windows(2) {
        assert!(w[1].0 - w[0].0 >= 1000, "{strikes:?}");
    }
    assert!(s.m.is_active_app(&anchor));
    assert!(waiting.iter().all(|a| s.m.is_active_app(a)));
    assert!(active_app(&s.m, &anchor)
        .executors
        .iter()
        .all(|e| e.worker_id == good));

    // The disk is fixed: the next probe runs, and after staying RUNNING for
    // deploy.executor_stable_time the worker is healthy again.
    s.behaviour.insert(flaky.clone(), Behaviour::Runs);
    s.run(60_000 + 10_000 + 500);
    assert_eq!(s.unhealthy(&flaky), None);
    assert_eq!(s.backoff_left(&flaky), None);
    assert_eq!(
        s.logged(LogLevel::Info, &format!("Worker {flaky} is healthy again"))
            .len(),
        1
    );
    let running_on_flaky: usize = waiting
        .iter()
        .map(|a| {
            active_app(&s.m, a)
                .executors
                .iter()
                .filter(|e| e.worker_id == flaky && e.state == ExecutorState::Running)
                .count()
        })
        .sum();
    assert_eq!(running_on_flaky, 1);
}

#[test]
fn a_genuinely_failing_app_still_fails_when_every_worker_fails_it() {
    let mut s = Sim::new(MasterConfig::default());
    let w1 = s.worker(1, 2, Behaviour::Runs);
    let w2 = s.worker(2, 2, Behaviour::Runs);
    let app = s.app("broken", 2);
    s.broken_apps.insert(app.clone());
    s.run(30_000);

    // Three failures on each worker, then the app FAILED, naming them.
    assert_eq!(s.failures_of(&app, &w1), 3);
    assert_eq!(s.failures_of(&app, &w2), 3);
    assert_eq!(completed_app(&s.m, &app).state, ApplicationState::Failed);
    let removed = s.logged(LogLevel::Error, "times; removing it");
    assert_eq!(removed.len(), 1, "{removed:?}");
    let (when, line) = &removed[0];
    assert!(
        line.contains(&format!(
            "Application broken with ID {app} failed 6 times; removing it"
        )) && line.contains("failed 3 times on every worker that can run them")
            && line.contains(w1.as_str())
            && line.contains(w2.as_str()),
        "{line}"
    );
    // Over the relaunch back-offs, not in one millisecond.
    assert!(when - T0 >= 200 + 400, "failed after {} ms", when - T0);
    // One app failing everywhere is the app's fault: no worker is blamed.
    assert_eq!(s.unhealthy(&w1), None);
    assert_eq!(s.unhealthy(&w2), None);
    let other = s.app("fine", 2);
    s.run(1000);
    assert_eq!(active_app(&s.m, &other).executors.len(), 2);
}

#[test]
fn failures_of_several_apps_on_one_worker_make_it_unhealthy() {
    let mut s = Sim::new(MasterConfig::default());
    let only = s.worker(1, 2, Behaviour::CannotLaunch);
    let a = s.app("a", 1);
    // Two failures of a (its third would exclude the only worker and fail
    // it), then one of b: three failures from two apps.
    while s.failures_of(&a, &only) < 2 {
        s.run(10);
    }
    assert_eq!(s.unhealthy(&only), None);
    let b = s.app("b", 1);
    s.run(20);
    assert_eq!(s.failures_of(&b, &only), 1);
    let why = s.unhealthy(&only).expect("unhealthy");
    assert!(
        why.starts_with("3 executor launches failed here for 2 applications; last: FAILED: "),
        "{why}"
    );
    assert!(why.ends_with("; no new executors for 1 seconds"), "{why}");
}

#[test]
fn relaunches_back_off_instead_of_retrying_in_the_same_millisecond() {
    let config = MasterConfig {
        max_failures_per_worker: 100,
        ..MasterConfig::default()
    };
    let mut s = Sim::new(config);
    s.worker(1, 1, Behaviour::CannotLaunch);
    let app = s.app("a", 1);
    s.run(20_000);
    let times: Vec<u64> = s
        .launches_of(&app)
        .into_iter()
        .map(|(t, _)| t - T0)
        .collect();
    // Launch, fail 10 ms later, wait 200, 400, 800 … ms (rounded up to the
    // next tick), fail again.
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps[..6], [300, 500, 900, 1700, 3300, 6500], "{times:?}");
    assert!(s.m.is_active_app(&app));
}
