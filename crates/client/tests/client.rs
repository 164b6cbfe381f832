//! The application client over real TCP on 127.0.0.1: against fake masters
//! (flint-rpc endpoints speaking `MasterMsg`, written here) for registration
//! rounds, leader answers, every event, master changes and dropped
//! connections; and against the real master service with a fake worker, for
//! an executor actually being placed. Every wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_client::{
    AppClient, AppClientHandle, AppEvent, ChannelListener, ClientError, ALL_MASTERS_UNRESPONSIVE,
    APPLICATION_STOPPED, ENVIRONMENT_SHUT_DOWN, MASTER_REMOVED_PREFIX,
};
use flint_conf::Conf;
use flint_proto::messages::{
    AppClientMsg, ApplicationRemoved, ExecutorAdded, ExecutorStateChanged, ExecutorUpdated,
    MasterChanged, MasterMsg, RegisterApplication, RegisterWorker, RegisteredApplication,
    WorkerMsg, WorkerRemoved, APP_CLIENT_ENDPOINT, MASTER_ENDPOINT, WORKER_ENDPOINT,
};
use flint_proto::status::MasterStatusJson;
use flint_proto::{
    AppId, ApplicationDescription, ApplicationState, ExecutorCommand, ExecutorId, ExecutorState,
    WorkerId,
};
use flint_rpc::{Context, Endpoint, EndpointRef, Reply, RpcAddress, RpcConf, RpcEnv};
use tokio::sync::mpsc;

/// The longest any single wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

// ----------------------------------------------------------------------
// fixtures
// ----------------------------------------------------------------------

/// Settings every node of these in-process clusters shares: an ephemeral cluster
/// secret (one per test process; nothing is written to the flint home).
fn cluster_conf() -> Conf {
    static SECRET: std::sync::OnceLock<Conf> = std::sync::OnceLock::new();
    SECRET
        .get_or_init(|| flint_rpc::secret::with_ephemeral(Conf::new()))
        .clone()
}

fn rpc_conf() -> RpcConf {
    RpcConf::from_conf(
        &cluster_conf()
            .set("rpc.ask_timeout", "10s")
            .set("rpc.lookup_timeout", "5s")
            .set("rpc.connect_timeout", "5s")
            .set("rpc.handshake_timeout", "2s"),
    )
    .unwrap()
}

/// Client settings with registration rounds of `round` (3 rounds, Spark's
/// count).
fn client_conf(round: &str) -> Conf {
    Conf::new().set("client.registration.timeout", round)
}

fn desc(name: &str) -> ApplicationDescription {
    let mut command = ExecutorCommand::new("/bin/true");
    command.args = vec!["{{EXECUTOR_ID}}".into(), "{{APP_ID}}".into()];
    let mut d = ApplicationDescription::new(name, command);
    d.cores_per_executor = Some(1);
    d.memory_per_executor_mb = 256;
    d
}

fn worker_id(port: u16) -> WorkerId {
    WorkerId::generate(1_700_000_000_000, "127.0.0.1", port).unwrap()
}

/// Receives from `rx` until `pred` matches, keeping the rest in `seen`; fails
/// after [`DEADLINE`].
async fn expect<T: std::fmt::Debug>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    seen: &mut Vec<T>,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        let left = DEADLINE
            .checked_sub(start.elapsed())
            .unwrap_or_else(|| panic!("timed out waiting for {what}; saw {seen:#?}"));
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(m)) if pred(&m) => return m,
            Ok(Some(m)) => seen.push(m),
            Ok(None) => panic!("channel closed waiting for {what}; saw {seen:#?}"),
            Err(_) => panic!("timed out waiting for {what}; saw {seen:#?}"),
        }
    }
}

/// The next item, whatever it is, within [`DEADLINE`].
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("channel closed waiting for {what}"))
}

/// Asserts that nothing matching `pred` arrives within `window`.
async fn expect_none<T: std::fmt::Debug>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    window: Duration,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) {
    let end = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(end, rx.recv()).await {
        assert!(!pred(&m), "unexpected {what}: {m:?}");
    }
}

