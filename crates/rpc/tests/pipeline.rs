//! `Pipeline` over real TCP on 127.0.0.1: replies come in push order and typed, the
//! window bounds what is outstanding, a request that is never answered times out
//! (paused tokio time) without holding up the ones after it, a full inbox answers
//! `Busy` in place, a peer that stops reading makes pushes wait for room and then fail
//! as not delivered (the queue held to its budget), a connection that dies fails every
//! outstanding request (none left hanging), sealed connections work, and a pipeline to
//! a local endpoint behaves the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use flint_rpc::{
    handshake, AskError, Context, Endpoint, Pipeline, Reply, RpcAddress, RpcEnv, Secret,
    MAX_PIPELINE_WINDOW,
};
use tokio::net::TcpListener;

/// Takes every result out of `p`, in order, with a deadline for the whole.
async fn drain<Q>(p: &mut Pipeline<TestMsg, Q>) -> Vec<Result<Q::Reply, AskError>>
where
    Q: flint_rpc::Ask + Into<TestMsg>,
{
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while p.next_batch(&mut out).await > 0 {}
    })
    .await
    .expect("the pipeline's results did not all arrive within 60 s");
    out
}

#[tokio::test]
async fn replies_come_in_push_order_with_the_window_kept() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let mut p = r.pipeline::<Echo>(16);
    assert_eq!(p.window(), 16);
    let mut asks = (0..10_000u32).map(|i| Echo(format!("{i}")));
    // A push takes at most the window's room and leaves the rest of the iterator.
    assert_eq!(p.push_batch(&mut asks).await, 16);
    assert_eq!(p.push_batch(&mut asks).await, 0);
    assert_eq!(p.outstanding(), 16);
    let mut got = Vec::new();
    let mut next = 0u32;
    while p.next_batch(&mut got).await > 0 {
        for reply in got.drain(..) {
            assert_eq!(reply.unwrap(), format!("{next}"));
            next += 1;
        }
        assert!(p.outstanding() <= 16);
        p.push_batch(&mut asks).await;
        assert!(p.outstanding() <= 16);
    }
    assert_eq!(next, 10_000);
    assert!(p.next().await.is_none(), "nothing is outstanding");
    // Windows are clamped to 1..=MAX_PIPELINE_WINDOW.
    assert_eq!(r.pipeline::<Echo>(0).window(), 1);
    assert_eq!(r.pipeline::<Echo>(usize::MAX).window(), MAX_PIPELINE_WINDOW);
    client.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn failures_and_large_requests_keep_their_place() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let mut conf = quick_conf();
    conf.max_message_size = 4 << 20;
    let max = conf.max_message_size;
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let mut p = r.pipeline::<Blob>(64);
    // Small, large (a frame of its own), too large for rpc.message.max_size, small.
    let sizes = [10usize, 100_000, max + 1, 20, 1_000_000, 1];
    assert_eq!(
        p.push_batch(sizes.iter().map(|&n| Blob(vec![7; n]))).await,
        sizes.len()
    );
    let got = drain(&mut p).await;
    assert_eq!(got.len(), sizes.len());
    for (i, (&n, g)) in sizes.iter().zip(&got).enumerate() {
        if n > max {
            assert!(
                matches!(g, Err(AskError::NotDelivered { reason, .. }) if reason.contains("rpc.message.max_size")),
                "request {i}: {g:?}"
            );
        } else {
            assert!(
                matches!(g, Ok(m) if *m == n as u64),
                "request {i} of {n} bytes: {g:?}"
            );
        }
    }
    // A handler's failure comes in its place too.
    let mut p = r.pipeline::<Fail>(4);
    p.push_batch([Fail("one".into()), Fail("two".into())]).await;
    let got = drain(&mut p).await;
    assert!(
        matches!(&got[0], Err(AskError::Remote { message, .. }) if message == "one"),
        "{got:?}"
    );
    assert!(
        matches!(&got[1], Err(AskError::Remote { message, .. }) if message == "two"),
        "{got:?}"
    );
    client.shutdown();
    server.shutdown();
}

