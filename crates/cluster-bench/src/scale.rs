//! `scale`: one real master (`flint master`, a child process) under thousands
//! of simulated workers.
//!
//! Each simulated worker is a light client: its own client-only `RpcEnv` (so
//! its own TCP connection to the master, no listening socket) with a
//! `"Worker"` endpoint. It looks the master up, sends `RegisterWorker` with a
//! ref to its endpoint (a unique fake `host:port`, since the master refuses
//! two live workers at one address), answers `RegisteredWorker` with an empty
//! `WorkerLatestState` as a real worker does, and then sends `Heartbeat` every
//! `worker.timeout / 4`. It runs no executors.
//!
//! Phases, each reported in one JSON line on stdout:
//! 1. registration: `--concurrency` registrations in flight at a time, until
//!    every worker has its `RegisteredWorker` (throughput, latency
//!    percentiles, the master's CPU over the phase);
//! 2. steady state: `--duration-s` of heartbeats; the master's CPU
//!    (utime+stime from `/proc/<pid>/stat`) over the window, its RSS sampled
//!    every second, and its status asked every `--status-every-s` for DEAD
//!    workers;
//! 3. verdict: the `GET /api/v1/status` document at the end, workers counted
//!    by state (every one must be ALIVE, none DEAD), the master's log
//!    scanned for timeouts and disconnections, and whether the master
//!    process is still alive (if it died, its exit status and log tail are
//!    reported).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use flint_proto::messages::{
    Heartbeat, MasterMsg, RegisterWorker, RegisteredWorker, RequestMasterState, WorkerLatestState,
    WorkerMsg, MASTER_ENDPOINT, WORKER_ENDPOINT,
};
use flint_proto::status::MasterStatusJson;
use flint_proto::{WorkerId, WorkerState};
use flint_rpc::{Context, Endpoint, EndpointRef, RpcAddress, RpcConf, RpcEnv};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::procfs::{self, ProcSample};

/// Arguments of `flint-cluster-bench scale`.
#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// The `flint` binary to start the master with.
    #[arg(long)]
    pub flint_bin: PathBuf,
    /// Simulated workers.
    #[arg(long, default_value_t = 10_000)]
    pub workers: u32,
    /// The master's `worker.timeout`; workers heartbeat every quarter of it.
    #[arg(long, default_value = "20s")]
    pub worker_timeout: String,
    /// Seconds of steady state (heartbeats only) after the last registration.
    #[arg(long, default_value_t = 60)]
    pub duration_s: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Give up registering after this many seconds.
    #[arg(long, default_value_t = 90)]
    pub register_timeout_s: u64,
    /// Ask the master's status (counting DEAD workers) this often during the
    /// steady state, in seconds.
    #[arg(long, default_value_t = 15)]
    pub status_every_s: u64,
    /// Where the master's output goes (default: a file in the temp dir).
    #[arg(long)]
    pub master_log: Option<PathBuf>,
    /// Cores each simulated worker offers.
    #[arg(long, default_value_t = 8)]
    pub worker_cores: u32,
}

/// Counters shared by every simulated worker.
#[derive(Default)]
struct Stats {
    registered: AtomicU64,
    duplicates: AtomicU64,
    reconnects: AtomicU64,
    register_failed: AtomicU64,
    standby: AtomicU64,
    other_messages: AtomicU64,
    disconnects: AtomicU64,
    heartbeats: AtomicU64,
    send_errors: AtomicU64,
    start_failures: AtomicU64,
    first_problem: Mutex<Option<String>>,
    /// Spawn-to-`RegisteredWorker` per worker, in microseconds.
    latencies_us: Mutex<Vec<u64>>,
}

