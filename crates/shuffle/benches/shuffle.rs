//! Shuffle throughput on one core: the record encoding (bitcode against postcard on
//! `(String, u64)`), then shuffle write and read of word-count-like records, with
//! spilling off (budget larger than the input) and on (a small budget), without and
//! with a map-side combiner. MB are the records' own bytes (key length + 8) so the
//! figures compare across encodings and compression.
//!
//! `cargo bench -p flint-shuffle --bench shuffle` (`SHUFFLE_BENCH_RECORDS` to resize). Each
//! write/read mode runs in a child process; "write peak RSS" is its peak resident memory
//! above what it held before the write (the input records themselves excluded).

use std::time::{Duration, Instant};

use bytes::Bytes;
use flint_shuffle::{
    decode_block, read_local_blocks, BlockRef, Combiner, Layout, MapId, MapStatus,
    ReduceAggregator, ShuffleConf, ShuffleWriter,
};

fn words(n: usize) -> Vec<(String, u64)> {
    // A Zipf-like vocabulary of 50,000 words, 3 to 12 letters.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let rank = (50_000f64.powf(u)) as u64; // log-uniform ≈ Zipf(1)
            let len = 3 + (rank.wrapping_mul(2_654_435_761) % 10) as usize;
            let mut w = String::with_capacity(len);
            let mut r = rank.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for _ in 0..len {
                w.push((b'a' + (r % 26) as u8) as char);
                r = r.rotate_left(7) ^ rank;
            }
            (w, 1)
        })
        .collect()
}

fn raw_mb(recs: &[(String, u64)]) -> f64 {
    recs.iter().map(|(k, _)| k.len() + 8).sum::<usize>() as f64 / 1e6
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (best, out.expect("runs > 0"))
}

fn encodings<T>(what: &str, recs: &[T], mb: f64)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    println!(
        "## record encoding, {} {what} records, {mb:.1} MB raw, batches of 1024",
        recs.len()
    );
    let (t, bc): (_, Vec<Vec<u8>>) = best_of(3, || {
        recs.chunks(1024)
            .map(|c| bitcode::serialize(c).expect("bitcode"))
            .collect()
    });
    let bc_size: usize = bc.iter().map(Vec::len).sum();
    let bc_lz4: usize = bc.iter().map(|b| lz4_flex::block::compress(b).len()).sum();
    let (td, n) = best_of(3, || {
        bc.iter()
            .map(|b| bitcode::deserialize::<Vec<T>>(b).expect("decode").len())
            .sum::<usize>()
    });
    assert_eq!(n, recs.len());
    println!(
        "bitcode   encode {:7.0} MB/s  decode {:7.0} MB/s  size {:5.1} MB  lz4 {:5.1} MB",
        mb / t.as_secs_f64(),
        mb / td.as_secs_f64(),
        bc_size as f64 / 1e6,
        bc_lz4 as f64 / 1e6
    );
    let (t, pc): (_, Vec<Vec<u8>>) = best_of(3, || {
        recs.chunks(1024)
            .map(|c| postcard::to_stdvec(c).expect("postcard"))
            .collect()
    });
    let pc_size: usize = pc.iter().map(Vec::len).sum();
    let pc_lz4: usize = pc.iter().map(|b| lz4_flex::block::compress(b).len()).sum();
    let (td, n) = best_of(3, || {
        pc.iter()
            .map(|b| postcard::from_bytes::<Vec<T>>(b).expect("decode").len())
            .sum::<usize>()
    });
    assert_eq!(n, recs.len());
    println!(
        "postcard  encode {:7.0} MB/s  decode {:7.0} MB/s  size {:5.1} MB  lz4 {:5.1} MB",
        mb / t.as_secs_f64(),
        mb / td.as_secs_f64(),
        pc_size as f64 / 1e6,
        pc_lz4 as f64 / 1e6
    );
}

