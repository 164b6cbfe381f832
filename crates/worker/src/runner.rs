//! Executor and driver child processes: what Spark's `ExecutorRunner` and
//! `DriverRunner` do with the process they start.
//!
//! [`spawn`] takes a [`LaunchSpec`] and starts the child:
//!
//! - in the work directory [`LaunchSpec::dir`] (created if missing; see
//!   [`executor_work_dir`] for the `work/<app-id>/<executor-id>/` layout), which
//!   is also its current directory;
//! - with `{{EXECUTOR_ID}}`, `{{HOSTNAME}}`, `{{CORES}}`, `{{APP_ID}}`,
//!   `{{WORKER_URL}}` and `{{BINARY}}` substituted in its program, arguments and
//!   environment values (see [`Placeholders::substitute`], flint-types' one
//!   definition);
//! - with stdin from `/dev/null` and stdout/stderr appended to the files
//!   `stdout` and `stderr` in the work directory; a header naming the command is
//!   written to `stderr` first, like Spark's `Spark Executor Command: ...`. The
//!   child writes into pipes that a copier thread per stream drains into the file,
//!   **rolling it by size** ([`set_log_max_size`], `worker.log.max_size`): a file
//!   about to pass the limit is renamed `stdout.1` (older ones shift up to
//!   [`ROLLED_LOG_FILES`], the oldest is removed) and a new one begun, so a chatty
//!   child cannot fill the disk (Spark's `RollingFileAppender` with the size
//!   strategy). A copier ends when every writer of its pipe has exited (EOF);
//!   children never outlive the worker, so neither do copiers;
//! - as the leader of its own process group, so that signals reach everything
//!   it starts;
//! - so that it dies with the worker, even when the worker is SIGKILLed (Linux);
//! - with the cluster secret in its environment (`FLINT_AUTH_SECRET`, or
//!   `FLINT_AUTH_ENABLED=false` when authentication is off) once the process has
//!   said which with [`set_child_secret`], overriding whatever the application's
//!   command set there; never in its arguments, so `ps` and the stderr header do
//!   not show it.
//!
//! # Design
//!
//! **Dying with the worker.** The child asks the kernel for `SIGKILL` when its
//! parent dies (`prctl(PR_SET_PDEATHSIG)`, in the forked child before `exec`).
//! The kernel means the parent *thread*: the signal fires when the thread that
//! forked the child exits, not only the process. So every child is forked from
//! one dedicated thread, `flint-spawner`, that lives as long as the process and
//! receives spawn requests over a channel. Between `fork` and `prctl` the
//! worker could die unnoticed, so the child then checks that its parent is
//! still the worker and exits at once if not. Grandchildren do not inherit the
//! death signal; when the worker is SIGKILLed only the direct child is
//! guaranteed to die. This part is Linux-only; elsewhere the child survives a
//! SIGKILLed worker.
//!
//! **Waiting and signalling.** Each child gets a small blocking thread (a
//! "reaper") parked in `waitid(WNOWAIT)`, which returns when the child exits
//! *without* reaping it. Signals go to the whole process group
//! (`kill(-pid, ..)`), and that is only safe while the pid cannot have been
//! reused, i.e. until the child is reaped. So the reaper reaps under a lock, and
//! every signal is sent under the same lock after checking the child is not yet
//! reaped. While the leader is an unreaped zombie its group id is pinned, so the
//! reaper first SIGKILLs whatever is left in the group: when a child exits,
//! processes it left behind in its group die too. The exit status is then
//! published on a `tokio::sync::watch` channel, which makes
//! [`RunningChild::wait`] cancel-safe and usable from any runtime, and lets
//! [`Drop`] work without a runtime at all.
//!
//! We do not use `tokio::process` because its `Child` reaps internally
//! (through a SIGCHLD handler or a pidfd) and gives no way to send a signal to
//! the process group knowing that the pid has not been reaped and reused. A
//! thread per child is cheap for the handful of executors a worker runs.
//!
//! [`cleanup_old_app_dirs`] is the body of Spark's `WorkDirCleanup`: it removes
//! application directories that are not running and hold nothing recent.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, OnceLock, RwLock};
use std::thread;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

/// How many rolled files (`stdout.1` … `stdout.N`) are kept besides the current one.
pub const ROLLED_LOG_FILES: u32 = 2;

/// `worker.log.max_size`'s default: 128 MiB.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 128 * 1024 * 1024;

static LOG_MAX_SIZE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_LOG_MAX_SIZE);

