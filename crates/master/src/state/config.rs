//! The master's settings, with Spark's defaults.

use std::fmt;
use std::str::FromStr;

/// How usable workers are ordered before executors are placed on them
/// (Spark's `spark.deploy.workerSelectionPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerSelectionPolicy {
    /// Fewest free cores first (ties: lower worker id first).
    CoresFreeAsc,
    /// Most free cores first (ties: higher worker id first). Spark's default.
    #[default]
    CoresFreeDesc,
    /// Least free memory first (ties: lower worker id first).
    MemoryFreeAsc,
    /// Most free memory first (ties: higher worker id first).
    MemoryFreeDesc,
    /// By worker id.
    WorkerId,
}

impl WorkerSelectionPolicy {
    /// Spark's name for the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerSelectionPolicy::CoresFreeAsc => "CORES_FREE_ASC",
            WorkerSelectionPolicy::CoresFreeDesc => "CORES_FREE_DESC",
            WorkerSelectionPolicy::MemoryFreeAsc => "MEMORY_FREE_ASC",
            WorkerSelectionPolicy::MemoryFreeDesc => "MEMORY_FREE_DESC",
            WorkerSelectionPolicy::WorkerId => "WORKER_ID",
        }
    }
}

impl fmt::Display for WorkerSelectionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration value the master cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An unknown worker selection policy name.
    #[error("unknown worker selection policy {0:?}; expected one of CORES_FREE_ASC, CORES_FREE_DESC, MEMORY_FREE_ASC, MEMORY_FREE_DESC, WORKER_ID")]
    UnknownPolicy(String),
    /// A setting that must be positive is zero.
    #[error("{0} must be positive")]
    NotPositive(&'static str),
}

impl FromStr for WorkerSelectionPolicy {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Ok(match s {
            "CORES_FREE_ASC" => WorkerSelectionPolicy::CoresFreeAsc,
            "CORES_FREE_DESC" => WorkerSelectionPolicy::CoresFreeDesc,
            "MEMORY_FREE_ASC" => WorkerSelectionPolicy::MemoryFreeAsc,
            "MEMORY_FREE_DESC" => WorkerSelectionPolicy::MemoryFreeDesc,
            "WORKER_ID" => WorkerSelectionPolicy::WorkerId,
            other => return Err(ConfigError::UnknownPolicy(other.to_owned())),
        })
    }
}

/// Every setting the master's state machine uses. [`Default`] gives Spark's
/// values; [`MasterConfig::new`] derives the dependent intervals from a
/// worker timeout, as Spark does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterConfig {
    /// `worker.timeout`: a worker silent for longer is marked DEAD
    /// (Spark: 60 s).
    pub worker_timeout_ms: u64,
    /// How often the shell should send [`Event::Tick`](super::Event::Tick):
    /// `worker.timeout / 4`, at least [`MIN_TIMEOUT_CHECK_INTERVAL_MS`] and at
    /// most [`MAX_TICK_INTERVAL_MS`] (ticks also end back-offs), so a silent
    /// worker is declared DEAD within 1.25 × `worker.timeout` of its last
    /// heartbeat. Spark checks every `worker.timeout`, which takes up to
    /// twice the timeout.
    pub timeout_check_interval_ms: u64,
    /// How often workers are expected to heartbeat (Spark:
    /// `worker.timeout / 4`). The master does not use it; it is here so the
    /// worker and the master derive it from the same setting.
    pub heartbeat_interval_ms: u64,
    /// `dead.worker.persistence`: a DEAD worker stays listed until
    /// `(this + 1) * worker_timeout_ms` after its last heartbeat (Spark: 15).
    pub dead_worker_persistence: u64,
    /// `deploy.recovery_timeout`: how long a newly elected master waits for
    /// recovered workers and apps before completing recovery (Spark: the
    /// worker timeout).
    pub recovery_timeout_ms: u64,
    /// `deploy.retained_applications` (Spark: 200).
    pub retained_applications: usize,
    /// `deploy.retained_drivers` (Spark: 200).
    pub retained_drivers: usize,
    /// `deploy.max_executor_retries`: consecutive abnormal executor exits
    /// after which an app with no RUNNING executor fails (Spark: 10; a
    /// negative value never fails an app).
    pub max_executor_retries: i32,
    /// `deploy.executor_stable_time`: how long an executor must stay RUNNING
    /// before it clears its app's failure count (10 s). Spark resets the count
    /// as soon as an executor reports RUNNING, so an executor that starts and
    /// then exits 1 every time is relaunched forever; flint counts such
    /// executors as failures and fails the app after `max_executor_retries`.
    pub executor_stable_ms: u64,
    /// `deploy.spread_out`: spread an app's executors over as many workers as
    /// possible (Spark: true) rather than packing them.
    pub spread_out_apps: bool,
    /// `deploy.spread_out_drivers`: place drivers round-robin over shuffled
    /// workers (Spark: true) rather than first fit by worker id.
    pub spread_out_drivers: bool,
    /// `deploy.worker_selection_policy` (Spark: CORES_FREE_DESC).
    pub worker_selection_policy: WorkerSelectionPolicy,
    /// `deploy.default_cores`: cores for an app that sets no `max_cores`
    /// (Spark: unlimited).
    pub default_cores: u32,
    /// `deploy.max_drivers`: most drivers running at once (Spark: unlimited).
    pub max_drivers: u32,
    /// `deploy.app_number_modulo`: wrap the app counter in ids (Spark: unset).
    pub app_number_modulo: Option<u32>,
    /// `deploy.max_failures_per_worker`: quick failures of one application's
    /// executors on one worker (failed before staying RUNNING for
    /// `executor_stable_ms`) after which that application gets no more
    /// executors there (3). Not in Spark, whose master keeps choosing a worker
    /// that fails every launch.
    pub max_failures_per_worker: u32,
    /// The first wait before an application whose executor failed gets a new
    /// executor; it doubles with every further failure in a row (the app's
    /// failure count), up to [`relaunch_backoff_max_ms`](Self::relaunch_backoff_max_ms).
    /// Spark relaunches in the same millisecond.
    pub relaunch_backoff_initial_ms: u64,
    /// The longest wait between an application's relaunches.
    pub relaunch_backoff_max_ms: u64,
    /// The first time an unhealthy worker gets no new executors; it doubles
    /// every time the worker is found unhealthy again, up to
    /// [`worker_backoff_max_ms`](Self::worker_backoff_max_ms).
    pub worker_backoff_initial_ms: u64,
    /// The longest time an unhealthy worker gets no new executors.
    pub worker_backoff_max_ms: u64,
}

