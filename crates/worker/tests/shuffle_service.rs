//! The worker's shuffle service over real TCP on 127.0.0.1: a worker with
//! `shuffle.service.enabled` launches a real executor process (this test binary
//! run again) that writes map output with flint-shuffle's writer into the dirs the
//! worker handed it and exits; the worker then serves those blocks to a fetcher,
//! counts them in its status JSON, and removes the application's shuffle files
//! when the master says the application finished.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flint_conf::Conf;
use flint_proto::messages::{
    ApplicationFinished, LaunchExecutor, MasterMsg, RegisteredWorker, WorkerMsg, MASTER_ENDPOINT,
};
use flint_proto::{AppId, ApplicationDescription, ExecutorCommand, ExecutorId, ExecutorState};
use flint_rpc::{Context, Endpoint, EndpointRef, Reply, RpcConf, RpcEnv};
use flint_shuffle::{
    decode_block, BlockFetcher, FetchRequest, Layout, MapId, MapStatus, ShuffleConf, ShuffleWriter,
};
use flint_worker::service::{start, WorkerHandle, WorkerOptions, WorkerStatusDoc};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(30);
const CHILD: &str = "SHUFFLE_SERVICE_TEST_CHILD";
const PARTS: u32 = 3;
const RECORDS: u64 = 5000;

fn conf() -> Conf {
    Conf::new()
        .set("auth.secret", "flint-shuffle-service-tests")
        .set("rpc.ask_timeout", "5s")
        .set("rpc.connect_timeout", "2s")
        .set("worker.timeout", "2s")
        .set("worker.executor_kill_grace", "2s")
}

struct FakeMaster {
    tx: mpsc::UnboundedSender<MasterMsg>,
    me: Option<EndpointRef<MasterMsg>>,
}

impl Endpoint for FakeMaster {
    type Msg = MasterMsg;

    fn on_start(&mut self, ctx: &Context<MasterMsg>) {
        self.me = Some(ctx.self_ref().clone());
    }

    fn receive(&mut self, _: &Context<MasterMsg>, msg: MasterMsg) {
        if let (MasterMsg::RegisterWorker(r), Some(me)) = (&msg, &self.me) {
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
            MasterMsg::ExecutorStateChanged(_) => reply.send(true),
            _ => reply.fail("the fake master answers only ExecutorStateChanged"),
        }
        let _ = self.tx.send(msg);
    }
}

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
            "timed out waiting for {what}; {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn record(i: u64) -> (String, u64) {
    (format!("k{i}"), i)
}

