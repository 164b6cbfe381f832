//! Same-binary executors, the worker's half, over real TCP on 127.0.0.1 with
//! real child processes: a real master and worker in this process, and a
//! "driver" RPC environment that registers applications with the real
//! application client and serves an executable (a small shell script) on its
//! file server. The executor command names that binary by URI, size and
//! SHA-256 and runs `{{BINARY}}`; the worker fetches it into its binary cache
//! (once per hash, shared by applications), verifies it and runs it. Also: a
//! wrong hash fails the launch naming both hashes, a file server with another
//! secret is refused, and the cache's bound, its LRU order, leases and
//! concurrent launches, driven through `BinaryCache` directly against a real
//! file server. Every wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_client::{AppClient, AppClientHandle, AppEvent, ChannelListener};
use flint_conf::Conf;
use flint_proto::messages::{MasterMsg, RequestMasterState, MASTER_ENDPOINT};
use flint_proto::worker_status::WorkerStatusDoc;
use flint_proto::{
    ApplicationDescription, ApplicationState, BinarySource, ExecutorCommand, ExecutorState,
};
use flint_rpc::{EndpointRef, RpcConf, RpcEnv};
use flint_worker::binaries::{BinaryCache, BinaryError, BINARY_CACHE_DIR};
use flint_worker::service::{start, WorkerHandle, WorkerOptions};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(30);
const SECRET: &str = "flint-worker-binary-tests";

fn conf() -> Conf {
    Conf::new()
        .set("auth.secret", SECRET)
        .set("rpc.ask_timeout", "5s")
        .set("rpc.connect_timeout", "2s")
        .set("rpc.handshake_timeout", "2s")
        .set("worker.timeout", "4s")
        .set("worker.executor_kill_grace", "2s")
}

fn rpc_conf(c: &Conf) -> RpcConf {
    RpcConf::from_conf(c).unwrap()
}

