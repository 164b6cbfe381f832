//! Faster recovery than Spark: a worker that loses its master registers
//! again at once, then retries after 50 ms, doubling below the short
//! interval, and only then follows Spark's 5–15 s / 30–90 s schedule. Pure:
//! the state machine is driven with hand-made times, following the retry
//! timers it asks for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flint_proto::WorkerId;
use flint_worker::state::{Effect, Event, Now, WorkerConfig, WorkerCore};

const T0: u64 = 1_795_319_700_000;
const M1: &str = "flint://m1:7077";

fn at(ms: u64) -> Now {
    Now::new(ms, ms)
}

/// One master, random factor fixed at 1.0 (Spark's 10 s / 60 s).
fn config() -> WorkerConfig {
    let mut c = WorkerConfig::new(vec![M1.into()], 4, 4096);
    c.registration_retry_fuzz = Some(1.0);
    c
}

/// Started and registered with M1 at T0.
fn registered(c: WorkerConfig) -> WorkerCore {
    let id = WorkerId::generate(T0, "127.0.0.1", 7078).unwrap();
    let mut w = WorkerCore::new(id, c);
    w.handle(at(T0), Event::Start);
    w.handle(
        at(T0),
        Event::Registered {
            master_url: M1.into(),
            master_web_ui_url: "http://m1:8080".into(),
            master_address: M1.into(),
            duplicate: false,
        },
    );
    assert!(w.is_registered());
    w
}

fn registration_rounds(fx: &[Effect]) -> usize {
    fx.iter()
        .filter(|e| matches!(e, Effect::RegisterWithMaster { master_url, .. } if master_url == M1))
        .count()
}

fn retry_timer(fx: &[Effect]) -> Option<(u64, u64)> {
    fx.iter().find_map(|e| match e {
        Effect::ScheduleRegistrationRetry {
            delay_ms,
            generation,
        } => Some((*delay_ms, *generation)),
        _ => None,
    })
}

/// Loses the master at `T0` (`event`), then follows the retry
/// timers until the worker gives up. Returns the times (ms after the loss)
/// of every registration round, the first one included, and when it exited.
fn follow_retries(mut w: WorkerCore, event: Event) -> (Vec<u64>, u64) {
    let fx = w.handle(at(T0), event);
    assert_eq!(registration_rounds(&fx), 1, "a round at once: {fx:?}");
    let mut rounds = vec![0];
    let (mut delay, mut generation) = retry_timer(&fx).expect("a retry timer");
    let mut now = T0;
    loop {
        now += delay;
        let fx = w.handle(at(now), Event::RegistrationRetryTick { generation });
        if fx.iter().any(|e| matches!(e, Effect::Exit { .. })) {
            return (rounds, now - T0);
        }
        assert_eq!(registration_rounds(&fx), 1, "{fx:?}");
        rounds.push(now - T0);
        (delay, generation) = retry_timer(&fx).expect("re-armed");
        assert!(rounds.len() < 100, "never gives up");
    }
}

#[test]
fn a_lost_master_is_retried_at_once_then_from_50_ms_doubling_then_on_sparks_schedule() {
    let (rounds, exit_at) = follow_retries(
        registered(config()),
        Event::MasterDisconnected { address: M1.into() },
    );
    // At once, then after 50, 100, … 6400 ms: about 12.75 s of quick retries.
    assert_eq!(
        rounds[..9],
        [0, 50, 150, 350, 750, 1550, 3150, 6350, 12_750]
    );
    // Then Spark's schedule, counted from there: 6 retries every 10 s, 10
    // more every 60 s, and the worker gives up on the 17th tick.
    let spark: Vec<u64> = rounds[9..].iter().map(|t| t - 12_750).collect();
    assert_eq!(
        spark,
        [
            10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 120_000, 180_000, 240_000, 300_000,
            360_000, 420_000, 480_000, 540_000, 600_000, 660_000
        ]
    );
    assert_eq!(exit_at, 12_750 + 720_000);
}

#[test]
fn a_master_that_restarts_within_a_second_and_a_half_is_reached_within_800_ms() {
    let (rounds, _) = follow_retries(
        registered(config()),
        Event::MasterDisconnected { address: M1.into() },
    );
    // Whenever the master listens again in the first 1.55 s after the worker
    // lost it, the next round reaches it at most 800 ms later (Spark: 5–15 s).
    for back in (0..=1550).step_by(5) {
        let next = rounds.iter().find(|t| **t >= back).unwrap();
        assert!(next - back <= 800, "back at {back} ms, found at {next} ms");
    }
}

#[test]
fn a_reconnect_request_is_followed_just_as_quickly() {
    let (rounds, _) = follow_retries(
        registered(config()),
        Event::ReconnectWorker {
            master_url: M1.into(),
        },
    );
    assert_eq!(rounds[..4], [0, 50, 150, 350]);
}

#[test]
fn quick_retries_follow_the_random_factor_and_stop_below_the_short_interval() {
    let mut c = config();
    c.registration_retry_fuzz = Some(0.5);
    let w = WorkerCore::new(WorkerId::generate(T0, "127.0.0.1", 7078).unwrap(), c);
    // The factor spreads workers reconnecting to one master; the short
    // interval (5 s with this factor) is where Spark's schedule takes over.
    assert_eq!(
        w.reregistration_retry_delays_ms(),
        [25, 50, 100, 200, 400, 800, 1600, 3200]
    );
    assert_eq!(w.registration_retry_intervals_ms().0, 5_000);

    // A short interval at or below the quick one: Spark's schedule at once.
    let mut c = config();
    c.initial_registration_retry_interval_ms = 50;
    let (rounds, _) = follow_retries(
        registered(c),
        Event::MasterDisconnected { address: M1.into() },
    );
    assert_eq!(rounds[..3], [0, 50, 100]);
}

#[test]
fn registering_ends_the_quick_retries_and_a_later_loss_starts_them_again() {
    let mut w = registered(config());
    let fx = w.handle(at(T0), Event::MasterDisconnected { address: M1.into() });
    let (_, generation) = retry_timer(&fx).unwrap();
    let fx = w.handle(at(T0 + 50), Event::RegistrationRetryTick { generation });
    let (delay, generation) = retry_timer(&fx).unwrap();
    assert_eq!(delay, 100);
    // The master answers before the next retry: the armed tick is stale.
    w.handle(
        at(T0 + 60),
        Event::Registered {
            master_url: M1.into(),
            master_web_ui_url: "http://m1:8080".into(),
            master_address: M1.into(),
            duplicate: false,
        },
    );
    assert!(w.is_registered() && w.is_connected());
    assert!(w
        .handle(at(T0 + 150), Event::RegistrationRetryTick { generation })
        .is_empty());
    // Lost again later: the quick schedule starts over from 50 ms.
    let fx = w.handle(
        at(T0 + 60_000),
        Event::MasterDisconnected { address: M1.into() },
    );
    assert_eq!(registration_rounds(&fx), 1);
    assert_eq!(retry_timer(&fx).map(|t| t.0), Some(50));
}

#[test]
fn the_first_registration_at_start_keeps_sparks_schedule() {
    let id = WorkerId::generate(T0, "127.0.0.1", 7078).unwrap();
    let mut w = WorkerCore::new(id, config());
    let fx = w.handle(at(T0), Event::Start);
    assert_eq!(registration_rounds(&fx), 1);
    assert_eq!(retry_timer(&fx).map(|t| t.0), Some(10_000));
}
