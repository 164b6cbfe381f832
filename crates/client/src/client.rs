//! The application client itself, after Spark's `StandaloneAppClient`: an
//! endpoint speaking [`AppClientMsg`] that registers the application with
//! every master in rounds, follows the leader, and calls the listener; and
//! [`AppClientHandle`], through which the driver asks for executors, kills
//! them, and stops the application.
//!
//! Behaviour, as Spark's:
//! - On start, `RegisterApplication` (carrying the client's own endpoint ref)
//!   goes to **every** master in parallel; only the leader answers. A round
//!   lasts `client.registration.timeout` (20 s); a round that ends unanswered
//!   starts the next one, and after `client.registration.retries` (3) rounds the
//!   listener hears `dead("All masters are unresponsive! Giving up.")`. The
//!   rounds stop as soon as a `RegisteredApplication` arrives.
//! - `RegisteredApplication` → remember the master and the app id,
//!   `connected`. `ExecutorAdded` → `executor_added`. `ExecutorUpdated` in a
//!   finished state → `executor_removed`; DECOMMISSIONED →
//!   `executor_decommissioned`; other states are only logged.
//!   `WorkerRemoved` → `worker_removed`. `ApplicationRemoved` →
//!   `dead("Master removed our application: …")` and the endpoint stops.
//!   `MasterChanged` → switch to the new master and send it
//!   `MasterChangeAcknowledged`.
//! - The connection to the current master's process dropping →
//!   `disconnected` (once, until the next `MasterChanged`); the client keeps
//!   waiting for a new leader.
//! - `stop` → `dead("Application has been stopped.")`,
//!   `UnregisterApplication` to the master, endpoint stopped.
//! - Unlike Spark, an endpoint stopped by its RPC environment shutting down
//!   reports `dead` ([`ENVIRONMENT_SHUT_DOWN`]) if it was not dead already.
//!
//! Spark routes `RequestExecutors`, `KillExecutors` and `StopAppClient`
//! through the endpoint; here the handle reads the current master and app id
//! from state shared with the endpoint and talks to the master directly (the
//! endpoint's protocol is the master's [`AppClientMsg`], which has no room
//! for local requests).

use std::sync::Arc;

use flint_conf::Conf;
use flint_proto::messages::{
    AppClientMsg, ApplicationRemoved, ExecutorAdded, ExecutorUpdated, KillExecutors,
    MasterChangeAcknowledged, MasterChanged, MasterMsg, RegisterApplication, RegisteredApplication,
    RequestExecutors, UnregisterApplication, WorkerRemoved, APP_CLIENT_ENDPOINT, MASTER_ENDPOINT,
};
use flint_proto::{AppId, ApplicationDescription, ApplicationState, ExecutorId, ExecutorState};
use flint_rpc::{Context, Endpoint, EndpointRef, RpcAddress, RpcEnv, RpcError};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener::AppClientListener;
use crate::settings::ClientSettings;
use crate::ClientError;

/// Why the client gives up after the last unanswered registration round
/// (Spark's exact words).
pub const ALL_MASTERS_UNRESPONSIVE: &str = "All masters are unresponsive! Giving up.";
/// Why a stopped client is dead (Spark's exact words).
pub const APPLICATION_STOPPED: &str = "Application has been stopped.";
/// What precedes the master's message when it removes the application.
pub const MASTER_REMOVED_PREFIX: &str = "Master removed our application: ";
/// Why a client whose RPC environment shut down under it (without
/// [`AppClientHandle::stop`]) is dead. Spark reports nothing then; flint does,
/// so a driver waiting in [`AppClientHandle::wait_dead`] is not left hanging.
pub const ENVIRONMENT_SHUT_DOWN: &str =
    "The application client stopped: its RPC environment shut down.";

/// Starts application clients; see [`AppClient::start`].
#[derive(Debug)]
pub struct AppClient;

