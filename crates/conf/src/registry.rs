//! The registry of every setting flint reads: its key, type (with the unit a bare
//! number is read in), default, one line of doc and the components that read it; and
//! of the `FLINT_*` environment variables that are not settings (`FLINT_HOME`, the
//! variables flint hands its own children, test hooks).
//!
//! Everything that checks or documents settings works from this table: validation of
//! `--conf`, the TOML file and the environment ([`crate::load`]), `flint conf`,
//! `docs/configuration.md` and `conf/flint.toml.template`. A test walks the source tree
//! for keys passed to the getters and fails when one is missing here.
//!
//! Keys under [`USER_PREFIX`] (`app.`) that are not registered belong to the user:
//! they pass through unchecked.

use std::fmt;

use crate::{SizeUnit, TimeUnit};

/// Keys under this prefix that are not registered are the user's own and pass through.
pub const USER_PREFIX: &str = "app.";

/// What a setting's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A duration such as `500ms`, `60s`, `2m`; a bare number is in the given unit.
    Duration(TimeUnit),
    /// A byte size such as `512m`, `1.5g`; a bare number is in the given unit.
    Size(SizeUnit),
    /// `true` or `false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    Bool,
    /// A whole number between `min` and `max` (inclusive).
    Integer {
        /// Smallest value accepted.
        min: i64,
        /// Largest value accepted.
        max: i64,
    },
    /// Free text.
    String,
    /// A comma-separated list.
    List,
    /// A file or directory path.
    Path,
}

/// A component of flint that reads settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// The RPC environment (`flint-rpc`), in every process.
    Rpc,
    /// The master daemon.
    Master,
    /// The worker daemon.
    Worker,
    /// The application client (drivers).
    Client,
    /// The daemons' HTTP UIs.
    Ui,
    /// The shared daemon layer (binding, advertised address).
    Daemon,
    /// The `flint` command itself (flags with a setting behind them).
    Cli,
    /// The launcher library (`flint-launcher`), in the program that starts applications.
    Launcher,
}

/// A setting's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// This value, as text in the setting's own syntax.
    Value(&'static str),
    /// Unset; the text says what happens then (`"every CPU"`, `"network.timeout"`).
    Unset(&'static str),
}

/// One registered setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The dotted key, e.g. `rpc.ask_timeout`.
    pub key: &'static str,
    /// What its value is.
    pub kind: Kind,
    /// Its default.
    pub default: DefaultValue,
    /// One line of documentation.
    pub doc: &'static str,
    /// The components that read it.
    pub readers: &'static [Component],
}

/// A family of settings: every key under `prefix` (`executor.env.PATH`), the rest
/// of the key naming what it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixSetting {
    /// The prefix, ending in a dot, e.g. `executor.env.`.
    pub prefix: &'static str,
    /// What the rest of the key names (for documentation), e.g. `NAME`.
    pub placeholder: &'static str,
    /// What each value is.
    pub kind: Kind,
    /// One line of documentation.
    pub doc: &'static str,
    /// The components that read it.
    pub readers: &'static [Component],
}

/// Families of settings under a prefix.
pub static PREFIXES: &[PrefixSetting] = &[PrefixSetting {
    prefix: "executor.env.",
    placeholder: "NAME",
    kind: Kind::String,
    doc: "Sets the environment variable NAME of every executor of the application (Spark's spark.executorEnv.NAME).",
    readers: &[Component::Client],
}];

/// The family `key` belongs to: under its prefix, with something after it.
pub fn prefix_setting(key: &str) -> Option<&'static PrefixSetting> {
    PREFIXES.iter().find(|p| {
        key.strip_prefix(p.prefix)
            .is_some_and(|rest| !rest.is_empty())
    })
}

/// A `FLINT_*` environment variable that is not the environment form of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable's name.
    pub name: &'static str,
    /// What it is for.
    pub doc: &'static str,
    /// Whether only tests and benchmarks use it.
    pub test_only: bool,
}

const U16: i64 = u16::MAX as i64;
const U32: i64 = u32::MAX as i64;
/// Any count from 0.
const COUNT: Kind = Kind::Integer { min: 0, max: U32 };
/// Any count from 1.
const POSITIVE: Kind = Kind::Integer { min: 1, max: U32 };
const PORT: Kind = Kind::Integer { min: 0, max: U16 };
const SECS: Kind = Kind::Duration(TimeUnit::Seconds);
const BYTES: Kind = Kind::Size(SizeUnit::Bytes);

use Component::{Cli, Client, Daemon, Launcher, Master, Rpc, Ui, Worker};
use DefaultValue::{Unset, Value};

