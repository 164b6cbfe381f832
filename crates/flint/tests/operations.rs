//! Every operation and action against a plain single-threaded computation of the same
//! data, over random data and partition counts (proptest).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use flint::prelude::*;
use proptest::prelude::*;

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::builder()
            .app_name("operations")
            .master("local[3]")
            .create()
            .unwrap()
    })
}

/// Spark's slices of `len` items into `n`.
fn slices<T: Clone>(v: &[T], n: u32) -> Vec<Vec<T>> {
    let len = v.len() as u64;
    (0..u64::from(n))
        .map(|i| {
            let a = (len * i / u64::from(n)) as usize;
            let b = (len * (i + 1) / u64::from(n)) as usize;
            v[a..b].to_vec()
        })
        .collect()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn narrow_transformations_match_a_plain_computation(v in prop::collection::vec(any::<i32>(), 0..200), n in 1u32..9, k in any::<i16>()) {
        let d = ctx().parallelize(v.clone(), n);
        prop_assert_eq!(d.num_partitions(), n);
        prop_assert_eq!(d.collect().unwrap(), v.clone());
        prop_assert_eq!(d.map(|x| i64::from(x) * 2).collect().unwrap(), v.iter().map(|x| i64::from(*x) * 2).collect::<Vec<_>>());
        let k = i64::from(k);
        prop_assert_eq!(d.map_with(k, |k, x| i64::from(x) + k).collect().unwrap(), v.iter().map(|x| i64::from(*x) + k).collect::<Vec<_>>());
        prop_assert_eq!(d.filter(|x| x % 3 == 0).collect().unwrap(), v.iter().copied().filter(|x| x % 3 == 0).collect::<Vec<_>>());
        prop_assert_eq!(d.filter_with(k, |k, x| i64::from(*x) > *k).collect().unwrap(), v.iter().copied().filter(|x| i64::from(*x) > k).collect::<Vec<_>>());
        prop_assert_eq!(d.flat_map(|x| vec![x; (x.rem_euclid(3)) as usize]).collect().unwrap(), v.iter().flat_map(|x| vec![*x; (x.rem_euclid(3)) as usize]).collect::<Vec<_>>());
        prop_assert_eq!(d.flat_map_with(2usize, |r, x| vec![x; *r]).collect().unwrap(), v.iter().flat_map(|x| vec![*x; 2]).collect::<Vec<_>>());
        prop_assert_eq!(d.key_by(|x| x % 7).collect().unwrap(), v.iter().map(|x| (x % 7, *x)).collect::<Vec<_>>());
        // Per-partition operations see exactly Spark's slices.
        let sums: Vec<i64> = slices(&v, n).iter().map(|s| s.iter().map(|x| i64::from(*x)).sum()).collect();
        prop_assert_eq!(d.map_partitions(|it| [it.map(i64::from).sum::<i64>()]).collect().unwrap(), sums.clone());
        prop_assert_eq!(d.map_partitions_with(k, |k, it| [it.map(i64::from).sum::<i64>() + k]).collect().unwrap(), sums.iter().map(|s| s + k).collect::<Vec<_>>());
    }

    #[test]
    fn actions_match_a_plain_computation(v in prop::collection::vec(any::<u32>(), 0..300), n in 1u32..9, t in 0usize..40) {
        let d = ctx().parallelize(v.clone(), n).map(u64::from);
        let w: Vec<u64> = v.iter().map(|x| u64::from(*x)).collect();
        prop_assert_eq!(d.count().unwrap(), w.len() as u64);
        prop_assert_eq!(d.reduce(|a, b| a + b).unwrap(), w.iter().copied().reduce(|a, b| a + b));
        prop_assert_eq!(d.reduce(|a, b| a.max(b)).unwrap(), w.iter().copied().max());
        prop_assert_eq!(d.fold(0, |a, b| a + b).unwrap(), w.iter().sum::<u64>());
        prop_assert_eq!(d.take(t).unwrap(), w.iter().copied().take(t).collect::<Vec<_>>());
        prop_assert_eq!(d.first().unwrap(), w.first().copied());
        let mut sorted = w.clone();
        sorted.sort();
        sorted.truncate(t);
        prop_assert_eq!(d.take_ordered(t).unwrap(), sorted);
        let acc = ctx().accumulator("sum");
        d.foreach_with(acc.clone(), |a, x| a.add(x)).unwrap();
        prop_assert_eq!(acc.value(), w.iter().sum::<u64>());
        d.foreach(|x| assert!(x <= u64::from(u32::MAX))).unwrap();
    }

    #[test]
    fn union_coalesce_and_cache_keep_every_element_in_order(a in prop::collection::vec(any::<u16>(), 0..100), b in prop::collection::vec(any::<u16>(), 0..100), n in 1u32..6, m in 1u32..6, c in 1u32..12) {
        let da = ctx().parallelize(a.clone(), n);
        let db = ctx().parallelize(b.clone(), m);
        let u = da.union(&db);
        let both: Vec<u16> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(u.num_partitions(), n + m);
        prop_assert_eq!(u.collect().unwrap(), both.clone());
        let co = u.coalesce(c);
        prop_assert_eq!(co.num_partitions(), c.min(n + m));
        prop_assert_eq!(co.collect().unwrap(), both.clone());
        let cached = co.map(u32::from).cache();
        prop_assert_eq!(cached.collect().unwrap(), both.iter().map(|x| u32::from(*x)).collect::<Vec<_>>());
        prop_assert_eq!(cached.count().unwrap(), both.len() as u64);
        prop_assert_eq!(cached.union(&cached).count().unwrap(), 2 * both.len() as u64);
        cached.unpersist();
    }
}

