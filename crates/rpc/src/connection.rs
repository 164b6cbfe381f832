//! One TCP (or TLS) connection to a peer: a writer task draining the connection's
//! outbox queue in batches, a reader task splitting frames and routing them, and the
//! table of asks awaiting replies.
//!
//! Failure accounting is exact: a request still in the queue when the connection dies
//! fails as *not delivered*; one already written fails as *connection lost*.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::address::RpcAddress;
use crate::endpoint::Event;
use crate::env::RpcEnv;
use crate::frame::{self, FailureKind, FrameCodec, Header};
use crate::handshake;

/// A frame waiting to be written; `ask` is set for requests so an unsent one can be
/// failed as not delivered.
pub(crate) struct Out {
    pub(crate) bytes: Bytes,
    pub(crate) ask: Option<u64>,
}

/// How a pending ask ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Reply(Bytes),
    Failed(FailureKind, String),
    NotSent(String),
    Lost(String),
}

/// Shared state of one connection.
pub(crate) struct Connection {
    pub(crate) id: u64,
    peer: RpcAddress,
    tx: mpsc::UnboundedSender<Out>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    pub(crate) closed: CancellationToken,
    max_frame: usize,
    dropped_one_way: AtomicBool,
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        peer: RpcAddress,
        max_frame: usize,
        parent: &CancellationToken,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Connection {
            id,
            peer,
            tx,
            pending: Mutex::new(HashMap::new()),
            closed: parent.child_token(),
            max_frame,
            dropped_one_way: AtomicBool::new(false),
        };
        (Arc::new(conn), rx)
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

