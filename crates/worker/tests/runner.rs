//! Tests of the executor runner against real `/bin/sh` child processes.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use flint_worker::runner::{
    self, cleanup_old_app_dirs, executor_work_dir, ExitStatus, LaunchSpec, Placeholders,
    RunnerError,
};

/// Upper bound for anything a test waits for; generous so a loaded machine
/// does not make tests flaky, and only reached when a test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// Set in the environment of the re-executed test binary to make
/// `helper_mini_worker` act as a worker; the value is the work directory.
const HELPER_ENV: &str = "FLINT_RUNNER_TEST_MINI_WORKER";

fn sh_spec(dir: &Path, script: &str) -> LaunchSpec {
    LaunchSpec {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".to_owned(), script.to_owned(), "sh".to_owned()],
        dir: dir.to_owned(),
        ..LaunchSpec::default()
    }
}

/// Polls `cond` every few milliseconds until it holds or [`DEADLINE`] passes.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads a file that a child writes, once it holds a complete line.
fn read_line_file(path: &Path) -> String {
    let mut text = String::new();
    wait_until(&format!("a line in {}", path.display()), || {
        text = fs::read_to_string(path).unwrap_or_default();
        text.ends_with('\n')
    });
    text.trim().to_owned()
}

/// State letter and start time of process `pid` from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(String, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which is in parentheses and may hold spaces:
    // fields[0] is field 3 (state), fields[19] is field 22 (start time).
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(((*fields.first()?).to_owned(), (*fields.get(19)?).to_owned()))
}

/// Identity of a live process: its start time, or `None` if it is gone or a
/// zombie (dead, waiting for whoever reaps it).
fn live_start_time(pid: u32) -> Option<String> {
    proc_stat(pid)
        .filter(|(state, _)| state != "Z" && state != "X")
        .map(|(_, start)| start)
}

/// Waits until the process `pid` that had start time `start` is dead.
fn assert_dies(what: &str, pid: u32, start: &str) {
    wait_until(&format!("{what} (pid {pid}) to die"), || {
        live_start_time(pid).as_deref() != Some(start)
    });
}

fn alive(what: &str, pid: u32) -> String {
    live_start_time(pid).unwrap_or_else(|| panic!("{what} (pid {pid}) is not running"))
}

#[tokio::test]
async fn substitutes_placeholders_and_writes_logs_in_work_dir() {
    let work = tempfile::tempdir().unwrap();
    let dir = executor_work_dir(work.path(), "app-1", "3").unwrap();
    let script = r#"
        printf '%s\n' "$@"
        echo "env=$FLINT_TEST_VAR"
        echo "pwd=$(pwd)"
        if read line; then echo "stdin=$line"; else echo "stdin=eof"; fi
        echo "to stderr" >&2
    "#;
    let mut spec = sh_spec(&dir, script);
    spec.args.extend(
        [
            "{{EXECUTOR_ID}}",
            "--cores={{CORES}}",
            "{{HOSTNAME}}",
            "{{APP_ID}}",
            "{{WORKER_URL}}",
            "{{UNKNOWN}}",
        ]
        .map(String::from),
    );
    spec.env = vec![(
        "FLINT_TEST_VAR".to_owned(),
        "{{APP_ID}}/{{EXECUTOR_ID}}".to_owned(),
    )];
    spec.placeholders = Placeholders {
        executor_id: "3".to_owned(),
        hostname: "host-a".to_owned(),
        cores: 2,
        app_id: "app-1".to_owned(),
        worker_url: "flint://Worker@127.0.0.1:7078".to_owned(),
        binary: None,
    };

    let child = runner::spawn(spec).await.unwrap();
    assert_eq!(child.dir(), dir);
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.unwrap();
    assert_eq!(status, ExitStatus::Exited(0));
    assert_eq!(child.try_status(), Some(ExitStatus::Exited(0)));

    let stdout = fs::read_to_string(dir.join("stdout")).unwrap();
    let expected = format!(
        "3\n--cores=2\nhost-a\napp-1\nflint://Worker@127.0.0.1:7078\n{{{{UNKNOWN}}}}\n\
         env=app-1/3\npwd={}\nstdin=eof\n",
        fs::canonicalize(&dir).unwrap().display()
    );
    assert_eq!(stdout, expected);

    let stderr = fs::read_to_string(child.stderr_path()).unwrap();
    let header = format!(
        "Flint Executor Command: \"/bin/sh\" \"-c\" \"{script}\" \"sh\" \"3\" \"--cores=2\" \
         \"host-a\" \"app-1\" \"flint://Worker@127.0.0.1:7078\" \"{{{{UNKNOWN}}}}\"\n{}\n\n",
        "=".repeat(40)
    );
    assert!(stderr.starts_with(&header), "{stderr}");
    // The environment is not shown: it may hold secrets.
    assert!(!stderr.contains("app-1/3"), "{stderr}");
    assert!(stderr.ends_with("to stderr\n"), "{stderr}");
}