fn sort_records(n: usize) -> Vec<(Bytes, Bytes)> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let k = next().to_le_bytes();
            let k2 = next().to_le_bytes();
            let key: Vec<u8> = k.iter().chain(&k2[..2]).copied().collect();
            let mut val = Vec::with_capacity(90);
            while val.len() < 90 {
                val.extend_from_slice(&next().to_le_bytes());
            }
            val.truncate(90);
            (Bytes::from(key), Bytes::from(val))
        })
        .collect()
}

fn add(c: u64, v: u64) -> u64 {
    c + v
}

const PARTS: u32 = 16;

fn write(
    conf: &ShuffleConf,
    layout: &Layout,
    recs: &[(String, u64)],
    combine: bool,
    map: u32,
) -> MapStatus {
    let part = |k: &String| (flint_shuffle_hash(k) % u64::from(PARTS)) as u32;
    let id = MapId {
        shuffle: 0,
        map,
        attempt: 0,
    };
    if combine {
        let c = Combiner {
            create: |v| v,
            merge_value: add,
            merge_combiners: add,
        };
        let mut w =
            ShuffleWriter::with_combiner(conf, layout, id, PARTS, &part, c, None).expect("writer");
        w.insert_all(recs.iter().cloned()).expect("insert");
        w.commit().expect("commit")
    } else {
        let mut w = ShuffleWriter::new(conf, layout, id, PARTS, &part, None).expect("writer");
        w.insert_all(recs.iter().cloned()).expect("insert");
        w.commit().expect("commit")
    }
}

