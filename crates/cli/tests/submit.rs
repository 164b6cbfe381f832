//! `flint submit` as a user runs it: real `flint master` / `flint worker` processes on
//! 127.0.0.1 (the harness in `common/mod.rs`), the flint `pi` example as the
//! application, and small shell programs where only the hand-over (environment, exit
//! status, arguments) is under test. Nothing sleeps to synchronize.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The flint `pi` example, built if needed (a no-op when fresh).
fn pi_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let path = me
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("pi");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "-q", "-p", "flint", "--example", "pi"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        built && path.exists(),
        "cannot build {} (cargo build -p flint --example pi)",
        path.display()
    );
    path
}

/// Stops the master with SIGTERM, so that it removes its binary store (a SIGKILL on
/// drop would leave it in the temp dir).
async fn stop_master(c: &mut Cluster, m: &Master) {
    c.terminate(m.proc);
    c.wait_exit(m.proc).await;
}

/// An executable shell script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_runs_pi_on_the_cluster_with_the_settings_given() {
    let pi = pi_binary();
    let mut c = Cluster::new("submit-client-pi");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 2, "1g").await;
    c.wait_alive(&m, &[&w.id]).await;
    let out = c
        .run(&[
            "submit",
            "--master",
            &m.url,
            "--executor-cores",
            "1",
            "--total-executor-cores",
            "2",
            "--executor-memory",
            "256m",
            pi.to_str().unwrap(),
            "4",
        ])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Pi is roughly "))
        .unwrap_or_else(|| panic!("no estimate in:\n{stdout}\n{stderr}"));
    let pi_value: f64 = line["Pi is roughly ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((pi_value - std::f64::consts::PI).abs() < 0.01, "{line}");
    assert!(line.contains("in 4 tasks on flint://127.0.0.1:"), "{line}");
    // The settings reached the driver: two executors of one core each.
    let s = c
        .wait_status(&m, "the app completed", |s| {
            s.completed_apps.iter().any(|a| a.name == "pi")
        })
        .await;
    let app = s.completed_apps.iter().find(|a| a.name == "pi").unwrap();
    assert_eq!(app.executors.len(), 2, "{app:#?}");
    assert!(app.executors.iter().all(|e| e.cores == 1), "{app:#?}");
    stop_master(&mut c, &m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_hands_settings_through_the_environment_and_returns_the_exit_status() {
    let c = Cluster::new("submit-client-env");
    let dir = c.dir.join("apps");
    std::fs::create_dir_all(&dir).unwrap();
    let app = script(
        &dir,
        "app.sh",
        "echo \"master=$FLINT_MASTER name=$FLINT_DRIVER_APP_NAME mem=$FLINT_EXECUTOR_MEMORY \
         tries=$FLINT_TASK_MAX_FAILURES dmem=$FLINT_DRIVER_MEMORY_MB secret=${FLINT_AUTH_SECRET:+set}\"\n\
         echo \"args=$*\"\n\
         tr '\\0' ' ' < /proc/$$/cmdline; echo\n\
         exit 3",
    );
    let out = c
        .run(&[
            "submit",
            "--master",
            "flint://127.0.0.1:1,127.0.0.1:2",
            "--name",
            "mine",
            "--conf",
            "executor.memory=1g",
            "--executor-memory",
            "2g",
            "--conf",
            "task.max_failures=7",
            "--conf",
            "auth.secret=s3cr3t-value",
            "--driver-memory",
            "1g",
            app.to_str().unwrap(),
            "--name",
            "x y",
        ])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "master=flint://127.0.0.1:1,127.0.0.1:2 name=mine mem=2g tries=7 dmem=1024 secret=set"
    );
    assert_eq!(lines[1], "args=--name x y");
    // The driver's command line holds its arguments, never the secret.
    assert!(!lines[2].contains("s3cr3t"), "{}", lines[2]);

    // A driver killed by a signal: 128 + N.
    let killed = script(&dir, "killed.sh", "kill -KILL $$");
    let out = c
        .run(&[
            "submit",
            "--master",
            "flint://h:1",
            killed.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(128 + 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_named_and_exit_2() {
    let c = Cluster::new("submit-bad-args");
    let dir = c.dir.join("apps");
    std::fs::create_dir_all(&dir).unwrap();
    let ok = script(&dir, "ok.sh", "echo ran; exit 0");
    let ok = ok.to_str().unwrap();
    let plain = dir.join("plain");
    std::fs::write(&plain, "not a program").unwrap();
    let plain = plain.to_str().unwrap();
    let missing = dir.join("missing");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--master", "flint://h:1", missing],
            "missing cannot be read",
        ),
        (
            &["--master", "flint://h:1", plain],
            "is not executable; chmod +x it",
        ),
        (
            &["--master", "http://h:1", ok],
            "--master \"http://h:1\" is not a cluster master",
        ),
        (
            &["--master", "flint://h:1", "--bogus", ok],
            "unexpected argument '--bogus'",
        ),
        (
            &["--master", "flint://h:1", "--executor-memory", "2x", ok],
            "--executor-memory 2x is not a size",
        ),
        (
            &["--master", "flint://h:1", "--driver-memory", "lots", ok],
            "--driver-memory lots is not a size",
        ),
        (
            &[
                "--master",
                "flint://h:1",
                "--conf",
                "executor.memroy=1g",
                ok,
            ],
            "executor.memory",
        ),
        (&["--master", "flint://h:1"], "<BINARY [ARGS]>"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        let out = c.run(&all).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stdout.contains("ran"), "{args:?} ran the program");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_kill_follow_a_cluster_mode_driver_to_killed() {
    use flint_proto::messages::{MasterMsg, RequestSubmitDriver, MASTER_ENDPOINT};
    use flint_proto::{DriverDescription, ExecutorCommand};
    let mut c = Cluster::new("submit-kill-driver");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 2, "1g").await;
    c.wait_alive(&m, &[&w.id]).await;
    let pid_file = c.dir.join("driver.pid");
    let mut cmd = ExecutorCommand::new("/bin/sh");
    cmd.args = vec![
        "-c".into(),
        format!("echo $$ > {}; exec sleep 1000", pid_file.display()),
    ];
    let mut desc = DriverDescription::new("flint://127.0.0.1:1/files/none", cmd);
    desc.cores = 1;
    desc.memory_mb = 256;
    let answer = c
        .probe
        .endpoint_ref::<MasterMsg>(&m.addr, MASTER_ENDPOINT)
        .ask(RequestSubmitDriver { desc })
        .await
        .unwrap();
    assert!(answer.success, "{answer:?}");
    let id = answer.driver_id.unwrap().to_string();
    let pid: u32 = wait_for("the driver's pid file", async || {
        std::fs::read_to_string(&pid_file)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())
    })
    .await;
    assert!(alive(pid));

    let out = c.run(&["status", "--master", &m.url, &id]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{id} RUNNING on {} (127.0.0.1:", w.id)),
        "{stdout}"
    );

    let out = c.run(&["kill", "--master", &m.url, &id]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(&format!("{id} KILLED")), "{stdout}");
    wait_gone("the killed driver", &[pid]).await;
    let out = c.run(&["status", "--master", &m.url, &id]).await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{id} KILLED")));

    // Unknown and malformed ids are named.
    let unknown = format!("{}9", id);
    let e = c.run_failing(&["kill", "--master", &m.url, &unknown]).await;
    assert!(e.contains(&unknown), "{e}");
    let e = c.run_failing(&["status", "--master", &m.url, "nope"]).await;
    assert!(e.contains("\"nope\" is not a driver id"), "{e}");
    stop_master(&mut c, &m).await;
}

/// The `Pi is roughly` line some driver wrote to its stdout under `work_dir`.
fn driver_output(work_dir: &Path) -> Option<String> {
    let mut dirs = vec![work_dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|n| n == "stdout") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if let Some(l) = text.lines().find(|l| l.starts_with("Pi is roughly ")) {
                    return Some(l.to_string());
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_uploads_once_and_a_worker_runs_the_driver() {
    use flint_proto::messages::{BinaryStoreMsg, LookupBinary, BINARY_STORE_ENDPOINT};
    let pi = pi_binary();
    let mut c = Cluster::new("submit-cluster-pi");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 2, "2g").await;
    c.wait_alive(&m, &[&w.id]).await;
    // The binary sits where no worker looks: a directory of the submitter's own,
    // removed once the driver is running.
    let outside = tempfile::tempdir().unwrap();
    let app = outside.path().join("my-pi");
    std::fs::copy(&pi, &app).unwrap();
    let submit = |extra: &[&str]| {
        let mut v = vec![
            "submit".to_string(),
            "--master".into(),
            m.url.clone(),
            "--deploy-mode".into(),
            "cluster".into(),
            "--driver-memory".into(),
            "256m".into(),
            "--executor-memory".into(),
            "256m".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(app.to_str().unwrap().to_string());
        v.push("4".into());
        v
    };
    let args = submit(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.run(&args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("uploaded to the master"), "{stdout}");
    let lines: Vec<_> = stdout
        .lines()
        .filter(|l| l.starts_with("driver-"))
        .collect();
    let id = lines[0].split_whitespace().next().unwrap();
    assert_eq!(lines[0], format!("{id} SUBMITTED"), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{id} RUNNING on {}", w.id))),
        "{stdout}"
    );
    assert_eq!(
        *lines.last().unwrap(),
        format!("{id} FINISHED on {}", w.id),
        "{stdout}"
    );
    let line = driver_output(&w.work_dir).expect("the driver's estimate in its stdout");
    let value: f64 = line["Pi is roughly ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((value - std::f64::consts::PI).abs() < 0.01, "{line}");

    // The same binary again, with --no-wait: nothing is uploaded, the id comes back.
    let args = submit(&["--no-wait"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.run(&args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("already on the master; not sent"),
        "{stdout}"
    );
    let id2 = stdout.lines().last().unwrap().trim().to_string();
    assert!(id2.starts_with("driver-") && id2 != id, "{stdout}");
    let lookup = c
        .probe
        .endpoint_ref::<BinaryStoreMsg>(&m.addr, BINARY_STORE_ENDPOINT)
        .ask(LookupBinary {
            sha256: "0".repeat(64),
        })
        .await
        .unwrap();
    assert_eq!(lookup.uploads, 1, "{lookup:?}");
    drop(outside);
    c.wait_status(&m, "the second driver finished", |s| {
        s.completed_drivers
            .iter()
            .any(|d| d.id.to_string() == id2 && d.state == flint_proto::DriverState::Finished)
    })
    .await;
    stop_master(&mut c, &m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_mode_driver_that_fails_is_reported_with_exit_1_past_a_master_that_is_down() {
    let mut c = Cluster::new("submit-cluster-fail");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 2, "1g").await;
    c.wait_alive(&m, &[&w.id]).await;
    let outside = tempfile::tempdir().unwrap();
    let app = script(outside.path(), "fails.sh", "echo \"args $*\"; exit 7");
    // The first master of the list is down: the binary goes to the next one.
    let masters = format!(
        "flint://127.0.0.1:1,{}",
        m.url.trim_start_matches("flint://")
    );
    let out = c
        .run(&[
            "submit",
            "--master",
            &masters,
            "--deploy-mode",
            "cluster",
            "--driver-memory",
            "128m",
            app.to_str().unwrap(),
            "a",
        ])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().last().unwrap().contains(" FAILED"),
        "{stdout}"
    );
    stop_master(&mut c, &m).await;
}