/// A real master and a worker registered with it.
struct Cluster {
    master: flint_master::MasterHandle,
    worker: WorkerHandle,
    _work: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let master = flint_master::start(flint_master::MasterOptions {
            host: "127.0.0.1".into(),
            port: 0,
            webui_port: 0,
            conf: conf(),
        })
        .await
        .expect("master starts");
        let work = tempfile::tempdir().unwrap();
        let worker = start(WorkerOptions {
            masters: vec![master.rpc_address().clone()],
            host: "127.0.0.1".into(),
            port: 0,
            webui_port: 0,
            cores: Some(4),
            memory_mb: Some(2048),
            work_dir: work.path().to_path_buf(),
            conf: conf(),
        })
        .await
        .expect("worker starts");
        wait_status(&worker, "registered", |s| s.registered).await;
        Cluster {
            master,
            worker,
            _work: work,
        }
    }

    async fn stop(self) {
        self.worker.shutdown();
        self.worker.wait().await.unwrap();
        self.master.shutdown();
        self.master.wait().await;
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
            "timed out waiting for {what}; status {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A file written into `dir` and its [`BinarySource`] once served by `env`.
async fn serve(env: &RpcEnv, dir: &Path, name: &str, contents: &[u8]) -> (PathBuf, BinarySource) {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    let uri = env.add_file(&path).await.unwrap();
    let source = BinarySource {
        uri,
        sha256: hex::encode(Sha256::digest(contents)),
        size: contents.len() as u64,
    };
    (path, source)
}

/// An executable that says it ran, with its arguments, and then stays up.
const SCRIPT: &[u8] = b"#!/bin/sh\necho \"binary ran: $0 $*\"\nexec sleep 1000\n";

/// One executor of one core running `{{BINARY}} --executor-id {{EXECUTOR_ID}}`.
fn app(name: &str, binary: BinarySource) -> ApplicationDescription {
    let mut cmd = ExecutorCommand::new("{{BINARY}}");
    cmd.args = vec!["--executor-id".into(), "{{EXECUTOR_ID}}".into()];
    cmd.binary = Some(binary);
    let mut desc = ApplicationDescription::new(name, cmd);
    desc.max_cores = Some(1);
    desc.cores_per_executor = Some(1);
    desc.memory_per_executor_mb = 64;
    desc
}

fn register(env: &RpcEnv, c: &Cluster, desc: ApplicationDescription) -> AppClientHandle {
    register_listening(env, c, desc).0
}

fn register_listening(
    env: &RpcEnv,
    c: &Cluster,
    desc: ApplicationDescription,
) -> (AppClientHandle, mpsc::UnboundedReceiver<AppEvent>) {
    let (listener, events) = ChannelListener::new();
    let client = AppClient::start(
        env.clone(),
        vec![c.master.rpc_address().clone()],
        desc,
        listener,
        &conf(),
    )
    .unwrap();
    (client, events)
}

async fn app_id(client: &AppClientHandle) -> flint_proto::AppId {
    let start = Instant::now();
    loop {
        if let Some(id) = client.app_id() {
            return id;
        }
        assert!(start.elapsed() < DEADLINE, "the app never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_file_contains(path: &Path, needle: &str) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} never contained {needle:?}: {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_served_binary_runs_and_a_second_app_uses_the_cached_copy() {
    let c = Cluster::start().await;
    let driver = RpcEnv::server(rpc_conf(&conf()), "127.0.0.1", 0)
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let (_, source) = serve(&driver, files.path(), "my-app", SCRIPT).await;

    let first = register(&driver, &c, app("first", source.clone()));
    let first_id = app_id(&first).await;
    let s = wait_status(&c.worker, "the first app's executor RUNNING", |s| {
        s.executors
            .iter()
            .any(|e| e.app_id == first_id && e.state == ExecutorState::Running)
    })
    .await;
    let cached = c
        .worker
        .work_dir()
        .join(BINARY_CACHE_DIR)
        .join(&source.sha256);
    let exec = s.executors.iter().find(|e| e.app_id == first_id).unwrap();
    wait_file_contains(
        &PathBuf::from(&exec.work_dir).join("stdout"),
        &format!(
            "binary ran: {} --executor-id {}",
            cached.display(),
            exec.exec_id
        ),
    )
    .await;
    assert_eq!((s.binary_fetches, s.binary_cache_hits), (1, 0), "{s:#?}");
    let meta = std::fs::metadata(&cached).unwrap();
    assert_eq!(meta.len(), source.size);
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        hex::encode(Sha256::digest(std::fs::read(&cached).unwrap())),
        source.sha256
    );

    // A second application with the same binary: no second fetch.
    let second = register(&driver, &c, app("second", source.clone()));
    let second_id = app_id(&second).await;
    let s = wait_status(&c.worker, "the second app's executor RUNNING", |s| {
        s.executors
            .iter()
            .any(|e| e.app_id == second_id && e.state == ExecutorState::Running)
    })
    .await;
    assert_eq!((s.binary_fetches, s.binary_cache_hits), (1, 1), "{s:#?}");
    // The status JSON says so too.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["binary_fetches"], 1);
    assert_eq!(json["binary_cache_hits"], 1);

    first.stop().await;
    second.stop().await;
    c.stop().await;
    driver.shutdown();
    driver.await_termination().await;
}

#[tokio::test]
async fn a_wrong_hash_fails_the_launch_naming_both_hashes() {
    let c = Cluster::start().await;
    let driver = RpcEnv::server(rpc_conf(&conf()), "127.0.0.1", 0)
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let (_, real) = serve(&driver, files.path(), "my-app", SCRIPT).await;
    let claimed = "0123456789abcdef".repeat(4);
    let wrong = BinarySource {
        sha256: claimed.clone(),
        ..real.clone()
    };
    let (client, mut events) = register_listening(&driver, &c, app("wrong-hash", wrong));
    let id = app_id(&client).await;
    let s = wait_status(&c.worker, "the executor FAILED", |s| {
        s.finished_executors
            .iter()
            .any(|e| e.app_id == id && e.state == ExecutorState::Failed)
    })
    .await;
    let failed = s
        .finished_executors
        .iter()
        .find(|e| e.app_id == id)
        .unwrap();
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.contains(&claimed) && message.contains(&real.sha256),
        "{message}"
    );
    // Nothing is cached under either name (the master may be relaunching the
    // executor meanwhile, so downloads under way are not looked at here; the
    // direct cache test below checks none is left).
    let cache = c.worker.work_dir().join(BINARY_CACHE_DIR);
    assert!(!cache.join(&claimed).exists() && !cache.join(&real.sha256).exists());
    assert!(cache.is_dir(), "the fetch made the cache directory");

    // The master heard FAILED with the reason and told the application...
    let removed = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Some(AppEvent::ExecutorRemoved { message, .. }) => break message,
                Some(_) => {}
                None => panic!("the client's events ended"),
            }
        }
    })
    .await
    .expect("the application hears of the failed executor");
    assert!(
        removed.contains(&claimed) && removed.contains(&real.sha256),
        "{removed}"
    );
    // ... and counts the failures against this app on this worker: with no
    // other worker the app fails, but the worker stays healthy (one app
    // failing everywhere is the app's fault, not the worker's).
    let tool = RpcEnv::client(rpc_conf(&conf())).unwrap();
    let master: EndpointRef<MasterMsg> = tool
        .setup_endpoint_ref(c.master.rpc_address(), MASTER_ENDPOINT)
        .await
        .unwrap();
    let start_t = Instant::now();
    let status = loop {
        let status = master.ask(RequestMasterState).await.unwrap();
        if status
            .completed_apps
            .iter()
            .any(|a| a.id == id && a.state == ApplicationState::Failed)
        {
            break status;
        }
        assert!(
            start_t.elapsed() < DEADLINE,
            "the app never FAILED: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.workers.iter().all(|w| w.unhealthy.is_none()),
        "{status:#?}"
    );
    tool.shutdown();
    assert_eq!(s.binary_fetches, 0);

    client.stop().await;
    c.stop().await;
    driver.shutdown();
    driver.await_termination().await;
}

