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
//! With `shuffle.service.enabled` the worker is also the shuffle service (Spark's
//! external shuffle service): a [`flint_shuffle::BlockServer`] on its RPC
//! environment serves the map output under its `local.dir`, executors it starts
//! get `FLINT_LOCAL_DIR`, `FLINT_SHUFFLE_SERVICE_ENABLED` and
//! `FLINT_SHUFFLE_SERVICE_ADDRESS` so their output lands there and outlives them,
//! an application's shuffle files go when the master says it finished, and the
//! work dir cleanup sweeps those of applications gone longer than its TTL.
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
mod logs;
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
///
/// Each cause is printed once. A variant whose message ends in what to do
/// (`choose another with --work-dir`) holds its cause in the message, before
/// the advice, and not as a [`source`](std::error::Error::source); the others
/// either name no cause or are transparent over the error they wrap.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Zero cores were offered.
    #[error("the worker must offer at least 1 core; got 0 (set it with --cores)")]
    ZeroCores,
    /// Zero memory was offered.
    #[error("the worker must offer at least 1 MB of memory; got 0 (set it with --memory)")]
    ZeroMemory,
    /// The work dir could not be created.
    #[error(
        "cannot create work dir {}: {cause}; choose another with --work-dir (setting worker.dir)",
        path.display()
    )]
    WorkDirCreate {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason (part of the message).
        cause: std::io::Error,
    },
    /// The work dir exists but a file cannot be created in it.
    #[error(
        "work dir {} is not writable: {cause}; choose another with --work-dir (setting worker.dir)",
        path.display()
    )]
    WorkDirNotWritable {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason (part of the message).
        cause: std::io::Error,
    },
    /// A socket could not be bound, or a setting of the daemon layer
    /// (`ui.*`, `network.advertise_address`) is wrong.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The host cannot be part of a worker id.
    #[error(
        "host {host:?} cannot name a worker: {cause}; advertise another with --host or \
         --advertise-address (settings worker.host, network.advertise_address)"
    )]
    Host {
        /// The host given.
        host: String,
        /// Why (part of the message).
        cause: IdError,
    },
    /// A setting did not parse.
    #[error(transparent)]
    Conf(#[from] flint_conf::ConfError),
    /// The binary cache directory could not be set up.
    #[error(
        "{}; choose another work dir with --work-dir (setting worker.dir)",
        crate::error_chain(.0)
    )]
    BinaryCache(crate::binaries::BinaryError),
    /// A setting parsed but is out of range.
    #[error("setting {key}: {problem}")]
    Setting {
        /// The setting.
        key: &'static str,
        /// What is wrong with it (part of the message).
        problem: SettingProblem,
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

/// What is wrong with a setting that parsed ([`WorkerError::Setting`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingProblem {
    /// The value does not fit the type the worker keeps it in.
    #[error("{value} is larger than {max}")]
    TooLarge {
        /// The value given.
        value: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// `worker.timeout` is so short that a quarter of it, the heartbeat
    /// interval, is 0 ms.
    #[error("{timeout_ms} ms is too short: the heartbeat interval (a quarter of it) is 0")]
    HeartbeatIntervalZero {
        /// The timeout given, in milliseconds.
        timeout_ms: u64,
    },
    /// A size of 0 where at least one byte is needed.
    #[error("0 bytes leaves no room for any binary; give a size such as 4g")]
    NoRoomForBinaries,
    /// A shuffle directory cannot be created.
    #[error("cannot create {}: {reason}; point local.dir at writable directories", path.display())]
    LocalDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
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
        shuffle_service: info.shuffle.as_ref().map(|s| {
            let st = s.stats();
            flint_types::worker_status::ShuffleServiceDoc {
                local_dirs: s
                    .local_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect(),
                requests: st.requests,
                blocks_served: st.blocks,
                bytes_served: st.bytes,
                failed_requests: st.failed,
            }
        }),
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

    /// Puts `src`, a file this process hashed itself, into the worker's binary
    /// cache under `sha256` without a fetch (see
    /// [`BinaryCache::seed`](crate::binaries::BinaryCache::seed)); for a
    /// driver running this worker in its own process. Returns the cached path.
    pub async fn seed_binary(
        &self,
        src: &Path,
        sha256: &str,
        size: u64,
        hashed: &std::fs::Metadata,
    ) -> Result<std::path::PathBuf, crate::binaries::BinaryError> {
        self.shared
            .info
            .binaries
            .seed(src, sha256, size, hashed)
            .await
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
    let shuffle_dirs = settings::shuffle_service_dirs(&opts.conf)?;
    crate::runner::set_log_max_size(settings::log_max_size(&opts.conf)?);

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
        Err(cause) => {
            env.shutdown();
            return Err(WorkerError::Host {
                host: address.host.clone(),
                cause,
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
        shuffle: shuffle_dirs.map(flint_shuffle::BlockServer::new),
    };
    if let Some(server) = &info.shuffle {
        if let Err(e) = server.register(&env) {
            env.shutdown();
            return Err(e.into());
        }
    }
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
    if let Err(e) = env.setup_endpoint(
        flint_proto::messages::WORKER_LOGS_ENDPOINT,
        logs::LogsEndpoint {
            shared: shared.clone(),
        },
    ) {
        env.shutdown();
        return Err(e.into());
    }

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
        let mut detail = format!(
            " with {cores} cores, {memory_mb} MB, work dir {}",
            shared.info.work_dir.display()
        );
        if let Some(s) = &shared.info.shuffle {
            let dirs: Vec<String> = s
                .local_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            detail.push_str(&format!(", shuffle service on {}", dirs.join(",")));
        }
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
    std::fs::create_dir_all(path).map_err(|cause| WorkerError::WorkDirCreate {
        path: path.to_owned(),
        cause,
    })?;
    let not_writable = |cause| WorkerError::WorkDirNotWritable {
        path: path.to_owned(),
        cause,
    };
    let probe = path.join(format!(".flint-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)?;
    std::fs::canonicalize(path).map_err(not_writable)
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::binaries::{BinaryCache, BINARY_CACHE_DIR};
    use crate::error_chain;

    /// The message and every source, joined as a printer that walks sources
    /// without skipping anything would (so a cause printed twice shows).
    fn every_cause(e: &(dyn Error + 'static)) -> String {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(c) = next {
            out.push_str(": ");
            out.push_str(&c.to_string());
            next = c.source();
        }
        out
    }

    /// `e` printed in full shows `cause` exactly once, and so does
    /// [`error_chain`] (which then has nothing to skip).
    fn cause_once(e: &(dyn Error + 'static), cause: &str) -> String {
        let all = every_cause(e);
        assert_eq!(all.matches(cause).count(), 1, "{cause:?} in {all:?}");
        assert_eq!(error_chain(e), all);
        all
    }

    #[test]
    fn work_dir_errors_print_their_cause_once_and_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let under_file = file.join("work");
        let e = prepare_work_dir(&under_file).unwrap_err();
        assert!(matches!(e, WorkerError::WorkDirCreate { .. }), "{e:?}");
        let text = cause_once(&e, "Not a directory (os error 20)");
        assert_eq!(
            text,
            format!(
                "cannot create work dir {}: Not a directory (os error 20); choose another with \
                 --work-dir (setting worker.dir)",
                under_file.display()
            )
        );

        let e = WorkerError::WorkDirNotWritable {
            path: dir.path().to_owned(),
            cause: std::io::Error::from_raw_os_error(libc::EROFS),
        };
        let text = cause_once(&e, "Read-only file system (os error 30)");
        assert!(text.starts_with(&format!(
            "work dir {} is not writable",
            dir.path().display()
        )));
        assert!(text.contains("--work-dir (setting worker.dir)"), "{text}");
    }

    #[test]
    fn a_binary_cache_error_prints_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BINARY_CACHE_DIR), b"not a directory").unwrap();
        let Err(e) = BinaryCache::open(dir.path(), 1 << 20) else {
            panic!("a binary cache on a regular file opened");
        };
        let e = WorkerError::BinaryCache(e);
        let text = cause_once(&e, "Not a directory (os error 20)");
        assert!(text.contains(BINARY_CACHE_DIR), "{text}");
        assert!(text.ends_with("--work-dir (setting worker.dir)"), "{text}");
    }

    #[test]
    fn host_and_setting_errors_print_their_cause_once() {
        let Err(cause) = WorkerId::generate(0, "a/b", 1) else {
            panic!("a host with a slash named a worker");
        };
        let reason = cause.to_string();
        let e = WorkerError::Host {
            host: "a/b".into(),
            cause,
        };
        let text = cause_once(&e, &reason);
        assert!(text.contains("--advertise-address"), "{text}");

        let e = WorkerError::Setting {
            key: "worker.retained_executors",
            problem: SettingProblem::TooLarge { value: 7, max: 5 },
        };
        assert_eq!(
            cause_once(&e, "7 is larger than 5"),
            "setting worker.retained_executors: 7 is larger than 5"
        );
    }
}