#[test]
fn range_matches_and_handles_empty_and_uneven_slices() {
    let c = ctx();
    assert_eq!(c.range(10, 10, 3).collect().unwrap(), Vec::<u64>::new());
    assert_eq!(c.range(10, 5, 3).count().unwrap(), 0);
    assert_eq!(
        c.range(3, 20, 4).collect().unwrap(),
        (3..20).collect::<Vec<_>>()
    );
    assert_eq!(
        c.range(0, 2, 5)
            .map_partitions(|it| [it.count()])
            .collect()
            .unwrap(),
        vec![0, 0, 1, 0, 1]
    );
    assert_eq!(
        c.range(u64::MAX - 3, u64::MAX, 2).collect().unwrap(),
        vec![u64::MAX - 3, u64::MAX - 2, u64::MAX - 1]
    );
}

#[test]
fn text_file_reads_files_directories_and_globs_line_by_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for f in 0..3 {
        let mut text = String::new();
        for l in 0..200 {
            let line = format!("file {f} line {l} {}", "x".repeat(l % 17));
            text.push_str(&line);
            text.push('\n');
            expected.push(line);
        }
        std::fs::write(tmp.path().join(format!("in-{f}.txt")), text).unwrap();
    }
    std::fs::write(tmp.path().join("_hidden"), "not read\n").unwrap();
    let c = ctx();
    let dir = c.text_file(tmp.path().to_str().unwrap(), 7).unwrap();
    assert!(dir.num_partitions() >= 7);
    assert_eq!(dir.collect().unwrap(), expected);
    let one = c
        .text_file(tmp.path().join("in-1.txt").to_str().unwrap(), 5)
        .unwrap();
    assert_eq!(one.collect().unwrap(), expected[200..400].to_vec());
    let glob = c
        .text_file(&format!("{}/in-[02].txt", tmp.path().display()), 2)
        .unwrap();
    assert_eq!(glob.count().unwrap(), 400);
}

#[test]
fn save_as_text_file_writes_one_committed_part_per_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nested/out");
    let words = vec!["a".to_owned(), "bb".to_owned(), "ccc".to_owned()];
    ctx().parallelize(words, 4).save_as_text_file(&out).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "_SUCCESS",
            "part-00000",
            "part-00001",
            "part-00002",
            "part-00003"
        ]
    );
    let parts: Vec<String> = (0..4)
        .map(|p| std::fs::read_to_string(out.join(format!("part-{p:05}"))).unwrap())
        .collect();
    assert_eq!(parts, vec!["", "a\n", "bb\n", "ccc\n"]);
}

#[test]
fn broadcasts_reach_tasks_and_large_values_work() {
    let c = ctx();
    let table: Vec<u64> = (0..100_000).map(|x| x * 3).collect();
    let b = c.broadcast(table.clone()).unwrap();
    let got = c
        .range(0, 100_000, 6)
        .map_with(b.clone(), |t, i| t.value()[i as usize])
        .reduce(|x, y| x + y)
        .unwrap();
    assert_eq!(got, Some(table.iter().sum()));
    assert_eq!(b.value().len(), 100_000);
    // A tuple of shared variables in one capture.
    let acc = c.accumulator("hits");
    c.range(0, 100, 3)
        .foreach_with((b, acc.clone(), 50u64), |(t, acc, min), i| {
            if t.value()[i as usize] >= *min {
                acc.add(1)
            }
        })
        .unwrap();
    assert_eq!(
        acc.value(),
        (0..100u64).filter(|i| i * 3 >= 50).count() as u64
    );
}

#[test]
fn empty_datasets_give_empty_answers() {
    let c = ctx();
    let d = c.parallelize(Vec::<u8>::new(), 3);
    assert_eq!(d.collect().unwrap(), Vec::<u8>::new());
    assert_eq!(d.count().unwrap(), 0);
    assert_eq!(d.reduce(|a, b| a.max(b)).unwrap(), None);
    assert_eq!(d.first().unwrap(), None);
    assert_eq!(d.fold(7, |a, b| a.max(b)).unwrap(), 7);
    let tmp = tempfile::tempdir().unwrap();
    let none = c.text_file(tmp.path().to_str().unwrap(), 2).unwrap();
    assert_eq!(none.num_partitions(), 0);
    assert_eq!(none.count().unwrap(), 0);
}

#[test]
fn take_computes_as_few_partitions_and_elements_as_it_can() {
    let c = ctx();
    let pulled = c.accumulator("pulled");
    let d = c.range(0, 1000, 100).map_with(pulled.clone(), |p, x| {
        p.add(1);
        x
    });
    assert_eq!(d.take(3).unwrap(), vec![0, 1, 2]);
    assert_eq!(
        pulled.value(),
        3,
        "more than the first three elements were computed"
    );
    // 25 of 10-element partitions: partition 0, then 1.5 * 25 / 10 - 1 = 2 more.
    assert_eq!(d.take(25).unwrap(), (0..25).collect::<Vec<_>>());
    assert_eq!(pulled.value(), 3 + 10 + 10 + 10);
}
