//! Binding a daemon over real TCP: what it advertises when bound to every
//! interface (never `0.0.0.0`), the advertise setting, one set of bind
//! errors, and the open-file limit raised at start-up — checked in a child
//! process started with a low soft limit: this test binary re-run as the
//! ignored test `rlimit_child_entry`, which a plain `cargo test` reports as
//! ignored rather than passing without doing anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// rlim_t is u64 on Linux, not everywhere.
#![allow(clippy::unnecessary_cast)]

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use flint_conf::Conf;
use flint_daemon::advertise::{interface_addresses, is_loopback, is_unspecified};
use flint_daemon::rlimit::nofile_limit;
use flint_daemon::{bind, BindOptions, Bound};
use flint_rpc::RpcConf;

#[path = "support/mod.rs"]
mod support;
use support::nofile_limit_hook;

fn open_conf() -> Conf {
    Conf::new().set("auth.enabled", "false")
}

async fn bind_with(host: &str, ui_host: &str, conf: &Conf) -> Bound {
    bind(BindOptions {
        host,
        port: 0,
        ui_host,
        webui_port: 0,
        rpc: RpcConf::from_conf(conf).unwrap(),
        conf,
    })
    .await
    .unwrap()
}

fn url_host(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, _port) = rest.rsplit_once(':').unwrap();
    host.trim_start_matches('[').trim_end_matches(']')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_to_every_interface_it_advertises_a_dialable_address() {
    let conf = open_conf();
    let b = bind_with("0.0.0.0", "0.0.0.0", &conf).await;
    let has_interfaces = !interface_addresses().is_empty();
    let rpc_host = &b.address.host;
    let ui_host = url_host(b.ui.url());
    for h in [rpc_host.as_str(), ui_host] {
        assert!(!is_unspecified(h), "advertised {h}");
        assert!(!has_interfaces || !is_loopback(h), "advertised {h}");
    }
    assert!(!b.ui.url().contains("0.0.0.0"), "{}", b.ui.url());
    // The environment names the advertised address in the refs it sends, too.
    assert_eq!(b.env.address(), Some(&b.address));
    // It listens everywhere: loopback reaches both sockets.
    tokio::net::TcpStream::connect(("127.0.0.1", b.address.port))
        .await
        .unwrap();
    tokio::net::TcpStream::connect(("127.0.0.1", b.ui.local_addr().port()))
        .await
        .unwrap();
    b.env.shutdown();

    // RPC on loopback but the UI everywhere: the URL names this machine, not
    // 127.0.0.1.
    let b = bind_with("127.0.0.1", "0.0.0.0", &conf).await;
    assert_eq!(b.address.host, "127.0.0.1");
    let ui_host = url_host(b.ui.url());
    assert!(!is_unspecified(ui_host), "{}", b.ui.url());
    assert!(!has_interfaces || !is_loopback(ui_host), "{}", b.ui.url());
    b.env.shutdown();

    // A named UI host is the URL's host.
    let b = bind_with("127.0.0.1", "127.0.0.1", &conf).await;
    assert_eq!(url_host(b.ui.url()), "127.0.0.1");
    b.env.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advertise_setting_names_both_addresses() {
    let conf = open_conf().set("network.advertise_address", "node-7.example");
    let b = bind_with("0.0.0.0", "0.0.0.0", &conf).await;
    assert_eq!(b.address.host, "node-7.example");
    assert_eq!(
        b.ui.url(),
        format!("http://node-7.example:{}", b.ui.local_addr().port())
    );
    b.env.shutdown();
}

async fn bind_error(host: &str, port: u16, webui_port: u16, conf: &Conf) -> String {
    bind(BindOptions {
        host,
        port,
        ui_host: "127.0.0.1",
        webui_port,
        rpc: RpcConf::from_conf(conf).unwrap(),
        conf,
    })
    .await
    .unwrap_err()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_errors_name_the_port_and_the_flag() {
    let conf = open_conf();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    assert_eq!(
        bind_error("127.0.0.1", port, 0, &conf).await,
        format!("port {port} on 127.0.0.1 is in use; choose another with --port")
    );
    assert_eq!(
        bind_error("127.0.0.1", 0, port, &conf).await,
        format!("web UI port {port} on 127.0.0.1 is in use; choose another with --webui-port")
    );
    let bad = bind_error("203.0.113.1", 0, 0, &conf).await;
    assert!(
        bad.starts_with("cannot listen on 203.0.113.1:0 for the RPC environment"),
        "{bad}"
    );
    let limits = bind_error(
        "127.0.0.1",
        0,
        0,
        &conf.clone().set("ui.max_connections", "0"),
    )
    .await;
    assert!(limits.contains("ui.max_connections"), "{limits}");
}

const CHILD_ENV: &str = "FLINT_DAEMON_TEST_RLIMIT_CHILD";
const LOW_SOFT: u64 = 64;

/// What the raised soft limit must be: the hard limit, or the kernel's
/// per-process maximum when the hard limit is unlimited.
fn expected_soft(hard: u64) -> u64 {
    if hard == libc::RLIM_INFINITY as u64 {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    } else {
        hard
    }
}

#[test]
fn start_up_raises_the_soft_open_file_limit_to_the_hard_one() {
    let (_, hard) = nofile_limit().unwrap();
    assert!(hard > LOW_SOFT, "hard limit {hard} too low for this test");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "rlimit_child_entry", "--nocapture"])
        .env(CHILD_ENV, "1");
    // SAFETY: the hook only calls setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(nofile_limit_hook(LOW_SOFT, hard));
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = expected_soft(hard);
    assert!(
        stdout.contains(&format!("limit before={LOW_SOFT} soft={want} hard={hard}")),
        "{stdout}"
    );
    // The kernel agrees (/proc/self/limits of the child, after start-up).
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no /proc line in {stdout}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], want.to_string(), "{line}");
}

#[test]
#[ignore = "run in a child process by start_up_raises_the_soft_open_file_limit_to_the_hard_one"]
fn rlimit_child_entry() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "started by another test with {CHILD_ENV} set"
    );
    let (before, _) = nofile_limit().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conf = open_conf();
    let b = rt.block_on(bind_with("127.0.0.1", "127.0.0.1", &conf));
    let (soft, hard) = nofile_limit().unwrap();
    println!("limit before={before} soft={soft} hard={hard}");
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    for line in limits.lines().filter(|l| l.starts_with("Max open files")) {
        println!("{line}");
    }
    b.env.shutdown();
}
