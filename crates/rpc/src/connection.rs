//! One TCP (or TLS) connection to a peer: a writer task draining the connection's
//! queues, a reader task splitting frames and routing them, and the tables of asks
//! awaiting replies and of open bulk streams.
//!
//! Failure accounting is exact: a request still in the queue when the connection dies
//! fails as *not delivered*; one already written fails as *connection lost*.
//!
//! Memory is bounded on both sides. The control queue has a byte budget
//! (`rpc.connection.max_queued_bytes`): a sender past it gets `Full` (or waits, with
//! `send_async`), and a peer that lets our replies pile up past it is cut off. Bulk
//! stream chunks wait in a small queue of their own, and the writer takes at most one
//! chunk between batches of control frames, so asks and heartbeats never wait behind
//! more than one chunk. The reader's buffers grow only with bytes that arrived; a frame
//! that has started must finish within `rpc.frame_timeout`; bytes held in partial
//! frames count against an env-wide cap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::address::RpcAddress;
use crate::endpoint::Event;
use crate::env::RpcEnv;
use crate::frame::{self, FailureKind, FrameCodec, Header};
use crate::handshake::{self, ClientOptions};
use crate::inbox::Posted;
use crate::log::quote;
use crate::seal::{Opener, Sealer, SessionKeys};
use crate::stream::StreamTable;

/// A frame waiting to be written; `ask` is set for requests so an unsent one can be
/// failed as not delivered.
pub(crate) struct Out {
    pub(crate) bytes: Bytes,
    pub(crate) ask: Option<u64>,
}

/// How a pending ask ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Reply { ty: u32, body: Bytes },
    Failed(FailureKind, String),
    NotSent(String),
    Lost(String),
}

/// Why a frame could not be queued.
pub(crate) enum EnqueueError {
    /// The connection is closed; the frame is given back.
    Closed(Out),
    /// The queue's byte budget is used up; the frame is given back.
    Full(Out),
}

/// Fixed cost charged per queued frame on top of its bytes, for the queue's own node.
const PER_FRAME: usize = 64;
/// Chunks of all streams of a connection that may wait for the writer.
const BULK_QUEUE: usize = 4;

/// Shared state of one connection.
pub(crate) struct Connection {
    pub(crate) id: u64,
    peer: RpcAddress,
    tx: mpsc::UnboundedSender<Out>,
    bulk: mpsc::Sender<Bytes>,
    queued: AtomicUsize,
    budget: usize,
    room: Notify,
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    pub(crate) streams: StreamTable,
    pub(crate) closed: CancellationToken,
    max_frame: usize,
    dropped_one_way: AtomicBool,
    cut_off: AtomicBool,
}

