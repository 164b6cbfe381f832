//! The cluster as an operator runs it: real `flint master` and `flint worker`
//! processes on 127.0.0.1 (ports chosen by the OS, timers shortened by settings),
//! executors as real child processes, and applications registered through
//! `flint-client` from the test process.
//!
//! The harness is in `common/mod.rs` (shared with `isolation.rs`). Each test owns a
//! [`Cluster`]: its processes (SIGKILLed and reaped on drop, with the
//! tail of every log printed when the test fails), its temp dir and its ports, so the
//! tests run in parallel. Every wait polls a condition (the master's status, a file, a
//! process table entry) against a deadline; nothing sleeps to synchronize.
//!
//! Each cluster has its own flint home (`FLINT_HOME`), never the real `~/.flint`: the
//! daemons find the cluster secret there with no flags, and the test process
//! authenticates with the same secret. Section 8 checks the secret itself: created
//! private by a default master, required of every client and worker, refused when
//! others can read it, and off only with `auth.enabled = false`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flint_client::{AppEvent, MASTER_REMOVED_PREFIX};
use flint_proto::messages::{
    AppClientMsg, DriverStateChanged, ExecutorStateChanged, Heartbeat, MasterMsg,
    RegisterApplication, RequestMasterState, WorkerLatestState, WorkerMsg, APP_CLIENT_ENDPOINT,
    MASTER_ENDPOINT, WORKER_ENDPOINT,
};
use flint_proto::status::MasterStatusJson;
use flint_proto::{
    AppId, ApplicationDescription, ApplicationState, DriverId, DriverState, ExecutorCommand,
    ExecutorDescription, ExecutorId, ExecutorState, MasterStatus, WorkerId, WorkerState,
};
use flint_rpc::{Context, Endpoint, RpcAddress, RpcConf, RpcEnv, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

// ===================================================================
// 1. Registration and `flint status`
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_register_and_flint_status_shows_them() {
    let mut c = Cluster::new("status");
    let m = c.start_master(0, &[]).await;
    let offers = [(1u32, 256u64), (2, 512), (3, 768)];
    let mut workers = Vec::new();
    for (cores, mb) in offers {
        workers.push(c.start_worker(&m, cores, &format!("{mb}m")).await);
    }
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    c.wait_alive(&m, &ids).await;

    let out = c.run(&["status", "--master", &m.url]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{:?}", out.stderr);
    assert!(
        text.starts_with(&format!("Master {}  ALIVE\n", m.url)),
        "{text}"
    );
    assert!(
        text.contains("Workers: 3 alive; cores 6 (0 used); memory 1.5 GiB (0.0 GiB used)"),
        "{text}"
    );
    for (w, (cores, mb)) in workers.iter().zip(offers) {
        let row: Vec<_> = text
            .lines()
            .find(|l| l.starts_with(&w.id))
            .unwrap_or_else(|| panic!("no row for {}:\n{text}", w.id))
            .split_whitespace()
            .collect();
        let address = w.url.trim_start_matches("flint://");
        let cores = format!("0/{cores}");
        let memory = format!("0/{mb}");
        assert_eq!(
            row,
            [
                w.id.as_str(),
                address,
                "ALIVE",
                cores.as_str(),
                memory.as_str(),
                "MiB"
            ],
            "{text}"
        );
    }

    let out = c.run(&["status", "--master", &m.url, "--json"]).await;
    assert!(out.status.success(), "{:?}", out);
    let s: MasterStatusJson = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(s.url, m.url);
    assert_eq!(s.status, MasterStatus::Alive);
    assert_eq!(
        (s.alive_workers, s.cores, s.memory_mb, s.cores_used),
        (3, 6, 1536, 0)
    );
    for (w, (cores, mb)) in workers.iter().zip(offers) {
        let j = s
            .workers
            .iter()
            .find(|j| j.id.as_str() == w.id)
            .expect("listed");
        assert_eq!(
            (j.state, j.cores, j.memory_mb, j.host.as_str()),
            (WorkerState::Alive, cores, mb, "127.0.0.1")
        );
        assert_eq!(format!("flint://{}:{}", j.host, j.port), w.url);
    }
}

// ===================================================================
// 2. Placement: spread out (default) or packed
// ===================================================================

/// Three 2-core workers and an app asking for three 1-core executors; returns the
/// number of RUNNING executors per worker, largest first, after checking that each
/// executor is a live process that wrote its stdout in its worker's work dir.
async fn place_three_executors(test: &str, master_conf: &[&str]) -> Vec<usize> {
    let mut c = Cluster::new(test);
    let m = c.start_master(0, master_conf).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(c.start_worker(&m, 2, "512m").await);
    }
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    c.wait_alive(&m, &ids).await;

    let mut app = App::start(&m, app_desc(test, SLEEPER, Some(1), Some(3)), false).await;
    let added = app.wait_added(3).await;
    let s = c
        .wait_status(&m, "3 RUNNING executors", |s| {
            running_per_worker(s, &app.id).values().sum::<usize>() == 3
        })
        .await;
    let per = running_per_worker(&s, &app.id);
    for w in &s.workers {
        let n = per.get(w.id.as_str()).copied().unwrap_or(0);
        assert_eq!(w.cores_used as usize, n, "cores used on {}: {s:#?}", w.id);
    }

    let mut pids = Vec::new();
    for (exec, worker_id) in &added {
        let worker = workers.iter().find(|w| w.id == *worker_id).expect("ours");
        let pid = executor_pid(worker, &app.id, *exec).await;
        assert!(alive(pid), "executor {exec} (pid {pid}) is not running");
        pids.push(pid);
    }

    // Stopping the app kills its executors.
    app.handle.stop().await;
    wait_gone("the stopped app's executors to exit", &pids).await;
    let s = c
        .wait_status(&m, "the app FINISHED", |s| {
            s.completed_apps.iter().any(|a| a.id == app.id)
        })
        .await;
    assert_eq!(
        app_in(&s, &app.id).unwrap().state,
        ApplicationState::Finished
    );
    // The workers report the killed executors after the app is gone: expected
    // after a normal finish, logged at INFO, never as an "unknown executor" WARN.
    let ended = format!("of finished application {} ended (KILLED)", app.id);
    let log = wait_for("the master to log the 3 KILLED reports", async || {
        let log = c.stderr(m.proc);
        match log.matches(&ended).count() {
            3 => Ok(log),
            n => Err(format!("{n} of 3")),
        }
    })
    .await;
    assert!(!log.contains("unknown executor"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("executor")),
        "{log}"
    );

    let mut counts: Vec<usize> = workers
        .iter()
        .map(|w| per.get(&w.id).copied().unwrap_or(0))
        .collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_are_spread_out_by_default() {
    assert_eq!(place_three_executors("spread", &[]).await, [1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_are_packed_when_spread_out_is_off() {
    assert_eq!(
        place_three_executors("packed", &["deploy.spread_out=false"]).await,
        [2, 1, 0]
    );
}

// ===================================================================
// 3. A worker SIGKILLed under running executors
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_marked_dead_and_its_executors_are_replaced_elsewhere() {
    let mut c = Cluster::new("kill-worker");
    let m = c.start_master(0, &[]).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(c.start_worker(&m, 2, "512m").await);
    }
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    c.wait_alive(&m, &ids).await;

    // Two 1-core executors, spread over two of the three workers.
    let mut app = App::start(&m, app_desc("victim", SLEEPER, Some(1), Some(2)), false).await;
    let first = app.wait_added(2).await;
    c.wait_status(&m, "2 RUNNING executors", |s| {
        running_per_worker(s, &app.id).values().sum::<usize>() == 2
    })
    .await;
    let (&lost_exec, victim_id) = first.iter().next().unwrap();
    let victim = workers.iter().position(|w| w.id == *victim_id).unwrap();
    let victim_pid = executor_pid(&workers[victim], &app.id, lost_exec).await;
    let victim_pids = pids_in(&workers[victim]);
    assert!(victim_pids.contains(&victim_pid));
    assert!(alive(victim_pid));

    c.kill(workers[victim].proc);

    // DEAD within the timeout and one check interval (plus scheduling slack).
    c.wait_status_within(
        &m,
        "the killed worker DEAD",
        WORKER_TIMEOUT * 2 + Duration::from_secs(2),
        |s| {
            s.workers
                .iter()
                .any(|w| w.id.as_str() == victim_id && w.state == WorkerState::Dead)
        },
    )
    .await;

    // The app hears that the executor and its worker are gone...
    let removed = app
        .wait_events(
            "the lost executor removed",
            1,
            |e| matches!(e, AppEvent::ExecutorRemoved { exec_id, .. } if *exec_id == lost_exec),
        )
        .await;
    let AppEvent::ExecutorRemoved {
        worker_host,
        message,
        ..
    } = &removed[0]
    else {
        unreachable!()
    };
    assert_eq!(worker_host.as_deref(), Some("127.0.0.1"), "{removed:?}");
    assert!(message.contains("worker lost"), "{message}");
    app.wait_events("the worker removed", 1, |e| {
        matches!(e, AppEvent::WorkerRemoved { worker_id, .. } if worker_id.as_str() == victim_id)
    })
    .await;

    // ...and gets a replacement on another worker.
    let replacement = app
        .wait_events("a replacement executor", 1, |e| {
            matches!(e, AppEvent::ExecutorAdded { exec_id, .. } if !first.contains_key(exec_id))
        })
        .await;
    let AppEvent::ExecutorAdded {
        exec_id: new_exec,
        worker_id: new_worker,
        ..
    } = &replacement[0]
    else {
        unreachable!()
    };
    assert_ne!(new_worker.as_str(), victim_id);
    let s = c
        .wait_status(&m, "2 RUNNING executors again", |s| {
            running_per_worker(s, &app.id).values().sum::<usize>() == 2
        })
        .await;
    assert!(
        !running_per_worker(&s, &app.id).contains_key(victim_id.as_str()),
        "{s:#?}"
    );
    let host = workers
        .iter()
        .find(|w| w.id == new_worker.as_str())
        .unwrap();
    let new_pid = executor_pid(host, &app.id, *new_exec).await;
    assert!(alive(new_pid));

    // Nothing the killed worker started outlives it.
    wait_gone("the killed worker's executors to die", &victim_pids).await;
}

// ===================================================================
// 4. Master restart
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_re_register_with_a_master_restarted_on_the_same_port() {
    let mut c = Cluster::new("restart-master");
    let m = c.start_master(0, &[]).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(c.start_worker(&m, 1, "256m").await);
    }
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    c.wait_alive(&m, &ids).await;

    c.terminate(m.proc);
    let status = c.wait_exit(m.proc).await;
    assert_eq!(status.code(), Some(0), "master exit: {status}");
    assert!(c.stderr(m.proc).contains("received SIGTERM"));

    // A new master on the same port: the workers find it by themselves.
    let port = m.addr.port;
    let m2 = c.start_master(port, &[]).await;
    assert_eq!(m2.url, m.url);
    c.wait_alive(&m2, &ids).await;

    // Again after a crash (SIGKILL: nothing closed cleanly).
    c.kill(m2.proc);
    let m3 = c.start_master(port, &[]).await;
    assert_eq!(m3.url, m.url);
    let s = c.wait_alive(&m3, &ids).await;
    assert_eq!(s.alive_workers, 3);

    // The same worker processes throughout, never restarted.
    for w in &workers {
        assert!(c.exited(w.proc).is_none(), "{} exited", w.id);
        let out = fs::read_to_string(&c.procs[w.proc.0].stdout).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
    }
}

// ===================================================================
// 5. Executors that always fail
// ===================================================================

/// One 2-core worker, a master with `deploy.max_executor_retries=3`, and an app (from
/// a client-only environment) whose one 1-core executor fails every time: the master
/// fails the app after three failures in a row, the client hears `Dead` with the
/// master's reason, and the status lists the app FAILED. Returns the removal events.
async fn app_fails_after_three_failed_executors(
    test: &str,
    desc: ApplicationDescription,
) -> Vec<AppEvent> {
    let mut c = Cluster::new(test);
    let m = c.start_master(0, &["deploy.max_executor_retries=3"]).await;
    let w = c.start_worker(&m, 2, "512m").await;
    c.wait_alive(&m, &[&w.id]).await;

    let mut app = App::start(&m, desc, true).await;
    let dead = app
        .wait_events("the app dead", 1, |e| matches!(e, AppEvent::Dead(_)))
        .await;
    let AppEvent::Dead(reason) = &dead[0] else {
        unreachable!()
    };
    assert_eq!(reason, &format!("{MASTER_REMOVED_PREFIX}FAILED"));
    assert_eq!(app.handle.dead_reason().as_deref(), Some(reason.as_str()));
    let removed: Vec<_> = app
        .seen
        .iter()
        .filter(|e| matches!(e, AppEvent::ExecutorRemoved { .. }))
        .cloned()
        .collect();
    assert_eq!(removed.len(), 3, "{}", app.recent());

    let s = c
        .wait_status(&m, "the app in completed_apps", |s| {
            s.completed_apps.iter().any(|a| a.id == app.id)
        })
        .await;
    assert_eq!(app_in(&s, &app.id).unwrap().state, ApplicationState::Failed);
    assert!(s.active_apps.is_empty(), "{s:#?}");
    assert_eq!(s.cores_used, 0);
    assert!(
        c.stderr(m.proc).contains(&format!(
            "Application {test} with ID {} failed 3 times; removing it",
            app.id
        )),
        "no removal line in the master's log"
    );
    removed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_whose_executors_cannot_start_fails_after_max_executor_retries() {
    let missing = "/nonexistent/flint-executor";
    let mut desc = ApplicationDescription::new("unstartable", ExecutorCommand::new(missing));
    desc.cores_per_executor = Some(1);
    desc.max_cores = Some(1);
    desc.memory_per_executor_mb = 64;
    for e in app_fails_after_three_failed_executors("unstartable", desc).await {
        let AppEvent::ExecutorRemoved {
            message,
            exit_status,
            worker_host,
            ..
        } = &e
        else {
            unreachable!()
        };
        assert!(
            message.contains("cannot start") && message.contains(missing),
            "{e:?}"
        );
        assert_eq!((exit_status, worker_host), (&None, &None), "{e:?}");
    }
}

/// The executor starts (the worker reports it RUNNING) and exits 1 at once, every
/// time. Spark resets the retry count on RUNNING and relaunches such executors
/// forever; flint only lets an executor clear the count after it has stayed RUNNING
/// for `deploy.executor_stable_time`, so the app fails after the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_whose_executors_always_exit_1_fails_after_max_executor_retries() {
    let desc = app_desc("doomed", "exit 1", Some(1), Some(1));
    for e in app_fails_after_three_failed_executors("doomed", desc).await {
        assert!(
            matches!(
                e,
                AppEvent::ExecutorRemoved {
                    exit_status: Some(1),
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_state_reports_reach_the_master_in_order() {
    // Executors that exit 0 at once are replaced without end; each is reported
    // RUNNING, then EXITED. A RUNNING report overtaking its EXITED one would reach
    // a master that no longer knows the executor.
    let mut c = Cluster::new("report-order");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 1, "256m").await;
    c.wait_alive(&m, &[&w.id]).await;
    let mut app = App::start(&m, app_desc("blink", "exit 0", Some(1), Some(1)), false).await;
    app.wait_events("40 normal exits", 40, |e| {
        matches!(
            e,
            AppEvent::ExecutorRemoved {
                exit_status: Some(0),
                ..
            }
        )
    })
    .await;
    // Read while the app is active: once it is stopped, reports of its last
    // executor (RUNNING or KILLED) legitimately reach a master that forgot it.
    let log = c.stderr(m.proc);
    let disorder: Vec<_> = log
        .lines()
        .filter(|l| {
            (l.contains("unknown executor") && l.ends_with("(RUNNING)"))
                || l.contains("is unexpected")
        })
        .collect();
    app.handle.stop().await;
    assert!(
        disorder.is_empty(),
        "reports out of order:\n{}",
        disorder.join("\n")
    );
}

// ===================================================================
// 6. Bad input: the master keeps serving
// ===================================================================

/// Records what the master sends to a fake worker endpoint.
struct FakeWorker(mpsc::UnboundedSender<WorkerMsg>);

impl Endpoint for FakeWorker {
    type Msg = WorkerMsg;

    fn receive(&mut self, _ctx: &Context<WorkerMsg>, msg: WorkerMsg) {
        let _ = self.0.send(msg);
    }
}

/// A new worker registers and `flint status` lists every worker ALIVE.
async fn still_serving(c: &mut Cluster, m: &Master, workers: &mut Vec<Worker>) {
    let w = c.start_worker(m, 2, "512m").await;
    workers.push(w);
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    c.wait_alive(m, &ids).await;
    let out = c.run(&["status", "--master", &m.url]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("Workers: {} alive", workers.len())),
        "{text}"
    );
    assert!(c.exited(m.proc).is_none(), "the master exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_keeps_serving_through_bad_input() {
    let mut c = Cluster::new("bad-input");
    let m = c.start_master(0, &[]).await;
    let mut workers = Vec::new();
    still_serving(&mut c, &m, &mut workers).await;

    // Messages from a worker the master never registered.
    let env = RpcEnv::server(m.rpc_conf.clone(), "127.0.0.1", 0)
        .await
        .unwrap();
    let (tx, mut to_fake) = mpsc::unbounded_channel();
    let fake = env.setup_endpoint(WORKER_ENDPOINT, FakeWorker(tx)).unwrap();
    let master = env
        .setup_endpoint_ref::<MasterMsg>(&m.addr, MASTER_ENDPOINT)
        .await
        .unwrap();
    let ghost: WorkerId = "worker-20000101000000-127.0.0.1-9".parse().unwrap();
    let ghost_app = AppId::generate(0, 7);
    master
        .send(Heartbeat {
            worker_id: ghost.clone(),
            worker: fake.clone(),
        })
        .unwrap();
    master
        .send(WorkerLatestState {
            worker_id: ghost.clone(),
            executors: vec![ExecutorDescription {
                app_id: ghost_app.clone(),
                exec_id: ExecutorId(3),
                cores: 1,
                memory_mb: 64,
                state: ExecutorState::Running,
            }],
            driver_ids: vec![DriverId::generate(0, 1)],
        })
        .unwrap();
    master
        .send(DriverStateChanged {
            driver_id: DriverId::generate(0, 1),
            state: DriverState::Failed,
            exception: Some("ghost".into()),
        })
        .unwrap();
    let acked = master
        .ask(ExecutorStateChanged {
            app_id: ghost_app.clone(),
            exec_id: ExecutorId(3),
            state: ExecutorState::Failed,
            message: Some("ghost".into()),
            exit_status: Some(1),
        })
        .await
        .unwrap();
    assert!(
        acked,
        "ExecutorStateChanged is acknowledged even when unknown"
    );
    // The heartbeat of an unknown worker is answered: register again.
    match tokio::time::timeout(PATIENCE, to_fake.recv()).await {
        Ok(Some(WorkerMsg::ReconnectWorker(r))) => assert_eq!(r.master_url, m.url),
        other => panic!("expected ReconnectWorker, got {other:?}"),
    }
    let log = c.stderr(m.proc);
    for line in [
        format!("Got heartbeat from unregistered worker {ghost}"),
        format!("Worker state from unknown worker: {ghost}"),
        format!("Got status update for unknown executor {ghost_app}/3"),
        format!(
            "Asked to remove unknown driver: {}",
            DriverId::generate(0, 1)
        ),
    ] {
        assert!(log.contains(&line), "no {line:?} in the master's log");
    }
    env.shutdown();
    still_serving(&mut c, &m, &mut workers).await;

    // An app asking for more cores per executor than any worker has waits, and the
    // status says why.
    let app = App::start(&m, app_desc("greedy", SLEEPER, Some(16), None), false).await;
    let reason = "needs 16 cores per executor but the largest worker has 2";
    let waiting = |s: &MasterStatusJson| {
        s.active_apps.iter().any(|a| {
            a.id == app.id
                && a.state == ApplicationState::Waiting
                && a.executors.is_empty()
                && a.waiting_reason.as_deref() == Some(reason)
        })
    };
    c.wait_status(&m, "the greedy app WAITING with its reason", waiting)
        .await;
    let out = c.run(&["status", "--master", &m.url]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with(app.id.as_str()))
        .unwrap_or_else(|| panic!("no row for {}:\n{text}", app.id));
    assert!(row.contains("WAITING") && row.ends_with(reason), "{row}");
    still_serving(&mut c, &m, &mut workers).await;
    assert!(waiting(&c.status(&m).await.unwrap()));

    // Garbage on the RPC port: each connection is refused and closed. The master
    // logs one refusal per peer address per 10 s, so only the first is in its log.
    for (i, garbage) in [
        b"GET / HTTP/1.1\r\nHost: flint\r\n\r\n".to_vec(),
        [0xff; 4]
            .into_iter()
            .chain((0..=255u8).cycle().take(8192))
            .collect(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = tokio::net::TcpStream::connect(m.addr.host_port())
            .await
            .unwrap();
        let local = s.local_addr().unwrap();
        // The master may close as soon as it has seen enough; a failed write is fine.
        let _ = s.write_all(&garbage).await;
        let mut sink = Vec::new();
        let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "the master kept a garbage connection open");
        if i > 0 {
            continue;
        }
        let refused = format!("refused connection from {local}");
        wait_for(&format!("{refused:?} in the master's log"), async || {
            if c.stderr(m.proc).contains(&refused) {
                Ok(())
            } else {
                Err("not yet".into())
            }
        })
        .await;
    }
    still_serving(&mut c, &m, &mut workers).await;
    drop(app);
}

// ===================================================================
// 7. `flint worker`: bad arguments, SIGTERM
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flint_worker_refuses_bad_arguments_clearly() {
    let mut c = Cluster::new("worker-args");
    let common = ["--webui-port", "0", "--memory", "256m"];

    let err = c
        .run_failing(&[&["worker", "not-a-url"][..], &common].concat())
        .await;
    assert!(
        err.contains("the master URL \"not-a-url\" is not valid")
            && err.contains("flint://host:port"),
        "{err}"
    );

    let err = c
        .run_failing(
            &[
                &["worker", "flint://127.0.0.1:1", "--cores", "0"][..],
                &common,
            ]
            .concat(),
        )
        .await;
    assert!(
        err.contains("at least 1 core; got 0") && err.contains("--cores"),
        "{err}"
    );

    let file = c.dir.join("a-file");
    fs::write(&file, "not a directory").unwrap();
    let under_file = file.join("work");
    let err = c
        .run_failing(
            &[
                &[
                    "worker",
                    "flint://127.0.0.1:1",
                    "--work-dir",
                    under_file.to_str().unwrap(),
                ][..],
                &common,
            ]
            .concat(),
        )
        .await;
    assert!(
        err.contains(&format!("cannot create work dir {}", under_file.display()))
            && err.contains("--work-dir"),
        "{err}"
    );

    let m = c.start_master(0, &[]).await;
    let first = c.start_worker(&m, 1, "256m").await;
    let port = first.url.rsplit(':').next().unwrap().to_string();
    let err = c
        .run_failing(&[&["worker", &m.url, "--port", &port][..], &common].concat())
        .await;
    assert!(
        err.contains(&format!("port {port} on 127.0.0.1 is in use")) && err.contains("--port"),
        "{err}"
    );
    // The worker holding the port is unaffected.
    c.wait_alive(&m, &[&first.id]).await;
    assert!(c.exited(first.proc).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_and_its_executors() {
    let mut c = Cluster::new("worker-sigterm");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 2, "512m").await;
    c.wait_alive(&m, &[&w.id]).await;
    let mut app = App::start(&m, app_desc("term", SLEEPER, Some(1), Some(2)), false).await;
    let added = app.wait_added(2).await;
    let mut pids = Vec::new();
    for exec in added.keys() {
        pids.push(executor_pid(&w, &app.id, *exec).await);
    }
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");

    c.terminate(w.proc);
    let status = c.wait_exit(w.proc).await;
    assert_eq!(status.code(), Some(0), "worker exit: {status}");
    assert!(c.stderr(w.proc).contains("received SIGTERM"));
    // The worker reaped its executors before exiting.
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "executors outlived their worker: {left:?}");
    c.wait_status(&m, "the worker gone", |s| alive_ids(s).is_empty())
        .await;
}

// ===================================================================
// 8. The cluster secret
// ===================================================================

/// Permission bits of a file or directory.
fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Waits until the process's stderr contains `text`.
async fn wait_stderr(c: &mut Cluster, p: ProcId, text: &str) {
    wait_for(&format!("{text:?} on stderr"), async || {
        if c.stderr(p).contains(text) {
            return Ok(());
        }
        if let Some(status) = c.exited(p) {
            panic!("exited ({status}) before logging {text:?}");
        }
        Err("not yet".into())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_master_creates_a_private_secret_and_a_worker_in_its_home_needs_no_flags() {
    let mut c = Cluster::with_fresh_home("secret-default");
    assert!(!c.home.exists());
    let m = c.start_master(0, &[]).await;

    // A fresh 256-bit secret, hex, in a private file in a private home.
    let file = c.home.join("secret");
    assert_eq!(mode(&c.home), 0o700);
    assert_eq!(mode(&file), 0o600);
    let secret = fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(secret.len(), 64, "{secret:?}");
    assert!(
        secret.chars().all(|ch| ch.is_ascii_hexdigit()),
        "{secret:?}"
    );
    assert_eq!(
        fs::read_dir(&c.home).unwrap().count(),
        1,
        "a temp file is left"
    );
    // The start-up lines say where it is and how other hosts get it.
    let line = c.wait_line(m.proc, "cluster secret: ").await;
    assert!(
        line.contains(&format!("created {} (mode 0600)", file.display())),
        "{line}"
    );
    let line = c.wait_line(m.proc, "  other hosts: ").await;
    for needle in [
        "auth.secret_file",
        "FLINT_AUTH_SECRET_FILE",
        "flint start-cluster",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from {line}");
    }
    let cmdline = fs::read(format!("/proc/{}/cmdline", c.pid(m.proc))).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&secret));

    // A worker and `flint status` in the same home find it with no flags.
    c.trust(Secret::new(secret.clone()));
    let w = c.start_worker(&m, 1, "256m").await;
    c.wait_alive(&m, &[&w.id]).await;
    let out = c.run(&["status", "--master", &m.url]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{:?}", out.stderr);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&w.id) && l.contains(" ALIVE ")),
        "{text}"
    );

    // The next master in this home reuses the file.
    let m2 = c.start_master(0, &[]).await;
    let line = c.wait_line(m2.proc, "cluster secret: ").await;
    assert!(
        line.contains(&format!("using {}", file.display())),
        "{line}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap().trim(), secret);
    assert_eq!(mode(&file), 0o600);
}

/// An application client endpoint that records what it is told.
struct FakeApp(mpsc::UnboundedSender<AppClientMsg>);

impl Endpoint for FakeApp {
    type Msg = AppClientMsg;

    fn receive(&mut self, _ctx: &Context<AppClientMsg>, msg: AppClientMsg) {
        let _ = self.0.send(msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_secret_are_refused_and_their_messages_not_acted_on() {
    let mut c = Cluster::new("secret-refused");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 1, "256m").await;
    c.wait_alive(&m, &[&w.id]).await;
    let worker_addr = RpcAddress::parse_list(&w.url).unwrap().remove(0);

    // What an attacker would register: an executor that leaves a mark.
    let mark = c.dir.join("intruder-ran");
    let script = format!("touch {}; exec sleep 1000", mark.display());
    let wrong = RpcConf {
        secret: Some(Secret::new("not-the-cluster-secret")),
        ..RpcConf::default()
    };
    for (what, conf) in [("no secret", RpcConf::default()), ("a wrong secret", wrong)] {
        let env = RpcEnv::server(conf, "127.0.0.1", 0).await.unwrap();
        let (tx, mut told) = mpsc::unbounded_channel();
        let me = env
            .setup_endpoint(APP_CLIENT_ENDPOINT, FakeApp(tx))
            .unwrap();
        let master = env.endpoint_ref::<MasterMsg>(&m.addr, MASTER_ENDPOINT);
        master
            .send(RegisterApplication {
                desc: app_desc("intruder", &script, Some(1), Some(1)),
                driver: me,
            })
            .unwrap();
        // The ask goes over the same connection as the registration: the
        // handshake refused it, so neither reached the master.
        let e = master.ask(RequestMasterState).await.unwrap_err();
        assert!(e.is_not_delivered(), "{what}: {e}");
        let text = e.to_string();
        assert!(
            text.contains("handshake") && text.contains("authentication"),
            "{what}: {text}"
        );
        // The worker refuses it too (no LaunchExecutor from strangers).
        let e = env
            .setup_endpoint_ref::<WorkerMsg>(&worker_addr, WORKER_ENDPOINT)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("handshake"), "{what}: {e}");
        assert!(told.try_recv().is_err(), "{what}: the master answered");
        env.shutdown();
    }
    wait_stderr(&mut c, m.proc, "refused connection from 127.0.0.1").await;
    let s = c.status(&m).await.unwrap();
    assert!(
        s.active_apps.is_empty() && s.completed_apps.is_empty(),
        "{s:#?}"
    );
    assert!(!mark.exists(), "the intruder's executor ran");
    assert!(fs::read_dir(&w.work_dir).unwrap().next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_or_client_without_the_secret_fails_naming_the_file() {
    let mut c = Cluster::new("secret-missing");
    let m = c.start_master(0, &[]).await;
    let elsewhere = c.dir.join("other-home");
    let file = elsewhere.join("secret");
    let worker = ["worker", &m.url, "--webui-port", "0", "--memory", "256m"];
    let in_other_home = |cmd: &mut Command| {
        cmd.env("FLINT_HOME", &elsewhere);
    };
    for args in [&worker[..], &["status", "--master", &m.url]] {
        let err = c.run_failing_with(args, in_other_home).await;
        assert!(
            err.contains(&format!("{} does not exist", file.display())),
            "{args:?}: {err}"
        );
        for needle in [
            "auth.secret_file (FLINT_AUTH_SECRET_FILE)",
            "auth.secret (FLINT_AUTH_SECRET)",
            "auth.enabled = false",
        ] {
            assert!(err.contains(needle), "{needle:?} missing: {err}");
        }
        // Nothing was invented.
        assert!(
            !elsewhere.exists(),
            "{args:?} created {}",
            elsewhere.display()
        );
    }
    // The default home is ~/.flint.
    let err = c
        .run_failing_with(&worker, |cmd| {
            cmd.env_remove("FLINT_HOME").env("HOME", &elsewhere);
        })
        .await;
    let default = elsewhere.join(".flint").join("secret");
    assert!(
        err.contains(&format!("{} does not exist", default.display())),
        "{err}"
    );
    assert!(!elsewhere.exists());
    let s = c.status(&m).await.unwrap();
    assert!(s.workers.is_empty(), "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_others_can_read_is_refused_with_the_fix() {
    let c = Cluster::new("secret-mode");
    let file = c.home.join("secret");
    let before = fs::read(&file).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let fix = format!("chmod 600 {}", file.display());
    for args in [
        &["master", "--port", "0", "--webui-port", "0"][..],
        &[
            "worker",
            "flint://127.0.0.1:1",
            "--webui-port",
            "0",
            "--memory",
            "256m",
        ],
        &["status", "--master", "flint://127.0.0.1:1"],
    ] {
        let err = c.run_failing(args).await;
        assert!(
            err.contains(&fix) && err.contains("mode 0640"),
            "{args:?}: {err}"
        );
    }
    // Refused, not replaced.
    assert_eq!(fs::read(&file).unwrap(), before);
    assert_eq!(mode(&file), 0o640);

    // A configured file is held to the same rule.
    let loose = c.dir.join("loose-secret");
    fs::write(&loose, "s3cret\n").unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    let conf = format!("auth.secret_file={}", loose.display());
    let err = c
        .run_failing(&[
            "master",
            "--port",
            "0",
            "--webui-port",
            "0",
            "--conf",
            &conf,
        ])
        .await;
    assert!(
        err.contains(&format!("chmod 600 {}", loose.display())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_enabled_false_runs_open_and_a_command_line_secret_warns() {
    let mut c = Cluster::with_fresh_home("secret-off");
    let m = c.start_master(0, &["auth.enabled=false"]).await;
    let line = c.wait_line(m.proc, "authentication: OFF").await;
    assert!(line.contains("auth.enabled = false"), "{line}");
    let w = c
        .start_worker_with(&m, 1, "256m", |cmd| {
            cmd.env("FLINT_AUTH_ENABLED", "false");
        })
        .await;
    // A client with no secret at all is served.
    c.wait_alive(&m, &[&w.id]).await;
    assert!(!c.home.exists(), "a secret was created for an open cluster");

    // A secret typed on the command line works, with a warning about `ps`.
    let typed = "typed-on-the-command-line";
    let m2 = c.start_master(0, &[&format!("auth.secret={typed}")]).await;
    let line = c.wait_line(m2.proc, "cluster secret: ").await;
    assert!(
        line.contains("from auth.secret on the command line"),
        "{line}"
    );
    wait_stderr(&mut c, m2.proc, "`ps` shows it").await;
    assert!(c.stderr(m2.proc).contains("auth.secret_file"));
    let out = c
        .run_with(&["status", "--master", &m2.url], |cmd| {
            cmd.env("FLINT_AUTH_SECRET", typed);
        })
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("`ps`"),
        "the environment is not the command line: {stderr}"
    );
    assert!(!c.home.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_get_the_secret_in_their_environment_never_on_their_command_line() {
    let mut c = Cluster::new("secret-executors");
    let secret = String::from_utf8(c.rpc_conf.secret.as_ref().unwrap().expose().to_vec()).unwrap();
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 1, "256m").await;
    c.wait_alive(&m, &[&w.id]).await;
    let script = "printf '%s' \"$FLINT_AUTH_SECRET\" > seen-secret; \
                  echo executor {{EXECUTOR_ID}} of {{APP_ID}} pid $$; exec sleep 1000";
    let mut app = App::start(&m, app_desc("env", script, Some(1), Some(1)), false).await;
    let exec = *app.wait_added(1).await.keys().next().unwrap();
    let pid = executor_pid(&w, &app.id, exec).await;
    let dir = w.work_dir.join(app.id.as_str()).join(exec.to_string());
    assert_eq!(fs::read_to_string(dir.join("seen-secret")).unwrap(), secret);
    let header = fs::read_to_string(dir.join("stderr")).unwrap();
    assert!(header.starts_with("Flint Executor Command:"), "{header}");
    assert!(!header.contains(&secret), "{header}");
    for p in [pid, c.pid(w.proc), c.pid(m.proc)] {
        let cmdline = fs::read(format!("/proc/{p}/cmdline")).unwrap();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&secret),
            "pid {p}"
        );
    }
    app.handle.stop().await;
}

// ===================================================================
// 9. A relay between a real worker and the master
// ===================================================================

/// What the relay does to the worker → master direction of its first connection.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tamper {
    None,
    /// Flip one bit in the first sealed record (the worker's registration).
    FlipBit,
    /// Forward the first record, then replay it.
    Replay,
    /// Forward the first record, then a plaintext `RegisterApplication` frame.
    Inject,
}

/// Reads one length-prefixed unit (handshake frame or sealed record).
async fn read_unit(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let mut unit = len.to_vec();
    unit.resize(4 + u32::from_be_bytes(len) as usize, 0);
    r.read_exact(&mut unit[4..]).await.ok()?;
    Some(unit)
}

/// A TCP relay to `upstream` on a free port: the first connection is tampered with
/// as `how` says (after the two handshake frames, units are sealed records); later
/// connections (the worker reconnecting) pass untouched.
async fn start_relay(upstream: RpcAddress, how: Tamper, inject: Vec<u8>) -> RpcAddress {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = RpcAddress::new("127.0.0.1", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let how = if std::mem::take(&mut first) {
                how
            } else {
                Tamper::None
            };
            let Ok(server) = tokio::net::TcpStream::connect(upstream.host_port()).await else {
                continue;
            };
            let inject = inject.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                });
                let mut index = 0usize;
                while let Some(mut unit) = read_unit(&mut cr).await {
                    let record = index.checked_sub(2);
                    index += 1;
                    if how == Tamper::FlipBit && record == Some(0) {
                        unit[12] ^= 0x04;
                    }
                    if sw.write_all(&unit).await.is_err() {
                        break;
                    }
                    if record == Some(0) {
                        let extra = match how {
                            Tamper::Replay => unit.clone(),
                            Tamper::Inject => inject.clone(),
                            _ => Vec::new(),
                        };
                        if sw.write_all(&extra).await.is_err() {
                            break;
                        }
                    }
                }
                let _ = sw.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_between_a_worker_and_the_master_can_neither_alter_nor_inject() {
    let mut c = Cluster::new("relay");
    let m = c.start_master(0, &[]).await;
    // What an attacker on the path would inject: an application whose executor
    // leaves a mark.
    let mark = c.dir.join("injected-ran");
    let script = format!("touch {}; exec sleep 1000", mark.display());
    let driver = c
        .probe
        .endpoint_ref::<AppClientMsg>(&m.addr, APP_CLIENT_ENDPOINT);
    let injected = flint_rpc::frame::encode_frame(
        &flint_rpc::frame::Header::OneWay {
            to: MASTER_ENDPOINT,
            protocol: <MasterMsg as flint_rpc::Protocol>::ID,
        },
        &MasterMsg::RegisterApplication(RegisterApplication {
            desc: app_desc("injected", &script, Some(1), Some(1)),
            driver,
        }),
    )
    .unwrap();
    let mut warnings = 0;
    for how in [
        Tamper::None,
        Tamper::FlipBit,
        Tamper::Replay,
        Tamper::Inject,
    ] {
        let relay = start_relay(m.addr.clone(), how, injected.clone()).await;
        let via = Master {
            proc: m.proc,
            url: relay.to_string(),
            addr: relay.clone(),
            rpc_conf: m.rpc_conf.clone(),
        };
        let w = c.start_worker(&via, 1, "256m").await;
        // Registration is the first record and the only one through the relay: the
        // master's answer names its own address, where the worker then sends its
        // heartbeats. A tampered registration is retried over a fresh connection.
        c.wait_alive(&m, &[&w.id]).await;
        if how != Tamper::None {
            warnings += 1;
            let worker = w.url.clone();
            wait_for(
                &format!("the master to close the tampered connection ({how:?})"),
                async || {
                    let n = c
                        .stderr(m.proc)
                        .lines()
                        .filter(|l| {
                            l.contains("WARN")
                                && l.contains(&format!("closing connection with {worker}"))
                                && l.contains("sealed record")
                        })
                        .count();
                    // Each case has its own worker, so the line names this one.
                    if n >= 1 {
                        Ok(())
                    } else {
                        Err("no such warning yet".to_string())
                    }
                },
            )
            .await;
            // The worker comes back over a fresh connection.
            c.wait_alive(&m, &[&w.id]).await;
        }
        let s = c.status(&m).await.unwrap();
        assert!(
            s.active_apps.is_empty() && s.completed_apps.is_empty(),
            "{how:?}: something injected was acted on: {s:#?}"
        );
        c.kill(w.proc);
        c.wait_status(&m, "the worker gone", |s| alive_ids(s).is_empty())
            .await;
    }
    assert_eq!(warnings, 3);
    assert!(!mark.exists(), "the injected application's executor ran");
}

// ===================================================================
// 10. No orphans: nothing an executor starts outlives its worker
// ===================================================================

/// Pids of live processes whose command line is exactly `cmdline` (argv joined by
/// spaces).
fn pids_running(cmdline: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<_> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.join(" ") == cmdline && alive(pid) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_leaves_none_of_its_executors_descendants_behind() {
    let mut c = Cluster::new("orphans");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 1, "256m").await;
    c.wait_alive(&m, &[&w.id]).await;
    // Durations unique to this run, so other tests' sleeps are never counted.
    let n = 900_000 + std::process::id() % 50_000;
    let (bg, fg, escaped) = (n, n + 1, n + 2);
    // A background child, a foreground child, and one that leaves the process
    // group (setsid), as daemons started from a task do.
    let script = format!("sleep {bg} & setsid sleep {escaped} & echo started; exec sleep {fg}");
    let _app = App::start(&m, app_desc("orphans", &script, Some(1), Some(1)), false).await;
    let mut all = Vec::new();
    for s in [bg, fg, escaped] {
        let cmd = format!("sleep {s}");
        let pids = wait_for(&format!("{cmd} to run"), async || {
            let p = pids_running(&cmd);
            if p.is_empty() {
                Err("not yet".to_string())
            } else {
                Ok(p)
            }
        })
        .await;
        all.extend(pids);
    }
    c.kill(w.proc);
    wait_gone("every process the executor started", &all).await;
    for s in [bg, fg, escaped] {
        assert!(
            pids_running(&format!("sleep {s}")).is_empty(),
            "sleep {s} survived"
        );
    }
}

// ===================================================================
// 11. Advertised addresses
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_bound_to_every_interface_advertises_the_given_address_and_workers_reach_it() {
    let mut c = Cluster::new("advertise");
    let p = c.spawn(
        "master",
        &[
            "master",
            "--host",
            "0.0.0.0",
            "--advertise-address",
            "127.0.0.1",
            "--port",
            "0",
            "--webui-port",
            "0",
            "--conf",
            "worker.timeout=2s",
        ],
    );
    let line = c.wait_line(p, "flint master listening on ").await;
    assert!(line.contains("flint://127.0.0.1:"), "{line}");
    assert!(!line.contains("0.0.0.0"), "{line}");
    let url = line["flint master listening on ".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let m = Master {
        proc: p,
        addr: RpcAddress::parse_list(&url).unwrap().remove(0),
        url,
        rpc_conf: c.rpc_conf.clone(),
    };
    let w = c.start_worker(&m, 1, "256m").await;
    let s = c.wait_alive(&m, &[&w.id]).await;
    // The master's own address in its status is the advertised one too.
    assert!(!format!("{s:?}").contains("0.0.0.0"), "{s:#?}");
}
