//! The master daemon over real TCP on 127.0.0.1: fake workers and a fake
//! application client (light flint-rpc endpoints speaking the real
//! protocol) register, heartbeat, get executors, go silent or disconnect;
//! the status JSON is read over real HTTP. Every wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../daemon/tests/http_client/mod.rs"]
mod http_client;

use std::time::{Duration, Instant};

use flint_conf::Conf;
use flint_master::{start, MasterHandle, MasterOptions};
use flint_proto::messages::{
    AppClientMsg, ExecutorAdded, ExecutorStateChanged, Heartbeat, KillApplication, MasterMsg,
    RegisterApplication, RegisterWorker, RequestMasterState, UnregisterApplication,
    WorkerLatestState, WorkerMsg, APP_CLIENT_ENDPOINT, MASTER_ENDPOINT, WORKER_ENDPOINT,
};
use flint_proto::status::MasterStatusJson;
use flint_proto::{
    AppId, ApplicationDescription, ApplicationState, ExecutorCommand, ExecutorId, ExecutorState,
    WorkerId, WorkerState,
};
use flint_rpc::{Context, Endpoint, EndpointRef, RpcAddress, RpcConf, RpcEnv};
use http_client::http_get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(20);

// ----------------------------------------------------------------------
// fixtures
// ----------------------------------------------------------------------

/// Short RPC deadlines and a cluster secret shared by the master and the
/// fakes (set in memory, so no secret file is read or created).
fn quick_conf() -> Conf {
    Conf::new()
        .set("auth.secret", "flint-master-service-tests")
        .set("rpc.ask_timeout", "10s")
        .set("rpc.connect_timeout", "5s")
        .set("rpc.handshake_timeout", "2s")
}

fn rpc_conf() -> RpcConf {
    RpcConf::from_conf(&quick_conf()).unwrap()
}

/// Logs go to the test's output when `RUST_LOG` asks for them.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn master_with(conf: Conf) -> MasterHandle {
    init_logs();
    start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf,
    })
    .await
    .expect("master starts")
}

async fn master() -> MasterHandle {
    master_with(quick_conf()).await
}

/// Forwards every message an endpoint receives into a channel.
struct Recorder<M>(mpsc::UnboundedSender<M>);

impl Endpoint for Recorder<WorkerMsg> {
    type Msg = WorkerMsg;
    fn receive(&mut self, _: &Context<WorkerMsg>, msg: WorkerMsg) {
        let _ = self.0.send(msg);
    }
}

impl Endpoint for Recorder<AppClientMsg> {
    type Msg = AppClientMsg;
    fn receive(&mut self, _: &Context<AppClientMsg>, msg: AppClientMsg) {
        let _ = self.0.send(msg);
    }
}

/// What an endpoint received: every message in arrival order (`all`), and
/// the ones no `expect` has taken yet (`pending`).
struct Mailbox<M> {
    rx: mpsc::UnboundedReceiver<M>,
    pending: Vec<M>,
    all: Vec<M>,
}

impl<M: std::fmt::Debug + Clone> Mailbox<M> {
    fn new(rx: mpsc::UnboundedReceiver<M>) -> Self {
        Mailbox {
            rx,
            pending: Vec::new(),
            all: Vec::new(),
        }
    }

    /// Takes the first message not yet taken that matches `pred`, waiting
    /// for it up to the deadline; messages may arrive in any order.
    async fn expect(&mut self, what: &str, mut pred: impl FnMut(&M) -> bool) -> M {
        if let Some(i) = self.pending.iter().position(&mut pred) {
            return self.pending.remove(i);
        }
        let start = Instant::now();
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!("timed out waiting for {what}; received {:#?}", self.all)
            });
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(m)) => {
                    self.all.push(m.clone());
                    if pred(&m) {
                        return m;
                    }
                    self.pending.push(m);
                }
                Ok(None) => panic!("channel closed waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; received {:#?}", self.all),
            }
        }
    }

    /// Every message received so far, without waiting.
    fn all(&mut self) -> &[M] {
        while let Ok(m) = self.rx.try_recv() {
            self.all.push(m.clone());
            self.pending.push(m);
        }
        &self.all
    }
}