    /// Queues a frame; gives it back if the connection is already closed.
    pub(crate) fn enqueue(&self, out: Out) -> Result<(), Out> {
        self.tx.send(out).map_err(|e| e.0)
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

    pub(crate) fn send_reply(&self, bytes: Vec<u8>) {
        if self
            .enqueue(Out {
                bytes: bytes.into(),
                ask: None,
            })
            .is_err()
        {
            tracing::debug!(peer = %self.peer, "reply dropped: connection closed");
        }
    }

    pub(crate) fn send_failure(&self, id: u64, kind: FailureKind, message: &str) {
        match frame::encode_raw(&Header::Failure { id, kind, message }, &[]) {
            Ok(bytes) => self.send_reply(bytes),
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
    fn fail_queued(&self, rx: &mut mpsc::UnboundedReceiver<Out>, reason: &str) {
        rx.close();
        let mut one_way = 0usize;
        while let Ok(out) = rx.try_recv() {
            match out.ask {
                Some(id) => self.complete(id, Outcome::NotSent(reason.to_string())),
                None => one_way += 1,
            }
        }
        if one_way > 0 && !self.dropped_one_way.swap(true, Ordering::Relaxed) {
            tracing::warn!(peer = %self.peer, "{one_way} one-way message(s) to {} not delivered: {reason}", self.peer);
        }
    }
}

/// Opens an outbound connection (TCP, TLS, handshake) and runs it. Messages queued
/// meanwhile wait in `rx`; if opening fails they all fail with the reason.
pub(crate) async fn run_outbound(
    env: RpcEnv,
    conn: Arc<Connection>,
    mut rx: mpsc::UnboundedReceiver<Out>,
) {
    let target = conn.peer().clone();
    let span = tracing::debug_span!("conn", peer = %target, dir = "out");
    let inner = env.inner.clone();
    let timeout = inner.conf.connect_timeout;
    let open = async {
        let tcp = TcpStream::connect(target.host_port()).await?;
        tcp.set_nodelay(true)?;
        Ok::<_, std::io::Error>(tcp)
    };
    let opened = tokio::select! {
        _ = conn.closed.cancelled() => Err("the RPC environment is shutting down".to_string()),
        r = tokio::time::timeout(timeout.duration, async {
            let mut tcp = open.await.map_err(|e| format!("cannot connect to {target}: {e}"))?;
            let listen = inner.address.clone();
            let secret = inner.conf.secret.as_ref();
            match &inner.tls {
                None => {
                    handshake::client(&mut tcp, secret, listen).await.map_err(|e| format!("handshake with {target} failed: {e}"))?;
                    Ok(Stream::Plain(tcp))
                }
                Some(tls) => {
                    let mut s = tls.connect(&target.host, tcp).await.map_err(|e| format!("TLS with {target} failed: {e}"))?;
                    handshake::client(&mut s, secret, listen).await.map_err(|e| format!("handshake with {target} failed: {e}"))?;
                    Ok(Stream::TlsClient(Box::new(s)))
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
            conn.fail_queued(&mut rx, &reason);
            env.post_event(Event::NetworkError(target, reason));
        }
        Ok(stream) => {
            span.in_scope(|| tracing::debug!("connected"));
            env.post_event(Event::Connected(target));
            run(env, conn, stream, rx).instrument(span).await
        }
    }
}

/// Accepts an inbound connection: TLS, handshake (with its deadline), then runs it.
/// A peer that fails is logged by address with the reason, and nothing else changes.
pub(crate) async fn run_inbound(env: RpcEnv, tcp: TcpStream, socket: SocketAddr) {
    let inner = env.inner.clone();
    let hs = inner.conf.handshake_timeout;
    let secret = inner.conf.secret.as_ref();
    let accepted = tokio::time::timeout(hs.duration, async {
        match &inner.tls {
            None => {
                let mut tcp = tcp;
                let listen = handshake::server(&mut tcp, secret)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((Stream::Plain(tcp), listen))
            }
            Some(tls) => {
                let mut s = tls
                    .accept(tcp)
                    .await
                    .map_err(|e| format!("TLS failed: {e}"))?;
                let listen = handshake::server(&mut s, secret)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((Stream::TlsServer(Box::new(s)), listen))
            }
        }
    })
    .await;
    let (stream, listen) = match accepted {
        Ok(Ok(v)) => v,
        Ok(Err(reason)) => {
            tracing::warn!(peer = %socket, "refused connection from {socket}: {reason}");
            return;
        }
        Err(_) => {
            tracing::warn!(peer = %socket, "refused connection from {socket}: handshake not finished within {:?} ({})", hs.duration, hs.setting);
            return;
        }
    };
    // A declared listening address must parse back as one; otherwise the peer is known
    // by its socket address only.
    let listen = listen.filter(|a| a.to_string().parse::<RpcAddress>().as_ref() == Ok(a));
    let peer = listen
        .clone()
        .unwrap_or_else(|| RpcAddress::from_socket(socket));
    let span = tracing::debug_span!("conn", peer = %peer, dir = "in");
    let (conn, rx) = env.adopt_inbound(peer.clone(), listen.is_some());
    span.in_scope(|| tracing::debug!(socket = %socket, "accepted"));
    env.post_event(Event::Connected(peer));
    run(env, conn, stream, rx).instrument(span).await
}

pub(crate) enum Stream {
    Plain(TcpStream),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn run(env: RpcEnv, conn: Arc<Connection>, stream: Stream, rx: mpsc::UnboundedReceiver<Out>) {
    match stream {
        Stream::Plain(tcp) => {
            let (r, w) = tcp.into_split();
            run_halves(env, conn, r, w, rx).await
        }
        Stream::TlsClient(s) => {
            let (r, w) = tokio::io::split(*s);
            run_halves(env, conn, r, w, rx).await
        }
        Stream::TlsServer(s) => {
            let (r, w) = tokio::io::split(*s);
            run_halves(env, conn, r, w, rx).await
        }
    }
}

async fn run_halves<R, W>(
    env: RpcEnv,
    conn: Arc<Connection>,
    r: R,
    w: W,
    rx: mpsc::UnboundedReceiver<Out>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let writer = tokio::spawn(write_loop(conn.clone(), w, rx).in_current_span());
    let reason = read_loop(&env, &conn, r).await;
    conn.closed.cancel();
    // The writer fails what it never sent as "not delivered" before we fail the rest
    // as "connection lost".
    let _ = writer.await;
    env.forget_connection(&conn);
    conn.fail_pending(&reason);
    tracing::debug!("connection closed: {reason}");
    env.post_event(Event::Disconnected(conn.peer().clone()));
}

const WRITE_BUF: usize = 64 * 1024;
/// Initial read buffer per connection; it grows on demand for large frames. Kept
/// small because an idle master holds one per worker (10,000 × 64 KiB would be
/// 640 MiB once the pages are touched).
const READ_BUF: usize = 4 * 1024;

async fn write_loop<W: AsyncWrite + Unpin>(
    conn: Arc<Connection>,
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
) {
    let mut batch = Vec::with_capacity(256);
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUF);
    let result: std::io::Result<()> = async {
        loop {
            let n = tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, 256) => n,
                _ = conn.closed.cancelled() => 0,
            };
            if n == 0 {
                return Ok(());
            }
            for out in batch.drain(..) {
                buf.extend_from_slice(&out.bytes);
                if buf.len() >= WRITE_BUF {
                    write_or_cancel(&conn, &mut w, &buf).await?;
                    buf.clear();
                }
            }
            if !buf.is_empty() {
                write_or_cancel(&conn, &mut w, &buf).await?;
                buf.clear();
            }
            tokio::select! {
                r = w.flush() => r?,
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
    conn.fail_queued(&mut rx, &reason);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), w.shutdown()).await;
}

async fn write_or_cancel<W: AsyncWrite + Unpin>(
    conn: &Connection,
    w: &mut W,
    buf: &[u8],
) -> std::io::Result<()> {
    tokio::select! {
        r = w.write_all(buf) => r,
        _ = conn.closed.cancelled() => Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection closing")),
    }
}

/// Reads frames until the connection ends; returns why it ended.
async fn read_loop<R: AsyncRead + Unpin>(env: &RpcEnv, conn: &Arc<Connection>, r: R) -> String {
    let mut frames = FramedRead::with_capacity(r, FrameCodec::new(conn.max_frame), READ_BUF);
    loop {
        let next = tokio::select! {
            biased;
            f = frames.next() => f,
            _ = conn.closed.cancelled() => return "connection closed by this side".into(),
        };
        match next {
            None => return format!("{} closed the connection", conn.peer()),
            Some(Err(e)) => {
                tracing::warn!(peer = %conn.peer(), "closing connection with {}: {e}", conn.peer());
                return e.to_string();
            }
            Some(Ok(frame)) => {
                if let Err(reason) = route(env, conn, &frame) {
                    tracing::warn!(peer = %conn.peer(), "closing connection with {}: {reason}", conn.peer());
                    return reason;
                }
            }
        }
    }
}

/// Routes one frame. An error means the peer broke the protocol and the connection
/// must close; a message for an unknown endpoint is refused but keeps the connection.
fn route(env: &RpcEnv, conn: &Arc<Connection>, frame: &Bytes) -> Result<(), String> {
    let (header, body) = frame::split_frame(frame).map_err(|e| e.to_string())?;
    match header {
        Header::OneWay { to, protocol } => match env.inbox(to) {
            Some(inbox) if inbox.protocol_id() == protocol => {
                if !inbox.post_remote(body, None, conn.clone()) {
                    tracing::warn!(peer = %conn.peer(), "message from {} for stopped endpoint {to} dropped", conn.peer());
                }
            }
            Some(inbox) => tracing::warn!(
                peer = %conn.peer(),
                "message from {} for endpoint {to} is of an unknown protocol (id {protocol:#010x}; {to} speaks {}); dropped",
                conn.peer(),
                inbox.protocol_name()
            ),
            None => {
                tracing::warn!(peer = %conn.peer(), "message from {} for unknown endpoint {to:?}; dropped", conn.peer())
            }
        },
        Header::Request { id, to, protocol } => match env.inbox(to) {
            Some(inbox) if inbox.protocol_id() == protocol => {
                if !inbox.post_remote(body, Some(id), conn.clone()) {
                    conn.send_failure(
                        id,
                        FailureKind::NotDelivered,
                        &format!("endpoint {to} has stopped"),
                    );
                }
            }
            Some(inbox) => {
                let why = format!(
                    "endpoint {to} speaks {}; this request is of another protocol (id {protocol:#010x})",
                    inbox.protocol_name()
                );
                tracing::warn!(peer = %conn.peer(), "request from {} refused: {why}", conn.peer());
                conn.send_failure(id, FailureKind::Handler, &why);
            }
            None => {
                let why = format!("no endpoint named {to} at {}", env.describe());
                tracing::warn!(peer = %conn.peer(), "request from {} refused: {why}", conn.peer());
                conn.send_failure(id, FailureKind::NotDelivered, &why);
            }
        },
        Header::Response { id } => conn.complete(id, Outcome::Reply(body)),
        Header::Failure { id, kind, message } => {
            conn.complete(id, Outcome::Failed(kind, message.to_string()))
        }
    }
    Ok(())
}
