//! [`EndpointRef`]: a typed, cloneable handle to a named endpoint, local or remote, with
//! `send` and `ask`. A ref can travel inside a message; decoding it binds it to the
//! receiving environment (and, for a client-only peer, to the connection it came over).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::oneshot;

use crate::address::{EndpointAddress, RpcAddress};
use crate::conf::RpcTimeout;
use crate::connection::{Connection, EnqueueError, Out, Outcome, Unregister};
use crate::endpoint::{Ask, LocalReply, Message, Protocol};
use crate::env::{OutboxCache, RpcEnv, SendFail};
use crate::error::AskError;
use crate::frame::{self, Header};
use crate::inbox::{Inbox, Item, LocalAsk, Posted};
use crate::pipeline::result_of;

pub(crate) enum Target<M> {
    /// In this environment: messages go straight into the inbox, unserialized.
    Local(Inbox<M>),
    /// In a server-mode environment elsewhere: through that address's outbox (the
    /// connection last used is remembered).
    Remote(RpcAddress, OutboxCache),
    /// In a client-only environment: only over the connection it opened to us.
    Client(Arc<Connection>),
    /// Could not be bound (the reason is given on use).
    Missing(String),
}

pub(crate) struct RefInner<M> {
    pub(crate) env: RpcEnv,
    pub(crate) name: Arc<str>,
    pub(crate) target: Target<M>,
}

/// A typed handle to an endpoint whose messages are `M`. Cheap to clone.
pub struct EndpointRef<M> {
    pub(crate) inner: Arc<RefInner<M>>,
    _m: PhantomData<fn(M)>,
}

impl<M> Clone for EndpointRef<M> {
    fn clone(&self) -> Self {
        EndpointRef {
            inner: self.inner.clone(),
            _m: PhantomData,
        }
    }
}

impl<M: Protocol> EndpointRef<M> {
    pub(crate) fn new(env: RpcEnv, name: Arc<str>, target: Target<M>) -> Self {
        EndpointRef {
            inner: Arc::new(RefInner { env, name, target }),
            _m: PhantomData,
        }
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.inner.name.clone()
    }

    /// The endpoint's full address (`flint://name@host:port`).
    pub fn address(&self) -> EndpointAddress {
        EndpointAddress {
            address: self.rpc_address(),
            name: self.name().to_string(),
        }
    }

    /// The address of the environment the endpoint lives in; `None` for a client-only one.
    pub fn rpc_address(&self) -> Option<RpcAddress> {
        match &self.inner.target {
            Target::Local(_) => self.inner.env.address().cloned(),
            Target::Remote(a, _) => Some(a.clone()),
            Target::Client(_) | Target::Missing(_) => None,
        }
    }

    pub(crate) fn not_delivered(&self, reason: impl Into<String>) -> AskError {
        AskError::NotDelivered {
            to: self.address().to_string(),
            reason: reason.into(),
        }
    }

    fn busy(&self) -> AskError {
        AskError::Busy {
            to: self.address().to_string(),
            reason: "its inbox is full (rpc.endpoint.max_queued_bytes); retry later".into(),
        }
    }

    fn full(&self, conn: &Connection) -> AskError {
        AskError::Full {
            to: self.address().to_string(),
            queued: conn.queued_bytes(),
            budget: conn.budget(),
        }
    }

    fn map_fail(&self, f: SendFail) -> AskError {
        match f {
            SendFail::Full { queued, budget } => AskError::Full {
                to: self.address().to_string(),
                queued,
                budget,
            },
            other => self.not_delivered(other.to_string()),
        }
    }

    fn post_local(&self, inbox: &Inbox<M>, item: Item<M>) -> Result<(), AskError> {
        inbox.post(item).map_err(|(p, _)| match p {
            Posted::Full => self.busy(),
            _ => self.not_delivered("the endpoint has stopped"),
        })
    }

    /// Sends a one-way message without waiting (the same as [`Self::try_send`]).
    pub fn send(&self, msg: impl Into<M>) -> Result<(), AskError> {
        self.try_send(msg)
    }

