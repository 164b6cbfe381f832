//! Endpoint inboxes and the loops that drain them. Each endpoint owns one unbounded
//! queue; a sequential endpoint's task takes messages from it in order and calls the
//! handler for each, so handlers never run concurrently. Remote bodies are decoded
//! here, on the endpoint's task, not on the connection's reader.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::connection::Connection;
use crate::endpoint::{
    ConcurrentEndpoint, Context, Endpoint, Event, LocalReply, Protocol, Reply, ReplyTo,
};
use crate::frame::FailureKind;
use crate::reference::decode_with;

/// One queued message or event for an endpoint of protocol `M`.
pub(crate) enum Item<M> {
    /// From this environment: the value itself, never serialized.
    Local {
        msg: M,
        reply: Option<oneshot::Sender<LocalReply>>,
    },
    /// From a connection: the encoded body and, for a request, its id.
    Remote {
        body: Bytes,
        reply_id: Option<u64>,
        conn: Arc<Connection>,
    },
    Event(Event),
    Stop,
}

/// The typed sending side of an endpoint's queue.
pub(crate) struct Inbox<M> {
    pub(crate) tx: mpsc::UnboundedSender<Item<M>>,
}

/// An inbox with its message type erased, as the environment's name table holds it.
pub(crate) trait ErasedInbox: Send + Sync {
    fn post_remote(&self, body: Bytes, reply_id: Option<u64>, conn: Arc<Connection>) -> bool;
    fn post_event(&self, ev: Event);
    fn stop(&self);
    fn protocol_name(&self) -> &'static str;
    fn protocol_id(&self) -> u32;
    fn as_any(&self) -> &dyn Any;
}

impl<M: Protocol> ErasedInbox for Inbox<M> {
    fn post_remote(&self, body: Bytes, reply_id: Option<u64>, conn: Arc<Connection>) -> bool {
        self.tx
            .send(Item::Remote {
                body,
                reply_id,
                conn,
            })
            .is_ok()
    }
    fn post_event(&self, ev: Event) {
        let _ = self.tx.send(Item::Event(ev));
    }
    fn stop(&self) {
        let _ = self.tx.send(Item::Stop);
    }
    fn protocol_name(&self) -> &'static str {
        M::NAME
    }
    fn protocol_id(&self) -> u32 {
        M::ID
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Fails a request that will never be handled because its endpoint stopped.
fn fail_undelivered<M>(item: Item<M>, name: &str) {
    let why = format!("endpoint {name} has stopped");
    match item {
        Item::Local {
            reply: Some(tx), ..
        } => {
            let _ = tx.send(Err(why));
        }
        Item::Remote {
            reply_id: Some(id),
            conn,
            ..
        } => conn.send_failure(id, FailureKind::NotDelivered, &why),
        _ => {}
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs `f`, logging instead of unwinding if the handler panics: one bad message must
/// not take its endpoint down.
fn guarded(name: &str, what: &str, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
        tracing::error!(endpoint = name, "{what} panicked: {}", panic_message(&*p));
    }
}

/// Decodes a remote body, answering the request with a failure if that is impossible.
fn decode_remote<M: Protocol>(
    ctx: &Context<M>,
    body: &Bytes,
    reply_id: Option<u64>,
    conn: &Arc<Connection>,
) -> Option<M> {
    match decode_with::<M>(&ctx.env, Some(conn), body) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(
                endpoint = ctx.name(),
                peer = %conn.peer(),
                "dropping a message from {} that endpoint {} cannot decode as {}: {e}",
                conn.peer(),
                ctx.name(),
                M::NAME
            );
            if let Some(id) = reply_id {
                conn.send_failure(
                    id,
                    FailureKind::Handler,
                    &format!(
                        "endpoint {} cannot decode the message as {}: {e}",
                        ctx.name(),
                        M::NAME
                    ),
                );
            }
            None
        }
    }
}

fn remote_reply(ctx: &Context<impl Protocol>, conn: Arc<Connection>, id: u64) -> Reply {
    Reply {
        sender: Some(conn.peer().clone()),
        to: ReplyTo::Remote { conn, id },
        endpoint: ctx.self_ref.name_arc(),
    }
}

