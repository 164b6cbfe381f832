//! `flint worker`: runs a worker until SIGTERM or SIGINT (its executors are killed
//! and reaped first), or until registration gives up. It needs the cluster secret
//! (by default the master's `$FLINT_HOME/secret`) and never invents one; its
//! executors get it in their environment.

use std::path::PathBuf;

use anyhow::Context as _;
use flint_rpc::RpcAddress;
use flint_worker::service::{self, WorkerOptions};

use crate::bind_args::{Bind, BindArgs, BindKeys};
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
    #[command(flatten)]
    pub bind: BindArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The host a worker binds when neither `--host` nor `worker.host` says.
const DEFAULT_HOST: &str = "127.0.0.1";

/// The worker's settings keys and defaults behind its flags.
const KEYS: BindKeys = BindKeys {
    host: "worker.host",
    port: "worker.port",
    webui_port: "worker.webui_port",
    default_host: DEFAULT_HOST,
    default_port: 0,
    default_webui_port: service::DEFAULT_WEBUI_PORT,
};

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
    let Bind {
        host,
        port,
        webui_port,
    } = args.bind.resolve(&mut conf, &KEYS)?;
    // Argument errors come first (from start); the secret is needed before the
    // first executor starts.
    let auth = crate::auth::find(&conf);
    if let Ok(a) = &auth {
        crate::auth::hand_to_children(a);
    }
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
    say!(
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
