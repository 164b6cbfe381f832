//! Integrity after the handshake, over real TCP through a relay that sits between a
//! client and a server: flipping one bit of a sealed record, replaying a record,
//! injecting a frame, or turning sealing off in the handshake each closes the
//! connection with a warning naming the peer, and nothing altered or injected is acted
//! on; an untouched relay works and carries no plaintext. Also: replies of the wrong
//! type are caught by name, and an unauthenticated peer's declared address never routes
//! other traffic to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use flint_rpc::frame::{self, Header};
use flint_rpc::{handshake, AskError, RpcAddress, RpcConf, RpcEnv, Secret};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn sealed_conf() -> RpcConf {
    let mut c = quick_conf();
    c.secret = Some(Secret::new("relay test secret"));
    c
}

/// What the relay does to the client → server direction.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Untouched,
    /// Flip one bit in the ciphertext of record 1.
    FlipBit,
    /// Forward record 1, then record 0 again.
    Replay,
    /// Forward record 1, then a plaintext frame of our own.
    Inject,
    /// Drop record 1 and forward the next one.
    Drop,
    /// Clear the "seal" flag in the client's first handshake frame.
    NoSeal,
}

struct Relay {
    addr: RpcAddress,
    /// Every byte the client sent, as forwarded.
    seen: Arc<Mutex<Vec<u8>>>,
    /// The relay's own address towards the server: how the server names the peer.
    upstream_local: Arc<Mutex<Option<String>>>,
}

async fn read_unit<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let n = u32::from_be_bytes(len) as usize;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await.ok()?;
    let mut unit = len.to_vec();
    unit.extend_from_slice(&body);
    Some(unit)
}

/// Accepts one connection and relays it to `server`, applying `mode` to the client's
/// bytes. Both directions are made of length-prefixed units: two handshake frames from
/// the client, then sealed records.
async fn relay(server: RpcAddress, mode: Mode, inject: Vec<u8>) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = RpcAddress::new("127.0.0.1", listener.local_addr().unwrap().port());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream_local = Arc::new(Mutex::new(None));
    let (seen2, local2) = (seen.clone(), upstream_local.clone());
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(server.host_port()).await.unwrap();
        *local2.lock().unwrap() = Some(upstream.local_addr().unwrap().to_string());
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut ur, &mut cw).await;
            let _ = cw.shutdown().await;
        });
        let mut index = 0usize; // units from the client; 0 and 1 are the handshake
        let mut first_record = None;
        while let Some(mut unit) = read_unit(&mut cr).await {
            let record = index.checked_sub(2);
            index += 1;
            if index == 1 && mode == Mode::NoSeal {
                // Hello's last byte is the seal flag.
                let last = unit.len() - 1;
                assert_eq!(unit[last], 1, "the client asks for sealing");
                unit[last] = 0;
            }
            if record == Some(0) {
                first_record = Some(unit.clone());
            }
            match (mode, record) {
                (Mode::FlipBit, Some(1)) => unit[10] ^= 0x10,
                (Mode::Drop, Some(1)) => continue,
                _ => {}
            }
            seen2.lock().unwrap().extend_from_slice(&unit);
            if uw.write_all(&unit).await.is_err() {
                break;
            }
            match (mode, record) {
                (Mode::Replay, Some(1)) => {
                    let again = first_record.clone().unwrap();
                    let _ = uw.write_all(&again).await;
                }
                (Mode::Inject, Some(1)) => {
                    let _ = uw.write_all(&inject).await;
                }
                _ => {}
            }
        }
        let _ = uw.shutdown().await;
    });
    Relay {
        addr,
        seen,
        upstream_local,
    }
}

/// The server's `test` endpoint total, asked directly (not through the relay).
async fn total(server: &RpcAddress, conf: RpcConf) -> u64 {
    let c = RpcEnv::client(conf).unwrap();
    let t = c
        .endpoint_ref::<TestMsg>(server, "test")
        .ask(Get)
        .await
        .unwrap();
    c.shutdown();
    t
}

