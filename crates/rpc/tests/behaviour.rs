//! The RPC environment's behaviour over real TCP on 127.0.0.1: send, ask, lookup,
//! timeouts, handler failures, refs inside messages, connection events, outbox
//! failure and reconnection, local delivery, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use flint_rpc::{AskError, Endpoint, RpcAddress, RpcConf, RpcEnv, RpcError};
use serde::{Deserialize, Serialize};

#[tokio::test]
async fn send_and_ask_between_two_processes_worth_of_envs() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::server(quick_conf(), "127.0.0.1", 0).await.unwrap();
    let r = client
        .setup_endpoint_ref::<TestMsg>(&addr, "test")
        .await
        .unwrap();
    assert_eq!(
        r.to_string(),
        format!("flint://test@127.0.0.1:{}", addr.port)
    );
    for i in 1..=1000u64 {
        r.send(TestMsg::Add(i)).unwrap();
    }
    // One connection, FIFO: the ask sees every add before it.
    assert_eq!(r.ask(Get).await.unwrap(), 500_500);
    assert_eq!(r.ask(Echo("hi".into())).await.unwrap(), "hi");
    client.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn lookup_of_a_missing_endpoint_names_it_and_the_address() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let e = client
        .setup_endpoint_ref::<TestMsg>(&addr, "nope")
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::EndpointNotFound { .. }));
    assert_eq!(
        e.to_string(),
        format!("no endpoint named nope at flint://127.0.0.1:{}", addr.port)
    );
    server.shutdown();
}

#[derive(Debug, Serialize, Deserialize)]
enum OtherMsg {
    Ping(Ping),
}
impl flint_rpc::Protocol for OtherMsg {
    const NAME: &'static str = "flint.test-other/1";
}
#[derive(Debug, Serialize, Deserialize)]
struct Ping;
impl flint_rpc::Ask for Ping {
    type Reply = ();
}
impl From<Ping> for OtherMsg {
    fn from(p: Ping) -> Self {
        OtherMsg::Ping(p)
    }
}

#[tokio::test]
async fn lookup_with_the_wrong_protocol_says_which_it_speaks() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let e = client
        .setup_endpoint_ref::<OtherMsg>(&addr, "test")
        .await
        .unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("flint.test/1") && s.contains("flint.test-other/1"),
        "{s}"
    );
    // Unverified, the request reaches the server and is refused there by protocol.
    let r = client.endpoint_ref::<OtherMsg>(&addr, "test");
    let e = r.ask(Ping).await.unwrap_err();
    assert!(matches!(e, AskError::Remote { .. }), "{e}");
    assert!(e.to_string().contains("speaks flint.test/1"), "{e}");
    server.shutdown();
}

#[tokio::test]
async fn ask_timeout_names_the_setting() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let conf = RpcConf::from_conf(
        &flint_conf::Conf::new()
            .set("auth.enabled", "false")
            .set("rpc.ask_timeout", "200ms"),
    )
    .unwrap();
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let start = Instant::now();
    let e = r.ask(Hold).await.unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(matches!(e, AskError::Timeout { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("this timeout is controlled by rpc.ask_timeout"),
        "{e}"
    );
    // Falls back to network.timeout and says so.
    let conf = RpcConf::from_conf(
        &flint_conf::Conf::new()
            .set("auth.enabled", "false")
            .set("network.timeout", "100ms"),
    )
    .unwrap();
    let client2 = RpcEnv::client(conf).unwrap();
    let e = client2
        .endpoint_ref::<TestMsg>(&addr, "test")
        .ask(Hold)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("controlled by network.timeout"),
        "{e}"
    );
    // The endpoint is unharmed.
    assert_eq!(r.ask(Echo("x".into())).await.unwrap(), "x");
    server.shutdown();
}

#[tokio::test]
async fn handler_errors_and_panics_come_back_as_remote_errors() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let e = r.ask(Fail("disk full".into())).await.unwrap_err();
    assert!(
        matches!(&e, AskError::Remote { message, .. } if message == "disk full"),
        "{e}"
    );
    let e = r.ask(Panic).await.unwrap_err();
    assert!(matches!(e, AskError::Remote { .. }), "{e}");
    // Same endpoint keeps serving after its handler panicked.
    assert_eq!(r.ask(Echo("after".into())).await.unwrap(), "after");
    server.shutdown();
}

