//! `flint start-cluster` and `flint stop-cluster`: a master here and the workers
//! listed in `<conf-dir>/workers`, as background daemons, like Spark's
//! `sbin/start-all.sh` / `stop-all.sh` (with `spark-daemon.sh`'s pid and log files).
//!
//! Layout (Spark's variable in brackets):
//! - pid files in `$FLINT_PID_DIR` (`SPARK_PID_DIR`, default `/tmp`):
//!   `flint-master.pid`, `flint-worker-<n>.pid`;
//! - logs in `$FLINT_LOG_DIR` (`SPARK_LOG_DIR`, default `./logs`):
//!   `flint-master-<host>.out`, `flint-worker-<n>-<host>.out` (stdout and stderr,
//!   appended);
//! - `<conf-dir>/workers`: one host a line, `#` starts a comment; a missing file
//!   means one worker on `localhost`. `localhost`, `127.0.0.1` and this machine's
//!   hostname are started here; any other host over `ssh`, with the same binary
//!   path, directories and pid/log file names on that host. `<n>` counts a host's
//!   workers from 1 (every local name counts as one host), and worker `<n>` gets
//!   web UI port `$FLINT_WORKER_WEBUI_PORT + n - 1` (base 8081; 0 stays 0) and, when
//!   `$FLINT_WORKER_PORT` is set and not 0, RPC port `$FLINT_WORKER_PORT + n - 1`.
//!
//! The cluster secret: with none configured, `start-cluster` creates the default
//! secret file (`$FLINT_HOME/secret`, as `flint master` would) so that its own client,
//! the master and the local workers share it. For each remote worker it sends the
//! secret over the ssh connection's stdin (never on a command line) to a file of
//! mode 0600 on that host — the configured `auth.secret_file` path, else the remote
//! user's `${FLINT_HOME:-$HOME/.flint}/secret` — and starts the worker with
//! `FLINT_AUTH_SECRET_FILE` naming it. Local workers need nothing copied. With
//! `auth.enabled = false` nothing is copied and remote workers get
//! `FLINT_AUTH_ENABLED=false`.
//!
//! Daemons are this same binary (`flint master …`, `flint worker …`) in a session
//! of their own (`setsid`), so they outlive the command and its terminal. A pid
//! file only counts as running when its process is alive and is a flint daemon of
//! that role (`/proc/<pid>/cmdline`), so a reused pid is never signalled.

use std::fs::{self, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flint_proto::messages::{MasterMsg, RequestMasterState};
use flint_proto::status::MasterStatusJson;
use flint_rpc::secret::SecretSource;
use flint_rpc::{EndpointRef, RpcAddress, RpcConf, RpcEnv, Secret};

use crate::settings::{self, CommonArgs};

/// The master's pid file name in the pid directory.
const MASTER_PID_FILE: &str = "flint-master.pid";
/// How often waits re-check their condition.
const POLL: Duration = Duration::from_millis(50);
/// How long a process gets to disappear after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// ssh options when `$FLINT_SSH_OPTS` is not set (Spark's `SPARK_SSH_OPTS` default).
const DEFAULT_SSH_OPTS: &str = "-o StrictHostKeyChecking=no";

/// Arguments of `flint start-cluster`.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Directory with `workers` (one host a line) and `flint.toml`.
    #[arg(long, env = "FLINT_CONF_DIR", default_value = "conf")]
    pub conf_dir: PathBuf,
    /// Host the master binds and advertises (default: 127.0.0.1 when every worker
    /// is local, else this machine's hostname).
    #[arg(long, env = "FLINT_MASTER_HOST")]
    pub master_host: Option<String>,
    /// The master's RPC port (workers are told it, so it cannot be 0).
    #[arg(long, env = "FLINT_MASTER_PORT", default_value_t = flint_master::service::DEFAULT_PORT)]
    pub master_port: u16,
    /// The master's web UI and JSON status port.
    #[arg(long, env = "FLINT_MASTER_WEBUI_PORT",
          default_value_t = flint_master::service::DEFAULT_WEBUI_PORT)]
    pub webui_port: u16,
    /// How long to wait for the master to answer, and then for the workers to
    /// register (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub wait: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `flint stop-cluster`.
#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Directory with `workers`, to find the remote workers to stop.
    #[arg(long, env = "FLINT_CONF_DIR", default_value = "conf")]
    pub conf_dir: PathBuf,
    /// How long each daemon gets to exit after SIGTERM before SIGKILL (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = duration_arg)]
    pub timeout: Duration,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    flint_conf::parse_duration(text, flint_conf::TimeUnit::Seconds)
}

// ---------------------------------------------------------------------------
// Where things are
// ---------------------------------------------------------------------------

/// The directories and names every daemon file is derived from.
struct Layout {
    pid_dir: PathBuf,
    log_dir: PathBuf,
    conf_dir: PathBuf,
    /// The directory daemons run in (this command's, made absolute).
    cwd: PathBuf,
    /// This machine's hostname.
    hostname: String,
}

impl Layout {
    fn new(conf_dir: &Path) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let dir = |var: &str, default: &str| {
            let p = std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from);
            if p.is_absolute() {
                p
            } else {
                cwd.join(p)
            }
        };
        Ok(Layout {
            pid_dir: dir("FLINT_PID_DIR", "/tmp"),
            log_dir: dir("FLINT_LOG_DIR", "logs"),
            conf_dir: if conf_dir.is_absolute() {
                conf_dir.to_path_buf()
            } else {
                cwd.join(conf_dir)
            },
            cwd,
            hostname: hostname(),
        })
    }

    fn pid_file(&self, role: Role) -> PathBuf {
        self.pid_dir.join(role.pid_file_name())
    }

    /// The log file of `role` on `host`.
    fn log_file(&self, role: Role, host: &str) -> PathBuf {
        let host = file_safe(host);
        self.log_dir.join(match role {
            Role::Master => format!("flint-master-{host}.out"),
            Role::Worker(n) => format!("flint-worker-{n}-{host}.out"),
        })
    }

    fn workers_file(&self) -> PathBuf {
        self.conf_dir.join("workers")
    }

    fn create_dirs(&self) -> anyhow::Result<()> {
        for d in [&self.pid_dir, &self.log_dir] {
            fs::create_dir_all(d)
                .with_context(|| format!("cannot create directory {}", d.display()))?;
        }
        Ok(())
    }
}

