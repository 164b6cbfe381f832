//! [`AppHandle`] (Spark's `SparkAppHandle`) and its [`Listener`].

use std::sync::Arc;

use crate::protocol::{BackendMsg, State, Stop};
use crate::server::HandleInner;
use crate::LauncherError;

/// Called when a handle's state or info changes, on the launcher's own threads: must
/// return quickly and never block.
pub trait Listener: Send + Sync + 'static {
    /// The state changed to `state`. Changes are told in the order they happened,
    /// one at a time; by now [`AppHandle::state`] may already be a later one.
    fn state_changed(&self, _handle: &AppHandle, _state: State) {}
    /// The app id or driver id became known.
    fn info_changed(&self, _handle: &AppHandle) {}
}

/// Kills the child when the last user-held clone of its handle goes (with
/// `Launcher::kill_on_drop`).
pub(crate) struct KillGuard(pub(crate) Arc<HandleInner>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        if !self.0.state().is_final() {
            tracing::info!(key = %self.0.key_id, "the application's handle was dropped; killing it");
        }
        self.0.request_kill();
    }
}

/// A launched application, followed through the launcher server. Cheap to clone.
#[derive(Clone)]
pub struct AppHandle {
    pub(crate) inner: Arc<HandleInner>,
    pub(crate) _guard: Option<Arc<KillGuard>>,
}

impl std::fmt::Debug for AppHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppHandle")
            .field("state", &self.state())
            .field("app_id", &self.app_id())
            .field("driver_id", &self.driver_id())
            .finish()
    }
}

impl AppHandle {
    /// The current state.
    pub fn state(&self) -> State {
        self.inner.state()
    }

    /// The application's id, once reported.
    pub fn app_id(&self) -> Option<String> {
        self.inner.app_id()
    }

    /// A cluster-mode driver's id, once reported.
    pub fn driver_id(&self) -> Option<String> {
        self.inner.driver_id()
    }

    /// The child process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// The child's exit code once it exited (`None` also when a signal ended it).
    pub fn exit_code(&self) -> Option<i32> {
        self.inner.exit_code()
    }

    /// Adds a listener; it hears every change from now on.
    pub fn add_listener(&self, l: impl Listener) {
        self.inner.add_listener(Arc::new(l));
    }

    /// Asks the application to stop gracefully (it ends KILLED): the driver stops its
    /// context; in cluster mode `flint submit` asks the master to kill the driver.
    /// Fails when the application has not connected yet.
    pub fn stop(&self) -> Result<(), LauncherError> {
        let Some(backend) = self.inner.backend() else {
            return Err(LauncherError::NotConnected(self.state()));
        };
        backend
            .send(BackendMsg::Stop(Stop))
            .map_err(|e| LauncherError::Connect {
                port: 0,
                reason: format!("cannot send stop: {e}"),
            })
    }

    /// Kills the application: the state becomes KILLED, the connection is closed and
    /// the child process (with its process group) is killed; in cluster mode the
    /// master is first asked to kill the driver (`flint kill`, bounded).
    pub fn kill(&self) {
        self.inner.kill();
    }

    /// Closes the connection and stops following the application, which keeps
    /// running; the state becomes LOST unless it is final.
    pub fn disconnect(&self) {
        self.inner.dispose();
    }

    /// Waits, at most `timeout`, for a final state that every listener has heard;
    /// returns the state then.
    pub async fn wait_final(&self, timeout: std::time::Duration) -> State {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            let s = self.inner.delivered_state();
            if s.is_final() {
                return s;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.state();
            }
        }
    }
}
