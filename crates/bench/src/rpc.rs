//! The flint side: a protocol and an endpoint that counts one-way messages and
//! answers pings, and the client loops that drive it through an [`EndpointRef`].

use std::time::{Duration, Instant};

use crate::stats::OneWay;
use anyhow::{bail, Context as _};
use bytes::Bytes;
use flint_rpc::{Ask, Context, Endpoint, EndpointRef, Protocol, Reply, RpcConf, RpcEnv};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

/// Name of the benchmark endpoint in the server environment.
pub const ENDPOINT: &str = "bench";

/// Everything the benchmark endpoint accepts.
#[derive(Debug, Serialize, Deserialize)]
pub enum BenchMsg {
    /// A one-way message carrying a payload (64 bytes in the throughput test).
    Data(Bytes),
    /// Echo the number back.
    Ping(Ping),
    /// How many `Data` arrived since the last `Count`; resets the count.
    Count(Count),
}

impl Protocol for BenchMsg {
    const NAME: &'static str = "flint.bench/1";
}

/// Asks for its number back.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ping(pub u64);

impl Ask for Ping {
    type Reply = u64;
}

impl From<Ping> for BenchMsg {
    fn from(p: Ping) -> Self {
        BenchMsg::Ping(p)
    }
}

/// Asks how many `Data` messages arrived since the last `Count`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Count;

impl Ask for Count {
    type Reply = u64;
}

impl From<Count> for BenchMsg {
    fn from(c: Count) -> Self {
        BenchMsg::Count(c)
    }
}

/// The endpoint under test: a sequential endpoint, as most of flint's are.
#[derive(Default)]
pub struct BenchEndpoint {
    received: u64,
}

impl Endpoint for BenchEndpoint {
    type Msg = BenchMsg;

    fn receive(&mut self, _: &Context<BenchMsg>, msg: BenchMsg) {
        if let BenchMsg::Data(_) = msg {
            self.received += 1;
        }
    }

    fn receive_and_reply(&mut self, _: &Context<BenchMsg>, msg: BenchMsg, reply: Reply) {
        match msg {
            BenchMsg::Ping(Ping(n)) => reply.send(n),
            BenchMsg::Count(_) => reply.send(std::mem::take(&mut self.received)),
            BenchMsg::Data(_) => {
                self.received += 1;
                reply.send(0u64)
            }
        }
    }
}

/// Starts a server-mode environment on `127.0.0.1` (any free port) with the
/// benchmark endpoint.
pub async fn start_server() -> anyhow::Result<RpcEnv> {
    let env = RpcEnv::server(RpcConf::default(), "127.0.0.1", 0)
        .await
        .context("starting the server RpcEnv")?;
    env.setup_endpoint(ENDPOINT, BenchEndpoint::default())?;
    Ok(env)
}

/// Times `n` asks, one at a time.
pub async fn ping_pong(r: &EndpointRef<BenchMsg>, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        let back = r.ask(Ping(i)).await?;
        samples.push(t.elapsed());
        if back != i {
            bail!("ping {i} answered {back}");
        }
    }
    Ok(samples)
}

/// Sends `n` one-way `Data` messages of `payload` bytes, then asks for the count
/// (FIFO on the one connection means every message has been handled by then). With
/// `yield_every`, the loop yields to the runtime after every that many sends.
pub async fn one_way(
    r: &EndpointRef<BenchMsg>,
    n: u64,
    payload: usize,
    yield_every: Option<u64>,
) -> anyhow::Result<OneWay> {
    let data = Bytes::from(vec![7u8; payload]);
    let every = yield_every.unwrap_or(0);
    let t = Instant::now();
    for i in 1..=n {
        r.send(BenchMsg::Data(data.clone()))?;
        if every > 0 && i % every == 0 {
            tokio::task::yield_now().await;
        }
    }
    let send_loop = t.elapsed();
    let counted = r.ask(Count).await?;
    Ok(OneWay {
        counted,
        send_loop,
        total: t.elapsed(),
    })
}

/// Runs `n` asks keeping `in_flight` outstanding; returns how many were answered.
pub async fn pipelined(r: &EndpointRef<BenchMsg>, n: u64, in_flight: u64) -> anyhow::Result<u64> {
    let mut pending = FuturesUnordered::new();
    let mut next = 0u64;
    while next < n.min(in_flight) {
        pending.push(r.ask(Ping(next)));
        next += 1;
    }
    let mut done = 0u64;
    while let Some(answer) = pending.next().await {
        answer?;
        done += 1;
        if next < n {
            pending.push(r.ask(Ping(next)));
            next += 1;
        }
    }
    Ok(done)
}