/// The receiving ends of a connection's queues, owned by its writer.
pub(crate) struct Queues {
    control: mpsc::UnboundedReceiver<Out>,
    bulk: mpsc::Receiver<Bytes>,
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        peer: RpcAddress,
        env: &RpcEnv,
        parent: &CancellationToken,
    ) -> (Arc<Self>, Queues) {
        let (tx, control) = mpsc::unbounded_channel();
        let (bulk, bulk_rx) = mpsc::channel(BULK_QUEUE);
        let conf = &env.inner.conf;
        let conn = Connection {
            id,
            peer,
            tx,
            bulk,
            queued: AtomicUsize::new(0),
            budget: conf.max_queued_bytes,
            room: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            streams: StreamTable::default(),
            closed: parent.child_token(),
            max_frame: conf.max_message_size,
            dropped_one_way: AtomicBool::new(false),
            cut_off: AtomicBool::new(false),
        };
        (
            Arc::new(conn),
            Queues {
                control,
                bulk: bulk_rx,
            },
        )
    }

    /// The peer's address: its listening address if it has one, else its socket address.
    pub(crate) fn peer(&self) -> &RpcAddress {
        &self.peer
    }

    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The byte budget of the control queue.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Queues a frame unless the connection is closed or its budget is used up. A frame
    /// larger than the whole budget is accepted when the queue is empty, so that any
    /// message within `rpc.message.max_size` can be sent.
    pub(crate) fn try_enqueue(&self, out: Out) -> Result<(), EnqueueError> {
        if self.is_closed() {
            return Err(EnqueueError::Closed(out));
        }
        let cost = out.bytes.len() + PER_FRAME;
        let mut current = self.queued.load(Ordering::Relaxed);
        loop {
            if current > 0 && current + cost > self.budget {
                return Err(EnqueueError::Full(out));
            }
            match self.queued.compare_exchange_weak(
                current,
                current + cost,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        self.tx.send(out).map_err(|e| {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            EnqueueError::Closed(e.0)
        })
    }

    /// Queues a frame, waiting for room in the budget; fails only when the connection
    /// closes.
    pub(crate) async fn enqueue_wait(&self, mut out: Out) -> Result<(), Out> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_enqueue(out) {
                Ok(()) => return Ok(()),
                Err(EnqueueError::Closed(o)) => return Err(o),
                Err(EnqueueError::Full(o)) => out = o,
            }
            tokio::select! {
                _ = room => {}
                _ = self.closed.cancelled() => return Err(out),
            }
        }
    }

    fn written(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        self.room.notify_waiters();
    }

    /// Queues one bulk chunk frame, waiting for room in the small bulk queue.
    pub(crate) async fn enqueue_bulk(&self, bytes: Bytes) -> Result<(), ()> {
        tokio::select! {
            r = self.bulk.send(bytes) => r.map_err(|_| ()),
            _ = self.closed.cancelled() => Err(()),
        }
    }

    /// Queues a frame this side owes the peer (a reply, a failure, stream control).
    /// If the peer lets such frames pile up past the budget it is not reading: it is
    /// cut off rather than allowed to grow our memory.
    pub(crate) fn send_owed(&self, bytes: Vec<u8>) {
        let len = bytes.len();
        match self.try_enqueue(Out {
            bytes: bytes.into(),
            ask: None,
        }) {
            Ok(()) => {}
            Err(EnqueueError::Closed(_)) => {
                tracing::debug!(peer = %self.peer, "reply dropped: connection closed")
            }
            Err(EnqueueError::Full(_)) => {
                if !self.cut_off.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        peer = %self.peer,
                        "closing connection with {}: it does not read its replies ({} bytes queued; {} more would pass rpc.connection.max_queued_bytes = {})",
                        self.peer,
                        self.queued_bytes(),
                        len + PER_FRAME,
                        self.budget
                    );
                }
                self.closed.cancel();
            }
        }
    }

    /// Registers a pending ask before its frame is queued.
    pub(crate) fn register(&self, id: u64) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        rx
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.pending.lock().remove(&id);
    }

    fn complete(&self, id: u64, outcome: Outcome) {
        let tx = self.pending.lock().remove(&id);
        match tx {
            Some(tx) => {
                let _ = tx.send(outcome);
            }
            None => {
                tracing::debug!(peer = %self.peer, id, "reply for an ask no longer waiting (timed out?)")
            }
        }
    }

    pub(crate) fn send_failure(&self, id: u64, kind: FailureKind, message: &str) {
        match frame::encode_raw(&Header::Failure { id, kind, message }, &[]) {
            Ok(bytes) => self.send_owed(bytes),
            Err(e) => tracing::error!("cannot encode a failure reply: {e}"),
        }
    }

    fn fail_pending(&self, reason: &str) {
        let pending: Vec<_> = self.pending.lock().drain().collect();
        for (_, tx) in pending {
            let _ = tx.send(Outcome::Lost(reason.to_string()));
        }
    }

    /// Fails everything still queued: asks as not delivered, one-way messages logged.
    fn fail_queued(&self, q: &mut Queues, reason: &str) {
        q.control.close();
        q.bulk.close();
        let mut one_way = 0usize;
        while let Ok(out) = q.control.try_recv() {
            self.written(out.bytes.len() + PER_FRAME);
            match out.ask {
                Some(id) => self.complete(id, Outcome::NotSent(reason.to_string())),
                None => one_way += 1,
            }
        }
        while q.bulk.try_recv().is_ok() {}
        if one_way > 0 && !self.dropped_one_way.swap(true, Ordering::Relaxed) {
            tracing::warn!(peer = %self.peer, "{one_way} one-way message(s) to {} not delivered: {reason}", self.peer);
        }
    }
}