/// A daemon: the master, or the `n`th worker of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Master,
    Worker(u32),
}

impl Role {
    /// The subcommand it runs as (`argv[1]`).
    fn subcommand(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker(_) => "worker",
        }
    }

    fn pid_file_name(self) -> String {
        match self {
            Role::Master => MASTER_PID_FILE.to_string(),
            Role::Worker(n) => format!("flint-worker-{n}.pid"),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Master => f.write_str("master"),
            Role::Worker(n) => write!(f, "worker {n}"),
        }
    }
}

/// One line of `conf/workers`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WorkerSlot {
    /// The host as written (may be `user@host` for ssh).
    host: String,
    /// Started here rather than over ssh.
    local: bool,
    /// Its number on its host, from 1.
    n: u32,
}

impl WorkerSlot {
    /// The host name the worker binds and advertises (without `user@`).
    fn bind_host(&self) -> &str {
        self.host.rsplit('@').next().unwrap_or(&self.host)
    }
}

/// The worker list: `<conf-dir>/workers`, or one `localhost` when it is missing.
fn read_workers(file: &Path, hostname: &str) -> anyhow::Result<Vec<WorkerSlot>> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => "localhost\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    parse_workers(&text, hostname)
        .with_context(|| format!("{} is not a valid workers file", file.display()))
}

fn parse_workers(text: &str, hostname: &str) -> anyhow::Result<Vec<WorkerSlot>> {
    let mut slots: Vec<WorkerSlot> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let host = line.split('#').next().unwrap_or("").trim();
        if host.is_empty() {
            continue;
        }
        let valid = !host.starts_with('-')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:@[]".contains(c));
        if !valid {
            bail!(
                "line {}: {host:?} is not a host name; write one host name or address a line",
                i + 1
            );
        }
        let local = is_local(host, hostname);
        let key = |s: &WorkerSlot| s.local == local && (local || s.host == host);
        let n = slots.iter().filter(|s| key(s)).count() as u32 + 1;
        slots.push(WorkerSlot {
            host: host.to_string(),
            local,
            n,
        });
    }
    Ok(slots)
}

fn is_local(host: &str, hostname: &str) -> bool {
    let h = host.to_ascii_lowercase();
    let me = hostname.to_ascii_lowercase();
    h == "localhost"
        || h == "127.0.0.1"
        || (!me.is_empty() && (h == me || Some(h.as_str()) == me.split('.').next()))
}

/// This machine's hostname (`localhost` if it cannot be read).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid and writable for `buf.len()` bytes; gethostname writes
    // at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// `text` with anything but `[A-Za-z0-9._-]` replaced, for use in a file name.
fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Pid files and processes
// ---------------------------------------------------------------------------

/// What a pid file says.
#[derive(Debug, PartialEq, Eq)]
enum Recorded {
    /// No pid file.
    Nothing,
    /// A pid file that holds no usable pid (its text).
    Garbage(String),
    /// A pid (always ≥ 2, so it never means "every process" to kill(2)).
    Pid(i32),
}

fn read_pid_file(path: &Path) -> anyhow::Result<Recorded> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(match text.trim().parse::<i32>() {
            Ok(pid) if pid >= 2 => Recorded::Pid(pid),
            _ => Recorded::Garbage(text.trim().chars().take(40).collect()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Recorded::Nothing),
        Err(e) => Err(e).with_context(|| format!("cannot read pid file {}", path.display())),
    }
}

fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    fs::write(path, format!("{pid}\n"))
        .with_context(|| format!("cannot write pid file {}", path.display()))
}

fn remove_pid_file(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove pid file {}", path.display())),
    }
}

/// What is behind a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// No such process (or only its zombie).
    Gone,
    /// A live process that is not a flint daemon of the expected role.
    Foreign,
    /// A live flint daemon of the expected role.
    Ours,
}

/// Whether `pid` is a live `flint <role.subcommand()> …` process.
fn probe(pid: i32, role: Role) -> Probe {
    if Path::new("/proc/self/stat").exists() {
        let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s,
            Err(_) => return Probe::Gone,
        };
        // The state follows the parenthesised command name, which may hold spaces.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        if matches!(state, Some('Z' | 'X') | None) {
            return Probe::Gone;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return Probe::Gone;
        };
        let mut args = cmdline.split(|&b| b == 0);
        let _exe = args.next();
        return if args.next() == Some(role.subcommand().as_bytes()) {
            Probe::Ours
        } else {
            Probe::Foreign
        };
    }
    // No /proc: all we can learn is whether the pid exists.
    match signal(pid, 0) {
        Ok(()) => Probe::Ours,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Probe::Ours,
        Err(_) => Probe::Gone,
    }
}

