//! The flags `flint master` and `flint worker` share — where the daemon binds and
//! what it advertises — and how each falls back to its setting
//! (`<role>.host`, `<role>.port`, `<role>.webui_port`, `network.advertise_address`).

use flint_conf::{Conf, Source};

use crate::settings;

/// Where a daemon binds and what it tells peers. Each flag wins over its setting.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BindArgs {
    /// Host to bind and advertise (flint://HOST:PORT). Peers on other machines need a
    /// name they can resolve; the default only serves this machine. [setting
    /// master.host / worker.host; default 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// RPC port. [setting master.port / worker.port; default 7077 for a master, 0 (a
    /// free one) for a worker]
    #[arg(long)]
    pub port: Option<u16>,
    /// Web UI and JSON status port (binds ui.host, loopback by default). [setting
    /// master.webui_port / worker.webui_port; default 8080 / 8081]
    #[arg(long)]
    pub webui_port: Option<u16>,
    /// The host to advertise to peers when it differs from the bound one (say the
    /// machine's routable name when binding 0.0.0.0). [setting
    /// network.advertise_address; default: the bound host, or this machine's name or
    /// first non-loopback address when bound to every interface]
    #[arg(long)]
    pub advertise_address: Option<String>,
}

/// A daemon's settings keys and defaults for [`BindArgs::resolve`].
pub struct BindKeys {
    /// The host's key (`master.host`).
    pub host: &'static str,
    /// The RPC port's key (`master.port`).
    pub port: &'static str,
    /// The web UI port's key (`master.webui_port`).
    pub webui_port: &'static str,
    /// The host when neither flag nor setting says.
    pub default_host: &'static str,
    /// The RPC port when neither flag nor setting says.
    pub default_port: u16,
    /// The web UI port when neither flag nor setting says.
    pub default_webui_port: u16,
}

/// What [`BindArgs::resolve`] settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The host to bind.
    pub host: String,
    /// The RPC port.
    pub port: u16,
    /// The web UI port.
    pub webui_port: u16,
}

impl BindArgs {
    /// The host and ports from the flags, else the settings in `keys`, else its
    /// defaults; `--advertise-address` goes into `conf` as
    /// `network.advertise_address`, where the daemon layer reads it.
    pub fn resolve(&self, conf: &mut Conf, keys: &BindKeys) -> anyhow::Result<Bind> {
        if let Some(a) = &self.advertise_address {
            conf.insert("network.advertise_address", a.clone(), Source::Override);
        }
        Ok(Bind {
            host: settings::text(conf, keys.host, self.host.clone(), keys.default_host),
            port: settings::port(conf, keys.port, self.port, keys.default_port)?,
            webui_port: settings::port(
                conf,
                keys.webui_port,
                self.webui_port,
                keys.default_webui_port,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: BindKeys = BindKeys {
        host: "master.host",
        port: "master.port",
        webui_port: "master.webui_port",
        default_host: "127.0.0.1",
        default_port: 7077,
        default_webui_port: 8080,
    };

    #[test]
    fn flags_win_over_settings_over_defaults_and_advertise_lands_in_the_conf() {
        let mut conf = Conf::new().set("master.port", "7078");
        let args = BindArgs {
            webui_port: Some(0),
            advertise_address: Some("node-a".into()),
            ..BindArgs::default()
        };
        let b = args.resolve(&mut conf, &KEYS).unwrap();
        assert_eq!(
            b,
            Bind {
                host: "127.0.0.1".into(),
                port: 7078,
                webui_port: 0
            }
        );
        assert_eq!(conf.get("network.advertise_address"), Some("node-a"));
        let mut bad = Conf::new().set("master.port", "70000");
        let e = BindArgs::default().resolve(&mut bad, &KEYS).unwrap_err();
        assert!(e.to_string().contains("master.port"), "{e}");
    }
}
