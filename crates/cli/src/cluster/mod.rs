//! `flint start-cluster` and `flint stop-cluster`: a master here and the workers
//! listed in `<conf-dir>/workers`, as background daemons, like Spark's
//! `sbin/start-all.sh` / `stop-all.sh` (with `spark-daemon.sh`'s pid and log files).
//!
//! Layout (Spark's variable in brackets), all under the flint home (`$FLINT_HOME`,
//! default `~/.flint`) unless told otherwise:
//! - pid files in `--pid-dir`, else `$FLINT_PID_DIR` (`SPARK_PID_DIR`), else
//!   `$FLINT_HOME/run`: `flint-master.pid`, `flint-worker-<n>.pid`;
//! - logs in `--log-dir`, else `$FLINT_LOG_DIR` (`SPARK_LOG_DIR`), else
//!   `$FLINT_HOME/logs`: `flint-master-<host>.out`, `flint-worker-<n>-<host>.out`
//!   (stdout and stderr, appended);
//! - the workers' work dirs: `worker.dir`, else `$FLINT_HOME/work` (the worker's own
//!   default);
//! - `<conf-dir>/workers`: one host a line, `#` starts a comment. `start-cluster`
//!   refuses to start when it is missing (it never guesses where workers go).
//!   `localhost`, `127.0.0.1` and this machine's hostname are started here; any
//!   other host over `ssh` ([`ssh`]), with the same binary path and conf directory,
//!   and pid and log files in the given directories or else under that host's flint
//!   home. `<n>` counts a host's workers from 1 (every local name counts as one host),
//!   and worker `<n>` gets web UI port `worker.webui_port + n - 1` (base 8081; 0 stays
//!   0) and, when `worker.port` is set and not 0, RPC port `worker.port + n - 1`.
//! - Local workers share this machine: with several of them and no `worker.cores` /
//!   `worker.memory` set, each offers its share of the cores and of the memory a
//!   single worker would offer, rather than each claiming all of it.
//!
//! The master's host and ports are `--master-host` / `--master-port` /
//! `--webui-port`, else the settings `master.host`, `master.port`,
//! `master.webui_port` (with their `FLINT_MASTER_*` variables). The status URL it
//! prints is the one the master itself advertises, asked over RPC.
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
//! of their own (`setsid`), so they outlive the command and its terminal
//! ([`process`]). A pid file only counts as running when its process is alive and
//! is a flint daemon of that role (`/proc/<pid>/cmdline`), so a reused pid is never
//! signalled.

pub mod layout;
pub mod process;
pub mod ssh;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flint_conf::Conf;
use flint_proto::messages::{MasterMsg, RequestMasterState, RequestWebUiUrl};
use flint_proto::status::MasterStatusJson;
use flint_rpc::{EndpointRef, RpcAddress, RpcConf, RpcEnv, Secret};

use crate::settings::{self, CommonArgs};
use layout::{local_worker_pid_files, read_workers, Layout, Role, WorkerSlot};
use process::{
    abandon, check_alive, clear_stale, log_tail, read_pid_file, reap_all, spawn_daemon, terminate,
    Recorded, Started, KILL_GRACE, POLL,
};
use ssh::{
    remote_start_script, remote_stop_script, run_remote, run_remote_with_input, ssh_opts,
    RemoteSecret,
};

