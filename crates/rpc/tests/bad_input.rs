//! Bad input at the server: wrong or missing secret, wrong protocol version, garbage,
//! an oversized frame, a truncated frame, a malformed header, a silent peer, unknown
//! endpoints and unknown message types. Each is refused with a log line naming the
//! peer and the reason, and the server then still answers another client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use flint_rpc::{handshake, AskError, RpcAddress, RpcConf, RpcEnv, Secret};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn secret_conf(secret: &str) -> RpcConf {
    let mut c = quick_conf();
    c.secret = Some(Secret::new(secret.as_bytes()));
    c
}

async fn raw(addr: &RpcAddress) -> (TcpStream, String) {
    let s = TcpStream::connect(addr.host_port()).await.unwrap();
    let local = s.local_addr().unwrap().to_string();
    (s, local)
}

#[tokio::test]
async fn wrong_secret_is_refused_and_logged() {
    logs();
    let (server, addr, _) = server_with_test_endpoint(secret_conf("right")).await;
    let (mut s, local) = raw(&addr).await;
    let e = handshake::client(&mut s, Some(&Secret::new("wrong")), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authentication failed"), "{e}");
    let line = wait_for_log(&["refused connection from", &local, "wrong secret"]).await;
    assert!(line.contains("WARN"), "{line}");
    // Through the env, the caller sees it as not delivered, with the peer's reason.
    let client = RpcEnv::client(secret_conf("wrong")).unwrap();
    let err = client
        .endpoint_ref::<TestMsg>(&addr, "test")
        .ask(Get)
        .await
        .unwrap_err();
    assert!(matches!(err, AskError::NotDelivered { .. }), "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    still_serves(&addr, secret_conf("right")).await;
    server.shutdown();
}

#[tokio::test]
async fn missing_secret_is_refused_and_logged() {
    logs();
    let (server, addr, _) = server_with_test_endpoint(secret_conf("right")).await;
    let (mut s, local) = raw(&addr).await;
    let e = handshake::client(&mut s, None, None).await.unwrap_err();
    assert!(e.to_string().contains("auth.secret"), "{e}");
    wait_for_log(&["refused connection from", &local, "authentication required"]).await;
    still_serves(&addr, secret_conf("right")).await;
    server.shutdown();
}

#[tokio::test]
async fn a_client_with_a_secret_refuses_a_server_without_one() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(secret_conf("mine")).unwrap();
    let err = client
        .endpoint_ref::<TestMsg>(&addr, "test")
        .ask(Get)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not authenticate"), "{err}");
    still_serves(&addr, quick_conf()).await;
    server.shutdown();
}

#[tokio::test]
async fn wrong_protocol_version_is_refused_and_logged() {
    logs();
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let (mut s, local) = raw(&addr).await;
    let e = handshake::client_with_version(&mut s, None, None, 7)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("version mismatch"), "{e}");
    wait_for_log(&[
        "refused connection from",
        &local,
        "peer speaks v7, this node speaks v2",
    ])
    .await;
    still_serves(&addr, quick_conf()).await;
    server.shutdown();
}

