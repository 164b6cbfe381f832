//! Sort benchmark driver (BENCHMARKS.md, "Shuffle jobs"; run by `bench/shuffle.sh`).
//!
//! `bench_sort --generate PATH MIB` writes about MIB MiB of 100-byte records in GraySort's
//! shape as text lines, the same file Spark reads: a 10-byte random key of printable
//! ASCII (`!`..`~`), an 89-byte value naming the record, `\n`; deterministic.
//!
//! `bench_sort PATH [PARTITIONS]` reads that file with `text_file`, splits each line into
//! `(key, value)` byte vectors, `sort_by_key`s it on the master of `FLINT_MASTER` (else
//! `local[*]`) and checks the output: every partition sorted, each partition's first key
//! not before the previous partition's last, no record lost. Prints one JSON line.

use std::io::Write;

use flint::prelude::*;

fn generate(path: &str, mib: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let n = (mib << 20) / 100;
    let mut line = Vec::with_capacity(100);
    for i in 0..n {
        line.clear();
        for _ in 0..10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            line.push(b'!' + ((x >> 32) % 94) as u8);
        }
        line.extend_from_slice(format!("{i:020}").as_bytes());
        line.resize(99, b'.');
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.flush()
}

/// A partition's summary: its records, first and last key, whether it is sorted.
type Summary = (u64, Option<Vec<u8>>, Option<Vec<u8>>, bool);

fn summary(it: flint::Partition<(Vec<u8>, Vec<u8>)>) -> Vec<Summary> {
    let (mut n, mut first, mut last, mut sorted) = (0u64, None, None::<Vec<u8>>, true);
    for (k, v) in it {
        sorted &= k.len() == 10 && v.len() == 89;
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--generate") {
        let (Some(path), Some(mib)) = (args.get(1), args.get(2)) else {
            return Err("usage: bench_sort --generate PATH MIB".into());
        };
        generate(path, mib.parse()?)?;
        return Ok(());
    }
    let Some(path) = args.first() else {
        return Err("usage: bench_sort PATH [PARTITIONS]".into());
    };
    let expected = std::fs::metadata(path)?.len() / 100;
    let ctx = Context::builder().app_name("bench_sort").get_or_create()?;
    let parts: u32 = match args.get(1) {
        Some(n) => n.parse()?,
        None => ctx.default_parallelism() * 2,
    };
    let started = std::time::Instant::now();
    let sorted = ctx
        .text_file(path, parts)?
        .map(|l| {
            let b = l.into_bytes();
            let at = b.len().min(10);
            (b[..at].to_vec(), b[at..].to_vec())
        })
        .sort_by_key(true, parts);
    let summaries = sorted.map_partitions(summary).collect()?;
    let secs = started.elapsed().as_secs_f64();
    let mut total = 0;
    let mut prev: Option<Vec<u8>> = None;
    for (i, (count, first, last, ok)) in summaries.iter().enumerate() {
        if !ok {
            return Err(format!("partition {i} is not sorted").into());
        }
        if let (Some(p), Some(f)) = (&prev, first) {
            if p > f {
                return Err(format!("partition {i} starts before the previous one ends").into());
            }
        }
        if last.is_some() {
            prev = last.clone();
        }
        total += count;
    }
    if total != expected {
        return Err(format!("{total} records after the sort, {expected} in the file").into());
    }
    println!("{{\"mode\":\"sort\",\"secs\":{secs:.3},\"records\":{total},\"partitions\":{parts},\"validated\":true}}");
    ctx.stop()?;
    Ok(())
}
