//! The per-child supervisor: a small process between the worker and each executor
//! or driver, so that nothing the child starts outlives the worker.
//!
//! `PR_SET_PDEATHSIG` ties only the worker's *direct* child to it; the processes that
//! child starts (`sh -c "sleep 901 & sleep 902"`) would be reparented to PID 1 and live
//! on when the worker is SIGKILLed. So the worker starts `flint-supervise PROGRAM
//! ARGS…` (this module's [`main`]) instead, which:
//!
//! - makes itself a *child subreaper* (`PR_SET_CHILD_SUBREAPER`), so every orphaned
//!   descendant of the child is reparented to it, not to PID 1;
//! - asks for `SIGUSR1` when the worker dies (`PR_SET_PDEATHSIG`), and exits at once
//!   if the worker is already gone;
//! - runs the child in its own process group (the group the worker signals), with the
//!   signals unblocked and its own death signal tied to the supervisor;
//! - forwards SIGTERM / SIGINT / SIGHUP / SIGQUIT to every descendant (also those that
//!   left the group with `setsid`);
//! - on `SIGUSR1` (the worker died, or asks for a hard kill) and when the child exits,
//!   SIGKILLs every remaining descendant, found by walking `/proc`, reaps them, and
//!   exits with the child's own status (a child killed by a signal is mirrored by
//!   dying of the same signal), so the worker reports what the child did.
//!
//! The supervisor is a fresh single-threaded process (the worker `exec`s it), so it
//! may use the standard library freely.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The name of the supervisor binary, next to the `flint` binary.
pub const BINARY: &str = "flint-supervise";
/// Environment variable naming the supervisor binary explicitly.
pub const ENV: &str = "FLINT_SUPERVISOR";
/// The signal with which the worker asks for (or its death causes) a hard kill.
pub const KILL_TREE: libc::c_int = libc::SIGUSR1;
/// Signals forwarded to every descendant.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
    }
    set
}

/// Runs the supervisor: `args` are the child's program and arguments. Never returns.
pub fn main(args: Vec<OsString>) -> ! {
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: {BINARY} PROGRAM [ARGS…] (started by a flint worker)");
        std::process::exit(2);
    };
    let parent = std::os::unix::process::parent_id();
    // SAFETY: prctl with these options only sets flags of the calling process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            KILL_TREE as libc::c_ulong,
            0 as libc::c_ulong,
            0,
            0,
        );
    }
    if std::os::unix::process::parent_id() != parent || parent == 1 {
        // The worker died before we asked to hear of it: start nothing.
        std::process::exit(1);
    }
    let mut all = vec![libc::SIGCHLD, KILL_TREE];
    all.extend(FORWARDED);
    let set = sigset(&all);
    // SAFETY: `set` is a valid, initialised sigset_t.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };

    let me = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(program);
    cmd.args(rest);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (sigprocmask, prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            let empty = sigset(&[]);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0,
                0,
            );
            if libc::getppid() != me {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c.id() as libc::pid_t,
        Err(e) => {
            eprintln!("{BINARY}: cannot start {}: {e}", program.to_string_lossy());
            std::process::exit(127);
        }
    };

    let mut status: Option<libc::c_int> = None;
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out-parameter; `set` is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue; // EINTR
        }
        if sig == libc::SIGCHLD {
            reap_all(child, &mut status);
            if status.is_some() {
                kill_descendants(me, child, &mut status);
                exit_like(status);
            }
        } else if sig == KILL_TREE {
            kill_descendants(me, child, &mut status);
            while status.is_none() {
                let mut st = 0;
                // SAFETY: `st` is a valid, writable int.
                let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
                if pid == child {
                    status = Some(st);
                } else if pid < 0 {
                    break;
                }
            }
            kill_descendants(me, child, &mut status);
            exit_like(status.or(Some(libc::SIGKILL)));
        } else {
            for pid in descendants(me) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }
}

/// Reaps every exited child without blocking, noting the main child's status.
fn reap_all(child: libc::pid_t, status: &mut Option<libc::c_int>) {
    loop {
        let mut st = 0;
        // SAFETY: `st` is a valid, writable int.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if pid == child {
            *status = Some(st);
        }
    }
}

/// Exits the way the child did: its exit code, or death by its signal.
fn exit_like(status: Option<libc::c_int>) -> ! {
    let st = status.unwrap_or(0);
    if libc::WIFSIGNALED(st) {
        let sig = libc::WTERMSIG(st);
        // SAFETY: resetting a disposition, unblocking and raising a signal have no
        // memory-safety preconditions.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let one = sigset(&[sig]);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        1
    })
}

/// SIGKILLs every descendant of `me` until none is left (bounded, in case of a fork
/// loop), reaping those that are its children (noting the main child's status).
fn kill_descendants(me: libc::pid_t, child: libc::pid_t, status: &mut Option<libc::c_int>) {
    for _ in 0..100 {
        let pids = descendants(me);
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        reap_all(child, status);
        std::thread::yield_now();
    }
}

/// Every live process below `root` in the process tree, read from `/proc`.
pub fn descendants(root: libc::pid_t) -> Vec<libc::pid_t> {
    let mut children: HashMap<libc::pid_t, Vec<libc::pid_t>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if let Some((ppid, state)) = stat(pid) {
            // Zombies are dead already; their parent (us, or a descendant) reaps them.
            if state != 'Z' && state != 'X' {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if seen.insert(*c) {
                out.push(*c);
                todo.push(*c);
            }
        }
    }
    out
}

/// The parent pid and state letter of `pid`, from `/proc/<pid>/stat`.
fn stat(pid: libc::pid_t) -> Option<(libc::pid_t, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid …": comm may contain spaces and parentheses.
    let (_, rest) = text.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}
