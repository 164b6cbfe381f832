//! Executors SIGKILLed from outside on `local-cluster[2,1,512]` (`harness = false`:
//! this binary is started again as the driver and, by the embedded workers, as
//! executors):
//!
//! - mid-job: a task of partition 0 blocks in its executor; the driver SIGKILLs that
//!   process. The job's answer is unchanged, partition 0 ran again in another
//!   executor process, and the driver's JSON (`/jobs`, `/stages/<id>` on its UI)
//!   shows the attempt on the killed executor FAILED ("executor lost") and the retry
//!   SUCCEEDED elsewhere;
//! - holding a cached partition: the executor whose block holds partition 0 of a
//!   cached dataset is SIGKILLed between two jobs on it; the second job has the same
//!   answer, partition 0 recomputed by another process, the other partitions read
//!   from their blocks (computed by the same processes as before).
//!
//! - frozen: an executor SIGSTOPped (alive, silent) is given up after `network.timeout`
//!   (4 s here) without a heartbeat; its tasks run elsewhere, the driver asks the
//!   master to kill it, its worker kills the process and a replacement registers.
//!
//! The orchestrator checks the driver's lines and that no executor process is left.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

#[path = "cluster_common/mod.rs"]
mod cluster_common;
#[path = "../../daemon/tests/http_client/mod.rs"]
mod http_client;

use cluster_common::{alive, start_daemon, wait_gone, Daemon};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flint::prelude::*;
use serde_json::Value;

const ROLE: &str = "EXECUTOR_LOSS_TEST_ROLE";
/// Bound of the whole driver program.
const LIMIT: Duration = Duration::from_secs(180);

