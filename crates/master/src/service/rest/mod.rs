//! The REST submission server, in the shape of Spark's `StandaloneRestServer`
//! (`/v1/submissions/...`, JSON per [`protocol`]), off by default.
//!
//! | Route | Method | Does |
//! |---|---|---|
//! | `/v1/submissions/create` | POST | queues a driver ([`protocol::plan`]) → `CreateSubmissionResponse` |
//! | `/v1/submissions/status/<id>` | GET | its state, worker, error → `SubmissionStatusResponse` |
//! | `/v1/submissions/kill/<id>` | POST | kills it → `KillSubmissionResponse` |
//! | `/v1/submissions/killall` | POST | kills every driver → `KillAllSubmissionResponse` |
//! | `/v1/submissions/clear` | POST | forgets completed drivers and apps → `ClearResponse` |
//! | `/v1/submissions/readyz` | GET | `ReadyzResponse`; 503 while the master is not ready |
//! | `/v1/submissions/upload` | POST | body = a driver binary → `UploadResponse` with `appResource: "sha256:<hash>"` |
//!
//! Status codes as Spark's: 200 (also for an unknown submission id, with
//! `success: false`, and for a master that refuses, e.g. a standby); 400 for a
//! malformed request (the message names the field), a missing id or an unknown
//! path; 468 for an unknown protocol version (with `highestProtocolVersion`); 500
//! when the master does not answer; 503 from `readyz` when not ready. flint adds:
//! **401** for a missing or invalid token (with `WWW-Authenticate: Bearer`), 413
//! for a body over its bound and 411 for an upload without `Content-Length`.
//!
//! **Authentication** (Spark 4's `JWSFilter`: every route, `readyz` and unknown
//! paths included): `Authorization: Bearer <token>`, an HS256 JWS checked by
//! [`jws::TokenKey::verify`] under a key derived from the cluster secret (see
//! [`jws`]); `flint rest-token` prints one. A request without a valid token gets
//! 401 before anything else happens. Without a cluster secret (`auth.enabled =
//! false`, or TLS alone) there is nothing to sign tokens with: the master then
//! refuses to start with `rest.enabled = true` unless `rest.allow_unauthenticated
//! = true` says that an open REST port (anyone who reaches it runs programs on
//! the workers — CVE-2018-11770) is intended; it then logs a WARN.
//!
//! **Limits.** The server is the daemons' bounded HTTP shell ([`flint_daemon::http`]:
//! `ui.max_connections`, idle and header-read timeouts, head size); JSON bodies
//! are bounded by `rest.max_request_bytes`, uploads by
//! `master.binary_store.max_size`, and an upload's bytes count against the store
//! while they arrive. It binds `rest.host` (127.0.0.1 unless told otherwise) on
//! `rest.port` (6066).
//!
//! The handlers ask the master's own `"Master"` endpoint (a local reference: no
//! serialization), exactly the asks `flint submit`, `flint status` and `flint
//! kill` make over RPC, so the REST server adds no state of its own.

pub mod jws;
pub mod protocol;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flint_conf::{Conf, SizeUnit};
use flint_daemon::http::{HttpLimits, HttpServer};
use flint_daemon::DaemonError;
use flint_proto::messages::{
    MasterMsg, RequestClearCompletedDriversAndApps, RequestDriverStatus, RequestKillAllDrivers,
    RequestKillDriver, RequestReadyz, RequestSubmitDriver,
};
use flint_proto::DriverId;
use flint_rpc::log::RateLimit;
use flint_rpc::EndpointRef;

use self::jws::TokenKey;
use self::protocol::{RestResponse, PROTOCOL_VERSION};
use super::binary_store::StoreShell;
use super::MasterError;

/// `rest.enabled`: serve the REST submission API (false).
pub const ENABLED: &str = "rest.enabled";
/// `rest.host`: the address it binds (127.0.0.1).
pub const HOST: &str = "rest.host";
/// `rest.port`: its port (6066, Spark's; 0 picks a free one).
pub const PORT: &str = "rest.port";
/// `rest.allow_unauthenticated`: allow it without a cluster secret (false).
pub const ALLOW_UNAUTHENTICATED: &str = "rest.allow_unauthenticated";
/// `rest.max_request_bytes`: most bytes of a JSON request body (1 MiB).
pub const MAX_REQUEST_BYTES: &str = "rest.max_request_bytes";

