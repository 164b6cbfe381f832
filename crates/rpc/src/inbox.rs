//! Endpoint inboxes and the loops that drain them. Each endpoint owns one queue with
//! a byte budget (`rpc.endpoint.max_queued_bytes`): a message for a full inbox is
//! refused back to its sender (an ask fails `Busy`, a send is dropped and counted), so
//! one slow endpoint never stalls the connection that also carries other endpoints'
//! messages. A sequential endpoint's task takes messages in order and calls the
//! handler for each, so handlers never run concurrently. Remote bodies are decoded
//! here, on the endpoint's task, not on the connection's reader.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::connection::Connection;
use crate::endpoint::{
    ConcurrentEndpoint, Context, Endpoint, Event, InlineEndpoint, LocalReply, Protocol, Reply,
    ReplyTo,
};
use crate::frame::FailureKind;
use crate::reference::decode_with;

/// A request's way back: where to answer, and the type id of the reply it expects.
pub(crate) struct LocalAsk {
    pub(crate) tx: oneshot::Sender<LocalReply>,
    pub(crate) expects: u32,
}

/// One queued message or event for an endpoint of protocol `M`.
pub(crate) enum Item<M> {
    /// From this environment: the value itself, never serialized.
    Local {
        msg: M,
        reply: Option<LocalAsk>,
    },
    /// From a connection: the encoded body and, for a request, its id and the type id
    /// of the reply it expects.
    Remote {
        body: Bytes,
        reply: Option<(u64, u32)>,
        conn: Arc<Connection>,
    },
    Event(Event),
    Stop,
}

/// Bytes charged per queued item beyond a remote body, for the item itself.
const PER_ITEM: usize = 128;

impl<M> Item<M> {
    fn cost(&self) -> usize {
        match self {
            Item::Local { .. } => PER_ITEM + std::mem::size_of::<M>(),
            Item::Remote { body, .. } => PER_ITEM + body.len(),
            Item::Event(_) | Item::Stop => 0,
        }
    }
}

/// What became of a message offered to an inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Posted {
    Queued,
    Stopped,
    Full,
}

/// Byte accounting shared by an inbox and the loop that drains it.
#[derive(Default)]
pub(crate) struct Budget {
    queued: AtomicUsize,
    dropped: AtomicU64,
}

/// The typed sending side of an endpoint's queue.
pub(crate) struct Inbox<M> {
    pub(crate) tx: mpsc::UnboundedSender<Item<M>>,
    pub(crate) budget: Arc<Budget>,
    pub(crate) cap: usize,
}

impl<M> Clone for Inbox<M> {
    fn clone(&self) -> Self {
        Inbox {
            tx: self.tx.clone(),
            budget: self.budget.clone(),
            cap: self.cap,
        }
    }
}

impl<M> Inbox<M> {
    /// Queues `item` if the budget allows (events and stop always pass).
    pub(crate) fn post(&self, item: Item<M>) -> Result<(), (Posted, Item<M>)> {
        let cost = item.cost();
        if cost > 0 {
            let before = self.budget.queued.fetch_add(cost, Ordering::AcqRel);
            if before > 0 && before + cost > self.cap {
                self.budget.queued.fetch_sub(cost, Ordering::AcqRel);
                self.budget.dropped.fetch_add(1, Ordering::Relaxed);
                return Err((Posted::Full, item));
            }
        }
        self.tx.send(item).map_err(|e| {
            self.budget.queued.fetch_sub(cost, Ordering::AcqRel);
            (Posted::Stopped, e.0)
        })
    }

    fn posted(&self, item: Item<M>) -> Posted {
        match self.post(item) {
            Ok(()) => Posted::Queued,
            Err((p, _)) => p,
        }
    }
}

impl Budget {
    fn taken(&self, cost: usize) {
        if cost > 0 {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
        }
    }
}

/// An inbox with its message type erased, as the environment's name table holds it.
pub(crate) trait ErasedInbox: Send + Sync {
    fn post_one_way(&self, body: Bytes, conn: Arc<Connection>) -> Posted;
    fn post_request(&self, body: Bytes, id: u64, expects: u32, conn: Arc<Connection>) -> Posted;
    /// [`post_request`](Self::post_request) from a connection's reader, which keeps
    /// `slot` for this inbox: an inline endpoint keeps the handlers' [`Context`] for
    /// that connection there instead of making one per message.
    fn post_request_from(
        &self,
        _slot: &mut Option<Box<dyn Any + Send>>,
        body: Bytes,
        id: u64,
        expects: u32,
        conn: &Arc<Connection>,
    ) -> Posted {
        self.post_request(body, id, expects, conn.clone())
    }
    fn post_event(&self, ev: Event);
    fn stop(&self);
    fn protocol_name(&self) -> &'static str;
    fn protocol_id(&self) -> u32;
    fn as_any(&self) -> &dyn Any;
    /// Messages refused because the inbox was full, since it started.
    fn dropped(&self) -> u64;
}

