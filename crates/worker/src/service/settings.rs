//! The settings the worker daemon reads from a [`Conf`], with Spark's
//! defaults: every timing and limit of [`WorkerConfig`], plus where the web
//! UI binds. The RPC environment reads its own (`flint_rpc::conf::KEYS`);
//! `rpc.ask_timeout` also paces executor state report retries.

use std::path::PathBuf;
use std::time::Duration;

use flint_conf::{Conf, SizeUnit, TimeUnit};

use super::{SettingProblem, WorkerError};
use crate::state::{WorkerConfig, DEFAULT_WORKER_TIMEOUT_MS};

/// `worker.timeout`: how long the master waits for a heartbeat (Spark's
/// `spark.worker.timeout`, 60 s; a bare number is seconds). The worker
/// heartbeats every quarter of it.
pub const WORKER_TIMEOUT: &str = "worker.timeout";
/// `worker.initial_registration_retries`: retries at the short interval
/// (Spark: 6).
pub const INITIAL_REGISTRATION_RETRIES: &str = "worker.initial_registration_retries";
/// `worker.max_registration_retries`: retries in all before the worker gives
/// up and exits (Spark: 16).
pub const MAX_REGISTRATION_RETRIES: &str = "worker.max_registration_retries";
/// `worker.initial_registration_retry_interval`: the short retry interval
/// before the per-process random factor in [0.5, 1.5) is applied (Spark's
/// hard-coded 10 s; a bare number is seconds).
pub const INITIAL_REGISTRATION_RETRY_INTERVAL: &str = "worker.initial_registration_retry_interval";
/// `worker.prolonged_registration_retry_interval`: the long retry interval
/// before the random factor (Spark's hard-coded 60 s; a bare number is
/// seconds).
pub const PROLONGED_REGISTRATION_RETRY_INTERVAL: &str =
    "worker.prolonged_registration_retry_interval";
/// `worker.reregistration_retry_interval`: after losing its master, the
/// worker re-registers at once and then after this interval (random factor
/// applied), doubling while below the short interval (not in Spark; 50 ms; a
/// bare number is milliseconds).
pub const REREGISTRATION_RETRY_INTERVAL: &str = "worker.reregistration_retry_interval";
/// `worker.binary_cache.max_size`: most bytes of fetched binaries kept in
/// `<work dir>/binaries` (4 GiB; a bare number is bytes). See
/// [`binaries`](crate::binaries).
pub const BINARY_CACHE_MAX_SIZE: &str = "worker.binary_cache.max_size";
/// `worker.prefer_configured_master_address`: re-register at the configured
/// master address rather than the one the master advertises (Spark: false).
pub const PREFER_CONFIGURED_MASTER_ADDRESS: &str = "worker.prefer_configured_master_address";
/// `worker.cleanup.enabled`: periodically remove old application directories
/// (Spark 4: true).
pub const CLEANUP_ENABLED: &str = "worker.cleanup.enabled";
/// `worker.cleanup.interval`: how often (Spark: 1800 s; a bare number is
/// seconds).
pub const CLEANUP_INTERVAL: &str = "worker.cleanup.interval";
/// `worker.cleanup.app_data_ttl`: a stopped application's directory goes when
/// nothing in it is newer than this (Spark: 7 days; a bare number is
/// seconds).
pub const APP_DATA_TTL: &str = "worker.cleanup.app_data_ttl";
/// `worker.ui.retained_executors`: finished executors kept for display
/// (Spark: 1000).
pub const RETAINED_EXECUTORS: &str = "worker.ui.retained_executors";
/// `worker.ui.retained_drivers`: finished drivers kept for display (Spark:
/// 1000).
pub const RETAINED_DRIVERS: &str = "worker.ui.retained_drivers";
/// `worker.executor_kill_grace`: time between SIGTERM and SIGKILL when
/// killing an executor (Spark's hard-coded 10 s; a bare number is seconds).
pub const EXECUTOR_KILL_GRACE: &str = "worker.executor_kill_grace";
/// `worker.driver_terminate_timeout`: the same for a driver (Spark's
/// `spark.worker.driverTerminateTimeout`, 10 s; a bare number is
/// milliseconds, as in Spark).
pub const DRIVER_TERMINATE_TIMEOUT: &str = "worker.driver_terminate_timeout";
/// `worker.driver_relaunch_initial_backoff`: first wait before relaunching a
/// supervised driver (Spark's hard-coded 1 s; a bare number is seconds).
pub const DRIVER_RELAUNCH_INITIAL_BACKOFF: &str = "worker.driver_relaunch_initial_backoff";
/// `worker.driver_relaunch_stable_run`: a supervised driver that ran longer
/// than this starts over at the initial back-off (Spark's hard-coded 5 s; a
/// bare number is seconds).
pub const DRIVER_RELAUNCH_STABLE_RUN: &str = "worker.driver_relaunch_stable_run";
/// `worker.log.max_size`: children's stdout/stderr files roll over past this
/// size (Spark's `spark.executor.logs.rolling.maxSize`, off by default there).
pub const LOG_MAX_SIZE: &str = "worker.log.max_size";
/// `worker.executor_state_sync.max_attempts`: tries to report an executor
/// state change before the worker exits (Spark: 5).
pub const EXECUTOR_STATE_SYNC_MAX_ATTEMPTS: &str = "worker.executor_state_sync.max_attempts";
/// `decommission.enabled`: honour decommission requests (Spark: false).
pub const DECOMMISSION_ENABLED: &str = "decommission.enabled";
/// `ui.host`: the address the web UI binds (default 127.0.0.1: loopback
/// unless configured otherwise).
pub const UI_HOST: &str = "ui.host";