/// Client → relay → server: record 0 carries `Add(1)` and an ask, record 1 carries
/// `Add(100)` and a second ask. Returns the outcome of the second ask.
async fn run_through(mode: Mode) -> (RpcEnv, RpcAddress, Relay, Result<u64, AskError>) {
    let (server, addr, _) = server_with_test_endpoint(sealed_conf()).await;
    let injected = frame::encode_frame(
        &Header::OneWay {
            to: "test",
            protocol: <TestMsg as flint_rpc::Protocol>::ID,
        },
        &TestMsg::Add(1000),
    )
    .unwrap();
    let relay = relay(addr.clone(), mode, injected).await;
    let mut conf = sealed_conf();
    conf.ask_timeout.duration = Duration::from_secs(if mode == Mode::Drop { 1 } else { 3 });
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&relay.addr, "test");
    r.send(TestMsg::Add(1)).unwrap();
    assert_eq!(r.ask(Get).await.unwrap(), 1, "record 0 goes through");
    r.send(TestMsg::Add(100)).unwrap();
    let second = r.ask(Get).await;
    if matches!(mode, Mode::Replay | Mode::Inject | Mode::Drop) {
        // The altered unit follows record 1: give the server a moment to see it by
        // asking again; the connection must then be gone.
        let third = r.ask(Get).await;
        assert!(
            third.is_err(),
            "{mode:?}: the connection survived: {third:?}"
        );
    }
    client.shutdown();
    (server, addr, relay, second)
}

#[tokio::test]
async fn an_untouched_relay_works_and_carries_no_plaintext() {
    let (server, addr, relay, second) = run_through(Mode::Untouched).await;
    assert_eq!(second.unwrap(), 101);
    let seen = relay.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    // The endpoint name appears in every plaintext frame header.
    assert!(
        !seen.windows(4).any(|w| w == b"test"),
        "the endpoint name crossed the wire in the clear"
    );
    assert_eq!(total(&addr, sealed_conf()).await, 101);
    server.shutdown();
}

#[tokio::test]
async fn without_sealing_the_same_traffic_is_plaintext() {
    // The control for the test above: with encryption off on both sides the frames
    // are visible, so the check above can fail.
    let mut conf = sealed_conf();
    conf.encryption = false;
    let (server, addr, _) = server_with_test_endpoint(conf.clone()).await;
    let relay = relay(addr.clone(), Mode::Untouched, Vec::new()).await;
    let client = RpcEnv::client(conf).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&relay.addr, "test");
    r.send(TestMsg::Add(5)).unwrap();
    assert_eq!(r.ask(Get).await.unwrap(), 5);
    assert!(relay.seen.lock().unwrap().windows(4).any(|w| w == b"test"));
    client.shutdown();
    server.shutdown();
}

async fn assert_closed_with_warning(relay: &Relay) {
    let peer = relay.upstream_local.lock().unwrap().clone().unwrap();
    let line = wait_for_log(&["closing connection with", &peer, "failed authentication"]).await;
    assert!(line.contains("WARN"), "{line}");
}

#[tokio::test]
async fn a_flipped_bit_closes_the_connection_and_is_not_acted_on() {
    logs();
    let (server, addr, relay, second) = run_through(Mode::FlipBit).await;
    assert!(
        second.is_err(),
        "the tampered record was accepted: {second:?}"
    );
    assert_closed_with_warning(&relay).await;
    assert_eq!(
        total(&addr, sealed_conf()).await,
        1,
        "Add(100) was acted on"
    );
    server.shutdown();
}

#[tokio::test]
async fn a_replayed_record_closes_the_connection_and_is_not_acted_on() {
    logs();
    let (server, addr, relay, second) = run_through(Mode::Replay).await;
    // Record 1 itself was genuine; the replay of record 0 after it is refused.
    assert_eq!(second.unwrap(), 101);
    assert_closed_with_warning(&relay).await;
    assert_eq!(
        total(&addr, sealed_conf()).await,
        101,
        "the replayed Add(1) was acted on"
    );
    server.shutdown();
}

#[tokio::test]
async fn an_injected_frame_closes_the_connection_and_is_not_acted_on() {
    logs();
    let (server, addr, relay, second) = run_through(Mode::Inject).await;
    assert_eq!(second.unwrap(), 101);
    let peer = relay.upstream_local.lock().unwrap().clone().unwrap();
    wait_for_log(&["closing connection with", &peer, "sealed record"]).await;
    assert_eq!(
        total(&addr, sealed_conf()).await,
        101,
        "the injected Add(1000) was acted on"
    );
    server.shutdown();
}