fn flint_shuffle_hash(k: &str) -> u64 {
    k.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One mode in this process: prints its table row.
fn run_mode(n: usize, combine: bool, budget: u64) {
    let recs = words(n);
    let mb = raw_mb(&recs);
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = ShuffleConf {
        local_dirs: vec![dir.path().to_path_buf()],
        memory_budget: budget,
        ..ShuffleConf::default()
    };
    let layout = Layout::new(&conf.local_dirs, "bench").expect("layout");
    let base = status_kib("VmRSS:");
    let t = Instant::now();
    let status = write(&conf, &layout, &recs, combine, 0);
    let wt = t.elapsed();
    let write_peak = status_kib("VmHWM:").saturating_sub(base);
    // Read: decode every block (and, when combined, aggregate it reduce-side).
    let t = Instant::now();
    let mut count = 0u64;
    for p in 0..PARTS {
        let (metas, data): (_, Bytes) = read_local_blocks(&layout, 0, 0, p, p + 1).expect("read");
        let block = BlockRef {
            shuffle: 0,
            map: 0,
            partition: p,
        };
        let recs = decode_block::<String, u64>(block, data, &metas[0]).expect("verify");
        if combine {
            let mut agg = ReduceAggregator::new(&conf, &layout, 0, p, 0, add, None).expect("agg");
            agg.insert_all(recs).expect("agg");
            count += agg
                .finish()
                .expect("finish")
                .map(|r| r.expect("rec").1)
                .sum::<u64>();
        } else {
            count += recs.map(|r| r.expect("rec").1).sum::<u64>();
        }
    }
    let rt = t.elapsed();
    assert_eq!(count, n as u64);
    println!(
        "| {} | {} | {:.0} | {} | {:.1} | {:.1} | {:.0} | {} |",
        if combine {
            "combine (word count)"
        } else {
            "plain"
        },
        if budget >= 1 << 30 {
            "4 GiB (no spill)".to_string()
        } else {
            format!("{} MiB", budget >> 20)
        },
        mb / wt.as_secs_f64(),
        status.spills,
        status.bytes_spilled as f64 / 1e6,
        status.total_bytes() as f64 / 1e6,
        mb / rt.as_secs_f64(),
        write_peak >> 10,
    );
}

/// GraySort-shaped records: 10-byte random keys, 90-byte values, sorted by key
/// (range-partitioned on the first key byte), read back through a `ReduceSorter`.
fn run_sort(n: usize, budget: u64) {
    let recs = sort_records(n);
    let mb = (n * 100) as f64 / 1e6;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = ShuffleConf {
        local_dirs: vec![dir.path().to_path_buf()],
        memory_budget: budget,
        ..ShuffleConf::default()
    };
    let layout = Layout::new(&conf.local_dirs, "bench").expect("layout");
    let base = status_kib("VmRSS:");
    let part = |k: &Bytes| u32::from(k[0]) * PARTS / 256;
    let order: flint_shuffle::KeyOrdering<Bytes> = |a, b| a.cmp(b);
    let id = MapId {
        shuffle: 0,
        map: 0,
        attempt: 0,
    };
    let t = Instant::now();
    let mut w = ShuffleWriter::new(&conf, &layout, id, PARTS, &part, Some(order)).expect("writer");
    w.insert_all(recs.iter().cloned()).expect("insert");
    let status = w.commit().expect("commit");
    let wt = t.elapsed();
    let write_peak = status_kib("VmHWM:").saturating_sub(base);
    let t = Instant::now();
    let mut count = 0usize;
    for p in 0..PARTS {
        let (metas, data): (_, Bytes) = read_local_blocks(&layout, 0, 0, p, p + 1).expect("read");
        let block = BlockRef {
            shuffle: 0,
            map: 0,
            partition: p,
        };
        let mut sorter =
            flint_shuffle::ReduceSorter::new(&conf, &layout, 0, p, 0, order).expect("sorter");
        sorter
            .insert_all(decode_block::<Bytes, Bytes>(block, data, &metas[0]).expect("verify"))
            .expect("insert");
        let mut last: Option<Bytes> = None;
        for r in sorter.finish().expect("finish") {
            let (k, _) = r.expect("rec");
            assert!(last.as_ref().is_none_or(|l| l <= &k));
            last = Some(k);
            count += 1;
        }
    }
    let rt = t.elapsed();
    assert_eq!(count, n);
    println!(
        "| sort (10 B random keys, 90 B random values, `Bytes`) | {} | {:.0} | {} | {:.1} | {:.1} | {:.0} | {} |",
        if budget >= 1 << 30 {
            "4 GiB (no spill)".to_string()
        } else {
            format!("{} MiB", budget >> 20)
        },
        mb / wt.as_secs_f64(),
        status.spills,
        status.bytes_spilled as f64 / 1e6,
        status.total_bytes() as f64 / 1e6,
        mb / rt.as_secs_f64(),
        write_peak >> 10,
    );
}

fn main() {
    let n: usize = std::env::var("SHUFFLE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000_000);
    if let Ok(mode) = std::env::var("SHUFFLE_BENCH_MODE") {
        let (combine, budget) = mode.split_once(':').expect("mode combine:budget");
        if combine == "sort" {
            run_sort(n / 4, budget.parse().expect("budget"));
        } else {
            run_mode(n, combine == "1", budget.parse().expect("budget"));
        }
        return;
    }
    let recs = words(n.min(1_000_000));
    encodings("(String, u64)", &recs, raw_mb(&recs));
    drop(recs);
    let recs = sort_records(n.min(1_000_000) / 4);
    println!();
    encodings(
        "(Bytes, Bytes) 10 + 90 B",
        &recs,
        recs.len() as f64 * 100.0 / 1e6,
    );
    drop(recs);
    let mb = raw_mb(&words(n));
    println!(
        "\n## shuffle write/read, one core, {n} records ({mb:.1} MB raw), {PARTS} partitions, LZ4"
    );
    println!("| mode | budget | write MB/s | spills | spilled MB | output MB | read MB/s | write peak RSS MiB |");
    println!("|---|---|--:|--:|--:|--:|--:|--:|");
    let exe = std::env::current_exe().expect("exe");
    for combine in ["0", "1", "sort"] {
        for budget in [4u64 << 30, 16 << 20] {
            // Each mode in its own process, so its peak RSS is its own.
            let status = std::process::Command::new(&exe)
                .env("SHUFFLE_BENCH_MODE", format!("{combine}:{budget}"))
                .env("SHUFFLE_BENCH_RECORDS", n.to_string())
                .status()
                .expect("run a mode");
            assert!(status.success());
        }
    }
}
