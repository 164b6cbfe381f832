//! The web UI's HTTP shell: an axum [`Router`] served over HTTP/1.1 with
//! limits, so that idle or hostile browsers cannot take the descriptors a
//! daemon needs for RPC, executor launches and files.
//!
//! - **A connection cap** (`ui.max_connections`, 64, and never more than a
//!   quarter of the open-file limit): past it a new connection gets a `503`
//!   and is closed at once, and a rate-limited WARN says so.
//! - **An idle timeout** (`ui.idle_timeout`, 30 s): a connection that moves no
//!   byte either way for this long while no request is being handled is
//!   closed — between requests, before the first, or stalled mid-response.
//! - **A header-read timeout** (`ui.header_read_timeout`, 10 s): once the first
//!   byte of a request has arrived, its headers must be complete within this,
//!   however slowly they trickle.
//! - **Size limits**: a request head (and what is buffered with it) may take
//!   `ui.max_header_bytes` (64 KiB); a body may have `ui.max_body_bytes`
//!   (64 KiB) — a larger declared length is answered `413` and the connection
//!   closed, a longer chunked body fails when read past the limit.
//!
//! [`HttpServer::serve`] stops accepting when its token is cancelled, lets
//! requests in progress finish (for at most a second) and returns once every
//! connection is closed. [`status_routes`] is the two routes every daemon's UI
//! has: `GET /` (a plain-text summary) and `GET /api/v1/status` (JSON).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use flint_conf::{Conf, ConfError, SizeUnit, TimeUnit};
use flint_rpc::log::RateLimit;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::millis;
use crate::{host_port, DaemonError};

/// The path of every daemon's status document.
pub const STATUS_PATH: &str = "/api/v1/status";

/// `ui.max_connections`: web UI connections open at once (64); past it new
/// ones are answered `503` and closed. Never more than a quarter of the
/// open-file limit.
pub const MAX_CONNECTIONS: &str = "ui.max_connections";
/// `ui.idle_timeout`: a web UI connection that moves no byte for this long
/// while no request is handled is closed (30 s; a bare number is seconds).
pub const IDLE_TIMEOUT: &str = "ui.idle_timeout";
/// `ui.header_read_timeout`: a request's headers must be complete this long
/// after its first byte (10 s; a bare number is seconds).
pub const HEADER_READ_TIMEOUT: &str = "ui.header_read_timeout";
/// `ui.max_header_bytes`: most bytes of a request head, buffered per
/// connection (64 KiB, at least 8 KiB; a bare number is bytes).
pub const MAX_HEADER_BYTES: &str = "ui.max_header_bytes";
/// `ui.max_body_bytes`: most bytes of a request body (64 KiB; a bare number
/// is bytes).
pub const MAX_BODY_BYTES: &str = "ui.max_body_bytes";

/// The smallest head buffer hyper accepts.
const MIN_HEADER_BYTES: u64 = 8 * 1024;
/// How long requests in progress may take to finish once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (out of descriptors, typically) before the
/// next, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// One refusal or accept-failure WARN per this interval, with a count.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// The farthest a connection's watchdog sleeps before looking again.
const MAX_WAKE_MS: u64 = 24 * 3600 * 1000;

/// The web UI's limits; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Silence after which a connection with no request in progress closes.
    pub idle_timeout: Duration,
    /// Time from a request's first byte to its complete head.
    pub header_read_timeout: Duration,
    /// Bytes of request head buffered per connection.
    pub max_header_bytes: usize,
    /// Bytes of request body.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 64,
            idle_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl HttpLimits {
    /// Reads the `ui.*` limits, failing with the key when a value is wrong or
    /// out of range.
    pub fn from_conf(conf: &Conf) -> Result<Self, ConfError> {
        let d = HttpLimits::default();
        let out_of_range = |key: &str, reason: &str| ConfError::Invalid {
            key: key.to_string(),
            value: conf.get(key).unwrap_or_default().to_string(),
            reason: reason.to_string(),
        };
        let max_connections = conf.u64(MAX_CONNECTIONS, d.max_connections as u64)?;
        if max_connections == 0 {
            return Err(out_of_range(MAX_CONNECTIONS, "must be at least 1"));
        }
        let idle_timeout = conf.duration(IDLE_TIMEOUT, d.idle_timeout, TimeUnit::Seconds)?;
        if idle_timeout.is_zero() {
            return Err(out_of_range(IDLE_TIMEOUT, "must be positive"));
        }
        let header_read_timeout = conf.duration(
            HEADER_READ_TIMEOUT,
            d.header_read_timeout,
            TimeUnit::Seconds,
        )?;
        if header_read_timeout.is_zero() {
            return Err(out_of_range(HEADER_READ_TIMEOUT, "must be positive"));
        }
        let max_header_bytes =
            conf.bytes(MAX_HEADER_BYTES, d.max_header_bytes as u64, SizeUnit::Bytes)?;
        if max_header_bytes < MIN_HEADER_BYTES {
            return Err(out_of_range(MAX_HEADER_BYTES, "must be at least 8k"));
        }
        let max_body_bytes =
            conf.bytes(MAX_BODY_BYTES, d.max_body_bytes as u64, SizeUnit::Bytes)?;
        Ok(HttpLimits {
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            idle_timeout,
            header_read_timeout,
            max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        })
    }
}

