//! [`Error`]: everything a flint call can fail with, each naming what went wrong and
//! what to do.

/// `Result<T, flint::Error>`.
///
/// ```
/// fn answer() -> flint::Result<u64> {
///     Ok(42)
/// }
/// assert_eq!(answer().unwrap(), 42);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a flint call failed with.
///
/// ```
/// use flint::prelude::*;
/// let e = Context::builder().master("lokal[2]").create().unwrap_err();
/// assert!(matches!(e, Error::BadMaster { .. }));
/// assert!(e.to_string().contains("lokal[2]"));
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A partition of a job failed `task.max_failures` times.
    #[error("job {job} failed: stage {stage}, partition {partition} failed {} times: {}", attempts.len(), attempts.join("; "))]
    JobFailed {
        /// The job.
        job: u64,
        /// The stage the partition belongs to.
        stage: u64,
        /// The partition.
        partition: u32,
        /// Every attempt's error, in order (`attempt 1 on executor driver: task panicked: ...`).
        attempts: Vec<String>,
    },
    /// The results a job sends to the driver exceed `driver.max_result_size`.
    #[error("job {job} failed: total size of serialized results ({size} bytes) is bigger than driver.max_result_size ({limit} bytes); raise it or return less to the driver (save_as_text_file, count, reduce)")]
    ResultTooLarge {
        /// The job.
        job: u64,
        /// Bytes of results received, including the one that passed the limit.
        size: u64,
        /// `driver.max_result_size` in bytes.
        limit: u64,
    },
    /// A job was cancelled before it finished.
    #[error("job {job} was cancelled: {reason}")]
    JobCancelled {
        /// The job.
        job: u64,
        /// Why.
        reason: String,
    },
    /// The master URL is not one of the accepted forms.
    #[error("master URL {master:?} is not valid: expected local, local[N], local[*], local[N,F], local-cluster[W,C,M] or flint://host:port[,host2:port]")]
    BadMaster {
        /// The URL as given.
        master: String,
    },
    /// A master that this build of flint cannot run yet.
    #[error("master {master:?}: {reason}")]
    MasterNotSupported {
        /// The URL.
        master: String,
        /// Why, and what to use instead.
        reason: String,
    },
    /// An input path does not exist or matches nothing.
    #[error("input path {path} does not exist: {reason}")]
    PathNotFound {
        /// The path or pattern as given.
        path: String,
        /// Details.
        reason: String,
    },
    /// `save_as_text_file` was given a directory that exists.
    #[error("output directory {path} already exists; remove it or choose another")]
    OutputExists {
        /// The absolute path.
        path: String,
    },
    /// A file system operation on the driver failed.
    #[error("{path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        reason: String,
    },
    /// A value could not be serialized or deserialized (a capture, a result).
    #[error("serialization failed: {0}")]
    Serialization(String),
    /// An argument was out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// The context was stopped.
    #[error("the flint context was stopped; create a new one with Context::builder()")]
    Stopped,
    /// A setting could not be read.
    #[error(transparent)]
    Conf(#[from] flint_conf::ConfError),
}

/// The message itself, so that `fn main() -> flint::Result<()>` reports a failed job
/// the way `Display` does (Rust prints the `Debug` form of the error `main` returns).
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
