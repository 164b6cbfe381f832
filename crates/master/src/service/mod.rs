//! The master daemon: a thin async shell around the [`state`](crate::state)
//! machine.
//!
//! [`start`] binds the RPC environment (port 7077 by default) and the web UI
//! (8080), registers the `"Master"` endpoint, elects itself leader (no HA
//! yet: empty stored state) and runs the worker-timeout timer (every
//! [`timeout_check_interval`]). Incoming
//! [`MasterMsg`](flint_proto::messages::MasterMsg)s, timer ticks and dropped
//! connections become state-machine events; the effects become messages to
//! workers and application clients, replies, timers and log lines.
//!
//! Every event is stamped by one clock: monotonic time since
//! the master started (tokio's clock, which never jumps and which tests can
//! pause) for every deadline, and the wall clock for ids and displayed times
//! only.
//!
//! Every task the master spawns selects on one cancellation token and is
//! tracked; [`MasterHandle::shutdown`] cancels it and [`MasterHandle::wait`]
//! returns once every task and the RPC environment have ended.

mod endpoint;
mod http;
pub mod settings;
mod shell;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use flint_conf::Conf;
use flint_proto::messages::MASTER_ENDPOINT;
use flint_proto::status::MasterStatusJson;
use flint_rpc::{RpcAddress, RpcConf, RpcEnv, RpcError};
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::endpoint::MasterEndpoint;
use self::shell::{Origin, Shared};
use crate::state::{Event, MasterConfig, MasterState, Now};

pub use self::http::STATUS_PATH;

/// Spark's default master RPC port.
pub const DEFAULT_PORT: u16 = 7077;
/// Spark's default master web UI port.
pub const DEFAULT_WEBUI_PORT: u16 = 8080;

/// The wall clock, epoch milliseconds: for ids and displayed times only,
/// never for a deadline (it can jump).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// How often the master checks for silent workers: the
/// [`timeout_check_interval_ms`](MasterConfig::timeout_check_interval_ms)
/// of its config (`worker.timeout / 4`), the period of its tick timer.
pub fn timeout_check_interval(config: &MasterConfig) -> Duration {
    Duration::from_millis(config.timeout_check_interval_ms)
}

