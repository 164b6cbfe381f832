//! What the application client reports: the [`AppClientListener`] callbacks
//! (Spark's `StandaloneAppClientListener`), the [`AppEvent`] each callback
//! corresponds to, and [`ChannelListener`], a ready-made listener that turns
//! the callbacks into a stream of events on a tokio channel.

use std::sync::Arc;

use flint_proto::{AppId, ExecutorId, WorkerId};
use tokio::sync::mpsc;

/// Callbacks for cluster events concerning one application (Spark's
/// `StandaloneAppClientListener`).
///
/// They run on the client endpoint's task, one at a time and in the order the
/// master sent the messages (except [`dead`](Self::dead) after the
/// registration rounds ran out, which comes from the registration task).
/// They must not block: hand slow work to a task or a channel, as
/// [`ChannelListener`] does. A callback may call back into the
/// [`AppClientHandle`](crate::AppClientHandle).
pub trait AppClientListener: Send + Sync + 'static {
    /// The master registered the application under `app_id`.
    fn connected(&self, app_id: AppId);

    /// The connection to the current master dropped; the client waits for a
    /// new leader's `MasterChanged` (Spark's backend logs "Disconnected from
    /// Spark cluster! Waiting for reconnection..."). Reported once until a
    /// `MasterChanged` arrives.
    fn disconnected(&self);

    /// The application is dead and will get no more executors: every
    /// registration round went unanswered ("All masters are unresponsive!
    /// Giving up."), the master removed it ("Master removed our application:
    /// KILLED ..."), it was stopped ("Application has been stopped."), or
    /// its RPC environment shut down under it. Reported at most once.
    fn dead(&self, reason: String);

    /// The master placed executor `exec_id` on worker `worker_id`
    /// (`host_port`) with `cores` and `memory_mb`.
    fn executor_added(
        &self,
        exec_id: ExecutorId,
        worker_id: WorkerId,
        host_port: String,
        cores: u32,
        memory_mb: u64,
    );

    /// Executor `exec_id` reached a finished state (KILLED, FAILED, LOST or
    /// EXITED). `worker_host` is set when its whole worker was lost.
    fn executor_removed(
        &self,
        exec_id: ExecutorId,
        message: String,
        exit_status: Option<i32>,
        worker_host: Option<String>,
    );

    /// Executor `exec_id` is being decommissioned with its worker.
    /// `worker_host` is set when the whole host is being decommissioned.
    fn executor_decommissioned(
        &self,
        exec_id: ExecutorId,
        message: String,
        worker_host: Option<String>,
    );

    /// The master removed worker `worker_id` on `host` from the cluster; the
    /// driver should forget what lived there.
    fn worker_removed(&self, worker_id: WorkerId, host: String, message: String);
}

/// One listener callback, as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// See [`AppClientListener::connected`].
    Connected(AppId),
    /// See [`AppClientListener::disconnected`].
    Disconnected,
    /// See [`AppClientListener::dead`].
    Dead(String),
    /// See [`AppClientListener::executor_added`].
    ExecutorAdded {
        /// The executor's id within the application.
        exec_id: ExecutorId,
        /// The worker it runs on.
        worker_id: WorkerId,
        /// That worker's `host:port`.
        host_port: String,
        /// Its cores.
        cores: u32,
        /// Its memory, in MB.
        memory_mb: u64,
    },
    /// See [`AppClientListener::executor_removed`].
    ExecutorRemoved {
        /// The executor.
        exec_id: ExecutorId,
        /// Why (empty when the master gave no reason).
        message: String,
        /// Its exit status, if it exited.
        exit_status: Option<i32>,
        /// Set when its whole worker was lost.
        worker_host: Option<String>,
    },
    /// See [`AppClientListener::executor_decommissioned`].
    ExecutorDecommissioned {
        /// The executor.
        exec_id: ExecutorId,
        /// Why (empty when the master gave no reason).
        message: String,
        /// Set when the whole host is being decommissioned.
        worker_host: Option<String>,
    },
    /// See [`AppClientListener::worker_removed`].
    WorkerRemoved {
        /// The worker.
        worker_id: WorkerId,
        /// Its host.
        host: String,
        /// Why.
        message: String,
    },
}

/// A listener that sends every callback as an [`AppEvent`] on an unbounded
/// channel, for a driver loop or a test to consume at its own pace. Events
/// sent after the receiver is dropped are discarded.
#[derive(Debug, Clone)]
pub struct ChannelListener {
    tx: mpsc::UnboundedSender<AppEvent>,
}

impl ChannelListener {
    /// A listener and the receiving end of its events.
    pub fn new() -> (Arc<ChannelListener>, mpsc::UnboundedReceiver<AppEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(ChannelListener { tx }), rx)
    }

    fn emit(&self, event: AppEvent) {
        if self.tx.send(event).is_err() {
            tracing::debug!("application event dropped: nobody receives events any more");
        }
    }
}

impl AppClientListener for ChannelListener {
    fn connected(&self, app_id: AppId) {
        self.emit(AppEvent::Connected(app_id));
    }

    fn disconnected(&self) {
        self.emit(AppEvent::Disconnected);
    }

    fn dead(&self, reason: String) {
        self.emit(AppEvent::Dead(reason));
    }

    fn executor_added(
        &self,
        exec_id: ExecutorId,
        worker_id: WorkerId,
        host_port: String,
        cores: u32,
        memory_mb: u64,
    ) {
        self.emit(AppEvent::ExecutorAdded {
            exec_id,
            worker_id,
            host_port,
            cores,
            memory_mb,
        });
    }

    fn executor_removed(
        &self,
        exec_id: ExecutorId,
        message: String,
        exit_status: Option<i32>,
        worker_host: Option<String>,
    ) {
        self.emit(AppEvent::ExecutorRemoved {
            exec_id,
            message,
            exit_status,
            worker_host,
        });
    }

    fn executor_decommissioned(
        &self,
        exec_id: ExecutorId,
        message: String,
        worker_host: Option<String>,
    ) {
        self.emit(AppEvent::ExecutorDecommissioned {
            exec_id,
            message,
            worker_host,
        });
    }

    fn worker_removed(&self, worker_id: WorkerId, host: String, message: String) {
        self.emit(AppEvent::WorkerRemoved {
            worker_id,
            host,
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_become_events_in_order() {
        let (l, mut rx) = ChannelListener::new();
        let app = AppId::generate(0, 1);
        let worker = WorkerId::generate(0, "h", 1).expect("valid");
        l.connected(app.clone());
        l.executor_added(ExecutorId(0), worker.clone(), "h:1".into(), 2, 512);
        l.executor_removed(ExecutorId(0), "gone".into(), Some(1), None);
        l.worker_removed(worker.clone(), "h".into(), "lost".into());
        l.disconnected();
        l.dead("bye".into());
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            got,
            vec![
                AppEvent::Connected(app),
                AppEvent::ExecutorAdded {
                    exec_id: ExecutorId(0),
                    worker_id: worker.clone(),
                    host_port: "h:1".into(),
                    cores: 2,
                    memory_mb: 512
                },
                AppEvent::ExecutorRemoved {
                    exec_id: ExecutorId(0),
                    message: "gone".into(),
                    exit_status: Some(1),
                    worker_host: None
                },
                AppEvent::WorkerRemoved {
                    worker_id: worker,
                    host: "h".into(),
                    message: "lost".into()
                },
                AppEvent::Disconnected,
                AppEvent::Dead("bye".into()),
            ]
        );
        drop(rx);
        l.dead("nobody listens".into());
    }
}
