//! Binding a daemon's sockets in one step: the soft open-file limit raised,
//! the web UI's limits read, the RPC environment bound, the advertised
//! address worked out, the web UI bound — and on any failure, what was bound
//! released and one [`DaemonError`] naming the port and its flag
//! (`port 7077 on 127.0.0.1 is in use; choose another with --port`).

use flint_conf::Conf;
use flint_rpc::{RpcAddress, RpcConf, RpcEnv, RpcError};

use crate::advertise::{self, is_loopback, is_unspecified};
use crate::http::{HttpLimits, HttpServer};
use crate::DaemonError;

/// A port a daemon binds, as its bind errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// The port's name ("port", "web UI port").
    pub name: &'static str,
    /// What the socket is for ("RPC environment", "web UI").
    pub purpose: &'static str,
    /// The command-line flag that changes it.
    pub flag: &'static str,
}

/// The RPC port (`--port`).
pub const RPC_PORT: Port = Port {
    name: "port",
    purpose: "RPC environment",
    flag: "--port",
};

/// The web UI port (`--webui-port`).
pub const WEBUI_PORT: Port = Port {
    name: "web UI port",
    purpose: "web UI",
    flag: "--webui-port",
};

impl Port {
    /// The error for failing to bind `address` (`host:port`) for this port:
    /// [`DaemonError::PortInUse`] when the port is taken, else
    /// [`DaemonError::Bind`] with the operating system's reason.
    pub fn error(
        &self,
        host: &str,
        port: u16,
        address: String,
        source: std::io::Error,
    ) -> DaemonError {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            DaemonError::PortInUse {
                what: self.name,
                host: host.to_string(),
                port,
                flag: self.flag,
            }
        } else {
            DaemonError::Bind {
                what: self.purpose,
                address,
                source,
            }
        }
    }
}

/// What a daemon binds.
#[derive(Debug, Clone)]
pub struct BindOptions<'a> {
    /// The RPC host (`--host`); `0.0.0.0` or `::` listens everywhere.
    pub host: &'a str,
    /// The RPC port (0 picks a free one).
    pub port: u16,
    /// The web UI host (`ui.host`).
    pub ui_host: &'a str,
    /// The web UI port (0 picks a free one).
    pub webui_port: u16,
    /// The RPC environment's settings.
    pub rpc: RpcConf,
    /// Every setting (`network.advertise_address`, `ui.*` limits).
    pub conf: &'a Conf,
}

/// A daemon's bound sockets.
pub struct Bound {
    /// The RPC environment.
    pub env: RpcEnv,
    /// The address peers are told, `flint://host:port`: the bound port on the
    /// [advertised](crate::advertise) host, which is also what the environment
    /// names in the endpoint references it sends (`env.address()`).
    pub address: RpcAddress,
    /// Whether RPC authentication is on (a secret or TLS).
    pub auth: bool,
    /// The web UI listener, to [`serve`](HttpServer::serve).
    pub ui: HttpServer,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("env", &self.env.describe())
            .field("address", &self.address)
            .field("auth", &self.auth)
            .field("ui", &self.ui)
            .finish()
    }
}

/// Binds a daemon's sockets: see the [module docs](self).
pub async fn bind(opts: BindOptions<'_>) -> Result<Bound, DaemonError> {
    crate::rlimit::raise_nofile_limit_once();
    let limits = HttpLimits::from_conf(opts.conf)?;
    let configured = advertise::configured(opts.conf);
    let auth = crate::log::auth_enabled(&opts.rpc);

    let host = advertise::advertised_host(opts.host, configured.as_deref()).await;
    let env = RpcEnv::server_advertising(opts.rpc, opts.host, opts.port, &host)
        .await
        .map_err(|e| match e {
            RpcError::Bind { address, source } => {
                RPC_PORT.error(opts.host, opts.port, address, source)
            }
            other => DaemonError::Rpc(other),
        })?;
    let bound_port = env.address().map_or(opts.port, |a| a.port);
    if is_unspecified(opts.host) {
        tracing::info!(
            "the RPC environment listens on every interface ({}) and is advertised as {host}",
            crate::host_port(opts.host, bound_port),
        );
    }
    let address = RpcAddress::new(host, bound_port);

    // The web UI on every interface is named like the RPC address, unless
    // that is loopback (then this machine's name is more use to a browser).
    let ui_advertised = match &configured {
        Some(h) => Some(h.clone()),
        None if !is_loopback(&address.host) => Some(address.host.clone()),
        None => None,
    };
    let ui = match HttpServer::bind(
        opts.ui_host,
        opts.webui_port,
        limits,
        ui_advertised.as_deref(),
    )
    .await
    {
        Ok(ui) => ui,
        Err(e) => {
            env.shutdown();
            return Err(e);
        }
    };
    Ok(Bound {
        env,
        address,
        auth,
        ui,
    })
}