/// Every key the REST server reads.
pub const KEYS: &[&str] = &[
    ENABLED,
    HOST,
    PORT,
    ALLOW_UNAUTHENTICATED,
    MAX_REQUEST_BYTES,
];

/// Spark's REST port.
pub const DEFAULT_PORT: u16 = 6066;
/// The default bind address: loopback.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The default bound of a JSON request body.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1 << 20;

/// The REST server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestConfig {
    /// `rest.enabled`.
    pub enabled: bool,
    /// `rest.host`.
    pub host: String,
    /// `rest.port`.
    pub port: u16,
    /// `rest.allow_unauthenticated`.
    pub allow_unauthenticated: bool,
    /// `rest.max_request_bytes`.
    pub max_request_bytes: usize,
}

/// Reads the `rest.*` settings, naming the key when a value is wrong.
pub fn rest_config(conf: &Conf) -> Result<RestConfig, MasterError> {
    let port = conf.u64(PORT, u64::from(DEFAULT_PORT))?;
    let port = u16::try_from(port).map_err(|_| MasterError::Setting {
        key: PORT,
        message: format!("{port} is not a port (0 to 65535)"),
    })?;
    let max = conf.bytes(
        MAX_REQUEST_BYTES,
        DEFAULT_MAX_REQUEST_BYTES,
        SizeUnit::Bytes,
    )?;
    if max < 1024 {
        return Err(MasterError::Setting {
            key: MAX_REQUEST_BYTES,
            message: format!("{max} bytes is too small for a request; give at least 1k"),
        });
    }
    Ok(RestConfig {
        enabled: conf.bool(ENABLED, false)?,
        host: conf
            .get(HOST)
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_HOST)
            .to_string(),
        port,
        allow_unauthenticated: conf.bool(ALLOW_UNAUTHENTICATED, false)?,
        max_request_bytes: usize::try_from(max).unwrap_or(usize::MAX),
    })
}

/// What the handlers share.
struct Rest {
    master: EndpointRef<MasterMsg>,
    store: Arc<StoreShell>,
    /// `None`: no authentication (`rest.allow_unauthenticated`).
    key: Option<TokenKey>,
    max_request_bytes: usize,
    /// What drivers get as `FLINT_MASTER`.
    master_url: String,
    refusals: RateLimit,
}

/// A bound REST server, not yet serving.
pub(crate) struct Bound {
    server: HttpServer,
    router: Router,
}

impl Bound {
    /// Its base URL, `http://host:port`.
    pub(crate) fn url(&self) -> String {
        self.server.url().to_string()
    }

    /// Serves until `token` is cancelled.
    pub(crate) async fn serve(self, token: tokio_util::sync::CancellationToken) {
        self.server.serve(self.router, token).await
    }
}

/// Binds the REST server when `rest.enabled`; `secret` is the cluster secret
/// (`None` without one: see the [module docs](self) for when that is allowed).
pub(crate) async fn bind(
    conf: &Conf,
    cfg: &RestConfig,
    secret: Option<&[u8]>,
    master: EndpointRef<MasterMsg>,
    store: Arc<StoreShell>,
    master_url: String,
    advertised: Option<&str>,
) -> Result<Option<Bound>, MasterError> {
    if !cfg.enabled {
        return Ok(None);
    }
    let key = match secret {
        Some(s) => Some(TokenKey::derive(s)),
        None if cfg.allow_unauthenticated => None,
        None => {
            return Err(MasterError::Setting {
                key: ENABLED,
                message: "the REST server checks bearer tokens signed with the cluster secret, \
                          and there is none (auth.enabled = false, or TLS without a secret); \
                          configure a secret (auth.secret_file), or set \
                          rest.allow_unauthenticated = true to serve it open — anyone who \
                          reaches it can then run programs on the workers"
                    .into(),
            })
        }
    };
    let mut limits = HttpLimits::from_conf(conf).map_err(MasterError::Conf)?;
    // Each route bounds its own body (JSON by rest.max_request_bytes, uploads by the
    // store), so that a refusal names the setting that applies.
    limits.max_body_bytes = usize::MAX;
    let server = HttpServer::bind(&cfg.host, cfg.port, limits, advertised)
        .await
        .map_err(|e| match e {
            DaemonError::PortInUse { host, port, .. } => MasterError::Setting {
                key: PORT,
                message: format!("port {port} on {host} is in use; choose another with rest.port"),
            },
            DaemonError::Bind {
                address, source, ..
            } => MasterError::Setting {
                key: HOST,
                message: format!("cannot listen on {address} for the REST server: {source}"),
            },
            other => MasterError::Daemon(other),
        })?;
    if key.is_none() {
        tracing::warn!(
            "the REST submission server at {} is NOT authenticated \
             (rest.allow_unauthenticated = true): anyone who can reach it can run programs \
             on the workers",
            server.url()
        );
    }
    let rest = Arc::new(Rest {
        master,
        store,
        key,
        max_request_bytes: cfg.max_request_bytes,
        master_url,
        refusals: RateLimit::new(Duration::from_secs(10)),
    });
    Ok(Some(Bound {
        server,
        router: router(rest),
    }))
}

