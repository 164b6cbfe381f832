//! `flint submit`: runs an application binary against a cluster.
//!
//! **Client mode** (the default): the binary runs here, as a child of `flint submit`,
//! and is the driver. What submit was told reaches it through the one mechanism the
//! flint library already reads, the `FLINT_*` environment form of each setting
//! (`--executor-memory 2g` → `FLINT_EXECUTOR_MEMORY=2g`, `--conf key=value` →
//! `FLINT_KEY=value`, `--master` → `FLINT_MASTER`, `--name` → `FLINT_DRIVER_APP_NAME`),
//! so `Context::builder().get_or_create()` in the program picks it up; the program's
//! own `.conf(..)` still wins, as Spark's code-set properties do. Secrets travel in the
//! environment too, never on a command line. The exit status is the child's (128 + N
//! when signal N ended it).
//!
//! Arguments are checked before anything runs: a bad one is a message naming it and
//! what to do, and exit status 2 (clap's own errors, such as an unknown option, exit 2
//! as well).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use flint_conf::{registry, SizeUnit};
use flint_rpc::RpcAddress;

/// Exit status of `flint submit` when its arguments are wrong (clap's as well).
pub const EXIT_USAGE: u8 = 2;

/// Where the driver runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeployMode {
    /// Here, as a child of `flint submit`.
    Client,
    /// On a worker the master picks: the binary is uploaded to the master.
    Cluster,
}

/// Arguments of `flint submit`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Options go before the binary; everything after it is the program's own arguments.

Client mode runs the binary here as the driver; the settings reach it in its
environment (FLINT_MASTER, and FLINT_<KEY> for each setting: `flint conf` lists them),
which flint's Context::builder().get_or_create() reads. Exit status: the program's own
(128 + N when signal N ended it).

Cluster mode uploads the binary to the master (by SHA-256; a binary the master holds is
not sent again), a worker with the driver's cores and memory fetches it from there and
runs it with the same settings. Without --no-wait, submit prints each state of the
driver and exits with:
  0 FINISHED   1 FAILED   3 KILLED   4 ERROR   5 lost (UNKNOWN, no answer)
With --supervise a driver that exits non-zero is relaunched by its worker (RELAUNCHING,
then RUNNING again) and one whose worker is lost is relaunched elsewhere under a new id;
submit follows it to its final state either way.
With --no-wait it prints the driver id and exits 0 (`flint status <id>`, `flint kill <id>`).

Exit status 2: submit's arguments are wrong.")]
pub struct SubmitArgs {
    /// The master(s), flint://host:port[,host2:port2].
    #[arg(long, env = "FLINT_MASTER", value_name = "URL")]
    pub master: String,
    /// Where the driver runs: here (client) or on a worker (cluster).
    #[arg(long, value_enum, default_value = "client", value_name = "MODE")]
    pub deploy_mode: DeployMode,
    /// The application's name (driver.app_name) when the program does not set one.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Cores of each executor (executor.cores).
    #[arg(long, value_name = "N")]
    pub executor_cores: Option<u32>,
    /// Memory of each executor (executor.memory), e.g. 512m or 2g.
    #[arg(long, value_name = "SIZE")]
    pub executor_memory: Option<String>,
    /// Most cores the application takes over all its executors (cores.max).
    #[arg(long, value_name = "N")]
    pub total_executor_cores: Option<u32>,
    /// Cores of the driver (cluster mode: what the master reserves on its worker).
    #[arg(long, value_name = "N")]
    pub driver_cores: Option<u32>,
    /// Memory of the driver, e.g. 1g (cluster mode: what the master reserves on its
    /// worker; client mode: FLINT_DRIVER_MEMORY_MB, as a worker sets it).
    #[arg(long, value_name = "SIZE")]
    pub driver_memory: Option<String>,
    /// A setting for the application, `key=value` (repeatable); dedicated flags win.
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    pub conf: Vec<String>,
    /// Cluster mode: print the driver id and return instead of following the driver.
    #[arg(long)]
    pub no_wait: bool,
    /// Cluster mode: relaunch the driver when it exits non-zero (on its worker, with
    /// back-off from worker.driver_relaunch_initial_backoff) or its worker is lost
    /// (elsewhere, under a new driver id that status and submit follow).
    #[arg(long)]
    pub supervise: bool,
    /// The application binary (a program built on the flint library), then the
    /// program's own arguments: everything after the binary is the program's.
    #[arg(
        value_name = "BINARY [ARGS]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    pub command: Vec<OsString>,
}

