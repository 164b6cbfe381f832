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
//! The harness is a trimmed copy of `cluster.rs`'s: every wait polls a
//! condition against a deadline; nothing sleeps to synchronize.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use flint_client::{AppClient, AppClientHandle, AppEvent, ChannelListener};
use flint_proto::messages::{MasterMsg, RequestMasterState, MASTER_ENDPOINT};
use flint_proto::status::MasterStatusJson;
use flint_proto::{
    AppId, ApplicationDescription, ApplicationState, ExecutorCommand, ExecutorState, WorkerState,
};
use flint_rpc::{RpcAddress, RpcConf, RpcEnv};
use tokio::sync::mpsc;

const FLINT: &str = env!("CARGO_BIN_EXE_flint");
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);
/// How long a condition may take on a loaded 2-core machine; waits end as
/// soon as it holds.
const PATIENCE: Duration = Duration::from_secs(20);
/// Settings every daemon gets: heartbeats every 500 ms. The workers keep
/// their default registration schedule.
const DAEMON_CONF: &[&str] = &["worker.timeout=2s"];
/// Settings only workers get.
const WORKER_CONF: &[&str] = &[
    "worker.executor_kill_grace=1s",
    "worker.cleanup.enabled=false",
];
/// An executor that stays up.
const SLEEPER: &str = "exec sleep 1000";

