//! Stopping a context under a running job, and the executor hook of `get_or_create`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use flint::prelude::*;

fn wait_for(what: &str, deadline: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn stop_ends_a_running_job_with_stopped_and_later_jobs_too() {
    let tmp = tempfile::tempdir().unwrap();
    let started = tmp.path().join("started").display().to_string();
    let release = tmp.path().join("release").display().to_string();
    let ctx = Context::builder().master("local[1]").create().unwrap();
    let job = {
        let ctx = ctx.clone();
        let (started, release) = (started.clone(), release.clone());
        std::thread::spawn(move || {
            ctx.range(0, 1, 1)
                .foreach_with((started, release), |(started, release), _| {
                    std::fs::write(started, b"").unwrap();
                    // Held until the test lets go (at most 30 s).
                    let t = Instant::now();
                    while !Path::new(release).exists() && t.elapsed() < Duration::from_secs(30) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
        })
    };
    wait_for("the task to start", Duration::from_secs(30), || {
        Path::new(&started).exists()
    });
    ctx.stop().unwrap();
    let r = job.join().unwrap();
    assert!(matches!(r, Err(Error::Stopped)), "{r:?}");
    std::fs::write(&release, b"").unwrap();
    assert!(matches!(ctx.range(0, 1, 1).count(), Err(Error::Stopped)));
}

/// Run by the next test in a child process with the worker's executor variable set.
#[test]
#[ignore = "run as a child by executor_hook_refuses_to_act_as_a_driver"]
fn child_calls_get_or_create() {
    if std::env::var_os("FLINT_EXECUTOR_DRIVER_URL").is_none() {
        return; // run directly with --ignored: nothing to check
    }
    let e = Context::builder()
        .master("local[1]")
        .get_or_create()
        .unwrap_err();
    println!("CHILD-ERROR: {e}");
}

#[test]
fn executor_hook_refuses_to_act_as_a_driver() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_calls_get_or_create",
            "--nocapture",
        ])
        .env("FLINT_EXECUTOR_DRIVER_URL", "flint://127.0.0.1:1/driver")
        .output()
        .unwrap();
    // The process is an executor from get_or_create on: it never returns to the
    // program; with a driver URL no worker would give it exits, naming the variable.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(!stdout.contains("CHILD-ERROR"), "{stdout}");
    assert!(stderr.contains("FLINT_EXECUTOR_DRIVER_URL"), "{stderr}");
}

/// Run by the next test in a child process with FLINT_MASTER and a FLINT_* setting set.
#[test]
#[ignore = "run as a child by the master_and_settings_come_from_the_environment_when_code_gives_none"]
fn child_reports_its_master_and_attempts() {
    if std::env::var_os("FLINT_MASTER").is_none() {
        return; // run directly with --ignored: nothing to check
    }
    let ctx = Context::builder().create().unwrap();
    let e = ctx
        .range(0, 2, 1)
        .map(|x| -> u64 { panic!("always {x}") })
        .count()
        .unwrap_err();
    let Error::JobFailed { attempts, .. } = e else {
        panic!("{e}")
    };
    println!(
        "CHILD: {} {} {}",
        ctx.master(),
        ctx.default_parallelism(),
        attempts.len()
    );
    // Code wins over the environment.
    let ctx = Context::builder()
        .master("local[2]")
        .conf("task.max_failures", "1")
        .create()
        .unwrap();
    let e = ctx
        .range(0, 2, 1)
        .map(|x| -> u64 { panic!("always {x}") })
        .count()
        .unwrap_err();
    let Error::JobFailed { attempts, .. } = e else {
        panic!("{e}")
    };
    println!(
        "CHILD: {} {} {}",
        ctx.master(),
        ctx.default_parallelism(),
        attempts.len()
    );
}

#[test]
fn master_and_settings_come_from_the_environment_when_code_gives_none() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_reports_its_master_and_attempts",
            "--nocapture",
        ])
        .env("FLINT_MASTER", "local[3]")
        .env("FLINT_TASK_MAX_FAILURES", "2")
        .env_remove("FLINT_CONF_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("CHILD: "))
        .collect();
    assert_eq!(
        lines,
        vec!["CHILD: local[3] 3 2", "CHILD: local[2] 2 1"],
        "{stdout}"
    );
}
