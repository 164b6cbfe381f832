//! The launcher protocol, on flint's RPC: what an application's reporter (the driver
//! in client mode, `flint submit` in cluster mode) and the launcher server say.
//!
//! ```text
//! child → server  Hello { backend, version }        (ask; the first message)
//! child → server  SetAppId | SetDriverId | SetState (one-way, only after Hello)
//! server → child  Stop                              (to the child's `backend` ref)
//! ```
//!
//! The connection itself is authenticated by the handshake with the handle's key id and
//! single-use secret, so Hello carries no secret: the server knows which handle a
//! connection belongs to from the key id it proved.

use flint_rpc::{Ask, EndpointRef, Protocol};
use serde::{Deserialize, Serialize};

/// The launcher server's port, in the child's environment.
pub const PORT_ENV: &str = "FLINT_LAUNCHER_PORT";
/// The handle's key id, in the child's environment.
pub const KEY_ID_ENV: &str = "FLINT_LAUNCHER_KEY_ID";
/// The handle's single-use secret, in the child's environment (never on a command line).
pub const SECRET_ENV: &str = "FLINT_LAUNCHER_SECRET";

/// Name of the launcher server's endpoint.
pub const SERVER_ENDPOINT: &str = "launcher";
/// Name of the reporter's endpoint, which takes [`BackendMsg`].
pub const BACKEND_ENDPOINT: &str = "launcher-backend";

/// An application's state as a handle sees it (Spark's `SparkAppHandle.State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Launched, nothing heard yet.
    Unknown,
    /// The reporter connected and said hello.
    Connected,
    /// Submitted to the master (a cluster-mode driver: placed or waiting).
    Submitted,
    /// Running (the application registered; a cluster-mode driver was started).
    Running,
    /// A supervised cluster-mode driver is being relaunched.
    Relaunching,
    /// Ended successfully. Final.
    Finished,
    /// Ended with an error, or its process exited non-zero. Final.
    Failed,
    /// Killed (`kill()`, `stop()`, `flint kill`, a signal). Final.
    Killed,
    /// Its reporter went away without a final state and the process exited 0 (or
    /// never said hello in time, or the handle was disconnected). Final.
    Lost,
}

impl State {
    /// Whether the state never changes again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Finished | State::Failed | State::Killed | State::Lost
        )
    }

    /// Spark's upper-case name.
    pub fn name(self) -> &'static str {
        match self {
            State::Unknown => "UNKNOWN",
            State::Connected => "CONNECTED",
            State::Submitted => "SUBMITTED",
            State::Running => "RUNNING",
            State::Relaunching => "RELAUNCHING",
            State::Finished => "FINISHED",
            State::Failed => "FAILED",
            State::Killed => "KILLED",
            State::Lost => "LOST",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Messages to the launcher server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LauncherMsg {
    /// See [`Hello`] (an ask).
    Hello(Hello),
    /// See [`SetAppId`].
    SetAppId(SetAppId),
    /// See [`SetState`].
    SetState(SetState),
    /// See [`SetDriverId`].
    SetDriverId(SetDriverId),
}

impl Protocol for LauncherMsg {
    const NAME: &'static str = "flint.launcher/1";
}

/// The reporter's first message (**ask**, reply `()`): where to send [`Stop`], and the
/// flint version it runs. The handle becomes CONNECTED.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The reporter's endpoint, for [`BackendMsg`].
    pub backend: EndpointRef<BackendMsg>,
    /// The reporter's flint version.
    pub version: String,
}

impl Ask for Hello {
    type Reply = ();
}

impl From<Hello> for LauncherMsg {
    fn from(m: Hello) -> Self {
        LauncherMsg::Hello(m)
    }
}

/// The application's id (`app-…`, or `local-…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAppId {
    /// The id.
    pub app_id: String,
}

impl From<SetAppId> for LauncherMsg {
    fn from(m: SetAppId) -> Self {
        LauncherMsg::SetAppId(m)
    }
}

/// A cluster-mode driver's id (`driver-…`), which `kill()` hands to `flint kill`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDriverId {
    /// The id.
    pub driver_id: String,
}

impl From<SetDriverId> for LauncherMsg {
    fn from(m: SetDriverId) -> Self {
        LauncherMsg::SetDriverId(m)
    }
}

/// A new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetState {
    /// The state.
    pub state: State,
}

impl From<SetState> for LauncherMsg {
    fn from(m: SetState) -> Self {
        LauncherMsg::SetState(m)
    }
}

/// Messages to the reporter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BackendMsg {
    /// See [`Stop`].
    Stop(Stop),
}

impl Protocol for BackendMsg {
    const NAME: &'static str = "flint.launcher-backend/1";
}

/// Asks the application to stop gracefully (it ends KILLED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop;

impl From<Stop> for BackendMsg {
    fn from(m: Stop) -> Self {
        BackendMsg::Stop(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_are_exactly_the_four_ends() {
        let all = [
            State::Unknown,
            State::Connected,
            State::Submitted,
            State::Running,
            State::Relaunching,
            State::Finished,
            State::Failed,
            State::Killed,
            State::Lost,
        ];
        let finals: Vec<_> = all
            .iter()
            .filter(|s| s.is_final())
            .map(|s| s.name())
            .collect();
        assert_eq!(finals, ["FINISHED", "FAILED", "KILLED", "LOST"]);
        assert_eq!(State::Relaunching.to_string(), "RELAUNCHING");
    }
}