#[tokio::test]
async fn logs_are_appended_across_runs() {
    let work = tempfile::tempdir().unwrap();
    for run in 1..=2 {
        let child = runner::spawn(sh_spec(work.path(), &format!("echo run{run}")))
            .await
            .unwrap();
        assert!(child.wait().await.success());
    }
    let stdout = fs::read_to_string(work.path().join("stdout")).unwrap();
    assert_eq!(stdout, "run1\nrun2\n");
    let stderr = fs::read_to_string(work.path().join("stderr")).unwrap();
    assert_eq!(stderr.matches("Flint Executor Command:").count(), 2);
}

#[tokio::test]
async fn reports_exit_code_and_signal() {
    let work = tempfile::tempdir().unwrap();
    let child = runner::spawn(sh_spec(&work.path().join("a"), "exit 7"))
        .await
        .unwrap();
    let status = child.wait().await;
    assert_eq!(status, ExitStatus::Exited(7));
    assert_eq!(status.describe(), "exited with code 7");
    // wait() can be called again and gives the same answer.
    assert_eq!(child.wait().await, ExitStatus::Exited(7));

    let child = runner::spawn(sh_spec(&work.path().join("b"), "kill -9 $$"))
        .await
        .unwrap();
    let status = child.wait().await;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(status.describe(), "killed by signal 9 (SIGKILL)");
}

#[tokio::test]
async fn spawn_failure_names_the_command() {
    let work = tempfile::tempdir().unwrap();
    let spec = LaunchSpec {
        program: PathBuf::from("/nonexistent/flint-executor"),
        dir: work.path().join("x"),
        ..LaunchSpec::default()
    };
    let err = runner::spawn(spec).await.unwrap_err();
    assert!(matches!(err, RunnerError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/flint-executor"),
        "{err}"
    );
}

#[tokio::test]
async fn unusable_work_dir_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("file");
    File::create(&file).unwrap();
    let err = runner::spawn(sh_spec(&file.join("sub"), "true"))
        .await
        .unwrap_err();
    assert!(matches!(err, RunnerError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("file/sub"), "{err}");
    // The OS's reason is the error's source, not also part of its message:
    // printed with its sources, it shows once.
    let cause = "Not a directory (os error 20)";
    assert!(!err.to_string().contains(cause), "{err}");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some(cause));
    let line = flint_worker::error_chain(&err);
    assert_eq!(line.matches(cause).count(), 1, "{line}");
}

#[tokio::test]
async fn kill_uses_term_first() {
    let work = tempfile::tempdir().unwrap();
    let child = runner::spawn(sh_spec(work.path(), "exec sleep 1000"))
        .await
        .unwrap();
    let status = child.kill(DEADLINE).await;
    // Dying of SIGTERM shows that SIGKILL was not needed.
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert_eq!(child.try_status(), Some(status));
    // Killing again is harmless and reports the same status.
    assert_eq!(child.kill(DEADLINE).await, status);
}

/// A stopped child (SIGSTOP) that handles SIGTERM (as an executor does) is continued
/// along with SIGTERM, so its handler runs at once instead of SIGKILL coming after
/// the grace. (An unhandled SIGTERM kills even a stopped process.)
#[tokio::test]
async fn kill_continues_a_stopped_child_so_its_term_handler_runs() {
    let work = tempfile::tempdir().unwrap();
    let child = runner::spawn(sh_spec(
        work.path(),
        "trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done",
    ))
    .await
    .unwrap();
    assert_eq!(read_line_file(&child.stdout_path()), "ready");
    assert!(child.signal_group(libc::SIGSTOP));
    let status = child.kill(DEADLINE).await;
    assert_eq!(
        status.code(),
        Some(3),
        "the TERM handler did not run: {status}"
    );
}

