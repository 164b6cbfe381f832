//! The worker's RPC endpoint (`"Worker"`): turns each [`WorkerMsg`] a
//! master sends into a state-machine [`Event`], and each dropped connection
//! into [`Event::MasterDisconnected`] (the state machine acts only when the
//! address is its master's), and each failed connect whose handshake refused
//! this worker's credentials into [`Event::MasterRefusedAuth`]. The worker answers no requests: an ask is
//! failed with a message saying so, and the worker keeps serving.

use std::sync::Arc;

use flint_proto::messages::{
    ApplicationFinished, KillDriver, KillExecutor, LaunchDriver, LaunchExecutor, MasterChanged,
    ReconnectWorker, RegisterWorkerFailed, RegisteredWorker, WorkerMsg,
};
use flint_rpc::{Context, Endpoint, Reply, RpcAddress};

use super::shell::Shared;
use crate::state::{DecommissionTrigger, Event};

/// The endpoint; all its state is in [`Shared`].
pub(crate) struct WorkerEndpoint {
    pub(crate) shared: Arc<Shared>,
}

impl Endpoint for WorkerEndpoint {
    type Msg = WorkerMsg;

    fn receive(&mut self, ctx: &Context<WorkerMsg>, msg: WorkerMsg) {
        let span = span_for(&self.shared.span, &msg);
        let _g = span.enter();
        if let Some(event) = to_event(msg, ctx.sender()) {
            self.shared.handle(event);
        }
    }

    fn receive_and_reply(&mut self, ctx: &Context<WorkerMsg>, msg: WorkerMsg, reply: Reply) {
        let _g = self.shared.span.enter();
        let from = ctx
            .sender()
            .map_or_else(|| "this process".to_string(), ToString::to_string);
        tracing::warn!(
            "ignoring a request ({}) from {from}: the worker answers no requests",
            kind(&msg)
        );
        reply.fail(format!(
            "the worker endpoint answers no requests; {} must be sent one-way",
            kind(&msg)
        ));
    }

    fn on_disconnected(&mut self, _ctx: &Context<WorkerMsg>, remote: &RpcAddress) {
        let _g = self.shared.span.enter();
        self.shared.handle(Event::MasterDisconnected {
            address: remote.to_string(),
        });
    }

    fn on_network_error(&mut self, _ctx: &Context<WorkerMsg>, remote: &RpcAddress, error: &str) {
        let _g = self.shared.span.enter();
        self.shared.auth_refused(&remote.to_string(), error);
    }

    fn on_stop(&mut self, _ctx: &Context<WorkerMsg>) {
        let _g = self.shared.span.enter();
        tracing::debug!("worker endpoint stopped");
    }
}

/// The event a master's message stands for; `None` (with a warning) when
/// it cannot be used.
fn to_event(msg: WorkerMsg, sender: Option<&RpcAddress>) -> Option<Event> {
    let event = match msg {
        WorkerMsg::RegisteredWorker(RegisteredWorker {
            master,
            master_web_ui_url,
            master_address,
            duplicate,
        }) => {
            let Some(url) = master.rpc_address() else {
                tracing::warn!(
                    "ignoring a registration answer from {}: the master's endpoint {} has no \
                     listening address",
                    sender.map_or_else(|| "?".to_string(), ToString::to_string),
                    master.address()
                );
                return None;
            };
            Event::Registered {
                master_url: url.to_string(),
                master_web_ui_url,
                master_address: master_address.to_string(),
                duplicate,
            }
        }
        WorkerMsg::RegisterWorkerFailed(RegisterWorkerFailed { message }) => {
            Event::RegisterFailed { message }
        }
        WorkerMsg::MasterInStandby(_) => Event::MasterInStandby,
        WorkerMsg::ReconnectWorker(ReconnectWorker { master_url }) => {
            Event::ReconnectWorker { master_url }
        }
        WorkerMsg::MasterChanged(MasterChanged {
            master,
            master_web_ui_url,
        }) => {
            let Some(url) = master.rpc_address() else {
                tracing::warn!(
                    "ignoring a master change to {}: it has no listening address",
                    master.address()
                );
                return None;
            };
            Event::MasterChanged {
                master_url: url.to_string(),
                master_web_ui_url,
            }
        }
        WorkerMsg::LaunchExecutor(LaunchExecutor {
            master_url,
            app_id,
            exec_id,
            desc,
            cores,
            memory_mb,
        }) => Event::LaunchExecutor {
            master_url,
            app_id,
            exec_id,
            cores,
            memory_mb,
            desc: Box::new(desc),
        },
        WorkerMsg::KillExecutor(KillExecutor {
            master_url,
            app_id,
            exec_id,
        }) => Event::KillExecutor {
            master_url,
            app_id,
            exec_id,
        },
        WorkerMsg::LaunchDriver(LaunchDriver { driver_id, desc }) => Event::LaunchDriver {
            driver_id,
            desc: Box::new(desc),
        },
        WorkerMsg::KillDriver(KillDriver { driver_id }) => Event::KillDriver { driver_id },
        WorkerMsg::ApplicationFinished(ApplicationFinished { app_id }) => {
            Event::ApplicationFinished { app_id }
        }
        WorkerMsg::DecommissionWorker(_) => Event::Decommission {
            trigger: DecommissionTrigger::Master,
        },
    };
    Some(event)
}

/// The message's name, for log lines.
fn kind(msg: &WorkerMsg) -> &'static str {
    match msg {
        WorkerMsg::RegisteredWorker(_) => "RegisteredWorker",
        WorkerMsg::RegisterWorkerFailed(_) => "RegisterWorkerFailed",
        WorkerMsg::MasterInStandby(_) => "MasterInStandby",
        WorkerMsg::ReconnectWorker(_) => "ReconnectWorker",
        WorkerMsg::MasterChanged(_) => "MasterChanged",
        WorkerMsg::LaunchExecutor(_) => "LaunchExecutor",
        WorkerMsg::KillExecutor(_) => "KillExecutor",
        WorkerMsg::LaunchDriver(_) => "LaunchDriver",
        WorkerMsg::KillDriver(_) => "KillDriver",
        WorkerMsg::ApplicationFinished(_) => "ApplicationFinished",
        WorkerMsg::DecommissionWorker(_) => "DecommissionWorker",
    }
}

/// A span naming the application, executor or driver a message is about,
/// under the worker's span.
fn span_for(parent: &tracing::Span, msg: &WorkerMsg) -> tracing::Span {
    match msg {
        WorkerMsg::LaunchExecutor(m) => {
            tracing::info_span!(parent: parent, "executor", app_id = %m.app_id, exec_id = %m.exec_id)
        }
        WorkerMsg::KillExecutor(m) => {
            tracing::info_span!(parent: parent, "executor", app_id = %m.app_id, exec_id = %m.exec_id)
        }
        WorkerMsg::ApplicationFinished(m) => {
            tracing::info_span!(parent: parent, "app", app_id = %m.app_id)
        }
        WorkerMsg::LaunchDriver(m) => {
            tracing::info_span!(parent: parent, "driver", driver_id = %m.driver_id)
        }
        WorkerMsg::KillDriver(m) => {
            tracing::info_span!(parent: parent, "driver", driver_id = %m.driver_id)
        }
        _ => parent.clone(),
    }
}
