//! Client mode under a launcher: when `flint-launcher` started this program (its
//! `FLINT_LAUNCHER_*` variables are set), the first context of the process connects to
//! the launcher, says hello (CONNECTED), reports SUBMITTED before it registers, the
//! app id and RUNNING once registered, and the final state when it ends (FINISHED,
//! FAILED, KILLED). A `stop` from the launcher stops the context, KILLED.
//!
//! Failing to connect never fails the program: it is logged and the program runs
//! unreported (the launcher's handle then follows the process's exit).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flint_launcher::backend::Backend;
use flint_launcher::State;
use flint_proto::ApplicationState;

type StopFn = Box<dyn Fn() + Send + Sync>;

/// This driver's connection to its launcher.
pub(crate) struct Link {
    backend: Backend,
    on_stop: Arc<Mutex<Option<StopFn>>>,
}

/// Only the first context of a process reports: the launcher's key is single-use.
static TRIED: AtomicBool = AtomicBool::new(false);

/// Connects when the launcher variables are present (once per process).
pub(crate) fn connect() -> Option<Link> {
    if TRIED.swap(true, Ordering::SeqCst) {
        return None;
    }
    let on_stop: Arc<Mutex<Option<StopFn>>> = Arc::new(Mutex::new(None));
    let target = on_stop.clone();
    let stop = move || {
        if let Ok(f) = target.lock() {
            if let Some(f) = &*f {
                f();
            }
        }
    };
    match Backend::connect_from_env(stop) {
        Ok(Some(backend)) => {
            backend.set_state(State::Submitted);
            Some(Link { backend, on_stop })
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("not reporting to the launcher: {e}");
            None
        }
    }
}

impl Link {
    /// What a `stop` from the launcher runs.
    pub(crate) fn on_stop(&self, f: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut s) = self.on_stop.lock() {
            *s = Some(Box::new(f));
        }
    }

    /// The application registered as `app_id`.
    pub(crate) fn running(&self, app_id: &str) {
        self.backend.set_app_id(app_id);
        self.backend.set_state(State::Running);
    }

    /// The application ended in `state`; waits (bounded) until the launcher has it.
    pub(crate) fn finish(&self, state: ApplicationState) {
        let s = match state {
            ApplicationState::Finished => State::Finished,
            ApplicationState::Killed => State::Killed,
            _ => State::Failed,
        };
        self.backend.finish(s);
    }
}