/// The task of a sequential endpoint: `on_start`, every item in order, `on_stop`.
pub(crate) async fn run_sequential<E: Endpoint>(
    mut ep: E,
    mut ctx: Context<E::Msg>,
    mut rx: mpsc::UnboundedReceiver<Item<E::Msg>>,
) {
    let name = ctx.self_ref.name_arc();
    let token = ctx.env.inner.token.clone();
    guarded(&name, "on_start", || ep.on_start(&ctx));
    let mut batch = Vec::with_capacity(128);
    'run: loop {
        let n = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, 128) => n,
            _ = token.cancelled() => 0,
        };
        if n == 0 {
            break;
        }
        let mut items = batch.drain(..);
        while let Some(item) = items.next() {
            match item {
                Item::Local { msg, reply } => {
                    ctx.sender = None;
                    match reply {
                        None => guarded(&name, "receive", || ep.receive(&ctx, msg)),
                        Some(tx) => {
                            let reply = Reply {
                                to: ReplyTo::Local(tx),
                                endpoint: name.clone(),
                                sender: None,
                            };
                            guarded(&name, "receive_and_reply", || {
                                ep.receive_and_reply(&ctx, msg, reply)
                            })
                        }
                    }
                }
                Item::Remote {
                    body,
                    reply_id,
                    conn,
                } => {
                    ctx.sender = Some(conn.peer().clone());
                    let Some(msg) = decode_remote(&ctx, &body, reply_id, &conn) else {
                        continue;
                    };
                    match reply_id {
                        None => guarded(&name, "receive", || ep.receive(&ctx, msg)),
                        Some(id) => {
                            let reply = remote_reply(&ctx, conn, id);
                            guarded(&name, "receive_and_reply", || {
                                ep.receive_and_reply(&ctx, msg, reply)
                            })
                        }
                    }
                }
                Item::Event(ev) => {
                    ctx.sender = None;
                    guarded(&name, "connection event handler", || match &ev {
                        Event::Connected(a) => ep.on_connected(&ctx, a),
                        Event::Disconnected(a) => ep.on_disconnected(&ctx, a),
                        Event::NetworkError(a, e) => ep.on_network_error(&ctx, a, e),
                    })
                }
                Item::Stop => {
                    for rest in items.by_ref() {
                        fail_undelivered(rest, &name);
                    }
                    break 'run;
                }
            }
        }
    }
    ctx.sender = None;
    guarded(&name, "on_stop", || ep.on_stop(&ctx));
    ctx.env.unregister(&name);
    rx.close();
    while let Ok(item) = rx.try_recv() {
        fail_undelivered(item, &name);
    }
}

/// The task of a concurrent endpoint: each message handled in its own task, at most
/// `max_concurrency` at once. Connection events are not delivered to it.
pub(crate) async fn run_concurrent<E: ConcurrentEndpoint>(
    ep: Arc<E>,
    mut ctx: Context<E::Msg>,
    mut rx: mpsc::UnboundedReceiver<Item<E::Msg>>,
) {
    let name = ctx.self_ref.name_arc();
    let token = ctx.env.inner.token.clone();
    let permits = Arc::new(Semaphore::new(ep.max_concurrency().max(1)));
    loop {
        let item = tokio::select! {
            biased;
            item = rx.recv() => item,
            _ = token.cancelled() => None,
        };
        let (msg, reply) = match item {
            None | Some(Item::Stop) => break,
            Some(Item::Event(_)) => continue,
            Some(Item::Local { msg, reply }) => {
                ctx.sender = None;
                let reply = reply.map(|tx| Reply {
                    to: ReplyTo::Local(tx),
                    endpoint: name.clone(),
                    sender: None,
                });
                (msg, reply)
            }
            Some(Item::Remote {
                body,
                reply_id,
                conn,
            }) => {
                ctx.sender = Some(conn.peer().clone());
                let Some(msg) = decode_remote(&ctx, &body, reply_id, &conn) else {
                    continue;
                };
                (msg, reply_id.map(|id| remote_reply(&ctx, conn, id)))
            }
        };
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = token.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let fut = ep.clone().handle(ctx.clone(), msg, reply);
        ctx.env.inner.tracker.spawn(async move {
            fut.await;
            drop(permit);
        });
    }
    ctx.env.unregister(&name);
    rx.close();
    while let Ok(item) = rx.try_recv() {
        fail_undelivered(item, &name);
    }
}
