//! Memory and admission bounds of a server under misbehaving peers, the server being a
//! separate process whose memory is read from `/proc/<pid>/status`:
//!
//! - a client that pumps requests and never reads the replies is cut off at the
//!   connection's outbound budget, while the server's RSS stays flat and another
//!   client's asks keep being answered;
//! - a frame that announces 128 MiB and trickles is dropped at `rpc.frame_timeout`
//!   without the server reserving the announced length, and hundreds of connections
//!   each announcing a huge frame cost the server next to nothing;
//! - a client that fills its connection's queue with one-way messages holds no more
//!   memory than the queue's budget (the client being the child process there);
//! - thousands of half-open handshakes from other addresses do not delay a real
//!   client; an address that fails authentication is delayed, exponentially, and only
//!   that address.
//!
//! The server is this binary re-run as the ignored test `child_process_entry`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peer.rs"]
mod peer;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flint_rpc::frame::{encode_frame, type_id_of, Header};
use flint_rpc::handshake::{self, ClientOptions, HandshakeError, PROTOCOL_VERSION};
use flint_rpc::seal::Sealer;
use flint_rpc::{AskError, Context, Endpoint, Protocol, Reply, RpcConf, RpcEnv, Secret};
use peer::{mib, Child, PeakSampler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

const ENTRY: &str = "child_process_entry";
const SECRET: &str = "bounds-test-secret";

/// Answers `Get` with the bytes the server holds in partially received frames, `Echo`
/// of [`CONNECTIONS`] with the number of its live connections, and echoes anything
/// else: what the tests ask while the `test` endpoint is being flooded.
struct Probe;

const CONNECTIONS: &str = "#connections";

impl Endpoint for Probe {
    type Msg = TestMsg;
    fn receive_and_reply(&mut self, ctx: &Context<TestMsg>, msg: TestMsg, reply: Reply) {
        match msg {
            TestMsg::Get(_) => reply.send(ctx.env().partial_frame_bytes() as u64),
            TestMsg::Echo(Echo(s)) if s == CONNECTIONS => {
                reply.send(ctx.env().connections().len().to_string())
            }
            TestMsg::Echo(Echo(s)) => reply.send(s),
            _ => reply.fail("the probe answers Get and Echo only"),
        }
    }
}

#[test]
#[ignore = "runs only as the child process of the other tests in this file"]
fn child_process_entry() {
    let role = peer::role().expect("started by another test with FLINT_RPC_TEST_ROLE set");
    if role == "one-way-client" {
        return one_way_client();
    }
    assert_eq!(role, "server", "unknown role");
    peer::child_logging();
    let conf = peer::child_conf();
    peer::runtime().block_on(async {
        let env = RpcEnv::server(conf, "127.0.0.1", 0).await.unwrap();
        env.setup_endpoint("test", TestEndpoint::default()).unwrap();
        env.setup_endpoint("probe", Probe).unwrap();
        peer::say(&format!(
            "{}{}",
            peer::LISTENING,
            env.address().unwrap().port
        ));
        env.cancelled().await;
    });
}

/// Key of the test's own: the port of the server a `one-way-client` child sends to.
const SERVER_PORT: &str = "test.server_port";
/// Key of the test's own: how many one-way messages it sends once its queue was full.
const MESSAGES: &str = "test.messages";

/// The `one-way-client` child: connects, prints its VmRSS, fills its connection's
/// queue with small one-way messages until `try_send` reports `Full` (the server does
/// not read yet), prints `FULL`, then sends more with `send_async` while the server
/// reads, and prints `DONE`.
fn one_way_client() {
    peer::child_logging();
    let settings = peer::child_settings();
    let port: u16 = settings.get(SERVER_PORT).unwrap().parse().unwrap();
    let messages: u64 = settings.get(MESSAGES).unwrap().parse().unwrap();
    let conf = peer::child_conf();
    peer::runtime().block_on(async {
        let env = RpcEnv::client(conf).unwrap();
        let addr = flint_rpc::RpcAddress::new("127.0.0.1", port);
        let r = env.endpoint_ref::<TestMsg>(&addr, "test");
        r.send_async(TestMsg::Add(1)).await.unwrap();
        wait_until("connected", Duration::from_secs(10), || {
            !env.connections().is_empty()
        })
        .await;
        peer::say(&format!(
            "BASE {}",
            peer::status_kib(std::process::id(), "VmRSS:")
        ));
        peer::say(&format!("{}0", peer::LISTENING));
        let mut n = 0u64;
        loop {
            match r.try_send(TestMsg::Add(1)) {
                Ok(()) => n += 1,
                Err(AskError::Full { .. }) => break,
                Err(e) => panic!("{e}"),
            }
            if n % 1024 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let queued: usize = env.connections().iter().map(|c| c.queued_bytes).sum();
        peer::say(&format!("FULL after {n} messages, {queued} bytes queued"));
        for _ in 0..messages {
            r.send_async(TestMsg::Add(1)).await.unwrap();
        }
        peer::say("DONE");
        std::future::pending::<()>().await;
    });
}

/// The one-way client's memory stays within its connection's byte budget: the queue
/// is charged what its frames really hold. Before this was so, each small frame held
/// ~350 bytes and was charged ~80, and a client with a 32 MiB budget peaked at 161 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_client_holds_no_more_than_its_queue_budget() {
    const BUDGET_MIB: u64 = 4;
    // A raw server that handshakes, reads nothing until the client's queue is full,
    // then reads and discards everything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let go = Arc::new(tokio::sync::Notify::new());
    let reader = tokio::spawn({
        let go = go.clone();
        async move {
            let (mut s, _) = listener.accept().await.unwrap();
            handshake::server(&mut s, None).await.unwrap();
            go.notified().await;
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    });
    let budget = format!("{BUDGET_MIB}m");
    let child = Child::start_with_default_malloc(
        ENTRY,
        "one-way-client",
        &[
            (SERVER_PORT, &port),
            (MESSAGES, "200000"),
            ("rpc.connection.max_queued_bytes", &budget),
        ],
    )
    .await;
    let sampler = PeakSampler::start(child.pid());
    let base_line = child
        .wait_for_line(&["BASE "], Duration::from_secs(5))
        .await;
    let base: u64 = base_line
        .split_once("BASE ")
        .unwrap()
        .1
        .trim()
        .parse()
        .unwrap();
    let full = child
        .wait_for_line(&["FULL after"], Duration::from_secs(60))
        .await;
    let at_full = child.rss_kib();
    go.notify_one();
    child
        .wait_for_line(&["DONE"], Duration::from_secs(60))
        .await;
    let (peak, _, samples) = sampler.stop();
    let grew = peak.saturating_sub(base);
    eprintln!(
        "one-way client: VmRSS {:.1} MiB connected, {:.1} MiB with its queue full, peak {:.1} MiB \
         (+{:.1} MiB) over {samples} samples; budget {BUDGET_MIB} MiB; {full}",
        mib(base),
        mib(at_full),
        mib(peak),
        mib(grew)
    );
    // The budget, plus the spare segments a busy queue keeps and slack for the runtime;
    // far below what the frames took when charged less than they held (~4x).
    assert!(
        grew <= (BUDGET_MIB + 4) << 10,
        "the one-way client grew by {:.1} MiB with a queue budget of {BUDGET_MIB} MiB",
        mib(grew)
    );
    reader.abort();
}

async fn server(conf: &[(&str, &str)]) -> Child {
    Child::start(ENTRY, "server", conf).await
}

fn secret_conf() -> RpcConf {
    let mut c = quick_conf();
    c.secret = Some(Secret::new(SECRET));
    c
}

/// A well-behaved client of the child's `probe` endpoint.
async fn probe(child: &Child, conf: RpcConf) -> (RpcEnv, flint_rpc::EndpointRef<TestMsg>) {
    let env = RpcEnv::client(conf).unwrap();
    let r = env
        .setup_endpoint_ref::<TestMsg>(&child.address(), "probe")
        .await
        .unwrap();
    // Warm up the connection and the server's tasks before any baseline is read.
    for i in 0..20 {
        assert_eq!(
            r.ask(Echo(format!("warm {i}"))).await.unwrap(),
            format!("warm {i}")
        );
    }
    (env, r)
}

/// A TCP connection to `127.0.0.1:port` from the local address `ip`.
async fn connect_from(ip: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((ip, 0)))?;
    s.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// The writing half of a raw, handshaken connection: frames go out sealed when the
/// handshake established keys.
struct RawWriter {
    w: OwnedWriteHalf,
    sealer: Option<Sealer>,
    buf: Vec<u8>,
}

impl RawWriter {
    async fn send(&mut self, plain: &[u8]) -> std::io::Result<()> {
        match &mut self.sealer {
            None => self.w.write_all(plain).await,
            Some(s) => {
                self.buf.clear();
                s.seal(plain, &mut self.buf).unwrap();
                self.w.write_all(&self.buf).await
            }
        }
    }
}

/// A raw connection from `ip` that has done the handshake (as a client-only peer, so
/// the server knows it by its socket address); returns its halves and that address as
/// the server's log lines name it.
async fn handshaken(
    ip: Ipv4Addr,
    port: u16,
    secret: Option<&Secret>,
) -> (OwnedReadHalf, RawWriter, String) {
    let mut tcp = connect_from(ip, port).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let est = handshake::client_with(
        &mut tcp,
        ClientOptions {
            secret,
            listen: None,
            seal: true,
            version: PROTOCOL_VERSION,
        },
    )
    .await
    .unwrap();
    assert_eq!(est.keys.is_some(), secret.is_some(), "sealed iff a secret");
    let (r, w) = tcp.into_split();
    let writer = RawWriter {
        w,
        sealer: est.keys.map(|k| k.split().0),
        buf: Vec::new(),
    };
    (r, writer, format!("flint://{local}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_replies_is_cut_off_and_the_server_stays_small() {
    const BUDGET: usize = 4 << 20;
    let child = server(&[
        ("auth.secret", SECRET),
        ("rpc.connection.max_queued_bytes", "4m"),
        ("rpc.endpoint.max_queued_bytes", "8m"),
    ])
    .await;
    let (good_env, good) = probe(&child, secret_conf()).await;
    let base = child.rss_kib();
    let sampler = PeakSampler::start(child.pid());

    // The well-behaved client asks all along, each ask with its own 5 s deadline.
    let stop = Arc::new(AtomicBool::new(false));
    let asker = tokio::spawn({
        let (good, stop) = (good.clone(), stop.clone());
        async move {
            let mut worst = Duration::ZERO;
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                let t = Instant::now();
                let text = format!("ping {n}");
                let r = good
                    .ask_timeout(Echo(text.clone()), Duration::from_secs(5))
                    .await;
                assert_eq!(r.expect("the well-behaved client's ask"), text);
                worst = worst.max(t.elapsed());
                n += 1;
            }
            (n, worst)
        }
    });

    // The misbehaving client: sealed, never reads, pumps 4 KiB echo requests.
    let (_r, mut w, peer_label) =
        handshaken(Ipv4Addr::LOCALHOST, child.port, Some(&Secret::new(SECRET))).await;
    let payload = "x".repeat(4096);
    let limit: u64 = 512 << 20;
    let started = Instant::now();
    let (mut pumped, mut id) = (0u64, 0u64);
    let cut_off = loop {
        let mut batch = Vec::with_capacity(16 * 4200);
        for _ in 0..16 {
            id += 1;
            let h = Header::Request {
                id,
                to: "test",
                protocol: TestMsg::ID,
                reply: type_id_of::<String>(),
            };
            batch.extend(encode_frame(&h, &TestMsg::Echo(Echo(payload.clone()))).unwrap());
        }
        if let Err(e) = w.send(&batch).await {
            break e;
        }
        pumped += batch.len() as u64;
        assert!(
            pumped < limit && started.elapsed() < Duration::from_secs(20),
            "the server did not cut off a client that never reads after {} MiB of requests in {:?}",
            pumped >> 20,
            started.elapsed()
        );
    };
    let line = child
        .wait_for_line(
            &[
                "WARN",
                "closing connection with",
                &peer_label,
                "it does not read its replies",
                "would pass rpc.connection.max_queued_bytes = 4194304",
            ],
            Duration::from_secs(10),
        )
        .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (asks, worst) = asker.await.unwrap();
    let (peak, _, samples) = sampler.stop();
    eprintln!(
        "cut off after {} MiB of requests in {took:?} ({cut_off}); server RSS {:.1} MiB at start, \
         peak {:.1} MiB over {samples} samples; {asks} asks of the other client, slowest {worst:?}\n{line}",
        pumped >> 20,
        mib(base),
        mib(peak)
    );
    assert!(
        peak < base + (64 << 10),
        "the server's RSS peaked at {:.1} MiB, over its start ({:.1} MiB) + 64 MiB, while a client \
         that never reads pumped {} MiB of requests (outbound budget {} MiB, inbox budget 8 MiB)",
        mib(peak),
        mib(base),
        pumped >> 20,
        BUDGET >> 20
    );
    assert!(
        worst < Duration::from_secs(2),
        "the other client's slowest ask took {worst:?} during the flood (bound 2 s, {asks} asks)"
    );
    // The server is still whole: the same well-behaved connection and a new one work.
    assert_eq!(good.ask(Echo("after".into())).await.unwrap(), "after");
    still_serves(&child.address(), secret_conf()).await;
    good_env.shutdown();
}

/// Asks the probe for the server's held partial-frame bytes until `cond` holds (at
/// most 10 s); returns the last answer.
async fn held_until(
    probe: &flint_rpc::EndpointRef<TestMsg>,
    what: &str,
    mut cond: impl FnMut(u64) -> bool,
) -> u64 {
    let start = Instant::now();
    loop {
        let n = probe.ask(Get).await.unwrap();
        if cond(n) {
            return n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}: the server holds {n} bytes of partial frames"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes the frame prefix `announce` and then one byte every 20 ms until the server
/// closes the connection; returns how long the server took to close it after the
/// first bytes and how many bytes it was sent.
async fn trickle(
    mut r: OwnedReadHalf,
    mut w: RawWriter,
    announce: u32,
    max_wait: Duration,
) -> (Duration, usize) {
    let mut closed = tokio::spawn(async move {
        let mut b = [0u8; 64];
        loop {
            match r.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let first = Instant::now();
    w.send(&announce.to_be_bytes()).await.unwrap();
    let mut sent = 4usize;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = &mut closed => return (first.elapsed(), sent),
            _ = tick.tick() => {
                assert!(first.elapsed() < max_wait, "the server kept a trickling frame open for {max_wait:?}");
                if w.send(&[7]).await.is_ok() {
                    sent += 1;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_128_mib_frame_is_dropped_at_the_frame_timeout_without_reserving_it() {
    let child = server(&[("auth.secret", SECRET), ("rpc.frame_timeout", "500ms")]).await;
    let (good_env, good) = probe(&child, secret_conf()).await;
    let (base_rss, base_vm) = (child.rss_kib(), child.vm_size_kib());
    let sampler = PeakSampler::start(child.pid());
    let (r, w, peer_label) =
        handshaken(Ipv4Addr::LOCALHOST, child.port, Some(&Secret::new(SECRET))).await;
    let t = tokio::spawn(trickle(r, w, 128 << 20, Duration::from_secs(10)));
    // What the server holds grows with the bytes that arrived, not with the announcement.
    let held = held_until(&good, "the server holding trickled bytes", |n| {
        assert!(
            n < 1024,
            "the server holds {n} bytes of a frame that trickles a byte per 20 ms"
        );
        n >= 8
    })
    .await;
    let (closed_after, sent) = t.await.unwrap();
    let (peak_rss, peak_vm, samples) = sampler.stop();
    let line = child
        .wait_for_line(
            &[
                "WARN",
                "closing connection with",
                &peer_label,
                "did not finish within 500ms (rpc.frame_timeout)",
            ],
            Duration::from_secs(5),
        )
        .await;
    eprintln!(
        "closed {closed_after:?} after the first bytes, {sent} bytes sent, {held} seen held; RSS {:.1} -> peak {:.1} MiB, \
         VmSize {:.1} -> peak {:.1} MiB ({samples} samples)\n{line}",
        mib(base_rss),
        mib(peak_rss),
        mib(base_vm),
        mib(peak_vm)
    );
    assert!(
        closed_after >= Duration::from_millis(500) && closed_after < Duration::from_secs(3),
        "the trickling frame was dropped {closed_after:?} after it started; rpc.frame_timeout is 500 ms"
    );
    assert!(
        peak_vm < base_vm + (32 << 10) && peak_rss < base_rss + (32 << 10),
        "the server grew from VmSize {:.1} MiB / VmRSS {:.1} MiB to {:.1} / {:.1} MiB while a frame \
         announcing 128 MiB trickled in ({sent} bytes): it reserved the announced length (bound +32 MiB)",
        mib(base_vm),
        mib(base_rss),
        mib(peak_vm),
        mib(peak_rss)
    );
    held_until(&good, "the dropped frame's bytes released", |n| n == 0).await;
    good_env.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_announcing_huge_frames_do_not_make_the_server_allocate() {
    const CONNS: usize = 500;
    let child = server(&[("rpc.frame_timeout", "30s")]).await;
    let (good_env, good) = probe(&child, quick_conf()).await;
    let (base_rss, base_vm) = (child.rss_kib(), child.vm_size_kib());
    // First the connections alone: what an idle connection costs the server.
    let mut conns = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        conns.push(handshaken(Ipv4Addr::LOCALHOST, child.port, None).await);
    }
    let start = Instant::now();
    loop {
        let n: usize = good
            .ask(Echo(CONNECTIONS.into()))
            .await
            .unwrap()
            .parse()
            .unwrap();
        if n == CONNS + 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the server lists {n} connections, not {CONNS} raw ones and the probe's"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (idle_rss, idle_vm) = (child.rss_kib(), child.vm_size_kib());
    // Then each announces 128 MiB (the largest frame allowed) and sends one byte of it.
    let mut five = (128u32 << 20).to_be_bytes().to_vec();
    five.push(1);
    for (_, w, _) in &mut conns {
        w.send(&five).await.unwrap();
    }
    let held = held_until(&good, "every connection's 5 bytes held", |n| {
        n == (CONNS * 5) as u64
    })
    .await;
    let (rss, vm) = (child.rss_kib(), child.vm_size_kib());
    eprintln!(
        "server VmRSS / VmSize: {:.1} / {:.1} MiB at start, {:.1} / {:.1} MiB with {CONNS} idle \
         connections, {:.1} / {:.1} MiB once each announced 128 MiB ({held} bytes held)",
        mib(base_rss),
        mib(base_vm),
        mib(idle_rss),
        mib(idle_vm),
        mib(rss),
        mib(vm)
    );
    assert!(
        vm < idle_vm + (32 << 10) && rss < idle_rss + (32 << 10),
        "{CONNS} connections each announcing a 128 MiB frame and sending 5 bytes grew the server \
         from VmSize {:.1} MiB / VmRSS {:.1} MiB (the same connections idle) to {:.1} / {:.1} MiB \
         (bound +32 MiB each; the announcements total {} GiB)",
        mib(idle_vm),
        mib(idle_rss),
        mib(vm),
        mib(rss),
        (CONNS << 27) >> 30
    );
    drop(conns);
    held_until(&good, "the held bytes released", |n| n == 0).await;
    let start = Instant::now();
    let parts = ["WARN", "in the middle of a frame (5 bytes of it received)"];
    while child.count_lines(&parts) < CONNS {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} of {CONNS} connections closed mid-frame were logged",
            child.count_lines(&parts)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    still_serves(&child.address(), quick_conf()).await;
    good_env.shutdown();
}

/// Opens `n` connections to `port`, round-robin from `127.0.0.2` onwards over `addrs`
/// addresses, each sending only the start of a handshake (a length prefix and the
/// magic) and then nothing. Counts in `closed` those the server closes.
async fn half_open(
    n: usize,
    addrs: u8,
    port: u16,
    closed: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let ip = Ipv4Addr::new(127, 0, 0, 2 + (i % addrs as usize) as u8);
        let mut s = connect_from(ip, port).await.unwrap();
        let mut start = 4096u32.to_be_bytes().to_vec();
        start.extend_from_slice(&handshake::MAGIC);
        // The server may already have refused it (per-address limit) and reset it.
        let _ = s.write_all(&start).await;
        let closed = closed.clone();
        v.push(tokio::spawn(async move {
            let mut b = [0u8; 64];
            let _ = s.read(&mut b).await;
            closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    v
}

/// 2,000 half-open handshakes from `addrs` other addresses, then a real client from
/// 127.0.0.1: its lookup and ask must complete within 2 s while they are open.
async fn real_client_beside_half_open_handshakes(addrs: u8) {
    const N: usize = 2000;
    const PER_ADDRESS: usize = 16;
    let child = server(&[("rpc.handshake_timeout", "25s")]).await;
    let closed = Arc::new(AtomicUsize::new(0));
    let opened = Instant::now();
    let tasks = half_open(N, addrs, child.port, &closed).await;
    // Past 16 per address the server refuses at accept and closes.
    let held = (PER_ADDRESS * addrs as usize).min(256);
    let start = Instant::now();
    while closed.load(Ordering::Relaxed) < N - held {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "only {} of the {} connections over the per-address limit were closed",
            closed.load(Ordering::Relaxed),
            N - held
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    let client = RpcEnv::client(quick_conf()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let r = client
            .setup_endpoint_ref::<TestMsg>(&child.address(), "probe")
            .await
            .map_err(|e| e.to_string())?;
        r.ask(Echo("through".into()))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let took = t.elapsed();
    let still_open = N - closed.load(Ordering::Relaxed);
    eprintln!(
        "{N} half-open handshakes from {addrs} addresses opened in {:?}, {still_open} still \
         pending; the real client's lookup + ask took {took:?}: {r:?}",
        opened.elapsed() - t.elapsed()
    );
    assert_eq!(
        r.expect("the real client's lookup and ask within 5 s")
            .expect("the real client's lookup and ask"),
        "through"
    );
    let limit = if PER_ADDRESS * addrs as usize > 256 {
        "(rpc.max_pending_handshakes)"
    } else {
        "(rpc.max_pending_handshakes_per_address)"
    };
    // Over the per-address limit connections are refused at accept; over the global
    // one, a newcomer evicts the oldest pending handshake of the fullest address (or
    // is refused when all hold alike). Both lines name the setting.
    let parts: &[&str] = if PER_ADDRESS * addrs as usize > 256 {
        &["WARN", "127.0.0.", limit]
    } else {
        &[
            "WARN",
            "refused connection from 127.0.0.",
            "at accept",
            limit,
        ]
    };
    let line = child.wait_for_line(parts, Duration::from_secs(5)).await;
    eprintln!("{line}");
    assert!(
        took < Duration::from_secs(2),
        "the real client's lookup and ask took {took:?} (bound 2 s) beside {still_open} half-open \
         handshakes from {addrs} other addresses"
    );
    // The real client's handshake evicted one of them when all 256 slots were taken.
    let expected = if held == 256 { held - 1 } else { held };
    assert_eq!(
        still_open, expected,
        "half-open handshakes still held by the server (16 per address, 256 in all, less one \
         evicted by the real client when all were taken)"
    );
    client.shutdown();
    drop(tasks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_from_a_few_addresses_do_not_delay_a_real_client() {
    // 8 addresses × 250 connections: the per-address limit holds 128 of them.
    real_client_beside_half_open_handshakes(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_from_many_addresses_do_not_delay_a_real_client() {
    // 125 addresses × 16 connections: together they would fill the global limit (256);
    // a new address evicts the oldest pending handshake of the fullest one instead of
    // being refused.
    real_client_beside_half_open_handshakes(125).await;
}

/// One handshake from `ip`: how long it took and how it ended.
async fn attempt(ip: Ipv4Addr, port: u16, secret: &str) -> (Duration, Result<(), HandshakeError>) {
    let t = Instant::now();
    let mut tcp = connect_from(ip, port).await.unwrap();
    let r = handshake::client(&mut tcp, Some(&Secret::new(secret)), None)
        .await
        .map(|_| ());
    (t.elapsed(), r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_fails_authentication_is_delayed_and_no_other() {
    let child = server(&[("auth.secret", SECRET), ("rpc.handshake_timeout", "10s")]).await;
    let attacker = Ipv4Addr::new(127, 0, 0, 3);
    // Delays after 0, 1, 2, 3 failures: none, 100, 200, 400 ms.
    let mut took = Vec::new();
    for _ in 0..4 {
        let (d, r) = attempt(attacker, child.port, "wrong").await;
        let e = r.unwrap_err();
        assert!(e.to_string().contains("authentication failed"), "{e}");
        took.push(d);
    }
    // The fifth attempt waits 800 ms before the server reads it; meanwhile a client
    // from 127.0.0.1 with the right secret is served at once.
    let fifth = tokio::spawn(attempt(attacker, child.port, "wrong"));
    let fifth_started = Instant::now();
    let t = Instant::now();
    let client = RpcEnv::client(secret_conf()).unwrap();
    let r = client
        .setup_endpoint_ref::<TestMsg>(&child.address(), "probe")
        .await
        .unwrap();
    assert_eq!(r.ask(Echo("right".into())).await.unwrap(), "right");
    let real = t.elapsed();
    let real_done = fifth_started.elapsed();
    let (d5, r5) = fifth.await.unwrap();
    assert!(r5.is_err(), "{r5:?}");
    took.push(d5);
    // The right secret from the attacker's address is still delayed (1.6 s after five
    // failures), then succeeds, and the failures are forgotten.
    let (d6, r6) = attempt(attacker, child.port, SECRET).await;
    r6.expect("the right secret from 127.0.0.3");
    let (d7, r7) = attempt(attacker, child.port, SECRET).await;
    r7.expect("the right secret from 127.0.0.3, again");
    eprintln!(
        "wrong-secret attempts from 127.0.0.3 took {took:?}; right secret after them {d6:?}, \
         then {d7:?}; the client from 127.0.0.1 took {real:?}"
    );
    // Each failure doubles the next delay. (The server records a failure just after
    // sending its refusal, so a reconnect could in principle overtake the record by
    // one: the bounds allow one step less.)
    for (i, d) in took.iter().enumerate().skip(2) {
        let least = Duration::from_millis(100 << (i - 2));
        assert!(
            *d >= least,
            "attempt {} from 127.0.0.3 after {i} failed ones took {d:?}; it should wait at least {least:?}",
            i + 1
        );
    }
    assert!(
        d5 >= Duration::from_millis(400),
        "after 4 failed authentications the next attempt from 127.0.0.3 took {d5:?} (expected \
         800 ms of delay, at least 400 ms)"
    );
    assert!(
        real < Duration::from_millis(400) && real_done < d5,
        "the client from 127.0.0.1 took {real:?} (bound 400 ms) and must finish while \
         127.0.0.3's attempt is delayed ({d5:?})"
    );
    assert!(
        d6 >= Duration::from_millis(800),
        "the right secret from 127.0.0.3 after 5 failures took {d6:?}: the delay (1.6 s) \
         applies before the secret is checked"
    );
    assert!(
        d7 < Duration::from_millis(400),
        "after a success from 127.0.0.3 its failures are forgotten, yet the next attempt took {d7:?}"
    );
    client.shutdown();
}
