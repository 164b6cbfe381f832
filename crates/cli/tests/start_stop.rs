//! `flint start-cluster` / `flint stop-cluster` with real daemons: pid files, logs,
//! refusal to start twice, stale pid files, workers registered with the master, and
//! the ssh path (through a stand-in `ssh` that runs the command on this machine, with
//! the "remote" pid and log directories mapped elsewhere, as another disk would be,
//! and a "remote" flint home of its own, which gets a copy of the cluster secret).
//! Each test has its own flint home (`FLINT_HOME`), where the master creates the
//! cluster secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FLINT: &str = env!("CARGO_BIN_EXE_flint");

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rfind(')').and_then(|i| s[i + 1..].trim().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        })
        .unwrap_or(false)
}

/// A process's arguments.
fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// A pid that is certainly not running: a child that has exited and been reaped.
fn dead_pid() -> i32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    pid
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One test's directories and ports; kills every daemon it can find on drop.
struct Cluster {
    root: tempfile::TempDir,
    port: u16,
    /// Directories `flint-*.pid` files may be in (local and "remote").
    pid_dirs: Vec<PathBuf>,
    /// Extra `PATH` entry (the stand-in ssh).
    path_prefix: Option<PathBuf>,
    /// Pids seen during the test, killed on drop if still flint daemons.
    seen: Vec<i32>,
}

