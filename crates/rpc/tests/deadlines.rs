//! Deadlines of single asks, checked by the connection's sweeper instead of a timer
//! per ask (paused tokio time, real TCP on 127.0.0.1): an unanswered ask fails at its
//! deadline and no later than the sweep's slack; asks with different deadlines fail
//! each at its own, an earlier one registered after a later one included; an ask
//! answered in time is not failed by a sweep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use flint_rpc::{AskError, RpcEnv};
use tokio::time::Instant;

/// The most a timeout may fire late under paused time (the sweep's gap, 5 ms, and a
/// margin for the runtime's own timer granularity).
const SLACK: Duration = Duration::from_millis(20);

#[tokio::test]
async fn unanswered_asks_fail_at_their_own_deadlines() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    assert_eq!(r.ask(Echo("up".into())).await.unwrap(), "up");
    tokio::time::pause();
    let start = Instant::now();
    // A late deadline first, then an earlier one: the sweeper must wake for the second.
    let late = tokio::spawn(r.ask_timeout(Hold, Duration::from_secs(60)));
    let early = tokio::spawn(r.ask_timeout(Hold, Duration::from_secs(20)));
    let answered = r.ask_timeout(Echo("in time".into()), Duration::from_secs(20));
    assert_eq!(answered.await.unwrap(), "in time");
    let e = early.await.unwrap().unwrap_err();
    let at = start.elapsed();
    assert!(
        matches!(&e, AskError::Timeout { after, .. } if *after == Duration::from_secs(20)),
        "{e}"
    );
    assert!(
        at >= Duration::from_secs(20) && at <= Duration::from_secs(20) + SLACK,
        "the 20 s ask failed after {at:?}"
    );
    let e = late.await.unwrap().unwrap_err();
    let at = start.elapsed();
    assert!(matches!(e, AskError::Timeout { .. }), "{e}");
    assert!(
        at >= Duration::from_secs(60) && at <= Duration::from_secs(60) + SLACK,
        "the 60 s ask failed after {at:?}"
    );
    tokio::time::resume();
    // The connection is still good, and asks keep timing out after the sweeper idled.
    assert_eq!(r.ask(Echo("after".into())).await.unwrap(), "after");
    let t = std::time::Instant::now();
    let e = r
        .ask_timeout(Hold, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, AskError::Timeout { .. }), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(200));
    client.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn many_asks_expiring_together_all_fail_within_the_slack() {
    let (server, addr, _) = server_with_test_endpoint(quick_conf()).await;
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = client.endpoint_ref::<TestMsg>(&addr, "test");
    assert_eq!(r.ask(Echo("up".into())).await.unwrap(), "up");
    tokio::time::pause();
    let start = Instant::now();
    let asks: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(r.ask_timeout(Hold, Duration::from_millis(1000 + i))))
        .collect();
    for (i, a) in asks.into_iter().enumerate() {
        let e = a.await.unwrap().unwrap_err();
        assert!(matches!(e, AskError::Timeout { .. }), "{e}");
        let at = start.elapsed();
        let due = Duration::from_millis(1000 + i as u64);
        assert!(at >= due, "ask {i} failed early, at {at:?}");
    }
    let at = start.elapsed();
    assert!(
        at <= Duration::from_millis(1999) + SLACK,
        "the last ask failed at {at:?}"
    );
    tokio::time::resume();
    client.shutdown();
    server.shutdown();
}