/// Sets the size (bytes, at least 1) at which children's stdout/stderr files roll
/// over (`worker.log.max_size`). One setting for the process, like
/// [`set_child_secret`].
pub fn set_log_max_size(bytes: u64) {
    LOG_MAX_SIZE.store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// Name of the file in the work directory that receives the child's stdout.
pub const STDOUT_FILE: &str = "stdout";

/// Name of the file in the work directory that receives the child's stderr.
pub const STDERR_FILE: &str = "stderr";

/// Time between SIGTERM and SIGKILL when killing an executor: Spark's
/// hard-coded 10 s (and the default of `spark.worker.driverTerminateTimeout`).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// Default of `spark.worker.cleanup.appDataTtl`: 7 days.
pub const DEFAULT_APP_DATA_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Default of `spark.worker.cleanup.interval`: 30 minutes.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// Stack size of a reaper thread; it only waits, reaps and logs.
const REAPER_STACK_SIZE: usize = 256 * 1024;

/// What went wrong while starting a child or cleaning the work directory.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// An id cannot be used as a directory name.
    #[error(
        "invalid {what} {id:?} for a work directory name: it must be non-empty, \
         not `.` or `..`, and contain no `/` or NUL"
    )]
    InvalidId {
        /// Which id: "application id", "executor id" or "driver id".
        what: &'static str,
        /// The offending id.
        id: String,
    },

    /// The child's work directory could not be created.
    #[error("cannot create work directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The child's stdout or stderr file could not be opened.
    #[error("cannot open log file {}", path.display())]
    OpenLog {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The command header could not be written to the stderr file.
    #[error("cannot write the command header to {}", path.display())]
    WriteHeader {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The operating system refused to start the command.
    #[error("cannot start {command} in {}", dir.display())]
    Spawn {
        /// The command line, as written in the header.
        command: String,
        /// The work directory it was to run in.
        dir: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The child started but no thread could be started to wait for it; the
    /// child has been killed and reaped.
    #[error("cannot start a thread to wait for child {pid} ({command}); the child was killed")]
    ReaperThread {
        /// The child's pid.
        pid: u32,
        /// The command line.
        command: String,
        /// The underlying error.
        source: io::Error,
    },

    /// The spawner thread is not running (it could not be created).
    #[error("the process spawner thread is not running; cannot start {command}")]
    SpawnerUnavailable {
        /// The command line.
        command: String,
    },

    /// The worker's work directory could not be listed.
    #[error("cannot read work directory {}", path.display())]
    ReadWorkDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// The values substituted for placeholders in a child's program, arguments
/// and environment values: flint-types' one definition (Spark's
/// `ExecutorRunner.substituteVariables`).
pub use flint_proto::Placeholders;

/// Whether a child is an executor or a driver; only changes the header line
/// written to its stderr file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChildKind {
    /// An executor for an application.
    #[default]
    Executor,
    /// A driver launched in cluster deploy mode.
    Driver,
}

impl ChildKind {
    /// The start of the header line: `Flint Executor Command:` or
    /// `Flint Driver Command:`.
    pub fn header_label(self) -> &'static str {
        match self {
            ChildKind::Executor => "Flint Executor Command:",
            ChildKind::Driver => "Flint Driver Command:",
        }
    }
}

/// What children are told about the cluster secret.
#[derive(Debug, Clone)]
enum ChildAuth {
    /// Nothing said: children inherit the worker's environment as it is.
    Inherit,
    /// Authentication is off: children get `FLINT_AUTH_ENABLED=false`.
    Disabled,
    /// Children get this secret in `FLINT_AUTH_SECRET`.
    Secret(flint_rpc::Secret),
}

static CHILD_AUTH: RwLock<ChildAuth> = RwLock::new(ChildAuth::Inherit);

/// Sets what every child started from now on is told about the cluster secret:
/// `Some(secret)` puts it in [`flint_rpc::secret::SECRET_ENV`] of the child's
/// environment (the child's executor or driver then authenticates with it to the
/// driver and the master), `None` means authentication is off and sets
/// [`flint_rpc::secret::ENABLED_ENV`] to `false`. The secret is never put on the
/// child's command line. Until this is called, children inherit the worker's own
/// environment unchanged.
///
/// It is one setting for the process: every worker in it (an embedded cluster)
/// shares the secret.
pub fn set_child_secret(secret: Option<flint_rpc::Secret>) {
    let auth = match secret {
        Some(s) => ChildAuth::Secret(s),
        None => ChildAuth::Disabled,
    };
    *CHILD_AUTH.write().unwrap_or_else(|p| p.into_inner()) = auth;
}

/// Adds what [`set_child_secret`] said to a child's environment.
fn apply_child_auth(cmd: &mut Command) {
    use flint_rpc::secret::{ENABLED_ENV, SECRET_ENV, SECRET_FILE_ENV};
    match &*CHILD_AUTH.read().unwrap_or_else(|p| p.into_inner()) {
        ChildAuth::Inherit => {}
        ChildAuth::Disabled => {
            cmd.env_remove(SECRET_ENV)
                .env_remove(SECRET_FILE_ENV)
                .env(ENABLED_ENV, "false");
        }
        ChildAuth::Secret(secret) => {
            cmd.env(SECRET_ENV, secret.to_env_value())
                .env_remove(SECRET_FILE_ENV)
                .env_remove(ENABLED_ENV);
        }
    }
}

/// Everything needed to start one child process.
#[derive(Debug, Clone, Default)]
pub struct LaunchSpec {
    /// Executor or driver (only the stderr header differs).
    pub kind: ChildKind,
    /// The program to run, before placeholder substitution (`{{BINARY}}` for a
    /// fetched binary); a bare name is looked up in `PATH`.
    pub program: PathBuf,
    /// Its arguments, before placeholder substitution.
    pub args: Vec<String>,
    /// Variables added to the worker's own environment, before placeholder
    /// substitution in their values. The cluster secret's variables are set after
    /// these (see [`set_child_secret`]).
    pub env: Vec<(String, String)>,
    /// The child's work directory, created if missing; it holds `stdout` and
    /// `stderr` and is the child's current directory.
    pub dir: PathBuf,
    /// Values for the placeholders.
    pub placeholders: Placeholders,
}

impl LaunchSpec {
    /// The program with placeholders substituted.
    pub fn resolved_program(&self) -> PathBuf {
        match self.program.to_str() {
            Some(p) => PathBuf::from(self.placeholders.substitute(p)),
            None => self.program.clone(),
        }
    }

    /// The arguments with placeholders substituted.
    pub fn resolved_args(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|arg| self.placeholders.substitute(arg))
            .collect()
    }

    /// The extra environment with placeholders substituted in the values.
    pub fn resolved_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(key, value)| (key.clone(), self.placeholders.substitute(value)))
            .collect()
    }

    /// The command line as shown in the stderr header and in errors: the
    /// program and the resolved arguments, each in double quotes, as Spark
    /// prints it. The environment is not shown (it may hold secrets).
    pub fn display_command(&self) -> String {
        let mut shown = format!("\"{}\"", self.resolved_program().display());
        for arg in self.resolved_args() {
            shown.push_str(" \"");
            shown.push_str(&arg);
            shown.push('"');
        }
        shown
    }
}

