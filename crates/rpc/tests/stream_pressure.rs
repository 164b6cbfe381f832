//! Bulk streams under load between two processes, sealed: a large stream (1 GiB in
//! release builds, 256 MiB in debug ones) leaves small asks on the same connection
//! fast and the consumer's memory flat; a consumer that stops reading blocks the
//! producer at its credit (its `send` waits, nothing piles up), the producer's memory
//! stays flat, and asks on the connection keep being answered.
//!
//! The peer is this binary re-run as the ignored test `child_process_entry`: a server
//! with a `test` endpoint, a `probe` endpoint reporting on its streams, and stream
//! handlers `sink` (consumes pushes) and `source` (produces pulls).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peer.rs"]
mod peer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use flint_rpc::{
    Context, Endpoint, EndpointRef, IncomingStream, Reply, RpcAddress, RpcConf, RpcEnv, Secret,
    StreamHandler, StreamSink,
};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use peer::{mib, percentile, Child, PeakSampler};
use ring::digest;

const ENTRY: &str = "child_process_entry";
const SECRET: &str = "stream-pressure-secret";

/// Bytes of the large stream: 1 GiB, scaled down to 256 MiB in debug builds, where
/// sealing, copying and hashing run several times slower.
const LARGE: u64 = if cfg!(debug_assertions) {
    256 << 20
} else {
    1 << 30
};

/// Said of [`LARGE`] in messages.
const SCALED: &str = if cfg!(debug_assertions) {
    " (1 GiB scaled down to 256 MiB in this debug build)"
} else {
    ""
};

/// Chunk `i` of a stream: a fixed pseudo-random block of `size` bytes that starts
/// with `i`, so that a lost, repeated or reordered chunk changes the digest.
fn pattern(i: u64, size: usize) -> Bytes {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..(1 << 20))
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 56) as u8
            })
            .collect()
    });
    let mut v = block[..size].to_vec();
    v[..8].copy_from_slice(&i.to_be_bytes());
    v.into()
}

/// What the child's stream handlers did, for the probe to report.
#[derive(Default)]
struct Stats {
    /// `send` calls of the current pull started and returned, and how it ended.
    attempted: u64,
    done: u64,
    pull_end: String,
    /// Bytes and SHA-256 of the last push, once it ended.
    pushed: String,
}

struct Handlers(Arc<Mutex<Stats>>);

impl StreamHandler for Handlers {
    /// Produces `u64::from_be_bytes(request)` bytes, one chunk per `send`.
    fn pull(
        self: Arc<Self>,
        _from: RpcAddress,
        request: Bytes,
        mut sink: StreamSink,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let total = u64::from_be_bytes(request[..8].try_into().unwrap());
            let chunk = sink.chunk_size();
            *self.0.lock() = Stats::default();
            for i in 0..total / chunk as u64 {
                let data = pattern(i, chunk);
                self.0.lock().attempted += 1;
                if let Err(e) = sink.send(data).await {
                    self.0.lock().pull_end = format!("failed: {e}");
                    return;
                }
                self.0.lock().done += 1;
            }
            let end = match sink.finish().await {
                Ok(()) => "finished".to_string(),
                Err(e) => format!("failed: {e}"),
            };
            self.0.lock().pull_end = end;
        })
    }

    /// Hashes what arrives.
    fn push(
        self: Arc<Self>,
        _from: RpcAddress,
        _meta: Bytes,
        mut stream: IncomingStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut hash = digest::Context::new(&digest::SHA256);
            let mut bytes = 0u64;
            let end = loop {
                match stream.next().await {
                    None => break format!("{bytes} {}", hex::encode(hash.finish())),
                    Some(Ok(b)) => {
                        hash.update(&b);
                        bytes += b.len() as u64;
                    }
                    Some(Err(e)) => break format!("failed after {bytes} bytes: {e}"),
                }
            };
            self.0.lock().pushed = end;
        })
    }
}

/// `Echo("source")` → `"<attempted> <done> <end>"` of the current pull;
/// `Echo("sink")` → `"<bytes> <sha256>"` of the last push ("" while it runs).
struct Probe(Arc<Mutex<Stats>>);

impl Endpoint for Probe {
    type Msg = TestMsg;
    fn receive_and_reply(&mut self, _: &Context<TestMsg>, msg: TestMsg, reply: Reply) {
        let s = self.0.lock();
        match msg {
            TestMsg::Echo(Echo(q)) if q == "source" => {
                reply.send(format!("{} {} {}", s.attempted, s.done, s.pull_end))
            }
            TestMsg::Echo(Echo(q)) if q == "sink" => reply.send(s.pushed.clone()),
            _ => reply.fail("the probe answers Echo(\"source\") and Echo(\"sink\")"),
        }
    }
}

