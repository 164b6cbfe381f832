//! The keyed operations on `local[2]` against a single-process computation of the same
//! generated data; the shuffle's reuse across jobs, recovery from a corrupt or missing
//! map output, and the clean-up of its files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flint::prelude::*;

fn ctx(name: &str, local_dir: &std::path::Path) -> Context {
    Context::builder()
        .app_name(name)
        .master("local[2]")
        .conf("local.dir", local_dir.display().to_string())
        .create()
        .unwrap()
}

/// Deterministic pseudo-random pairs: keys skewed over `keys` values.
fn pairs(n: usize, keys: u64, seed: u64) -> Vec<(u64, u64)> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % keys) * (x % 3) / 2;
            (k, x % 1000)
        })
        .collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The application's shuffle directory under `local_dir`.
fn shuffle_dir(ctx: &Context, local_dir: &std::path::Path) -> PathBuf {
    local_dir.join("flint-shuffle").join(ctx.app_id())
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_keyed_operation_equals_a_single_process_computation() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = ctx("keyed-ops", tmp.path());
    let data = pairs(5000, 97, 7);
    let d = ctx.parallelize(data.clone(), 5);

    let mut sums: BTreeMap<u64, u64> = BTreeMap::new();
    let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (k, v) in &data {
        *sums.entry(*k).or_default() += v;
        groups.entry(*k).or_default().push(*v);
    }
    let sums_v: Vec<(u64, u64)> = sums.clone().into_iter().collect();

    assert_eq!(
        sorted(d.reduce_by_key(|a, b| a + b, 3).collect().unwrap()),
        sums_v
    );
    assert_eq!(
        sorted(d.fold_by_key(0, |a, b| a + b, 4).collect().unwrap()),
        sums_v
    );
    let agg = d
        .aggregate_by_key(
            (0u64, 0u64),
            |(s, n), v| (s + v, n + 1),
            |a, b| (a.0 + b.0, a.1 + b.1),
            2,
        )
        .collect()
        .unwrap();
    let want_agg: Vec<(u64, (u64, u64))> = groups
        .iter()
        .map(|(k, vs)| (*k, (vs.iter().sum(), vs.len() as u64)))
        .collect();
    assert_eq!(sorted(agg), want_agg);

    let g: Vec<(u64, Vec<u64>)> = d.group_by_key(3).map_values(sorted).collect().unwrap();
    let want_g: Vec<(u64, Vec<u64>)> = groups
        .iter()
        .map(|(k, v)| (*k, sorted(v.clone())))
        .collect();
    assert_eq!(sorted(g), want_g);

    let p = d.partition_by(4);
    assert_eq!(p.num_partitions(), 4);
    let parts = p
        .map_partitions(|it| vec![it.map(|(k, _)| k).collect::<Vec<_>>()])
        .collect()
        .unwrap();
    for (i, a) in parts.iter().enumerate() {
        for (j, b) in parts.iter().enumerate() {
            if i != j {
                assert!(
                    a.iter().all(|k| !b.contains(k)),
                    "a key in partitions {i} and {j}"
                );
            }
        }
    }
    assert_eq!(sorted(p.collect().unwrap()), sorted(data.clone()));

    let counts = d.count_by_key().unwrap();
    let want_counts: HashMap<u64, u64> = groups.iter().map(|(k, v)| (*k, v.len() as u64)).collect();
    assert_eq!(counts, want_counts);
    assert_eq!(
        d.reduce_by_key(|a, b| a.max(b), 2)
            .collect_as_map()
            .unwrap(),
        groups
            .iter()
            .map(|(k, v)| (*k, *v.iter().max().unwrap()))
            .collect::<HashMap<_, _>>()
    );
    assert_eq!(
        sorted(d.keys().distinct(3).collect().unwrap()),
        groups.keys().copied().collect::<Vec<_>>()
    );
    assert_eq!(
        d.values().collect().unwrap(),
        data.iter().map(|p| p.1).collect::<Vec<_>>()
    );

    // Joins against a second data set with some keys missing on either side.
    let other: Vec<(u64, String)> = (0..60u64)
        .filter(|k| k % 4 != 1)
        .map(|k| (k, format!("n{k}")))
        .collect();
    let o = ctx.parallelize(other.clone(), 3);
    let names: BTreeMap<u64, String> = other.iter().cloned().collect();
    let mut want_join = Vec::new();
    let mut want_left = Vec::new();
    for (k, v) in &data {
        match names.get(k) {
            Some(n) => {
                want_join.push((*k, (*v, n.clone())));
                want_left.push((*k, (*v, Some(n.clone()))));
            }
            None => want_left.push((*k, (*v, None))),
        }
    }
    assert_eq!(sorted(d.join(&o, 4).collect().unwrap()), sorted(want_join));
    assert_eq!(
        sorted(d.left_outer_join(&o, 2).collect().unwrap()),
        sorted(want_left)
    );
    let cg = d
        .cogroup(&o, 3)
        .map_values(|(a, b)| (sorted(a), b))
        .collect()
        .unwrap();
    let mut want_cg: BTreeMap<u64, (Vec<u64>, Vec<String>)> = BTreeMap::new();
    for (k, v) in &data {
        want_cg.entry(*k).or_default().0.push(*v);
    }
    for (k, n) in &other {
        want_cg.entry(*k).or_default().1.push(n.clone());
    }
    let want_cg: Vec<_> = want_cg
        .into_iter()
        .map(|(k, (a, b))| (k, (sorted(a), b)))
        .collect();
    assert_eq!(sorted(cg), want_cg);

    // sort_by_key: globally ordered across partitions, both ways; repartition keeps all.
    let s = d.sort_by_key(true, 4);
    let keys = s.keys().collect().unwrap();
    assert_eq!(keys, sorted(data.iter().map(|p| p.0).collect()));
    let per_part: Vec<u64> = s
        .map_partitions(|it| vec![it.count() as u64])
        .collect()
        .unwrap();
    assert_eq!(per_part.len(), 4);
    assert!(
        per_part.iter().filter(|n| **n > 0).count() >= 2,
        "{per_part:?}"
    );
    let desc = d.sort_by_key(false, 3).keys().collect().unwrap();
    assert!(desc.windows(2).all(|w| w[0] >= w[1]));
    let r = d.repartition(7);
    assert_eq!(r.num_partitions(), 7);
    assert_eq!(sorted(r.collect().unwrap()), sorted(data.clone()));
    ctx.stop().unwrap();
}

