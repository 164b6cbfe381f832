//! Inline endpoints over real TCP on 127.0.0.1: answered on the connection's reader
//! task, from one connection or several at once; a panicking handler fails its ask and
//! the connection (and its other asks) go on; local asks; a stopped inline endpoint
//! refuses as not delivered; back-pressure: a client that never reads its replies is
//! cut off while another is served; large pipelined frames written directly and by the
//! writer task arrive whole and in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use flint_rpc::{AskError, Context, InlineEndpoint, Reply, RpcConf, RpcEnv};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::AsyncWriteExt;

#[derive(Default)]
struct Inline {
    total: AtomicU64,
}

impl InlineEndpoint for Inline {
    type Msg = TestMsg;

    fn receive(&self, _: &Context<TestMsg>, msg: TestMsg) {
        if let TestMsg::Add(n) = msg {
            self.total.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn receive_and_reply(&self, ctx: &Context<TestMsg>, msg: TestMsg, reply: Reply) {
        match msg {
            TestMsg::Get(_) => reply.send(self.total.load(Ordering::Relaxed)),
            TestMsg::Echo(Echo(s)) => {
                // The sender is known to a remote handler, not to a local one.
                let from = ctx.sender().map(|a| a.to_string()).unwrap_or_default();
                reply.send(format!("{s}{}", if from.is_empty() { "" } else { "!" }))
            }
            TestMsg::Fail(Fail(why)) => reply.fail(why),
            TestMsg::Panic(_) => panic!("asked to panic"),
            TestMsg::Blob(Blob(b)) => reply.send(b.len() as u64),
            _ => reply.fail("not here"),
        }
    }
}

async fn inline_server(conf: RpcConf) -> (RpcEnv, Arc<Inline>) {
    let env = server(conf).await;
    let ep = Arc::new(Inline::default());
    env.setup_inline_endpoint("inline", ep.clone()).unwrap();
    (env, ep)
}

#[tokio::test]
async fn an_inline_endpoint_answers_sends_and_pipelined_asks_in_order() {
    let (server, _) = inline_server(quick_conf()).await;
    let addr = server.address().unwrap().clone();
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client
        .setup_endpoint_ref::<TestMsg>(&addr, "inline")
        .await
        .unwrap();
    for i in 1..=1000u64 {
        r.send(TestMsg::Add(i)).unwrap();
    }
    // One connection, FIFO, handled on its reader: the ask sees every add before it.
    assert_eq!(r.ask(Get).await.unwrap(), 500_500);
    assert_eq!(r.ask(Echo("hi".into())).await.unwrap(), "hi!");
    let mut asks: FuturesUnordered<_> = (0..2000)
        .map(|i| {
            let r = r.clone();
            async move { (i, r.ask(Echo(format!("{i}"))).await) }
        })
        .collect();
    let mut n = 0;
    while let Some((i, got)) = asks.next().await {
        assert_eq!(got.unwrap(), format!("{i}!"));
        n += 1;
    }
    assert_eq!(n, 2000);
    client.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn a_panicking_inline_handler_fails_its_ask_and_the_connection_goes_on() {
    let (server, _) = inline_server(quick_conf()).await;
    let addr = server.address().unwrap().clone();
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "inline");
    assert_eq!(r.ask(Echo("before".into())).await.unwrap(), "before!");
    let conns = client.connections().len();
    let e = r.ask(Panic).await.unwrap_err();
    assert!(
        matches!(&e, AskError::Remote { message, .. } if message.contains("dropped the request without replying")),
        "{e}"
    );
    let e = r.ask(Fail("disk full".into())).await.unwrap_err();
    assert!(
        matches!(&e, AskError::Remote { message, .. } if message == "disk full"),
        "{e}"
    );
    // The same connection answers after the panic: the reader did not die.
    assert_eq!(r.ask(Echo("after".into())).await.unwrap(), "after!");
    assert_eq!(client.connections().len(), conns);
    client.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn local_asks_reach_an_inline_endpoint_and_a_stopped_one_refuses() {
    let (server, ep) = inline_server(quick_conf()).await;
    let addr = server.address().unwrap().clone();
    let local = server.local_ref::<TestMsg>("inline").expect("local ref");
    local.send(TestMsg::Add(5)).unwrap();
    assert_eq!(local.ask(Get).await.unwrap(), 5);
    assert_eq!(local.ask(Echo("x".into())).await.unwrap(), "x");
    assert_eq!(ep.total.load(Ordering::Relaxed), 5);

    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "inline");
    assert_eq!(r.ask(Get).await.unwrap(), 5);
    server.stop_endpoint("inline");
    let e = r.ask(Get).await.unwrap_err();
    assert!(matches!(e, AskError::NotDelivered { .. }), "{e}");
    wait_until(
        "the stopped endpoint to be unregistered",
        Duration::from_secs(10),
        || server.protocol_of("inline").is_none(),
    )
    .await;
    client.shutdown();
    server.shutdown();
}

/// A peer that writes requests to an inline endpoint and never reads the replies is
/// cut off once they pass the connection's budget; a well-behaved client is answered
/// meanwhile and afterwards.
#[tokio::test]
async fn a_client_that_never_reads_inline_replies_is_cut_off() {
    let mut conf = quick_conf();
    conf.max_queued_bytes = 256 * 1024;
    let (server, _) = inline_server(conf).await;
    let addr = server.address().unwrap().clone();
    let good = RpcEnv::client(quick_conf()).unwrap();
    let r = good.endpoint_ref::<TestMsg>(&addr, "inline");
    assert_eq!(r.ask(Echo("a".into())).await.unwrap(), "a!");

    // A hand-built client: handshake with no secret, then requests, never reading.
    let hp = addr.host_port();
    let writer = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(hp).await.unwrap();
        flint_rpc::handshake::client(&mut s, None, None)
            .await
            .unwrap();
        let body = postcard::to_allocvec(&TestMsg::Blob(Blob(vec![1; 16]))).unwrap();
        let mut buf = Vec::new();
        for id in 0..20_000_000u64 {
            let f = flint_rpc::frame::encode_raw(
                &flint_rpc::frame::Header::Request {
                    id,
                    to: "inline",
                    protocol: <TestMsg as flint_rpc::Protocol>::ID,
                    reply: flint_rpc::frame::type_id_of::<u64>(),
                },
                &body,
            )
            .unwrap();
            buf.extend_from_slice(&f);
            if buf.len() > 64 * 1024 {
                if s.write_all(&buf).await.is_err() {
                    // Cut off: the server closed the connection.
                    return true;
                }
                buf.clear();
            }
        }
        false
    });
    let cut = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the non-reading client was not cut off within 60 s")
        .unwrap();
    assert!(cut, "the non-reading client was never cut off");
    assert_eq!(r.ask(Echo("b".into())).await.unwrap(), "b!");
    good.shutdown();
    server.shutdown();
}

