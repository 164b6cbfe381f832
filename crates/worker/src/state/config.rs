//! The worker's settings, with Spark's defaults, and the per-process random
//! factor that spreads registration retries.

/// Spark's `spark.worker.timeout` default, in ms. Heartbeats go every quarter
/// of it.
pub const DEFAULT_WORKER_TIMEOUT_MS: u64 = 60_000;

/// A configuration value the worker cannot run with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A setting that must be positive is zero.
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    /// No master URL was configured.
    #[error("no master URL configured; the worker needs at least one (flint://host:port)")]
    NoMasters,
    /// `worker.initial_registration_retries` exceeds
    /// `worker.max_registration_retries`.
    #[error(
        "worker.initial_registration_retries ({initial}) must not exceed \
         worker.max_registration_retries ({max})"
    )]
    InitialRetriesExceedMax {
        /// `worker.initial_registration_retries`.
        initial: u32,
        /// `worker.max_registration_retries`.
        max: u32,
    },
    /// A fixed registration fuzz outside Spark's range.
    #[error("the registration retry fuzz {0} is outside [0.5, 1.5)")]
    FuzzOutOfRange(f64),
}

/// Every setting the worker's state machine uses. [`WorkerConfig::new`] gives
/// Spark's values for everything but the masters and the resources offered.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The configured masters, `flint://host:port` each (Spark's
    /// `masterRpcAddresses`). The worker registers with all of them in
    /// parallel until one (the leader) accepts it.
    pub master_urls: Vec<String>,
    /// Cores this worker offers (Spark's `SPARK_WORKER_CORES` / `--cores`).
    pub cores: u32,
    /// Memory this worker offers, in MB (Spark's `SPARK_WORKER_MEMORY` /
    /// `--memory`).
    pub memory_mb: u64,
    /// `worker.timeout` (Spark's `spark.worker.timeout`, 60 s): how long the
    /// master waits for a heartbeat before declaring this worker dead.
    pub worker_timeout_ms: u64,
    /// How often to heartbeat the master: `worker.timeout / 4` (15 s), as
    /// Spark derives it.
    pub heartbeat_interval_ms: u64,
    /// `worker.initial_registration_retries` (Spark's
    /// `spark.worker.initialRegistrationRetries`, 6): how many retries use
    /// the short interval.
    pub initial_registration_retries: u32,
    /// `worker.max_registration_retries` (Spark's
    /// `spark.worker.maxRegistrationRetries`, 16): retries in all before the
    /// worker gives up and exits.
    pub max_registration_retries: u32,
    /// The short retry interval before the random factor is applied: 10 s
    /// (Spark's hard-coded `10`; with the factor, 5–15 s).
    pub initial_registration_retry_interval_ms: u64,
    /// The long retry interval before the random factor is applied: 60 s
    /// (Spark's hard-coded `60`; with the factor, 30–90 s).
    pub prolonged_registration_retry_interval_ms: u64,
    /// After losing its master (the connection dropped, or the master asked
    /// it to reconnect), the worker registers at once and then retries after
    /// this interval (50 ms, random factor applied), doubling while it stays
    /// below the short interval; from there on Spark's schedule follows,
    /// counted from its start. So a restarted master has its workers back
    /// within a second, and a master that stays away gets Spark's 5–15 s
    /// retries after about 10 s. Not in Spark, which waits 5–15 s for the
    /// first retry. `worker.reregistration_retry_interval`.
    pub reregistration_retry_interval_ms: u64,
    /// Fixes the per-process random factor in [0.5, 1.5) that multiplies
    /// both retry intervals; `None` (the default) draws it from
    /// [`rng_seed`](Self::rng_seed), as Spark draws it from a random UUID.
    pub registration_retry_fuzz: Option<f64>,
    /// Seed of the worker's only source of randomness (the retry factor).
    /// The shell passes a random value; tests pass a fixed one.
    pub rng_seed: u64,
    /// `worker.prefer_configured_master_address` (Spark's
    /// `spark.worker.preferConfiguredMasterAddress`, false): when
    /// re-registering with the known master, use the address this worker was
    /// configured with (the one it reached the master at) instead of the
    /// address the master advertises.
    pub prefer_configured_master_address: bool,
    /// `worker.cleanup.enabled` (Spark's `spark.worker.cleanup.enabled`,
    /// true since 4.0): periodically remove old application directories.
    pub cleanup_enabled: bool,
    /// `worker.cleanup.interval` (Spark's `spark.worker.cleanup.interval`,
    /// 30 min): how often; the first run comes one interval after
    /// registration.
    pub cleanup_interval_ms: u64,
    /// `worker.cleanup.app_data_ttl` (Spark's
    /// `spark.worker.cleanup.appDataTtl`, 7 days): a directory of an
    /// application that is not running is removed when nothing in it is
    /// newer than this.
    pub app_data_ttl_ms: u64,
    /// `worker.ui.retained_executors` (Spark's
    /// `spark.worker.ui.retainedExecutors`, 1000): finished executors kept
    /// for display.
    pub retained_executors: usize,
    /// `worker.ui.retained_drivers` (Spark's
    /// `spark.worker.ui.retainedDrivers`, 1000): finished drivers kept for
    /// display.
    pub retained_drivers: usize,
    /// `worker.executor_kill_grace` (Spark's hard-coded 10 s in
    /// `ExecutorRunner`): time between SIGTERM and SIGKILL when killing an
    /// executor.
    pub executor_kill_grace_ms: u64,
    /// `worker.driver_terminate_timeout` (Spark's
    /// `spark.worker.driverTerminateTimeout`, 10 s): time between SIGTERM and
    /// SIGKILL when killing a driver.
    pub driver_terminate_timeout_ms: u64,
    /// `worker.driver_relaunch_initial_backoff` (Spark's hard-coded 1 s in
    /// `DriverRunner`): the first wait before relaunching a supervised driver
    /// that exited non-zero; it doubles after every relaunch.
    pub driver_relaunch_initial_backoff_ms: u64,
    /// `worker.driver_relaunch_stable_run` (Spark's hard-coded 5 s): a
    /// supervised driver that ran longer than this before failing is
    /// relaunched after the initial backoff again.
    pub driver_relaunch_stable_run_ms: u64,
    /// `worker.executor_state_sync.max_attempts` (Spark's
    /// `spark.worker.executorStateSync.maxAttempts`, 5): tries to tell the
    /// master about an executor state change before the worker exits.
    pub executor_state_sync_max_attempts: u32,
    /// `rpc.ask_timeout` (Spark's `spark.rpc.askTimeout`, 120 s): the wait
    /// before retrying an executor state report whose ask failed other than
    /// by timing out.
    pub ask_timeout_ms: u64,
    /// `decommission.enabled` (Spark's `spark.decommission.enabled`, false):
    /// whether a decommission request (signal or master) is honoured.
    pub decommission_enabled: bool,
}