impl Stats {
    fn problem(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_problem.lock() {
            first.get_or_insert(what);
        }
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The `"Worker"` endpoint of one simulated worker.
struct SimWorker {
    id: WorkerId,
    started: Instant,
    stats: Arc<Stats>,
    registered: Option<oneshot::Sender<()>>,
    heartbeat_every: Duration,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Endpoint for SimWorker {
    type Msg = WorkerMsg;

    fn receive(&mut self, ctx: &Context<WorkerMsg>, msg: WorkerMsg) {
        match msg {
            WorkerMsg::RegisteredWorker(RegisteredWorker {
                master, duplicate, ..
            }) => {
                if duplicate {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                let Some(done) = self.registered.take() else {
                    return;
                };
                let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
                if let Ok(mut l) = self.stats.latencies_us.lock() {
                    l.push(us);
                }
                self.stats.registered.fetch_add(1, Ordering::Relaxed);
                let _ = done.send(());
                // As a real worker: report what it runs (nothing), then
                // heartbeat every `worker.timeout / 4`.
                let latest = WorkerLatestState {
                    worker_id: self.id.clone(),
                    executors: Vec::new(),
                    driver_ids: Vec::new(),
                };
                if let Err(e) = master.send(latest) {
                    self.stats
                        .problem(&self.stats.send_errors, format!("WorkerLatestState: {e}"));
                }
                self.tracker.spawn(heartbeat(
                    master,
                    ctx.self_ref().clone(),
                    self.id.clone(),
                    self.heartbeat_every,
                    self.stats.clone(),
                    self.token.clone(),
                ));
            }
            WorkerMsg::ReconnectWorker(_) => self.stats.problem(
                &self.stats.reconnects,
                format!("{}: the master asked it to reconnect", self.id),
            ),
            WorkerMsg::RegisterWorkerFailed(f) => self.stats.problem(
                &self.stats.register_failed,
                format!("{}: registration refused: {}", self.id, f.message),
            ),
            WorkerMsg::MasterInStandby(_) => {
                self.stats.standby.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.stats.other_messages.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_disconnected(&mut self, _ctx: &Context<WorkerMsg>, remote: &RpcAddress) {
        self.stats.problem(
            &self.stats.disconnects,
            format!("{}: connection to {remote} dropped", self.id),
        );
    }
}

/// Sends a heartbeat every `every` until cancelled.
async fn heartbeat(
    master: EndpointRef<MasterMsg>,
    me: EndpointRef<WorkerMsg>,
    worker_id: WorkerId,
    every: Duration,
    stats: Arc<Stats>,
    token: CancellationToken,
) {
    let mut next = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += every;
        let beat = Heartbeat {
            worker_id: worker_id.clone(),
            worker: me.clone(),
        };
        match master.send(beat) {
            Ok(()) => {
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => stats.problem(&stats.send_errors, format!("{worker_id}: heartbeat: {e}")),
        }
    }
}

/// What every simulated worker needs to start.
struct Launch {
    master: RpcAddress,
    base_ms: u64,
    cores: u32,
    heartbeat_every: Duration,
    stats: Arc<Stats>,
    token: CancellationToken,
    tracker: TaskTracker,
}

/// Starts simulated worker `index` in `env` and holds `permit` until the
/// master answered (or 30 s passed).
async fn start_worker(env: RpcEnv, index: u32, launch: Arc<Launch>, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let stats = &launch.stats;
    // A unique fake address per worker: 127.0.0.1 with ports from 10000 up.
    let host = "127.0.0.1";
    let port = u16::try_from(10_000 + index).unwrap_or(u16::MAX);
    let id = match WorkerId::generate(launch.base_ms, host, port) {
        Ok(id) => id,
        Err(e) => return stats.problem(&stats.start_failures, format!("worker id: {e}")),
    };
    let (done_tx, done_rx) = oneshot::channel();
    let endpoint = SimWorker {
        id: id.clone(),
        started,
        stats: stats.clone(),
        registered: Some(done_tx),
        heartbeat_every: launch.heartbeat_every,
        token: launch.token.clone(),
        tracker: launch.tracker.clone(),
    };
    let me = match env.setup_endpoint(WORKER_ENDPOINT, endpoint) {
        Ok(r) => r,
        Err(e) => return stats.problem(&stats.start_failures, format!("{id}: endpoint: {e}")),
    };
    let master = match env
        .setup_endpoint_ref::<MasterMsg>(&launch.master, MASTER_ENDPOINT)
        .await
    {
        Ok(m) => m,
        Err(e) => return stats.problem(&stats.start_failures, format!("{id}: lookup: {e}")),
    };
    let msg = RegisterWorker {
        id: id.clone(),
        host: host.into(),
        port,
        worker: me,
        cores: launch.cores,
        memory_mb: 16 * 1024,
        web_ui_url: format!("http://{host}:{port}"),
        master_address: launch.master.clone(),
    };
    if let Err(e) = master.send(msg) {
        return stats.problem(&stats.start_failures, format!("{id}: RegisterWorker: {e}"));
    }
    tokio::select! {
        _ = launch.token.cancelled() => {}
        _ = done_rx => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
    }
    drop(permit);
}

/// The master child process and where its output goes.
struct Master {
    child: Child,
    pid: u32,
    url: String,
    status_url: String,
    log: PathBuf,
}

/// Starts `flint master` on free ports and reads its URLs from the line it
/// prints.
async fn start_master(args: &ScaleArgs) -> anyhow::Result<Master> {
    let log = args.master_log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("flint-scale-master-{}.log", std::process::id()))
    });
    let file = std::fs::File::create(&log)
        .with_context(|| format!("cannot create the master log {}", log.display()))?;
    let mut child = tokio::process::Command::new(&args.flint_bin)
        .args([
            "master",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--webui-port",
            "0",
        ])
        .arg("--conf")
        .arg(format!("worker.timeout={}", args.worker_timeout))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(file.try_clone()?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", args.flint_bin.display()))?;
    let pid = child.id().context("the master exited at once")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("listening on") {
                return Ok(line);
            }
        }
        bail!("the master exited before printing its address")
    })
    .await
    .context("the master printed no address within 20 s")??;
    // "flint master listening on flint://h:p; status at http://h:q/api/v1/status"
    let url = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .context("no flint:// URL in the master's line")?
        .trim()
        .to_owned();
    let status_url = line
        .split("status at ")
        .nth(1)
        .context("no status URL in the master's line")?
        .trim()
        .to_owned();
    // Keep draining stdout into the log so the master never blocks on it.
    let mut out = tokio::fs::File::from_std(file);
    let mut rest = lines.into_inner();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut rest, &mut out).await;
    });
    Ok(Master {
        child,
        pid,
        url,
        status_url,
        log,
    })
}