fn get_json(url: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (code, body) = rt.block_on(http_client::get_url(url));
    assert_eq!(code, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// This executor's id, from the URL its worker gave it.
fn executor_id() -> String {
    let url = std::env::var("FLINT_EXECUTOR_DRIVER_URL").unwrap_or_default();
    url.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("executor="))
        .unwrap_or("driver")
        .to_owned()
}

/// Waits (bounded) for `path` to hold a line, and returns it.
fn wait_for_file(path: &Path, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s.trim().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} not written within {within:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigkill(pid: u32) {
    signal(pid, "-KILL");
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// The pids of two tasks run until they ran in two processes (within 60 s).
fn two_executor_pids(ctx: &Context) -> flint::Result<Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = ctx.range(0, 2, 2).map(|_| std::process::id()).collect()?;
        if p[0] != p[1] {
            return Ok(p);
        }
        assert!(Instant::now() < deadline, "no second executor within 60 s");
    }
}

fn program() -> flint::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .try_init();
    let master =
        std::env::var("EXECUTOR_LOSS_MASTER").unwrap_or_else(|_| "local-cluster[2,1,512]".into());
    let ctx = Context::builder()
        .app_name("executor-loss")
        .master(master)
        .conf("executor.memory", "512m")
        .conf("ui.port", "0")
        // A frozen executor (scenario 3) is given up after 4 s without a heartbeat.
        .conf("network.timeout", "4s")
        .conf("executor.heartbeat_interval", "500ms")
        .get_or_create()?;
    let dir = std::path::absolute(".").unwrap();
    let me = std::process::id();
    println!("driver-pid {me}");

    // 1. SIGKILL the executor running partition 0 (its first attempt blocks).
    let marker = dir.join("blocked").display().to_string();
    let t0 = Instant::now();
    let out: Vec<(u64, u32)> = std::thread::scope(|s| {
        let job = s.spawn(|| {
            ctx.range(0, 8, 8)
                .map_with(marker.clone(), |m, x| {
                    if x == 0 {
                        if let Ok(mut f) = std::fs::File::create_new(m) {
                            use std::io::Write as _;
                            let line = format!("{} {}\n", std::process::id(), executor_id());
                            f.write_all(line.as_bytes()).unwrap();
                            // Blocked until the driver kills this process.
                            std::thread::sleep(Duration::from_secs(60));
                        }
                    }
                    (x * x, std::process::id())
                })
                .collect()
        });
        let line = wait_for_file(Path::new(&marker), Duration::from_secs(60));
        let mut w = line.split_whitespace();
        let pid: u32 = w.next().unwrap().parse().unwrap();
        let exec = w.next().unwrap().to_owned();
        assert_ne!(pid, me, "partition 0 ran in the driver");
        sigkill(pid);
        println!("killed-mid-job {pid} {exec}");
        job.join().unwrap()
    })?;
    let sum: u64 = out.iter().map(|p| p.0).sum();
    println!(
        "mid-job sum {sum} partition0-pid {} ({} ms)",
        out[0].1,
        t0.elapsed().as_millis()
    );

    // What the driver's JSON says about that job.
    let ui = ctx.ui_url().expect("the driver UI is on");
    let base = format!("{ui}/api/v1/applications/{}", ctx.app_id());
    let jobs = get_json(&format!("{base}/jobs"));
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["numTasks"] == 8)
        .unwrap_or_else(|| panic!("no 8-task job in {jobs}"))
        .clone();
    println!(
        "job status {} completed {} failed {}",
        job["status"], job["numCompletedTasks"], job["numFailedTasks"]
    );
    let stage_id = job["stageIds"][0].as_u64().unwrap();
    let stage = get_json(&format!("{base}/stages/{stage_id}"));
    let tasks = stage[0]["tasks"].as_object().unwrap();
    let mut p0: Vec<&Value> = tasks.values().filter(|t| t["index"] == 0).collect();
    p0.sort_by_key(|t| t["attempt"].as_u64());
    for t in &p0 {
        println!(
            "p0-attempt {} {} {} {}",
            t["attempt"],
            t["status"].as_str().unwrap_or("?"),
            t["executorId"].as_str().unwrap_or("?"),
            t["errorMessage"].as_str().unwrap_or("-").replace('\n', " ")
        );
    }

    // 2. SIGKILL the executor holding cached partition 0. First both executors (the
    // killed one's replacement included) take tasks: two tasks, launched round-robin
    // over executors with free cores, run in two processes.
    two_executor_pids(&ctx)?;
    let cached = ctx.range(0, 8, 4).map(|x| (x, std::process::id())).cache();
    let before = cached.collect()?;
    let holder = before[0].1;
    assert_ne!(holder, me);
    sigkill(holder);
    let left = wait_gone(&[holder], Duration::from_secs(30));
    assert!(left.is_empty(), "{holder} survived SIGKILL");
    let after = cached.collect()?;
    let pids = |v: &[(u64, u32)]| {
        v.iter()
            .map(|p| p.1.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "cached killed {holder} sums {} {} before {} after {}",
        before.iter().map(|p| p.0).sum::<u64>(),
        after.iter().map(|p| p.0).sum::<u64>(),
        pids(&before),
        pids(&after)
    );
    // 3. SIGSTOP an executor: alive but silent. Its tasks run elsewhere once
    // network.timeout passes without its heartbeat; the driver then asks the master to
    // kill it, its worker kills the process, and a replacement registers.
    let pair = two_executor_pids(&ctx)?;
    let frozen = pair[0];
    signal(frozen, "-STOP");
    let t0 = Instant::now();
    let sum: u64 = ctx.range(0, 8, 8).map(|x| x * x).collect()?.iter().sum();
    let left = wait_gone(&[frozen], Duration::from_secs(60));
    assert!(
        left.is_empty(),
        "the frozen executor {frozen} is still there {:?} after the driver gave up on it",
        t0.elapsed()
    );
    let gone_ms = t0.elapsed().as_millis();
    let replaced = two_executor_pids(&ctx)?;
    assert!(!replaced.contains(&frozen));
    println!(
        "frozen {frozen} sum {sum} gone-after-ms {gone_ms} now {} {}",
        replaced[0], replaced[1]
    );
    let all: std::collections::BTreeSet<u32> = before
        .iter()
        .chain(after.iter())
        .chain(out.iter())
        .map(|p| p.1)
        .chain(replaced.iter().copied())
        .chain([frozen])
        .collect();
    println!(
        "executor-pids {}",
        all.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    );
    ctx.stop()?;
    println!("stopped");
    Ok(())
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
}

