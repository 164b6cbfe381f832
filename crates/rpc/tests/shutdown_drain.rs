//! Shutdown drains: frames queued on a connection when `RpcEnv::shutdown` is called are
//! written before the connection closes (within `rpc.shutdown_drain_timeout`), over
//! real TCP, plain and sealed, on a connection already open and on one still being
//! opened. A peer that never answers the handshake, or that stops reading, holds the
//! shutdown no longer than the drain time; with a drain time of zero it is not held.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flint_rpc::{RpcAddress, RpcConf, RpcEnv, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const N: u64 = 100_000;

fn sealed(mut c: RpcConf) -> RpcConf {
    c.secret = Some(Secret::new("drain test secret"));
    c
}

/// The server's `test` total, asked on the server itself.
async fn total(server: &RpcEnv) -> u64 {
    server
        .local_ref::<TestMsg>("test")
        .expect("test endpoint")
        .ask(Get)
        .await
        .expect("Get")
}

/// Waits until the server has counted `want`, or fails naming what it has.
async fn wait_total(server: &RpcEnv, want: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got = total(server).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server counted {got} of {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client sends `N` one-way `Add(1)` and shuts down at once (no flush, no yield, so
/// on a current-thread runtime all of them are still queued); the server must count
/// all of them. `lookup`: the connection is open before the sends (else
/// it is still being opened when the client shuts down).
async fn sends_then_shutdown(conf: RpcConf, lookup: bool) {
    let (server, addr, _) = server_with_test_endpoint(conf.clone()).await;
    let client = RpcEnv::client(conf).unwrap();
    let r = if lookup {
        client
            .setup_endpoint_ref::<TestMsg>(&addr, "test")
            .await
            .unwrap()
    } else {
        client.endpoint_ref::<TestMsg>(&addr, "test")
    };
    for _ in 0..N {
        r.send(TestMsg::Add(1)).expect("queued");
    }
    // On this single-threaded runtime the writer has not run during the loop:
    // everything sent is still queued.
    let queued: usize = client.connections().iter().map(|c| c.queued_bytes).sum();
    assert!(
        queued > 0,
        "nothing left queued: the test would prove nothing"
    );
    client.shutdown();
    tokio::time::timeout(Duration::from_secs(20), client.await_termination())
        .await
        .expect("client terminated");
    // Everything was written before the connection closed: the server counts it all
    // although the client is gone.
    wait_total(&server, N, Duration::from_secs(20)).await;
    server.shutdown();
    server.await_termination().await;
}

#[tokio::test(flavor = "current_thread")]
async fn queued_sends_are_written_at_shutdown_on_an_open_connection() {
    sends_then_shutdown(quick_conf(), true).await;
}

#[tokio::test(flavor = "current_thread")]
async fn queued_sends_are_written_at_shutdown_while_the_connection_opens() {
    sends_then_shutdown(quick_conf(), false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn queued_sends_are_written_at_shutdown_sealed() {
    sends_then_shutdown(sealed(quick_conf()), true).await;
    sends_then_shutdown(sealed(quick_conf()), false).await;
}

/// A listener that accepts connections and never says anything: the handshake of a
/// connection to it never finishes.
async fn silent_listener() -> (RpcAddress, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = RpcAddress::new("127.0.0.1", l.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

fn drain_conf(drain: Duration) -> RpcConf {
    let mut c = quick_conf();
    c.connect_timeout.duration = Duration::from_secs(60);
    c.shutdown_drain.duration = drain;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_holds_shutdown_only_for_the_drain_time() {
    let (addr, listener) = silent_listener().await;
    let drain = Duration::from_millis(400);
    let client = RpcEnv::client(drain_conf(drain)).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    for _ in 0..1000 {
        r.send(TestMsg::Add(1)).expect("queued");
    }
    let start = Instant::now();
    client.shutdown();
    tokio::time::timeout(Duration::from_secs(10), client.await_termination())
        .await
        .expect("shutdown held past its drain time by a silent peer");
    let took = start.elapsed();
    // It did wait for the connection (there was something to write), but no longer
    // than the drain time and a margin for scheduling.
    assert!(
        took >= drain,
        "gave up after {took:?}, before the drain time"
    );
    assert!(
        took < drain + Duration::from_secs(3),
        "shutdown took {took:?} with a drain time of {drain:?}"
    );
    listener.abort();
}

/// With a drain time of zero, shutdown does not wait for a connection that has frames
/// queued (the old behaviour): they are dropped at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_drain_time_does_not_wait() {
    let (addr, listener) = silent_listener().await;
    let client = RpcEnv::client(drain_conf(Duration::ZERO)).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    for _ in 0..1000 {
        r.send(TestMsg::Add(1)).expect("queued");
    }
    let start = Instant::now();
    client.shutdown();
    tokio::time::timeout(Duration::from_secs(10), client.await_termination())
        .await
        .expect("terminated");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "shutdown took {:?} with a drain time of zero",
        start.elapsed()
    );
    listener.abort();
}

/// A relay between a client and a real server that forwards everything (so the
/// handshake completes) until `freeze` is set, then stops reading from the client.
async fn freezing_relay(server: RpcAddress, freeze: Arc<AtomicBool>) -> RpcAddress {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = RpcAddress::new("127.0.0.1", l.local_addr().unwrap().port());
    tokio::spawn(async move {
        let Ok((client, _)) = l.accept().await else {
            return;
        };
        let Ok(upstream) = TcpStream::connect(server.host_port()).await else {
            return;
        };
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let back = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut ur, &mut cw).await;
        });
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if freeze.load(Ordering::Acquire) {
                // Hold both sockets open and read nothing more.
                std::future::pending::<()>().await;
            }
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if uw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        back.abort();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_holds_shutdown_only_for_the_drain_time() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let freeze = Arc::new(AtomicBool::new(false));
    let relay = freezing_relay(addr, freeze.clone()).await;
    let drain = Duration::from_millis(400);
    let client = RpcEnv::client(drain_conf(drain)).unwrap();
    let r = client
        .setup_endpoint_ref::<TestMsg>(&relay, "test")
        .await
        .unwrap();
    assert_eq!(
        r.ask(Get).await.unwrap(),
        0,
        "the relay works before it freezes"
    );
    freeze.store(true, Ordering::Release);
    // Fill the socket buffers and then the queue, which can no longer drain.
    let mut queued = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    while queued < 1 << 20 {
        assert!(Instant::now() < deadline, "the queue never filled up");
        for _ in 0..10_000 {
            if r.send(TestMsg::Add(1)).is_err() {
                break;
            }
        }
        queued = client.connections().iter().map(|c| c.queued_bytes).sum();
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    client.shutdown();
    tokio::time::timeout(Duration::from_secs(10), client.await_termination())
        .await
        .expect("shutdown held past its drain time by a peer that does not read");
    let took = start.elapsed();
    assert!(
        took >= drain,
        "gave up after {took:?}, before the drain time"
    );
    assert!(
        took < drain + Duration::from_secs(3),
        "shutdown took {took:?} with a drain time of {drain:?} ({queued} bytes queued)"
    );
    server.shutdown();
}

/// A connection with nothing queued closes at once: the drain time is a bound, not a
/// delay, and a pending ask fails promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_nothing_queued_is_not_delayed() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(drain_conf(Duration::from_secs(30))).unwrap();
    let r = client
        .setup_endpoint_ref::<TestMsg>(&addr, "test")
        .await
        .unwrap();
    // Asks are queued when made: the Get behind the Hold proves the Hold arrived.
    let hold = r.ask(Hold);
    assert_eq!(r.ask(Get).await.unwrap(), 0);
    let held = tokio::spawn(hold);
    let start = Instant::now();
    client.shutdown();
    tokio::time::timeout(Duration::from_secs(10), client.await_termination())
        .await
        .expect("terminated");
    let failed = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held ask ended")
        .unwrap();
    assert!(failed.is_err(), "the held ask cannot have been answered");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} with nothing queued (drain time 30 s)",
        start.elapsed()
    );
    server.shutdown();
}
