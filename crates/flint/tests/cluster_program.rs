//! api.md's program (minus the keyed line) on `local-cluster[2,1,512]` with real
//! executor processes of this binary (`harness = false`: this binary is started again
//! as the driver and, by the workers, as executors). The same run SIGKILLs an executor
//! mid-job (same answer, the partition re-ran in another process), presents an
//! executor of a different build (refused, both hashes named) and one with a wrong
//! secret (refused before registering), and the orchestrator checks afterwards that
//! no executor process is left.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

#[path = "cluster_common/mod.rs"]
mod cluster_common;
use cluster_common::{alive, start_daemon, wait_gone, Daemon};
use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flint::prelude::*;

const ROLE: &str = "CLUSTER_TEST_ROLE";

fn sha256(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(
        std::fs::read(path).expect("read binary"),
    ))
}

/// Runs `cmd` to its end within `limit`, killing it past that.
fn run_bounded(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = rx.recv_timeout(Duration::from_secs(10));
            let (o, e) = match &out {
                Ok(Ok(o)) => (
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                ),
                _ => (String::new(), String::new()),
            };
            panic!("process {pid} did not end within {limit:?}\nstdout:\n{o}\nstderr:\n{e}");
        }
    }
}

/// The secret the driver uses: given to it, else the default file of the flint home.
fn secret() -> String {
    let given = std::env::var("FLINT_AUTH_SECRET")
        .ok()
        .filter(|s| !s.is_empty());
    given.unwrap_or_else(|| {
        let home = std::env::var("FLINT_HOME").expect("FLINT_HOME or FLINT_AUTH_SECRET");
        std::fs::read_to_string(Path::new(&home).join("secret"))
            .expect("the secret file")
            .trim()
            .to_owned()
    })
}

fn program() -> flint::Result<()> {
    let t0 = Instant::now();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .try_init();
    let ctx = Context::builder()
        .app_name("demo")
        .master(
            std::env::var("CLUSTER_TEST_MASTER")
                .unwrap_or_else(|_| "local-cluster[2,1,512]".into()),
        )
        .conf("executor.memory", "512m")
        // Small messages, so the large result below travels in chunks.
        .conf("rpc.message.max_size", "1m")
        .get_or_create()?;
    println!("context-ms {}", t0.elapsed().as_millis());
    let squares: Vec<u64> = ctx
        .parallelize((1..=10u64).collect(), 4)
        .map(|x| x * x)
        .collect()?;
    println!("first-job-ms {}", t0.elapsed().as_millis());
    let total: Option<u64> = ctx
        .range(0, 1_000_000, 8)
        .map_with(3u64, |k, x| x * k)
        .reduce(|a, b| a + b)?;
    let lines = ctx.text_file("input.txt", 8)?;
    let words = lines.flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    let words = words.cache();
    let n = words.count()?;
    let stop = ctx.broadcast(HashSet::from(["the".to_owned(), "a".to_owned()]))?;
    let kept = words
        .filter_with(stop, |s, w| !s.value().contains(w))
        .count()?;
    let empty = ctx.accumulator("empty lines");
    lines.foreach_with(empty.clone(), |acc, l| {
        if l.trim().is_empty() {
            acc.add(1)
        }
    })?;
    words.save_as_text_file("out/words")?;
    println!("answers {squares:?} {total:?} {n} {kept} {}", empty.value());

    // Results larger than a message: chunked by the executors, reassembled.
    let big: Vec<u64> = ctx
        .range(0, 2, 2)
        .flat_map(|p| vec![p + (1 << 60); 300_000])
        .collect()?;
    let ones = big.iter().filter(|v| **v == (1 << 60) + 1).count();
    println!("big {} {ones}", big.len());

    // Which processes ran tasks.
    let pids: BTreeSet<u64> = ctx
        .range(0, 64, 16)
        .map(|_| u64::from(std::process::id()))
        .collect()?
        .into_iter()
        .collect();
    println!(
        "pids {}",
        pids.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("driver-pid {}", std::process::id());

    // SIGKILL the executor running partition 5 (the first time only): same answer.
    let marker =
        std::path::absolute("killed").map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let marker = marker.display().to_string();
    let out: Vec<(u64, u64)> = ctx
        .range(0, 8, 8)
        .map_with(marker, |m, x| {
            if x == 5 && std::fs::File::create_new(m).is_ok() {
                std::fs::write(m, std::process::id().to_string()).unwrap();
                let _ = Command::new("kill")
                    .args(["-9", &std::process::id().to_string()])
                    .status();
                std::thread::sleep(Duration::from_secs(60));
            }
            (x * x, u64::from(std::process::id()))
        })
        .collect()?;
    println!("kill-job-ms {}", t0.elapsed().as_millis());
    let sum: u64 = out.iter().map(|p| p.0).sum();
    let killed = std::fs::read_to_string("killed").unwrap_or_default();
    println!(
        "after-kill sum {sum} killed {killed} partition5-pid {}",
        out[5].1
    );

    // A foreign executor: this binary with a byte more (another hash), same secret.
    let url: String = ctx
        .range(0, 1, 1)
        .map(|_| std::env::var("FLINT_EXECUTOR_DRIVER_URL").unwrap_or_default())
        .collect()?
        .remove(0);
    let url = url.replacen("executor=", "executor=foreign", 1);
    let me = std::env::current_exe().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let copy = PathBuf::from("foreign-build");
    std::fs::copy(&me, &copy).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&copy)
        .and_then(|mut f| f.write_all(b"x"))
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let mut foreign = Command::new(std::path::absolute(&copy).unwrap());
    foreign
        .env("FLINT_EXECUTOR_DRIVER_URL", &url)
        .env("FLINT_AUTH_SECRET", secret())
        .env(ROLE, "executor");
    let out = run_bounded(foreign, Duration::from_secs(60));
    println!("foreign-ms {}", t0.elapsed().as_millis());
    println!(
        "foreign status {:?} ours {} theirs {} stderr {}",
        out.status.code(),
        sha256(&me),
        sha256(&copy),
        String::from_utf8_lossy(&out.stderr).replace('\n', " ")
    );
    // Our own build with a wrong secret: refused before registering.
    let mut wrong = Command::new(&me);
    wrong
        .env(
            "FLINT_EXECUTOR_DRIVER_URL",
            url.replacen("executor=foreign", "executor=wrongsecret", 1),
        )
        .env("FLINT_AUTH_SECRET", "not-the-secret")
        .env(ROLE, "executor");
    let out = run_bounded(wrong, Duration::from_secs(150));
    println!(
        "wrong-secret status {:?} stderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).replace('\n', " ")
    );
    // The context still runs jobs.
    println!("still {}", ctx.range(0, 10, 2).count()?);
    let t_stop = Instant::now();
    ctx.stop()?;
    println!(
        "stopped-ms {} (stop took {} ms)",
        t0.elapsed().as_millis(),
        t_stop.elapsed().as_millis()
    );
    Ok(())
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
}

