//! The bounded HTTP shell over real TCP on 127.0.0.1: the connection cap
//! refuses with a 503 and frees its slots, idle and header-trickling
//! connections are closed at their timeouts (and not before), oversized heads
//! and bodies are refused, and stopping closes idle connections. Every wait
//! has a deadline; no sleep stands in for a condition.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use flint_conf::Conf;
use flint_daemon::http::{status_routes, HttpStats};
use flint_daemon::{HttpLimits, HttpServer, STATUS_PATH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/mod.rs"]
mod support;
use support::{closed, get_on, read_response, wait_until, DEADLINE};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn long_limits() -> HttpLimits {
    HttpLimits {
        idle_timeout: Duration::from_secs(600),
        header_read_timeout: Duration::from_secs(600),
        ..HttpLimits::default()
    }
}

struct Served {
    addr: SocketAddr,
    stats: Arc<HttpStats>,
    token: CancellationToken,
    task: JoinHandle<()>,
}

async fn serve(limits: HttpLimits) -> Served {
    let server = HttpServer::bind("127.0.0.1", 0, limits, None)
        .await
        .unwrap();
    let addr = server.local_addr();
    let stats = server.stats();
    let token = CancellationToken::new();
    let router = status_routes(|| serde_json::json!({"ok": true}), |_| "hello\n".into())
        .route("/echo", get(|| async { "echo" }));
    let task = tokio::spawn(server.serve(router, token.clone()));
    Served {
        addr,
        stats,
        token,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_connections_get_503_and_freed_slots_are_reused() {
    let s = serve(HttpLimits {
        max_connections: 4,
        ..long_limits()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(s.addr).await.unwrap());
    }
    wait_until("4 open connections", || s.stats.open() == 4).await;
    for i in 0..6 {
        let mut extra = TcpStream::connect(s.addr).await.unwrap();
        let (code, body) = read_response(&mut extra).await.expect("a 503");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("ui.max_connections = 4"), "{body}");
        closed(&mut extra).await;
        assert_eq!(s.stats.refused(), i + 1);
    }
    // The held ones are served, with keep-alive, the JSON and the text.
    for c in &mut held {
        assert_eq!(get_on(c, "/").await, (200, "hello\n".into()));
        let (code, body) = get_on(c, STATUS_PATH).await;
        assert_eq!((code, body.as_str()), (200, r#"{"ok":true}"#));
    }
    drop(held.pop());
    wait_until("a slot freed", || s.stats.open() == 3).await;
    let mut again = TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(get_on(&mut again, "/echo").await, (200, "echo".into()));
    assert_eq!(s.stats.refused(), 6);

    // Stopping closes idle connections and returns.
    s.token.cancel();
    tokio::time::timeout(DEADLINE, s.task)
        .await
        .expect("stops in time")
        .unwrap();
    for c in &mut held {
        closed(c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let s = serve(HttpLimits {
        idle_timeout: idle,
        ..long_limits()
    })
    .await;
    // Never a byte sent.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let took = closed(&mut silent).await;
    assert!(
        took >= idle - Duration::from_millis(50),
        "closed after {took:?}"
    );
    // Idle after a request: the connection answered, then closed.
    let mut used = TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(get_on(&mut used, "/").await.0, 200);
    let took = closed(&mut used).await;
    assert!(
        took >= idle - Duration::from_millis(50),
        "closed after {took:?}"
    );
    wait_until("both counted", || s.stats.timed_out() == 2).await;
    wait_until("none open", || s.stats.open() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_is_cut_at_the_header_read_timeout() {
    let header = Duration::from_millis(500);
    let s = serve(HttpLimits {
        header_read_timeout: header,
        ..long_limits()
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let start = Instant::now();
    // One header line every 50 ms: never idle, never complete.
    let (mut rd, mut wr) = c.into_split();
    let trickle = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        let mut i = 0u32;
        loop {
            every.tick().await;
            i += 1;
            if wr
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return i;
            }
        }
    });
    let mut chunk = [0u8; 1024];
    let n = tokio::time::timeout(DEADLINE, rd.read(&mut chunk))
        .await
        .expect("closed in time");
    let took = start.elapsed();
    assert!(matches!(n, Ok(0) | Err(_)), "got a response: {n:?}");
    assert!(
        took >= header - Duration::from_millis(50),
        "cut after {took:?}"
    );
    wait_until("counted", || s.stats.timed_out() == 1).await;
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_are_refused() {
    let s = serve(HttpLimits {
        max_body_bytes: 1000,
        max_header_bytes: 8 * 1024,
        ..long_limits()
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
        .await
        .unwrap();
    let (code, body) = read_response(&mut c).await.unwrap();
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("ui.max_body_bytes = 1000"), "{body}");
    closed(&mut c).await;

    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = c.write_all(big.as_bytes()).await;
    let (code, _) = read_response(&mut c).await.unwrap();
    assert_eq!(code, 431);

    // A small body is fine.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789")
        .await
        .unwrap();
    assert_eq!(read_response(&mut c).await.unwrap(), (200, "echo".into()));
}

#[test]
fn limits_are_read_from_settings_and_checked() {
    let conf = Conf::new()
        .set("ui.max_connections", "7")
        .set("ui.idle_timeout", "2")
        .set("ui.header_read_timeout", "750ms")
        .set("ui.max_header_bytes", "16k")
        .set("ui.max_body_bytes", "1m");
    let l = HttpLimits::from_conf(&conf).unwrap();
    assert_eq!(
        l,
        HttpLimits {
            max_connections: 7,
            idle_timeout: Duration::from_secs(2),
            header_read_timeout: Duration::from_millis(750),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
        }
    );
    assert_eq!(
        HttpLimits::from_conf(&Conf::new()).unwrap(),
        HttpLimits::default()
    );
    for (key, value, says) in [
        ("ui.max_connections", "0", "must be at least 1"),
        ("ui.idle_timeout", "0s", "must be positive"),
        ("ui.max_header_bytes", "1k", "at least 8k"),
        ("ui.max_connections", "many", "whole number"),
    ] {
        let e = HttpLimits::from_conf(&Conf::new().set(key, value)).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(key) && text.contains(says), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_web_ui_port_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = HttpServer::bind("127.0.0.1", port, HttpLimits::default(), None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("web UI port {port} on 127.0.0.1 is in use; choose another with --webui-port")
    );
}