#[tokio::test]
async fn binaries_from_a_server_without_the_cluster_secret_are_refused() {
    let c = Cluster::start().await;
    let driver = RpcEnv::server(rpc_conf(&conf()), "127.0.0.1", 0)
        .await
        .unwrap();
    // A file server that does not know the cluster secret.
    let other = conf().set("auth.secret", "some-other-secret");
    let stranger = RpcEnv::server(rpc_conf(&other), "127.0.0.1", 0)
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let (_, source) = serve(&stranger, files.path(), "their-app", SCRIPT).await;

    let client = register(&driver, &c, app("stranger", source.clone()));
    let id = app_id(&client).await;
    let s = wait_status(&c.worker, "the executor FAILED", |s| {
        s.finished_executors
            .iter()
            .any(|e| e.app_id == id && e.state == ExecutorState::Failed)
    })
    .await;
    let failed = s
        .finished_executors
        .iter()
        .find(|e| e.app_id == id)
        .unwrap();
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.contains("binary not fetched") && message.contains(&source.uri),
        "{message}"
    );
    assert_eq!(s.binary_fetches, 0);

    // And the other way round: a peer without the secret cannot fetch from
    // the driver's file server.
    let (_, served) = serve(&driver, files.path(), "my-app", SCRIPT).await;
    let thief = RpcEnv::client(rpc_conf(&other)).unwrap();
    let dest = files.path().join("stolen");
    let err = thief
        .fetch_file(&served.uri, &dest)
        .await
        .expect_err("refused");
    assert!(!dest.exists(), "{err}");
    let anonymous = RpcEnv::client(rpc_conf(&Conf::new().set("auth.enabled", "false"))).unwrap();
    anonymous
        .fetch_file(&served.uri, &dest)
        .await
        .expect_err("refused without a secret");
    assert!(!dest.exists());

    client.stop().await;
    c.stop().await;
    for env in [driver, stranger, thief, anonymous] {
        env.shutdown();
        env.await_termination().await;
    }
}

/// A file server and a fetching environment sharing the secret.
async fn envs() -> (RpcEnv, RpcEnv) {
    let server = RpcEnv::server(rpc_conf(&conf()), "127.0.0.1", 0)
        .await
        .unwrap();
    let client = RpcEnv::client(rpc_conf(&conf())).unwrap();
    (server, client)
}