/// Counters of a web UI's connections.
#[derive(Debug, Default)]
pub struct HttpStats {
    open: AtomicUsize,
    refused: AtomicU64,
    timed_out: AtomicU64,
}

impl HttpStats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections refused at the cap so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed by the idle or header-read timeout so far.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// A bound web UI listener, not yet serving.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    local: SocketAddr,
    url: String,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
}

impl HttpServer {
    /// Binds `host:port` (port 0 picks a free one) for a web UI; bind errors
    /// name `--webui-port`. Its [`url`](Self::url) names `host`, or when `host`
    /// is every interface (`0.0.0.0`), `advertised` (else this machine's
    /// [host](crate::advertise::machine_host)). The connection cap is lowered
    /// to a quarter of the open-file limit when that is smaller.
    pub async fn bind(
        host: &str,
        port: u16,
        mut limits: HttpLimits,
        advertised: Option<&str>,
    ) -> Result<HttpServer, DaemonError> {
        let port_spec = crate::WEBUI_PORT;
        let address = host_port(host, port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|e| port_spec.error(host, port, address.clone(), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| port_spec.error(host, port, address, e))?;
        let url_host = if local.ip().is_unspecified() {
            match advertised {
                Some(h) => h.to_string(),
                None => crate::advertise::machine_host().await,
            }
        } else {
            host.trim().to_string()
        };
        if let Ok((soft, _)) = crate::rlimit::nofile_limit() {
            let reserve = usize::try_from(soft / 4).unwrap_or(usize::MAX).max(1);
            if reserve < limits.max_connections {
                tracing::info!(
                    "web UI connections capped at {reserve}, a quarter of the open-file limit \
                     {soft} ({MAX_CONNECTIONS} = {})",
                    limits.max_connections
                );
                limits.max_connections = reserve;
            }
        }
        Ok(HttpServer {
            listener,
            local,
            url: format!("http://{}", host_port(&url_host, local.port())),
            limits,
            stats: Arc::default(),
        })
    }

    /// The socket it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Its base URL, `http://host:port`, with a host peers can reach.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The limits in force.
    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// Its connection counters, live while it serves.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.stats.clone()
    }

    /// Serves `router` until `token` is cancelled and every connection has
    /// closed: see the [module docs](self).
    pub async fn serve(self, router: Router, token: CancellationToken) {
        let HttpServer {
            listener,
            limits,
            stats,
            ..
        } = self;
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let connections = TaskTracker::new();
        let warnings = RateLimit::new(WARN_INTERVAL);
        loop {
            let accepted = tokio::select! {
                _ = token.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((tcp, peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        stats.open.fetch_add(1, Ordering::Relaxed);
                        connections.spawn(connection(
                            tcp,
                            peer,
                            router.clone(),
                            limits,
                            token.clone(),
                            stats.clone(),
                            permit,
                        ));
                    }
                    Err(_) => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        refuse(&tcp, limits.max_connections);
                        drop(tcp);
                        warnings.warn("refused", || {
                            format!(
                                "web UI refused a connection from {peer}: {} connections open \
                                 ({MAX_CONNECTIONS} = {})",
                                stats.open(),
                                limits.max_connections
                            )
                        });
                    }
                },
                Err(e) => {
                    warnings.warn("accept", || {
                        format!("web UI cannot accept a connection: {e}")
                    });
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }
        drop(listener);
        connections.close();
        connections.wait().await;
    }
}

/// Tells a connection past the cap why it is closed, if its socket buffer
/// takes the few bytes at once (it always does for a fresh connection).
fn refuse(tcp: &TcpStream, cap: usize) {
    let body =
        format!("too many web UI connections ({MAX_CONNECTIONS} = {cap}); try again later\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain; \
         charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(response.as_bytes());
}

/// Serves one connection until it ends, times out, or the server stops.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    token: CancellationToken,
    stats: Arc<HttpStats>,
    _permit: OwnedSemaphorePermit,
) {
    struct Open(Arc<HttpStats>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _open = Open(stats.clone());
    let _ = tcp.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: tcp,
        activity: activity.clone(),
    });
    let service_activity = activity.clone();
    let max_body = limits.max_body_bytes;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let guard = InRequest::begin(service_activity.clone());
        let router = router.clone();
        async move {
            let response = respond(router, req, max_body).await;
            drop(guard);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes)
        .header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stop_by: Option<Instant> = None;
    loop {
        let wake_ms = match activity.check(activity.now_ms(), &limits) {
            Ok(at) => at,
            Err(why) => {
                stats.timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("web UI connection from {peer} closed: {why}");
                return;
            }
        };
        let mut wake = activity.origin + Duration::from_millis(wake_ms);
        if let Some(stop) = stop_by {
            wake = wake.min(stop);
        }
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!("web UI connection from {peer}: {e}");
                }
                return;
            }
            _ = token.cancelled(), if stop_by.is_none() => {
                conn.as_mut().graceful_shutdown();
                stop_by = Some(Instant::now() + SHUTDOWN_GRACE);
            }
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(wake) => {
                if stop_by.is_some_and(|s| Instant::now() >= s) {
                    return;
                }
            }
        }
    }
}

