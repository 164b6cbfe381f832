//! A trivial flint program for timing start → exit: a context, one two-task job,
//! stop. `bench_start [--master URL] [--log] [--executors N]` (else `FLINT_MASTER`,
//! else `local[*]`); prints the count so the job cannot be skipped. bench/jobs.sh
//! times it from spawn to exit.
//!
//! `--log`: the driver's INFO lines go to stderr (bench/jobs.sh stamps them as they
//! arrive: "executor registered (N so far, …)" is when the Nth executor registered).
//! `--executors N`: after the first job, runs jobs of N tasks until they
//! ran in N different processes (so every executor has registered; at most 60 s),
//! prints `executors N`, waits for a line on stdin (bench/jobs.sh reads the idle
//! executors' memory meanwhile), then times one one-task job in the running
//! application and prints `one-task-job-ms MS`.
//! `--hold-ms MS`: waits that long after the first job before stopping (bench/submit.sh
//! reads the memory of a `flint submit` waiting for it meanwhile).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use flint::prelude::*;

fn main() -> flint::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut builder = Context::builder().app_name("bench_start");
    let mut log = false;
    let mut executors = 0u32;
    let mut hold_ms = 0u64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--log" => log = true,
            "--master" => match args.next() {
                Some(m) => builder = builder.master(m),
                None => usage(),
            },
            "--executors" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => executors = n,
                None => usage(),
            },
            "--hold-ms" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => hold_ms = n,
                None => usage(),
            },
            _ => usage(),
        }
    }
    if log {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let ctx = builder.get_or_create()?;
    println!("{}", ctx.range(0, 2, 2).count()?);
    if hold_ms > 0 {
        std::thread::sleep(Duration::from_millis(hold_ms));
    }
    if executors > 0 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pids: BTreeSet<u32> = ctx
                .range(0, u64::from(executors), executors)
                .map(|_| std::process::id())
                .collect()?
                .into_iter()
                .collect();
            if pids.len() >= executors as usize {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::InvalidArgument(format!(
                    "tasks ran in {} processes, not {executors}, within 60 s",
                    pids.len()
                )));
            }
        }
        println!("executors {executors}");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let t = Instant::now();
        ctx.range(0, 1, 1).count()?;
        println!("one-task-job-ms {:.3}", t.elapsed().as_secs_f64() * 1e3);
    }
    ctx.stop()
}

fn usage() -> ! {
    eprintln!(
        "bench_start: usage: bench_start [--master URL] [--log] [--executors N] [--hold-ms MS]"
    );
    std::process::exit(2);
}