#[test]
#[ignore = "runs only as the child process of the other tests in this file"]
fn child_process_entry() {
    let role = peer::role().expect("started by another test with FLINT_RPC_TEST_ROLE set");
    assert_eq!(role, "peer", "unknown role");
    peer::child_logging();
    let conf = peer::child_conf();
    peer::runtime().block_on(async {
        let env = RpcEnv::server(conf, "127.0.0.1", 0).await.unwrap();
        let stats = Arc::new(Mutex::new(Stats::default()));
        env.setup_endpoint("test", TestEndpoint::default()).unwrap();
        env.setup_endpoint("probe", Probe(stats.clone())).unwrap();
        let handlers = Arc::new(Handlers(stats));
        env.register_stream_handler("sink", handlers.clone())
            .unwrap();
        env.register_stream_handler("source", handlers).unwrap();
        peer::say(&format!(
            "{}{}",
            peer::LISTENING,
            env.address().unwrap().port
        ));
        env.cancelled().await;
    });
}

fn conf() -> RpcConf {
    let mut c = quick_conf();
    c.secret = Some(Secret::new(SECRET));
    c
}

/// The child peer, and a client env whose one connection to it carries everything.
async fn peer() -> (Child, RpcEnv, EndpointRef<TestMsg>, EndpointRef<TestMsg>) {
    let child = Child::start(ENTRY, "peer", &[("auth.secret", SECRET)]).await;
    let env = RpcEnv::client(conf()).unwrap();
    let test = env
        .setup_endpoint_ref::<TestMsg>(&child.address(), "test")
        .await
        .unwrap();
    let probe = env.endpoint_ref::<TestMsg>(&child.address(), "probe");
    for i in 0..20 {
        assert_eq!(
            test.ask(Echo(format!("warm {i}"))).await.unwrap(),
            format!("warm {i}")
        );
    }
    (child, env, test, probe)
}

