//! The launcher server: one per process, flint RPC on 127.0.0.1 only, authenticating
//! each connection by the key id of one handle (a keyring of single-use secrets, no
//! default secret), and the per-handle bookkeeping and child supervision.
//!
//! Invariants:
//! - a connection belongs to the handle whose key it proved; a key is consumed by the
//!   first handshake that proves it, so a second connection with it is refused;
//! - the first message must be `Hello`, within `launcher.child_connection_timeout` of
//!   the launch; otherwise the key is withdrawn, the connection (if any) closed and the
//!   handle ends LOST; any other message first disposes the handle;
//! - final states are sticky, except FINISHED → FAILED when the child exits non-zero;
//! - once the child exited, its connection is given a moment to deliver what it sent;
//!   then a child that exited non-zero without a final state is FAILED, one that exited
//!   0 is LOST; a connection that drops while the child runs is LOST unless the child
//!   exits within the timeout (then by its exit status).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flint_rpc::secret::Keyring;
use flint_rpc::{Context, Endpoint, EndpointRef, Reply, RpcAddress, RpcConf, RpcEnv};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::handle::{AppHandle, Listener};
use crate::protocol::{BackendMsg, LauncherMsg, State, SERVER_ENDPOINT};
use crate::LauncherError;

/// After the child exited, how long its connection may take to deliver what is queued.
const EXIT_DRAIN: Duration = Duration::from_secs(2);
/// How long `kill()` lets `flint kill` take in cluster mode.
const CLUSTER_KILL_LIMIT: Duration = Duration::from_secs(10);

/// The process's launcher server.
pub struct LauncherServer {
    rt: tokio::runtime::Runtime,
    env: RpcEnv,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LauncherServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LauncherServer")
            .field("port", &self.port())
            .field("handles", &self.handles())
            .finish()
    }
}

static SERVER: Mutex<Option<Arc<LauncherServer>>> = Mutex::new(None);

impl LauncherServer {
    /// The process's server, started on first use (it then lives as long as the process).
    pub fn get() -> Result<Arc<LauncherServer>, LauncherError> {
        let mut s = SERVER.lock();
        if let Some(s) = &*s {
            return Ok(s.clone());
        }
        let server = Arc::new(Self::start()?);
        *s = Some(server.clone());
        Ok(server)
    }

