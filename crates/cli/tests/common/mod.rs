//! The harness of the CLI's process tests (`cluster.rs`, `isolation.rs`): one
//! [`Cluster`] per test owns real `flint master` / `flint worker` processes on
//! 127.0.0.1 (SIGKILLed and reaped on drop, with the tail of every log printed when
//! the test fails), its temp dir, flint home and mounts; [`App`] registers an
//! application from the test process. Every wait polls a condition against a
//! deadline; nothing sleeps to synchronize.
#![allow(dead_code, unused_imports)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use flint_client::{AppClient, AppClientHandle, AppEvent, ChannelListener};
use flint_proto::messages::{MasterMsg, RequestMasterState, MASTER_ENDPOINT};
use flint_proto::status::MasterStatusJson;
use flint_proto::{
    AppId, ApplicationDescription, ExecutorCommand, ExecutorId, ExecutorState, WorkerState,
};
use flint_rpc::{RpcAddress, RpcConf, RpcEnv, Secret};
use tokio::sync::mpsc;

pub const FLINT: &str = env!("CARGO_BIN_EXE_flint");
/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(20);
/// How long a condition may take to come true on a loaded 2-core machine. Waits end
/// as soon as the condition holds; this only bounds a failing test.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// `worker.timeout` of every daemon: workers heartbeat every 500 ms and the master
/// checks for silent workers every 2 s.
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(2);
/// Settings every master gets.
pub const MASTER_CONF: &[&str] = &["worker.timeout=2s"];
/// Settings every worker gets: the same timeout, registration retries every
/// 100–300 ms instead of 5–15 s, a 1 s grace between SIGTERM and SIGKILL for
/// executors, and no work dir cleanup.
pub const WORKER_CONF: &[&str] = &[
    "worker.timeout=2s",
    "worker.initial_registration_retry_interval=200ms",
    "worker.prolonged_registration_retry_interval=400ms",
    "worker.executor_kill_grace=1s",
    "worker.cleanup.enabled=false",
];
/// An executor that says who it is and then stays up (its pid is the `sleep`'s).
pub const SLEEPER: &str = "echo executor {{EXECUTOR_ID}} of {{APP_ID}} pid $$; exec sleep 1000";

// ===================================================================
// Waiting
// ===================================================================