/// Opens an outbound connection (TCP, TLS, handshake) and runs it. Messages queued
/// meanwhile wait in the queues; if opening fails they all fail with the reason.
pub(crate) async fn run_outbound(env: RpcEnv, conn: Arc<Connection>, mut q: Queues) {
    let target = conn.peer().clone();
    let span = tracing::debug_span!("conn", peer = %target, dir = "out");
    let inner = env.inner.clone();
    let timeout = inner.conf.connect_timeout;
    let open = async {
        let tcp = TcpStream::connect(target.host_port()).await?;
        tcp.set_nodelay(true)?;
        Ok::<_, std::io::Error>(tcp)
    };
    let opts = ClientOptions {
        secret: inner.conf.secret.as_ref(),
        listen: inner.address.clone(),
        seal: inner.conf.encryption && inner.tls.is_none(),
        version: handshake::PROTOCOL_VERSION,
    };
    let opened = tokio::select! {
        _ = conn.closed.cancelled() => Err("the RPC environment is shutting down".to_string()),
        r = tokio::time::timeout(timeout.duration, async {
            let mut tcp = open.await.map_err(|e| format!("cannot connect to {target}: {e}"))?;
            match &inner.tls {
                None => {
                    let est = handshake::client_with(&mut tcp, opts).await.map_err(|e| format!("handshake with {target} failed: {e}"))?;
                    Ok((Stream::Plain(tcp), est))
                }
                Some(tls) => {
                    let mut s = tls.connect(&target.host, tcp).await.map_err(|e| format!("TLS with {target} failed: {e}"))?;
                    let mut est = handshake::client_with(&mut s, opts).await.map_err(|e| format!("handshake with {target} failed: {e}"))?;
                    est.keys = None; // TLS protects the records already
                    Ok((Stream::TlsClient(Box::new(s)), est))
                }
            }
        }) => match r {
            Ok(r) => r,
            Err(_) => Err(format!("connecting to {target} took over {:?}; this timeout is controlled by {}", timeout.duration, timeout.setting)),
        },
    };
    match opened {
        Err(reason) => {
            span.in_scope(|| tracing::warn!("{reason}"));
            conn.closed.cancel();
            env.forget_connection(&conn);
            conn.fail_queued(&mut q, &reason);
            env.post_event(Event::NetworkError(target, reason));
        }
        Ok((stream, est)) => {
            span.in_scope(|| tracing::debug!(sealed = est.keys.is_some(), "connected"));
            env.post_event(Event::Connected(target));
            run(env, conn, stream, est.keys, q).instrument(span).await
        }
    }
}

/// Accepts an inbound connection: TLS, handshake (with its deadline), then runs it.
/// A peer that fails is logged by address with the reason (rate-limited), and nothing
/// else changes.
pub(crate) async fn run_inbound(
    env: RpcEnv,
    tcp: TcpStream,
    socket: SocketAddr,
    slot: crate::env::HandshakeSlot,
) {
    let inner = env.inner.clone();
    let hs = inner.conf.handshake_timeout;
    let secret = inner.conf.secret.as_ref();
    let seal = inner.conf.encryption && inner.tls.is_none();
    let evicted = slot.evicted.clone();
    let handshake = tokio::time::timeout(hs.duration, async {
        // A source that recently failed to authenticate waits before it may try again.
        let delay = env.auth_delay(socket.ip());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match &inner.tls {
            None => {
                let mut tcp = tcp;
                let est = handshake::server_with(&mut tcp, secret, seal).await?;
                Ok::<_, handshake::HandshakeError>((Stream::Plain(tcp), est))
            }
            Some(tls) => {
                let mut s = tls.accept(tcp).await.map_err(|e| {
                    handshake::HandshakeError::Malformed(format!("TLS failed: {e}"))
                })?;
                let mut est = handshake::server_with(&mut s, secret, seal).await?;
                est.keys = None;
                Ok((Stream::TlsServer(Box::new(s)), est))
            }
        }
    });
    let accepted = tokio::select! {
        r = handshake => r,
        _ = evicted.cancelled() => {
            env.refusals().warn(socket.ip(), || {
                format!(
                    "dropped the pending handshake of {socket}: too many connections are mid-handshake (rpc.max_pending_handshakes) and its address holds the most"
                )
            });
            return;
        }
    };
    drop(slot);
    let (stream, est) = match accepted {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            if matches!(
                e,
                handshake::HandshakeError::WrongSecret | handshake::HandshakeError::PeerHasNoSecret
            ) {
                env.auth_failed(socket.ip());
            }
            env.refusals().warn(socket.ip(), || {
                format!("refused connection from {socket}: {e}")
            });
            return;
        }
        Err(_) => {
            env.refusals().warn(socket.ip(), || {
                format!(
                    "refused connection from {socket}: handshake not finished within {:?} ({})",
                    hs.duration, hs.setting
                )
            });
            return;
        }
    };
    if secret.is_some() {
        env.auth_succeeded(socket.ip());
    }
    // A declared listening address must parse back as one; otherwise the peer is known
    // by its socket address only.
    let listen = est
        .listen
        .filter(|a| a.to_string().parse::<RpcAddress>().as_ref() == Ok(a));
    let peer = listen
        .clone()
        .unwrap_or_else(|| RpcAddress::from_socket(socket));
    let span = tracing::debug_span!("conn", peer = %peer, dir = "in");
    let (conn, q) = env.adopt_inbound(peer.clone(), listen.is_some());
    span.in_scope(|| tracing::debug!(socket = %socket, sealed = est.keys.is_some(), "accepted"));
    env.post_event(Event::Connected(peer));
    run(env, conn, stream, est.keys, q).instrument(span).await
}

