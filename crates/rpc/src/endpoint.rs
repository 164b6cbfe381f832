//! What an endpoint is: the [`Endpoint`] trait (one message at a time, `&mut self`),
//! [`ConcurrentEndpoint`] for endpoints that opt into handling messages concurrently,
//! [`InlineEndpoint`] for quick handlers run on the connection's reader,
//! the per-message [`Context`], and [`Reply`], the handle that answers an `ask`.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::address::RpcAddress;
use crate::connection::Connection;
use crate::env::RpcEnv;
use crate::frame::{self, FailureKind};
use crate::reference::EndpointRef;

/// Anything that can travel as a message or a reply.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// The message type of an endpoint (usually an enum of everything it accepts).
/// `NAME` identifies it on the wire: a message of another protocol is refused by name.
pub trait Protocol: Message {
    /// A stable, unique name, such as `"flint.master/1"`.
    const NAME: &'static str;
    /// The 32-bit id carried in each frame.
    const ID: u32 = frame::protocol_id(Self::NAME);
}

/// A request with a typed reply: `EndpointRef::ask(q)` returns `Q::Reply`.
pub trait Ask: Message {
    /// What the endpoint answers.
    type Reply: Message;
}

/// A connection event, delivered to every endpoint of an environment.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Connected(RpcAddress),
    Disconnected(RpcAddress),
    NetworkError(RpcAddress, String),
}

/// A named endpoint that handles one message at a time.
///
/// Lifecycle: `on_start` → messages and connection events → `on_stop`. Handlers are
/// synchronous and must not block; to answer later, move the [`Reply`] into a task.
pub trait Endpoint: Send + 'static {
    /// The messages this endpoint accepts.
    type Msg: Protocol;

    /// Runs before the first message.
    fn on_start(&mut self, _ctx: &Context<Self::Msg>) {}

    /// Handles a one-way message.
    fn receive(&mut self, ctx: &Context<Self::Msg>, _msg: Self::Msg) {
        tracing::warn!(
            endpoint = ctx.name(),
            "endpoint does not accept one-way messages; dropped"
        );
    }

    /// Handles a request; answer through `reply` (now or later).
    fn receive_and_reply(&mut self, ctx: &Context<Self::Msg>, _msg: Self::Msg, reply: Reply) {
        reply.fail(format!("endpoint {} does not answer requests", ctx.name()));
    }

    /// A remote process connected to this environment (either direction).
    fn on_connected(&mut self, _ctx: &Context<Self::Msg>, _remote: &RpcAddress) {}

    /// A remote process's connection closed.
    fn on_disconnected(&mut self, _ctx: &Context<Self::Msg>, _remote: &RpcAddress) {}

    /// Connecting to, or talking with, a remote process failed.
    fn on_network_error(&mut self, _ctx: &Context<Self::Msg>, _remote: &RpcAddress, _error: &str) {}

    /// Runs after the last message, when the endpoint or the environment stops.
    fn on_stop(&mut self, _ctx: &Context<Self::Msg>) {}
}

/// An endpoint that handles messages concurrently, each in its own task, up to
/// `max_concurrency()` at a time. It gets no `&mut self`: state needs its own locking.
pub trait ConcurrentEndpoint: Send + Sync + 'static {
    /// The messages this endpoint accepts.
    type Msg: Protocol;

    /// How many messages may be in flight at once.
    fn max_concurrency(&self) -> usize {
        64
    }

    /// Handles one message; `reply` is `Some` for a request.
    fn handle(
        self: Arc<Self>,
        ctx: Context<Self::Msg>,
        msg: Self::Msg,
        reply: Option<Reply>,
    ) -> impl Future<Output = ()> + Send;
}