/// `work_dir/<app_id>/<executor_id>`, the work directory of an executor,
/// after checking that both ids are plain directory names.
pub fn executor_work_dir(
    work_dir: &Path,
    app_id: &str,
    executor_id: &str,
) -> Result<PathBuf, RunnerError> {
    check_dir_name("application id", app_id)?;
    check_dir_name("executor id", executor_id)?;
    Ok(work_dir.join(app_id).join(executor_id))
}

/// `work_dir/<driver_id>`, the work directory of a driver, after checking that
/// the id is a plain directory name.
pub fn driver_work_dir(work_dir: &Path, driver_id: &str) -> Result<PathBuf, RunnerError> {
    check_dir_name("driver id", driver_id)?;
    Ok(work_dir.join(driver_id))
}

fn check_dir_name(what: &'static str, id: &str) -> Result<(), RunnerError> {
    if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\0']) {
        return Err(RunnerError::InvalidId {
            what,
            id: id.to_owned(),
        });
    }
    Ok(())
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
    /// It is gone but its status could not be collected, because something
    /// else in the worker process reaped it (e.g. a `waitpid(-1)` elsewhere or
    /// SIGCHLD set to be ignored).
    Unknown,
}

impl ExitStatus {
    /// Decodes a status as returned by `waitpid`.
    pub fn from_wait_status(status: libc::c_int) -> Self {
        if libc::WIFEXITED(status) {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            }
        } else {
            ExitStatus::Unknown
        }
    }

    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(*code),
            _ => None,
        }
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Signaled { signal, .. } => Some(*signal),
            _ => None,
        }
    }

    /// A human summary: `exited with code 1`, `killed by signal 9 (SIGKILL)`.
    /// Same as the `Display` form.
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by signal {signal}")?;
                if let Some(name) = signal_name(*signal) {
                    write!(f, " ({name})")?;
                }
                if *core_dumped {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
            ExitStatus::Unknown => write!(f, "exit status unknown (reaped elsewhere)"),
        }
    }
}

/// The name of a signal (`SIGKILL` for 9), for the usual signals.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    const NAMES: &[(libc::c_int, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGSYS, "SIGSYS"),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        (libc::SIGPWR, "SIGPWR"),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        (libc::SIGSTKFLT, "SIGSTKFLT"),
    ];
    NAMES
        .iter()
        .find(|(number, _)| *number == signal)
        .map(|(_, name)| *name)
}

/// State shared by a [`RunningChild`] and its reaper thread.
#[derive(Debug)]
struct Shared {
    pid: libc::pid_t,
    command: String,
    /// Whether the direct child is a [`supervise`](crate::supervise) process, which
    /// kills the whole tree on [`supervise::KILL_TREE`](crate::supervise::KILL_TREE).
    supervised: bool,
    /// `Some` once the child has been reaped. The reaper reaps while holding
    /// this lock and signals are sent while holding it, so a signal never
    /// reaches a reused pid.
    reaped: Mutex<Option<ExitStatus>>,
    /// Publishes the status after reaping.
    status_tx: watch::Sender<Option<ExitStatus>>,
    /// Disconnected once each log copier has drained its pipe; the reaper waits
    /// for them (bounded by [`COPIER_DRAIN`]) before publishing the status, so a
    /// reported exit means the child's output is in its files.
    copiers: Mutex<Vec<mpsc::Receiver<()>>>,
}

