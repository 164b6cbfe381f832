//! Tests written against mutants that survived `cargo mutants` over the env's routing,
//! admission and authentication back-off (see docs/testing.md):
//!
//! - a second authenticated connection from a peer neither takes over nor, when it
//!   closes, removes the outbox to that peer;
//! - at the global handshake limit a newcomer evicts the oldest pending handshake of an
//!   address holding more than it would, and is refused when all hold alike;
//! - the authentication delay doubles from 100 ms (checked from above: bounds.rs checks
//!   it from below), failures older than ten minutes are forgotten, and the table of
//!   failing addresses is capped at 4,096 by dropping stale addresses first, everyone
//!   when none is stale.
//!
//! Sources other than 127.0.0.1 are other loopback addresses (127.0.0.0/8).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use flint_rpc::handshake::{self, HandshakeError};
use flint_rpc::{RpcAddress, RpcConf, RpcEnv, Secret};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "mutants-test-secret";

fn secret_conf() -> RpcConf {
    let mut c = quick_conf();
    c.secret = Some(Secret::new(SECRET));
    c.handshake_timeout.duration = Duration::from_secs(20);
    c
}

/// Connections of `env` whose peer is `peer`.
fn to(env: &RpcEnv, peer: &RpcAddress) -> usize {
    env.connections().iter().filter(|c| &c.peer == peer).count()
}

/// A TCP connection to `127.0.0.1:port` from the local address `ip`.
async fn connect_from(ip: Ipv4Addr, port: u16) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((ip, 0))).unwrap();
    s.connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap()
}

fn port(env: &RpcEnv) -> u16 {
    env.address().unwrap().port
}

#[tokio::test]
async fn a_second_authenticated_connection_neither_takes_over_nor_removes_the_outbox() {
    let (a, a_addr, _) = server_with_test_endpoint(secret_conf()).await;
    let (b, b_addr, _) = server_with_test_endpoint(secret_conf()).await;
    let b_to_a = b.endpoint_ref::<TestMsg>(&a_addr, "test");
    assert_eq!(b_to_a.ask(Echo("first".into())).await.unwrap(), "first");
    assert_eq!((to(&a, &b_addr), to(&b, &a_addr)), (1, 1));

    // A raw peer proves the secret to B and declares A's address; it never answers.
    let mut raw = TcpStream::connect(b_addr.host_port()).await.unwrap();
    handshake::client(&mut raw, Some(&Secret::new(SECRET)), Some(a_addr.clone()))
        .await
        .unwrap();
    wait_until(
        "B to list the raw connection",
        Duration::from_secs(5),
        || to(&b, &a_addr) == 2,
    )
    .await;
    // B's live outbox to A stays the one it opened.
    let second = b_to_a
        .ask_timeout(Echo("second".into()), Duration::from_secs(3))
        .await
        .expect("B's ask went to the raw connection: it took over a live outbox");
    assert_eq!(second, "second");

    // The raw connection closes; forgetting it must not forget B's outbox to A.
    drop(raw);
    wait_until(
        "B to drop the raw connection",
        Duration::from_secs(5),
        || to(&b, &a_addr) == 1,
    )
    .await;
    assert_eq!(b_to_a.ask(Echo("third".into())).await.unwrap(), "third");
    assert_eq!(
        to(&b, &a_addr),
        1,
        "B opened another connection to A after the raw one closed: {:?}",
        b.connections()
    );
    assert_eq!(to(&a, &b_addr), 1, "{:?}", a.connections());
    a.shutdown();
    b.shutdown();
}

/// A connection from `ip` that sends the start of a handshake (a length prefix
/// announcing 4 KiB and the magic) and then nothing, so it stays mid-handshake.
async fn half_open(ip: Ipv4Addr, port: u16) -> TcpStream {
    let mut s = connect_from(ip, port).await;
    let mut start = 4096u32.to_be_bytes().to_vec();
    start.extend_from_slice(&handshake::MAGIC);
    // The server may already have refused it and reset it.
    let _ = s.write_all(&start).await;
    s
}

/// Whether the server closes `s` within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    match tokio::time::timeout(within, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("the server wrote {n} bytes to a half-open handshake"),
        Err(_) => false,
    }
}

/// A server that holds at most two connections mid-handshake.
async fn two_slot_server() -> RpcEnv {
    let mut conf = quick_conf();
    conf.handshake_timeout.duration = Duration::from_secs(30);
    conf.max_pending_handshakes = 2;
    conf.max_pending_handshakes_per_address = 8;
    server_with_test_endpoint(conf).await.0
}

