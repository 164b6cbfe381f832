//! The state enums of the standalone cluster, named as in Spark.
//!
//! Each prints, parses and serializes as Spark's upper-case name (`ALIVE`,
//! `COMPLETING_RECOVERY`, ...).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A state name that is not one of the enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {input:?}; expected one of {expected}")]
pub struct UnknownState {
    /// Which enum was being parsed.
    pub kind: &'static str,
    /// The rejected input.
    pub input: String,
    /// The accepted names, comma-separated.
    pub expected: &'static str,
}

macro_rules! state_enum {
    (
        $(#[$meta:meta])*
        $name:ident, kind = $kind:literal, expected = $expected:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Spark's name for the state.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState {
                        kind: $kind,
                        input: s.to_owned(),
                        expected: $expected,
                    }),
                }
            }
        }
    };
}

state_enum!(
    /// A worker as the master sees it (Spark's `WorkerState`).
    WorkerState, kind = "worker state", expected = "ALIVE, DEAD, DECOMMISSIONED, UNKNOWN" {
        /// Registered and heartbeating; executors and drivers are placed only here.
        Alive => "ALIVE",
        /// Timed out, disconnected or not back after recovery; kept for display a while.
        Dead => "DEAD",
        /// Being drained: no new executors, existing ones are told to leave.
        Decommissioned => "DECOMMISSIONED",
        /// Recovered from persisted state; waiting for the worker to answer.
        Unknown => "UNKNOWN",
    }
);

impl WorkerState {
    /// `true` once the master has given up on the worker (DEAD).
    pub fn is_finished(self) -> bool {
        self == WorkerState::Dead
    }
}

state_enum!(
    /// An application's state on the master (Spark's `ApplicationState`).
    ApplicationState,
    kind = "application state",
    expected = "WAITING, RUNNING, FINISHED, FAILED, KILLED, UNKNOWN" {
        /// Registered; no executor allocated yet.
        Waiting => "WAITING",
        /// At least one executor has been allocated.
        Running => "RUNNING",
        /// Unregistered by its driver, or its driver disconnected.
        Finished => "FINISHED",
        /// Its executors kept failing (`deploy.max_executor_retries`).
        Failed => "FAILED",
        /// Killed by an operator.
        Killed => "KILLED",
        /// Recovered from persisted state; waiting for the driver to answer.
        Unknown => "UNKNOWN",
    }
);

impl ApplicationState {
    /// `true` for FINISHED, FAILED and KILLED (Spark: neither WAITING nor
    /// RUNNING; UNKNOWN counts as finished there too, but a recovered app is
    /// never left UNKNOWN once recovery completes).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ApplicationState::Finished | ApplicationState::Failed | ApplicationState::Killed
        )
    }
}

state_enum!(
    /// An executor's state (Spark's `ExecutorState`).
    ExecutorState,
    kind = "executor state",
    expected = "LAUNCHING, RUNNING, KILLED, FAILED, LOST, EXITED, DECOMMISSIONED" {
        /// Asked for; the worker is starting the process.
        Launching => "LAUNCHING",
        /// The process is running.
        Running => "RUNNING",
        /// Killed on request.
        Killed => "KILLED",
        /// Could not be launched, or its worker shut down under it.
        Failed => "FAILED",
        /// Its worker was lost.
        Lost => "LOST",
        /// The process exited by itself.
        Exited => "EXITED",
        /// Its worker is being decommissioned (not a finished state).
        Decommissioned => "DECOMMISSIONED",
    }
);

impl ExecutorState {
    /// `true` for KILLED, FAILED, LOST and EXITED, as Spark; DECOMMISSIONED
    /// is deliberately not finished.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ExecutorState::Killed
                | ExecutorState::Failed
                | ExecutorState::Lost
                | ExecutorState::Exited
        )
    }
}

