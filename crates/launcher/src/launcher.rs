//! [`Launcher`], the builder (Spark's `SparkLauncher`): what to run and how, turned
//! into a `flint submit …` child process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flint_conf::{Conf, Source, TimeUnit};

use crate::handle::{AppHandle, KillGuard, Listener};
use crate::protocol::{KEY_ID_ENV, PORT_ENV, SECRET_ENV};
use crate::server::{HandleOpts, LauncherServer};
use crate::LauncherError;

/// The environment variable naming the `flint` command (when
/// [`Launcher::flint_binary`] is not given); else `flint` is looked up on `PATH`.
pub const CLI_ENV: &str = "FLINT_CLI";

/// The setting that bounds how long the child may take to say hello.
const CHILD_CONNECTION_TIMEOUT: &str = "launcher.child_connection_timeout";

/// Where the driver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeployMode {
    /// Here, as a child of `flint submit` (the driver reports to the launcher).
    #[default]
    Client,
    /// On a worker, placed by the master (`flint submit` reports what the master says).
    Cluster,
}

impl DeployMode {
    fn as_arg(self) -> &'static str {
        match self {
            DeployMode::Client => "client",
            DeployMode::Cluster => "cluster",
        }
    }
}

/// Where one of the child's output streams goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// This process's own stream.
    Inherit,
    /// Nowhere.
    Null,
    /// Appended to this file.
    File(PathBuf),
    /// To this process's log (`tracing`, target `flint_launcher::app`), line by line,
    /// tagged with the given name.
    Log(String),
}

/// Builds and starts an application through `flint submit`.
#[derive(Debug, Clone, Default)]
pub struct Launcher {
    flint: Option<PathBuf>,
    master: Option<String>,
    deploy_mode: DeployMode,
    app_binary: Option<PathBuf>,
    app_args: Vec<String>,
    app_name: Option<String>,
    conf: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    directory: Option<PathBuf>,
    stdout: Option<Redirect>,
    stderr: Option<Redirect>,
    kill_on_drop: bool,
    submit_args: Vec<String>,
}