/// How long the reaper waits for a child's log copiers after it exited (a
/// descendant that escaped the kill may hold a pipe open).
const COPIER_DRAIN: Duration = Duration::from_secs(2);

impl Shared {
    /// Kills everything the child started: through its supervisor (which SIGKILLs
    /// every descendant, also those outside the group, then exits), else SIGKILL to
    /// the group.
    fn kill_tree(&self) -> bool {
        if !self.supervised {
            return self.signal_group(libc::SIGKILL);
        }
        let reaped = self.reaped.lock();
        if reaped.is_some() {
            return false;
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the supervisor is
        // not reaped (we hold the lock the reaper needs), so `pid` is still ours.
        unsafe { libc::kill(self.pid, crate::supervise::KILL_TREE) };
        true
    }

    /// Sends `signal` to the child's process group unless the child has been
    /// reaped. Returns whether it was sent.
    fn signal_group(&self, signal: libc::c_int) -> bool {
        let reaped = self.reaped.lock();
        if reaped.is_some() {
            return false;
        }
        // SAFETY: kill(2) has no memory-safety preconditions. The leader is not
        // reaped (we hold the lock the reaper needs), so `pid` is still our
        // child and the id of its process group.
        let rc = unsafe { libc::kill(-self.pid, signal) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(
                    pid = self.pid,
                    signal,
                    command = %self.command,
                    "cannot signal child process group: {err}"
                );
            }
        }
        true
    }
}

/// A started child process. Dropping it kills the child's process group with
/// SIGKILL; the child is reaped in the background either way.
#[derive(Debug)]
pub struct RunningChild {
    shared: Arc<Shared>,
    status_rx: watch::Receiver<Option<ExitStatus>>,
    dir: PathBuf,
}

impl RunningChild {
    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.shared.pid.unsigned_abs()
    }

    /// The child's work directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that receives the child's stdout.
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join(STDOUT_FILE)
    }

    /// The file that receives the child's stderr.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join(STDERR_FILE)
    }

    /// The command line as written in the stderr header.
    pub fn command(&self) -> &str {
        &self.shared.command
    }

    /// The exit status if the child has exited and been reaped, without
    /// waiting.
    pub fn try_status(&self) -> Option<ExitStatus> {
        *self.status_rx.borrow()
    }

    /// Waits for the child to exit and be reaped. Cancel-safe, and may be
    /// called any number of times, also concurrently with [`Self::kill`].
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.status_rx.clone();
        let status = match rx.wait_for(Option::is_some).await {
            Ok(status) => status.unwrap_or(ExitStatus::Unknown),
            // The reaper always publishes before it ends, and we hold the
            // sender, so this cannot happen.
            Err(_) => ExitStatus::Unknown,
        };
        status
    }

    /// Sends `signal` to the child's whole process group, unless the child has
    /// already exited and been reaped. Returns whether it was sent.
    pub fn signal_group(&self, signal: i32) -> bool {
        self.shared.signal_group(signal)
    }

    /// Kills the child: SIGTERM (and SIGCONT, for a stopped child) to its process
    /// group, then SIGKILL to the group if the child has not exited after `grace`. Returns once the child has
    /// been reaped, with its status (which is that of an earlier exit if it had
    /// already ended). Needs a Tokio runtime with the time driver enabled.
    /// Cancelling it leaves the child running; dropping the handle still kills
    /// it.
    pub async fn kill(&self, grace: Duration) -> ExitStatus {
        if !self.shared.signal_group(libc::SIGTERM) {
            return self.wait().await;
        }
        // A stopped process (SIGSTOP: a frozen executor the driver gave up on) acts
        // on SIGTERM only once continued; systemd sends SIGCONT after SIGTERM too.
        self.shared.signal_group(libc::SIGCONT);
        if let Ok(status) = tokio::time::timeout(grace, self.wait()).await {
            return status;
        }
        tracing::info!(
            pid = self.shared.pid,
            command = %self.shared.command,
            "child did not exit {grace:?} after SIGTERM; sending SIGKILL"
        );
        self.shared.kill_tree();
        if self.shared.supervised {
            // The supervisor kills the tree and exits; should it not, kill the group.
            if let Ok(status) = tokio::time::timeout(SUPERVISOR_GRACE, self.wait()).await {
                return status;
            }
            self.shared.signal_group(libc::SIGKILL);
        }
        self.wait().await
    }
}

/// How long a supervisor may take to kill its child's tree before the worker
/// SIGKILLs the group itself.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(2);

impl Drop for RunningChild {
    fn drop(&mut self) {
        // The reaper thread holds its own reference and reaps the child.
        self.shared.kill_tree();
    }
}

