//! `flint`, the one binary: daemons, submission, status, and (for now) the RPC demo.
//!
//! `main` only parses arguments, installs logging and hands over to a subcommand; each
//! subcommand lives in its own module.

mod demo;

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
    /// Two processes exchanging messages over flint's RPC layer, narrated.
    Demo,
    /// The peer half of `flint demo` (started by it).
    #[command(hide = true)]
    DemoPeer {
        /// Where the demo's server listens, `flint://host:port`.
        server: String,
    },
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