macro_rules! settings {
    ($( $key:literal, $kind:expr, $default:expr, [$($reader:ident),+], $doc:literal; )*) => {
        /// Every setting flint reads, grouped by the first part of the key.
        pub static SETTINGS: &[Setting] = &[
            $( Setting { key: $key, kind: $kind, default: $default, doc: $doc, readers: &[$($reader),+] }, )*
        ];
    };
}

settings! {
    // --- RPC ---
    "network.timeout", SECS, Value("120s"), [Rpc],
        "Default deadline of asks, lookups, connects and frame bodies that set none of their own.";
    "rpc.ask_timeout", SECS, Unset("network.timeout"), [Rpc, Worker],
        "Deadline of an ask; the worker also paces its executor state report retries by it.";
    "rpc.lookup_timeout", SECS, Unset("network.timeout"), [Rpc],
        "Deadline of an endpoint lookup.";
    "rpc.connect_timeout", SECS, Unset("network.timeout"), [Rpc],
        "Deadline for opening a connection: TCP, TLS and the handshake.";
    "rpc.handshake_timeout", SECS, Value("30s"), [Rpc],
        "How long an accepted connection may take to finish its handshake.";
    "rpc.frame_timeout", SECS, Unset("network.timeout"), [Rpc],
        "Once a frame has started arriving, its body must arrive within this.";
    "rpc.shutdown_drain_timeout", SECS, Value("3s"), [Rpc],
        "How long shutdown lets each connection write the messages already queued on it before closing it; 0 drops them.";
    "rpc.message.max_size", Kind::Size(SizeUnit::Mebibytes), Value("128m"), [Rpc],
        "Largest frame accepted or sent (1k to 2047m).";
    "rpc.encryption.enabled", Kind::Bool, Value("true"), [Rpc],
        "Seal every frame after the handshake (AES-256-GCM) when a secret is used and TLS is not.";
    "rpc.connection.max_queued_bytes", BYTES, Value("32m"), [Rpc],
        "Bytes that may wait in one connection's outbound queue; past it senders get Full and a peer that does not read is cut off.";
    "rpc.endpoint.max_queued_bytes", BYTES, Value("64m"), [Rpc],
        "Bytes of messages that may wait in one endpoint's inbox; past it asks fail Busy and sends are dropped.";
    "rpc.max_partial_frame_bytes", BYTES, Value("1g"), [Rpc],
        "Bytes held in partially received frames across all connections.";
    "rpc.max_connections", POSITIVE, Value("16384"), [Rpc],
        "Established RPC connections accepted at once (lowered to leave 256 file descriptors in reserve); past it new ones are refused at accept.";
    "rpc.max_pending_handshakes", POSITIVE, Value("256"), [Rpc],
        "Connections that may be mid-handshake at once; a newcomer evicts the oldest of the fullest address.";
    "rpc.max_pending_handshakes_per_address", POSITIVE, Value("16"), [Rpc],
        "Connections that may be mid-handshake at once from one source address.";
    "rpc.stream.chunk_size", BYTES, Value("256k"), [Rpc],
        "Bytes per chunk of a bulk stream (at least 4k, at most half of rpc.message.max_size).";
    "rpc.stream.window", POSITIVE, Value("8"), [Rpc],
        "Chunks a stream's sender may have unacknowledged.";
    "rpc.tls.enabled", Kind::Bool, Value("false"), [Rpc],
        "Mutual TLS on every connection, from rpc.tls.cert, rpc.tls.key and rpc.tls.ca.";
    "rpc.tls.cert", Kind::Path, Unset("none; required with rpc.tls.enabled"), [Rpc],
        "This node's certificate chain (PEM).";
    "rpc.tls.key", Kind::Path, Unset("none; required with rpc.tls.enabled"), [Rpc],
        "This node's private key (PEM).";
    "rpc.tls.ca", Kind::Path, Unset("none; required with rpc.tls.enabled"), [Rpc],
        "CA certificate(s) that peers' certificates must chain to (PEM).";
    // --- authentication ---
    "auth.enabled", Kind::Bool, Value("true"), [Rpc],
        "Authenticate every RPC connection with the cluster secret; false runs open (anyone who reaches the ports can run commands).";
    "auth.secret", Kind::String, Unset("auth.secret_file, else $FLINT_HOME/secret"), [Rpc],
        "The cluster secret itself; prefer auth.secret_file (a --conf value shows in ps and warns).";
    "auth.secret_file", Kind::Path, Unset("$FLINT_HOME/secret"), [Rpc],
        "File holding the cluster secret; must be mode 0600 or stricter.";
    // --- master ---
    "worker.timeout", SECS, Value("60s"), [Master, Worker],
        "A worker silent this long is marked DEAD; workers heartbeat every quarter of it.";
    "deploy.dead_worker_persistence", COUNT, Value("15"), [Master],
        "A DEAD worker stays listed until (this + 1) x worker.timeout after its last heartbeat.";
    "deploy.recovery_timeout", SECS, Unset("worker.timeout"), [Master],
        "How long a new leader waits for recovered workers and applications.";
    "deploy.retained_applications", COUNT, Value("200"), [Master],
        "Completed applications kept for display.";
    "deploy.retained_drivers", COUNT, Value("200"), [Master],
        "Completed drivers kept for display.";
    "master.max_driver_watches", COUNT, Value("1024"), [Master],
        "Most driver watches (flint submit following its driver by push) the master keeps at once; past it a watch is refused and that submit polls.";
    "deploy.max_executor_retries", Kind::Integer { min: i64::MIN, max: i64::MAX }, Value("10"), [Master],
        "Abnormal executor exits in a row after which an application with no RUNNING executor fails; negative: never.";
    "deploy.executor_stable_time", SECS, Value("10s"), [Master],
        "How long an executor must stay RUNNING before it clears its application's failure count.";
    "deploy.max_failures_per_worker", POSITIVE, Value("3"), [Master],
        "Launch failures on one worker after which the master stops placing an app's executors there.";
    "deploy.spread_out", Kind::Bool, Value("true"), [Master],
        "Spread an application's executors over the workers (true) or pack them onto few.";
    "deploy.spread_out_drivers", Kind::Bool, Value("true"), [Master],
        "Place drivers round-robin over shuffled workers (true) or first fit.";
    "deploy.worker_selection_policy", Kind::String, Value("CORES_FREE_DESC"), [Master],
        "Order of usable workers for placement: CORES_FREE_DESC, CORES_FREE_ASC, MEMORY_FREE_DESC, MEMORY_FREE_ASC or WORKER_ID.";
    "deploy.default_cores", POSITIVE, Unset("unlimited"), [Master],
        "Cores for an application that sets no maximum.";
    "deploy.max_drivers", COUNT, Unset("unlimited"), [Master],
        "Most cluster-mode drivers running at once.";
    "deploy.app_number_modulo", Kind::Integer { min: 1000, max: U32 }, Unset("never wraps"), [Master],
        "Wrap the counter in application ids at this number (at least 1000).";
    // --- worker ---
    "worker.initial_registration_retries", COUNT, Value("6"), [Worker],
        "Registration retries at the short interval before the long one.";
    "worker.max_registration_retries", POSITIVE, Value("16"), [Worker],
        "Registration retries in all before the worker gives up and exits.";
    "worker.initial_registration_retry_interval", SECS, Value("10s"), [Worker],
        "The short registration retry interval, before a per-process random factor in [0.5, 1.5).";
    "worker.prolonged_registration_retry_interval", SECS, Value("60s"), [Worker],
        "The long registration retry interval, before the random factor.";
    "worker.reregistration_retry_interval", Kind::Duration(TimeUnit::Millis), Value("50ms"), [Worker],
        "After losing its master the worker re-registers at once, then after this (random factor applied), doubling below the short interval.";
    "worker.binary_cache.max_size", BYTES, Value("4g"), [Worker],
        "Most bytes of fetched application binaries kept in the work dir's binaries/ directory; least recently used go first (never one in use), and the cleanup removes those unused for worker.cleanup.app_data_ttl.";
    "worker.prefer_configured_master_address", Kind::Bool, Value("false"), [Worker],
        "Re-register at the configured master address rather than the one the master advertises.";
    "worker.cleanup.enabled", Kind::Bool, Value("true"), [Worker],
        "Periodically remove old application directories from the work dir.";
    "worker.cleanup.interval", SECS, Value("30m"), [Worker],
        "How often the work dir is cleaned up.";
    "worker.cleanup.app_data_ttl", SECS, Value("7d"), [Worker],
        "A stopped application's directory goes when nothing in it is newer than this.";
    "worker.ui.retained_executors", COUNT, Value("1000"), [Worker],
        "Finished executors kept for display.";
    "worker.ui.retained_drivers", COUNT, Value("1000"), [Worker],
        "Finished drivers kept for display.";
    "worker.executor_kill_grace", SECS, Value("10s"), [Worker],
        "Time between SIGTERM and SIGKILL when killing an executor.";
    "worker.driver_terminate_timeout", Kind::Duration(TimeUnit::Millis), Value("10s"), [Worker],
        "Time between SIGTERM and SIGKILL when killing a driver.";
    "worker.driver_relaunch_initial_backoff", SECS, Value("1s"), [Worker],
        "First wait before relaunching a supervised driver; doubles on each failure.";
    "worker.driver_relaunch_stable_run", SECS, Value("5s"), [Worker],
        "A supervised driver that ran longer than this starts over at the initial back-off.";
    "worker.log.max_size", BYTES, Value("128m"), [Worker],
        "An executor's or driver's stdout/stderr file past this size is renamed .1 (two rolled files kept) and a new one begun.";
    "worker.executor_state_sync.max_attempts", POSITIVE, Value("5"), [Worker],
        "Tries to report an executor state change to the master before the worker exits.";
    "decommission.enabled", Kind::Bool, Value("false"), [Worker],
        "Honour decommission requests.";
    // --- the daemons' command-line flags ---
    "master.host", Kind::String, Value("127.0.0.1"), [Cli],
        "Host `flint master` binds and advertises (--host); other machines need a name they can resolve.";
    "master.port", PORT, Value("7077"), [Cli],
        "RPC port of `flint master` and `flint local` (--port).";
    "master.webui_port", PORT, Value("8080"), [Cli],
        "Web UI and JSON status port of `flint master` and `flint local` (--webui-port).";
    "worker.host", Kind::String, Value("127.0.0.1"), [Cli],
        "Host `flint worker` binds and advertises (--host).";
    "worker.port", PORT, Value("0"), [Cli],
        "RPC port of `flint worker`; 0 picks a free one (--port).";
    "worker.webui_port", PORT, Value("8081"), [Cli],
        "Web UI and JSON status port of `flint worker` (--webui-port).";
    "worker.cores", POSITIVE, Unset("every CPU"), [Cli],
        "Cores `flint worker` offers to executors (--cores).";
    "worker.memory", Kind::Size(SizeUnit::Mebibytes), Unset("total memory less 1g, at least 1g"), [Cli],
        "Memory `flint worker` offers to executors (--memory).";
    "worker.dir", Kind::Path, Unset("$FLINT_HOME/work (~/.flint/work)"), [Cli],
        "Directory for the executors' work dirs and logs (--work-dir); `flint local` puts one subdirectory per worker in it.";
    // --- shared daemon layer and HTTP UIs ---
    "network.advertise_address", Kind::String, Unset("the bind host; for 0.0.0.0 a routable address"), [Daemon],
        "Host name or address a daemon tells peers to reach it at (RPC address, web UI URL), whatever it binds.";
    "ui.host", Kind::String, Value("127.0.0.1"), [Master, Worker, Client],
        "Address the web UIs bind; loopback unless configured otherwise.";
    "ui.max_connections", POSITIVE, Value("64"), [Ui],
        "Web UI connections open at once; past it new ones get 503 (never more than a quarter of the open-file limit).";
    "ui.idle_timeout", SECS, Value("30s"), [Ui],
        "A web UI connection that moves no byte this long while no request is handled is closed.";
    "ui.header_read_timeout", SECS, Value("10s"), [Ui],
        "A web UI request's head must be complete this long after its first byte.";
    "ui.max_header_bytes", BYTES, Value("64k"), [Ui],
        "Most bytes of a web UI request head, buffered per connection (at least 8k).";
    "ui.max_body_bytes", BYTES, Value("64k"), [Ui],
        "Most bytes of a web UI request body.";
    // --- application client ---
    "client.registration.timeout", SECS, Value("20s"), [Client],
        "How long one registration round waits for a master before the next round.";
    "client.registration.retries", POSITIVE, Value("3"), [Client],
        "Registration rounds (each to every master) before the client gives up.";
    // --- the flint library: drivers and executors ---
    "executor.cores", POSITIVE, Unset("every core its worker offers; local: the N of local[N]"), [Client],
        "Cores of each executor of an application (its task threads).";
    "executor.memory", Kind::Size(SizeUnit::Mebibytes), Value("1g"), [Client],
        "Memory of each executor; its cache of partitions (counted in serialized bytes, least recently used evicted) stays within it.";
    "cores.max", POSITIVE, Unset("deploy.default_cores"), [Client],
        "Most cores an application takes on a cluster, over all its executors.";
    "default.parallelism", POSITIVE, Unset("local: the N of local[N]; cluster: all executor cores, at least 2"), [Client],
        "Partitions of parallelize and range when given 0.";
    "task.max_failures", POSITIVE, Value("4"), [Client],
        "Failed attempts of one partition after which its job fails (local[N,F] sets it for local masters).";
    "stage.max_consecutive_attempts", POSITIVE, Value("4"), [Client],
        "Fetch-failed attempts of one stage in a row (its map output lost each time) after which its job fails.";
    "executor.heartbeat_interval", SECS, Value("10s"), [Client],
        "How often executors report to the driver (with accumulator updates).";
    "driver.max_result_size", BYTES, Value("1g"), [Client],
        "Total serialized results of one job the driver accepts; past it the job fails (0: no limit).";
    "locality.wait", SECS, Value("3s"), [Client],
        "How long a task waits for the executor caching its input before it runs elsewhere.";
    "starvation.timeout", SECS, Value("15s"), [Client],
        "How often the driver warns that its first job has not got any resources.";
    "scheduler.min_registered_resources_percent", Kind::Integer { min: 0, max: 100 }, Value("0"), [Client],
        "Percent of the expected executor cores (cores.max; on local-cluster all its cores) that must register before the context is returned (Spark's minRegisteredResourcesRatio × 100).";
    "scheduler.max_registered_resources_waiting_time", SECS, Value("30s"), [Client],
        "Longest the context waits for scheduler.min_registered_resources_percent before it starts anyway.";
    // --- the flint library: the driver UI and console progress ---
    "ui.enabled", Kind::Bool, Value("true"), [Client],
        "Serve the driver's UI (JSON of jobs, stages and tasks under /api/v1/applications).";
    "ui.port", PORT, Value("4040"), [Client],
        "First port of the driver's UI; when taken the next ones are tried (0 picks a free one).";
    "ui.port_max_retries", COUNT, Value("16"), [Client],
        "Ports above ui.port the driver UI tries when ui.port is taken.";
    "ui.retained_jobs", POSITIVE, Value("1000"), [Client],
        "Jobs the driver UI remembers; the oldest finished ones (and their stages) are dropped.";
    "ui.retained_tasks", POSITIVE, Value("100000"), [Client],
        "Task attempts the driver UI remembers per stage; the oldest finished ones are dropped (counts stay exact).";
    "ui.show_console_progress", Kind::Bool, Value("true"), [Client],
        "Draw the progress bar of running stages on the driver's stderr when it is a terminal.";
    "ui.advertised_url", Kind::String, Unset("the driver UI's own http://host:port"), [Client],
        "The driver UI URL the master's entry for the application shows.";
    // --- shuffle (flint-shuffle: map output files, spill, block server, fetch) ---
    "local.dir", Kind::List, Unset("the system temp dir"), [Client, Worker],
        "Comma-separated directories for shuffle and spill files (one per disk spreads the load); with shuffle.service.enabled a worker hands its own to its executors.";
    "shuffle.compress", Kind::Bool, Value("true"), [Client],
        "Compress shuffle blocks and spill runs (LZ4).";
    "shuffle.memory_percent", Kind::Integer { min: 1, max: 100 }, Value("60"), [Client],
        "Percent of executor.memory that the shuffle writers and readers of an executor keep in memory, shared evenly by its task slots; past a task's share it spills sorted runs to local.dir.";
    "shuffle.spill.memory_budget", BYTES, Unset("shuffle.memory_percent of executor.memory divided by the executor's cores"), [Client],
        "Bytes one task's shuffle writer or reduce-side aggregator keeps in memory before it spills (overrides shuffle.memory_percent).";
    "shuffle.max_bytes_in_flight", Kind::Size(SizeUnit::Mebibytes), Value("48m"), [Client],
        "Most bytes of shuffle blocks one reduce task has requested or holds unconsumed (Spark's reducer.maxSizeInFlight).";
    "shuffle.file_buffer", BYTES, Value("32k"), [Client],
        "Buffer of each shuffle or spill file being written or read.";
    "shuffle.sync", Kind::Bool, Value("false"), [Client],
        "fsync map output files and their directory before committing them (survives power loss, not only crashes).";
    "shuffle.service.enabled", Kind::Bool, Value("false"), [Client, Worker],
        "Serve map output from the worker's shuffle service so it survives its executor's exit; the worker then hands executors its local.dir and removes an application's shuffle files when it ends.";
    // --- submission (flint submit) ---
    "driver.app_name", Kind::String, Unset("the executable's file name"), [Client],
        "The application's name when the program does not name it (Context::builder().app_name wins); flint submit --name sets it.";
    "master.binary_store.max_size", BYTES, Value("4g"), [Master],
        "Most bytes of driver binaries uploaded by cluster-mode flint submit that the master keeps (least recently used first, never one a live driver references).";
    // --- the master's REST submission server ---
    "rest.enabled", Kind::Bool, Value("false"), [Master],
        "Serve the REST submission API (Spark's /v1/submissions/create, status, kill, killall, readyz, plus upload); every request needs a bearer token from `flint rest-token`.";
    "rest.host", Kind::String, Value("127.0.0.1"), [Master],
        "Address the REST submission server binds; loopback unless configured otherwise.";
    "rest.port", PORT, Value("6066"), [Master],
        "Port of the REST submission server (0 picks a free one).";
    "rest.allow_unauthenticated", Kind::Bool, Value("false"), [Master],
        "Allow rest.enabled without a cluster secret (authentication off, or TLS only): the REST port is then open to anyone who reaches it.";
    "rest.max_request_bytes", BYTES, Value("1m"), [Master],
        "Most bytes of a REST JSON request body (uploads are bounded by master.binary_store.max_size instead; at least 1k).";
    // --- launcher (flint-launcher) ---
    "launcher.child_connection_timeout", Kind::Duration(TimeUnit::Millis), Value("10s"), [Launcher],
        "How long a launched application has to connect to the launcher and say hello; after it the handle's key is withdrawn and the handle ends LOST.";
}