#[tokio::test]
async fn garbage_bytes_are_refused_and_logged() {
    logs();
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let (mut s, local) = raw(&addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    wait_for_log(&["refused connection from", &local, "not a flint peer"]).await;
    still_serves(&addr, quick_conf()).await;
    server.shutdown();
    // Short garbage that looks like a small frame: bad magic. (A second refusal from
    // the same address within 10 s would be rate-limited, so use a fresh server.)
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let (mut s, local) = raw(&addr).await;
    s.write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    wait_for_log(&["refused connection from", &local, "bad magic"]).await;
    still_serves(&addr, quick_conf()).await;
    server.shutdown();
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    logs();
    let mut conf = quick_conf();
    conf.handshake_timeout.duration = Duration::from_millis(200);
    let (server, addr, _) = server_with_test_endpoint(conf).await;
    let (_s, local) = raw(&addr).await;
    wait_for_log(&["refused connection from", &local, "rpc.handshake_timeout"]).await;
    still_serves(&addr, quick_conf()).await;
    server.shutdown();
}

/// A raw connection that has completed the handshake, for sending bad frames.
async fn handshaken(addr: &RpcAddress) -> (TcpStream, String) {
    let (mut s, local) = raw(addr).await;
    handshake::client(&mut s, None, None).await.unwrap();
    (s, format!("flint://{local}"))
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    logs();
    let mut conf = quick_conf();
    conf.max_message_size = 64 * 1024;
    let (server, addr, _) = server_with_test_endpoint(conf).await;
    let (mut s, peer) = handshaken(&addr).await;
    s.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    s.write_all(&[0u8; 1024]).await.unwrap();
    wait_for_log(&[
        "closing connection with",
        &peer,
        "frame of 1048576 bytes exceeds the maximum of 65536",
    ])
    .await;
    still_serves(&addr, quick_conf()).await;
    server.shutdown();
}

#[tokio::test]
async fn a_truncated_frame_is_logged() {
    logs();
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let (mut s, peer) = handshaken(&addr).await;
    s.write_all(&100u32.to_be_bytes()).await.unwrap();
    s.write_all(&[1u8; 10]).await.unwrap();
    s.shutdown().await.unwrap();
    wait_for_log(&[
        "closing connection with",
        &peer,
        "in the middle of a frame (14 bytes of it received)",
    ])
    .await;
    still_serves(&addr, quick_conf()).await;
    server.shutdown();
}

#[tokio::test]
async fn a_malformed_header_is_logged() {
    logs();
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let (mut s, peer) = handshaken(&addr).await;
    // Variant index 200 does not exist.
    s.write_all(&[0, 0, 0, 3, 200, 1, 1]).await.unwrap();
    wait_for_log(&["closing connection with", &peer, "malformed frame header"]).await;
    still_serves(&addr, quick_conf()).await;
    server.shutdown();
}

#[tokio::test]
async fn unknown_endpoints_and_types_are_refused_and_logged() {
    logs();
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::server(quick_conf(), "127.0.0.1", 0).await.unwrap();
    let me = client.address().unwrap().to_string();
    // A request for an endpoint that does not exist: not delivered.
    let e = client
        .endpoint_ref::<TestMsg>(&addr, "ghost")
        .ask(Get)
        .await
        .unwrap_err();
    assert!(e.is_not_delivered(), "{e}");
    assert!(
        e.to_string().contains("no endpoint named \"ghost\" at"),
        "{e}"
    );
    wait_for_log(&["request from", &me, "refused: no endpoint named \"ghost\""]).await;
    // A one-way message for it: dropped with a log line.
    client
        .endpoint_ref::<TestMsg>(&addr, "ghost2")
        .send(TestMsg::Add(1))
        .unwrap();
    wait_for_log(&["message from", &me, "unknown endpoint \"ghost2\""]).await;
    // A message of a type the endpoint does not speak.
    #[derive(serde::Serialize, serde::Deserialize)]
    enum Stranger {
        Q(Q),
    }
    impl flint_rpc::Protocol for Stranger {
        const NAME: &'static str = "flint.test-stranger/1";
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Q;
    impl flint_rpc::Ask for Q {
        type Reply = ();
    }
    impl From<Q> for Stranger {
        fn from(q: Q) -> Self {
            Stranger::Q(q)
        }
    }
    let e = client
        .endpoint_ref::<Stranger>(&addr, "test")
        .ask(Q)
        .await
        .unwrap_err();
    assert!(matches!(e, AskError::Remote { .. }), "{e}");
    wait_for_log(&["request from", &me, "endpoint \"test\" speaks flint.test/1"]).await;
    client
        .endpoint_ref::<Stranger>(&addr, "test")
        .send(Stranger::Q(Q))
        .unwrap();
    wait_for_log(&["message from", &me, "unknown protocol"]).await;
    // A body that does not decode as the endpoint's type, under the right protocol id.
    let (mut s, peer) = handshaken(&addr).await;
    let frame = flint_rpc::frame::encode_raw(
        &flint_rpc::frame::Header::OneWay {
            to: "test",
            protocol: <TestMsg as flint_rpc::Protocol>::ID,
        },
        &[250, 250, 250],
    )
    .unwrap();
    s.write_all(&frame).await.unwrap();
    wait_for_log(&["dropping a message from", &peer, "cannot decode"]).await;
    still_serves(&addr, quick_conf()).await;
    client.shutdown();
    server.shutdown();
}