/// A master as far as an application client can tell: a server-mode env with
/// a `Master` endpoint that records every message and, when `answers`, plays
/// leader (answers `RegisterApplication` with a fresh app id and
/// `RequestExecutors`/`KillExecutors` with `true`). A silent one plays a
/// standby.
struct FakeMaster {
    env: RpcEnv,
    me: EndpointRef<MasterMsg>,
    rx: mpsc::UnboundedReceiver<MasterMsg>,
    seen: Vec<MasterMsg>,
}

struct FakeMasterEndpoint {
    tx: mpsc::UnboundedSender<MasterMsg>,
    answers: bool,
    next_app: Arc<AtomicU32>,
}

impl Endpoint for FakeMasterEndpoint {
    type Msg = MasterMsg;

    fn receive(&mut self, ctx: &Context<MasterMsg>, msg: MasterMsg) {
        if let (true, MasterMsg::RegisterApplication(r)) = (self.answers, &msg) {
            let n = self.next_app.fetch_add(1, Ordering::SeqCst);
            r.driver
                .send(RegisteredApplication {
                    app_id: AppId::generate(1_700_000_000_000, n),
                    master: ctx.self_ref().clone(),
                })
                .unwrap();
        }
        let _ = self.tx.send(msg);
    }

    fn receive_and_reply(&mut self, _: &Context<MasterMsg>, msg: MasterMsg, reply: Reply) {
        match &msg {
            MasterMsg::RequestExecutors(_) | MasterMsg::KillExecutors(_) => reply.send(true),
            other => reply.fail(format!("fake master does not answer {other:?}")),
        }
        let _ = self.tx.send(msg);
    }
}

impl FakeMaster {
    async fn start(answers: bool) -> Self {
        let env = RpcEnv::server(rpc_conf(), "127.0.0.1", 0).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let me = env
            .setup_endpoint(
                MASTER_ENDPOINT,
                FakeMasterEndpoint {
                    tx,
                    answers,
                    next_app: Arc::new(AtomicU32::new(0)),
                },
            )
            .unwrap();
        FakeMaster {
            env,
            me,
            rx,
            seen: Vec::new(),
        }
    }

    fn address(&self) -> RpcAddress {
        self.env.address().unwrap().clone()
    }

    async fn expect(&mut self, what: &str, pred: impl FnMut(&MasterMsg) -> bool) -> MasterMsg {
        let what = format!("{what} at master {}", self.address());
        expect(&mut self.rx, &mut self.seen, &what, pred).await
    }

    /// Waits for a `RegisterApplication` and returns it.
    async fn registration(&mut self) -> RegisterApplication {
        match self
            .expect("RegisterApplication", |m| {
                matches!(m, MasterMsg::RegisterApplication(_))
            })
            .await
        {
            MasterMsg::RegisterApplication(r) => r,
            _ => unreachable!(),
        }
    }

    /// How many `RegisterApplication`s arrived so far (including ones kept in
    /// `seen`).
    fn registrations_so_far(&mut self) -> usize {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
        self.seen
            .iter()
            .filter(|m| matches!(m, MasterMsg::RegisterApplication(_)))
            .count()
    }

    /// Waits until `n` `RegisterApplication`s have arrived in all.
    async fn wait_registrations(&mut self, n: usize) {
        let start = Instant::now();
        while self.registrations_so_far() < n {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "timed out waiting for {n} registrations; saw {:#?}",
                    self.seen
                )
            });
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(m)) => self.seen.push(m),
                _ => panic!("no {n} registrations; saw {:#?}", self.seen),
            }
        }
    }

    async fn shutdown(&self) {
        self.env.shutdown();
        tokio::time::timeout(DEADLINE, self.env.await_termination())
            .await
            .expect("fake master stops");
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.env.shutdown();
    }
}