/// Runs the driver program against `master` (None: local-cluster) and checks it.
fn check(label: &str, master: Option<&str>, home: Option<&Path>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.current_dir(dir.path())
        .env(ROLE, "program")
        .env_remove("FLINT_MASTER")
        .env_remove("FLINT_AUTH_SECRET");
    if let Some(m) = master {
        cmd.env("EXECUTOR_LOSS_MASTER", m);
    }
    if let Some(h) = home {
        cmd.env("FLINT_HOME", h);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut se, &mut s);
        s
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut so, &mut s);
        let _ = tx.send(s);
    });
    let started = Instant::now();
    let stdout = match rx.recv_timeout(LIMIT) {
        Ok(s) => s,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!("the driver {pid} did not end within {LIMIT:?}\nstderr:\n{stderr}");
        }
    };
    let status = child.wait().unwrap();
    let stderr = err.join().unwrap_or_default();
    let wall = started.elapsed();
    assert!(
        status.success(),
        "driver failed: {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    println!("{stdout}");
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{stderr}");

    // Mid-job kill: same answer (0²+…+7²), partition 0 re-ran in another process.
    let killed: Vec<&str> = field(&stdout, "killed-mid-job ").split(' ').collect();
    let (killed_pid, killed_exec): (u32, &str) = (killed[0].parse().unwrap(), killed[1]);
    let m: Vec<&str> = field(&stdout, "mid-job sum ").split(' ').collect();
    assert_eq!(m[0], "140", "{ctx}");
    let rerun: u32 = m[2].parse().unwrap();
    assert_ne!(rerun, killed_pid, "{ctx}");
    let job = field(&stdout, "job status ");
    assert_eq!(job, "\"SUCCEEDED\" completed 8 failed 1", "{ctx}");
    let attempts: Vec<Vec<&str>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("p0-attempt "))
        .map(|l| l.splitn(4, ' ').collect())
        .collect();
    assert_eq!(attempts.len(), 2, "{ctx}");
    assert_eq!(
        attempts[0][..3],
        ["0", "FAILED", killed_exec],
        "the first attempt: {ctx}"
    );
    assert!(attempts[0][3].contains("lost"), "{ctx}");
    assert_eq!(attempts[1][..2], ["1", "SUCCEEDED"], "{ctx}");
    assert_ne!(
        attempts[1][2], killed_exec,
        "the retry ran elsewhere: {ctx}"
    );

    // Cached partition 0's holder killed: same answer, recomputed elsewhere, the
    // other partitions served from their blocks.
    let c: Vec<&str> = field(&stdout, "cached killed ").split(' ').collect();
    let holder: &str = c[0];
    assert_eq!((c[2], c[3]), ("28", "28"), "{ctx}");
    let before: Vec<&str> = c[5].split(',').collect();
    let after: Vec<&str> = c[7].split(',').collect();
    assert_eq!(before[0], holder);
    assert!(
        before.iter().any(|p| *p != holder),
        "every block was on one executor: {ctx}"
    );
    for (b, a) in before.iter().zip(&after) {
        if *b == holder {
            assert_ne!(
                a, b,
                "a partition of the killed executor was not recomputed: {ctx}"
            );
        } else {
            assert_eq!(a, b, "a cached partition was recomputed: {ctx}");
        }
    }
    // The frozen executor: the job's answer unchanged, the process killed, replaced.
    let f: Vec<&str> = field(&stdout, "frozen ").split(' ').collect();
    assert_eq!(f[2], "140", "{ctx}");
    assert!(
        stderr.contains("asked the master to kill the executor"),
        "the driver did not ask the master to kill the frozen executor: {ctx}"
    );
    assert!(stdout.contains("\nstopped"), "{ctx}");

    // No executor process outlives the driver.
    let mut pids: Vec<u32> = field(&stdout, "executor-pids ")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    pids.push(killed_pid);
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "executor processes left: {left:?}");
    println!(
        "executor_loss {label}: ok ({:.0} ms; killed mid-job {killed_pid} ({killed_exec}), cached-block holder {holder})",
        wall.as_secs_f64() * 1000.0
    );
}

fn orchestrate() {
    check("local-cluster[2,1,512]", None, None);
    // A master and two workers started as their own processes.
    let home = tempfile::tempdir().unwrap();
    let master = start_daemon(&["master"], home.path());
    let workers: Vec<Daemon> = (0..2)
        .map(|i| {
            let dir = home.path().join(format!("work-{i}"));
            start_daemon(
                &["worker", &master.url, dir.to_str().unwrap(), "1", "512"],
                home.path(),
            )
        })
        .collect();
    check(&master.url.clone(), Some(&master.url), Some(home.path()));
    drop(workers);
    drop(master);
}

fn main() {
    // A worker of a separately started cluster does not pass this process's
    // environment on: an executor of the program runs the program's path.
    let role = if std::env::var_os("FLINT_EXECUTOR_DRIVER_URL").is_some() {
        Ok("program".to_owned())
    } else {
        std::env::var(ROLE)
    };
    match role.as_deref() {
        Ok("program") => {
            if let Err(e) = program() {
                eprintln!("program: {e}");
                std::process::exit(2);
            }
        }
        _ => orchestrate(),
    }
}
