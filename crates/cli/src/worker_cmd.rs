//! `flint worker`: runs a worker until SIGTERM or SIGINT (its executors are killed
//! and reaped first), or until registration gives up. It needs the cluster secret
//! (by default the master's `$FLINT_HOME/secret`) and never invents one; its
//! executors get it in their environment.

use std::path::PathBuf;

use anyhow::Context as _;
use flint_rpc::RpcAddress;
use flint_worker::service::{self, WorkerOptions};

use crate::settings::{self, CommonArgs};

/// Arguments of `flint worker`. Each option has a setting behind it (`flint conf`),
/// which the option overrides.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The master(s) to register with: flint://host:7077[,host2:7077].
    #[arg(env = "FLINT_MASTER")]
    pub master: String,
    /// Cores offered to executors. [setting worker.cores, FLINT_WORKER_CORES; default:
    /// every CPU]
    #[arg(long)]
    pub cores: Option<u32>,
    /// Memory offered to executors, e.g. 4g, 1.5g or 512m. [setting worker.memory,
    /// FLINT_WORKER_MEMORY; default: total − 1 GiB]
    #[arg(long)]
    pub memory: Option<String>,
    /// Directory for executors' work dirs and logs. [setting worker.dir,
    /// FLINT_WORKER_DIR; default: $FLINT_HOME/work, ~/.flint/work]
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Host to bind and advertise. [setting worker.host, FLINT_WORKER_HOST; default
    /// 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// RPC port (0 picks a free one). [setting worker.port, FLINT_WORKER_PORT; default 0]
    #[arg(long)]
    pub port: Option<u16>,
    /// Web UI and JSON status port (binds ui.host, loopback by default). [setting
    /// worker.webui_port, FLINT_WORKER_WEBUI_PORT; default 8081]
    #[arg(long)]
    pub webui_port: Option<u16>,
    /// The host to advertise to peers when it differs from the bound one (say the
    /// machine's routable name when binding 0.0.0.0). [setting
    /// network.advertise_address; default: the bound host, or this machine's name or
    /// first non-loopback address when bound to every interface]
    #[arg(long)]
    pub advertise_address: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The host a worker binds when neither `--host` nor `worker.host` says.
const DEFAULT_HOST: &str = "127.0.0.1";

/// The cores to offer: `--cores`, else `worker.cores`, else none (every CPU); warns
/// when that is more than the machine has.
fn cores(conf: &flint_conf::Conf, flag: Option<u32>) -> anyhow::Result<Option<u32>> {
    let given = settings::given(
        conf,
        "worker.cores",
        "--cores",
        flag.map(|c| c.to_string()).as_deref(),
    );
    let Some(g) = given else {
        return Ok(None);
    };
    let n: u32 = g
        .text
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{} is not valid: expected a whole number", g.origin))?;
    settings::warn_cores(&g.origin, u64::from(n));
    Ok(Some(n))
}

/// The memory to offer in MiB: `--memory`, else `worker.memory`, else none (total less
/// 1 GiB); warns when that is more than the machine has.
fn memory(conf: &flint_conf::Conf, flag: Option<&str>) -> anyhow::Result<Option<u64>> {
    let given = settings::given(conf, "worker.memory", "--memory", flag);
    let mb = settings::memory_mb(given.as_ref())?;
    if let (Some(g), Some(mb)) = (&given, mb) {
        settings::warn_memory(&g.origin, mb);
    }
    Ok(mb)
}

/// Starts the worker and serves until a signal arrives or it gives up.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let masters = RpcAddress::parse_list(&args.master)
        .with_context(|| format!("the master URL {:?} is not valid", args.master))?;
    let mut conf = settings::load(&args.common, &crate::known_keys())?;
    if let Some(a) = &args.advertise_address {
        conf.insert(
            "network.advertise_address",
            a.clone(),
            flint_conf::Source::Override,
        );
    }
    // Argument errors come first (from start); the secret is needed before the
    // first executor starts.
    let auth = crate::auth::find(&conf);
    if let Ok(a) = &auth {
        crate::auth::hand_to_children(a);
    }
    let host = settings::text(&conf, "worker.host", args.host, DEFAULT_HOST);
    let port = settings::port(&conf, "worker.port", args.port, 0)?;
    let webui_port = settings::port(
        &conf,
        "worker.webui_port",
        args.webui_port,
        service::DEFAULT_WEBUI_PORT,
    )?;
    let work_dir = settings::work_dir(&conf, args.work_dir, "--work-dir")?;
    let cores = cores(&conf, args.cores)?;
    let memory_mb = memory(&conf, args.memory.as_deref())?;
    let handle = service::start(WorkerOptions {
        masters,
        host,
        port,
        webui_port,
        cores,
        memory_mb,
        work_dir,
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
        signal = flint_daemon::signals::terminated() => {
            tracing::info!("received {signal}; stopping the worker and its executors");
            handle.shutdown();
        }
        _ = handle.wait() => {}
    }
    handle.wait().await.context("the worker stopped")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_registered_ones() {
        let default = |k| flint_conf::registry::setting(k).and_then(|s| s.default.value());
        assert_eq!(default("worker.host"), Some(DEFAULT_HOST));
        assert_eq!(default("worker.port"), Some("0"));
    }
}