#[test]
fn word_count_and_an_empty_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = ctx("keyed-words", tmp.path());
    let text = "the cat the dog a cat the end".to_string();
    let lines = ctx.parallelize(vec![text.clone(), text], 2);
    let counts = lines
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|w| (w, 1u64))
        .reduce_by_key(|a, b| a + b, 3)
        .collect_as_map()
        .unwrap();
    assert_eq!((counts["the"], counts["cat"], counts["end"]), (6, 4, 2));
    let empty = ctx.parallelize(Vec::<(u32, u32)>::new(), 2);
    assert!(empty
        .reduce_by_key(|a, b| a + b, 2)
        .collect()
        .unwrap()
        .is_empty());
    assert!(empty.sort_by_key(true, 3).collect().unwrap().is_empty());
    ctx.stop().unwrap();
}

#[test]
fn map_outputs_are_reused_recovered_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = ctx("keyed-recovery", tmp.path());
    let dir = shuffle_dir(&ctx, tmp.path());
    let seen = ctx.accumulator("map-side elements");
    let data = pairs(4000, 50, 3);
    let want: BTreeMap<u64, u64> = data.iter().fold(BTreeMap::new(), |mut m, (k, v)| {
        *m.entry(*k).or_default() += v;
        m
    });
    let want: Vec<(u64, u64)> = want.into_iter().collect();
    let counted = ctx
        .parallelize(data, 4)
        .map_with(seen.clone(), |a, x| {
            a.add(1);
            x
        })
        .reduce_by_key(|a, b| a + b, 3);
    assert_eq!(sorted(counted.collect().unwrap()), want);
    assert_eq!(seen.value(), 4000);

    // A second job skips the map stage: its outputs are available.
    assert_eq!(counted.count().unwrap(), want.len() as u64);
    assert_eq!(seen.value(), 4000, "the map stage ran again");

    // One map output corrupted on disk: detected by its checksum, that map task runs
    // again (1000 elements), the answer is the same.
    let shuffles: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(shuffles.len(), 1, "{shuffles:?}");
    let data_file = shuffles[0].join("2.data");
    let mut bytes = std::fs::read(&data_file).unwrap();
    assert!(bytes.len() > 100);
    for b in &mut bytes[10..60] {
        *b ^= 0x5a;
    }
    std::fs::write(&data_file, bytes).unwrap();
    assert_eq!(sorted(counted.collect().unwrap()), want);
    assert_eq!(
        seen.value(),
        5000,
        "only the corrupt map output is recomputed"
    );

    // A missing one too.
    std::fs::remove_file(shuffles[0].join("0.index")).unwrap();
    assert_eq!(sorted(counted.collect().unwrap()), want);
    assert_eq!(
        seen.value(),
        6000,
        "only the missing map output is recomputed"
    );

    // The shuffle's files go when no dataset reaches it any more.
    drop(counted);
    wait_for("the shuffle's files to go", || !shuffles[0].exists());

    // And every file of the application when it ends.
    let again = ctx.parallelize(pairs(100, 5, 1), 2).group_by_key(2);
    assert_eq!(again.count().unwrap(), 5);
    assert!(std::fs::read_dir(&dir).unwrap().count() > 0);
    ctx.stop().unwrap();
    assert!(
        !dir.exists(),
        "{} is left after the application ended",
        dir.display()
    );
}

