//! Settings as an operator meets them, through real `flint` processes: typos in
//! `--conf`, the TOML file and `FLINT_*` variables are caught naming the nearest
//! setting, `app.*` keys pass, sizes take decimals, offers beyond the machine warn,
//! settings stand behind the daemons' flags; `flint conf` lists the registry, and the
//! generated `docs/configuration.md` and `conf/flint.toml.template` match it. The
//! registry's defaults are checked against the defaults the code applies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flint_conf::registry::{self, Component, SETTINGS};
use flint_conf::Conf;

/// `flint` in an empty environment (no `FLINT_*` of the caller's), in `dir`, with
/// `dir` as its flint home and conf dir.
fn flint(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flint"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("FLINT_HOME", dir)
        .env("FLINT_CONF_DIR", dir.join("conf"))
        .current_dir(dir);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must fail, returning its stderr.
fn fails(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(!o.status.success(), "succeeded: {}", stderr(&o));
    stderr(&o)
}

/// Starts a daemon, waits (up to 60 s) for its stdout line containing `ready`, then
/// kills it; returns that line and everything it wrote to stderr.
fn start_then_kill(c: &mut Command, dir: &Path, ready: &str) -> (String, String) {
    let log = dir.join(format!("stderr-{}.log", rand_suffix()));
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(&ready) {
                let _ = tx.send(line);
                break;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    let err = std::fs::read_to_string(&log).unwrap();
    (
        line.unwrap_or_else(|_| panic!("never ready; stderr:\n{err}")),
        err,
    )
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn toml(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("test.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A worker that comes up without a reachable master or secret (it retries quietly).
fn worker_args<'a>(dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "worker",
        "flint://127.0.0.1:1",
        "--webui-port",
        "0",
        "--work-dir",
        dir,
        "--conf",
        "auth.enabled=false",
    ];
    a.extend(extra);
    a
}

#[test]
fn a_typo_in_conf_is_refused_by_every_command_with_the_nearest_key() {
    let dir = tempfile::tempdir().unwrap();
    let want = "unknown setting `deploy.spreadout`; did you mean `deploy.spread_out`?";
    for cmd in [
        &["master", "--port", "0", "--webui-port", "0"][..],
        &["worker", "flint://127.0.0.1:1", "--webui-port", "0"][..],
        &["status", "--master", "flint://127.0.0.1:1"][..],
        &["local", "--port", "0", "--webui-port", "0"][..],
    ] {
        let err = fails(
            flint(dir.path())
                .args(cmd)
                .args(["--conf", "deploy.spreadout=false"]),
        );
        assert!(err.contains(want), "{cmd:?}: {err}");
        // Refused before anything started: nothing listened, nothing was created.
        assert!(!err.contains("listening"), "{cmd:?}: {err}");
    }
    assert!(!dir.path().join("secret").exists());
}

#[test]
fn the_config_file_refuses_unknown_keys_and_wrong_types() {
    let dir = tempfile::tempdir().unwrap();
    let master = ["master", "--port", "0", "--webui-port", "0", "--config"];
    let file = toml(dir.path(), "foo = 1\n");
    let err = fails(flint(dir.path()).args(master).arg(&file));
    assert!(
        err.contains(&format!(
            "config file {}: unknown setting `foo`",
            file.display()
        )) && err.contains("`flint conf` lists every setting")
            && err.contains("`app.`"),
        "{err}"
    );
    let file = toml(dir.path(), "[master]\nport = \"abc\"\n");
    let err = fails(flint(dir.path()).args(master).arg(&file));
    assert!(
        err.contains(
            "setting master.port = \"abc\" is not valid: expected a whole number from 0 to 65535"
        ),
        "{err}"
    );
    let file = toml(dir.path(), "[deploy]\nspreadout = false\n");
    let err = fails(flint(dir.path()).args(master).arg(&file));
    assert!(
        err.contains("unknown setting `deploy.spreadout`; did you mean `deploy.spread_out`?"),
        "{err}"
    );
    // The default place, conf/flint.toml, is checked the same way.
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/flint.toml"),
        "[worker]\ntimout = \"5s\"\n",
    )
    .unwrap();
    let err = fails(flint(dir.path()).args(["status", "--master", "flint://127.0.0.1:1"]));
    assert!(err.contains("did you mean `worker.timeout`?"), "{err}");
}

#[test]
fn a_flint_variable_typo_warns_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(
        flint(dir.path())
            .env("FLINT_DEPLOY_SPREADOUT", "false")
            .env("FLINT_RPC_TEST_PEER", "x")
            .env("FLINT_HOEM", "/nowhere")
            .args(["status", "--master", "flint://127.0.0.1:1"])
            .args(["--conf", "auth.enabled=false"]),
    );
    assert!(
        err.contains(
            "environment variable FLINT_DEPLOY_SPREADOUT is not a flint setting and is ignored; \
             did you mean FLINT_DEPLOY_SPREAD_OUT (deploy.spread_out)?"
        ),
        "{err}"
    );
    assert!(
        err.contains("FLINT_HOEM") && err.contains("did you mean FLINT_HOME?"),
        "{err}"
    );
    // Known variables are not warned about; the command went on to its real work.
    assert!(!err.contains("FLINT_RPC_TEST_PEER"), "{err}");
    assert!(!err.contains("FLINT_HOME is not"), "{err}");
    assert!(err.contains("cannot reach the master at"), "{err}");
}

#[test]
fn user_keys_under_app_pass_and_settings_stand_behind_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = toml(
        dir.path(),
        "[master]\nport = 0\nwebui_port = 0\n[app]\nmy_setting = \"anything\"\n",
    );
    let (line, err) = start_then_kill(
        flint(dir.path())
            .env("FLINT_MASTER_HOST", "127.0.0.1")
            .args(["master", "--config"])
            .arg(&file)
            .args(["--conf", "app.team.owner=me", "--conf", "app.x=1"]),
        dir.path(),
        "flint master listening on",
    );
    // Port 0 from the file, not the default 7077.
    assert!(
        line.starts_with("flint master listening on flint://127.0.0.1:")
            && !line.contains(":7077;"),
        "{line}"
    );
    assert!(
        !err.contains("unknown setting") && !err.contains("app.team"),
        "{err}"
    );
}

