//! Background daemons on this machine, as a launcher needs them: started in a
//! session of their own with their output appended to a log and their pid in a pid
//! file; told apart from whatever else holds a reused pid; stopped with SIGTERM,
//! then SIGKILL; their pid files cleaned up. Nothing here knows about masters or
//! workers: a [`Daemon`] names its pid file, the subcommand it runs as and a label
//! for messages.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How often waits re-check their condition.
pub const POLL: Duration = Duration::from_millis(50);
/// How long a process gets to disappear after SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// A daemon as a launcher tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// How messages name it (`worker 2`).
    pub label: String,
    /// The subcommand it runs as (`argv[1]` of this binary): how a live process is
    /// recognised as this daemon rather than something that reused its pid.
    pub subcommand: &'static str,
    /// Its pid file.
    pub pid_file: PathBuf,
}

impl fmt::Display for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// What a pid file says.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No pid file.
    Nothing,
    /// A pid file that holds no usable pid (its text).
    Garbage(String),
    /// A pid (always ≥ 2, so it never means "every process" to kill(2)).
    Pid(i32),
}

/// Reads a pid file.
pub fn read_pid_file(path: &Path) -> anyhow::Result<Recorded> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(match text.trim().parse::<i32>() {
            Ok(pid) if pid >= 2 => Recorded::Pid(pid),
            _ => Recorded::Garbage(text.trim().chars().take(40).collect()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Recorded::Nothing),
        Err(e) => Err(e).with_context(|| format!("cannot read pid file {}", path.display())),
    }
}

fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    fs::write(path, format!("{pid}\n"))
        .with_context(|| format!("cannot write pid file {}", path.display()))
}

/// Removes a pid file; one that is already gone is fine.
pub fn remove_pid_file(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove pid file {}", path.display())),
    }
}

/// What is behind a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No such process (or only its zombie).
    Gone,
    /// A live process that is not the expected daemon.
    Foreign,
    /// A live process running the expected subcommand.
    Ours,
}

/// Whether `pid` is a live `<binary> <subcommand> …` process.
pub fn probe(pid: i32, subcommand: &str) -> Probe {
    if Path::new("/proc/self/stat").exists() {
        let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s,
            Err(_) => return Probe::Gone,
        };
        // The state follows the parenthesised command name, which may hold spaces.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        if matches!(state, Some('Z' | 'X') | None) {
            return Probe::Gone;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return Probe::Gone;
        };
        let mut args = cmdline.split(|&b| b == 0);
        let _exe = args.next();
        return if args.next() == Some(subcommand.as_bytes()) {
            Probe::Ours
        } else {
            Probe::Foreign
        };
    }
    // No /proc: all we can learn is whether the pid exists.
    match signal(pid, 0) {
        Ok(()) => Probe::Ours,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Probe::Ours,
        Err(_) => Probe::Gone,
    }
}

/// kill(2) on one process; refuses pids below 2 (0 and -1 mean groups).
pub fn signal(pid: i32, sig: libc::c_int) -> io::Result<()> {
    if pid < 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a single process.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes `d`'s pid file if its process is not running, saying so. Fails when it
/// is running.
pub fn clear_stale(d: &Daemon) -> anyhow::Result<()> {
    let path = &d.pid_file;
    let why = match read_pid_file(path)? {
        Recorded::Nothing => return Ok(()),
        Recorded::Garbage(text) => format!("it holds {text:?}, not a pid"),
        Recorded::Pid(pid) => match probe(pid, d.subcommand) {
            Probe::Ours => bail!(
                "{d} already running as pid {pid} (pid file {}); stop it first with \
                 `flint stop-cluster`",
                path.display()
            ),
            Probe::Gone => format!("pid {pid} is not running"),
            Probe::Foreign => format!("pid {pid} is not a flint {}", d.subcommand),
        },
    };
    remove_pid_file(path)?;
    println!("removed stale pid file {} ({why})", path.display());
    Ok(())
}

/// Up to the last 20 lines of `path` from byte `from` on, indented, for errors.
pub fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_string(&mut text);
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        "  (the log is empty)".to_string()
    } else {
        tail.iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A daemon started by this process (its child until this process exits).
pub struct Started {
    /// Which daemon.
    pub daemon: Daemon,
    /// The process.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// The log's length before the daemon started: where its own lines begin.
    pub log_from: u64,
}

/// Starts `exe args…` in `cwd` with `envs` added, in a new session, stdin from
/// /dev/null, stdout and stderr appended to `log`, and records its pid.
pub fn spawn_daemon(
    daemon: Daemon,
    exe: &Path,
    args: &[String],
    cwd: &Path,
    envs: &[(&str, &std::ffi::OsStr)],
    log: PathBuf,
) -> anyhow::Result<Started> {
    let log_from = file_len(&log);
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // SAFETY: runs in the forked child before exec and only calls setsid, which is
    // async-signal-safe, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot start the {daemon}: {} {}",
            exe.display(),
            args.join(" ")
        )
    })?;
    write_pid_file(&daemon.pid_file, child.id())?;
    Ok(Started {
        daemon,
        child,
        log,
        log_from,
    })
}

