//! Remote workers over ssh: the scripts that start and stop a worker on another
//! host (with the same binary path and conf directory, and pid and log files under
//! that host's flint home unless given), how the cluster secret gets there (over
//! the connection's stdin, never on a command line), and running them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use flint_rpc::secret::SecretSource;
use flint_rpc::Secret;

use super::layout::{Layout, Role, WorkerSlot};

/// ssh options when `$FLINT_SSH_OPTS` is not set: new hosts' keys are learnt, a
/// changed key is refused.
pub const DEFAULT_SSH_OPTS: &str = "-o StrictHostKeyChecking=accept-new";

/// `text` quoted for a POSIX shell (unchanged when it needs no quoting).
pub fn sh_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The shell function remote scripts use: is `$1` a live `flint worker`?
const REMOTE_RUNNING_FN: &str =
    "running() { ps -p \"$1\" -o args= 2>/dev/null | grep -q -e ' worker '; }";

/// What a remote worker is given about the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSecret {
    /// Nothing (TLS authenticates).
    Nothing,
    /// Authentication is off: `FLINT_AUTH_ENABLED=false`.
    Disabled,
    /// The secret, written from the script's stdin to this path (`None`: the remote
    /// user's default, `${FLINT_HOME:-$HOME/.flint}/secret`).
    CopyTo(Option<PathBuf>),
}

impl RemoteSecret {
    /// From the secret this command resolved; a configured file keeps its path.
    pub fn new(auth: &flint_rpc::secret::Resolved, cwd: &Path) -> Self {
        match (&auth.secret, &auth.source) {
            (None, SecretSource::Disabled) => RemoteSecret::Disabled,
            (None, _) => RemoteSecret::Nothing,
            (Some(_), SecretSource::File(p)) => RemoteSecret::CopyTo(Some(cwd.join(p))),
            (Some(_), _) => RemoteSecret::CopyTo(None),
        }
    }
}

/// The script run on a remote host to start worker `slot.n` there. With
/// [`RemoteSecret::CopyTo`] it first writes its stdin (the secret) to the file,
/// mode 0600, through a temporary file renamed into place.
pub fn remote_start_script(
    layout: &Layout,
    slot: &WorkerSlot,
    exe: &Path,
    args: &[String],
    secret: &RemoteSecret,
) -> String {
    let role = Role::Worker(slot.n);
    let pid_file = layout.remote_pid_dir.shell_file(&role.pid_file_name());
    let log = layout
        .remote_log_dir
        .shell_file(&Layout::log_file_name(role, slot.bind_host()));
    let command: Vec<String> = std::iter::once(exe.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| sh_quote(&a))
        .collect();
    let (copy, auth_env) = match secret {
        RemoteSecret::Nothing => (Vec::new(), String::new()),
        RemoteSecret::Disabled => (Vec::new(), "FLINT_AUTH_ENABLED=false ".to_string()),
        RemoteSecret::CopyTo(path) => {
            let dest = match path {
                Some(p) => sh_quote(&p.display().to_string()),
                None => "\"${FLINT_HOME:-$HOME/.flint}/secret\"".to_string(),
            };
            (
                vec![
                    format!("sf={dest}"),
                    "(umask 077 && mkdir -p \"$(dirname \"$sf\")\" && cat > \"$sf.tmp.$$\" && \
                     chmod 600 \"$sf.tmp.$$\" && mv -f \"$sf.tmp.$$\" \"$sf\") || { rm -f \
                     \"$sf.tmp.$$\"; echo \"cannot write the cluster secret to $sf\"; exit 1; }"
                        .to_string(),
                    "echo \"copied the cluster secret to $sf (mode 0600)\"".to_string(),
                ],
                "FLINT_AUTH_SECRET_FILE=\"$sf\" ".to_string(),
            )
        }
    };
    let mut lines = vec![
        format!(
            "cd {} || exit 1",
            sh_quote(&layout.cwd.display().to_string())
        ),
        format!(
            "mkdir -p {} {} || exit 1",
            layout.remote_pid_dir.shell(),
            layout.remote_log_dir.shell()
        ),
        REMOTE_RUNNING_FN.to_string(),
        format!("pf={pid_file}"),
        format!(
            "if [ -f \"$pf\" ] && pid=$(cat \"$pf\") && running \"$pid\"; then echo \"{role} \
             already running as pid $pid (pid file $pf); stop it first\"; exit 3; fi"
        ),
    ];
    lines.extend(copy);
    lines.extend([
        format!(
            "FLINT_CONF_DIR={} {auth_env}nohup {} >> {log} 2>&1 < /dev/null &",
            sh_quote(&layout.conf_dir.display().to_string()),
            command.join(" ")
        ),
        "echo $! > \"$pf\" || exit 1".to_string(),
        format!("echo \"started {role} (pid $!)\""),
    ]);
    lines.join("\n")
}

