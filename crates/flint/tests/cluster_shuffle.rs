//! The keyed operations on `local-cluster[2,1,512]` (real executor processes of this
//! binary fetching map outputs from each other over flint-rpc), against a
//! single-process computation of the same data; then an executor SIGKILLed after its
//! map stage finished (with the shuffle service off only its map tasks run again, with
//! it on none; same answer), a full disk during one executor's shuffle write (`RLIMIT_FSIZE`
//! set in that executor: the task fails with the disk error and its retry succeeds on the
//! other executor), a corrupt block on disk (recomputed, same answer), and after the
//! application ends no shuffle file of it is left (`harness = false`: this binary is
//! started again as the driver and, by the workers, as executors).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

#[path = "cluster_common/mod.rs"]
mod cluster_common;
#[path = "../../daemon/tests/http_client/mod.rs"]
mod http_client;
use cluster_common::{alive, map_runs, marked_job, wait_gone};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flint::prelude::*;

const ROLE: &str = "CLUSTER_SHUFFLE_ROLE";
const DIR: &str = "CLUSTER_SHUFFLE_DIR";
const SERVICE: &str = "CLUSTER_SHUFFLE_SERVICE";

/// Deterministic pseudo-random pairs over `keys` keys.
fn pairs(n: usize, keys: u64, seed: u64) -> Vec<(u64, u64)> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % keys) * (x % 3) / 2, x % 1000)
        })
        .collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn check(what: &str, ok: bool) -> flint::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what}: differs from the single-process answer"
        )))
    }
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn program() -> flint::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .try_init();
    let dir = PathBuf::from(std::env::var(DIR).map_err(|e| Error::InvalidArgument(e.to_string()))?);
    let service = std::env::var(SERVICE).is_ok_and(|s| s == "on");
    let ctx = Context::builder()
        .app_name("cluster-shuffle")
        .master("local-cluster[2,1,512]")
        .conf("executor.memory", "512m")
        .conf("shuffle.spill.memory_budget", "64k")
        .conf("shuffle.service.enabled", service.to_string())
        .get_or_create()?;
    println!("app {}", ctx.app_id());

    // ---- every keyed operation against a single-process computation ----
    let data = pairs(20_000, 800, 5);
    let d = ctx.parallelize(data.clone(), 6);
    let mut sums: BTreeMap<u64, u64> = BTreeMap::new();
    let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (k, v) in &data {
        *sums.entry(*k).or_default() += v;
        groups.entry(*k).or_default().push(*v);
    }
    let sums_v: Vec<(u64, u64)> = sums.into_iter().collect();
    check(
        "reduce_by_key",
        sorted(d.reduce_by_key(|a, b| a + b, 3).collect()?) == sums_v,
    )?;
    check(
        "fold_by_key",
        sorted(d.fold_by_key(0, |a, b| a + b, 4).collect()?) == sums_v,
    )?;
    let agg = d
        .aggregate_by_key(0u64, |n, _| n + 1, |a, b| a + b, 2)
        .collect()?;
    let want_n: Vec<(u64, u64)> = groups.iter().map(|(k, v)| (*k, v.len() as u64)).collect();
    check("aggregate_by_key", sorted(agg) == want_n)?;
    let g = d.group_by_key(3).map_values(sorted).collect()?;
    let want_g: Vec<(u64, Vec<u64>)> = groups
        .iter()
        .map(|(k, v)| (*k, sorted(v.clone())))
        .collect();
    check("group_by_key", sorted(g) == want_g)?;
    check(
        "partition_by",
        sorted(d.partition_by(5).collect()?) == sorted(data.clone()),
    )?;
    let counts: HashMap<u64, u64> = want_n.iter().copied().collect();
    check("count_by_key", d.count_by_key()? == counts)?;
    check(
        "distinct",
        sorted(d.keys().distinct(4).collect()?) == groups.keys().copied().collect::<Vec<_>>(),
    )?;
    check(
        "repartition",
        sorted(d.repartition(5).collect()?) == sorted(data.clone()),
    )?;
    let names: Vec<(u64, String)> = (0..600u64)
        .filter(|k| k % 3 != 0)
        .map(|k| (k, format!("n{k}")))
        .collect();
    let o = ctx.parallelize(names.clone(), 3);
    let nm: BTreeMap<u64, String> = names.into_iter().collect();
    let mut want_j = Vec::new();
    let mut want_l = Vec::new();
    for (k, v) in &data {
        match nm.get(k) {
            Some(n) => {
                want_j.push((*k, (*v, n.clone())));
                want_l.push((*k, (*v, Some(n.clone()))));
            }
            None => want_l.push((*k, (*v, None))),
        }
    }
    check("join", sorted(d.join(&o, 4).collect()?) == sorted(want_j))?;
    check(
        "left_outer_join",
        sorted(d.left_outer_join(&o, 3).collect()?) == sorted(want_l),
    )?;
    let cg = d
        .cogroup(&o, 3)
        .map_values(|(a, b)| (a.len(), b.len()))
        .collect_as_map()?;
    check(
        "cogroup",
        groups
            .iter()
            .all(|(k, v)| cg[k] == (v.len(), usize::from(nm.contains_key(k)))),
    )?;
    let s = d.sort_by_key(true, 4);
    let keys = s.keys().collect()?;
    check(
        "sort_by_key",
        keys == sorted(data.iter().map(|p| p.0).collect()),
    )?;
    let non_empty = s
        .map_partitions(|it| vec![it.count()])
        .collect()?
        .iter()
        .filter(|n| **n > 0)
        .count();
    check("sort_by_key over several partitions", non_empty >= 2)?;
    let m = ctx.shuffle_metrics();
    println!(
        "ops ok: spills {} remote bytes {} of {}",
        m.spills, m.remote_bytes_read, m.bytes_read
    );

    full_disk(&ctx, &dir)?;

    // ---- an executor SIGKILLed after its map stage finished ----
    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let (marked, want) = marked_job(&ctx, &maps);
    check("the marked job", sorted(marked.collect()?) == want)?;
    let first = map_runs(&maps);
    let victim = first.iter().next().map(|r| r.1).unwrap_or(0);
    let on_victim: BTreeSet<u64> = first
        .iter()
        .filter(|r| r.1 == victim)
        .map(|r| r.0)
        .collect();
    let _ = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    let left = wait_gone(&[victim], Duration::from_secs(30));
    check("the executor is gone", left.is_empty())?;
    check("the job after the kill", sorted(marked.collect()?) == want)?;
    let after = map_runs(&maps);
    let rerun: BTreeSet<u64> = after.difference(&first).map(|r| r.0).collect();
    println!(
        "kill ok: killed {victim} holding maps {on_victim:?}; re-ran {rerun:?} ({} runs in all)",
        after.len()
    );
    if service {
        // Its worker's shuffle service serves its map outputs: nothing runs again.
        check(
            "no map task re-ran",
            rerun.is_empty() && after.len() == first.len(),
        )?;
    } else {
        check(
            "only the killed executor's map tasks re-ran",
            rerun == on_victim && after.len() == first.len() + on_victim.len(),
        )?;
    }

    // ---- a corrupt block on disk: detected, recomputed, the same answer ----
    let local = PathBuf::from(
        std::env::var("FLINT_LOCAL_DIR").map_err(|e| Error::InvalidArgument(e.to_string()))?,
    );
    let app_dir = local.join("flint-shuffle").join(ctx.app_id());
    let newest = files(&app_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 80).unwrap_or(false))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).unwrap());
    let Some(victim_file) = newest else {
        return Err(Error::InvalidArgument(format!(
            "no map output under {}",
            app_dir.display()
        )));
    };
    let mut bytes = std::fs::read(&victim_file).unwrap();
    for b in &mut bytes[20..70] {
        *b ^= 0xa5;
    }
    std::fs::write(&victim_file, bytes).unwrap();
    let before = map_runs(&maps).len();
    check(
        "the job after the corruption",
        sorted(marked.collect()?) == want,
    )?;
    let reran = map_runs(&maps).len() - before;
    println!(
        "corrupt ok: {} corrupted, {reran} map task(s) re-ran",
        victim_file.display()
    );
    check("a map task re-ran for the corrupt block", reran >= 1)?;
    ctx.stop()?;
    println!("stopped");
    Ok(())
}

