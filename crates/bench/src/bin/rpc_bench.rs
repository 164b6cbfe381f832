//! `rpc-bench`: measures flint's RPC layer against raw TCP on loopback in one run and
//! prints one JSON object to stdout (progress goes to stderr).
//!
//! By default the servers — flint's server-mode `RpcEnv` and the raw TCP echo server —
//! run in a child process (this binary re-executed with the hidden `serve`
//! subcommand) and the clients in this one, each process on a tokio multi-thread
//! runtime of `--workers` workers: two processes on one machine, as a driver and an
//! executor would be, with the kernel scheduling them across the cores.
//! `--in-process` puts both sides on one runtime instead. Whichever is chosen applies
//! to flint and to the baseline alike, and the report says which.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use flint_bench::machine::{peak_rss_mib, Machine, PollIdle};
use flint_bench::stats::{ratio, Latency, OneWay, Rate};
use flint_bench::{raw, rpc};
use flint_rpc::{RpcAddress, RpcConf, RpcEnv};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Target: flint's ask p50 at most this many times raw TCP's round trip p50.
const TARGET_LATENCY_RATIO: f64 = 1.5;
/// Target: one-way 64-byte messages per second over one connection.
const TARGET_ONE_WAY_PER_SEC: f64 = 1_000_000.0;
/// Payload of the raw ping-pong frame; about the size of flint's `Ping` frame.
const PING_PAYLOAD: usize = 16;
/// The yielding variant of the one-way series yields after this many sends.
const YIELD_EVERY: u64 = 256;

#[derive(Parser, Debug)]
#[command(
    name = "rpc-bench",
    about = "flint RPC vs raw TCP on loopback: latency, one-way throughput, pipelined asks; prints JSON"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Rounds: each series runs this many times, raw and flint taking turns; latency
    /// samples are pooled, throughputs are the median round [default: 3; --quick: 2].
    #[arg(long)]
    rounds: Option<u64>,
    /// Timed round trips per latency series, split across the rounds [default: 20000;
    /// --quick: 500].
    #[arg(long)]
    iterations: Option<u64>,
    /// Untimed round trips on each side before the rounds start [default: iterations / 10,
    /// at least 100].
    #[arg(long)]
    warmup: Option<u64>,
    /// One-way messages per throughput round [default: 2000000; --quick: 20000].
    #[arg(long)]
    messages: Option<u64>,
    /// Asks per pipelined round [default: 200000; --quick: 2000].
    #[arg(long)]
    asks: Option<u64>,
    /// Asks kept outstanding in the pipelined series.
    #[arg(long, default_value_t = 64)]
    in_flight: u64,
    /// Payload bytes of each one-way message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Worker threads of each process's tokio runtime.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Run the servers in this process (one runtime) instead of a child process.
    #[arg(long)]
    in_process: bool,
    /// Hold /dev/cpu_dma_latency at 0 for the run (needs root) so idle CPUs poll
    /// instead of halting: on a VM, waking a halted vCPU can dominate a round trip.
    #[arg(long)]
    poll_idle: bool,
    /// A fast smoke run: small counts, figures not meaningful.
    #[arg(long)]
    quick: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The server half (started by rpc-bench itself): prints its addresses as one JSON
    /// line, serves until its standard input closes.
    #[command(hide = true)]
    Serve,
}

/// Addresses the server half announces.
#[derive(Serialize, Deserialize)]
struct Announce {
    raw: SocketAddr,
    flint: String,
}

/// What the server half says when it stops.
#[derive(Serialize, Deserialize)]
struct Farewell {
    peak_rss_mib: Option<f64>,
}

#[derive(Serialize)]
struct Memory {
    what: &'static str,
    client_peak_rss_mib: Option<f64>,
    server_peak_rss_mib: Option<f64>,
}

#[derive(Serialize)]
struct Params {
    quick: bool,
    rounds: u64,
    iterations: u64,
    warmup: u64,
    latency_payload_bytes: usize,
    messages: u64,
    payload_bytes: usize,
    asks: u64,
    in_flight: u64,
}

#[derive(Serialize)]
struct Topology {
    mode: &'static str,
    detail: String,
}

#[derive(Serialize)]
struct Idle {
    /// Whether `--poll-idle` was given.
    poll_idle_requested: bool,
    /// Whether the limit was actually held for the run.
    poll_idle_in_effect: bool,
    /// Why it was not, if it was requested and failed.
    error: Option<String>,
}

#[derive(Serialize)]
struct Runtime {
    flavor: &'static str,
    worker_threads: usize,
}