#[tokio::test]
async fn concurrent_launches_of_one_binary_fetch_it_once() {
    let (server, client) = envs().await;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let (_, source) = serve(&server, dir.path(), "big", &big).await;
    let cache = BinaryCache::open(work.path(), 1 << 30).unwrap();
    let leases = futures::future::join_all((0..4).map(|_| {
        let (cache, client, source) = (cache.clone(), client.clone(), source.clone());
        async move { cache.ensure(&client, &source).await }
    }))
    .await;
    for lease in &leases {
        let lease = lease.as_ref().unwrap();
        assert_eq!(
            lease.path(),
            work.path().join("binaries").join(&source.sha256)
        );
    }
    assert_eq!((cache.fetches(), cache.hits()), (1, 3));
    server.shutdown();
    client.shutdown();
}

#[tokio::test]
async fn the_cache_is_bounded_evicting_the_least_recently_used_binary_not_in_use() {
    let (server, client) = envs().await;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_, a) = serve(&server, dir.path(), "a", &[b'a'; 400]).await;
    let (_, b) = serve(&server, dir.path(), "b", &[b'b'; 400]).await;
    let (_, c) = serve(&server, dir.path(), "c", &[b'c'; 400]).await;
    let (_, huge) = serve(&server, dir.path(), "huge", &[b'h'; 1001]).await;
    let cache = BinaryCache::open(work.path(), 1000).unwrap();
    let cached = |s: &BinarySource| cache.dir().join(&s.sha256).exists();

    let lease_a = cache.ensure(&client, &a).await.unwrap();
    drop(cache.ensure(&client, &b).await.unwrap());
    // a (older) is in use, so b goes to make room for c.
    let lease_c = cache.ensure(&client, &c).await.unwrap();
    assert!(cached(&a) && !cached(&b) && cached(&c));
    // With a and c in use there is no room for b: refused, naming the setting.
    let err = cache.ensure(&client, &b).await.expect_err("no room");
    assert!(
        matches!(err, BinaryError::NoRoom { .. })
            && err.to_string().contains("worker.binary_cache.max_size"),
        "{err}"
    );
    // Once a's child is gone, a (least recently used) makes way for b.
    drop(lease_a);
    let _lease_b = cache.ensure(&client, &b).await.unwrap();
    assert!(!cached(&a) && cached(&b) && cached(&c));
    // Larger than the whole cache: refused before any fetch.
    let fetches = cache.fetches();
    let err = cache.ensure(&client, &huge).await.expect_err("too large");
    assert!(matches!(err, BinaryError::TooLarge { .. }), "{err}");
    assert_eq!(cache.fetches(), fetches);
    drop(lease_c);
    // A malformed hash never names a file.
    let bad = BinarySource {
        sha256: "../../etc/passwd".into(),
        ..a.clone()
    };
    let err = cache.ensure(&client, &bad).await.expect_err("invalid");
    assert!(matches!(err, BinaryError::Invalid(_)), "{err}");
    server.shutdown();
    client.shutdown();
}

#[tokio::test]
async fn eviction_follows_the_last_use() {
    let (server, client) = envs().await;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_, a) = serve(&server, dir.path(), "a", &[b'a'; 400]).await;
    let (_, b) = serve(&server, dir.path(), "b", &[b'b'; 400]).await;
    let (_, c) = serve(&server, dir.path(), "c", &[b'c'; 400]).await;
    let cache = BinaryCache::open(work.path(), 1000).unwrap();
    drop(cache.ensure(&client, &a).await.unwrap());
    drop(cache.ensure(&client, &b).await.unwrap());
    // a was fetched first and b after it (set apart by hours, so the file
    // system's timestamp granularity cannot tie them) ...
    let set_age = |s: &BinarySource, secs: u64| {
        let f = std::fs::File::open(cache.dir().join(&s.sha256)).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    };
    set_age(&a, 7200);
    set_age(&b, 3600);
    // ... then a is used again, so b is the least recently used.
    drop(cache.ensure(&client, &a).await.unwrap());
    assert_eq!(cache.hits(), 1);
    drop(cache.ensure(&client, &c).await.unwrap());
    let cached = |s: &BinarySource| cache.dir().join(&s.sha256).exists();
    assert!(cached(&a) && !cached(&b) && cached(&c));
    // The periodic cleanup removes what went unused for the TTL, unless a
    // child holds it.
    set_age(&a, 7200);
    set_age(&c, 7200);
    let held = cache.ensure(&client, &c).await.unwrap();
    set_age(&c, 7200);
    let removed =
        cache.remove_unused_since(std::time::SystemTime::now() - Duration::from_secs(3600));
    assert_eq!(removed, vec![a.sha256.clone()]);
    assert!(!cached(&a) && cached(&c));
    drop(held);
    server.shutdown();
    client.shutdown();
}

