//! The master's RPC endpoint (`"Master"`): turns each [`MasterMsg`] into a
//! state-machine [`Event`] (with the sender's endpoint, for registration
//! answers) and each dropped connection into a disconnection event.

use std::sync::Arc;

use flint_proto::messages::{
    ExecutorStateChanged, Heartbeat, MasterMsg, RegisterApplication, RegisterWorker,
};
use flint_rpc::{Context, Endpoint, Reply, RpcAddress};

use super::shell::{Origin, Shared};
use crate::state::{DriverAddress, Event, WorkerRegistration};

/// The endpoint; all its state is in [`Shared`].
pub(crate) struct MasterEndpoint {
    pub(crate) shared: Arc<Shared>,
    /// The master's root span, entered for every message so that its lines never
    /// carry the span of the task that delivered it.
    pub(crate) span: tracing::Span,
}

impl Endpoint for MasterEndpoint {
    type Msg = MasterMsg;

    fn on_start(&mut self, ctx: &Context<MasterMsg>) {
        self.shared.core.lock().master_ref = Some(ctx.self_ref().clone());
    }

    fn receive(&mut self, ctx: &Context<MasterMsg>, msg: MasterMsg) {
        self.on_message(ctx, msg, None);
    }

    fn receive_and_reply(&mut self, ctx: &Context<MasterMsg>, msg: MasterMsg, reply: Reply) {
        self.on_message(ctx, msg, Some(reply));
    }

    fn on_disconnected(&mut self, _ctx: &Context<MasterMsg>, remote: &RpcAddress) {
        let _master = self.span.enter();
        self.shared.disconnected(remote);
    }

    fn on_stop(&mut self, _ctx: &Context<MasterMsg>) {
        tracing::debug!("master endpoint stopped");
    }
}

impl MasterEndpoint {
    fn on_message(&mut self, ctx: &Context<MasterMsg>, msg: MasterMsg, reply: Option<Reply>) {
        let sender = ctx.sender().cloned();
        let _master = self.span.enter();
        let span = span_for(&msg);
        let _g = span.enter();
        let (event, origin) = match msg {
            // Answered from the state directly, not events of the machine.
            MasterMsg::RequestMasterState(q) => {
                let status = self.shared.status();
                match reply {
                    Some(r) => r.typed(&q).send(status),
                    None => tracing::debug!("RequestMasterState sent one-way; ignored"),
                }
                return;
            }
            MasterMsg::RequestReadyz(q) => {
                let ready = self.shared.core.lock().state.is_ready();
                if let Some(r) = reply {
                    r.typed(&q).send(ready);
                }
                return;
            }
            MasterMsg::RequestWebUiUrl(q) => {
                let url = self.shared.core.lock().web_ui_url().to_string();
                if let Some(r) = reply {
                    r.typed(&q).send(url);
                }
                return;
            }

            MasterMsg::WatchDriver(w) => {
                self.shared.watch_driver(w.driver_id, w.watcher, sender);
                return;
            }

            // ----- from workers -----
            MasterMsg::RegisterWorker(RegisterWorker {
                id,
                host,
                port,
                worker,
                cores,
                memory_mb,
                web_ui_url,
                master_address,
            }) => (
                Event::RegisterWorker(WorkerRegistration {
                    id,
                    host,
                    port,
                    cores,
                    memory_mb,
                    web_ui_url,
                }),
                Origin::Worker {
                    worker,
                    conn: sender,
                    master_address: Some(master_address),
                },
            ),
            MasterMsg::Heartbeat(Heartbeat { worker_id, worker }) => (
                Event::Heartbeat { worker_id },
                Origin::Worker {
                    worker,
                    conn: sender,
                    master_address: None,
                },
            ),
            MasterMsg::WorkerLatestState(m) => (
                Event::WorkerLatestState {
                    worker_id: m.worker_id,
                    executors: m.executors,
                    driver_ids: m.driver_ids,
                },
                Origin::Internal,
            ),
            MasterMsg::WorkerSchedulerStateResponse(m) => (
                Event::WorkerSchedulerState {
                    worker_id: m.worker_id,
                    executors: m.executors,
                    driver_ids: m.driver_ids,
                },
                Origin::Internal,
            ),
            MasterMsg::WorkerDecommissioning(m) => (
                Event::WorkerDecommissioning {
                    worker_id: m.worker_id,
                },
                Origin::Worker {
                    worker: m.worker,
                    conn: sender,
                    master_address: None,
                },
            ),
            MasterMsg::ExecutorStateChanged(ExecutorStateChanged {
                app_id,
                exec_id,
                state,
                message,
                exit_status,
            }) => (
                Event::ExecutorStateChanged {
                    app_id,
                    exec_id,
                    state,
                    message,
                    exit_status,
                },
                Origin::Internal,
            ),
            MasterMsg::DriverStateChanged(m) => (
                Event::DriverStateChanged {
                    driver_id: m.driver_id,
                    state: m.state,
                    exception: m.exception,
                },
                Origin::Internal,
            ),

            // ----- from application clients -----
            MasterMsg::RegisterApplication(RegisterApplication { desc, driver }) => {
                // What identifies the driver: its endpoint address when its
                // environment listens, else the connection it came over (a
                // client-only environment's endpoints all print alike).
                let driver_address = DriverAddress {
                    endpoint: driver.address().to_string(),
                    via: match (driver.rpc_address(), &sender) {
                        (None, Some(conn)) => Some(conn.host_port()),
                        _ => None,
                    },
                };
                (
                    Event::RegisterApplication {
                        desc,
                        driver_address,
                    },
                    Origin::App {
                        driver,
                        conn: sender,
                    },
                )
            }
            MasterMsg::UnregisterApplication(m) => (
                Event::UnregisterApplication {
                    app_id: m.app_id,
                    final_state: m.final_state,
                },
                Origin::Internal,
            ),
            MasterMsg::MasterChangeAcknowledged(m) => (
                Event::MasterChangeAcknowledged { app_id: m.app_id },
                Origin::Internal,
            ),
            MasterMsg::RequestExecutors(m) => (
                Event::RequestExecutors {
                    app_id: m.app_id,
                    total: m.total,
                },
                Origin::Internal,
            ),
            MasterMsg::KillExecutors(m) => (
                Event::KillExecutors {
                    app_id: m.app_id,
                    exec_ids: m.exec_ids,
                },
                Origin::Internal,
            ),

            // ----- from tools -----
            MasterMsg::KillApplication(m) => (
                Event::KillApplication { app_id: m.app_id },
                Origin::Internal,
            ),
            MasterMsg::DecommissionWorkersOnHosts(m) => (
                Event::DecommissionWorkersOnHosts { hosts: m.hosts },
                Origin::Internal,
            ),
            MasterMsg::RequestSubmitDriver(m) => {
                (Event::SubmitDriver { desc: m.desc }, Origin::Internal)
            }
            MasterMsg::RequestKillDriver(m) => (
                Event::KillDriver {
                    driver_id: m.driver_id,
                },
                Origin::Internal,
            ),
            MasterMsg::RequestKillAllDrivers(_) => (Event::KillAllDrivers, Origin::Internal),
            MasterMsg::RequestDriverStatus(m) => (
                Event::RequestDriverStatus {
                    driver_id: m.driver_id,
                },
                Origin::Internal,
            ),
            MasterMsg::RequestClearCompletedDriversAndApps(_) => {
                (Event::ClearCompleted, Origin::Internal)
            }
            MasterMsg::RequestDriverAttempt(m) => (
                Event::RequestDriverAttempt {
                    driver_id: m.driver_id,
                },
                Origin::Internal,
            ),
        };
        self.shared.handle(event, origin, reply);
    }
}

