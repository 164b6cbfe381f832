//! `flint worker`: runs a worker until SIGTERM or SIGINT (its executors are killed
//! and reaped first), or until registration gives up. It needs the cluster secret
//! (by default the master's `$FLINT_HOME/secret`) and never invents one; its
//! executors get it in their environment.

use std::path::PathBuf;

use anyhow::Context as _;
use flint_rpc::RpcAddress;
use flint_worker::service::{self, WorkerOptions};

use crate::settings::{self, CommonArgs};

/// Arguments of `flint worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The master(s) to register with: flint://host:7077[,host2:7077].
    #[arg(env = "FLINT_MASTER")]
    pub master: String,
    /// Cores offered to executors (default: every CPU).
    #[arg(long, env = "FLINT_WORKER_CORES")]
    pub cores: Option<u32>,
    /// Memory offered to executors, e.g. 4g or 512m (default: total − 1 GiB).
    #[arg(long, env = "FLINT_WORKER_MEMORY")]
    pub memory: Option<String>,
    /// Directory for executors' work dirs and logs.
    #[arg(long, env = "FLINT_WORKER_DIR", default_value = "work")]
    pub work_dir: PathBuf,
    /// Host to bind and advertise.
    #[arg(long, env = "FLINT_WORKER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// RPC port (0 picks a free one).
    #[arg(long, env = "FLINT_WORKER_PORT", default_value_t = 0)]
    pub port: u16,
    /// Web UI and JSON status port (binds ui.host, loopback by default).
    #[arg(long, env = "FLINT_WORKER_WEBUI_PORT", default_value_t = service::DEFAULT_WEBUI_PORT)]
    pub webui_port: u16,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Parses `--memory` into MB, naming the flag when it is wrong.
pub fn memory_mb(text: Option<&str>) -> anyhow::Result<Option<u64>> {
    text.map(|t| {
        flint_conf::parse_size(t, flint_conf::SizeUnit::Mebibytes)
            .map(|b| b >> 20)
            .map_err(|e| anyhow::anyhow!("--memory {t:?} is not valid: {e}"))
    })
    .transpose()
}

/// Starts the worker and serves until a signal arrives or it gives up.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let masters = RpcAddress::parse_list(&args.master)
        .with_context(|| format!("the master URL {:?} is not valid", args.master))?;
    let conf = settings::load(&args.common, &crate::known_keys())?;
    // Argument errors come first (from start); the secret is needed before the
    // first executor starts.
    let auth = crate::auth::find(&conf);
    if let Ok(a) = &auth {
        crate::auth::hand_to_children(a);
    }
    let handle = service::start(WorkerOptions {
        masters,
        host: args.host,
        port: args.port,
        webui_port: args.webui_port,
        cores: args.cores,
        memory_mb: memory_mb(args.memory.as_deref())?,
        work_dir: args.work_dir,
        conf,
    })
    .await
    .context("cannot start the worker")?;
    let auth = auth.context("cannot start the worker")?;
    tracing::info!("cluster secret: {}", crate::auth::describe(&auth));
    println!(
        "flint worker {} listening on {}; status at {}/api/v1/status",
        handle.id(),
        handle.rpc_address(),
        handle.webui_url()
    );
    tokio::select! {
        signal = crate::signals::terminated() => {
            tracing::info!("received {signal}; stopping the worker and its executors");
            handle.shutdown();
        }
        _ = handle.wait() => {}
    }
    handle.wait().await.context("the worker stopped")?;
    Ok(())
}
