//! `flint demo`: this process starts an RPC environment with a `counter` endpoint and
//! registers a file; a second process (`flint demo-peer`) looks the endpoint up, sends
//! and asks, hands over a reference to its own endpoint for a callback, and fetches the
//! file. Both narrate what they do.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flint_rpc::{
    Ask, Context, Endpoint, EndpointRef, Protocol, Reply, RpcAddress, RpcConf, RpcEnv,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Messages of the demo's `counter` endpoint (and of the peer's `listener`).
#[derive(Debug, Serialize, Deserialize)]
enum DemoMsg {
    Add(u64),
    Total(Total),
    Greet(Greet),
    Subscribe(Subscribe),
    Note(String),
}

impl Protocol for DemoMsg {
    const NAME: &'static str = "flint.demo/1";
}

#[derive(Debug, Serialize, Deserialize)]
struct Total;
impl Ask for Total {
    type Reply = u64;
}
impl From<Total> for DemoMsg {
    fn from(v: Total) -> Self {
        DemoMsg::Total(v)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Greet(String);
impl Ask for Greet {
    type Reply = String;
}
impl From<Greet> for DemoMsg {
    fn from(v: Greet) -> Self {
        DemoMsg::Greet(v)
    }
}

/// Carries the peer's own endpoint ref; the counter answers with how many adds it saw
/// and sends a note back through the ref.
#[derive(Debug, Serialize, Deserialize)]
struct Subscribe(EndpointRef<DemoMsg>);
impl Ask for Subscribe {
    type Reply = u64;
}
impl From<Subscribe> for DemoMsg {
    fn from(v: Subscribe) -> Self {
        DemoMsg::Subscribe(v)
    }
}

struct Counter {
    total: u64,
    adds: u64,
}

impl Endpoint for Counter {
    type Msg = DemoMsg;

    fn on_connected(&mut self, _: &Context<DemoMsg>, remote: &RpcAddress) {
        println!("[server] a peer connected from {remote}");
    }

    fn receive(&mut self, _: &Context<DemoMsg>, msg: DemoMsg) {
        if let DemoMsg::Add(n) = msg {
            self.total += n;
            self.adds += 1;
        }
    }

    fn receive_and_reply(&mut self, ctx: &Context<DemoMsg>, msg: DemoMsg, reply: Reply) {
        match msg {
            DemoMsg::Total(_) => {
                println!(
                    "[server] asked for the total: {} after {} adds",
                    self.total, self.adds
                );
                reply.send(self.total)
            }
            DemoMsg::Greet(Greet(name)) => {
                let from = ctx.sender().map(ToString::to_string).unwrap_or_default();
                println!("[server] greeted by {name} ({from})");
                reply.send(format!("hello {name}, this is {}", ctx.self_ref()))
            }
            DemoMsg::Subscribe(Subscribe(listener)) => {
                println!("[server] got a ref to {listener}; sending it a note");
                if let Err(e) = listener.send(DemoMsg::Note(format!("you sent {} adds", self.adds)))
                {
                    println!("[server] note not delivered: {e}");
                }
                reply.send(self.adds)
            }
            other => reply.fail(format!("unexpected request {other:?}")),
        }
    }
}

/// Runs the server half and the peer process; prints both sides' accounts.
pub async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let env = RpcEnv::server(RpcConf::default(), "127.0.0.1", 0)
        .await
        .context("starting the demo's RPC environment")?;
    let addr = env.address().context("server env has an address")?.clone();
    env.setup_endpoint("counter", Counter { total: 0, adds: 0 })?;
    let dir = std::env::temp_dir().join(format!("flint-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let payload = dir.join("payload.txt");
    std::fs::write(
        &payload,
        "flint ships files in checksummed chunks\n".repeat(50_000),
    )?;
    let uri = env.add_file(&payload).await?;
    println!(
        "[server] listening on {addr}; endpoint flint://counter@{}",
        addr.host_port()
    );
    println!("[server] serving {} as {uri}", payload.display());

    let exe = std::env::current_exe().context("locating the flint binary")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("demo-peer")
        .arg(addr.to_string())
        .env("FLINT_DEMO_FILE", &uri)
        .env("FLINT_DEMO_DIR", &dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the peer process")?;
    let pid = child.id().unwrap_or(0);
    println!("[server] started peer process pid {pid}");
    if let Some(out) = child.stdout.take() {
        let mut lines = BufReader::new(out).lines();
        while let Some(line) = lines.next_line().await? {
            println!("{line}");
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .context("the peer did not finish within 60 s")??;
    env.shutdown();
    env.await_termination().await;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        bail!("the peer process failed: {status}");
    }
    println!(
        "[server] done: two processes, one connection, {:.0?} in all",
        started.elapsed()
    );
    Ok(())
}

struct Listener(std::sync::Arc<tokio::sync::Notify>);

impl Endpoint for Listener {
    type Msg = DemoMsg;
    fn receive(&mut self, _: &Context<DemoMsg>, msg: DemoMsg) {
        if let DemoMsg::Note(text) = msg {
            println!("[peer]   note received through my ref: {text}");
            self.0.notify_one();
        }
    }
}

/// The peer half: a client-only environment in another process.
pub async fn peer(server: &str) -> anyhow::Result<()> {
    let addr: RpcAddress = server.parse()?;
    let env = RpcEnv::client(RpcConf::default())?;
    let counter = env
        .setup_endpoint_ref::<DemoMsg>(&addr, "counter")
        .await
        .context("looking up the counter")?;
    println!("[peer]   found {counter}");
    let t = Instant::now();
    for i in 1..=100_000u64 {
        counter.send(DemoMsg::Add(i))?;
    }
    let total = counter.ask(Total).await?;
    println!(
        "[peer]   sent 100000 one-way adds and asked for the total: {total} ({:.1?})",
        t.elapsed()
    );
    if total != 5_000_050_000 {
        bail!("wrong total {total}");
    }
    let t = Instant::now();
    let greeting = counter.ask(Greet("peer".into())).await?;
    println!(
        "[peer]   asked a greeting in {:?}: {greeting:?}",
        t.elapsed()
    );
    let noted = std::sync::Arc::new(tokio::sync::Notify::new());
    let me = env.setup_endpoint("listener", Listener(noted.clone()))?;
    let adds = counter.ask(Subscribe(me)).await?;
    println!("[peer]   subscribed; the server counted {adds} adds");
    if let (Ok(uri), Ok(dir)) = (
        std::env::var("FLINT_DEMO_FILE"),
        std::env::var("FLINT_DEMO_DIR"),
    ) {
        let dest = std::path::Path::new(&dir).join("fetched.txt");
        let meta = env.fetch_file(&uri, &dest).await?;
        println!(
            "[peer]   fetched {uri}: {} bytes, sha256 {}…, verified",
            meta.size,
            &meta.sha256_hex()[..16]
        );
    }
    tokio::time::timeout(Duration::from_secs(10), noted.notified())
        .await
        .context("the server's note never arrived")?;
    env.shutdown();
    env.await_termination().await;
    Ok(())
}