/// Every key the worker reads itself, for `FLINT_*` environment mapping and
/// docs.
pub const KEYS: &[&str] = &[
    WORKER_TIMEOUT,
    INITIAL_REGISTRATION_RETRIES,
    MAX_REGISTRATION_RETRIES,
    INITIAL_REGISTRATION_RETRY_INTERVAL,
    PROLONGED_REGISTRATION_RETRY_INTERVAL,
    REREGISTRATION_RETRY_INTERVAL,
    BINARY_CACHE_MAX_SIZE,
    PREFER_CONFIGURED_MASTER_ADDRESS,
    CLEANUP_ENABLED,
    CLEANUP_INTERVAL,
    APP_DATA_TTL,
    RETAINED_EXECUTORS,
    RETAINED_DRIVERS,
    EXECUTOR_KILL_GRACE,
    DRIVER_TERMINATE_TIMEOUT,
    DRIVER_RELAUNCH_INITIAL_BACKOFF,
    DRIVER_RELAUNCH_STABLE_RUN,
    LOG_MAX_SIZE,
    EXECUTOR_STATE_SYNC_MAX_ATTEMPTS,
    DECOMMISSION_ENABLED,
    UI_HOST,
];

/// The web UI's default bind address.
pub const DEFAULT_UI_HOST: &str = "127.0.0.1";

