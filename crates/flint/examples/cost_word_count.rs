//! COST baseline for the word-count benchmark (BENCHMARKS.md, "Shuffle jobs"): a
//! single-threaded, hand-written word count with no flint in it — the file read into
//! memory, split on ASCII whitespace as byte slices, counted in a `HashMap<&[u8], u64>`.
//! `cost_word_count PATH` prints one JSON line (`secs` includes reading the file).

use std::collections::HashMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args().nth(1) else {
        return Err("usage: cost_word_count PATH".into());
    };
    let started = std::time::Instant::now();
    let data = std::fs::read(&path)?;
    let mut counts: HashMap<&[u8], u64> = HashMap::with_capacity(1 << 16);
    for w in data
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
    {
        *counts.entry(w).or_insert(0) += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let total: u64 = counts.values().sum();
    println!(
        "{{\"mode\":\"cost\",\"secs\":{secs:.3},\"words\":{total},\"distinct\":{}}}",
        counts.len()
    );
    Ok(())
}
