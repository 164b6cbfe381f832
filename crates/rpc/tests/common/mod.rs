//! Shared test fixtures: a small counter/echo protocol, log capture, and waiting for a
//! condition with a deadline.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flint_rpc::{
    Ask, Context, Endpoint, EndpointRef, Protocol, Reply, RpcAddress, RpcConf, RpcEnv,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub enum TestMsg {
    Add(u64),
    Get(Get),
    Echo(Echo),
    Fail(Fail),
    Panic(Panic),
    Hold(Hold),
    Call(Call),
    Blob(Blob),
}

impl Protocol for TestMsg {
    const NAME: &'static str = "flint.test/1";
}

macro_rules! ask {
    ($t:ident, $reply:ty) => {
        impl Ask for $t {
            type Reply = $reply;
        }
        impl From<$t> for TestMsg {
            fn from(v: $t) -> Self {
                TestMsg::$t(v)
            }
        }
    };
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Get;
ask!(Get, u64);
#[derive(Debug, Serialize, Deserialize)]
pub struct Echo(pub String);
ask!(Echo, String);
#[derive(Debug, Serialize, Deserialize)]
pub struct Fail(pub String);
ask!(Fail, ());
#[derive(Debug, Serialize, Deserialize)]
pub struct Panic;
ask!(Panic, ());
/// Never answered: the endpoint keeps the reply handle.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hold;
ask!(Hold, ());
/// Carries a ref back to the caller: the endpoint asks it `Echo` and returns the answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Call(pub EndpointRef<TestMsg>, pub String);
ask!(Call, ());
#[derive(Debug, Serialize, Deserialize)]
pub struct Blob(pub Vec<u8>);
ask!(Blob, u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Started,
    Stopped,
    Connected(RpcAddress),
    Disconnected(RpcAddress),
    NetworkError(RpcAddress),
}

/// Counts `Add`s, echoes, fails and panics on request; records lifecycle events.
#[derive(Default)]
pub struct TestEndpoint {
    pub total: u64,
    pub held: Vec<Reply>,
    pub events: Arc<Mutex<Vec<Seen>>>,
}

impl TestEndpoint {
    pub fn with_events() -> (Self, Arc<Mutex<Vec<Seen>>>) {
        let ep = TestEndpoint::default();
        let ev = ep.events.clone();
        (ep, ev)
    }
}

impl Endpoint for TestEndpoint {
    type Msg = TestMsg;

    fn on_start(&mut self, _: &Context<TestMsg>) {
        self.events.lock().unwrap().push(Seen::Started);
    }

    fn receive(&mut self, _: &Context<TestMsg>, msg: TestMsg) {
        if let TestMsg::Add(n) = msg {
            self.total += n;
        }
    }

    fn receive_and_reply(&mut self, ctx: &Context<TestMsg>, msg: TestMsg, reply: Reply) {
        match msg {
            TestMsg::Get(_) => reply.send(self.total),
            TestMsg::Echo(Echo(s)) => reply.send(s),
            TestMsg::Fail(Fail(why)) => reply.fail(why),
            TestMsg::Panic(_) => panic!("asked to panic"),
            TestMsg::Hold(_) => self.held.push(reply),
            TestMsg::Blob(Blob(b)) => reply.send(b.len() as u64),
            TestMsg::Call(Call(back, text)) => {
                let me = ctx.name().to_string();
                tokio::spawn(async move {
                    match back.ask(Echo(format!("{text} via {me}"))).await {
                        Ok(s) => {
                            let _ = back.send(TestMsg::Add(s.len() as u64));
                            reply.send(())
                        }
                        Err(e) => reply.fail(e),
                    }
                });
            }
            TestMsg::Add(n) => {
                self.total += n;
                reply.send(())
            }
        }
    }

    fn on_connected(&mut self, _: &Context<TestMsg>, remote: &RpcAddress) {
        self.events
            .lock()
            .unwrap()
            .push(Seen::Connected(remote.clone()));
    }

    fn on_disconnected(&mut self, _: &Context<TestMsg>, remote: &RpcAddress) {
        self.events
            .lock()
            .unwrap()
            .push(Seen::Disconnected(remote.clone()));
    }

    fn on_network_error(&mut self, _: &Context<TestMsg>, remote: &RpcAddress, _: &str) {
        self.events
            .lock()
            .unwrap()
            .push(Seen::NetworkError(remote.clone()));
    }

    fn on_stop(&mut self, _: &Context<TestMsg>) {
        self.events.lock().unwrap().push(Seen::Stopped);
    }
}

/// Waits until `cond` holds, polling, failing the test with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn server(conf: RpcConf) -> RpcEnv {
    RpcEnv::server(conf, "127.0.0.1", 0).await.expect("bind")
}

pub async fn server_with_test_endpoint(
    conf: RpcConf,
) -> (RpcEnv, RpcAddress, Arc<Mutex<Vec<Seen>>>) {
    let env = server(conf).await;
    let (ep, events) = TestEndpoint::with_events();
    env.setup_endpoint("test", ep).expect("setup");
    let addr = env.address().expect("server mode").clone();
    (env, addr, events)
}

pub fn quick_conf() -> RpcConf {
    let mut c = RpcConf::default();
    c.ask_timeout.duration = Duration::from_secs(10);
    c.connect_timeout.duration = Duration::from_secs(5);
    c.handshake_timeout.duration = Duration::from_secs(5);
    c
}

/// Log lines of the whole test binary, captured once.
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter("flint_rpc=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(w.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(sub);
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        std::io::stderr().write_all(b).ok();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until a captured WARN-or-worse log line contains every one of `parts`.
pub async fn wait_for_log(parts: &[&str]) -> String {
    let logs = logs();
    let mut found = String::new();
    wait_until(
        &format!("a log line containing {parts:?}"),
        Duration::from_secs(10),
        || {
            let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
            match text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                Some(l) => {
                    found = l.to_string();
                    true
                }
                None => false,
            }
        },
    )
    .await;
    found
}

/// A fresh client env that asks the `test` endpoint at `addr` to echo: proof the
/// server still serves.
pub async fn still_serves(addr: &RpcAddress, conf: RpcConf) {
    let c = RpcEnv::client(conf).expect("client");
    let r = c
        .setup_endpoint_ref::<TestMsg>(addr, "test")
        .await
        .expect("lookup");
    assert_eq!(
        r.ask(Echo("still here".into())).await.expect("ask"),
        "still here"
    );
    c.shutdown();
}