state_enum!(
    /// A cluster-mode driver's state (Spark's `DriverState`).
    DriverState,
    kind = "driver state",
    expected = "SUBMITTED, RUNNING, FINISHED, RELAUNCHING, UNKNOWN, KILLED, FAILED, ERROR" {
        /// Queued on the master, not yet placed on a worker.
        Submitted => "SUBMITTED",
        /// Sent to a worker.
        Running => "RUNNING",
        /// Exited with status 0.
        Finished => "FINISHED",
        /// Supervised: its worker was lost and a replacement (with a new id) was
        /// queued (the old record's final state), or it exited non-zero and its
        /// worker waits out the back-off before starting it again.
        Relaunching => "RELAUNCHING",
        /// Defined by Spark, unused by its master.
        Unknown => "UNKNOWN",
        /// Exited non-zero after a kill request, or killed while queued.
        Killed => "KILLED",
        /// Exited non-zero.
        Failed => "FAILED",
        /// Could not be prepared or run, or lost with its worker unsupervised.
        Error => "ERROR",
    }
);

impl DriverState {
    /// `true` for the states a driver record ends in: FINISHED, RELAUNCHING,
    /// KILLED, FAILED and ERROR.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            DriverState::Finished
                | DriverState::Relaunching
                | DriverState::Killed
                | DriverState::Failed
                | DriverState::Error
        )
    }

    /// `true` when the driver will not run again: a finished state other than
    /// RELAUNCHING (whose attempt ended, but the driver goes on).
    pub fn is_final(self) -> bool {
        self.is_finished() && self != DriverState::Relaunching
    }
}

state_enum!(
    /// The master's own state (Spark's `RecoveryState`).
    MasterStatus,
    kind = "master status",
    expected = "ALIVE, STANDBY, RECOVERING, COMPLETING_RECOVERY" {
        /// The leader, serving normally.
        Alive => "ALIVE",
        /// Not the leader; refuses work.
        Standby => "STANDBY",
        /// Newly elected leader, waiting for recovered workers and apps.
        Recovering => "RECOVERING",
        /// Finishing recovery (a momentary guard state).
        CompletingRecovery => "COMPLETING_RECOVERY",
    }
);

impl MasterStatus {
    /// `true` when the master answers readiness probes (anything but STANDBY,
    /// as Spark's `RequestReadyz`).
    pub fn is_ready(self) -> bool {
        self != MasterStatus::Standby
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(all: &[T])
    where
        T: Copy + fmt::Display + FromStr + PartialEq + fmt::Debug + Serialize,
        T: for<'de> Deserialize<'de>,
    {
        for s in all {
            let text = s.to_string();
            assert_eq!(text.parse::<T>().ok(), Some(*s));
            let json = serde_json::to_string(s).expect("json");
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<T>(&json).ok(), Some(*s));
            let bytes = postcard::to_allocvec(s).expect("postcard");
            assert_eq!(postcard::from_bytes::<T>(&bytes).ok(), Some(*s));
        }
    }

    #[test]
    fn names_round_trip() {
        round_trip(WorkerState::ALL);
        round_trip(ApplicationState::ALL);
        round_trip(ExecutorState::ALL);
        round_trip(DriverState::ALL);
        round_trip(MasterStatus::ALL);
        assert_eq!(
            MasterStatus::CompletingRecovery.to_string(),
            "COMPLETING_RECOVERY"
        );
    }

    #[test]
    fn finished_states_match_spark() {
        let finished: Vec<_> = ExecutorState::ALL
            .iter()
            .filter(|s| s.is_finished())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(finished, ["KILLED", "FAILED", "LOST", "EXITED"]);
        assert!(!ExecutorState::Decommissioned.is_finished());

        let finished: Vec<_> = ApplicationState::ALL
            .iter()
            .filter(|s| s.is_finished())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(finished, ["FINISHED", "FAILED", "KILLED"]);

        assert!(WorkerState::Dead.is_finished());
        assert!(!WorkerState::Decommissioned.is_finished());
        assert!(DriverState::Relaunching.is_finished());
        assert!(!DriverState::Submitted.is_finished());
        assert!(!MasterStatus::Standby.is_ready());
        assert!(MasterStatus::Recovering.is_ready());
    }

    #[test]
    fn unknown_names_are_rejected_with_the_choices() {
        let err = "alive".parse::<WorkerState>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown worker state \"alive\"; expected one of ALIVE, DEAD, DECOMMISSIONED, UNKNOWN")
        );
    }
}
