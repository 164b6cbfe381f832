//! The application side (Spark's `LauncherBackend`): when a launcher started this
//! process, connect to its server with the handle's key id and secret, say hello, and
//! report the app id and states; a `Stop` from the launcher runs a callback.
//!
//! [`Backend`] owns a small runtime of its own, so it works the same from plain threads
//! (the flint library's driver) and from inside another runtime (`flint submit`).
//! Reports are queued in order to one task; [`Backend::finish`] sends a final state and
//! waits, bounded, until it is written.

use std::sync::Arc;
use std::time::Duration;

use flint_rpc::{Context, Endpoint, EndpointRef, RpcAddress, RpcConf, RpcEnv, Secret};
use tokio::sync::mpsc;

use crate::protocol::{
    BackendMsg, Hello, LauncherMsg, SetAppId, SetDriverId, SetState, State, BACKEND_ENDPOINT,
    KEY_ID_ENV, PORT_ENV, SECRET_ENV, SERVER_ENDPOINT,
};
use crate::LauncherError;

/// How long connecting and the hello may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Backend::finish`] waits for the last report to be written.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// What the launcher environment variables say.
#[derive(Clone)]
pub struct LauncherEnv {
    /// The launcher server's port on 127.0.0.1.
    pub port: u16,
    /// The handle's key id.
    pub key_id: String,
    /// The handle's secret.
    pub secret: Secret,
}

impl std::fmt::Debug for LauncherEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LauncherEnv")
            .field("port", &self.port)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl LauncherEnv {
    /// Reads [`PORT_ENV`], [`KEY_ID_ENV`] and [`SECRET_ENV`] through `get`: `None`
    /// when none is set; an error naming the problem when only some are, or the port
    /// is not a port.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<LauncherEnv>, LauncherError> {
        let (port, key, secret) = (get(PORT_ENV), get(KEY_ID_ENV), get(SECRET_ENV));
        if port.is_none() && key.is_none() && secret.is_none() {
            return Ok(None);
        }
        let missing: Vec<&str> = [
            (PORT_ENV, port.is_none()),
            (KEY_ID_ENV, key.is_none()),
            (SECRET_ENV, secret.is_none()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
        if !missing.is_empty() {
            return Err(LauncherError::Environment(format!(
                "{} not set while other FLINT_LAUNCHER_* variables are; a launcher sets all three",
                missing.join(" and ")
            )));
        }
        let (Some(port), Some(key_id), Some(secret)) = (port, key, secret) else {
            return Ok(None);
        };
        let port: u16 = match port.trim().parse() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(LauncherError::Environment(format!(
                    "{PORT_ENV}={port:?} is not a port number (1-65535)"
                )))
            }
        };
        if key_id.is_empty() || secret.is_empty() {
            return Err(LauncherError::Environment(format!(
                "{KEY_ID_ENV} and {SECRET_ENV} must not be empty"
            )));
        }
        Ok(Some(LauncherEnv {
            port,
            key_id,
            secret: Secret::new(secret.into_bytes()),
        }))
    }

    /// [`LauncherEnv::from_lookup`] on this process's environment.
    pub fn from_process() -> Result<Option<LauncherEnv>, LauncherError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

enum Cmd {
    State(State),
    AppId(String),
    DriverId(String),
    Flush(std::sync::mpsc::Sender<()>),
}

/// A connection to the launcher that started this process.
pub struct Backend {
    rt: Option<tokio::runtime::Runtime>,
    env: RpcEnv,
    tx: mpsc::UnboundedSender<Cmd>,
    last: parking_lot::Mutex<Option<State>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("last", &*self.last.lock())
            .finish_non_exhaustive()
    }
}

struct BackendEndpoint {
    on_stop: Arc<dyn Fn() + Send + Sync>,
}

impl Endpoint for BackendEndpoint {
    type Msg = BackendMsg;

    fn receive(&mut self, _ctx: &Context<BackendMsg>, msg: BackendMsg) {
        match msg {
            BackendMsg::Stop(_) => {
                tracing::info!("the launcher asked the application to stop");
                // The callback may block (stopping a context); never on the RPC task.
                let f = self.on_stop.clone();
                let spawned = std::thread::Builder::new()
                    .name("flint-launcher-stop".into())
                    .spawn(move || f());
                if let Err(e) = spawned {
                    tracing::warn!("cannot start the thread that stops the application: {e}");
                }
            }
        }
    }
}

impl Backend {
    /// Connects when this process's environment has the launcher variables: `Ok(None)`
    /// when it has none. `on_stop` runs, on a thread of its own, when the launcher asks
    /// the application to stop. Blocks for at most about 10 s.
    pub fn connect_from_env(
        on_stop: impl Fn() + Send + Sync + 'static,
    ) -> Result<Option<Backend>, LauncherError> {
        match LauncherEnv::from_process()? {
            Some(e) => Self::connect(&e, on_stop).map(Some),
            None => Ok(None),
        }
    }