/// An endpoint whose handlers run on the reader task of the connection a message
/// arrived on (like a Netty `RpcHandler` in Spark answering on the I/O thread): no
/// inbox hand-off and no task wake-up per message, and a reply sent from the handler
/// goes straight into that connection's outbound queue. Messages from this
/// environment are handled on a task of the endpoint's own.
///
/// For small, quick, non-blocking handlers only: while one runs, its connection reads
/// nothing (that is the back-pressure; there is no inbox to fill), and handlers for
/// different connections run at the same time (`&self`: state needs its own locking).
/// A handler that panics fails its request (the `Reply` is dropped) and is logged;
/// the connection goes on. Connection events are not delivered to it.
pub trait InlineEndpoint: Send + Sync + 'static {
    /// The messages this endpoint accepts.
    type Msg: Protocol;

    /// Handles a one-way message.
    fn receive(&self, ctx: &Context<Self::Msg>, _msg: Self::Msg) {
        tracing::warn!(
            endpoint = ctx.name(),
            "endpoint does not accept one-way messages; dropped"
        );
    }

    /// Handles a request; answer through `reply` (now or later).
    fn receive_and_reply(&self, ctx: &Context<Self::Msg>, _msg: Self::Msg, reply: Reply) {
        reply.fail(format!("endpoint {} does not answer requests", ctx.name()));
    }
}

/// What a handler knows about its endpoint and the message in hand.
pub struct Context<M> {
    pub(crate) env: RpcEnv,
    pub(crate) self_ref: EndpointRef<M>,
    /// The connection the message in hand came over (its peer is the sender).
    pub(crate) sender: Option<Arc<Connection>>,
}

impl<M> Clone for Context<M> {
    fn clone(&self) -> Self {
        Context {
            env: self.env.clone(),
            self_ref: self.self_ref.clone(),
            sender: self.sender.clone(),
        }
    }
}

impl<M: Protocol> Context<M> {
    /// The environment this endpoint lives in.
    pub fn env(&self) -> &RpcEnv {
        &self.env
    }

    /// A reference to this endpoint, to hand to others.
    pub fn self_ref(&self) -> &EndpointRef<M> {
        &self.self_ref
    }

    /// This endpoint's name.
    pub fn name(&self) -> &str {
        self.self_ref.name()
    }

    /// The address of the process that sent the message in hand: its listening address
    /// if it has one, else its socket address; `None` for a local message.
    pub fn sender(&self) -> Option<&RpcAddress> {
        self.sender.as_deref().map(Connection::peer)
    }

    /// The key id the sender's connection proved in its handshake (keyring
    /// authentication, [`RpcEnv::server_with_keyring`]); `None` for a local message or
    /// a peer that proved the default secret.
    pub fn key_id(&self) -> Option<&str> {
        self.sender.as_deref().and_then(Connection::key_id)
    }

    /// Stops this endpoint after the message in hand (`on_stop` then runs).
    pub fn stop(&self) {
        self.env.stop_endpoint(self.name());
    }
}