#[tokio::test]
async fn a_mismatch_leaves_nothing_in_the_cache() {
    let (server, client) = envs().await;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_, real) = serve(&server, dir.path(), "a", SCRIPT).await;
    let cache = BinaryCache::open(work.path(), 1 << 20).unwrap();
    assert!(!cache.dir().exists(), "made on the first fetch only");
    let wrong_size = BinarySource {
        size: real.size + 1,
        ..real.clone()
    };
    let err = cache
        .ensure(&client, &wrong_size)
        .await
        .expect_err("mismatch");
    assert!(matches!(err, BinaryError::Mismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("({} bytes)", real.size + 1)),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!((cache.fetches(), cache.hits()), (0, 0));
    server.shutdown();
    client.shutdown();
}

#[tokio::test]
async fn a_binary_deleted_behind_the_cache_is_fetched_again_and_leftovers_are_removed() {
    let (server, client) = envs().await;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_, a) = serve(&server, dir.path(), "a", b"#!/bin/sh\n").await;
    let cache = BinaryCache::open(work.path(), 1 << 20).unwrap();
    drop(cache.ensure(&client, &a).await.unwrap());
    std::fs::remove_file(cache.dir().join(&a.sha256)).unwrap();
    drop(cache.ensure(&client, &a).await.unwrap());
    assert_eq!((cache.fetches(), cache.hits()), (2, 0));
    // A download an earlier worker left half done goes when the cache opens.
    let part = cache.dir().join(format!("part-{}-1-0", a.sha256));
    std::fs::write(&part, b"half").unwrap();
    let reopened = BinaryCache::open(work.path(), 1 << 20).unwrap();
    assert!(!part.exists());
    assert!(reopened.dir().join(&a.sha256).exists());
    let _ = Arc::strong_count(&reopened);
    server.shutdown();
    client.shutdown();
}

#[tokio::test]
async fn a_cluster_mode_driver_runs_from_a_fetched_binary() {
    let c = Cluster::start().await;
    let submitter = RpcEnv::server(rpc_conf(&conf()), "127.0.0.1", 0)
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let (_, source) = serve(
        &submitter,
        files.path(),
        "my-driver",
        b"#!/bin/sh\necho \"driver ran: $0 $*\"\n",
    )
    .await;
    let mut cmd = ExecutorCommand::new("{{BINARY}}");
    cmd.args = vec!["--cores={{CORES}}".into()];
    cmd.binary = Some(source.clone());
    let desc = flint_proto::DriverDescription::new(source.uri.clone(), cmd);
    let master: EndpointRef<MasterMsg> = submitter
        .setup_endpoint_ref(c.master.rpc_address(), MASTER_ENDPOINT)
        .await
        .unwrap();
    let answer = master
        .ask(flint_proto::messages::RequestSubmitDriver { desc })
        .await
        .unwrap();
    assert!(answer.success, "{answer:?}");
    let s = wait_status(&c.worker, "the driver FINISHED", |s| {
        s.finished_drivers
            .iter()
            .any(|d| d.state == flint_proto::DriverState::Finished)
    })
    .await;
    let cached = c
        .worker
        .work_dir()
        .join(BINARY_CACHE_DIR)
        .join(&source.sha256);
    let d = &s.finished_drivers[0];
    wait_file_contains(
        &PathBuf::from(&d.work_dir).join("stdout"),
        &format!("driver ran: {} --cores=1", cached.display()),
    )
    .await;
    assert_eq!(s.binary_fetches, 1);
    c.stop().await;
    submitter.shutdown();
    submitter.await_termination().await;
}