/// Whether `program` can be executed: a path (relative to `dir`) must be an
/// executable file; a bare name must be one in `PATH`.
fn check_program(
    program: &std::ffi::OsStr,
    path: Option<&std::ffi::OsStr>,
    dir: &Path,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    let p = Path::new(program);
    if program.as_encoded_bytes().contains(&b'/') {
        let full = dir.join(p);
        if executable(&full) {
            return Ok(());
        }
        return Err(match fs::metadata(&full) {
            Err(e) => e,
            Ok(_) => io::Error::from(io::ErrorKind::PermissionDenied),
        });
    }
    let found = path
        .map(|path| std::env::split_paths(path).any(|d| executable(&d.join(p))))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(io::Error::from(io::ErrorKind::NotFound))
    }
}

/// The supervisor binary to start children under: `FLINT_SUPERVISOR`, else
/// `flint-supervise` next to this process's executable (where cargo and an install
/// put it beside `flint`). `None` (programs that embed a worker without shipping
/// the supervisor) falls back to the process group and the death signal alone.
fn supervisor() -> Option<&'static Path> {
    static SUPERVISOR: OnceLock<Option<PathBuf>> = OnceLock::new();
    SUPERVISOR
        .get_or_init(|| {
            let path = match std::env::var_os(crate::supervise::ENV) {
                Some(p) if p.is_empty() => return None,
                Some(p) => PathBuf::from(p),
                None => std::env::current_exe()
                    .ok()?
                    .parent()?
                    .join(crate::supervise::BINARY),
            };
            use std::os::unix::fs::PermissionsExt as _;
            let meta = fs::metadata(&path).ok()?;
            (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(path)
        })
        .as_deref()
}

/// One request to the spawner thread.
struct SpawnJob {
    spec: LaunchSpec,
    reply: oneshot::Sender<Result<RunningChild, RunnerError>>,
}

/// The channel to the `flint-spawner` thread, started on first use. The
/// thread runs for the life of the process, which is what keeps
/// `PR_SET_PDEATHSIG` from firing early.
fn spawner() -> &'static mpsc::Sender<SpawnJob> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let started = thread::Builder::new()
            .name("flint-spawner".to_owned())
            .spawn(move || {
                for job in rx {
                    // If the caller has gone away the child is dropped here,
                    // which kills it.
                    let _ = job.reply.send(launch(job.spec));
                }
            });
        if let Err(err) = started {
            // The receiver was dropped with the closure: every spawn will fail
            // with `SpawnerUnavailable`.
            tracing::error!("cannot start the flint-spawner thread: {err}");
        }
        tx
    })
}

/// Starts a child as described in the [module documentation](self).
///
/// Cancel-safe: if the returned future is dropped after the child started, the
/// child is killed and reaped.
pub async fn spawn(spec: LaunchSpec) -> Result<RunningChild, RunnerError> {
    let command = spec.display_command();
    let (reply, reply_rx) = oneshot::channel();
    if spawner().send(SpawnJob { spec, reply }).is_err() {
        return Err(RunnerError::SpawnerUnavailable { command });
    }
    match reply_rx.await {
        Ok(result) => result,
        Err(_) => Err(RunnerError::SpawnerUnavailable { command }),
    }
}

fn open_log(path: &Path) -> Result<File, RunnerError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| RunnerError::OpenLog {
            path: path.to_owned(),
            source,
        })
}

/// A pipe whose read end a [`LogCopier`] drains into a size-rolled file.
fn log_pipe(path: PathBuf, file: File, max_size: u64) -> Result<(Stdio, LogCopier), RunnerError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(RunnerError::OpenLog {
            path,
            source: io::Error::last_os_error(),
        });
    }
    use std::os::fd::{FromRawFd as _, OwnedFd};
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let written = file.metadata().map_or(0, |m| m.len());
    Ok((
        Stdio::from(write),
        LogCopier {
            input: File::from(read),
            path,
            file,
            written,
            max_size,
        },
    ))
}

/// Copies a child's output from a pipe into its log file, rolling the file by size.
struct LogCopier {
    input: File,
    path: PathBuf,
    file: File,
    written: u64,
    max_size: u64,
}

impl LogCopier {
    /// Runs the copier on a thread of its own until EOF; the receiver disconnects
    /// when it is done. If no thread can be started the read end is dropped: the
    /// child's writes then fail (EPIPE) instead of blocking it.
    fn start(self) -> Option<mpsc::Receiver<()>> {
        let path = self.path.clone();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let started = thread::Builder::new()
            .name("flint-log-copy".to_owned())
            .stack_size(REAPER_STACK_SIZE)
            .spawn(move || {
                self.run();
                drop(done_tx);
            });
        match started {
            Ok(_) => Some(done_rx),
            Err(e) => {
                tracing::warn!("cannot start a thread to copy into {}: {e}", path.display());
                None
            }
        }
    }