    /// Sends a one-way message without waiting. An error means it certainly was not
    /// delivered: `Full` when the connection's outbound queue is at its byte budget
    /// (`rpc.connection.max_queued_bytes`), `Busy` when a local endpoint's inbox is
    /// full. `Ok` means it was queued (a later connection failure is logged, as in
    /// Spark). Handlers use this: they must never wait.
    pub fn try_send(&self, msg: impl Into<M>) -> Result<(), AskError> {
        let msg = msg.into();
        match &self.inner.target {
            Target::Local(inbox) => self.post_local(inbox, Item::Local { msg, reply: None }),
            Target::Remote(addr, cache) => {
                let bytes = self.one_way(&msg)?;
                self.inner
                    .env
                    .send_to(addr, cache, Out { bytes, ask: None })
                    .map_err(|f| self.map_fail(f))
            }
            Target::Client(conn) => {
                let bytes = self.one_way(&msg)?;
                match conn.try_enqueue(Out { bytes, ask: None }) {
                    Ok(()) => Ok(()),
                    Err(EnqueueError::Full(_)) => Err(self.full(conn)),
                    Err(EnqueueError::Closed(_)) => {
                        Err(self.not_delivered("the connection the client opened has closed"))
                    }
                }
            }
            Target::Missing(why) => Err(self.not_delivered(why.clone())),
        }
    }

    /// Sends a one-way message, waiting while the connection's outbound queue is at
    /// its byte budget: the way for a producer outside a handler to go no faster than
    /// the peer reads. Fails only if the message cannot be delivered at all.
    pub async fn send_async(&self, msg: impl Into<M>) -> Result<(), AskError> {
        let msg = msg.into();
        match &self.inner.target {
            Target::Local(inbox) => self.post_local(inbox, Item::Local { msg, reply: None }),
            Target::Remote(addr, cache) => {
                let bytes = self.one_way(&msg)?;
                self.inner
                    .env
                    .send_to_wait(addr, cache, Out { bytes, ask: None })
                    .await
                    .map_err(|f| self.map_fail(f))
            }
            Target::Client(conn) => {
                let bytes = self.one_way(&msg)?;
                conn.enqueue_wait(Out { bytes, ask: None })
                    .await
                    .map_err(|_| self.not_delivered("the connection the client opened has closed"))
            }
            Target::Missing(why) => Err(self.not_delivered(why.clone())),
        }
    }

    fn one_way(&self, msg: &M) -> Result<Bytes, AskError> {
        self.encode(
            &Header::OneWay {
                to: self.name(),
                protocol: M::ID,
            },
            msg,
        )
    }

    fn encode(&self, header: &Header<'_>, msg: &M) -> Result<Bytes, AskError> {
        let max = self.inner.env.inner.conf.max_message_size;
        let bytes = frame::encode_frame(header, msg)
            .map_err(|e| self.not_delivered(format!("cannot encode message: {e}")))?;
        if bytes.len() - frame::LEN_BYTES > max {
            return Err(self.not_delivered(format!(
                "message of {} bytes exceeds rpc.message.max_size ({max} bytes)",
                bytes.len() - frame::LEN_BYTES
            )));
        }
        Ok(bytes.into())
    }

