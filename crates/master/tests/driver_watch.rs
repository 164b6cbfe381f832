//! `WatchDriver` over real RPC on 127.0.0.1: the master pushes a watched driver's
//! current state at once and every change until its final one, and keeps at most
//! `master.max_driver_watches` watches (one past it is refused: nothing is pushed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flint_conf::Conf;
use flint_master::{start, MasterOptions};
use flint_proto::messages::{
    DriverAttemptResponse, DriverWatchMsg, MasterMsg, RequestKillDriver, RequestSubmitDriver,
    WatchDriver, MASTER_ENDPOINT,
};
use flint_proto::{DriverDescription, DriverId, DriverState, ExecutorCommand};
use flint_rpc::{Context, Endpoint, RpcConf, RpcEnv};
use tokio::sync::mpsc;

fn conf() -> Conf {
    Conf::new()
        .set("auth.secret", "flint-master-driver-watch-tests")
        .set("master.max_driver_watches", "1")
}

struct Watcher(mpsc::UnboundedSender<DriverAttemptResponse>);

impl Endpoint for Watcher {
    type Msg = DriverWatchMsg;
    fn receive(&mut self, _ctx: &Context<DriverWatchMsg>, msg: DriverWatchMsg) {
        let DriverWatchMsg::DriverUpdate(u) = msg;
        let _ = self.0.send(u.attempt);
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<DriverAttemptResponse>) -> DriverAttemptResponse {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an update within 20 s")
        .expect("the watcher is open")
}

#[tokio::test]
async fn a_watched_driver_is_pushed_until_final_and_watches_are_bounded() {
    let m = start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: conf(),
    })
    .await
    .expect("master starts");
    let env = RpcEnv::client(RpcConf::from_conf(&conf()).unwrap()).unwrap();
    let master = env.endpoint_ref::<MasterMsg>(m.rpc_address(), MASTER_ENDPOINT);
    // No worker: submitted drivers wait (SUBMITTED) until killed.
    let submit = || async {
        let r = master
            .ask(RequestSubmitDriver {
                desc: DriverDescription::new("/bin/true", ExecutorCommand::new("/bin/true")),
            })
            .await
            .unwrap();
        assert!(r.success, "{}", r.message);
        r.driver_id.unwrap()
    };
    let (one, two): (DriverId, DriverId) = (submit().await, submit().await);
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    let a = env.setup_endpoint("watch-a", Watcher(tx_a)).unwrap();
    let b = env.setup_endpoint("watch-b", Watcher(tx_b)).unwrap();
    master
        .send(WatchDriver {
            driver_id: one.clone(),
            watcher: a,
        })
        .unwrap();
    // The current state at once.
    let first = next(&mut rx_a).await;
    assert_eq!(first.driver_id.as_ref(), Some(&one));
    assert_eq!(first.status.state, Some(DriverState::Submitted));
    // A second watch is past master.max_driver_watches = 1: refused.
    master
        .send(WatchDriver {
            driver_id: two.clone(),
            watcher: b,
        })
        .unwrap();
    let k = master
        .ask(RequestKillDriver { driver_id: two })
        .await
        .unwrap();
    assert!(k.success, "{}", k.message);
    let k = master
        .ask(RequestKillDriver {
            driver_id: one.clone(),
        })
        .await
        .unwrap();
    assert!(k.success, "{}", k.message);
    let last = next(&mut rx_a).await;
    assert_eq!(last.status.state, Some(DriverState::Killed));
    // Everything for this connection came in order: had the refused watch been kept,
    // its KILLED would be here before the one above.
    assert!(
        rx_b.try_recv().is_err(),
        "the watch past the bound was kept"
    );
    // The final state ended the watch: room for a new one, answered at once.
    let (tx_c, mut rx_c) = mpsc::unbounded_channel();
    let c = env.setup_endpoint("watch-c", Watcher(tx_c)).unwrap();
    master
        .send(WatchDriver {
            driver_id: one.clone(),
            watcher: c,
        })
        .unwrap();
    assert_eq!(
        next(&mut rx_c).await.status.state,
        Some(DriverState::Killed)
    );
    env.shutdown();
    m.shutdown();
    m.wait().await;
}
