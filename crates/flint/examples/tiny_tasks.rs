//! Tiny tasks per second, one-task job round trip and driver memory of a big job, on
//! one master: `cargo run --release -p flint --example tiny_tasks -- [options]`.
//!
//! ```text
//! tiny_tasks [TASKS] [--master URL] [--tasks N,N,...] [--rounds R]
//!            [--memory-tasks N] [--json]
//! ```
//!
//! * `--tasks` (or a bare number): jobs of that many no-op tasks each,
//!   `range(0, n, n).count()` — one element per task (default 10000);
//! * `--rounds`: one-task jobs `range(0, 1, 1).count()` timed one by one (default 1000);
//! * `--memory-tasks`: one job of that many tasks, then the driver's peak RSS
//!   (`VmHWM` of this process, Linux) before and after it (default 0: skipped);
//! * `--json`: one JSON object per line instead of prose (bench/jobs.sh reads them).
//!
//! The master is `--master`, else `FLINT_MASTER`, else `local[*]`.

use std::error::Error;
use std::io::Write;
use std::time::Instant;

use flint::prelude::*;

struct Args {
    master: Option<String>,
    tasks: Vec<u32>,
    rounds: u32,
    memory_tasks: u32,
    json: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> std::result::Result<Args, String> {
    let mut a = Args {
        master: None,
        tasks: Vec::new(),
        rounds: 1000,
        memory_tasks: 0,
        json: false,
    };
    let mut it = args.into_iter();
    let num = |flag: &str, v: Option<String>| -> std::result::Result<u32, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{flag}: `{v}` is not a whole number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--master" => a.master = Some(it.next().ok_or("--master needs a URL")?),
            "--tasks" => {
                let v = it
                    .next()
                    .ok_or("--tasks needs a list such as 10000,100000")?;
                for n in v.split(',') {
                    a.tasks.push(num("--tasks", Some(n.to_string()))?);
                }
            }
            "--rounds" => a.rounds = num("--rounds", it.next())?,
            "--memory-tasks" => a.memory_tasks = num("--memory-tasks", it.next())?,
            "--json" => a.json = true,
            other => a.tasks.push(num("TASKS", Some(other.to_string()))?),
        }
    }
    if a.tasks.is_empty() && a.memory_tasks == 0 {
        a.tasks.push(10_000);
    }
    Ok(a)
}

/// `VmHWM` and `VmRSS` of this process in KiB (Linux; 0 elsewhere).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tiny_tasks: {e}");
            std::process::exit(2);
        }
    };
    run(&args, &mut std::io::stdout().lock())
}

/// Runs the measurements `args` asks for, writing one line per result to `out`.
fn run(args: &Args, out: &mut dyn Write) -> Result<(), Box<dyn Error>> {
    let mut builder = Context::builder().app_name("tiny_tasks");
    if let Some(m) = &args.master {
        builder = builder.master(m.clone());
    }
    let ctx = builder.get_or_create()?;
    let master = ctx.master().to_string();
    ctx.range(0, 100, 10).count()?; // warm up
    for &tasks in &args.tasks {
        let started = Instant::now();
        let n = ctx.range(0, u64::from(tasks), tasks).count()?;
        let secs = started.elapsed().as_secs_f64();
        if n != u64::from(tasks) {
            return Err(flint::Error::InvalidArgument(format!(
                "tiny_tasks counted {n} elements over {tasks} tasks"
            ))
            .into());
        }
        let rate = f64::from(tasks) / secs;
        if args.json {
            writeln!(
                out,
                r#"{{"bench":"tiny_tasks","system":"flint","master":"{master}","tasks":{tasks},"secs":{secs:.6},"tasks_per_s":{rate:.1}}}"#
            )?;
        } else {
            println!("{tasks} no-op tasks in {secs:.3} s: {rate:.0} tasks/s on {master}");
        }
    }
    if args.rounds > 0 {
        let mut ms = Vec::with_capacity(args.rounds as usize);
        for _ in 0..args.rounds {
            let started = Instant::now();
            ctx.range(0, 1, 1).count()?;
            ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        if args.json {
            writeln!(
                out,
                r#"{{"bench":"round_trip","system":"flint","master":"{master}","jobs":{},"median_ms":{:.4},"p10_ms":{:.4},"p90_ms":{:.4},"p99_ms":{:.4},"mean_ms":{mean:.4}}}"#,
                ms.len(),
                q(0.5),
                q(0.1),
                q(0.9),
                q(0.99)
            )?;
        } else {
            writeln!(
                out,
                "one-task job round trip over {} jobs: median {:.3} ms (p90 {:.3}, p99 {:.3})",
                ms.len(),
                q(0.5),
                q(0.9),
                q(0.99)
            )?;
        }
    }
    if args.memory_tasks > 0 {
        let tasks = args.memory_tasks;
        let (hwm_before, rss_before) = memory_kib();
        let started = Instant::now();
        let n = ctx.range(0, u64::from(tasks), tasks).count()?;
        let secs = started.elapsed().as_secs_f64();
        let (hwm_after, rss_after) = memory_kib();
        let per_task = |kib: u64| kib as f64 * 1024.0 / f64::from(tasks);
        if args.json {
            writeln!(
                out,
                r#"{{"bench":"driver_memory","system":"flint","master":"{master}","tasks":{tasks},"counted":{n},"secs":{secs:.3},"hwm_before_kib":{hwm_before},"rss_before_kib":{rss_before},"hwm_after_kib":{hwm_after},"rss_after_kib":{rss_after},"peak_bytes_per_task":{:.1},"growth_bytes_per_task":{:.1}}}"#,
                per_task(hwm_after),
                per_task(hwm_after.saturating_sub(rss_before))
            )?;
        } else {
            writeln!(
                out,
                "one job of {tasks} tasks in {secs:.3} s: peak RSS {hwm_after} KiB ({:.0} B/task; {:.0} B/task above the {rss_before} KiB before)",
                per_task(hwm_after),
                per_task(hwm_after.saturating_sub(rss_before))
            )?;
        }
    }
    ctx.stop()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Keeps the benchmark from rotting: the example's own code path with tiny
    //! numbers on `local[2]` (no timing assertions).

    use super::*;

    fn lines(args: &[&str]) -> Vec<String> {
        let args = parse_args(args.iter().map(|s| s.to_string())).unwrap();
        let mut out = Vec::new();
        run(&args, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_measurement_prints_one_json_line() {
        let out = lines(&[
            "--master",
            "local[2]",
            "--tasks",
            "3,50",
            "--rounds",
            "5",
            "--memory-tasks",
            "20",
            "--json",
        ]);
        let benches: Vec<&str> = out
            .iter()
            .map(|l| l.split('"').nth(3).unwrap_or(""))
            .collect();
        assert_eq!(
            benches,
            ["tiny_tasks", "tiny_tasks", "round_trip", "driver_memory"],
            "{out:?}"
        );
        assert!(out[1].contains(r#""tasks":50,"#), "{out:?}");
        assert!(out[2].contains(r#""jobs":5,"#), "{out:?}");
        assert!(out[3].contains(r#""counted":20,"#), "{out:?}");
        assert!(out.iter().all(|l| l.contains(r#""master":"local[2]""#)));
    }

    #[test]
    fn bad_arguments_are_named() {
        let err = |a: &[&str]| parse_args(a.iter().map(|s| s.to_string())).err().unwrap();
        assert!(err(&["--tasks", "10,x"]).contains("`x` is not a whole number"));
        assert!(err(&["--master"]).contains("--master needs a URL"));
        assert!(err(&["--rounds"]).contains("--rounds needs a value"));
    }
}
