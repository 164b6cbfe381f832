//! Bad workers isolated and fast recovery, with real `flint master` and
//! `flint worker` processes on 127.0.0.1 and applications registered through
//! `flint-client` from the test process.
//!
//! - One worker whose work dir turns read-only after it started (a read-only
//!   bind mount of the dir onto itself: as root, `chmod` would not stop the
//!   worker) and one healthy worker: the app runs on the healthy one, and
//!   the master's status (`RequestMasterState`) shows the bad worker
//!   unhealthy with the reason. Where mounting is not permitted, the work
//!   dir is replaced by a regular file instead, which fails launches for
//!   root as well.
//! - A master restarted on the same port has its workers back (ALIVE)
//!   within a second of printing its listening line, with the workers'
//!   default registration schedule (Spark's would take 5–15 s).
//!
//! The harness is `common/mod.rs`, shared with `cluster.rs`: every wait polls a
//! condition against a deadline; nothing sleeps to synchronize.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{App, Cluster, Worker, FLINT, PATIENCE};
use flint_client::AppEvent;
use flint_proto::{
    ApplicationDescription, ApplicationState, ExecutorCommand, ExecutorState, WorkerState,
};

/// Settings the workers here get: `cluster.rs`'s timeout, kill grace and no
/// cleanup, but the default registration schedule (what recovery is measured
/// against).
const WORKER_CONF: &[&str] = &[
    "worker.timeout=2s",
    "worker.executor_kill_grace=1s",
    "worker.cleanup.enabled=false",
];
/// An executor that stays up.
const SLEEPER: &str = "exec sleep 1000";

/// A worker with `cores` and 512 MiB, on the default registration schedule.
async fn start_worker(c: &mut Cluster, m: &common::Master, cores: u32) -> Worker {
    c.start_worker_conf(m, cores, "512m", WORKER_CONF, |_| {})
        .await
}

/// Makes a running worker's work dir refuse new directories, for root too: a
/// read-only bind mount of the dir onto itself (undone when the cluster drops),
/// or, where this sandbox cannot mount, a regular file in its place. Returns
/// which.
fn break_work_dir(c: &mut Cluster, w: &Worker) -> &'static str {
    let dir = w.work_dir.to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if run(&["mount", "--bind", dir, dir]) {
        c.mounts.push(w.work_dir.clone());
        if run(&["mount", "-o", "remount,bind,ro", dir]) {
            assert!(
                fs::create_dir(w.work_dir.join("probe")).is_err(),
                "the read-only bind mount still takes new dirs"
            );
            return "a read-only bind mount";
        }
    }
    for m in c.mounts.drain(..) {
        let _ = Command::new("umount").arg(&m).status();
    }
    fs::remove_dir_all(&w.work_dir).unwrap();
    fs::write(&w.work_dir, b"not a directory").unwrap();
    "a regular file in place of the work dir"
}

