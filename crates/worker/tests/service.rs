//! The worker daemon over real TCP on 127.0.0.1, with real child processes:
//! a fake master (a flint-rpc endpoint named "Master" speaking the real
//! protocol) registers it, watches its heartbeats, launches and kills
//! executors, asks it to reconnect, goes away and comes back, or never
//! answers; one test uses the real master. The status JSON is read over
//! real HTTP. Timers are shortened through settings; every wait has a
//! deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flint_conf::Conf;
use flint_proto::messages::{
    ExecutorStateChanged, KillExecutor, LaunchExecutor, MasterMsg, ReconnectWorker, RegisterWorker,
    RegisteredWorker, RequestMasterState, WorkerMsg, MASTER_ENDPOINT, WORKER_ENDPOINT,
};
use flint_proto::{
    AppId, ApplicationDescription, ExecutorCommand, ExecutorId, ExecutorState, WorkerState,
};
use flint_rpc::{
    Ask, AskError, Context, Endpoint, EndpointRef, Reply, RpcAddress, RpcConf, RpcEnv,
};
use flint_worker::service::{start, WorkerError, WorkerHandle, WorkerOptions, WorkerStatusDoc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(20);

// ----------------------------------------------------------------------
// fixtures
// ----------------------------------------------------------------------

/// The cluster secret and short timers: heartbeats every 100 ms, registration retries every
/// 100–300 ms then 200–600 ms, 2 s kill grace.
fn quick_conf() -> Conf {
    Conf::new()
        // One cluster secret for the worker and the (fake or real) master,
        // in memory: no secret file is read.
        .set("auth.secret", "flint-worker-service-tests")
        .set("rpc.ask_timeout", "5s")
        .set("rpc.connect_timeout", "2s")
        .set("rpc.handshake_timeout", "2s")
        .set("worker.timeout", "400ms")
        .set("worker.initial_registration_retry_interval", "200ms")
        .set("worker.prolonged_registration_retry_interval", "400ms")
        .set("worker.executor_kill_grace", "2s")
}

fn rpc_conf() -> RpcConf {
    RpcConf::from_conf(&quick_conf()).unwrap()
}

/// Every log line of this test binary, so tests can assert on warnings.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let echo = std::env::var_os("RUST_LOG").is_some();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || LogWriter {
                sink: sink.clone(),
                echo,
            })
            .try_init();
        buf
    })
}