/// Echoes, pausing its connection's reader for a millisecond every 50 requests: a peer
/// that falls behind, so that the client's socket fills.
struct SlowEcho(AtomicU64);

impl InlineEndpoint for SlowEcho {
    type Msg = TestMsg;

    fn receive_and_reply(&self, _: &Context<TestMsg>, msg: TestMsg, reply: Reply) {
        if self.0.fetch_add(1, Ordering::Relaxed) % 50 == 49 {
            // Emulated slowness of the peer (not synchronization).
            std::thread::sleep(Duration::from_millis(1));
        }
        match msg {
            TestMsg::Echo(Echo(s)) => reply.send(s),
            _ => reply.fail("not here"),
        }
    }
}

/// Requests and replies big enough to fill the socket buffers, with both peers falling
/// behind now and then (the server pauses its reader, the client runs on one thread and
/// checks replies between reads): direct writes by the client's pushes and the server's
/// reader take turns with the writer tasks, segments and large frames alike. Every reply
/// must come back whole and in order, plain and sealed. (Whether a direct write is cut
/// short in a given run depends on timing; `put_back`'s unit test covers that case
/// exactly.)
#[test]
fn direct_writes_and_the_writer_task_keep_every_frame_whole_and_in_order() {
    for sealed in [false, true] {
        let mut conf = quick_conf();
        if sealed {
            conf.secret = Some(flint_rpc::Secret::new("direct write test"));
        }
        // Room for all that is outstanding: a client that falls behind is not cut off.
        conf.max_queued_bytes = 256 << 20;
        // The server on a runtime of its own.
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = server_rt.block_on(async {
            let env = server(conf.clone()).await;
            env.setup_inline_endpoint("slow", Arc::new(SlowEcho(AtomicU64::new(0))))
                .unwrap();
            env
        });
        let addr = server.address().unwrap().clone();
        let client_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        client_rt.block_on(async {
            let client = RpcEnv::client(conf).unwrap();
            let r = client
                .setup_endpoint_ref::<TestMsg>(&addr, "slow")
                .await
                .unwrap();
            let text = |i: usize| {
                // Every fifth request is a large frame (queued on its own); the others
                // are packed into segments.
                let len = if i % 5 == 0 {
                    200_000
                } else {
                    3_000 + i % 1000
                };
                char::from(b'a' + (i % 26) as u8).to_string().repeat(len)
            };
            let total = 2000usize;
            // ~40 MB outstanding each way: more than the sockets hold.
            let mut p = r.pipeline::<Echo>(1024);
            let mut next = 0usize;
            let mut got = Vec::new();
            let mut checked = 0usize;
            while checked < total {
                let room = p.room().min(total - next);
                let pushed = p
                    .push_batch((next..next + room).map(|i| Echo(text(i))))
                    .await;
                next += pushed;
                got.clear();
                p.next_batch(&mut got).await;
                for reply in got.drain(..) {
                    let reply = reply
                        .unwrap_or_else(|e| panic!("request {checked} (sealed {sealed}): {e}"));
                    assert!(
                        reply == text(checked),
                        "reply {checked} (sealed {sealed}) differs"
                    );
                    checked += 1;
                }
            }
            client.shutdown();
        });
        server.shutdown();
        server_rt.block_on(server.await_termination());
    }
}