/// A worker as far as the master can tell: a server-mode RPC env with a
/// `Worker` endpoint, registering and heartbeating like the real one.
struct FakeWorker {
    env: RpcEnv,
    id: WorkerId,
    port: u16,
    cores: u32,
    memory_mb: u64,
    me: EndpointRef<WorkerMsg>,
    master: EndpointRef<MasterMsg>,
    master_address: RpcAddress,
    inbox: Mailbox<WorkerMsg>,
    heartbeats: Option<tokio::task::JoinHandle<()>>,
}

impl FakeWorker {
    async fn start(m: &MasterHandle, cores: u32, memory_mb: u64) -> Self {
        let env = RpcEnv::server(rpc_conf(), "127.0.0.1", 0).await.unwrap();
        let port = env.address().unwrap().port;
        let (tx, rx) = mpsc::unbounded_channel();
        let me = env.setup_endpoint(WORKER_ENDPOINT, Recorder(tx)).unwrap();
        let master_address = m.rpc_address().clone();
        let master = env
            .setup_endpoint_ref::<MasterMsg>(&master_address, MASTER_ENDPOINT)
            .await
            .unwrap();
        let id = WorkerId::generate(flint_master::service::wall_ms(), "127.0.0.1", port).unwrap();
        FakeWorker {
            env,
            id,
            port,
            cores,
            memory_mb,
            me,
            master,
            master_address,
            inbox: Mailbox::new(rx),
            heartbeats: None,
        }
    }

    fn register(&self) {
        self.master
            .send(RegisterWorker {
                id: self.id.clone(),
                host: "127.0.0.1".into(),
                port: self.port,
                worker: self.me.clone(),
                cores: self.cores,
                memory_mb: self.memory_mb,
                web_ui_url: format!("http://127.0.0.1:{}", self.port),
                master_address: self.master_address.clone(),
            })
            .unwrap();
    }

    async fn registered(m: &MasterHandle, cores: u32, memory_mb: u64) -> Self {
        let mut w = Self::start(m, cores, memory_mb).await;
        w.register();
        w.expect("RegisteredWorker", |m| {
            matches!(m, WorkerMsg::RegisteredWorker(_))
        })
        .await;
        w
    }

