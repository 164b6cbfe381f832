//! flint's application client, after Spark's `StandaloneAppClient`: the part
//! of a driver that registers the application with the master (or with every
//! master of an HA cluster, following the leader), and turns what the master
//! says about the application (executors added and removed, workers lost,
//! the application removed, a new leader) into listener callbacks.
//!
//! - [`AppClient::start`] registers the client's endpoint and starts the
//!   registration rounds; it returns an [`AppClientHandle`].
//! - [`AppClientListener`] is told what happens; [`ChannelListener`] turns
//!   the callbacks into [`AppEvent`]s on a tokio channel.
//! - [`settings`] holds the timings (`client.registration.timeout`, 20 s, and
//!   `client.registration.retries`, 3, as Spark).
//!
//! The driver's RPC environment must hold the cluster secret. Built with
//! [`RpcConf::from_conf`](flint_rpc::RpcConf::from_conf) it finds it as every flint
//! node does (`auth.secret`, `auth.secret_file`, `FLINT_AUTH_SECRET`, else the
//! master's default file `$FLINT_HOME/secret`, i.e. `~/.flint/secret`), and fails
//! naming that file when there is none; it never invents one.
//!
//! ```no_run
//! use flint_client::{AppClient, AppEvent, ChannelListener};
//! use flint_proto::{ApplicationDescription, ExecutorCommand};
//! use flint_rpc::{RpcAddress, RpcConf, RpcEnv};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let conf = flint_conf::Conf::new();
//! let env = RpcEnv::server(RpcConf::from_conf(&conf)?, "127.0.0.1", 0).await?;
//! let masters = RpcAddress::parse_list("flint://127.0.0.1:7077")?;
//! let desc = ApplicationDescription::new("pi", ExecutorCommand::new("/path/to/pi"));
//! let (listener, mut events) = ChannelListener::new();
//! let client = AppClient::start(env, masters, desc, listener, &conf)?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         AppEvent::Connected(app_id) => println!("registered as {app_id}"),
//!         AppEvent::ExecutorAdded { exec_id, worker_id, .. } => {
//!             println!("executor {exec_id} on {worker_id}")
//!         }
//!         AppEvent::Dead(reason) => {
//!             println!("{reason}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! client.stop().await;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod listener;
pub mod settings;

pub use client::{
    AppClient, AppClientHandle, ALL_MASTERS_UNRESPONSIVE, APPLICATION_STOPPED,
    ENVIRONMENT_SHUT_DOWN, MASTER_REMOVED_PREFIX,
};
pub use error::ClientError;
pub use listener::{AppClientListener, AppEvent, ChannelListener};
pub use settings::ClientSettings;
