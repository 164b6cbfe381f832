//! `flint-cluster-bench`: cluster-level benchmarks of flint's standalone mode
//! (not shipped). `bench/cluster.sh` runs them beside Apache Spark and
//! `BENCHMARKS-cluster.md` reports the results.
//!
//! - `placement` ([`placement`]): plays a driver against a running cluster
//!   and times the placement of an application's executors.
//! - `scale` ([`scale`]): starts a master and puts thousands of simulated
//!   workers on it, each over its own connection, heartbeating; measures the
//!   master's CPU and memory and checks no worker is declared dead.
//!
//! Each prints JSON lines on stdout (one per measurement) and a short human
//! summary on stderr. Logs go to stderr, filtered by `RUST_LOG` (default
//! `warn`).

// The steady-state JSON line has many fields; serde_json's json! recurses per field.
#![recursion_limit = "256"]

mod http;
mod placement;
mod procfs;
mod scale;

use clap::{Parser, Subcommand};

/// Command line of `flint-cluster-bench`.
#[derive(Parser, Debug)]
#[command(name = "flint-cluster-bench", about = "flint cluster benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Time placing one application's executors on a running cluster.
    Placement(placement::PlacementArgs),
    /// One master under many simulated heartbeating workers.
    Scale(scale::ScaleArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Placement(args) => placement::run(args).await,
            Command::Scale(args) => scale::run(args).await,
        }
    })
}
