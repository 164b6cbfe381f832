//! `flint logs <driver-id | app-id/executor-id> [--stderr] [--follow] [--tail N]`:
//! asks the master where the driver (its newest attempt) or the executor runs or ran,
//! then reads its `stdout` (or `stderr`) from that worker's log service
//! (`"WorkerLogs"`, `ReadLog` asks of at most 256 KiB each) over the authenticated RPC
//! connection and writes it to stdout. `--follow` keeps asking (every 50–500 ms while
//! nothing is new) until the process has ended and everything it wrote is printed,
//! or Ctrl-C. A file that rolled over (`worker.log.max_size`) is read again from its
//! start; rolled files (`stdout.1`, …) stay on the worker.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _};
use flint_proto::messages::{
    LogFile, LogSource, LogStart, ReadLog, WorkerLogMsg, WORKER_LOGS_ENDPOINT,
};
use flint_proto::{AppId, ExecutorId};
use flint_rpc::RpcAddress;

use crate::settings::CommonArgs;
use crate::submit_driver::{target, Masters, Target};

/// Bytes asked for per `ReadLog`.
const CHUNK: u32 = 256 * 1024;

/// Arguments of `flint logs`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  flint logs driver-20260101000000-0000            the driver's stdout
  flint logs --stderr --tail 20 app-20260101000000-0001/0
  flint logs --follow driver-20260101000000-0000   until the driver ends, or Ctrl-C
Exit status: 0 printed (with --follow: the process ended, or Ctrl-C); 1 unknown or
malformed id, no worker known for it, the worker has no such file or cannot be
reached, or no master answered.")]
pub struct LogsArgs {
    /// The master(s), flint://host:port[,host2:port2].
    #[arg(long, env = "FLINT_MASTER", value_name = "URL")]
    pub master: String,
    /// A driver (`driver-…`) or an executor (`app-…/<executor-id>`).
    #[arg(value_name = "DRIVER_ID|APP_ID/EXECUTOR_ID")]
    pub target: String,
    /// Print the stdout file (the default).
    #[arg(long, conflicts_with = "stderr")]
    pub stdout: bool,
    /// Print the stderr file instead.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing what is written until the process ends (or Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start at the last N lines (of at most the last 1 MiB).
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Parses `app-…/<n>` or a driver id.
fn source(text: &str) -> anyhow::Result<LogSource> {
    if let Some((app, exec)) = text.split_once('/') {
        let app: AppId = app.parse().with_context(|| {
            format!(
                "{app:?} is not an application id (app-<date>-<number>); give app-…/<executor-id>"
            )
        })?;
        let exec: ExecutorId = exec.parse().with_context(|| {
            format!("{exec:?} is not an executor id (a number); give app-…/<executor-id>")
        })?;
        return Ok(LogSource::Executor(app, exec));
    }
    match target(text)? {
        Target::Driver(d) => Ok(LogSource::Driver(d)),
        Target::App(a) => bail!(
            "{a} is an application; name one of its executors, {a}/<executor-id> \
             (`flint status {a} --json` lists them)"
        ),
    }
}

/// Where the driver or executor runs (or ran), and the source to ask for there (a
/// relaunched driver's newest attempt).
async fn locate(masters: &Masters, source: LogSource) -> anyhow::Result<(RpcAddress, LogSource)> {
    match source {
        LogSource::Driver(id) => {
            let a = masters.attempt(&id).await?;
            let current = a.driver_id.clone().unwrap_or(id);
            let Some(hp) = a.status.worker_host_port.clone() else {
                bail!(
                    "driver {current} has no worker ({}); it has not run yet, or its worker is \
                     gone",
                    a.status
                        .state
                        .map_or("UNKNOWN".to_string(), |s| s.to_string())
                );
            };
            let addr = RpcAddress::parse_list(&format!("flint://{hp}"))
                .ok()
                .and_then(|v| v.into_iter().next())
                .with_context(|| format!("the master gave a bad worker address {hp:?}"))?;
            Ok((addr, LogSource::Driver(current)))
        }
        LogSource::Executor(app, exec) => {
            let a = masters.app(&app).await?;
            let Some(e) = a.executors.iter().find(|e| e.id == exec) else {
                bail!(
                    "application {app} has no executor {exec} (it has {}); `flint status {app} \
                     --json` lists them",
                    a.executors
                        .iter()
                        .map(|e| e.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let state = masters.master_state().await?;
            let Some(w) = state.workers.iter().find(|w| w.id == e.worker_id) else {
                bail!(
                    "executor {app}/{exec} ran on worker {}, which the master no longer knows",
                    e.worker_id
                );
            };
            Ok((
                RpcAddress::new(w.host.clone(), w.port),
                LogSource::Executor(app, exec),
            ))
        }
    }
}

/// Runs `flint logs`.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let source = source(&args.target)?;
    let file = if args.stderr {
        LogFile::Stderr
    } else {
        LogFile::Stdout
    };
    let masters = Masters::connect(&args.master, &args.common)?;
    let (worker, source) = locate(&masters, source).await?;
    let r = masters
        .env()
        .endpoint_ref::<WorkerLogMsg>(&worker, WORKER_LOGS_ENDPOINT);
    let mut start = match args.tail {
        Some(n) => LogStart::TailLines(n),
        None => LogStart::Offset(0),
    };
    let mut idle = Duration::from_millis(50);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let ask = r.ask(ReadLog {
            source: source.clone(),
            file,
            start,
            max_bytes: CHUNK,
        });
        let chunk = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            c = ask => c.with_context(|| format!("cannot read the log from the worker at {worker}"))?,
        };
        if let Some(e) = chunk.error {
            bail!("the worker at {worker}: {e}");
        }
        if let LogStart::Offset(asked) = start {
            if chunk.size < asked {
                // It rolled over: the new file from its start.
                start = LogStart::Offset(0);
                continue;
            }
        }
        {
            let mut out = std::io::stdout().lock();
            out.write_all(&chunk.data).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
        }
        let next = chunk.offset + chunk.data.len() as u64;
        start = LogStart::Offset(next);
        if !chunk.data.is_empty() {
            idle = Duration::from_millis(50);
        }
        if next < chunk.size {
            continue;
        }
        // `running` was read before the file: false means all output is in it.
        if !args.follow || !chunk.running {
            return Ok(());
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tokio::time::sleep(idle) => {}
        }
        idle = (idle * 2).min(Duration::from_millis(500));
    }
}
