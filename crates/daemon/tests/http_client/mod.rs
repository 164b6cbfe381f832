//! The one HTTP GET the tests use, on a real HTTP client (hyper-util's), for
//! tests that want a status page, not the socket: flint-daemon's, the master's
//! and the CLI's (`#[path = "../../daemon/tests/http_client/mod.rs"] mod
//! http_client;`). Tests of the HTTP shell's limits keep raw sockets
//! (`support`), since a client would hide exactly what they look at.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long a request and its body may take.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(30);

/// `GET http://<addr><path>`: the status code and the body as text (chunked or
/// not); panics when there is no answer within [`HTTP_DEADLINE`].
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_url(&format!("http://{addr}{path}")).await
}

/// `GET url` (an `http://host:port/path` URL, as a daemon prints it).
pub async fn get_url(url: &str) -> (u16, String) {
    try_get_url(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// [`get_url`], returning what went wrong instead of panicking on it.
pub async fn try_get_url(url: &str) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let response = tokio::time::timeout(HTTP_DEADLINE, client.get(uri))
        .await
        .map_err(|_| format!("no answer within {HTTP_DEADLINE:?}"))?
        .map_err(|e| format!("{e} ({e:?})"))?;
    let code = response.status().as_u16();
    let body = tokio::time::timeout(HTTP_DEADLINE, response.into_body().collect())
        .await
        .map_err(|_| format!("no body within {HTTP_DEADLINE:?}"))?
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}
