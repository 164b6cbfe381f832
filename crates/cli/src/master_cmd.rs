//! `flint master`: runs a master until SIGTERM or SIGINT. With no secret configured it
//! creates (or reuses) the default secret file, `$FLINT_HOME/secret`, and says how
//! other hosts get it.

use anyhow::Context as _;
use flint_master::service::{self, MasterOptions};

use crate::bind_args::{Bind, BindArgs, BindKeys};
use crate::settings::{self, CommonArgs};

/// The host a master binds when neither `--host` nor `master.host` says.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// Arguments of `flint master`.
#[derive(clap::Args, Debug)]
pub struct MasterArgs {
    #[command(flatten)]
    pub bind: BindArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The master's settings keys and defaults behind its flags.
const KEYS: BindKeys = BindKeys {
    host: "master.host",
    port: "master.port",
    webui_port: "master.webui_port",
    default_host: DEFAULT_HOST,
    default_port: service::DEFAULT_PORT,
    default_webui_port: service::DEFAULT_WEBUI_PORT,
};

/// Starts the master and serves until a signal arrives.
pub async fn run(args: MasterArgs) -> anyhow::Result<()> {
    let mut conf = settings::load(&args.common, &crate::known_keys())?;
    let Bind {
        host,
        port,
        webui_port,
    } = args.bind.resolve(&mut conf, &KEYS)?;
    let auth = crate::auth::for_master(&conf).context("cannot start the master")?;
    let handle = service::start(MasterOptions {
        host,
        port,
        webui_port,
        conf,
    })
    .await
    .context("cannot start the master")?;
    say!(
        "flint master listening on {}; status at {}/api/v1/status",
        handle.rpc_address(),
        handle.webui_url()
    );
    for line in crate::auth::master_lines(&auth, &handle.rpc_address().to_string()) {
        say!("{line}");
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
