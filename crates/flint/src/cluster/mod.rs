//! The cluster backend: `local-cluster[W,C,M]` (an embedded master and W workers in
//! this process, with an ephemeral secret) and `flint://host:port[,host2:port]` (a
//! running cluster, its secret found as the `flint` command finds it). Executors are
//! real processes of this binary; they run the same task bytes the local backend
//! runs, over flint-rpc, authenticated with the cluster secret.
//!
//! Modules: `proto` (driver ↔ executor messages), `driver` (the driver endpoint, the
//! batched [`Executors`](crate::shell::Executors) transport, the application
//! registration), `executor` (the executor process), `embedded` (the in-process master
//! and workers of `local-cluster`).

mod driver;
mod embedded;
pub(crate) mod executor;
mod proto;
pub(crate) mod signals;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flint_client::AppClientHandle;
use flint_conf::{Conf, SizeUnit};
use flint_proto::{ApplicationState, BinarySource};
use flint_rpc::{RpcAddress, RpcEnv};

use crate::master::Master;
use crate::scheduler::SchedulerConf;
use crate::shared::BroadcastStore;
use crate::shell::{Accumulators, Backend};

/// The query key of the executor id in `FLINT_EXECUTOR_DRIVER_URL`.
pub(crate) const EXECUTOR_ID_PARAM: &str = "executor";

/// What can go wrong starting or running the cluster backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    /// RPC set-up or a call failed.
    #[error("RPC: {0}")]
    Rpc(String),
    /// The application could not be registered or died.
    #[error("the application: {0}")]
    App(String),
    /// The embedded cluster did not start.
    #[error("the embedded cluster: {0}")]
    Embedded(String),
    /// The executor process failed.
    #[error("{0}")]
    Executor(String),
    /// A setting is wrong.
    #[error(transparent)]
    Conf(#[from] flint_conf::ConfError),
}

/// The cluster half of a running context: stopped after the shell.
pub(crate) struct Cluster {
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    env: RpcEnv,
    client: AppClientHandle,
    refs: driver::Refs,
    embedded: Mutex<Option<embedded::Embedded>>,
    /// Set when `stop` begins: executors leaving after it are expected, not lost.
    stopped: Arc<AtomicBool>,
}

/// A started cluster backend.
pub(crate) struct Started {
    pub backend: Backend,
    pub cluster: Cluster,
    pub app_id: String,
}

