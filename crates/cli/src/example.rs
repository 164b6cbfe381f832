//! `flint run-example pi`: the main job. An embedded cluster — a master and workers in
//! this process — runs an application whose executors are real child processes of
//! the workers (this same binary, `flint example-executor`). The executors connect
//! back to this process's driver endpoint, pull Monte Carlo slices, and return their
//! counts; the driver prints the estimate and where to look.
//!
//! The cluster, the driver and the executors authenticate with the cluster secret
//! (by default `$FLINT_HOME/secret`, created if missing, as `flint master` does);
//! the executors get it from their worker in `FLINT_AUTH_SECRET`, never in argv.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flint_client::{AppClient, AppEvent, ChannelListener};
use flint_master::service::{self as master, MasterOptions};
use flint_proto::{ApplicationDescription, ExecutorCommand};
use flint_rpc::{Ask, Context, Endpoint, Protocol, Reply, RpcAddress, RpcConf, RpcEnv};
use flint_worker::service::{self as worker, WorkerOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::settings::{self, CommonArgs};

/// Arguments of `flint run-example pi`.
#[derive(clap::Args, Debug)]
pub struct ExampleArgs {
    /// Which example (only `pi` so far).
    #[arg(default_value = "pi")]
    pub name: String,
    /// Workers in the embedded cluster.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Cores per worker (one executor per core).
    #[arg(long, default_value_t = 1)]
    pub cores_per_worker: u32,
    /// Slices (tasks) to split the estimate into.
    #[arg(long, default_value_t = 16)]
    pub slices: u32,
    /// Samples per slice.
    #[arg(long, default_value_t = 1_000_000)]
    pub samples: u64,
    /// Keep the cluster up after the job, until Ctrl-C, to browse its UI.
    #[arg(long)]
    pub keep_running: bool,
    /// Put the workers' work dirs (executor logs) here and keep them (default: a
    /// temporary directory, removed when the example ends).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Messages of the example's driver endpoint.
#[derive(Debug, Serialize, Deserialize)]
pub enum PiMsg {
    /// An executor reports the last slice's count and asks for the next slice.
    Work(Work),
}

impl Protocol for PiMsg {
    const NAME: &'static str = "flint.example.pi/1";
}

/// Executor → driver: the result of `done` (if any); the reply is the next slice.
#[derive(Debug, Serialize, Deserialize)]
pub struct Work {
    /// The executor's id.
    pub exec_id: String,
    /// `(slice, points inside the circle)` of the slice just finished.
    pub done: Option<(u32, u64)>,
}

/// A slice to compute: index and sample count.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Slice {
    /// Index (also the random seed).
    pub index: u32,
    /// Samples to draw.
    pub samples: u64,
}

impl Ask for Work {
    type Reply = Option<Slice>;
}

impl From<Work> for PiMsg {
    fn from(w: Work) -> Self {
        PiMsg::Work(w)
    }
}

/// Slice → (points inside, executor that computed it).
type Results = Arc<Mutex<BTreeMap<u32, (u64, String)>>>;

struct PiDriver {
    todo: VecDeque<Slice>,
    done: Results,
    total: u32,
    finished: Arc<Notify>,
    /// Executors with nothing left to do wait here (unanswered) until the
    /// application stops: an executor lives until its application ends.
    idle: Vec<Reply>,
}

impl Endpoint for PiDriver {
    type Msg = PiMsg;

    fn receive_and_reply(&mut self, _: &Context<PiMsg>, msg: PiMsg, reply: Reply) {
        let PiMsg::Work(w) = msg;
        if let Some((slice, inside)) = w.done {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            done.entry(slice).or_insert((inside, w.exec_id.clone()));
            if done.len() as u32 == self.total {
                self.finished.notify_one();
            }
        }
        match self.todo.pop_front() {
            Some(slice) => reply.send(Some(slice)),
            None => self.idle.push(reply),
        }
    }

    fn on_stop(&mut self, _: &Context<PiMsg>) {
        for r in self.idle.drain(..) {
            r.send(None::<Slice>);
        }
    }
}

/// Points of `samples` pseudo-random draws (seeded by the slice) inside the unit circle.
pub fn count_inside(slice: Slice) -> u64 {
    let mut x =
        0x9e37_79b9_7f4a_7c15u64 ^ u64::from(slice.index).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..slice.samples)
        .filter(|_| {
            let (a, b) = (next() * 2.0 - 1.0, next() * 2.0 - 1.0);
            a * a + b * b <= 1.0
        })
        .count() as u64
}