impl WorkerConfig {
    /// Spark's defaults for a worker offering `cores` and `memory_mb` that
    /// registers with `master_urls`.
    pub fn new(master_urls: Vec<String>, cores: u32, memory_mb: u64) -> Self {
        Self {
            master_urls,
            cores,
            memory_mb,
            worker_timeout_ms: DEFAULT_WORKER_TIMEOUT_MS,
            heartbeat_interval_ms: DEFAULT_WORKER_TIMEOUT_MS / 4,
            initial_registration_retries: 6,
            max_registration_retries: 16,
            initial_registration_retry_interval_ms: 10_000,
            prolonged_registration_retry_interval_ms: 60_000,
            reregistration_retry_interval_ms: 50,
            registration_retry_fuzz: None,
            rng_seed: 0,
            prefer_configured_master_address: false,
            cleanup_enabled: true,
            cleanup_interval_ms: 30 * 60 * 1000,
            app_data_ttl_ms: 7 * 24 * 3600 * 1000,
            retained_executors: 1000,
            retained_drivers: 1000,
            executor_kill_grace_ms: 10_000,
            driver_terminate_timeout_ms: 10_000,
            driver_relaunch_initial_backoff_ms: 1000,
            driver_relaunch_stable_run_ms: 5000,
            executor_state_sync_max_attempts: 5,
            ask_timeout_ms: 120_000,
            decommission_enabled: false,
        }
    }

    /// Sets `worker.timeout` and the heartbeat interval that follows from it
    /// (`timeout / 4`), as Spark derives it.
    pub fn with_worker_timeout_ms(mut self, worker_timeout_ms: u64) -> Self {
        self.worker_timeout_ms = worker_timeout_ms;
        self.heartbeat_interval_ms = worker_timeout_ms / 4;
        self
    }

    /// Checks the values the worker cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.master_urls.is_empty() {
            return Err(ConfigError::NoMasters);
        }
        let positive = [
            (self.worker_timeout_ms, "worker.timeout"),
            (self.heartbeat_interval_ms, "the heartbeat interval"),
            (
                u64::from(self.initial_registration_retries),
                "worker.initial_registration_retries",
            ),
            (
                u64::from(self.max_registration_retries),
                "worker.max_registration_retries",
            ),
            (
                self.initial_registration_retry_interval_ms,
                "the initial registration retry interval",
            ),
            (
                self.prolonged_registration_retry_interval_ms,
                "the prolonged registration retry interval",
            ),
            (
                self.reregistration_retry_interval_ms,
                "worker.reregistration_retry_interval",
            ),
            (self.cleanup_interval_ms, "worker.cleanup.interval"),
            (self.app_data_ttl_ms, "worker.cleanup.app_data_ttl"),
            (
                u64::from(self.executor_state_sync_max_attempts),
                "worker.executor_state_sync.max_attempts",
            ),
        ];
        for (value, name) in positive {
            if value == 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if self.initial_registration_retries > self.max_registration_retries {
            return Err(ConfigError::InitialRetriesExceedMax {
                initial: self.initial_registration_retries,
                max: self.max_registration_retries,
            });
        }
        if let Some(f) = self.registration_retry_fuzz {
            if !(0.5..1.5).contains(&f) {
                return Err(ConfigError::FuzzOutOfRange(f));
            }
        }
        Ok(())
    }

    /// The random factor in [0.5, 1.5) this configuration gives: the fixed
    /// [`registration_retry_fuzz`](Self::registration_retry_fuzz) if set
    /// (clamped into range), else one drawn from [`rng_seed`](Self::rng_seed)
    /// (Spark: `Random.nextDouble + 0.5`).
    pub fn registration_fuzz(&self) -> f64 {
        match self.registration_retry_fuzz {
            Some(f) if f.is_finite() => f.clamp(0.5, 1.5 - f64::EPSILON),
            _ => SplitMix64::new(self.rng_seed).next_f64() + 0.5,
        }
    }
}

