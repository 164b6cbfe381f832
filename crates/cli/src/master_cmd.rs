//! `flint master`: runs a master until SIGTERM or SIGINT. With no secret configured it
//! creates (or reuses) the default secret file, `$FLINT_HOME/secret`, and says how
//! other hosts get it.

use anyhow::Context as _;
use flint_master::service::{self, MasterOptions};

use crate::settings::{self, CommonArgs};

/// The host a master binds when neither `--host` nor `master.host` says.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// Arguments of `flint master`.
#[derive(clap::Args, Debug)]
pub struct MasterArgs {
    /// Host to bind and advertise (flint://HOST:PORT). Workers on other machines need
    /// a name they can resolve; the default only serves this machine. [setting
    /// master.host, FLINT_MASTER_HOST; default 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// RPC port. [setting master.port, FLINT_MASTER_PORT; default 7077]
    #[arg(long)]
    pub port: Option<u16>,
    /// Web UI and JSON status port (binds ui.host, loopback by default). [setting
    /// master.webui_port, FLINT_MASTER_WEBUI_PORT; default 8080]
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

/// Starts the master and serves until a signal arrives.
pub async fn run(args: MasterArgs) -> anyhow::Result<()> {
    let mut conf = settings::load(&args.common, &crate::known_keys())?;
    if let Some(a) = &args.advertise_address {
        conf.insert(
            "network.advertise_address",
            a.clone(),
            flint_conf::Source::Override,
        );
    }
    let auth = crate::auth::for_master(&conf).context("cannot start the master")?;
    let host = settings::text(&conf, "master.host", args.host, DEFAULT_HOST);
    let port = settings::port(&conf, "master.port", args.port, service::DEFAULT_PORT)?;
    let webui_port = settings::port(
        &conf,
        "master.webui_port",
        args.webui_port,
        service::DEFAULT_WEBUI_PORT,
    )?;
    let handle = service::start(MasterOptions {
        host,
        port,
        webui_port,
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
        signal = flint_daemon::signals::terminated() => {
            tracing::info!("received {signal}; stopping the master");
        }
        _ = handle.wait() => {}
    }
    handle.shutdown();
    handle.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_host_is_the_registered_one() {
        let s = flint_conf::registry::setting("master.host").and_then(|s| s.default.value());
        assert_eq!(s, Some(super::DEFAULT_HOST));
    }
}
