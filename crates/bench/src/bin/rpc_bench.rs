//! `rpc-bench`: measures flint's RPC layer against raw TCP on loopback in one run and
//! prints one JSON object to stdout (progress goes to stderr).
//!
//! Three sides take turns in every series: raw TCP, flint without a secret (plain
//! records), and flint with a secret and `rpc.encryption.enabled` (every byte after
//! the handshake sealed with AES-256-GCM). The series are ask round trips, one-way
//! messages sent with `send_async`, pipelined asks, and a bulk stream pulled from the
//! server (raw: a bulk copy of the same size). Each figure that has a target carries
//! it and a pass/fail flag; `targets` lists them all.
//!
//! By default the servers — two server-mode `RpcEnv`s and the raw TCP server — run in
//! a child process (this binary re-executed with the hidden `serve` subcommand) and
//! the clients in this one, each process on a tokio multi-thread runtime of
//! `--workers` workers: two processes on one machine, as a driver and an executor
//! would be. Each one-way series runs in a fresh client process of its own (the
//! hidden `one-way-client` subcommand), so its peak RSS is that of a process that did
//! nothing else. `--in-process` puts everything on one runtime instead.

/// The allocator every flint process runs on: the `flint` crate sets it (its default
/// feature `mimalloc`), and this benchmark does not link that crate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use flint_bench::machine::{peak_rss_mib, reset_peak_rss, rss_mib, Machine, PollIdle};
use flint_bench::stats::{ratio, Latency, Rate, Throughput};
use flint_bench::{raw, rpc};
use flint_rpc::{EndpointRef, RpcAddress, RpcConf, RpcEnv};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Target: flint's ask p50 (sealed or not) at most this many times raw TCP's.
const TARGET_LATENCY_RATIO: f64 = 1.5;
/// Target: one-way 64-byte messages per second over one connection, unsealed.
const TARGET_ONE_WAY_PER_SEC: f64 = 1_500_000.0;
/// Target: the same, sealed.
const TARGET_ONE_WAY_SEALED_PER_SEC: f64 = 1_000_000.0;
/// Target: peak RSS of the client process of a one-way series.
const TARGET_ONE_WAY_PEAK_RSS_MIB: f64 = 64.0;
/// Target: pipelined asks per second at least this fraction of raw TCP's.
const TARGET_PIPELINED_RATIO: f64 = 0.8;
/// Target: unsealed stream throughput at least this fraction of a raw TCP bulk copy.
const TARGET_STREAM_RATIO: f64 = 0.7;
/// Target: sealed stream throughput, decimal GB/s.
const TARGET_STREAM_SEALED_GB_PER_SEC: f64 = 1.0;
/// Payload of the raw ping-pong frame; about the size of flint's `Ping` frame.
const PING_PAYLOAD: usize = 16;
/// How the parent hands the run's secret to the processes it starts.
const SECRET_ENV: &str = "RPC_BENCH_SECRET";

#[derive(Parser, Debug)]
#[command(
    name = "rpc-bench",
    about = "flint RPC (plain and sealed) vs raw TCP on loopback: latency, one-way throughput and memory, pipelined asks, bulk streams; prints JSON"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Rounds: each series runs this many times, the sides taking turns; latency
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
    /// The kind of server endpoint the pipelined series asks: `inline` (an
    /// `InlineEndpoint`, answered on the connection's reader task) or `sequential` (an
    /// ordinary `Endpoint` with its inbox and task, as the latency series uses).
    #[arg(long, default_value = "inline", value_parser = ["inline", "sequential"])]
    pipelined_endpoint: String,
    /// Run only the pipelined series through a `Pipeline` (after a warm-up of it), for
    /// `--rounds` rounds, and print one JSON line per side and round with the rate and
    /// the CPU time per ask of the client and of the server process (summed over their
    /// threads from /proc/<pid>/task/*/schedstat), then a summary line; separate
    /// processes only. For comparing builds on a busy machine: CPU per ask moves less
    /// with other load than the rate does.
    #[arg(long, conflicts_with = "in_process")]
    pipelined_only: bool,
    /// Payload bytes of each one-way message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Bytes per bulk-stream round [default: 1073741824 (1 GiB); --quick: 8388608].
    #[arg(long)]
    stream_bytes: Option<u64>,
    /// Worker threads of each process's tokio runtime.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Run servers and clients in this process (one runtime) instead of in separate
    /// processes.
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
    /// One one-way series in a process of its own (started by rpc-bench itself):
    /// prints its result as one JSON line.
    #[command(hide = true)]
    OneWayClient {
        #[arg(long, value_enum)]
        side: Side,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        messages: u64,
        #[arg(long)]
        warmup: u64,
        #[arg(long)]
        payload: usize,
    },
}

/// Which implementation a step measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Side {
    Raw,
    Flint,
    FlintSealed,
}

const SIDES: [Side; 3] = [Side::Raw, Side::Flint, Side::FlintSealed];

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Raw => "raw TCP",
            Side::Flint => "flint",
            Side::FlintSealed => "flint sealed",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Flint => "flint",
            Side::FlintSealed => "flint-sealed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The order of the sides in `round`: rotated, so each goes first once in 3 rounds