/// A span naming the worker or application a message is about, so every log
/// line its handling produces carries the id.
fn span_for(msg: &MasterMsg) -> tracing::Span {
    match msg {
        MasterMsg::RegisterWorker(m) => tracing::info_span!("worker", worker_id = %m.id),
        MasterMsg::Heartbeat(m) => tracing::debug_span!("worker", worker_id = %m.worker_id),
        MasterMsg::WorkerLatestState(m) => tracing::info_span!("worker", worker_id = %m.worker_id),
        MasterMsg::WorkerSchedulerStateResponse(m) => {
            tracing::info_span!("worker", worker_id = %m.worker_id)
        }
        MasterMsg::WorkerDecommissioning(m) => {
            tracing::info_span!("worker", worker_id = %m.worker_id)
        }
        MasterMsg::ExecutorStateChanged(m) => {
            tracing::info_span!("app", app_id = %m.app_id, exec_id = %m.exec_id)
        }
        MasterMsg::DriverStateChanged(m) => tracing::info_span!("driver", driver_id = %m.driver_id),
        MasterMsg::RegisterApplication(m) => tracing::info_span!("app", app_name = %m.desc.name),
        MasterMsg::UnregisterApplication(m) => tracing::info_span!("app", app_id = %m.app_id),
        MasterMsg::MasterChangeAcknowledged(m) => tracing::info_span!("app", app_id = %m.app_id),
        MasterMsg::RequestExecutors(m) => tracing::info_span!("app", app_id = %m.app_id),
        MasterMsg::KillExecutors(m) => tracing::info_span!("app", app_id = %m.app_id),
        MasterMsg::KillApplication(m) => tracing::info_span!("app", app_id = %m.app_id),
        MasterMsg::RequestKillDriver(m) => tracing::info_span!("driver", driver_id = %m.driver_id),
        MasterMsg::RequestDriverStatus(m) => {
            tracing::debug_span!("driver", driver_id = %m.driver_id)
        }
        MasterMsg::RequestDriverAttempt(m) => {
            tracing::debug_span!("driver", driver_id = %m.driver_id)
        }
        MasterMsg::WatchDriver(m) => tracing::debug_span!("driver", driver_id = %m.driver_id),
        MasterMsg::RequestMasterState(_)
        | MasterMsg::RequestReadyz(_)
        | MasterMsg::RequestWebUiUrl(_)
        | MasterMsg::DecommissionWorkersOnHosts(_)
        | MasterMsg::RequestSubmitDriver(_)
        | MasterMsg::RequestKillAllDrivers(_)
        | MasterMsg::RequestClearCompletedDriversAndApps(_) => tracing::debug_span!("request"),
    }
}