/// Counts workers by state in a status document.
fn count_states(status: &MasterStatusJson) -> (usize, usize, usize) {
    let alive = status
        .workers
        .iter()
        .filter(|w| w.state == WorkerState::Alive)
        .count();
    let dead = status
        .workers
        .iter()
        .filter(|w| w.state == WorkerState::Dead)
        .count();
    (alive, dead, status.workers.len() - alive - dead)
}

/// The `p`-th percentile (0–100) of sorted `v`, in ms.
fn percentile_ms(v: &[u64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * (v.len() - 1) as f64).round() as usize;
    v.get(rank.min(v.len() - 1)).map(|us| *us as f64 / 1e3)
}

/// CPU used between two samples, as a percentage of one core.
fn cpu_percent(
    a: Option<ProcSample>,
    b: Option<ProcSample>,
    over: Duration,
    hz: u64,
) -> Option<f64> {
    let (a, b) = (a?, b?);
    let secs = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / hz as f64;
    Some(100.0 * secs / over.as_secs_f64().max(1e-9))
}

fn cpu_seconds(a: Option<ProcSample>, b: Option<ProcSample>, hz: u64) -> Option<f64> {
    Some(b?.cpu_ticks.saturating_sub(a?.cpu_ticks) as f64 / hz as f64)
}