/// Reads the state machine's settings for a worker offering `cores` and
/// `memory_mb` to `master_urls`, failing with the key and the reason when a
/// value is wrong. `ask_timeout` is the RPC environment's `rpc.ask_timeout`.
/// The random seed is left at 0; the caller draws one.
pub fn worker_config(
    conf: &Conf,
    master_urls: Vec<String>,
    cores: u32,
    memory_mb: u64,
    ask_timeout: Duration,
) -> Result<WorkerConfig, WorkerError> {
    let mut c = WorkerConfig::new(master_urls, cores, memory_mb);
    let timeout = ms(
        conf,
        WORKER_TIMEOUT,
        DEFAULT_WORKER_TIMEOUT_MS,
        TimeUnit::Seconds,
    )?;
    c = c.with_worker_timeout_ms(timeout);
    c.initial_registration_retries = u32_setting(
        conf,
        INITIAL_REGISTRATION_RETRIES,
        c.initial_registration_retries,
    )?;
    c.max_registration_retries =
        u32_setting(conf, MAX_REGISTRATION_RETRIES, c.max_registration_retries)?;
    c.initial_registration_retry_interval_ms = ms(
        conf,
        INITIAL_REGISTRATION_RETRY_INTERVAL,
        c.initial_registration_retry_interval_ms,
        TimeUnit::Seconds,
    )?;
    c.prolonged_registration_retry_interval_ms = ms(
        conf,
        PROLONGED_REGISTRATION_RETRY_INTERVAL,
        c.prolonged_registration_retry_interval_ms,
        TimeUnit::Seconds,
    )?;
    c.reregistration_retry_interval_ms = ms(
        conf,
        REREGISTRATION_RETRY_INTERVAL,
        c.reregistration_retry_interval_ms,
        TimeUnit::Millis,
    )?;
    c.prefer_configured_master_address = conf.bool(
        PREFER_CONFIGURED_MASTER_ADDRESS,
        c.prefer_configured_master_address,
    )?;
    c.cleanup_enabled = conf.bool(CLEANUP_ENABLED, c.cleanup_enabled)?;
    c.cleanup_interval_ms = ms(
        conf,
        CLEANUP_INTERVAL,
        c.cleanup_interval_ms,
        TimeUnit::Seconds,
    )?;
    c.app_data_ttl_ms = ms(conf, APP_DATA_TTL, c.app_data_ttl_ms, TimeUnit::Seconds)?;
    c.retained_executors = usize_setting(conf, RETAINED_EXECUTORS, c.retained_executors)?;
    c.retained_drivers = usize_setting(conf, RETAINED_DRIVERS, c.retained_drivers)?;
    c.executor_kill_grace_ms = ms(
        conf,
        EXECUTOR_KILL_GRACE,
        c.executor_kill_grace_ms,
        TimeUnit::Seconds,
    )?;
    c.driver_terminate_timeout_ms = ms(
        conf,
        DRIVER_TERMINATE_TIMEOUT,
        c.driver_terminate_timeout_ms,
        TimeUnit::Millis,
    )?;
    c.driver_relaunch_initial_backoff_ms = ms(
        conf,
        DRIVER_RELAUNCH_INITIAL_BACKOFF,
        c.driver_relaunch_initial_backoff_ms,
        TimeUnit::Seconds,
    )?;
    c.driver_relaunch_stable_run_ms = ms(
        conf,
        DRIVER_RELAUNCH_STABLE_RUN,
        c.driver_relaunch_stable_run_ms,
        TimeUnit::Seconds,
    )?;
    c.executor_state_sync_max_attempts = u32_setting(
        conf,
        EXECUTOR_STATE_SYNC_MAX_ATTEMPTS,
        c.executor_state_sync_max_attempts,
    )?;
    c.ask_timeout_ms = millis(ask_timeout);
    c.decommission_enabled = conf.bool(DECOMMISSION_ENABLED, c.decommission_enabled)?;
    if c.heartbeat_interval_ms == 0 {
        return Err(setting(
            WORKER_TIMEOUT,
            SettingProblem::HeartbeatIntervalZero {
                timeout_ms: timeout,
            },
        ));
    }
    c.validate()?;
    Ok(c)
}

/// The bound of the binary cache (`worker.binary_cache.max_size`), in bytes;
/// at least 1.
pub fn binary_cache_max_size(conf: &Conf) -> Result<u64, WorkerError> {
    let v = conf.bytes(
        BINARY_CACHE_MAX_SIZE,
        crate::binaries::DEFAULT_MAX_SIZE,
        SizeUnit::Bytes,
    )?;
    if v == 0 {
        return Err(setting(
            BINARY_CACHE_MAX_SIZE,
            SettingProblem::NoRoomForBinaries,
        ));
    }
    Ok(v)
}