    fn run(mut self) {
        use std::io::Read as _;
        let mut buf = vec![0u8; 64 * 1024];
        let mut failed = false;
        loop {
            let n = match self.input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("cannot read child output for {}: {e}", self.path.display());
                    break;
                }
            };
            // Keep draining after a write error so the child never blocks on a
            // full pipe; warn once.
            if let Err(e) = self.write(&buf[..n]) {
                if !failed {
                    tracing::warn!("cannot write child output to {}: {e}", self.path.display());
                    failed = true;
                }
            }
        }
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.written >= self.max_size {
                self.roll()?;
            }
            let room = usize::try_from(self.max_size - self.written).unwrap_or(usize::MAX);
            let (now, rest) = data.split_at(room.min(data.len()));
            self.file.write_all(now)?;
            self.written += now.len() as u64;
            data = rest;
        }
        Ok(())
    }

    /// `stdout.{N-1}` → `stdout.N` …, `stdout` → `stdout.1`, a new empty `stdout`.
    fn roll(&mut self) -> io::Result<()> {
        let rolled = |i: u32| {
            let mut name = self.path.as_os_str().to_owned();
            name.push(format!(".{i}"));
            PathBuf::from(name)
        };
        for i in (1..ROLLED_LOG_FILES).rev() {
            match fs::rename(rolled(i), rolled(i + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        fs::rename(&self.path, rolled(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// Runs on the spawner thread.
fn launch(spec: LaunchSpec) -> Result<RunningChild, RunnerError> {
    let command = spec.display_command();
    fs::create_dir_all(&spec.dir).map_err(|source| RunnerError::CreateDir {
        path: spec.dir.clone(),
        source,
    })?;
    let stdout_path = spec.dir.join(STDOUT_FILE);
    let stderr_path = spec.dir.join(STDERR_FILE);
    let stdout_file = open_log(&stdout_path)?;
    let mut stderr_file = open_log(&stderr_path)?;
    let header = format!(
        "{} {command}\n{}\n\n",
        spec.kind.header_label(),
        "=".repeat(40)
    );
    stderr_file
        .write_all(header.as_bytes())
        .map_err(|source| RunnerError::WriteHeader {
            path: stderr_path.clone(),
            source,
        })?;

    let max_size = LOG_MAX_SIZE.load(std::sync::atomic::Ordering::Relaxed);
    let (stdout, stdout_copier) = log_pipe(stdout_path.clone(), stdout_file, max_size)?;
    let (stderr, stderr_copier) = log_pipe(stderr_path.clone(), stderr_file, max_size)?;

    let program = spec.resolved_program();
    let supervisor = supervisor();
    if supervisor.is_some() {
        // The supervisor starts the program; a program that cannot be started is
        // still a launch failure of ours, reported as the spawn itself would.
        let path = spec
            .resolved_env()
            .into_iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| OsString::from(v))
            .or_else(|| std::env::var_os("PATH"));
        if let Err(source) = check_program(program.as_os_str(), path.as_deref(), &spec.dir) {
            return Err(RunnerError::Spawn {
                command,
                dir: spec.dir.clone(),
                source,
            });
        }
    }
    let mut cmd = match supervisor {
        Some(sup) => {
            let mut c = Command::new(sup);
            c.arg(&program);
            c
        }
        None => Command::new(&program),
    };
    cmd.args(spec.resolved_args()).envs(spec.resolved_env());
    apply_child_auth(&mut cmd);
    cmd.current_dir(&spec.dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // async-signal-safe calls (prctl, getppid, _exit), does not allocate and
    // touches no lock.
    unsafe {
        cmd.pre_exec(move || die_with_parent(parent));
    }
    let child = cmd.spawn().map_err(|source| RunnerError::Spawn {
        command: command.clone(),
        dir: spec.dir.clone(),
        source,
    })?;
    // Our copies of the pipes' write ends go with the command, so the copiers see
    // EOF once the child (and whatever it started) has gone.
    drop(cmd);
    let copiers: Vec<mpsc::Receiver<()>> = [stdout_copier.start(), stderr_copier.start()]
        .into_iter()
        .flatten()
        .collect();
    // From here on we wait for and signal the child by pid ourselves; dropping
    // std's handle neither waits nor kills.
    let pid = libc::pid_t::try_from(child.id()).unwrap_or(libc::pid_t::MAX);
    drop(child);

    let (status_tx, status_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        pid,
        command: command.clone(),
        supervised: supervisor.is_some(),
        reaped: Mutex::new(None),
        status_tx,
        copiers: Mutex::new(copiers),
    });
    let reaper_shared = Arc::clone(&shared);
    let started = thread::Builder::new()
        .name(format!("flint-reap-{pid}"))
        .stack_size(REAPER_STACK_SIZE)
        .spawn(move || reap(&reaper_shared));
    if let Err(source) = started {
        // Nobody would wait for the child: kill and reap it here.
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not
        // reaped yet, so the group id is ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = wait_reap(pid);
        return Err(RunnerError::ReaperThread {
            pid: pid.unsigned_abs(),
            command,
            source,
        });
    }
    tracing::debug!(pid, %command, dir = %spec.dir.display(), "started child");
    Ok(RunningChild {
        shared,
        status_rx,
        dir: spec.dir,
    })
}

/// The `pre_exec` hook: ask for SIGKILL when the spawner thread (and so the
/// worker) dies, then make sure the worker did not die before we asked.
fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let kill = libc::SIGKILL as libc::c_ulong;
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on the calling
        // process and is async-signal-safe.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, kill, 0 as libc::c_ulong, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: getppid and _exit are async-signal-safe and have no
    // preconditions.
    unsafe {
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// Body of a reaper thread: wait for the exit, sweep the group, reap, publish.
fn reap(shared: &Shared) {
    let pid = shared.pid;
    let exited = loop {
        // SAFETY: an all-zero siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t. WNOWAIT leaves the
        // child a zombie, so its pid stays ours until `wait_reap`.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid.unsigned_abs(),
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            break true;
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        tracing::warn!(pid, command = %shared.command, "cannot wait for child: {err}");
        break false;
    };
    let status = {
        let mut reaped = shared.reaped.lock();
        let status = if exited {
            // The leader is a zombie, which pins its process group id: kill
            // whatever it left behind in its group, then reap it.
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            wait_reap(pid)
        } else {
            ExitStatus::Unknown
        };
        *reaped = Some(status);
        status
    };
    let deadline = std::time::Instant::now() + COPIER_DRAIN;
    for done in shared.copiers.lock().drain(..) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(left) {
            tracing::warn!(pid, command = %shared.command, "child output still open after its exit");
        }
    }
    tracing::debug!(pid, command = %shared.command, "child {status}");
    shared.status_tx.send_replace(Some(status));
}

/// Blocking `waitpid` for one child.
fn wait_reap(pid: libc::pid_t) -> ExitStatus {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable int.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return ExitStatus::from_wait_status(status);
        }
        if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return ExitStatus::Unknown;
    }
}

/// Removes the application directories under `work_dir` that are old and not
/// running (the body of Spark's `WorkDirCleanup`, run every
/// `spark.worker.cleanup.interval`, [`DEFAULT_CLEANUP_INTERVAL`]).
///
/// A directory directly under `work_dir` is removed when its name is not in
/// `running_app_ids` (pass the ids of running applications *and* drivers, whose
/// directories also live there) and neither it nor anything below it was
/// modified within `ttl` before `now` (`spark.worker.cleanup.appDataTtl`,
/// [`DEFAULT_APP_DATA_TTL`]). Files and symbolic links directly under
/// `work_dir` are left alone, and symbolic links below are not followed.
///
/// Returns the directories removed. Only failing to list `work_dir` is an
/// error; a directory that cannot be inspected or removed is logged and
/// skipped so that one bad directory does not stop the rest. Blocking: run it
/// on a blocking thread.
pub fn cleanup_old_app_dirs(
    work_dir: &Path,
    ttl: Duration,
    running_app_ids: &HashSet<String>,
    now: SystemTime,
) -> Result<Vec<PathBuf>, RunnerError> {
    let entries = fs::read_dir(work_dir).map_err(|source| RunnerError::ReadWorkDir {
        path: work_dir.to_owned(),
        source,
    })?;
    let mut removed = Vec::new();
    // Nothing can be older than `ttl` if `now - ttl` is before the epoch.
    let Some(cutoff) = now.checked_sub(ttl) else {
        return Ok(removed);
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(dir = %work_dir.display(), "cannot read work directory entry: {err}");
                continue;
            }
        };
        let path = entry.path();
        match entry.file_type() {
            Ok(file_type) if file_type.is_dir() => {}
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(path = %path.display(), "cannot inspect: {err}");
                continue;
            }
        }
        // The binary cache bounds itself (crate::binaries); it is no app dir.
        let running = entry.file_name().to_str().is_some_and(|name| {
            running_app_ids.contains(name) || name == crate::binaries::BINARY_CACHE_DIR
        });
        if running {
            continue;
        }
        match modified_since(&path, cutoff) {
            Ok(false) => {}
            Ok(true) => continue,
            Err(err) => {
                tracing::warn!(path = %path.display(), "cannot inspect application directory, keeping it: {err}");
                continue;
            }
        }
        tracing::info!(path = %path.display(), "removing old application directory");
        match fs::remove_dir_all(&path) {
            Ok(()) => removed.push(path),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %path.display(), "cannot remove application directory: {err}");
            }
        }
    }
    Ok(removed)
}

