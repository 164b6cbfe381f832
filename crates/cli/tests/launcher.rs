//! The launcher library (`flint-launcher`) as a program uses it: handles started
//! through the real `flint submit`, against real `flint master` / `flint worker`
//! processes (the harness in `common/mod.rs`) or, where only the launcher protocol is
//! under test, with this test binary itself as the application (`launcher_child`
//! below plays a role named by `FLINT_LAUNCHER_TEST_ROLE`: a reporter that drops its
//! connection, says nothing, proves a wrong secret, reuses its key, …). All handles of
//! this file share the process's one launcher server, so every test also shows that
//! it keeps serving the others. Nothing sleeps to synchronize.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flint_launcher::backend::{Backend, LauncherEnv};
use flint_launcher::protocol::{LauncherMsg, SetState, SERVER_ENDPOINT};
use flint_launcher::server::LauncherServer;
use flint_launcher::{AppHandle, DeployMode, Launcher, Listener, Redirect, State};
use flint_rpc::{RpcAddress, RpcConf, RpcEnv, Secret};

const ROLE_ENV: &str = "FLINT_LAUNCHER_TEST_ROLE";
const DIR_ENV: &str = "FLINT_LAUNCHER_TEST_DIR";

// ===================================================================
// The child roles (this binary, run by `flint submit` as the driver)
// ===================================================================

/// Not a test: the application side of the tests below when `FLINT_LAUNCHER_TEST_ROLE`
/// is set (it exits the process with the role's verdict); a no-op otherwise.
#[test]
fn launcher_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let code = if role == "host" {
        host_role()
    } else {
        child_role(&role)
    };
    std::process::exit(code);
}

/// A launcher process of its own (not launched by one): starts a flint-wait
/// application with kill_on_drop, writes submit's pid once it runs, then waits to be
/// killed.
fn host_role() -> i32 {
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let h = role_launcher(&dir, "flint-wait")
        .kill_on_drop(true)
        .start_application(vec![])
        .unwrap();
    rt().block_on(wait_state(&h, State::Running));
    std::fs::write(dir.join("submit.pid.tmp"), h.pid().unwrap().to_string()).unwrap();
    std::fs::rename(dir.join("submit.pid.tmp"), dir.join("submit.pid")).unwrap();
    println!("host ready");
    loop {
        std::thread::park();
    }
}