/// Starts the cluster backend for `master`.
pub(crate) fn start(
    app_name: &str,
    master: &Master,
    conf: &Conf,
    sched: SchedulerConf,
    broadcasts: Arc<BroadcastStore>,
    accumulators: Arc<Accumulators>,
) -> Result<Started, ClusterError> {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flint-driver-rpc")
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Rpc(format!("starting the driver's RPC runtime: {e}")))?;
    let (conf, embedded, masters) = match master {
        Master::LocalCluster {
            workers,
            cores,
            memory_mb,
        } => {
            let conf = embedded::with_secret(conf.clone());
            let conf = embedded::executor_memory(conf, *memory_mb)?;
            let e = rt.block_on(embedded::start(&conf, *workers, *cores, *memory_mb))?;
            let masters = vec![e.master_address()];
            (conf, Some(e), masters)
        }
        Master::Cluster { masters } => {
            let addrs = masters
                .iter()
                .map(|m| {
                    format!("flint://{m}")
                        .parse::<RpcAddress>()
                        .map_err(|e| ClusterError::App(format!("master {m}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (conf.clone(), None, addrs)
        }
        Master::Local { .. } => {
            return Err(ClusterError::App("a local master has no cluster".into()))
        }
    };
    let rpc = driver::rpc_conf(&conf)?;
    let max_batch = rpc.max_message_size / 2;
    let host = if masters.iter().all(|m| is_loopback(&m.host)) {
        "127.0.0.1".to_string()
    } else {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "0.0.0.0".into())
    };
    let env = rt
        .block_on(RpcEnv::server(rpc, &host, 0))
        .map_err(|e| ClusterError::Rpc(format!("starting the driver's RPC server: {e}")))?;
    let driver_url = env
        .address()
        .map(ToString::to_string)
        .ok_or_else(|| ClusterError::Rpc("the driver's RPC server has no address".into()))?;
    let exe = std::env::current_exe()
        .map_err(|e| ClusterError::App(format!("locating this binary: {e}")))?;
    // Hashed once, by the file server (what the workers verify); the same hash is the
    // one executors must prove.
    // Taken before hashing, so a seeded copy is known to be the file hashed.
    let before = std::fs::metadata(&exe);
    let (uri, meta) = rt
        .block_on(env.add_file_with_meta(&exe))
        .map_err(|e| ClusterError::Rpc(format!("serving {}: {e}", exe.display())))?;
    let (sha256, size) = (meta.sha256_hex(), meta.size);
    // Embedded workers share this process: they take the binary from here rather
    // than fetching it over RPC and hashing it once more each.
    if let (Some(e), Ok(before)) = (&embedded, &before) {
        rt.block_on(e.seed_binary(&exe, &sha256, size, before));
    }
    let refs: driver::Refs = Arc::default();
    let app_id = Arc::new(Mutex::new(String::new()));
    let registered = Arc::new(AtomicU32::new(0));
    let registered_cores = Arc::<driver::RegisteredCores>::default();
    let heartbeat_ms = driver::heartbeat_ms(&conf)?;
    let memory = conf.bytes("executor.memory", 1 << 30, SizeUnit::Mebibytes)?;
    let max_result = sched.max_result_size;
    let stopping = Arc::new(AtomicBool::new(false));
    let client_slot: driver::ClientSlot = Arc::default();
    let guard = rt.enter();
    let mut setup_err = None;
    let backend = Backend::start(sched, accumulators, app_name, |sink| {
        let (execs, task) =
            driver::RpcExecutors::new(refs.clone(), sink.clone(), max_batch, client_slot.clone());
        tokio::spawn(task);
        let ep = driver::DriverEndpoint::new(driver::DriverState {
            sha256: sha256.clone(),
            app_id: app_id.clone(),
            memory,
            heartbeat_ms,
            inline_limit: max_batch as u64,
            max_result,
            refs: refs.clone(),
            sink,
            broadcasts,
            started,
            registered: registered.clone(),
            registered_cores: registered_cores.clone(),
            stopping: stopping.clone(),
            shuffle_conf: driver::shuffle_conf(&conf),
        });
        if let Err(e) = env.setup_endpoint(proto::DRIVER_ENDPOINT, ep) {
            setup_err = Some(e.to_string());
        }
        Ok(execs)
    })
    .map_err(|e| ClusterError::Rpc(format!("starting the scheduler: {e}")))?;
    drop(guard);
    if let Some(e) = setup_err {
        backend.stop();
        return Err(ClusterError::Rpc(e));
    }
    let spec = driver::AppSpec {
        name: app_name,
        conf: &conf,
        masters,
        driver_url,
        binary: BinarySource { uri, sha256, size },
    };
    let sink = backend_sink(&backend);
    let registered_app = rt.block_on(driver::register_app(
        &env,
        &spec,
        refs.clone(),
        sink,
        stopping.clone(),
    ));
    let (client, id) = match registered_app {
        Ok(v) => v,
        Err(e) => {
            backend.stop();
            env.shutdown();
            if let Some(emb) = embedded {
                rt.block_on(emb.stop());
            }
            return Err(e);
        }
    };
    if let Ok(mut a) = app_id.lock() {
        a.clone_from(&id);
    }
    let _ = client_slot.set(client.clone());
    tracing::info!(app = %id, "application registered {:.0} ms after the context started", started.elapsed().as_secs_f64() * 1000.0);
    // Spark's minRegisteredResourcesRatio: hold the context until that share of the
    // expected cores (cores.max; on local-cluster all its cores) has registered, or
    // the waiting time passes.
    let percent = conf.u64("scheduler.min_registered_resources_percent", 0)?;
    let expected = match master {
        Master::LocalCluster { workers, cores, .. } => {
            let all = u64::from(*workers) * u64::from(*cores);
            conf.get("cores.max")
                .map_or(Ok(all), |_| conf.u64("cores.max", all).map(|m| m.min(all)))?
        }
        _ => conf.u64("cores.max", 0)?,
    };
    let wanted = u32::try_from((expected * percent.min(100)).div_ceil(100)).unwrap_or(u32::MAX);
    if wanted > 0 {
        let wait = conf.duration(
            "scheduler.max_registered_resources_waiting_time",
            std::time::Duration::from_secs(30),
            flint_conf::TimeUnit::Seconds,
        )?;
        let deadline = tokio::time::Instant::now() + wait;
        let got = rt.block_on(registered_cores.wait_for(wanted, deadline));
        if got < wanted {
            tracing::warn!(app = %id, "only {got} of the {wanted} executor cores wanted by scheduler.min_registered_resources_percent = {percent} registered within {wait:?}; starting anyway");
        }
    }
    Ok(Started {
        backend,
        cluster: Cluster {
            rt: Mutex::new(Some(rt)),
            env,
            client,
            refs,
            embedded: Mutex::new(embedded),
            stopped: stopping,
        },
        app_id: id,
    })
}

fn backend_sink(backend: &Backend) -> crate::shell::ResultSink {
    backend.sink()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Cluster {
    /// Ends the application in `final_state` at the master: unregisters it (the
    /// master kills its executors), tells the executors to stop, shuts the RPC
    /// server and any embedded cluster down (whose workers kill and reap their
    /// children). Idempotent; a second caller waits until the first has finished,
    /// so a process that exits after `stop` returns leaves nothing behind.
    pub fn stop(&self, final_state: ApplicationState) {
        // Held to the end: a concurrent caller (the signal thread, a drop) waits.
        let Ok(mut rt_slot) = self.rt.lock() else {
            return;
        };
        let Some(rt) = rt_slot.take() else {
            return;
        };
        self.stopped.store(true, Ordering::SeqCst);
        tracing::info!("stopping the application ({final_state})");
        let refs: Vec<_> = self
            .refs
            .lock()
            .map(|mut r| r.drain().collect())
            .unwrap_or_default();
        let embedded = self.embedded.lock().ok().and_then(|mut e| e.take());
        rt.block_on(async {
            for (_, r) in &refs {
                let _ = r.send(proto::ExecutorMsg::Stop("the application stopped".into()));
            }
            let _ =
                tokio::time::timeout(Duration::from_secs(10), self.client.stop_with(final_state))
                    .await;
            // The unregistration (with the final state) and the executors' stop
            // messages must leave before the connections close.
            let _ = self.env.flush(Duration::from_secs(2)).await;
            if let Some(e) = embedded {
                e.stop().await;
            }
            self.env.shutdown();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), self.env.await_termination()).await;
        });
        rt.shutdown_timeout(Duration::from_secs(2));
        drop(rt_slot);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let state = if std::thread::panicking() {
            ApplicationState::Failed
        } else {
            ApplicationState::Finished
        };
        self.stop(state);
    }
}

/// When this process was started as an executor ([`crate::context::EXECUTOR_ENV`]
/// set), serves its driver and exits; otherwise returns.
pub(crate) fn executor_hook() {
    if let Some(url) = std::env::var_os(crate::context::EXECUTOR_ENV) {
        executor::run(&url.to_string_lossy());
    }
}
