//! `flint`, the one binary: daemons, submission, status, and (for now) the RPC demo.
//!
//! `main` only parses arguments, installs logging and hands over to a subcommand; each
//! subcommand lives in its own module.

mod auth;
mod cluster_cmd;
mod conf_cmd;
mod demo;
mod example;
mod local_cmd;
mod master_cmd;
mod settings;
mod signals;
mod status_cmd;
mod worker_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flint",
    version,
    about = "flint: a cluster computing runtime modelled on Spark standalone"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a master.
    Master(master_cmd::MasterArgs),
    /// Run a worker.
    Worker(worker_cmd::WorkerArgs),
    /// A master and N workers in this process, until Ctrl-C.
    Local(local_cmd::LocalArgs),
    /// Run an example job (pi) on an embedded cluster and print its result.
    RunExample(example::ExampleArgs),
    /// An executor of `flint run-example` (started by workers).
    #[command(hide = true)]
    ExampleExecutor(example::ExecutorArgs),
    /// Show a master's workers and applications.
    Status(status_cmd::StatusArgs),
    /// Start a master here and the workers in conf/workers, as background daemons.
    StartCluster(cluster_cmd::StartArgs),
    /// Stop the daemons start-cluster started (workers first, then the master).
    StopCluster(cluster_cmd::StopArgs),
    /// List every setting with its type, default and doc (--json, --markdown, --template).
    Conf(conf_cmd::ConfArgs),
    /// Two processes exchanging messages over flint's RPC layer, narrated.
    Demo,
    /// The peer half of `flint demo` (started by it).
    #[command(hide = true)]
    DemoPeer {
        /// Where the demo's server listens, `flint://host:port`.
        server: String,
    },
}

/// Every registered setting (each may be set by its `FLINT_*` variable).
pub fn known_keys() -> Vec<&'static str> {
    flint_conf::registry::SETTINGS
        .iter()
        .map(|s| s.key)
        .collect()
}

impl Command {
    /// Daemons log at INFO by default; tools and demos only warn.
    fn default_log(&self) -> &'static str {
        match self {
            Command::Master(_) | Command::Worker(_) | Command::Local(_) => "info",
            _ => "warn",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLINT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.command.default_log())),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flint: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Master(args) => master_cmd::run(args).await,
            Command::Status(args) => status_cmd::run(args).await,
            Command::StartCluster(args) => cluster_cmd::start(args).await,
            Command::StopCluster(args) => cluster_cmd::stop(args).await,
            Command::Worker(args) => worker_cmd::run(args).await,
            Command::Local(args) => local_cmd::run(args).await,
            Command::RunExample(args) => example::run(args).await,
            Command::ExampleExecutor(args) => example::executor(args).await,
            Command::Conf(args) => conf_cmd::run(&args),
            Command::Demo => demo::run().await,
            Command::DemoPeer { server } => demo::peer(&server).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flint: {e:#}");
            ExitCode::FAILURE
        }
    }
}