#[tokio::test]
async fn a_seeded_binary_runs_without_a_fetch() {
    let c = Cluster::start().await;
    let driver = RpcEnv::server(rpc_conf(&conf()), "127.0.0.1", 0)
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let (path, source) = serve(&driver, files.path(), "my-app", SCRIPT).await;
    let hashed = std::fs::metadata(&path).unwrap();

    let cached = c
        .worker
        .seed_binary(&path, &source.sha256, source.size, &hashed)
        .await
        .unwrap();
    assert_eq!(
        cached,
        c.worker
            .work_dir()
            .join(BINARY_CACHE_DIR)
            .join(&source.sha256)
    );
    assert_eq!(std::fs::read(&cached).unwrap(), SCRIPT);
    // Seeding again is a no-op.
    let again = c
        .worker
        .seed_binary(&path, &source.sha256, source.size, &hashed)
        .await
        .unwrap();
    assert_eq!(again, cached);
    let s = c.worker.status().await;
    assert_eq!((s.binary_fetches, s.binary_cache_hits), (0, 0), "{s:#?}");

    let app1 = register(&driver, &c, app("seeded", source.clone()));
    let id = app_id(&app1).await;
    let s = wait_status(&c.worker, "the seeded app's executor RUNNING", |s| {
        s.executors
            .iter()
            .any(|e| e.app_id == id && e.state == ExecutorState::Running)
    })
    .await;
    let exec = s.executors.iter().find(|e| e.app_id == id).unwrap();
    wait_file_contains(
        &PathBuf::from(&exec.work_dir).join("stdout"),
        &format!(
            "binary ran: {} --executor-id {}",
            cached.display(),
            exec.exec_id
        ),
    )
    .await;
    assert_eq!(s.binary_fetches, 0, "{s:#?}");
    assert!(s.binary_cache_hits >= 1, "{s:#?}");
    assert_eq!(std::fs::read(&cached).unwrap(), SCRIPT);

    app1.stop().await;
    c.stop().await;
    driver.shutdown();
    driver.await_termination().await;
}

#[tokio::test]
async fn a_seed_from_a_changed_file_or_a_bad_hash_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let cache = BinaryCache::open(work.path(), 1 << 20).unwrap();
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("bin");
    std::fs::write(&path, SCRIPT).unwrap();
    let sha = hex::encode(Sha256::digest(SCRIPT));
    // Metadata of another file: not the one hashed.
    let other = files.path().join("other");
    std::fs::write(&other, SCRIPT).unwrap();
    let wrong = std::fs::metadata(&other).unwrap();
    let e = cache
        .seed(&path, &sha, SCRIPT.len() as u64, &wrong)
        .await
        .unwrap_err();
    assert!(matches!(e, BinaryError::Changed { .. }), "{e}");
    assert!(e.to_string().contains("changed since it was hashed"), "{e}");
    let left: Vec<_> = std::fs::read_dir(cache.dir())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    let meta = std::fs::metadata(&path).unwrap();
    let e = cache
        .seed(&path, "not-a-hash", SCRIPT.len() as u64, &meta)
        .await
        .unwrap_err();
    assert!(matches!(e, BinaryError::NotAHash(_)), "{e}");
    let e = cache.seed(&path, &sha, 2 << 20, &meta).await.unwrap_err();
    assert!(matches!(e, BinaryError::TooLarge { .. }), "{e}");
    assert_eq!((cache.fetches(), cache.hits()), (0, 0));

    // Not executable: copied, and the copy made 0700 (the source keeps its mode).
    use std::os::unix::fs::MetadataExt as _;
    let cached = cache
        .seed(&path, &sha, SCRIPT.len() as u64, &meta)
        .await
        .unwrap();
    let m = std::fs::metadata(&cached).unwrap();
    assert_ne!(m.ino(), meta.ino());
    assert_eq!(m.permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::read(&cached).unwrap(), SCRIPT);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        meta.permissions().mode() & 0o777
    );

    // Executable: hard-linked, the very inode that was hashed.
    let exe = files.path().join("exe");
    std::fs::write(&exe, b"#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe_meta = std::fs::metadata(&exe).unwrap();
    let exe_sha = hex::encode(Sha256::digest(b"#!/bin/sh\nexit 0\n"));
    let linked = cache
        .seed(&exe, &exe_sha, exe_meta.len(), &exe_meta)
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&linked).unwrap().ino(), exe_meta.ino());
    assert_eq!((cache.fetches(), cache.hits()), (0, 0));
}
