//! What the cluster test targets (`cluster_program`, `cluster_lifecycle`) share: whether
//! a process is alive, waiting for processes to go, and master/worker daemons started
//! as their own processes from `examples/cluster_daemon`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Waits up to `within` for every pid to be gone; the ones still alive then.
pub fn wait_gone(pids: &[u32], within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon process of examples/cluster_daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    /// Its RPC URL.
    pub url: String,
    /// Its status JSON URL, when it printed one.
    pub status: Option<String>,
}

impl Daemon {
    /// The status JSON URL (the daemon printed one).
    pub fn status(&self) -> &str {
        self.status
            .as_deref()
            .expect("the daemon printed its status URL")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cluster_daemon example, built each time (a no-op when fresh: a stale daemon of
/// an older build would speak another protocol version).
pub fn daemon_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let path = me
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("cluster_daemon");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "-q", "-p", "flint", "--example", "cluster_daemon"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        built && path.exists(),
        "cannot build {} (cargo build -p flint --examples)",
        path.display()
    );
    path
}

/// Starts `cluster_daemon args` with `home` as its flint home; waits for the line
/// with its URLs.
pub fn start_daemon(args: &[&str], home: &Path) -> Daemon {
    let mut child = Command::new(daemon_binary())
        .args(args)
        .env("FLINT_HOME", home)
        .env_remove("FLINT_AUTH_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cluster_daemon");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut first);
        let _ = tx.send(first);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the daemon printed its url");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(words.len() >= 2, "no url in {line:?}");
    Daemon {
        child,
        url: words[1].to_owned(),
        status: words.get(3).map(|s| (*s).to_owned()),
    }
}
