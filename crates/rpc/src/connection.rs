//! One TCP (or TLS) connection to a peer: a writer task draining the connection's
//! queues, a reader task splitting frames and routing them, and the tables of asks
//! awaiting replies and of open bulk streams.
//!
//! Failure accounting is exact: a request still in the queue when the connection dies
//! fails as *not delivered*; one already written fails as *connection lost*.
//!
//! Memory is bounded on both sides. The control queue has a byte budget
//! (`rpc.connection.max_queued_bytes`) charged with the memory the queue really holds:
//! small frames are packed into shared segments (charged their whole capacity), large
//! ones are queued as they are (charged their size). Written segments are kept for
//! reuse while the connection is busy (counted against the budget too, dropped once
//! the queue has been empty for a second or when room is needed), so a sender that
//! moves between threads reuses memory instead of filling another allocator arena. A
//! sender past the budget gets `Full` (or waits, with `send_async`), and a peer that lets our replies pile up past
//! it is cut off. Bulk
//! stream chunks wait in a small queue of their own, and the writer takes at most one
//! chunk between batches of control frames, so asks and heartbeats never wait behind
//! more than one chunk. The reader's buffers grow only with bytes that arrived; a frame
//! that has started must finish within `rpc.frame_timeout`; bytes held in partial
//! frames count against an env-wide cap.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
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

/// How a peer broke the protocol; the connection that carried it is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// A frame's header could not be read.
    #[error(transparent)]
    Header(#[from] frame::HeaderError),
    /// The consumer of a stream sent data on it.
    #[error("stream {sid}: data sent by its consumer")]
    DataFromConsumer { sid: u64 },
    /// The producer of a stream sent more chunks than it had credit for.
    #[error("stream {sid}: the peer sent more chunks than it had credit for")]
    OverCredit { sid: u64 },
    /// A stream id was opened twice.
    #[error("stream {sid} opened twice")]
    OpenedTwice { sid: u64 },
}

/// Why an outbound connection could not be opened.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("the RPC environment is shutting down")]
    ShuttingDown,
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: RpcAddress,
        source: std::io::Error,
    },
    #[error("TLS with {target} failed: {source}")]
    Tls {
        target: RpcAddress,
        source: std::io::Error,
    },
    #[error("handshake with {target} failed: {source}")]
    Handshake {
        target: RpcAddress,
        source: handshake::HandshakeError,
    },
    #[error("connecting to {target} took over {after:?}; this timeout is controlled by {setting}")]
    Timeout {
        target: RpcAddress,
        after: std::time::Duration,
        setting: &'static str,
    },
}

/// Why a frame could not be queued.
pub(crate) enum EnqueueError {
    /// The connection is closed; the frame is given back.
    Closed(Out),
    /// The queue's byte budget is used up; the frame is given back.
    Full(Out),
}

/// One bulk frame: its length prefix and header, and the chunk that follows them,
/// written from the chunk's own buffer without being copied into a frame.
pub(crate) struct BulkFrame {
    pub(crate) head: Vec<u8>,
    pub(crate) body: Bytes,
}