/// The master's clocks. Every [`Now`] the state machine sees comes from
/// here: monotonic milliseconds since the clock was made, from tokio's
/// clock (so `tokio::time::pause` in a test stops it), and [`wall_ms`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose monotonic time starts at 0 now.
    pub(crate) fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The current time on both clocks.
    pub(crate) fn now(&self) -> Now {
        Now::new(millis(self.origin.elapsed()), wall_ms())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The WARN a daemon logs at start-up when RPC authentication is off.
pub fn auth_disabled_warning(address: &RpcAddress) -> String {
    format!(
        "RPC authentication is disabled (auth.enabled = false): anyone who can reach {address} \
         can run code on this cluster"
    )
}

/// Whether RPC authentication is on: a shared secret or TLS.
fn auth_enabled(conf: &RpcConf) -> bool {
    conf.secret.is_some() || conf.tls.is_some()
}

/// How to start a master.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// The host to bind and advertise (`flint://host:port`).
    pub host: String,
    /// The RPC port (7077; 0 picks a free one).
    pub port: u16,
    /// The web UI port (8080; 0 picks a free one). The UI binds `ui.host`.
    pub webui_port: u16,
    /// Every other setting (see [`settings`] and `flint_rpc::conf`).
    pub conf: Conf,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            webui_port: DEFAULT_WEBUI_PORT,
            conf: Conf::new(),
        }
    }
}

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// A port is taken by another process.
    #[error("{what} {port} on {host} is in use; choose another with {flag}")]
    PortInUse {
        /// Which port ("port" or "web UI port").
        what: &'static str,
        /// The host it was bound on.
        host: String,
        /// The port.
        port: u16,
        /// The command-line flag that changes it.
        flag: &'static str,
    },
    /// A socket could not be bound for another reason.
    #[error("cannot listen on {address} for the {what}: {source}")]
    Bind {
        /// What the socket was for ("RPC environment" or "web UI").
        what: &'static str,
        /// `host:port` tried.
        address: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A setting did not parse.
    #[error(transparent)]
    Conf(#[from] flint_conf::ConfError),
    /// A setting parsed but is out of range.
    #[error("setting {key}: {message}")]
    Setting {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The RPC environment could not be set up.
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// A running master. Dropping it shuts the master down (without waiting).
pub struct MasterHandle {
    shared: Arc<Shared>,
    env: RpcEnv,
    address: RpcAddress,
    webui_address: SocketAddr,
    webui_url: String,
}

impl std::fmt::Debug for MasterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterHandle")
            .field("address", &self.address)
            .field("webui_url", &self.webui_url)
            .finish_non_exhaustive()
    }
}

impl MasterHandle {
    /// The master's RPC address; it prints as its URL, `flint://host:port`.
    pub fn rpc_address(&self) -> &RpcAddress {
        &self.address
    }

    /// The web UI's base URL, `http://host:port`.
    pub fn webui_url(&self) -> &str {
        &self.webui_url
    }

    /// The socket the web UI is bound to.
    pub fn webui_address(&self) -> SocketAddr {
        self.webui_address
    }

    /// The status document, as `GET /api/v1/status` serves it.
    pub fn status(&self) -> MasterStatusJson {
        self.shared.status()
    }

    /// Starts stopping the master: timers, web UI and RPC environment.
    /// Returns at once; [`MasterHandle::wait`] waits for the end.
    pub fn shutdown(&self) {
        if !self.shared.token.is_cancelled() {
            tracing::info!("master {} shutting down", self.address);
        }
        self.shared.token.cancel();
    }

    /// Waits until the master has stopped (after [`MasterHandle::shutdown`],
    /// or by itself when it loses leadership) and every task it spawned has
    /// ended.
    pub async fn wait(&self) {
        self.shared.token.cancelled().await;
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        self.env.shutdown();
        self.env.await_termination().await;
        self.shared.core.lock().clear();
    }
}

impl Drop for MasterHandle {
    fn drop(&mut self) {
        self.shared.token.cancel();
    }
}

/// Starts a master: see the [module docs](self).
pub async fn start(opts: MasterOptions) -> Result<MasterHandle, MasterError> {
    let config = settings::master_config(&opts.conf)?;
    let ui_host = settings::ui_host(&opts.conf);
    let rpc_conf = RpcConf::from_conf(&opts.conf)?;
    let auth = auth_enabled(&rpc_conf);

    let env = RpcEnv::server(rpc_conf, &opts.host, opts.port)
        .await
        .map_err(|e| match e {
            RpcError::Bind { address, source } => bind_error(
                ("port", "RPC environment"),
                "--port",
                &opts.host,
                opts.port,
                address,
                source,
            ),
            other => MasterError::Rpc(other),
        })?;
    let address = env
        .address()
        .cloned()
        .unwrap_or_else(|| RpcAddress::new(opts.host.clone(), opts.port));

    let listener = match TcpListener::bind(host_port(&ui_host, opts.webui_port)).await {
        Ok(l) => l,
        Err(source) => {
            env.shutdown();
            return Err(bind_error(
                ("web UI port", "web UI"),
                "--webui-port",
                &ui_host,
                opts.webui_port,
                host_port(&ui_host, opts.webui_port),
                source,
            ));
        }
    };
    let webui_address = match listener.local_addr() {
        Ok(a) => a,
        Err(source) => {
            env.shutdown();
            return Err(MasterError::Bind {
                what: "web UI",
                address: host_port(&ui_host, opts.webui_port),
                source,
            });
        }
    };
    // An unspecified bind address (0.0.0.0) is advertised as the master's host.
    let advertised = if webui_address.ip().is_unspecified() {
        address.host.clone()
    } else {
        ui_host.clone()
    };
    let webui_url = format!("http://{}", host_port(&advertised, webui_address.port()));

    let tick_every = timeout_check_interval(&config);
    let token = CancellationToken::new();
    let state = MasterState::new(address.to_string(), config);
    let shared = Shared::new(
        state,
        address.clone(),
        webui_url.clone(),
        token.clone(),
        Clock::new(),
        auth,
    );
    // No HA yet: this master is the leader, with nothing stored.
    shared.handle(
        Event::ElectedLeader {
            stored: Default::default(),
        },
        Origin::Internal,
        None,
    );

    if let Err(e) = env.setup_endpoint(
        MASTER_ENDPOINT,
        MasterEndpoint {
            shared: shared.clone(),
        },
    ) {
        env.shutdown();
        return Err(e.into());
    }

    let span = tracing::info_span!("master", url = %address);
    shared
        .tracker
        .spawn(tick_loop(shared.clone(), tick_every).instrument(span.clone()));
    let server_token = token.clone();
    let router = http::router(shared.clone());
    shared.tracker.spawn(
        async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { server_token.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!("web UI stopped: {e}");
            }
        }
        .instrument(span.clone()),
    );
    // When the token is cancelled, for whatever reason, the RPC env stops too.
    let supervisor_env = env.clone();
    let supervisor_token = token.clone();
    shared.tracker.spawn(async move {
        supervisor_token.cancelled().await;
        supervisor_env.shutdown();
    });

    span.in_scope(|| {
        tracing::info!("flint master listening on {address}");
        if !auth {
            tracing::warn!("{}", auth_disabled_warning(&address));
        }
        tracing::info!("master web UI at {webui_url}");
    });
    Ok(MasterHandle {
        shared,
        env,
        address,
        webui_address,
        webui_url,
    })
}

/// Sends [`Event::Tick`] every `every` (the first at once, as Spark).
async fn tick_loop(shared: Arc<Shared>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.token.cancelled() => break,
            _ = interval.tick() => shared.handle(Event::Tick, Origin::Internal, None),
        }
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `what` is (the port's name, what the socket is for).
fn bind_error(
    what: (&'static str, &'static str),
    flag: &'static str,
    host: &str,
    port: u16,
    address: String,
    source: std::io::Error,
) -> MasterError {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        MasterError::PortInUse {
            what: what.0,
            host: host.to_string(),
            port,
            flag,
        }
    } else {
        MasterError::Bind {
            what: what.1,
            address,
            source,
        }
    }
}