fn router(rest: Arc<Rest>) -> Router {
    Router::new()
        .route("/v1/submissions/create", post(create))
        .route("/v1/submissions/status", get(status_missing))
        .route("/v1/submissions/status/", get(status_missing))
        .route("/v1/submissions/status/{*id}", get(status))
        .route("/v1/submissions/kill", post(kill_missing))
        .route("/v1/submissions/kill/", post(kill_missing))
        .route("/v1/submissions/kill/{*id}", post(kill))
        .route("/v1/submissions/killall", post(kill_all))
        .route("/v1/submissions/clear", post(clear))
        .route("/v1/submissions/readyz", get(readyz))
        .route("/v1/submissions/upload", post(upload))
        .fallback(unknown_path)
        .layer(axum::middleware::from_fn_with_state(
            rest.clone(),
            authenticate,
        ))
        .with_state(rest)
}

fn reply(status: StatusCode, body: RestResponse) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_json(),
    )
        .into_response()
}

fn ok(body: RestResponse) -> Response {
    reply(StatusCode::OK, body)
}

fn bad_request(message: impl Into<String>) -> Response {
    reply(StatusCode::BAD_REQUEST, RestResponse::error(message))
}

fn internal(what: &str, e: impl std::fmt::Display) -> Response {
    reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        RestResponse::error(format!("Internal server error: {what}: {e}")),
    )
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The bearer token of a request, or why there is none.
fn bearer(req: &Request) -> Result<&str, String> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(
            "no Authorization header; send Authorization: Bearer <token> \
                    (`flint rest-token` prints one)"
                .into(),
        );
    };
    let text = value
        .to_str()
        .map_err(|_| "the Authorization header is not text".to_string())?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err("the Authorization header is not \"Bearer <token>\"".into()),
    }
}

async fn authenticate(State(rest): State<Arc<Rest>>, req: Request, next: Next) -> Response {
    let Some(key) = &rest.key else {
        return next.run(req).await;
    };
    let checked = bearer(&req).and_then(|t| key.verify(t, now_s()).map_err(|e| e.to_string()));
    match checked {
        Ok(_) => next.run(req).await,
        Err(why) => {
            let path = req.uri().path().chars().take(80).collect::<String>();
            rest.refusals.warn("refused", || {
                format!(
                    "REST request {} {path:?} refused (401): {why}",
                    req.method()
                )
            });
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                RestResponse::error(format!("Unauthorized: {why}")),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flint\", error=\"invalid_token\""),
            );
            r
        }
    }
}

/// Reads a JSON request body within `rest.max_request_bytes`.
async fn json_body(rest: &Rest, body: Body) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, rest.max_request_bytes)
        .await
        .map_err(|e| {
            reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                RestResponse::error(format!(
                    "the request body could not be read within {MAX_REQUEST_BYTES} = {} bytes: {e}",
                    rest.max_request_bytes
                )),
            )
        })
}

