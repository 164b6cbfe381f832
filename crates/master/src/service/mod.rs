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
//! Every event is stamped by one [`flint_daemon::Clock`]: monotonic
//! time since the master started (tokio's clock, which never jumps and which
//! tests can pause) for every deadline, and the wall clock for ids and
//! displayed times only.
//!
//! Binding, the advertised address, the bounded web UI, the open-file limit
//! and the start-up log lines are the shared daemon layer's
//! ([`flint_daemon`]); this module adds the master's endpoint, state and
//! timer.
//!
//! With `rest.enabled` it also serves the REST submission API ([`rest`]), on its own
//! port (6066), authenticated by bearer tokens derived from the cluster secret.
//!
//! Every task the master spawns selects on one cancellation token and is
//! tracked; [`MasterHandle::shutdown`] cancels it and [`MasterHandle::wait`]
//! returns once every task and the RPC environment have ended.

mod binary_store;
mod endpoint;
mod http;
pub mod rest;
pub mod settings;
mod shell;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flint_conf::Conf;
use flint_daemon::{BindOptions, Bound, Clock, DaemonError};
use flint_proto::messages::MASTER_ENDPOINT;
use flint_proto::status::MasterStatusJson;
use flint_rpc::{RpcAddress, RpcConf, RpcEnv, RpcError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::endpoint::MasterEndpoint;
use self::shell::{Origin, Shared};
use crate::state::{Event, MasterConfig, MasterState};

pub use self::http::STATUS_PATH;
pub use flint_daemon::clock::wall_ms;
pub use flint_daemon::log::auth_disabled_warning;

/// Spark's default master RPC port.
pub const DEFAULT_PORT: u16 = 7077;
/// Spark's default master web UI port.
pub const DEFAULT_WEBUI_PORT: u16 = 8080;

/// How often the master checks for silent workers: the
/// [`timeout_check_interval_ms`](MasterConfig::timeout_check_interval_ms)
/// of its config (`worker.timeout / 4`), the period of its tick timer.
pub fn timeout_check_interval(config: &MasterConfig) -> Duration {
    Duration::from_millis(config.timeout_check_interval_ms)
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
    /// A socket could not be bound, or a setting of the daemon layer
    /// (`ui.*`, `network.advertise_address`) is wrong.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
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
    rest_url: Option<String>,
}

impl std::fmt::Debug for MasterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterHandle")
            .field("address", &self.address)
            .field("webui_url", &self.webui_url)
            .field("rest_url", &self.rest_url)
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

    /// The REST submission server's base URL, `http://host:port`, when
    /// `rest.enabled`.
    pub fn rest_url(&self) -> Option<&str> {
        self.rest_url.as_deref()
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
    let rest_config = rest::rest_config(&opts.conf)?;
    let rpc = RpcConf::from_conf(&opts.conf)?;
    let secret = rpc.secret.clone();
    let Bound {
        env,
        address,
        auth,
        ui,
    } = flint_daemon::bind(BindOptions {
        host: &opts.host,
        port: opts.port,
        ui_host: &ui_host,
        webui_port: opts.webui_port,
        rpc,
        conf: &opts.conf,
    })
    .await?;
    let webui_address = ui.local_addr();
    let webui_url = ui.url().to_string();

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
    // A root span: whatever span the caller (or a worker in the same process, whose
    // messages arrive on its tasks) is in, the master's lines carry only its own.
    let span = tracing::info_span!(parent: None, "master", url = %address);
    span.in_scope(|| {
        shared.handle(
            Event::ElectedLeader {
                stored: Default::default(),
            },
            Origin::Internal,
            None,
        )
    });

    if let Err(e) = env.setup_endpoint(
        MASTER_ENDPOINT,
        MasterEndpoint {
            shared: shared.clone(),
            span: span.clone(),
        },
    ) {
        env.shutdown();
        return Err(e.into());
    }

    // The store of uploaded driver binaries (cluster-mode `flint submit`).
    let store = match binary_store::StoreShell::new(
        env.clone(),
        settings::binary_store_max_size(&opts.conf)?,
    ) {
        Ok(s) => s,
        Err(e) => {
            env.shutdown();
            return Err(MasterError::Setting {
                key: settings::BINARY_STORE_MAX_SIZE,
                message: format!("cannot create the binary store's temporary directory: {e}"),
            });
        }
    };
    let _ = shared.binaries.set(store.clone());
    shared.core.lock().max_watches = settings::max_driver_watches(&opts.conf)?;
    let registered = env
        .setup_endpoint(
            flint_proto::messages::BINARY_STORE_ENDPOINT,
            binary_store::StoreEndpoint {
                shell: store.clone(),
            },
        )
        .and_then(|_| {
            env.register_stream_handler(flint_proto::messages::BINARY_UPLOAD_STREAM, store.clone())
        });
    if let Err(e) = registered {
        env.shutdown();
        return Err(e.into());
    }

    // The REST submission server, when enabled: a client of the endpoint above.
    let rest_server = match env.local_ref::<flint_proto::messages::MasterMsg>(MASTER_ENDPOINT) {
        Some(master) => {
            let advertised = (!is_loopback(&address.host)).then(|| address.host.clone());
            rest::bind(
                &opts.conf,
                &rest_config,
                secret.as_ref().map(|s| s.expose()),
                master,
                store.clone(),
                address.to_string(),
                advertised.as_deref(),
            )
            .await
        }
        None => Err(MasterError::Setting {
            key: rest::ENABLED,
            message: "the master endpoint is not registered".into(),
        }),
    };
    let rest_server = match rest_server {
        Ok(r) => r,
        Err(e) => {
            env.shutdown();
            return Err(e);
        }
    };
    drop(secret);
    let rest_url = rest_server.as_ref().map(rest::Bound::url);
    if let Some(server) = rest_server {
        shared
            .tracker
            .spawn(server.serve(token.clone()).instrument(span.clone()));
    }

    // Event::Tick every `tick_every`, the first at once (as Spark).
    let ticking = shared.clone();
    shared.tracker.spawn(
        flint_daemon::clock::tick_every(token.clone(), tick_every, move || {
            ticking.handle(Event::Tick, Origin::Internal, None)
        })
        .instrument(span.clone()),
    );
    shared.tracker.spawn(
        ui.serve(http::router(shared.clone()), token.clone())
            .instrument(span.clone()),
    );
    // When the token is cancelled, for whatever reason, the RPC env stops too.
    let supervisor_env = env.clone();
    let supervisor_token = token.clone();
    shared.tracker.spawn(async move {
        supervisor_token.cancelled().await;
        store.close();
        supervisor_env.shutdown();
    });

    span.in_scope(|| {
        flint_daemon::log::started("master", &address, "", auth, &webui_url);
        if let Some(url) = &rest_url {
            tracing::info!("master REST submission server at {url}/v1/submissions/");
        }
    });
    Ok(MasterHandle {
        shared,
        env,
        address,
        webui_address,
        webui_url,
        rest_url,
    })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
