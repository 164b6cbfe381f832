//! The worker daemon: a thin async shell around the [`state`](crate::state)
//! machine.
//!
//! [`start`] checks the options (cores, memory, a writable work dir), binds
//! the RPC environment (any free port by default) and the web UI (8081),
//! registers the `"Worker"` endpoint and starts registering with every
//! configured master. From then on everything the worker learns becomes a
//! state-machine [`Event`]: the
//! [`WorkerMsg`](flint_proto::messages::WorkerMsg)s masters send, dropped
//! connections, timer ticks, child processes starting and ending, answers
//! to executor state reports. The [`Effect`](crate::state::Effect)s that
//! come back become messages to the master, tokio timers, child processes
//! (through [`runner`](crate::runner)), work dir cleanups and log lines.
//!
//! A child (executor or cluster-mode driver) runs the command from its
//! description: the program, its arguments and environment with
//! `{{EXECUTOR_ID}}`, `{{HOSTNAME}}`, `{{CORES}}`, `{{APP_ID}}`,
//! `{{WORKER_URL}}` (`flint://Worker@host:port`) and `{{BINARY}}` substituted (see
//! [`runner::Placeholders`](crate::runner::Placeholders)), plus
//! `FLINT_EXECUTOR_MEMORY_MB` (drivers: `FLINT_DRIVER_MEMORY_MB`) with its
//! memory, as Spark sets `SPARK_EXECUTOR_MEMORY`. It runs in
//! `work/<app-id>/<exec-id>/` (drivers: `work/<driver-id>/`), which holds
//! its `stdout` and `stderr`, in its own process group, and dies with the
//! worker. When the command carries a [`BinarySource`](flint_proto::BinarySource)
//! (a driver's own executable on its file server), the worker first makes sure
//! that binary is in its [binary cache](crate::binaries), fetching it over RPC
//! with the cluster secret and checking its SHA-256, and `{{BINARY}}` becomes
//! the cached path; a fetch that fails fails that launch, with the reason.
//!
//! Every event is stamped by one [`flint_daemon::Clock`]: monotonic
//! time since the worker started (tokio's clock, which never jumps and which
//! tests can pause) for every deadline, and the wall clock only for the
//! worker id and display.
//!
//! Binding, the advertised address (what the worker registers with and hands
//! its children as `{{HOSTNAME}}` and `{{WORKER_URL}}`), the bounded web UI,
//! the open-file limit and the start-up log lines are the shared daemon
//! layer's ([`flint_daemon`]).
//!
//! When a master's RPC handshake refuses this worker's secret (or its lack
//! of one), the endpoint turns the RPC layer's report into
//! [`Event::MasterRefusedAuth`], and the worker says so and what to do.
//!
//! Every task the worker spawns is tracked and selects on one cancellation
//! token. [`WorkerHandle::shutdown`] (or the worker deciding to exit, for
//! example after every registration retry went unanswered) kills the
//! children (SIGTERM, then SIGKILL after the grace period) and waits until
//! they are reaped, then stops the timers, the web UI and the RPC
//! environment; [`WorkerHandle::wait`] returns after all of it, with an
//! error carrying the reason when the worker exited on a failure.

mod endpoint;
mod http;
pub mod settings;
mod shell;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flint_conf::Conf;
use flint_daemon::{BindOptions, Bound, DaemonError};
use flint_proto::messages::WORKER_ENDPOINT;
use flint_proto::{IdError, WorkerId};
use flint_rpc::{RpcAddress, RpcConf, RpcError};
use tracing::Instrument;

use self::endpoint::WorkerEndpoint;
use self::shell::{Info, Shared};
use crate::binaries::BinaryCache;
use crate::state::{
    ConfigError, DecommissionTrigger, DriverEntry, Event, ExecutorEntry, WorkerCore, WorkerStatus,
};

pub use self::http::STATUS_PATH;
pub use flint_daemon::clock::wall_ms;
pub use flint_daemon::log::auth_disabled_warning;
/// The worker's `GET /api/v1/status` document and its entries (plain data in
/// flint-types).
pub use flint_proto::worker_status::{DriverDoc, ExecutorDoc, WorkerStatusDoc};

