//! The master's web UI within its limits, over real TCP on 127.0.0.1: a
//! flood of idle UI connections is capped (the rest are refused with a 503)
//! while `RequestMasterState` over RPC — what `flint status` asks — keeps
//! answering; an idle UI connection is closed at `ui.idle_timeout`; a master
//! bound to every interface advertises an address peers can dial. Every
//! wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flint_conf::Conf;
use flint_master::{start, MasterHandle, MasterOptions};
use flint_proto::messages::{MasterMsg, RequestMasterState, MASTER_ENDPOINT};
use flint_rpc::RpcAddress;
use tokio::io::AsyncWriteExt;

#[path = "../../daemon/tests/support/mod.rs"]
mod support;
use support::{ask_once, closed, connect, get_on, read_response, DEADLINE};

/// The default `ui.max_connections`.
const CAP: usize = 64;
const FLOOD: usize = 300;

fn conf() -> Conf {
    Conf::new()
        .set("auth.secret", "flint-master-http-limits-tests")
        .set("rpc.ask_timeout", "10s")
        .set("rpc.connect_timeout", "5s")
        .set("rpc.handshake_timeout", "2s")
}

async fn master_on(host: &str, conf: Conf) -> MasterHandle {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    start(MasterOptions {
        host: host.into(),
        port: 0,
        webui_port: 0,
        conf,
    })
    .await
    .expect("master starts")
}

/// `RequestMasterState` over RPC from a client-only environment, as
/// `flint status` asks it.
async fn ask_state(address: &RpcAddress) -> flint_proto::status::MasterStatusJson {
    ask_once::<MasterMsg, _>(&conf(), address, MASTER_ENDPOINT, RequestMasterState).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ui_connections_are_capped_and_rpc_keeps_answering() {
    let m = master_on(
        "127.0.0.1",
        conf()
            .set("ui.idle_timeout", "10m")
            .set("ui.header_read_timeout", "10m"),
    )
    .await;
    // Connected one after another, so the master accepts them in this order:
    // the first CAP hold a slot, every later one is refused.
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(connect(m.webui_address()).await);
    }
    // With all of them open, the RPC status answers.
    let state = ask_state(m.rpc_address()).await;
    assert_eq!(state.url, m.rpc_address().to_string());

    let (held, refused) = flood.split_at_mut(CAP);
    for s in refused.iter_mut() {
        let (code, body) = read_response(s).await.expect("a 503");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("ui.max_connections = 64"), "{body}");
        closed(s).await;
    }
    for s in held.iter_mut() {
        let (code, body) = get_on(s, "/api/v1/status").await;
        assert_eq!(code, 200, "{body}");
    }
    // Still answering over RPC, and a slot freed serves a newcomer.
    ask_state(m.rpc_address()).await;
    drop(flood);
    let start = Instant::now();
    let mut fresh = loop {
        let mut s = connect(m.webui_address()).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        match read_response(&mut s).await {
            Some((200, body)) => {
                assert!(body.starts_with("flint master at "), "{body}");
                break s;
            }
            // The dropped connections' slots are not all free yet.
            Some((503, _)) | None => {
                assert!(start.elapsed() < DEADLINE, "no slot freed in time");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(get_on(&mut fresh, "/").await.0, 200);
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_ui_connection_is_closed_after_ui_idle_timeout() {
    let idle = Duration::from_millis(300);
    let m = master_on("127.0.0.1", conf().set("ui.idle_timeout", "300ms")).await;
    let mut silent = connect(m.webui_address()).await;
    let mut used = connect(m.webui_address()).await;
    assert_eq!(get_on(&mut used, "/api/v1/status").await.0, 200);
    let took = closed(&mut silent).await;
    assert!(
        took >= idle - Duration::from_millis(100),
        "closed after {took:?}"
    );
    closed(&mut used).await;
    // The UI itself goes on serving.
    let mut again = connect(m.webui_address()).await;
    assert_eq!(get_on(&mut again, "/").await.0, 200);
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_on_every_interface_advertises_a_dialable_address() {
    let m = master_on("0.0.0.0", conf().set("ui.host", "0.0.0.0")).await;
    let host = m.rpc_address().host.clone();
    let has_interfaces = !flint_daemon::advertise::interface_addresses().is_empty();
    assert!(!flint_daemon::advertise::is_unspecified(&host), "{host}");
    assert!(
        !has_interfaces || !flint_daemon::advertise::is_loopback(&host),
        "{host}"
    );
    assert_eq!(
        m.webui_url(),
        format!(
            "http://{}",
            flint_daemon::host_port(&host, m.webui_address().port())
        )
    );
    assert_eq!(m.status().url, m.rpc_address().to_string());
    // Peers dial the advertised address (it listens everywhere).
    let state = ask_state(m.rpc_address()).await;
    assert_eq!(state.url, m.rpc_address().to_string());
    m.shutdown();
    tokio::time::timeout(DEADLINE, m.wait()).await.unwrap();
}