async fn create(State(rest): State<Arc<Rest>>, body: Body) -> Response {
    let bytes = match json_body(&rest, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match protocol::parse_create(&bytes) {
        Ok(r) => r,
        Err(e) => return bad_request(e.to_string()),
    };
    let plan = match protocol::plan(&req, &rest.master_url) {
        Ok(p) => p,
        Err(e) => return bad_request(e.to_string()),
    };
    let desc = match &plan.resource {
        protocol::Resource::Uploaded(sha) => match rest.store.source(sha) {
            Some(source) => protocol::with_binary(plan.desc, source),
            None => {
                return bad_request(format!(
                    "Malformed request: field appResource sha256:{sha} is not in the master's \
                     binary store; upload the binary first (POST /v1/submissions/upload)"
                ))
            }
        },
        protocol::Resource::Path(_) => plan.desc,
    };
    let answer = match rest.master.ask(RequestSubmitDriver { desc }).await {
        Ok(a) => a,
        Err(e) => return internal("the master did not take the submission", e),
    };
    let mut message = answer.message;
    if !plan.ignored.is_empty() {
        message.push_str(&format!(
            " (ignored sparkProperties: {})",
            plan.ignored.join(", ")
        ));
    }
    if let Some(id) = &answer.driver_id {
        tracing::info!(driver_id = %id, "driver {id} submitted over REST ({})", req.app_resource);
    }
    let mut r = RestResponse::new("CreateSubmissionResponse", message);
    r.success = Some(answer.success);
    r.submission_id = answer.driver_id.map(|d| d.to_string());
    if !req.unknown_fields.is_empty() {
        r.unknown_fields = Some(req.unknown_fields);
    }
    ok(r)
}

/// The first segment of a `{*id}` path, Spark's `parseSubmissionId`.
fn first_segment(id: &str) -> Option<&str> {
    id.split('/').find(|s| !s.is_empty())
}

async fn status_missing() -> Response {
    bad_request("Submission ID is missing in status request.")
}

async fn kill_missing() -> Response {
    bad_request("Submission ID is missing in kill request.")
}

async fn status(State(rest): State<Arc<Rest>>, Path(id): Path<String>) -> Response {
    let Some(id) = first_segment(&id) else {
        return status_missing().await;
    };
    let mut r = RestResponse::new("SubmissionStatusResponse", "");
    r.message = None;
    r.submission_id = Some(id.to_string());
    let Ok(driver_id) = id.parse::<DriverId>() else {
        r.success = Some(false);
        r.message = Some(format!(
            "{id:?} is not a driver id (driver-<date>-<number>)"
        ));
        return ok(r);
    };
    let s = match rest.master.ask(RequestDriverStatus { driver_id }).await {
        Ok(s) => s,
        Err(e) => return internal("the master did not answer", e),
    };
    r.success = Some(s.found);
    r.driver_state = s.state.map(|s| s.to_string());
    r.worker_id = s.worker_id.map(|w| w.to_string());
    r.worker_host_port = s.worker_host_port;
    r.message = match (s.found, s.exception) {
        (_, Some(e)) => Some(format!("Exception from the cluster:\n{e}")),
        (false, None) => Some(format!(
            "Driver {id} has already been forgotten or does not exist"
        )),
        (true, None) => None,
    };
    ok(r)
}

async fn kill(State(rest): State<Arc<Rest>>, Path(id): Path<String>) -> Response {
    let Some(id) = first_segment(&id) else {
        return kill_missing().await;
    };
    let mut r = RestResponse::new("KillSubmissionResponse", "");
    r.submission_id = Some(id.to_string());
    let Ok(driver_id) = id.parse::<DriverId>() else {
        r.success = Some(false);
        r.message = Some(format!(
            "Driver {id} has already finished or does not exist"
        ));
        return ok(r);
    };
    match rest.master.ask(RequestKillDriver { driver_id }).await {
        Ok(a) => {
            r.success = Some(a.success);
            r.message = Some(a.message);
            ok(r)
        }
        Err(e) => internal("the master did not answer", e),
    }
}

async fn kill_all(State(rest): State<Arc<Rest>>) -> Response {
    match rest.master.ask(RequestKillAllDrivers).await {
        Ok(a) => {
            let mut r = RestResponse::new("KillAllSubmissionResponse", a.message);
            r.success = Some(a.success);
            ok(r)
        }
        Err(e) => internal("the master did not answer", e),
    }
}

async fn clear(State(rest): State<Arc<Rest>>) -> Response {
    match rest.master.ask(RequestClearCompletedDriversAndApps).await {
        Ok(done) => {
            let mut r = RestResponse::new("ClearResponse", "");
            r.success = Some(done);
            r.message = None;
            ok(r)
        }
        Err(e) => internal("the master did not answer", e),
    }
}

async fn readyz(State(rest): State<Arc<Rest>>) -> Response {
    match rest.master.ask(RequestReadyz).await {
        Ok(true) => {
            let mut r = RestResponse::new("ReadyzResponse", "");
            r.message = None;
            r.success = Some(true);
            ok(r)
        }
        Ok(false) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            RestResponse::error("Master is not ready."),
        ),
        Err(e) => internal("the master did not answer", e),
    }
}