/// Polls `probe` every [`POLL`] until it returns `Ok`, for at most `within`; panics
/// with `what` and the last `Err` otherwise.
pub async fn wait_within<T>(
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

/// [`wait_within`] with [`PATIENCE`].
pub async fn wait_for<T>(what: &str, probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    wait_within(what, PATIENCE, probe).await
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

/// Waits until none of `pids` is alive.
pub async fn wait_gone(what: &str, pids: &[u32]) {
    wait_for(what, async || {
        let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still alive: {left:?}"))
        }
    })
    .await
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ===================================================================
// The harness: processes of one test
// ===================================================================

/// A process started by a [`Cluster`], by index.
#[derive(Debug, Clone, Copy)]
pub struct ProcId(pub usize);

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub status: Option<ExitStatus>,
}

/// A running `flint master`.
pub struct Master {
    pub proc: ProcId,
    /// `flint://127.0.0.1:port`.
    pub url: String,
    pub addr: RpcAddress,
    /// What a client of this master needs: the cluster's secret, or none when the
    /// master runs with `auth.enabled=false`.
    pub rpc_conf: RpcConf,
}

/// A running `flint worker`.
pub struct Worker {
    pub proc: ProcId,
    pub id: String,
    /// `flint://127.0.0.1:port`.
    pub url: String,
    pub work_dir: PathBuf,
}

/// The processes, files and probes of one test. Dropping it SIGKILLs and reaps every
/// process it started (executors die with their workers); if the test is failing it
/// first prints the tail of each process's output and keeps the temp dir.
pub struct Cluster {
    pub dir: PathBuf,
    /// The daemons' flint home (`FLINT_HOME`), where the cluster secret lives.
    pub home: PathBuf,
    pub procs: Vec<Proc>,
    /// Settings of the test's own RPC clients: the cluster secret, once known.
    pub rpc_conf: RpcConf,
    /// A client-only environment for status asks.
    pub probe: RpcEnv,
    /// Mount points the test made (unmounted on drop).
    pub mounts: Vec<PathBuf>,
}

impl Cluster {
    /// A cluster whose home already holds a secret, as after a master's first start.
    pub fn new(test: &str) -> Cluster {
        let mut c = Cluster::with_fresh_home(test);
        let (secret, _) = flint_rpc::secret::load_or_create(&c.home.join("secret")).unwrap();
        c.trust(secret);
        c
    }

    /// A cluster whose home does not exist yet (no secret anywhere).
    pub fn with_fresh_home(test: &str) -> Cluster {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("cluster-tests")
            .join(format!("{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Cluster {
            home: dir.join("home"),
            dir,
            procs: Vec::new(),
            rpc_conf: RpcConf::default(),
            probe: RpcEnv::client(RpcConf::default()).unwrap(),
            mounts: Vec::new(),
        }
    }

    /// From now on the test's clients authenticate with `secret`.
    pub fn trust(&mut self, secret: Secret) {
        self.rpc_conf = RpcConf {
            secret: Some(secret),
            ..RpcConf::default()
        };
        self.probe.shutdown();
        self.probe = RpcEnv::client(self.rpc_conf.clone()).unwrap();
    }

    /// `flint ARGS` run in the test's dir with no `FLINT_*` variable inherited
    /// but `FLINT_HOME`, the cluster's home.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(FLINT);
        cmd.args(args).current_dir(&self.dir).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLINT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("FLINT_HOME", &self.home);
        cmd
    }

    /// Starts `flint ARGS` in the background, its stdout and stderr going to
    /// `<name>.stdout` and `<name>.stderr` in the test's dir.
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> ProcId {
        self.spawn_with(name, args, |_| {})
    }

    /// [`Cluster::spawn`], with `adjust` changing the command first (its
    /// environment, say).
    pub fn spawn_with(
        &mut self,
        name: &str,
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> ProcId {
        let name = if self.procs.iter().any(|p| p.name == name) {
            format!("{name}-{}", self.procs.len())
        } else {
            name.to_string()
        };
        let stdout = self.dir.join(format!("{name}.stdout"));
        let stderr = self.dir.join(format!("{name}.stderr"));
        let mut cmd = self.command(args);
        adjust(&mut cmd);
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

    /// Runs `flint ARGS` to completion (killed if it takes longer than [`PATIENCE`]).
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, |_| {}).await
    }

    /// [`Cluster::run`], with `adjust` changing the command first.
    pub async fn run_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Output {
        let mut std_cmd = self.command(args);
        adjust(&mut std_cmd);
        let mut cmd = tokio::process::Command::from(std_cmd);
        cmd.kill_on_drop(true);
        match tokio::time::timeout(PATIENCE, cmd.output()).await {
            Ok(out) => out.unwrap(),
            Err(_) => panic!("flint {args:?} did not finish within {PATIENCE:?}"),
        }
    }

    /// Runs `flint ARGS`, which must fail; returns its stderr.
    pub async fn run_failing(&self, args: &[&str]) -> String {
        self.run_failing_with(args, |_| {}).await
    }

    /// [`Cluster::run_failing`], with `adjust` changing the command first.
    pub async fn run_failing_with(
        &self,
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> String {
        let out = self.run_with(args, adjust).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "flint {args:?} should fail with exit code 1\nstdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    pub fn pid(&self, p: ProcId) -> u32 {
        self.procs[p.0].child.id()
    }

    pub fn stderr(&self, p: ProcId) -> String {
        fs::read_to_string(&self.procs[p.0].stderr).unwrap_or_default()
    }

    /// The exit status, if the process has exited (it is then reaped).
    pub fn exited(&mut self, p: ProcId) -> Option<ExitStatus> {
        let proc = &mut self.procs[p.0];
        if proc.status.is_none() {
            proc.status = proc.child.try_wait().unwrap();
        }
        proc.status
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, p: ProcId) -> ExitStatus {
        let name = self.procs[p.0].name.clone();
        wait_for(&format!("{name} to exit"), async || {
            self.exited(p).ok_or_else(|| "still running".to_string())
        })
        .await
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self, p: ProcId) {
        let proc = &mut self.procs[p.0];
        if proc.status.is_none() {
            proc.child.kill().unwrap();
            proc.status = Some(proc.child.wait().unwrap());
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self, p: ProcId) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid(p).to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {} failed", self.pid(p));
    }

    /// Waits for the first stdout line of `p` starting with `prefix`.
    pub async fn wait_line(&mut self, p: ProcId, prefix: &str) -> String {
        self.wait_line_at(p, prefix).await.0
    }

    /// [`Cluster::wait_line`], also returning when the test saw the line.
    pub async fn wait_line_at(&mut self, p: ProcId, prefix: &str) -> (String, Instant) {
        let path = self.procs[p.0].stdout.clone();
        let name = self.procs[p.0].name.clone();
        wait_for(&format!("{name} to print {prefix:?}"), async || {
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
        })
        .await
    }

    /// Starts `flint master` on `port` (0: any) with [`MASTER_CONF`] and `conf`.
    pub async fn start_master(&mut self, port: u16, conf: &[&str]) -> Master {
        self.start_master_at(port, conf).await.0
    }

    /// [`Cluster::start_master`], also returning when its listening line was seen.
    pub async fn start_master_at(&mut self, port: u16, conf: &[&str]) -> (Master, Instant) {
        let port = port.to_string();
        let mut args = vec!["master", "--port", &port, "--webui-port", "0"];
        for c in MASTER_CONF.iter().chain(conf) {
            args.extend(["--conf", c]);
        }
        let proc = self.spawn("master", &args);
        let (line, seen) = self.wait_line_at(proc, "flint master listening on ").await;
        let url = line["flint master listening on ".len()..]
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let addr = RpcAddress::parse_list(&url).unwrap().remove(0);
        let rpc_conf = if conf.contains(&"auth.enabled=false") {
            RpcConf::default()
        } else {
            self.rpc_conf.clone()
        };
        (
            Master {
                proc,
                url,
                addr,
                rpc_conf,
            },
            seen,
        )
    }

    /// Starts `flint worker` offering `cores` and `memory`, with [`WORKER_CONF`], in
    /// its own work dir.
    pub async fn start_worker(&mut self, master: &Master, cores: u32, memory: &str) -> Worker {
        self.start_worker_with(master, cores, memory, |_| {}).await
    }

    /// [`Cluster::start_worker`], with `adjust` changing the command first.
    pub async fn start_worker_with(
        &mut self,
        master: &Master,
        cores: u32,
        memory: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Worker {
        self.start_worker_conf(master, cores, memory, WORKER_CONF, adjust)
            .await
    }

    /// [`Cluster::start_worker_with`], with `conf` instead of [`WORKER_CONF`].
    pub async fn start_worker_conf(
        &mut self,
        master: &Master,
        cores: u32,
        memory: &str,
        conf: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Worker {
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
            memory,
            "--work-dir",
            &wd,
            "--port",
            "0",
            "--webui-port",
            "0",
        ];
        for c in conf {
            args.extend(["--conf", c]);
        }
        let proc = self.spawn_with(&name, &args, adjust);
        let line = self.wait_line(proc, "flint worker ").await;
        // flint worker <id> listening on <url>; status at <ui>/api/v1/status
        let words: Vec<_> = line.split_whitespace().collect();
        assert_eq!(words[3..5], ["listening", "on"], "{line}");
        Worker {
            proc,
            id: words[2].to_string(),
            url: words[5].trim_end_matches(';').to_string(),
            work_dir,
        }
    }

    /// The master's status, asked over RPC as `flint status` does.
    pub async fn status(&self, master: &Master) -> Result<MasterStatusJson, String> {
        self.probe
            .endpoint_ref::<MasterMsg>(&master.addr, MASTER_ENDPOINT)
            .ask_timeout(RequestMasterState, Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())
    }

    /// Polls the master's status until `ok` holds for it.
    pub async fn wait_status(
        &self,
        master: &Master,
        what: &str,
        ok: impl Fn(&MasterStatusJson) -> bool,
    ) -> MasterStatusJson {
        self.wait_status_within(master, what, PATIENCE, ok).await
    }

    pub async fn wait_status_within(
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
    pub async fn wait_alive(&self, master: &Master, ids: &[&str]) -> MasterStatusJson {
        self.wait_alive_within(master, ids, PATIENCE).await
    }

    /// [`Cluster::wait_alive`], for at most `within`.
    pub async fn wait_alive_within(
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

pub fn alive_ids(s: &MasterStatusJson) -> BTreeSet<String> {
    s.workers
        .iter()
        .filter(|w| w.state == WorkerState::Alive)
        .map(|w| w.id.to_string())
        .collect()
}

// ===================================================================
// Applications and executors
// ===================================================================

/// An application registered from the test process.
pub struct App {
    pub env: RpcEnv,
    pub handle: AppClientHandle,
    pub events: mpsc::UnboundedReceiver<AppEvent>,
    /// Every event received so far, in order.
    pub seen: Vec<AppEvent>,
    pub id: AppId,
}

impl App {
    /// Registers `desc` with `master` from a server-mode environment, or a
    /// client-only one, and waits until it is connected.
    pub async fn start(master: &Master, desc: ApplicationDescription, client_only: bool) -> App {
        let env = if client_only {
            RpcEnv::client(master.rpc_conf.clone()).unwrap()
        } else {
            RpcEnv::server(master.rpc_conf.clone(), "127.0.0.1", 0)
                .await
                .unwrap()
        };
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
            handle,
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

    /// Waits until at least `n` events received so far (in any order) match, and
    /// returns them.
    pub async fn wait_events(
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
                Ok(None) => panic!("events ended before {what}; {}", self.recent()),
                Err(_) => panic!("no {what} within {PATIENCE:?}; {}", self.recent()),
            }
        }
    }

    /// The number of events seen and the last few, for failure messages.
    pub fn recent(&self) -> String {
        let last = &self.seen[self.seen.len().saturating_sub(12)..];
        format!("{} event(s) seen, the last: {last:#?}", self.seen.len())
    }

    /// Takes the events that arrived so far without waiting.
    pub fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }

    /// Waits for `n` `ExecutorAdded` events; returns executor → worker id.
    pub async fn wait_added(&mut self, n: usize) -> BTreeMap<ExecutorId, String> {
        self.wait_events(&format!("{n} executors added"), n, |e| {
            matches!(e, AppEvent::ExecutorAdded { .. })
        })
        .await
        .into_iter()
        .map(|e| match e {
            AppEvent::ExecutorAdded {
                exec_id, worker_id, ..
            } => (exec_id, worker_id.to_string()),
            _ => unreachable!(),
        })
        .collect()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.env.shutdown();
    }
}

/// An application running `script` with `sh -c`, 64 MB per executor.
pub fn app_desc(
    name: &str,
    script: &str,
    cores_per_executor: Option<u32>,
    max_cores: Option<u32>,
) -> ApplicationDescription {
    let mut command = ExecutorCommand::new("/bin/sh");
    command.args = vec!["-c".into(), script.into()];
    let mut desc = ApplicationDescription::new(name, command);
    desc.cores_per_executor = cores_per_executor;
    desc.max_cores = max_cores;
    desc.memory_per_executor_mb = 64;
    desc
}

/// `work/<app-id>/<exec-id>/stdout` of a worker.
pub fn executor_stdout(worker: &Worker, app: &AppId, exec: ExecutorId) -> PathBuf {
    worker
        .work_dir
        .join(app.as_str())
        .join(exec.to_string())
        .join("stdout")
}

/// Waits until a [`SLEEPER`] executor has written its line, checks it names the
/// executor and the app, and returns the pid it printed.
pub async fn executor_pid(worker: &Worker, app: &AppId, exec: ExecutorId) -> u32 {
    let path = executor_stdout(worker, app, exec);
    let line = wait_for(&format!("{}", path.display()), async || {
        let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
        if text.ends_with('\n') {
            Ok(text.trim_end().to_string())
        } else {
            Err(format!("{text:?}"))
        }
    })
    .await;
    let (head, pid) = line.rsplit_once(" pid ").expect("a pid");
    assert_eq!(
        head,
        format!("executor {exec} of {app}"),
        "{}",
        path.display()
    );
    pid.parse().expect("a pid")
}

/// The pids printed by every executor in a worker's work dir.
pub fn pids_in(worker: &Worker) -> Vec<u32> {
    let mut pids = Vec::new();
    for app in fs::read_dir(&worker.work_dir).unwrap() {
        for exec in fs::read_dir(app.unwrap().path()).unwrap() {
            let text = fs::read_to_string(exec.unwrap().path().join("stdout")).unwrap();
            let pid = text.trim_end().rsplit_once(" pid ").expect("a pid").1;
            pids.push(pid.parse().unwrap());
        }
    }
    pids
}

/// An active or completed application in the status.
pub fn app_in<'a>(
    s: &'a MasterStatusJson,
    app: &AppId,
) -> Option<&'a flint_proto::status::AppStatusJson> {
    s.active_apps
        .iter()
        .chain(&s.completed_apps)
        .find(|a| a.id == *app)
}

/// RUNNING executors of `app` per worker id, from the status.
pub fn running_per_worker(s: &MasterStatusJson, app: &AppId) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for e in app_in(s, app)
        .map(|a| a.executors.as_slice())
        .unwrap_or(&[])
    {
        if e.state == ExecutorState::Running {
            *per.entry(e.worker_id.to_string()).or_insert(0) += 1;
        }
    }
    per
}