/// Starts a client with a [`ChannelListener`].
fn start_client(
    env: &RpcEnv,
    masters: Vec<RpcAddress>,
    name: &str,
    conf: &Conf,
) -> (AppClientHandle, mpsc::UnboundedReceiver<AppEvent>) {
    let (listener, events) = ChannelListener::new();
    let client = AppClient::start(env.clone(), masters, desc(name), listener, conf).unwrap();
    (client, events)
}

async fn connected(events: &mut mpsc::UnboundedReceiver<AppEvent>) -> AppId {
    match next(events, "Connected").await {
        AppEvent::Connected(id) => id,
        other => panic!("expected Connected first, got {other:?}"),
    }
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> RpcAddress {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    RpcAddress::new("127.0.0.1", port)
}

// ----------------------------------------------------------------------
// (a) against fake masters
// ----------------------------------------------------------------------

#[tokio::test]
async fn registers_with_every_master_and_reports_every_event_from_the_leader() {
    let mut standby = FakeMaster::start(false).await;
    let mut leader = FakeMaster::start(true).await;
    let env = RpcEnv::server(rpc_conf(), "127.0.0.1", 0).await.unwrap();
    let (client, mut events) = start_client(
        &env,
        vec![standby.address(), leader.address()],
        "events",
        &client_conf("5s"),
    );
    assert_eq!(client.endpoint().name(), APP_CLIENT_ENDPOINT);

    // Both masters hear the registration, with the description and the
    // client's own endpoint; only the leader answers.
    let at_standby = standby.registration().await;
    let at_leader = leader.registration().await;
    for r in [&at_standby, &at_leader] {
        assert_eq!(r.desc, desc("events"));
        assert_eq!(r.driver.name(), APP_CLIENT_ENDPOINT);
        assert_eq!(r.driver.rpc_address().as_ref(), env.address());
    }
    let app_id = connected(&mut events).await;
    assert_eq!(app_id, AppId::generate(1_700_000_000_000, 0));
    assert_eq!(client.app_id(), Some(app_id.clone()));
    assert_eq!(client.master_address(), Some(leader.address()));
    assert!(!client.is_dead());

    // Every event the master can send, in order; RUNNING produces no
    // callback, so the next event is the EXITED one.
    let driver = at_leader.driver;
    let worker = worker_id(4000);
    driver
        .send(ExecutorAdded {
            exec_id: ExecutorId(0),
            worker_id: worker.clone(),
            host_port: "127.0.0.1:4000".into(),
            cores: 2,
            memory_mb: 256,
        })
        .unwrap();
    let update = |exec, state, message: Option<&str>, exit_status, worker_host: Option<&str>| {
        ExecutorUpdated {
            exec_id: ExecutorId(exec),
            state,
            message: message.map(str::to_string),
            exit_status,
            worker_host: worker_host.map(str::to_string),
        }
    };
    driver
        .send(update(0, ExecutorState::Running, None, None, None))
        .unwrap();
    driver
        .send(update(
            0,
            ExecutorState::Exited,
            Some("Command exited with code 1"),
            Some(1),
            None,
        ))
        .unwrap();
    driver
        .send(update(
            1,
            ExecutorState::Decommissioned,
            Some("worker decommissioned"),
            None,
            Some("127.0.0.1"),
        ))
        .unwrap();
    driver
        .send(update(
            2,
            ExecutorState::Lost,
            None,
            None,
            Some("127.0.0.1"),
        ))
        .unwrap();
    driver
        .send(WorkerRemoved {
            worker_id: worker.clone(),
            host: "127.0.0.1".into(),
            message: "Not receiving heartbeat for 60 seconds".into(),
        })
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next(&mut events, "executor and worker events").await);
    }
    assert_eq!(
        got,
        vec![
            AppEvent::ExecutorAdded {
                exec_id: ExecutorId(0),
                worker_id: worker.clone(),
                host_port: "127.0.0.1:4000".into(),
                cores: 2,
                memory_mb: 256,
            },
            AppEvent::ExecutorRemoved {
                exec_id: ExecutorId(0),
                message: "Command exited with code 1".into(),
                exit_status: Some(1),
                worker_host: None,
            },
            AppEvent::ExecutorDecommissioned {
                exec_id: ExecutorId(1),
                message: "worker decommissioned".into(),
                worker_host: Some("127.0.0.1".into()),
            },
            AppEvent::ExecutorRemoved {
                exec_id: ExecutorId(2),
                message: String::new(),
                exit_status: None,
                worker_host: Some("127.0.0.1".into()),
            },
            AppEvent::WorkerRemoved {
                worker_id: worker,
                host: "127.0.0.1".into(),
                message: "Not receiving heartbeat for 60 seconds".into(),
            },
        ]
    );

    // Dynamic allocation goes to the leader, with the app id.
    assert!(client.request_total_executors(4).await.unwrap());
    let m = leader
        .expect("RequestExecutors", |m| {
            matches!(m, MasterMsg::RequestExecutors(_))
        })
        .await;
    let MasterMsg::RequestExecutors(r) = m else {
        unreachable!()
    };
    assert_eq!((r.app_id, r.total), (app_id.clone(), 4));
    assert!(client
        .kill_executors(vec![ExecutorId(0), ExecutorId(3)])
        .await
        .unwrap());
    let m = leader
        .expect("KillExecutors", |m| {
            matches!(m, MasterMsg::KillExecutors(_))
        })
        .await;
    let MasterMsg::KillExecutors(k) = m else {
        unreachable!()
    };
    assert_eq!(k.app_id, app_id);
    assert_eq!(k.exec_ids, vec![ExecutorId(0), ExecutorId(3)]);

    // The master removes the application: dead with Spark's wording, once.
    driver
        .send(ApplicationRemoved {
            message: "KILLED: killed by an operator".into(),
        })
        .unwrap();
    let reason = format!("{MASTER_REMOVED_PREFIX}KILLED: killed by an operator");
    assert_eq!(
        next(&mut events, "Dead").await,
        AppEvent::Dead(reason.clone())
    );
    assert_eq!(
        tokio::time::timeout(DEADLINE, client.wait_dead())
            .await
            .unwrap(),
        reason
    );
    assert_eq!(client.dead_reason(), Some(reason));
    // Stopping afterwards reports no second death, and requests are refused.
    tokio::time::timeout(DEADLINE, client.stop()).await.unwrap();
    assert!(!client.request_total_executors(1).await.unwrap());
    assert!(!client.kill_executors(vec![ExecutorId(0)]).await.unwrap());
    expect_none(&mut events, Duration::from_millis(200), "event", |_| true).await;
    // The standby heard nothing after the (one) registration taken above.
    assert_eq!(standby.registrations_so_far(), 0);
    assert!(standby.seen.is_empty(), "{:?}", standby.seen);
    env.shutdown();
}