/// kill(2) on one process; refuses pids below 2 (0 and -1 mean groups).
fn signal(pid: i32, sig: libc::c_int) -> io::Result<()> {
    if pid < 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a single process.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes the pid file of `role` if its process is not running, saying so.
/// Fails when it is running.
fn clear_stale(layout: &Layout, role: Role) -> anyhow::Result<()> {
    let path = layout.pid_file(role);
    let why = match read_pid_file(&path)? {
        Recorded::Nothing => return Ok(()),
        Recorded::Garbage(text) => format!("it holds {text:?}, not a pid"),
        Recorded::Pid(pid) => match probe(pid, role) {
            Probe::Ours => bail!(
                "{role} already running as pid {pid} (pid file {}); stop it first with \
                 `flint stop-cluster`",
                path.display()
            ),
            Probe::Gone => format!("pid {pid} is not running"),
            Probe::Foreign => format!("pid {pid} is not a flint {}", role.subcommand()),
        },
    };
    remove_pid_file(&path)?;
    println!("removed stale pid file {} ({why})", path.display());
    Ok(())
}

/// The worker numbers that have a pid file in the pid directory, ascending.
fn local_worker_pid_files(pid_dir: &Path) -> anyhow::Result<Vec<u32>> {
    let entries = match fs::read_dir(pid_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot list pid directory {}", pid_dir.display()))
        }
    };
    let mut ns = Vec::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot list pid directory {}", pid_dir.display()))?;
        let name = entry.file_name();
        let n = name
            .to_str()
            .and_then(|s| s.strip_prefix("flint-worker-"))
            .and_then(|s| s.strip_suffix(".pid"))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(n) = n {
            ns.push(n);
        }
    }
    ns.sort_unstable();
    Ok(ns)
}

/// Up to the last 20 lines of `path` from byte `from` on, indented, for errors.
fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_string(&mut text);
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        "  (the log is empty)".to_string()
    } else {
        tail.iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Starting daemons
// ---------------------------------------------------------------------------

/// A daemon started here.
struct Started {
    role: Role,
    child: Child,
    pid_file: PathBuf,
    log: PathBuf,
    /// The log's length before the daemon started: where its own lines begin.
    log_from: u64,
}

/// Starts `exe args…` in a new session, stdin from /dev/null, stdout and stderr
/// appended to `log`, and records its pid.
fn spawn_daemon(
    layout: &Layout,
    role: Role,
    exe: &Path,
    args: &[String],
    log: PathBuf,
) -> anyhow::Result<Started> {
    let log_from = file_len(&log);
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(&layout.cwd)
        .env("FLINT_CONF_DIR", &layout.conf_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: runs in the forked child before exec and only calls setsid, which is
    // async-signal-safe, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot start the {role}: {} {}",
            exe.display(),
            args.join(" ")
        )
    })?;
    let pid_file = layout.pid_file(role);
    write_pid_file(&pid_file, child.id())?;
    Ok(Started {
        role,
        child,
        pid_file,
        log,
        log_from,
    })
}

/// `--conf` and `--config` as given, for the daemons.
fn passthrough(common: &CommonArgs, cwd: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for c in &common.conf {
        out.push("--conf".to_string());
        out.push(c.clone());
    }
    if let Some(file) = &common.config {
        out.push("--config".to_string());
        out.push(cwd.join(file).display().to_string());
    }
    out
}

/// `$FLINT_WORKER_WEBUI_PORT` and `$FLINT_WORKER_PORT`: the bases worker `n`'s
/// ports count up from.
#[derive(Debug, Default)]
struct PortBases {
    webui: Option<String>,
    rpc: Option<String>,
}

impl PortBases {
    fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|t| !t.trim().is_empty());
        PortBases {
            webui: var("FLINT_WORKER_WEBUI_PORT"),
            rpc: var("FLINT_WORKER_PORT"),
        }
    }
}

/// Worker `n`'s port from the base `text` in `var` (`base + n - 1`; 0 stays 0), or
/// `None` when unset.
fn instance_port(var: &str, text: Option<&str>, n: u32) -> anyhow::Result<Option<u16>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let base: u16 = text
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{var}={text:?} is not a port number (0-65535)"))?;
    if base == 0 {
        return Ok(Some(0));
    }
    u16::try_from(u32::from(base) + n - 1)
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{var}={base} + worker {n} - 1 is past port 65535"))
}

/// The `flint worker …` arguments for `slot`.
fn worker_args(
    slot: &WorkerSlot,
    master: &RpcAddress,
    ports: &PortBases,
    pass: &[String],
) -> anyhow::Result<Vec<String>> {
    let webui = instance_port("FLINT_WORKER_WEBUI_PORT", ports.webui.as_deref(), slot.n)?
        .unwrap_or_else(|| {
            let base = u32::from(flint_worker::service::DEFAULT_WEBUI_PORT);
            u16::try_from(base + slot.n - 1).unwrap_or(0)
        });
    let mut args = vec![
        "worker".to_string(),
        master.to_string(),
        "--webui-port".to_string(),
        webui.to_string(),
    ];
    let rpc = instance_port("FLINT_WORKER_PORT", ports.rpc.as_deref(), slot.n)?;
    if let Some(port) = rpc.filter(|p| *p != 0) {
        args.extend(["--port".to_string(), port.to_string()]);
    }
    if !slot.local {
        args.extend(["--host".to_string(), slot.bind_host().to_string()]);
    }
    args.extend(pass.iter().cloned());
    Ok(args)
}

/// `text` quoted for a POSIX shell (unchanged when it needs no quoting).
fn sh_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The shell function remote scripts use: is `$1` a live `flint worker`?
const REMOTE_RUNNING_FN: &str =
    "running() { ps -p \"$1\" -o args= 2>/dev/null | grep -q -e ' worker '; }";

/// What a remote worker is given about the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RemoteSecret {
    /// Nothing (TLS authenticates).
    Nothing,
    /// Authentication is off: `FLINT_AUTH_ENABLED=false`.
    Disabled,
    /// The secret, written from the script's stdin to this path (`None`: the remote
    /// user's default, `${FLINT_HOME:-$HOME/.flint}/secret`).
    CopyTo(Option<PathBuf>),
}