/// Asks the probe `q` until `cond` holds on the answer (at most `limit`).
async fn probe_until(
    probe: &EndpointRef<TestMsg>,
    q: &str,
    limit: Duration,
    mut cond: impl FnMut(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let a = probe.ask(Echo(q.into())).await.unwrap();
        if cond(&a) {
            return a;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting on the child's {q}: it reports {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The one connection of `env`, which must be to `peer`.
fn only_connection(env: &RpcEnv, peer: &RpcAddress) -> flint_rpc::ConnectionInfo {
    let conns = env.connections();
    assert_eq!(
        conns.len(),
        1,
        "one connection carries everything: {conns:?}"
    );
    assert_eq!(&conns[0].peer, peer, "{conns:?}");
    conns[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_stream_leaves_asks_on_the_same_connection_fast() {
    let (child, env, test, probe) = peer().await;
    let addr = child.address();
    let base = child.rss_kib();
    let sampler = PeakSampler::start(child.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let asker = tokio::spawn({
        let (test, stop) = (test.clone(), stop.clone());
        async move {
            let mut took = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let n = took.len();
                let r = test
                    .ask_timeout(Echo(format!("{n}")), Duration::from_secs(10))
                    .await;
                assert_eq!(r.expect("an ask during the stream"), format!("{n}"));
                took.push(t.elapsed());
            }
            took
        }
    });

    let started = Instant::now();
    // Bounded: a stream that stops moving (a lost credit) fails the test instead of
    // hanging it.
    let push = async {
        let mut sink = env
            .push_stream(&addr, "sink", Bytes::from_static(b"large"))
            .await
            .unwrap();
        let chunk = sink.chunk_size();
        let chunks = LARGE / chunk as u64;
        let mut hash = digest::Context::new(&digest::SHA256);
        let mut during = None;
        for i in 0..chunks {
            let data = pattern(i, chunk);
            hash.update(&data);
            sink.send(data).await.unwrap();
            if i == chunks / 2 {
                during = Some(only_connection(&env, &addr));
            }
        }
        sink.finish().await.unwrap();
        (hash, during)
    };
    let (hash, during) = tokio::time::timeout(Duration::from_secs(300), push)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the {} MiB stream{SCALED} did not finish within 300 s",
                LARGE >> 20
            )
        });
    let want = format!("{LARGE} {}", hex::encode(hash.finish()));
    let got = probe_until(&probe, "sink", Duration::from_secs(60), |a| !a.is_empty()).await;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut took = asker.await.unwrap();
    let (peak, _, _) = sampler.stop();
    took.sort();
    let (p50, p99, max) = (
        percentile(&took, 0.50),
        percentile(&took, 0.99),
        percentile(&took, 1.0),
    );
    let during = during.unwrap();
    eprintln!(
        "{} MiB{SCALED} pushed in {secs:.2} s ({:.0} MiB/s) beside {} asks: p50 {p50:?}, p99 \
         {p99:?}, max {max:?}; consumer RSS {:.1} -> peak {:.1} MiB; mid-stream {during:?}",
        LARGE >> 20,
        (LARGE >> 20) as f64 / secs,
        took.len(),
        mib(base),
        mib(peak)
    );
    assert_eq!(got, want, "the consumer's byte count and SHA-256");
    assert_eq!(during.open_streams, 1, "{during:?}");
    assert!(
        took.len() >= 20,
        "only {} asks completed during the stream",
        took.len()
    );
    assert!(
        p99 < Duration::from_millis(100),
        "asks on the connection carrying a {} MiB stream{}: p99 {p99:?} (bound 100 ms), p50 \
         {p50:?}, max {max:?} over {} asks",
        LARGE >> 20,
        SCALED,
        took.len()
    );
    assert!(
        peak < base + (64 << 10),
        "the consumer's RSS went from {:.1} MiB to {:.1} MiB during a {} MiB stream{SCALED} \
         (bound +64 MiB)",
        mib(base),
        mib(peak),
        LARGE >> 20
    );
    assert_eq!(
        only_connection(&env, &addr).open_streams,
        0,
        "the stream is closed"
    );
    env.shutdown();
}

/// Reads `n` chunks, checking each against the pattern.
async fn read_chunks(stream: &mut IncomingStream, read: &mut u64, n: u64) {
    for _ in 0..n {
        let b = stream.next().await.unwrap().unwrap();
        assert!(b == pattern(*read, b.len()), "chunk {read} differs");
        *read += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_blocks_the_producer_and_leaves_asks_working() {
    let (child, env, test, probe) = peer().await;
    let addr = child.address();
    let window = conf().stream_window as u64;
    let base = child.rss_kib();
    let sampler = PeakSampler::start(child.pid());
    // The child would produce 1 GiB; we read a few chunks, then stop reading.
    let total: u64 = 1 << 30;
    let mut stream = env
        .pull_stream(
            &addr,
            "source",
            Bytes::copy_from_slice(&total.to_be_bytes()),
        )
        .await
        .unwrap();
    let mut read = 0u64;
    read_chunks(&mut stream, &mut read, 6).await;
    // Credit: the window up front, and half a window back per half a window read.
    let credit = |read: u64| window + read / (window / 2) * (window / 2);
    let bound = credit(6);
    let blocked = probe_until(&probe, "source", Duration::from_secs(10), |a| {
        let v: Vec<u64> = a.split(' ').take(2).map(|x| x.parse().unwrap()).collect();
        assert!(
            v[1] <= bound,
            "the producer sent {} chunks on {bound} of credit",
            v[1]
        );
        v == [bound + 1, bound]
    })
    .await;
    // While it is stalled, asks on the same connection are answered.
    let mut took = Vec::new();
    for i in 0..100 {
        let t = Instant::now();
        assert_eq!(
            test.ask(Echo(format!("stalled {i}"))).await.unwrap(),
            format!("stalled {i}")
        );
        took.push(t.elapsed());
    }
    took.sort();
    let info = only_connection(&env, &addr);
    let still = probe.ask(Echo("source".into())).await.unwrap();
    let (peak, _, _) = sampler.stop();
    eprintln!(
        "stalled after {} of {} chunks: the child reports {blocked:?}, then {still:?} after 100 \
         asks (p99 {:?}, max {:?}); producer RSS {:.1} -> peak {:.1} MiB; {info:?}",
        bound,
        total / (256 << 10),
        percentile(&took, 0.99),
        percentile(&took, 1.0),
        mib(base),
        mib(peak)
    );
    assert_eq!(
        still, blocked,
        "the producer's send must stay blocked while the consumer does not read"
    );
    assert!(
        percentile(&took, 1.0) < Duration::from_secs(1),
        "asks beside a stalled stream: slowest {:?} (bound 1 s)",
        percentile(&took, 1.0)
    );
    assert!(
        peak < base + (64 << 10),
        "the producer's RSS went from {:.1} MiB to {:.1} MiB while its consumer stalled on a 1 GiB \
         stream (bound +64 MiB)",
        mib(base),
        mib(peak)
    );
    assert_eq!(info.open_streams, 1, "{info:?}");
    assert!(
        info.queued_bytes < (1 << 20),
        "the consumer's queue holds {} bytes while stalled",
        info.queued_bytes
    );
    // Reading again lets the producer go on, never past its credit.
    read_chunks(&mut stream, &mut read, 58).await;
    let bound = credit(64);
    probe_until(&probe, "source", Duration::from_secs(10), |a| {
        let v: Vec<u64> = a.split(' ').take(2).map(|x| x.parse().unwrap()).collect();
        assert!(
            v[1] <= bound,
            "the producer sent {} chunks on {bound} of credit",
            v[1]
        );
        v == [bound + 1, bound]
    })
    .await;
    // Dropping the stream cancels it: the producer's blocked send fails, by name.
    drop(stream);
    let end = probe_until(&probe, "source", Duration::from_secs(10), |a| {
        a.contains("failed")
    })
    .await;
    assert!(end.contains("cancelled the stream"), "{end}");
    assert_eq!(test.ask(Echo("after".into())).await.unwrap(), "after");
    env.shutdown();
}
