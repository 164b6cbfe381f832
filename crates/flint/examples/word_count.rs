//! Word count: a text file → words → `reduce_by_key`, the 20 most frequent printed.
//! `cargo run -p flint --example word_count -- [PATH] [PARTITIONS]`; without a path it
//! generates about 8 MiB of text with a Zipf-distributed vocabulary first (into the
//! system temp dir). `--generate PATH MIB` only writes such a file, and `--hand PATH`
//! counts it with a hand-written single-threaded loop (a `HashMap` over byte slices:
//! the COST baseline of `bench/shuffle.sh`).
//!
//! Runs on the master given by `FLINT_MASTER`, else `local[*]`.

use std::io::Write;

use flint::prelude::*;

/// Writes about `mib` MiB of lines of words whose frequencies follow Zipf's law (s = 1)
/// over a 50 000-word vocabulary; deterministic.
fn generate(path: &std::path::Path, mib: u64) -> std::io::Result<()> {
    const WORDS: usize = 50_000;
    let vocab: Vec<String> = (0..WORDS)
        .map(|i| {
            let mut w = String::new();
            let mut n = i + 1;
            while n > 0 {
                w.push((b'a' + (n % 26) as u8) as char);
                n /= 26;
            }
            w
        })
        .collect();
    // Cumulative weights 1/k.
    let mut cum = Vec::with_capacity(WORDS);
    let mut total = 0.0;
    for k in 1..=WORDS {
        total += 1.0 / k as f64;
        cum.push(total);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0u64;
    let mut line = String::new();
    while written < mib << 20 {
        line.clear();
        for i in 0..12 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64 * total;
            let k = cum.partition_point(|c| *c < u).min(WORDS - 1);
            if i > 0 {
                line.push(' ');
            }
            line.push_str(&vocab[k]);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    out.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::builder().app_name("word_count").get_or_create()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hand") {
        let Some(path) = args.get(1) else {
            return Err("usage: word_count --hand PATH".into());
        };
        let started = std::time::Instant::now();
        let text = std::fs::read(path)?;
        let mut counts: std::collections::HashMap<&[u8], u64> = std::collections::HashMap::new();
        for w in text
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            *counts.entry(w).or_default() += 1;
        }
        let total: u64 = counts.values().sum();
        println!(
            "{total} words, {} distinct, in {:.3} s (hand-written, one thread)",
            counts.len(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("--generate") {
        let (Some(path), Some(mib)) = (args.get(1), args.get(2)) else {
            return Err("usage: word_count --generate PATH MIB".into());
        };
        generate(std::path::Path::new(path), mib.parse()?)?;
        return Ok(());
    }
    let path = match args.first() {
        Some(p) => p.clone(),
        None => {
            let p = std::env::temp_dir().join(format!("flint-words-{}.txt", std::process::id()));
            generate(&p, 8)?;
            p.display().to_string()
        }
    };
    let partitions: u32 = match args.get(1) {
        Some(n) => n.parse()?,
        None => 0,
    };
    let started = std::time::Instant::now();
    let counts = ctx
        .text_file(&path, partitions)?
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|w| (w, 1u64))
        .reduce_by_key(|a, b| a + b, partitions);
    let mut top = counts.collect()?;
    let elapsed = started.elapsed();
    let distinct = top.len();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (w, n) in top.iter().take(20) {
        println!("{n:>10} {w}");
    }
    let total: u64 = top.iter().map(|(_, n)| n).sum();
    println!(
        "{total} words, {distinct} distinct, in {:.3} s",
        elapsed.as_secs_f64()
    );
    if args.is_empty() {
        let _ = std::fs::remove_file(&path);
    }
    ctx.stop()?;
    Ok(())
}