/// Fails if a daemon started here has already exited, naming its log.
pub fn check_alive(d: &mut Started) -> anyhow::Result<()> {
    if let Ok(Some(status)) = d.child.try_wait() {
        let _ = remove_pid_file(&d.daemon.pid_file);
        bail!(
            "the {} (pid {}) exited ({status}); its log {} ends with:\n{}",
            d.daemon,
            d.child.id(),
            d.log.display(),
            log_tail(&d.log, d.log_from)
        );
    }
    Ok(())
}

/// SIGTERM, then SIGKILL after `grace`, to a daemon that is our child; reaps it
/// and removes its pid file.
pub async fn abandon(d: &mut Started, grace: Duration) {
    if let Ok(pid) = i32::try_from(d.child.id()) {
        let _ = signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while matches!(d.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }
    let _ = d.child.kill();
    let _ = d.child.wait();
    let _ = remove_pid_file(&d.daemon.pid_file);
}

/// A daemon that was sent SIGTERM.
pub struct Stopping {
    daemon: Daemon,
    pid: i32,
}

/// Sends SIGTERM to the daemon in `d`'s pid file, or cleans up a stale one.
/// `Ok(None)` when there is nothing to wait for.
pub fn terminate(d: &Daemon) -> anyhow::Result<Option<Stopping>> {
    let path = &d.pid_file;
    let stale = |why: String| -> anyhow::Result<Option<Stopping>> {
        remove_pid_file(path)?;
        println!(
            "{d}: no {} running (stale pid file {} removed: {why})",
            d.subcommand,
            path.display()
        );
        Ok(None)
    };
    match read_pid_file(path)? {
        Recorded::Nothing => Ok(None),
        Recorded::Garbage(text) => stale(format!("it holds {text:?}, not a pid")),
        Recorded::Pid(pid) => match probe(pid, d.subcommand) {
            Probe::Gone => stale(format!("pid {pid} is not running")),
            Probe::Foreign => stale(format!("pid {pid} is not a flint {}", d.subcommand)),
            Probe::Ours => {
                signal(pid, libc::SIGTERM).with_context(|| {
                    format!(
                        "cannot send SIGTERM to the {d} (pid {pid}, pid file {})",
                        path.display()
                    )
                })?;
                Ok(Some(Stopping {
                    daemon: d.clone(),
                    pid,
                }))
            }
        },
    }
}

/// Waits up to `timeout` for every process to exit, then SIGKILLs the rest and
/// waits [`KILL_GRACE`] for them; removes the pid files of those that are gone.
pub async fn reap_all(stopping: Vec<Stopping>, timeout: Duration, errors: &mut Vec<String>) {
    let gone = |s: &Stopping| probe(s.pid, s.daemon.subcommand) != Probe::Ours;
    let deadline = Instant::now() + timeout;
    while !stopping.iter().all(gone) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let mut killed = Vec::new();
    for s in &stopping {
        if !gone(s) {
            match signal(s.pid, libc::SIGKILL) {
                Ok(()) => killed.push(s.pid),
                Err(e) => errors.push(format!(
                    "cannot send SIGKILL to the {} (pid {}): {e}",
                    s.daemon, s.pid
                )),
            }
        }
    }
    if !killed.is_empty() {
        let deadline = Instant::now() + KILL_GRACE;
        while !stopping.iter().all(gone) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }
    for s in &stopping {
        if !gone(s) {
            errors.push(format!(
                "the {} (pid {}) is still running after SIGKILL; pid file {} kept",
                s.daemon,
                s.pid,
                s.daemon.pid_file.display()
            ));
            continue;
        }
        if let Err(e) = remove_pid_file(&s.daemon.pid_file) {
            errors.push(format!("{e:#}"));
        }
        if killed.contains(&s.pid) {
            println!(
                "killed {} (pid {}) with SIGKILL: it did not exit within {:?} of SIGTERM",
                s.daemon, s.pid, timeout
            );
        } else {
            println!("stopped {} (pid {})", s.daemon, s.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_never_yield_pid_0_1_or_negative() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        for (text, want) in [
            ("123\n", Recorded::Pid(123)),
            ("1", Recorded::Garbage("1".into())),
            ("0", Recorded::Garbage("0".into())),
            ("-1", Recorded::Garbage("-1".into())),
            ("abc", Recorded::Garbage("abc".into())),
        ] {
            fs::write(&p, text).unwrap();
            assert_eq!(read_pid_file(&p).unwrap(), want, "{text:?}");
        }
        fs::remove_file(&p).unwrap();
        assert_eq!(read_pid_file(&p).unwrap(), Recorded::Nothing);
        assert!(signal(1, 0).is_err() && signal(-1, 0).is_err() && signal(0, 0).is_err());
    }

    #[test]
    fn probe_tells_our_process_from_a_foreign_or_dead_one() {
        // `cat` waiting on its stdin: alive, but not a flint daemon.
        let mut cat = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
        let cat_pid = i32::try_from(cat.id()).unwrap();
        assert_eq!(probe(cat_pid, "master"), Probe::Foreign);
        drop(cat.stdin.take());
        cat.wait().unwrap();
        assert_eq!(probe(cat_pid, "master"), Probe::Gone);
        let mut child = Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        assert_eq!(probe(pid, "worker"), Probe::Gone);
    }
}
