//! Map outputs across machines, on a real cluster — a master and two workers, each its
//! own process, the workers bound to 127.0.0.2 and 127.0.0.3 so that they stand for two
//! hosts (an executor never reads the other's files directly: every block it needs
//! from the other host crosses flint-rpc), with the shuffle service on:
//! - the first run fetches blocks remotely (its metrics show remote bytes);
//! - an executor SIGKILLed after its map stage: its worker's shuffle service serves its
//!   map outputs to the executor on the other host, and no map task runs again;
//! - then that whole worker is lost (its daemon and its executors SIGKILLed, as when a
//!   machine dies): the map outputs that lived on that host are lost with it, so exactly
//!   the map tasks that ran there run again, on the surviving worker, and the answer is
//!   the same.
//!
//! (`harness = false`: this binary is also the driver and, started by the workers, the
//! executors.)

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

/// The processes whose parent is `pid` (a worker's executors).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .collect()
}

/// The executors' process ids, by running one small job until it sees `n` of them
/// (each worker starts one; a replacement takes a moment).
fn executors(ctx: &Context, n: usize) -> flint::Result<BTreeSet<u32>> {
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
        if pids.len() == n {
            return Ok(pids);
        }
        check(
            &format!("{n} executors within 60 s (saw {pids:?})"),
            Instant::now() < deadline,
        )?;
    }
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
    let pids = executors(&ctx, 2)?;

    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).map_err(fail)?;
    let (marked, want) = marked_job(&ctx, &maps);
    let mut got = marked.collect()?;
    got.sort();
    check("the first run's answer", got == want)?;
    let m = ctx.shuffle_metrics();
    println!(
        "first run: {} of {} bytes read fetched from the other host",
        m.remote_bytes_read, m.bytes_read
    );
    // Each reduce task reads the other host's map outputs over the network (on one
    // host they would be read from the files: no remote byte at all).
    check(
        "the other host's blocks were fetched remotely",
        m.remote_bytes_read > 0 && m.remote_bytes_read < m.bytes_read,
    )?;
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
    let survivor = pids
        .iter()
        .find(|p| **p != victim)
        .copied()
        .ok_or_else(|| fail("one executor"))?;
    let other_worker = parent_of(survivor).ok_or_else(|| fail("the executor has no parent"))?;
    check(
        "the executors' parents are two workers, not this driver",
        worker != std::process::id() && other_worker != worker,
    )?;

    // ---- the executor alone dies: its host's shuffle service serves its outputs ----
    let _ = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    let left = wait_gone(&[victim], Duration::from_secs(30));
    check("the executor is gone", left.is_empty())?;
    let before = ctx.shuffle_metrics().remote_bytes_read;
    let mut again = marked.collect()?;
    again.sort();
    check("the answer after the executor was lost", again == want)?;
    let after = map_runs(&maps);
    let served = ctx.shuffle_metrics().remote_bytes_read - before;
    println!(
        "executor loss ok: killed executor {victim} holding maps {on_victim:?}; \
         {} map task(s) re-ran; {served} bytes fetched remotely",
        after.len() - first.len()
    );
    check(
        "no map task re-ran (the shuffle service kept the outputs)",
        after == first,
    )?;
    check("blocks were fetched from the other host", served > 0)?;

    // ---- the machine dies: its worker daemon and its executors at once ----
    let doomed: Vec<u32> = std::iter::once(worker).chain(children_of(worker)).collect();
    for pid in &doomed {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let left = wait_gone(&doomed, Duration::from_secs(30));
    check("the worker and its executors are gone", left.is_empty())?;

    let mut again = marked.collect()?;
    again.sort();
    check("the answer after the worker was lost", again == want)?;
    let last = map_runs(&maps);
    let rerun: BTreeSet<u64> = last.difference(&first).map(|r| r.0).collect();
    let rerun_pids: BTreeSet<u32> = last.difference(&first).map(|r| r.1).collect();
    println!(
        "worker loss ok: killed worker {worker} and its executors {:?} (maps of {victim}: \
         {on_victim:?}); re-ran {rerun:?} in {rerun_pids:?}",
        &doomed[1..]
    );
    check(
        "exactly the lost host's map tasks re-ran",
        rerun == on_victim && last.len() == first.len() + on_victim.len(),
    )?;
    check(
        "they re-ran on the surviving worker",
        rerun_pids
            .iter()
            .all(|p| parent_of(*p) == Some(other_worker)),
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
    // Two "machines": each worker (and so its executor and shuffle service) on its own
    // loopback address.
    let workers: Vec<Daemon> = (0..2)
        .map(|i| {
            let work = home.path().join(format!("work-{i}"));
            let host = format!("127.0.0.{}", i + 2);
            start_daemon_with(
                &[
                    "worker",
                    &master.url,
                    work.to_str().unwrap(),
                    "1",
                    "512",
                    &host,
                ],
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
    let out = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!(
                "the program did not end within 180 s; stderr (last 60 lines):\n{}",
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