/// Arguments of `flint start-cluster`.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Directory with `workers` (one host a line) and `flint.toml`.
    #[arg(long, env = "FLINT_CONF_DIR", default_value = "conf")]
    pub conf_dir: PathBuf,
    /// Host the master binds and advertises. [setting master.host,
    /// FLINT_MASTER_HOST; default: 127.0.0.1 when every worker is local, else this
    /// machine's hostname]
    #[arg(long)]
    pub master_host: Option<String>,
    /// The master's RPC port (workers are told it, so it cannot be 0). [setting
    /// master.port, FLINT_MASTER_PORT; default 7077]
    #[arg(long)]
    pub master_port: Option<u16>,
    /// The master's web UI and JSON status port. [setting master.webui_port,
    /// FLINT_MASTER_WEBUI_PORT; default 8080]
    #[arg(long)]
    pub webui_port: Option<u16>,
    /// Where the pid files go. [FLINT_PID_DIR; default $FLINT_HOME/run]
    #[arg(long)]
    pub pid_dir: Option<PathBuf>,
    /// Where the daemons' logs go. [FLINT_LOG_DIR; default $FLINT_HOME/logs]
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
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
    /// Where the pid files are. [FLINT_PID_DIR; default $FLINT_HOME/run]
    #[arg(long)]
    pub pid_dir: Option<PathBuf>,
    /// How long each daemon gets to exit after SIGTERM before SIGKILL (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = duration_arg)]
    pub timeout: Duration,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    flint_conf::parse_duration(text, flint_conf::TimeUnit::Seconds).map_err(|e| e.to_string())
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

/// `worker.webui_port` and `worker.port` (from any source): the bases worker `n`'s
/// ports count up from.
#[derive(Debug, Default)]
struct PortBases {
    webui: Option<String>,
    rpc: Option<String>,
}

impl PortBases {
    fn from_conf(conf: &Conf) -> Self {
        let get = |key| {
            conf.get(key)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        PortBases {
            webui: get("worker.webui_port"),
            rpc: get("worker.port"),
        }
    }
}

/// Worker `n`'s port from the base `text` of setting `key` (`base + n - 1`; 0 stays
/// 0), or `None` when unset.
fn instance_port(key: &str, text: Option<&str>, n: u32) -> anyhow::Result<Option<u16>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let base: u16 = text
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{key} = {text:?} is not a port number (0-65535)"))?;
    if base == 0 {
        return Ok(Some(0));
    }
    u16::try_from(u32::from(base) + n - 1)
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{key} = {base} + worker {n} - 1 is past port 65535"))
}

/// What each local worker offers when several share this machine and no
/// `worker.cores` / `worker.memory` says: its share of what one worker would offer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Share {
    cores: Option<u64>,
    memory_mb: Option<u64>,
}

impl Share {
    /// The share of each of `locals` workers, given this machine's `cores` and
    /// `memory_mb` (either unknown: not split).
    fn of(conf: &Conf, locals: usize, cores: Option<u64>, memory_mb: Option<u64>) -> Self {
        if locals < 2 {
            return Share::default();
        }
        let k = locals as u64;
        let unset = |key| conf.get(key).is_none_or(|v: &str| v.trim().is_empty());
        Share {
            cores: cores
                .filter(|_| unset("worker.cores"))
                .map(|c| (c / k).max(1)),
            memory_mb: memory_mb.filter(|_| unset("worker.memory")).map(|m| {
                // A lone worker offers the total less 1 GiB, at least 1 GiB.
                (m.saturating_sub(1024).max(1024) / k).max(1)
            }),
        }
    }
}

/// The `flint worker …` arguments for `slot`.
fn worker_args(
    slot: &WorkerSlot,
    master: &RpcAddress,
    ports: &PortBases,
    share: Share,
    pass: &[String],
) -> anyhow::Result<Vec<String>> {
    let webui =
        instance_port("worker.webui_port", ports.webui.as_deref(), slot.n)?.unwrap_or_else(|| {
            let base = u32::from(flint_worker::service::DEFAULT_WEBUI_PORT);
            u16::try_from(base + slot.n - 1).unwrap_or(0)
        });
    let mut args = vec![
        "worker".to_string(),
        master.to_string(),
        "--webui-port".to_string(),
        webui.to_string(),
    ];
    let rpc = instance_port("worker.port", ports.rpc.as_deref(), slot.n)?;
    if let Some(port) = rpc.filter(|p| *p != 0) {
        args.extend(["--port".to_string(), port.to_string()]);
    }
    if slot.local {
        if let Some(c) = share.cores {
            args.extend(["--cores".to_string(), c.to_string()]);
        }
        if let Some(m) = share.memory_mb {
            args.extend(["--memory".to_string(), format!("{m}m")]);
        }
    } else {
        args.extend(["--host".to_string(), slot.bind_host().to_string()]);
    }
    args.extend(pass.iter().cloned());
    Ok(args)
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
    share: Share,
    ssh_opts: String,
    /// What remote workers get about the secret, and the secret to send them.
    remote_secret: RemoteSecret,
    secret: Option<Secret>,
}