/// A request that is never answered times out at its deadline (paused time: no real
/// waiting); requests pushed after it are answered, and the pipeline goes on.
#[tokio::test]
async fn an_unanswered_request_times_out_at_its_deadline_and_the_rest_go_on() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    // Connect in real time first.
    assert_eq!(r.ask(Echo("up".into())).await.unwrap(), "up");
    let mut held = r.pipeline::<Hold>(4).with_timeout(Duration::from_secs(30));
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    assert!(held.push(Hold).await);
    let e = held.next().await.expect("one outstanding").unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(&e, AskError::Timeout { after, setting, .. }
            if *after == Duration::from_secs(30) && setting.contains("Pipeline::with_timeout")),
        "{e}"
    );
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "the timeout fired after {waited:?} instead of 30 s"
    );
    assert_eq!(held.outstanding(), 0);
    tokio::time::resume();
    // Mixed: an answered request after an unanswered one is delivered after its
    // predecessor's timeout, in order.
    let mut p = r.pipeline::<Echo>(4).with_timeout(Duration::from_secs(30));
    assert!(p.push(Echo("after".into())).await);
    assert_eq!(p.next().await.unwrap().unwrap(), "after");
    client.shutdown();
    server.shutdown();
}

/// A short real-time deadline for the held request; the answered one pushed after it
/// (with a longer deadline) still arrives, after the timeout, in its place.
#[tokio::test]
async fn a_timed_out_request_does_not_take_the_replies_after_it() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let mut held = r
        .pipeline::<Hold>(4)
        .with_timeout(Duration::from_millis(300));
    let t = std::time::Instant::now();
    held.push_batch([Hold, Hold]).await;
    let got = drain(&mut held).await;
    let took = t.elapsed();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|g| matches!(g, Err(AskError::Timeout { .. }))));
    assert!(
        took >= Duration::from_millis(300),
        "timed out early: {took:?}"
    );
    // The connection still serves pipelines.
    let mut p = r.pipeline::<Echo>(2);
    p.push(Echo("still".into())).await;
    assert_eq!(p.next().await.unwrap().unwrap(), "still");
    client.shutdown();
    server.shutdown();
}

struct Slow;

