//! COST baselines for the word-count benchmark (BENCHMARKS.md, "Shuffle jobs"):
//! single-threaded, hand-written word counts with no flint in them — the file read into
//! memory, split on ASCII whitespace as byte slices, counted in a `HashMap<&[u8], u64>`.
//!
//! `cost_word_count PATH [std|fast]` prints one JSON line (`secs` includes reading the
//! file). `std` (the default) is the plain `HashMap` with the standard library's SipHash;
//! `fast` is the same program with foldhash's fixed-seed hasher, what a performance-minded
//! author of a one-thread count would pick (flint's shuffle hashes keys with foldhash
//! too, so this is the baseline without a hash-function advantage on either side).

use std::collections::HashMap;
use std::hash::BuildHasher;

fn count<S: BuildHasher>(data: &[u8], hasher: S) -> (u64, usize) {
    let mut counts: HashMap<&[u8], u64, S> = HashMap::with_capacity_and_hasher(1 << 16, hasher);
    for w in data
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
    {
        *counts.entry(w).or_insert(0) += 1;
    }
    (counts.values().sum(), counts.len())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), hasher) = (args.next(), args.next()) else {
        return Err("usage: cost_word_count PATH [std|fast]".into());
    };
    let fast = match hasher.as_deref() {
        None | Some("std") => false,
        Some("fast") => true,
        Some(other) => return Err(format!("unknown hasher {other:?}: use std or fast").into()),
    };
    let started = std::time::Instant::now();
    let data = std::fs::read(&path)?;
    let (total, distinct) = if fast {
        count(&data, foldhash::fast::FixedState::with_seed(0x5eed))
    } else {
        count(&data, std::collections::hash_map::RandomState::new())
    };
    let secs = started.elapsed().as_secs_f64();
    let mode = if fast { "cost-fast" } else { "cost" };
    println!(
        "{{\"mode\":\"{mode}\",\"secs\":{secs:.3},\"words\":{total},\"distinct\":{distinct}}}"
    );
    Ok(())
}
