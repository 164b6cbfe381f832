//! Operator friction, through real `flint` processes: one clear line from `status`
//! against a dead master, each cause of an error printed once, `flint local`'s
//! master lines free of its workers' spans and its workers sharing the machine,
//! `run-example` leaving no temporary directory behind, and a worker's work dir
//! under the flint home rather than the directory the command runs in; a master on
//! 0.0.0.0 (RPC and web UI) prints addresses a peer can dial, never 0.0.0.0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../daemon/tests/http_client/mod.rs"]
mod http_client;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `flint` in an empty environment, in `dir`, with `dir/home` as its flint home.
fn flint(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flint"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("FLINT_HOME", dir.join("home"))
        .env("TMPDIR", dir.join("tmp"))
        .current_dir(dir)
        .stdin(Stdio::null());
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn status_against_a_dead_master_prints_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1: nothing listens there (a port freed by the test could be taken by
    // another test's daemon meanwhile).
    let port = 1;
    let o = flint(dir.path())
        .args(["status", "--master", &format!("flint://127.0.0.1:{port}")])
        .env("FLINT_AUTH_ENABLED", "false")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "flint: cannot reach the master at flint://127.0.0.1:{port}: "
        )),
        "{err}"
    );
    assert!(err.contains("is a master running there?"), "{err}");
    assert!(!err.contains("WARN"), "{err}");
}

#[test]
fn a_worker_whose_work_dir_cannot_be_made_names_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = flint(dir.path())
        .args([
            "worker",
            "flint://127.0.0.1:7077",
            "--port",
            "0",
            "--webui-port",
            "0",
        ])
        .arg("--work-dir")
        .arg(file.join("work"))
        .env("FLINT_AUTH_ENABLED", "false")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    let last = err.lines().last().unwrap();
    assert!(last.contains("cannot create work dir"), "{err}");
    assert!(last.contains("choose another with --work-dir"), "{err}");
    let cause = "Not a directory (os error 20)";
    assert_eq!(last.matches(cause).count(), 1, "{last}");
}

#[test]
fn a_worker_works_under_the_flint_home_not_where_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = flint(dir.path())
        .args(["worker", &format!("flint://127.0.0.1:{}", dead_port())])
        .args(["--port", "0", "--webui-port", "0"])
        .env("FLINT_AUTH_ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let want = format!("work dir {}", dir.path().join("home/work").display());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
            break;
        }
        seen.push_str(&line);
        if line.contains("flint worker listening on") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains(&want), "{seen}");
    assert!(dir.path().join("home/work").is_dir());
    assert!(!dir.path().join("work").exists());
}

#[test]
fn flint_local_master_lines_carry_no_worker_span_and_workers_share_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = flint(dir.path())
        .args([
            "local",
            "--workers",
            "2",
            "--port",
            "0",
            "--webui-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Both registrations, as the master logs them.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines
        .iter()
        .filter(|l: &&String| l.contains("Registering worker"))
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("no two registrations:\n{}", lines.join("\n")),
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    // Every master line's outermost span is the master's own (its per-message
    // spans, such as the worker a registration is about, nest inside it); before,
    // they showed under a bare `worker{…}` as if the worker had logged them.
    let master_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" flint_master"))
        .collect();
    assert!(!master_lines.is_empty(), "{}", lines.join("\n"));
    for l in master_lines {
        let spans = l.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            spans.starts_with("master{url=") || spans.starts_with("flint_master"),
            "a master line outside the master's span: {l}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO master{url=") && l.contains("Registering worker")),
        "{}",
        lines.join("\n")
    );
    let cpus = std::thread::available_parallelism().unwrap().get();
    let each = (cpus / 2).max(1);
    assert!(
        out.contains(&format!("each worker offers {each} core(s)")),
        "{out}"
    );
}

#[test]
fn run_example_removes_its_temporary_directory() {
    let dir = tempfile::tempdir().unwrap();
    let o = flint(dir.path())
        .args(["run-example", "pi", "--slices", "2", "--samples", "1000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Pi is roughly"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_on_every_interface_prints_dialable_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = flint(dir.path())
        .args([
            "master",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--webui-port",
            "0",
        ])
        .args(["--conf", "ui.host=0.0.0.0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("master.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (line, stdout) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    })
    .await
    .unwrap();
    // The rest of stdout stays open (and unread) until the master is killed.
    let _stdout = stdout;
    // "flint master listening on flint://H:P; status at http://H:W/api/v1/status"
    let _kill = KillOnDrop(child);
    assert!(
        line.starts_with("flint master listening on flint://"),
        "{line}"
    );
    assert!(!line.contains("0.0.0.0"), "{line}");
    let url = line
        .split("status at ")
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"))
        .trim();
    // The printed URL answers: the host it names is one this machine is reached at.
    let (code, body) = match http_client::try_get_url(url).await {
        Ok(answer) => answer,
        Err(e) => panic!(
            "GET {url}: {e}; the master's stderr:\n{}",
            std::fs::read_to_string(dir.path().join("master.stderr")).unwrap_or_default()
        ),
    };
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rpc = line
        .trim_start_matches("flint master listening on ")
        .split(';')
        .next()
        .unwrap();
    assert_eq!(doc["url"].as_str(), Some(rpc), "{body}");
}

/// Kills and reaps a child when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_stdout_is_gone_keeps_serving() {
    use std::os::fd::FromRawFd as _;
    let dir = tempfile::tempdir().unwrap();
    // A pipe whose reading end is closed: every write to stdout fails (EPIPE).
    let mut fds = [0; 2];
    // SAFETY: pipe(2) writes two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is ours, open, and closed only here.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is ours and open; the Stdio owns it from here on.
    let broken = unsafe { Stdio::from_raw_fd(fds[1]) };
    let stderr_path = dir.path().join("master.stderr");
    let child = flint(dir.path())
        .args(["master", "--port", "0", "--webui-port", "0"])
        .stdout(broken)
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // The web UI URL from its log; then it must still answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if let Some(u) = log
            .lines()
            .find_map(|l| l.split("master web UI at ").nth(1))
        {
            break u.trim().to_string();
        }
        assert!(child.0.try_wait().unwrap().is_none(), "exited:\n{log}");
        assert!(Instant::now() < deadline, "no web UI line:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (code, _) = http_client::get_url(&format!("{url}/api/v1/status")).await;
    assert_eq!(code, 200);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the master died: {}",
        std::fs::read_to_string(&stderr_path).unwrap()
    );
}