#[tokio::test]
async fn local_delivery_skips_serialization() {
    #[derive(Debug, Deserialize)]
    enum Unserializable {
        Get(GetLocal),
    }
    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "this message must never be serialized",
            ))
        }
    }
    impl flint_rpc::Protocol for Unserializable {
        const NAME: &'static str = "flint.test-local/1";
    }
    #[derive(Debug, Deserialize, Serialize)]
    struct GetLocal;
    impl flint_rpc::Ask for GetLocal {
        type Reply = u32;
    }
    impl From<GetLocal> for Unserializable {
        fn from(g: GetLocal) -> Self {
            Unserializable::Get(g)
        }
    }
    struct Local;
    impl Endpoint for Local {
        type Msg = Unserializable;
        fn receive_and_reply(
            &mut self,
            _: &flint_rpc::Context<Unserializable>,
            _: Unserializable,
            r: flint_rpc::Reply,
        ) {
            r.send(7u32)
        }
    }
    let env = server(quick_conf()).await;
    let addr = env.address().unwrap().clone();
    let r = env.setup_endpoint("local", Local).unwrap();
    assert_eq!(r.ask(GetLocal).await.unwrap(), 7);
    // A ref made from our own address is local too.
    let r2 = env
        .setup_endpoint_ref::<Unserializable>(&addr, "local")
        .await
        .unwrap();
    assert_eq!(r2.ask(GetLocal).await.unwrap(), 7);
    // Over the network the same message cannot go.
    let other = RpcEnv::client(quick_conf()).unwrap();
    let e = other
        .endpoint_ref::<Unserializable>(&addr, "local")
        .ask(GetLocal)
        .await
        .unwrap_err();
    assert!(
        e.is_not_delivered() && e.to_string().contains("cannot encode message"),
        "{e}"
    );
    env.shutdown();
}

#[tokio::test]
async fn refs_travel_in_messages_and_reach_a_client_only_env() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    // The client listens nowhere: the server can only answer over the client's connection.
    let client = RpcEnv::client(quick_conf()).unwrap();
    let (ep, _) = TestEndpoint::with_events();
    let mine = client.setup_endpoint("callback", ep).unwrap();
    assert!(mine.rpc_address().is_none());
    let remote = client
        .setup_endpoint_ref::<TestMsg>(&addr, "test")
        .await
        .unwrap();
    // The server asks our endpoint Echo through the ref, then sends it an Add.
    remote
        .ask(Call(mine.clone(), "hello".into()))
        .await
        .unwrap();
    let expected = "hello via test".len() as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = mine.ask(Get).await.unwrap();
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "callback never arrived (total {got})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A server-mode env's ref travels as its address.
    let other = common::server(quick_conf()).await;
    let (ep2, _) = TestEndpoint::with_events();
    let theirs = other.setup_endpoint("callback2", ep2).unwrap();
    remote.ask(Call(theirs.clone(), "x".into())).await.unwrap();
    client.shutdown();
    other.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn every_endpoint_hears_connects_and_disconnects() {
    let (server, addr, events) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::server(quick_conf(), "127.0.0.1", 0).await.unwrap();
    let client_addr = client.address().unwrap().clone();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    r.ask(Echo("x".into())).await.unwrap();
    wait_until("on_connected", Duration::from_secs(5), || {
        events
            .lock()
            .unwrap()
            .contains(&Seen::Connected(client_addr.clone()))
    })
    .await;
    client.shutdown();
    client.await_termination().await;
    wait_until("on_disconnected", Duration::from_secs(5), || {
        events
            .lock()
            .unwrap()
            .contains(&Seen::Disconnected(client_addr.clone()))
    })
    .await;
    server.shutdown();
}

#[tokio::test]
async fn failed_connect_fails_every_queued_message_then_reconnects() {
    // Reserve a port, then free it so nothing listens there.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let addr = RpcAddress::new("127.0.0.1", port);
    let client = RpcEnv::client(quick_conf()).unwrap();
    let (watcher, events) = TestEndpoint::with_events();
    client.setup_endpoint("watcher", watcher).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let (a, b, c) = tokio::join!(r.ask(Get), r.ask(Echo("1".into())), r.ask(Get));
    for e in [a.unwrap_err(), b.unwrap_err(), c.unwrap_err()] {
        assert!(e.is_not_delivered(), "{e}");
        assert!(e.to_string().contains("cannot connect"), "{e}");
    }
    wait_until("on_network_error", Duration::from_secs(5), || {
        events
            .lock()
            .unwrap()
            .contains(&Seen::NetworkError(addr.clone()))
    })
    .await;
    // Now a server appears on that port: the next ask opens a new connection.
    let server = RpcEnv::server(quick_conf(), "127.0.0.1", port)
        .await
        .unwrap();
    server
        .setup_endpoint("test", TestEndpoint::default())
        .unwrap();
    assert_eq!(r.ask(Echo("back".into())).await.unwrap(), "back");
    server.shutdown();
}

