//! `flint logs`, and `flint status` / `flint kill` by application id, as a user runs
//! them: real `flint master` / `flint worker` processes on 127.0.0.1, shell programs
//! as drivers (uploaded by `flint submit`) and as executors (an application
//! registered from the test). Nothing sleeps to synchronize.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Submits `app args…` in cluster mode with --no-wait; returns the driver id.
async fn submit(c: &Cluster, m: &Master, app: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "submit",
        "--master",
        &m.url,
        "--deploy-mode",
        "cluster",
        "--no-wait",
        "--driver-memory",
        "128m",
        app.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = c.run(&all).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).lines().last().unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_prints_tails_and_follows_a_driver_and_rolls_big_output() {
    let mut c = Cluster::new("logs-driver");
    let m = c.start_master(0, &[]).await;
    let mut conf = WORKER_CONF.to_vec();
    conf.push("worker.log.max_size=4k");
    let w = c.start_worker_conf(&m, 2, "1g", &conf, |_| {}).await;
    c.wait_alive(&m, &[&w.id]).await;
    let apps = tempfile::tempdir().unwrap();
    let go = c.dir.join("go");
    // Two lines, then a third once the test says go, then exit 0.
    let app = script(
        apps.path(),
        "talker.sh",
        "echo 'line one'; echo 'line two'\n\
         while [ ! -e \"$1\" ]; do sleep 0.02; done\n\
         echo 'line three'",
    );
    let id = submit(&c, &m, &app, &[go.to_str().unwrap()]).await;

    let printed = wait_for("flint logs to print the first two lines", async || {
        let out = c.run(&["logs", "--master", &m.url, &id]).await;
        let s = text(&out.stdout);
        if out.status.success() && s == "line one\nline two\n" {
            Ok(s)
        } else {
            Err(format!("{s:?} {}", text(&out.stderr)))
        }
    })
    .await;
    assert_eq!(printed, "line one\nline two\n");
    let out = c
        .run(&["logs", "--master", &m.url, "--tail", "1", &id])
        .await;
    assert_eq!(text(&out.stdout), "line two\n");
    let out = c.run(&["logs", "--master", &m.url, "--stderr", &id]).await;
    assert!(
        text(&out.stdout).starts_with("Flint Driver Command: "),
        "{}",
        text(&out.stdout)
    );

    // --follow sees the line printed later and ends when the driver ends.
    let follow = c.spawn("follow", &["logs", "--master", &m.url, "--follow", &id]);
    c.wait_line(follow, "line two").await;
    std::fs::write(&go, "").unwrap();
    c.wait_line(follow, "line three").await;
    let status = c.wait_exit(follow).await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&c.procs[follow.0].stdout).unwrap(),
        "line one\nline two\nline three\n"
    );

    // A driver writing 50 KB past a 4 KiB limit leaves three bounded files.
    let big = script(
        apps.path(),
        "big.sh",
        "i=0; while [ $i -lt 1000 ]; do echo \"line $i of the chatty driver...........\"; i=$((i+1)); done",
    );
    let id = submit(&c, &m, &big, &[]).await;
    c.wait_status(&m, "the chatty driver finished", |s| {
        s.completed_drivers
            .iter()
            .any(|d| d.id.to_string() == id && d.state == flint_proto::DriverState::Finished)
    })
    .await;
    let dir = w.work_dir.join(&id);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stdout"))
        .collect();
    names.sort();
    assert_eq!(names, ["stdout", "stdout.1", "stdout.2"]);
    for n in &names {
        let len = std::fs::metadata(dir.join(n)).unwrap().len();
        assert!(len <= 4096, "{n} is {len} bytes");
    }
    assert_eq!(std::fs::metadata(dir.join("stdout.1")).unwrap().len(), 4096);
    // The current file ends with the last line; `flint logs` prints it.
    let out = c
        .run(&["logs", "--master", &m.url, "--tail", "1", &id])
        .await;
    assert_eq!(
        text(&out.stdout),
        "line 999 of the chatty driver...........\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_logs_and_status_and_kill_by_app_id_and_bad_ids_are_named() {
    let mut c = Cluster::new("logs-app");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 2, "1g").await;
    c.wait_alive(&m, &[&w.id]).await;
    let mut app = App::start(&m, app_desc("sleepy", SLEEPER, Some(1), Some(1)), false).await;
    let added = app.wait_added(1).await;
    let exec = *added.keys().next().unwrap();
    let pid = executor_pid(&w, &app.id, exec).await;
    let app_id = app.id.to_string();

    let target = format!("{app_id}/{exec}");
    let out = c.run(&["logs", "--master", &m.url, &target]).await;
    assert_eq!(
        text(&out.stdout),
        format!("executor {exec} of {app_id} pid {pid}\n"),
        "{}",
        text(&out.stderr)
    );

    let out = c.run(&["status", "--master", &m.url, &app_id]).await;
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{app_id} RUNNING name=sleepy cores=1 executors=1/1")
    );
    let out = c
        .run(&["status", "--master", &m.url, "--json", &app_id])
        .await;
    let doc: flint_proto::status::AppStatusJson = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc.id.to_string(), doc.executors.len()),
        (app_id.clone(), 1)
    );

    let out = c.run(&["kill", "--master", &m.url, &app_id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("{app_id} KILLED name=sleepy")),
        "{}",
        text(&out.stdout)
    );
    wait_gone("the killed app's executor", &[pid]).await;
    app.wait_events("the app removed", 1, |e| {
        matches!(e, flint_client::AppEvent::Dead(_))
    })
    .await;

    // Bad and unknown ids: exit 1 with a message naming what was wrong.
    let unknown_app = format!("{app_id}9");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["logs", "nope"], "\"nope\" is not a driver id".into()),
        (
            vec!["logs", "../../etc/passwd"],
            "\"..\" is not an application id".into(),
        ),
        (
            vec!["logs", "app-x/0"],
            "no master knows application app-x".into(),
        ),
        (
            vec!["logs", "app-1/x"],
            "\"x\" is not an executor id".into(),
        ),
        (
            vec!["logs", &app_id],
            "is an application; name one of its executors".into(),
        ),
        (
            vec!["logs", "driver-20260101000000-0042"],
            "no master knows driver driver-20260101000000-0042".into(),
        ),
        (
            vec!["status", &unknown_app],
            format!("no master knows application {unknown_app}"),
        ),
        (
            vec!["kill", &unknown_app],
            format!("cannot kill application {unknown_app}"),
        ),
    ];
    let bad_exec = format!("{app_id}/7");
    let mut cases = cases;
    cases.push((
        vec!["logs", &bad_exec],
        format!("application {app_id} has no executor 7"),
    ));
    for (args, expected) in &cases {
        let mut all = vec![args[0], "--master", &m.url];
        all.extend_from_slice(&args[1..]);
        let e = c.run_failing(&all).await;
        assert!(e.contains(expected.as_str()), "{args:?}: {e}");
    }
}