/// The script run on a remote host to stop worker `n` there: SIGTERM, up to
/// `timeout` for it to exit, then SIGKILL; the pid file is removed.
pub fn remote_stop_script(layout: &Layout, n: u32, timeout: Duration) -> String {
    let role = Role::Worker(n);
    let pid_file = layout.remote_pid_dir.shell_file(&role.pid_file_name());
    let secs = timeout.as_secs_f64().ceil() as u64;
    [
        REMOTE_RUNNING_FN.to_string(),
        format!("pf={pid_file}"),
        format!(
            "if [ ! -f \"$pf\" ]; then echo \"no {role} running (no pid file $pf)\"; exit 0; fi"
        ),
        "pid=$(cat \"$pf\")".to_string(),
        format!(
            "case \"$pid\" in ''|*[!0-9]*|0|1) rm -f \"$pf\"; echo \"{role}: no worker running \
             (stale pid file $pf removed)\"; exit 0;; esac"
        ),
        format!(
            "if ! running \"$pid\"; then rm -f \"$pf\"; echo \"{role}: no worker running \
             (stale pid file $pf removed)\"; exit 0; fi"
        ),
        "kill \"$pid\" || exit 1".to_string(),
        "i=0".to_string(),
        format!("while running \"$pid\" && [ $i -lt {secs} ]; do sleep 1; i=$((i+1)); done"),
        format!(
            "if running \"$pid\"; then kill -9 \"$pid\"; echo \"killed {role} (pid $pid) with \
             SIGKILL: it did not exit within {secs}s of SIGTERM\"; else echo \"stopped {role} \
             (pid $pid)\"; fi"
        ),
        "rm -f \"$pf\"".to_string(),
    ]
    .join("\n")
}

/// The ssh options: `$FLINT_SSH_OPTS`, else [`DEFAULT_SSH_OPTS`].
pub fn ssh_opts() -> String {
    std::env::var("FLINT_SSH_OPTS").unwrap_or_else(|_| DEFAULT_SSH_OPTS.to_string())
}

/// `ssh <opts> <host> <script>`.
pub fn ssh_command(opts: &str, host: &str, script: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(opts.split_whitespace())
        .arg(host)
        .arg(script)
        .stdin(Stdio::null());
    cmd
}

/// Runs a script on `host` over ssh, printing its output; fails unless it exits 0.
pub fn run_remote(ssh_opts: &str, host: &str, script: &str) -> anyhow::Result<()> {
    run_remote_with_input(ssh_opts, host, script, None)
}

