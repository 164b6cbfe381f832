//! Raw-socket helpers for tests of the bounded HTTP shell and of daemons
//! under a low open-file limit, shared by flint-daemon's tests and the master's
//! and worker's (`#[path = "../../daemon/tests/support/mod.rs"] mod support;`).
//! Limit tests need the socket in hand — to stay silent, trickle a head, or
//! see a 503 before EOF — which an HTTP client would hide.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flint_conf::Conf;
use flint_rpc::{Ask, Protocol, RpcAddress, RpcConf, RpcEnv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one step may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Connects within the deadline.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
        .await
        .expect("connected in time")
        .unwrap()
}

/// Asks endpoint `name` at `address` once, from a fresh client-only
/// environment with `conf`'s settings (as `flint status` asks the master),
/// within the deadline.
pub async fn ask_once<M: Protocol, Q: Ask + Into<M>>(
    conf: &Conf,
    address: &RpcAddress,
    name: &str,
    q: Q,
) -> Q::Reply {
    let env = RpcEnv::client(RpcConf::from_conf(conf).unwrap()).unwrap();
    let endpoint = env.setup_endpoint_ref::<M>(address, name).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, endpoint.ask(q))
        .await
        .expect("answered in time")
        .unwrap();
    env.shutdown();
    reply
}

/// Reads one response (head and `content-length` body): the status code and
/// body; `None` at EOF before any byte.
pub async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap_or(0);
        if n == 0 {
            assert!(buf.is_empty(), "EOF inside a response head: {buf:?}");
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + len {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("body in time")
            .unwrap();
        assert!(n > 0, "EOF inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((
        code,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
    ))
}

/// One keep-alive GET on `s`: the status code and body.
pub async fn get_on(s: &mut TcpStream, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(s).await.expect("a response")
}

/// Waits for the server to close `s` (EOF or reset), discarding what it
/// sends first; how long that took. Fails after the deadline.
pub async fn closed(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(DEADLINE, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {DEADLINE:?}"),
        }
    }
}

/// A `pre_exec` hook setting the child's open-file limit to `soft`/`hard`
/// before it execs ([`flint_daemon::rlimit::set_nofile_limit`] is safe
/// between fork and exec).
pub fn nofile_limit_hook(soft: u64, hard: u64) -> impl FnMut() -> std::io::Result<()> {
    move || flint_daemon::rlimit::set_nofile_limit(soft, hard)
}

/// Polls `cond` until it holds, failing after the deadline.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
