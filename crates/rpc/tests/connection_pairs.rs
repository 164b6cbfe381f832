//! Connections per peer pair: two server-mode environments that talk in both
//! directions share one connection when they authenticate each other (the inbound
//! connection becomes the outbox to the peer's declared address), and use one per
//! direction when they do not (an unauthenticated peer's declared address is only a
//! label, never a route).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use flint_rpc::{RpcAddress, RpcConf, RpcEnv, Secret};

/// Connections of `env` whose peer is `peer`.
fn to(env: &RpcEnv, peer: &RpcAddress) -> usize {
    env.connections().iter().filter(|c| &c.peer == peer).count()
}

/// Two server envs with a `test` endpoint each; `a` asks `b`, then `b` asks `a`, each
/// also sending one-way messages; returns the connections each then has to the other.
async fn talk_both_ways(conf: RpcConf) -> (usize, usize) {
    let (a, a_addr, _) = server_with_test_endpoint(conf.clone()).await;
    let (b, b_addr, _) = server_with_test_endpoint(conf).await;
    let a_to_b = a.endpoint_ref::<TestMsg>(&b_addr, "test");
    let b_to_a = b.endpoint_ref::<TestMsg>(&a_addr, "test");
    for round in 1..=3u64 {
        a_to_b.send(TestMsg::Add(round)).unwrap();
        assert_eq!(
            a_to_b.ask(Echo(format!("a{round}"))).await.unwrap(),
            format!("a{round}")
        );
        b_to_a.send(TestMsg::Add(round)).unwrap();
        assert_eq!(
            b_to_a.ask(Echo(format!("b{round}"))).await.unwrap(),
            format!("b{round}")
        );
    }
    // Every add arrived, in order before the asks behind it.
    assert_eq!(a_to_b.ask(Get).await.unwrap(), 6);
    assert_eq!(b_to_a.ask(Get).await.unwrap(), 6);
    let counts = (to(&a, &b_addr), to(&b, &a_addr));
    // Nothing else was opened or closed meanwhile: both sides list only the other.
    assert_eq!(a.connections().len(), counts.0, "{:?}", a.connections());
    assert_eq!(b.connections().len(), counts.1, "{:?}", b.connections());
    a.shutdown();
    b.shutdown();
    a.await_termination().await;
    b.await_termination().await;
    counts
}

#[tokio::test]
async fn authenticated_servers_talking_both_ways_share_one_connection() {
    let mut conf = quick_conf();
    conf.secret = Some(Secret::new("pairs"));
    let (a, b) = tokio::time::timeout(Duration::from_secs(20), talk_both_ways(conf))
        .await
        .unwrap();
    assert_eq!(
        (a, b),
        (1, 1),
        "with a secret, a's connections to b and b's to a: the inbound one must become the outbox"
    );
}

#[tokio::test]
async fn unauthenticated_servers_use_one_connection_per_direction() {
    let (a, b) = tokio::time::timeout(Duration::from_secs(20), talk_both_ways(quick_conf()))
        .await
        .unwrap();
    assert_eq!(
        (a, b),
        (2, 2),
        "without a secret, a's connections to b and b's to a: a declared address must not route"
    );
}