/// `FLINT_*` variables that are not settings but that flint (or its tests) knows.
pub static ENV_VARS: &[EnvVar] = &[
    EnvVar {
        name: "FLINT_HOME",
        doc: "The flint home (default ~/.flint): the default cluster secret, start-cluster's pid files (run/) and logs (logs/), the workers' work dirs (work/).",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_CONF_DIR",
        doc: "Directory of flint.toml and workers (default ./conf).",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_MASTER",
        doc: "The master URL(s) for `flint worker` and `flint status`.",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_LOG",
        doc: "Log filter, e.g. info or flint_rpc=debug (tracing's EnvFilter syntax).",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_LOG_DIR",
        doc: "Where `flint start-cluster` writes the daemons' logs (default $FLINT_HOME/logs; --log-dir wins).",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_PID_DIR",
        doc: "Where `flint start-cluster` writes the daemons' pid files (default $FLINT_HOME/run; --pid-dir wins).",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_SSH_OPTS",
        doc: "ssh options of `flint start-cluster` and `stop-cluster` (default -o StrictHostKeyChecking=accept-new).",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_EXECUTOR_MEMORY_MB",
        doc: "Set by a worker for an executor: the memory it was given, in MiB.",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_EXECUTOR_DRIVER_URL",
        doc: "Set by a worker for an executor: the driver it serves; get_or_create turns the process into that executor.",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_SHUFFLE_SERVICE_ADDRESS",
        doc: "Set by a worker with shuffle.service.enabled for an executor: the flint://host:port of the worker's shuffle service, which serves the executor's map output.",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_DRIVER_MEMORY_MB",
        doc: "Set by a worker for a driver: the memory it was given, in MiB.",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_SUPERVISOR",
        doc: "Path of the flint-supervise binary a worker runs each child under (default: next to flint).",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_LAUNCHER_PORT",
        doc: "Set by a launcher for the application it starts: the port of its launcher server on 127.0.0.1.",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_LAUNCHER_KEY_ID",
        doc: "Set by a launcher for the application it starts: the key id its connection proves.",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_LAUNCHER_SECRET",
        doc: "Set by a launcher for the application it starts: the single-use secret of that key (never on a command line).",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_CLI",
        doc: "The flint command a launcher runs (default: flint on PATH).",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_DEMO_FILE",
        doc: "Set by `flint demo` for its peer: the file to fetch.",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_DEMO_DIR",
        doc: "Set by `flint demo` for its peer: where to put the fetched file.",
        test_only: false,
    },
    EnvVar {
        name: "FLINT_RPC_TEST_PEER",
        doc: "RPC tests: the role of a peer process.",
        test_only: true,
    },
    EnvVar {
        name: "FLINT_RPC_TEST_ROLE",
        doc: "RPC tests: the role of a peer process.",
        test_only: true,
    },
    EnvVar {
        name: "FLINT_RPC_TEST_CONF",
        doc: "RPC tests: a peer process's settings.",
        test_only: true,
    },
    EnvVar {
        name: "FLINT_RUNNER_TEST_MINI_WORKER",
        doc: "Worker runner tests: run as a miniature worker.",
        test_only: true,
    },
    EnvVar {
        name: "FLINT_TEST_VAR",
        doc: "Worker runner tests: a variable handed to a child.",
        test_only: true,
    },
    EnvVar {
        name: "FLINT_BENCH_RUSTC",
        doc: "Benchmarks: the compiler version recorded with results.",
        test_only: true,
    },
];