#[test]
fn memory_takes_decimals_and_offers_beyond_the_machine_warn() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work").display().to_string();
    let (_, err) = start_then_kill(
        flint(dir.path()).args(worker_args(&work, &["--memory", "1.5g", "--cores", "1"])),
        dir.path(),
        "listening on",
    );
    assert!(err.contains("with 1 cores, 1536 MB"), "{err}");
    assert!(!err.contains("more than"), "{err}");

    let (_, err) = start_then_kill(
        flint(dir.path()).args(worker_args(
            &work,
            &["--memory", "100t", "--cores", "100000"],
        )),
        dir.path(),
        "listening on",
    );
    assert!(
        err.contains("--cores 100000: 100000 cores is more than the")
            && err.contains("this machine has"),
        "{err}"
    );
    assert!(
        err.contains("--memory 100t: 102400.0 GiB is more than the")
            && err.contains("GiB of memory this machine has"),
        "{err}"
    );

    // The same through the settings behind the flags, from the environment.
    let (_, err) = start_then_kill(
        flint(dir.path())
            .env("FLINT_WORKER_CORES", "100000")
            .env("FLINT_WORKER_MEMORY", "2.5g")
            .args(worker_args(&work, &[])),
        dir.path(),
        "listening on",
    );
    assert!(
        err.contains("worker.cores = 100000: 100000 cores is more than"),
        "{err}"
    );
    assert!(err.contains("2560 MB"), "{err}");

    // A bad size names the flag it came in.
    let err = fails(flint(dir.path()).args(["local", "--memory-per-worker", "abc"]));
    assert!(
        err.contains("--memory-per-worker abc is not valid"),
        "{err}"
    );
}