    fn start_heartbeats(&mut self, every: Duration) {
        let master = self.master.clone();
        let hb = Heartbeat {
            worker_id: self.id.clone(),
            worker: self.me.clone(),
        };
        self.heartbeats = Some(tokio::spawn(async move {
            loop {
                if master.send(hb.clone()).is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        }));
    }

    fn stop_heartbeats(&mut self) {
        if let Some(h) = self.heartbeats.take() {
            h.abort();
        }
    }

    async fn expect(&mut self, what: &str, pred: impl FnMut(&WorkerMsg) -> bool) -> WorkerMsg {
        let what = format!("{what} at worker {}", self.id);
        self.inbox.expect(&what, pred).await
    }

    /// Every LaunchExecutor received so far (waiting for none).
    fn launches(&mut self) -> Vec<(AppId, ExecutorId, u32)> {
        self.inbox
            .all()
            .iter()
            .filter_map(|m| match m {
                WorkerMsg::LaunchExecutor(l) => Some((l.app_id.clone(), l.exec_id, l.cores)),
                _ => None,
            })
            .collect()
    }

    /// Waits until this worker has been told to launch `exec_id` of `app_id`.
    async fn launched(&mut self, app_id: &AppId, exec_id: ExecutorId) {
        if self
            .launches()
            .iter()
            .any(|(a, e, _)| a == app_id && *e == exec_id)
        {
            return;
        }
        self.expect("LaunchExecutor", |m| {
            matches!(m, WorkerMsg::LaunchExecutor(l) if &l.app_id == app_id && l.exec_id == exec_id)
        })
        .await;
    }

    fn shutdown(&mut self) {
        self.stop_heartbeats();
        self.env.shutdown();
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An application client: a client-only env with an `AppClient` endpoint.
struct FakeApp {
    env: RpcEnv,
    me: EndpointRef<AppClientMsg>,
    master: EndpointRef<MasterMsg>,
    inbox: Mailbox<AppClientMsg>,
}

impl FakeApp {
    async fn start(m: &MasterHandle) -> Self {
        let env = RpcEnv::client(rpc_conf()).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let me = env
            .setup_endpoint(APP_CLIENT_ENDPOINT, Recorder(tx))
            .unwrap();
        let master = env
            .setup_endpoint_ref::<MasterMsg>(m.rpc_address(), MASTER_ENDPOINT)
            .await
            .unwrap();
        FakeApp {
            env,
            me,
            master,
            inbox: Mailbox::new(rx),
        }
    }

    async fn register(&mut self, desc: ApplicationDescription) -> AppId {
        self.master
            .send(RegisterApplication {
                desc,
                driver: self.me.clone(),
            })
            .unwrap();
        match self
            .expect("RegisteredApplication", |m| {
                matches!(m, AppClientMsg::RegisteredApplication(_))
            })
            .await
        {
            AppClientMsg::RegisteredApplication(r) => r.app_id,
            _ => unreachable!(),
        }
    }

    async fn expect(
        &mut self,
        what: &str,
        pred: impl FnMut(&AppClientMsg) -> bool,
    ) -> AppClientMsg {
        self.inbox.expect(what, pred).await
    }
}

impl FakeApp {
    /// Waits for `n` ExecutorAdded, then until each named worker has received
    /// its LaunchExecutor (the two travel over different connections).
    async fn executors_added(
        &mut self,
        app_id: &AppId,
        n: usize,
        workers: &mut [FakeWorker],
    ) -> Vec<ExecutorAdded> {
        let mut added = Vec::new();
        for _ in 0..n {
            let m = self
                .expect("ExecutorAdded", |m| {
                    matches!(m, AppClientMsg::ExecutorAdded(_))
                })
                .await;
            let AppClientMsg::ExecutorAdded(a) = m else {
                unreachable!()
            };
            added.push(a);
        }
        for a in &added {
            let w = workers
                .iter_mut()
                .find(|w| w.id == a.worker_id)
                .expect("a known worker");
            w.launched(app_id, a.exec_id).await;
        }
        added
    }
}

impl Drop for FakeApp {
    fn drop(&mut self) {
        self.env.shutdown();
    }
}

fn app_desc(name: &str, max_cores: u32, cores_per_executor: u32) -> ApplicationDescription {
    let mut command = ExecutorCommand::new("/bin/true");
    command.args = vec!["{{EXECUTOR_ID}}".into(), "{{APP_ID}}".into()];
    let mut d = ApplicationDescription::new(name, command);
    d.max_cores = Some(max_cores);
    d.cores_per_executor = Some(cores_per_executor);
    d.memory_per_executor_mb = 512;
    d
}

// ----------------------------------------------------------------------
// HTTP
// ----------------------------------------------------------------------

async fn status_over_http(m: &MasterHandle) -> (MasterStatusJson, serde_json::Value) {
    let (code, body) = http_get(m.webui_address(), "/api/v1/status").await;
    assert_eq!(code, 200, "{body}");
    let doc: MasterStatusJson = serde_json::from_str(&body).unwrap();
    (doc, serde_json::from_str(&body).unwrap())
}

/// Polls the status JSON over HTTP until `pred` holds.
async fn wait_status(
    m: &MasterHandle,
    what: &str,
    mut pred: impl FnMut(&MasterStatusJson) -> bool,
) -> MasterStatusJson {
    let start = Instant::now();
    loop {
        let (doc, _) = status_over_http(m).await;
        if pred(&doc) {
            return doc;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; status: {doc:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn worker_state(doc: &MasterStatusJson, id: &WorkerId) -> Option<WorkerState> {
    doc.workers.iter().find(|w| &w.id == id).map(|w| w.state)
}

// ----------------------------------------------------------------------
// tests
// ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_and_the_status_json_shows_them_alive() {
    let m = master().await;
    let mut w1 = FakeWorker::start(&m, 4, 4096).await;
    let mut w2 = FakeWorker::start(&m, 2, 2048).await;
    w1.register();
    w2.register();
    let reply = w1
        .expect("RegisteredWorker", |m| {
            matches!(m, WorkerMsg::RegisteredWorker(_))
        })
        .await;
    let WorkerMsg::RegisteredWorker(r) = reply else {
        unreachable!()
    };
    assert!(!r.duplicate);
    assert_eq!(r.master_web_ui_url, m.webui_url());
    assert_eq!(&r.master_address, m.rpc_address());
    w2.expect("RegisteredWorker", |m| {
        matches!(m, WorkerMsg::RegisteredWorker(_))
    })
    .await;
    // The master's ref travelled in the answer and works.
    let via_ref = r.master.ask(RequestMasterState).await.unwrap();
    assert_eq!(via_ref.workers.len(), 2);

    let (doc, raw) = status_over_http(&m).await;
    assert_eq!(doc.url, m.rpc_address().to_string());
    assert_eq!(raw["status"], "ALIVE");
    assert_eq!(doc.alive_workers, 2);
    assert_eq!((doc.cores, doc.cores_used), (6, 0));
    assert_eq!((doc.memory_mb, doc.memory_used_mb), (6144, 0));
    for w in [&w1, &w2] {
        let row = raw["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == w.id.as_str())
            .expect("worker listed");
        assert_eq!(row["state"], "ALIVE");
        assert_eq!(row["host"], "127.0.0.1");
        assert_eq!(row["port"], w.port);
        assert_eq!(row["cores"], w.cores);
        assert_eq!(row["memory_mb"], w.memory_mb);
        assert_eq!(row["cores_used"], 0);
        assert_eq!(row["memory_used_mb"], 0);
        assert!(row["last_heartbeat_ms"].as_u64().unwrap() > 0);
    }

    // Registering again is a duplicate: a warning, not a second worker.
    w1.register();
    let again = w1
        .expect("duplicate RegisteredWorker", |m| {
            matches!(m, WorkerMsg::RegisteredWorker(_))
        })
        .await;
    assert!(matches!(again, WorkerMsg::RegisteredWorker(r) if r.duplicate));
    assert_eq!(status_over_http(&m).await.0.workers.len(), 2);

    let (code, text) = http_get(m.webui_address(), "/").await;
    assert_eq!(code, 200);
    assert!(text.contains("2 alive"), "{text}");
    assert!(text.contains(&m.rpc_address().to_string()), "{text}");
    let (code, _) = http_get(m.webui_address(), "/api/v1/nope").await;
    assert_eq!(code, 404);

    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_gets_executors_spread_across_workers_and_hears_about_them() {
    let m = master().await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(FakeWorker::registered(&m, 4, 4096).await);
    }
    let mut app = FakeApp::start(&m).await;
    let app_id = app.register(app_desc("spread", 6, 2)).await;

    // Spread out: one 2-core executor on each of the three workers.
    let mut launched = Vec::new();
    for w in &mut workers {
        let l = w
            .expect("LaunchExecutor", |m| {
                matches!(m, WorkerMsg::LaunchExecutor(_))
            })
            .await;
        let WorkerMsg::LaunchExecutor(l) = l else {
            unreachable!()
        };
        assert_eq!(l.app_id, app_id);
        assert_eq!(l.cores, 2);
        assert_eq!(l.memory_mb, 512);
        assert_eq!(l.desc.name, "spread");
        assert_eq!(l.desc.command.args, ["{{EXECUTOR_ID}}", "{{APP_ID}}"]);
        assert_eq!(l.master_url, m.rpc_address().to_string());
        launched.push((w.id.clone(), l.exec_id));
    }
    for _ in 0..3 {
        let added = app
            .expect("ExecutorAdded", |m| {
                matches!(m, AppClientMsg::ExecutorAdded(_))
            })
            .await;
        let AppClientMsg::ExecutorAdded(a) = added else {
            unreachable!()
        };
        assert!(
            launched.contains(&(a.worker_id.clone(), a.exec_id)),
            "{a:?}"
        );
        assert_eq!(a.cores, 2);
    }

    // A worker reports its executor RUNNING (an ask, answered true); the app
    // hears it.
    let (wid, exec_id) = launched[0].clone();
    let ok = workers[0]
        .master
        .ask(ExecutorStateChanged {
            app_id: app_id.clone(),
            exec_id,
            state: ExecutorState::Running,
            message: None,
            exit_status: None,
        })
        .await
        .unwrap();
    assert!(ok);
    let up = app
        .expect(
            "ExecutorUpdated RUNNING",
            |m| matches!(m, AppClientMsg::ExecutorUpdated(u) if u.state == ExecutorState::Running),
        )
        .await;
    assert!(matches!(up, AppClientMsg::ExecutorUpdated(u) if u.exec_id == exec_id));

    let doc = wait_status(&m, "the app RUNNING with 3 executors", |d| {
        d.active_apps.iter().any(|a| {
            a.id == app_id && a.state == ApplicationState::Running && a.executors.len() == 3
        })
    })
    .await;
    assert_eq!(doc.cores_used, 6);
    let running = &doc.active_apps[0].executors;
    assert!(running
        .iter()
        .any(|e| e.worker_id == wid && e.id == exec_id && e.state == ExecutorState::Running));

    // The app unregisters: its executors are killed and every worker hears
    // the app finished.
    app.master
        .send(UnregisterApplication {
            app_id: app_id.clone(),
            final_state: None,
        })
        .unwrap();
    for w in &mut workers {
        w.expect(
            "KillExecutor",
            |m| matches!(m, WorkerMsg::KillExecutor(k) if k.app_id == app_id),
        )
        .await;
        w.expect(
            "ApplicationFinished",
            |m| matches!(m, WorkerMsg::ApplicationFinished(f) if f.app_id == app_id),
        )
        .await;
    }
    let doc = wait_status(&m, "the app FINISHED", |d| {
        d.completed_apps
            .iter()
            .any(|a| a.id == app_id && a.state == ApplicationState::Finished)
    })
    .await;
    assert!(doc.active_apps.is_empty());
    assert_eq!(doc.cores_used, 0);
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packing_puts_executors_on_as_few_workers_as_possible_and_kill_works() {
    let m = master_with(quick_conf().set("deploy.spread_out", "false")).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(FakeWorker::registered(&m, 4, 4096).await);
    }
    let mut app = FakeApp::start(&m).await;
    let app_id = app.register(app_desc("packed", 6, 2)).await;
    app.executors_added(&app_id, 3, &mut workers).await;
    let mut counts: Vec<usize> = workers.iter_mut().map(|w| w.launches().len()).collect();
    counts.sort_unstable();
    assert_eq!(counts, [0, 1, 2]);

    // An operator kills the app: the app hears it, the executors are killed.
    let tool = RpcEnv::client(rpc_conf()).unwrap();
    let master = tool
        .setup_endpoint_ref::<MasterMsg>(m.rpc_address(), MASTER_ENDPOINT)
        .await
        .unwrap();
    assert!(master
        .ask(KillApplication {
            app_id: app_id.clone()
        })
        .await
        .unwrap());
    let removed = app
        .expect("ApplicationRemoved", |m| {
            matches!(m, AppClientMsg::ApplicationRemoved(_))
        })
        .await;
    assert!(
        matches!(removed, AppClientMsg::ApplicationRemoved(r) if r.message.starts_with("KILLED"))
    );
    wait_status(&m, "the app KILLED", |d| {
        d.completed_apps
            .iter()
            .any(|a| a.id == app_id && a.state == ApplicationState::Killed)
    })
    .await;
    assert!(!master.ask(KillApplication { app_id }).await.unwrap());
    tool.shutdown();
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_marked_dead_and_its_executors_replaced_elsewhere() {
    let m = master_with(quick_conf().set("worker.timeout", "3s")).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut w = FakeWorker::registered(&m, 4, 4096).await;
        w.start_heartbeats(Duration::from_millis(200));
        workers.push(w);
    }
    let mut app = FakeApp::start(&m).await;
    let app_id = app.register(app_desc("survivor", 8, 2)).await;
    app.executors_added(&app_id, 4, &mut workers).await;
    // Spread out: 2 + 1 + 1 executors.
    let mut counts: Vec<usize> = workers.iter_mut().map(|w| w.launches().len()).collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 2]);

    // The worker with two executors goes silent but keeps its connection:
    // only the heartbeat timeout can notice.
    let victim = workers
        .iter_mut()
        .position(|w| w.launches().len() == 2)
        .unwrap();
    let lost: Vec<ExecutorId> = workers[victim]
        .launches()
        .into_iter()
        .map(|(_, e, _)| e)
        .collect();
    let victim_id = workers[victim].id.clone();
    workers[victim].stop_heartbeats();

    let doc = wait_status(&m, "the silent worker DEAD", |d| {
        worker_state(d, &victim_id) == Some(WorkerState::Dead)
    })
    .await;
    assert_eq!(doc.alive_workers, 2);
    for id in &lost {
        let up = app
            .expect("ExecutorUpdated LOST", |m| {
                matches!(m, AppClientMsg::ExecutorUpdated(u) if u.exec_id == *id && u.state == ExecutorState::Lost)
            })
            .await;
        let AppClientMsg::ExecutorUpdated(u) = up else {
            unreachable!()
        };
        assert_eq!(u.worker_host.as_deref(), Some("127.0.0.1"));
        assert!(u.message.unwrap_or_default().contains("heartbeat"));
    }
    app.expect(
        "WorkerRemoved",
        |m| matches!(m, AppClientMsg::WorkerRemoved(r) if r.worker_id == victim_id),
    )
    .await;
    // Two replacements, on the two live workers (2 free cores each).
    let mut replacements = Vec::new();
    for _ in 0..2 {
        let added = app
            .expect("a replacement ExecutorAdded", |m| {
                matches!(m, AppClientMsg::ExecutorAdded(a) if !lost.contains(&a.exec_id) && a.exec_id.0 >= 4)
            })
            .await;
        let AppClientMsg::ExecutorAdded(a) = added else {
            unreachable!()
        };
        assert_ne!(a.worker_id, victim_id);
        replacements.push((a.worker_id, a.exec_id));
    }
    for (wid, exec_id) in &replacements {
        let w = workers.iter_mut().find(|w| &w.id == wid).unwrap();
        w.launched(&app_id, *exec_id).await;
    }
    let doc = wait_status(&m, "4 executors again", |d| {
        d.active_apps.iter().any(|a| a.executors.len() == 4)
    })
    .await;
    assert!(doc.active_apps[0]
        .executors
        .iter()
        .all(|e| e.worker_id != victim_id));
    assert!(workers[victim]
        .launches()
        .iter()
        .all(|(_, e, _)| lost.contains(e)));
    // The dead worker's next heartbeat is answered with ReconnectWorker.
    workers[victim].start_heartbeats(Duration::from_millis(200));
    workers[victim]
        .expect("ReconnectWorker", |m| {
            matches!(m, WorkerMsg::ReconnectWorker(_))
        })
        .await;
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_workers_are_told_to_reconnect_and_the_master_keeps_serving() {
    let m = master().await;
    let mut w = FakeWorker::start(&m, 2, 1024).await;
    // Never registered: its heartbeat is answered with ReconnectWorker.
    w.master
        .send(Heartbeat {
            worker_id: w.id.clone(),
            worker: w.me.clone(),
        })
        .unwrap();
    let r = w
        .expect("ReconnectWorker", |m| {
            matches!(m, WorkerMsg::ReconnectWorker(_))
        })
        .await;
    assert!(
        matches!(r, WorkerMsg::ReconnectWorker(r) if r.master_url == m.rpc_address().to_string())
    );
    // Other messages from an unknown worker are ignored, asks still answered.
    w.master
        .send(WorkerLatestState {
            worker_id: w.id.clone(),
            executors: vec![],
            driver_ids: vec![],
        })
        .unwrap();
    let answered = w
        .master
        .ask(ExecutorStateChanged {
            app_id: AppId::generate(0, 99),
            exec_id: ExecutorId(7),
            state: ExecutorState::Exited,
            message: None,
            exit_status: Some(1),
        })
        .await;
    assert!(answered.is_ok(), "{answered:?}");
    // It registers as told.
    w.register();
    w.expect("RegisteredWorker", |m| {
        matches!(m, WorkerMsg::RegisteredWorker(_))
    })
    .await;
    let doc = wait_status(&m, "the worker ALIVE", |d| {
        worker_state(d, &w.id) == Some(WorkerState::Alive)
    })
    .await;
    assert_eq!(doc.workers.len(), 1);
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_wanting_bigger_executors_than_any_worker_waits_and_says_why() {
    let m = master().await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(FakeWorker::registered(&m, 2, 4096).await);
    }
    let mut app = FakeApp::start(&m).await;
    let app_id = app.register(app_desc("too-big", 8, 4)).await;
    let doc = wait_status(&m, "a waiting reason", |d| {
        d.active_apps
            .iter()
            .any(|a| a.id == app_id && a.waiting_reason.is_some())
    })
    .await;
    let a = &doc.active_apps[0];
    assert_eq!(a.state, ApplicationState::Waiting);
    assert!(a.executors.is_empty());
    let why = a.waiting_reason.as_deref().unwrap();
    assert!(
        why.contains("4 cores per executor") && why.contains("largest worker has 2"),
        "{why}"
    );
    let (_, raw) = status_over_http(&m).await;
    assert_eq!(raw["active_apps"][0]["waiting_reason"], why);
    let (_, text) = http_get(m.webui_address(), "/").await;
    assert!(text.contains(why), "{text}");
    for w in &mut workers {
        assert!(w.launches().is_empty());
    }
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_master_port_is_refused_and_registration_still_works() {
    let m = master().await;
    let addr = m.rpc_address().host_port();
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        (0u8..=255).cycle().take(4096).collect::<Vec<u8>>(),
        vec![0xff; 64],
    ] {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let _ = s.write_all(&garbage).await;
        // The master closes the connection (or the handshake times out).
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(DEADLINE, s.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the master kept a garbage connection open");
    }
    let mut w = FakeWorker::start(&m, 2, 1024).await;
    w.register();
    w.expect("RegisteredWorker", |m| {
        matches!(m, WorkerMsg::RegisteredWorker(_))
    })
    .await;
    wait_status(&m, "the worker ALIVE", |d| d.alive_workers == 1).await;
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_remove_workers_and_finish_apps() {
    // Default 60 s timeout: only the disconnection can explain what follows.
    let m = master().await;
    let mut stays = FakeWorker::registered(&m, 4, 4096).await;
    let mut goes = FakeWorker::registered(&m, 4, 4096).await;
    let mut app = FakeApp::start(&m).await;
    let app_id = app.register(app_desc("orphan", 8, 2)).await;
    for _ in 0..4 {
        app.expect("ExecutorAdded", |m| {
            matches!(m, AppClientMsg::ExecutorAdded(_))
        })
        .await;
    }
    let goes_id = goes.id.clone();
    goes.shutdown();
    wait_status(&m, "the disconnected worker DEAD", |d| {
        worker_state(d, &goes_id) == Some(WorkerState::Dead)
    })
    .await;
    app.expect(
        "ExecutorUpdated LOST",
        |m| matches!(m, AppClientMsg::ExecutorUpdated(u) if u.state == ExecutorState::Lost),
    )
    .await;
    app.expect(
        "WorkerRemoved",
        |m| matches!(m, AppClientMsg::WorkerRemoved(r) if r.worker_id == goes_id),
    )
    .await;

    // The app's client goes away: the app ends FINISHED and its executors
    // are killed.
    app.env.shutdown();
    app.env.await_termination().await;
    let doc = wait_status(&m, "the app FINISHED", |d| {
        d.completed_apps
            .iter()
            .any(|a| a.id == app_id && a.state == ApplicationState::Finished)
    })
    .await;
    assert!(doc.active_apps.is_empty());
    stays
        .expect(
            "KillExecutor",
            |m| matches!(m, WorkerMsg::KillExecutor(k) if k.app_id == app_id),
        )
        .await;
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_in_use_and_bad_settings_are_clear_errors() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = start(MasterOptions {
        host: "127.0.0.1".into(),
        port,
        webui_port: 0,
        conf: quick_conf(),
    })
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("port {port} on 127.0.0.1 is in use; choose another with --port")
    );
    let e = start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: port,
        conf: quick_conf(),
    })
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("web UI port {port} on 127.0.0.1 is in use; choose another with --webui-port")
    );
    // An address this machine does not have (TEST-NET-3; nothing is sent).
    let e = start(MasterOptions {
        host: "203.0.113.1".into(),
        port: 0,
        webui_port: 0,
        conf: quick_conf(),
    })
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot listen on 203.0.113.1:0 for the RPC environment"),
        "{e}"
    );
    let e = start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: quick_conf().set("ui.host", "203.0.113.1"),
    })
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot listen on 203.0.113.1:0 for the web UI"),
        "{e}"
    );
    let e = start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: quick_conf().set("worker.timeout", "a while"),
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("worker.timeout"), "{e}");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_rpc_port_the_web_ui_and_every_task() {
    let m = master_with(quick_conf().set("worker.timeout", "1s")).await;
    let mut w = FakeWorker::registered(&m, 2, 1024).await;
    w.start_heartbeats(Duration::from_millis(100));
    let rpc = m.rpc_address().host_port();
    let web = m.webui_address();
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait())
        .await
        .expect("every task ends");
    assert!(
        TcpStream::connect(&rpc).await.is_err(),
        "RPC port still open"
    );
    assert!(TcpStream::connect(web).await.is_err(), "web UI still open");
    w.shutdown();
}

