//! Time as the state machine sees it: one reading per event, taken by the
//! shell and handed in, never read inside.
//!
//! Two clocks, for two purposes. Every deadline, timeout and interval
//! (heartbeat timeouts, culling DEAD workers, executor stability) is measured
//! on the **monotonic** clock, which never jumps. The **wall** clock is used
//! only for what a person reads: ids (`app-20261122035500-0000`) and times
//! shown in the status. So a wall-clock jump of hours, forward or back,
//! changes no decision.
//!
//! [`Now`] is the daemon layer's, shared by every flint daemon
//! ([`flint_daemon::clock`]).

pub use flint_daemon::clock::Now;