    /// Asks and waits for the reply, at most `rpc.ask_timeout`.
    ///
    /// The request is queued when `ask` is called, not when the future is first
    /// polled: messages sent and asks made in order by one caller reach the endpoint
    /// in that order, even if the returned futures are awaited later or elsewhere.
    pub fn ask<Q: Ask + Into<M>>(
        &self,
        q: Q,
    ) -> impl Future<Output = Result<Q::Reply, AskError>> + Send + 'static {
        self.ask_within(q, self.inner.env.inner.conf.ask_timeout)
    }

    /// Asks and waits for the reply, at most `timeout` (queued at once, as [`ask`](Self::ask)).
    pub fn ask_timeout<Q: Ask + Into<M>>(
        &self,
        q: Q,
        timeout: Duration,
    ) -> impl Future<Output = Result<Q::Reply, AskError>> + Send + 'static {
        let t = RpcTimeout {
            duration: timeout,
            setting: "the timeout passed to ask_timeout",
        };
        self.ask_within(q, t)
    }

    pub(crate) fn ask_within<Q: Ask + Into<M>>(
        &self,
        q: Q,
        t: RpcTimeout,
    ) -> impl Future<Output = Result<Q::Reply, AskError>> + Send + 'static {
        let this = self.clone();
        let deadline = tokio::time::Instant::now() + t.duration;
        let queued = self.queue_ask(q.into(), frame::type_id_of::<Q::Reply>(), deadline);
        async move {
            let pending = queued?;
            this.await_reply::<Q::Reply>(pending, t).await
        }
    }

    /// Asks and waits for the reply, waiting first for room in the connection's
    /// outbound queue if it is at its byte budget (`rpc.connection.max_queued_bytes`)
    /// instead of failing `Full`; the whole ask, waiting for room included, takes at
    /// most `rpc.ask_timeout`. For callers outside handlers (a handler must never
    /// wait: it uses [`ask`](Self::ask)), e.g. after a burst of
    /// [`send_async`](Self::send_async). Unlike `ask`, the request is queued when there
    /// is room, so it may reach the endpoint after messages sent later by others.
    pub async fn ask_waiting<Q: Ask + Into<M>>(&self, q: Q) -> Result<Q::Reply, AskError> {
        self.ask_waiting_within(q, self.inner.env.inner.conf.ask_timeout)
            .await
    }

    /// [`ask_waiting`](Self::ask_waiting) with a deadline of `timeout` instead of
    /// `rpc.ask_timeout`.
    pub async fn ask_waiting_timeout<Q: Ask + Into<M>>(
        &self,
        q: Q,
        timeout: Duration,
    ) -> Result<Q::Reply, AskError> {
        let t = RpcTimeout {
            duration: timeout,
            setting: "the timeout passed to ask_waiting_timeout",
        };
        self.ask_waiting_within(q, t).await
    }

    async fn ask_waiting_within<Q: Ask + Into<M>>(
        &self,
        q: Q,
        t: RpcTimeout,
    ) -> Result<Q::Reply, AskError> {
        let expects = frame::type_id_of::<Q::Reply>();
        let msg: M = q.into();
        let start = tokio::time::Instant::now();
        let deadline = start + t.duration;
        let queue = async {
            match &self.inner.target {
                Target::Remote(addr, cache) => {
                    let (id, bytes) = self.request(&msg, expects)?;
                    let (conn, rx) = self
                        .inner
                        .env
                        .ask_to_wait(addr, cache, id, bytes, deadline)
                        .await
                        .map_err(|f| self.map_fail(f))?;
                    Ok(Pending::Remote { conn, rx })
                }
                Target::Client(conn) => {
                    let (id, bytes) = self.request(&msg, expects)?;
                    let rx = conn.register(id, deadline);
                    let guard = Unregister(conn, id);
                    let queued = conn
                        .enqueue_wait(Out {
                            bytes,
                            ask: Some(id),
                        })
                        .await;
                    if queued.is_err() {
                        return Err(
                            self.not_delivered("the connection the client opened has closed")
                        );
                    }
                    std::mem::forget(guard);
                    Ok(Pending::Remote {
                        conn: conn.clone(),
                        rx,
                    })
                }
                // Nothing to wait for: local inboxes refuse at once (`Busy`).
                _ => self.queue_ask(msg, expects, deadline),
            }
        };
        let pending = match tokio::time::timeout(t.duration, queue).await {
            Ok(p) => p?,
            Err(_) => {
                // The connection's queue stayed full until the deadline: nothing was sent.
                return Err(self.not_delivered(format!(
                    "the connection's outbound queue stayed at its byte budget (rpc.connection.max_queued_bytes) for the whole deadline of {:?}; this timeout is controlled by {}",
                    t.duration, t.setting
                )));
            }
        };
        let left = RpcTimeout {
            duration: t.duration.saturating_sub(start.elapsed()),
            setting: t.setting,
        };
        self.await_reply::<Q::Reply>(pending, left)
            .await
            .map_err(|e| match e {
                AskError::Timeout { to, setting, .. } => AskError::Timeout {
                    to,
                    after: t.duration,
                    setting,
                },
                e => e,
            })
    }

    /// A request frame for `msg` under a fresh id.
    fn request(&self, msg: &M, expects: u32) -> Result<(u64, Bytes), AskError> {
        let id = self.inner.env.next_request_id();
        let bytes = self.encode(
            &Header::Request {
                id,
                to: self.name(),
                protocol: M::ID,
                reply: expects,
            },
            msg,
        )?;
        Ok((id, bytes))
    }

    /// Queues a request now; the reply is awaited by [`Self::await_reply`].
    fn queue_ask(
        &self,
        msg: M,
        expects: u32,
        deadline: tokio::time::Instant,
    ) -> Result<Pending, AskError> {
        match &self.inner.target {
            Target::Local(inbox) => {
                let (tx, orx) = oneshot::channel();
                self.post_local(
                    inbox,
                    Item::Local {
                        msg,
                        reply: Some(LocalAsk { tx, expects }),
                    },
                )?;
                Ok(Pending::Local(orx))
            }
            Target::Remote(..) | Target::Client(_) => {
                let env = &self.inner.env;
                let (id, bytes) = self.request(&msg, expects)?;
                let (conn, rx) = match &self.inner.target {
                    Target::Client(conn) => {
                        let rx = conn.register(id, deadline);
                        match conn.try_enqueue(Out {
                            bytes,
                            ask: Some(id),
                        }) {
                            Ok(()) => {}
                            Err(e) => {
                                conn.unregister(id);
                                return Err(match e {
                                    EnqueueError::Full(_) => self.full(conn),
                                    EnqueueError::Closed(_) => self.not_delivered(
                                        "the connection the client opened has closed",
                                    ),
                                });
                            }
                        }
                        (conn.clone(), rx)
                    }
                    Target::Remote(addr, cache) => env
                        .ask_to(addr, cache, id, bytes, deadline)
                        .map_err(|f| self.map_fail(f))?,
                    _ => return Err(self.not_delivered("unreachable target")),
                };
                Ok(Pending::Remote { conn, rx })
            }
            Target::Missing(why) => Err(self.not_delivered(why.clone())),
        }
    }

    async fn await_reply<R: Message>(
        &self,
        pending: Pending,
        t: RpcTimeout,
    ) -> Result<R, AskError> {
        // The address string is built only on the error paths: formatting it costs
        // more than the rest of a successful ask.
        let to = || self.address().to_string();
        let timeout = || AskError::Timeout {
            to: to(),
            after: t.duration,
            setting: t.setting,
        };
        match pending {
            Pending::Local(orx) => match tokio::time::timeout(t.duration, orx).await {
                Err(_) => Err(timeout()),
                Ok(Err(_)) => Err(self.not_delivered("the endpoint stopped before handling it")),
                Ok(Ok(Err(message))) => Err(AskError::Remote { to: to(), message }),
                Ok(Ok(Ok(any))) => any
                    .downcast::<R>()
                    .map(|b| *b)
                    .map_err(|_| AskError::Remote {
                        to: to(),
                        message: format!(
                            "reply is not of the expected type {}",
                            std::any::type_name::<R>()
                        ),
                    }),
            },
            // No timer here: the connection's sweeper fails the ask at its deadline.
            Pending::Remote { conn, rx, .. } => {
                let outcome = rx
                    .await
                    .unwrap_or_else(|_| Outcome::Lost("the connection was dropped".into()));
                result_of::<R, M>(self, &self.inner.env, Some(&conn), outcome, t)
            }
        }
    }
}

