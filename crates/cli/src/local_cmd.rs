//! `flint local --workers N`: a master and N workers in this process, in the
//! foreground, until Ctrl-C — for trying flint on one machine. Like `flint master`,
//! it creates (or reuses) the default secret file when no secret is configured.
//! The workers share the machine: unless told, each offers its share of the cores
//! and of the memory one worker would offer (total less 1 GiB), not all of it.

use std::path::PathBuf;

use anyhow::Context as _;
use flint_master::service::{self as master, MasterOptions};
use flint_worker::service::{self as worker, WorkerOptions};

use crate::settings::{self, CommonArgs};

/// Arguments of `flint local`.
#[derive(clap::Args, Debug)]
pub struct LocalArgs {
    /// How many workers to start.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Cores each worker offers (default: the machine's cores split between the
    /// workers, at least 1 each).
    #[arg(long)]
    pub cores_per_worker: Option<u32>,
    /// Memory each worker offers, e.g. 1g (default: the machine's memory less 1 GiB
    /// split between the workers).
    #[arg(long)]
    pub memory_per_worker: Option<String>,
    /// The master's RPC port (0 picks a free one). [setting master.port; default 7077]
    #[arg(long)]
    pub port: Option<u16>,
    /// The master's web UI port (0 picks a free one). [setting master.webui_port;
    /// default 8080]
    #[arg(long)]
    pub webui_port: Option<u16>,
    /// Where the workers' work dirs go (one subdirectory per worker). [setting
    /// worker.dir; default $FLINT_HOME/work, ~/.flint/work]
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs the local cluster until Ctrl-C or SIGTERM.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    let conf = settings::load(&args.common, &crate::known_keys())?;
    let n = u64::from(args.workers);
    let memory = match &args.memory_per_worker {
        Some(text) => {
            let mb = settings::memory_mb(Some(&settings::Given {
                text: text.clone(),
                origin: format!("--memory-per-worker {text}"),
            }))?
            .unwrap_or_default();
            if mb == 0 {
                anyhow::bail!(
                    "--memory-per-worker {text} is not valid: each worker needs at least 1m"
                );
            }
            settings::warn_memory(
                &format!("--workers {} x --memory-per-worker {text}", args.workers),
                n.saturating_mul(mb),
            );
            mb
        }
        None => {
            let total = flint_conf::machine::memory_bytes().map_or(2048, |b| b >> 20);
            (total.saturating_sub(1024).max(1024) / n).max(1)
        }
    };
    let cores = match args.cores_per_worker {
        Some(0) => anyhow::bail!("--cores-per-worker 0 is not valid: each worker needs at least 1"),
        Some(c) => {
            settings::warn_cores(
                &format!("--workers {} x --cores-per-worker {c}", args.workers),
                n.saturating_mul(u64::from(c)),
            );
            c
        }
        None => {
            let total = flint_conf::machine::cores().unwrap_or(1);
            u32::try_from((total / n).max(1)).unwrap_or(u32::MAX)
        }
    };
    let work_dir = settings::work_dir(&conf, args.work_dir.clone(), "--work-dir")?;
    let port = settings::port(&conf, "master.port", args.port, master::DEFAULT_PORT)?;
    let webui_port = settings::port(
        &conf,
        "master.webui_port",
        args.webui_port,
        master::DEFAULT_WEBUI_PORT,
    )?;
    let auth = crate::auth::for_master(&conf).context("cannot start the master")?;
    crate::auth::hand_to_children(&auth);
    let m = master::start(MasterOptions {
        host: "127.0.0.1".into(),
        port,
        webui_port,
        conf: conf.clone(),
    })
    .await
    .context("cannot start the master")?;
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let w = worker::start(WorkerOptions {
            masters: vec![m.rpc_address().clone()],
            host: "127.0.0.1".into(),
            port: 0,
            webui_port: 0,
            cores: Some(cores),
            memory_mb: Some(memory),
            work_dir: work_dir.join(format!("worker-{i}")),
            conf: conf.clone(),
        })
        .await
        .with_context(|| format!("cannot start worker {i}"))?;
        workers.push(w);
    }
    say!(
        "flint local cluster: master {} with {} worker(s)",
        m.rpc_address(),
        workers.len()
    );
    say!("  master UI / status: {}/api/v1/status", m.webui_url());
    say!(
        "  each worker offers {cores} core(s) and {memory} MiB; work dirs in {}",
        work_dir.display()
    );
    for line in crate::auth::master_lines(&auth, &m.rpc_address().to_string()) {
        say!("  {line}");
    }
    for w in &workers {
        say!("  worker {}: {}", w.id(), w.webui_url());
    }
    say!("Press Ctrl-C to stop.");
    let signal = flint_daemon::signals::terminated().await;
    tracing::info!("received {signal}; stopping the local cluster");
    for w in &workers {
        w.shutdown();
    }
    for w in &workers {
        let _ = w.wait().await;
    }
    m.shutdown();
    m.wait().await;
    Ok(())
}
