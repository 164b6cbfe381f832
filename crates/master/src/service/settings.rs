//! The settings the master daemon reads from a [`Conf`], with Spark's
//! defaults: every timing and scheduling knob of [`MasterConfig`], plus where
//! the web UI binds.

use std::time::Duration;

use flint_conf::{Conf, TimeUnit};

use super::MasterError;
use crate::state::{ConfigError, MasterConfig, WorkerSelectionPolicy, DEFAULT_WORKER_TIMEOUT_MS};

/// `worker.timeout`: a worker silent this long is marked DEAD (Spark: 60 s;
/// a bare number is seconds). Workers heartbeat every quarter of it and the
/// master checks every quarter of it too (Spark: every timeout), so a silent
/// worker is DEAD within 1.25 × the timeout.
pub const WORKER_TIMEOUT: &str = "worker.timeout";
/// `deploy.dead_worker_persistence`: a DEAD worker stays listed until
/// `(this + 1) * worker.timeout` after its last heartbeat (Spark: 15).
pub const DEAD_WORKER_PERSISTENCE: &str = "deploy.dead_worker_persistence";
/// `deploy.recovery_timeout`: how long a new leader waits for recovered
/// workers and apps (Spark: `worker.timeout`; a bare number is seconds).
pub const RECOVERY_TIMEOUT: &str = "deploy.recovery_timeout";
/// `deploy.retained_applications`: completed applications kept for display
/// (Spark: 200).
pub const RETAINED_APPLICATIONS: &str = "deploy.retained_applications";
/// `deploy.retained_drivers`: completed drivers kept for display (Spark: 200).
pub const RETAINED_DRIVERS: &str = "deploy.retained_drivers";
/// `deploy.max_executor_retries`: abnormal executor exits in a row after
/// which an application with no RUNNING executor fails (Spark: 10; negative
/// never fails it).
pub const MAX_EXECUTOR_RETRIES: &str = "deploy.max_executor_retries";
/// `deploy.executor_stable_time`: how long an executor must stay RUNNING
/// before it clears its app's failure count (10s).
pub const EXECUTOR_STABLE_TIME: &str = "deploy.executor_stable_time";
/// `deploy.spread_out`: spread executors over workers (true, Spark's
/// default) or pack them.
pub const SPREAD_OUT: &str = "deploy.spread_out";
/// `deploy.spread_out_drivers`: place drivers round-robin over shuffled
/// workers (true) or first fit.
pub const SPREAD_OUT_DRIVERS: &str = "deploy.spread_out_drivers";
/// `deploy.worker_selection_policy`: the order of usable workers for
/// executor placement (Spark: `CORES_FREE_DESC`).
pub const WORKER_SELECTION_POLICY: &str = "deploy.worker_selection_policy";
/// `deploy.default_cores`: cores for an application that sets no maximum
/// (Spark: unlimited).
pub const DEFAULT_CORES: &str = "deploy.default_cores";
/// `deploy.max_drivers`: most cluster-mode drivers running at once (Spark:
/// unlimited).
pub const MAX_DRIVERS: &str = "deploy.max_drivers";
/// `deploy.app_number_modulo`: wrap the counter in application ids (Spark:
/// unset; at least 1000 when set).
pub const APP_NUMBER_MODULO: &str = "deploy.app_number_modulo";
/// `deploy.max_failures_per_worker`: executors of one application that fail
/// quickly on one worker (before staying RUNNING for
/// `deploy.executor_stable_time`) after which the application gets no more
/// executors there (3; not in Spark). A worker where launches keep failing
/// for several applications, or for one that runs elsewhere, is shown
/// unhealthy and gets no new executors for a while (1 s, doubling to 60 s).
pub const MAX_FAILURES_PER_WORKER: &str = "deploy.max_failures_per_worker";
/// `ui.host`: the address the web UI binds (default 127.0.0.1: loopback
/// unless configured otherwise).
pub const UI_HOST: &str = "ui.host";

/// `master.max_driver_watches`: most driver watches (`WatchDriver`) kept at once.
pub const MAX_DRIVER_WATCHES: &str = "master.max_driver_watches";

/// The bound on driver watches (`master.max_driver_watches`, default 1024).
pub fn max_driver_watches(conf: &Conf) -> Result<usize, MasterError> {
    usize_setting(conf, MAX_DRIVER_WATCHES, 1024)
}