#[tokio::test]
async fn a_dropped_record_closes_the_connection_at_the_next_one() {
    logs();
    let (server, addr, relay, second) = run_through(Mode::Drop).await;
    assert!(second.is_err(), "{second:?}");
    // The record after the dropped one fails to open, and the connection closes.
    assert_closed_with_warning(&relay).await;
    assert_eq!(total(&addr, sealed_conf()).await, 1);
    server.shutdown();
}

#[tokio::test]
async fn a_relay_cannot_turn_sealing_off() {
    logs();
    let (server, addr, _) = server_with_test_endpoint(sealed_conf()).await;
    let relay = relay(addr.clone(), Mode::NoSeal, Vec::new()).await;
    let client = RpcEnv::client(sealed_conf()).unwrap();
    let e = client
        .endpoint_ref::<TestMsg>(&relay.addr, "test")
        .ask(Get)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authentication failed"), "{e}");
    let peer = relay.upstream_local.lock().unwrap().clone().unwrap();
    wait_for_log(&["refused connection from", &peer, "wrong secret"]).await;
    client.shutdown();
    server.shutdown();
}

/// A raw server built from "different code": answers any request with a `bool`.
async fn wrong_type_server() -> RpcAddress {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = RpcAddress::new("127.0.0.1", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        handshake::server(&mut s, None).await.unwrap();
        while let Some(unit) = read_unit(&mut s).await {
            let f = bytes::Bytes::from(unit[4..].to_vec());
            let (h, _) = frame::split_frame(&f).unwrap();
            if let Header::Request { id, .. } = h {
                let reply = frame::encode_frame(
                    &Header::Response {
                        id,
                        ty: frame::type_id_of::<bool>(),
                    },
                    &true,
                )
                .unwrap();
                s.write_all(&reply).await.unwrap();
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_reply_of_the_wrong_type_fails_the_ask_naming_the_expected_type() {
    let addr = wrong_type_server().await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let e = client
        .endpoint_ref::<TestMsg>(&addr, "test")
        .ask(Get)
        .await
        .unwrap_err();
    assert!(matches!(e, AskError::Remote { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("expected u64"), "{text}");
    assert!(text.contains("different code"), "{text}");
    client.shutdown();
}

#[tokio::test]
async fn a_handler_answering_with_the_wrong_type_fails_the_request_by_name() {
    use flint_rpc::{Context, Endpoint, Reply};
    struct Wrong;
    impl Endpoint for Wrong {
        type Msg = TestMsg;
        fn receive_and_reply(&mut self, _: &Context<TestMsg>, _: TestMsg, reply: Reply) {
            assert!(!reply.expects::<bool>());
            assert!(reply.expects::<u64>());
            reply.send(true)
        }
    }
    let server = server(quick_conf()).await;
    server.setup_endpoint("wrong", Wrong).unwrap();
    let addr = server.address().unwrap().clone();
    for client in [RpcEnv::client(quick_conf()).unwrap(), server.clone()] {
        // Remote and local callers alike.
        let e = client
            .endpoint_ref::<TestMsg>(&addr, "wrong")
            .ask(Get)
            .await
            .unwrap_err();
        assert!(matches!(e, AskError::Remote { .. }), "{e}");
        assert!(e.to_string().contains("answered with a bool"), "{e}");
    }
    server.shutdown();
}

#[tokio::test]
async fn an_unauthenticated_peer_cannot_claim_another_peers_address() {
    // Without a secret, a peer's declared listening address is only a label: a raw
    // peer that claims to be B must not receive what A sends to B.
    let (a, _, _) = server_with_test_endpoint(quick_conf()).await;
    let (b, b_addr, _) = server_with_test_endpoint(quick_conf()).await;
    let mut s = TcpStream::connect(a.address().unwrap().host_port())
        .await
        .unwrap();
    handshake::client(&mut s, None, Some(b_addr.clone()))
        .await
        .unwrap();
    // Give A time to take the impostor's connection into its tables: wait until A
    // lists it.
    wait_until("A to accept the impostor", Duration::from_secs(5), || {
        a.connections().iter().any(|c| c.peer == b_addr)
    })
    .await;
    let r = a.endpoint_ref::<TestMsg>(&b_addr, "test");
    let echoed = r
        .ask_timeout(Echo("for the real B".into()), Duration::from_secs(3))
        .await
        .expect("the ask went to the impostor's connection");
    assert_eq!(echoed, "for the real B");
    drop(s);
    a.shutdown();
    b.shutdown();
}