/// Polls `probe` every [`POLL`] until it returns `Ok`, for at most `within`.
async fn wait_within<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= within => {
                panic!("waited {within:?} for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[derive(Debug, Clone, Copy)]
struct ProcId(usize);

struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

struct Master {
    proc: ProcId,
    url: String,
    addr: RpcAddress,
}

struct Worker {
    proc: ProcId,
    id: String,
    work_dir: PathBuf,
}

/// The processes, files and mounts of one test. Dropping it SIGKILLs and
/// reaps every process, then undoes its mounts; if the test is failing it
/// first prints the tail of each process's output and keeps the temp dir.
struct Cluster {
    dir: PathBuf,
    home: PathBuf,
    procs: Vec<Proc>,
    rpc_conf: RpcConf,
    probe: RpcEnv,
    mounts: Vec<PathBuf>,
}

impl Cluster {
    fn new(test: &str) -> Cluster {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("isolation-tests")
            .join(format!("{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let home = dir.join("home");
        let (secret, _) = flint_rpc::secret::load_or_create(&home.join("secret")).unwrap();
        let rpc_conf = RpcConf {
            secret: Some(secret),
            ..RpcConf::default()
        };
        Cluster {
            probe: RpcEnv::client(rpc_conf.clone()).unwrap(),
            rpc_conf,
            home,
            dir,
            procs: Vec::new(),
            mounts: Vec::new(),
        }
    }

    /// Starts `flint ARGS` in the background with no `FLINT_*` variable
    /// inherited but `FLINT_HOME`, output to `<name>.stdout` / `.stderr`.
    fn spawn(&mut self, name: &str, args: &[&str]) -> ProcId {
        let name = if self.procs.iter().any(|p| p.name == name) {
            format!("{name}-{}", self.procs.len())
        } else {
            name.to_string()
        };
        let stdout = self.dir.join(format!("{name}.stdout"));
        let stderr = self.dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(FLINT);
        cmd.args(args).current_dir(&self.dir).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLINT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("FLINT_HOME", &self.home);
        let child = cmd
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        self.procs.push(Proc {
            name,
            child,
            stdout,
            stderr,
            status: None,
        });
        ProcId(self.procs.len() - 1)
    }

    fn stderr(&self, p: ProcId) -> String {
        fs::read_to_string(&self.procs[p.0].stderr).unwrap_or_default()
    }

    fn exited(&mut self, p: ProcId) -> Option<ExitStatus> {
        let proc = &mut self.procs[p.0];
        if proc.status.is_none() {
            proc.status = proc.child.try_wait().unwrap();
        }
        proc.status
    }

    /// SIGKILLs the process and reaps it.
    fn kill(&mut self, p: ProcId) {
        let proc = &mut self.procs[p.0];
        if proc.status.is_none() {
            proc.child.kill().unwrap();
            proc.status = Some(proc.child.wait().unwrap());
        }
    }

    /// SIGTERMs the process and waits for it to exit.
    async fn terminate(&mut self, p: ProcId) -> ExitStatus {
        let pid = self.procs[p.0].child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        wait_within("the process to exit", PATIENCE, async || {
            self.exited(p).ok_or_else(|| "still running".to_string())
        })
        .await
    }

    /// Waits for the first stdout line of `p` starting with `prefix`; returns
    /// it and when the test saw it.
    async fn wait_line(&mut self, p: ProcId, prefix: &str) -> (String, Instant) {
        let path = self.procs[p.0].stdout.clone();
        let name = self.procs[p.0].name.clone();
        wait_within(
            &format!("{name} to print {prefix:?}"),
            PATIENCE,
            async || {
                let text = fs::read_to_string(&path).unwrap_or_default();
                if let Some(line) = text.lines().find(|l| l.starts_with(prefix)) {
                    return Ok((line.to_string(), Instant::now()));
                }
                if let Some(status) = self.exited(p) {
                    panic!(
                        "{name} exited ({status}) before printing {prefix:?}; stderr:\n{}",
                        self.stderr(p)
                    );
                }
                Err(format!("stdout so far: {text:?}"))
            },
        )
        .await
    }

    /// Starts `flint master` on `port` (0: any); returns it and when its
    /// listening line was seen.
    async fn start_master(&mut self, port: u16) -> (Master, Instant) {
        let port = port.to_string();
        let mut args = vec!["master", "--port", &port, "--webui-port", "0"];
        for c in DAEMON_CONF {
            args.extend(["--conf", c]);
        }
        let proc = self.spawn("master", &args);
        let prefix = "flint master listening on ";
        let (line, seen) = self.wait_line(proc, prefix).await;
        let url = line[prefix.len()..].split(';').next().unwrap().to_string();
        let addr = RpcAddress::parse_list(&url).unwrap().remove(0);
        (Master { proc, url, addr }, seen)
    }

    async fn start_worker(&mut self, master: &Master, cores: u32) -> Worker {
        let n = self
            .procs
            .iter()
            .filter(|p| p.name.starts_with("worker"))
            .count();
        let name = format!("worker{n}");
        let work_dir = self.dir.join(format!("{name}-work"));
        let cores = cores.to_string();
        let wd = work_dir.to_str().unwrap().to_string();
        let mut args = vec![
            "worker",
            &master.url,
            "--cores",
            &cores,
            "--memory",
            "512m",
            "--work-dir",
            &wd,
            "--port",
            "0",
            "--webui-port",
            "0",
        ];
        for c in DAEMON_CONF.iter().chain(WORKER_CONF) {
            args.extend(["--conf", c]);
        }
        let proc = self.spawn(&name, &args);
        let (line, _) = self.wait_line(proc, "flint worker ").await;
        // flint worker <id> listening on <url>; status at <ui>/api/v1/status
        let words: Vec<_> = line.split_whitespace().collect();
        assert_eq!(words[3..5], ["listening", "on"], "{line}");
        Worker {
            proc,
            id: words[2].to_string(),
            work_dir,
        }
    }

    /// Makes a running worker's work dir refuse new directories, for root
    /// too: a read-only bind mount of the dir onto itself, or, where this
    /// sandbox cannot mount, a regular file in its place. Returns which.
    fn break_work_dir(&mut self, w: &Worker) -> &'static str {
        let dir = w.work_dir.to_str().unwrap();
        let run = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if run(&["mount", "--bind", dir, dir]) {
            self.mounts.push(w.work_dir.clone());
            if run(&["mount", "-o", "remount,bind,ro", dir]) {
                assert!(
                    fs::create_dir(w.work_dir.join("probe")).is_err(),
                    "the read-only bind mount still takes new dirs"
                );
                return "a read-only bind mount";
            }
        }
        for m in self.mounts.drain(..) {
            let _ = Command::new("umount").arg(&m).status();
        }
        fs::remove_dir_all(&w.work_dir).unwrap();
        fs::write(&w.work_dir, b"not a directory").unwrap();
        "a regular file in place of the work dir"
    }

    async fn status(&self, master: &Master) -> Result<MasterStatusJson, String> {
        self.probe
            .endpoint_ref::<MasterMsg>(&master.addr, MASTER_ENDPOINT)
            .ask_timeout(RequestMasterState, Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())
    }

    async fn wait_status_within(
        &self,
        master: &Master,
        what: &str,
        within: Duration,
        ok: impl Fn(&MasterStatusJson) -> bool,
    ) -> MasterStatusJson {
        wait_within(what, within, async || {
            let s = self.status(master).await?;
            if ok(&s) {
                Ok(s)
            } else {
                Err(format!("{s:#?}"))
            }
        })
        .await
    }

    /// Waits until the master lists exactly `ids` as its ALIVE workers.
    async fn wait_alive_within(
        &self,
        master: &Master,
        ids: &[&str],
        within: Duration,
    ) -> MasterStatusJson {
        let want: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
        self.wait_status_within(master, &format!("workers {want:?} ALIVE"), within, |s| {
            alive_ids(s) == want
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.probe.shutdown();
        for p in &mut self.procs {
            if p.status.is_none() {
                let _ = p.child.kill();
                p.status = p.child.wait().ok();
            }
        }
        for m in self.mounts.drain(..) {
            let _ = Command::new("umount").arg(&m).status();
        }
        if std::thread::panicking() {
            for p in &self.procs {
                eprintln!(
                    "===== {} (pid {}, {}) =====\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
                    p.name,
                    p.child.id(),
                    p.status.map(|s| s.to_string()).unwrap_or_default(),
                    tail(&p.stdout, 10),
                    tail(&p.stderr, 40)
                );
            }
            eprintln!("files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn alive_ids(s: &MasterStatusJson) -> BTreeSet<String> {
    s.workers
        .iter()
        .filter(|w| w.state == WorkerState::Alive)
        .map(|w| w.id.to_string())
        .collect()
}

/// An application registered from the test process.
struct App {
    env: RpcEnv,
    _handle: AppClientHandle,
    events: mpsc::UnboundedReceiver<AppEvent>,
    seen: Vec<AppEvent>,
    id: AppId,
}

impl App {
    async fn start(c: &Cluster, master: &Master, desc: ApplicationDescription) -> App {
        let env = RpcEnv::client(c.rpc_conf.clone()).unwrap();
        let (listener, events) = ChannelListener::new();
        let handle = AppClient::start(
            env.clone(),
            vec![master.addr.clone()],
            desc,
            listener,
            &flint_conf::Conf::new(),
        )
        .unwrap();
        let mut app = App {
            env,
            _handle: handle,
            events,
            seen: Vec::new(),
            id: AppId::generate(0, 0),
        };
        let connected = app
            .wait_events("registration", 1, |e| matches!(e, AppEvent::Connected(_)))
            .await;
        let AppEvent::Connected(id) = &connected[0] else {
            unreachable!()
        };
        app.id = id.clone();
        app
    }

    /// Waits until at least `n` events received so far match; returns them.
    async fn wait_events(
        &mut self,
        what: &str,
        n: usize,
        matches: impl Fn(&AppEvent) -> bool,
    ) -> Vec<AppEvent> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let hits: Vec<_> = self.seen.iter().filter(|e| matches(e)).cloned().collect();
            if hits.len() >= n {
                return hits;
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => self.seen.push(e),
                Ok(None) => panic!("events ended before {what}; {:#?}", self.seen),
                Err(_) => panic!("no {what} within {PATIENCE:?}; {:#?}", self.seen),
            }
        }
    }

    /// Takes the events that arrived so far without waiting.
    fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.env.shutdown();
    }
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
    let (m, _) = c.start_master(0).await;
    let bad = c.start_worker(&m, 2).await;
    let good = c.start_worker(&m, 2).await;
    c.wait_alive_within(&m, &[&bad.id, &good.id], PATIENCE)
        .await;
    let how = c.break_work_dir(&bad);
    eprintln!("the bad worker's work dir was broken with {how}");

    // Four 1-core executors: two fit on each worker.
    let mut app = App::start(&c, &m, sleeper_app("isolated", 4)).await;
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
    let (m, _) = c.start_master(0).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(c.start_worker(&m, 1).await);
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
            let status = c.terminate(old.proc).await;
            assert_eq!(status.code(), Some(0), "master exit: {status}");
        }
        let (m, listening) = c.start_master(port).await;
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
