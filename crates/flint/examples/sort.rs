//! Sorts generated 100-byte records (10-byte random keys, 90-byte values: GraySort's
//! record shape) with `sort_by_key`, then checks the output: every partition sorted,
//! each partition's keys after the previous one's, no record lost.
//! `cargo run -p flint --example sort -- [RECORDS] [PARTITIONS]`.
//!
//! Runs on the master given by `FLINT_MASTER`, else `local[*]`.

use flint::prelude::*;

/// Record `i`: a pseudo-random 10-byte key and a 90-byte value naming `i`.
fn record(i: u64) -> (Vec<u8>, Vec<u8>) {
    let mut x = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut key = Vec::with_capacity(10);
    for _ in 0..10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        key.push((x >> 24) as u8);
    }
    let mut value = format!("{i:020}").into_bytes();
    value.resize(90, b'.');
    (key, value)
}

/// A partition's summary: its records, first and last key, whether it is sorted.
type Summary = (u64, Option<Vec<u8>>, Option<Vec<u8>>, bool);

fn summary(it: flint::Partition<(Vec<u8>, Vec<u8>)>) -> Vec<Summary> {
    let (mut n, mut first, mut last, mut sorted) = (0u64, None, None::<Vec<u8>>, true);
    for (k, v) in it {
        assert_eq!((k.len(), v.len()), (10, 90));
        n += 1;
        if let Some(l) = &last {
            sorted &= *l <= k;
        }
        if first.is_none() {
            first = Some(k.clone());
        }
        last = Some(k);
    }
    vec![(n, first, last, sorted)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::builder().app_name("sort").get_or_create()?;
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let parts: u32 = args
        .next()
        .map_or(Ok(ctx.default_parallelism() * 2), |a| a.parse())?;
    let started = std::time::Instant::now();
    let sorted = ctx.range(0, n, parts).map(record).sort_by_key(true, parts);
    let parts_summary = sorted.map_partitions(summary).collect()?;
    let elapsed = started.elapsed();
    let mut total = 0;
    let mut prev: Option<Vec<u8>> = None;
    for (i, (count, first, last, ok)) in parts_summary.iter().enumerate() {
        if !ok {
            return Err(format!("partition {i} is not sorted").into());
        }
        if let (Some(p), Some(f)) = (&prev, first) {
            if p > f {
                return Err(format!("partition {i} starts before partition {} ends", i - 1).into());
            }
        }
        if last.is_some() {
            prev = last.clone();
        }
        total += count;
    }
    if total != n {
        return Err(format!("{total} records after the sort, {n} before").into());
    }
    println!(
        "sorted {n} records ({} MB) into {parts} partitions in {:.3} s: globally ordered, none lost",
        n * 100 / 1_000_000,
        elapsed.as_secs_f64()
    );
    ctx.stop()?;
    Ok(())
}
