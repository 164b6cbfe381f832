//! [`RpcEnv`]: the process's RPC environment. It owns the listening socket (in server
//! mode), the name table of endpoints, one outbox connection per peer, and the
//! cancellation token and task tracker every loop in this crate answers to.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::address::RpcAddress;
use crate::conf::RpcConf;
use crate::connection::{self, Connection, EnqueueError, Out, Outcome, Queues, Unregister};
use crate::endpoint::{Ask, ConcurrentEndpoint, Context, Endpoint, Event, Protocol, Reply};
use crate::error::RpcError;
use crate::files::{FileRegistry, FileServerEndpoint, FileStreams, FILE_SERVER};
use crate::inbox::{self, Budget, ErasedInbox, Inbox};
use crate::log::RateLimit;
use crate::reference::{EndpointRef, Target};
use crate::secret::Keyring;
use crate::stream::StreamHandler;
use crate::tls::TlsContext;

/// Name of the built-in endpoint that answers lookups.
pub const ENDPOINT_VERIFIER: &str = "endpoint-verifier";

pub(crate) struct EnvInner {
    pub(crate) conf: RpcConf,
    /// Per-key secrets for inbound clients that present a key id (server side).
    pub(crate) keyring: Option<Keyring>,
    /// The key id this environment presents on its outbound connections.
    pub(crate) key_id: Option<String>,
    pub(crate) address: Option<RpcAddress>,
    endpoints: RwLock<HashMap<Arc<str>, Arc<dyn ErasedInbox>>>,
    /// Bumped whenever an endpoint leaves the name table, so that a connection's
    /// reader may keep the inbox it looked up last ([`RpcEnv::inbox_cached`]).
    endpoints_gen: std::sync::atomic::AtomicU64,
    outboxes: Mutex<HashMap<RpcAddress, Arc<Connection>>>,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    pub(crate) token: CancellationToken,
    /// Parent of every connection's `closed` token. Shutdown cancels it at once only
    /// when `rpc.shutdown_drain_timeout` is zero; otherwise each connection's writer
    /// writes what is queued and closes its connection itself, by `drain_until` at
    /// the latest.
    pub(crate) conn_token: CancellationToken,
    /// When shutdown's drain ends (set by [`RpcEnv::shutdown`]).
    drain_until: std::sync::OnceLock<tokio::time::Instant>,
    pub(crate) tracker: TaskTracker,
    pub(crate) tls: Option<TlsContext>,
    next_id: AtomicU64,
    pub(crate) files: FileRegistry,
    pub(crate) stream_handlers: RwLock<HashMap<Arc<str>, Arc<dyn StreamHandler>>>,
    /// Bytes held in partially received frames, across all connections.
    pub(crate) partial_bytes: AtomicUsize,
    handshakes: Mutex<Handshakes>,
    auth_failures: Mutex<HashMap<IpAddr, AuthFailures>>,
    refusals: RateLimit,
    dropped: RateLimit,
}

/// Connections mid-handshake, in all and per source address (oldest first), each with
/// the token that evicts it.
#[derive(Default)]
struct Handshakes {
    total: usize,
    next: u64,
    per_ip: HashMap<IpAddr, std::collections::VecDeque<(u64, CancellationToken)>>,
}

struct AuthFailures {
    count: u32,
    last: tokio::time::Instant,
}

/// Interval of rate-limited warnings about one peer.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Delay after the first failed authentication from an address; doubles per failure.
const AUTH_DELAY_BASE: Duration = Duration::from_millis(100);
/// Longest delay imposed on an address that keeps failing.
const AUTH_DELAY_MAX: Duration = Duration::from_secs(10);
/// A failure older than this is forgotten.
const AUTH_MEMORY: Duration = Duration::from_secs(600);
/// Addresses whose failures are remembered at most.
const AUTH_TRACKED: usize = 4096;

/// One live connection, as [`RpcEnv::connections`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The peer: its listening address if it declared one, else its socket address.
    pub peer: RpcAddress,
    /// Bytes queued for it and not yet written.
    pub queued_bytes: usize,
    /// Bulk streams open on it.
    pub open_streams: usize,
}

/// The connection a ref to a remote endpoint used last, so that a message does not
/// look its peer up in the outbox table (a lock and a hash of the address) each time.
#[derive(Default)]
pub(crate) struct OutboxCache(Mutex<Option<Arc<Connection>>>);

/// The inbox a connection's reader looked up last, and the table generation it saw.
pub(crate) struct InboxCache {
    gen: u64,
    pub(crate) name: Box<str>,
    pub(crate) inbox: Arc<dyn ErasedInbox>,
    /// What the inbox keeps for this connection's reader (see
    /// [`ErasedInbox::post_request_from`]).
    pub(crate) slot: Option<Box<dyn std::any::Any + Send>>,
}

