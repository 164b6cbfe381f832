//! Peers in separate processes: SIGKILL of a peer in the middle of an ask fails that
//! ask promptly as "connection lost", and a peer restarted on the same port is
//! reached again by the next ask.
//!
//! The peer is this test binary re-run with `FLINT_RPC_TEST_PEER=<port>`: the test
//! `peer_process_entry` then serves until killed (and does nothing otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use flint_rpc::{AskError, Context, Endpoint, Reply, RpcAddress, RpcConf, RpcEnv};

const PEER_VAR: &str = "FLINT_RPC_TEST_PEER";

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
fn peer_process_entry() {
    let Ok(port) = std::env::var(PEER_VAR) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let env = RpcEnv::server(RpcConf::default(), "127.0.0.1", port.parse().unwrap())
            .await
            .unwrap();
        env.setup_endpoint("test", Peer(TestEndpoint::default()))
            .unwrap();
        println!("LISTENING {}", env.address().unwrap().port);
        std::io::stdout().flush().unwrap();
        env.cancelled().await;
    });
}

/// A peer process, SIGKILLed on drop.
struct PeerProcess {
    child: Child,
    out: BufReader<ChildStdout>,
    port: u16,
}

impl PeerProcess {
    fn start(port: u16) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "peer_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PEER_VAR, port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let port = loop {
            let line = next_line(&mut out);
            // libtest may print "test peer_process_entry ... " on the same line first.
            if let Some((_, p)) = line.split_once("LISTENING ") {
                break p.trim().parse().unwrap();
            }
        };
        PeerProcess { child, out, port }
    }

    fn wait_for_line(&mut self, wanted: &str) {
        while !next_line(&mut self.out).contains(wanted) {}
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn next_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    let n = out.read_line(&mut line).unwrap();
    assert!(n > 0, "peer process exited before saying what was expected");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_ask_fails_promptly_as_connection_lost() {
    let mut peer = tokio::task::spawn_blocking(|| PeerProcess::start(0))
        .await
        .unwrap();
    let addr = RpcAddress::new("127.0.0.1", peer.port);
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
    let mut peer = tokio::task::spawn_blocking(move || {
        peer.wait_for_line("HELD");
        peer
    })
    .await
    .unwrap();
    let killed_at = Instant::now();
    peer.sigkill();
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
    let mut peer = tokio::task::spawn_blocking(|| PeerProcess::start(0))
        .await
        .unwrap();
    let port = peer.port;
    let addr = RpcAddress::new("127.0.0.1", port);
    let client = RpcEnv::client(quick_conf()).unwrap();
    let (watcher, events) = TestEndpoint::with_events();
    client.setup_endpoint("watcher", watcher).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    r.send(TestMsg::Add(5)).unwrap();
    assert_eq!(r.ask(Get).await.unwrap(), 5);
    peer.sigkill();
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
    let _peer2 = tokio::task::spawn_blocking(move || PeerProcess::start(port))
        .await
        .unwrap();
    // A new process: fresh state, reached through a new connection by the same ref.
    assert_eq!(r.ask(Get).await.unwrap(), 0);
    r.send(TestMsg::Add(2)).unwrap();
    assert_eq!(r.ask(Get).await.unwrap(), 2);
    client.shutdown();
}