impl AppClient {
    /// Registers the client's endpoint in `env` and starts registering `desc`
    /// with every master in `masters`. Returns at once; the listener hears
    /// `connected(app_id)` when a master answers, or `dead(..)` when none
    /// does within the registration rounds.
    ///
    /// The endpoint is named `"AppClient"`, or `"AppClient-<n>"` when
    /// another client of the same environment has that name. `env` may be
    /// server-mode or client-only (the master then answers over the
    /// connection the client opened). Timings come from `conf` (see
    /// [`settings`](crate::settings)). Must be called within a tokio runtime.
    pub fn start(
        env: RpcEnv,
        masters: Vec<RpcAddress>,
        desc: ApplicationDescription,
        listener: Arc<dyn AppClientListener>,
        conf: &Conf,
    ) -> Result<AppClientHandle, ClientError> {
        let settings = ClientSettings::from_conf(conf)?;
        if masters.is_empty() {
            return Err(ClientError::NoMasters);
        }
        desc.validate()?;
        let (dead, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            env: env.clone(),
            masters,
            desc,
            listener,
            settings,
            state: Mutex::new(State::default()),
            registered: CancellationToken::new(),
            stopped: CancellationToken::new(),
            tracker: TaskTracker::new(),
            dead,
        });
        let endpoint = setup_unique(&env, &shared)?;
        tracing::info!(
            endpoint = %endpoint,
            app = %shared.desc.name,
            "application client started; registering with {}",
            list(&shared.masters)
        );
        Ok(AppClientHandle { shared, endpoint })
    }
}