impl Launcher {
    /// A builder with nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `flint` command to run (default: [`CLI_ENV`], then `flint` on `PATH`).
    pub fn flint_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.flint = Some(path.into());
        self
    }

    /// The master URL (`flint://host:port`, or `local[N]` in client mode).
    pub fn master(mut self, url: impl Into<String>) -> Self {
        self.master = Some(url.into());
        self
    }

    /// Client (default) or cluster mode.
    pub fn deploy_mode(mut self, mode: DeployMode) -> Self {
        self.deploy_mode = mode;
        self
    }

    /// The application's executable.
    pub fn app_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.app_binary = Some(path.into());
        self
    }

    /// Arguments for the application (appended).
    pub fn app_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.app_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The application's name (`flint submit --name`).
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.app_name = Some(name.into());
        self
    }

    /// A setting (`flint submit --conf key=value`); `launcher.child_connection_timeout`
    /// is also read by the launcher itself.
    pub fn conf(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.conf.insert(key.into(), value.into());
        self
    }

    /// An environment variable for the child (added to this process's environment).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// The child's working directory.
    pub fn directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.directory = Some(dir.into());
        self
    }

    /// Where the child's standard output goes (default: inherited for
    /// [`Launcher::launch`], this process's log for [`Launcher::start_application`]).
    pub fn redirect_output(mut self, to: Redirect) -> Self {
        self.stdout = Some(to);
        self
    }

    /// Where the child's standard error goes (defaults as for output).
    pub fn redirect_error(mut self, to: Redirect) -> Self {
        self.stderr = Some(to);
        self
    }

    /// Both streams to this process's log under `name`.
    pub fn redirect_to_log(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.stdout = Some(Redirect::Log(name.clone()));
        self.stderr = Some(Redirect::Log(name));
        self
    }

    /// Kill the child when the last clone of its handle is dropped, and when this
    /// process dies (`PR_SET_PDEATHSIG`).
    pub fn kill_on_drop(mut self, yes: bool) -> Self {
        self.kill_on_drop = yes;
        self
    }

    /// An extra `flint submit` option, before the binary (e.g. `--supervise`).
    pub fn submit_arg(mut self, arg: impl Into<String>) -> Self {
        self.submit_args.push(arg.into());
        self
    }

    /// The `flint` command this launcher runs.
    pub fn find_flint(&self) -> Result<PathBuf, LauncherError> {
        if let Some(p) = &self.flint {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os(CLI_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let c = dir.join("flint");
            if is_executable(&c) {
                return Ok(c);
            }
        }
        Err(LauncherError::NoFlintBinary(format!(
            "{CLI_ENV} is not set and no executable flint is on PATH"
        )))
    }

    /// The command line after the `flint` command: `submit --master … <binary> args…`.
    pub fn submit_command(&self) -> Result<Vec<String>, LauncherError> {
        let Some(master) = &self.master else {
            return Err(LauncherError::Invalid(
                "no master set; call .master(\"flint://host:port\")".into(),
            ));
        };
        let Some(binary) = &self.app_binary else {
            return Err(LauncherError::Invalid(
                "no application binary set; call .app_binary(path)".into(),
            ));
        };
        let Some(binary) = binary.to_str() else {
            return Err(LauncherError::Invalid(format!(
                "application binary {binary:?} is not a UTF-8 path"
            )));
        };
        let mut v = vec![
            "submit".to_string(),
            "--master".into(),
            master.clone(),
            "--deploy-mode".into(),
            self.deploy_mode.as_arg().into(),
        ];
        if let Some(n) = &self.app_name {
            v.extend(["--name".into(), n.clone()]);
        }
        for (k, val) in &self.conf {
            v.extend(["--conf".into(), format!("{k}={val}")]);
        }
        v.extend(self.submit_args.iter().cloned());
        v.push(binary.to_string());
        v.extend(self.app_args.iter().cloned());
        Ok(v)
    }

    /// `launcher.child_connection_timeout` from this builder's settings, else this
    /// process's `FLINT_LAUNCHER_CHILD_CONNECTION_TIMEOUT`, else 10 s.
    pub fn child_connection_timeout(&self) -> Result<Duration, LauncherError> {
        let mut conf = Conf::new();
        let from_env = std::env::var("FLINT_LAUNCHER_CHILD_CONNECTION_TIMEOUT").ok();
        if let Some(v) = self
            .conf
            .get(CHILD_CONNECTION_TIMEOUT)
            .cloned()
            .or(from_env)
        {
            conf.insert(CHILD_CONNECTION_TIMEOUT, v, Source::Code);
        }
        Ok(conf.duration(
            "launcher.child_connection_timeout",
            Duration::from_secs(10),
            TimeUnit::Millis,
        )?)
    }

    fn command(&self, flint: &Path) -> Result<tokio::process::Command, LauncherError> {
        let mut cmd = tokio::process::Command::new(flint);
        cmd.args(self.submit_command()?);
        cmd.envs(&self.env);
        // Never inherited: a launcher's own handle is not its child's.
        cmd.env_remove(PORT_ENV)
            .env_remove(KEY_ID_ENV)
            .env_remove(SECRET_ENV);
        if let Some(d) = &self.directory {
            cmd.current_dir(d);
        }
        cmd.stdin(std::process::Stdio::null());
        Ok(cmd)
    }

    /// Starts `flint submit …` without a handle; the caller owns the process.
    pub fn launch(&self) -> Result<std::process::Child, LauncherError> {
        let flint = self.find_flint()?;
        let cmd = self.command(&flint)?;
        let mut cmd = cmd.into_std();
        let out = self.stdout.clone().unwrap_or(Redirect::Inherit);
        let err = self.stderr.clone().unwrap_or(Redirect::Inherit);
        if matches!(out, Redirect::Log(_)) || matches!(err, Redirect::Log(_)) {
            return Err(LauncherError::Invalid(
                "Redirect::Log needs start_application (launch() hands the streams to the caller)"
                    .into(),
            ));
        }
        cmd.stdout(stdio(&out)?).stderr(stdio(&err)?);
        cmd.spawn().map_err(|source| LauncherError::Spawn {
            program: flint,
            source,
        })
    }

    /// Starts the application with a handle that follows it; `listeners` hear every
    /// change from the first.
    pub fn start_application(
        &self,
        listeners: Vec<Arc<dyn Listener>>,
    ) -> Result<AppHandle, LauncherError> {
        let flint = self.find_flint()?;
        let timeout = self.child_connection_timeout()?;
        let mut cmd = self.command(&flint)?;
        let server = LauncherServer::get()?;
        let out = self
            .stdout
            .clone()
            .unwrap_or_else(|| Redirect::Log(self.log_name()));
        let err = self
            .stderr
            .clone()
            .unwrap_or_else(|| Redirect::Log(self.log_name()));
        cmd.stdout(stdio(&out)?).stderr(stdio(&err)?);
        let (inner, key_id, secret) = server.register(HandleOpts {
            cluster: self.deploy_mode == DeployMode::Cluster,
            master: self.master.clone().unwrap_or_default(),
            flint: flint.clone(),
            env: self.env.clone(),
        });
        for l in listeners {
            inner.add_listener(l);
        }
        cmd.env(PORT_ENV, server.port().to_string())
            .env(KEY_ID_ENV, &key_id)
            .env(SECRET_ENV, &secret);
        // Its own process group, so kill() reaches the driver a client-mode submit runs.
        cmd.process_group(0);
        if self.kill_on_drop {
            // SAFETY: prctl is async-signal-safe; the closure touches no memory of ours.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // Spawned on the server's long-lived thread: the death signal follows the
        // thread that forked, not the process.
        let (tx, rx) = std::sync::mpsc::channel();
        server.runtime().spawn(async move {
            let _ = tx.send(cmd.spawn());
        });
        let spawned = rx
            .recv()
            .map_err(|_| LauncherError::Server("the launcher server's runtime stopped".into()))
            .and_then(|r| {
                r.map_err(|source| LauncherError::Spawn {
                    program: flint.clone(),
                    source,
                })
            });
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                inner.dispose();
                return Err(e);
            }
        };
        let log_out = child.stdout.take();
        let log_err = child.stderr.take();
        let rt = server.runtime();
        if let (Some(s), Redirect::Log(name)) = (log_out, &out) {
            rt.spawn(log_lines(s, name.clone(), "stdout"));
        }
        if let (Some(s), Redirect::Log(name)) = (log_err, &err) {
            rt.spawn(log_lines(s, name.clone(), "stderr"));
        }
        tracing::info!(key = %key_id, "started {} {}", flint.display(), self.submit_command()?.join(" "));
        server.supervise(inner.clone(), child, timeout);
        let guard = self
            .kill_on_drop
            .then(|| Arc::new(KillGuard(inner.clone())));
        Ok(AppHandle {
            inner,
            _guard: guard,
        })
    }

    fn log_name(&self) -> String {
        self.app_name.clone().unwrap_or_else(|| {
            self.app_binary
                .as_ref()
                .and_then(|p| p.file_name())
                .map_or("app".into(), |n| n.to_string_lossy().into_owned())
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn stdio(r: &Redirect) -> Result<std::process::Stdio, LauncherError> {
    Ok(match r {
        Redirect::Inherit => std::process::Stdio::inherit(),
        Redirect::Null => std::process::Stdio::null(),
        Redirect::Log(_) => std::process::Stdio::piped(),
        Redirect::File(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LauncherError::Redirect {
                path: path.clone(),
                source,
            })?
            .into(),
    })
}

async fn log_lines(s: impl tokio::io::AsyncRead + Unpin, name: String, stream: &'static str) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(s).lines();
    // Ends at EOF, which comes when the child (and all it started) closed the stream.
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "flint_launcher::app", app = %name, stream, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_carries_every_setting_and_no_secret() {
        let l = Launcher::new()
            .master("flint://127.0.0.1:7077")
            .deploy_mode(DeployMode::Cluster)
            .app_name("pi")
            .conf("executor.memory", "256m")
            .app_binary("/bin/pi")
            .app_args(["4", "x"]);
        assert_eq!(
            l.submit_command().unwrap().join(" "),
            "submit --master flint://127.0.0.1:7077 --deploy-mode cluster --name pi --conf executor.memory=256m /bin/pi 4 x"
        );
        let e = Launcher::new()
            .app_binary("/bin/pi")
            .submit_command()
            .unwrap_err();
        assert!(e.to_string().contains("no master set"), "{e}");
        let e = Launcher::new()
            .master("local")
            .submit_command()
            .unwrap_err();
        assert!(e.to_string().contains("no application binary"), "{e}");
    }

    #[test]
    fn the_child_connection_timeout_is_a_checked_setting() {
        let l = Launcher::new().conf("launcher.child_connection_timeout", "1500ms");
        assert_eq!(
            l.child_connection_timeout().unwrap(),
            Duration::from_millis(1500)
        );
        let l = Launcher::new().conf("launcher.child_connection_timeout", "soon");
        let e = l.child_connection_timeout().unwrap_err().to_string();
        assert!(e.contains("launcher.child_connection_timeout"), "{e}");
    }

    #[test]
    fn a_missing_flint_command_is_named_with_the_fix() {
        let l = Launcher::new().flint_binary("/nonexistent/flint");
        assert_eq!(l.find_flint().unwrap(), PathBuf::from("/nonexistent/flint"));
        let e = Launcher::new()
            .master("local")
            .app_binary("/bin/true")
            .flint_binary("/nonexistent/flint")
            .start_application(vec![])
            .unwrap_err();
        assert!(matches!(e, LauncherError::Spawn { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/flint"), "{e}");
    }
}