const OPEN: Duration = Duration::from_millis(300);
const CLOSE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn at_the_handshake_limit_a_newcomer_is_refused_when_all_addresses_hold_alike() {
    let env = two_slot_server().await;
    let p = port(&env);
    let mut x = half_open(Ipv4Addr::new(127, 0, 0, 11), p).await;
    let mut y = half_open(Ipv4Addr::new(127, 0, 0, 12), p).await;
    // The newcomer would hold as many as the fullest address (1): refused at accept.
    let mut z = half_open(Ipv4Addr::new(127, 0, 0, 13), p).await;
    assert!(
        closed_within(&mut z, CLOSE).await,
        "a newcomer evicted a handshake of an address holding no more than it would"
    );
    assert!(!closed_within(&mut x, OPEN).await, "x was evicted");
    assert!(!closed_within(&mut y, OPEN).await, "y was evicted");
    env.shutdown();
}

#[tokio::test]
async fn at_the_handshake_limit_a_newcomer_evicts_the_oldest_of_the_fullest_address() {
    let env = two_slot_server().await;
    let p = port(&env);
    let x_ip = Ipv4Addr::new(127, 0, 0, 11);
    let mut x1 = half_open(x_ip, p).await;
    let mut x2 = half_open(x_ip, p).await;
    // x's address holds 2, more than the newcomer would (1): x's oldest makes room.
    let mut z = half_open(Ipv4Addr::new(127, 0, 0, 13), p).await;
    assert!(
        closed_within(&mut x1, CLOSE).await,
        "the oldest handshake of the fullest address was not evicted"
    );
    assert!(!closed_within(&mut x2, OPEN).await, "x2 was evicted");
    assert!(
        !closed_within(&mut z, OPEN).await,
        "the newcomer was refused"
    );
    // The evicted handshake's slot is gone with it, and only it: two are still held
    // (x2 and z), so one more newcomer is refused.
    let mut w = half_open(Ipv4Addr::new(127, 0, 0, 14), p).await;
    assert!(
        closed_within(&mut w, CLOSE).await,
        "a third handshake was admitted with x2 and z still pending: the slot table lost one"
    );
    assert!(!closed_within(&mut x2, OPEN).await, "x2 was evicted");
    assert!(!closed_within(&mut z, OPEN).await, "z was evicted");
    drop((x2, z));
    // Their slots come back once the server has read their ends.
    wait_until(
        "the dropped handshakes' slots to be freed",
        Duration::from_secs(5),
        || env.pending_handshakes() == 0,
    )
    .await;
    // Finished handshakes give their slots back: two in a row from one address.
    for i in 0..3 {
        still_serves(env.address().unwrap(), quick_conf()).await;
        eprintln!("client {i} served");
    }
    env.shutdown();
}

/// One handshake from `ip` with `secret`: how long it took and how it ended.
async fn attempt(ip: Ipv4Addr, port: u16, secret: &str) -> (Duration, Result<(), HandshakeError>) {
    let t = Instant::now();
    let mut tcp = connect_from(ip, port).await;
    let r = handshake::client(&mut tcp, Some(&Secret::new(secret)), None)
        .await
        .map(|_| ());
    (t.elapsed(), r)
}

/// `n` failed authentications from `ip`, one after another, each given time to be
/// recorded before the next connects.
async fn fail_n(env: &RpcEnv, ip: Ipv4Addr, n: usize) {
    let port = port(env);
    for i in 0..n {
        let (_, r) = attempt(ip, port, "wrong").await;
        assert!(r.is_err(), "a wrong secret was accepted");
        // The server records a failure just after sending its refusal.
        wait_until("the failure to be recorded", Duration::from_secs(5), || {
            env.failed_authentications(ip.into()) as usize > i
        })
        .await;
    }
}

