//! Back-pressure over real TCP: a peer that stops reading makes `try_send` fail `Full`
//! and `send_async` wait, with the queue held to its budget; a full inbox refuses asks
//! as `Busy` and drops sends (counted) while other endpoints on the same connection
//! keep answering; a peer that never reads our replies is cut off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use flint_rpc::{handshake, AskError, Context, Endpoint, Reply, RpcAddress, RpcEnv};
use tokio::net::TcpListener;

/// A raw server that completes the handshake and then never reads again.
async fn deaf_server() -> (RpcAddress, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = RpcAddress::new("127.0.0.1", listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        handshake::server(&mut s, None).await.unwrap();
        // Hold the socket open without reading.
        std::future::pending::<()>().await;
        drop(s);
    });
    (addr, task)
}

#[tokio::test]
async fn a_peer_that_stops_reading_makes_try_send_full_and_send_async_wait() {
    let (addr, task) = deaf_server().await;
    let mut conf = quick_conf();
    conf.max_queued_bytes = 256 * 1024;
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let payload = || TestMsg::Blob(Blob(vec![7u8; 16 * 1024]));
    // The kernel's socket buffers absorb a few MiB first; then our queue fills.
    let start = Instant::now();
    let full = loop {
        match r.try_send(payload()) {
            Ok(()) => {}
            Err(e) => break e,
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "try_send never reported Full"
        );
        tokio::task::yield_now().await;
    };
    assert!(matches!(full, AskError::Full { .. }), "{full}");
    assert!(full.is_retryable() && full.is_not_delivered(), "{full}");
    assert!(
        full.to_string().contains("rpc.connection.max_queued_bytes"),
        "{full}"
    );
    let queued: usize = client.connections().iter().map(|c| c.queued_bytes).sum();
    assert!(
        queued <= 256 * 1024,
        "{queued} bytes queued, over the 256 KiB budget"
    );
    // send_async waits for room instead of failing or buffering.
    let waiting = tokio::time::timeout(Duration::from_millis(300), r.send_async(payload())).await;
    assert!(
        waiting.is_err(),
        "send_async returned although the queue was full"
    );
    task.abort();
    client.shutdown();
}

#[tokio::test]
async fn ask_waiting_gives_up_at_its_deadline_when_the_queue_stays_full() {
    let (addr, task) = deaf_server().await;
    let mut conf = quick_conf();
    conf.max_queued_bytes = 256 * 1024;
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let start = Instant::now();
    loop {
        match r.try_send(TestMsg::Blob(Blob(vec![7u8; 16 * 1024]))) {
            Ok(()) => tokio::task::yield_now().await,
            Err(AskError::Full { .. }) => break,
            Err(e) => panic!("unexpected failure: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never Full");
    }
    let t = Instant::now();
    let e = r
        .ask_waiting_timeout(Echo("late".into()), Duration::from_millis(300))
        .await
        .unwrap_err();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "waited {waited:?} past a 300 ms deadline"
    );
    assert!(e.is_not_delivered(), "{e}");
    assert!(
        e.to_string().contains("rpc.connection.max_queued_bytes")
            && e.to_string().contains("ask_waiting_timeout"),
        "{e}"
    );
    task.abort();
    client.shutdown();
}

/// On a current-thread runtime the writer cannot run while the test fills the queue,
/// so the queue is certainly full when `ask` and `ask_waiting` are called.
#[tokio::test]
async fn after_a_burst_ask_fails_full_and_ask_waiting_waits_for_room() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let mut conf = quick_conf();
    conf.max_queued_bytes = 256 * 1024;
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    assert_eq!(r.ask(Echo("connected".into())).await.unwrap(), "connected");
    let mut sent = 0u64;
    let full = loop {
        match r.try_send(TestMsg::Add(1)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 10_000_000, "the queue never filled");
    };
    assert!(matches!(full, AskError::Full { .. }), "{full}");
    let e = r.ask(Get).await.unwrap_err();
    assert!(
        matches!(e, AskError::Full { .. }),
        "ask did not fail Full: {e}"
    );
    // ask_waiting queues once the writer has made room, behind every message sent.
    let total = r
        .ask_waiting_timeout(Get, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(total, sent, "the count behind {sent} one-way messages");
    client.shutdown();
    server.shutdown();
}

