//! The executor side: what `get_or_create` becomes in a process a worker started
//! with `FLINT_EXECUTOR_DRIVER_URL` set. It connects to the driver with the cluster
//! secret its worker put in `FLINT_AUTH_SECRET`, registers proving its binary's
//! SHA-256, runs the tasks it is sent on a [`TaskPool`] of its cores (threads, never
//! the RPC runtime), sends results back in batches (large ones in chunks), fetches
//! broadcasts from the driver once, heartbeats, and exits the process — never
//! returning to `main` — when the driver's connection drops or the driver says stop.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flint_rpc::{Context as RpcContext, Endpoint, EndpointRef, RpcAddress, RpcEnv};
use tokio::sync::mpsc::UnboundedSender;

use super::proto::{
    DriverMsg, ExecutorMsg, FetchBroadcast, Heartbeat, RegisterExecutor, ResultChunk, StatusUpdate,
    DRIVER_ENDPOINT, EXECUTOR_ENDPOINT,
};
use super::{driver, ClusterError, EXECUTOR_ID_PARAM};
use crate::executor::{ExecutorEnv, TaskPool};
use crate::shared::BroadcastSource;

/// What the worker put in `FLINT_EXECUTOR_DRIVER_URL`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ExecutorUrl {
    pub driver: String,
    pub id: String,
    pub cores: u32,
    pub host: String,
}

/// Parses `flint://host:port?executor=ID&cores=N&host=H&app=A`.
pub(crate) fn parse_url(url: &str) -> Result<ExecutorUrl, ClusterError> {
    let bad = |why: &str| {
        ClusterError::Executor(format!("{}={url:?}: {why}", crate::context::EXECUTOR_ENV))
    };
    let (driver, query) = url
        .split_once('?')
        .ok_or_else(|| bad("no ?executor=..&cores=.. part"))?;
    let mut id = None;
    let mut cores = None;
    let mut host = None;
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some((k, v)) if k == EXECUTOR_ID_PARAM => id = Some(v.to_string()),
            Some(("cores", v)) => cores = v.parse::<u32>().ok().filter(|c| *c > 0),
            Some(("host", v)) => host = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(ExecutorUrl {
        driver: driver.to_string(),
        id: id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| bad("no executor id"))?,
        cores: cores.ok_or_else(|| bad("no positive cores"))?,
        host: host.unwrap_or_else(|| "localhost".into()),
    })
}

/// Serves the driver named by `url` until it goes away, then exits the process.
pub(crate) fn run(url: &str) -> ! {
    let code = match serve(url) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flint executor: {e}");
            tracing::error!("flint executor: {e}");
            1
        }
    };
    std::process::exit(code)
}

struct RpcBroadcasts {
    driver: EndpointRef<DriverMsg>,
    rt: tokio::runtime::Handle,
}

impl BroadcastSource for RpcBroadcasts {
    fn fetch(&self, id: u64) -> Result<Arc<Vec<u8>>, String> {
        let r = self.rt.block_on(self.driver.ask(FetchBroadcast { id }));
        match r {
            Ok(Ok(b)) => Ok(Arc::new(b)),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("fetching broadcast {id} from the driver: {e}")),
        }
    }
}

enum Exit {
    Stop(String),
    Disconnected,
}

struct ExecutorEndpoint {
    pool: TaskPool,
    env: Arc<ExecutorEnv>,
    running: Arc<AtomicU32>,
    driver: Option<RpcAddress>,
    exit: UnboundedSender<Exit>,
}

impl Endpoint for ExecutorEndpoint {
    type Msg = ExecutorMsg;

    fn receive(&mut self, _ctx: &RpcContext<ExecutorMsg>, msg: ExecutorMsg) {
        match msg {
            ExecutorMsg::Launch(tasks) => {
                for t in tasks {
                    self.running.fetch_add(1, Ordering::Relaxed);
                    self.pool.submit(t);
                }
            }
            ExecutorMsg::Kill(t) => self.env.kill(t),
            ExecutorMsg::RemoveBlocks(c) => self.env.remove_cache(c),
            ExecutorMsg::RemoveShuffle(s) => self.env.remove_shuffle(s),
            ExecutorMsg::Stop(why) => {
                let _ = self.exit.send(Exit::Stop(why));
            }
        }
    }

    fn on_disconnected(&mut self, _ctx: &RpcContext<ExecutorMsg>, remote: &RpcAddress) {
        if self.driver.as_ref().is_none_or(|d| d == remote) {
            let _ = self.exit.send(Exit::Disconnected);
        }
    }
}