/// Whether `dir` or anything below it (not following symbolic links) has a
/// modification time at or after `cutoff`. Entries that vanish meanwhile are
/// ignored.
fn modified_since(dir: &Path, cutoff: SystemTime) -> io::Result<bool> {
    if fs::symlink_metadata(dir)?.modified()? >= cutoff {
        return Ok(true);
    }
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let entries = match fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            // DirEntry::metadata does not follow symbolic links.
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            if metadata.modified()? >= cutoff {
                return Ok(true);
            }
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_command_quotes_like_spark() {
        let spec = LaunchSpec {
            program: PathBuf::from("/bin/exe"),
            args: vec!["--id".to_owned(), "{{EXECUTOR_ID}}".to_owned()],
            placeholders: Placeholders {
                executor_id: "7".to_owned(),
                ..Placeholders::default()
            },
            ..LaunchSpec::default()
        };
        assert_eq!(spec.display_command(), "\"/bin/exe\" \"--id\" \"7\"");
        let spec = LaunchSpec {
            program: PathBuf::from("{{BINARY}}"),
            placeholders: Placeholders {
                binary: Some("/w/binaries/ab".to_owned()),
                ..Placeholders::default()
            },
            ..LaunchSpec::default()
        };
        assert_eq!(spec.display_command(), "\"/w/binaries/ab\"");
    }

    #[test]
    fn describes_exit_statuses() {
        assert_eq!(ExitStatus::Exited(1).describe(), "exited with code 1");
        assert_eq!(ExitStatus::Exited(0).to_string(), "exited with code 0");
        let killed = ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false,
        };
        assert_eq!(killed.describe(), "killed by signal 9 (SIGKILL)");
        let segv = ExitStatus::Signaled {
            signal: libc::SIGSEGV,
            core_dumped: true,
        };
        assert_eq!(
            segv.describe(),
            "killed by signal 11 (SIGSEGV) (core dumped)"
        );
        let odd = ExitStatus::Signaled {
            signal: 99,
            core_dumped: false,
        };
        assert_eq!(odd.describe(), "killed by signal 99");
        assert!(ExitStatus::Exited(0).success());
        assert!(!killed.success());
        assert_eq!(killed.signal(), Some(9));
        assert_eq!(ExitStatus::Exited(3).code(), Some(3));
    }

    #[test]
    fn decodes_wait_statuses() {
        // Exit code in bits 8..16; a terminating signal in the low 7 bits.
        assert_eq!(ExitStatus::from_wait_status(3 << 8), ExitStatus::Exited(3));
        assert_eq!(
            ExitStatus::from_wait_status(libc::SIGTERM),
            ExitStatus::Signaled {
                signal: libc::SIGTERM,
                core_dumped: false
            }
        );
    }

    /// The only test in this binary that starts children, so it alone sets the
    /// process-wide child secret.
    #[tokio::test]
    async fn children_get_the_secret_in_their_environment_never_in_argv() {
        let work = tempfile::tempdir().unwrap();
        let secret = flint_rpc::Secret::new("0123abcd-cluster-secret");
        let spec = |dir: &str| LaunchSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".to_owned(),
                "printf '%s|%s|%s' \"$FLINT_AUTH_SECRET\" \"$FLINT_AUTH_ENABLED\" \
                 \"$FLINT_AUTH_SECRET_FILE\"; tr '\\0' ' ' < /proc/$$/cmdline >&2"
                    .to_owned(),
            ],
            // What an application's command asks for does not win.
            env: vec![
                ("FLINT_AUTH_SECRET".to_owned(), "from-the-app".to_owned()),
                ("FLINT_AUTH_SECRET_FILE".to_owned(), "/elsewhere".to_owned()),
            ],
            dir: work.path().join(dir),
            ..LaunchSpec::default()
        };
        let run = |spec: LaunchSpec| async move {
            let child = spawn(spec).await.unwrap();
            assert!(child.wait().await.success());
            let out = fs::read_to_string(child.stdout_path()).unwrap();
            let err = fs::read_to_string(child.stderr_path()).unwrap();
            (out, err)
        };
        set_child_secret(Some(secret.clone()));
        let (out, err) = run(spec("with")).await;
        assert_eq!(out, "0123abcd-cluster-secret||");
        assert!(err.starts_with("Flint Executor Command:"), "{err}");
        assert!(!err.contains("0123abcd"), "the secret is in argv: {err}");
        set_child_secret(None);
        let (out, _) = run(spec("without")).await;
        assert_eq!(out, "|false|");
    }

    #[test]
    fn work_dirs_reject_unsafe_ids() {
        let root = Path::new("/w");
        assert_eq!(
            executor_work_dir(root, "app-1", "0").ok(),
            Some(PathBuf::from("/w/app-1/0"))
        );
        assert_eq!(
            driver_work_dir(root, "driver-1").ok(),
            Some(PathBuf::from("/w/driver-1"))
        );
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(executor_work_dir(root, bad, "0").is_err(), "{bad:?}");
            assert!(executor_work_dir(root, "app", bad).is_err(), "{bad:?}");
            assert!(driver_work_dir(root, bad).is_err(), "{bad:?}");
        }
        let err = executor_work_dir(root, "..", "0")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("application id \"..\"")));
    }
}