/// Every key the master reads itself (the RPC environment reads its own,
/// `flint_rpc::conf::KEYS`), for `FLINT_*` environment mapping and docs.
pub const KEYS: &[&str] = &[
    WORKER_TIMEOUT,
    DEAD_WORKER_PERSISTENCE,
    RECOVERY_TIMEOUT,
    RETAINED_APPLICATIONS,
    RETAINED_DRIVERS,
    MAX_DRIVER_WATCHES,
    MAX_EXECUTOR_RETRIES,
    EXECUTOR_STABLE_TIME,
    SPREAD_OUT,
    SPREAD_OUT_DRIVERS,
    WORKER_SELECTION_POLICY,
    DEFAULT_CORES,
    MAX_DRIVERS,
    APP_NUMBER_MODULO,
    MAX_FAILURES_PER_WORKER,
    UI_HOST,
    BINARY_STORE_MAX_SIZE,
    super::rest::ENABLED,
    super::rest::HOST,
    super::rest::PORT,
    super::rest::ALLOW_UNAUTHENTICATED,
    super::rest::MAX_REQUEST_BYTES,
];

/// The web UI's default bind address.
pub const DEFAULT_UI_HOST: &str = "127.0.0.1";

/// Reads the state machine's settings, failing with the key and the reason
/// when a value is wrong.
pub fn master_config(conf: &Conf) -> Result<MasterConfig, MasterError> {
    let timeout = millis(conf.duration(
        WORKER_TIMEOUT,
        Duration::from_millis(DEFAULT_WORKER_TIMEOUT_MS),
        TimeUnit::Seconds,
    )?);
    if timeout == 0 {
        return Err(setting(WORKER_TIMEOUT, "must be positive"));
    }
    let mut c = MasterConfig::new(timeout);
    c.dead_worker_persistence = conf.u64(DEAD_WORKER_PERSISTENCE, c.dead_worker_persistence)?;
    c.recovery_timeout_ms = millis(conf.duration(
        RECOVERY_TIMEOUT,
        Duration::from_millis(c.recovery_timeout_ms),
        TimeUnit::Seconds,
    )?);
    if c.recovery_timeout_ms == 0 {
        return Err(setting(RECOVERY_TIMEOUT, "must be positive"));
    }
    c.retained_applications = usize_setting(conf, RETAINED_APPLICATIONS, c.retained_applications)?;
    c.retained_drivers = usize_setting(conf, RETAINED_DRIVERS, c.retained_drivers)?;
    if let Some(v) = conf.get(MAX_EXECUTOR_RETRIES) {
        c.max_executor_retries = v
            .trim()
            .parse()
            .map_err(|_| setting(MAX_EXECUTOR_RETRIES, "expected a whole number"))?;
    }
    c.executor_stable_ms = millis(conf.duration(
        EXECUTOR_STABLE_TIME,
        Duration::from_millis(c.executor_stable_ms),
        TimeUnit::Seconds,
    )?);
    c.spread_out_apps = conf.bool(SPREAD_OUT, c.spread_out_apps)?;
    c.spread_out_drivers = conf.bool(SPREAD_OUT_DRIVERS, c.spread_out_drivers)?;
    if let Some(v) = conf.get(WORKER_SELECTION_POLICY) {
        c.worker_selection_policy = v
            .trim()
            .to_ascii_uppercase()
            .parse::<WorkerSelectionPolicy>()
            .map_err(|e| setting(WORKER_SELECTION_POLICY, e.to_string()))?;
    }
    c.default_cores = u32_setting(conf, DEFAULT_CORES, c.default_cores)?;
    if c.default_cores == 0 {
        return Err(setting(DEFAULT_CORES, "must be positive"));
    }
    c.max_drivers = u32_setting(conf, MAX_DRIVERS, c.max_drivers)?;
    if conf.get(APP_NUMBER_MODULO).is_some() {
        let m = u32_setting(conf, APP_NUMBER_MODULO, 0)?;
        if m < 1000 {
            return Err(setting(APP_NUMBER_MODULO, "must be at least 1000"));
        }
        c.app_number_modulo = Some(m);
    }
    c.max_failures_per_worker =
        u32_setting(conf, MAX_FAILURES_PER_WORKER, c.max_failures_per_worker)?;
    if c.max_failures_per_worker == 0 {
        return Err(setting(MAX_FAILURES_PER_WORKER, "must be positive"));
    }
    c.validate().map_err(|e| match e {
        ConfigError::NotPositive(key) => setting(key, "must be positive"),
        ConfigError::UnknownPolicy(_) => setting(WORKER_SELECTION_POLICY, e.to_string()),
    })?;
    Ok(c)
}

/// `master.binary_store.max_size`: most bytes of uploaded driver binaries kept.
pub const BINARY_STORE_MAX_SIZE: &str = "master.binary_store.max_size";
/// Its default, 4 GiB.
pub const DEFAULT_BINARY_STORE_MAX_SIZE: u64 = 4 << 30;