/// The registered setting `key`, if any.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The known non-setting variable `name`, if any.
pub fn env_var(name: &str) -> Option<&'static EnvVar> {
    ENV_VARS.iter().find(|v| v.name == name)
}

/// The setting whose environment form is `name` (`FLINT_RPC_ASK_TIMEOUT` →
/// `rpc.ask_timeout`), if any.
pub fn setting_for_env(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env_name() == name)
}

/// Whether `name` is a test hook (`FLINT_TEST_*` or `FLINT_<AREA>_TEST_*`, such as
/// `FLINT_RPC_TEST_PEER`): known without being listed, never warned about.
pub fn is_test_hook(name: &str) -> bool {
    name.strip_prefix("FLINT_")
        .is_some_and(|rest| rest.starts_with("TEST_") || rest.contains("_TEST_"))
}

/// Keys that were renamed, old to new: given the old one, flint points at the new.
pub static RENAMED: &[(&str, &str)] = &[
    ("app.registration.timeout", "client.registration.timeout"),
    ("app.registration.retries", "client.registration.retries"),
];

/// The new name of a renamed key.
pub fn renamed(key: &str) -> Option<&'static str> {
    RENAMED
        .iter()
        .find(|(old, _)| *old == key)
        .map(|(_, new)| *new)
}

