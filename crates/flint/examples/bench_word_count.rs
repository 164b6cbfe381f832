//! Word-count benchmark driver (BENCHMARKS.md, "Shuffle jobs"; run by `bench/shuffle.sh`).
//!
//! `bench_word_count MODE PATH [PARTITIONS]` counts the words of a text file and prints
//! one JSON line (`secs` from before the first job to the collected counts, the total
//! and distinct word counts). MODE is one of:
//! - `closures`: the api.md shape, `text_file → flat_map` to owned words `→ map` to
//!   `(w, 1) → reduce_by_key`, on the master of `FLINT_MASTER` (else `local[*]`);
//! - `map_partitions`: what a performance-minded user writes — each partition counted
//!   into a `HashMap` first, then `reduce_by_key` over the partial counts;
//! - `serial`: the same closures as `closures` run on one thread in this process, a plain
//!   iterator chain over the file's lines into a `HashMap` (no flint context at all);
//! - `count_only`: the closures of `closures` ending in `count` instead of the shuffle (a
//!   diagnostic: the narrow pipeline's cost alone; `distinct` is then 1).

use std::collections::HashMap;
use std::io::BufRead;

use flint::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(path)) = (args.first(), args.get(1)) else {
        return Err(
            "usage: bench_word_count closures|map_partitions|serial|count_only PATH [PARTITIONS]"
                .into(),
        );
    };
    let partitions: u32 = match args.get(2) {
        Some(n) => n.parse()?,
        None => 0,
    };
    let started = std::time::Instant::now();
    let counts: Vec<(String, u64)> = match mode.as_str() {
        "serial" => {
            let file = std::io::BufReader::new(std::fs::File::open(path)?);
            let mut map: HashMap<String, u64> = HashMap::new();
            let flat = |l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
            let pair = |w: String| (w, 1u64);
            let reduce = |a: u64, b: u64| a + b;
            for line in file.lines() {
                for (w, n) in flat(line?).into_iter().map(pair) {
                    match map.get_mut(&w) {
                        Some(c) => *c = reduce(*c, n),
                        None => {
                            map.insert(w, n);
                        }
                    }
                }
            }
            map.into_iter().collect()
        }
        "count_only" => {
            let ctx = Context::builder()
                .app_name("bench_word_count")
                .get_or_create()?;
            let n = ctx
                .text_file(path, partitions)?
                .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .map(|w| (w, 1u64))
                .count()?;
            ctx.stop()?;
            vec![("all".to_string(), n)]
        }
        "closures" | "map_partitions" => {
            let ctx = Context::builder()
                .app_name("bench_word_count")
                .get_or_create()?;
            let lines = ctx.text_file(path, partitions)?;
            let out = if mode == "closures" {
                lines
                    .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .map(|w| (w, 1u64))
                    .reduce_by_key(|a, b| a + b, partitions)
                    .collect()?
            } else {
                lines
                    .map_partitions(|it| {
                        let mut m: HashMap<String, u64> = HashMap::new();
                        for l in it {
                            for w in l.split_whitespace() {
                                match m.get_mut(w) {
                                    Some(c) => *c += 1,
                                    None => {
                                        m.insert(w.to_owned(), 1);
                                    }
                                }
                            }
                        }
                        m
                    })
                    .reduce_by_key(|a, b| a + b, partitions)
                    .collect()?
            };
            ctx.stop()?;
            out
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    };
    let secs = started.elapsed().as_secs_f64();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    println!(
        "{{\"mode\":\"{mode}\",\"secs\":{secs:.3},\"words\":{total},\"distinct\":{}}}",
        counts.len()
    );
    Ok(())
}