impl Cluster {
    fn new(workers: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        for d in ["pids", "logs", "conf", "run"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        std::fs::write(root.path().join("conf/workers"), workers).unwrap();
        let pid_dirs = vec![root.path().join("pids")];
        Cluster {
            root,
            port: free_port(),
            pid_dirs,
            path_prefix: None,
            seen: Vec::new(),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn master_url(&self) -> String {
        format!("flint://127.0.0.1:{}", self.port)
    }

    fn flint(&self, args: &[&str]) -> Command {
        let mut c = Command::new(FLINT);
        c.args(args)
            .current_dir(self.dir("run"))
            .env("FLINT_PID_DIR", self.dir("pids"))
            .env("FLINT_LOG_DIR", self.dir("logs"))
            .env("FLINT_CONF_DIR", self.dir("conf"))
            .env("FLINT_WORKER_WEBUI_PORT", "0")
            .env("FLINT_HOME", self.dir("home"))
            .stdin(Stdio::null());
        for var in [
            "FLINT_AUTH_SECRET",
            "FLINT_AUTH_SECRET_FILE",
            "FLINT_AUTH_ENABLED",
            "FLINT_MASTER",
            "FLINT_MASTER_HOST",
            "FLINT_MASTER_PORT",
            "FLINT_MASTER_WEBUI_PORT",
            "FLINT_WORKER_PORT",
            "FLINT_SSH_OPTS",
        ] {
            c.env_remove(var);
        }
        if let Some(p) = &self.path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", p.display()));
        }
        c
    }

    fn start(&self, extra: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut args = vec![
            "start-cluster",
            "--master-port",
            &port,
            "--webui-port",
            "0",
            "--conf",
            "worker.timeout=60s",
        ];
        args.extend_from_slice(extra);
        self.flint(&args).output().unwrap()
    }

    fn stop(&self) -> Output {
        self.flint(&["stop-cluster", "--timeout", "20s"])
            .output()
            .unwrap()
    }

    /// `flint status` output once it lists `n` ALIVE workers.
    fn wait_for_alive_workers(&self, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self
                .flint(&["status", "--master", &self.master_url()])
                .output()
                .unwrap();
            let (stdout, stderr) = text(&out);
            let last = format!("{stdout}{stderr}");
            let alive = last
                .lines()
                .filter(|l| l.starts_with("worker-") && l.contains(" ALIVE "))
                .count();
            if out.status.success() && alive == n && last.contains(&format!("Workers: {n} alive")) {
                return last;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {n} ALIVE workers; last status:\n{last}"
            );
            std::thread::yield_now();
        }
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.dir("pids").join(name)
    }

    /// The one log file in `dir` whose name starts with `prefix`.
    fn log_named(&self, dir: &str, prefix: &str) -> PathBuf {
        let found: Vec<PathBuf> = std::fs::read_dir(self.dir(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(prefix) && name.ends_with(".out")
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "log files {prefix}*.out in {dir}: {found:?}"
        );
        found.into_iter().next().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut pids = self.seen.clone();
        for d in &self.pid_dirs {
            if let Ok(entries) = std::fs::read_dir(d) {
                for e in entries.flatten() {
                    if let Ok(t) = std::fs::read_to_string(e.path()) {
                        pids.extend(t.trim().parse::<i32>().ok());
                    }
                }
            }
        }
        for pid in pids {
            if pid > 1 && alive(pid) && cmdline(pid).first().map(String::as_str) == Some(FLINT) {
                // SAFETY: kill(2) on a single pid that is one of this test's daemons.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn start_status_refuse_then_stop_two_local_workers() {
    let mut c = Cluster::new("# two workers on this machine\nlocalhost\n\nlocalhost   # again\n");
    // Leftovers of an earlier run: a master pid file naming a dead process and a
    // worker pid file holding no pid. start-cluster removes both.
    let dead = dead_pid();
    std::fs::write(c.pid_file("flint-master.pid"), format!("{dead}\n")).unwrap();
    std::fs::write(c.pid_file("flint-worker-1.pid"), "not-a-pid\n").unwrap();

    let out = c.start(&[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!("flint-master.pid (pid {dead} is not running)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("flint-worker-1.pid (it holds \"not-a-pid\", not a pid)"),
        "{stdout}"
    );

    // Pid files name live daemons of the right role, started with our settings.
    let master = read_pid(&c.pid_file("flint-master.pid"));
    let w1 = read_pid(&c.pid_file("flint-worker-1.pid"));
    let w2 = read_pid(&c.pid_file("flint-worker-2.pid"));
    c.seen.extend([master, w1, w2]);
    assert!(
        stdout.contains(&format!("started master (pid {master})")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("started worker 1 (pid {w1}) on localhost")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("started worker 2 (pid {w2}) on localhost")),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 of 2 started workers registered"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("master URL: {}", c.master_url())),
        "{stdout}"
    );
    assert!(stdout.contains("status:     http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("/api/v1/status"), "{stdout}");
    for pid in [master, w1, w2] {
        assert!(alive(pid), "pid {pid} is not running");
    }
    let m = cmdline(master);
    assert_eq!(m[0], FLINT);
    assert_eq!(m[1], "master");
    assert!(
        m.windows(2).any(|w| w == ["--conf", "worker.timeout=60s"]),
        "{m:?}"
    );
    let w = cmdline(w1);
    assert_eq!(&w[1..3], ["worker", &c.master_url()]);

    // Each daemon logs to its own file; the master's says it is listening.
    let master_log = c.log_named("logs", "flint-master-");
    let w1_log = c.log_named("logs", "flint-worker-1-");
    let w2_log = c.log_named("logs", "flint-worker-2-");
    assert!(
        stdout.contains(&master_log.display().to_string()),
        "{stdout}"
    );
    let port = c.port;
    wait_until("the master's log line", Duration::from_secs(10), || {
        std::fs::read_to_string(&master_log)
            .unwrap()
            .contains(&format!(
                "flint master listening on flint://127.0.0.1:{port}"
            ))
    });
    // No secret was configured: start-cluster created the default one, private,
    // and the master (and the workers, which registered) use it.
    let secret = c.dir("home/secret");
    let meta = std::fs::metadata(&secret).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&secret).unwrap().trim().len(), 64);
    let using = format!("cluster secret: using {}", secret.display());
    wait_until(&using, Duration::from_secs(10), || {
        std::fs::read_to_string(&master_log)
            .unwrap()
            .contains(&using)
    });
    for log in [&w1_log, &w2_log] {
        wait_until("a worker's log line", Duration::from_secs(10), || {
            std::fs::read_to_string(log)
                .unwrap()
                .contains("flint worker ")
        });
    }

    // The daemons outlived start-cluster and are in sessions of their own.
    let status = c.wait_for_alive_workers(2);
    assert!(
        status.contains(&format!("Master {}  ALIVE", c.master_url())),
        "{status}"
    );
    for pid in [master, w1, w2] {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        assert_eq!(
            fields[3],
            pid.to_string(),
            "pid {pid} is not a session leader"
        );
    }

    // A second start is refused and changes nothing.
    let out = c.start(&[]);
    let (stdout2, stderr2) = text(&out);
    assert!(!out.status.success(), "{stdout2}");
    assert!(
        stderr2.contains(&format!("master already running as pid {master}"))
            && stderr2.contains("stop it first"),
        "{stderr2}"
    );
    assert_eq!(read_pid(&c.pid_file("flint-master.pid")), master);
    assert!(alive(master) && alive(w1) && alive(w2));

    // stop-cluster stops all three and removes the pid files.
    let out = c.stop();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        format!("stopped worker 1 (pid {w1})"),
        format!("stopped worker 2 (pid {w2})"),
        format!("stopped master (pid {master})"),
    ] {
        assert!(stdout.contains(&line), "{line:?} missing from:\n{stdout}");
    }
    let w2_at = stdout.find("stopped worker 2").unwrap();
    assert!(w2_at < stdout.find("stopped master").unwrap(), "{stdout}");
    for pid in [master, w1, w2] {
        assert!(!alive(pid), "pid {pid} survived stop-cluster");
    }
    for f in [
        "flint-master.pid",
        "flint-worker-1.pid",
        "flint-worker-2.pid",
    ] {
        assert!(!c.pid_file(f).exists(), "{f} left behind");
    }
    // The workers shut down on SIGTERM (they log it), rather than being killed.
    let w1_text = std::fs::read_to_string(&w1_log).unwrap();
    assert!(w1_text.contains("received SIGTERM"), "{w1_text}");

    // Nothing left to stop is not an error.
    let out = c.stop();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("no workers running here"), "{stdout}");
    assert!(
        stdout.contains("no master running (no pid file"),
        "{stdout}"
    );
}

#[test]
fn remote_workers_are_started_and_stopped_over_ssh() {
    // "127.0.0.2" is not a local name, so it goes through ssh; the stand-in runs
    // the command here with the pid and log directories mapped to "remote" ones.
    let mut c = Cluster::new("127.0.0.2\nlocalhost\n");
    let bin = c.dir("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let ssh = bin.join("ssh");
    let (pids, logs) = (c.dir("pids"), c.dir("logs"));
    let (rpids, rlogs) = (c.dir("remote-pids"), c.dir("remote-logs"));
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\necho \"$@\" >> {calls}\nshift 3\nscript=$(printf '%s' \"$1\" | sed \
             -e 's#{pids}#{rpids}#g' -e 's#{logs}#{rlogs}#g')\nexport FLINT_HOME={rhome}\n\
             exec sh -c \"$script\"\n",
            calls = c.dir("ssh-calls").display(),
            rhome = c.dir("remote-home").display(),
            pids = pids.display(),
            rpids = rpids.display(),
            logs = logs.display(),
            rlogs = rlogs.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    c.path_prefix = Some(bin);
    c.pid_dirs.push(rpids.clone());

    let out = c.start(&["--master-host", "127.0.0.1"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let calls = std::fs::read_to_string(c.dir("ssh-calls")).unwrap();
    assert!(
        calls.starts_with("-o StrictHostKeyChecking=accept-new 127.0.0.2 cd "),
        "{calls}"
    );
    assert_eq!(calls.matches("StrictHostKeyChecking").count(), 1, "{calls}");

    let remote = read_pid(&rpids.join("flint-worker-1.pid"));
    let local = read_pid(&c.pid_file("flint-worker-1.pid"));
    let master = read_pid(&c.pid_file("flint-master.pid"));
    c.seen.extend([remote, local, master]);
    assert!(
        stdout.contains(&format!("127.0.0.2: started worker 1 (pid {remote})")),
        "{stdout}"
    );
    let args = cmdline(remote);
    assert_eq!(args[0], FLINT);
    assert!(
        args.windows(2).any(|w| w == ["--host", "127.0.0.2"]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["--webui-port", "0"]),
        "{args:?}"
    );
    let remote_log = c.log_named("remote-logs", "flint-worker-1-127.0.0.2");
    assert!(remote_log.exists());
    // The secret the master created here was copied to the remote home over ssh's
    // stdin (not its command line), private; the remote worker registers with it.
    let secret = std::fs::read(c.dir("home/secret")).unwrap();
    let copied = c.dir("remote-home/secret");
    assert_eq!(std::fs::read(&copied).unwrap(), secret);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&copied), 0o600);
    assert_eq!(mode(&c.dir("remote-home")), 0o700);
    assert!(
        stdout.contains(&format!(
            "127.0.0.2: copied the cluster secret to {} (mode 0600)",
            copied.display()
        )),
        "{stdout}"
    );
    let secret_text = String::from_utf8(secret).unwrap();
    assert!(
        !calls.contains(secret_text.trim()),
        "the secret was on ssh's command line"
    );

    let status = c.wait_for_alive_workers(2);
    assert!(
        status
            .lines()
            .any(|l| l.contains(" 127.0.0.2:") && l.contains(" ALIVE ")),
        "{status}"
    );

    let out = c.stop();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!("127.0.0.2: stopped worker 1 (pid {remote})")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("stopped worker 1 (pid {local})")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("stopped master (pid {master})")),
        "{stdout}"
    );
    for pid in [remote, local, master] {
        assert!(!alive(pid), "pid {pid} survived stop-cluster");
    }
    assert!(!rpids.join("flint-worker-1.pid").exists());
    assert!(!c.pid_file("flint-worker-1.pid").exists());
    let calls = std::fs::read_to_string(c.dir("ssh-calls")).unwrap();
    assert_eq!(
        calls
            .matches("-o StrictHostKeyChecking=accept-new 127.0.0.2 ")
            .count(),
        2,
        "one ssh call to start, one to stop:\n{calls}"
    );

    // Again: the remote side reports nothing to stop, and that is fine.
    let out = c.stop();
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("127.0.0.2: no worker 1 running (no pid file"),
        "{stdout}"
    );
}

#[test]
fn stop_cleans_stale_pid_files_and_never_signals_a_reused_pid() {
    let c = Cluster::new("localhost\n");
    // The master pid file names a live process that is not a flint master (as
    // after a reboot reused the pid): it must be left alone.
    let mut stranger = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
    let stranger_pid = stranger.id() as i32;
    std::fs::write(c.pid_file("flint-master.pid"), format!("{stranger_pid}\n")).unwrap();
    let dead = dead_pid();
    std::fs::write(c.pid_file("flint-worker-3.pid"), format!("{dead}\n")).unwrap();

    let out = c.stop();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("worker 3: no worker running (stale pid file")
            && stdout.contains(&format!("pid {dead} is not running")),
        "{stdout}"
    );
    assert!(
        stdout.contains("master: no master running (stale pid file")
            && stdout.contains(&format!("pid {stranger_pid} is not a flint master")),
        "{stdout}"
    );
    assert!(!c.pid_file("flint-master.pid").exists());
    assert!(!c.pid_file("flint-worker-3.pid").exists());
    assert!(
        alive(stranger_pid),
        "stop-cluster signalled a foreign process"
    );
    drop(stranger.stdin.take());
    assert!(stranger.wait().unwrap().success());
}

#[test]
fn a_master_that_cannot_start_is_reported_with_its_log_and_no_worker_starts() {
    let c = Cluster::new("localhost\n");
    let _busy = TcpListener::bind(("127.0.0.1", c.port)).unwrap();
    let out = c.start(&[]);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let master_log = c.log_named("logs", "flint-master-");
    assert!(
        stderr.contains("the master (pid")
            && stderr.contains("exited")
            && stderr.contains(&master_log.display().to_string()),
        "{stderr}"
    );
    // The log's tail is quoted and names the port it could not bind.
    assert!(stderr.contains(&c.port.to_string()), "{stderr}");
    assert!(!c.pid_file("flint-master.pid").exists());
    assert!(!stdout.contains("started worker"), "{stdout}");
    assert!(!c.pid_file("flint-worker-1.pid").exists());
}

#[test]
fn start_cluster_without_a_workers_file_refuses_and_starts_nothing() {
    let c = Cluster::new("");
    std::fs::remove_file(c.dir("conf/workers")).unwrap();
    let out = c.start(&[]);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let file = c.dir("conf/workers");
    assert!(
        stderr.contains(&format!("no workers file {}", file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("`localhost` starts a worker on this machine"),
        "{stderr}"
    );
    assert!(stderr.contains("flint local --workers N"), "{stderr}");
    assert!(
        stderr.contains("flint worker flint://HOST:PORT"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stdout.contains("started"), "{stdout}");
    assert_eq!(std::fs::read_dir(c.dir("pids")).unwrap().count(), 0);
}

#[test]
fn daemon_files_live_in_the_flint_home_and_local_workers_share_the_machine() {
    let mut c = Cluster::new("localhost\nlocalhost\n");
    fn flint(c: &Cluster, args: &[&str]) -> Command {
        let mut cmd = c.flint(args);
        cmd.env_remove("FLINT_PID_DIR").env_remove("FLINT_LOG_DIR");
        cmd
    }
    c.pid_dirs.push(c.dir("home/run"));
    let port = c.port.to_string();
    let out = flint(
        &c,
        &["start-cluster", "--master-port", &port, "--webui-port", "0"],
    )
    .output()
    .unwrap();
    let (stdout, stderr) = text(&out);
    let home = c.dir("home");
    let master = read_pid(&home.join("run/flint-master.pid"));
    let w1 = read_pid(&home.join("run/flint-worker-1.pid"));
    let w2 = read_pid(&home.join("run/flint-worker-2.pid"));
    c.seen.extend([master, w1, w2]);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    c.log_named("home/logs", "flint-master-");
    c.log_named("home/logs", "flint-worker-2-");
    // The status URL is the master's own, with the port it really bound (0 asked).
    let line = stdout
        .lines()
        .find(|l| l.starts_with("status:     "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let url = line.trim_start_matches("status:     ");
    assert!(url.starts_with("http://127.0.0.1:"), "{stdout}");
    assert!(url.ends_with("/api/v1/status"), "{stdout}");
    assert!(!url.starts_with("http://127.0.0.1:0/"), "{stdout}");

    // Each local worker offers its share of the machine, not all of it.
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let each = (cpus / 2).max(1);
    let status = c.wait_for_alive_workers(2);
    let out = c
        .flint(&["status", "--master", &c.master_url(), "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let workers = json["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{status}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_mb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024;
    for w in workers {
        assert_eq!(w["cores"].as_u64(), Some(each), "{w}");
        let mb = w["memory_mb"].as_u64().unwrap();
        assert!(
            2 * mb <= total_mb,
            "each worker offers {mb} MiB of {total_mb}"
        );
    }
    assert!(
        stdout.contains(&format!("each offers {each} core(s)")),
        "{stdout}"
    );
    // Work dirs are in the home too; nothing landed where the command ran.
    assert!(home.join("work").is_dir());
    assert_eq!(
        std::fs::read_dir(c.dir("run")).unwrap().count(),
        0,
        "files in the command's directory"
    );

    let out = flint(&c, &["stop-cluster", "--timeout", "20s"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for pid in [master, w1, w2] {
        wait_until("the daemons to exit", Duration::from_secs(20), || {
            !alive(pid)
        });
    }
    assert_eq!(std::fs::read_dir(home.join("run")).unwrap().count(), 0);
}
