//! Log lines as effects. The master's and the worker's state machines do not log
//! themselves (they have no clock, no I/O); they return a log effect that their shell
//! writes with `tracing`. This is the one definition of how loud such a line is and
//! of the helpers that push one.

/// How loud a log effect is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Normal operation worth a line.
    Info,
    /// Something unexpected that was handled (a stale master, a refused launch, ...).
    Warn,
    /// Something failed (registration given up, a report lost, ...).
    Error,
}

/// An effect type that can carry a log line.
pub trait LogEffect: Sized {
    /// The effect that logs `message` at `level`.
    fn log(level: LogLevel, message: String) -> Self;
}

/// Pushing log effects onto a list of effects.
///
/// ```
/// use flint_types::log::{LogEffect, LogLevel, Logs as _};
/// #[derive(Debug, PartialEq)]
/// enum Effect { Log(LogLevel, String) }
/// impl LogEffect for Effect {
///     fn log(level: LogLevel, message: String) -> Self { Effect::Log(level, message) }
/// }
/// let mut out: Vec<Effect> = Vec::new();
/// out.warn("stale master".into());
/// assert_eq!(out, [Effect::Log(LogLevel::Warn, "stale master".into())]);
/// ```
pub trait Logs {
    /// Adds an info line.
    fn info(&mut self, message: String);
    /// Adds a warning.
    fn warn(&mut self, message: String);
    /// Adds an error line.
    fn error(&mut self, message: String);
}

impl<E: LogEffect> Logs for Vec<E> {
    fn info(&mut self, message: String) {
        self.push(E::log(LogLevel::Info, message));
    }
    fn warn(&mut self, message: String) {
        self.push(E::log(LogLevel::Warn, message));
    }
    fn error(&mut self, message: String) {
        self.push(E::log(LogLevel::Error, message));
    }
}
