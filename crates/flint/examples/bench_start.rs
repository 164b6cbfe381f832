//! A trivial flint program for timing start → exit: a context, one two-task job,
//! stop. `bench_start [--master URL]` (else `FLINT_MASTER`, else `local[*]`); prints
//! the count so the job cannot be skipped. bench/jobs.sh times it from spawn to exit.

use flint::prelude::*;

fn main() -> flint::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut builder = Context::builder().app_name("bench_start");
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--master", Some(m)) => builder = builder.master(m),
            _ => {
                eprintln!("bench_start: usage: bench_start [--master URL]");
                std::process::exit(2);
            }
        }
    }
    let ctx = builder.get_or_create()?;
    println!("{}", ctx.range(0, 2, 2).count()?);
    ctx.stop()
}
