//! `flint master`: runs a master until SIGTERM or SIGINT. With no secret configured it
//! creates (or reuses) the default secret file, `$FLINT_HOME/secret`, and says how
//! other hosts get it.

use anyhow::Context as _;
use flint_master::service::{self, MasterOptions};

use crate::settings::{self, CommonArgs};

/// Arguments of `flint master`.
#[derive(clap::Args, Debug)]
pub struct MasterArgs {
    /// Host to bind and advertise (flint://HOST:PORT). Workers on other machines need
    /// a name they can resolve; the default only serves this machine.
    #[arg(long, env = "FLINT_MASTER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// RPC port.
    #[arg(long, env = "FLINT_MASTER_PORT", default_value_t = service::DEFAULT_PORT)]
    pub port: u16,
    /// Web UI and JSON status port (binds ui.host, loopback by default).
    #[arg(long, env = "FLINT_MASTER_WEBUI_PORT", default_value_t = service::DEFAULT_WEBUI_PORT)]
    pub webui_port: u16,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Starts the master and serves until a signal arrives.
pub async fn run(args: MasterArgs) -> anyhow::Result<()> {
    let conf = settings::load(&args.common, &crate::known_keys())?;
    let auth = crate::auth::for_master(&conf).context("cannot start the master")?;
    let handle = service::start(MasterOptions {
        host: args.host,
        port: args.port,
        webui_port: args.webui_port,
        conf,
    })
    .await
    .context("cannot start the master")?;
    println!(
        "flint master listening on {}; status at {}/api/v1/status",
        handle.rpc_address(),
        handle.webui_url()
    );
    for line in crate::auth::master_lines(&auth, &handle.rpc_address().to_string()) {
        println!("{line}");
    }
    tokio::select! {
        signal = crate::signals::terminated() => {
            tracing::info!("received {signal}; stopping the master");
        }
        _ = handle.wait() => {}
    }
    handle.shutdown();
    handle.wait().await;
    Ok(())
}