/// Why a frame could not be queued towards a peer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendFail {
    /// The environment is shutting down.
    #[error("the RPC environment has stopped")]
    Stopped,
    /// Every connection tried was found closed.
    #[error("the connection to {0} keeps closing")]
    KeepsClosing(RpcAddress),
    /// The connection's queue is at its byte budget.
    #[error("the connection's outbound queue is full ({queued} bytes queued, rpc.connection.max_queued_bytes = {budget})")]
    Full { queued: usize, budget: usize },
}

/// Why a connection was refused at accept, before its handshake.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdmissionError {
    /// Its address holds as many mid-handshake slots as one address may.
    #[error(
        "{count} connections from {ip} are mid-handshake (rpc.max_pending_handshakes_per_address)"
    )]
    PerAddress { count: usize, ip: IpAddr },
    /// All slots are taken and no address holds more than this one would.
    #[error("{count} connections are mid-handshake (rpc.max_pending_handshakes)")]
    Total { count: usize },
}

/// Holds one mid-handshake slot; released when dropped. When the global limit is
/// reached, a new connection evicts the oldest pending handshake of the address that
/// holds the most slots (`evicted` fires), so a flood from many addresses cannot lock
/// everyone else out.
pub(crate) struct HandshakeSlot {
    env: RpcEnv,
    ip: IpAddr,
    id: u64,
    pub(crate) evicted: CancellationToken,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut guard = self.env.inner.handshakes.lock();
        let h = &mut *guard;
        let mut emptied = false;
        if let Some(q) = h.per_ip.get_mut(&self.ip) {
            if let Some(pos) = q.iter().position(|(id, _)| *id == self.id) {
                q.remove(pos);
                h.total = h.total.saturating_sub(1);
            }
            emptied = q.is_empty();
        }
        if emptied {
            h.per_ip.remove(&self.ip);
        }
    }
}

/// A process's RPC environment. Cloning gives another handle to the same environment.
#[derive(Clone)]
pub struct RpcEnv {
    pub(crate) inner: Arc<EnvInner>,
}

impl RpcEnv {
    /// Starts a server-mode environment listening on `host:port` (port 0 picks a free
    /// one). The address it advertises is `host` and the bound port.
    pub async fn server(conf: RpcConf, host: &str, port: u16) -> Result<RpcEnv, RpcError> {
        Self::server_advertising(conf, host, port, host).await
    }

    /// [`RpcEnv::server`] listening on `bind_host` but advertising `advertised_host`
    /// (in its address and in every endpoint reference it sends): for a daemon bound
    /// to `0.0.0.0` that peers must reach by a routable name.
    pub async fn server_advertising(
        conf: RpcConf,
        bind_host: &str,
        port: u16,
        advertised_host: &str,
    ) -> Result<RpcEnv, RpcError> {
        Self::server_inner(conf, bind_host, port, advertised_host, None).await
    }

    /// [`RpcEnv::server`] that also authenticates clients by key id: a client that
    /// presents one proves that key's secret from `keyring` (which the caller may change
    /// at run time), and its connection is known by the key id
    /// ([`Context::key_id`](crate::Context::key_id)). Clients presenting no key id prove
    /// `conf.secret`; with no secret there, they are refused.
    pub async fn server_with_keyring(
        conf: RpcConf,
        host: &str,
        port: u16,
        keyring: Keyring,
    ) -> Result<RpcEnv, RpcError> {
        Self::server_inner(conf, host, port, host, Some(keyring)).await
    }