pub(crate) enum Stream {
    Plain(TcpStream),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn run(
    env: RpcEnv,
    conn: Arc<Connection>,
    stream: Stream,
    keys: Option<SessionKeys>,
    q: Queues,
) {
    let (sealer, opener) = match keys {
        Some(k) => {
            let (s, o) = k.split();
            (Some(s), Some(o))
        }
        None => (None, None),
    };
    match stream {
        Stream::Plain(tcp) => {
            let (r, w) = tcp.into_split();
            run_halves(env, conn, r, w, sealer, opener, q).await
        }
        Stream::TlsClient(s) => {
            let (r, w) = tokio::io::split(*s);
            run_halves(env, conn, r, w, sealer, opener, q).await
        }
        Stream::TlsServer(s) => {
            let (r, w) = tokio::io::split(*s);
            run_halves(env, conn, r, w, sealer, opener, q).await
        }
    }
}

async fn run_halves<R, W>(
    env: RpcEnv,
    conn: Arc<Connection>,
    r: R,
    w: W,
    sealer: Option<Sealer>,
    opener: Option<Opener>,
    q: Queues,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let writer = tokio::spawn(write_loop(conn.clone(), w, sealer, q).in_current_span());
    let reason = read_loop(&env, &conn, r, opener).await;
    conn.closed.cancel();
    // The writer fails what it never sent as "not delivered" before we fail the rest
    // as "connection lost".
    let _ = writer.await;
    env.forget_connection(&conn);
    conn.fail_pending(&reason);
    conn.streams.fail_all(conn.peer(), &reason);
    tracing::debug!("connection closed: {reason}");
    env.post_event(Event::Disconnected(conn.peer().clone()));
}

/// Bytes gathered before a write.
const WRITE_BUF: usize = 64 * 1024;
/// Bytes asked of the socket per read; the read buffer grows by at most this much
/// beyond what has arrived.
const READ_CHUNK: usize = 16 * 1024;
/// Initial read buffer per connection; kept small because an idle master holds one
/// per worker (10,000 × 64 KiB would be 640 MiB once the pages are touched).
const READ_BUF: usize = 4 * 1024;

/// Writes plaintext or sealed records.
struct Writer<W> {
    w: W,
    sealer: Option<Sealer>,
    sealed: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    async fn write(&mut self, conn: &Connection, plain: &[u8]) -> std::io::Result<()> {
        let bytes: &[u8] = match &mut self.sealer {
            None => plain,
            Some(s) => {
                self.sealed.clear();
                s.seal(plain, &mut self.sealed)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                &self.sealed
            }
        };
        tokio::select! {
            r = self.w.write_all(bytes) => r,
            _ = conn.closed.cancelled() => Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection closing")),
        }
    }

