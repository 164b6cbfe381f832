//! Tiny tasks per second and one-task job round trip on the current master:
//! `cargo run --release -p flint --example tiny_tasks -- [tasks]`.

use std::time::Instant;

use flint::prelude::*;

fn main() -> flint::Result<()> {
    let tasks: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let ctx = Context::builder().app_name("tiny_tasks").get_or_create()?;
    ctx.range(0, 100, 10).count()?; // warm up
    let started = Instant::now();
    let n = ctx.range(0, u64::from(tasks), tasks).count()?;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(n, u64::from(tasks));
    println!(
        "{tasks} no-op tasks in {secs:.3} s: {:.0} tasks/s on {}",
        f64::from(tasks) / secs,
        ctx.master()
    );
    let rounds = 1000;
    let started = Instant::now();
    for _ in 0..rounds {
        ctx.range(0, 1, 1).count()?;
    }
    println!(
        "one-task job round trip: {:.3} ms",
        started.elapsed().as_secs_f64() * 1e3 / f64::from(rounds)
    );
    ctx.stop()
}
