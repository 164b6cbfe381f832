//! Losing a whole worker (its daemon and its executor SIGKILLed, as when a machine
//! dies) after a map stage finished, on a real cluster — a master and two workers,
//! each its own process, with the shuffle service on: the map outputs that lived on
//! that host are lost with it (the shuffle service that served them is gone), so
//! exactly the map tasks that ran there run again, on the surviving worker, and the
//! answer is the same (`harness = false`: this binary is also the driver and, started
//! by the workers, the executors).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

#[path = "cluster_common/mod.rs"]
mod cluster_common;
use cluster_common::{map_runs, marked_job, start_daemon, start_daemon_with, wait_gone, Daemon};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flint::prelude::*;

const ROLE: &str = "WORKER_LOSS_ROLE";
const DIR: &str = "WORKER_LOSS_DIR";
const MASTER: &str = "WORKER_LOSS_MASTER";

fn fail(what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(what.to_string())
}

fn check(what: &str, ok: bool) -> flint::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(fail(format!("check failed: {what}")))
    }
}

/// The parent of `pid` (an executor's parent is its worker).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn program() -> flint::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .try_init();
    let dir = PathBuf::from(std::env::var(DIR).map_err(fail)?);
    let master = std::env::var(MASTER).map_err(fail)?;
    let ctx = Context::builder()
        .app_name("worker-loss")
        .master(master)
        .conf("executor.memory", "256m")
        .conf("shuffle.service.enabled", "true")
        .get_or_create()?;

    // Both executors (one per worker) are up: a job sees two processes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pids: BTreeSet<u32> = ctx
            .range(0, 16, 16)
            .map_partitions(|it| {
                let _ = it.count();
                std::iter::once(std::process::id())
            })
            .collect()?
            .into_iter()
            .collect();
        if pids.len() == 2 {
            break;
        }
        check("two executors within 60 s", Instant::now() < deadline)?;
    }

    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).map_err(fail)?;
    let (marked, want) = marked_job(&ctx, &maps);
    let mut got = marked.collect()?;
    got.sort();
    check("the first run's answer", got == want)?;
    let first = map_runs(&maps);
    let victim = first
        .iter()
        .next()
        .map(|r| r.1)
        .ok_or_else(|| fail("no map ran"))?;
    let on_victim: BTreeSet<u64> = first
        .iter()
        .filter(|r| r.1 == victim)
        .map(|r| r.0)
        .collect();
    let worker = parent_of(victim).ok_or_else(|| fail("the executor has no parent"))?;
    check(
        "the executor's parent is not this driver",
        worker != std::process::id(),
    )?;
    // The machine dies: its worker daemon and its executor at once.
    for pid in [worker, victim] {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let left = wait_gone(&[worker, victim], Duration::from_secs(30));
    check("the worker and its executor are gone", left.is_empty())?;

    let mut again = marked.collect()?;
    again.sort();
    check("the answer after the worker was lost", again == want)?;
    let after = map_runs(&maps);
    let rerun: BTreeSet<u64> = after.difference(&first).map(|r| r.0).collect();
    let rerun_pids: BTreeSet<u32> = after.difference(&first).map(|r| r.1).collect();
    println!(
        "worker loss ok: killed worker {worker} and executor {victim} holding maps \
         {on_victim:?}; re-ran {rerun:?} in {rerun_pids:?}"
    );
    check(
        "exactly the lost host's map tasks re-ran",
        rerun == on_victim && after.len() == first.len() + on_victim.len(),
    )?;
    check(
        "none re-ran on the dead host",
        !rerun_pids.contains(&victim),
    )?;
    ctx.stop()?;
    println!("stopped");
    Ok(())
}

fn orchestrate() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master = start_daemon(&["master"], home.path());
    let service = [("FLINT_SHUFFLE_SERVICE_ENABLED", "true")];
    let workers: Vec<Daemon> = (0..2)
        .map(|i| {
            let work = home.path().join(format!("work-{i}"));
            start_daemon_with(
                &["worker", &master.url, work.to_str().unwrap(), "1", "512"],
                home.path(),
                &service,
            )
        })
        .collect();
    let started = Instant::now();
    let child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "program")
        .env(DIR, dir.path())
        .env(MASTER, &master.url)
        .env("FLINT_HOME", home.path())
        .env_remove("FLINT_MASTER")
        .env_remove("FLINT_AUTH_SECRET")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("program.stderr")).unwrap())
        .spawn()
        .unwrap();
    let stderr_tail = || {
        let text = std::fs::read_to_string(dir.path().join("program.stderr")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!(
                "the program did not end within 120 s; stderr (last 60 lines):\n{}",
                stderr_tail()
            );
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("worker loss ok") && stdout.contains("stopped"),
        "program failed: {:?}\nstdout:\n{stdout}\nstderr (last 60 lines):\n{}",
        out.status,
        stderr_tail()
    );
    print!("{stdout}");
    println!(
        "worker_loss: ok in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(workers);
    drop(master);
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("program") => {
            if let Err(e) = program() {
                eprintln!("program: {e}");
                println!("program: {e}");
                std::process::exit(2);
            }
        }
        _ if std::env::var_os("FLINT_EXECUTOR_DRIVER_URL").is_some() => {
            let r = Context::builder().get_or_create();
            eprintln!("get_or_create returned in an executor: {r:?}");
            std::process::exit(3);
        }
        _ => orchestrate(),
    }
}