/// The executor: writes map output 0 of shuffle 4 where the worker says, and its
/// MapStatus and pid into its work dir, then exits.
fn executor_body() {
    let dirs = flint_shuffle::conf::parse_local_dirs(&std::env::var("FLINT_LOCAL_DIR").unwrap());
    let app = std::env::var("SHUFFLE_CHILD_APP").unwrap();
    assert_eq!(
        std::env::var("FLINT_SHUFFLE_SERVICE_ENABLED").unwrap(),
        "true"
    );
    let service = std::env::var("FLINT_SHUFFLE_SERVICE_ADDRESS").unwrap();
    let conf = ShuffleConf {
        local_dirs: dirs,
        ..ShuffleConf::default()
    };
    let layout = Layout::new(&conf.local_dirs, &app).unwrap();
    let part = |k: &String| k.len() as u32 % PARTS;
    let id = MapId {
        shuffle: 4,
        map: 0,
        attempt: 0,
    };
    let mut w = ShuffleWriter::new(&conf, &layout, id, PARTS, &part, None).unwrap();
    w.insert_all((0..RECORDS).map(record)).unwrap();
    let status = w.commit().unwrap();
    std::fs::write("status.json", serde_json::to_vec(&status).unwrap()).unwrap();
    std::fs::write("service", service).unwrap();
    std::fs::write("pid", format!("{}\n", std::process::id())).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_map_output_after_its_executor_exited_and_removes_it_when_the_app_ends() {
    if std::env::var_os(CHILD).is_some() {
        return executor_body();
    }
    let t = tempfile::tempdir().unwrap();
    let local: Vec<PathBuf> = vec![t.path().join("disk0"), t.path().join("disk1")];
    let wconf = conf().set(
        "local.dir",
        local
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    let wconf = wconf.set("shuffle.service.enabled", "true");
    let rpc = RpcConf::from_conf(&conf()).unwrap();
    let master_env = RpcEnv::server(rpc.clone(), "127.0.0.1", 0).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    master_env
        .setup_endpoint(MASTER_ENDPOINT, FakeMaster { tx, me: None })
        .unwrap();
    let master_url = master_env.address().unwrap().to_string();
    let w = start(WorkerOptions {
        masters: vec![master_env.address().unwrap().clone()],
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        cores: Some(2),
        memory_mb: Some(1024),
        work_dir: t.path().join("work"),
        conf: wconf,
    })
    .await
    .unwrap();
    let worker_ref = loop {
        match tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            MasterMsg::RegisterWorker(r) => break r.worker,
            _ => continue,
        }
    };
    let s = wait_status(&w, "registration", |s| s.registered).await;
    let svc = s
        .shuffle_service
        .expect("the status shows the shuffle service");
    assert_eq!(svc.local_dirs.len(), 2);

    // A real executor process writes map output, then exits.
    let app = AppId::generate(1_795_319_700_000, 7);
    let mut cmd = ExecutorCommand::new(std::env::current_exe().unwrap().display().to_string());
    cmd.args = vec![
        "serves_map_output_after_its_executor_exited_and_removes_it_when_the_app_ends".into(),
        "--exact".into(),
        "--nocapture".into(),
    ];
    cmd.env.insert(CHILD.into(), "1".into());
    cmd.env
        .insert("SHUFFLE_CHILD_APP".into(), "{{APP_ID}}".into());
    worker_ref
        .send(WorkerMsg::LaunchExecutor(LaunchExecutor {
            master_url: master_url.clone(),
            app_id: app.clone(),
            exec_id: ExecutorId(0),
            desc: ApplicationDescription::new("shuffle-app", cmd),
            cores: 1,
            memory_mb: 256,
        }))
        .unwrap();
    let exec_dir = w.work_dir().join(app.as_str()).join("0");
    wait_status(&w, "the executor to finish", |s| {
        s.finished_executors
            .iter()
            .any(|e| e.app_id == app && e.state == ExecutorState::Exited)
    })
    .await;
    let pid: u32 = std::fs::read_to_string(exec_dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the executor process to be gone", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;
    let status: MapStatus =
        serde_json::from_slice(&std::fs::read(exec_dir.join("status.json")).unwrap()).unwrap();
    assert_eq!(
        std::fs::read_to_string(exec_dir.join("service")).unwrap(),
        w.rpc_address().to_string(),
        "the executor was told where the shuffle service is"
    );
    let layout = Layout::new(&local, app.as_str()).unwrap();
    assert!(
        layout.index_path(4, 0).exists(),
        "written under the worker's local dirs"
    );

    // Its blocks are served by the worker, to a peer with the cluster secret.
    let client = RpcEnv::client(rpc).unwrap();
    let fconf = ShuffleConf {
        local_dirs: vec![t.path().join("not-here")],
        ..ShuffleConf::default()
    };
    let reqs = vec![FetchRequest {
        address: w.rpc_address().clone(),
        shuffle: 4,
        map: 0,
        start: 0,
        blocks: status.blocks.clone(),
    }];
    let mut f = BlockFetcher::start(
        &tokio::runtime::Handle::current(),
        &client,
        &fconf,
        app.as_str(),
        reqs,
    );
    let mut got = Vec::new();
    while let Some(b) = f.next().await {
        let b = b.unwrap();
        assert!(!b.local);
        got.extend(
            decode_block::<String, u64>(b.block, b.data.clone(), &b.meta)
                .unwrap()
                .map(|r| r.unwrap()),
        );
    }
    got.sort_by_key(|r| r.1);
    assert_eq!(got, (0..RECORDS).map(record).collect::<Vec<_>>());
    let s = wait_status(&w, "the blocks served counted", |s| {
        s.shuffle_service
            .as_ref()
            .is_some_and(|x| x.blocks_served == u64::from(PARTS))
    })
    .await;
    let svc = s.shuffle_service.unwrap();
    assert_eq!(svc.bytes_served, status.total_bytes());
    assert_eq!(svc.requests, 1);

    // The application ends: its shuffle files go, in every local dir.
    worker_ref
        .send(WorkerMsg::ApplicationFinished(ApplicationFinished {
            app_id: app.clone(),
        }))
        .unwrap();
    wait_until("the app's shuffle dirs to be removed", || {
        (0..2).all(|i| !layout.app_dir(i).exists())
    })
    .await;
    for d in &local {
        assert!(d.exists(), "the local dir itself stays");
    }
    client.shutdown();
    w.shutdown();
    tokio::time::timeout(DEADLINE, w.wait())
        .await
        .unwrap()
        .unwrap();
    master_env.shutdown();
}

#[tokio::test]
async fn without_the_service_nothing_is_served_and_a_bad_local_dir_is_refused() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let opts = |c: Conf| WorkerOptions {
        masters: vec!["flint://127.0.0.1:9".parse().unwrap()],
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        cores: Some(1),
        memory_mb: Some(512),
        work_dir: t.path().join("work"),
        conf: c,
    };
    let refused = start(opts(
        conf()
            .set("shuffle.service.enabled", "true")
            .set("local.dir", file.join("sub").display().to_string()),
    ))
    .await;
    let Err(e) = refused else {
        panic!("a local dir under a file cannot be created, yet the worker started");
    };
    let msg = e.to_string();
    assert!(msg.contains("local.dir") && msg.contains("a-file"), "{msg}");
    let w = start(opts(conf())).await.unwrap();
    assert!(w.status().await.shuffle_service.is_none());
    w.shutdown();
    tokio::time::timeout(DEADLINE, w.wait()).await.unwrap().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_dir_cleanup_sweeps_old_shuffle_files_of_apps_not_running_here() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let local = t.path().join("disk0");
    let old_app = local.join("flint-shuffle").join("app-19700101000000-0001");
    std::fs::create_dir_all(old_app.join("0")).unwrap();
    std::fs::write(old_app.join("0").join("0.data"), b"x").unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for p in [
        old_app.join("0").join("0.data"),
        old_app.join("0"),
        old_app.clone(),
    ] {
        std::fs::File::open(&p)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
    }
    // A recent one stays.
    let recent = local.join("flint-shuffle").join("app-19700101000000-0002");
    std::fs::create_dir_all(&recent).unwrap();
    let rpc = RpcConf::from_conf(&conf()).unwrap();
    let master_env = RpcEnv::server(rpc, "127.0.0.1", 0).await.unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    master_env
        .setup_endpoint(MASTER_ENDPOINT, FakeMaster { tx, me: None })
        .unwrap();
    let w = start(WorkerOptions {
        masters: vec![master_env.address().unwrap().clone()],
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        cores: Some(1),
        memory_mb: Some(512),
        work_dir: t.path().join("work"),
        conf: conf()
            .set("shuffle.service.enabled", "true")
            .set("local.dir", local.display().to_string())
            .set("worker.cleanup.interval", "100ms")
            .set("worker.cleanup.app_data_ttl", "600s"),
    })
    .await
    .unwrap();
    wait_until("the old application's shuffle files to be swept", || {
        !old_app.exists()
    })
    .await;
    assert!(recent.exists(), "files newer than the TTL stay");
    w.shutdown();
    tokio::time::timeout(DEADLINE, w.wait())
        .await
        .unwrap()
        .unwrap();
    master_env.shutdown();
}