fn sleeper_app(name: &str, max_cores: u32) -> ApplicationDescription {
    let mut command = ExecutorCommand::new("/bin/sh");
    command.args = vec!["-c".into(), SLEEPER.into()];
    let mut desc = ApplicationDescription::new(name, command);
    desc.cores_per_executor = Some(1);
    desc.max_cores = Some(max_cores);
    desc.memory_per_executor_mb = 64;
    desc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_runs_on_the_healthy_worker_and_the_status_says_why_the_bad_one_is_excluded() {
    let mut c = Cluster::new("bad-worker");
    let m = c.start_master(0, &[]).await;
    let bad = start_worker(&mut c, &m, 2).await;
    let good = start_worker(&mut c, &m, 2).await;
    c.wait_alive_within(&m, &[&bad.id, &good.id], PATIENCE)
        .await;
    let how = break_work_dir(&mut c, &bad);
    eprintln!("the bad worker's work dir was broken with {how}");

    // Four 1-core executors: two fit on each worker.
    let mut app = App::start(&m, sleeper_app("isolated", 4), true).await;
    let s = c
        .wait_status_within(
            &m,
            "the bad worker unhealthy, the app RUNNING on the good one",
            PATIENCE,
            |s| {
                let unhealthy = s
                    .workers
                    .iter()
                    .any(|w| w.id.as_str() == bad.id && w.unhealthy.is_some());
                let on_good = s.active_apps.iter().any(|a| {
                    a.id == app.id
                        && a.executors.len() == 2
                        && a.executors.iter().all(|e| {
                            e.worker_id.as_str() == good.id && e.state == ExecutorState::Running
                        })
                });
                unhealthy && on_good
            },
        )
        .await;

    // Why the bad worker is excluded: the evidence and the OS's error.
    let w = s.workers.iter().find(|w| w.id.as_str() == bad.id).unwrap();
    let why = w.unhealthy.as_deref().unwrap();
    assert_eq!(w.state, WorkerState::Alive, "unhealthy, not dead");
    assert!(
        why.contains(&format!(
            "executors of {} failed here while it runs on {}",
            app.id, good.id
        )),
        "{why}"
    );
    let os_error = if how.contains("mount") {
        "Read-only file system"
    } else {
        "Not a directory"
    };
    assert!(why.contains(os_error), "{why}");
    assert!(why.contains("no new executors for"), "{why}");
    let good_status = s.workers.iter().find(|w| w.id.as_str() == good.id).unwrap();
    assert_eq!(good_status.unhealthy, None);
    let a = s.active_apps.iter().find(|a| a.id == app.id).unwrap();
    assert_eq!(a.state, ApplicationState::Running);

    // deploy.max_failures_per_worker (3) launches failed on the bad worker,
    // each relaunch after a back-off; the app was never removed.
    let removed = app
        .wait_events("three failed executors", 3, |e| {
            matches!(e, AppEvent::ExecutorRemoved { .. })
        })
        .await;
    for e in &removed {
        let AppEvent::ExecutorRemoved { message, .. } = e else {
            unreachable!()
        };
        assert!(message.contains(os_error), "{e:?}");
    }
    app.drain();
    assert!(
        !app.seen.iter().any(|e| matches!(e, AppEvent::Dead(_))),
        "{:#?}",
        app.seen
    );
    let removed = app
        .seen
        .iter()
        .filter(|e| matches!(e, AppEvent::ExecutorRemoved { .. }))
        .count();
    assert_eq!(removed, 3, "{:#?}", app.seen);
    let log = c.stderr(m.proc);
    assert!(
        log.contains(&format!(
            "Not placing executors of {} on worker {} any more: 3 of them failed there",
            app.id, bad.id
        )),
        "no exclusion line in the master's log"
    );
    assert!(log.contains(&format!("Worker {} is unhealthy: ", bad.id)));
    assert!(!log.contains("removing it"), "an app was removed");

    // `flint status` tells the operator too.
    let out = Command::new(FLINT)
        .args(["status", "--master", &m.url])
        .env("FLINT_HOME", &c.home)
        .env_remove("FLINT_AUTH_SECRET")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("unhealthy {}: ", bad.id)) && text.contains(os_error),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_on_the_same_port_has_its_workers_back_within_a_second() {
    let mut c = Cluster::new("restart-fast");
    let m = c.start_master(0, &[]).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(start_worker(&mut c, &m, 1).await);
    }
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    c.wait_alive_within(&m, &ids, PATIENCE).await;
    let port = m.addr.port;

    // A crash (SIGKILL: the workers see their connections drop), then a
    // clean stop (SIGTERM); each time a new master on the same port.
    let mut old = m;
    for crash in [true, false] {
        if crash {
            c.kill(old.proc);
        } else {
            c.terminate(old.proc);
            let status = c.wait_exit(old.proc).await;
            assert_eq!(status.code(), Some(0), "master exit: {status}");
        }
        let (m, listening) = c.start_master_at(port, &[]).await;
        assert_eq!(m.url, old.url);
        // Polls until ALIVE for up to 1 s after the listening line.
        let s = c.wait_alive_within(&m, &ids, Duration::from_secs(1)).await;
        let back = listening.elapsed();
        eprintln!(
            "after a {}, all workers ALIVE {back:?} after the master's listening line",
            if crash { "crash" } else { "clean stop" }
        );
        assert!(back <= Duration::from_secs(1), "{back:?}");
        assert_eq!(s.alive_workers, 3);
        old = m;
    }
    // The same worker processes throughout, re-registering on their own.
    for w in &workers {
        assert!(c.exited(w.proc).is_none(), "{} exited", w.id);
        let log = c.stderr(w.proc);
        assert!(
            log.contains("Retrying connection to master (quick retry after"),
            "{}: no quick retry in its log",
            w.id
        );
    }
}