    /// Writes a large frame piece by piece so the sealed copy stays small.
    async fn write_large(&mut self, conn: &Connection, plain: &[u8]) -> std::io::Result<()> {
        for piece in plain.chunks(4 * WRITE_BUF) {
            self.write(conn, piece).await?;
        }
        Ok(())
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    conn: Arc<Connection>,
    w: W,
    sealer: Option<Sealer>,
    mut q: Queues,
) {
    let mut batch = Vec::with_capacity(256);
    // Grows on first use and is kept: an idle connection holds no write buffer.
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Writer {
        w,
        sealer,
        sealed: Vec::new(),
    };
    let result: std::io::Result<()> = async {
        loop {
            // Control frames first; one bulk chunk only when none is waiting.
            let mut chunk = None;
            let n = tokio::select! {
                biased;
                n = q.control.recv_many(&mut batch, 256) => n,
                Some(c) = q.bulk.recv() => { chunk = Some(c); 0 }
                _ = conn.closed.cancelled() => return Ok(()),
            };
            if n == 0 && chunk.is_none() {
                return Ok(());
            }
            let mut drained = 0usize;
            for o in batch.drain(..) {
                drained += o.bytes.len() + PER_FRAME;
                if o.bytes.len() >= WRITE_BUF {
                    if !buf.is_empty() {
                        out.write(&conn, &buf).await?;
                        buf.clear();
                    }
                    out.write_large(&conn, &o.bytes).await?;
                    continue;
                }
                buf.extend_from_slice(&o.bytes);
                if buf.len() >= WRITE_BUF {
                    out.write(&conn, &buf).await?;
                    buf.clear();
                }
            }
            if let Some(c) = chunk {
                if !buf.is_empty() {
                    out.write(&conn, &buf).await?;
                    buf.clear();
                }
                out.write_large(&conn, &c).await?;
            }
            if !buf.is_empty() {
                out.write(&conn, &buf).await?;
                buf.clear();
            }
            conn.written(drained);
            tokio::select! {
                r = out.w.flush() => r?,
                _ = conn.closed.cancelled() => return Ok(()),
            }
        }
    }
    .await;
    let reason = match &result {
        Ok(()) => "connection closed before the message was sent".to_string(),
        Err(e) => {
            tracing::debug!("write failed: {e}");
            format!("writing to {} failed: {e}", conn.peer())
        }
    };
    conn.closed.cancel();
    conn.fail_queued(&mut q, &reason);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), out.w.shutdown()).await;
}

/// Bytes this connection holds in partially received frames, counted against the
/// env-wide `rpc.max_partial_frame_bytes`; released when dropped.
struct Held<'a> {
    env: &'a RpcEnv,
    bytes: usize,
}

