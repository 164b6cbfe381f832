//! The flint side: a protocol and an endpoint that counts one-way messages and
//! answers pings, a stream handler that produces bulk data, and the client loops that
//! drive them through an [`EndpointRef`] and [`RpcEnv::pull_stream`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::OneWay;
use anyhow::{bail, Context as _};
use bytes::Bytes;
use flint_rpc::{
    Ask, Context, Endpoint, EndpointRef, InlineEndpoint, Protocol, Reply, RpcAddress, RpcConf,
    RpcEnv, Secret, StreamHandler, StreamSink,
};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

/// Name of the benchmark endpoint in the server environment.
pub const ENDPOINT: &str = "bench";
/// Name of the inline benchmark endpoint (answers on the connection's reader).
pub const INLINE_ENDPOINT: &str = "bench-inline";
/// Name of the bulk stream handler in the server environment.
pub const STREAM: &str = "bench-bulk";

/// The settings of one side: flint's defaults, with `secret` set (and
/// `rpc.encryption.enabled` left at its default, true) for the sealed series. Without
/// TLS, a secret makes every byte after the handshake an AES-256-GCM sealed record.
pub fn conf(secret: Option<&[u8]>) -> RpcConf {
    RpcConf {
        secret: secret.map(Secret::new),
        ..RpcConf::default()
    }
}

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

/// The same answers from an [`InlineEndpoint`]: handled on the reader task of the
/// connection, the reply written into that connection's queue.
#[derive(Default)]
pub struct InlineBenchEndpoint {
    received: std::sync::atomic::AtomicU64,
}

impl InlineEndpoint for InlineBenchEndpoint {
    type Msg = BenchMsg;

    fn receive(&self, _: &Context<BenchMsg>, msg: BenchMsg) {
        if let BenchMsg::Data(_) = msg {
            self.received
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn receive_and_reply(&self, _: &Context<BenchMsg>, msg: BenchMsg, reply: Reply) {
        use std::sync::atomic::Ordering::Relaxed;
        match msg {
            BenchMsg::Ping(Ping(n)) => reply.send(n),
            BenchMsg::Count(_) => reply.send(self.received.swap(0, Relaxed)),
            BenchMsg::Data(_) => {
                self.received.fetch_add(1, Relaxed);
                reply.send(0u64)
            }
        }
    }
}

/// Produces the bytes a pull asks for: the request is the byte count (u64, little
/// endian); the data is one reused chunk-sized buffer, sent slice by slice.
pub struct BulkSource;

impl StreamHandler for BulkSource {
    fn pull(
        self: Arc<Self>,
        _from: RpcAddress,
        request: Bytes,
        mut sink: StreamSink,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let Ok(len) = <[u8; 8]>::try_from(&request[..]).map(u64::from_le_bytes) else {
                sink.fail("a bulk request is the byte count as 8 bytes, little endian");
                return;
            };
            let chunk = sink.chunk_size();
            let data = Bytes::from(vec![0x5a; chunk]);
            let mut left = len;
            while left > 0 {
                let k = left.min(chunk as u64) as usize;
                if sink.send(data.slice(..k)).await.is_err() {
                    return;
                }
                left -= k as u64;
            }
            let _ = sink.finish().await;
        })
    }
}

/// Starts a server-mode environment on `127.0.0.1` (any free port) with the
/// benchmark endpoints (sequential and inline) and the bulk stream handler.
pub async fn start_server(conf: RpcConf) -> anyhow::Result<RpcEnv> {
    let env = RpcEnv::server(conf, "127.0.0.1", 0)
        .await
        .context("starting the server RpcEnv")?;
    env.setup_endpoint(ENDPOINT, BenchEndpoint::default())?;
    env.setup_inline_endpoint(INLINE_ENDPOINT, Arc::new(InlineBenchEndpoint::default()))?;
    env.register_stream_handler(STREAM, Arc::new(BulkSource))?;
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

/// Sends `n` one-way `Data` messages of `payload` bytes with `send_async` (which waits
/// while the connection's queue is at its byte budget, so memory stays bounded), then
/// asks for the count (FIFO on the one connection means every message that was not
/// dropped has been handled by then).
pub async fn one_way(r: &EndpointRef<BenchMsg>, n: u64, payload: usize) -> anyhow::Result<OneWay> {
    let data = Bytes::from(vec![7u8; payload]);
    let t = Instant::now();
    for _ in 0..n {
        r.send_async(BenchMsg::Data(data.clone())).await?;
    }
    let send_loop = t.elapsed();
    // Right after a burst of `send_async` the queue is full: wait for room.
    let counted = r.ask_waiting(Count).await?;
    Ok(OneWay {
        counted,
        send_loop,
        total: t.elapsed(),
    })
}

/// Pulls `bytes` bytes from the bulk stream handler at `addr`; returns how many
/// arrived, in how many chunks.
pub async fn pull(env: &RpcEnv, addr: &RpcAddress, bytes: u64) -> anyhow::Result<(u64, u64)> {
    let mut stream = env
        .pull_stream(addr, STREAM, Bytes::copy_from_slice(&bytes.to_le_bytes()))
        .await
        .context("opening the bulk stream")?;
    let (mut got, mut chunks) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        got += chunk.context("the bulk stream failed")?.len() as u64;
        chunks += 1;
    }
    Ok((got, chunks))
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

/// Runs `n` asks through a [`flint_rpc::Pipeline`] with a window of `in_flight`:
/// whenever replies arrive, every one there is taken (in order) and as many new
/// requests are pushed in one batch. Checks every reply (the pings come back in the
/// order they were pushed); returns how many were answered.
pub async fn pipeline(r: &EndpointRef<BenchMsg>, n: u64, in_flight: u64) -> anyhow::Result<u64> {
    let mut p = r.pipeline::<Ping>(in_flight as usize);
    let mut asks = (0..n).map(Ping);
    p.push_batch(&mut asks).await;
    let mut replies = Vec::with_capacity(in_flight as usize);
    let mut done = 0u64;
    while p.next_batch(&mut replies).await > 0 {
        for reply in replies.drain(..) {
            let back = reply?;
            if back != done {
                bail!("pipelined ping {done} answered {back}");
            }
            done += 1;
        }
        p.push_batch(&mut asks).await;
    }
    Ok(done)
}
