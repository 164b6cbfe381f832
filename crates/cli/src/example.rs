//! `flint run-example pi`: the main job, written against the `flint` library as a user
//! would write it. An embedded cluster — a master and workers in this process — runs
//! the application; the driver (this process, through `flint::Context`) serves its own
//! binary, the workers fetch it by content hash and start it as executors (real child
//! processes), which turn into executors at `get_or_create` (see `main`), run the
//! tasks and return their results. The driver prints the estimate and where to look.
//!
//! The cluster, the driver and the executors authenticate with the cluster secret
//! (by default `$FLINT_HOME/secret`, created if missing, as `flint master` does);
//! the executors get it from their worker in `FLINT_AUTH_SECRET`, never in argv.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{bail, Context as _};
use flint_master::service::{self as master, MasterOptions};
use flint_worker::service::{self as worker, WorkerOptions};

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
    /// Cores per worker (one executor per worker, with this many cores).
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

/// A well-mixed 64-bit hash (SplitMix64's finalizer): a dart's coordinate from its number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `z` as a number in [0, 1).
fn unit(z: u64) -> f64 {
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether dart `i` lands inside the unit circle.
pub fn inside(i: u64) -> bool {
    let (x, y) = (unit(mix(i)), unit(mix(i ^ 0x5555_5555_5555_5555)));
    x * x + y * y <= 1.0
}

/// The job, on the `flint` library: darts counted per slice, and the pids of the
/// processes that ran the slices (to show they were executors, not this process).
fn pi_job(
    master_url: String,
    cores: u32,
    slices: u32,
    samples: u64,
) -> flint::Result<(u64, BTreeSet<u32>, String)> {
    let ctx = flint::Context::builder()
        .app_name("Flint Pi")
        .master(master_url)
        // Show the slices spread over every worker's executor: start once all
        // executors have registered (bounded by the waiting time's default, 30 s).
        .conf("cores.max", cores.to_string())
        .conf("scheduler.min_registered_resources_percent", "100")
        .get_or_create()?;
    let app_id = ctx.app_id().to_string();
    println!("  application    {app_id} registered");
    let darts = samples * u64::from(slices);
    let per_slice: Vec<(u64, u32)> = ctx
        .range(0, darts, slices)
        .map_partitions(|darts| {
            let n = darts.filter(|i| inside(*i)).count() as u64;
            [(n, std::process::id())]
        })
        .collect()?;
    ctx.stop()?;
    let inside: u64 = per_slice.iter().map(|(n, _)| n).sum();
    let pids = per_slice.iter().map(|(_, p)| *p).collect();
    Ok((inside, pids, app_id))
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

    // The driver: this process, through the flint library, on its own thread (the
    // library runs its own runtime and blocks while a job runs).
    let url = m.rpc_address().to_string();
    let (slices, samples) = (args.slices, args.samples);
    let cores = args.workers * args.cores_per_worker;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("flint-pi-driver".into())
        .spawn(move || {
            let _ = tx.send(pi_job(url, cores, slices, samples));
        })
        .context("starting the driver thread")?;
    let (inside, pids, app_id) = rx
        .await
        .context("the driver thread ended without an answer")?
        .context("the pi job failed")?;
    let executors = pids.len();
    let pid_list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let total = u64::from(args.slices) * args.samples;
    let pi = 4.0 * inside as f64 / total as f64;
    println!(
        "Pi is roughly {pi:.6} ({} slices × {} samples computed by {executors} executor process(es), pids {}, {:.2?})",
        args.slices,
        args.samples,
        pid_list.join(" "),
        started.elapsed()
    );
    let note = if tmp.is_some() {
        " (removed on exit; keep them with --work-dir DIR)"
    } else {
        ""
    };
    println!(
        "  executor logs  {}/worker-*/{app_id}/<executor-id>/stdout, stderr{note}",
        base.display()
    );
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
    if let Some(tmp) = tmp {
        tmp.close()
            .with_context(|| format!("cannot remove {}", base.display()))?;
    }
    Ok(())
}