impl Held<'_> {
    /// Sets the count to `now`; false if the env-wide cap would be passed.
    fn set(&mut self, now: usize) -> bool {
        let total = &self.env.inner.partial_bytes;
        if now > self.bytes {
            let add = now - self.bytes;
            let before = total.fetch_add(add, Ordering::AcqRel);
            self.bytes = now;
            before + add <= self.env.inner.conf.max_partial_bytes
        } else {
            total.fetch_sub(self.bytes - now, Ordering::AcqRel);
            self.bytes = now;
            true
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.env
            .inner
            .partial_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Reads frames until the connection ends; returns why it ended.
async fn read_loop<R: AsyncRead + Unpin>(
    env: &RpcEnv,
    conn: &Arc<Connection>,
    mut r: R,
    mut opener: Option<Opener>,
) -> String {
    let mut codec = FrameCodec::new(conn.max_frame);
    let mut raw = BytesMut::with_capacity(READ_BUF);
    let mut plain = BytesMut::new();
    let mut held = Held { env, bytes: 0 };
    let ft = env.inner.conf.frame_timeout;
    let mut deadline: Option<tokio::time::Instant> = None;
    let close = |reason: String| {
        tracing::warn!(peer = %conn.peer(), "closing connection with {}: {reason}", conn.peer());
        reason
    };
    loop {
        if raw.capacity() - raw.len() < 512 {
            // Grow with what arrives: double what is held, within 4..16 KiB per step.
            raw.reserve(raw.len().clamp(READ_BUF, READ_CHUNK));
        }
        let read = tokio::select! {
            biased;
            _ = conn.closed.cancelled() => return "connection closed by this side".into(),
            n = r.read_buf(&mut raw) => n,
            _ = sleep_until(deadline) => {
                return close(format!(
                    "a frame started arriving but did not finish within {:?} ({}); {} bytes of it received",
                    ft.duration, ft.setting, held.bytes
                ));
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => return close(format!("i/o error: {e}")),
        };
        if n == 0 {
            return if held.bytes == 0 {
                format!("{} closed the connection", conn.peer())
            } else {
                close(format!(
                    "connection closed in the middle of a frame ({} bytes of it received)",
                    held.bytes
                ))
            };
        }
        let frames = match &mut opener {
            None => &mut raw,
            Some(o) => {
                if let Err(e) = o.open(&mut raw, &mut plain) {
                    return close(e.to_string());
                }
                &mut plain
            }
        };
        let mut progressed = false;
        loop {
            match codec.decode(frames) {
                Ok(Some(frame)) => {
                    progressed = true;
                    if let Err(reason) = route(env, conn, &frame) {
                        return close(reason);
                    }
                }
                Ok(None) => break,
                Err(e) => return close(e.to_string()),
            }
        }
        let partial = frames.len() + if opener.is_some() { raw.len() } else { 0 };
        if !held.set(partial) {
            return close(format!(
                "partially received frames across all connections exceed rpc.max_partial_frame_bytes ({} bytes)",
                env.inner.conf.max_partial_bytes
            ));
        }
        deadline = match (partial, deadline) {
            (0, _) => None,
            (_, Some(d)) if !progressed => Some(d),
            _ => Some(tokio::time::Instant::now() + ft.duration),
        };
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Routes one frame. An error means the peer broke the protocol and the connection
/// must close; a message for an unknown endpoint is refused but keeps the connection.
fn route(env: &RpcEnv, conn: &Arc<Connection>, frame: &Bytes) -> Result<(), String> {
    let (header, body) = frame::split_frame(frame).map_err(|e| e.to_string())?;
    let limit = env.dropped_log();
    match header {
        Header::OneWay { to, protocol } => match env.inbox(to) {
            Some(inbox) if inbox.protocol_id() == protocol => {
                match inbox.post_one_way(body, conn.clone()) {
                    Posted::Queued => {}
                    Posted::Stopped => limit.warn((conn.peer(), "stopped"), || {
                        format!("message from {} for stopped endpoint {} dropped", conn.peer(), quote(to))
                    }),
                    Posted::Full => limit.warn((conn.peer(), "full"), || {
                        format!(
                            "message from {} for endpoint {} dropped: its inbox is full (rpc.endpoint.max_queued_bytes)",
                            conn.peer(),
                            quote(to)
                        )
                    }),
                }
            }
            Some(inbox) => limit.warn((conn.peer(), "protocol"), || {
                format!(
                    "message from {} for endpoint {} is of an unknown protocol (id {protocol:#010x}; it speaks {}); dropped",
                    conn.peer(),
                    quote(to),
                    inbox.protocol_name()
                )
            }),
            None => limit.warn((conn.peer(), "unknown"), || {
                format!("message from {} for unknown endpoint {}; dropped", conn.peer(), quote(to))
            }),
        },
        Header::Request {
            id,
            to,
            protocol,
            reply,
        } => match env.inbox(to) {
            Some(inbox) if inbox.protocol_id() == protocol => {
                match inbox.post_request(body, id, reply, conn.clone()) {
                    Posted::Queued => {}
                    Posted::Stopped => conn.send_failure(
                        id,
                        FailureKind::NotDelivered,
                        &format!("endpoint {} has stopped", quote(to)),
                    ),
                    Posted::Full => conn.send_failure(
                        id,
                        FailureKind::Busy,
                        &format!(
                            "endpoint {} at {} is busy: its inbox is full (rpc.endpoint.max_queued_bytes); retry later",
                            quote(to),
                            env.describe()
                        ),
                    ),
                }
            }
            Some(inbox) => {
                let why = format!(
                    "endpoint {} speaks {}; this request is of another protocol (id {protocol:#010x})",
                    quote(to),
                    inbox.protocol_name()
                );
                limit.warn((conn.peer(), "request protocol"), || {
                    format!("request from {} refused: {why}", conn.peer())
                });
                conn.send_failure(id, FailureKind::Handler, &why);
            }
            None => {
                let why = format!("no endpoint named {} at {}", quote(to), env.describe());
                limit.warn((conn.peer(), "request unknown"), || {
                    format!("request from {} refused: {why}", conn.peer())
                });
                conn.send_failure(id, FailureKind::NotDelivered, &why);
            }
        },
        Header::Response { id, ty } => conn.complete(id, Outcome::Reply { ty, body }),
        Header::Failure { id, kind, message } => {
            conn.complete(id, Outcome::Failed(kind, message.to_string()))
        }
        Header::StreamOpen {
            sid,
            to,
            pull,
            window,
        } => crate::stream::on_open(env, conn, sid, to, pull, window, body)?,
        Header::StreamData { sid, opener } => conn.streams.on_data(sid, !opener, body)?,
        Header::StreamCredit {
            sid,
            opener,
            chunks,
        } => conn.streams.on_credit(sid, !opener, chunks),
        Header::StreamEnd { sid, opener, error } => {
            conn.streams.on_end(sid, !opener, error, conn.peer())
        }
    }
    Ok(())
}