    async fn server_inner(
        conf: RpcConf,
        bind_host: &str,
        port: u16,
        advertised_host: &str,
        keyring: Option<Keyring>,
    ) -> Result<RpcEnv, RpcError> {
        let host = advertised_host;
        let bind = RpcAddress::new(bind_host, port).host_port();
        let listener = listen(&bind).await.map_err(|source| RpcError::Bind {
            address: bind.clone(),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| RpcError::Bind {
            address: bind,
            source,
        })?;
        let env = Self::build(
            conf,
            Some(RpcAddress::new(host, local.port())),
            keyring,
            None,
        )?;
        let accept_env = env.clone();
        env.inner.tracker.spawn(accept_loop(accept_env, listener));
        env.setup_endpoint(ENDPOINT_VERIFIER, Verifier)?;
        env.setup_concurrent_endpoint(FILE_SERVER, Arc::new(FileServerEndpoint))?;
        env.register_stream_handler(
            FILE_SERVER,
            Arc::new(FileStreams {
                env: Arc::downgrade(&env.inner),
            }),
        )?;
        tracing::info!("RPC environment listening on {}", env.describe());
        Ok(env)
    }

    /// Starts a client-only environment: it listens nowhere; peers reach its endpoints
    /// only over connections it opened.
    pub fn client(conf: RpcConf) -> Result<RpcEnv, RpcError> {
        Self::build(conf, None, None, None)
    }

    /// A client-only environment that presents `key_id` on every connection it opens,
    /// proving `conf.secret` as that key's secret (towards a
    /// [`RpcEnv::server_with_keyring`] holding it).
    pub fn client_with_key(conf: RpcConf, key_id: impl Into<String>) -> Result<RpcEnv, RpcError> {
        Self::build(conf, None, None, Some(key_id.into()))
    }

    fn build(
        conf: RpcConf,
        address: Option<RpcAddress>,
        keyring: Option<Keyring>,
        key_id: Option<String>,
    ) -> Result<RpcEnv, RpcError> {
        let tls = conf.tls.as_ref().map(TlsContext::load).transpose()?;
        Ok(RpcEnv {
            inner: Arc::new(EnvInner {
                conf,
                keyring,
                key_id,
                address,
                endpoints: RwLock::new(HashMap::new()),
                endpoints_gen: Default::default(),
                outboxes: Mutex::new(HashMap::new()),
                connections: Mutex::new(HashMap::new()),
                token: CancellationToken::new(),
                conn_token: CancellationToken::new(),
                drain_until: std::sync::OnceLock::new(),
                tracker: TaskTracker::new(),
                tls,
                next_id: AtomicU64::new(1),
                files: FileRegistry::default(),
                stream_handlers: RwLock::new(HashMap::new()),
                partial_bytes: AtomicUsize::new(0),
                handshakes: Mutex::new(Handshakes::default()),
                auth_failures: Mutex::new(HashMap::new()),
                refusals: RateLimit::new(WARN_INTERVAL),
                dropped: RateLimit::new(WARN_INTERVAL),
            }),
        })
    }

    /// The listening address; `None` for a client-only environment.
    pub fn address(&self) -> Option<&RpcAddress> {
        self.inner.address.as_ref()
    }

    /// The settings in force.
    pub fn conf(&self) -> &RpcConf {
        &self.inner.conf
    }

    /// The address for messages and logs (`flint://host:port` or `client-only env`).
    pub fn describe(&self) -> String {
        match &self.inner.address {
            Some(a) => a.to_string(),
            None => "a client-only RpcEnv".into(),
        }
    }

    #[allow(clippy::type_complexity)]
    fn register<M: Protocol>(
        &self,
        name: &str,
    ) -> Result<
        (
            EndpointRef<M>,
            Context<M>,
            mpsc::UnboundedReceiver<inbox::Item<M>>,
            Arc<Budget>,
        ),
        RpcError,
    > {
        if self.inner.token.is_cancelled() {
            return Err(RpcError::Ask(crate::AskError::NotDelivered {
                to: name.into(),
                reason: "the RPC environment has stopped".into(),
            }));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let name: Arc<str> = name.into();
        let budget = Arc::new(Budget::default());
        let inbox = Inbox {
            tx,
            budget: budget.clone(),
            cap: self.inner.conf.max_inbox_bytes,
        };
        {
            let mut eps = self.inner.endpoints.write();
            if eps.contains_key(&name) {
                return Err(RpcError::NameTaken(name.to_string()));
            }
            eps.insert(name.clone(), Arc::new(inbox.clone()));
        }
        let r = EndpointRef::new(self.clone(), name, Target::Local(inbox));
        let ctx = Context {
            env: self.clone(),
            self_ref: r.clone(),
            sender: None,
        };
        Ok((r, ctx, rx, budget))
    }

    /// Registers `endpoint` under `name` and starts it (`on_start` runs first).
    pub fn setup_endpoint<E: Endpoint>(
        &self,
        name: &str,
        endpoint: E,
    ) -> Result<EndpointRef<E::Msg>, RpcError> {
        let (r, ctx, rx, budget) = self.register::<E::Msg>(name)?;
        let span = tracing::debug_span!("endpoint", name);
        self.inner.tracker.spawn(tracing::Instrument::instrument(
            inbox::run_sequential(endpoint, ctx, rx, budget),
            span,
        ));
        Ok(r)
    }

    /// Registers an endpoint that handles messages concurrently.
    pub fn setup_concurrent_endpoint<E: ConcurrentEndpoint>(
        &self,
        name: &str,
        endpoint: Arc<E>,
    ) -> Result<EndpointRef<E::Msg>, RpcError> {
        let (r, ctx, rx, budget) = self.register::<E::Msg>(name)?;
        self.inner
            .tracker
            .spawn(inbox::run_concurrent(endpoint, ctx, rx, budget));
        Ok(r)
    }

    /// Registers an [`InlineEndpoint`](crate::InlineEndpoint): its handlers run on the
    /// reader task of the connection each remote message arrived on.
    pub fn setup_inline_endpoint<E: crate::endpoint::InlineEndpoint>(
        &self,
        name: &str,
        endpoint: Arc<E>,
    ) -> Result<EndpointRef<E::Msg>, RpcError> {
        let (r, ctx, rx, budget) = self.register::<E::Msg>(name)?;
        let Target::Local(inbox) = &r.inner.target else {
            unreachable!("register gives a local ref")
        };
        let entry = inbox::InlineInbox {
            inbox: inbox.clone(),
            ep: endpoint.clone(),
            ctx: ctx.clone(),
            stopped: Default::default(),
        };
        self.inner
            .endpoints
            .write()
            .insert(r.name_arc(), Arc::new(entry));
        self.inner
            .tracker
            .spawn(inbox::run_inline(endpoint, ctx, rx, budget));
        Ok(r)
    }

    /// Stops the endpoint `name` after the messages already queued before this call;
    /// its `on_stop` runs and later messages to it fail as not delivered.
    pub fn stop_endpoint(&self, name: &str) {
        if let Some(inbox) = self.inner.endpoints.read().get(name) {
            inbox.stop();
        }
    }

    pub(crate) fn unregister(&self, name: &str) {
        self.inner.endpoints.write().remove(name);
        self.inner.endpoints_gen.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn inbox(&self, name: &str) -> Option<Arc<dyn ErasedInbox>> {
        self.inner.endpoints.read().get(name).cloned()
    }

    /// [`inbox`](Self::inbox) through `cache`, the last one a connection's reader
    /// found: valid while no endpoint has left the table since (a name's entry only
    /// changes by being removed), so a run of frames for one endpoint takes no lock
    /// and hashes no name.
    pub(crate) fn inbox_cached<'c>(
        &self,
        cache: &'c mut Option<InboxCache>,
        name: &str,
    ) -> Option<&'c Arc<dyn ErasedInbox>> {
        let gen = self.inner.endpoints_gen.load(Ordering::Acquire);
        let hit = cache
            .as_ref()
            .is_some_and(|c| c.gen == gen && &*c.name == name);
        if !hit {
            let inbox = self.inbox(name)?;
            *cache = Some(InboxCache {
                gen,
                name: name.into(),
                inbox,
                slot: None,
            });
        }
        cache.as_ref().map(|c| &c.inbox)
    }

    /// The inbox and name in `cache` if the cache is current and holds the endpoint
    /// whose name is the bytes `name` (no UTF-8 check: the cached name is a `str`, so
    /// equal bytes are that name); `None` otherwise, and then the caller takes the slow
    /// path ([`inbox_cached`](Self::inbox_cached)).
    pub(crate) fn inbox_if_cached<'c>(
        &self,
        cache: &'c mut Option<InboxCache>,
        name: &[u8],
    ) -> Option<&'c mut InboxCache> {
        let gen = self.inner.endpoints_gen.load(Ordering::Acquire);
        cache
            .as_mut()
            .filter(|c| c.gen == gen && c.name.as_bytes() == name)
    }

    /// The protocol spoken by the local endpoint `name`, if there is one.
    pub fn protocol_of(&self, name: &str) -> Option<&'static str> {
        self.inbox(name).map(|i| i.protocol_name())
    }

    /// A ref to endpoint `name` at `address`, without checking it exists (a message to
    /// a missing endpoint then fails as not delivered). Local if `address` is ours.
    pub fn endpoint_ref<M: Protocol>(&self, address: &RpcAddress, name: &str) -> EndpointRef<M> {
        self.bind_ref(Some(address.clone()), name.into(), None)
    }

    /// A ref to this environment's own endpoint `name`, if it exists and speaks `M`.
    pub fn local_ref<M: Protocol>(&self, name: &str) -> Option<EndpointRef<M>> {
        let inbox = self.inbox(name)?;
        let inbox = inbox.as_any().downcast_ref::<Inbox<M>>()?.clone();
        Some(EndpointRef::new(
            self.clone(),
            name.into(),
            Target::Local(inbox),
        ))
    }

    pub(crate) fn bind_ref<M: Protocol>(
        &self,
        address: Option<RpcAddress>,
        name: Arc<str>,
        conn: Option<&Arc<Connection>>,
    ) -> EndpointRef<M> {
        let target = match address {
            Some(a) if Some(&a) == self.inner.address.as_ref() => match self.local_ref::<M>(&name) {
                Some(r) => return r,
                None => Target::Missing(format!("no endpoint named {name} speaking {} at {a}", M::NAME)),
            },
            Some(a) => Target::Remote(a, OutboxCache::default()),
            None => match conn {
                Some(c) => Target::Client(c.clone()),
                None => Target::Missing(format!(
                    "endpoint {name} is in a client-only environment and no connection to it is known"
                )),
            },
        };
        EndpointRef::new(self.clone(), name, target)
    }

    /// Looks up endpoint `name` at `address` (asking that environment's
    /// `endpoint-verifier`), failing with `no endpoint named X at flint://host:port`.
    pub async fn setup_endpoint_ref<M: Protocol>(
        &self,
        address: &RpcAddress,
        name: &str,
    ) -> Result<EndpointRef<M>, RpcError> {
        let found = if Some(address) == self.inner.address.as_ref() {
            self.protocol_of(name).map(str::to_string)
        } else {
            let verifier = self.endpoint_ref::<VerifierMsg>(address, ENDPOINT_VERIFIER);
            verifier
                .ask_within(
                    CheckExistence { name: name.into() },
                    self.inner.conf.lookup_timeout,
                )
                .await?
        };
        match found {
            None => Err(RpcError::EndpointNotFound {
                name: name.into(),
                address: address.to_string(),
            }),
            Some(p) if p != M::NAME => Err(RpcError::ProtocolMismatch {
                name: name.into(),
                address: address.to_string(),
                expected: M::NAME,
                actual: p,
            }),
            Some(_) => Ok(self.endpoint_ref(address, name)),
        }
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The live connection to `addr`, opening one if there is none.
    pub(crate) fn outbox(&self, addr: &RpcAddress) -> Result<Arc<Connection>, SendFail> {
        if self.inner.token.is_cancelled() {
            return Err(SendFail::Stopped);
        }
        let mut map = self.inner.outboxes.lock();
        if let Some(c) = map.get(addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let (conn, rx) = Connection::new(
            self.next_request_id(),
            addr.clone(),
            self,
            &self.inner.conn_token,
            None,
        );
        map.insert(addr.clone(), conn.clone());
        drop(map);
        self.inner.connections.lock().insert(conn.id, conn.clone());
        self.inner
            .tracker
            .spawn(connection::run_outbound(self.clone(), conn.clone(), rx));
        Ok(conn)
    }

    /// The connection to `addr` for a ref: the one it used last unless that is `stale`
    /// (found closed), else the outbox, which it then remembers.
    pub(crate) fn conn_for(
        &self,
        addr: &RpcAddress,
        cache: &OutboxCache,
        stale: Option<&Arc<Connection>>,
    ) -> Result<Arc<Connection>, SendFail> {
        if let Some(c) = &*cache.0.lock() {
            if stale.is_none_or(|s| !Arc::ptr_eq(s, c)) {
                return Ok(c.clone());
            }
        }
        let c = self.outbox(addr)?;
        *cache.0.lock() = Some(c.clone());
        Ok(c)
    }

    /// Queues a frame to `addr` without waiting; a connection found closed is replaced
    /// once.
    pub(crate) fn send_to(
        &self,
        addr: &RpcAddress,
        cache: &OutboxCache,
        mut out: Out,
    ) -> Result<(), SendFail> {
        let mut stale = None;
        for _ in 0..2 {
            let conn = self.conn_for(addr, cache, stale.as_ref())?;
            match conn.try_enqueue(out) {
                Ok(()) => return Ok(()),
                Err(EnqueueError::Full(_)) => {
                    return Err(SendFail::Full {
                        queued: conn.queued_bytes(),
                        budget: conn.budget(),
                    })
                }
                Err(EnqueueError::Closed(back)) => {
                    out = back;
                    self.forget_connection(&conn);
                    stale = Some(conn);
                }
            }
        }
        Err(SendFail::KeepsClosing(addr.clone()))
    }

    /// Queues a frame to `addr`, waiting for room in the connection's budget.
    pub(crate) async fn send_to_wait(
        &self,
        addr: &RpcAddress,
        cache: &OutboxCache,
        mut out: Out,
    ) -> Result<(), SendFail> {
        let mut stale = None;
        for _ in 0..2 {
            let conn = self.conn_for(addr, cache, stale.as_ref())?;
            match conn.enqueue_wait(out).await {
                Ok(()) => return Ok(()),
                Err(back) => {
                    out = back;
                    self.forget_connection(&conn);
                    stale = Some(conn);
                }
            }
        }
        Err(SendFail::KeepsClosing(addr.clone()))
    }

    /// Registers ask `id` and queues its frame to `addr` at once.
    pub(crate) fn ask_to(
        &self,
        addr: &RpcAddress,
        cache: &OutboxCache,
        id: u64,
        bytes: bytes::Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<(Arc<Connection>, oneshot::Receiver<Outcome>), SendFail> {
        let mut out = Out {
            bytes,
            ask: Some(id),
        };
        let mut stale = None;
        for _ in 0..2 {
            let conn = self.conn_for(addr, cache, stale.as_ref())?;
            let rx = conn.register(id, deadline);
            match conn.try_enqueue(out) {
                Ok(()) => return Ok((conn, rx)),
                Err(EnqueueError::Full(_)) => {
                    conn.unregister(id);
                    return Err(SendFail::Full {
                        queued: conn.queued_bytes(),
                        budget: conn.budget(),
                    });
                }
                Err(EnqueueError::Closed(back)) => {
                    conn.unregister(id);
                    out = back;
                    self.forget_connection(&conn);
                    stale = Some(conn);
                }
            }
        }
        Err(SendFail::KeepsClosing(addr.clone()))
    }

    /// Registers ask `id` and queues its frame to `addr`, waiting for room in the
    /// connection's budget (the caller bounds the wait by the ask's deadline).
    pub(crate) async fn ask_to_wait(
        &self,
        addr: &RpcAddress,
        cache: &OutboxCache,
        id: u64,
        bytes: bytes::Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<(Arc<Connection>, oneshot::Receiver<Outcome>), SendFail> {
        let mut out = Out {
            bytes,
            ask: Some(id),
        };
        let mut stale = None;
        for _ in 0..2 {
            let conn = self.conn_for(addr, cache, stale.as_ref())?;
            let rx = conn.register(id, deadline);
            let guard = Unregister(&conn, id);
            match conn.enqueue_wait(out).await {
                Ok(()) => {
                    std::mem::forget(guard);
                    return Ok((conn, rx));
                }
                Err(back) => {
                    drop(guard);
                    out = back;
                    self.forget_connection(&conn);
                    stale = Some(conn);
                }
            }
        }
        Err(SendFail::KeepsClosing(addr.clone()))
    }

    /// Takes a handshaken inbound connection into the tables. When the peer proved
    /// the cluster secret or a TLS certificate, it also becomes the outbox to the peer's
    /// declared listening address if there is none yet (one connection per pair); an
    /// unauthenticated peer's claim is not trusted to route other traffic to it.
    pub(crate) fn adopt_inbound(
        &self,
        peer: RpcAddress,
        listens: bool,
        key_id: Option<Arc<str>>,
    ) -> (Arc<Connection>, Queues) {
        let by_key = key_id.is_some();
        let (conn, rx) = Connection::new(
            self.next_request_id(),
            peer.clone(),
            self,
            &self.inner.conn_token,
            key_id,
        );
        self.inner.connections.lock().insert(conn.id, conn.clone());
        let authenticated = self.inner.conf.secret.is_some() || self.inner.tls.is_some() || by_key;
        if listens && authenticated {
            let mut map = self.inner.outboxes.lock();
            match map.get(&peer) {
                Some(c) if !c.is_closed() => {}
                _ => {
                    map.insert(peer, conn.clone());
                }
            }
        }
        (conn, rx)
    }

    /// Removes a closed connection from the tables (only if it is still the one there).
    pub(crate) fn forget_connection(&self, conn: &Arc<Connection>) {
        self.inner.connections.lock().remove(&conn.id);
        let mut map = self.inner.outboxes.lock();
        if map.get(conn.peer()).is_some_and(|c| c.id == conn.id) {
            map.remove(conn.peer());
        }
    }

    /// The keyring of a [`RpcEnv::server_with_keyring`] environment.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.inner.keyring.as_ref()
    }

    /// Closes every live connection authenticated as `key_id` (its peer sees the
    /// connection end; endpoints get `on_disconnected`). Returns how many were closed.
    pub fn close_key_connections(&self, key_id: &str) -> usize {
        let conns: Vec<_> = self
            .inner
            .connections
            .lock()
            .values()
            .filter(|c| c.key_id() == Some(key_id) && !c.is_closed())
            .cloned()
            .collect();
        for c in &conns {
            c.closed.cancel();
        }
        conns.len()
    }

    /// The live connections of this environment: one line per connection, for tests,
    /// status pages and operators counting connections per peer.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let conns: Vec<_> = self.inner.connections.lock().values().cloned().collect();
        let mut v: Vec<_> = conns
            .into_iter()
            .filter(|c| !c.is_closed())
            .map(|c| ConnectionInfo {
                peer: c.peer().clone(),
                queued_bytes: c.queued_bytes(),
                open_streams: c.streams.len(),
            })
            .collect();
        v.sort_by_key(|c| c.peer.to_string());
        v
    }

    /// Messages refused so far because endpoint `name`'s inbox was full.
    pub fn dropped_messages(&self, name: &str) -> Option<u64> {
        self.inbox(name).map(|i| i.dropped())
    }

    /// Connections mid-handshake right now (what `rpc.max_pending_handshakes` limits).
    pub fn pending_handshakes(&self) -> usize {
        self.inner.handshakes.lock().total
    }

    /// Recent failed authentications remembered for `ip` (they delay its next
    /// handshake).
    pub fn failed_authentications(&self, ip: IpAddr) -> u32 {
        self.inner
            .auth_failures
            .lock()
            .get(&ip)
            .map_or(0, |f| f.count)
    }

    /// Bytes held right now in partially received frames, across all connections.
    pub fn partial_frame_bytes(&self) -> usize {
        self.inner.partial_bytes.load(Ordering::Relaxed)
    }

    /// Rate limiter for warnings about refused connections.
    pub(crate) fn refusals(&self) -> &RateLimit {
        &self.inner.refusals
    }

    /// Rate limiter for warnings about dropped messages.
    pub(crate) fn dropped_log(&self) -> &RateLimit {
        &self.inner.dropped
    }

    /// Takes a mid-handshake slot for a connection from `ip`, if the limits allow.
    pub(crate) fn handshake_slot(&self, ip: IpAddr) -> Result<HandshakeSlot, AdmissionError> {
        let conf = &self.inner.conf;
        let mut guard = self.inner.handshakes.lock();
        let h = &mut *guard;
        let mine = h.per_ip.get(&ip).map_or(0, |q| q.len());
        if mine >= conf.max_pending_handshakes_per_address {
            return Err(AdmissionError::PerAddress { count: mine, ip });
        }
        if h.total >= conf.max_pending_handshakes {
            // Evict the oldest pending handshake of the address holding the most, unless
            // that is no more than this address would then hold.
            let victim = h
                .per_ip
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(a, q)| (*a, q.len()));
            match victim {
                Some((a, n)) if n > mine + 1 => {
                    if let Some(q) = h.per_ip.get_mut(&a) {
                        if let Some((_, token)) = q.pop_front() {
                            token.cancel();
                            h.total = h.total.saturating_sub(1);
                        }
                        if q.is_empty() {
                            h.per_ip.remove(&a);
                        }
                    }
                }
                _ => return Err(AdmissionError::Total { count: h.total }),
            }
        }
        let id = h.next;
        h.next += 1;
        let evicted = CancellationToken::new();
        h.per_ip
            .entry(ip)
            .or_default()
            .push_back((id, evicted.clone()));
        h.total += 1;
        Ok(HandshakeSlot {
            env: self.clone(),
            ip,
            id,
            evicted,
        })
    }

    /// How long a connection from `ip` waits before its handshake: nothing, or
    /// exponentially more after each recent failed authentication.
    pub(crate) fn auth_delay(&self, ip: IpAddr) -> Duration {
        let map = self.inner.auth_failures.lock();
        match map.get(&ip) {
            Some(f) if f.last.elapsed() < AUTH_MEMORY => auth_delay_for(f.count),
            _ => Duration::ZERO,
        }
    }

    /// Records a failed authentication from `ip`.
    pub(crate) fn auth_failed(&self, ip: IpAddr) {
        let mut map = self.inner.auth_failures.lock();
        if map.len() >= AUTH_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, f| f.last.elapsed() < AUTH_MEMORY);
            if map.len() >= AUTH_TRACKED {
                map.clear();
            }
        }
        let now = tokio::time::Instant::now();
        let f = map.entry(ip).or_insert(AuthFailures {
            count: 0,
            last: now,
        });
        if now.duration_since(f.last) >= AUTH_MEMORY {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }

    /// A peer from `ip` proved the secret: its failures are forgotten.
    pub(crate) fn auth_succeeded(&self, ip: IpAddr) {
        self.inner.auth_failures.lock().remove(&ip);
    }

    pub(crate) fn post_event(&self, ev: Event) {
        let inboxes: Vec<_> = self.inner.endpoints.read().values().cloned().collect();
        for i in inboxes {
            i.post_event(ev.clone());
        }
    }

    /// Waits, at most `limit`, until every open connection has written what is queued
    /// on it; true when nothing is left. [`shutdown`](Self::shutdown) drains the
    /// queues itself (for up to `rpc.shutdown_drain_timeout`); this is for a caller
    /// that wants to know the last sends were written, or to wait longer.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let pending = self
                .inner
                .connections
                .lock()
                .values()
                .any(|c| !c.is_closed() && c.queued_bytes() > 0);
            if !pending {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            // Bounded by `limit`; a writer drains a queue in well under a millisecond.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Stops the environment: the listener closes, every endpoint stops (its `on_stop`
    /// runs) and no new connection is opened. Each open connection first writes the
    /// frames already queued on it — for at most `rpc.shutdown_drain_timeout` from
    /// now, all connections together (zero: not at all) — and then closes; its pending
    /// asks then fail, and whatever was still queued fails as not delivered. A
    /// connection with nothing queued closes at once. Returns at once;
    /// [`RpcEnv::await_termination`] waits for all of it.
    pub fn shutdown(&self) {
        if self.inner.token.is_cancelled() {
            return;
        }
        tracing::debug!("shutting down RPC environment {}", self.describe());
        let drain = self.inner.conf.shutdown_drain.duration;
        let _ = self
            .inner
            .drain_until
            .set(tokio::time::Instant::now() + drain);
        self.inner.token.cancel();
        if drain.is_zero() {
            self.inner.conn_token.cancel();
        } else {
            // Idle writers wait for work only: wake them to drain and end.
            let conns: Vec<_> = self.inner.connections.lock().values().cloned().collect();
            for c in conns {
                c.wake_writer();
            }
        }
        self.inner.tracker.close();
    }

    /// Resolves once the environment is shutting down and its drain time is over (see
    /// [`RpcEnv::shutdown`]).
    pub(crate) async fn drain_over(&self) {
        self.inner.token.cancelled().await;
        if let Some(at) = self.inner.drain_until.get() {
            tokio::time::sleep_until(*at).await;
        }
    }

    /// Waits until every task of the environment has ended after [`RpcEnv::shutdown`].
    pub async fn await_termination(&self) {
        self.inner.tracker.wait().await;
        self.inner.outboxes.lock().clear();
        self.inner.connections.lock().clear();
        self.inner.endpoints.write().clear();
        self.inner.endpoints_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether [`RpcEnv::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// Resolves when the environment starts shutting down.
    pub async fn cancelled(&self) {
        self.inner.token.cancelled().await
    }
}

/// Connections the kernel may queue before `accept` (Linux caps it at somaxconn).
/// tokio's `TcpListener::bind` uses 128, which drops connection attempts when
/// thousands of workers register at once (each then waits a second to retry).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `host:port` (the first address it resolves to) with SO_REUSEADDR and a deep
/// accept queue.
async fn listen(bind: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(bind).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{bind} resolves to no address"),
        )
    }))
}

/// File descriptors kept free of RPC connections, for files and child processes.
const FD_RESERVE: u64 = 256;

/// `rpc.max_connections`, lowered so that [`FD_RESERVE`] descriptors stay free
/// under the process's soft `RLIMIT_NOFILE`.
fn connection_cap(configured: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid `rlimit` passed.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return configured;
    }
    let room = lim.rlim_cur.saturating_sub(FD_RESERVE).max(16);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

async fn accept_loop(env: RpcEnv, listener: TcpListener) {
    let token = env.inner.token.clone();
    // Read once the daemon has raised its descriptor limit (it does so before binding).
    let cap = connection_cap(env.inner.conf.max_connections);
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let open = env.inner.connections.lock().len();
                if open >= cap {
                    env.refusals().warn(("cap", peer.ip()), || {
                        format!(
                            "refused connection from {peer} at accept: {open} connections are open (rpc.max_connections, at most {cap} here so that descriptors stay in reserve)"
                        )
                    });
                    drop(tcp);
                    continue;
                }
                let slot = match env.handshake_slot(peer.ip()) {
                    Ok(s) => s,
                    Err(why) => {
                        env.refusals().warn(peer.ip(), || {
                            format!("refused connection from {peer} at accept: {why}")
                        });
                        drop(tcp);
                        continue;
                    }
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(peer = %peer, "cannot set TCP_NODELAY: {e}");
                }
                env.inner
                    .tracker
                    .spawn(connection::run_inbound(env.clone(), tcp, peer, slot));
            }
            Err(e) => {
                // Out of file descriptors and the like: say so, back off briefly, go on.
                tracing::warn!("accept failed on {}: {e}", env.describe());
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// The delay imposed after `failures` failed authentications: 100 ms, doubling, at
/// most 10 s.
pub(crate) fn auth_delay_for(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(16);
    (AUTH_DELAY_BASE * (1u32 << shift)).min(AUTH_DELAY_MAX)
}

/// Messages of the built-in `endpoint-verifier`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum VerifierMsg {
    Check(CheckExistence),
}

impl Protocol for VerifierMsg {
    const NAME: &'static str = "flint.endpoint-verifier/1";
}

/// Does an endpoint of this name exist? Answered with its protocol's name.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CheckExistence {
    name: String,
}

impl Ask for CheckExistence {
    type Reply = Option<String>;
}

impl From<CheckExistence> for VerifierMsg {
    fn from(c: CheckExistence) -> Self {
        VerifierMsg::Check(c)
    }
}

struct Verifier;

impl Endpoint for Verifier {
    type Msg = VerifierMsg;

    fn receive_and_reply(&mut self, ctx: &Context<VerifierMsg>, msg: VerifierMsg, reply: Reply) {
        let VerifierMsg::Check(c) = msg;
        reply.send(ctx.env().protocol_of(&c.name).map(str::to_string));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn verifier_messages_round_trip(name in ".{0,60}", found in proptest::option::of(".{0,30}")) {
            let m = VerifierMsg::Check(CheckExistence { name: name.clone() });
            let back: VerifierMsg = postcard::from_bytes(&postcard::to_stdvec(&m).unwrap()).unwrap();
            let VerifierMsg::Check(c) = back;
            prop_assert_eq!(c.name, name);
            let back: Option<String> = postcard::from_bytes(&postcard::to_stdvec(&found).unwrap()).unwrap();
            prop_assert_eq!(back, found);
        }
    }
}