/// [`run_remote`], writing `input` (the secret) to the script's stdin.
pub fn run_remote_with_input(
    ssh_opts: &str,
    host: &str,
    script: &str,
    input: Option<&Secret>,
) -> anyhow::Result<()> {
    let mut cmd = ssh_command(ssh_opts, host, script);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .context("cannot run ssh (is it installed and on PATH?)")?;
    if let (Some(secret), Some(mut stdin)) = (input, child.stdin.take()) {
        // A script that fails before reading closes the pipe; its exit status says
        // what went wrong.
        let _ = stdin.write_all(secret.expose());
        let _ = stdin.write_all(b"\n");
    }
    let out = child
        .wait_with_output()
        .context("cannot run ssh (is it installed and on PATH?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        println!("{host}: {line}");
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = stdout
            .lines()
            .chain(stderr.lines())
            .collect::<Vec<_>>()
            .join("; ");
        bail!("on {host} over ssh ({}): {said}", out.status);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::layout::RemoteDir;

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(sh_quote("/usr/bin/flint"), "/usr/bin/flint");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$(id)"), "'$(id)'");
    }

    #[test]
    fn remote_scripts_name_the_same_files_and_quote_arguments() {
        let layout = Layout {
            pid_dir: PathBuf::from("/var/run/flint pids"),
            log_dir: PathBuf::from("/opt/flint/logs"),
            remote_pid_dir: RemoteDir::Same(PathBuf::from("/var/run/flint pids")),
            remote_log_dir: RemoteDir::Same(PathBuf::from("/opt/flint/logs")),
            conf_dir: PathBuf::from("/opt/flint/conf"),
            cwd: PathBuf::from("/opt/flint"),
            hostname: "me".into(),
        };
        let slot = WorkerSlot {
            host: "ops@node-a".into(),
            local: false,
            n: 2,
        };
        let args = vec![
            "worker".into(),
            "flint://m:7077".into(),
            "--conf".into(),
            "a=b c".into(),
        ];
        let exe = Path::new("/opt/flint/flint");
        let s = remote_start_script(&layout, &slot, exe, &args, &RemoteSecret::Nothing);
        assert!(s.contains("cd /opt/flint || exit 1"), "{s}");
        assert!(
            s.contains("pf='/var/run/flint pids/flint-worker-2.pid'"),
            "{s}"
        );
        assert!(
            s.contains(
                "FLINT_CONF_DIR=/opt/flint/conf nohup /opt/flint/flint worker flint://m:7077 \
                 --conf 'a=b c' >> /opt/flint/logs/flint-worker-2-node-a.out 2>&1 < /dev/null &"
            ),
            "{s}"
        );
        assert!(!s.contains("secret"), "{s}");
        // The secret goes to the remote user's default file, from stdin, after the
        // check that the worker is not running yet; the worker is told the file.
        let s = remote_start_script(&layout, &slot, exe, &args, &RemoteSecret::CopyTo(None));
        let copy = s
            .find("sf=\"${FLINT_HOME:-$HOME/.flint}/secret\"\n")
            .expect(&s);
        assert!(s.find("already running").unwrap() < copy, "{s}");
        assert!(
            s.contains("(umask 077 && mkdir -p \"$(dirname \"$sf\")\" && cat > \"$sf.tmp.$$\" && chmod 600"),
            "{s}"
        );
        assert!(s.contains("mv -f \"$sf.tmp.$$\" \"$sf\")"), "{s}");
        assert!(
            s.contains("FLINT_CONF_DIR=/opt/flint/conf FLINT_AUTH_SECRET_FILE=\"$sf\" nohup /opt/flint/flint worker"),
            "{s}"
        );
        let to = RemoteSecret::CopyTo(Some(PathBuf::from("/etc/flint/cluster secret")));
        let s = remote_start_script(&layout, &slot, exe, &args, &to);
        assert!(s.contains("sf='/etc/flint/cluster secret'\n"), "{s}");
        let s = remote_start_script(&layout, &slot, exe, &args, &RemoteSecret::Disabled);
        assert!(
            s.contains("FLINT_CONF_DIR=/opt/flint/conf FLINT_AUTH_ENABLED=false nohup"),
            "{s}"
        );
        assert!(!s.contains("sf="), "{s}");
        let s = remote_stop_script(&layout, 2, Duration::from_millis(1500));
        assert!(
            s.contains("pf='/var/run/flint pids/flint-worker-2.pid'"),
            "{s}"
        );
        assert!(s.contains("[ $i -lt 2 ]"), "{s}");
        let cmd = ssh_command(DEFAULT_SSH_OPTS, "ops@node-a", "true");
        let argv: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            [
                "-o",
                "StrictHostKeyChecking=accept-new",
                "ops@node-a",
                "true"
            ]
        );
    }

    #[test]
    fn remote_files_default_to_the_remote_users_flint_home() {
        let layout = Layout {
            pid_dir: PathBuf::from("/root/.flint/run"),
            log_dir: PathBuf::from("/root/.flint/logs"),
            remote_pid_dir: RemoteDir::Home("run"),
            remote_log_dir: RemoteDir::Home("logs"),
            conf_dir: PathBuf::from("/opt/flint/conf"),
            cwd: PathBuf::from("/opt/flint"),
            hostname: "me".into(),
        };
        let slot = WorkerSlot {
            host: "node-a".into(),
            local: false,
            n: 1,
        };
        let exe = Path::new("/opt/flint/flint");
        let args = vec!["worker".to_string()];
        let s = remote_start_script(&layout, &slot, exe, &args, &RemoteSecret::Nothing);
        assert!(
            s.contains(
                "mkdir -p \"${FLINT_HOME:-$HOME/.flint}/run\" \"${FLINT_HOME:-$HOME/.flint}/logs\""
            ),
            "{s}"
        );
        assert!(
            s.contains("pf=\"${FLINT_HOME:-$HOME/.flint}/run/flint-worker-1.pid\""),
            "{s}"
        );
        assert!(
            s.contains(">> \"${FLINT_HOME:-$HOME/.flint}/logs/flint-worker-1-node-a.out\" 2>&1"),
            "{s}"
        );
        assert!(!s.contains("/root/"), "{s}");
    }
}