    fn start() -> Result<LauncherServer, LauncherError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flint-launcher")
            .enable_all()
            .build()
            .map_err(|e| LauncherError::Server(format!("cannot start a runtime: {e}")))?;
        let keyring = Keyring::new();
        let shared = Arc::new(Shared {
            handles: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            keyring: keyring.clone(),
            env: OnceLock::new(),
        });
        let ep_shared = shared.clone();
        // Started from a thread of its own: the caller may be inside another runtime,
        // where block_on is not allowed.
        let handle = rt.handle().clone();
        let started = std::thread::scope(|scope| {
            scope
                .spawn(move || handle.block_on(Self::serve(keyring, ep_shared)))
                .join()
        });
        let env = match started {
            Ok(r) => r?,
            Err(_) => return Err(LauncherError::Server("its start-up panicked".into())),
        };
        let _ = shared.env.set(env.clone());
        tracing::info!("launcher server listening on {}", env.describe());
        Ok(LauncherServer { rt, env, shared })
    }

    async fn serve(keyring: Keyring, ep_shared: Arc<Shared>) -> Result<RpcEnv, LauncherError> {
        {
            // No default secret: only a client proving one handle's key gets in.
            let conf = RpcConf {
                secret: None,
                ..RpcConf::default()
            };
            let env = RpcEnv::server_with_keyring(conf, "127.0.0.1", 0, keyring)
                .await
                .map_err(|e| LauncherError::Server(e.to_string()))?;
            env.setup_endpoint(SERVER_ENDPOINT, ServerEndpoint { shared: ep_shared })
                .map_err(|e| LauncherError::Server(e.to_string()))?;
            Ok::<_, LauncherError>(env)
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.env.address().map_or(0, |a| a.port)
    }

    /// How many handles are registered (not yet disposed).
    pub fn handles(&self) -> usize {
        self.shared.handles.lock().len()
    }

    /// How many keys are waiting for their first connection.
    pub fn pending_keys(&self) -> usize {
        self.shared.keyring.len()
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Registers a handle under a fresh key id with a fresh single-use secret; returns
    /// the handle and the (key id, secret) to hand the child.
    pub(crate) fn register(&self, opts: HandleOpts) -> (Arc<HandleInner>, String, String) {
        let key_id = format!("handle-{}", random_hex(16));
        let secret = random_hex(32);
        let inner = Arc::new(HandleInner {
            key_id: key_id.clone(),
            opts,
            st: Mutex::new(HState::default()),
            wake: Notify::new(),
            changed: Notify::new(),
            shared: self.shared.clone(),
        });
        self.shared
            .handles
            .lock()
            .insert(key_id.clone(), inner.clone());
        self.shared.keyring.insert_single_use(
            key_id.clone(),
            flint_rpc::Secret::new(secret.clone().into_bytes()),
        );
        (inner, key_id, secret)
    }

    /// Follows a started child: the hello deadline, its exit, kill requests.
    pub(crate) fn supervise(
        &self,
        h: Arc<HandleInner>,
        child: tokio::process::Child,
        timeout: Duration,
    ) {
        let token = self.env.clone();
        self.rt.spawn(supervise(h, child, timeout, token));
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub(crate) struct Shared {
    handles: Mutex<HashMap<String, Arc<HandleInner>>>,
    /// Connection (peer address) → the key id it proved, once it said hello.
    peers: Mutex<HashMap<RpcAddress, String>>,
    keyring: Keyring,
    env: OnceLock<RpcEnv>,
}

impl Shared {
    fn handle(&self, key: &str) -> Option<Arc<HandleInner>> {
        self.handles.lock().get(key).cloned()
    }
}

/// What a handle needs to know about how it was launched.
#[derive(Debug, Clone, Default)]
pub(crate) struct HandleOpts {
    pub(crate) cluster: bool,
    pub(crate) master: String,
    pub(crate) flint: PathBuf,
    /// The environment given to the application, given to `flint kill` too (so it
    /// finds the same cluster secret, `FLINT_HOME` and settings).
    pub(crate) env: std::collections::BTreeMap<String, String>,
}

#[derive(Default)]
struct HState {
    state: Option<State>,
    app_id: Option<String>,
    driver_id: Option<String>,
    listeners: Vec<Arc<dyn Listener>>,
    backend: Option<EndpointRef<BackendMsg>>,
    peer: Option<RpcAddress>,
    hello: bool,
    disconnected: bool,
    disposed: bool,
    kill: bool,
    pid: Option<u32>,
    exit: Option<Option<i32>>,
    /// Changes not yet told to the listeners, oldest first (bounded by
    /// [`MAX_PENDING_EVENTS`]).
    events: VecDeque<Event>,
    /// A thread is telling the listeners (the others only queue).
    delivering: bool,
    /// The last state the listeners were told of: what [`AppHandle::wait_final`] waits
    /// on, so that it returns only after every listener heard the final state.
    delivered: Option<State>,
}

/// A change to tell the listeners.
#[derive(Debug, Clone, Copy)]
enum Event {
    State(State),
    Info,
}

/// Most changes queued for the listeners while one of them is slow; beyond it info
/// changes are dropped (states are few: a final one is sticky).
const MAX_PENDING_EVENTS: usize = 64;

/// One handle's state, shared by its [`AppHandle`]s, the server endpoint and the
/// supervising task.
pub(crate) struct HandleInner {
    pub(crate) key_id: String,
    opts: HandleOpts,
    st: Mutex<HState>,
    /// Wakes the supervising task (kill requested, connection dropped).
    wake: Notify,
    /// Wakes waiters on every state change.
    pub(crate) changed: Notify,
    shared: Arc<Shared>,
}

impl HandleInner {
    pub(crate) fn state(&self) -> State {
        self.st.lock().state.unwrap_or(State::Unknown)
    }

    pub(crate) fn app_id(&self) -> Option<String> {
        self.st.lock().app_id.clone()
    }

    pub(crate) fn driver_id(&self) -> Option<String> {
        self.st.lock().driver_id.clone()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        let st = self.st.lock();
        st.exit.is_none().then_some(st.pid).flatten()
    }

    pub(crate) fn exit_code(&self) -> Option<i32> {
        self.st.lock().exit.flatten()
    }

    pub(crate) fn backend(&self) -> Option<EndpointRef<BackendMsg>> {
        let st = self.st.lock();
        if st.disconnected || st.disposed {
            return None;
        }
        st.backend.clone()
    }

    pub(crate) fn add_listener(&self, l: Arc<dyn Listener>) {
        self.st.lock().listeners.push(l);
    }

    fn as_handle(self: &Arc<Self>) -> AppHandle {
        AppHandle {
            inner: self.clone(),
            _guard: None,
        }
    }

    /// The last state every listener has been told of.
    pub(crate) fn delivered_state(&self) -> State {
        self.st.lock().delivered.unwrap_or(State::Unknown)
    }

    /// Moves to `new` unless the state is final (or `force`); tells the listeners.
    pub(crate) fn set_state(self: &Arc<Self>, new: State, force: bool) {
        {
            let mut st = self.st.lock();
            let old = st.state.unwrap_or(State::Unknown);
            if old == new || (old.is_final() && !force) {
                return;
            }
            tracing::info!(key = %self.key_id, app = st.app_id.as_deref().unwrap_or(""), "application {old} -> {new}");
            st.state = Some(new);
            st.events.push_back(Event::State(new));
        }
        self.wake.notify_one();
        self.deliver();
    }

    /// Tells the listeners every queued change, in order, one thread at a time; a
    /// change made meanwhile (also by a listener) is queued and told by this loop.
    fn deliver(self: &Arc<Self>) {
        let h = self.as_handle();
        {
            let mut st = self.st.lock();
            if st.delivering {
                return;
            }
            st.delivering = true;
        }
        loop {
            let (event, listeners) = {
                let mut st = self.st.lock();
                let Some(e) = st.events.pop_front() else {
                    st.delivering = false;
                    break;
                };
                (e, st.listeners.clone())
            };
            for l in &listeners {
                match event {
                    Event::State(s) => l.state_changed(&h, s),
                    Event::Info => l.info_changed(&h),
                }
            }
            if let Event::State(s) = event {
                self.st.lock().delivered = Some(s);
            }
            self.changed.notify_waiters();
        }
    }

    fn set_info(self: &Arc<Self>, app_id: Option<String>, driver_id: Option<String>) {
        {
            let mut st = self.st.lock();
            let mut changed = false;
            if app_id.is_some() && st.app_id != app_id {
                st.app_id = app_id;
                changed = true;
            }
            if driver_id.is_some() && st.driver_id != driver_id {
                st.driver_id = driver_id;
                changed = true;
            }
            if !changed {
                return;
            }
            if st.events.len() < MAX_PENDING_EVENTS {
                st.events.push_back(Event::Info);
            }
        }
        self.deliver();
    }

    /// Withdraws the key, closes the connection, forgets the handle; LOST unless final.
    pub(crate) fn dispose(self: &Arc<Self>) {
        let peer = {
            let mut st = self.st.lock();
            st.disposed = true;
            st.peer.clone()
        };
        self.shared.handles.lock().remove(&self.key_id);
        self.shared.keyring.remove(&self.key_id);
        if let Some(p) = peer {
            self.shared.peers.lock().remove(&p);
        }
        if let Some(env) = self.shared.env.get() {
            env.close_key_connections(&self.key_id);
        }
        self.set_state(State::Lost, false);
        self.wake.notify_one();
    }

    pub(crate) fn request_kill(&self) {
        self.st.lock().kill = true;
        self.wake.notify_one();
    }

    pub(crate) fn kill(self: &Arc<Self>) {
        self.set_state(State::Killed, false);
        let driver = self.driver_id().filter(|_| self.opts.cluster);
        match driver {
            Some(driver) => {
                // Ask the master first, then kill the child; bounded, off this thread.
                let me = self.clone();
                let opts = self.opts.clone();
                let task = async move {
                    let mut cmd = tokio::process::Command::new(&opts.flint);
                    cmd.args(["kill", "--master", &opts.master, &driver, "--wait", "5s"])
                        .envs(&opts.env)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .kill_on_drop(true);
                    match tokio::time::timeout(CLUSTER_KILL_LIMIT, cmd.status()).await {
                        Ok(Ok(s)) if s.success() => {}
                        Ok(Ok(s)) => tracing::warn!(driver, "flint kill exited with {s}"),
                        Ok(Err(e)) => tracing::warn!(driver, "cannot run flint kill: {e}"),
                        Err(_) => tracing::warn!(
                            driver,
                            "flint kill did not finish within {CLUSTER_KILL_LIMIT:?}"
                        ),
                    }
                    me.dispose();
                    me.request_kill();
                };
                match LauncherServer::get() {
                    Ok(s) => {
                        s.runtime().spawn(task);
                    }
                    Err(_) => {
                        self.dispose();
                        self.request_kill();
                    }
                }
            }
            None => {
                self.dispose();
                self.request_kill();
            }
        }
    }

    /// Binds the hello's connection; false when the handle already has one.
    fn bind(&self, backend: EndpointRef<BackendMsg>, peer: RpcAddress) -> bool {
        let mut st = self.st.lock();
        if st.hello || st.disposed {
            return false;
        }
        st.hello = true;
        st.backend = Some(backend);
        st.peer = Some(peer);
        true
    }

    fn is_bound_to(&self, peer: Option<&RpcAddress>) -> bool {
        let st = self.st.lock();
        st.hello && peer.is_some() && st.peer.as_ref() == peer
    }

    fn mark_disconnected(&self) {
        self.st.lock().disconnected = true;
        self.wake.notify_one();
    }
}

struct ServerEndpoint {
    shared: Arc<Shared>,
}

impl ServerEndpoint {
    /// The handle the sender's connection proved the key of.
    fn handle_of(&self, ctx: &Context<LauncherMsg>) -> Option<Arc<HandleInner>> {
        let key = ctx.key_id()?;
        let h = self.shared.handle(key);
        if h.is_none() {
            tracing::warn!(peer = ?ctx.sender(), key, "message for a handle that is gone; closing its connection");
            ctx.env().close_key_connections(key);
        }
        h
    }
}

impl Endpoint for ServerEndpoint {
    type Msg = LauncherMsg;

    fn receive_and_reply(&mut self, ctx: &Context<LauncherMsg>, msg: LauncherMsg, reply: Reply) {
        let LauncherMsg::Hello(hello) = msg else {
            reply.fail("only Hello is a request");
            return;
        };
        let reply = reply.typed(&hello);
        let Some(h) = self.handle_of(ctx) else {
            reply.fail("no such launcher handle");
            return;
        };
        let Some(peer) = ctx.sender().cloned() else {
            reply.fail("hello from this process");
            return;
        };
        if !h.bind(hello.backend, peer.clone()) {
            tracing::warn!(peer = %peer, key = %h.key_id, "a second hello for one handle; refused");
            reply.fail("this handle already said hello");
            return;
        }
        tracing::debug!(peer = %peer, key = %h.key_id, version = %hello.version, "application connected");
        self.shared.peers.lock().insert(peer, h.key_id.clone());
        reply.send(());
        h.set_state(State::Connected, false);
    }

    fn receive(&mut self, ctx: &Context<LauncherMsg>, msg: LauncherMsg) {
        let Some(h) = self.handle_of(ctx) else {
            return;
        };
        if !h.is_bound_to(ctx.sender()) {
            tracing::warn!(peer = ?ctx.sender(), key = %h.key_id, "the application sent {msg:?} before its hello; disposing its handle");
            h.dispose();
            return;
        }
        match msg {
            LauncherMsg::SetState(s) => h.set_state(s.state, false),
            LauncherMsg::SetAppId(a) => h.set_info(Some(a.app_id), None),
            LauncherMsg::SetDriverId(d) => h.set_info(None, Some(d.driver_id)),
            LauncherMsg::Hello(_) => {
                tracing::warn!(key = %h.key_id, "a second hello (one-way) for one handle; ignored")
            }
        }
    }

    fn on_disconnected(&mut self, _ctx: &Context<LauncherMsg>, remote: &RpcAddress) {
        let key = self.shared.peers.lock().remove(remote);
        if let Some(h) = key.and_then(|k| self.shared.handle(&k)) {
            tracing::debug!(peer = %remote, key = %h.key_id, "application's connection closed");
            h.mark_disconnected();
        }
    }
}

/// The state a child's exit decides.
fn after_exit(state: State, code: Option<i32>) -> Option<(State, bool)> {
    let ok = code == Some(0);
    if !state.is_final() {
        Some((if ok { State::Lost } else { State::Failed }, false))
    } else if state == State::Finished && !ok {
        Some((State::Failed, true))
    } else {
        None
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The child leads its own process group (the driver of client mode is in it).
        // SAFETY: kill(2) with a negative pid signals that group; no memory involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

async fn supervise(
    h: Arc<HandleInner>,
    mut child: tokio::process::Child,
    timeout: Duration,
    env: RpcEnv,
) {
    let pid = child.id();
    h.st.lock().pid = pid;
    let hello_deadline = Instant::now() + timeout;
    let mut hello_expired = false;
    let mut lost_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let mut killed = false;
    loop {
        let (hello, disconnected, kill, exit, disposed) = {
            let st = h.st.lock();
            (st.hello, st.disconnected, st.kill, st.exit, st.disposed)
        };
        if kill && !killed && exit.is_none() {
            killed = true;
            kill_group(pid);
            let _ = child.start_kill();
        }
        if let Some(code) = exit {
            let drained = !hello || disconnected || disposed;
            let until = *drain_until.get_or_insert_with(|| Instant::now() + EXIT_DRAIN);
            if drained || Instant::now() >= until {
                if let Some((s, force)) = after_exit(h.state(), code) {
                    h.set_state(s, force);
                }
                h.dispose();
                return;
            }
        } else if hello && disconnected && !h.state().is_final() && lost_at.is_none() {
            lost_at = Some(Instant::now() + timeout);
        }
        let mut next: Option<Instant> = None;
        for t in [
            (!hello && !hello_expired).then_some(hello_deadline),
            lost_at,
            drain_until.filter(|_| exit.is_some()),
        ]
        .into_iter()
        .flatten()
        {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        }
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = env.cancelled() => {
                kill_group(pid);
                return;
            }
            r = child.wait(), if exit.is_none() => {
                let code = r.ok().and_then(|s| s.code());
                tracing::debug!(key = %h.key_id, ?code, "application's process exited");
                h.st.lock().exit = Some(code);
            }
            _ = h.wake.notified() => {}
            _ = sleep => {
                let now = Instant::now();
                if !hello && !hello_expired && now >= hello_deadline && !h.st.lock().hello {
                    hello_expired = true;
                    tracing::warn!(key = %h.key_id, "the application did not say hello within {timeout:?} (launcher.child_connection_timeout); its handle is disposed");
                    h.dispose();
                }
                if lost_at.is_some_and(|t| now >= t) {
                    lost_at = None;
                    tracing::warn!(key = %h.key_id, "the application's connection closed without a final state and its process is still running");
                    h.set_state(State::Lost, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_bound_only_to_the_connection_that_said_hello() {
        let shared = Arc::new(Shared {
            handles: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            keyring: Keyring::new(),
            env: OnceLock::new(),
        });
        let h = HandleInner {
            key_id: "handle-test".into(),
            opts: HandleOpts::default(),
            st: Mutex::new(HState::default()),
            wake: Notify::new(),
            changed: Notify::new(),
            shared,
        };
        let (a, b) = (
            RpcAddress::new("127.0.0.1", 1),
            RpcAddress::new("127.0.0.1", 2),
        );
        // Before the hello nothing is bound, not even the connection that will say it.
        assert!(!h.is_bound_to(Some(&a)));
        {
            let mut st = h.st.lock();
            st.hello = true;
            st.peer = Some(a.clone());
        }
        assert!(h.is_bound_to(Some(&a)));
        assert!(
            !h.is_bound_to(Some(&b)),
            "another connection is not the bound one"
        );
        assert!(
            !h.is_bound_to(None),
            "a message from this process is not the child's"
        );
    }

    #[test]
    fn an_exit_decides_only_what_is_not_final_and_fails_a_finished_app_that_exits_non_zero() {
        assert_eq!(
            after_exit(State::Running, Some(0)),
            Some((State::Lost, false))
        );
        assert_eq!(
            after_exit(State::Connected, Some(1)),
            Some((State::Failed, false))
        );
        assert_eq!(
            after_exit(State::Unknown, None),
            Some((State::Failed, false))
        );
        assert_eq!(after_exit(State::Finished, Some(0)), None);
        assert_eq!(
            after_exit(State::Finished, Some(2)),
            Some((State::Failed, true))
        );
        assert_eq!(after_exit(State::Killed, Some(137)), None);
        assert_eq!(after_exit(State::Lost, Some(1)), None);
        assert_eq!(after_exit(State::Failed, Some(0)), None);
    }
}