impl<M: Protocol> ErasedInbox for Inbox<M> {
    fn post_one_way(&self, body: Bytes, conn: Arc<Connection>) -> Posted {
        self.posted(Item::Remote {
            body,
            reply: None,
            conn,
        })
    }
    fn post_request(&self, body: Bytes, id: u64, expects: u32, conn: Arc<Connection>) -> Posted {
        self.posted(Item::Remote {
            body,
            reply: Some((id, expects)),
            conn,
        })
    }
    fn dropped(&self) -> u64 {
        self.budget.dropped.load(Ordering::Relaxed)
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
            reply: Some(ask), ..
        } => {
            let _ = ask.tx.send(Err(why));
        }
        Item::Remote {
            reply: Some((id, _)),
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
            ctx.env
                .dropped_log()
                .warn((conn.peer(), "undecodable"), || {
                    format!(
                        "dropping a message from {} that endpoint {} cannot decode as {}: {e}",
                        conn.peer(),
                        ctx.name(),
                        M::NAME
                    )
                });
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

fn remote_reply(
    ctx: &Context<impl Protocol>,
    conn: Arc<Connection>,
    id: u64,
    expects: u32,
) -> Reply {
    Reply {
        to: ReplyTo::Remote { conn, id },
        endpoint: ctx.self_ref.name_arc(),
        expects,
    }
}

fn local_reply(name: &Arc<str>, ask: LocalAsk) -> Reply {
    Reply {
        to: ReplyTo::Local(ask.tx),
        endpoint: name.clone(),
        expects: ask.expects,
    }
}

/// The task of a sequential endpoint: `on_start`, every item in order, `on_stop`.
pub(crate) async fn run_sequential<E: Endpoint>(
    mut ep: E,
    mut ctx: Context<E::Msg>,
    mut rx: mpsc::UnboundedReceiver<Item<E::Msg>>,
    budget: Arc<Budget>,
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
            budget.taken(item.cost());
            match item {
                Item::Local { msg, reply } => {
                    ctx.sender = None;
                    match reply {
                        None => guarded(&name, "receive", || ep.receive(&ctx, msg)),
                        Some(ask) => {
                            let reply = local_reply(&name, ask);
                            guarded(&name, "receive_and_reply", || {
                                ep.receive_and_reply(&ctx, msg, reply)
                            })
                        }
                    }
                }
                Item::Remote { body, reply, conn } => {
                    ctx.sender = Some(conn.clone());
                    let Some(msg) = decode_remote(&ctx, &body, reply.map(|r| r.0), &conn) else {
                        continue;
                    };
                    match reply {
                        None => guarded(&name, "receive", || ep.receive(&ctx, msg)),
                        Some((id, expects)) => {
                            let reply = remote_reply(&ctx, conn, id, expects);
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
    budget: Arc<Budget>,
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
        if let Some(item) = &item {
            budget.taken(item.cost());
        }
        let (msg, reply) = match item {
            None | Some(Item::Stop) => break,
            Some(Item::Event(_)) => continue,
            Some(Item::Local { msg, reply }) => {
                ctx.sender = None;
                (msg, reply.map(|ask| local_reply(&name, ask)))
            }
            Some(Item::Remote { body, reply, conn }) => {
                ctx.sender = Some(conn.clone());
                let Some(msg) = decode_remote(&ctx, &body, reply.map(|r| r.0), &conn) else {
                    continue;
                };
                (
                    msg,
                    reply.map(|(id, expects)| remote_reply(&ctx, conn, id, expects)),
                )
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

/// The name-table entry of an [`InlineEndpoint`]: remote messages are decoded and
/// handled right here, on the reader task of the connection that carried them; local
/// ones, events and stop go to its inbox, drained by [`run_inline`].
pub(crate) struct InlineInbox<E: InlineEndpoint> {
    pub(crate) inbox: Inbox<E::Msg>,
    pub(crate) ep: Arc<E>,
    pub(crate) ctx: Context<E::Msg>,
    pub(crate) stopped: std::sync::atomic::AtomicBool,
}

impl<E: InlineEndpoint> InlineInbox<E> {
    fn handle_remote(
        &self,
        body: Bytes,
        reply: Option<(u64, u32)>,
        conn: Arc<Connection>,
    ) -> Posted {
        if self.stopped.load(Ordering::Acquire) {
            return Posted::Stopped;
        }
        inline_remote(&*self.ep, &self.ctx, body, reply, conn);
        Posted::Queued
    }
}

/// Decodes and handles one remote message of an inline endpoint, containing a panic.
fn inline_remote<E: InlineEndpoint>(
    ep: &E,
    base: &Context<E::Msg>,
    body: Bytes,
    reply: Option<(u64, u32)>,
    conn: Arc<Connection>,
) {
    let ctx = Context {
        env: base.env.clone(),
        self_ref: base.self_ref.clone(),
        sender: Some(conn),
    };
    if let Some(conn) = &ctx.sender {
        inline_handle(ep, &ctx, body, reply, conn)
    }
}

/// Handles one remote message of an inline endpoint with `ctx`, whose sender is `conn`.
fn inline_handle<E: InlineEndpoint>(
    ep: &E,
    ctx: &Context<E::Msg>,
    body: Bytes,
    reply: Option<(u64, u32)>,
    conn: &Arc<Connection>,
) {
    let Some(msg) = decode_remote(ctx, &body, reply.map(|r| r.0), conn) else {
        return;
    };
    match reply {
        None => guarded(ctx.name(), "receive", || ep.receive(ctx, msg)),
        Some((id, expects)) => {
            let reply = remote_reply(ctx, conn.clone(), id, expects);
            guarded(ctx.name(), "receive_and_reply", || {
                ep.receive_and_reply(ctx, msg, reply)
            })
        }
    }
}

impl<E: InlineEndpoint> ErasedInbox for InlineInbox<E> {
    fn post_one_way(&self, body: Bytes, conn: Arc<Connection>) -> Posted {
        self.handle_remote(body, None, conn)
    }
    fn post_request(&self, body: Bytes, id: u64, expects: u32, conn: Arc<Connection>) -> Posted {
        self.handle_remote(body, Some((id, expects)), conn)
    }
    fn post_request_from(
        &self,
        slot: &mut Option<Box<dyn Any + Send>>,
        body: Bytes,
        id: u64,
        expects: u32,
        conn: &Arc<Connection>,
    ) -> Posted {
        if self.stopped.load(Ordering::Acquire) {
            return Posted::Stopped;
        }
        let kept = |slot: &Option<Box<dyn Any + Send>>| {
            slot.as_ref()
                .and_then(|b| b.downcast_ref::<Context<E::Msg>>())
                .is_some_and(|c| c.sender.as_ref().is_some_and(|s| Arc::ptr_eq(s, conn)))
        };
        if !kept(slot) {
            *slot = Some(Box::new(Context {
                env: self.ctx.env.clone(),
                self_ref: self.ctx.self_ref.clone(),
                sender: Some(conn.clone()),
            }));
        }
        match slot
            .as_ref()
            .and_then(|b| b.downcast_ref::<Context<E::Msg>>())
        {
            Some(ctx) => inline_handle(&*self.ep, ctx, body, Some((id, expects)), conn),
            None => inline_remote(
                &*self.ep,
                &self.ctx,
                body,
                Some((id, expects)),
                conn.clone(),
            ),
        }
        Posted::Queued
    }
    fn dropped(&self) -> u64 {
        self.inbox.dropped()
    }
    fn post_event(&self, _ev: Event) {}
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.inbox.stop();
    }
    fn protocol_name(&self) -> &'static str {
        E::Msg::NAME
    }
    fn protocol_id(&self) -> u32 {
        <E::Msg as Protocol>::ID
    }
    fn as_any(&self) -> &dyn Any {
        // Local refs post to the inbox itself.
        &self.inbox
    }
}

/// The task of an inline endpoint: handles the messages from this environment, in
/// order, until the endpoint or the environment stops.
pub(crate) async fn run_inline<E: InlineEndpoint>(
    ep: Arc<E>,
    ctx: Context<E::Msg>,
    mut rx: mpsc::UnboundedReceiver<Item<E::Msg>>,
    budget: Arc<Budget>,
) {
    let name = ctx.self_ref.name_arc();
    let token = ctx.env.inner.token.clone();
    loop {
        let item = tokio::select! {
            biased;
            item = rx.recv() => item,
            _ = token.cancelled() => None,
        };
        if let Some(item) = &item {
            budget.taken(item.cost());
        }
        match item {
            None | Some(Item::Stop) => break,
            Some(Item::Event(_)) => {}
            Some(Item::Local { msg, reply: None }) => {
                guarded(&name, "receive", || ep.receive(&ctx, msg))
            }
            Some(Item::Local {
                msg,
                reply: Some(ask),
            }) => {
                let reply = local_reply(&name, ask);
                guarded(&name, "receive_and_reply", || {
                    ep.receive_and_reply(&ctx, msg, reply)
                })
            }
            // Only a message that arrived while the endpoint was being set up.
            Some(Item::Remote { body, reply, conn }) => {
                inline_remote(&*ep, &ctx, body, reply, conn)
            }
        }
    }
    ctx.env.unregister(&name);
    rx.close();
    while let Ok(item) = rx.try_recv() {
        fail_undelivered(item, &name);
    }
}