impl RemoteSecret {
    /// From the secret this command resolved; a configured file keeps its path.
    fn new(auth: &flint_rpc::secret::Resolved, cwd: &Path) -> Self {
        match (&auth.secret, &auth.source) {
            (None, SecretSource::Disabled) => RemoteSecret::Disabled,
            (None, _) => RemoteSecret::Nothing,
            (Some(_), SecretSource::File(p)) => RemoteSecret::CopyTo(Some(cwd.join(p))),
            (Some(_), _) => RemoteSecret::CopyTo(None),
        }
    }
}

/// The script run on a remote host to start worker `slot.n` there. With
/// [`RemoteSecret::CopyTo`] it first writes its stdin (the secret) to the file,
/// mode 0600, through a temporary file renamed into place.
fn remote_start_script(
    layout: &Layout,
    slot: &WorkerSlot,
    exe: &Path,
    args: &[String],
    secret: &RemoteSecret,
) -> String {
    let role = Role::Worker(slot.n);
    let pid_file = sh_quote(&layout.pid_file(role).display().to_string());
    let log = sh_quote(
        &layout
            .log_file(role, slot.bind_host())
            .display()
            .to_string(),
    );
    let command: Vec<String> = std::iter::once(exe.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| sh_quote(&a))
        .collect();
    let (copy, auth_env) = match secret {
        RemoteSecret::Nothing => (Vec::new(), String::new()),
        RemoteSecret::Disabled => (Vec::new(), "FLINT_AUTH_ENABLED=false ".to_string()),
        RemoteSecret::CopyTo(path) => {
            let dest = match path {
                Some(p) => sh_quote(&p.display().to_string()),
                None => "\"${FLINT_HOME:-$HOME/.flint}/secret\"".to_string(),
            };
            (
                vec![
                    format!("sf={dest}"),
                    "(umask 077 && mkdir -p \"$(dirname \"$sf\")\" && cat > \"$sf.tmp.$$\" && \
                     chmod 600 \"$sf.tmp.$$\" && mv -f \"$sf.tmp.$$\" \"$sf\") || { rm -f \
                     \"$sf.tmp.$$\"; echo \"cannot write the cluster secret to $sf\"; exit 1; }"
                        .to_string(),
                    "echo \"copied the cluster secret to $sf (mode 0600)\"".to_string(),
                ],
                "FLINT_AUTH_SECRET_FILE=\"$sf\" ".to_string(),
            )
        }
    };
    let mut lines = vec![
        format!(
            "cd {} || exit 1",
            sh_quote(&layout.cwd.display().to_string())
        ),
        format!(
            "mkdir -p {} {} || exit 1",
            sh_quote(&layout.pid_dir.display().to_string()),
            sh_quote(&layout.log_dir.display().to_string())
        ),
        REMOTE_RUNNING_FN.to_string(),
        format!("pf={pid_file}"),
        format!(
            "if [ -f \"$pf\" ] && pid=$(cat \"$pf\") && running \"$pid\"; then echo \"{role} \
             already running as pid $pid (pid file $pf); stop it first\"; exit 3; fi"
        ),
    ];
    lines.extend(copy);
    lines.extend([
        format!(
            "FLINT_CONF_DIR={} {auth_env}nohup {} >> {log} 2>&1 < /dev/null &",
            sh_quote(&layout.conf_dir.display().to_string()),
            command.join(" ")
        ),
        "echo $! > \"$pf\" || exit 1".to_string(),
        format!("echo \"started {role} (pid $!)\""),
    ]);
    lines.join("\n")
}

/// The script run on a remote host to stop worker `n` there: SIGTERM, up to
/// `timeout` for it to exit, then SIGKILL; the pid file is removed.
fn remote_stop_script(layout: &Layout, n: u32, timeout: Duration) -> String {
    let role = Role::Worker(n);
    let pid_file = sh_quote(&layout.pid_file(role).display().to_string());
    let secs = timeout.as_secs_f64().ceil() as u64;
    [
        REMOTE_RUNNING_FN.to_string(),
        format!("pf={pid_file}"),
        format!(
            "if [ ! -f \"$pf\" ]; then echo \"no {role} running (no pid file $pf)\"; exit 0; fi"
        ),
        "pid=$(cat \"$pf\")".to_string(),
        format!(
            "case \"$pid\" in ''|*[!0-9]*|0|1) rm -f \"$pf\"; echo \"{role}: no worker running \
             (stale pid file $pf removed)\"; exit 0;; esac"
        ),
        format!(
            "if ! running \"$pid\"; then rm -f \"$pf\"; echo \"{role}: no worker running \
             (stale pid file $pf removed)\"; exit 0; fi"
        ),
        "kill \"$pid\" || exit 1".to_string(),
        "i=0".to_string(),
        format!("while running \"$pid\" && [ $i -lt {secs} ]; do sleep 1; i=$((i+1)); done"),
        format!(
            "if running \"$pid\"; then kill -9 \"$pid\"; echo \"killed {role} (pid $pid) with \
             SIGKILL: it did not exit within {secs}s of SIGTERM\"; else echo \"stopped {role} \
             (pid $pid)\"; fi"
        ),
        "rm -f \"$pf\"".to_string(),
    ]
    .join("\n")
}

/// The ssh options: `$FLINT_SSH_OPTS`, default `-o StrictHostKeyChecking=no`.
fn ssh_opts() -> String {
    std::env::var("FLINT_SSH_OPTS").unwrap_or_else(|_| DEFAULT_SSH_OPTS.to_string())
}

/// `ssh <opts> <host> <script>`.
fn ssh_command(opts: &str, host: &str, script: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(opts.split_whitespace())
        .arg(host)
        .arg(script)
        .stdin(Stdio::null());
    cmd
}

