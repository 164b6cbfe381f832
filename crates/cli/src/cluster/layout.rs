//! Where `start-cluster`'s files are and which workers it starts: the pid, log and
//! conf directories (here and as a remote host's shell names them), the daemons'
//! roles and file names, and the `<conf-dir>/workers` file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use flint_conf::home;

use super::process::Daemon;
use super::ssh::sh_quote;

/// A directory as a remote host's shell names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteDir {
    /// The same absolute path as here (it was given, or `$FLINT_HOME` is set here).
    Same(PathBuf),
    /// This subdirectory of the remote user's flint home,
    /// `${FLINT_HOME:-$HOME/.flint}/<subdir>`.
    Home(&'static str),
}

impl RemoteDir {
    /// The directory as a shell word.
    pub fn shell(&self) -> String {
        match self {
            RemoteDir::Same(p) => sh_quote(&p.display().to_string()),
            RemoteDir::Home(sub) => format!("\"${{FLINT_HOME:-$HOME/.flint}}/{sub}\""),
        }
    }

    /// `<dir>/<file>` as a shell word; `file` is made of `[A-Za-z0-9._-]`.
    pub fn shell_file(&self, file: &str) -> String {
        match self {
            RemoteDir::Same(p) => sh_quote(&p.join(file).display().to_string()),
            RemoteDir::Home(sub) => {
                format!("\"${{FLINT_HOME:-$HOME/.flint}}/{sub}/{file}\"")
            }
        }
    }
}

/// The directories and names every daemon file is derived from.
pub struct Layout {
    /// Pid files here: `--pid-dir`, else `$FLINT_PID_DIR`, else `$FLINT_HOME/run`.
    pub pid_dir: PathBuf,
    /// Logs here: `--log-dir`, else `$FLINT_LOG_DIR`, else `$FLINT_HOME/logs`.
    pub log_dir: PathBuf,
    /// The pid directory on remote hosts.
    pub remote_pid_dir: RemoteDir,
    /// The log directory on remote hosts.
    pub remote_log_dir: RemoteDir,
    /// The conf directory (absolute).
    pub conf_dir: PathBuf,
    /// The directory daemons run in (this command's, made absolute).
    pub cwd: PathBuf,
    /// This machine's hostname.
    pub hostname: String,
}

/// One of the home's directories: `flag`, else `$var`, else `<home>/<subdir>`;
/// with how remote hosts name it.
fn home_dir(
    cwd: &Path,
    flag: Option<&Path>,
    var: &str,
    subdir: &'static str,
    flag_name: &str,
) -> anyhow::Result<(PathBuf, RemoteDir)> {
    let given = flag.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(p) = given {
        let p = cwd.join(p);
        return Ok((p.clone(), RemoteDir::Same(p)));
    }
    let what = format!("the daemons' {subdir} directory");
    let alternative = format!("give {flag_name} ({var})");
    let here = home::home_dir(subdir, &what, Some(&alternative))?;
    let here = cwd.join(here);
    let remote = if std::env::var_os(home::HOME_ENV).is_some_and(|v| !v.is_empty()) {
        RemoteDir::Same(here.clone())
    } else {
        RemoteDir::Home(subdir)
    };
    Ok((here, remote))
}

impl Layout {
    /// The layout for `conf_dir` and the `--pid-dir` / `--log-dir` flags.
    pub fn new(
        conf_dir: &Path,
        pid_dir: Option<&Path>,
        log_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let (pid_dir, remote_pid_dir) = home_dir(
            &cwd,
            pid_dir,
            "FLINT_PID_DIR",
            home::PID_SUBDIR,
            "--pid-dir",
        )?;
        let (log_dir, remote_log_dir) = home_dir(
            &cwd,
            log_dir,
            "FLINT_LOG_DIR",
            home::LOG_SUBDIR,
            "--log-dir",
        )?;
        Ok(Layout {
            pid_dir,
            log_dir,
            remote_pid_dir,
            remote_log_dir,
            conf_dir: cwd.join(conf_dir),
            cwd,
            hostname: hostname(),
        })
    }

    /// `role`'s daemon here.
    pub fn daemon(&self, role: Role) -> Daemon {
        Daemon {
            label: role.to_string(),
            subcommand: role.subcommand(),
            pid_file: self.pid_dir.join(role.pid_file_name()),
        }
    }

    /// `role`'s log file name on `host`.
    pub fn log_file_name(role: Role, host: &str) -> String {
        let host = file_safe(host);
        match role {
            Role::Master => format!("flint-master-{host}.out"),
            Role::Worker(n) => format!("flint-worker-{n}-{host}.out"),
        }
    }

    /// The log file of `role` on `host`, here.
    pub fn log_file(&self, role: Role, host: &str) -> PathBuf {
        self.log_dir.join(Self::log_file_name(role, host))
    }

    /// `<conf-dir>/workers`.
    pub fn workers_file(&self) -> PathBuf {
        self.conf_dir.join("workers")
    }