/// Whether the master process has exited (and how).
fn exited(master: &mut Master) -> Option<String> {
    match master.child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        Ok(None) => None,
        Err(e) => Some(format!("unknown ({e})")),
    }
}

/// Lines of the master's log that mention `needle`.
fn count_in_log(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Runs the benchmark; see the module docs.
pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let timeout =
        flint_conf::parse_duration(&args.worker_timeout, flint_conf::TimeUnit::Seconds)
            .map_err(|e| anyhow::anyhow!("--worker-timeout {:?}: {e}", args.worker_timeout))?;
    let heartbeat_every = timeout / 4;
    let (soft, hard) = procfs::raise_nofile_limit().context("cannot raise RLIMIT_NOFILE")?;
    let needed = u64::from(args.workers) + 256;
    if soft < needed {
        bail!(
            "{} workers need about {needed} open files in this process and in the master, \
             but the hard limit (ulimit -Hn) is {hard}; raise it or use fewer --workers",
            args.workers
        );
    }
    if args.workers > 55_000 {
        bail!("--workers is at most 55000 (each needs a unique fake port)");
    }
    let hz = procfs::clock_ticks_per_second();
    let me = std::process::id();

    let mut master = start_master(&args).await?;
    // The master created (or reused) the flint home's secret file; connect with it.
    let rpc = RpcConf::from_conf(&flint_conf::Conf::new())
        .context("cannot find the cluster secret the master uses")?;
    eprintln!(
        "master pid {} at {} (status {}), log {}; {} workers, heartbeat every {:?}",
        master.pid,
        master.url,
        master.status_url,
        master.log.display(),
        args.workers,
        heartbeat_every
    );
    let master_addr = RpcAddress::parse_list(&master.url)?
        .into_iter()
        .next()
        .context("no master address")?;
    let idle = procfs::sample(master.pid);

    // ----- registration -----
    let stats = Arc::new(Stats::default());
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let base_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    let launch = Arc::new(Launch {
        master: master_addr.clone(),
        base_ms,
        cores: args.worker_cores,
        heartbeat_every,
        stats: stats.clone(),
        token: token.clone(),
        tracker: tracker.clone(),
    });
    let semaphore = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut envs = Vec::with_capacity(args.workers as usize);
    let overflows0 = procfs::tcp_ext_counter("ListenOverflows");
    let syn_retrans0 = procfs::tcp_ext_counter("TCPSynRetrans");
    let reg_cpu0 = procfs::sample(master.pid);
    let bench_cpu0 = procfs::sample(me);
    let t_reg = Instant::now();
    let reg_deadline = t_reg + Duration::from_secs(args.register_timeout_s);
    let mut gave_up = None;
    for i in 0..args.workers {
        let permit = tokio::select! {
            p = semaphore.clone().acquire_owned() => p?,
            _ = tokio::time::sleep_until(reg_deadline.into()) => {
                gave_up = Some(format!("only {i} of {} workers started within {} s", args.workers, args.register_timeout_s));
                break;
            }
        };
        let env = RpcEnv::client(rpc.clone())?;
        envs.push(env.clone());
        tracker.spawn(start_worker(env, i, launch.clone(), permit));
        if i % 1000 == 999 && exited(&mut master).is_some() {
            break;
        }
    }
    let want = u64::from(args.workers);
    let mut died = None;
    while get(&stats.registered) < want && gave_up.is_none() {
        if let Some(how) = exited(&mut master) {
            died = Some(how);
            break;
        }
        if Instant::now() > reg_deadline {
            gave_up = Some(format!(
                "{} of {} workers registered within {} s",
                get(&stats.registered),
                args.workers,
                args.register_timeout_s
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reg_elapsed = t_reg.elapsed();
    let reg_cpu1 = procfs::sample(master.pid);
    let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
    let listen_overflows = delta(overflows0, procfs::tcp_ext_counter("ListenOverflows"));
    let syn_retrans = delta(syn_retrans0, procfs::tcp_ext_counter("TCPSynRetrans"));
    let bench_cpu1 = procfs::sample(me);
    let mut lat = stats
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let registered = get(&stats.registered);
    println!(
        "{}",
        json!({
            "bench": "scale", "system": "flint", "phase": "registration",
            "workers": args.workers, "registered": registered,
            "seconds": reg_elapsed.as_secs_f64(),
            "registrations_per_s": registered as f64 / reg_elapsed.as_secs_f64().max(1e-9),
            "latency_ms_p50": percentile_ms(&lat, 50.0),
            "latency_ms_p99": percentile_ms(&lat, 99.0),
            "latency_ms_max": percentile_ms(&lat, 100.0),
            "concurrency": args.concurrency,
            "master_cpu_s": cpu_seconds(reg_cpu0, reg_cpu1, hz),
            "master_cpu_pct": cpu_percent(reg_cpu0, reg_cpu1, reg_elapsed, hz),
            "bench_cpu_s": cpu_seconds(bench_cpu0, bench_cpu1, hz),
            "master_idle_rss_kib": idle.map(|s| s.rss_kib),
            "master_rss_kib": reg_cpu1.map(|s| s.rss_kib),
            "start_failures": get(&stats.start_failures),
            "register_failed": get(&stats.register_failed),
            "tcp_listen_overflows": listen_overflows,
            "tcp_syn_retransmits": syn_retrans,
        })
    );

    // ----- steady state -----
    let observer = RpcEnv::client(rpc.clone())?;
    let observer_master = observer
        .setup_endpoint_ref::<MasterMsg>(&master_addr, MASTER_ENDPOINT)
        .await
        .ok();
    let hb0 = get(&stats.heartbeats);
    let cpu0 = procfs::sample(master.pid);
    let bench0 = procfs::sample(me);
    let t_ss = Instant::now();
    let mut max_rss = cpu0.map(|s| s.rss_kib).unwrap_or(0);
    let mut max_dead_seen = 0usize;
    let mut rss_every_10s = Vec::new();
    let mut status_samples = Vec::new();
    let mut next_status = args.status_every_s.max(1);
    if died.is_none() && gave_up.is_none() {
        for sec in 1..=args.duration_s {
            tokio::time::sleep_until((t_ss + Duration::from_secs(sec)).into()).await;
            if let Some(how) = exited(&mut master) {
                died = Some(how);
                break;
            }
            if let Some(s) = procfs::sample(master.pid) {
                max_rss = max_rss.max(s.rss_kib);
                if sec % 10 == 0 {
                    rss_every_10s.push(s.rss_kib);
                }
            }
            if sec == next_status && sec < args.duration_s {
                next_status += args.status_every_s.max(1);
                if let Some(m) = &observer_master {
                    let asked = Instant::now();
                    if let Ok(status) = m.ask(RequestMasterState).await {
                        let (alive, dead, other) = count_states(&status);
                        max_dead_seen = max_dead_seen.max(dead);
                        status_samples.push(json!({
                            "at_s": sec, "alive": alive, "dead": dead, "other": other,
                            "ask_ms": asked.elapsed().as_secs_f64() * 1e3,
                        }));
                    }
                }
            }
        }
    }
    let window = t_ss.elapsed();
    let cpu1 = procfs::sample(master.pid);
    let bench1 = procfs::sample(me);
    let heartbeats = get(&stats.heartbeats) - hb0;

    // ----- verdict -----
    let fetched = Instant::now();
    let final_status = if died.is_none() {
        match crate::http::get(&master.status_url, Duration::from_secs(30)).await {
            Ok(body) => serde_json::from_slice::<MasterStatusJson>(&body)
                .map(|s| (s, body.len()))
                .map_err(|e| anyhow::anyhow!("status JSON did not parse: {e}")),
            Err(e) => Err(e),
        }
    } else {
        Err(anyhow::anyhow!("the master died"))
    };
    let fetch_ms = fetched.elapsed().as_secs_f64() * 1e3;
    let (alive, dead, other, json_bytes, status_error) = match &final_status {
        Ok((s, bytes)) => {
            let (a, d, o) = count_states(s);
            (a, d, o, *bytes, None)
        }
        Err(e) => (0, 0, 0, 0, Some(e.to_string())),
    };
    let fds = procfs::open_fds(master.pid);
    if died.is_none() {
        died = exited(&mut master);
    }
    let log_text = std::fs::read_to_string(&master.log).unwrap_or_default();
    let log_tail: Vec<&str> = if died.is_some() {
        let lines: Vec<&str> = log_text.lines().collect();
        lines[lines.len().saturating_sub(20)..].to_vec()
    } else {
        Vec::new()
    };
    let first_problem = stats.first_problem.lock().ok().and_then(|p| p.clone());
    let ok = died.is_none()
        && gave_up.is_none()
        && registered == want
        && alive == args.workers as usize
        && dead == 0
        && max_dead_seen == 0
        && get(&stats.reconnects) == 0
        && get(&stats.disconnects) == 0;
    println!(
        "{}",
        json!({
            "bench": "scale", "system": "flint", "phase": "steady",
            "workers": args.workers,
            "worker_timeout": args.worker_timeout,
            "heartbeat_interval_ms": heartbeat_every.as_millis() as u64,
            "window_s": window.as_secs_f64(),
            "heartbeats_sent": heartbeats,
            "heartbeats_per_s": heartbeats as f64 / window.as_secs_f64().max(1e-9),
            "master_cpu_s": cpu_seconds(cpu0, cpu1, hz),
            "master_cpu_pct": cpu_percent(cpu0, cpu1, window, hz),
            "master_rss_kib_end": cpu1.map(|s| s.rss_kib),
            "master_rss_kib_max": max_rss,
            "master_rss_kib_every_10s": rss_every_10s,
            "master_hwm_kib": cpu1.map(|s| s.hwm_kib),
            "master_vmdata_kib": cpu1.map(|s| s.data_kib),
            "master_threads": cpu1.map(|s| s.threads),
            "master_open_fds": fds,
            "bench_cpu_pct": cpu_percent(bench0, bench1, window, hz),
            "bench_rss_kib": bench1.map(|s| s.rss_kib),
            "status_samples": status_samples,
            "final_alive": alive,
            "final_dead": dead,
            "final_other": other,
            "status_json_bytes": json_bytes,
            "status_fetch_ms": fetch_ms,
            "status_error": status_error,
            "reconnects": get(&stats.reconnects),
            "disconnects": get(&stats.disconnects),
            "send_errors": get(&stats.send_errors),
            "duplicates": get(&stats.duplicates),
            "standby": get(&stats.standby),
            "other_messages": get(&stats.other_messages),
            "first_problem": first_problem,
            "log_no_heartbeat_lines": count_in_log(&log_text, "because we got no heartbeat"),
            "log_disassociated_lines": count_in_log(&log_text, "got disassociated"),
            "log_warn_lines": count_in_log(&log_text, " WARN "),
            "log_error_lines": count_in_log(&log_text, " ERROR "),
            "master_exited": died,
            "master_log": master.log.display().to_string(),
            "master_log_tail": log_tail,
            "registration_problem": gave_up,
            "ok": ok,
        })
    );

    // ----- tear down -----
    token.cancel();
    tracker.close();
    for env in &envs {
        env.shutdown();
    }
    observer.shutdown();
    if let Some(pid) = i32::try_from(master.pid).ok().filter(|_| died.is_none()) {
        // SAFETY: kill takes plain integers; `pid` is our own child, not yet
        // reaped (try_wait said it is running), so the id is still its.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), master.child.wait())
            .await
            .is_err()
        {
            let _ = master.child.kill().await;
        }
    }
    if !ok {
        bail!("the scale benchmark failed; see the JSON line above");
    }
    Ok(())
}