/// The size at which children's logs roll (`worker.log.max_size`), in bytes; at
/// least 1.
pub fn log_max_size(conf: &Conf) -> Result<u64, WorkerError> {
    Ok(conf
        .bytes(
            LOG_MAX_SIZE,
            crate::runner::DEFAULT_LOG_MAX_SIZE,
            SizeUnit::Bytes,
        )?
        .max(1))
}

/// `shuffle.service.enabled`: serve the map output of this worker's executors
/// from the worker (Spark's external shuffle service; default false).
pub const SHUFFLE_SERVICE_ENABLED: &str = "shuffle.service.enabled";
/// `local.dir`: comma-separated directories for shuffle files (default the
/// system temp dir); with the shuffle service on, the worker's executors get
/// these.
pub const LOCAL_DIR: &str = "local.dir";

/// The shuffle service's local dirs, created if missing, when
/// `shuffle.service.enabled`; `None` when it is off.
pub fn shuffle_service_dirs(conf: &Conf) -> Result<Option<Vec<PathBuf>>, WorkerError> {
    if !conf.bool(SHUFFLE_SERVICE_ENABLED, false)? {
        return Ok(None);
    }
    let dirs = conf
        .get(LOCAL_DIR)
        .map(flint_shuffle::conf::parse_local_dirs)
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| vec![std::env::temp_dir()]);
    let mut out = Vec::with_capacity(dirs.len());
    for d in dirs {
        let problem = |e: std::io::Error| {
            setting(
                LOCAL_DIR,
                SettingProblem::LocalDir {
                    path: d.clone(),
                    reason: e.to_string(),
                },
            )
        };
        std::fs::create_dir_all(&d).map_err(problem)?;
        out.push(std::fs::canonicalize(&d).map_err(problem)?);
    }
    Ok(Some(out))
}

/// Where the web UI binds (`ui.host`, default 127.0.0.1).
pub fn ui_host(conf: &Conf) -> String {
    conf.get(UI_HOST)
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or(DEFAULT_UI_HOST)
        .to_string()
}