    /// Creates the pid and log directories here.
    pub fn create_dirs(&self) -> anyhow::Result<()> {
        for d in [&self.pid_dir, &self.log_dir] {
            fs::create_dir_all(d)
                .with_context(|| format!("cannot create directory {}", d.display()))?;
        }
        Ok(())
    }
}

/// A daemon of the cluster: the master, or the `n`th worker of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The master.
    Master,
    /// Worker `n` of its host (from 1).
    Worker(u32),
}

impl Role {
    /// The subcommand it runs as (`argv[1]`).
    pub fn subcommand(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker(_) => "worker",
        }
    }

    /// Its pid file's name in the pid directory.
    pub fn pid_file_name(self) -> String {
        match self {
            Role::Master => "flint-master.pid".to_string(),
            Role::Worker(n) => format!("flint-worker-{n}.pid"),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Master => f.write_str("master"),
            Role::Worker(n) => write!(f, "worker {n}"),
        }
    }
}

/// One line of `conf/workers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSlot {
    /// The host as written (may be `user@host` for ssh).
    pub host: String,
    /// Started here rather than over ssh.
    pub local: bool,
    /// Its number on its host, from 1.
    pub n: u32,
}

impl WorkerSlot {
    /// The host name the worker binds and advertises (without `user@`).
    pub fn bind_host(&self) -> &str {
        self.host.rsplit('@').next().unwrap_or(&self.host)
    }
}

/// The worker list in `<conf-dir>/workers`. A missing file is refused when
/// `required` (`start-cluster` never guesses where workers go), else it lists none.
pub fn read_workers(
    file: &Path,
    hostname: &str,
    required: bool,
) -> anyhow::Result<Vec<WorkerSlot>> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => String::new(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "no workers file {}: list the worker hosts in it, one a line (`localhost` \
             starts a worker on this machine; --conf-dir or FLINT_CONF_DIR names another \
             conf directory); for a master and workers on this machine alone, run `flint \
             local --workers N`, or start a worker here with `flint worker flint://HOST:PORT`",
            file.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    parse_workers(&text, hostname)
        .with_context(|| format!("{} is not a valid workers file", file.display()))
}

pub fn parse_workers(text: &str, hostname: &str) -> anyhow::Result<Vec<WorkerSlot>> {
    let mut slots: Vec<WorkerSlot> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let host = line.split('#').next().unwrap_or("").trim();
        if host.is_empty() {
            continue;
        }
        let valid = !host.starts_with('-')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:@[]".contains(c));
        if !valid {
            bail!(
                "line {}: {host:?} is not a host name; write one host name or address a line",
                i + 1
            );
        }
        let local = is_local(host, hostname);
        let key = |s: &WorkerSlot| s.local == local && (local || s.host == host);
        let n = slots.iter().filter(|s| key(s)).count() as u32 + 1;
        slots.push(WorkerSlot {
            host: host.to_string(),
            local,
            n,
        });
    }
    Ok(slots)
}

fn is_local(host: &str, hostname: &str) -> bool {
    let h = host.to_ascii_lowercase();
    let me = hostname.to_ascii_lowercase();
    h == "localhost"
        || h == "127.0.0.1"
        || (!me.is_empty() && (h == me || Some(h.as_str()) == me.split('.').next()))
}

/// This machine's hostname (`localhost` if it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid and writable for `buf.len()` bytes; gethostname writes
    // at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// `text` with anything but `[A-Za-z0-9._-]` replaced, for use in a file name.
fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The worker numbers that have a pid file in the pid directory, ascending.
pub fn local_worker_pid_files(pid_dir: &Path) -> anyhow::Result<Vec<u32>> {
    let entries = match fs::read_dir(pid_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot list pid directory {}", pid_dir.display()))
        }
    };
    let mut ns = Vec::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot list pid directory {}", pid_dir.display()))?;
        let name = entry.file_name();
        let n = name
            .to_str()
            .and_then(|s| s.strip_prefix("flint-worker-"))
            .and_then(|s| s.strip_suffix(".pid"))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(n) = n {
            ns.push(n);
        }
    }
    ns.sort_unstable();
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_file_numbers_each_hosts_workers_and_skips_comments() {
        let text =
            "# workers\nlocalhost\n\n  node-a  # rack 1\n127.0.0.1\nbox\nnode-a\nuser@node-b\n";
        let slots = parse_workers(text, "box.example.com").unwrap();
        let got: Vec<(&str, bool, u32)> = slots
            .iter()
            .map(|s| (s.host.as_str(), s.local, s.n))
            .collect();
        assert_eq!(
            got,
            [
                ("localhost", true, 1),
                ("node-a", false, 1),
                ("127.0.0.1", true, 2),
                ("box", true, 3),
                ("node-a", false, 2),
                ("user@node-b", false, 1),
            ]
        );
        assert_eq!(slots[5].bind_host(), "node-b");
    }

    #[test]
    fn workers_file_rejects_what_is_not_a_host() {
        for bad in ["-oProxyCommand=x", "a b", "h;rm", "$(id)"] {
            let err = parse_workers(&format!("localhost\n{bad}\n"), "me").unwrap_err();
            assert!(err.to_string().contains("line 2"), "{err}");
        }
    }
}