/// The bound of the store of uploaded driver binaries
/// (`master.binary_store.max_size`), in bytes; at least 1.
pub fn binary_store_max_size(conf: &Conf) -> Result<u64, MasterError> {
    let v = conf.bytes(
        BINARY_STORE_MAX_SIZE,
        DEFAULT_BINARY_STORE_MAX_SIZE,
        flint_conf::SizeUnit::Bytes,
    )?;
    if v == 0 {
        return Err(setting(
            BINARY_STORE_MAX_SIZE,
            "0 leaves no room for any binary; give a size such as 4g",
        ));
    }
    Ok(v)
}

/// Where the web UI binds (`ui.host`, default 127.0.0.1).
pub fn ui_host(conf: &Conf) -> String {
    conf.get(UI_HOST)
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or(DEFAULT_UI_HOST)
        .to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn setting(key: &'static str, message: impl Into<String>) -> MasterError {
    MasterError::Setting {
        key,
        message: message.into(),
    }
}

fn u32_setting(conf: &Conf, key: &'static str, default: u32) -> Result<u32, MasterError> {
    let v = conf.u64(key, u64::from(default))?;
    u32::try_from(v).map_err(|_| setting(key, format!("{v} is larger than {}", u32::MAX)))
}

fn usize_setting(conf: &Conf, key: &'static str, default: usize) -> Result<usize, MasterError> {
    let v = conf.u64(key, u64::try_from(default).unwrap_or(u64::MAX))?;
    usize::try_from(v).map_err(|_| setting(key, format!("{v} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_store_bound_is_a_size_and_never_zero() {
        assert_eq!(
            binary_store_max_size(&Conf::new()).expect("default"),
            4 << 30
        );
        let c = Conf::new().set(BINARY_STORE_MAX_SIZE, "1.5m");
        assert_eq!(binary_store_max_size(&c).expect("valid"), 1_572_864);
        for bad in ["0", "lots"] {
            let e = binary_store_max_size(&Conf::new().set(BINARY_STORE_MAX_SIZE, bad))
                .expect_err(bad)
                .to_string();
            assert!(e.contains(BINARY_STORE_MAX_SIZE), "{e}");
        }
    }

    #[test]
    fn defaults_are_sparks() {
        let c = master_config(&Conf::new()).expect("defaults");
        assert_eq!(c, MasterConfig::default());
        assert_eq!(ui_host(&Conf::new()), "127.0.0.1");
    }

    #[test]
    fn every_setting_is_read() {
        let conf = Conf::new()
            .set(WORKER_TIMEOUT, "2s")
            .set(DEAD_WORKER_PERSISTENCE, "3")
            .set(RECOVERY_TIMEOUT, "5")
            .set(RETAINED_APPLICATIONS, "7")
            .set(RETAINED_DRIVERS, "8")
            .set(MAX_EXECUTOR_RETRIES, "-1")
            .set(SPREAD_OUT, "false")
            .set(SPREAD_OUT_DRIVERS, "no")
            .set(WORKER_SELECTION_POLICY, "worker_id")
            .set(DEFAULT_CORES, "4")
            .set(MAX_DRIVERS, "2")
            .set(APP_NUMBER_MODULO, "1000")
            .set(MAX_FAILURES_PER_WORKER, "5")
            .set(UI_HOST, "0.0.0.0");
        let c = master_config(&conf).expect("valid");
        assert_eq!(c.worker_timeout_ms, 2000);
        assert_eq!(c.timeout_check_interval_ms, 100);
        assert_eq!(c.heartbeat_interval_ms, 500);
        assert_eq!(c.dead_worker_persistence, 3);
        assert_eq!(c.recovery_timeout_ms, 5000);
        assert_eq!(c.retained_applications, 7);
        assert_eq!(c.retained_drivers, 8);
        assert_eq!(c.max_executor_retries, -1);
        assert!(!c.spread_out_apps);
        assert!(!c.spread_out_drivers);
        assert_eq!(c.worker_selection_policy, WorkerSelectionPolicy::WorkerId);
        assert_eq!(c.default_cores, 4);
        assert_eq!(c.max_drivers, 2);
        assert_eq!(c.app_number_modulo, Some(1000));
        assert_eq!(c.max_failures_per_worker, 5);
        assert_eq!(ui_host(&conf), "0.0.0.0");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, value) in [
            (WORKER_TIMEOUT, "soon"),
            (WORKER_TIMEOUT, "0"),
            (MAX_EXECUTOR_RETRIES, "many"),
            (SPREAD_OUT, "maybe"),
            (WORKER_SELECTION_POLICY, "RANDOM"),
            (DEFAULT_CORES, "0"),
            (DEFAULT_CORES, "99999999999"),
            (APP_NUMBER_MODULO, "10"),
            (MAX_FAILURES_PER_WORKER, "0"),
            (MAX_FAILURES_PER_WORKER, "few"),
        ] {
            let e = master_config(&Conf::new().set(key, value)).expect_err(value);
            assert!(e.to_string().contains(key), "{key}={value}: {e}");
        }
    }
}