/// Runs the example job on an embedded cluster.
pub async fn run(args: ExampleArgs) -> anyhow::Result<()> {
    if args.name != "pi" {
        bail!("unknown example {:?}; available: pi", args.name);
    }
    if args.workers == 0 || args.cores_per_worker == 0 || args.slices == 0 {
        bail!("--workers, --cores-per-worker and --slices must be at least 1");
    }
    let started = Instant::now();
    // The workers' work dirs: the given directory, kept; else a temporary one,
    // removed when the example ends (also when it fails).
    let (tmp, base) = match &args.work_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("flint-example-")
                .tempdir()
                .context("cannot create a temporary directory for the example's work dirs")?;
            let base = t.path().to_path_buf();
            (Some(t), base)
        }
    };
    let conf = settings::load(&args.common, &crate::known_keys())?;
    let auth = crate::auth::for_master(&conf)?;
    crate::auth::hand_to_children(&auth);
    let m = master::start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: conf.clone(),
    })
    .await
    .context("starting the embedded master")?;
    let mut workers = Vec::new();
    for i in 0..args.workers {
        workers.push(
            worker::start(WorkerOptions {
                masters: vec![m.rpc_address().clone()],
                host: "127.0.0.1".into(),
                port: 0,
                webui_port: 0,
                cores: Some(args.cores_per_worker),
                memory_mb: Some(1024),
                work_dir: base.join(format!("worker-{i}")),
                conf: conf.clone(),
            })
            .await
            .with_context(|| format!("starting embedded worker {i}"))?,
        );
    }
    println!(
        "flint run-example pi: an embedded cluster in this process, master {} and {} worker(s)",
        m.rpc_address(),
        workers.len()
    );
    println!("  master UI      {}/", m.webui_url());
    println!("  master status  {}/api/v1/status", m.webui_url());
    for w in &workers {
        println!(
            "  worker UI      {}/api/v1/status ({})",
            w.webui_url(),
            w.id()
        );
    }
    println!("  cluster secret {}", crate::auth::describe(&auth));

    // The driver: an endpoint executors pull slices from.
    let env = RpcEnv::server(RpcConf::from_conf(&conf)?, "127.0.0.1", 0).await?;
    let driver_addr = env.address().context("driver env address")?.clone();
    let finished = Arc::new(Notify::new());
    let results: Results = Arc::default();
    let todo = (0..args.slices)
        .map(|index| Slice {
            index,
            samples: args.samples,
        })
        .collect();
    env.setup_endpoint(
        "pi-driver",
        PiDriver {
            todo,
            done: results.clone(),
            total: args.slices,
            finished: finished.clone(),
            idle: Vec::new(),
        },
    )?;

    let exe = std::env::current_exe().context("locating the flint binary")?;
    let mut command = ExecutorCommand::new(exe.to_string_lossy());
    command.args = vec![
        "example-executor".into(),
        "--driver".into(),
        driver_addr.to_string(),
        "--executor-id".into(),
        "{{EXECUTOR_ID}}".into(),
        "--app-id".into(),
        "{{APP_ID}}".into(),
    ];
    let mut desc = ApplicationDescription::new("Flint Pi", command);
    desc.cores_per_executor = Some(1);
    desc.memory_per_executor_mb = 256;
    let (listener, mut events) = ChannelListener::new();
    let client = AppClient::start(
        env.clone(),
        vec![m.rpc_address().clone()],
        desc,
        listener,
        &conf,
    )?;
    let job = async {
        loop {
            tokio::select! {
                _ = finished.notified() => return Ok(()),
                ev = events.recv() => match ev {
                    Some(AppEvent::Connected(app_id)) => println!("  application    {app_id} registered"),
                    Some(AppEvent::ExecutorAdded { exec_id, worker_id, cores, .. }) => {
                        println!("  executor       {exec_id} on {worker_id} ({cores} core)")
                    }
                    Some(AppEvent::Dead(reason)) => bail!("the application died: {reason}"),
                    Some(_) => {}
                    None => bail!("the application client stopped"),
                },
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), job)
        .await
        .context("the job did not finish within 120 s")??;

    let app_id = client.app_id();
    client.stop().await;
    let (inside, executors) = {
        let done = results.lock().unwrap_or_else(|p| p.into_inner());
        let inside: u64 = done.values().map(|(n, _)| n).sum();
        let execs: std::collections::BTreeSet<&str> =
            done.values().map(|(_, e)| e.as_str()).collect();
        (inside, execs.len())
    };
    let samples = u64::from(args.slices) * args.samples;
    let pi = 4.0 * inside as f64 / samples as f64;
    println!(
        "Pi is roughly {pi:.6} ({} slices × {} samples computed by {executors} executor process(es), {:.2?})",
        args.slices,
        args.samples,
        started.elapsed()
    );
    if let Some(app) = app_id.filter(|_| args.keep_running || tmp.is_none()) {
        let note = if tmp.is_some() {
            " (removed on exit)"
        } else {
            ""
        };
        println!(
            "  executor logs  {}/worker-*/{app}/<executor-id>/stdout{note}",
            base.display()
        );
    }
    if args.keep_running {
        println!("Cluster up; press Ctrl-C to stop.");
        flint_daemon::signals::terminated().await;
    }
    for w in &workers {
        w.shutdown();
    }
    for w in &workers {
        let _ = w.wait().await;
    }
    m.shutdown();
    m.wait().await;
    env.shutdown();
    env.await_termination().await;
    if let Some(tmp) = tmp {
        tmp.close()
            .with_context(|| format!("cannot remove {}", base.display()))?;
    }
    Ok(())
}