#[derive(Serialize)]
struct LatencyReport {
    what: &'static str,
    raw_tcp: Latency,
    flint_ask: Latency,
    ratio_p50: f64,
    ratio_p99: f64,
    ratio_mean: f64,
    target_ratio_p50: f64,
    meets_target: bool,
}

#[derive(Serialize)]
struct OneWayReport {
    what: String,
    raw_tcp: Rate,
    flint_send: Rate,
    ratio: f64,
    target_per_sec: f64,
    meets_target: bool,
    /// How long the raw client's write loop took (the rest is the server catching up).
    raw_write_loop_seconds: f64,
    /// How long flint's `send` loop took to queue every message.
    flint_send_loop_seconds: f64,
    /// A variant whose send loop yields now and then, letting the connection's writer
    /// run alongside it.
    flint_send_yielding: YieldingSeries,
}

#[derive(Serialize)]
struct YieldingSeries {
    what: String,
    yield_every: u64,
    rate: Rate,
    send_loop_seconds: f64,
}

#[derive(Serialize)]
struct PipelinedReport {
    what: String,
    in_flight: u64,
    raw_tcp: Rate,
    flint_ask: Rate,
    ratio: f64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    command: String,
    topology: Topology,
    runtime: Runtime,
    idle: Idle,
    machine: Machine,
    params: Params,
    memory: Memory,
    latency: LatencyReport,
    one_way: OneWayReport,
    pipelined_ask: PipelinedReport,
    elapsed_seconds: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLINT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.workers.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rpc-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The driver runs as a task on a worker, as the servers' tasks do, not on the
    // main thread that `block_on` would use.
    let result = runtime.block_on(async move {
        let task = match cli.command {
            Some(Command::Serve) => tokio::spawn(serve()),
            None => tokio::spawn(run(cli)),
        };
        task.await.context("the benchmark task panicked")?
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpc-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Both servers, started on the current runtime.
async fn start_servers() -> anyhow::Result<(RpcEnv, Announce)> {
    let raw = raw::start_server()
        .await
        .context("starting the raw server")?;
    let env = rpc::start_server().await?;
    let flint = env
        .address()
        .context("a server env has an address")?
        .to_string();
    Ok((env, Announce { raw, flint }))
}

/// The child process: announce, then serve until stdin closes.
async fn serve() -> anyhow::Result<()> {
    let (env, announce) = start_servers().await?;
    let line = serde_json::to_string(&announce)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    // Blocks one thread of tokio's blocking pool, not a worker, until the parent
    // closes our stdin (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
    env.shutdown();
    env.await_termination().await;
    let line = serde_json::to_string(&Farewell {
        peak_rss_mib: peak_rss_mib(),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn progress(msg: &str) {
    eprintln!("rpc-bench: {msg}");
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut machine = Machine::probe();
    let iterations = cli
        .iterations
        .unwrap_or(if cli.quick { 500 } else { 20_000 });
    let params = Params {
        quick: cli.quick,
        rounds: cli.rounds.unwrap_or(if cli.quick { 2 } else { 3 }).max(1),
        iterations,
        warmup: cli.warmup.unwrap_or((iterations / 10).max(100)),
        latency_payload_bytes: PING_PAYLOAD,
        messages: cli
            .messages
            .unwrap_or(if cli.quick { 20_000 } else { 2_000_000 }),
        payload_bytes: cli.payload,
        asks: cli.asks.unwrap_or(if cli.quick { 2_000 } else { 200_000 }),
        in_flight: cli.in_flight.max(1),
    };
    if machine.profile == "debug" && !cli.quick {
        progress("warning: this is a debug build; use --release for figures that mean anything");
    }

    let (poll_idle, idle) = if cli.poll_idle {
        match PollIdle::hold() {
            Ok(h) => (
                Some(h),
                Idle {
                    poll_idle_requested: true,
                    poll_idle_in_effect: true,
                    error: None,
                },
            ),
            Err(e) => {
                progress(&format!("warning: --poll-idle not in effect: {e}"));
                (
                    None,
                    Idle {
                        poll_idle_requested: true,
                        poll_idle_in_effect: false,
                        error: Some(e),
                    },
                )
            }
        }
    } else {
        (
            None,
            Idle {
                poll_idle_requested: false,
                poll_idle_in_effect: false,
                error: None,
            },
        )
    };

    // The servers: a child process, or this runtime.
    let mut child = None;
    let mut local_env = None;
    let (announce, topology) = if cli.in_process {
        let (env, announce) = start_servers().await?;
        local_env = Some(env);
        let detail = format!(
            "servers and clients in one process on one tokio multi-thread runtime of {} workers",
            cli.workers
        );
        (
            announce,
            Topology {
                mode: "one-process",
                detail,
            },
        )
    } else {
        let exe = std::env::current_exe().context("locating the rpc-bench binary")?;
        let mut c = tokio::process::Command::new(exe)
            .arg("--workers")
            .arg(cli.workers.to_string())
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the server process")?;
        let mut out = BufReader::new(c.stdout.take().context("the server's stdout")?);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), out.read_line(&mut line))
            .await
            .context("the server process did not announce itself within 30 s")??;
        let announce: Announce = serde_json::from_str(line.trim())
            .with_context(|| format!("the server process announced {line:?}"))?;
        child = Some((c, out));
        let detail = format!(
            "servers (flint server-mode RpcEnv and the raw TCP server) in a child process, clients in the parent; each process runs a tokio multi-thread runtime of {} workers",
            cli.workers
        );
        (
            announce,
            Topology {
                mode: "two-processes",
                detail,
            },
        )
    };
    progress(&format!(
        "{} mode; raw server {}, flint server {}",
        topology.mode, announce.raw, announce.flint
    ));

    let mut raw_client = raw::Client::connect(announce.raw)
        .await
        .context("connecting to the raw server")?;
    let client_env = RpcEnv::client(RpcConf::default())?;
    let flint_addr: RpcAddress = announce.flint.parse()?;
    let r = client_env
        .setup_endpoint_ref::<rpc::BenchMsg>(&flint_addr, rpc::ENDPOINT)
        .await
        .context("looking up the bench endpoint")?;

    // Warm-up: every series once, untimed.
    let w = params.warmup as usize;
    let m = params.messages;
    let mw = (m / 10).clamp(1, 200_000);
    let p = params.payload_bytes;
    let a = params.asks;
    let aw = (a / 10).max(1);
    let k = params.in_flight;
    progress(&format!(
        "warm-up: {w} round trips, {mw} one-way messages, {aw} pipelined asks on each side"
    ));
    raw_client.ping_pong(w, PING_PAYLOAD).await?;
    rpc::ping_pong(&r, w).await?;
    check_count("raw warm-up", mw, raw_client.one_way(mw, p).await?.counted)?;
    check_count(
        "flint warm-up",
        mw,
        rpc::one_way(&r, mw, p, None).await?.counted,
    )?;
    raw_client.pipelined(aw, k, PING_PAYLOAD).await?;
    rpc::pipelined(&r, aw, k).await?;

    // Rounds: raw and flint take turns (raw first in odd rounds, flint first in even
    // ones) so that a change in the machine's state hits both alike.
    let rounds = params.rounds;
    let per = (params.iterations / rounds).max(1) as usize;
    let (mut raw_samples, mut flint_samples) = (Vec::new(), Vec::new());
    let (mut raw_ow, mut flint_ow, mut flint_yield_ow) = (Vec::new(), Vec::new(), Vec::new());
    let (mut raw_pl, mut flint_pl) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Side::Raw, Side::Flint]
        } else {
            [Side::Flint, Side::Raw]
        };
        progress(&format!(
            "round {}/{rounds}: {per} round trips, {m} one-way messages (and again yielding every {YIELD_EVERY} sends), {a} asks with {k} in flight; {} first",
            round + 1,
            order[0].name()
        ));
        for side in order {
            match side {
                Side::Raw => raw_samples.extend(raw_client.ping_pong(per, PING_PAYLOAD).await?),
                Side::Flint => flint_samples.extend(rpc::ping_pong(&r, per).await?),
            }
        }
        for side in order {
            match side {
                Side::Raw => {
                    let o = raw_client.one_way(m, p).await?;
                    check_count("raw one-way", m, o.counted)?;
                    raw_ow.push(o);
                }
                Side::Flint => {
                    let o = rpc::one_way(&r, m, p, None).await?;
                    check_count("flint one-way", m, o.counted)?;
                    flint_ow.push(o);
                }
            }
        }
        let o = rpc::one_way(&r, m, p, Some(YIELD_EVERY)).await?;
        check_count("flint one-way (yielding)", m, o.counted)?;
        flint_yield_ow.push(o);
        for side in order {
            let t = Instant::now();
            match side {
                Side::Raw => {
                    let n = raw_client.pipelined(a, k, PING_PAYLOAD).await?;
                    raw_pl.push(Rate::new(n, t.elapsed()));
                }
                Side::Flint => {
                    let n = rpc::pipelined(&r, a, k).await?;
                    flint_pl.push(Rate::new(n, t.elapsed()));
                }
            }
        }
    }

    let raw_lat = Latency::from_samples(&mut raw_samples);
    let flint_lat = Latency::from_samples(&mut flint_samples);
    let latency = LatencyReport {
        what: "round trip of one small request and its reply, one at a time",
        ratio_p50: ratio(flint_lat.p50_us, raw_lat.p50_us),
        ratio_p99: ratio(flint_lat.p99_us, raw_lat.p99_us),
        ratio_mean: ratio(flint_lat.mean_us, raw_lat.mean_us),
        target_ratio_p50: TARGET_LATENCY_RATIO,
        meets_target: flint_lat.p50_us <= TARGET_LATENCY_RATIO * raw_lat.p50_us,
        raw_tcp: raw_lat,
        flint_ask: flint_lat,
    };

    let rate = |o: &OneWay| Rate::new(o.counted, o.total);
    let raw_rate = Rate::median(&raw_ow.iter().map(rate).collect::<Vec<_>>());
    let flint_rate = Rate::median(&flint_ow.iter().map(rate).collect::<Vec<_>>());
    let yield_rate = Rate::median(&flint_yield_ow.iter().map(rate).collect::<Vec<_>>());
    // The send loop of the median round.
    let send_loop = |all: &[OneWay], median: &Rate| {
        all.iter()
            .find(|o| rate(o).per_sec == median.per_sec)
            .map(|o| secs(o.send_loop))
            .unwrap_or(0.0)
    };
    let one_way = OneWayReport {
        what: format!(
            "{m} one-way messages of {p} payload bytes over one connection, from the first send until an ask returns the count"
        ),
        ratio: ratio(flint_rate.per_sec, raw_rate.per_sec),
        target_per_sec: TARGET_ONE_WAY_PER_SEC,
        meets_target: flint_rate.per_sec >= TARGET_ONE_WAY_PER_SEC,
        raw_write_loop_seconds: send_loop(&raw_ow, &raw_rate),
        flint_send_loop_seconds: send_loop(&flint_ow, &flint_rate),
        raw_tcp: raw_rate,
        flint_send: flint_rate,
        flint_send_yielding: YieldingSeries {
            what: format!(
                "the same flint series with tokio::task::yield_now() after every {YIELD_EVERY} sends (not part of the target)"
            ),
            yield_every: YIELD_EVERY,
            send_loop_seconds: send_loop(&flint_yield_ow, &yield_rate),
            rate: yield_rate,
        },
    };

    let (raw_pl, flint_pl) = (Rate::median(&raw_pl), Rate::median(&flint_pl));
    let pipelined_ask = PipelinedReport {
        what: format!("{a} small requests with {k} outstanding at all times"),
        in_flight: k,
        ratio: ratio(flint_pl.per_sec, raw_pl.per_sec),
        raw_tcp: raw_pl,
        flint_ask: flint_pl,
    };

    // Tear down: the client env, then the servers.
    drop(r);
    client_env.shutdown();
    client_env.await_termination().await;
    drop(raw_client);
    if let Some(env) = local_env {
        env.shutdown();
        env.await_termination().await;
    }
    let mut server_peak_rss_mib = None;
    if let Some((mut c, mut out)) = child {
        drop(c.stdin.take());
        let mut line = String::new();
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line)).await
        {
            server_peak_rss_mib = serde_json::from_str::<Farewell>(line.trim())
                .ok()
                .and_then(|f| f.peak_rss_mib);
        }
        match tokio::time::timeout(Duration::from_secs(10), c.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => bail!("the server process failed: {status}"),
            Ok(Err(e)) => bail!("waiting for the server process: {e}"),
            Err(_) => bail!("the server process did not stop within 10 s"),
        }
    }
    let memory = Memory {
        what: "peak resident memory (VmHWM) of each process over the whole run; one-process mode reports it as the client's",
        client_peak_rss_mib: peak_rss_mib(),
        server_peak_rss_mib,
    };
    drop(poll_idle);
    machine.finish();

    let report = Report {
        benchmark: "flint-rpc vs raw TCP on loopback",
        command: std::env::args().collect::<Vec<_>>().join(" "),
        topology,
        idle,
        runtime: Runtime {
            flavor: "multi_thread",
            worker_threads: cli.workers.max(1),
        },
        machine,
        params,
        memory,
        latency,
        one_way,
        pipelined_ask,
        elapsed_seconds: secs(started.elapsed()),
    };
    let json = serde_json::to_string_pretty(&report)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")?;
    out.flush()?;
    Ok(())
}

/// Which implementation a step measures.
#[derive(Clone, Copy)]
enum Side {
    Raw,
    Flint,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Raw => "raw TCP",
            Side::Flint => "flint",
        }
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10_000.0
}

fn check_count(what: &str, sent: u64, counted: u64) -> anyhow::Result<()> {
    if sent != counted {
        bail!("{what}: sent {sent} messages but the server counted {counted}");
    }
    Ok(())
}
