//! Smoke test of `flint-cluster-bench placement` at a tiny scale (2 workers,
//! 4 executors) on an in-process master and workers, so the benchmark cannot
//! rot unnoticed. It asserts what was placed, never how fast.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flint_master::{MasterHandle, MasterOptions};
use flint_worker::service::{WorkerHandle, WorkerOptions};

/// Upper bound for anything the test waits for; only reached on failure.
const DEADLINE: Duration = Duration::from_secs(30);

/// One ephemeral cluster secret for the in-process master, its workers and the
/// benchmark's child process.
fn conf() -> flint_conf::Conf {
    static CONF: std::sync::OnceLock<flint_conf::Conf> = std::sync::OnceLock::new();
    CONF.get_or_init(|| flint_rpc::secret::with_ephemeral(flint_conf::Conf::new()))
        .clone()
}

async fn start_master() -> MasterHandle {
    flint_master::start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: conf(),
    })
    .await
    .expect("master starts")
}

async fn start_worker(master: &MasterHandle, dir: &std::path::Path) -> WorkerHandle {
    flint_worker::service::start(WorkerOptions {
        masters: vec![master.rpc_address().clone()],
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        cores: Some(2),
        memory_mb: Some(1024),
        work_dir: dir.to_owned(),
        conf: conf(),
    })
    .await
    .expect("worker starts")
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_places_every_executor_and_releases_them() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master().await;
    let w1 = start_worker(&master, &dir.path().join("w1")).await;
    let w2 = start_worker(&master, &dir.path().join("w2")).await;
    wait_until("2 ALIVE workers", || master.status().alive_workers == 2).await;

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flint-cluster-bench"))
        .args(["placement", "--master"])
        .arg(master.rpc_address().to_string())
        .args(["--executors", "4", "--timeout-s", "30", "--label", "smoke"])
        .env("FLINT_AUTH_SECRET", conf().get("auth.secret").unwrap())
        .env("FLINT_HOME", dir.path().join("home"))
        .output()
        .await
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "placement failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("valid JSON");
    assert_eq!(line["bench"], "placement");
    assert_eq!(line["label"], "smoke");
    assert_eq!(line["ok"], true);
    assert_eq!(line["executors_added"], 4);
    assert_eq!(line["alive_workers"], 2);
    assert!(line["executors_removed"].as_array().unwrap().is_empty());
    for key in ["registered_ms", "all_added_ms", "all_running_ms"] {
        assert!(line[key].as_f64().is_some(), "{key} missing in {line}");
    }
    // Spread out (the default): two executors on each worker.
    let per_worker = line["executors_per_worker"].as_object().unwrap();
    let mut counts: Vec<u64> = per_worker.values().map(|v| v.as_u64().unwrap()).collect();
    counts.sort_unstable();
    assert_eq!(counts, [2, 2]);

    // The application stopped: its executors are gone and the cores free.
    assert_eq!(master.status().cores_used, 0);
    assert_eq!(master.status().completed_apps.len(), 1);

    for w in [&w1, &w2] {
        w.shutdown();
        w.wait().await.unwrap();
    }
    master.shutdown();
    master.wait().await;
}