/// Whether `key` is the user's own: under [`USER_PREFIX`] and not registered.
pub fn is_user_key(key: &str) -> bool {
    key.starts_with(USER_PREFIX) && setting(key).is_none()
}

impl Setting {
    /// The `FLINT_*` environment variable that sets it: `FLINT_` and the key in upper
    /// case with dots as underscores.
    pub fn env_name(&self) -> String {
        env_name(self.key)
    }

    /// Checks `value` against the setting's type; the error says what was expected.
    pub fn check(&self, value: &str) -> Result<(), crate::ValueError> {
        let v = value.trim();
        match self.kind {
            Kind::Duration(unit) => crate::parse_duration(v, unit).map(drop),
            Kind::Size(unit) => crate::parse_size(v, unit).map(drop),
            Kind::Bool => crate::parse_bool(v)
                .map(drop)
                .ok_or(crate::ValueError::NotABool),
            Kind::Integer { min, max } => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(()),
                _ => Err(crate::ValueError::OutOfRange(self.kind.expected())),
            },
            Kind::String | Kind::List => Ok(()),
            Kind::Path if v.is_empty() => Err(crate::ValueError::EmptyPath),
            Kind::Path => Ok(()),
        }
    }
}

/// The environment form of `key`.
pub fn env_name(key: &str) -> String {
    format!("FLINT_{}", key.replace('.', "_").to_ascii_uppercase())
}