fn serve(url: &str) -> Result<(), ClusterError> {
    let u = parse_url(url)?;
    let exe = std::env::current_exe()
        .map_err(|e| ClusterError::Executor(format!("locating this binary: {e}")))?;
    // The proof of which binary this is, hashed while the RPC set-up and the connection
    // to the driver proceed (it is the slowest step of an executor's start).
    let hashing = std::thread::Builder::new()
        .name("flint-executor-hash".into())
        .spawn(move || {
            driver::sha256_file(&exe)
                .map_err(|e| ClusterError::Executor(format!("hashing {}: {e}", exe.display())))
        })
        .map_err(|e| ClusterError::Executor(format!("starting a thread: {e}")))?;
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let conf = flint_conf::load(None, vars, std::iter::empty::<&str>())?.conf;
    let rpc = driver::rpc_conf(&conf)?;
    let inline_cap = rpc.max_message_size / 2;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("flint-executor-rpc")
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Executor(format!("starting the RPC runtime: {e}")))?;
    let span = tracing::info_span!("flint-executor", executor = %u.id);
    let _g = span.enter();
    let driver_addr: RpcAddress = u
        .driver
        .parse()
        .map_err(|e| ClusterError::Executor(format!("driver address {:?}: {e}", u.driver)))?;
    rt.block_on(async {
        // A server, so that other executors fetch this one's map outputs from it.
        let env = RpcEnv::server(rpc, &u.host, 0)
            .await
            .map_err(|e| ClusterError::Rpc(format!("starting the executor's RPC server: {e}")))?;
        let driver = env
            .setup_endpoint_ref::<DriverMsg>(&driver_addr, DRIVER_ENDPOINT)
            .await
            .map_err(|e| ClusterError::Rpc(format!("reaching the driver at {driver_addr}: {e}")))?;
        let (exit_tx, mut exit_rx) = tokio::sync::mpsc::unbounded_channel();
        let (res_tx, mut res_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let broadcasts = Arc::new(RpcBroadcasts { driver: driver.clone(), rt: tokio::runtime::Handle::current() });
        // Memory is known once registered; the cache is made with the worker's grant.
        let memory = std::env::var("FLINT_EXECUTOR_MEMORY_MB")
            .ok()
            .and_then(|m| m.parse::<u64>().ok())
            .map_or(1 << 30, |m| m << 20);
        let xenv = Arc::new(ExecutorEnv::new(&u.id, memory, broadcasts));
        let running = Arc::new(AtomicU32::new(0));
        let pool = {
            let running = running.clone();
            TaskPool::start(
                u.cores,
                xenv.clone(),
                Arc::new(move |r| {
                    running.fetch_sub(1, Ordering::Relaxed);
                    res_tx.send(r).is_ok()
                }),
            )
            .map_err(|e| ClusterError::Executor(format!("starting task threads: {e}")))?
        };
        let me = env
            .setup_endpoint(
                EXECUTOR_ENDPOINT,
                ExecutorEndpoint {
                    pool,
                    env: xenv.clone(),
                    running: running.clone(),
                    driver: Some(driver_addr.clone()),
                    exit: exit_tx.clone(),
                },
            )
            .map_err(|e| ClusterError::Rpc(e.to_string()))?;
        let (sha, _) = tokio::task::spawn_blocking(move || hashing.join())
            .await
            .map_err(|e| ClusterError::Executor(format!("hashing this binary: {e}")))?
            .map_err(|_| ClusterError::Executor("hashing this binary panicked".into()))??;
        let reg = driver
            .ask(RegisterExecutor {
                executor_id: u.id.clone(),
                host: u.host.clone(),
                cores: u.cores,
                binary_sha256: sha,
                endpoint: me,
            })
            .await
            .map_err(|e| ClusterError::Rpc(format!("registering with the driver: {e}")))?
            .map_err(|e| ClusterError::Executor(format!("the driver refused this executor: {e}")))?;
        tracing::info!(app = %reg.app_id, cores = u.cores, "registered with the driver at {driver_addr}");
        let service = setup_shuffle(&env, &conf, &reg, u.cores, &xenv)?;
        let inline_limit = usize::try_from(reg.inline_limit).unwrap_or(usize::MAX).min(inline_cap);
        // Results: batched, large ones chunked.
        let results_driver = driver.clone();
        let id = u.id.clone();
        let results_exit = exit_tx.clone();
        tokio::spawn(async move {
            while let Some(first) = res_rx.recv().await {
                let mut batch = vec![first];
                while let Ok(r) = res_rx.try_recv() {
                    batch.push(r);
                    if batch.len() >= 1024 {
                        break;
                    }
                }
                let (big, small): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| r.len() > inline_limit);
                let mut ok = true;
                let mut group = Vec::new();
                let mut size = 0;
                for r in small {
                    if size + r.len() > inline_limit && !group.is_empty() {
                        ok &= results_driver.send(StatusUpdate { executor_id: id.clone(), results: std::mem::take(&mut group) }).is_ok();
                        size = 0;
                    }
                    size += r.len();
                    group.push(r);
                }
                if !group.is_empty() {
                    ok &= results_driver.send(StatusUpdate { executor_id: id.clone(), results: group }).is_ok();
                }
                for r in big {
                    let task_id = postcard::take_from_bytes::<u64>(&r).map_or(u64::MAX, |(t, _)| t);
                    for c in r.chunks(inline_limit.max(1)) {
                        let chunk = ResultChunk { executor_id: id.clone(), task_id, total: r.len() as u64, bytes: c.to_vec() };
                        // Keep the queue towards the driver bounded: wait for room.
                        ok &= results_driver.send_async(chunk).await.is_ok();
                    }
                }
                if !ok {
                    let _ = results_exit.send(Exit::Disconnected);
                }
            }
        });
        // Heartbeats.
        let hb_driver = driver.clone();
        let hb_id = u.id.clone();
        let hb_exit = exit_tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(reg.heartbeat_ms));
            tick.tick().await;
            loop {
                tick.tick().await;
                let r = hb_driver
                    .ask(Heartbeat { executor_id: hb_id.clone(), running: running.load(Ordering::Relaxed) })
                    .await;
                match r {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = hb_exit.send(Exit::Stop("the driver no longer knows this executor".into()));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("heartbeat to the driver failed: {e}");
                        if matches!(e, flint_rpc::AskError::ConnectionLost { .. } | flint_rpc::AskError::NotDelivered { .. }) {
                            let _ = hb_exit.send(Exit::Disconnected);
                            return;
                        }
                    }
                }
            }
        });
        match exit_rx.recv().await {
            Some(Exit::Stop(why)) => tracing::info!("the driver stopped this executor: {why}"),
            Some(Exit::Disconnected) | None => tracing::info!("the driver's connection closed; exiting"),
        }
        // Without the worker's shuffle service, this executor's map outputs go with it.
        if !service {
            xenv.remove_all_shuffles();
        }
        env.shutdown();
        Ok(())
    })
}