/// Fixed cost charged per frame queued on its own, for the queue's own node.
const PER_FRAME: usize = 64;
/// Chunks of all streams of a connection that may wait for the writer.
const BULK_QUEUE: usize = 4;
/// Capacity of a segment of packed small frames.
const SEGMENT: usize = 64 * 1024;
/// Capacity of the first segment of an idle queue: one message to an otherwise idle
/// peer (a heartbeat, a single ask) holds no more than this.
const FIRST_SEGMENT: usize = 4 * 1024;
/// Frames of at least this many bytes are queued on their own, not copied into a
/// segment.
const LARGE_FRAME: usize = 16 * 1024;
/// Spare segments are dropped once the control queue has been empty this long. Not at
/// once: a sender that pauses (to ask, say) and goes on would allocate them anew, and
/// the allocator might then take new memory for them in another thread's arena.
const SPARE_IDLE: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes the writer takes from the control queue per batch: it releases budget (and
/// returns segments) in steps of this size.
const TAKE_BYTES: usize = 256 * 1024;
/// Items the writer takes per batch (one `writev` holds at most this many).
const TAKE_ITEMS: usize = 64;

/// An entry of the control queue.
enum Queued {
    /// Small frames packed back to back. `asks` are the request ids among them.
    Packed {
        buf: BytesMut,
        asks: Vec<u64>,
        frames: usize,
        cost: usize,
    },
    /// One large frame.
    Frame {
        bytes: Bytes,
        ask: Option<u64>,
        cost: usize,
    },
}

impl Queued {
    fn bytes(&self) -> &[u8] {
        match self {
            Queued::Packed { buf, .. } => buf,
            Queued::Frame { bytes, .. } => bytes,
        }
    }

    fn cost(&self) -> usize {
        match self {
            Queued::Packed { cost, .. } | Queued::Frame { cost, .. } => *cost,
        }
    }
}

/// The control queue: frames in order, spare segments, and whether the writer has
/// stopped taking (then nothing more is accepted).
#[derive(Default)]
struct ControlQueue {
    items: VecDeque<Queued>,
    spare: Vec<BytesMut>,
    /// Capacity of the spare segments: counted with the queued bytes against the
    /// budget, so the queue never holds more than its budget, spare memory included.
    spare_bytes: usize,
    closed: bool,
}

/// Shared state of one connection.
pub(crate) struct Connection {
    pub(crate) id: u64,
    peer: RpcAddress,
    control: Mutex<ControlQueue>,
    /// Wakes the writer when the control queue stops being empty.
    work: Notify,
    bulk: mpsc::Sender<BulkFrame>,
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

/// Unregisters a pending ask when dropped unless forgotten: a caller that gives up
/// waiting for room in the queue (its deadline passed) leaves nothing behind.
pub(crate) struct Unregister<'a>(pub(crate) &'a Connection, pub(crate) u64);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.unregister(self.1);
    }
}

