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
    start_daemon_with(args, home, &[])
}

/// [`start_daemon`] with more environment (`FLINT_*` settings) for the daemon.
pub fn start_daemon_with(args: &[&str], home: &Path, env: &[(&str, &str)]) -> Daemon {
    let mut child = Command::new(daemon_binary())
        .args(args)
        .envs(env.iter().copied())
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

/// The keyed dataset of [`marked_job`].
pub type Pairs = flint::Dataset<(u64, u64)>;

/// The map-task marker job that loss tests share: `0..8000` in 8 map partitions, each
/// map task leaving a file `<partition>-<pid>-<nanos>` in `maps` (so a test sees which
/// map tasks ran, and where), summed by `x % 97` over 4 reduce partitions. Returns the
/// dataset and its answer, computed here in one process.
pub fn marked_job(ctx: &flint::Context, maps: &Path) -> (Pairs, Vec<(u64, u64)>) {
    let marked = ctx
        .range(0, 8000, 8)
        .map_partitions_with(maps.display().to_string(), |d, it| {
            let v: Vec<u64> = it.collect();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let name = format!("{}-{}-{nanos}", v[0] / 1000, std::process::id());
            std::fs::write(Path::new(&d).join(name), b"").unwrap();
            v
        })
        .map(|x| (x % 97, x))
        .reduce_by_key(|a, b| a + b, 4);
    let mut sums = std::collections::BTreeMap::new();
    for x in 0..8000u64 {
        *sums.entry(x % 97).or_insert(0u64) += x;
    }
    (marked, sums.into_iter().collect())
}

/// The map partitions [`marked_job`] ran and the pid of each run, from its files.
pub fn map_runs(maps: &Path) -> std::collections::BTreeSet<(u64, u32, String)> {
    let Ok(rd) = std::fs::read_dir(maps) else {
        return Default::default();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let mut it = name.split('-');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, name))
        })
        .collect()
}
