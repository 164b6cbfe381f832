//! Supervised cluster-mode drivers (`flint submit --supervise`) as a user meets them:
//! real `flint master` / `flint worker` processes on 127.0.0.1 (the harness in
//! `common/mod.rs`), small shell programs as drivers, uploaded by `flint submit`. A
//! worker that dies is SIGKILLed. Nothing sleeps to synchronize.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// An executable shell script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Worker settings: the harness's, with a 100 ms initial relaunch back-off.
fn worker_conf() -> Vec<&'static str> {
    let mut v = WORKER_CONF.to_vec();
    v.push("worker.driver_relaunch_initial_backoff=100ms");
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_driver_that_exits_1_is_relaunched_with_back_off_until_it_succeeds() {
    let mut c = Cluster::new("supervise-exit-1");
    let m = c.start_master(0, &[]).await;
    let w = c
        .start_worker_conf(&m, 2, "1g", &worker_conf(), |_| {})
        .await;
    c.wait_alive(&m, &[&w.id]).await;
    let apps = tempfile::tempdir().unwrap();
    let marker = c.dir.join("attempts");
    // Fails twice, then succeeds: the marker file counts the attempts.
    let app = script(
        apps.path(),
        "flaky.sh",
        "n=$(cat \"$1\" 2>/dev/null || echo 0); n=$((n+1)); echo $n > \"$1\"\n\
         echo \"attempt $n\"\n\
         [ $n -ge 3 ] && exit 0\n\
         exit 1",
    );
    let out = c
        .run(&[
            "submit",
            "--master",
            &m.url,
            "--deploy-mode",
            "cluster",
            "--supervise",
            "--driver-memory",
            "128m",
            app.to_str().unwrap(),
            marker.to_str().unwrap(),
        ])
        .await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("driver-"))
        .collect();
    let id = lines[0].split_whitespace().next().unwrap();
    assert_eq!(lines[0], format!("{id} SUBMITTED"));
    // Both relaunches are shown (the second at least by its count), and the final
    // attempt's success ends it FINISHED on the same worker, under the same id.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{id} RELAUNCHING")) && l.contains("(relaunch 2)")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(
                |l| l.starts_with(&format!("{id} RELAUNCHING")) && l.contains("(relaunch 1)")
                    || l.starts_with(&format!("{id} RUNNING")) && l.contains("(relaunch 1)")
            ),
        "{stdout}"
    );
    assert_eq!(
        *lines.last().unwrap(),
        format!("{id} FINISHED on {} (relaunch 2)", w.id),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "3");
    // The driver's stdout holds every attempt; the worker backed off 100 ms, then 200.
    let log = std::fs::read_to_string(w.work_dir.join(id).join("stdout")).unwrap();
    assert_eq!(log, "attempt 1\nattempt 2\nattempt 3\n");
    let worker_log =
        c.stderr(w.proc) + &std::fs::read_to_string(&c.procs[w.proc.0].stdout).unwrap();
    assert!(
        worker_log.contains("re-launching after 100 ms"),
        "{worker_log}"
    );
    assert!(
        worker_log.contains("re-launching after 200 ms"),
        "{worker_log}"
    );
    // Status names the relaunches too.
    let out = c.run(&["status", "--master", &m.url, id]).await;
    let line = text(&out.stdout);
    assert!(
        line.starts_with(&format!("{id} FINISHED on {} (127.0.0.1:", w.id))
            && line.trim_end().ends_with(") (relaunch 2)"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_drivers_worker_relaunches_it_elsewhere_and_kill_ends_it_killed() {
    let mut c = Cluster::new("supervise-worker-lost");
    let m = c.start_master(0, &[]).await;
    let w1 = c
        .start_worker_conf(&m, 2, "1g", &worker_conf(), |_| {})
        .await;
    c.wait_alive(&m, &[&w1.id]).await;
    let apps = tempfile::tempdir().unwrap();
    let pids = c.dir.join("pids");
    let app = script(
        apps.path(),
        "server.sh",
        "echo $$ >> \"$1\"; echo \"up as $$\"; exec sleep 1000",
    );
    let out = c
        .run(&[
            "submit",
            "--master",
            &m.url,
            "--deploy-mode",
            "cluster",
            "--supervise",
            "--no-wait",
            "--driver-memory",
            "128m",
            app.to_str().unwrap(),
            pids.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let old = text(&out.stdout).lines().last().unwrap().trim().to_string();
    assert!(old.starts_with("driver-"), "{old}");
    let first_pid: u32 = wait_for("the first attempt's pid", async || {
        std::fs::read_to_string(&pids)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())
    })
    .await;
    let w2 = c
        .start_worker_conf(&m, 2, "1g", &worker_conf(), |_| {})
        .await;
    c.wait_alive(&m, &[&w1.id, &w2.id]).await;

    // The driver's worker dies: the driver dies with it and the master relaunches it,
    // under a new id, on the other worker.
    c.kill(w1.proc);
    wait_gone("the first attempt", &[first_pid]).await;
    let line = wait_for("the driver RUNNING on the second worker", async || {
        let out = c.run(&["status", "--master", &m.url, &old]).await;
        let line = text(&out.stdout).trim().to_string();
        if out.status.success() && line.contains(&format!(" RUNNING on {} (", w2.id)) {
            Ok(line)
        } else {
            Err(format!("{line} {}", text(&out.stderr)))
        }
    })
    .await;
    let new = line.split_whitespace().next().unwrap().to_string();
    assert_ne!(new, old);
    assert!(
        line.ends_with(&format!("(relaunch 1) (relaunched from {old})")),
        "{line}"
    );
    let second_pid: u32 = wait_for("the second attempt's pid", async || {
        let text = std::fs::read_to_string(&pids).map_err(|e| e.to_string())?;
        let v: Vec<&str> = text.lines().collect();
        match v.as_slice() {
            [_, p] => p
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string()),
            _ => Err(text.clone()),
        }
    })
    .await;
    assert!(alive(second_pid));
    // The old id's own record says RELAUNCHING (asked without following).
    let s = c.status(&m).await.unwrap();
    let old_rec = s
        .completed_drivers
        .iter()
        .find(|d| d.id.to_string() == old)
        .unwrap();
    assert_eq!(old_rec.state, flint_proto::DriverState::Relaunching);

    // kill by the old id reaches the newest attempt: KILLED, not relaunched.
    let out = c.run(&["kill", "--master", &m.url, &old]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with(&format!("{new} KILLED on {}", w2.id)),
        "{stdout}"
    );
    wait_gone("the killed attempt", &[second_pid]).await;
    let s = c.status(&m).await.unwrap();
    assert!(s.active_drivers.is_empty(), "{:?}", s.active_drivers);
    assert_eq!(std::fs::read_to_string(&pids).unwrap().lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_the_back_off_ends_a_supervised_driver_killed_and_client_mode_refuses_supervise(
) {
    let mut c = Cluster::new("supervise-kill");
    let m = c.start_master(0, &[]).await;
    // A long back-off: the kill arrives while the worker waits to relaunch.
    let mut conf = WORKER_CONF.to_vec();
    conf.push("worker.driver_relaunch_initial_backoff=60s");
    let w = c.start_worker_conf(&m, 2, "1g", &conf, |_| {}).await;
    c.wait_alive(&m, &[&w.id]).await;
    let apps = tempfile::tempdir().unwrap();
    let app = script(apps.path(), "fails.sh", "echo failing; exit 1");
    let submit = c.spawn(
        "submit",
        &[
            "submit",
            "--master",
            &m.url,
            "--deploy-mode",
            "cluster",
            "--supervise",
            "--driver-memory",
            "128m",
            app.to_str().unwrap(),
        ],
    );
    let line = c.wait_line(submit, "driver-").await;
    let id = line.split_whitespace().next().unwrap().to_string();
    let relaunching = c.wait_line(submit, &format!("{id} RELAUNCHING")).await;
    assert!(
        relaunching.contains("(relaunch 1): command exited with code 1; relaunching in 60000 ms"),
        "{relaunching}"
    );
    let out = c.run(&["status", "--master", &m.url, &id]).await;
    assert!(
        text(&out.stdout).starts_with(&format!("{id} RELAUNCHING on {}", w.id)),
        "{}",
        text(&out.stdout)
    );
    let out = c.run(&["kill", "--master", &m.url, &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("{id} KILLED on {}", w.id)),
        "{}",
        text(&out.stdout)
    );
    // The waiting submit sees the end: KILLED, exit 3.
    let status = c.wait_exit(submit).await;
    assert_eq!(status.code(), Some(3));
    let s = c.status(&m).await.unwrap();
    assert!(s.active_drivers.is_empty());
    let log = std::fs::read_to_string(w.work_dir.join(&id).join("stdout")).unwrap();
    assert_eq!(log, "failing\n", "ran once, never relaunched");

    // --supervise in client mode: a usage error, nothing runs.
    let out = c
        .run(&[
            "submit",
            "--master",
            &m.url,
            "--supervise",
            app.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--supervise needs --deploy-mode cluster"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("failing"));
}
