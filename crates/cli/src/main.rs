//! `flint`, the one binary: daemons, submission, status, and (for now) the RPC demo.
//!
//! `main` only parses arguments, installs logging and hands over to a subcommand; each
//! subcommand lives in its own module.

/// `println!` for daemons: a closed stdout (the terminal or pipe that started them
/// went away) loses the line instead of panicking the daemon.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod auth;
mod bind_args;
mod cluster;
mod conf_cmd;
mod demo;
mod example;
mod local_cmd;
mod logs_cmd;
mod master_cmd;
mod rest_token;
mod settings;
mod status_cmd;
mod submit;
mod submit_cluster;
mod submit_driver;
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
    /// Run an application binary on a cluster (client mode: here, as the driver).
    Submit(submit::SubmitArgs),
    /// Kill a cluster-mode driver or an application and wait for its final state.
    Kill(submit_driver::KillArgs),
    /// Print a bearer token for the master's REST submission server (rest.enabled).
    RestToken(rest_token::RestTokenArgs),
    /// Show a master's workers and applications (or, given a driver or app id, its state).
    Status(status_cmd::StatusArgs),
    /// Print (or follow) a driver's or an executor's stdout/stderr, from its worker.
    Logs(logs_cmd::LogsArgs),
    /// Start a master here and the workers in conf/workers, as background daemons.
    StartCluster(cluster::StartArgs),
    /// Stop the daemons start-cluster started (workers first, then the master).
    StopCluster(cluster::StopArgs),
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
    /// Daemons log at INFO by default; tools and demos only warn, and leave a peer
    /// they cannot reach to the error they print (one line, not a WARN before it).
    fn default_log(&self) -> &'static str {
        match self {
            Command::Master(_) | Command::Worker(_) | Command::Local(_) => "info",
            _ => "warn,flint_rpc::connection=error",
        }
    }
}

/// `error: cause: cause …`, each cause once: a cause whose text the message so far
/// already holds (an error that prints its source, wrapped by context) is skipped.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    // A `flint` process a worker started as an executor of a driver written on the
    // flint library (`run-example`): it turns into that executor here and never
    // returns, whatever its arguments say.
    if std::env::var_os(flint::EXECUTOR_ENV).is_some() {
        if let Err(e) = flint::Context::builder().get_or_create() {
            eprintln!("flint: cannot run as an executor: {e}");
        }
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    flint_daemon::log::init(cli.command.default_log());
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
    if let Command::Submit(args) = cli.command {
        return runtime.block_on(submit::main(args));
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Master(args) => master_cmd::run(args).await,
            Command::Status(args) => status_cmd::run(args).await,
            Command::Kill(args) => submit_driver::kill(args).await,
            Command::Logs(args) => logs_cmd::run(args).await,
            Command::StartCluster(args) => cluster::start(args).await,
            Command::StopCluster(args) => cluster::stop(args).await,
            Command::Worker(args) => worker_cmd::run(args).await,
            Command::Local(args) => local_cmd::run(args).await,
            Command::RunExample(args) => example::run(args).await,
            Command::Conf(args) => conf_cmd::run(&args),
            Command::RestToken(args) => rest_token::run(&args),
            Command::Submit(_) => Ok(()),
            Command::Demo => demo::run().await,
            Command::DemoPeer { server } => demo::peer(&server).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flint: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        #[derive(Debug, thiserror::Error)]
        #[error("cannot create work dir /x: {source}; choose another with --work-dir")]
        struct WorkDir {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(WorkDir { source: io }).context("cannot start the worker");
        let r = report(&e);
        assert_eq!(
            r,
            format!("cannot start the worker: cannot create work dir /x: {text}; choose another with --work-dir")
        );
        assert_eq!(r.matches(&text).count(), 1, "{r}");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(report(&plain), "outer: inner");
    }
}