struct LogWriter {
    sink: Arc<Mutex<Vec<u8>>>,
    echo: bool,
}

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.sink.lock().unwrap().extend_from_slice(b);
        if self.echo {
            let _ = std::io::stderr().write_all(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_contains(needle: &str) -> bool {
    String::from_utf8_lossy(&logs().lock().unwrap()).contains(needle)
}

/// Whether some log line at `level` ("WARN", "ERROR") contains `needle`.
fn log_line(level: &str, needle: &str) -> bool {
    String::from_utf8_lossy(&logs().lock().unwrap())
        .lines()
        .any(|l| l.contains(level) && l.contains(needle))
}

/// Polls `cond` until it holds, failing after the deadline.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the worker's status until `cond` holds, failing after the deadline.
async fn wait_status(
    w: &WorkerHandle,
    what: &str,
    cond: impl Fn(&WorkerStatusDoc) -> bool,
) -> WorkerStatusDoc {
    let start = Instant::now();
    loop {
        let s = w.status().await;
        if cond(&s) {
            return s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; status {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fake master's endpoint: records every message; with `answer`, accepts
/// every registration; acknowledges every `ExecutorStateChanged` ask, or
/// with `fail_reports` fails it.
struct FakeMasterEndpoint {
    tx: mpsc::UnboundedSender<MasterMsg>,
    answer: bool,
    fail_reports: bool,
    me: Option<EndpointRef<MasterMsg>>,
}

impl Endpoint for FakeMasterEndpoint {
    type Msg = MasterMsg;

    fn on_start(&mut self, ctx: &Context<MasterMsg>) {
        self.me = Some(ctx.self_ref().clone());
    }

    fn receive(&mut self, _: &Context<MasterMsg>, msg: MasterMsg) {
        if let (true, MasterMsg::RegisterWorker(r), Some(me)) = (self.answer, &msg, &self.me) {
            let _ = r.worker.send(RegisteredWorker {
                master: me.clone(),
                master_web_ui_url: "http://fake-master-ui:8080".into(),
                master_address: r.master_address.clone(),
                duplicate: false,
            });
        }
        let _ = self.tx.send(msg);
    }

    fn receive_and_reply(&mut self, _: &Context<MasterMsg>, msg: MasterMsg, reply: Reply) {
        match &msg {
            MasterMsg::ExecutorStateChanged(_) if self.fail_reports => {
                reply.fail("the fake master refuses executor reports")
            }
            MasterMsg::ExecutorStateChanged(_) => reply.send(true),
            _ => reply.fail("the fake master answers only ExecutorStateChanged"),
        }
        let _ = self.tx.send(msg);
    }
}

/// A fake master on 127.0.0.1 and what it received.
struct FakeMaster {
    env: RpcEnv,
    rx: mpsc::UnboundedReceiver<MasterMsg>,
    pending: Vec<MasterMsg>,
    all: Vec<MasterMsg>,
}

impl FakeMaster {
    async fn start(port: u16, answer: bool) -> FakeMaster {
        Self::start_with(port, answer, false).await
    }

    async fn start_with(port: u16, answer: bool, fail_reports: bool) -> FakeMaster {
        let _ = logs();
        let env = RpcEnv::server(rpc_conf(), "127.0.0.1", port)
            .await
            .expect("fake master binds");
        let (tx, rx) = mpsc::unbounded_channel();
        env.setup_endpoint(
            MASTER_ENDPOINT,
            FakeMasterEndpoint {
                tx,
                answer,
                fail_reports,
                me: None,
            },
        )
        .unwrap();
        FakeMaster {
            env,
            rx,
            pending: Vec::new(),
            all: Vec::new(),
        }
    }

    fn address(&self) -> RpcAddress {
        self.env.address().unwrap().clone()
    }

    /// The master URL workers check launch and kill requests against.
    fn url(&self) -> String {
        self.address().to_string()
    }

    /// Takes the first message not yet taken that matches `pred`, waiting
    /// for it up to the deadline.
    async fn expect(&mut self, what: &str, mut pred: impl FnMut(&MasterMsg) -> bool) -> MasterMsg {
        if let Some(i) = self.pending.iter().position(&mut pred) {
            return self.pending.remove(i);
        }
        let start = Instant::now();
        loop {
            let Some(left) = DEADLINE.checked_sub(start.elapsed()) else {
                panic!("timed out waiting for {what}; received {:#?}", self.all);
            };
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(m)) => {
                    self.all.push(m.clone());
                    if pred(&m) {
                        return m;
                    }
                    self.pending.push(m);
                }
                Ok(None) => panic!("fake master endpoint stopped while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; received {:#?}", self.all),
            }
        }
    }

    /// Waits for a registration from the worker and returns it.
    async fn expect_registration(&mut self, w: &WorkerHandle) -> RegisterWorker {
        let id = w.id().clone();
        match self
            .expect(
                "RegisterWorker",
                |m| matches!(m, MasterMsg::RegisterWorker(r) if r.id == id),
            )
            .await
        {
            MasterMsg::RegisterWorker(r) => r,
            _ => unreachable!(),
        }
    }

    /// Waits for the executor's report in `state` and returns it.
    async fn expect_state(
        &mut self,
        app: &AppId,
        exec: u32,
        state: ExecutorState,
    ) -> ExecutorStateChanged {
        let what = format!("ExecutorStateChanged {app}/{exec} {state}");
        match self
            .expect(&what, |m| {
                matches!(m, MasterMsg::ExecutorStateChanged(c)
                    if c.app_id == *app && c.exec_id == ExecutorId(exec) && c.state == state)
            })
            .await
        {
            MasterMsg::ExecutorStateChanged(c) => c,
            _ => unreachable!(),
        }
    }

    /// Messages received and not taken yet, without waiting.
    fn drain(&mut self) -> Vec<MasterMsg> {
        while let Ok(m) = self.rx.try_recv() {
            self.all.push(m.clone());
            self.pending.push(m);
        }
        std::mem::take(&mut self.pending)
    }

    async fn stop(self) {
        self.env.shutdown();
        self.env.await_termination().await;
    }
}

fn options(masters: Vec<RpcAddress>, work_dir: &Path, conf: Conf) -> WorkerOptions {
    WorkerOptions {
        masters,
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        cores: Some(4),
        memory_mb: Some(2048),
        work_dir: work_dir.to_path_buf(),
        conf,
    }
}

async fn worker(master: &FakeMaster, work_dir: &Path) -> WorkerHandle {
    start(options(vec![master.address()], work_dir, quick_conf()))
        .await
        .expect("worker starts")
}

/// A fake master, a worker registered with it, and the worker's endpoint
/// as the master sees it.
async fn registered() -> (
    FakeMaster,
    WorkerHandle,
    EndpointRef<WorkerMsg>,
    tempfile::TempDir,
) {
    registered_with(FakeMaster::start(0, true).await, quick_conf()).await
}

async fn registered_with(
    mut m: FakeMaster,
    conf: Conf,
) -> (
    FakeMaster,
    WorkerHandle,
    EndpointRef<WorkerMsg>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let w = start(options(vec![m.address()], dir.path(), conf))
        .await
        .expect("worker starts");
    let reg = m.expect_registration(&w).await;
    let url = m.url();
    wait_status(&w, "registration", |s| {
        s.registered && s.master_url.as_deref() == Some(url.as_str())
    })
    .await;
    (m, w, reg.worker, dir)
}

fn app(n: u32) -> AppId {
    AppId::generate(1_795_319_700_000, n)
}

/// An application whose executors run `script` with `/bin/sh -c`.
fn sh_app(script: &str) -> ApplicationDescription {
    let mut cmd = ExecutorCommand::new("/bin/sh");
    cmd.args = vec!["-c".into(), script.into()];
    ApplicationDescription::new("sh-app", cmd)
}

/// Runs until killed; prints its placeholders and writes its pid.
const LONG_RUNNING: &str =
    "echo started {{EXECUTOR_ID}} {{APP_ID}} {{CORES}}; echo $$ > pid; sleep 1000";

fn launch(m: &FakeMaster, a: &AppId, exec: u32, desc: ApplicationDescription) -> LaunchExecutor {
    LaunchExecutor {
        master_url: m.url(),
        app_id: a.clone(),
        exec_id: ExecutorId(exec),
        desc,
        cores: 2,
        memory_mb: 512,
    }
}

fn exec_dir(w: &WorkerHandle, a: &AppId, exec: u32) -> PathBuf {
    w.work_dir().join(a.as_str()).join(exec.to_string())
}

/// The pid the executor's shell wrote into its directory.
async fn child_pid(w: &WorkerHandle, a: &AppId, exec: u32) -> u32 {
    let file = exec_dir(w, a, exec).join("pid");
    wait_until("the child's pid file", || {
        std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `GET path` on the worker's web UI: status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head and body");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, body.to_string())
}

async fn stop(w: WorkerHandle) {
    w.shutdown();
    tokio::time::timeout(DEADLINE, w.wait())
        .await
        .expect("worker stops in time")
        .expect("clean exit");
}

// ----------------------------------------------------------------------
// tests
// ----------------------------------------------------------------------

#[tokio::test]
async fn registers_heartbeats_and_serves_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = FakeMaster::start(0, true).await;
    let w = worker(&m, dir.path()).await;

    let reg = m.expect_registration(&w).await;
    assert_eq!(reg.host, "127.0.0.1");
    assert_eq!(reg.port, w.rpc_address().port);
    assert_eq!((reg.cores, reg.memory_mb), (4, 2048));
    assert_eq!(reg.web_ui_url, w.webui_url());
    assert_eq!(reg.master_address, m.address());
    assert_eq!(
        reg.worker.address().to_string(),
        format!("flint://Worker@{}", w.rpc_address().host_port())
    );

    // Registered: it reports what it runs (nothing) and heartbeats.
    let id = w.id().clone();
    match m
        .expect("WorkerLatestState", |msg| {
            matches!(msg, MasterMsg::WorkerLatestState(_))
        })
        .await
    {
        MasterMsg::WorkerLatestState(s) => {
            assert_eq!(s.worker_id, id);
            assert!(s.executors.is_empty() && s.driver_ids.is_empty());
        }
        _ => unreachable!(),
    }
    for n in 0..3 {
        m.expect(
            &format!("heartbeat {n}"),
            |msg| matches!(msg, MasterMsg::Heartbeat(h) if h.worker_id == id),
        )
        .await;
    }

    // The status document over HTTP.
    let (code, body) = http_get(w.webui_address(), "/api/v1/status").await;
    assert_eq!(code, 200, "{body}");
    let doc: WorkerStatusDoc = serde_json::from_str(&body).unwrap();
    assert_eq!(doc.id, id);
    assert_eq!(doc.state, WorkerState::Alive);
    assert!(doc.registered && doc.connected);
    assert_eq!(doc.master_url.as_deref(), Some(m.url().as_str()));
    assert_eq!(
        doc.master_web_ui_url.as_deref(),
        Some("http://fake-master-ui:8080")
    );
    assert_eq!((doc.cores, doc.cores_used), (4, 0));
    assert_eq!((doc.memory_mb, doc.memory_used_mb), (2048, 0));
    assert!(doc.executors.is_empty() && doc.drivers.is_empty());
    assert_eq!(doc.work_dir, w.work_dir().display().to_string());
    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
    // With the cluster secret: authentication is on, and nothing warned.
    assert!(doc.auth);
    assert_eq!(raw["auth"], true, "{body}");
    assert!(!log_contains(&format!(
        "anyone who can reach {} can run code",
        w.rpc_address()
    )));
    for key in [
        "id",
        "auth",
        "master_url",
        "state",
        "cores",
        "cores_used",
        "memory_mb",
        "memory_used_mb",
        "executors",
        "finished_executors",
        "drivers",
        "finished_drivers",
    ] {
        assert!(raw.get(key).is_some(), "status JSON lacks {key}: {body}");
    }
    let (code, text) = http_get(w.webui_address(), "/").await;
    assert_eq!(code, 200);
    assert!(text.contains(&format!("flint worker {id}")), "{text}");

    stop(w).await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_kills_and_reports_executors() {
    let (mut m, w, worker_ref, _dir) = registered().await;
    let a = app(1);

    // Launch: a real child whose output lands in work/<app>/<exec>/stdout.
    worker_ref
        .send(launch(&m, &a, 0, sh_app(LONG_RUNNING)))
        .unwrap();
    let running = m.expect_state(&a, 0, ExecutorState::Running).await;
    assert_eq!(running.exit_status, None);
    let stdout = exec_dir(&w, &a, 0).join("stdout");
    let expected = format!("started 0 {a} 2\n");
    wait_until("the executor's stdout", || {
        std::fs::read_to_string(&stdout).is_ok_and(|s| s == expected)
    })
    .await;
    let stderr = std::fs::read_to_string(exec_dir(&w, &a, 0).join("stderr")).unwrap();
    assert!(
        stderr.starts_with("Flint Executor Command: \"/bin/sh\" \"-c\""),
        "{stderr}"
    );
    let pid = child_pid(&w, &a, 0).await;
    assert!(alive(pid));

    // The status page lists it with its resources and directory.
    let (code, body) = http_get(w.webui_address(), "/api/v1/status").await;
    assert_eq!(code, 200);
    let doc: WorkerStatusDoc = serde_json::from_str(&body).unwrap();
    assert_eq!((doc.cores_used, doc.memory_used_mb), (2, 512));
    assert_eq!(doc.executors.len(), 1, "{body}");
    let e = &doc.executors[0];
    assert_eq!((&e.app_id, e.exec_id), (&a, ExecutorId(0)));
    assert_eq!(e.state, ExecutorState::Running);
    assert_eq!((e.cores, e.memory_mb), (2, 512));
    assert_eq!(e.app_name, "sh-app");
    assert_eq!(e.work_dir, exec_dir(&w, &a, 0).display().to_string());

    // Kill: TERM reaches the whole group, the child is gone, KILLED reported.
    worker_ref
        .send(KillExecutor {
            master_url: m.url(),
            app_id: a.clone(),
            exec_id: ExecutorId(0),
        })
        .unwrap();
    let killed = m.expect_state(&a, 0, ExecutorState::Killed).await;
    assert_eq!(killed.exit_status, Some(128 + 15), "{killed:?}");
    wait_until("the killed child to disappear", || !alive(pid)).await;

    // A command that fails: EXITED with its status.
    worker_ref
        .send(launch(&m, &a, 1, sh_app("exit 1")))
        .unwrap();
    let exited = m.expect_state(&a, 1, ExecutorState::Exited).await;
    assert_eq!(exited.exit_status, Some(1), "{exited:?}");
    assert!(exited.message.unwrap().contains("exited with code 1"));

    // A program that cannot start: FAILED with the reason.
    let mut missing = ExecutorCommand::new("/nonexistent/flint-executor");
    missing.args = vec!["{{EXECUTOR_ID}}".into()];
    worker_ref
        .send(launch(
            &m,
            &a,
            2,
            ApplicationDescription::new("missing", missing),
        ))
        .unwrap();
    let failed = m.expect_state(&a, 2, ExecutorState::Failed).await;
    assert!(
        failed
            .message
            .as_deref()
            .unwrap()
            .contains("/nonexistent/flint-executor"),
        "{failed:?}"
    );

    let s = wait_status(&w, "every executor finished", |s| {
        s.executors.is_empty() && s.finished_executors.len() == 3
    })
    .await;
    let states: Vec<_> = s
        .finished_executors
        .iter()
        .map(|e| (e.exec_id.0, e.state, e.exit_status))
        .collect();
    assert_eq!(
        states,
        vec![
            (0, ExecutorState::Killed, Some(143)),
            (1, ExecutorState::Exited, Some(1)),
            (2, ExecutorState::Failed, None),
        ]
    );
    assert_eq!((s.cores_used, s.memory_used_mb), (0, 0));

    stop(w).await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_and_reaps_running_children() {
    let (mut m, w, worker_ref, _dir) = registered().await;
    let a = app(2);
    worker_ref
        .send(launch(&m, &a, 0, sh_app(LONG_RUNNING)))
        .unwrap();
    worker_ref
        .send(launch(&m, &a, 1, sh_app(LONG_RUNNING)))
        .unwrap();
    m.expect_state(&a, 0, ExecutorState::Running).await;
    m.expect_state(&a, 1, ExecutorState::Running).await;
    let pids = [child_pid(&w, &a, 0).await, child_pid(&w, &a, 1).await];
    assert!(pids.iter().all(|p| alive(*p)));

    w.shutdown();
    tokio::time::timeout(DEADLINE, w.wait())
        .await
        .expect("worker stops in time")
        .expect("a requested shutdown is a clean exit");
    // wait() returns only after the children were killed and reaped.
    for pid in pids {
        assert!(!alive(pid), "child {pid} outlived its worker");
    }
    assert!(log_contains(&format!("worker_id={}", w.id())));
    m.stop().await;
}

#[tokio::test]
async fn reconnect_worker_makes_it_register_again() {
    let (mut m, w, worker_ref, _dir) = registered().await;
    worker_ref
        .send(ReconnectWorker {
            master_url: m.url(),
        })
        .unwrap();
    let again = m.expect_registration(&w).await;
    assert_eq!(again.master_address, m.address());
    // Registered again: it reports its state again and keeps heartbeating.
    m.expect("WorkerLatestState after reconnecting", |msg| {
        matches!(msg, MasterMsg::WorkerLatestState(_))
    })
    .await;
    let id = w.id().clone();
    m.drain();
    m.expect(
        "heartbeat after reconnecting",
        |msg| matches!(msg, MasterMsg::Heartbeat(h) if h.worker_id == id),
    )
    .await;
    stop(w).await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registers_by_itself_when_the_master_comes_back() {
    let (m, w, _worker_ref, _dir) = registered().await;
    let address = m.address();
    m.stop().await;
    wait_status(&w, "the worker to notice the master is gone", |s| {
        !s.connected && !s.registered
    })
    .await;
    assert!(log_contains(&format!(
        "Connection to master {address} failed! Waiting for master to reconnect"
    )));

    // The master comes back on the same port; the worker's retries find it.
    let mut m = FakeMaster::start(address.port, true).await;
    m.expect_registration(&w).await;
    let s = wait_status(&w, "registered again", |s| s.registered && s.connected).await;
    assert_eq!(s.master_url, Some(address.to_string()));
    let id = w.id().clone();
    m.expect(
        "heartbeat to the restarted master",
        |msg| matches!(msg, MasterMsg::Heartbeat(h) if h.worker_id == id),
    )
    .await;
    stop(w).await;
    m.stop().await;
}

#[tokio::test]
async fn gives_up_when_no_master_answers() {
    let dir = tempfile::tempdir().unwrap();
    let conf = quick_conf()
        .set("worker.initial_registration_retries", "2")
        .set("worker.max_registration_retries", "4")
        .set("worker.initial_registration_retry_interval", "50ms")
        .set("worker.prolonged_registration_retry_interval", "100ms");

    // A master that hears every registration and never answers.
    let mut silent = FakeMaster::start(0, false).await;
    let w = start(options(vec![silent.address()], dir.path(), conf.clone()))
        .await
        .unwrap();
    let err = tokio::time::timeout(DEADLINE, w.wait())
        .await
        .expect("the worker gives up in time")
        .expect_err("giving up is an error");
    match &err {
        WorkerError::Exited { code, reason } => {
            assert_eq!(*code, 1);
            assert!(
                reason.contains("All masters are unresponsive! Giving up"),
                "{reason}"
            );
            assert!(reason.contains(&silent.url()), "{reason}");
            assert!(
                reason.contains("worker.max_registration_retries"),
                "{reason}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(log_contains(&format!(
        "no master at {} accepted worker {}",
        silent.url(),
        w.id()
    )));
    // One first attempt and four retries, then nothing more.
    for n in 0..5 {
        silent
            .expect(&format!("registration {n}"), |m| {
                matches!(m, MasterMsg::RegisterWorker(_))
            })
            .await;
    }
    let more = silent
        .drain()
        .into_iter()
        .filter(|m| matches!(m, MasterMsg::RegisterWorker(_)))
        .count();
    assert_eq!(more, 0, "registrations after giving up");
    silent.stop().await;

    // A master address where nothing listens ends the same way.
    let nothing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        RpcAddress::new("127.0.0.1", l.local_addr().unwrap().port())
    };
    let w = start(options(vec![nothing.clone()], dir.path(), conf))
        .await
        .unwrap();
    let err = tokio::time::timeout(DEADLINE, w.wait())
        .await
        .expect("the worker gives up in time")
        .expect_err("giving up is an error");
    assert!(
        err.to_string().contains(&format!("no master at {nothing}")),
        "{err}"
    );
}

/// A request the worker never answers (it only takes one-way messages).
#[derive(Debug, Serialize, Deserialize)]
struct Poke(WorkerMsg);

impl Ask for Poke {
    type Reply = bool;
}

impl From<Poke> for WorkerMsg {
    fn from(p: Poke) -> Self {
        p.0
    }
}

#[tokio::test]
async fn bad_input_is_ignored_and_the_worker_keeps_serving() {
    let (mut m, w, worker_ref, _dir) = registered().await;
    let a = app(3);

    // A launch from a master that is not the worker's: ignored, with a warning.
    let mut stranger = launch(&m, &a, 0, sh_app(LONG_RUNNING));
    stranger.master_url = "flint://127.0.0.1:1".into();
    worker_ref.send(stranger).unwrap();
    let warning =
        format!("Invalid Master (flint://127.0.0.1:1) attempted to launch executor {a}/0");
    wait_until("the invalid-master warning", || log_contains(&warning)).await;
    // ... and a kill from it too.
    worker_ref
        .send(KillExecutor {
            master_url: "flint://127.0.0.1:1".into(),
            app_id: a.clone(),
            exec_id: ExecutorId(0),
        })
        .unwrap();
    // A kill of an executor that does not exist: logged, nothing else.
    worker_ref
        .send(KillExecutor {
            master_url: m.url(),
            app_id: a.clone(),
            exec_id: ExecutorId(99),
        })
        .unwrap();
    wait_until("the unknown-executor line", || {
        log_contains(&format!("Asked to kill unknown executor {a}/99"))
    })
    .await;

    // A request: the worker answers none, and says so.
    let err = worker_ref
        .ask(Poke(
            KillExecutor {
                master_url: m.url(),
                app_id: a.clone(),
                exec_id: ExecutorId(0),
            }
            .into(),
        ))
        .await
        .expect_err("the worker answers no requests");
    assert!(
        matches!(&err, AskError::Remote { message, .. } if message.contains("answers no requests")),
        "{err}"
    );

    // A master message (an executor report) sent to the worker's endpoint:
    // refused by protocol, as a request and one-way.
    let wrong: EndpointRef<MasterMsg> = m.env.endpoint_ref(w.rpc_address(), WORKER_ENDPOINT);
    let report = ExecutorStateChanged {
        app_id: a.clone(),
        exec_id: ExecutorId(0),
        state: ExecutorState::Running,
        message: None,
        exit_status: None,
    };
    let err = wrong.ask(report.clone()).await.expect_err("wrong protocol");
    assert!(err.to_string().contains("flint.worker/2"), "{err}");
    wrong.send(report).unwrap();

    // Nothing was launched, nothing reported, and the worker still serves.
    let s = w.status().await;
    assert!(
        s.executors.is_empty() && s.finished_executors.is_empty(),
        "{s:#?}"
    );
    let id = w.id().clone();
    m.drain();
    m.expect(
        "a heartbeat after the bad input",
        |msg| matches!(msg, MasterMsg::Heartbeat(h) if h.worker_id == id),
    )
    .await;
    worker_ref
        .send(launch(&m, &a, 1, sh_app("exit 0")))
        .unwrap();
    let exited = m.expect_state(&a, 1, ExecutorState::Exited).await;
    assert_eq!(exited.exit_status, Some(0));
    assert!(!m.all.iter().any(|msg| matches!(msg,
        MasterMsg::ExecutorStateChanged(c) if c.exec_id == ExecutorId(0))));
    let (code, _) = http_get(w.webui_address(), "/api/v1/status").await;
    assert_eq!(code, 200);

    stop(w).await;
    m.stop().await;
}

#[tokio::test]
async fn start_up_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let m = FakeMaster::start(0, true).await;
    let base = || options(vec![m.address()], dir.path(), quick_conf());

    let err = start(WorkerOptions {
        masters: vec![],
        ..base()
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("no master URL configured"),
        "{err}"
    );

    let err = start(WorkerOptions {
        cores: Some(0),
        ..base()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, WorkerError::ZeroCores), "{err}");
    assert!(err.to_string().contains("at least 1 core"), "{err}");

    // A work dir that cannot be created (a file is in the way) ...
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = start(WorkerOptions {
        work_dir: file.join("work"),
        ..base()
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot create work dir {}",
            file.join("work").display()
        )),
        "{err}"
    );
    // ... and one that exists but takes no files (even for root).
    let err = start(WorkerOptions {
        work_dir: PathBuf::from("/proc/self"),
        ..base()
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("work dir /proc/self is not writable: "),
        "{err}"
    );

    // Ports in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = start(WorkerOptions { port, ..base() }).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("port {port} on 127.0.0.1 is in use; choose another with --port")
    );
    let err = start(WorkerOptions {
        webui_port: port,
        ..base()
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("web UI port {port} on 127.0.0.1 is in use; choose another with --webui-port")
    );

    // A bad setting names its key.
    let err = start(WorkerOptions {
        conf: quick_conf().set("worker.cleanup.interval", "soon"),
        ..base()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("worker.cleanup.interval"), "{err}");

    // Defaults: every CPU, the machine's memory less 1 GiB (at least 1 GiB).
    let w = start(WorkerOptions {
        cores: None,
        memory_mb: None,
        ..base()
    })
    .await
    .unwrap();
    let s = w.status().await;
    let cpus = u32::try_from(std::thread::available_parallelism().unwrap().get()).unwrap();
    assert_eq!(s.cores, cpus);
    assert!(s.memory_mb >= 1024, "{}", s.memory_mb);
    stop(w).await;
    m.stop().await;
}

#[tokio::test]
async fn registers_with_the_real_master() {
    let _ = logs();
    let dir = tempfile::tempdir().unwrap();
    let master = flint_master::start(flint_master::MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: quick_conf().set("worker.timeout", "4s"),
    })
    .await
    .expect("master starts");
    let w = start(options(
        vec![master.rpc_address().clone()],
        dir.path(),
        quick_conf().set("worker.timeout", "4s"),
    ))
    .await
    .expect("worker starts");

    // The master's own view, asked over RPC as a tool would.
    let client = RpcEnv::client(rpc_conf()).unwrap();
    let master_ref: EndpointRef<MasterMsg> = client
        .setup_endpoint_ref(master.rpc_address(), MASTER_ENDPOINT)
        .await
        .unwrap();
    let start_t = Instant::now();
    let listed = loop {
        let status = master_ref.ask(RequestMasterState).await.unwrap();
        if let Some(entry) = status.workers.iter().find(|e| &e.id == w.id()) {
            if entry.state == WorkerState::Alive {
                break entry.clone();
            }
        }
        assert!(
            start_t.elapsed() < DEADLINE,
            "the master never listed the worker ALIVE: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((listed.cores, listed.memory_mb), (4, 2048));
    assert_eq!(
        (listed.host.as_str(), listed.port),
        ("127.0.0.1", w.rpc_address().port)
    );
    let s = wait_status(&w, "registered with the real master", |s| s.registered).await;
    assert_eq!(s.master_url, Some(master.rpc_address().to_string()));
    assert_eq!(s.master_web_ui_url.as_deref(), Some(master.webui_url()));

    stop(w).await;
    client.shutdown();
    client.await_termination().await;
    master.shutdown();
    master.wait().await;
}

#[tokio::test]
async fn kill_escalates_to_sigkill_after_the_grace() {
    let conf = quick_conf().set("worker.executor_kill_grace", "300ms");
    let (mut m, w, worker_ref, _dir) =
        registered_with(FakeMaster::start(0, true).await, conf).await;
    let a = app(4);
    // The shell and its sleep both ignore SIGTERM.
    let stubborn = "trap '' TERM; echo $$ > pid; sleep 1000";
    worker_ref
        .send(launch(&m, &a, 0, sh_app(stubborn)))
        .unwrap();
    m.expect_state(&a, 0, ExecutorState::Running).await;
    let pid = child_pid(&w, &a, 0).await;
    let asked = Instant::now();
    worker_ref
        .send(KillExecutor {
            master_url: m.url(),
            app_id: a.clone(),
            exec_id: ExecutorId(0),
        })
        .unwrap();
    let killed = m.expect_state(&a, 0, ExecutorState::Killed).await;
    assert_eq!(killed.exit_status, Some(128 + 9), "{killed:?}");
    assert!(asked.elapsed() >= Duration::from_millis(300));
    wait_until("the killed child to disappear", || !alive(pid)).await;
    stop(w).await;
    m.stop().await;
}

#[tokio::test]
async fn unacknowledged_executor_reports_are_retried_then_the_worker_exits() {
    let conf = quick_conf()
        .set("rpc.ask_timeout", "300ms")
        .set("worker.executor_state_sync.max_attempts", "3");
    let (mut m, w, worker_ref, _dir) =
        registered_with(FakeMaster::start_with(0, true, true).await, conf).await;
    let a = app(5);
    worker_ref
        .send(launch(&m, &a, 0, sh_app(LONG_RUNNING)))
        .unwrap();
    // The RUNNING report is asked three times, `rpc.ask_timeout` apart,
    // then the worker gives up.
    m.expect_state(&a, 0, ExecutorState::Running).await;
    let pid = child_pid(&w, &a, 0).await;
    for _ in 0..2 {
        m.expect_state(&a, 0, ExecutorState::Running).await;
    }
    let err = tokio::time::timeout(DEADLINE, w.wait())
        .await
        .expect("the worker gives up in time")
        .expect_err("giving up is an error");
    assert!(
        err.to_string().contains(&format!(
            "Failed to send ExecutorStateChanged({a}/0 RUNNING)"
        )),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("worker.executor_state_sync.max_attempts"));
    // Exiting killed and reaped the executor.
    assert!(!alive(pid), "child {pid} outlived its worker");
    m.stop().await;
}

#[tokio::test]
async fn old_application_directories_are_cleaned() {
    let conf = quick_conf()
        .set("worker.cleanup.interval", "100ms")
        .set("worker.cleanup.app_data_ttl", "3600");
    let dir = tempfile::tempdir().unwrap();
    // One application directory untouched for two hours, one fresh.
    let old = dir.path().join(app(6).as_str());
    std::fs::create_dir_all(old.join("0")).unwrap();
    std::fs::write(old.join("0").join("stdout"), "old\n").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for p in [old.join("0").join("stdout"), old.join("0"), old.clone()] {
        std::fs::File::open(&p)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let fresh = dir.path().join(app(7).as_str());
    std::fs::create_dir_all(fresh.join("0")).unwrap();

    let mut m = FakeMaster::start(0, true).await;
    let w = start(options(vec![m.address()], dir.path(), conf))
        .await
        .unwrap();
    m.expect_registration(&w).await;
    wait_until("the old directory to be removed", || !old.exists()).await;
    assert!(fresh.exists(), "a fresh directory was removed");
    stop(w).await;
    m.stop().await;
}

/// A real master with a secret, and a worker whose registration it refuses
/// in the handshake: the worker says the secret was refused and where to
/// get it, and gives up with that reason, not "All masters are
/// unresponsive!".
#[tokio::test]
async fn a_master_refusing_the_secret_is_named_not_unresponsive() {
    let _ = logs();
    let dir = tempfile::tempdir().unwrap();
    let quick_retries = quick_conf()
        .set("worker.initial_registration_retries", "2")
        .set("worker.max_registration_retries", "3")
        .set("worker.initial_registration_retry_interval", "50ms")
        .set("worker.prolonged_registration_retry_interval", "100ms");
    let cases = [
        (
            quick_retries.clone().set("auth.secret", "a-wrong-secret"),
            "refused this worker's secret: ",
            true,
        ),
        (
            quick_retries.clone().set("auth.enabled", "false"),
            "requires a secret and this worker has none: ",
            false,
        ),
    ];
    for (conf, refusal, auth) in cases {
        // A master per case: the RPC layer delays handshakes from an address
        // after failed ones, which would outlast these quick retries.
        let master = flint_master::start(flint_master::MasterOptions {
            host: "127.0.0.1".into(),
            port: 0,
            webui_port: 0,
            conf: quick_conf().set("auth.secret", "the-right-secret"),
        })
        .await
        .expect("master starts");
        let expected = format!("master {} {refusal}", master.rpc_address());
        let w = start(options(
            vec![master.rpc_address().clone()],
            dir.path(),
            conf,
        ))
        .await
        .expect("worker starts");
        assert_eq!(w.status().await.auth, auth);
        let warning = format!(
            "RPC authentication is disabled (auth.enabled = false): anyone who can reach {} can \
             run code on this cluster",
            w.rpc_address()
        );
        assert_eq!(
            log_line("WARN", &warning),
            !auth,
            "start-up warning {warning:?} present exactly when auth is off"
        );
        let err = tokio::time::timeout(DEADLINE, w.wait())
            .await
            .expect("the worker gives up in time")
            .expect_err("giving up is an error");
        let WorkerError::Exited { code, reason } = &err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(*code, 1);
        assert!(!reason.contains("unresponsive"), "{reason}");
        assert!(reason.contains(&expected), "{reason}");
        assert!(
            reason.contains("copy the master's secret file (~/.flint/secret by default) here")
                && reason.contains("auth.secret_file / FLINT_AUTH_SECRET_FILE"),
            "{reason}"
        );
        assert!(
            log_line("ERROR", &expected),
            "the refusal was not logged as an error: {expected:?}"
        );
        // Logged once, not once per retry (the exit reason is a separate line).
        let lines = String::from_utf8_lossy(&logs().lock().unwrap())
            .lines()
            .filter(|l| l.contains(&expected) && !l.contains("Giving up"))
            .count();
        assert_eq!(lines, 1, "logged {lines} times: {expected:?}");
        master.shutdown();
        master.wait().await;
    }
}