/// Arguments of the hidden `flint example-executor`.
#[derive(clap::Args, Debug)]
pub struct ExecutorArgs {
    /// The driver's RPC address.
    #[arg(long)]
    pub driver: String,
    /// This executor's id.
    #[arg(long)]
    pub executor_id: String,
    /// The application's id.
    #[arg(long)]
    pub app_id: String,
}

/// The executor side: pull slices until there are none, then exit. The secret
/// comes from the environment its worker set (`FLINT_AUTH_SECRET`).
pub async fn executor(args: ExecutorArgs) -> anyhow::Result<()> {
    let driver: RpcAddress = args.driver.parse()?;
    let conf = settings::load(&CommonArgs::default(), &crate::known_keys())?;
    let env = RpcEnv::client(RpcConf::from_conf(&conf)?)?;
    let r = env
        .setup_endpoint_ref::<PiMsg>(&driver, "pi-driver")
        .await
        .context("looking up the driver")?;
    println!(
        "executor {} of {} (pid {}) connected to {r}",
        args.executor_id,
        args.app_id,
        std::process::id()
    );
    let mut done = None;
    let mut count = 0;
    loop {
        let work = Work {
            exec_id: args.executor_id.clone(),
            done,
        };
        // With no work left the driver holds the ask until the application stops.
        match r.ask(work).await {
            Ok(Some(slice)) => {
                done = Some((slice.index, count_inside(slice)));
                count += 1;
            }
            Ok(None) => break,
            Err(e) if count > 0 => {
                println!("executor {}: driver gone ({e})", args.executor_id);
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("executor {}: computed {count} slice(s)", args.executor_id);
    env.shutdown();
    Ok(())
}