impl Endpoint for Slow {
    type Msg = TestMsg;
    fn receive(&mut self, _: &Context<TestMsg>, _: TestMsg) {}
    fn receive_and_reply(&mut self, _: &Context<TestMsg>, msg: TestMsg, reply: Reply) {
        // Simulated work: the inbox fills while this runs.
        std::thread::sleep(Duration::from_millis(2));
        if let TestMsg::Blob(b) = msg {
            reply.send(b.0.len() as u64)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_answers_busy_in_place() {
    let mut conf = quick_conf();
    conf.max_inbox_bytes = 64 * 1024;
    let (server, addr, _) = server_with_test_endpoint(conf).await;
    server.setup_endpoint("slow", Slow).unwrap();
    let client = RpcEnv::client(quick_conf()).unwrap();
    let slow = client.endpoint_ref::<TestMsg>(&addr, "slow");
    let mut p = slow.pipeline::<Blob>(400);
    assert_eq!(
        p.push_batch((0..400).map(|_| Blob(vec![2u8; 4096]))).await,
        400
    );
    let got = drain(&mut p).await;
    assert_eq!(got.len(), 400);
    let mut busy = 0;
    for g in &got {
        match g {
            Ok(n) => assert_eq!(*n, 4096),
            Err(AskError::Busy { reason, .. }) => {
                assert!(reason.contains("rpc.endpoint.max_queued_bytes"), "{reason}");
                busy += 1;
            }
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    assert!(busy > 0, "no pipelined ask was refused as busy");
    assert!(got[0].is_ok(), "the first request found an empty inbox");
    client.shutdown();
    server.shutdown();
}

/// A raw server that completes the handshake and then never reads again.
async fn deaf_server() -> (RpcAddress, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = RpcAddress::new("127.0.0.1", listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        handshake::server(&mut s, None).await.unwrap();
        std::future::pending::<()>().await;
        drop(s);
    });
    (addr, task)
}

/// Pushing to a peer that does not read waits for room in the connection's budget
/// until the deadline, then fails what it could not queue as not delivered; the
/// queue never holds more than its budget.
#[tokio::test]
async fn a_peer_that_does_not_read_makes_pushes_wait_then_fail_not_delivered() {
    let (addr, deaf) = deaf_server().await;
    let mut conf = quick_conf();
    conf.max_queued_bytes = 256 * 1024;
    let budget = conf.max_queued_bytes;
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let mut p = r
        .pipeline::<Blob>(10_000)
        .with_timeout(Duration::from_millis(500));
    let t = std::time::Instant::now();
    let pushed = tokio::time::timeout(
        Duration::from_secs(30),
        p.push_batch((0..10_000).map(|_| Blob(vec![1u8; 4000]))),
    )
    .await
    .expect("push_batch did not give up at its deadline");
    let took = t.elapsed();
    assert_eq!(pushed, 10_000);
    assert!(
        took >= Duration::from_millis(400),
        "push_batch did not wait for room: {took:?}"
    );
    let queued: usize = client.connections().iter().map(|c| c.queued_bytes).sum();
    assert!(
        queued <= budget,
        "{queued} bytes queued against a budget of {budget}"
    );
    let got = drain(&mut p).await;
    assert_eq!(got.len(), 10_000);
    let not_delivered = got
        .iter()
        .filter(|g| matches!(g, Err(AskError::NotDelivered { reason, .. }) if reason.contains("rpc.connection.max_queued_bytes")))
        .count();
    let timed_out = got
        .iter()
        .filter(|g| matches!(g, Err(AskError::Timeout { .. })))
        .count();
    // Loopback socket buffers take some (those time out unanswered); most cannot be
    // queued at all.
    assert!(not_delivered >= 5_000, "{not_delivered} not delivered");
    assert_eq!(not_delivered + timed_out, 10_000, "{got:?}");
    client.shutdown();
    deaf.abort();
}

/// The server goes away with requests outstanding: every one fails at once with a
/// clear error, none waits for its deadline. Connection lost or not delivered — or,
/// for a request the endpoint held when the server stopped it, the endpoint's
/// "dropped the request without replying" when that failure reaches the client
/// before the connection closes (a race of the shutdown).
#[tokio::test]
async fn a_lost_connection_fails_every_outstanding_request() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let mut p = r
        .pipeline::<Hold>(1000)
        .with_timeout(Duration::from_secs(600));
    assert_eq!(p.push_batch((0..1000).map(|_| Hold)).await, 1000);
    // Wait until the server holds some of them, then take it away.
    wait_until(
        "the requests to be written",
        Duration::from_secs(10),
        || client.connections().iter().all(|c| c.queued_bytes == 0),
    )
    .await;
    server.shutdown();
    let t = std::time::Instant::now();
    let got = drain(&mut p).await;
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the failures took {:?}",
        t.elapsed()
    );
    assert_eq!(got.len(), 1000);
    for g in &got {
        match g {
            Err(AskError::ConnectionLost { reason, .. }) => assert!(!reason.is_empty()),
            Err(AskError::NotDelivered { .. }) => {}
            Err(AskError::Remote { message, .. })
                if message.contains("dropped the request without replying") => {}
            other => panic!("expected a connection failure, got {other:?}"),
        }
    }
    // A new push after the loss finds no server and fails in place too.
    p.push(Hold).await;
    let e = drain(&mut p).await.pop().unwrap().unwrap_err();
    assert!(e.is_not_delivered(), "{e}");
    client.shutdown();
}

#[tokio::test]
async fn sealed_connections_carry_pipelines() {
    let mut conf = quick_conf();
    conf.secret = Some(Secret::new(b"pipeline test secret".to_vec()));
    let (server, addr, _) = server_with_test_endpoint(conf.clone()).await;
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let mut p = r.pipeline::<Echo>(32);
    let mut asks = (0..2000u32).map(|i| Echo(format!("sealed {i}")));
    p.push_batch(&mut asks).await;
    let mut got = Vec::new();
    let mut n = 0u32;
    while p.next_batch(&mut got).await > 0 {
        for g in got.drain(..) {
            assert_eq!(g.unwrap(), format!("sealed {n}"));
            n += 1;
        }
        p.push_batch(&mut asks).await;
    }
    assert_eq!(n, 2000);
    client.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn a_pipeline_to_a_local_endpoint_behaves_the_same() {
    let (server, _, _) = server_with_test_endpoint(quick_conf()).await;
    let r = server.local_ref::<TestMsg>("test").unwrap();
    let mut p = r.pipeline::<Echo>(8);
    let mut asks = (0..100u32).map(|i| Echo(format!("{i}")));
    p.push_batch(&mut asks).await;
    assert_eq!(p.outstanding(), 8);
    let mut got = Vec::new();
    let mut n = 0u32;
    while p.next_batch(&mut got).await > 0 {
        for g in got.drain(..) {
            assert_eq!(g.unwrap(), format!("{n}"));
            n += 1;
        }
        p.push_batch(&mut asks).await;
    }
    assert_eq!(n, 100);
    server.shutdown();
}