/// Runs a script on `host` over ssh, printing its output; fails unless it exits 0.
fn run_remote(ssh_opts: &str, host: &str, script: &str) -> anyhow::Result<()> {
    run_remote_with_input(ssh_opts, host, script, None)
}

/// [`run_remote`], writing `input` (the secret) to the script's stdin.
fn run_remote_with_input(
    ssh_opts: &str,
    host: &str,
    script: &str,
    input: Option<&Secret>,
) -> anyhow::Result<()> {
    let mut cmd = ssh_command(ssh_opts, host, script);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .context("cannot run ssh (is it installed and on PATH?)")?;
    if let (Some(secret), Some(mut stdin)) = (input, child.stdin.take()) {
        // A script that fails before reading closes the pipe; its exit status says
        // what went wrong.
        let _ = stdin.write_all(secret.expose());
        let _ = stdin.write_all(b"\n");
    }
    let out = child
        .wait_with_output()
        .context("cannot run ssh (is it installed and on PATH?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        println!("{host}: {line}");
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = stdout
            .lines()
            .chain(stderr.lines())
            .collect::<Vec<_>>()
            .join("; ");
        bail!("on {host} over ssh ({}): {said}", out.status);
    }
    Ok(())
}

/// Asks the master for its state, for at most `within`.
async fn master_state(
    master: &EndpointRef<MasterMsg>,
    within: Duration,
) -> Option<MasterStatusJson> {
    match tokio::time::timeout(within, master.ask_timeout(RequestMasterState, within)).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    }
}

/// Whether a TCP connection to `addr` succeeds within `within`.
async fn port_open(addr: &RpcAddress, within: Duration) -> bool {
    let connect = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port));
    matches!(tokio::time::timeout(within, connect).await, Ok(Ok(_)))
}

/// Fails if a daemon started here has already exited, naming its log.
fn check_alive(d: &mut Started) -> anyhow::Result<()> {
    if let Ok(Some(status)) = d.child.try_wait() {
        let _ = remove_pid_file(&d.pid_file);
        bail!(
            "the {} (pid {}) exited ({status}); its log {} ends with:\n{}",
            d.role,
            d.child.id(),
            d.log.display(),
            log_tail(&d.log, d.log_from)
        );
    }
    Ok(())
}

/// SIGTERM, then SIGKILL after `grace`, to a daemon that is our child; reaps it
/// and removes its pid file.
async fn abandon(d: &mut Started, grace: Duration) {
    if let Ok(pid) = i32::try_from(d.child.id()) {
        let _ = signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while matches!(d.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }
    let _ = d.child.kill();
    let _ = d.child.wait();
    let _ = remove_pid_file(&d.pid_file);
}

/// The status URL the master printed in its log (`… status at URL`).
fn status_url_in_log(d: &Started) -> Option<String> {
    let mut text = String::new();
    let mut f = fs::File::open(&d.log).ok()?;
    f.seek(SeekFrom::Start(d.log_from)).ok()?;
    f.read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| {
        l.split_once("status at ")
            .map(|(_, url)| url.trim().to_string())
    })
}

/// What `start-cluster` works from, once the arguments are checked.
struct Plan {
    layout: Layout,
    slots: Vec<WorkerSlot>,
    /// This binary, started as every daemon.
    exe: PathBuf,
    /// `--conf` / `--config` for every daemon.
    pass: Vec<String>,
    master_url: RpcAddress,
    wait: Duration,
    ports: PortBases,
    ssh_opts: String,
    /// What remote workers get about the secret, and the secret to send them.
    remote_secret: RemoteSecret,
    secret: Option<Secret>,
}

/// `flint start-cluster`.
pub async fn start(args: StartArgs) -> anyhow::Result<()> {
    if args.master_port == 0 {
        bail!("--master-port 0 is not allowed: workers must be told the master's port");
    }
    let layout = Layout::new(&args.conf_dir)?;
    let slots = read_workers(&layout.workers_file(), &layout.hostname)?;
    let exe = std::env::current_exe().context("cannot find the path of this flint binary")?;

    // The CLI's own settings (for its RPC client) come from the same files.
    let mut common = args.common.clone();
    if common.config.is_none() {
        let file = layout.conf_dir.join("flint.toml");
        if file.is_file() {
            common.config = Some(file);
        }
    }
    let conf = settings::load(&common, &crate::known_keys())?;
    // With no secret configured, the master's default secret file is created here,
    // so that this command, the master and the local workers share it.
    let auth = crate::auth::for_master(&conf)?;
    let rpc_conf = RpcConf::from_conf(&conf)?;
    let pass = passthrough(&args.common, &layout.cwd);

    let host = args.master_host.clone().unwrap_or_else(|| {
        if slots.iter().all(|s| s.local) {
            "127.0.0.1".to_string()
        } else {
            layout.hostname.clone()
        }
    });
    // Parsing the URL rejects a bad host before anything starts.
    let master_url: RpcAddress = RpcAddress::new(host.clone(), args.master_port)
        .to_string()
        .parse()
        .with_context(|| format!("--master-host {host:?} is not a valid host"))?;

    // Refuse before starting anything if a daemon of ours already runs here.
    layout.create_dirs()?;
    clear_stale(&layout, Role::Master)?;
    for n in local_worker_pid_files(&layout.pid_dir)? {
        clear_stale(&layout, Role::Worker(n))?;
    }

    let master_args: Vec<String> = [
        "master".to_string(),
        "--host".to_string(),
        host,
        "--port".to_string(),
        args.master_port.to_string(),
        "--webui-port".to_string(),
        args.webui_port.to_string(),
    ]
    .into_iter()
    .chain(pass.iter().cloned())
    .collect();
    let master_log = layout.log_file(Role::Master, &layout.hostname);
    let mut master = spawn_daemon(&layout, Role::Master, &exe, &master_args, master_log)?;
    println!(
        "started master (pid {}), log {}",
        master.child.id(),
        master.log.display()
    );

    let remote_secret = RemoteSecret::new(&auth, &layout.cwd);
    let plan = Plan {
        layout,
        slots,
        exe,
        pass,
        master_url,
        wait: args.wait,
        ports: PortBases::from_env(),
        ssh_opts: ssh_opts(),
        remote_secret,
        secret: auth.secret.clone(),
    };
    let env = match RpcEnv::client(rpc_conf) {
        Ok(env) => env,
        Err(e) => {
            abandon(&mut master, KILL_GRACE).await;
            return Err(e).context("cannot start an RPC client to ask the master");
        }
    };
    let master_ref = env.endpoint_ref::<MasterMsg>(&plan.master_url, "Master");
    let result = start_rest(&plan, &master_ref, &mut master).await;
    env.shutdown();
    result
}