/// Applies the random factor to a base retry interval the way Spark does:
/// `round(base_seconds * fuzz)` whole seconds when the base is a whole number
/// of seconds (so the defaults give 5–15 s and 30–90 s in whole seconds), and
/// `round(base_ms * fuzz)` ms for the sub-second bases tests use. Never 0.
pub fn fuzzed_interval_ms(base_ms: u64, fuzz: f64) -> u64 {
    let ms = if is_whole_seconds(base_ms) {
        ((base_ms / 1000) as f64 * fuzz).round() as u64 * 1000
    } else {
        (base_ms as f64 * fuzz).round() as u64
    };
    ms.max(1)
}

/// The quick re-registration delays after a lost master: `base` (random
/// factor applied, at least 1 ms), doubling while below `initial_retry_ms`.
pub fn reregistration_delays_ms(base_ms: u64, fuzz: f64, initial_retry_ms: u64) -> Vec<u64> {
    let mut delays = Vec::new();
    let mut d = ((base_ms as f64 * fuzz).round() as u64).max(1);
    while d < initial_retry_ms {
        delays.push(d);
        d = d.saturating_mul(2);
    }
    delays
}

/// Whether `ms` is a whole number of seconds.
fn is_whole_seconds(ms: u64) -> bool {
    ms / 1000 * 1000 == ms
}

/// A tiny deterministic PRNG (SplitMix64), the worker's only randomness.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform value in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sparks() {
        let c = WorkerConfig::new(vec!["flint://m:7077".into()], 4, 4096);
        assert_eq!(c.heartbeat_interval_ms, 15_000);
        assert_eq!(c.initial_registration_retries, 6);
        assert_eq!(c.max_registration_retries, 16);
        assert!(c.cleanup_enabled);
        assert_eq!(c.cleanup_interval_ms, 1_800_000);
        assert_eq!(c.app_data_ttl_ms, 604_800_000);
        assert_eq!(c.retained_executors, 1000);
        assert_eq!(c.executor_kill_grace_ms, 10_000);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn fuzz_stays_in_sparks_range() {
        for seed in 0..10_000u64 {
            let mut c = WorkerConfig::new(vec!["m".into()], 1, 1);
            c.rng_seed = seed.wrapping_mul(0x1234_5678_9abc_def1);
            let f = c.registration_fuzz();
            assert!((0.5..1.5).contains(&f), "{f}");
            let i = fuzzed_interval_ms(10_000, f);
            let p = fuzzed_interval_ms(60_000, f);
            assert!((5_000..=15_000).contains(&i) && is_whole_seconds(i), "{i}");
            assert!((30_000..=90_000).contains(&p) && is_whole_seconds(p), "{p}");
        }
    }

    #[test]
    fn reregistration_starts_at_50_ms_and_doubles_below_the_short_interval() {
        let d = reregistration_delays_ms(50, 1.0, 10_000);
        assert_eq!(d, [50, 100, 200, 400, 800, 1600, 3200, 6400]);
        // About 10 s of quick retries before Spark's schedule.
        assert_eq!(d.iter().sum::<u64>(), 12_750);
        assert_eq!(reregistration_delays_ms(50, 0.5, 5000)[0], 25);
        assert!(reregistration_delays_ms(50, 1.0, 50).is_empty());
        assert_eq!(reregistration_delays_ms(0, 1.0, 3), [1, 2]);
    }

    #[test]
    fn bad_values_are_rejected() {
        let mut c = WorkerConfig::new(vec![], 1, 1);
        assert_eq!(c.validate(), Err(ConfigError::NoMasters));
        c.master_urls.push("m".into());
        c.initial_registration_retries = 17;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::InitialRetriesExceedMax { .. })
        ));
        c.initial_registration_retries = 6;
        c.registration_retry_fuzz = Some(1.5);
        assert_eq!(c.validate(), Err(ConfigError::FuzzOutOfRange(1.5)));
        c.registration_retry_fuzz = None;
        let c = c.with_worker_timeout_ms(0);
        assert_eq!(
            c.validate(),
            Err(ConfigError::NotPositive("worker.timeout"))
        );
    }
}