impl Kind {
    /// A short name for tables: `duration`, `size`, `bool`, `integer`, …
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Duration(_) => "duration",
            Kind::Size(_) => "size",
            Kind::Bool => "bool",
            Kind::Integer { .. } => "integer",
            Kind::String => "string",
            Kind::List => "list",
            Kind::Path => "path",
        }
    }

    /// The unit a bare number is read in, for durations and sizes.
    pub fn bare_unit(&self) -> Option<&'static str> {
        match self {
            Kind::Duration(TimeUnit::Millis) => Some("ms"),
            Kind::Duration(TimeUnit::Seconds) => Some("s"),
            Kind::Size(SizeUnit::Bytes) => Some("bytes"),
            Kind::Size(SizeUnit::Mebibytes) => Some("MiB"),
            _ => None,
        }
    }

    /// What a valid value looks like, for error messages and docs.
    pub fn expected(&self) -> String {
        match *self {
            Kind::Duration(_) => format!(
                "a duration such as 500ms, 60s, 2m, 1h (a bare number is {})",
                self.bare_unit().unwrap_or("s")
            ),
            Kind::Size(_) => format!(
                "a size such as 512m, 1.5g (a bare number is {})",
                self.bare_unit().unwrap_or("bytes")
            ),
            Kind::Bool => "true or false".to_string(),
            Kind::Integer { min, max } if min == i64::MIN && max == i64::MAX => {
                "a whole number".to_string()
            }
            Kind::Integer { min, max } if max == i64::MAX || max == U32 => {
                format!("a whole number, at least {min}")
            }
            Kind::Integer { min, max } => format!("a whole number from {min} to {max}"),
            Kind::String => "text".to_string(),
            Kind::List => "a comma-separated list".to_string(),
            Kind::Path => "a path".to_string(),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bare_unit() {
            Some(u) => write!(f, "{} (bare: {u})", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

impl Component {
    /// Its name in tables: `rpc`, `master`, …
    pub fn name(&self) -> &'static str {
        match self {
            Component::Rpc => "rpc",
            Component::Master => "master",
            Component::Worker => "worker",
            Component::Client => "client",
            Component::Ui => "ui",
            Component::Daemon => "daemon",
            Component::Cli => "cli",
            Component::Launcher => "launcher",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl DefaultValue {
    /// The default as shown in tables: the value, or `unset (…)`.
    pub fn describe(&self) -> String {
        match self {
            DefaultValue::Value(v) => (*v).to_string(),
            DefaultValue::Unset(why) => format!("unset ({why})"),
        }
    }

    /// The value, when there is one.
    pub fn value(&self) -> Option<&'static str> {
        match self {
            DefaultValue::Value(v) => Some(v),
            DefaultValue::Unset(_) => None,
        }
    }
}

/// The registered key nearest to `key` by edit distance, when it is close enough to be
/// a likely typo. A key without a dot is also compared with the last part of each key
/// (`spread_out` → `deploy.spread_out`).
pub fn nearest_key(key: &str) -> Option<&'static str> {
    let mut candidates: Vec<(&str, &'static str)> =
        SETTINGS.iter().map(|s| (s.key, s.key)).collect();
    if !key.contains('.') {
        candidates.extend(
            SETTINGS
                .iter()
                .filter_map(|s| s.key.rsplit('.').next().map(|last| (last, s.key))),
        );
    }
    nearest(key, candidates.iter().map(|(text, _)| *text)).map(|i| candidates[i].1)
}

/// The registered setting's environment form or known variable nearest to `name`,
/// when it is close enough to be a likely typo; with a setting, its key comes along.
pub fn nearest_env(name: &str) -> Option<(String, Option<&'static str>)> {
    let candidates: Vec<(String, Option<&'static str>)> = SETTINGS
        .iter()
        .map(|s| (s.env_name(), Some(s.key)))
        .chain(
            ENV_VARS
                .iter()
                .filter(|v| !v.test_only)
                .map(|v| (v.name.to_string(), None)),
        )
        .collect();
    nearest(name, candidates.iter().map(|(text, _)| text.as_str())).map(|i| candidates[i].clone())
}

/// The index of the candidate nearest `wanted`, if within the typo threshold: two
/// edits, or a fifth of the length for long names. Ties go to the first.
fn nearest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<usize> {
    let limit = (wanted.chars().count() / 5).max(2);
    let wanted = wanted.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|text| edit_distance(&wanted, &text.to_ascii_lowercase()))
        .enumerate()
        .filter(|(_, d)| *d <= limit)
        .min_by_key(|(i, d)| (*d, *i))
        .map(|(i, _)| i)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and
/// transpositions of neighbours each cost 1.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2 = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_env_names_are_unique_and_well_formed() {
        let mut keys = std::collections::BTreeSet::new();
        let mut envs = std::collections::BTreeSet::new();
        for s in SETTINGS {
            assert!(keys.insert(s.key), "{} registered twice", s.key);
            assert!(envs.insert(s.env_name()), "{} clashes", s.env_name());
            assert!(
                s.key.contains('.')
                    && s.key.chars().all(|c| c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || c == '.'
                        || c == '_'),
                "{}",
                s.key
            );
            assert!(!s.doc.is_empty() && !s.doc.contains('\n'), "{}", s.key);
            if let Some(v) = s.default.value() {
                assert_eq!(s.check(v), Ok(()), "default of {}", s.key);
            }
        }
        for v in ENV_VARS {
            assert!(setting_for_env(v.name).is_none(), "{} is a setting", v.name);
            assert!(envs.insert(v.name.to_string()), "{} twice", v.name);
        }
    }

    #[test]
    fn typos_find_the_key() {
        assert_eq!(nearest_key("deploy.spreadout"), Some("deploy.spread_out"));
        assert_eq!(nearest_key("worker.timout"), Some("worker.timeout"));
        assert_eq!(nearest_key("master.prot"), Some("master.port"));
        assert_eq!(nearest_key("spread_out"), Some("deploy.spread_out"));
        assert_eq!(nearest_key("foo"), None);
        assert_eq!(
            nearest_env("FLINT_DEPLOY_SPREADOUT"),
            Some((
                "FLINT_DEPLOY_SPREAD_OUT".to_string(),
                Some("deploy.spread_out")
            ))
        );
        assert_eq!(nearest_env("FLINT_HOEM"), Some(("FLINT_HOME".into(), None)));
        assert_eq!(nearest_env("FLINT_COMPLETELY_DIFFERENT_THING"), None);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn values_are_checked_by_type() {
        let port = setting("master.port").unwrap();
        assert!(port.check("7077").is_ok());
        let e = port.check("abc").unwrap_err();
        assert!(matches!(e, crate::ValueError::OutOfRange(_)), "{e:?}");
        assert!(e.to_string().contains("from 0 to 65535"), "{e}");
        assert!(port.check("70000").is_err());
        assert!(setting("deploy.spread_out")
            .unwrap()
            .check("maybe")
            .is_err());
        assert!(setting("worker.memory").unwrap().check("1.5g").is_ok());
        assert!(setting("worker.timeout").unwrap().check("soon").is_err());
        assert!(setting("deploy.max_executor_retries")
            .unwrap()
            .check("-1")
            .is_ok());
        assert!(is_test_hook("FLINT_DAEMON_TEST_RLIMIT_CHILD"));
        assert!(is_test_hook("FLINT_TEST_VAR"));
        assert!(!is_test_hook("FLINT_TESTING"));
        assert!(is_user_key("app.my.thing"));
        assert!(is_user_key("app.registration.timeout"));
        assert!(!is_user_key("client.registration.timeout"));
        // The user's prefix is theirs alone: no registered key is under it, and a
        // key that moved out of it is pointed at its new name.
        assert!(SETTINGS.iter().all(|s| !s.key.starts_with(USER_PREFIX)));
        assert_eq!(
            renamed("app.registration.retries"),
            Some("client.registration.retries")
        );
        for (_, new) in RENAMED {
            assert!(setting(new).is_some(), "{new}");
        }
        assert!(!is_user_key("deploy.thing"));
    }
}