thread_local! {
    /// Where this thread encodes remote replies, reused: it holds at most a few times
    /// `LARGE_FRAME` between replies (a large reply takes the buffer along as its
    /// frame; one too large to send is dropped with it).
    static REPLY_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A local reply: the value itself, or the failure message.
pub(crate) type LocalReply = Result<Box<dyn Any + Send>, String>;

pub(crate) enum ReplyTo {
    Local(oneshot::Sender<LocalReply>),
    Remote { conn: Arc<Connection>, id: u64 },
    Done,
}

/// Answers one `ask`. Exactly one of [`Reply::send`] or [`Reply::fail`] should be
/// called; a `Reply` dropped unanswered fails the request with a message saying so.
///
/// A `Reply` knows the type of answer its request expects (the request's
/// [`Ask::Reply`], carried on the wire as a type id): [`Reply::send`] with any other
/// type fails the request with a message naming the type sent, and [`Reply::typed`]
/// turns it into a [`Responder`] whose `send` only takes the right type.
pub struct Reply {
    pub(crate) to: ReplyTo,
    pub(crate) endpoint: Arc<str>,
    pub(crate) expects: u32,
}

/// A [`Reply`] typed by its request: `send` takes exactly `Q::Reply`.
pub struct Responder<R> {
    reply: Reply,
    _r: std::marker::PhantomData<fn(R)>,
}

impl<R: Message> Responder<R> {
    /// Answers with `value`.
    pub fn send(self, value: R) {
        self.reply.send(value)
    }

    /// Answers with a failure; the caller gets `AskError::Remote` with this message.
    pub fn fail(self, message: impl std::fmt::Display) {
        self.reply.fail(message)
    }
}

impl Reply {
    /// Types this reply by the request in hand: `reply.typed(&q).send(answer)` only
    /// compiles when `answer` is `Q::Reply`.
    pub fn typed<Q: Ask>(self, _request: &Q) -> Responder<Q::Reply> {
        Responder {
            reply: self,
            _r: std::marker::PhantomData,
        }
    }

    /// Whether the request expects a reply of type `T`.
    pub fn expects<T: Message>(&self) -> bool {
        frame::type_id_of::<T>() == self.expects
    }

    /// Answers with `value`. Its type must be the request's `Ask::Reply`; otherwise
    /// the request fails with a message naming the type sent (and an error is logged).
    pub fn send<T: Message>(mut self, value: T) {
        let ty = frame::type_id_of::<T>();
        if ty != self.expects {
            let why = format!(
                "endpoint {} answered with a {}, which is not the reply type this request expects",
                self.endpoint,
                std::any::type_name::<T>()
            );
            tracing::error!("{why}");
            self.fail_inner(FailureKind::Handler, why);
            return;
        }
        match std::mem::replace(&mut self.to, ReplyTo::Done) {
            ReplyTo::Local(tx) => {
                let _ = tx.send(Ok(Box::new(value)));
            }
            ReplyTo::Remote { conn, id } => {
                // Encoded into a buffer this thread reuses; a small reply is copied
                // into the connection's segment from it, a large one takes it along.
                let encoded = REPLY_BUF.with(|b| {
                    let mut buf = b.borrow_mut();
                    buf.clear();
                    let r = match frame::encode_response_into(id, ty, &value, &mut buf) {
                        Ok(len) if len - frame::LEN_BYTES > conn.max_frame() => Err(format!(
                            "reply of {len} bytes exceeds rpc.message.max_size ({} bytes)",
                            conn.max_frame()
                        )),
                        Ok(len) if len < crate::connection::LARGE_FRAME => {
                            conn.send_owed_small(&buf);
                            Ok(())
                        }
                        Ok(_) => {
                            let mut large = std::mem::take(&mut *buf);
                            large.shrink_to_fit();
                            conn.send_owed(large);
                            Ok(())
                        }
                        Err(e) => Err(format!("cannot encode reply: {e}")),
                    };
                    // A reply too large to send leaves no large buffer behind.
                    if buf.capacity() > 4 * crate::connection::LARGE_FRAME {
                        *buf = Vec::new();
                    }
                    r
                });
                if let Err(why) = encoded {
                    conn.send_failure(id, FailureKind::Handler, &why);
                }
            }
            ReplyTo::Done => {}
        }
    }

    /// Answers with a failure; the caller gets `AskError::Remote` with this message.
    pub fn fail(mut self, message: impl std::fmt::Display) {
        self.fail_inner(FailureKind::Handler, message.to_string());
    }

    fn fail_inner(&mut self, kind: FailureKind, message: String) {
        match std::mem::replace(&mut self.to, ReplyTo::Done) {
            ReplyTo::Local(tx) => {
                let _ = tx.send(Err(message));
            }
            ReplyTo::Remote { conn, id } => conn.send_failure(id, kind, &message),
            ReplyTo::Done => {}
        }
    }

    /// The address of the process that asked (see [`Context::sender`]).
    pub fn sender(&self) -> Option<&RpcAddress> {
        match &self.to {
            ReplyTo::Remote { conn, .. } => Some(conn.peer()),
            ReplyTo::Local(_) | ReplyTo::Done => None,
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !matches!(self.to, ReplyTo::Done) {
            let msg = format!(
                "endpoint {} dropped the request without replying",
                self.endpoint
            );
            self.fail_inner(FailureKind::Handler, msg);
        }
    }
}
