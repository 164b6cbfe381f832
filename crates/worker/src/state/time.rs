//! Time as the state machine sees it: one reading per event, taken by the
//! shell and handed in, never read inside.
//!
//! Two clocks, for two purposes. Every deadline, timeout and interval (a
//! supervised driver's stable run, how often a refused secret is logged) is
//! measured on the **monotonic** clock, which never jumps. The **wall** clock
//! is for what a person reads only. So a wall-clock jump of hours, forward
//! or back, changes no decision.

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