/// Spark's `spark.worker.timeout` default, in ms.
pub const DEFAULT_WORKER_TIMEOUT_MS: u64 = 60_000;

/// The shortest timeout check interval: below it ticks would cost more than
/// they are worth (only timeouts under 40 ms reach it).
pub const MIN_TIMEOUT_CHECK_INTERVAL_MS: u64 = 10;

/// The longest tick interval. Ticks also end back-offs (an application's
/// relaunch delay, an unhealthy worker's exclusion), so they come at least
/// this often whatever the worker timeout: a back-off ends at most this much
/// late. A tick touches each worker once without allocating, and runs
/// placement only when a back-off ended.
pub const MAX_TICK_INTERVAL_MS: u64 = 100;

/// The tick interval for a worker timeout: a quarter of it, at least
/// [`MIN_TIMEOUT_CHECK_INTERVAL_MS`] and at most [`MAX_TICK_INTERVAL_MS`]. A
/// worker whose last heartbeat was at `t` is seen silent by the first tick
/// after `t + timeout`, which comes at most one interval later: by
/// `t + 1.25 × timeout` (sooner for timeouts over 400 ms).
pub const fn timeout_check_interval_ms(worker_timeout_ms: u64) -> u64 {
    let quarter = worker_timeout_ms / 4;
    if quarter < MIN_TIMEOUT_CHECK_INTERVAL_MS {
        MIN_TIMEOUT_CHECK_INTERVAL_MS
    } else if quarter > MAX_TICK_INTERVAL_MS {
        MAX_TICK_INTERVAL_MS
    } else {
        quarter
    }
}

/// `initial × 2^(n − 1)`, at most `max` (`initial` for `n` ≤ 1): the wait
/// after the `n`-th failure in a row.
pub const fn backoff_ms(initial: u64, max: u64, n: u32) -> u64 {
    let doublings = n.saturating_sub(1);
    let ms = if doublings >= 63 {
        u64::MAX
    } else {
        initial.saturating_mul(1 << doublings)
    };
    if ms > max {
        max
    } else {
        ms
    }
}