/// Sets this process's file size limit (`None`: unlimited), ignoring SIGXFSZ so that a
/// write past it fails with EFBIG instead of killing the process.
fn file_size_limit(bytes: Option<u64>) {
    let lim = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain libc calls with valid arguments.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

/// The first map task to start claims its executor as the one whose disk is full: it
/// limits that process's file size to 16 KiB, so its shuffle write fails with the disk
/// error; every later task lifts the limit again. The failed partition's retry runs on
/// the other executor, and the answer is the single-process one.
fn full_disk(ctx: &Context, dir: &Path) -> flint::Result<()> {
    let runs_dir = dir.join("fsize");
    std::fs::create_dir_all(&runs_dir).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let claim = dir.join("fsize-claim");
    let spread = |x: u64| x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let sums = ctx
        .range(0, 40_000, 4)
        .map_partitions_with(
            (runs_dir.display().to_string(), claim.display().to_string()),
            |(d, claim), it| {
                let v: Vec<u64> = it.collect();
                let me = std::process::id();
                let won = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&claim)
                    .and_then(|mut f| {
                        use std::io::Write as _;
                        write!(f, "{} {me}", v[0] / 10_000)
                    })
                    .is_ok();
                std::fs::write(Path::new(&d).join(format!("{}-{me}", v[0] / 10_000)), b"").unwrap();
                file_size_limit(won.then_some(16 << 10));
                v
            },
        )
        // Distinct, high-entropy pairs: 10,000 per map task, far over 16 KiB written.
        .map(move |x| (spread(x), x))
        .reduce_by_key(|a, b| a + b, 3);
    let got = sorted(sums.collect()?);
    let want: Vec<(u64, u64)> = sorted((0..40_000u64).map(|x| (spread(x), x)).collect());
    check("the job with a full disk", got == want)?;
    // Lift the limit wherever it is left (one task per executor, launched together).
    ctx.range(0, 2, 2)
        .map_partitions(|it| {
            file_size_limit(None);
            it
        })
        .count()?;
    let claimed =
        std::fs::read_to_string(&claim).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let (part, victim) = claimed
        .split_once(' ')
        .and_then(|(p, v)| Some((p.parse::<u64>().ok()?, v.parse::<u32>().ok()?)))
        .ok_or_else(|| Error::InvalidArgument(format!("claim file: {claimed:?}")))?;
    let ran: Vec<u32> = map_runs(&runs_dir)
        .into_iter()
        .filter(|r| r.0 == part)
        .map(|r| r.1)
        .collect();
    // The UI's record of the stage: the failed attempt's error names the full disk.
    let url = ctx
        .ui_url()
        .ok_or_else(|| Error::InvalidArgument("the driver UI is off".into()))?;
    let base = format!("{url}/api/v1/applications/{}/stages", ctx.app_id());
    let stages = get_json(&base)?;
    let mut errors = Vec::new();
    for st in stages.as_array().into_iter().flatten() {
        let id = st["stageId"].as_u64().unwrap_or(u64::MAX);
        // One entry per attempt of the stage, each with its tasks.
        let attempts = get_json(&format!("{base}/{id}"))?;
        let tasks = attempts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["tasks"].as_object())
            .flat_map(|m| m.values());
        for t in tasks {
            if t["status"] == "FAILED" {
                errors.push(t["errorMessage"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    println!("full disk: partition {part} failed on {victim}, ran on {ran:?}; errors {errors:?}");
    check(
        "one failed attempt, then a success on the other executor",
        ran.len() == 2 && ran.contains(&victim) && ran.iter().any(|p| *p != victim),
    )?;
    check(
        "the failed attempt names the full disk",
        errors.len() == 1 && errors[0].contains("the disk is full or the file size limit"),
    )?;
    println!("full disk ok");
    Ok(())
}

fn get_json(url: &str) -> flint::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let (code, body) = rt.block_on(http_client::get_url(url));
    if code != 200 {
        return Err(Error::InvalidArgument(format!("GET {url}: {code} {body}")));
    }
    serde_json::from_str(&body).map_err(|e| Error::InvalidArgument(format!("GET {url}: {e}")))
}

fn orchestrate() {
    run("off");
    run("on");
}

fn run(service: &str) {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, "program")
        .env(DIR, dir.path())
        .env(SERVICE, service)
        .env("FLINT_LOCAL_DIR", &local)
        .env(
            "FLINT_AUTH_SECRET",
            format!("cluster-shuffle-{}", std::process::id()),
        )
        .env_remove("FLINT_MASTER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(400)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the program did not end within 400 s");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "program failed: {:?}\nstdout:\n{stdout}\nstderr (last 60 lines):\n{}",
        out.status,
        stderr
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for l in ["ops ok", "full disk ok", "kill ok", "corrupt ok", "stopped"] {
        assert!(stdout.contains(l), "no {l:?} in:\n{stdout}");
    }
    print!("{stdout}");
    // No shuffle file of the application is left, and no executor.
    let left = files(&local);
    assert!(
        left.is_empty(),
        "shuffle files left after the application ended: {left:?}"
    );
    let pids: Vec<u32> = map_runs(&dir.path().join("maps"))
        .iter()
        .map(|r| r.1)
        .collect();
    let lingering: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(lingering.is_empty(), "executors left: {lingering:?}");
    println!(
        "cluster_shuffle (shuffle service {service}): ok in {:.1} s (no shuffle file and no executor left)",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("program") => {
            if let Err(e) = program() {
                eprintln!("program: {e}");
                println!("program: {e}");
                std::process::exit(2);
            }
        }
        _ if std::env::var_os("FLINT_EXECUTOR_DRIVER_URL").is_some() => {
            let r = Context::builder().get_or_create();
            eprintln!("get_or_create returned in an executor: {r:?}");
            std::process::exit(3);
        }
        _ => orchestrate(),
    }
}