/// Exit 0 when the role saw what it should, 42 when the launcher let through what it
/// must refuse, 43 when something else went wrong.
fn child_role(role: &str) -> i32 {
    let le = match LauncherEnv::from_process() {
        Ok(Some(le)) => le,
        other => {
            eprintln!("no launcher environment: {other:?}");
            return 43;
        }
    };
    let server = RpcAddress::new("127.0.0.1", le.port);
    match role {
        // Hello, RUNNING, then the connection goes without a final state; exit 0.
        "drop" => {
            let b = Backend::connect(&le, || {}).unwrap();
            b.set_state(State::Running);
            b.flush();
            drop(b);
            0
        }
        // A wrong secret is refused (and does not use the key up); the right one works.
        "wrong-secret" => {
            let wrong = LauncherEnv {
                secret: Secret::new("not-the-secret"),
                ..le.clone()
            };
            match Backend::connect(&wrong, || {}) {
                Ok(_) => return 42,
                Err(e) => println!("wrong secret refused: {e}"),
            }
            let b = Backend::connect(&le, || {}).unwrap();
            b.set_state(State::Running);
            b.finish(State::Finished);
            0
        }
        // The key is single-use: a second connection with it is refused.
        "reuse" => {
            let b = Backend::connect(&le, || {}).unwrap();
            b.set_state(State::Running);
            b.flush();
            let again = Backend::connect(&le, || {});
            b.finish(State::Finished);
            match again {
                Ok(_) => 42,
                Err(e) => {
                    println!("reused secret refused: {e}");
                    0
                }
            }
        }
        // Proves the key but never says hello; exits 0 once the server closed the
        // connection (42 if it never does).
        "silent" => rt().block_on(async {
            let conf = RpcConf {
                secret: Some(le.secret.clone()),
                ..RpcConf::default()
            };
            let env = RpcEnv::client_with_key(conf, le.key_id.clone()).unwrap();
            // A lookup goes to the built-in verifier: a connection, no launcher message.
            env.setup_endpoint_ref::<LauncherMsg>(&server, SERVER_ENDPOINT)
                .await
                .unwrap();
            println!("connected without hello");
            closed_within(&env, Duration::from_secs(30)).await
        }),
        // A state before the hello: the handle is disposed and the connection closed.
        "early" => rt().block_on(async {
            let conf = RpcConf {
                secret: Some(le.secret.clone()),
                ..RpcConf::default()
            };
            let env = RpcEnv::client_with_key(conf, le.key_id.clone()).unwrap();
            let r = env
                .setup_endpoint_ref::<LauncherMsg>(&server, SERVER_ENDPOINT)
                .await
                .unwrap();
            r.send(SetState {
                state: State::Running,
            })
            .unwrap();
            closed_within(&env, Duration::from_secs(30)).await
        }),
        // A flint program (local master) that runs small jobs until its context is
        // stopped; writes its pid first.
        "flint-wait" => {
            if let Ok(dir) = std::env::var(DIR_ENV) {
                std::fs::write(
                    Path::new(&dir).join("driver.pid"),
                    std::process::id().to_string(),
                )
                .unwrap();
            }
            let ctx = flint::Context::builder()
                .master("local[1]")
                .app_name("waits")
                .get_or_create()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if ctx.range(0, 10, 1).count().is_err() {
                    println!("context stopped");
                    return 0;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            43
        }
        other => {
            eprintln!("unknown role {other}");
            43
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// 0 once `env` has no live connection, 42 if it still has one after `limit`.
async fn closed_within(env: &RpcEnv, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if env.connections().is_empty() {
            println!("connection closed by the launcher");
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    42
}

// ===================================================================
// Helpers of the tests
// ===================================================================

/// Records every state a handle reports, in order, without repeats.
#[derive(Clone, Default)]
struct Recorder {
    states: Arc<Mutex<Vec<State>>>,
    infos: Arc<Mutex<usize>>,
}

impl Listener for Recorder {
    fn state_changed(&self, _h: &AppHandle, s: State) {
        let mut v = self.states.lock().unwrap();
        if v.last() != Some(&s) {
            v.push(s);
        }
    }
    fn info_changed(&self, _h: &AppHandle) {
        *self.infos.lock().unwrap() += 1;
    }
}

impl Recorder {
    fn seen(&self) -> Vec<State> {
        self.states.lock().unwrap().clone()
    }
}

/// A launcher running this workspace's `flint`, its output in `dir`.
fn launcher(dir: &Path, name: &str) -> Launcher {
    Launcher::new()
        .flint_binary(FLINT)
        .redirect_output(Redirect::File(dir.join(format!("{name}.stdout"))))
        .redirect_error(Redirect::File(dir.join(format!("{name}.stderr"))))
        .app_name(name)
}

/// A launcher whose application is this test binary playing `role` (client mode; the
/// master is never contacted).
fn role_launcher(dir: &Path, role: &str) -> Launcher {
    launcher(dir, role)
        .master("flint://127.0.0.1:1")
        .app_binary(std::env::current_exe().unwrap())
        .app_args([
            "launcher_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir.to_str().unwrap())
}

fn start(l: &Launcher) -> (AppHandle, Recorder) {
    let rec = Recorder::default();
    let h = l.start_application(vec![Arc::new(rec.clone())]).unwrap();
    (h, rec)
}

async fn wait_state(h: &AppHandle, want: State) {
    wait_for(&format!("the handle to reach {want}"), async || {
        if h.state() == want {
            Ok(())
        } else {
            Err(format!("{h:?}"))
        }
    })
    .await
}

async fn wait_exited(h: &AppHandle) -> Option<i32> {
    wait_for("the child to exit", async || {
        if h.pid().is_none() {
            Ok(h.exit_code())
        } else {
            Err(format!("{h:?}"))
        }
    })
    .await
}

fn output(dir: &Path, name: &str) -> String {
    let out = std::fs::read_to_string(dir.join(format!("{name}.stdout"))).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join(format!("{name}.stderr"))).unwrap_or_default();
    format!("stdout:\n{out}\nstderr:\n{err}")
}

fn test_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("launcher-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An executable shell script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The flint `pi` example, built if needed (a no-op when fresh).
fn pi_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let path = me
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("pi");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "-q", "-p", "flint", "--example", "pi"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(built && path.exists(), "cannot build {}", path.display());
    path
}

// ===================================================================
// Client mode
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn client_mode_reports_every_state_of_a_real_application_on_a_cluster() {
    let pi = pi_binary();
    let mut c = Cluster::new("launcher-client-pi");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 2, "1g").await;
    c.wait_alive(&m, &[&w.id]).await;
    let l = launcher(&c.dir, "pi")
        .master(&m.url)
        .app_binary(&pi)
        .app_args(["4"])
        .conf("executor.memory", "256m")
        .env("FLINT_HOME", c.home.to_str().unwrap());
    let (h, rec) = start(&l);
    let end = h.wait_final(PATIENCE).await;
    assert_eq!(end, State::Finished, "{}", output(&c.dir, "pi"));
    assert_eq!(
        rec.seen(),
        [
            State::Connected,
            State::Submitted,
            State::Running,
            State::Finished
        ]
    );
    let app = h.app_id().unwrap();
    assert!(app.starts_with("app-"), "{app}");
    assert!(*rec.infos.lock().unwrap() >= 1);
    assert_eq!(wait_exited(&h).await, Some(0));
    assert!(
        output(&c.dir, "pi").contains("Pi is roughly"),
        "{}",
        output(&c.dir, "pi")
    );
    // Its key was used up and its handle forgotten.
    let server = LauncherServer::get().unwrap();
    assert!(server.port() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_asks_the_driver_to_stop_its_context_and_the_app_ends_killed() {
    let dir = test_dir("stop");
    let (h, rec) = start(&role_launcher(&dir, "flint-wait"));
    wait_state(&h, State::Running).await;
    assert!(h.app_id().unwrap().starts_with("local-"));
    h.stop().unwrap();
    assert_eq!(
        h.wait_final(PATIENCE).await,
        State::Killed,
        "{}",
        output(&dir, "flint-wait")
    );
    // The program saw its context stopped and exited by itself.
    assert_eq!(
        wait_exited(&h).await,
        Some(0),
        "{}",
        output(&dir, "flint-wait")
    );
    assert!(output(&dir, "flint-wait").contains("context stopped"));
    assert_eq!(
        rec.seen(),
        [
            State::Connected,
            State::Submitted,
            State::Running,
            State::Killed
        ]
    );
    // A final state is sticky, and stop() needs a connection.
    let e = h.stop().unwrap_err().to_string();
    assert!(e.contains("not connected"), "{e}");
    assert_eq!(h.state(), State::Killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_kills_submit_and_the_driver_it_runs() {
    let dir = test_dir("kill");
    let (h, rec) = start(&role_launcher(&dir, "flint-wait"));
    wait_state(&h, State::Running).await;
    let submit = h.pid().unwrap();
    let driver: u32 = std::fs::read_to_string(dir.join("driver.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    h.kill();
    assert_eq!(h.state(), State::Killed);
    wait_gone("submit and its driver", &[submit, driver]).await;
    assert_eq!(wait_exited(&h).await, None, "killed by a signal");
    assert_eq!(
        rec.seen(),
        [
            State::Connected,
            State::Submitted,
            State::Running,
            State::Killed
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_crashes_before_connecting_is_failed() {
    let dir = test_dir("crash");
    let app = script(&dir, "crash.sh", "echo crashing >&2; exit 3");
    let l = launcher(&dir, "crash")
        .master("flint://127.0.0.1:1")
        .app_binary(&app);
    let (h, rec) = start(&l);
    assert_eq!(h.wait_final(PATIENCE).await, State::Failed);
    assert_eq!(rec.seen(), [State::Failed]);
    assert_eq!(wait_exited(&h).await, Some(3));
    assert!(output(&dir, "crash").contains("crashing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_connection_dropped_before_a_final_state_with_exit_0_is_lost() {
    let dir = test_dir("drop");
    let (h, rec) = start(&role_launcher(&dir, "drop"));
    assert_eq!(
        h.wait_final(PATIENCE).await,
        State::Lost,
        "{}",
        output(&dir, "drop")
    );
    assert_eq!(rec.seen(), [State::Connected, State::Running, State::Lost]);
    assert_eq!(wait_exited(&h).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_the_wrong_secret_is_refused_and_the_right_one_still_works() {
    let dir = test_dir("wrong");
    let (h, rec) = start(&role_launcher(&dir, "wrong-secret"));
    assert_eq!(
        h.wait_final(PATIENCE).await,
        State::Finished,
        "{}",
        output(&dir, "wrong-secret")
    );
    assert_eq!(
        wait_exited(&h).await,
        Some(0),
        "{}",
        output(&dir, "wrong-secret")
    );
    assert_eq!(
        rec.seen(),
        [State::Connected, State::Running, State::Finished]
    );
    let out = output(&dir, "wrong-secret");
    assert!(
        out.contains("wrong secret refused") && out.contains("authentication failed"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_secret_is_refused() {
    let dir = test_dir("reuse");
    let (h, rec) = start(&role_launcher(&dir, "reuse"));
    assert_eq!(h.wait_final(PATIENCE).await, State::Finished);
    assert_eq!(wait_exited(&h).await, Some(0), "{}", output(&dir, "reuse"));
    assert_eq!(
        rec.seen(),
        [State::Connected, State::Running, State::Finished]
    );
    assert!(output(&dir, "reuse").contains("reused secret refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_child_is_dropped_at_the_timeout_while_the_server_serves_others() {
    let dir = test_dir("silent");
    let started = Instant::now();
    let silent = role_launcher(&dir, "silent").conf("launcher.child_connection_timeout", "1s");
    let (h, rec) = start(&silent);
    // Meanwhile another application connects and finishes normally.
    let (other, other_rec) = start(&role_launcher(&dir, "reuse"));
    assert_eq!(h.wait_final(PATIENCE).await, State::Lost);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(rec.seen(), [State::Lost]);
    // The server closed the silent connection: the child saw it and exited 0.
    assert_eq!(wait_exited(&h).await, Some(0), "{}", output(&dir, "silent"));
    assert_eq!(other.wait_final(PATIENCE).await, State::Finished);
    assert_eq!(
        other_rec.seen(),
        [State::Connected, State::Running, State::Finished]
    );
    // A message before the hello disposes the handle at once (no timeout needed).
    let (early, early_rec) = start(&role_launcher(&dir, "early"));
    assert_eq!(early.wait_final(PATIENCE).await, State::Lost);
    assert_eq!(early_rec.seen(), [State::Lost]);
    assert_eq!(
        wait_exited(&early).await,
        Some(0),
        "{}",
        output(&dir, "early")
    );
    // And the server still serves a new handle.
    let (last, _) = start(&role_launcher(&dir, "drop"));
    assert_eq!(last.wait_final(PATIENCE).await, State::Lost);
    assert_eq!(last.exit_code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_launcher_settings_are_named() {
    let e = Launcher::new()
        .flint_binary(FLINT)
        .master("flint://127.0.0.1:1")
        .app_binary("/bin/true")
        .conf("launcher.child_connection_timeout", "soon")
        .start_application(vec![])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("launcher.child_connection_timeout") && e.contains("soon"),
        "{e}"
    );
    let e = Launcher::new()
        .flint_binary(FLINT)
        .app_binary("/bin/true")
        .start_application(vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no master set"), "{e}");
    // flint submit's own refusal (exit 2) before anything connects: FAILED.
    let dir = test_dir("bad-submit");
    let l = launcher(&dir, "bad")
        .master("flint://127.0.0.1:1")
        .app_binary(dir.join("missing"));
    let (h, _) = start(&l);
    assert_eq!(h.wait_final(PATIENCE).await, State::Failed);
    assert_eq!(wait_exited(&h).await, Some(2));
}

// ===================================================================
// Cluster mode
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn cluster_mode_follows_the_driver_through_the_master() {
    let mut c = Cluster::new("launcher-cluster");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 2, "1g").await;
    c.wait_alive(&m, &[&w.id]).await;
    let outside = tempfile::tempdir().unwrap();
    let go = c.dir.join("go");
    let waits = script(
        outside.path(),
        "waits.sh",
        &format!(
            "while [ ! -e {} ]; do sleep 0.02; done; echo done",
            go.display()
        ),
    );
    let cluster = |name: &str, app: &Path| {
        launcher(&c.dir, name)
            .master(&m.url)
            .deploy_mode(DeployMode::Cluster)
            .submit_arg("--driver-memory")
            .submit_arg("128m")
            .app_binary(app)
            .env("FLINT_HOME", c.home.to_str().unwrap())
    };

    // SUBMITTED → RUNNING → FINISHED, following the driver by id.
    let (h, rec) = start(&cluster("finishes", &waits));
    wait_state(&h, State::Running).await;
    let driver = h.driver_id().unwrap();
    assert!(driver.starts_with("driver-"), "{driver}");
    std::fs::write(&go, "").unwrap();
    assert_eq!(
        h.wait_final(PATIENCE).await,
        State::Finished,
        "{}",
        output(&c.dir, "finishes")
    );
    assert_eq!(
        rec.seen(),
        [
            State::Connected,
            State::Submitted,
            State::Running,
            State::Finished
        ]
    );
    assert_eq!(wait_exited(&h).await, Some(0));
    std::fs::remove_file(&go).unwrap();

    // A driver that fails: FAILED (the master's word, then submit's exit 1).
    let fails = script(outside.path(), "fails.sh", "exit 7");
    let (h, rec) = start(&cluster("fails", &fails));
    assert_eq!(
        h.wait_final(PATIENCE).await,
        State::Failed,
        "{}",
        output(&c.dir, "fails")
    );
    assert_eq!(rec.seen()[..2], [State::Connected, State::Submitted]);
    assert_eq!(wait_exited(&h).await, Some(1));

    // stop(): submit asks the master to kill the driver and relays KILLED (exit 3).
    let (h, rec) = start(&cluster("stopped", &waits));
    wait_state(&h, State::Running).await;
    let stopped = h.driver_id().unwrap();
    h.stop().unwrap();
    assert_eq!(
        h.wait_final(PATIENCE).await,
        State::Killed,
        "{}",
        output(&c.dir, "stopped")
    );
    assert_eq!(
        wait_exited(&h).await,
        Some(3),
        "{}",
        output(&c.dir, "stopped")
    );
    assert_eq!(
        rec.seen(),
        [
            State::Connected,
            State::Submitted,
            State::Running,
            State::Killed
        ]
    );
    c.wait_status(&m, "the stopped driver KILLED", |s| {
        s.completed_drivers
            .iter()
            .any(|d| d.id.to_string() == stopped && d.state == flint_proto::DriverState::Killed)
    })
    .await;

    // kill(): KILLED at once; the master is asked to kill the driver too.
    let (h, _) = start(&cluster("killed", &waits));
    wait_state(&h, State::Running).await;
    let killed = h.driver_id().unwrap();
    h.kill();
    assert_eq!(h.state(), State::Killed);
    c.wait_status(&m, "the killed driver KILLED", |s| {
        s.completed_drivers
            .iter()
            .any(|d| d.id.to_string() == killed && d.state == flint_proto::DriverState::Killed)
    })
    .await;
    wait_exited(&h).await;
    assert_eq!(h.state(), State::Killed);
    c.terminate(m.proc);
    c.wait_exit(m.proc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_with_kill_on_drop_kills_the_child() {
    let dir = test_dir("drop-kills");
    let (h, _rec) = start(&role_launcher(&dir, "flint-wait").kill_on_drop(true));
    wait_state(&h, State::Running).await;
    let submit = h.pid().unwrap();
    let driver: u32 = std::fs::read_to_string(dir.join("driver.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let clone = h.clone();
    drop(h);
    // A clone still holds it: nothing is killed yet.
    assert!(alive(submit) && alive(driver));
    assert_eq!(clone.state(), State::Running);
    drop(clone);
    wait_gone(
        "submit and its driver after the last handle went",
        &[submit, driver],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_cluster_mode_driver_is_followed_through_its_relaunch() {
    let mut c = Cluster::new("launcher-supervise");
    let m = c.start_master(0, &[]).await;
    let w = c.start_worker(&m, 2, "1g").await;
    c.wait_alive(&m, &[&w.id]).await;
    let outside = tempfile::tempdir().unwrap();
    let marker = outside.path().join("failed-once");
    // Fails its first attempt, succeeds its second.
    let app = script(
        outside.path(),
        "once.sh",
        &format!(
            "if [ -e {m} ]; then echo second; exit 0; fi; touch {m}; exit 1",
            m = marker.display()
        ),
    );
    let l = launcher(&c.dir, "supervised")
        .master(&m.url)
        .deploy_mode(DeployMode::Cluster)
        .submit_arg("--supervise")
        .submit_arg("--driver-memory")
        .submit_arg("128m")
        .app_binary(&app)
        .env("FLINT_HOME", c.home.to_str().unwrap());
    let (h, rec) = start(&l);
    assert_eq!(
        h.wait_final(PATIENCE).await,
        State::Finished,
        "{}",
        output(&c.dir, "supervised")
    );
    let seen = rec.seen();
    assert_eq!(seen[..2], [State::Connected, State::Submitted], "{seen:?}");
    let relaunch = seen
        .iter()
        .position(|s| *s == State::Relaunching)
        .unwrap_or_else(|| panic!("no RELAUNCHING in {seen:?}"));
    assert!(
        seen[relaunch..].contains(&State::Running) && seen.last() == Some(&State::Finished),
        "{seen:?}"
    );
    assert!(marker.exists());
    assert_eq!(
        wait_exited(&h).await,
        Some(0),
        "{}",
        output(&c.dir, "supervised")
    );
    c.terminate(m.proc);
    c.wait_exit(m.proc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launchers_death_takes_submit_and_its_driver_with_it_under_kill_on_drop() {
    let dir = test_dir("host-dies");
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args([
            "launcher_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, "host")
        .env(DIR_ENV, dir.to_str().unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_in = |name: &str| -> Option<u32> {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    let (submit, driver) = wait_for(
        "the launcher process's application to run",
        async || match (pid_in("submit.pid"), pid_in("driver.pid")) {
            (Some(s), Some(d)) => Ok((s, d)),
            other => Err(format!("pids so far: {other:?}")),
        },
    )
    .await;
    assert!(alive(submit) && alive(driver));
    host.kill().unwrap(); // SIGKILL: no destructor runs in the launcher process
    host.wait().unwrap();
    wait_gone(
        "submit and its driver after their launcher died",
        &[submit, driver],
    )
    .await;
}