#[tokio::test]
async fn kill_escalates_to_sigkill_after_grace() {
    let work = tempfile::tempdir().unwrap();
    // The ignored disposition of TERM survives exec, so sleep ignores it too.
    let child = runner::spawn(sh_spec(
        work.path(),
        "trap '' TERM; echo ready; exec sleep 1000",
    ))
    .await
    .unwrap();
    // Only signal once the trap is in place.
    assert_eq!(read_line_file(&child.stdout_path()), "ready");
    let status = child.kill(Duration::from_millis(200)).await;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
}

#[tokio::test]
async fn kill_reaches_the_whole_process_group() {
    let work = tempfile::tempdir().unwrap();
    let child = runner::spawn(sh_spec(
        work.path(),
        "sleep 1000 & echo $! > grandchild.pid; wait",
    ))
    .await
    .unwrap();
    let grandchild: u32 = read_line_file(&work.path().join("grandchild.pid"))
        .parse()
        .unwrap();
    let start = alive("grandchild", grandchild);
    let status = child.kill(DEADLINE).await;
    assert!(status.signal().is_some(), "{status}");
    assert_dies("grandchild", grandchild, &start);
}

#[tokio::test]
async fn leftovers_in_the_group_die_when_the_child_exits() {
    let work = tempfile::tempdir().unwrap();
    let child = runner::spawn(sh_spec(
        work.path(),
        "sleep 1000 & echo $! > grandchild.pid; \
         while [ ! -e go ]; do sleep 0.01; done; exit 3",
    ))
    .await
    .unwrap();
    let grandchild: u32 = read_line_file(&work.path().join("grandchild.pid"))
        .parse()
        .unwrap();
    let start = alive("grandchild", grandchild);
    File::create(work.path().join("go")).unwrap();
    assert_eq!(child.wait().await, ExitStatus::Exited(3));
    assert_dies("grandchild", grandchild, &start);
}

#[tokio::test]
async fn dropping_the_handle_kills_the_group() {
    let work = tempfile::tempdir().unwrap();
    let child = runner::spawn(sh_spec(
        work.path(),
        "sleep 1000 & echo $! > grandchild.pid; wait",
    ))
    .await
    .unwrap();
    let grandchild: u32 = read_line_file(&work.path().join("grandchild.pid"))
        .parse()
        .unwrap();
    let pid = child.pid();
    let child_start = alive("child", pid);
    let grandchild_start = alive("grandchild", grandchild);
    drop(child);
    assert_dies("child", pid, &child_start);
    assert_dies("grandchild", grandchild, &grandchild_start);
    // The child is ours, so once reaped it is gone from /proc entirely.
    wait_until("the child to be reaped", || {
        proc_stat(pid).is_none_or(|(_, start)| start != child_start)
    });
}

#[tokio::test]
async fn wait_is_cancel_safe() {
    let work = tempfile::tempdir().unwrap();
    let child = runner::spawn(sh_spec(work.path(), "exec sleep 1000"))
        .await
        .unwrap();
    // A wait that is given up on leaves the handle usable.
    let gave_up = tokio::time::timeout(Duration::from_millis(20), child.wait()).await;
    assert!(gave_up.is_err());
    assert_eq!(child.try_status(), None);
    let (waited, killed) = tokio::join!(child.wait(), child.kill(DEADLINE));
    assert_eq!(waited, killed);
}

/// Not a test on its own: when re-executed with [`HELPER_ENV`] set, it acts as
/// a worker that starts a long-running child through the runner, from a
/// thread that then exits, prints the child's pid and waits to be killed.
#[test]
fn helper_mini_worker() {
    let Ok(dir) = std::env::var(HELPER_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    // Spawn from a short-lived thread with its own runtime: the death signal
    // must not fire when this thread exits, only when the process dies.
    let spawner_dir = dir.clone();
    let child = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(runner::spawn(sh_spec(&spawner_dir, "exec sleep 1000")))
            .unwrap()
    })
    .join()
    .unwrap();
    println!("CHILD_PID={}", child.pid());
    // Hold the handle (dropping it would kill the child) until we are killed.
    loop {
        std::thread::park();
    }
}

/// Kills and reaps the helper process when dropped, so a failing assertion
/// never leaves it behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGKILLs process `pid` when dropped if it is still the process that had
/// start time `start`, so a failing test leaves no orphan behind.
struct KillPidOnDrop {
    pid: u32,
    start: String,
}