#[tokio::test]
async fn shutdown_runs_on_stop_and_fails_pending_asks() {
    let (server, addr, events) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    r.ask(Echo("warm".into())).await.unwrap();
    let pending = tokio::spawn(async move { r.ask(Hold).await });
    wait_until("the held ask to arrive", Duration::from_secs(5), || {
        // Started, Connected, and the held request is in the endpoint by now or soon.
        events.lock().unwrap().len() >= 2
    })
    .await;
    let start = Instant::now();
    server.shutdown();
    server.await_termination().await;
    assert!(events.lock().unwrap().contains(&Seen::Stopped));
    let e = pending.await.unwrap().unwrap_err();
    assert!(
        matches!(e, AskError::ConnectionLost { .. } | AskError::Remote { .. }),
        "{e}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "pending ask took {:?}",
        start.elapsed()
    );
    // After shutdown nothing is accepted.
    let e = server
        .setup_endpoint("late", TestEndpoint::default())
        .unwrap_err();
    assert!(e.to_string().contains("stopped"), "{e}");
    client.shutdown();
}

#[tokio::test]
async fn stopping_one_endpoint_leaves_the_rest() {
    let (server, addr, events) = server_with_test_endpoint(quick_conf()).await;
    server
        .setup_endpoint("other", TestEndpoint::default())
        .unwrap();
    server.stop_endpoint("test");
    wait_until("on_stop", Duration::from_secs(5), || {
        events.lock().unwrap().contains(&Seen::Stopped)
    })
    .await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let e = client
        .setup_endpoint_ref::<TestMsg>(&addr, "test")
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::EndpointNotFound { .. }), "{e}");
    let other = client
        .setup_endpoint_ref::<TestMsg>(&addr, "other")
        .await
        .unwrap();
    assert_eq!(other.ask(Echo("ok".into())).await.unwrap(), "ok");
    // The name is free again.
    server
        .setup_endpoint("test", TestEndpoint::default())
        .unwrap();
    let e = server
        .setup_endpoint("test", TestEndpoint::default())
        .unwrap_err();
    assert!(matches!(e, RpcError::NameTaken(_)));
    server.shutdown();
}

#[tokio::test]
async fn oversized_messages_are_refused_before_sending() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let mut conf = quick_conf();
    conf.max_message_size = 64 * 1024;
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let e = r.ask(Blob(vec![0; 100 * 1024])).await.unwrap_err();
    assert!(
        e.is_not_delivered() && e.to_string().contains("rpc.message.max_size"),
        "{e}"
    );
    assert_eq!(r.ask(Blob(vec![0; 1000])).await.unwrap(), 1000);
    server.shutdown();
}

#[tokio::test]
async fn ask_queues_its_request_when_called_not_when_awaited() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    let local = server.local_ref::<TestMsg>("test").unwrap();
    for (r, name) in [(r, "remote"), (local, "local")] {
        let before = r.ask(Get).await.unwrap();
        r.send(TestMsg::Add(1)).unwrap();
        let pending = r.ask(Get);
        r.send(TestMsg::Add(10)).unwrap();
        // Awaited only now, in another task: it still saw exactly the first add.
        let seen = tokio::spawn(pending).await.unwrap().unwrap();
        assert_eq!(seen, before + 1, "{name}");
        assert_eq!(r.ask(Get).await.unwrap(), before + 11, "{name}");
    }
    server.shutdown();
}

#[tokio::test]
async fn flush_writes_every_queued_send_before_shutdown() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client
        .setup_endpoint_ref::<TestMsg>(&addr, "test")
        .await
        .unwrap();
    for i in 1..=20_000u64 {
        r.send(TestMsg::Add(i)).unwrap();
    }
    assert!(
        client.flush(Duration::from_secs(10)).await,
        "queued sends left"
    );
    client.shutdown();
    // A second client reads the sum: every add reached the server before the first
    // client's connection closed.
    let reader = RpcEnv::client(quick_conf()).unwrap();
    let r2 = reader
        .setup_endpoint_ref::<TestMsg>(&addr, "test")
        .await
        .unwrap();
    let want = 20_000u64 * 20_001 / 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = r2.ask(Get).await.unwrap();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sum {got}, want {want}: sends were lost"
        );
        tokio::task::yield_now().await;
    }
    reader.shutdown();
    server.shutdown();
}
