//! The README's main job and demo, run as a user would: the `flint` binary, real
//! child processes, real TCP on 127.0.0.1, each test with a flint home of its own
//! (so the cluster secret is created there, never in the real `~/.flint`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `flint` with `home` as its flint home and no secret configured.
fn flint(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flint"));
    c.env("FLINT_HOME", home);
    for var in [
        "FLINT_AUTH_SECRET",
        "FLINT_AUTH_SECRET_FILE",
        "FLINT_AUTH_ENABLED",
    ] {
        c.env_remove(var);
    }
    c
}

fn alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[test]
fn run_example_pi_prints_the_estimate_and_leaves_no_executor_behind() {
    let home = tempfile::tempdir().unwrap();
    let out = flint(home.path())
        .args([
            "run-example",
            "pi",
            "--workers",
            "2",
            "--slices",
            "8",
            "--samples",
            "200000",
        ])
        .arg("--work-dir")
        .arg(home.path().join("example-work"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Pi is roughly "))
        .expect("an estimate");
    let pi: f64 = line["Pi is roughly ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((pi - std::f64::consts::PI).abs() < 0.01, "{line}");
    assert!(
        line.contains("computed by 2 executor process(es)"),
        "{line}"
    );
    assert!(
        stdout.contains("master UI      http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("registered"), "{stdout}");
    // No secret was configured: the embedded cluster created the default one, and
    // the driver and the executor processes authenticated with it.
    let secret_file = home.path().join("secret");
    assert!(
        stdout.contains(&format!(
            "cluster secret created {} (mode 0600)",
            secret_file.display()
        )),
        "{stdout}"
    );
    let meta = std::fs::metadata(&secret_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let secret = secret.trim();
    assert_eq!(secret.len(), 64, "256 bits, hex");
    // The executors were real processes of this binary, fetched by the workers from
    // the driver by content hash: the job reports the pids that ran its tasks (none of
    // them this process), their command lines hold no secret, and every one of them is
    // gone once the job has ended.
    let pids: Vec<u32> = line
        .split("pids ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .expect("pids in the result line")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let logs = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("executor logs"))
        .expect("log path");
    let base = PathBuf::from(logs.trim().split("/worker-*").next().unwrap());
    let mut headers = 0;
    let mut found = Vec::new();
    for w in std::fs::read_dir(&base).unwrap() {
        let w = w.unwrap().path();
        let binaries = std::fs::read_dir(w.join("binaries")).unwrap().count();
        assert_eq!(
            binaries,
            1,
            "one cached binary per worker in {}",
            w.display()
        );
        for app in std::fs::read_dir(&w).unwrap() {
            let app = app.unwrap().path();
            if app.file_name().is_some_and(|n| n == "binaries") {
                continue;
            }
            for exec in std::fs::read_dir(app).unwrap() {
                let dir = exec.unwrap().path();
                let header = std::fs::read_to_string(dir.join("stderr")).unwrap();
                assert!(header.starts_with("Flint Executor Command:"), "{header}");
                assert!(!header.contains(secret), "secret in argv: {header}");
                headers += 1;
                found.push(format!("{}:\n{header}", dir.display()));
            }
        }
    }
    assert_eq!(
        headers,
        2,
        "one executor per worker; found:\n{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        found.join("\n")
    );
    assert_eq!(pids.len(), 2, "one executor per worker: {pids:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "executor outlived the job: {pids:?}"
        );
        std::thread::yield_now();
    }
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn rpc_demo_runs_two_processes() {
    let home = tempfile::tempdir().unwrap();
    let out = flint(home.path()).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[peer]   sent 100000 one-way adds and asked for the total: 5000050000"),
        "{stdout}"
    );
    assert!(stdout.contains("note received through my ref"), "{stdout}");
    assert!(stdout.contains("verified"), "{stdout}");
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let home = tempfile::tempdir().unwrap();
    let flint = || flint(home.path());
    let out = flint().args(["worker", "spark://h:7077"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spark://h:7077") && err.contains("flint://"),
        "{err}"
    );
    let out = flint().args(["run-example", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown example"));
    let out = flint()
        .args(["worker", "flint://127.0.0.1:1", "--cores", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cores"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = flint()
        .args([
            "master",
            "--conf",
            "worker.timeout=soon",
            "--port",
            "0",
            "--webui-port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("worker.timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