/// Everything after the master process exists: wait for it to answer, start the
/// workers, wait for them to register, report.
async fn start_rest(
    plan: &Plan,
    master_ref: &EndpointRef<MasterMsg>,
    master: &mut Started,
) -> anyhow::Result<()> {
    let master_url = &plan.master_url;
    // 1. The master answers.
    let deadline = Instant::now() + plan.wait;
    loop {
        check_alive(master)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let pid = master.child.id();
            abandon(master, KILL_GRACE).await;
            bail!(
                "the master (pid {pid}) did not answer at {master_url} within {:?}, so it was \
                 stopped; its log {} ends with:\n{}\n(a slow machine may need a longer --wait)",
                plan.wait,
                master.log.display(),
                log_tail(&master.log, master.log_from)
            );
        }
        // Ask only once the port accepts, so the RPC client does not log a refused
        // connection for every try while the master starts.
        let within = left.min(Duration::from_secs(1));
        if port_open(master_url, within).await && master_state(master_ref, within).await.is_some() {
            break;
        }
        tokio::time::sleep(POLL.min(left)).await;
    }
    println!("master is up at {master_url}");

    // 2. The workers.
    let layout = &plan.layout;
    let mut locals = Vec::new();
    let mut errors = Vec::new();
    let mut remote_started = 0usize;
    for slot in &plan.slots {
        let role = Role::Worker(slot.n);
        let started = worker_args(slot, master_url, &plan.ports, &plan.pass).and_then(|wargs| {
            if slot.local {
                let log = layout.log_file(role, &layout.hostname);
                let d = spawn_daemon(layout, role, &plan.exe, &wargs, log)?;
                println!(
                    "started {role} (pid {}) on {}, log {}",
                    d.child.id(),
                    slot.host,
                    d.log.display()
                );
                locals.push(d);
            } else {
                let script =
                    remote_start_script(layout, slot, &plan.exe, &wargs, &plan.remote_secret);
                let input = match plan.remote_secret {
                    RemoteSecret::CopyTo(_) => plan.secret.as_ref(),
                    _ => None,
                };
                run_remote_with_input(&plan.ssh_opts, &slot.host, &script, input)?;
                println!(
                    "{}: {role} logs to {} there",
                    slot.host,
                    layout.log_file(role, slot.bind_host()).display()
                );
                remote_started += 1;
            }
            Ok(())
        });
        if let Err(e) = started {
            errors.push(format!("{role} on {}: {e:#}", slot.host));
        }
    }
    if plan.slots.is_empty() {
        println!(
            "no workers listed in {}; only the master was started",
            layout.workers_file().display()
        );
    }

    // 3. They register (or a local one dies trying).
    let deadline = Instant::now() + plan.wait;
    let mut registered = 0usize;
    let mut want = locals.len() + remote_started;
    while want > 0 {
        locals.retain_mut(|d| match check_alive(d) {
            Ok(()) => true,
            Err(e) => {
                errors.push(format!("{e:#}"));
                false
            }
        });
        want = locals.len() + remote_started;
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(s) = master_state(master_ref, left.min(Duration::from_secs(1))).await {
            registered = s.alive_workers as usize;
        }
        if registered >= want || left.is_zero() {
            break;
        }
        tokio::time::sleep(POLL.min(left)).await;
    }
    if want > 0 {
        let note = if registered < want {
            " (the others may still be starting; see their logs)"
        } else {
            ""
        };
        println!("{registered} of {want} started workers registered with the master{note}");
    }

    let status = {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(url) = status_url_in_log(master) {
                break url;
            }
            if Instant::now() >= until {
                break format!("(see {})", master.log.display());
            }
            tokio::time::sleep(POLL).await;
        }
    };
    println!("master URL: {master_url}");
    println!("status:     {status}");
    if !errors.is_empty() {
        bail!(
            "some workers did not start (the rest of the cluster is running; `flint \
             stop-cluster` stops it):\n{}",
            errors.join("\n")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Stopping
// ---------------------------------------------------------------------------

/// A local daemon that was sent SIGTERM.
struct Stopping {
    role: Role,
    pid: i32,
    pid_file: PathBuf,
}

/// Sends SIGTERM to the daemon in `role`'s pid file, or cleans up a stale one.
/// `Ok(None)` when there is nothing to wait for.
fn terminate(layout: &Layout, role: Role) -> anyhow::Result<Option<Stopping>> {
    let path = layout.pid_file(role);
    let stale = |why: String| -> anyhow::Result<Option<Stopping>> {
        remove_pid_file(&path)?;
        println!(
            "{role}: no {} running (stale pid file {} removed: {why})",
            role.subcommand(),
            path.display()
        );
        Ok(None)
    };
    match read_pid_file(&path)? {
        Recorded::Nothing => Ok(None),
        Recorded::Garbage(text) => stale(format!("it holds {text:?}, not a pid")),
        Recorded::Pid(pid) => match probe(pid, role) {
            Probe::Gone => stale(format!("pid {pid} is not running")),
            Probe::Foreign => stale(format!("pid {pid} is not a flint {}", role.subcommand())),
            Probe::Ours => {
                signal(pid, libc::SIGTERM).with_context(|| {
                    format!(
                        "cannot send SIGTERM to the {role} (pid {pid}, pid file {})",
                        path.display()
                    )
                })?;
                Ok(Some(Stopping {
                    role,
                    pid,
                    pid_file: path,
                }))
            }
        },
    }
}

/// Waits up to `timeout` for every process to exit, then SIGKILLs the rest and
/// waits [`KILL_GRACE`] for them; removes the pid files of those that are gone.
async fn reap_all(stopping: Vec<Stopping>, timeout: Duration, errors: &mut Vec<String>) {
    let gone = |s: &Stopping| probe(s.pid, s.role) != Probe::Ours;
    let deadline = Instant::now() + timeout;
    while !stopping.iter().all(gone) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let mut killed = Vec::new();
    for s in &stopping {
        if !gone(s) {
            match signal(s.pid, libc::SIGKILL) {
                Ok(()) => killed.push(s.pid),
                Err(e) => errors.push(format!(
                    "cannot send SIGKILL to the {} (pid {}): {e}",
                    s.role, s.pid
                )),
            }
        }
    }
    if !killed.is_empty() {
        let deadline = Instant::now() + KILL_GRACE;
        while !stopping.iter().all(gone) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }
    for s in &stopping {
        if !gone(s) {
            errors.push(format!(
                "the {} (pid {}) is still running after SIGKILL; pid file {} kept",
                s.role,
                s.pid,
                s.pid_file.display()
            ));
            continue;
        }
        if let Err(e) = remove_pid_file(&s.pid_file) {
            errors.push(format!("{e:#}"));
        }
        if killed.contains(&s.pid) {
            println!(
                "killed {} (pid {}) with SIGKILL: it did not exit within {:?} of SIGTERM",
                s.role, s.pid, timeout
            );
        } else {
            println!("stopped {} (pid {})", s.role, s.pid);
        }
    }
}

/// `flint stop-cluster`.
pub async fn stop(args: StopArgs) -> anyhow::Result<()> {
    let layout = Layout::new(&args.conf_dir)?;
    let slots = read_workers(&layout.workers_file(), &layout.hostname)?;
    let ssh_opts = ssh_opts();
    let mut errors = Vec::new();

    // Workers first: the local ones, whatever pid files there are ...
    let worker_files = local_worker_pid_files(&layout.pid_dir)?;
    let mut stopping = Vec::new();
    for n in &worker_files {
        match terminate(&layout, Role::Worker(*n)) {
            Ok(Some(s)) => stopping.push(s),
            Ok(None) => {}
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    // ... the remote ones over ssh, while the local ones shut down ...
    for slot in slots.iter().filter(|s| !s.local) {
        let script = remote_stop_script(&layout, slot.n, args.timeout);
        if let Err(e) = run_remote(&ssh_opts, &slot.host, &script) {
            errors.push(format!("{} {e:#}", Role::Worker(slot.n)));
        }
    }
    if worker_files.is_empty() {
        println!(
            "no workers running here (no worker pid files in {})",
            layout.pid_dir.display()
        );
    }
    reap_all(stopping, args.timeout, &mut errors).await;

    // ... then the master.
    let master_pid_file = layout.pid_file(Role::Master);
    if read_pid_file(&master_pid_file)? == Recorded::Nothing {
        println!(
            "no master running (no pid file {})",
            master_pid_file.display()
        );
    } else {
        match terminate(&layout, Role::Master) {
            Ok(Some(s)) => reap_all(vec![s], args.timeout, &mut errors).await,
            Ok(None) => {}
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("not everything was stopped:\n{}", errors.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_file_numbers_each_hosts_workers_and_skips_comments() {
        let text =
            "# workers\nlocalhost\n\n  node-a  # rack 1\n127.0.0.1\nbox\nnode-a\nuser@node-b\n";
        let slots = parse_workers(text, "box.example.com").unwrap();
        let got: Vec<(&str, bool, u32)> = slots
            .iter()
            .map(|s| (s.host.as_str(), s.local, s.n))
            .collect();
        assert_eq!(
            got,
            [
                ("localhost", true, 1),
                ("node-a", false, 1),
                ("127.0.0.1", true, 2),
                ("box", true, 3),
                ("node-a", false, 2),
                ("user@node-b", false, 1),
            ]
        );
        assert_eq!(slots[5].bind_host(), "node-b");
    }

    #[test]
    fn workers_file_rejects_what_is_not_a_host() {
        for bad in ["-oProxyCommand=x", "a b", "h;rm", "$(id)"] {
            let err = parse_workers(&format!("localhost\n{bad}\n"), "me").unwrap_err();
            assert!(err.to_string().contains("line 2"), "{err}");
        }
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(sh_quote("/usr/bin/flint"), "/usr/bin/flint");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$(id)"), "'$(id)'");
    }

    #[test]
    fn remote_scripts_name_the_same_files_and_quote_arguments() {
        let layout = Layout {
            pid_dir: PathBuf::from("/var/run/flint pids"),
            log_dir: PathBuf::from("/opt/flint/logs"),
            conf_dir: PathBuf::from("/opt/flint/conf"),
            cwd: PathBuf::from("/opt/flint"),
            hostname: "me".into(),
        };
        let slot = WorkerSlot {
            host: "ops@node-a".into(),
            local: false,
            n: 2,
        };
        let args = vec![
            "worker".into(),
            "flint://m:7077".into(),
            "--conf".into(),
            "a=b c".into(),
        ];
        let exe = Path::new("/opt/flint/flint");
        let s = remote_start_script(&layout, &slot, exe, &args, &RemoteSecret::Nothing);
        assert!(s.contains("cd /opt/flint || exit 1"), "{s}");
        assert!(
            s.contains("pf='/var/run/flint pids/flint-worker-2.pid'"),
            "{s}"
        );
        assert!(
            s.contains(
                "FLINT_CONF_DIR=/opt/flint/conf nohup /opt/flint/flint worker flint://m:7077 \
                 --conf 'a=b c' >> /opt/flint/logs/flint-worker-2-node-a.out 2>&1 < /dev/null &"
            ),
            "{s}"
        );
        assert!(!s.contains("secret"), "{s}");
        // The secret goes to the remote user's default file, from stdin, after the
        // check that the worker is not running yet; the worker is told the file.
        let s = remote_start_script(&layout, &slot, exe, &args, &RemoteSecret::CopyTo(None));
        let copy = s
            .find("sf=\"${FLINT_HOME:-$HOME/.flint}/secret\"\n")
            .expect(&s);
        assert!(s.find("already running").unwrap() < copy, "{s}");
        assert!(
            s.contains("(umask 077 && mkdir -p \"$(dirname \"$sf\")\" && cat > \"$sf.tmp.$$\" && chmod 600"),
            "{s}"
        );
        assert!(s.contains("mv -f \"$sf.tmp.$$\" \"$sf\")"), "{s}");
        assert!(
            s.contains("FLINT_CONF_DIR=/opt/flint/conf FLINT_AUTH_SECRET_FILE=\"$sf\" nohup /opt/flint/flint worker"),
            "{s}"
        );
        let to = RemoteSecret::CopyTo(Some(PathBuf::from("/etc/flint/cluster secret")));
        let s = remote_start_script(&layout, &slot, exe, &args, &to);
        assert!(s.contains("sf='/etc/flint/cluster secret'\n"), "{s}");
        let s = remote_start_script(&layout, &slot, exe, &args, &RemoteSecret::Disabled);
        assert!(
            s.contains("FLINT_CONF_DIR=/opt/flint/conf FLINT_AUTH_ENABLED=false nohup"),
            "{s}"
        );
        assert!(!s.contains("sf="), "{s}");
        let s = remote_stop_script(&layout, 2, Duration::from_millis(1500));
        assert!(
            s.contains("pf='/var/run/flint pids/flint-worker-2.pid'"),
            "{s}"
        );
        assert!(s.contains("[ $i -lt 2 ]"), "{s}");
        let cmd = ssh_command(DEFAULT_SSH_OPTS, "ops@node-a", "true");
        let argv: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            ["-o", "StrictHostKeyChecking=no", "ops@node-a", "true"]
        );
    }

    #[test]
    fn worker_ports_count_up_from_the_base() {
        let local = WorkerSlot {
            host: "localhost".into(),
            local: true,
            n: 3,
        };
        let master = RpcAddress::new("127.0.0.1", 7077);
        let args = worker_args(&local, &master, &PortBases::default(), &[]).unwrap();
        assert_eq!(
            args,
            ["worker", "flint://127.0.0.1:7077", "--webui-port", "8083"]
        );
        let remote = WorkerSlot {
            host: "ops@node-a".into(),
            local: false,
            n: 2,
        };
        let ports = PortBases {
            webui: Some("0".into()),
            rpc: Some("9000".into()),
        };
        let pass = ["--conf".to_string(), "a=b".to_string()];
        let args = worker_args(&remote, &master, &ports, &pass).unwrap();
        assert_eq!(
            args,
            [
                "worker",
                "flint://127.0.0.1:7077",
                "--webui-port",
                "0",
                "--port",
                "9001",
                "--host",
                "node-a",
                "--conf",
                "a=b"
            ]
        );
        let bad = PortBases {
            webui: Some("http".into()),
            rpc: None,
        };
        let err = worker_args(&local, &master, &bad, &[]).unwrap_err();
        assert!(
            err.to_string().contains("FLINT_WORKER_WEBUI_PORT=\"http\""),
            "{err}"
        );
        let past = PortBases {
            webui: None,
            rpc: Some("65535".into()),
        };
        assert!(worker_args(&local, &master, &past, &[]).is_err());
    }

    #[test]
    fn pid_files_never_yield_pid_0_1_or_negative() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        for (text, want) in [
            ("123\n", Recorded::Pid(123)),
            ("1", Recorded::Garbage("1".into())),
            ("0", Recorded::Garbage("0".into())),
            ("-1", Recorded::Garbage("-1".into())),
            ("abc", Recorded::Garbage("abc".into())),
        ] {
            fs::write(&p, text).unwrap();
            assert_eq!(read_pid_file(&p).unwrap(), want, "{text:?}");
        }
        fs::remove_file(&p).unwrap();
        assert_eq!(read_pid_file(&p).unwrap(), Recorded::Nothing);
        assert!(signal(1, 0).is_err() && signal(-1, 0).is_err() && signal(0, 0).is_err());
    }

    #[test]
    fn probe_tells_our_process_from_a_foreign_or_dead_one() {
        // `cat` waiting on its stdin: alive, but not a flint daemon.
        let mut cat = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
        let cat_pid = i32::try_from(cat.id()).unwrap();
        assert_eq!(probe(cat_pid, Role::Master), Probe::Foreign);
        drop(cat.stdin.take());
        cat.wait().unwrap();
        assert_eq!(probe(cat_pid, Role::Master), Probe::Gone);
        let mut child = Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        assert_eq!(probe(pid, Role::Worker(1)), Probe::Gone);
    }
}