/// and a change in the machine's state hits all alike.
fn order(round: u64) -> [Side; 3] {
    let mut o = SIDES;
    o.rotate_left((round % 3) as usize);
    o
}

/// On-CPU time of every thread of process `pid` so far (`/proc/<pid>/task/*/schedstat`,
/// nanoseconds); `None` if it cannot be read.
fn process_cpu(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// `--pipelined-only`: the pipelined series through a `Pipeline` alone, with the CPU
/// time each process spent per ask.
async fn pipelined_only(
    c: &mut Clients,
    params: &Params,
    server: Option<u32>,
) -> anyhow::Result<()> {
    let me = std::process::id();
    let (n, k) = (params.asks, params.in_flight);
    let warm = (n / 10).max(1);
    for side in SIDES {
        c.pipelined(side, warm, k, false).await?;
    }
    // Per side, per round: rate, ratio to raw TCP's rate in the same round, client,
    // server and total CPU µs per ask.
    let mut per_side: [Vec<[f64; 5]>; 3] = Default::default();
    for round in 0..params.rounds {
        let mut this: [[f64; 4]; 3] = Default::default();
        for side in order(round) {
            let (c0, s0) = (process_cpu(me), server.and_then(process_cpu));
            let rate = c.pipelined(side, n, k, false).await?;
            let (c1, s1) = (process_cpu(me), server.and_then(process_cpu));
            let per_ask = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
                (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() * 1e6 / n as f64,
                _ => f64::NAN,
            };
            let (client_us, server_us) = (per_ask(c0, c1), per_ask(s0, s1));
            this[side.index()] = [rate.per_sec, client_us, server_us, client_us + server_us];
        }
        let raw = this[0][0];
        for side in SIDES {
            let [rate, cl, sv, all] = this[side.index()];
            per_side[side.index()].push([rate, rate / raw, cl, sv, all]);
            println!(
                "{}",
                serde_json::json!({
                    "round": round + 1,
                    "side": side.name(),
                    "asks_per_sec": rate,
                    "ratio_to_raw": rate / raw,
                    "client_cpu_us_per_ask": cl,
                    "server_cpu_us_per_ask": sv,
                    "cpu_us_per_ask": all,
                })
            );
        }
    }
    let median = |rows: &[[f64; 5]], i: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut summary = serde_json::Map::new();
    for side in SIDES {
        let rows = &per_side[side.index()];
        summary.insert(
            side.name().to_string(),
            serde_json::json!({
                "asks_per_sec": median(rows, 0),
                "ratio_to_raw": median(rows, 1),
                "client_cpu_us_per_ask": median(rows, 2),
                "server_cpu_us_per_ask": median(rows, 3),
                "cpu_us_per_ask": median(rows, 4),
            }),
        );
    }
    println!(
        "{}",
        serde_json::json!({ "summary": summary, "asks": n, "in_flight": k, "rounds": params.rounds })
    );
    Ok(())
}

/// Addresses the server half announces.
#[derive(Serialize, Deserialize)]
struct Announce {
    raw: SocketAddr,
    flint: String,
    flint_sealed: String,
}

/// What the server half says when it stops.
#[derive(Serialize, Deserialize)]
struct Farewell {
    peak_rss_mib: Option<f64>,
}

/// What a one-way series reports (from its own process, or from this one).
#[derive(Serialize, Deserialize, Clone)]
struct OneWayResult {
    sent: u64,
    counted: u64,
    send_loop_seconds: f64,
    total_seconds: f64,
    rss_before_sends_mib: Option<f64>,
    peak_rss_mib: Option<f64>,
}

impl OneWayResult {
    fn rate(&self) -> Rate {
        Rate::new(self.counted, Duration::from_secs_f64(self.total_seconds))
    }
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
    stream_bytes: u64,
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
struct Sealing {
    what: &'static str,
    flint: &'static str,
    flint_sealed: &'static str,
}

#[derive(Serialize)]
struct Memory {
    what: &'static str,
    /// Whether VmHWM could be reset before each series (`/proc/self/clear_refs`).
    peak_reset_per_series: bool,
    /// The highest per-series peak of this (the benchmark driver's) process.
    driver_peak_rss_mib: Option<f64>,
    server_peak_rss_mib: Option<f64>,
}

#[derive(Serialize)]
struct LatencyRaw {
    latency: Latency,
    client_peak_rss_mib: Option<f64>,
}

#[derive(Serialize)]
struct LatencyFlint {
    latency: Latency,
    ratio_p50: f64,
    ratio_p99: f64,
    ratio_mean: f64,
    target_ratio_p50: f64,
    meets_target: bool,
    client_peak_rss_mib: Option<f64>,
}

#[derive(Serialize)]
struct LatencyReport {
    what: &'static str,
    raw_tcp: LatencyRaw,
    flint: LatencyFlint,
    flint_sealed: LatencyFlint,
}

#[derive(Serialize)]
struct OneWaySide {
    /// Messages delivered per second, median round.
    rate: Rate,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    /// Messages sent per round.
    sent: u64,
    /// Messages sent but not counted by the server, over all rounds.
    dropped: u64,
    /// How long the median round's send loop took (the rest is the drain).
    send_loop_seconds: f64,
    /// The highest peak RSS of the client process over the rounds.
    client_peak_rss_mib: Option<f64>,
    client_peak_rss_mib_rounds: Vec<Option<f64>>,
    /// The client's RSS once connected, before its first send (median round's).
    client_rss_before_sends_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meets_rate_target: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_peak_rss_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meets_rss_target: Option<bool>,
}

#[derive(Serialize)]
struct OneWayReport {
    what: String,
    client_process: &'static str,
    raw_tcp: OneWaySide,
    flint: OneWaySide,
    flint_sealed: OneWaySide,
}

#[derive(Serialize)]
struct PipelinedSide {
    rate: Rate,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meets_target: Option<bool>,
    client_peak_rss_mib: Option<f64>,
}

#[derive(Serialize)]
struct PipelinedReport {
    what: String,
    in_flight: u64,
    /// Through a `Pipeline` (the fastest form; the target applies to it).
    api: &'static str,
    raw_tcp: PipelinedSide,
    flint: PipelinedSide,
    flint_sealed: PipelinedSide,
    /// The same workload with plain `ask`s (`FuturesUnordered` keeping `in_flight`
    /// outstanding): no target, reported so the table shows both.
    plain_ask_what: &'static str,
    flint_plain_ask: PipelinedSide,
    flint_sealed_plain_ask: PipelinedSide,
}

#[derive(Serialize)]
struct StreamSide {
    throughput: Throughput,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_gb_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meets_target: Option<bool>,
    client_peak_rss_mib: Option<f64>,
}

#[derive(Serialize)]
struct StreamReport {
    what: String,
    bytes: u64,
    chunk_bytes: usize,
    window_chunks: usize,
    raw_tcp: StreamSide,
    flint: StreamSide,
    flint_sealed: StreamSide,
}

/// One target and whether it was met.
#[derive(Serialize)]
struct Check {
    figure: &'static str,
    value: f64,
    op: &'static str,
    target: f64,
    unit: &'static str,
    pass: bool,
}

impl Check {
    fn at_most(figure: &'static str, value: f64, target: f64, unit: &'static str) -> Check {
        Check {
            figure,
            value,
            op: "<=",
            target,
            unit,
            pass: value <= target,
        }
    }

    fn at_least(figure: &'static str, value: f64, target: f64, unit: &'static str) -> Check {
        Check {
            figure,
            value,
            op: ">=",
            target,
            unit,
            pass: value >= target,
        }
    }
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
    sealing: Sealing,
    memory: Memory,
    latency: LatencyReport,
    one_way: OneWayReport,
    pipelined_ask: PipelinedReport,
    stream: StreamReport,
    targets: Vec<Check>,
    all_targets_met: bool,
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
            Some(Command::OneWayClient {
                side,
                addr,
                messages,
                warmup,
                payload,
            }) => tokio::spawn(async move {
                let secret = match side {
                    Side::FlintSealed => Some(secret_from_env()?),
                    _ => None,
                };
                let r = one_way_series(side, &addr, messages, warmup, payload, secret.as_deref())
                    .await?;
                print_line(&r)
            }),
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

fn print_line<T: Serialize>(v: &T) -> anyhow::Result<()> {
    let line = serde_json::to_string(v)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// A fresh random secret for this run, hex-encoded (it only ever protects loopback
/// connections between this run's processes).
fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut bytes,
    )
    .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn secret_from_env() -> anyhow::Result<Vec<u8>> {
    std::env::var(SECRET_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .map(String::into_bytes)
        .with_context(|| {
            format!("{SECRET_ENV} is not set (rpc-bench sets it for the processes it starts)")
        })
}

/// The servers, started on the current runtime: flint without a secret, flint with
/// `secret` (sealed), and raw TCP.
async fn start_servers(secret: &[u8]) -> anyhow::Result<(RpcEnv, RpcEnv, Announce)> {
    let raw = raw::start_server()
        .await
        .context("starting the raw server")?;
    let plain = rpc::start_server(rpc::conf(None)).await?;
    let sealed = rpc::start_server(rpc::conf(Some(secret))).await?;
    let addr = |env: &RpcEnv| -> anyhow::Result<String> {
        Ok(env
            .address()
            .context("a server env has an address")?
            .to_string())
    };
    let announce = Announce {
        raw,
        flint: addr(&plain)?,
        flint_sealed: addr(&sealed)?,
    };
    Ok((plain, sealed, announce))
}

/// The server process: announce, then serve until stdin closes.
async fn serve() -> anyhow::Result<()> {
    let secret = secret_from_env()?;
    let (plain, sealed, announce) = start_servers(&secret).await?;
    print_line(&announce)?;
    // Blocks one thread of tokio's blocking pool, not a worker, until the parent
    // closes our stdin (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
    for env in [plain, sealed] {
        env.shutdown();
        env.await_termination().await;
    }
    print_line(&Farewell {
        peak_rss_mib: peak_rss_mib(),
    })
}

/// One one-way series against `addr`: connect, warm up with `warmup` messages, then
/// the timed `messages`. The peak RSS reported is this process's VmHWM: the whole
/// life of a one-way client process, or since the caller reset it.
async fn one_way_series(
    side: Side,
    addr: &str,
    messages: u64,
    warmup: u64,
    payload: usize,
    secret: Option<&[u8]>,
) -> anyhow::Result<OneWayResult> {
    let (before, timed) = match side {
        Side::Raw => {
            let addr: SocketAddr = addr.parse().context("the raw server's address")?;
            let mut c = raw::Client::connect(addr)
                .await
                .context("connecting to the raw server")?;
            let before = rss_mib();
            let w = c.one_way(warmup, payload).await?;
            check_count("raw one-way warm-up", warmup, w.counted)?;
            (before, c.one_way(messages, payload).await?)
        }
        Side::Flint | Side::FlintSealed => {
            let addr: RpcAddress = addr.parse()?;
            let env = RpcEnv::client(rpc::conf(secret))?;
            let r = env
                .setup_endpoint_ref::<rpc::BenchMsg>(&addr, rpc::ENDPOINT)
                .await
                .context("looking up the bench endpoint")?;
            let before = rss_mib();
            // Warm-up drops are reported by the timed series too, if the cause remains.
            rpc::one_way(&r, warmup, payload).await?;
            let timed = rpc::one_way(&r, messages, payload).await?;
            drop(r);
            env.shutdown();
            env.await_termination().await;
            (before, timed)
        }
    };
    Ok(OneWayResult {
        sent: messages,
        counted: timed.counted,
        send_loop_seconds: timed.send_loop.as_secs_f64(),
        total_seconds: timed.total.as_secs_f64(),
        rss_before_sends_mib: before,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Runs a one-way series in a fresh process of this binary.
async fn one_way_in_child(
    workers: usize,
    side: Side,
    addr: &str,
    messages: u64,
    warmup: u64,
    payload: usize,
    secret: &str,
) -> anyhow::Result<OneWayResult> {
    let exe = std::env::current_exe().context("locating the rpc-bench binary")?;
    let out = tokio::process::Command::new(exe)
        .arg("--workers")
        .arg(workers.to_string())
        .arg("one-way-client")
        .args(["--side", side.arg(), "--addr", addr])
        .args(["--messages", &messages.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .args(["--payload", &payload.to_string()])
        .env(SECRET_ENV, secret)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .context("running a one-way client process")?;
    if !out.status.success() {
        bail!(
            "the {} one-way client process failed: {}",
            side.name(),
            out.status
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim())
        .with_context(|| format!("the one-way client process printed {line:?}"))
}

fn progress(msg: &str) {
    eprintln!("rpc-bench: {msg}");
}

/// The highest peak RSS seen per side.
#[derive(Default)]
struct Peaks([Option<f64>; 3]);

impl Peaks {
    fn track(&mut self, side: Side, v: Option<f64>) {
        let slot = &mut self.0[side.index()];
        *slot = match (*slot, v) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    fn get(&self, side: Side) -> Option<f64> {
        self.0[side.index()]
    }

    fn max(&self) -> Option<f64> {
        self.0.iter().flatten().copied().reduce(f64::max)
    }
}

/// The clients of this process.
struct Clients {
    raw: raw::Client,
    plain_env: RpcEnv,
    sealed_env: RpcEnv,
    plain: EndpointRef<rpc::BenchMsg>,
    sealed: EndpointRef<rpc::BenchMsg>,
    /// The endpoints the pipelined series asks.
    plain_pipelined: EndpointRef<rpc::BenchMsg>,
    sealed_pipelined: EndpointRef<rpc::BenchMsg>,
    plain_addr: RpcAddress,
    sealed_addr: RpcAddress,
}

impl Clients {
    async fn connect(
        announce: &Announce,
        secret: &[u8],
        pipelined_endpoint: &str,
    ) -> anyhow::Result<Clients> {
        let raw = raw::Client::connect(announce.raw)
            .await
            .context("connecting to the raw server")?;
        let plain_env = RpcEnv::client(rpc::conf(None))?;
        let sealed_env = RpcEnv::client(rpc::conf(Some(secret)))?;
        let plain_addr: RpcAddress = announce.flint.parse()?;
        let sealed_addr: RpcAddress = announce.flint_sealed.parse()?;
        let plain = plain_env
            .setup_endpoint_ref::<rpc::BenchMsg>(&plain_addr, rpc::ENDPOINT)
            .await
            .context("looking up the bench endpoint")?;
        let sealed = sealed_env
            .setup_endpoint_ref::<rpc::BenchMsg>(&sealed_addr, rpc::ENDPOINT)
            .await
            .context("looking up the sealed bench endpoint")?;
        let name = match pipelined_endpoint {
            "inline" => rpc::INLINE_ENDPOINT,
            _ => rpc::ENDPOINT,
        };
        let plain_pipelined = plain_env
            .setup_endpoint_ref::<rpc::BenchMsg>(&plain_addr, name)
            .await
            .context("looking up the pipelined bench endpoint")?;
        let sealed_pipelined = sealed_env
            .setup_endpoint_ref::<rpc::BenchMsg>(&sealed_addr, name)
            .await
            .context("looking up the sealed pipelined bench endpoint")?;
        Ok(Clients {
            raw,
            plain_env,
            sealed_env,
            plain,
            sealed,
            plain_pipelined,
            sealed_pipelined,
            plain_addr,
            sealed_addr,
        })
    }

    fn flint(&self, side: Side) -> (&RpcEnv, &EndpointRef<rpc::BenchMsg>, &RpcAddress) {
        match side {
            Side::FlintSealed => (&self.sealed_env, &self.sealed, &self.sealed_addr),
            _ => (&self.plain_env, &self.plain, &self.plain_addr),
        }
    }

    async fn ping_pong(&mut self, side: Side, n: usize) -> anyhow::Result<Vec<Duration>> {
        Ok(match side {
            Side::Raw => self.raw.ping_pong(n, PING_PAYLOAD).await?,
            _ => rpc::ping_pong(self.flint(side).1, n).await?,
        })
    }

    /// Pipelined requests: raw TCP's echo loop, flint's `Pipeline` (or, with
    /// `plain_ask`, flint's plain `ask`s kept `k` outstanding).
    async fn pipelined(
        &mut self,
        side: Side,
        n: u64,
        k: u64,
        plain_ask: bool,
    ) -> anyhow::Result<Rate> {
        let t = Instant::now();
        let r = match side {
            Side::Raw => None,
            Side::FlintSealed => Some(&self.sealed_pipelined),
            Side::Flint => Some(&self.plain_pipelined),
        };
        let done = match r {
            None => self.raw.pipelined(n, k, PING_PAYLOAD).await?,
            Some(r) if plain_ask => rpc::pipelined(r, n, k).await?,
            Some(r) => rpc::pipeline(r, n, k).await?,
        };
        if done != n {
            bail!("{}: {n} pipelined asks but {done} answers", side.name());
        }
        Ok(Rate::new(done, t.elapsed()))
    }

    /// A bulk transfer of `bytes`; returns its throughput and (flint) chunk count.
    async fn bulk(&mut self, side: Side, bytes: u64) -> anyhow::Result<(Throughput, u64)> {
        let t = Instant::now();
        let (got, chunks) = match side {
            Side::Raw => (self.raw.bulk(bytes).await?, 0),
            _ => {
                let (env, _, addr) = self.flint(side);
                rpc::pull(env, addr, bytes).await?
            }
        };
        let elapsed = t.elapsed();
        if got != bytes {
            bail!("{}: asked for {bytes} bytes, received {got}", side.name());
        }
        Ok((Throughput::new(got, elapsed), chunks))
    }

    async fn close(self) {
        let Clients {
            raw,
            plain_env,
            sealed_env,
            plain,
            sealed,
            ..
        } = self;
        drop((plain, sealed, raw));
        for env in [plain_env, sealed_env] {
            env.shutdown();
            env.await_termination().await;
        }
    }
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
        stream_bytes: cli
            .stream_bytes
            .unwrap_or(if cli.quick { 8 << 20 } else { 1 << 30 })
            .max(1),
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

    let secret = new_secret()?;

    // The servers: a child process, or this runtime.
    let mut child = None;
    let mut local_envs = Vec::new();
    let (announce, topology) = if cli.in_process {
        let (plain, sealed, announce) = start_servers(secret.as_bytes()).await?;
        local_envs = vec![plain, sealed];
        let detail = format!(
            "servers and clients, one-way series included, in one process on one tokio multi-thread runtime of {} workers",
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
            .env(SECRET_ENV, &secret)
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
            "servers (two flint server-mode RpcEnvs, one with a secret, and the raw TCP server) in a child process, clients in the parent, each one-way series in a fresh client process of its own; each process runs a tokio multi-thread runtime of {} workers",
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
        "{} mode; raw server {}, flint server {}, sealed flint server {}",
        topology.mode, announce.raw, announce.flint, announce.flint_sealed
    ));

    let mut c = Clients::connect(&announce, secret.as_bytes(), &cli.pipelined_endpoint).await?;
    if cli.pipelined_only {
        let server = child.as_ref().and_then(|(c, _)| c.id());
        return pipelined_only(&mut c, &params, server).await;
    }
    let conf = RpcConf::default();
    let peak_reset = reset_peak_rss();

    // Warm-up: every series once on each side, untimed (one-way series warm up in
    // their own processes).
    let w = params.warmup as usize;
    let m = params.messages;
    let mw = (m / 10).clamp(1, 200_000);
    let p = params.payload_bytes;
    let a = params.asks;
    let aw = (a / 10).max(1);
    let k = params.in_flight;
    let sb = params.stream_bytes;
    let sw = (sb / 16).max(1 << 20).min(sb);
    progress(&format!(
        "warm-up: {w} round trips, {aw} pipelined asks, a {sw}-byte stream on each side"
    ));
    for side in SIDES {
        c.ping_pong(side, w).await?;
        c.pipelined(side, aw, k, false).await?;
        if side != Side::Raw {
            c.pipelined(side, aw, k, true).await?;
        }
        c.bulk(side, sw).await?;
    }

    let rounds = params.rounds;
    let per = (params.iterations / rounds).max(1) as usize;
    let mut samples: [Vec<Duration>; 3] = Default::default();
    let mut ow: [Vec<OneWayResult>; 3] = Default::default();
    let mut pl: [Vec<Rate>; 3] = Default::default();
    let mut pa: [Vec<Rate>; 3] = Default::default();
    let mut st: [Vec<Throughput>; 3] = Default::default();
    let mut chunks = [0u64; 3];
    let (mut lat_peak, mut pl_peak, mut pa_peak, mut st_peak) = (
        Peaks::default(),
        Peaks::default(),
        Peaks::default(),
        Peaks::default(),
    );
    for round in 0..rounds {
        let order = order(round);
        progress(&format!(
            "round {}/{rounds}: {per} round trips, {m} one-way messages, {a} asks with {k} in flight, a {sb}-byte stream; order {}",
            round + 1,
            order.map(Side::name).join(", ")
        ));
        for side in order {
            reset_peak_rss();
            samples[side.index()].extend(c.ping_pong(side, per).await?);
            lat_peak.track(side, peak_rss_mib());
        }
        for side in order {
            let addr = match side {
                Side::Raw => announce.raw.to_string(),
                Side::Flint => announce.flint.clone(),
                Side::FlintSealed => announce.flint_sealed.clone(),
            };
            let r = if cli.in_process {
                reset_peak_rss();
                let s = (side == Side::FlintSealed).then_some(secret.as_bytes());
                one_way_series(side, &addr, m, mw, p, s).await?
            } else {
                one_way_in_child(cli.workers, side, &addr, m, mw, p, &secret).await?
            };
            if side == Side::Raw {
                check_count("raw one-way", m, r.counted)?;
            }
            ow[side.index()].push(r);
        }
        for side in order {
            reset_peak_rss();
            pl[side.index()].push(c.pipelined(side, a, k, false).await?);
            pl_peak.track(side, peak_rss_mib());
            if side != Side::Raw {
                reset_peak_rss();
                pa[side.index()].push(c.pipelined(side, a, k, true).await?);
                pa_peak.track(side, peak_rss_mib());
            }
        }
        for side in order {
            reset_peak_rss();
            let (t, n) = c.bulk(side, sb).await?;
            st_peak.track(side, peak_rss_mib());
            st[side.index()].push(t);
            chunks[side.index()] = n;
        }
    }

    // Latency.
    let lat: Vec<Latency> = samples
        .iter_mut()
        .map(|s| Latency::from_samples(s))
        .collect();
    let raw_lat = lat[0].clone();
    let lat_flint = |side: Side| {
        let l = lat[side.index()].clone();
        LatencyFlint {
            ratio_p50: ratio(l.p50_us, raw_lat.p50_us),
            ratio_p99: ratio(l.p99_us, raw_lat.p99_us),
            ratio_mean: ratio(l.mean_us, raw_lat.mean_us),
            target_ratio_p50: TARGET_LATENCY_RATIO,
            meets_target: l.p50_us <= TARGET_LATENCY_RATIO * raw_lat.p50_us,
            latency: l,
            client_peak_rss_mib: lat_peak.get(side),
        }
    };
    let latency = LatencyReport {
        what: "round trip of one small request and its reply, one at a time",
        flint: lat_flint(Side::Flint),
        flint_sealed: lat_flint(Side::FlintSealed),
        raw_tcp: LatencyRaw {
            latency: raw_lat.clone(),
            client_peak_rss_mib: lat_peak.get(Side::Raw),
        },
    };

    // One-way.
    let ow_rate = |side: Side| {
        Rate::median(
            &ow[side.index()]
                .iter()
                .map(OneWayResult::rate)
                .collect::<Vec<_>>(),
        )
    };
    let raw_ow_rate = ow_rate(Side::Raw);
    let ow_side = |side: Side| {
        let all = &ow[side.index()];
        let rate = ow_rate(side);
        let median = all
            .iter()
            .find(|r| r.rate().per_sec == rate.per_sec)
            .or(all.first());
        let peaks: Vec<Option<f64>> = all.iter().map(|r| r.peak_rss_mib).collect();
        let peak = peaks.iter().flatten().copied().reduce(f64::max);
        let dropped: u64 = all.iter().map(|r| r.sent.saturating_sub(r.counted)).sum();
        let (target_rate, target_rss) = match side {
            Side::Raw => (None, None),
            Side::Flint => (
                Some(TARGET_ONE_WAY_PER_SEC),
                Some(TARGET_ONE_WAY_PEAK_RSS_MIB),
            ),
            Side::FlintSealed => (
                Some(TARGET_ONE_WAY_SEALED_PER_SEC),
                Some(TARGET_ONE_WAY_PEAK_RSS_MIB),
            ),
        };
        OneWaySide {
            ratio: (side != Side::Raw).then(|| ratio(rate.per_sec, raw_ow_rate.per_sec)),
            sent: m,
            dropped,
            send_loop_seconds: median.map(|r| secs_f(r.send_loop_seconds)).unwrap_or(0.0),
            client_peak_rss_mib: peak,
            client_peak_rss_mib_rounds: peaks,
            client_rss_before_sends_mib: median.and_then(|r| r.rss_before_sends_mib),
            target_per_sec: target_rate,
            meets_rate_target: target_rate.map(|t| rate.per_sec >= t && dropped == 0),
            target_peak_rss_mib: target_rss,
            meets_rss_target: target_rss.map(|t| peak.is_some_and(|p| p <= t)),
            rate,
        }
    };
    let one_way = OneWayReport {
        what: format!(
            "{m} one-way messages of {p} payload bytes over one connection (flint: send_async), from the first send until an ask returns the count; after {mw} untimed warm-up messages on the same connection"
        ),
        client_process: if cli.in_process {
            "the one process of the run; its VmHWM is reset before each series (servers included)"
        } else {
            "a fresh process per side and round that only connects, warms up and runs the series; its peak RSS is that process's VmHWM"
        },
        raw_tcp: ow_side(Side::Raw),
        flint: ow_side(Side::Flint),
        flint_sealed: ow_side(Side::FlintSealed),
    };

    // Pipelined asks.
    let pl_rate = |side: Side| Rate::median(&pl[side.index()]);
    let raw_pl = pl_rate(Side::Raw);
    let pl_side = |side: Side| {
        let rate = pl_rate(side);
        let flint = side != Side::Raw;
        let r = ratio(rate.per_sec, raw_pl.per_sec);
        PipelinedSide {
            ratio: flint.then_some(r),
            target_ratio: flint.then_some(TARGET_PIPELINED_RATIO),
            meets_target: flint.then_some(r >= TARGET_PIPELINED_RATIO),
            client_peak_rss_mib: pl_peak.get(side),
            rate,
        }
    };
    let pa_side = |side: Side| {
        let rate = Rate::median(&pa[side.index()]);
        PipelinedSide {
            ratio: Some(ratio(rate.per_sec, raw_pl.per_sec)),
            target_ratio: None,
            meets_target: None,
            client_peak_rss_mib: pa_peak.get(side),
            rate,
        }
    };
    let pipelined_ask = PipelinedReport {
        what: format!(
            "{a} small requests over one connection with {k} outstanding at all times to a{} endpoint; flint: a Pipeline with a window of {k}, every reply there taken in order and as many new requests pushed in one batch (raw TCP: echo frames, as many new ones written in one call as answers arrived)",
            if cli.pipelined_endpoint == "inline" {
                "n inline (InlineEndpoint, answered on the connection's reader task)"
            } else {
                " sequential (Endpoint, its own inbox and task)"
            }
        ),
        in_flight: k,
        api: "Pipeline (EndpointRef::pipeline, push_batch / next_batch)",
        raw_tcp: pl_side(Side::Raw),
        flint: pl_side(Side::Flint),
        flint_sealed: pl_side(Side::FlintSealed),
        plain_ask_what: "the same requests as plain EndpointRef::ask futures, kept in a FuturesUnordered",
        flint_plain_ask: pa_side(Side::Flint),
        flint_sealed_plain_ask: pa_side(Side::FlintSealed),
    };

    // Streams.
    let st_tp = |side: Side| Throughput::median(&st[side.index()]);
    let raw_st = st_tp(Side::Raw);
    let st_side = |side: Side| {
        let t = st_tp(side);
        let r = ratio(t.gb_per_sec, raw_st.gb_per_sec);
        let (target_ratio, target_gb, meets) = match side {
            Side::Raw => (None, None, None),
            Side::Flint => (
                Some(TARGET_STREAM_RATIO),
                None,
                Some(r >= TARGET_STREAM_RATIO),
            ),
            Side::FlintSealed => (
                None,
                Some(TARGET_STREAM_SEALED_GB_PER_SEC),
                Some(t.gb_per_sec >= TARGET_STREAM_SEALED_GB_PER_SEC),
            ),
        };
        StreamSide {
            ratio: (side != Side::Raw).then_some(r),
            chunks: (side != Side::Raw).then_some(chunks[side.index()]),
            target_ratio,
            target_gb_per_sec: target_gb,
            meets_target: meets,
            client_peak_rss_mib: st_peak.get(side),
            throughput: t,
        }
    };
    let stream = StreamReport {
        what: format!(
            "{sb} bytes from the server process to the client: flint pulls a stream (StreamHandler::pull producing chunk-sized slices of one buffer; the client counts the chunks it receives); raw TCP asks with one frame and reads the unframed bytes into one reused {}-byte buffer",
            raw::BULK_BUF
        ),
        bytes: sb,
        chunk_bytes: conf.stream_chunk,
        window_chunks: conf.stream_window,
        raw_tcp: st_side(Side::Raw),
        flint: st_side(Side::Flint),
        flint_sealed: st_side(Side::FlintSealed),
    };

    let targets = vec![
        Check::at_most(
            "latency.flint.ratio_p50",
            latency.flint.ratio_p50,
            TARGET_LATENCY_RATIO,
            "x raw TCP p50",
        ),
        Check::at_most(
            "latency.flint_sealed.ratio_p50",
            latency.flint_sealed.ratio_p50,
            TARGET_LATENCY_RATIO,
            "x raw TCP p50",
        ),
        Check {
            pass: one_way.flint.meets_rate_target == Some(true),
            ..Check::at_least(
                "one_way.flint.rate.per_sec",
                one_way.flint.rate.per_sec,
                TARGET_ONE_WAY_PER_SEC,
                "messages/s (and none dropped)",
            )
        },
        Check {
            pass: one_way.flint_sealed.meets_rate_target == Some(true),
            ..Check::at_least(
                "one_way.flint_sealed.rate.per_sec",
                one_way.flint_sealed.rate.per_sec,
                TARGET_ONE_WAY_SEALED_PER_SEC,
                "messages/s (and none dropped)",
            )
        },
        rss_check(
            "one_way.flint.client_peak_rss_mib",
            one_way.flint.client_peak_rss_mib,
        ),
        rss_check(
            "one_way.flint_sealed.client_peak_rss_mib",
            one_way.flint_sealed.client_peak_rss_mib,
        ),
        Check::at_least(
            "pipelined_ask.flint.ratio",
            pipelined_ask.flint.ratio.unwrap_or(0.0),
            TARGET_PIPELINED_RATIO,
            "x raw TCP",
        ),
        Check::at_least(
            "pipelined_ask.flint_sealed.ratio",
            pipelined_ask.flint_sealed.ratio.unwrap_or(0.0),
            TARGET_PIPELINED_RATIO,
            "x raw TCP",
        ),
        Check::at_least(
            "stream.flint.ratio",
            stream.flint.ratio.unwrap_or(0.0),
            TARGET_STREAM_RATIO,
            "x raw TCP bulk copy",
        ),
        Check::at_least(
            "stream.flint_sealed.throughput.gb_per_sec",
            stream.flint_sealed.throughput.gb_per_sec,
            TARGET_STREAM_SEALED_GB_PER_SEC,
            "GB/s",
        ),
    ];
    let all_targets_met = targets.iter().all(|t| t.pass);

    // Tear down: the clients, then the servers.
    c.close().await;
    for env in local_envs {
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
        what: "peak resident memory (VmHWM). Per series: this process's, reset before each side's run (one-way: the client process's, see one_way.client_process). The server process's is over the whole run; in one-process mode there is none apart",
        peak_reset_per_series: peak_reset,
        driver_peak_rss_mib: [&lat_peak, &pl_peak, &st_peak]
            .iter()
            .filter_map(|p| p.max())
            .reduce(f64::max),
        server_peak_rss_mib,
    };
    drop(poll_idle);
    machine.finish();

    let report = Report {
        benchmark: "flint-rpc (plain and sealed) vs raw TCP on loopback",
        command: std::env::args().collect::<Vec<_>>().join(" "),
        topology,
        idle,
        runtime: Runtime {
            flavor: "multi_thread",
            worker_threads: cli.workers.max(1),
        },
        machine,
        params,
        sealing: Sealing {
            what: "flint without TLS: with a secret and rpc.encryption.enabled (the default) every byte after the handshake is an AES-256-GCM sealed record of at most 64 KiB; raw TCP is never sealed",
            flint: "no secret: plain records",
            flint_sealed: "a random 32-byte secret per run on both sides, rpc.encryption.enabled = true: sealed records",
        },
        memory,
        latency,
        one_way,
        pipelined_ask,
        stream,
        targets,
        all_targets_met,
        elapsed_seconds: secs(started.elapsed()),
    };
    let json = serde_json::to_string_pretty(&report)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")?;
    out.flush()?;
    Ok(())
}

fn rss_check(figure: &'static str, peak: Option<f64>) -> Check {
    match peak {
        Some(p) => Check::at_most(figure, p, TARGET_ONE_WAY_PEAK_RSS_MIB, "MiB"),
        None => Check {
            pass: false,
            ..Check::at_most(figure, f64::NAN, TARGET_ONE_WAY_PEAK_RSS_MIB, "MiB")
        },
    }
}

fn secs(d: Duration) -> f64 {
    secs_f(d.as_secs_f64())
}

fn secs_f(s: f64) -> f64 {
    (s * 10_000.0).round() / 10_000.0
}

fn check_count(what: &str, sent: u64, counted: u64) -> anyhow::Result<()> {
    if sent != counted {
        bail!("{what}: sent {sent} messages but the server counted {counted}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_side_goes_first_once_in_three_rounds() {
        let firsts: Vec<Side> = (0..3).map(|r| order(r)[0]).collect();
        assert_eq!(firsts, SIDES.to_vec());
    }
}