async fn upload(State(rest): State<Arc<Rest>>, req: Request) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(size) = declared else {
        return reply(
            StatusCode::LENGTH_REQUIRED,
            RestResponse::error(
                "an upload needs a Content-Length header (the store reserves the size first)",
            ),
        );
    };
    if size == 0 {
        return bad_request("the upload is empty; send the binary as the request body");
    }
    let max = rest.store.max_size();
    if size > max {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            RestResponse::error(format!(
                "the binary is {size} bytes, more than the master's binary store holds \
                 ({max} bytes); raise master.binary_store.max_size on the master"
            )),
        );
    }
    match rest.store.store_body(size, req.into_body()).await {
        Ok((sha, known)) => {
            let mut r = RestResponse::new(
                "UploadResponse",
                if known {
                    format!("binary {sha} ({size} bytes) was stored already")
                } else {
                    format!("binary {sha} ({size} bytes) stored")
                },
            );
            r.app_resource = Some(format!("sha256:{sha}"));
            r.sha256 = Some(sha);
            r.size = Some(size);
            r.success = Some(true);
            ok(r)
        }
        Err(e) => {
            let status = if e.too_large {
                StatusCode::PAYLOAD_TOO_LARGE
            } else if e.client {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            tracing::warn!("REST upload refused ({}): {}", status.as_u16(), e.reason);
            reply(status, RestResponse::error(e.reason))
        }
    }
}

async fn unknown_path(req: Request) -> Response {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (msg, mismatch) = match parts.as_slice() {
        [] => ("Missing protocol version.".to_string(), false),
        [v] if *v == PROTOCOL_VERSION => ("Missing the /submissions prefix.".to_string(), false),
        [v, "submissions", ..] if *v == PROTOCOL_VERSION => (
            "Missing an action: please specify one of /create, /kill, /killall, /status, \
             /clear, /readyz or /upload."
                .to_string(),
            false,
        ),
        [v, ..] if *v == PROTOCOL_VERSION => (format!("Malformed path {path}."), false),
        [v, ..] => {
            let v: String = v.chars().take(40).collect();
            (format!("Unknown protocol version '{v}'."), true)
        }
    };
    let mut e = RestResponse::error(format!(
        "{msg} Please submit requests through http://[host]:[port]/{PROTOCOL_VERSION}/submissions/..."
    ));
    if mismatch {
        e.highest_protocol_version = Some(PROTOCOL_VERSION.to_string());
        let status = StatusCode::from_u16(468).unwrap_or(StatusCode::BAD_REQUEST);
        return reply(status, e);
    }
    reply(StatusCode::BAD_REQUEST, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_off_on_loopback_at_6066() {
        let c = rest_config(&Conf::new()).unwrap();
        assert_eq!(
            c,
            RestConfig {
                enabled: false,
                host: "127.0.0.1".into(),
                port: 6066,
                allow_unauthenticated: false,
                max_request_bytes: 1 << 20,
            }
        );
        let c = rest_config(
            &Conf::new()
                .set(ENABLED, "true")
                .set(HOST, "0.0.0.0")
                .set(PORT, "0")
                .set(ALLOW_UNAUTHENTICATED, "yes")
                .set(MAX_REQUEST_BYTES, "64k"),
        )
        .unwrap();
        assert!(c.enabled && c.allow_unauthenticated);
        assert_eq!(
            (c.host.as_str(), c.port, c.max_request_bytes),
            ("0.0.0.0", 0, 65536)
        );
        for (k, v) in [
            (PORT, "70000"),
            (ENABLED, "maybe"),
            (MAX_REQUEST_BYTES, "10"),
        ] {
            let e = rest_config(&Conf::new().set(k, v)).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn spark_s_submission_id_is_the_first_path_segment() {
        assert_eq!(first_segment("driver-1/x"), Some("driver-1"));
        assert_eq!(first_segment("/driver-1"), Some("driver-1"));
        assert_eq!(first_segment("//"), None);
    }
}