#[test]
fn a_tiny_memory_budget_spills_and_gives_the_same_answers() {
    let data = pairs(20_000, 5000, 11);
    let run = |budget: Option<&str>| {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = Context::builder()
            .app_name("keyed-spill")
            .master("local[2]")
            .conf("local.dir", tmp.path().display().to_string());
        if let Some(budget) = budget {
            b = b.conf("shuffle.spill.memory_budget", budget);
        }
        let ctx = b.create().unwrap();
        let d = ctx.parallelize(data.clone(), 4);
        let sums = sorted(d.reduce_by_key(|a, b| a + b, 3).collect().unwrap());
        let groups: Vec<(u64, usize)> =
            sorted(d.group_by_key(3).map_values(|v| v.len()).collect().unwrap());
        let keys = d.sort_by_key(true, 3).keys().collect().unwrap();
        let m = ctx.shuffle_metrics();
        ctx.stop().unwrap();
        (sums, groups, keys, m)
    };
    let (s1, g1, k1, m1) = run(None);
    let (s2, g2, k2, m2) = run(Some("16k"));
    assert_eq!(m1.spills, 0, "{m1:?}");
    assert!(
        m2.spills > 0 && m2.bytes_spilled > 0,
        "no spill seen: {m2:?}"
    );
    assert_eq!((s1, g1), (s2, g2));
    assert_eq!(k1, k2);
    assert!(k1.windows(2).all(|w| w[0] <= w[1]));
}

/// A line's key (before the first space) and its value's length.
fn parse_record(l: String) -> (String, usize) {
    let (k, v) = l.split_once(' ').unwrap_or((&l, ""));
    (k.to_owned(), v.len())
}

/// `sort_by_key` over a text file read through per-element operations samples each
/// split at random positions instead of reading it (the closures see the file once,
/// plus the sampled lines); through `map_partitions` the sampling job reads
/// everything (twice in all). Both outputs are the single-process sort, in balanced
/// partitions.
#[test]
fn sort_by_key_over_a_text_file_samples_splits_by_position() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("records.txt");
    // 40,000 lines of a 10-byte key and a 20–119-byte value: ~3 MiB, 3 splits of
    // more than 1 MiB each (`text_file` samples shorter splits by reading them).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut text = String::new();
    let mut want: Vec<(String, usize)> = Vec::new();
    for _ in 0..40_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key: String = (0..10)
            .map(|i| char::from(b'a' + ((x >> (i * 5)) % 26) as u8))
            .collect();
        let value = "v".repeat(20 + (x % 100) as usize);
        text.push_str(&format!("{key} {value}\n"));
        want.push((key, value.len()));
    }
    std::fs::write(&path, &text).unwrap();
    want.sort();
    let ctx = ctx("keyed-text-sort", tmp.path());
    let lines = ctx.text_file(path.to_str().unwrap(), 3).unwrap();
    assert_eq!(lines.num_partitions(), 3);
    let seen = ctx.accumulator("lines seen, per element");
    let per_element = lines
        .filter(|l| !l.is_empty())
        .map_with(seen.clone(), |a, l| {
            a.add(1);
            l
        })
        .flat_map(|l| vec![parse_record(l)])
        .sort_by_key(true, 4);
    let parts: Vec<Vec<(String, usize)>> = per_element
        .map_partitions(|it| vec![it.collect::<Vec<_>>()])
        .collect()
        .unwrap();
    let n = seen.value();
    assert!(
        (40_000..40_000 + 2_000).contains(&n),
        "the closures saw {n} lines: the sampling job should have read a few hundred, not the file"
    );
    let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
    assert!(
        sizes.iter().all(|s| (4_000..20_000).contains(s)),
        "unbalanced partitions from a position sample: {sizes:?}"
    );
    assert_eq!(parts.concat(), want);

    let whole = ctx.accumulator("lines seen, per partition");
    let through_partitions = lines
        .map_partitions_with(whole.clone(), |a, it| {
            it.inspect(move |_| a.add(1))
                .map(parse_record)
                .collect::<Vec<_>>()
        })
        .sort_by_key(true, 4)
        .collect()
        .unwrap();
    assert_eq!(
        whole.value(),
        80_000,
        "map_partitions is sampled over all its output"
    );
    assert_eq!(through_partitions, want);
    ctx.stop().unwrap();
}
