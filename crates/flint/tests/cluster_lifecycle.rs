//! How an application ends, on a master and a worker started as their own processes
//! (`examples/cluster_daemon`), each driver a process of this binary (`harness =
//! false`: the workers start this binary again as executors):
//!
//! - `stop()` → FINISHED; `executor.env.*` reaches the executors; a second app of
//!   the same binary is served from the worker's binary cache (`binary_fetches` 1,
//!   `binary_cache_hits` ≥ 1 in the worker's status document);
//! - a job that always fails, given up with `?` in `main` → FAILED;
//! - a panic in the driver → FAILED;
//! - SIGINT (Ctrl-C) and SIGTERM during a job → the job is cancelled, KILLED, exit
//!   130 / 143 (SIGINT also on `local-cluster`, whose master dies with the driver:
//!   there the exit status, the cancelled job and the gone executors are checked;
//!   and on `local[2]`, where the map output of the job's first stage must be gone
//!   from `local.dir` after the exit);
//! - executors that cannot fit (`executor.memory` above the worker's memory) → the
//!   driver warns "Initial job has not accepted any resources" within
//!   `starvation.timeout`; SIGTERM then ends it KILLED.
//!
//! After each, no executor process of the app is left (checked by pid).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

#[path = "cluster_common/mod.rs"]
mod cluster_common;
use cluster_common::{start_daemon, wait_gone};
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flint::prelude::*;

const ROLE: &str = "LIFECYCLE_TEST_ROLE";
const LIMIT: Duration = Duration::from_secs(90);

// ----- the driver programs -----

fn driver(role: &str) -> flint::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .try_init();
    let master = std::env::var("LIFECYCLE_TEST_MASTER").unwrap();
    let memory = if role == "starve" { "4g" } else { "256m" };
    let ctx = Context::builder()
        .app_name(format!("lifecycle-{role}"))
        .master(master)
        .conf("executor.memory", memory)
        .conf("starvation.timeout", "1s")
        .conf("executor.env.LIFECYCLE_VAR", "seen by the executor")
        .get_or_create()?;
    println!("app-id {}", ctx.app_id());
    if role == "starve" {
        // Never gets an executor: waits until the test sends SIGTERM.
        let n = ctx.range(0, 2, 2).count();
        println!("job-ended {n:?}");
        return Ok(());
    }
    let seen: Vec<(u64, String)> = ctx
        .range(0, 4, 4)
        .map(|_| {
            (
                u64::from(std::process::id()),
                std::env::var("LIFECYCLE_VAR").unwrap_or_default(),
            )
        })
        .collect()?;
    let mut pids: Vec<u64> = seen.iter().map(|(p, _)| *p).collect();
    pids.sort_unstable();
    pids.dedup();
    println!(
        "pids {}",
        pids.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("env {}", seen[0].1);
    match role {
        "finish" => ctx.stop(),
        "job-err" => {
            ctx.range(0, 2, 2)
                .map(|x| {
                    if x < 10 {
                        panic!("always fails")
                    }
                    x
                })
                .count()?;
            Ok(())
        }
        "panic" => panic!("the driver panics on purpose"),
        "hang" => {
            println!("long-job");
            let r = ctx
                .range(0, 2, 2)
                .map(|x| {
                    std::thread::sleep(Duration::from_secs(600));
                    x
                })
                .count();
            println!("job-ended {r:?}");
            Ok(())
        }
        "shuffle-hang" => {
            // A shuffle whose map stage completes and whose reduce tasks then hang.
            println!("long-job");
            let r = ctx
                .range(0, 1000, 4)
                .map(|x| (x % 10, x))
                .reduce_by_key(|a, b| a + b, 2)
                .map(|kv| {
                    std::thread::sleep(Duration::from_secs(600));
                    kv
                })
                .count();
            println!("job-ended {r:?}");
            Ok(())
        }
        other => panic!("unknown role {other}"),
    }
}

// ----- the orchestrator -----