fn ms(conf: &Conf, key: &str, default_ms: u64, bare: TimeUnit) -> Result<u64, WorkerError> {
    Ok(millis(conf.duration(
        key,
        Duration::from_millis(default_ms),
        bare,
    )?))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn setting(key: &'static str, problem: SettingProblem) -> WorkerError {
    WorkerError::Setting { key, problem }
}

fn too_large(key: &'static str, value: u64, max: u64) -> WorkerError {
    setting(key, SettingProblem::TooLarge { value, max })
}

fn u32_setting(conf: &Conf, key: &'static str, default: u32) -> Result<u32, WorkerError> {
    let v = conf.u64(key, u64::from(default))?;
    u32::try_from(v).map_err(|_| too_large(key, v, u64::from(u32::MAX)))
}

fn usize_setting(conf: &Conf, key: &'static str, default: usize) -> Result<usize, WorkerError> {
    let v = conf.u64(key, u64::try_from(default).unwrap_or(u64::MAX))?;
    usize::try_from(v).map_err(|_| too_large(key, v, u64::try_from(usize::MAX).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(conf: &Conf) -> Result<WorkerConfig, WorkerError> {
        worker_config(
            conf,
            vec!["flint://m:7077".into()],
            4,
            4096,
            Duration::from_secs(120),
        )
    }

    #[test]
    fn defaults_are_sparks() {
        let mut expected = WorkerConfig::new(vec!["flint://m:7077".into()], 4, 4096);
        expected.ask_timeout_ms = 120_000;
        assert_eq!(read(&Conf::new()).expect("defaults"), expected);
        assert_eq!(ui_host(&Conf::new()), "127.0.0.1");
        assert_eq!(
            binary_cache_max_size(&Conf::new()).expect("default"),
            4 << 30
        );
    }

    #[test]
    fn binary_cache_size_is_read_and_checked() {
        let c = Conf::new().set(BINARY_CACHE_MAX_SIZE, "1.5m");
        assert_eq!(binary_cache_max_size(&c).expect("valid"), 1_572_864);
        for bad in ["0", "lots"] {
            let e =
                binary_cache_max_size(&Conf::new().set(BINARY_CACHE_MAX_SIZE, bad)).expect_err(bad);
            assert!(e.to_string().contains(BINARY_CACHE_MAX_SIZE), "{e}");
        }
    }

    #[test]
    fn every_setting_is_read() {
        let conf = Conf::new()
            .set(WORKER_TIMEOUT, "2s")
            .set(INITIAL_REGISTRATION_RETRIES, "2")
            .set(MAX_REGISTRATION_RETRIES, "3")
            .set(INITIAL_REGISTRATION_RETRY_INTERVAL, "100ms")
            .set(PROLONGED_REGISTRATION_RETRY_INTERVAL, "1")
            .set(REREGISTRATION_RETRY_INTERVAL, "30")
            .set(PREFER_CONFIGURED_MASTER_ADDRESS, "true")
            .set(CLEANUP_ENABLED, "false")
            .set(CLEANUP_INTERVAL, "7")
            .set(APP_DATA_TTL, "1h")
            .set(RETAINED_EXECUTORS, "5")
            .set(RETAINED_DRIVERS, "6")
            .set(EXECUTOR_KILL_GRACE, "300ms")
            .set(DRIVER_TERMINATE_TIMEOUT, "400")
            .set(DRIVER_RELAUNCH_INITIAL_BACKOFF, "2")
            .set(DRIVER_RELAUNCH_STABLE_RUN, "9")
            .set(EXECUTOR_STATE_SYNC_MAX_ATTEMPTS, "8")
            .set(DECOMMISSION_ENABLED, "yes")
            .set(UI_HOST, "0.0.0.0");
        let c = read(&conf).expect("valid");
        assert_eq!(c.worker_timeout_ms, 2000);
        assert_eq!(c.heartbeat_interval_ms, 500);
        assert_eq!(c.initial_registration_retries, 2);
        assert_eq!(c.max_registration_retries, 3);
        assert_eq!(c.initial_registration_retry_interval_ms, 100);
        assert_eq!(c.prolonged_registration_retry_interval_ms, 1000);
        assert_eq!(c.reregistration_retry_interval_ms, 30);
        assert!(c.prefer_configured_master_address);
        assert!(!c.cleanup_enabled);
        assert_eq!(c.cleanup_interval_ms, 7000);
        assert_eq!(c.app_data_ttl_ms, 3_600_000);
        assert_eq!(c.retained_executors, 5);
        assert_eq!(c.retained_drivers, 6);
        assert_eq!(c.executor_kill_grace_ms, 300);
        assert_eq!(c.driver_terminate_timeout_ms, 400);
        assert_eq!(c.driver_relaunch_initial_backoff_ms, 2000);
        assert_eq!(c.driver_relaunch_stable_run_ms, 9000);
        assert_eq!(c.executor_state_sync_max_attempts, 8);
        assert!(c.decommission_enabled);
        assert_eq!(ui_host(&conf), "0.0.0.0");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, value) in [
            (WORKER_TIMEOUT, "soon"),
            (WORKER_TIMEOUT, "0"),
            (WORKER_TIMEOUT, "3ms"),
            (MAX_REGISTRATION_RETRIES, "0"),
            (MAX_REGISTRATION_RETRIES, "99999999999"),
            (INITIAL_REGISTRATION_RETRIES, "17"),
            (CLEANUP_ENABLED, "maybe"),
            (CLEANUP_INTERVAL, "0"),
            (REREGISTRATION_RETRY_INTERVAL, "0"),
            (EXECUTOR_STATE_SYNC_MAX_ATTEMPTS, "-1"),
        ] {
            let e = read(&Conf::new().set(key, value)).expect_err(value);
            assert!(e.to_string().contains(key), "{key}={value}: {e}");
        }
    }
}