fn conf_output(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let o = flint(dir.path()).arg("conf").args(args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn flint_conf_lists_every_setting() {
    let table = conf_output(&[]);
    assert!(table.starts_with("KEY "), "{table}");
    for s in SETTINGS {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(s.key))
            .unwrap_or_else(|| panic!("{} missing from flint conf", s.key));
        assert!(row.contains(s.doc), "{row}");
        assert!(row.contains(&s.default.describe()), "{row}");
    }
    let json: serde_json::Value = serde_json::from_str(&conf_output(&["--json"])).unwrap();
    let listed = json["settings"].as_array().unwrap();
    assert_eq!(listed.len(), SETTINGS.len());
    let spread = listed
        .iter()
        .find(|s| s["key"] == "deploy.spread_out")
        .unwrap();
    assert_eq!(spread["type"], "bool");
    assert_eq!(spread["default"], "true");
    assert_eq!(spread["env"], "FLINT_DEPLOY_SPREAD_OUT");
    assert_eq!(spread["readers"], serde_json::json!(["master"]));
    let ask = listed
        .iter()
        .find(|s| s["key"] == "rpc.ask_timeout")
        .unwrap();
    assert_eq!(ask["bare_unit"], "s");
    assert!(ask["default"].is_null());
    assert!(json["environment"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "FLINT_HOME"));
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn generated_files_match_the_registry() {
    for (path, flag) in [
        ("docs/configuration.md", "--markdown"),
        ("conf/flint.toml.template", "--template"),
    ] {
        let fresh = conf_output(&[flag]);
        let on_disk = std::fs::read_to_string(repo(path)).unwrap_or_default();
        assert!(
            on_disk == fresh,
            "{path} is stale; regenerate with `cargo run -p flint-cli -- conf {flag} > {path}`"
        );
    }
}

#[test]
fn the_template_uncommented_is_a_valid_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for line in conf_output(&["--template"]).lines() {
        if let Some(assign) = line.strip_prefix("# ") {
            if assign.contains(" = ") && !assign.contains(" = <") {
                text.push_str(assign);
                text.push('\n');
            }
        }
    }
    let file = toml(dir.path(), &text);
    // Every default written out, plus a file with nothing wrong: status gets as far
    // as asking the (absent) master.
    let err = fails(
        flint(dir.path())
            .args(["status", "--master", "flint://127.0.0.1:1", "--config"])
            .arg(&file)
            .args(["--conf", "auth.enabled=false"]),
    );
    assert!(err.contains("cannot reach the master at"), "{err}");
}

/// The registry's default of every key a component reads is the default that
/// component applies: setting the key to its registered default changes nothing.
#[test]
fn registered_defaults_are_the_codes_defaults() {
    use flint_master::service::settings as master;
    use flint_worker::service::settings as worker;
    let open = || Conf::new().set("auth.enabled", "false");
    // The values, not which key supplied them (a timeout names its setting).
    let rpc = |c: &Conf| {
        let text = format!("{:?}", flint_rpc::RpcConf::from_conf(c).unwrap());
        text.split(", setting: \"")
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part
                } else {
                    part.split_once('"').map_or(part, |(_, rest)| rest)
                }
            })
            .collect::<String>()
    };
    let worker_config = |c: &Conf| {
        worker::worker_config(
            c,
            vec!["flint://m:7077".into()],
            4,
            4096,
            Duration::from_secs(120),
        )
        .unwrap()
    };
    let client = |c: &Conf| flint_client::settings::ClientSettings::from_conf(c).unwrap();
    let mut checked = 0;
    for s in SETTINGS {
        let Some(v) = s.default.value() else { continue };
        let with = Conf::new().set(s.key, v);
        for reader in s.readers {
            match reader {
                Component::Rpc if s.key != "auth.enabled" => {
                    assert_eq!(rpc(&open().set(s.key, v)), rpc(&open()), "{}", s.key);
                }
                Component::Master => {
                    assert_eq!(
                        master::master_config(&with).unwrap(),
                        master::master_config(&Conf::new()).unwrap(),
                        "{}",
                        s.key
                    );
                    assert_eq!(master::ui_host(&with), master::ui_host(&Conf::new()));
                }
                Component::Worker => {
                    assert_eq!(
                        worker_config(&with),
                        worker_config(&Conf::new()),
                        "{}",
                        s.key
                    );
                    assert_eq!(worker::ui_host(&with), worker::ui_host(&Conf::new()));
                }
                Component::Client => assert_eq!(client(&with), client(&Conf::new()), "{}", s.key),
                _ => continue,
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} defaults checked");
    let port = |k: &str| registry::setting(k).unwrap().default.value().unwrap();
    assert_eq!(
        port("master.port"),
        flint_master::service::DEFAULT_PORT.to_string()
    );
    assert_eq!(
        port("master.webui_port"),
        flint_master::service::DEFAULT_WEBUI_PORT.to_string()
    );
    assert_eq!(
        port("worker.webui_port"),
        flint_worker::service::DEFAULT_WEBUI_PORT.to_string()
    );
}