impl Drop for KillPidOnDrop {
    fn drop(&mut self) {
        if live_start_time(self.pid).as_deref() == Some(self.start.as_str()) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

#[test]
fn children_die_when_the_worker_is_sigkilled() {
    let work = tempfile::tempdir().unwrap();
    let mut helper = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_mini_worker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = helper.0.stdout.take().unwrap();
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    // Ends when the helper's stdout closes, at the latest when it is killed.
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may have printed `test helper_mini_worker ... ` first.
            if let Some((_, value)) = line.split_once("CHILD_PID=") {
                let _ = pid_tx.send(value.parse::<u32>().ok());
            }
        }
    });
    let pid = pid_rx
        .recv_timeout(DEADLINE)
        .ok()
        .flatten()
        .expect("the mini worker did not report a child pid");
    // The thread that asked for the spawn has exited; the child must live on.
    let start = alive("child of the mini worker", pid);
    let _orphan_guard = KillPidOnDrop {
        pid,
        start: start.clone(),
    };

    // SAFETY: kill(2) has no memory-safety preconditions; the helper is our
    // unreaped child.
    let rc = unsafe { libc::kill(helper.0.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0);
    let status = helper.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert_dies("child of the SIGKILLed mini worker", pid, &start);
    reader.join().unwrap();
}

fn set_mtime(path: &Path, time: SystemTime) {
    // Opening read-only works for directories too on Linux.
    File::open(path).unwrap().set_modified(time).unwrap();
}

#[test]
fn cleanup_removes_only_old_stopped_app_dirs() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let now = SystemTime::now();
    let ttl = Duration::from_secs(7 * 24 * 3600);
    let old = now - ttl - Duration::from_secs(3600);
    let recent = now - Duration::from_secs(3600);

    // Builds root/<app>/0/{stdout,stderr} with every mtime set to `time`.
    let make_app = |name: &str, time: SystemTime| -> PathBuf {
        let app = root.join(name);
        let exec = app.join("0");
        fs::create_dir_all(&exec).unwrap();
        for file in ["stdout", "stderr"] {
            fs::write(exec.join(file), "x").unwrap();
            set_mtime(&exec.join(file), time);
        }
        set_mtime(&exec, time);
        set_mtime(&app, time);
        app
    };
    let old_app = make_app("app-old", old);
    let running_app = make_app("app-running", old);
    let recent_app = make_app("app-recent", recent);
    // Old everywhere except one deeply nested file.
    let nested_recent = make_app("app-nested-recent", old);
    let deep = nested_recent.join("0").join("deep");
    fs::create_dir(&deep).unwrap();
    fs::write(deep.join("file"), "x").unwrap();
    set_mtime(&deep, old);
    set_mtime(&nested_recent.join("0"), old);
    set_mtime(&nested_recent, old);
    // An old, empty directory.
    let empty = root.join("driver-old");
    fs::create_dir(&empty).unwrap();
    set_mtime(&empty, old);
    // The binary cache bounds itself; the cleanup leaves it alone.
    let binaries = make_app(flint_worker::binaries::BINARY_CACHE_DIR, old);
    // A plain old file at the top is not an app directory.
    let stray = root.join("stray.log");
    fs::write(&stray, "x").unwrap();
    set_mtime(&stray, old);

    let running: HashSet<String> = ["app-running".to_owned()].into();
    let mut removed = cleanup_old_app_dirs(root, ttl, &running, now).unwrap();
    removed.sort();
    let mut expected = vec![empty.clone(), old_app.clone()];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(!old_app.exists() && !empty.exists());
    assert!(running_app.exists() && recent_app.exists() && nested_recent.exists());
    assert!(stray.exists());

    // A week later with nothing running, everything left is old.
    let later = now + ttl + Duration::from_secs(7200);
    let mut removed = cleanup_old_app_dirs(root, ttl, &HashSet::new(), later).unwrap();
    removed.sort();
    let mut expected = vec![running_app, recent_app, nested_recent];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(stray.exists() && binaries.exists());
}

#[test]
fn cleanup_of_a_missing_work_dir_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("missing");
    let err = cleanup_old_app_dirs(&missing, Duration::ZERO, &HashSet::new(), SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, RunnerError::ReadWorkDir { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
}
