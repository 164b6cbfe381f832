//! The worker as a daemon among others, over real TCP on 127.0.0.1:
//!
//! - bound to every interface, it registers with the real master under an
//!   address peers can dial (never `0.0.0.0`), and so do its URLs;
//! - in a process whose open-file limit is only 256 (soft and hard, set in
//!   the child before exec), a real master and worker take 300 idle web UI
//!   connections each and still answer `RequestMasterState` (what
//!   `flint status` asks) and launch an executor, which is RUNNING. The child
//!   is this test binary re-run as the ignored test `low_nofile_child_entry`
//!   (a plain `cargo test` reports it as ignored rather than passing without
//!   doing anything); the idle connections come from the parent, whose limit
//!   is not lowered.
//!
//! Every wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use flint_conf::Conf;
use flint_proto::messages::{
    AppClientMsg, MasterMsg, RegisterApplication, RequestMasterState, APP_CLIENT_ENDPOINT,
    MASTER_ENDPOINT,
};
use flint_proto::{ApplicationDescription, ExecutorCommand, ExecutorState, WorkerState};
use flint_rpc::{Context, Endpoint, EndpointRef, RpcAddress, RpcConf, RpcEnv};
use flint_worker::service::{start, WorkerHandle, WorkerOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

#[path = "../../daemon/tests/support/mod.rs"]
mod support;
use support::{ask_once, connect, nofile_limit_hook, DEADLINE};

const CHILD_ENV: &str = "FLINT_WORKER_TEST_LOW_NOFILE_CHILD";
const WORK_DIR_ENV: &str = "FLINT_WORKER_TEST_WORK_DIR";
const LOW_NOFILE: u64 = 256;
const FLOOD: usize = 300;

fn conf() -> Conf {
    Conf::new()
        .set("auth.secret", "flint-worker-http-limits-tests")
        .set("rpc.ask_timeout", "10s")
        .set("rpc.connect_timeout", "5s")
        .set("rpc.handshake_timeout", "2s")
        .set("worker.timeout", "4s")
        .set("ui.idle_timeout", "10m")
        .set("ui.header_read_timeout", "10m")
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// `RequestMasterState` over RPC from a client-only environment, as
/// `flint status` asks it.
async fn ask_state(address: &RpcAddress) -> flint_proto::status::MasterStatusJson {
    ask_once::<MasterMsg, _>(&conf(), address, MASTER_ENDPOINT, RequestMasterState).await
}

/// Asks the master's state until `pred` holds.
async fn wait_state(
    address: &RpcAddress,
    what: &str,
    pred: impl Fn(&flint_proto::status::MasterStatusJson) -> bool,
) -> flint_proto::status::MasterStatusJson {
    let start = Instant::now();
    loop {
        let s = ask_state(address).await;
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real master on 127.0.0.1 and a worker on `host` registering with it.
async fn master_and_worker(
    host: &str,
    work_dir: &Path,
    worker_conf: Conf,
) -> (flint_master::MasterHandle, WorkerHandle) {
    let master = flint_master::start(flint_master::MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: conf(),
    })
    .await
    .unwrap();
    let w = start(WorkerOptions {
        masters: vec![master.rpc_address().clone()],
        host: host.into(),
        port: 0,
        webui_port: 0,
        cores: Some(2),
        memory_mb: Some(2048),
        work_dir: work_dir.to_path_buf(),
        conf: worker_conf,
    })
    .await
    .unwrap();
    (master, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_every_interface_registers_a_dialable_address() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (master, w) =
        master_and_worker("0.0.0.0", dir.path(), conf().set("ui.host", "0.0.0.0")).await;
    let host = w.rpc_address().host.clone();
    let has_interfaces = !flint_daemon::advertise::interface_addresses().is_empty();
    assert!(!flint_daemon::advertise::is_unspecified(&host), "{host}");
    assert!(
        !has_interfaces || !flint_daemon::advertise::is_loopback(&host),
        "{host}"
    );
    let status = w.status().await;
    assert_eq!(
        status.worker_url,
        format!("flint://Worker@{}", w.rpc_address().host_port())
    );
    assert!(!w.webui_url().contains("0.0.0.0"), "{}", w.webui_url());
    assert!(w.id().as_str().contains(&host), "{}", w.id());

    // The master lists it under that address.
    let s = wait_state(master.rpc_address(), "the worker ALIVE", |s| {
        s.workers
            .iter()
            .any(|e| &e.id == w.id() && e.state == WorkerState::Alive)
    })
    .await;
    let row = s.workers.iter().find(|e| &e.id == w.id()).unwrap();
    assert_eq!(
        (row.host.as_str(), row.port),
        (host.as_str(), w.rpc_address().port)
    );

    w.shutdown();
    tokio::time::timeout(DEADLINE, w.wait())
        .await
        .unwrap()
        .unwrap();
    master.shutdown();
    tokio::time::timeout(DEADLINE, master.wait()).await.unwrap();
}

/// Forwards what the application client endpoint receives.
struct AppClient(mpsc::UnboundedSender<AppClientMsg>);

impl Endpoint for AppClient {
    type Msg = AppClientMsg;
    fn receive(&mut self, _: &Context<AppClientMsg>, msg: AppClientMsg) {
        let _ = self.0.send(msg);
    }
}

/// `ready key=value …` from the child, by key.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_open_file_limit_idle_ui_floods_leave_status_and_launches_working() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "low_nofile_child_entry",
        "--nocapture",
    ])
    .env(CHILD_ENV, "1")
    .env(WORK_DIR_ENV, dir.path())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .kill_on_drop(true);
    // SAFETY: the hook only calls setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(nofile_limit_hook(LOW_NOFILE, LOW_NOFILE));
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(DEADLINE, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("child output");
            if line.starts_with("ready ") {
                return line;
            }
        }
    })
    .await
    .expect("the child's daemons start in time");
    assert_eq!(
        field(&ready, "nofile"),
        format!("{LOW_NOFILE}/{LOW_NOFILE}")
    );
    let master_address =
        RpcAddress::new("127.0.0.1", field(&ready, "master_port").parse().unwrap());
    let ui = |key| -> SocketAddr { format!("127.0.0.1:{}", field(&ready, key)).parse().unwrap() };
    let (master_ui, worker_ui) = (ui("master_ui_port"), ui("worker_ui_port"));

    // 300 idle connections to each web UI: more than the child has descriptors.
    let mut flood = Vec::with_capacity(2 * FLOOD);
    for _ in 0..FLOOD {
        flood.push(connect(master_ui).await);
        flood.push(connect(worker_ui).await);
    }

    // `flint status` still answers.
    let s = ask_state(&master_address).await;
    assert_eq!(s.alive_workers, 1, "{s:#?}");

    // And an executor launches.
    let env = RpcEnv::server(RpcConf::from_conf(&conf()).unwrap(), "127.0.0.1", 0)
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let me: EndpointRef<AppClientMsg> = env
        .setup_endpoint(APP_CLIENT_ENDPOINT, AppClient(tx))
        .unwrap();
    let master: EndpointRef<MasterMsg> = env
        .setup_endpoint_ref(&master_address, MASTER_ENDPOINT)
        .await
        .unwrap();
    let mut command = ExecutorCommand::new("/bin/sh");
    command.args = vec!["-c".into(), "echo $$ > pid; exec sleep 1000".into()];
    master
        .send(RegisterApplication {
            desc: ApplicationDescription::new("low-nofile", command),
            driver: me,
        })
        .unwrap();
    let start_t = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = DEADLINE
            .checked_sub(start_t.elapsed())
            .unwrap_or_else(|| panic!("no executor RUNNING in time; received {seen:#?}"));
        let msg = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no executor RUNNING in time; received {seen:#?}"))
            .expect("endpoint open");
        if let AppClientMsg::ExecutorUpdated(u) = &msg {
            assert!(
                !matches!(u.state, ExecutorState::Failed | ExecutorState::Exited),
                "the launch failed: {u:?}"
            );
            if u.state == ExecutorState::Running {
                break;
            }
        }
        seen.push(msg);
    }
    // Its idle UI connections did not cost the worker its descriptors: the
    // RUNNING report was no accident.
    let s = ask_state(&master_address).await;
    assert_eq!(s.alive_workers, 1, "{s:#?}");

    drop(flood);
    env.shutdown();
    // Closing the child's stdin stops its daemons (killing the executor).
    drop(child.stdin.take());
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("the child stops in time")
        .unwrap();
    let mut rest = String::new();
    let _ = tokio::time::timeout(DEADLINE, lines.get_mut().read_to_string(&mut rest)).await;
    assert!(status.success(), "child failed: {status}; {rest}");
}

#[test]
#[ignore = "run in a child process by under_a_low_open_file_limit_idle_ui_floods_leave_status_and_launches_working"]
fn low_nofile_child_entry() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "started by another test with {CHILD_ENV} set"
    );
    let work_dir = std::env::var_os(WORK_DIR_ENV).expect("a work dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (master, w) = master_and_worker("127.0.0.1", Path::new(&work_dir), conf()).await;
        let start_t = Instant::now();
        while !w.status().await.registered {
            assert!(start_t.elapsed() < DEADLINE, "the worker never registered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (soft, hard) = flint_daemon::rlimit::nofile_limit().unwrap();
        println!(
            "ready nofile={soft}/{hard} master_port={} master_ui_port={} worker_ui_port={}",
            master.rpc_address().port,
            master.webui_address().port(),
            w.webui_address().port()
        );
        // Until the parent closes stdin.
        let _ = tokio::task::spawn_blocking(|| {
            use std::io::Read as _;
            std::io::copy(
                &mut std::io::stdin().lock().take(u64::MAX),
                &mut std::io::sink(),
            )
        })
        .await;
        w.shutdown();
        w.wait().await.unwrap();
        master.shutdown();
        master.wait().await;
    });
}
