//! Time as a daemon's state machine sees it: one reading per event, taken by
//! the shell and handed in, never read inside.
//!
//! Two clocks, for two purposes. Every deadline, timeout and interval
//! (heartbeat timeouts, culling DEAD workers, executor and driver stability,
//! how often a refused secret is logged) is measured on the **monotonic**
//! clock, which never jumps. The **wall** clock is used only for what a person
//! reads: ids (`app-20261122035500-0000`) and times shown in the status. So a
//! wall-clock jump of hours, forward or back, changes no decision.
//!
//! [`Clock`] reads both; its monotonic time is tokio's, so
//! `tokio::time::pause` in a test stops it. [`tick_every`] is the periodic
//! timer loop a daemon drives its state machine's `Tick` with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The time of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Monotonic milliseconds since an arbitrary origin (the shell uses its
    /// own start). Never goes back; every deadline is measured on it.
    pub mono_ms: u64,
    /// Wall-clock time, epoch milliseconds. For ids and display only: it
    /// may jump either way.
    pub wall_ms: u64,
}

impl Now {
    /// A reading of both clocks.
    pub const fn new(mono_ms: u64, wall_ms: u64) -> Self {
        Self { mono_ms, wall_ms }
    }

    /// The same reading `ms` later on both clocks (saturating).
    #[must_use]
    pub const fn after_ms(self, ms: u64) -> Self {
        Self {
            mono_ms: self.mono_ms.saturating_add(ms),
            wall_ms: self.wall_ms.saturating_add(ms),
        }
    }

    /// Monotonic milliseconds from `earlier` to this reading (0 if
    /// `earlier` is later).
    pub const fn mono_since(self, earlier_mono_ms: u64) -> u64 {
        self.mono_ms.saturating_sub(earlier_mono_ms)
    }
}

/// The wall clock, epoch milliseconds: for ids and displayed times only,
/// never for a deadline (it can jump).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// A duration in whole milliseconds (saturating).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A daemon's clocks. Every [`Now`] its state machine sees comes from here:
/// monotonic milliseconds since the clock was made, from tokio's clock, and
/// [`wall_ms`].
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose monotonic time starts at 0 now.
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The current time on both clocks.
    pub fn now(&self) -> Now {
        Now::new(millis(self.origin.elapsed()), wall_ms())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Calls `tick` every `every` (the first at once, as Spark's timers) until
/// `token` is cancelled. A late tick delays the next rather than bunching
/// them.
pub async fn tick_every(token: CancellationToken, every: Duration, mut tick: impl FnMut()) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = interval.tick() => tick(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_saturate() {
        let n = Now::new(u64::MAX - 1, 5);
        assert_eq!(n.after_ms(10), Now::new(u64::MAX, 15));
        assert_eq!(Now::new(3, 0).mono_since(10), 0);
        assert_eq!(Now::new(30, 0).mono_since(10), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_monotonic_clock_is_tokios() {
        let clock = Clock::new();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now().mono_ms, 90_000);
        assert!(clock.now().wall_ms > 1_600_000_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_until_cancelled() {
        let token = CancellationToken::new();
        let mut n = 0;
        let t = token.clone();
        tick_every(token.clone(), Duration::from_secs(1), || {
            n += 1;
            if n == 3 {
                t.cancel();
            }
        })
        .await;
        assert_eq!(n, 3);
    }
}