/// Registers the endpoint under the first free name of `AppClient`,
/// `AppClient-1`, `AppClient-2`, ...
fn setup_unique(
    env: &RpcEnv,
    shared: &Arc<Shared>,
) -> Result<EndpointRef<AppClientMsg>, ClientError> {
    for n in 0u64.. {
        let name = if n == 0 {
            APP_CLIENT_ENDPOINT.to_string()
        } else {
            format!("{APP_CLIENT_ENDPOINT}-{n}")
        };
        let endpoint = ClientEndpoint {
            shared: shared.clone(),
        };
        match env.setup_endpoint(&name, endpoint) {
            Ok(r) => return Ok(r),
            Err(RpcError::NameTaken(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("u64 names never run out")
}

fn list(masters: &[RpcAddress]) -> String {
    masters
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the endpoint, the registration task and the handle share.
struct Shared {
    env: RpcEnv,
    masters: Vec<RpcAddress>,
    desc: ApplicationDescription,
    listener: Arc<dyn AppClientListener>,
    settings: ClientSettings,
    state: Mutex<State>,
    /// Cancelled when a master registered the application: ends the rounds.
    registered: CancellationToken,
    /// Cancelled when the endpoint has stopped (its `on_stop` ran).
    stopped: CancellationToken,
    /// The registration task.
    tracker: TaskTracker,
    /// `Some(reason)` once the application is dead.
    dead: watch::Sender<Option<String>>,
}

#[derive(Default)]
struct State {
    /// The master that registered us, or the last that said `MasterChanged`.
    master: Option<EndpointRef<MasterMsg>>,
    app_id: Option<AppId>,
    /// So `disconnected` is reported once per master.
    already_disconnected: bool,
}

impl Shared {
    /// Reports `dead(reason)` unless the application is already dead.
    fn mark_dead(&self, reason: String) {
        let first = self.dead.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            if reason == crate::APPLICATION_STOPPED {
                tracing::info!(app = %self.desc.name, "application client stopped");
            } else {
                tracing::warn!(app = %self.desc.name, "application client is dead: {reason}");
            }
            self.listener.dead(reason);
        }
    }

    /// Reports `disconnected` unless already reported since the last master
    /// change.
    fn mark_disconnected(&self) {
        let first = !std::mem::replace(&mut self.state.lock().already_disconnected, true);
        if first {
            self.listener.disconnected();
        }
    }

    fn master_and_app(&self) -> (Option<EndpointRef<MasterMsg>>, Option<AppId>) {
        let st = self.state.lock();
        (st.master.clone(), st.app_id.clone())
    }
}

/// Registration rounds: every `registration_timeout`, send to every master,
/// until registered, stopped, or out of rounds.
async fn register_with_masters(shared: Arc<Shared>, me: EndpointRef<AppClientMsg>) {
    let ClientSettings {
        registration_timeout,
        registration_retries,
    } = shared.settings;
    for round in 1..=registration_retries {
        let mut attempts = JoinSet::new();
        for address in &shared.masters {
            attempts.spawn(register_with(
                shared.env.clone(),
                address.clone(),
                shared.desc.clone(),
                me.clone(),
                shared.registered.clone(),
            ));
        }
        tokio::select! {
            _ = shared.registered.cancelled() => return,
            _ = shared.stopped.cancelled() => return,
            _ = shared.env.cancelled() => return,
            _ = tokio::time::sleep(registration_timeout) => {}
        }
        // Dropping `attempts` cancels lookups still under way, as Spark
        // cancels its registration futures at each tick.
        drop(attempts);
        if shared.registered.is_cancelled() {
            return;
        }
        if round >= registration_retries {
            shared.mark_dead(ALL_MASTERS_UNRESPONSIVE.to_string());
            return;
        }
        tracing::info!(
            "no master answered within {registration_timeout:?} ({}); registration round {} of {registration_retries}",
            crate::settings::REGISTRATION_TIMEOUT,
            round + 1
        );
    }
}

/// One registration attempt with one master: look its endpoint up, then send
/// `RegisterApplication`.
async fn register_with(
    env: RpcEnv,
    address: RpcAddress,
    desc: ApplicationDescription,
    me: EndpointRef<AppClientMsg>,
    registered: CancellationToken,
) {
    if registered.is_cancelled() {
        return;
    }
    tracing::info!("Connecting to master {address}...");
    match env
        .setup_endpoint_ref::<MasterMsg>(&address, MASTER_ENDPOINT)
        .await
    {
        Ok(master) => {
            if let Err(e) = master.send(RegisterApplication { desc, driver: me }) {
                tracing::warn!("Failed to connect to master {address}: {e}");
            }
        }
        Err(e) => tracing::warn!("Failed to connect to master {address}: {e}"),
    }
}

/// The client's endpoint: what the master sends, and connection events.
struct ClientEndpoint {
    shared: Arc<Shared>,
}

impl ClientEndpoint {
    fn full_id(&self, exec_id: ExecutorId) -> String {
        match &self.shared.state.lock().app_id {
            Some(app) => format!("{app}/{exec_id}"),
            None => format!("<unregistered>/{exec_id}"),
        }
    }
}

impl Endpoint for ClientEndpoint {
    type Msg = AppClientMsg;

    fn on_start(&mut self, ctx: &Context<AppClientMsg>) {
        self.shared.tracker.spawn(register_with_masters(
            self.shared.clone(),
            ctx.self_ref().clone(),
        ));
    }

    fn receive(&mut self, ctx: &Context<AppClientMsg>, msg: AppClientMsg) {
        let shared = &self.shared;
        match msg {
            AppClientMsg::RegisteredApplication(RegisteredApplication { app_id, master }) => {
                let previous = {
                    let mut st = shared.state.lock();
                    st.master = Some(master.clone());
                    st.app_id.replace(app_id.clone())
                };
                if let Some(prev) = previous.filter(|p| *p != app_id) {
                    tracing::warn!(
                        "registered again, now as {app_id} (was {prev}); using the new id"
                    );
                }
                shared.registered.cancel();
                tracing::info!(
                    "Connected to the cluster with app ID {app_id} (master {})",
                    master.address()
                );
                shared.listener.connected(app_id);
            }
            AppClientMsg::ApplicationRemoved(ApplicationRemoved { message }) => {
                shared.mark_dead(format!("{MASTER_REMOVED_PREFIX}{message}"));
                ctx.stop();
            }
            AppClientMsg::ExecutorAdded(ExecutorAdded {
                exec_id,
                worker_id,
                host_port,
                cores,
                memory_mb,
            }) => {
                tracing::info!(
                    "Executor added: {} on {worker_id} ({host_port}) with {cores} core(s)",
                    self.full_id(exec_id)
                );
                shared
                    .listener
                    .executor_added(exec_id, worker_id, host_port, cores, memory_mb);
            }
            AppClientMsg::ExecutorUpdated(ExecutorUpdated {
                exec_id,
                state,
                message,
                exit_status,
                worker_host,
            }) => {
                let text = message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default();
                tracing::info!(
                    "Executor updated: {} is now {state}{text}",
                    self.full_id(exec_id)
                );
                if state.is_finished() {
                    shared.listener.executor_removed(
                        exec_id,
                        message.unwrap_or_default(),
                        exit_status,
                        worker_host,
                    );
                } else if state == ExecutorState::Decommissioned {
                    shared.listener.executor_decommissioned(
                        exec_id,
                        message.unwrap_or_default(),
                        worker_host,
                    );
                }
            }
            AppClientMsg::WorkerRemoved(WorkerRemoved {
                worker_id,
                host,
                message,
            }) => {
                tracing::info!("Master removed worker {worker_id}: {message}");
                shared.listener.worker_removed(worker_id, host, message);
            }
            AppClientMsg::MasterChanged(MasterChanged {
                master,
                master_web_ui_url,
            }) => {
                tracing::info!(
                    "Master has changed, new master is at {} (web UI {master_web_ui_url})",
                    master.address()
                );
                let app_id = {
                    let mut st = shared.state.lock();
                    st.master = Some(master.clone());
                    st.already_disconnected = false;
                    st.app_id.clone()
                };
                match app_id {
                    Some(app_id) => {
                        if let Err(e) = master.send(MasterChangeAcknowledged { app_id }) {
                            tracing::warn!("cannot acknowledge the master change: {e}");
                        }
                    }
                    None => tracing::warn!(
                        "MasterChanged arrived before any master registered the application; \
                         nothing to acknowledge"
                    ),
                }
            }
        }
    }

    fn on_disconnected(&mut self, _ctx: &Context<AppClientMsg>, remote: &RpcAddress) {
        let is_master = self
            .shared
            .state
            .lock()
            .master
            .as_ref()
            .and_then(EndpointRef::rpc_address)
            .is_some_and(|a| a == *remote);
        if is_master {
            tracing::warn!("Connection to {remote} failed; waiting for master to reconnect...");
            self.shared.mark_disconnected();
        }
    }

    fn on_network_error(&mut self, _ctx: &Context<AppClientMsg>, remote: &RpcAddress, error: &str) {
        if self.shared.masters.contains(remote) {
            tracing::warn!("Could not connect to {remote}: {error}");
        }
    }

    fn on_stop(&mut self, ctx: &Context<AppClientMsg>) {
        tracing::debug!(endpoint = ctx.name(), "application client endpoint stopped");
        // Dead already when stopped through the handle or by the master; only
        // an environment shutdown gets here alive.
        self.shared.mark_dead(ENVIRONMENT_SHUT_DOWN.to_string());
        self.shared.stopped.cancel();
        self.shared.tracker.close();
    }
}

/// The driver's handle on a running application client. Cheap to clone.
///
/// Dropping it does not stop the client: call [`AppClientHandle::stop`]
/// (shutting the RPC environment down also stops it, without unregistering).
#[derive(Clone)]
pub struct AppClientHandle {
    shared: Arc<Shared>,
    endpoint: EndpointRef<AppClientMsg>,
}

impl std::fmt::Debug for AppClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppClientHandle")
            .field("endpoint", &self.endpoint.address())
            .field("app_id", &self.app_id())
            .field("dead", &self.dead_reason())
            .finish_non_exhaustive()
    }
}

impl AppClientHandle {
    /// The application's id, once a master registered it.
    pub fn app_id(&self) -> Option<AppId> {
        self.shared.state.lock().app_id.clone()
    }

    /// The address of the current master, once one registered the
    /// application (it changes on `MasterChanged`).
    pub fn master_address(&self) -> Option<RpcAddress> {
        self.shared
            .state
            .lock()
            .master
            .as_ref()
            .and_then(EndpointRef::rpc_address)
    }

    /// The client's endpoint (what the master sends events to).
    pub fn endpoint(&self) -> &EndpointRef<AppClientMsg> {
        &self.endpoint
    }

    /// Why the application is dead, if it is.
    pub fn dead_reason(&self) -> Option<String> {
        self.shared.dead.borrow().clone()
    }

    /// Whether the application is dead (see [`AppClientListener::dead`]).
    pub fn is_dead(&self) -> bool {
        self.shared.dead.borrow().is_some()
    }

    /// Waits until the application is dead and returns why. Every way the
    /// client ends makes it dead: no master answered, the master removed the
    /// application, [`AppClientHandle::stop`], or the RPC environment shut
    /// down.
    pub async fn wait_dead(&self) -> String {
        let mut rx = self.shared.dead.subscribe();
        let reason = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        // The sender lives in `self.shared`, so the channel cannot close here.
        reason.unwrap_or_else(|| "the application client is gone".into())
    }

    /// The master and app id to send a request with; `None` (with Spark's
    /// warning) before registration or after stop.
    fn registered(&self, what: &str) -> Option<(EndpointRef<MasterMsg>, AppId)> {
        if self.shared.stopped.is_cancelled() {
            tracing::warn!("Attempted to {what} after the application client stopped.");
            return None;
        }
        match self.shared.master_and_app() {
            (Some(m), Some(a)) => Some((m, a)),
            _ => {
                tracing::warn!("Attempted to {what} before registering with Master.");
                None
            }
        }
    }

    /// Asks the master to set the application's total executor target
    /// (pending and running included; lowering it kills nothing). `Ok(false)`
    /// before registration or after stop, else the master's answer (whether it
    /// knows the application); `Err` when the ask failed.
    pub async fn request_total_executors(&self, total: u32) -> Result<bool, ClientError> {
        let Some((master, app_id)) = self.registered("request executors") else {
            return Ok(false);
        };
        Ok(master.ask(RequestExecutors { app_id, total }).await?)
    }

    /// Asks the master to kill some of the application's executors. Results
    /// as [`AppClientHandle::request_total_executors`].
    pub async fn kill_executors(&self, exec_ids: Vec<ExecutorId>) -> Result<bool, ClientError> {
        let Some((master, app_id)) = self.registered("kill executors") else {
            return Ok(false);
        };
        Ok(master.ask(KillExecutors { app_id, exec_ids }).await?)
    }

    /// Stops the client as Spark's `StopAppClient`: the listener hears
    /// `dead("Application has been stopped.")` (unless already dead), the
    /// master gets `UnregisterApplication` (the application ends FINISHED),
    /// the registration rounds end and the endpoint stops. Returns once the
    /// endpoint has stopped (or after `rpc.ask_timeout` if it cannot).
    /// Calling it again does nothing.
    pub async fn stop(&self) {
        self.stop_with(ApplicationState::Finished).await;
    }

    /// [`stop`](Self::stop), the application ending in `final_state` at the
    /// master: FINISHED, FAILED (the driver panicked or gave up after a failed
    /// job) or KILLED (the driver was interrupted). A state that is not final
    /// ends it FINISHED.
    pub async fn stop_with(&self, final_state: ApplicationState) {
        if !self.shared.stopped.is_cancelled() {
            self.shared.mark_dead(APPLICATION_STOPPED.to_string());
            match self.shared.master_and_app() {
                (Some(master), Some(app_id)) => {
                    if let Err(e) = master.send(UnregisterApplication {
                        app_id,
                        final_state: Some(final_state),
                    }) {
                        tracing::warn!("cannot unregister the application: {e}");
                    }
                }
                _ => tracing::warn!(
                    "Drop UnregisterApplication because has not yet connected to master"
                ),
            }
            self.shared.env.stop_endpoint(self.endpoint.name());
        }
        let bound = self.shared.env.conf().ask_timeout;
        if tokio::time::timeout(bound.duration, self.shared.stopped.cancelled())
            .await
            .is_err()
        {
            tracing::warn!(
                "application client endpoint did not stop within {:?} ({})",
                bound.duration,
                bound.setting
            );
            return;
        }
        self.shared.tracker.wait().await;
    }
}