/// The receiving end of a connection's bulk queue, owned by its writer.
pub(crate) struct Queues {
    bulk: mpsc::Receiver<BulkFrame>,
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        peer: RpcAddress,
        env: &RpcEnv,
        parent: &CancellationToken,
    ) -> (Arc<Self>, Queues) {
        let (bulk, bulk_rx) = mpsc::channel(BULK_QUEUE);
        let conf = &env.inner.conf;
        let conn = Connection {
            id,
            peer,
            control: Mutex::new(ControlQueue::default()),
            work: Notify::new(),
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
        (Arc::new(conn), Queues { bulk: bulk_rx })
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
    ///
    /// A small frame is copied into the segment at the queue's tail if it has room
    /// (that memory is already charged); otherwise a new segment is charged its whole
    /// capacity. A large frame is charged its size plus [`PER_FRAME`].
    pub(crate) fn try_enqueue(&self, out: Out) -> Result<(), EnqueueError> {
        let len = out.bytes.len();
        let mut q = self.control.lock();
        if q.closed {
            return Err(EnqueueError::Closed(out));
        }
        let was_empty = q.items.is_empty();
        if len < LARGE_FRAME {
            if let Some(Queued::Packed {
                buf, asks, frames, ..
            }) = q.items.back_mut()
            {
                if buf.capacity() - buf.len() >= len {
                    buf.extend_from_slice(&out.bytes);
                    asks.extend(out.ask);
                    *frames += 1;
                    return Ok(());
                }
            }
            let cap = if was_empty {
                FIRST_SEGMENT.max(len)
            } else {
                SEGMENT
            };
            let mut buf = match q.spare.pop() {
                // A spare segment is memory already counted: it just moves into the queue.
                Some(b) if cap == SEGMENT => {
                    q.spare_bytes -= SEGMENT;
                    self.queued.fetch_add(SEGMENT, Ordering::AcqRel);
                    b
                }
                other => {
                    q.spare.extend(other);
                    if !self.charge(&mut q, cap) {
                        return Err(EnqueueError::Full(out));
                    }
                    BytesMut::with_capacity(cap)
                }
            };
            buf.extend_from_slice(&out.bytes);
            q.items.push_back(Queued::Packed {
                buf,
                asks: out.ask.into_iter().collect(),
                frames: 1,
                cost: cap,
            });
        } else {
            let cost = len + PER_FRAME;
            if !self.charge(&mut q, cost) {
                return Err(EnqueueError::Full(out));
            }
            q.items.push_back(Queued::Frame {
                bytes: out.bytes,
                ask: out.ask,
                cost,
            });
        }
        drop(q);
        if was_empty {
            self.work.notify_one();
        }
        Ok(())
    }

    /// Charges `cost` bytes of new memory to the budget if it allows, dropping spare
    /// segments to make room first (spare memory never refuses a frame). Called with the
    /// control queue locked, so chargers do not race each other; the writer only ever
    /// releases.
    fn charge(&self, q: &mut ControlQueue, cost: usize) -> bool {
        let current = self.queued.load(Ordering::Acquire);
        while current + q.spare_bytes + cost > self.budget {
            match q.spare.pop() {
                Some(b) => q.spare_bytes -= b.capacity(),
                None => break,
            }
        }
        if current + q.spare_bytes > 0 && current + q.spare_bytes + cost > self.budget {
            return false;
        }
        self.queued.fetch_add(cost, Ordering::AcqRel);
        true
    }

    /// Moves up to a batch of queued frames into `into` (for the writer).
    fn take(&self, into: &mut Vec<Queued>) {
        let mut q = self.control.lock();
        let mut bytes = 0;
        while bytes < TAKE_BYTES && into.len() < TAKE_ITEMS {
            match q.items.pop_front() {
                Some(item) => {
                    bytes += item.bytes().len();
                    into.push(item);
                }
                None => break,
            }
        }
    }

    /// Whether spare segments are held.
    fn has_spare(&self) -> bool {
        self.control.lock().spare_bytes > 0
    }

    /// Drops the spare segments (the connection has been idle): an idle connection
    /// holds nothing.
    fn drop_spare(&self) {
        let mut q = self.control.lock();
        q.spare.clear();
        q.spare_bytes = 0;
    }

    /// Releases the budget of a written batch and keeps its segments for reuse.
    fn release(&self, batch: &mut Vec<Queued>) {
        let mut cost = 0;
        {
            let mut q = self.control.lock();
            for item in batch.drain(..) {
                cost += item.cost();
                if let Queued::Packed { mut buf, .. } = item {
                    if buf.capacity() == SEGMENT && !q.closed {
                        buf.clear();
                        q.spare.push(buf);
                        q.spare_bytes += SEGMENT;
                    }
                }
            }
        }
        self.written(cost);
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

    /// Queues one bulk frame, waiting for room in the small bulk queue.
    pub(crate) async fn enqueue_bulk(&self, frame: BulkFrame) -> Result<(), ()> {
        tokio::select! {
            r = self.bulk.send(frame) => r.map_err(|_| ()),
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
                        len,
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

    /// Completes the asks answered by one read's frames, taking the pending table's
    /// lock once for all of them.
    fn complete_all(&self, done: &mut Vec<(u64, Outcome)>) {
        if done.is_empty() {
            return;
        }
        let mut ready = Vec::with_capacity(done.len());
        {
            let mut pending = self.pending.lock();
            for (id, outcome) in done.drain(..) {
                match pending.remove(&id) {
                    Some(tx) => ready.push((tx, outcome)),
                    None => {
                        tracing::debug!(peer = %self.peer, id, "reply for an ask no longer waiting (timed out?)")
                    }
                }
            }
        }
        for (tx, outcome) in ready {
            let _ = tx.send(outcome);
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
    /// The queue accepts nothing afterwards.
    fn fail_queued(&self, q: &mut Queues, reason: &str) {
        q.bulk.close();
        let items: Vec<Queued> = {
            let mut c = self.control.lock();
            c.closed = true;
            c.spare.clear();
            c.spare_bytes = 0;
            c.items.drain(..).collect()
        };
        let mut one_way = 0usize;
        for item in items {
            self.written(item.cost());
            match item {
                Queued::Packed { asks, frames, .. } => {
                    one_way += frames - asks.len();
                    for id in asks {
                        self.complete(id, Outcome::NotSent(reason.to_string()));
                    }
                }
                Queued::Frame { ask: Some(id), .. } => {
                    self.complete(id, Outcome::NotSent(reason.to_string()))
                }
                Queued::Frame { ask: None, .. } => one_way += 1,
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
        _ = conn.closed.cancelled() => Err(ConnectError::ShuttingDown),
        r = tokio::time::timeout(timeout.duration, async {
            let mut tcp = open.await.map_err(|source| ConnectError::Connect { target: target.clone(), source })?;
            let handshake_failed = |source| ConnectError::Handshake { target: target.clone(), source };
            match &inner.tls {
                None => {
                    let est = handshake::client_with(&mut tcp, opts).await.map_err(handshake_failed)?;
                    Ok((Stream::Plain(tcp), est))
                }
                Some(tls) => {
                    let mut s = tls.connect(&target.host, tcp).await.map_err(|source| ConnectError::Tls { target: target.clone(), source })?;
                    let mut est = handshake::client_with(&mut s, opts).await.map_err(handshake_failed)?;
                    est.keys = None; // TLS protects the records already
                    Ok((Stream::TlsClient(Box::new(s)), est))
                }
            }
        }) => match r {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout { target: target.clone(), after: timeout.duration, setting: timeout.setting }),
        },
    };
    match opened {
        Err(e) => {
            let reason = e.to_string();
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

/// Most room a read buffer is given beyond what it holds: it grows by at most what it
/// holds already or the largest frame that arrived lately (so only arrived bytes make it
/// grow), and never by more than this per step.
const MAX_READ: usize = 512 * 1024;
/// Initial read buffer per connection; kept small because an idle master holds one
/// per worker (10,000 × 64 KiB would be 640 MiB once the pages are touched).
const READ_BUF: usize = 4 * 1024;
/// Most plaintext sealed per write, so the sealed copy stays small; it holds a whole
/// stream chunk frame (256 KiB and its header) so a chunk costs one write.
const SEAL_PIECE: usize = 512 * 1024;

/// Writes plaintext or sealed records.
struct Writer<W> {
    w: W,
    sealer: Option<Sealer>,
    sealed: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Writes the concatenation of `parts`: as they are, in vectored writes, or sealed
    /// in records, at most [`SEAL_PIECE`] bytes of plaintext per write.
    async fn write(&mut self, conn: &Connection, parts: &[&[u8]]) -> std::io::Result<()> {
        if self.sealer.is_none() {
            return tokio::select! {
                r = write_all_vectored(&mut self.w, parts) => r,
                _ = conn.closed.cancelled() => Err(closing()),
            };
        }
        let mut group: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        let mut size = 0;
        for &part in parts {
            let mut p = part;
            while !p.is_empty() {
                let take = p.len().min(SEAL_PIECE - size);
                group.push(&p[..take]);
                size += take;
                p = &p[take..];
                if size == SEAL_PIECE {
                    self.write_sealed(conn, &group).await?;
                    group.clear();
                    size = 0;
                }
            }
        }
        if size > 0 {
            self.write_sealed(conn, &group).await?;
        }
        Ok(())
    }

    async fn write_sealed(&mut self, conn: &Connection, parts: &[&[u8]]) -> std::io::Result<()> {
        self.sealed.clear();
        if let Some(s) = &mut self.sealer {
            s.seal_parts(parts, &mut self.sealed)
                .map_err(std::io::Error::other)?;
        }
        tokio::select! {
            r = self.w.write_all(&self.sealed) => r,
            _ = conn.closed.cancelled() => Err(closing()),
        }
    }
}

fn closing() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection closing")
}

/// Writes all of `parts` with as few `writev` calls as the socket allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

async fn write_loop<W: AsyncWrite + Unpin>(
    conn: Arc<Connection>,
    w: W,
    sealer: Option<Sealer>,
    mut q: Queues,
) {
    let mut batch: Vec<Queued> = Vec::new();
    let mut out = Writer {
        w,
        sealer,
        sealed: Vec::new(),
    };
    let result: std::io::Result<()> = async {
        loop {
            conn.take(&mut batch);
            if batch.is_empty() {
                let idle = conn
                    .has_spare()
                    .then(|| tokio::time::Instant::now() + SPARE_IDLE);
                // Control frames first; a bulk chunk only when none is waiting.
                tokio::select! {
                    biased;
                    _ = conn.work.notified() => {}
                    _ = sleep_until(idle) => conn.drop_spare(),
                    c = q.bulk.recv() => match c {
                        Some(c) => out.write(&conn, &[&c.head, &c.body]).await?,
                        None => return Ok(()),
                    },
                    _ = conn.closed.cancelled() => return Ok(()),
                }
            } else {
                {
                    let parts: Vec<&[u8]> = batch.iter().map(Queued::bytes).collect();
                    out.write(&conn, &parts).await?;
                }
                conn.release(&mut batch);
                // At most one chunk between batches of control frames.
                if let Ok(c) = q.bulk.try_recv() {
                    out.write(&conn, &[&c.head, &c.body]).await?;
                }
            }
            tokio::select! {
                r = out.w.flush() => r?,
                _ = conn.closed.cancelled() => return Ok(()),
            }
        }
    }
    .await;
    // Frames taken but not written count as written (their asks fail as lost).
    conn.release(&mut batch);
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
    // The largest frame that arrived lately (decaying): having received that much, the
    // connection may have that much room for the next read up front.
    let mut recent = 0usize;
    // Asks answered by the frames of one read, completed together.
    let mut answered: Vec<(u64, Outcome)> = Vec::new();
    loop {
        // Room for reads grows only with arrived bytes: at most what is held, or the
        // largest frame that arrived lately, and a little more.
        let allowance = raw.len().max(recent).min(MAX_READ) + READ_BUF;
        match &opener {
            None => {
                let spare = raw.capacity() - raw.len();
                match front_need(&raw) {
                    // The rest of the frame in progress (as far as the allowance goes)
                    // and a little of the next: the frame is split off whole, and the
                    // next one starts in a buffer of its own without the frame's bytes
                    // being copied.
                    Some(n) if n > spare => raw.reserve(n.min(allowance) + READ_BUF),
                    _ if spare < 512 => raw.reserve(allowance),
                    _ => {}
                }
            }
            Some(_) => {
                // Opened records go onto the frame in progress without regrowing it
                // piecemeal; a record may carry the start of the next frame too.
                if let Some(n) = front_need(&plain) {
                    if n > plain.capacity() - plain.len() {
                        let held = plain.len().max(recent).min(MAX_READ) + READ_BUF;
                        plain.reserve(n.min(held) + crate::seal::MAX_RECORD);
                    }
                }
                if raw.capacity() - raw.len() < 512 {
                    raw.reserve(allowance);
                }
            }
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
                    let len = frame.len() + frame::LEN_BYTES;
                    recent = len.max(recent - recent / 16);
                    if let Err(e) = route(env, conn, &frame, &mut answered) {
                        conn.complete_all(&mut answered);
                        return close(e.to_string());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    conn.complete_all(&mut answered);
                    return close(e.to_string());
                }
            }
        }
        conn.complete_all(&mut answered);
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

/// Bytes still missing from the frame at the front of `buf`, once its length is known.
fn front_need(buf: &BytesMut) -> Option<usize> {
    let len = u32::from_be_bytes(buf.get(..frame::LEN_BYTES)?.try_into().ok()?) as usize;
    (frame::LEN_BYTES + len).checked_sub(buf.len())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Routes one frame. An error means the peer broke the protocol and the connection
/// must close; a message for an unknown endpoint is refused but keeps the connection.
fn route(
    env: &RpcEnv,
    conn: &Arc<Connection>,
    frame: &Bytes,
    answered: &mut Vec<(u64, Outcome)>,
) -> Result<(), ProtocolError> {
    let (header, body) = frame::split_frame(frame)?;
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
        Header::Response { id, ty } => answered.push((id, Outcome::Reply { ty, body })),
        Header::Failure { id, kind, message } => {
            answered.push((id, Outcome::Failed(kind, message.to_string())))
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