impl SubmitArgs {
    /// The binary (the first of [`SubmitArgs::command`]).
    pub fn binary(&self) -> PathBuf {
        self.command.first().map(PathBuf::from).unwrap_or_default()
    }

    /// The program's arguments (the rest of [`SubmitArgs::command`]).
    pub fn program_args(&self) -> &[OsString] {
        self.command.get(1..).unwrap_or_default()
    }
}

/// A mistake in submit's arguments: printed as is, exit status 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A [`Usage`] error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// What a checked submission runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The binary, as given (checked to be an executable file).
    pub binary: PathBuf,
    /// The masters' URL text, as given.
    pub master: String,
    /// Settings for the driver, in order (later ones win), dedicated flags last.
    pub settings: Vec<(String, String)>,
    /// The driver's memory in MiB, if given.
    pub driver_memory_mb: Option<u64>,
    /// The driver's cores, if given.
    pub driver_cores: Option<u32>,
    /// `--supervise` (cluster mode only).
    pub supervise: bool,
}

impl Plan {
    /// The environment the driver gets on top of the inherited one: `FLINT_MASTER`,
    /// each setting's `FLINT_*` form, and `FLINT_DRIVER_MEMORY_MB` when given.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("FLINT_MASTER".to_string(), self.master.clone())];
        for (k, v) in &self.settings {
            env.push((registry::env_name(k), v.clone()));
        }
        if let Some(mb) = self.driver_memory_mb {
            env.push(("FLINT_DRIVER_MEMORY_MB".into(), mb.to_string()));
        }
        env
    }
}

/// A size flag checked: `--executor-memory 2x` names the flag and the form.
fn size_mb(flag: &str, text: &str) -> anyhow::Result<u64> {
    let bytes = flint_conf::parse_size(text, SizeUnit::Mebibytes).map_err(|e| {
        usage(format!(
            "{flag} {text} is not a size ({e}); give a number with a unit, e.g. 512m or 2g"
        ))
    })?;
    Ok(bytes >> 20)
}

fn positive(flag: &str, n: Option<u32>) -> anyhow::Result<Option<u32>> {
    match n {
        Some(0) => Err(usage(format!("{flag} 0: give at least 1"))),
        n => Ok(n),
    }
}

