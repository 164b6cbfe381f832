//! Peers in separate processes: SIGKILL of a peer in the middle of an ask fails that
//! ask promptly as "connection lost", and a peer restarted on the same port is
//! reached again by the next ask.
//!
//! The peer is this test binary re-run as the ignored test `peer_process_entry`
//! (`--ignored --exact peer_process_entry`), which serves until killed; in a normal
//! `cargo test` it is reported as ignored rather than passing without doing anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peer.rs"]
mod peer;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use flint_rpc::{AskError, Context, Endpoint, Reply, RpcAddress, RpcConf, RpcEnv};
use peer::Child;

/// The role of the peer, and the setting (of this test's own) naming its port.
const ROLE: &str = "peer";
const PORT_KEY: &str = "test.port";

/// Prints `HELD` when it receives a `Hold` ask, so the test knows the request arrived.
struct Peer(TestEndpoint);

impl Endpoint for Peer {
    type Msg = TestMsg;
    fn receive(&mut self, ctx: &Context<TestMsg>, msg: TestMsg) {
        self.0.receive(ctx, msg)
    }
    fn receive_and_reply(&mut self, ctx: &Context<TestMsg>, msg: TestMsg, reply: Reply) {
        if matches!(msg, TestMsg::Hold(_)) {
            println!("HELD");
            std::io::stdout().flush().unwrap();
        }
        self.0.receive_and_reply(ctx, msg, reply)
    }
}

#[test]
#[ignore = "runs only as the child process of the other tests in this file"]
fn peer_process_entry() {
    let role = peer::role().expect("started by another test with FLINT_RPC_TEST_ROLE set");
    assert_eq!(role, ROLE, "unknown role");
    let port: u16 = peer::child_settings()
        .get(PORT_KEY)
        .expect("the port to listen on")
        .parse()
        .unwrap();
    peer::runtime().block_on(async {
        let env = RpcEnv::server(RpcConf::default(), "127.0.0.1", port)
            .await
            .unwrap();
        env.setup_endpoint("test", Peer(TestEndpoint::default()))
            .unwrap();
        peer::say(&format!(
            "{}{}",
            peer::LISTENING,
            env.address().unwrap().port
        ));
        env.cancelled().await;
    });
}

/// A peer process listening on `port` (0: any), SIGKILLed on drop.
async fn start_peer(port: u16) -> Child {
    Child::start("peer_process_entry", ROLE, &[(PORT_KEY, &port.to_string())]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_ask_fails_promptly_as_connection_lost() {
    let mut peer = start_peer(0).await;
    let addr = peer.address();
    let mut conf = quick_conf();
    conf.ask_timeout.duration = Duration::from_secs(60);
    let client = RpcEnv::client(conf).unwrap();
    let r = client
        .setup_endpoint_ref::<TestMsg>(&addr, "test")
        .await
        .unwrap();
    assert_eq!(r.ask(Echo("up".into())).await.unwrap(), "up");
    let held = tokio::spawn({
        let r = r.clone();
        async move { r.ask(Hold).await }
    });
    peer.wait_for_line(&["HELD"], Duration::from_secs(10)).await;
    let killed_at = Instant::now();
    peer.kill();
    let e = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the ask must fail well before its 60 s deadline")
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, AskError::ConnectionLost { .. }), "{e}");
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    client.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_on_the_same_port_is_reached_again() {
    let mut peer = start_peer(0).await;
    let port = peer.port;
    let addr = RpcAddress::new("127.0.0.1", port);
    let client = RpcEnv::client(quick_conf()).unwrap();
    let (watcher, events) = TestEndpoint::with_events();
    client.setup_endpoint("watcher", watcher).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    r.send(TestMsg::Add(5)).unwrap();
    assert_eq!(r.ask(Get).await.unwrap(), 5);
    peer.kill();
    wait_until(
        "on_disconnected for the killed peer",
        Duration::from_secs(10),
        || {
            events
                .lock()
                .unwrap()
                .contains(&Seen::Disconnected(addr.clone()))
        },
    )
    .await;
    let e = r.ask(Get).await.unwrap_err();
    assert!(e.is_not_delivered(), "nothing listens now: {e}");
    let _peer2 = start_peer(port).await;
    // A new process: fresh state, reached through a new connection by the same ref.
    assert_eq!(r.ask(Get).await.unwrap(), 0);
    r.send(TestMsg::Add(2)).unwrap();
    assert_eq!(r.ask(Get).await.unwrap(), 2);
    client.shutdown();
}
