//! Limits in child processes (a file size limit and peak memory are per process):
//! a shuffle write under `RLIMIT_FSIZE` fails with `DiskFull` naming the file and
//! leaves no output, and a writer's peak resident memory stays within its budget plus
//! a stated slack while its input is many times the budget.
//!
//! The test binary re-runs itself with `SHUFFLE_LIMITS_CHILD` set to run one child
//! body; the child prints one `RESULT …` line the parent checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use flint_shuffle::{Combiner, Layout, MapId, ShuffleConf, ShuffleError, ShuffleWriter};

const CHILD: &str = "SHUFFLE_LIMITS_CHILD";
const DIR: &str = "SHUFFLE_LIMITS_DIR";

fn run_child(test: &str, body: &str, dir: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, body)
        .env(DIR, dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {body} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.find("RESULT ").map(|i| l[i + 7..].to_string()))
        .unwrap_or_else(|| panic!("child {body} printed no RESULT line:\n{stdout}"))
}

fn child_body() -> Option<(String, PathBuf)> {
    let body = std::env::var(CHILD).ok()?;
    Some((body, PathBuf::from(std::env::var(DIR).unwrap())))
}

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn record(i: u64) -> (String, u64) {
    (
        format!("key-{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        i,
    )
}

#[test]
fn a_write_past_the_file_size_limit_is_a_disk_full_error_and_leaves_no_output() {
    if let Some((body, dir)) = child_body() {
        if body != "fsize" {
            return;
        }
        // The limit is per process: SIGXFSZ would kill us; ignored, write() gets EFBIG.
        // SAFETY: plain libc calls with valid arguments, before any other thread writes.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 256 * 1024,
                rlim_max: libc::RLIM_INFINITY,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        let conf = ShuffleConf {
            local_dirs: vec![dir.clone()],
            compress: false,
            ..ShuffleConf::default()
        };
        let layout = Layout::new(&conf.local_dirs, "app-full").unwrap();
        let part = |k: &String| k.len() as u32 % 4;
        let mut w = ShuffleWriter::new(
            &conf,
            &layout,
            MapId {
                shuffle: 0,
                map: 3,
                attempt: 0,
            },
            4,
            &part,
            None,
        )
        .unwrap();
        w.insert_all((0..100_000).map(record)).unwrap();
        match w.commit() {
            Err(e @ ShuffleError::DiskFull { .. }) => {
                let ShuffleError::DiskFull { path, .. } = &e else {
                    unreachable!()
                };
                println!("\nRESULT diskfull {} | {e}", path.display());
            }
            Err(e) => println!("\nRESULT other {e}"),
            Ok(s) => println!("\nRESULT ok {}", s.total_bytes()),
        }
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let r = run_child(
        "a_write_past_the_file_size_limit_is_a_disk_full_error_and_leaves_no_output",
        "fsize",
        t.path(),
    );
    assert!(r.starts_with("diskfull "), "{r}");
    assert!(r.contains(".data.tmp"), "names the file being written: {r}");
    assert!(r.contains("disk is full or the file size limit"), "{r}");
    let layout = Layout::new(&[t.path().to_path_buf()], "app-full").unwrap();
    assert!(!layout.data_path(0, 3).exists());
    assert!(!layout.index_path(0, 3).exists());
    let left: Vec<_> = std::fs::read_dir(layout.shuffle_dir(0, 3))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

fn add(c: u64, v: u64) -> u64 {
    c + v
}

#[test]
fn peak_memory_of_a_writer_stays_within_its_budget_plus_slack() {
    const BUDGET: u64 = 16 << 20;
    const RECORDS: u64 = 1_000_000;
    if let Some((body, dir)) = child_body() {
        let conf = ShuffleConf {
            local_dirs: vec![dir.clone()],
            memory_budget: BUDGET,
            ..ShuffleConf::default()
        };
        let layout = Layout::new(&conf.local_dirs, "app-mem").unwrap();
        let part = |k: &String| (k.as_bytes()[15] % 8) as u32;
        let id = MapId {
            shuffle: 0,
            map: 0,
            attempt: 0,
        };
        let before = vm_hwm_kib();
        let status = match body.as_str() {
            "plain" => {
                let mut w = ShuffleWriter::new(&conf, &layout, id, 8, &part, None).unwrap();
                w.insert_all((0..RECORDS).map(record)).unwrap();
                w.commit().unwrap()
            }
            "combine" => {
                let c = Combiner {
                    create: |v| v,
                    merge_value: add,
                    merge_combiners: add,
                };
                let mut w =
                    ShuffleWriter::with_combiner(&conf, &layout, id, 8, &part, c, None).unwrap();
                // Each key twice: the map holds ~RECORDS/2 distinct keys.
                w.insert_all((0..RECORDS).map(|i| record(i % (RECORDS / 2))))
                    .unwrap();
                w.commit().unwrap()
            }
            _ => return,
        };
        let after = vm_hwm_kib();
        println!(
            "\nRESULT {} {} {} {}",
            before, after, status.spills, status.records_in
        );
        return;
    }
    for body in ["plain", "combine"] {
        let t = tempfile::tempdir().unwrap();
        let r = run_child(
            "peak_memory_of_a_writer_stays_within_its_budget_plus_slack",
            body,
            t.path(),
        );
        let f: Vec<u64> = r.split(' ').map(|x| x.parse().unwrap()).collect();
        let grew = (f[1].saturating_sub(f[0])) << 10;
        // In memory at once the input would take about 1M x (32 + 16 + 27) bytes,
        // ~70 MiB; the writer must spill instead.
        assert!(f[2] >= 3, "{body}: spilled {} times", f[2]);
        assert_eq!(f[3], RECORDS);
        // Stated slack: half the budget (allocator rounding of small strings, which the
        // estimate does not see) plus 16 MiB (chunk buffers, file buffers, the merge's
        // decoded chunks, the test harness).
        let limit = BUDGET + BUDGET / 2 + (16 << 20);
        eprintln!(
            "{body}: peak grew by {} MiB (budget {} MiB, limit {} MiB), {} spills",
            grew >> 20,
            BUDGET >> 20,
            limit >> 20,
            f[2]
        );
        assert!(
            grew <= limit,
            "{body}: peak RSS grew by {grew} bytes, limit {limit}"
        );
    }
}