/// Handles each message slowly (a blocking handler, to fill its inbox on purpose).
struct Slow;

impl Endpoint for Slow {
    type Msg = TestMsg;
    fn receive(&mut self, _: &Context<TestMsg>, _: TestMsg) {
        std::thread::sleep(Duration::from_millis(2));
    }
    fn receive_and_reply(&mut self, _: &Context<TestMsg>, msg: TestMsg, reply: Reply) {
        std::thread::sleep(Duration::from_millis(2));
        if let TestMsg::Blob(b) = msg {
            reply.send(b.0.len() as u64)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_refuses_asks_as_busy_and_other_endpoints_keep_answering() {
    let mut conf = quick_conf();
    conf.max_inbox_bytes = 64 * 1024;
    let (server, addr, _) = server_with_test_endpoint(conf).await;
    server.setup_endpoint("slow", Slow).unwrap();
    let client = RpcEnv::client(quick_conf()).unwrap();
    let slow = client.endpoint_ref::<TestMsg>(&addr, "slow");
    let test = client.endpoint_ref::<TestMsg>(&addr, "test");
    // Flood the slow endpoint with one-way messages and asks.
    let mut asks = Vec::new();
    for i in 0..400 {
        slow.send_async(TestMsg::Blob(Blob(vec![1u8; 4096])))
            .await
            .unwrap();
        if i % 4 == 0 {
            asks.push(slow.ask(Blob(vec![2u8; 4096])));
        }
    }
    // Meanwhile the other endpoint on the same connection answers at once.
    let t = Instant::now();
    assert_eq!(test.ask(Echo("through".into())).await.unwrap(), "through");
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "an ask to another endpoint took {took:?} behind a full inbox"
    );
    let mut busy = 0;
    for a in asks {
        match a.await {
            Ok(n) => assert_eq!(n, 4096),
            Err(AskError::Busy { reason, .. }) => {
                assert!(reason.contains("rpc.endpoint.max_queued_bytes"), "{reason}");
                busy += 1;
            }
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    assert!(
        busy > 0,
        "no ask was refused as busy; the inbox was not bounded"
    );
    let dropped = server.dropped_messages("slow").unwrap();
    assert!(dropped > 0, "no message was counted as dropped");
    client.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn local_sends_to_a_full_inbox_fail_busy() {
    let mut conf = quick_conf();
    conf.max_inbox_bytes = 64 * 1024;
    let env = RpcEnv::server(conf, "127.0.0.1", 0).await.unwrap();
    // An endpoint that holds every ask: its inbox drains, so use one that blocks.
    let r = env.setup_endpoint("slow", Slow).unwrap();
    let mut refused = None;
    for _ in 0..10_000 {
        if let Err(e) = r.try_send(TestMsg::Add(1)) {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("10,000 local sends to a slow endpoint all queued");
    assert!(matches!(e, AskError::Busy { .. }), "{e}");
    env.shutdown();
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_at_accept_and_admitted_once_one_closes() {
    logs();
    let mut conf = quick_conf();
    conf.max_connections = 2;
    let (server, addr, _) = server_with_test_endpoint(conf).await;
    let mut clients = Vec::new();
    for i in 0..2 {
        let c = RpcEnv::client(quick_conf()).unwrap();
        let r = c.endpoint_ref::<TestMsg>(&addr, "test");
        assert_eq!(r.ask(Echo(format!("{i}"))).await.unwrap(), format!("{i}"));
        clients.push(c);
    }
    let third = RpcEnv::client(quick_conf()).unwrap();
    let e = third
        .endpoint_ref::<TestMsg>(&addr, "test")
        .ask(Echo("third".into()))
        .await
        .unwrap_err();
    assert!(e.is_not_delivered(), "{e}");
    wait_for_log(&[
        "refused connection from",
        "at accept",
        "rpc.max_connections",
    ])
    .await;
    // One closes: the next attempt is admitted.
    let first = clients.remove(0);
    first.shutdown();
    first.await_termination().await;
    wait_until(
        "the server to forget the closed connection",
        Duration::from_secs(5),
        || server.connections().len() < 2,
    )
    .await;
    let r = third.endpoint_ref::<TestMsg>(&addr, "test");
    assert_eq!(r.ask(Echo("now".into())).await.unwrap(), "now");
    third.shutdown();
    server.shutdown();
}