/// Starts a daemon of `role` here, with the conf directory in its environment.
fn spawn_here(layout: &Layout, role: Role, exe: &Path, args: &[String]) -> anyhow::Result<Started> {
    let log = layout.log_file(role, &layout.hostname);
    spawn_daemon(
        layout.daemon(role),
        exe,
        args,
        &layout.cwd,
        &[("FLINT_CONF_DIR", layout.conf_dir.as_os_str())],
        log,
    )
}

/// `flint start-cluster`.
pub async fn start(args: StartArgs) -> anyhow::Result<()> {
    let layout = Layout::new(
        &args.conf_dir,
        args.pid_dir.as_deref(),
        args.log_dir.as_deref(),
    )?;
    let slots = read_workers(&layout.workers_file(), &layout.hostname, true)?;
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
    let master_port = settings::port(
        &conf,
        "master.port",
        args.master_port,
        flint_master::service::DEFAULT_PORT,
    )?;
    if master_port == 0 {
        bail!(
            "master port 0 is not allowed (--master-port or master.port): workers must be \
             told the master's port"
        );
    }
    let webui_port = settings::port(
        &conf,
        "master.webui_port",
        args.webui_port,
        flint_master::service::DEFAULT_WEBUI_PORT,
    )?;
    // With no secret configured, the master's default secret file is created here,
    // so that this command, the master and the local workers share it.
    let auth = crate::auth::for_master(&conf)?;
    let rpc_conf = RpcConf::from_conf(&conf)?;
    let pass = passthrough(&args.common, &layout.cwd);

    let default_host = if slots.iter().all(|s| s.local) {
        "127.0.0.1".to_string()
    } else {
        layout.hostname.clone()
    };
    let host = args
        .master_host
        .clone()
        .or_else(|| {
            conf.get("master.host")
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
        })
        .unwrap_or(default_host);
    // Parsing the URL rejects a bad host before anything starts.
    let master_url: RpcAddress = RpcAddress::new(host.clone(), master_port)
        .to_string()
        .parse()
        .with_context(|| format!("master host {host:?} is not a valid host"))?;

    // Refuse before starting anything if a daemon of ours already runs here.
    layout.create_dirs()?;
    clear_stale(&layout.daemon(Role::Master))?;
    for n in local_worker_pid_files(&layout.pid_dir)? {
        clear_stale(&layout.daemon(Role::Worker(n)))?;
    }

    let master_args: Vec<String> = [
        "master".to_string(),
        "--host".to_string(),
        host,
        "--port".to_string(),
        master_port.to_string(),
        "--webui-port".to_string(),
        webui_port.to_string(),
    ]
    .into_iter()
    .chain(pass.iter().cloned())
    .collect();
    let mut master = spawn_here(&layout, Role::Master, &exe, &master_args)?;
    println!(
        "started master (pid {}), log {}",
        master.child.id(),
        master.log.display()
    );

    let locals = slots.iter().filter(|s| s.local).count();
    let share = Share::of(
        &conf,
        locals,
        flint_conf::machine::cores(),
        flint_conf::machine::memory_bytes().map(|b| b >> 20),
    );
    let remote_secret = RemoteSecret::new(&auth, &layout.cwd);
    let plan = Plan {
        layout,
        slots,
        exe,
        pass,
        master_url,
        wait: args.wait,
        ports: PortBases::from_conf(&conf),
        share,
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
    if let (Some(c), Some(m)) = (plan.share.cores, plan.share.memory_mb) {
        println!(
            "the local workers share this machine: each offers {c} core(s) and {m} MiB \
             (set worker.cores and worker.memory to choose)"
        );
    }
    let mut locals = Vec::new();
    let mut errors = Vec::new();
    let mut remote_started = 0usize;
    for slot in &plan.slots {
        let role = Role::Worker(slot.n);
        let started =
            worker_args(slot, master_url, &plan.ports, plan.share, &plan.pass).and_then(|wargs| {
                if slot.local {
                    let d = spawn_here(layout, role, &plan.exe, &wargs)?;
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
                        layout
                            .remote_log_dir
                            .shell_file(&Layout::log_file_name(role, slot.bind_host()))
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

    // The status URL is the one the master advertises, asked over RPC.
    let within = Duration::from_secs(5);
    let status =
        match tokio::time::timeout(within, master_ref.ask_timeout(RequestWebUiUrl, within)).await {
            Ok(Ok(url)) => format!("{url}/api/v1/status"),
            Ok(Err(e)) => format!(
                "(the master did not say: {e}; see {})",
                master.log.display()
            ),
            Err(_) => format!("(the master did not say; see {})", master.log.display()),
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

/// `flint stop-cluster`.
pub async fn stop(args: StopArgs) -> anyhow::Result<()> {
    let layout = Layout::new(&args.conf_dir, args.pid_dir.as_deref(), None)?;
    let slots = read_workers(&layout.workers_file(), &layout.hostname, false)?;
    let ssh_opts = ssh_opts();
    let mut errors = Vec::new();

    // Workers first: the local ones, whatever pid files there are ...
    let worker_files = local_worker_pid_files(&layout.pid_dir)?;
    let mut stopping = Vec::new();
    for n in &worker_files {
        match terminate(&layout.daemon(Role::Worker(*n))) {
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
    let master = layout.daemon(Role::Master);
    if read_pid_file(&master.pid_file)? == Recorded::Nothing {
        println!(
            "no master running (no pid file {})",
            master.pid_file.display()
        );
    } else {
        match terminate(&master) {
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
    fn worker_ports_count_up_from_the_base() {
        let local = WorkerSlot {
            host: "localhost".into(),
            local: true,
            n: 3,
        };
        let master = RpcAddress::new("127.0.0.1", 7077);
        let args = worker_args(
            &local,
            &master,
            &PortBases::default(),
            Share::default(),
            &[],
        )
        .unwrap();
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
        let args = worker_args(&remote, &master, &ports, Share::default(), &pass).unwrap();
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
        let err = worker_args(&local, &master, &bad, Share::default(), &[]).unwrap_err();
        assert!(
            err.to_string().contains("worker.webui_port = \"http\""),
            "{err}"
        );
        let past = PortBases {
            webui: None,
            rpc: Some("65535".into()),
        };
        assert!(worker_args(&local, &master, &past, Share::default(), &[]).is_err());
    }

    #[test]
    fn local_workers_split_the_machine_unless_told() {
        let none = Conf::new();
        assert_eq!(Share::of(&none, 1, Some(8), Some(16384)), Share::default());
        let s = Share::of(&none, 2, Some(8), Some(16384));
        assert_eq!(
            s,
            Share {
                cores: Some(4),
                memory_mb: Some(7680)
            }
        );
        // Never below one core, and a small machine still gives each a share.
        let s = Share::of(&none, 3, Some(2), Some(1024));
        assert_eq!(
            s,
            Share {
                cores: Some(1),
                memory_mb: Some(341)
            }
        );
        // A setting wins (the worker reads it itself).
        let set = Conf::new().set("worker.cores", "2");
        assert_eq!(Share::of(&set, 2, Some(8), Some(16384)).cores, None);
        let local = WorkerSlot {
            host: "localhost".into(),
            local: true,
            n: 1,
        };
        let master = RpcAddress::new("127.0.0.1", 7077);
        let share = Share {
            cores: Some(4),
            memory_mb: Some(7680),
        };
        let args = worker_args(&local, &master, &PortBases::default(), share, &[]).unwrap();
        assert_eq!(
            args,
            [
                "worker",
                "flint://127.0.0.1:7077",
                "--webui-port",
                "8081",
                "--cores",
                "4",
                "--memory",
                "7680m"
            ]
        );
    }
}