impl MasterConfig {
    /// Spark's defaults with the given worker timeout; the recovery timeout
    /// and the heartbeat interval follow it as in Spark (`timeout`,
    /// `timeout / 4`); the timeout check interval is
    /// [`timeout_check_interval_ms`] (Spark: `timeout`).
    pub fn new(worker_timeout_ms: u64) -> Self {
        Self {
            worker_timeout_ms,
            timeout_check_interval_ms: timeout_check_interval_ms(worker_timeout_ms),
            heartbeat_interval_ms: worker_timeout_ms / 4,
            dead_worker_persistence: 15,
            recovery_timeout_ms: worker_timeout_ms,
            retained_applications: 200,
            retained_drivers: 200,
            max_executor_retries: 10,
            executor_stable_ms: 10_000,
            spread_out_apps: true,
            spread_out_drivers: true,
            worker_selection_policy: WorkerSelectionPolicy::CoresFreeDesc,
            default_cores: u32::MAX,
            max_drivers: u32::MAX,
            app_number_modulo: None,
            max_failures_per_worker: 3,
            relaunch_backoff_initial_ms: 200,
            relaunch_backoff_max_ms: 30_000,
            worker_backoff_initial_ms: 1000,
            worker_backoff_max_ms: 60_000,
        }
    }

    /// Checks the values Spark requires to be positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.worker_timeout_ms == 0 {
            return Err(ConfigError::NotPositive("worker.timeout"));
        }
        if self.timeout_check_interval_ms == 0 {
            return Err(ConfigError::NotPositive("worker timeout check interval"));
        }
        if self.recovery_timeout_ms == 0 {
            return Err(ConfigError::NotPositive("deploy.recovery_timeout"));
        }
        if self.default_cores == 0 {
            return Err(ConfigError::NotPositive("deploy.default_cores"));
        }
        if self.app_number_modulo == Some(0) {
            return Err(ConfigError::NotPositive("deploy.app_number_modulo"));
        }
        if self.max_failures_per_worker == 0 {
            return Err(ConfigError::NotPositive("deploy.max_failures_per_worker"));
        }
        Ok(())
    }

    /// How long a DEAD worker stays listed after its last heartbeat:
    /// `(dead_worker_persistence + 1) * worker_timeout_ms`.
    pub fn dead_worker_retention_ms(&self) -> u64 {
        self.dead_worker_persistence
            .saturating_add(1)
            .saturating_mul(self.worker_timeout_ms)
    }
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self::new(DEFAULT_WORKER_TIMEOUT_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sparks() {
        let c = MasterConfig::default();
        assert_eq!(c.worker_timeout_ms, 60_000);
        assert_eq!(c.heartbeat_interval_ms, 15_000);
        assert_eq!(c.recovery_timeout_ms, 60_000);
        assert_eq!(c.timeout_check_interval_ms, MAX_TICK_INTERVAL_MS);
        assert_eq!(c.max_failures_per_worker, 3);
        assert_eq!(c.dead_worker_retention_ms(), 16 * 60_000);
        assert_eq!(c.retained_applications, 200);
        assert_eq!(c.max_executor_retries, 10);
        assert!(c.spread_out_apps);
        assert_eq!(
            c.worker_selection_policy,
            WorkerSelectionPolicy::CoresFreeDesc
        );
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn policies_parse_by_spark_name() {
        for p in [
            WorkerSelectionPolicy::CoresFreeAsc,
            WorkerSelectionPolicy::CoresFreeDesc,
            WorkerSelectionPolicy::MemoryFreeAsc,
            WorkerSelectionPolicy::MemoryFreeDesc,
            WorkerSelectionPolicy::WorkerId,
        ] {
            assert_eq!(p.as_str().parse::<WorkerSelectionPolicy>(), Ok(p));
        }
        assert!("cores".parse::<WorkerSelectionPolicy>().is_err());
    }

    #[test]
    fn ticks_come_every_quarter_timeout_within_bounds() {
        assert_eq!(timeout_check_interval_ms(1), MIN_TIMEOUT_CHECK_INTERVAL_MS);
        assert_eq!(timeout_check_interval_ms(200), 50);
        assert_eq!(timeout_check_interval_ms(400), 100);
        assert_eq!(timeout_check_interval_ms(60_000), MAX_TICK_INTERVAL_MS);
    }

    #[test]
    fn backoffs_double_up_to_their_cap() {
        let b: Vec<u64> = (0..9).map(|n| backoff_ms(200, 30_000, n)).collect();
        assert_eq!(b, [200, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600]);
        assert_eq!(backoff_ms(200, 30_000, 10), 30_000);
        assert_eq!(backoff_ms(1000, 60_000, u32::MAX), 60_000);
    }

    #[test]
    fn zero_timeouts_are_rejected() {
        let c = MasterConfig::new(0);
        assert_eq!(
            c.validate(),
            Err(ConfigError::NotPositive("worker.timeout"))
        );
    }
}
