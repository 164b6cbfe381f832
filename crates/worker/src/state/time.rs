//! Time as the state machine sees it: one reading per event, taken by the
//! shell and handed in, never read inside.
//!
//! Two clocks, for two purposes. Every deadline, timeout and interval (a
//! supervised driver's stable run, how often a refused secret is logged) is
//! measured on the **monotonic** clock, which never jumps. The **wall** clock
//! is for what a person reads only. So a wall-clock jump of hours, forward
//! or back, changes no decision.
//!
//! [`Now`] is the daemon layer's, shared by every flint daemon
//! ([`flint_daemon::clock`]).

pub use flint_daemon::clock::Now;