/// Spark's default worker web UI port.
pub const DEFAULT_WEBUI_PORT: u16 = 8081;
/// The default work directory, relative to the current directory (Spark:
/// `SPARK_HOME/work`).
pub const DEFAULT_WORK_DIR: &str = "work";

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The masters to register with, in parallel (Spark's
    /// `spark://h1:p1,h2:p2`); at least one.
    pub masters: Vec<RpcAddress>,
    /// The host to bind and advertise (`flint://host:port`).
    pub host: String,
    /// The RPC port (0, the default, picks a free one).
    pub port: u16,
    /// The web UI port (8081; 0 picks a free one). The UI binds `ui.host`.
    pub webui_port: u16,
    /// Cores offered to executors; `None` means every CPU of the machine.
    pub cores: Option<u32>,
    /// Memory offered to executors, in MB; `None` means the machine's total
    /// less 1 GiB, at least 1 GiB (Spark's rule; 2 GiB when it cannot be
    /// read).
    pub memory_mb: Option<u64>,
    /// Where executors' and drivers' directories go (created if missing;
    /// default `./work`).
    pub work_dir: PathBuf,
    /// Every other setting (see [`settings`] and `flint_rpc::conf`).
    pub conf: Conf,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            masters: Vec::new(),
            host: "127.0.0.1".into(),
            port: 0,
            webui_port: DEFAULT_WEBUI_PORT,
            cores: None,
            memory_mb: None,
            work_dir: PathBuf::from(DEFAULT_WORK_DIR),
            conf: Conf::new(),
        }
    }
}