/// Checks the arguments and turns them into a [`Plan`]; every mistake is a [`Usage`]
/// error naming the argument and what to do.
pub fn plan(args: &SubmitArgs) -> anyhow::Result<Plan> {
    let master = args.master.trim();
    RpcAddress::parse_list(master).map_err(|e| {
        usage(format!(
            "--master {master:?} is not a cluster master ({e}); give flint://host:port[,host2:port2] \
             (to run on this machine only, run the binary itself with FLINT_MASTER=local[*])"
        ))
    })?;
    if args.supervise && args.deploy_mode == DeployMode::Client {
        return Err(usage(
            "--supervise needs --deploy-mode cluster: in client mode the driver runs here,              as a child of flint submit, and nothing would relaunch it",
        ));
    }
    let binary = args.binary();
    check_binary(&binary)?;
    let mut settings = Vec::new();
    for pair in &args.conf {
        let (k, v) = pair
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| usage(format!("--conf {pair:?} is not key=value")))?;
        if registry::setting(k).is_none()
            && (registry::is_user_key(k) || registry::prefix_setting(k).is_some())
        {
            return Err(usage(format!(
                "--conf {k}: flint submit hands settings to the driver in its environment, where \
                 {k} has no form of its own; set it in the program (Context::builder().conf) or \
                 pass it as one of the program's arguments"
            )));
        }
        settings.push((k.to_string(), v.to_string()));
    }
    let executor_cores = positive("--executor-cores", args.executor_cores)?;
    let total = positive("--total-executor-cores", args.total_executor_cores)?;
    let driver_cores = positive("--driver-cores", args.driver_cores)?;
    if let Some(n) = &args.name {
        if n.trim().is_empty() {
            return Err(usage("--name is empty; give the application a name"));
        }
        settings.push(("driver.app_name".into(), n.clone()));
    }
    if let Some(n) = executor_cores {
        settings.push(("executor.cores".into(), n.to_string()));
    }
    if let Some(m) = &args.executor_memory {
        size_mb("--executor-memory", m)?;
        settings.push(("executor.memory".into(), m.trim().to_string()));
    }
    if let Some(n) = total {
        settings.push(("cores.max".into(), n.to_string()));
    }
    let driver_memory_mb = args
        .driver_memory
        .as_deref()
        .map(|m| size_mb("--driver-memory", m))
        .transpose()?;
    // Every key and value as the driver will check them: an unknown key names the
    // nearest one, a bad value the expected form.
    let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let checked = flint_conf::load(
        None,
        std::iter::empty::<(String, String)>(),
        pairs.iter().map(String::as_str),
    );
    if let Err(e) = checked {
        return Err(usage(format!("{e}")));
    }
    Ok(Plan {
        binary,
        master: master.to_string(),
        settings,
        driver_memory_mb,
        driver_cores,
        supervise: args.supervise,
    })
}