#[tokio::test]
async fn gives_up_when_no_master_answers_after_the_retries() {
    let mut silent = FakeMaster::start(false).await;
    let nowhere = closed_port();
    // A client-only environment, as a driver may have.
    let env = RpcEnv::client(rpc_conf()).unwrap();
    let round = Duration::from_millis(400);
    let started = Instant::now();
    let (client, mut events) = start_client(
        &env,
        vec![nowhere, silent.address()],
        "unanswered",
        &client_conf("400ms"),
    );
    assert_eq!(
        next(&mut events, "Dead").await,
        AppEvent::Dead(ALL_MASTERS_UNRESPONSIVE.into())
    );
    assert_eq!(
        ALL_MASTERS_UNRESPONSIVE,
        "All masters are unresponsive! Giving up."
    );
    // Three rounds of `round` each passed first.
    assert!(
        started.elapsed() >= 3 * round,
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(client.app_id(), None);
    assert_eq!(
        client.dead_reason().as_deref(),
        Some(ALL_MASTERS_UNRESPONSIVE)
    );

    // One registration per round reached the silent master: three, then no
    // more.
    silent.wait_registrations(3).await;
    expect_none(&mut silent.rx, 2 * round, "fourth registration", |m| {
        matches!(m, MasterMsg::RegisterApplication(_))
    })
    .await;
    assert_eq!(silent.registrations_so_far(), 3);
    // Before registration nothing can be requested.
    assert!(!client.request_total_executors(2).await.unwrap());
    tokio::time::timeout(DEADLINE, client.stop()).await.unwrap();
    // Already dead: no second Dead event.
    expect_none(&mut events, Duration::from_millis(200), "event", |_| true).await;
    env.shutdown();
}

#[tokio::test]
async fn reports_a_dropped_master_and_follows_the_new_leader() {
    let mut old = FakeMaster::start(true).await;
    let mut new = FakeMaster::start(false).await;
    let env = RpcEnv::server(rpc_conf(), "127.0.0.1", 0).await.unwrap();
    let (client, mut events) = start_client(
        &env,
        vec![old.address(), new.address()],
        "failover",
        &client_conf("5s"),
    );
    let app_id = connected(&mut events).await;
    assert_eq!(client.master_address(), Some(old.address()));
    old.registration().await;
    let at_new = new.registration().await;

    // The leader's process goes away: disconnected, once.
    old.shutdown().await;
    assert_eq!(
        next(&mut events, "Disconnected").await,
        AppEvent::Disconnected
    );
    assert!(!client.is_dead());

    // A new leader takes over: the client switches and acknowledges.
    at_new
        .driver
        .send(MasterChanged {
            master: new.me.clone(),
            master_web_ui_url: "http://127.0.0.1:8080".into(),
        })
        .unwrap();
    let m = new
        .expect("MasterChangeAcknowledged", |m| {
            matches!(m, MasterMsg::MasterChangeAcknowledged(_))
        })
        .await;
    let MasterMsg::MasterChangeAcknowledged(ack) = m else {
        unreachable!()
    };
    assert_eq!(ack.app_id, app_id);
    assert_eq!(client.master_address(), Some(new.address()));
    assert_eq!(client.app_id(), Some(app_id.clone()));

    // Requests now go to the new master.
    assert!(client.request_total_executors(2).await.unwrap());
    new.expect(
        "RequestExecutors",
        |m| matches!(m, MasterMsg::RequestExecutors(r) if r.total == 2),
    )
    .await;

    // Stop: dead with Spark's reason, and the new master is told.
    tokio::time::timeout(DEADLINE, client.stop()).await.unwrap();
    assert_eq!(
        next(&mut events, "Dead").await,
        AppEvent::Dead(APPLICATION_STOPPED.into())
    );
    let m = new
        .expect("UnregisterApplication", |m| {
            matches!(m, MasterMsg::UnregisterApplication(_))
        })
        .await;
    let MasterMsg::UnregisterApplication(u) = m else {
        unreachable!()
    };
    assert_eq!(u.app_id, app_id);
    assert_eq!(u.final_state, Some(flint_proto::ApplicationState::Finished));
    // A second stop is harmless; the endpoint is gone.
    tokio::time::timeout(DEADLINE, client.stop()).await.unwrap();
    assert!(env.local_ref::<AppClientMsg>(APP_CLIENT_ENDPOINT).is_none());
    assert!(!client.request_total_executors(1).await.unwrap());
    expect_none(&mut events, Duration::from_millis(200), "event", |_| true).await;
    env.shutdown();
}

#[tokio::test]
async fn several_clients_share_one_environment() {
    let mut master = FakeMaster::start(true).await;
    let env = RpcEnv::client(rpc_conf()).unwrap();
    let conf = client_conf("5s");
    let (a, mut a_events) = start_client(&env, vec![master.address()], "a", &conf);
    let (b, mut b_events) = start_client(&env, vec![master.address()], "b", &conf);
    assert_eq!(a.endpoint().name(), "AppClient");
    assert_eq!(b.endpoint().name(), "AppClient-1");
    let a_id = connected(&mut a_events).await;
    let b_id = connected(&mut b_events).await;
    assert_ne!(a_id, b_id);
    let mut names = vec![
        master.registration().await.desc.name,
        master.registration().await.desc.name,
    ];
    names.sort();
    assert_eq!(names, ["a", "b"]);
    tokio::time::timeout(DEADLINE, a.stop()).await.unwrap();
    assert_eq!(
        next(&mut a_events, "a Dead").await,
        AppEvent::Dead(APPLICATION_STOPPED.into())
    );
    assert!(!b.is_dead());
    assert_eq!(b.app_id(), Some(b_id));
    // The environment shutting down under `b` makes it dead too, so nobody
    // waits for it forever.
    env.shutdown();
    assert_eq!(
        tokio::time::timeout(DEADLINE, b.wait_dead()).await.unwrap(),
        ENVIRONMENT_SHUT_DOWN
    );
    assert_eq!(
        next(&mut b_events, "b Dead").await,
        AppEvent::Dead(ENVIRONMENT_SHUT_DOWN.into())
    );
    tokio::time::timeout(DEADLINE, b.stop()).await.unwrap();
    expect_none(&mut a_events, Duration::from_millis(100), "a event", |_| {
        true
    })
    .await;
}

#[tokio::test]
async fn start_refuses_bad_input() {
    let env = RpcEnv::client(rpc_conf()).unwrap();
    let (listener, _events) = ChannelListener::new();
    let somewhere = vec![RpcAddress::new("127.0.0.1", 7077)];
    let e = AppClient::start(
        env.clone(),
        Vec::new(),
        desc("x"),
        listener.clone(),
        &Conf::new(),
    )
    .unwrap_err();
    assert!(matches!(e, ClientError::NoMasters), "{e}");
    let e = AppClient::start(
        env.clone(),
        somewhere.clone(),
        desc("x"),
        listener.clone(),
        &Conf::new().set("client.registration.retries", "0"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("client.registration.retries"), "{e}");
    let mut bad = desc("x");
    bad.cores_per_executor = Some(0);
    let e = AppClient::start(
        env.clone(),
        somewhere.clone(),
        bad,
        listener.clone(),
        &Conf::new(),
    )
    .unwrap_err();
    assert!(matches!(e, ClientError::InvalidDescription(_)), "{e}");
    env.shutdown();
    let e = AppClient::start(env, somewhere, desc("x"), listener, &Conf::new()).unwrap_err();
    assert!(matches!(e, ClientError::Rpc(_)), "{e}");
}

// ----------------------------------------------------------------------
// (b) against the real master service
// ----------------------------------------------------------------------

/// A worker as far as the master can tell: it registers, accepts
/// `LaunchExecutor` and reports the executor RUNNING; it answers nothing
/// else.
struct FakeWorkerEndpoint {
    master: EndpointRef<MasterMsg>,
    tx: mpsc::UnboundedSender<WorkerMsg>,
}

impl Endpoint for FakeWorkerEndpoint {
    type Msg = WorkerMsg;

    fn receive(&mut self, _: &Context<WorkerMsg>, msg: WorkerMsg) {
        if let WorkerMsg::LaunchExecutor(l) = &msg {
            let master = self.master.clone();
            let changed = ExecutorStateChanged {
                app_id: l.app_id.clone(),
                exec_id: l.exec_id,
                state: ExecutorState::Running,
                message: None,
                exit_status: None,
            };
            tokio::spawn(async move {
                let acked = master.ask(changed).await;
                assert!(acked.unwrap(), "master acknowledged the state change");
            });
        }
        let _ = self.tx.send(msg);
    }
}

async fn wait_status(
    master: &flint_master::MasterHandle,
    what: &str,
    mut pred: impl FnMut(&MasterStatusJson) -> bool,
) -> MasterStatusJson {
    let start = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    loop {
        interval.tick().await;
        let status = master.status();
        if pred(&status) {
            return status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; status {status:#?}"
        );
    }
}

#[tokio::test]
async fn real_master_places_an_executor_for_the_app() {
    let conf = cluster_conf()
        .set("rpc.ask_timeout", "10s")
        .set("rpc.connect_timeout", "5s")
        .set("rpc.handshake_timeout", "2s")
        .set("worker.timeout", "30s");
    let master = flint_master::start(flint_master::MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf,
    })
    .await
    .expect("master starts");
    let master_address = master.rpc_address().clone();

    // A fake worker with 2 cores registers.
    let wenv = RpcEnv::server(rpc_conf(), "127.0.0.1", 0).await.unwrap();
    let wport = wenv.address().unwrap().port;
    let master_ref = wenv
        .setup_endpoint_ref::<MasterMsg>(&master_address, MASTER_ENDPOINT)
        .await
        .unwrap();
    let (wtx, mut wrx) = mpsc::unbounded_channel();
    let me = wenv
        .setup_endpoint(
            WORKER_ENDPOINT,
            FakeWorkerEndpoint {
                master: master_ref.clone(),
                tx: wtx,
            },
        )
        .unwrap();
    let wid = worker_id(wport);
    master_ref
        .send(RegisterWorker {
            id: wid.clone(),
            host: "127.0.0.1".into(),
            port: wport,
            worker: me,
            cores: 2,
            memory_mb: 2048,
            web_ui_url: format!("http://127.0.0.1:{wport}"),
            master_address: master_address.clone(),
        })
        .unwrap();
    let mut wseen = Vec::new();
    expect(&mut wrx, &mut wseen, "RegisteredWorker", |m| {
        matches!(m, WorkerMsg::RegisteredWorker(_))
    })
    .await;

    // The application client registers and gets an executor on it.
    let env = RpcEnv::server(rpc_conf(), "127.0.0.1", 0).await.unwrap();
    let mut d = desc("real");
    d.max_cores = Some(1);
    let (listener, mut events) = ChannelListener::new();
    let client = AppClient::start(
        env.clone(),
        vec![master_address.clone()],
        d,
        listener,
        &client_conf("5s"),
    )
    .unwrap();
    let app_id = connected(&mut events).await;
    assert_eq!(client.master_address(), Some(master_address.clone()));
    let added = next(&mut events, "ExecutorAdded").await;
    let AppEvent::ExecutorAdded {
        exec_id,
        worker_id,
        cores,
        memory_mb,
        ..
    } = added
    else {
        panic!("expected ExecutorAdded, got {added:?}")
    };
    assert_eq!((worker_id, cores, memory_mb), (wid.clone(), 1, 256));
    let launch = expect(&mut wrx, &mut wseen, "LaunchExecutor", |m| {
        matches!(m, WorkerMsg::LaunchExecutor(_))
    })
    .await;
    let WorkerMsg::LaunchExecutor(l) = launch else {
        unreachable!()
    };
    assert_eq!((l.app_id.clone(), l.exec_id), (app_id.clone(), exec_id));

    // The fake worker reported RUNNING: the master shows the app RUNNING
    // with its executor RUNNING.
    wait_status(&master, "app and executor RUNNING", |s| {
        s.active_apps.iter().any(|a| {
            a.id == app_id
                && a.state == ApplicationState::Running
                && a.executors
                    .iter()
                    .any(|e| e.id == exec_id && e.state == ExecutorState::Running)
        })
    })
    .await;

    // Dynamic allocation through the real master.
    assert!(client.request_total_executors(1).await.unwrap());
    assert!(client.kill_executors(vec![exec_id]).await.unwrap());
    expect(
        &mut wrx,
        &mut wseen,
        "KillExecutor",
        |m| matches!(m, WorkerMsg::KillExecutor(k) if k.app_id == app_id && k.exec_id == exec_id),
    )
    .await;

    // Stop: the master finishes the application.
    tokio::time::timeout(DEADLINE, client.stop()).await.unwrap();
    wait_status(&master, "app FINISHED", |s| {
        s.completed_apps
            .iter()
            .any(|a| a.id == app_id && a.state == ApplicationState::Finished)
            && s.active_apps.iter().all(|a| a.id != app_id)
    })
    .await;

    env.shutdown();
    wenv.shutdown();
    master.shutdown();
    tokio::time::timeout(DEADLINE, master.wait())
        .await
        .expect("master stops");
}