/// A request already queued, awaiting its reply.
enum Pending {
    Local(oneshot::Receiver<LocalReply>),
    Remote {
        conn: Arc<Connection>,
        rx: oneshot::Receiver<Outcome>,
    },
}

impl<M: Protocol> fmt::Display for EndpointRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.address().fmt(f)
    }
}

impl<M: Protocol> fmt::Debug for EndpointRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointRef<{}>({})", M::NAME, self.address())
    }
}

/// How a ref travels: its environment's address (none for client-only), name and
/// protocol id.
#[derive(Serialize, Deserialize)]
struct WireRef {
    address: Option<RpcAddress>,
    name: String,
    protocol: u32,
}

impl<M: Protocol> Serialize for EndpointRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRef {
            address: self.rpc_address(),
            name: self.name().to_string(),
            protocol: M::ID,
        }
        .serialize(s)
    }
}

/// The environment (and connection) a body is being decoded for, while
/// [`decode_with`] runs on this thread: pointers, not clones, so that a decode costs no
/// reference counting (it runs for every message and reply).
type DecodeCtx = Option<(NonNull<RpcEnv>, Option<NonNull<Arc<Connection>>>)>;

thread_local! {
    static DECODE_CTX: Cell<DecodeCtx> = const { Cell::new(None) };
}

/// Decodes `body` with `env` (and the connection it came over) available to any
/// `EndpointRef` inside it.
pub(crate) fn decode_with<T: serde::de::DeserializeOwned>(
    env: &RpcEnv,
    conn: Option<&Arc<Connection>>,
    body: &[u8],
) -> Result<T, postcard::Error> {
    /// Puts the previous context back, on a panic too.
    struct Restore(DecodeCtx);
    impl Drop for Restore {
        fn drop(&mut self) {
            DECODE_CTX.with(|c| c.set(self.0));
        }
    }
    let ctx = Some((NonNull::from(env), conn.map(NonNull::from)));
    let _restore = Restore(DECODE_CTX.with(|c| c.replace(ctx)));
    postcard::from_bytes(body)
}

impl<'de, M: Protocol> Deserialize<'de> for EndpointRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireRef::deserialize(d)?;
        if w.protocol != M::ID {
            return Err(D::Error::custom(format!(
                "endpoint ref {} is of another protocol than {}",
                w.name,
                M::NAME
            )));
        }
        match DECODE_CTX.with(Cell::get) {
            None => Err(D::Error::custom(
                "an EndpointRef can only be decoded by an RpcEnv",
            )),
            Some((env, conn)) => {
                // SAFETY: the pointers are set only by `decode_with`, from references
                // it holds for the whole decode, and reset (on unwinding too) before it
                // returns; this runs inside that decode, on the same thread.
                let (env, conn) = unsafe { (env.as_ref(), conn.map(|c| c.as_ref())) };
                Ok(env.bind_ref::<M>(w.address, w.name.into(), conn))
            }
        }
    }
}