/// One failed authentication from each of `n` addresses 127.1.x.y, 64 at a time.
async fn fail_from_many(env: &RpcEnv, n: usize) {
    let port = port(env);
    futures::stream::iter(0..n)
        .map(|i| async move {
            let ip = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
            let (_, r) = attempt(ip, port, "wrong").await;
            assert!(r.is_err(), "a wrong secret was accepted from {ip}");
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    // The server records a failure just after sending its refusal.
    let last = Ipv4Addr::new(127, 1, ((n - 1) / 250) as u8, ((n - 1) % 250) as u8 + 1);
    wait_until(
        "the last failure to be recorded",
        Duration::from_secs(10),
        || env.failed_authentications(last.into()) > 0,
    )
    .await;
}

/// How long the right secret from `ip` takes, after its failures.
async fn right_secret_takes(ip: Ipv4Addr, port: u16) -> Duration {
    let (d, r) = attempt(ip, port, SECRET).await;
    r.expect("the right secret");
    d
}

/// Addresses whose failures the server remembers at most (`AUTH_TRACKED`).
const TRACKED: usize = 4096;
/// Time after which a failure is forgotten (`AUTH_MEMORY`), plus a second.
const PAST_MEMORY: Duration = Duration::from_secs(601);

/// Moves the runtime's clock (the one the server's failure table reads) forward.
async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

#[tokio::test]
async fn the_authentication_delay_doubles_from_100_ms_and_no_faster() {
    let env = server(secret_conf()).await;
    let ip = Ipv4Addr::new(127, 0, 0, 31);
    fail_n(&env, ip, 4).await;
    // After 4 failures: 100 ms × 2³ = 800 ms (1.6 s or more if it grew faster).
    let d = right_secret_takes(ip, port(&env)).await;
    assert!(
        d >= Duration::from_millis(400) && d < Duration::from_millis(1400),
        "after 4 failed authentications the next handshake took {d:?}, expected 800 ms"
    );
    env.shutdown();
}

#[tokio::test]
async fn failures_older_than_ten_minutes_are_forgotten() {
    let env = server(secret_conf()).await;
    let ip = Ipv4Addr::new(127, 0, 0, 32);
    fail_n(&env, ip, 5).await;
    skip(PAST_MEMORY).await;
    // 1.6 s if the failures were still counted.
    let d = right_secret_takes(ip, port(&env)).await;
    assert!(
        d < Duration::from_millis(800),
        "5 failures 10 minutes old still delayed the next handshake by {d:?}"
    );
    // A failure after the stale ones starts counting again from one.
    let ip = Ipv4Addr::new(127, 0, 0, 33);
    fail_n(&env, ip, 5).await;
    skip(PAST_MEMORY).await;
    fail_n(&env, ip, 1).await;
    let d = right_secret_takes(ip, port(&env)).await;
    assert!(
        d >= Duration::from_millis(50) && d < Duration::from_millis(800),
        "one fresh failure after 5 stale ones delayed the next handshake by {d:?}, expected 100 ms"
    );
    env.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_of_recent_failures_is_cleared_for_a_new_address_only() {
    let env = server(secret_conf()).await;
    let p = port(&env);
    let (ip1, ip2) = (Ipv4Addr::new(127, 0, 0, 34), Ipv4Addr::new(127, 0, 0, 38));
    fail_n(&env, ip1, 5).await;
    fail_n(&env, ip2, 5).await;
    // With them, the table is full of recent failures.
    fail_from_many(&env, TRACKED - 2).await;
    // A known address failing again at a full table forgets no one ...
    fail_n(&env, Ipv4Addr::new(127, 1, 0, 1), 1).await;
    let d = right_secret_takes(ip2, p).await;
    assert!(
        d >= Duration::from_millis(800),
        "a known address failing at a full table cleared it: {ip2} took {d:?} (1.6 s of delay \
         expected)"
    );
    // ... while a new address at a full table (refilled after ip2's success) clears it
    // rather than growing it.
    fail_n(&env, Ipv4Addr::new(127, 0, 0, 39), 1).await;
    fail_n(&env, Ipv4Addr::new(127, 0, 0, 35), 1).await;
    let d = right_secret_takes(ip1, p).await;
    assert!(
        d < Duration::from_millis(800),
        "the failure table grew past {TRACKED} addresses: {ip1} is still delayed by {d:?}"
    );
    env.shutdown();
}

#[tokio::test]
async fn a_full_table_drops_its_stale_addresses_and_keeps_the_recent_ones() {
    let env = server(secret_conf()).await;
    fail_from_many(&env, TRACKED - 1).await;
    skip(PAST_MEMORY).await;
    // The table is full: 4,095 stale addresses and one recent.
    let ip = Ipv4Addr::new(127, 0, 0, 36);
    fail_n(&env, ip, 5).await;
    // A new address makes room by dropping the stale ones only.
    fail_n(&env, Ipv4Addr::new(127, 0, 0, 37), 1).await;
    let d = right_secret_takes(ip, port(&env)).await;
    assert!(
        d >= Duration::from_millis(800),
        "after making room, {ip}'s 5 recent failures were forgotten: its handshake took {d:?} \
         (1.6 s of delay expected)"
    );
    env.shutdown();
}