/// The executor's shuffle side: the driver's shuffle settings over its own, its files
/// under `local.dir` for the application, and a block server on its RPC server for
/// other executors' reduce tasks. Returns whether the worker's shuffle service serves
/// (and cleans up) its map outputs instead.
fn setup_shuffle(
    env: &RpcEnv,
    conf: &flint_conf::Conf,
    reg: &super::proto::Registered,
    cores: u32,
    xenv: &Arc<ExecutorEnv>,
) -> Result<bool, ClusterError> {
    let mut conf = conf.clone();
    for (k, v) in &reg.shuffle_conf {
        conf.insert(k, v.clone(), flint_conf::Source::Code);
    }
    let sc = flint_shuffle::ShuffleConf::from_conf(&conf, u64::from(cores))?;
    let layout = flint_shuffle::Layout::new(&sc.local_dirs, &reg.app_id)
        .map_err(|e| ClusterError::Executor(format!("shuffle files: {e}")))?;
    let server = flint_shuffle::BlockServer::new(sc.local_dirs.clone());
    server
        .register(env)
        .map_err(|e| ClusterError::Rpc(format!("serving shuffle blocks: {e}")))?;
    let own = env
        .address()
        .map(ToString::to_string)
        .ok_or_else(|| ClusterError::Rpc("the executor's RPC server has no address".into()))?;
    // The worker's shuffle service, when the worker runs one for its executors.
    let service = std::env::var(SHUFFLE_SERVICE_ENV)
        .ok()
        .filter(|s| sc.service_enabled && !s.is_empty());
    let serving = service.is_some();
    xenv.set_shuffle(crate::executor::ShuffleEnv {
        conf: sc,
        layout,
        server: service.unwrap_or(own),
        remote: Some((tokio::runtime::Handle::current(), env.clone())),
    });
    Ok(serving)
}

/// Set by a worker running a shuffle service in its executors' environment: the
/// service's address (`flint://host:port`), which serves their map outputs.
pub(crate) const SHUFFLE_SERVICE_ENV: &str = "FLINT_SHUFFLE_SERVICE_ADDRESS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_round_trip_and_errors() {
        let u = parse_url("flint://127.0.0.1:5000?executor=3&cores=2&host=h&app=app-1").unwrap();
        assert_eq!(
            u,
            ExecutorUrl {
                driver: "flint://127.0.0.1:5000".into(),
                id: "3".into(),
                cores: 2,
                host: "h".into()
            }
        );
        for bad in [
            "flint://h:1",
            "flint://h:1?cores=2",
            "flint://h:1?executor=1&cores=0",
        ] {
            let e = parse_url(bad).unwrap_err().to_string();
            assert!(
                e.contains("FLINT_EXECUTOR_DRIVER_URL") && e.contains(bad),
                "{e}"
            );
        }
    }
}