/// `GET url` (plain HTTP on 127.0.0.1), the body as JSON.
fn get_json(url: &str) -> serde_json::Value {
    let rest = url.strip_prefix("http://").unwrap();
    let (hostport, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let (head, json) = body.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// Waits until the master lists `app` as completed; its state.
fn final_state(master_status: &str, app: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = get_json(master_status);
        if let Some(a) = s["completed_apps"]
            .as_array()
            .and_then(|l| l.iter().find(|a| a["id"] == app))
        {
            return a["state"].as_str().unwrap_or("?").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{app} not completed at the master: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running driver: its output lines arrive on channels.
struct Driver {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Drop for Driver {
    /// A failed check leaves no driver behind.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

impl Driver {
    fn start(role: &str, master: &str, home: &Path) -> Driver {
        Driver::start_with(role, master, home, &[])
    }

    /// As [`start`](Self::start), with more environment variables.
    fn start_with(role: &str, master: &str, home: &Path, env: &[(&str, &Path)]) -> Driver {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .envs(env.iter().copied())
            .env(ROLE, role)
            .env("LIFECYCLE_TEST_MASTER", master)
            .env("FLINT_HOME", home)
            .env_remove("FLINT_MASTER")
            .env_remove("FLINT_AUTH_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Driver {
            child,
            out,
            err,
            stdout: vec![],
            stderr: vec![],
        }
    }

    fn drain(&mut self) {
        while let Ok(l) = self.err.try_recv() {
            self.stderr.push(l);
        }
    }

    fn dump(&mut self) -> String {
        self.drain();
        while let Ok(l) = self.out.try_recv() {
            self.stdout.push(l);
        }
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.join("\n"),
            self.stderr.join("\n")
        )
    }

    /// The rest of the stdout line starting with `key`, waiting for it.
    fn field(&mut self, key: &str) -> String {
        if let Some(v) = self.stdout.iter().find_map(|l| l.strip_prefix(key)) {
            return v.trim().to_owned();
        }
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(l) => {
                    self.stdout.push(l.clone());
                    if let Some(v) = l.strip_prefix(key) {
                        return v.trim().to_owned();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => self.drain(),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no {key:?} line\n{}", self.dump());
                }
            }
        }
    }

    /// Waits for a stderr line containing `text`; how long it took.
    fn wait_stderr(&mut self, text: &str, within: Duration) -> Duration {
        let t0 = Instant::now();
        if self.stderr.iter().any(|l| l.contains(text)) {
            return Duration::ZERO;
        }
        loop {
            let left = within.saturating_sub(t0.elapsed());
            match self.err.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(text);
                    self.stderr.push(l);
                    if hit {
                        return t0.elapsed();
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no {text:?} on stderr within {within:?}\n{}", self.dump());
                }
            }
        }
    }

    /// Waits until `n` stderr lines contain `text`.
    fn wait_stderr_count(&mut self, text: &str, n: usize, within: Duration) {
        let t0 = Instant::now();
        while self.stderr.iter().filter(|l| l.contains(text)).count() < n {
            match self.err.recv_timeout(within.saturating_sub(t0.elapsed())) {
                Ok(l) => self.stderr.push(l),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "not {n} {text:?} lines on stderr within {within:?}\n{}",
                        self.dump()
                    );
                }
            }
        }
    }

    fn pids(&mut self) -> Vec<u32> {
        self.field("pids ")
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the exit within the limit; its code (None: a signal).
    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.drain();
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the driver did not exit within {LIMIT:?}\n{}", self.dump());
            }
            self.drain();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn no_leftovers(label: &str, pids: &[u32]) {
    let left = wait_gone(pids, Duration::from_secs(10));
    assert!(left.is_empty(), "{label}: executors {left:?} left");
}

fn orchestrate() {
    let home = tempfile::tempdir().unwrap();
    let master = start_daemon(&["master"], home.path());
    let work = home.path().join("work");
    let worker = start_daemon(
        &["worker", &master.url, work.to_str().unwrap(), "2", "1024"],
        home.path(),
    );
    let m = master.url.clone();
    let h = home.path();

    // stop() → FINISHED, twice (the second from the worker's binary cache).
    let mut apps = vec![];
    for round in 0..2 {
        let t0 = Instant::now();
        let mut d = Driver::start("finish", &m, h);
        let app = d.field("app-id ");
        let pids = d.pids();
        assert_eq!(d.field("env "), "seen by the executor", "{}", d.dump());
        assert_eq!(d.wait(), Some(0), "{}", d.dump());
        assert_eq!(final_state(master.status(), &app), "FINISHED");
        no_leftovers("finish", &pids);
        println!(
            "cluster_lifecycle finish #{round}: ok ({app} FINISHED, executor.env seen, {:.0} ms)",
            t0.elapsed().as_secs_f64() * 1000.0
        );
        apps.push(app);
    }
    let w = get_json(worker.status());
    assert_eq!(w["binary_fetches"], 1, "{w}");
    assert!(w["binary_cache_hits"].as_u64().unwrap_or(0) >= 1, "{w}");
    println!(
        "cluster_lifecycle binary cache: ok (fetches {}, cache hits {})",
        w["binary_fetches"], w["binary_cache_hits"]
    );

    // A failed job given up with `?`, and a panic: FAILED.
    for role in ["job-err", "panic"] {
        let mut d = Driver::start(role, &m, h);
        let app = d.field("app-id ");
        let pids = d.pids();
        let code = d.wait();
        assert!(
            code.is_some_and(|c| c != 0),
            "{role}: {code:?}\n{}",
            d.dump()
        );
        assert_eq!(final_state(master.status(), &app), "FAILED", "{}", d.dump());
        no_leftovers(role, &pids);
        println!(
            "cluster_lifecycle {role}: ok ({app} FAILED, exit {code:?}, executors {pids:?} gone)"
        );
    }

    // Ctrl-C and SIGTERM during a job: cancelled, KILLED, 130 / 143.
    for (sig, code) in [("INT", 130), ("TERM", 143)] {
        let mut d = Driver::start("hang", &m, h);
        let app = d.field("app-id ");
        let pids = d.pids();
        d.field("long-job");
        // The long job (the driver's second) has been submitted.
        d.wait_stderr_count(" submitted: ", 2, LIMIT);
        let t0 = Instant::now();
        d.signal(sig);
        assert_eq!(d.wait(), Some(code), "SIG{sig}\n{}", d.dump());
        let took = t0.elapsed();
        let out = d.dump();
        assert!(
            out.contains("was cancelled: the driver received SIG"),
            "{out}"
        );
        assert_eq!(final_state(master.status(), &app), "KILLED", "{out}");
        no_leftovers(sig, &pids);
        println!(
            "cluster_lifecycle SIG{sig}: ok ({app} KILLED, exit {code} after {:.0} ms, job cancelled, executors {pids:?} gone)",
            took.as_secs_f64() * 1000.0
        );
    }

    // Ctrl-C on local-cluster (its master and worker in the driver's process): the
    // job is cancelled, exit 130, the executor processes are gone.
    let mut d = Driver::start("hang", "local-cluster[1,2,1024]", h);
    let pids = d.pids();
    d.field("long-job");
    d.wait_stderr_count(" submitted: ", 2, LIMIT);
    d.signal("INT");
    assert_eq!(d.wait(), Some(130), "{}", d.dump());
    let out = d.dump();
    assert!(
        out.contains("was cancelled: the driver received SIGINT"),
        "{out}"
    );
    no_leftovers("local-cluster SIGINT", &pids);
    println!("cluster_lifecycle local-cluster SIGINT: ok (exit 130, job cancelled, executors {pids:?} gone)");

    // Ctrl-C on local[2] (no cluster at all): the job is cancelled, exit 130, and the
    // map output its first stage wrote under local.dir is removed.
    let local_dir = h.join("local-dir-sigint");
    let mut d = Driver::start_with(
        "shuffle-hang",
        "local[2]",
        h,
        &[("FLINT_LOCAL_DIR", local_dir.as_path())],
    );
    let app = d.field("app-id ");
    d.field("long-job");
    let app_dir = local_dir.join("flint-shuffle").join(&app);
    let deadline = Instant::now() + LIMIT;
    while data_files(&app_dir) < 4 {
        assert!(
            Instant::now() < deadline,
            "no map output under {}\n{}",
            app_dir.display(),
            d.dump()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal("INT");
    assert_eq!(d.wait(), Some(130), "{}", d.dump());
    let out = d.dump();
    assert!(
        out.contains("was cancelled: the driver received SIGINT"),
        "{out}"
    );
    assert!(
        !app_dir.exists(),
        "{} is left after SIGINT: {} data files\n{out}",
        app_dir.display(),
        data_files(&app_dir)
    );
    println!(
        "cluster_lifecycle local[2] SIGINT: ok (exit 130, job cancelled, its map output removed)"
    );

    // Executors that cannot fit: the warning within starvation.timeout (1 s).
    let mut d = Driver::start("starve", &m, h);
    let app = d.field("app-id ");
    let t = d.wait_stderr("Initial job has not accepted any resources", LIMIT);
    d.signal("TERM");
    assert_eq!(d.wait(), Some(143), "{}", d.dump());
    assert_eq!(final_state(master.status(), &app), "KILLED");
    println!(
        "cluster_lifecycle no resources: ok (warning {:.0} ms after the app id; SIGTERM → KILLED)",
        t.as_secs_f64() * 1000.0
    );
    drop(worker);
    drop(master);
}

/// `.data` files (committed map outputs) anywhere under `dir`.
fn data_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                data_files(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "data"))
            }
        })
        .sum()
}

fn main() {
    match std::env::var(ROLE) {
        Ok(role) => {
            if let Err(e) = driver(&role) {
                eprintln!("driver {role}: {e}");
                std::process::exit(2);
            }
        }
        // A worker started this binary as an executor of a driver above (the
        // separately started worker does not pass the driver's environment on).
        Err(_) if std::env::var_os(flint::EXECUTOR_ENV).is_some() => {
            let r = Context::builder().get_or_create();
            eprintln!("get_or_create returned in an executor: {r:?}");
            std::process::exit(3);
        }
        Err(_) => orchestrate(),
    }
}