/// One request through the router, its body limited.
async fn respond(mut router: Router, req: Request<Incoming>, max_body: usize) -> Response<Body> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            format!("request body larger than {MAX_BODY_BYTES} = {max_body} bytes\n"),
        )
            .into_response();
    }
    let req = req.map(|body| Body::new(http_body_util::Limited::new(body, max_body)));
    match tower_service::Service::call(&mut router, req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// "No request" in [`Activity::head_started`].
const NONE: u64 = u64::MAX;

/// What a connection's watchdog looks at, in milliseconds since
/// [`Activity::origin`]. Only the connection's own task touches it; atomics
/// make it `Sync` for the service.
struct Activity {
    origin: Instant,
    /// When a byte last moved either way.
    last_io: AtomicU64,
    /// When the first byte of a request whose head is not parsed yet arrived.
    head_started: AtomicU64,
    /// No request is being handled: the next bytes begin a request head.
    awaiting_head: AtomicBool,
    /// Requests being handled.
    handlers: AtomicUsize,
    /// Told when a deadline may have come closer (a head began, a request
    /// ended), so the watchdog looks again.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            awaiting_head: AtomicBool::new(true),
            handlers: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.origin.elapsed())
    }

    fn read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.awaiting_head.load(Ordering::Relaxed) {
            let began = self
                .head_started
                .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
            if began {
                self.changed.notify_one();
            }
        }
    }

    fn wrote(&self, n: usize) {
        if n > 0 {
            self.last_io.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// `Ok(when to look again)` or `Err(why the connection must close)`.
    fn check(&self, now: u64, limits: &HttpLimits) -> Result<u64, &'static str> {
        let mut next = now.saturating_add(MAX_WAKE_MS);
        let head = self.head_started.load(Ordering::Relaxed);
        if self.awaiting_head.load(Ordering::Relaxed) && head != NONE {
            let due = head.saturating_add(millis(limits.header_read_timeout));
            if now >= due {
                return Err("request headers not complete within ui.header_read_timeout");
            }
            next = next.min(due);
        }
        if self.handlers.load(Ordering::Relaxed) == 0 {
            let due = self
                .last_io
                .load(Ordering::Relaxed)
                .saturating_add(millis(limits.idle_timeout));
            if now >= due {
                return Err("idle for ui.idle_timeout");
            }
            next = next.min(due);
        } else {
            next = next.min(now.saturating_add(millis(limits.idle_timeout)));
        }
        Ok(next)
    }
}

/// A request being handled, from its parsed head until its response is
/// handed to hyper.
struct InRequest(Arc<Activity>);

impl InRequest {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.awaiting_head.store(false, Ordering::Relaxed);
        activity.head_started.store(NONE, Ordering::Relaxed);
        activity.handlers.fetch_add(1, Ordering::Relaxed);
        InRequest(activity)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        let a = &self.0;
        if a.handlers.fetch_sub(1, Ordering::Relaxed) == 1 {
            a.awaiting_head.store(true, Ordering::Relaxed);
        }
        a.last_io.store(a.now_ms(), Ordering::Relaxed);
        a.changed.notify_one();
    }
}

/// A TCP stream that records when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.read(buf.filled().len() - before);
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.activity.wrote(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.activity.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The two routes every daemon's web UI serves: `GET /`, `summary` of a
/// fresh `snapshot()` as plain text, and `GET` [`STATUS_PATH`], the snapshot
/// as JSON.
pub fn status_routes<T, F>(snapshot: F, summary: fn(&T) -> String) -> Router
where
    T: Serialize + Send + 'static,
    F: Fn() -> T + Clone + Send + Sync + 'static,
{
    let text = snapshot.clone();
    Router::new()
        .route("/", get(move || ready(summary(&text()))))
        .route(STATUS_PATH, get(move || ready(Json(snapshot()))))
}

/// An already-computed handler result (the snapshot is taken synchronously,
/// under its daemon's lock, and never awaits).
fn ready<T>(value: T) -> impl Future<Output = T> {
    std::future::ready(value)
}