    /// Connects to the launcher server named by `le` and says hello.
    pub fn connect(
        le: &LauncherEnv,
        on_stop: impl Fn() + Send + Sync + 'static,
    ) -> Result<Backend, LauncherError> {
        let port = le.port;
        let failed = |reason: String| LauncherError::Connect { port, reason };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flint-launcher-backend")
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start a runtime: {e}")))?;
        let conf = RpcConf {
            secret: Some(le.secret.clone()),
            ..RpcConf::default()
        };
        let key_id = le.key_id.clone();
        let on_stop: Arc<dyn Fn() + Send + Sync> = Arc::new(on_stop);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let r = async {
                let env = RpcEnv::client_with_key(conf, key_id).map_err(|e| e.to_string())?;
                let me = env
                    .setup_endpoint(BACKEND_ENDPOINT, BackendEndpoint { on_stop })
                    .map_err(|e| e.to_string())?;
                let server: EndpointRef<LauncherMsg> =
                    env.endpoint_ref(&RpcAddress::new("127.0.0.1", port), SERVER_ENDPOINT);
                let hello = Hello {
                    backend: me,
                    version: env!("CARGO_PKG_VERSION").to_string(),
                };
                match server.ask_timeout(hello, HELLO_TIMEOUT).await {
                    Ok(()) => Ok((env, server)),
                    Err(e) => {
                        env.shutdown();
                        Err(e.to_string())
                    }
                }
            }
            .await;
            let _ = done_tx.send(r);
        });
        let (env, server) = match done_rx.recv_timeout(HELLO_TIMEOUT + Duration::from_secs(1)) {
            Ok(Ok(v)) => v,
            Ok(Err(reason)) => {
                rt.shutdown_background();
                return Err(failed(reason));
            }
            Err(_) => {
                rt.shutdown_background();
                return Err(failed(format!("no answer within {HELLO_TIMEOUT:?}")));
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        rt.spawn(report_loop(env.clone(), server, rx));
        tracing::info!(port, "connected to the launcher");
        Ok(Backend {
            rt: Some(rt),
            env,
            tx,
            last: parking_lot::Mutex::new(Some(State::Connected)),
        })
    }

    /// Reports a state; the same state twice in a row is sent once, and nothing is
    /// sent after a final state.
    pub fn set_state(&self, state: State) {
        let mut last = self.last.lock();
        if *last == Some(state) || last.is_some_and(State::is_final) {
            return;
        }
        *last = Some(state);
        let _ = self.tx.send(Cmd::State(state));
    }

    /// The last state reported.
    pub fn last_state(&self) -> Option<State> {
        *self.last.lock()
    }

    /// Reports the application's id.
    pub fn set_app_id(&self, app_id: &str) {
        let _ = self.tx.send(Cmd::AppId(app_id.to_string()));
    }

    /// Reports a cluster-mode driver's id.
    pub fn set_driver_id(&self, driver_id: &str) {
        let _ = self.tx.send(Cmd::DriverId(driver_id.to_string()));
    }

    /// Reports `state` (normally final) and waits, at most 5 s, until everything
    /// reported has been written to the launcher.
    pub fn finish(&self, state: State) {
        self.set_state(state);
        self.flush();
    }

    /// Waits, at most 5 s, until everything reported has been written.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Cmd::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(FLUSH_LIMIT + Duration::from_secs(1));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.env.shutdown();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Sends the reports in the order they were made.
async fn report_loop(
    env: RpcEnv,
    server: EndpointRef<LauncherMsg>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    loop {
        let cmd = tokio::select! {
            _ = env.cancelled() => return,
            c = rx.recv() => match c {
                Some(c) => c,
                None => return,
            },
        };
        let sent = match cmd {
            Cmd::State(state) => server.send_async(SetState { state }).await,
            Cmd::AppId(app_id) => server.send_async(SetAppId { app_id }).await,
            Cmd::DriverId(driver_id) => server.send_async(SetDriverId { driver_id }).await,
            Cmd::Flush(done) => {
                env.flush(FLUSH_LIMIT).await;
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(e) = sent {
            tracing::warn!("cannot report to the launcher: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_environment_is_all_or_nothing_and_checked() {
        assert!(LauncherEnv::from_lookup(lookup(&[])).unwrap().is_none());
        let e = LauncherEnv::from_lookup(lookup(&[(PORT_ENV, "1234")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FLINT_LAUNCHER_KEY_ID and FLINT_LAUNCHER_SECRET not set"),
            "{e}"
        );
        let e = LauncherEnv::from_lookup(lookup(&[
            (PORT_ENV, "http"),
            (KEY_ID_ENV, "k"),
            (SECRET_ENV, "s"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("FLINT_LAUNCHER_PORT=\"http\" is not a port"),
            "{e}"
        );
        let e = LauncherEnv::from_lookup(lookup(&[
            (PORT_ENV, "0"),
            (KEY_ID_ENV, "k"),
            (SECRET_ENV, "s"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("is not a port"), "{e}");
        let e = LauncherEnv::from_lookup(lookup(&[
            (PORT_ENV, "9"),
            (KEY_ID_ENV, ""),
            (SECRET_ENV, "s"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("must not be empty"), "{e}");
        let ok = LauncherEnv::from_lookup(lookup(&[
            (PORT_ENV, "65535"),
            (KEY_ID_ENV, "k"),
            (SECRET_ENV, "s"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((ok.port, ok.key_id.as_str()), (65535, "k"));
        assert_eq!(ok.secret.expose(), b"s");
        assert!(!format!("{ok:?}").contains("secret"));
    }
}
