//! `flint local --workers N`: a master and N workers in this process, in the
//! foreground, until Ctrl-C — for trying flint on one machine. Like `flint master`,
//! it creates (or reuses) the default secret file when no secret is configured.

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
    /// Cores each worker offers.
    #[arg(long, default_value_t = 1)]
    pub cores_per_worker: u32,
    /// Memory each worker offers, e.g. 1g.
    #[arg(long, default_value = "1g")]
    pub memory_per_worker: String,
    /// The master's RPC port (0 picks a free one). [setting master.port; default 7077]
    #[arg(long)]
    pub port: Option<u16>,
    /// The master's web UI port (0 picks a free one). [setting master.webui_port;
    /// default 8080]
    #[arg(long)]
    pub webui_port: Option<u16>,
    /// Where the workers' work dirs go (one subdirectory per worker).
    #[arg(long, default_value = "work")]
    pub work_dir: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs the local cluster until Ctrl-C or SIGTERM.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    let conf = settings::load(&args.common, &crate::known_keys())?;
    let memory = settings::memory_mb(Some(&settings::Given {
        text: args.memory_per_worker.clone(),
        origin: format!("--memory-per-worker {}", args.memory_per_worker),
    }))?;
    let n = u64::from(args.workers);
    settings::warn_cores(
        &format!(
            "--workers {} x --cores-per-worker {}",
            args.workers, args.cores_per_worker
        ),
        n.saturating_mul(u64::from(args.cores_per_worker)),
    );
    if let Some(mb) = memory {
        settings::warn_memory(
            &format!(
                "--workers {} x --memory-per-worker {}",
                args.workers, args.memory_per_worker
            ),
            n.saturating_mul(mb),
        );
    }
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
            cores: Some(args.cores_per_worker),
            memory_mb: memory,
            work_dir: args.work_dir.join(format!("worker-{i}")),
            conf: conf.clone(),
        })
        .await
        .with_context(|| format!("cannot start worker {i}"))?;
        workers.push(w);
    }
    println!(
        "flint local cluster: master {} with {} worker(s)",
        m.rpc_address(),
        workers.len()
    );
    println!("  master UI / status: {}/api/v1/status", m.webui_url());
    for line in crate::auth::master_lines(&auth, &m.rpc_address().to_string()) {
        println!("  {line}");
    }
    for w in &workers {
        println!("  worker {}: {}", w.id(), w.webui_url());
    }
    println!("Press Ctrl-C to stop.");
    let signal = crate::signals::terminated().await;
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
