//! Peer processes for tests: the test binary re-run as a child that plays a role (a
//! server, a stream peer), with its settings passed in the environment, its log lines
//! collected from its stdout, and its memory read from `/proc/<pid>/status`.
//!
//! A test file that uses children has one `#[ignore]`d entry test that dispatches on
//! [`role`]; [`Child::start`] runs the binary with `--ignored --exact <entry>`, so the
//! entry never runs (and never passes vacuously) in a normal `cargo test`.
//!
//! Include it with `#[path = "common/peer.rs"] mod peer;` beside `mod common;`.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_rpc::{RpcAddress, RpcConf};
use parking_lot::Mutex;

/// Names the role a child plays; unset in a test run by `cargo test`.
pub const ROLE_VAR: &str = "FLINT_RPC_TEST_ROLE";
/// The child's settings as `key=value` pairs separated by `;`.
pub const CONF_VAR: &str = "FLINT_RPC_TEST_CONF";
/// What a child prints once it listens, followed by its port.
pub const LISTENING: &str = "LISTENING ";

/// The role this process was started in, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// The settings the parent passed, as they were given (keys of the test's own, such
/// as a port to listen on, included).
pub fn child_settings() -> flint_conf::Conf {
    let text = std::env::var(CONF_VAR).unwrap_or_default();
    let mut conf = flint_conf::Conf::new();
    conf.merge_overrides(text.split(';').filter(|p| !p.trim().is_empty()))
        .expect("settings passed by the parent");
    conf
}

/// The settings the parent passed, read as `RpcConf::from_conf` reads a daemon's.
/// Without `auth.secret` among them the child runs without authentication
/// (`auth.enabled = false`), whatever secret files the user running the tests has.
pub fn child_conf() -> RpcConf {
    let mut conf = child_settings();
    if conf.get("auth.secret").is_none() && conf.get("auth.enabled").is_none() {
        conf = conf.set("auth.enabled", "false");
    }
    RpcConf::from_conf(&conf).expect("valid settings passed by the parent")
}

/// Sends the child's log lines (info and up) to its stdout, where the parent reads them.
pub fn child_logging() {
    let sub = tracing_subscriber::fmt()
        .with_env_filter("flint_rpc=info")
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .finish();
    let _ = tracing::subscriber::set_global_default(sub);
}

/// Prints a line for the parent (flushed at once).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// A two-thread runtime, as on the 2-core machines the tests must pass on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Default)]
struct Output {
    lines: Vec<String>,
    ended: bool,
}

/// A child process, SIGKILLed on drop.
pub struct Child {
    child: std::process::Child,
    out: Arc<Mutex<Output>>,
    /// The port it listens on.
    pub port: u16,
}

impl Child {
    /// Runs this test binary's `entry` test as a child in `role`, with the settings
    /// `conf`, and waits (at most 20 s) until it prints that it listens.
    ///
    /// glibc's malloc is limited to one arena in the child (`MALLOC_ARENA_MAX=1`), so
    /// that its virtual size moves only with what it allocates, not with per-thread
    /// arenas (64 MiB of address space each) created at random moments.
    pub async fn start(entry: &str, role: &str, conf: &[(&str, &str)]) -> Child {
        Self::start_with(entry, role, conf, true).await
    }

    /// [`Child::start`] with glibc's malloc as it is by default (an arena per thread),
    /// for tests of memory as a real process uses it.
    pub async fn start_with_default_malloc(
        entry: &str,
        role: &str,
        conf: &[(&str, &str)],
    ) -> Child {
        Self::start_with(entry, role, conf, false).await
    }

    async fn start_with(entry: &str, role: &str, conf: &[(&str, &str)], one_arena: bool) -> Child {
        let conf: Vec<String> = conf.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut command = Command::new(std::env::current_exe().unwrap());
        if one_arena {
            command.env("MALLOC_ARENA_MAX", "1");
        }
        let mut child = command
            .args([
                "--ignored",
                "--exact",
                entry,
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_VAR, role)
            .env(CONF_VAR, conf.join(";"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Output::default()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        sink.lock().lines.push(line);
                    }
                }
            }
            sink.lock().ended = true;
        });
        let mut c = Child {
            child,
            out,
            port: 0,
        };
        let line = c.wait_for_line(&[LISTENING], Duration::from_secs(20)).await;
        // libtest may print "test <entry> ... " on the same line first.
        let (_, port) = line.split_once(LISTENING).unwrap();
        c.port = port.trim().parse().unwrap();
        c
    }

    /// The child's listening address.
    pub fn address(&self) -> RpcAddress {
        RpcAddress::new("127.0.0.1", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a line of the child's output contains every one of `parts`; fails
    /// after `limit`, or as soon as the child has exited without printing it.
    pub async fn wait_for_line(&self, parts: &[&str], limit: Duration) -> String {
        let start = Instant::now();
        loop {
            {
                let out = self.out.lock();
                if let Some(l) = out
                    .lines
                    .iter()
                    .find(|l| parts.iter().all(|p| l.contains(p)))
                {
                    return l.clone();
                }
                assert!(
                    !out.ended,
                    "the child exited without printing a line containing {parts:?}; it printed:\n{}",
                    out.lines.join("\n")
                );
                assert!(
                    start.elapsed() < limit,
                    "timed out after {limit:?} waiting for the child to print a line containing {parts:?}; it printed:\n{}",
                    tail(&out.lines, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lines of the child's output that contain every one of `parts`.
    pub fn count_lines(&self, parts: &[&str]) -> usize {
        let out = self.out.lock();
        out.lines
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// The last lines of the child's output, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        tail(&self.out.lock().lines, n)
    }

    /// Resident memory of the child, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:")
    }

    /// Virtual size of the child, in KiB (`VmSize`).
    pub fn vm_size_kib(&self) -> u64 {
        status_kib(self.pid(), "VmSize:")
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `kB` field of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse {line:?}: {e}"))
}

/// KiB as MiB, for messages.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Samples the child's `VmRSS` and `VmSize` every few milliseconds in a thread and
/// keeps the highest values seen, until stopped.
pub struct PeakSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64, u64)>>,
}

impl PeakSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut rss, mut vm, mut samples) = (0, 0, 0);
            loop {
                let done = flag.load(std::sync::atomic::Ordering::Relaxed);
                rss = rss.max(status_kib(pid, "VmRSS:"));
                vm = vm.max(status_kib(pid, "VmSize:"));
                samples += 1;
                if done {
                    return (rss, vm, samples);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        PeakSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling (after one last sample); returns the peak `VmRSS` and `VmSize`
    /// in KiB and the number of samples.
    pub fn stop(mut self) -> (u64, u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Latency percentiles of a set of samples, for messages.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