/// The binary must be an executable regular file.
fn check_binary(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        usage(format!(
            "application binary {} cannot be read ({e}); give the path of a program built \
             on the flint library",
            path.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(usage(format!(
            "application binary {} is not a file; give the path of a program built on the \
             flint library",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(usage(format!(
            "application binary {} is not executable; chmod +x it",
            path.display()
        )));
    }
    Ok(())
}

/// Runs `flint submit`; the exit code is the driver's in client mode, 2 for bad
/// arguments, 1 when submit itself fails.
pub async fn main(args: SubmitArgs) -> ExitCode {
    match run(args).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("flint submit: {}", crate::report(&e));
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(args: SubmitArgs) -> anyhow::Result<u8> {
    let plan = plan(&args)?;
    match args.deploy_mode {
        DeployMode::Client => run_client(&plan, args.program_args()).await,
        DeployMode::Cluster => {
            crate::submit_cluster::run(&plan, args.program_args(), args.no_wait).await
        }
    }
}

/// Client mode: the binary as a child with the plan's environment; SIGTERM and SIGHUP
/// to submit are passed on to it (a terminal's Ctrl-C reaches both already); its exit
/// status is submit's.
async fn run_client(plan: &Plan, args: &[OsString]) -> anyhow::Result<u8> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut cmd = tokio::process::Command::new(&plan.binary);
    cmd.args(args).envs(plan.env()).kill_on_drop(true);
    // The driver dies with submit, even when submit is SIGKILLed (by a launcher
    // process that died with `kill_on_drop`, say). The death signal follows the
    // thread that forked: this runs on the main thread (`block_on`), which lives as
    // long as submit.
    // SAFETY: prctl is async-signal-safe; the closure touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", plan.binary.display()))?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.context("cannot wait for the driver")?,
            _ = term.recv() => forward(pid, libc::SIGTERM),
            _ = hup.recv() => forward(pid, libc::SIGHUP),
            // The terminal sent it to the driver too (same process group).
            _ = int.recv() => {}
        }
    };
    Ok(exit_code(status))
}

fn forward(pid: Option<i32>, sig: libc::c_int) {
    if let Some(pid) = pid {
        if let Err(e) = crate::cluster::process::signal(pid, sig) {
            tracing::warn!("cannot pass signal {sig} on to the driver (pid {pid}): {e}");
        }
    }
}

/// A child's exit status as submit's: its code, 128 + N for signal N.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(s)) => u8::try_from(128 + s).unwrap_or(1),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: SubmitArgs,
    }

    fn args(v: &[&str]) -> SubmitArgs {
        T::try_parse_from(std::iter::once("submit").chain(v.iter().copied()))
            .unwrap()
            .a
    }

    fn sh() -> &'static str {
        "/bin/sh"
    }

    #[test]
    fn flags_become_settings_and_program_args_stay_the_programs() {
        let a = args(&[
            "--master",
            "flint://h:1,h2:2",
            "--executor-memory",
            "2g",
            "--conf",
            "executor.memory=1g",
            "--conf",
            "task.max_failures=2",
            "--name",
            "n",
            "--total-executor-cores",
            "3",
            "--driver-memory",
            "1g",
            sh(),
            "-c",
            "--name",
        ]);
        assert_eq!(a.program_args(), ["-c", "--name"]);
        let p = plan(&a).unwrap();
        let env = p.env();
        assert!(env.contains(&("FLINT_MASTER".into(), "flint://h:1,h2:2".into())));
        assert!(env.contains(&("FLINT_TASK_MAX_FAILURES".into(), "2".into())));
        assert!(env.contains(&("FLINT_DRIVER_APP_NAME".into(), "n".into())));
        assert!(env.contains(&("FLINT_CORES_MAX".into(), "3".into())));
        assert!(env.contains(&("FLINT_DRIVER_MEMORY_MB".into(), "1024".into())));
        // The flag comes after --conf, so it wins.
        let mem: Vec<_> = env
            .iter()
            .filter(|(k, _)| k == "FLINT_EXECUTOR_MEMORY")
            .collect();
        assert_eq!(mem.last().unwrap().1, "2g");
    }

    #[test]
    fn the_flint_library_takes_its_name_from_driver_app_name() {
        let ctx = flint::Context::builder()
            .master("local[1]")
            .conf("driver.app_name", "named-by-submit")
            .create()
            .unwrap();
        assert_eq!(ctx.app_name(), "named-by-submit");
        ctx.stop().unwrap();
        let ctx = flint::Context::builder()
            .master("local[1]")
            .app_name("own")
            .conf("driver.app_name", "named-by-submit")
            .create()
            .unwrap();
        assert_eq!(ctx.app_name(), "own", "the program's own name wins");
        ctx.stop().unwrap();
    }

    fn usage_of(v: &[&str]) -> String {
        let e = plan(&args(v)).unwrap_err();
        assert!(e.downcast_ref::<Usage>().is_some(), "{e}");
        e.to_string()
    }

    #[test]
    fn bad_arguments_name_what_is_wrong() {
        let e = usage_of(&["--master", "spark://h:1", sh()]);
        assert!(e.contains("--master \"spark://h:1\""), "{e}");
        let e = usage_of(&["--master", "flint://h:1", "--executor-memory", "2x", sh()]);
        assert!(e.contains("--executor-memory 2x is not a size"), "{e}");
        let e = usage_of(&[
            "--master",
            "flint://h:1",
            "--conf",
            "executor.memroy=1g",
            sh(),
        ]);
        assert!(e.contains("executor.memory"), "{e}");
        let e = usage_of(&["--master", "flint://h:1", "--conf", "app.mine=1", sh()]);
        assert!(e.contains("--conf app.mine"), "{e}");
        let e = usage_of(&["--master", "flint://h:1", "--conf", "nothing", sh()]);
        assert!(e.contains("not key=value"), "{e}");
        let e = usage_of(&["--master", "flint://h:1", "/nonexistent/app"]);
        assert!(e.contains("/nonexistent/app cannot be read"), "{e}");
        let plain = tempfile::NamedTempFile::new().unwrap();
        let path = plain.path().to_str().unwrap();
        let e = usage_of(&["--master", "flint://h:1", path]);
        assert!(e.contains("not executable; chmod +x it"), "{e}");
        let e = usage_of(&["--master", "flint://h:1", "--executor-cores", "0", sh()]);
        assert!(e.contains("--executor-cores 0"), "{e}");
    }
}