/// Runs the program against `master` (None: local-cluster) with `env`, checks it.
fn check_program(label: &str, master: Option<&str>, env: &[(&str, String)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("input.txt"),
        "the cat\n\na dog the end\n\nfoo\n",
    )
    .unwrap();
    let me = std::env::current_exe().unwrap();
    let mut cmd = Command::new(&me);
    // A secret the test knows, so it can present executors of its own to the driver.
    let secret = format!("cluster-program-test-{}", std::process::id());
    cmd.current_dir(dir.path())
        .env(ROLE, "program")
        .env_remove("FLINT_MASTER");
    match master {
        Some(m) => {
            cmd.env("CLUSTER_TEST_MASTER", m);
        }
        None => {
            cmd.env("FLINT_AUTH_SECRET", secret);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = run_bounded(cmd, Duration::from_secs(240));
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "program failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    println!("{stdout}");
    for l in stderr
        .lines()
        .filter(|l| l.contains("registered") || l.contains("started") || l.contains("executor"))
    {
        println!("  log: {l}");
    }
    assert_eq!(
        field(&stdout, "answers "),
        "[1, 4, 9, 16, 25, 36, 49, 64, 81, 100] Some(1499998500000) 7 4 2"
    );
    let mut saved = Vec::new();
    let mut parts: Vec<_> = std::fs::read_dir(dir.path().join("out/words"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    for p in parts.iter().filter(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("part-")
    }) {
        saved.extend(
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
    }
    assert_eq!(saved, ["the", "cat", "a", "dog", "the", "end", "foo"]);
    assert_eq!(field(&stdout, "big "), "600000 300000");
    let driver: u32 = field(&stdout, "driver-pid ").parse().unwrap();
    let pids: Vec<u32> = field(&stdout, "pids ")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        !pids.contains(&driver),
        "tasks ran in the driver: {pids:?} vs {driver}"
    );
    // After the kill: the answer of 0²+…+7², partition 5 re-ran in another process.
    let ak = field(&stdout, "after-kill sum ");
    let w: Vec<&str> = ak.split_whitespace().collect();
    assert_eq!(w[0], "140", "{ak}");
    let killed: u32 = w[2].parse().expect("killed pid");
    let rerun: u32 = w[4].parse().unwrap();
    assert_ne!(killed, rerun, "{ak}");
    assert_ne!(killed, driver);
    // The foreign build is refused, naming both hashes.
    let f = field(&stdout, "foreign status ");
    let fw: Vec<&str> = f.split_whitespace().collect();
    assert_eq!(fw[0], "Some(1)", "{f}");
    let (ours, theirs) = (fw[2], fw[4]);
    assert_ne!(ours, theirs);
    assert!(
        f.contains("refused")
            && f.contains(&format!("SHA-256 {ours}"))
            && f.contains(&format!("SHA-256 {theirs}")),
        "{f}"
    );
    let ws = field(&stdout, "wrong-secret status ");
    assert!(
        ws.starts_with("Some(1)") && !ws.contains("refused this executor"),
        "{ws}"
    );
    assert_eq!(field(&stdout, "still "), "10");
    // No executor process outlives the program. On local-cluster the embedded workers
    // reap them before the program exits; on an external cluster the workers stop them
    // once the master sees the app end, so that takes a moment.
    let mut all = pids.clone();
    all.push(killed);
    let lingering = wait_gone(&all, Duration::from_secs(15));
    assert!(
        lingering.is_empty(),
        "executor processes left: {lingering:?}"
    );
    let clean: String = stderr.replace("\u{1b}[", "\u{1}");
    let second = clean
        .lines()
        .find_map(|l| {
            l.split("(2 so far, ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
        })
        .unwrap_or("?");
    println!("cluster_program {label}: both executors registered {second} ms after the application started");
    println!(
        "cluster_program {label}: ok (program wall {:.0} ms; context {} ms, first job done {} ms, stopped {} ms; executor pids {pids:?})",
        wall.as_secs_f64() * 1000.0,
        field(&stdout, "context-ms "),
        field(&stdout, "first-job-ms "),
        field(&stdout, "stopped-ms ")
    );
}

/// A driver that prints its executors' pids, then returns `Err` from main
/// (`CLUSTER_TEST_END=err`) or waits to be killed (`hang`).
fn short_program() -> flint::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .try_init();
    let ctx = Context::builder()
        .app_name("short")
        // Executors of 1g (the default) would not fit the 512 MiB workers.
        .conf("executor.memory", "512m")
        .master(
            std::env::var("CLUSTER_TEST_MASTER")
                .unwrap_or_else(|_| "local-cluster[2,1,512]".into()),
        )
        .get_or_create()?;
    let pids: BTreeSet<u64> = ctx
        .range(0, 64, 16)
        .map(|_| u64::from(std::process::id()))
        .collect()?
        .into_iter()
        .collect();
    println!(
        "pids {}",
        pids.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    if std::env::var("CLUSTER_TEST_END").as_deref() == Ok("hang") {
        std::thread::sleep(Duration::from_secs(600));
    }
    Err(Error::InvalidArgument(
        "the program fails on purpose".into(),
    ))
}

/// `Err` from main on local-cluster: the process exits non-zero, no executor left.
fn check_err_from_main() {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, "short")
        .env("CLUSTER_TEST_END", "err")
        .env_remove("FLINT_MASTER");
    let started = Instant::now();
    let out = run_bounded(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    let pids: Vec<u32> = field(&stdout, "pids ")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "executors left after Err from main: {left:?}"
    );
    println!(
        "cluster_program err-from-main: ok ({:.0} ms, executors {pids:?} gone)",
        started.elapsed().as_secs_f64() * 1000.0
    );
}

/// A SIGKILLed driver of a separately started cluster: its executors notice the
/// dropped connection and exit.
fn check_driver_sigkill(master: &str, home: &Path) {
    use std::io::BufRead as _;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "short")
        .env("CLUSTER_TEST_END", "hang")
        .env("CLUSTER_TEST_MASTER", master)
        .env("FLINT_HOME", home)
        .env_remove("FLINT_MASTER")
        .env_remove("FLINT_AUTH_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("pids ") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the driver printed its executors");
    let pids: Vec<u32> = line["pids ".len()..]
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    let left = wait_gone(&pids, Duration::from_secs(30));
    assert!(
        left.is_empty(),
        "executors {left:?} outlived their SIGKILLed driver by 30 s"
    );
    println!(
        "cluster_program driver-sigkill: ok (executors {pids:?} exited {:.0} ms after the driver was killed)",
        killed.elapsed().as_secs_f64() * 1000.0
    );
}

fn orchestrate() {
    check_program("local-cluster[2,1,512]", None, &[]);
    check_err_from_main();
    // A master and two workers started as their own processes.
    let home = tempfile::tempdir().unwrap();
    let master = start_daemon(&["master"], home.path());
    let workers: Vec<Daemon> = (0..2)
        .map(|i| {
            let dir = home.path().join(format!("work-{i}"));
            start_daemon(
                &["worker", &master.url, dir.to_str().unwrap(), "1", "512"],
                home.path(),
            )
        })
        .collect();
    let url = master.url.clone();
    check_program(
        &url,
        Some(&url),
        &[("FLINT_HOME", home.path().display().to_string())],
    );
    check_driver_sigkill(&url, home.path());
    drop(workers);
    drop(master);
}

fn main() {
    // A worker of a separately started cluster does not pass this process's
    // environment on: an executor of the program runs the program's path.
    let role = if std::env::var_os("FLINT_EXECUTOR_DRIVER_URL").is_some()
        && std::env::var_os(ROLE).is_none()
    {
        Ok("program".to_owned())
    } else {
        std::env::var(ROLE)
    };
    match role.as_deref() {
        Ok("program") => {
            if let Err(e) = program() {
                eprintln!("program: {e}");
                std::process::exit(2);
            }
        }
        Ok("short") => {
            if let Err(e) = short_program() {
                eprintln!("short program: {e}");
                std::process::exit(2);
            }
        }
        Ok("executor") => {
            // Turns into an executor (and exits) before returning anything.
            let r = Context::builder().get_or_create();
            eprintln!("get_or_create returned in an executor: {r:?}");
            std::process::exit(3);
        }
        _ => orchestrate(),
    }
}