// ----------------------------------------------------------------------
// authentication: the status flag and the start-up warning
// ----------------------------------------------------------------------

/// Log lines written while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Starts a master with `conf` while capturing its log lines (the test runs
/// on one thread, so the thread's default subscriber sees them).
async fn master_capturing(conf: Conf) -> (MasterHandle, Captured) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let m = start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf,
    })
    .await
    .unwrap();
    (m, logs)
}

#[tokio::test]
async fn without_authentication_the_master_warns_at_start_up_and_the_status_says_so() {
    let (m, logs) = master_capturing(quick_conf().set("auth.enabled", "false")).await;
    let expected = format!(
        "RPC authentication is disabled (auth.enabled = false): anyone who can reach {} can run \
         code on this cluster",
        m.rpc_address()
    );
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains(&expected)),
        "no start-up warning {expected:?} in:\n{text}"
    );
    let (doc, raw) = status_over_http(&m).await;
    assert!(!doc.auth);
    assert_eq!(raw["auth"], false);
    assert!(!m.status().auth);
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test]
async fn with_a_secret_the_master_does_not_warn_and_the_status_says_auth_is_on() {
    let (m, logs) = master_capturing(quick_conf().set("auth.secret", "s3cret")).await;
    let text = logs.text();
    assert!(
        text.contains("flint master listening on"),
        "logs not captured:\n{text}"
    );
    assert!(
        !text.contains("RPC authentication is disabled"),
        "warned although a secret is set:\n{text}"
    );
    let (doc, raw) = status_over_http(&m).await;
    assert!(doc.auth);
    assert_eq!(raw["auth"], true);
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}