/// Why the worker could not start, or why it stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Zero cores were offered.
    #[error("the worker must offer at least 1 core; got 0 (set it with --cores)")]
    ZeroCores,
    /// Zero memory was offered.
    #[error("the worker must offer at least 1 MB of memory; got 0 (set it with --memory)")]
    ZeroMemory,
    /// The work dir could not be created.
    #[error("cannot create work dir {}: {source}; choose another with --work-dir", path.display())]
    WorkDirCreate {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The work dir exists but a file cannot be created in it.
    #[error("work dir {} is not writable: {source}; choose another with --work-dir", path.display())]
    WorkDirNotWritable {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A socket could not be bound, or a setting of the daemon layer
    /// (`ui.*`, `network.advertise_address`) is wrong.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The host cannot be part of a worker id.
    #[error("host {host:?} cannot name a worker: {source}")]
    Host {
        /// The host given.
        host: String,
        /// Why.
        source: IdError,
    },
    /// A setting did not parse.
    #[error(transparent)]
    Conf(#[from] flint_conf::ConfError),
    /// The binary cache directory could not be set up.
    #[error("{0}; choose another work dir with --work-dir")]
    BinaryCache(#[source] crate::binaries::BinaryError),
    /// A setting parsed but is out of range.
    #[error("setting {key}: {message}")]
    Setting {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The settings together cannot run a worker (no master, a zero
    /// interval, ...).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The RPC environment could not be set up.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The worker ran and exited on a failure (for example every
    /// registration retry went unanswered, or a master refused it).
    #[error("worker exited with code {code}: {reason}")]
    Exited {
        /// The exit code the process should use.
        code: i32,
        /// Why, as logged.
        reason: String,
    },
}

/// The document for `status`: the state machine's [`WorkerStatus`] plus
/// where things are, with directories under the work dir.
pub(crate) fn status_doc(status: WorkerStatus, info: &Info) -> WorkerStatusDoc {
    let exec = |e: ExecutorEntry| ExecutorDoc {
        work_dir: info
            .work_dir
            .join(e.app_id.as_str())
            .join(e.exec_id.to_string())
            .display()
            .to_string(),
        app_id: e.app_id,
        exec_id: e.exec_id,
        app_name: e.app_name,
        cores: e.cores,
        memory_mb: e.memory_mb,
        state: e.state,
        exit_status: e.exit_status,
        message: e.message,
    };
    let driver = |d: DriverEntry| DriverDoc {
        work_dir: info
            .work_dir
            .join(d.driver_id.as_str())
            .display()
            .to_string(),
        driver_id: d.driver_id,
        cores: d.cores,
        memory_mb: d.memory_mb,
        supervise: d.supervise,
        state: d.state,
        exit_status: d.exit_status,
        exception: d.exception,
    };
    WorkerStatusDoc {
        id: status.id,
        state: status.state,
        registered: status.registered,
        connected: status.connected,
        master_url: status.master_url,
        master_web_ui_url: status.master_web_ui_url,
        auth: info.auth,
        worker_url: info.worker_url.clone(),
        web_ui_url: info.webui_url.clone(),
        work_dir: info.work_dir.display().to_string(),
        cores: status.cores,
        cores_used: status.cores_used,
        memory_mb: status.memory_mb,
        memory_used_mb: status.memory_used_mb,
        executors: status.executors.into_iter().map(exec).collect(),
        finished_executors: status.finished_executors.into_iter().map(exec).collect(),
        drivers: status.drivers.into_iter().map(driver).collect(),
        finished_drivers: status.finished_drivers.into_iter().map(driver).collect(),
        binary_fetches: info.binaries.fetches(),
        binary_cache_hits: info.binaries.hits(),
    }
}

/// A running worker. Dropping it starts a shutdown (children are killed)
/// without waiting for it.
pub struct WorkerHandle {
    shared: Arc<Shared>,
    webui_address: SocketAddr,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("id", &self.shared.info.worker_id)
            .field("address", &self.shared.info.address)
            .field("webui_url", &self.shared.info.webui_url)
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// The worker's id, `worker-<yyyyMMddHHmmss>-<host>-<port>`.
    pub fn id(&self) -> &WorkerId {
        &self.shared.info.worker_id
    }

    /// The worker's RPC address; it prints as `flint://host:port`.
    pub fn rpc_address(&self) -> &RpcAddress {
        &self.shared.info.address
    }

    /// The web UI's base URL, `http://host:port`.
    pub fn webui_url(&self) -> &str {
        &self.shared.info.webui_url
    }

    /// The socket the web UI is bound to.
    pub fn webui_address(&self) -> SocketAddr {
        self.webui_address
    }

    /// The work directory (absolute).
    pub fn work_dir(&self) -> &Path {
        &self.shared.info.work_dir
    }

    /// A snapshot of the worker, as `GET /api/v1/status` serves it.
    pub async fn status(&self) -> WorkerStatusDoc {
        self.shared.status()
    }

    /// Starts stopping the worker: every child is killed (SIGTERM, SIGKILL
    /// after the grace period) and reaped, then the timers, the web UI and
    /// the RPC environment stop. Returns at once; [`WorkerHandle::wait`]
    /// waits for the end.
    pub fn shutdown(&self) {
        self.shared
            .span
            .in_scope(|| self.shared.handle(Event::Shutdown));
    }

    /// Starts decommissioning, as the operator's signal (Spark's SIGPWR)
    /// does: no further launches, and the master is told. Honoured only
    /// with `decommission.enabled`.
    pub fn decommission(&self) {
        self.shared.span.in_scope(|| {
            self.shared.handle(Event::Decommission {
                trigger: DecommissionTrigger::Signal,
            })
        });
    }

    /// Waits until the worker has stopped (after [`WorkerHandle::shutdown`],
    /// or by itself) and every task it spawned, every child process and the
    /// RPC environment have ended. Returns [`WorkerError::Exited`] with the
    /// reason when the worker exited on a failure (exit code not 0).
    pub async fn wait(&self) -> Result<(), WorkerError> {
        self.shared.finished().await;
        match self.shared.outcome() {
            Some((code, reason)) if code != 0 => Err(WorkerError::Exited { code, reason }),
            _ => Ok(()),
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if !self.shared.token.is_cancelled() {
            self.shutdown();
        }
    }
}

/// Starts a worker: see the [module docs](self).
pub async fn start(opts: WorkerOptions) -> Result<WorkerHandle, WorkerError> {
    if opts.masters.is_empty() {
        return Err(ConfigError::NoMasters.into());
    }
    let cores = opts.cores.unwrap_or_else(default_cores);
    if cores == 0 {
        return Err(WorkerError::ZeroCores);
    }
    let memory_mb = opts.memory_mb.unwrap_or_else(default_memory_mb);
    if memory_mb == 0 {
        return Err(WorkerError::ZeroMemory);
    }
    let rpc_conf = RpcConf::from_conf(&opts.conf)?;
    // Executors and drivers get the cluster secret through their environment (never
    // their arguments), whether the worker runs in the CLI or embedded in a program.
    if rpc_conf.tls.is_none() {
        crate::runner::set_child_secret(rpc_conf.secret.clone());
    }
    let mut config = settings::worker_config(
        &opts.conf,
        opts.masters.iter().map(ToString::to_string).collect(),
        cores,
        memory_mb,
        rpc_conf.ask_timeout.duration,
    )?;
    config.rng_seed = random_seed();
    let ui_host = settings::ui_host(&opts.conf);
    let work_dir = prepare_work_dir(&opts.work_dir)?;
    let binaries = BinaryCache::open(&work_dir, settings::binary_cache_max_size(&opts.conf)?)
        .map_err(WorkerError::BinaryCache)?;

    let Bound {
        env,
        address,
        auth,
        ui,
    } = flint_daemon::bind(BindOptions {
        host: &opts.host,
        port: opts.port,
        ui_host: &ui_host,
        webui_port: opts.webui_port,
        rpc: rpc_conf,
        conf: &opts.conf,
    })
    .await?;
    let worker_id = match WorkerId::generate(wall_ms(), &address.host, address.port) {
        Ok(id) => id,
        Err(source) => {
            env.shutdown();
            return Err(WorkerError::Host {
                host: address.host.clone(),
                source,
            });
        }
    };
    let webui_address = ui.local_addr();
    let webui_url = ui.url().to_string();
    let worker_url = format!("flint://{WORKER_ENDPOINT}@{}", address.host_port());

    let info = Info {
        worker_id: worker_id.clone(),
        address: address.clone(),
        worker_url,
        webui_url: webui_url.clone(),
        work_dir,
        auth,
        binaries,
    };
    let span = tracing::info_span!("worker", worker_id = %worker_id);
    let shared = Shared::new(WorkerCore::new(worker_id, config), info, env.clone(), span);

    let me = match env.setup_endpoint(
        WORKER_ENDPOINT,
        WorkerEndpoint {
            shared: shared.clone(),
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            env.shutdown();
            return Err(e.into());
        }
    };
    shared.set_self_ref(me);

    shared.spawn(
        ui.serve(http::router(shared.clone()), shared.token.clone())
            .instrument(shared.span.clone()),
    );
    // When the token is cancelled, for whatever reason, the RPC env stops too.
    let supervisor = shared.clone();
    shared.spawn(async move {
        supervisor.token.cancelled().await;
        supervisor.env.shutdown();
    });

    shared.span.in_scope(|| {
        let detail = format!(
            " with {cores} cores, {memory_mb} MB, work dir {}",
            shared.info.work_dir.display()
        );
        flint_daemon::log::started("worker", &address, &detail, auth, &webui_url);
    });
    shared.span.in_scope(|| shared.handle(Event::Start));
    Ok(WorkerHandle {
        shared,
        webui_address,
    })
}

/// Every CPU of the machine (Spark: `Runtime.availableProcessors()`).
fn default_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Spark's default: total physical memory less 1 GiB, at least 1 GiB; 2 GiB
/// when the total cannot be read.
fn default_memory_mb() -> u64 {
    match total_memory_mb() {
        Some(total) => total.saturating_sub(1024).max(1024),
        None => 2048,
    }
}

fn total_memory_mb() -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let pages = u64::try_from(pages).ok().filter(|p| *p > 0)?;
    let page_size = u64::try_from(page_size).ok().filter(|p| *p > 0)?;
    Some(pages.saturating_mul(page_size) / (1024 * 1024))
}

/// A per-process random seed for the registration retry factor.
fn random_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(wall_ms());
    h.write_u32(std::process::id());
    h.finish()
}

/// Creates the work dir, checks that files can be created in it, and makes
/// it absolute (children run in directories below it).
fn prepare_work_dir(path: &Path) -> Result<PathBuf, WorkerError> {
    std::fs::create_dir_all(path).map_err(|source| WorkerError::WorkDirCreate {
        path: path.to_owned(),
        source,
    })?;
    let not_writable = |source| WorkerError::WorkDirNotWritable {
        path: path.to_owned(),
        source,
    };
    let probe = path.join(format!(".flint-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)?;
    std::fs::canonicalize(path).map_err(not_writable)
}
