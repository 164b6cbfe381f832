//! Map output files on real disks: round trips with and without combiner, ordering
//! and compression, against a single-process computation; spills; atomic commit;
//! corruption; the reduce-side aggregator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use flint_shuffle::{
    decode_block, hash_partition, key_hash, merge_sorted, natural_order, read_local_blocks,
    read_map_output, Combiner, Layout, MapId, MapStatus, ReduceAggregator, ShuffleConf,
    ShuffleError, ShuffleWriter,
};
use proptest::prelude::*;

fn conf(dirs: &[PathBuf], compress: bool, budget: u64) -> ShuffleConf {
    ShuffleConf {
        local_dirs: dirs.to_vec(),
        compress,
        memory_budget: budget,
        ..ShuffleConf::default()
    }
}

fn dirs(t: &tempfile::TempDir, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| t.path().join(format!("disk{i}"))).collect()
}

fn part(k: &str) -> u32 {
    (k.bytes().map(u32::from).sum::<u32>()) % 5
}

fn add(c: u64, v: u64) -> u64 {
    c + v
}

fn sum_combiner() -> Combiner<u64, u64> {
    Combiner {
        create: |v| v,
        merge_value: add,
        merge_combiners: add,
    }
}

/// Every block of a map output, decoded.
fn read_all<C: serde::de::DeserializeOwned + 'static>(
    layout: &Layout,
    shuffle: u32,
    map: u32,
    status: &MapStatus,
) -> Vec<Vec<(String, C)>> {
    (0..status.blocks.len() as u32)
        .map(|p| {
            let (metas, bytes) = read_local_blocks(layout, shuffle, map, p, p + 1).unwrap();
            assert_eq!(metas[0], status.blocks[p as usize]);
            let block = flint_shuffle::BlockRef {
                shuffle,
                map,
                partition: p,
            };
            decode_block::<String, C>(block, bytes, &metas[0])
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        })
        .collect()
}

fn words(n: usize, distinct: usize) -> Vec<(String, u64)> {
    (0..n)
        .map(|i| (format!("w{}", (i * 7919) % distinct), i as u64 % 3 + 1))
        .collect()
}

fn write_plain(
    conf: &ShuffleConf,
    layout: &Layout,
    map: u32,
    input: &[(String, u64)],
    ordered: bool,
) -> MapStatus {
    let partitioner = |k: &String| part(k);
    let mut w = ShuffleWriter::new(
        conf,
        layout,
        MapId {
            shuffle: 0,
            map,
            attempt: 1,
        },
        5,
        &partitioner,
        ordered.then_some(natural_order::<String> as fn(&String, &String) -> _),
    )
    .unwrap();
    w.insert_all(input.iter().cloned()).unwrap();
    w.commit().unwrap()
}

fn check_plain(input: &[(String, u64)], compress: bool, ordered: bool, budget: u64) -> MapStatus {
    let t = tempfile::tempdir().unwrap();
    let d = dirs(&t, 2);
    let c = conf(&d, compress, budget);
    let layout = Layout::new(&d, "app-1").unwrap();
    let status = write_plain(&c, &layout, 3, input, ordered);
    let blocks = read_all::<u64>(&layout, 0, 3, &status);
    let mut want: Vec<Vec<(String, u64)>> = vec![Vec::new(); 5];
    for (k, v) in input {
        want[part(k) as usize].push((k.clone(), *v));
    }
    for (p, (got, want)) in blocks.iter().zip(want.iter_mut()).enumerate() {
        if ordered {
            want.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want, "partition {p} in key order, stable");
        } else if status.spills == 0 {
            assert_eq!(got, want, "partition {p} in arrival order");
        } else {
            let mut g = got.clone();
            g.sort();
            want.sort();
            assert_eq!(&g, want, "partition {p}");
        }
        assert_eq!(status.blocks[p].records, got.len() as u64);
    }
    assert_eq!(status.records_in, input.len() as u64);
    status
}

#[test]
fn plain_round_trip_compressed_and_raw_ordered_and_not() {
    let input = words(20_000, 3000);
    for compress in [true, false] {
        for ordered in [true, false] {
            let s = check_plain(&input, compress, ordered, 64 << 20);
            assert_eq!(s.spills, 0);
        }
    }
    let raw = check_plain(&input, false, false, 64 << 20).total_bytes();
    let lz4 = check_plain(&input, true, false, 64 << 20).total_bytes();
    assert!(
        lz4 < raw,
        "compression shrinks repetitive words ({lz4} vs {raw})"
    );
}

#[test]
fn spilling_with_a_tiny_budget_gives_the_same_output_and_reports_spills() {
    let input = words(20_000, 3000);
    for ordered in [true, false] {
        let s = check_plain(&input, true, ordered, 16 << 10);
        assert!(s.spills > 5, "spills: {}", s.spills);
        assert!(s.bytes_spilled > 0);
    }
}

fn write_combined(
    conf: &ShuffleConf,
    layout: &Layout,
    input: &[(String, u64)],
    ordered: bool,
) -> MapStatus {
    let partitioner = |k: &String| part(k);
    let mut w = ShuffleWriter::with_combiner(
        conf,
        layout,
        MapId {
            shuffle: 0,
            map: 0,
            attempt: 0,
        },
        5,
        &partitioner,
        sum_combiner(),
        ordered.then_some(natural_order::<String> as fn(&String, &String) -> _),
    )
    .unwrap();
    w.insert_all(input.iter().cloned()).unwrap();
    w.commit().unwrap()
}

fn check_combined(input: &[(String, u64)], ordered: bool, budget: u64) -> MapStatus {
    let t = tempfile::tempdir().unwrap();
    let d = dirs(&t, 3);
    let c = conf(&d, true, budget);
    let layout = Layout::new(&d, "app-1").unwrap();
    let status = write_combined(&c, &layout, input, ordered);
    let blocks = read_all::<u64>(&layout, 0, 0, &status);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (k, v) in input {
        *want.entry(k.clone()).or_default() += v;
    }
    let mut got = BTreeMap::new();
    for (p, b) in blocks.iter().enumerate() {
        if ordered {
            assert!(
                b.windows(2).all(|w| w[0].0 < w[1].0),
                "partition {p} sorted, keys unique"
            );
        }
        for (k, v) in b {
            assert_eq!(part(k), p as u32);
            assert!(got.insert(k.clone(), *v).is_none(), "{k} twice");
        }
    }
    assert_eq!(got, want);
    status
}

#[test]
fn combining_round_trip_with_and_without_spills() {
    let input = words(30_000, 2000);
    for ordered in [false, true] {
        assert_eq!(check_combined(&input, ordered, 64 << 20).spills, 0);
        let s = check_combined(&input, ordered, 8 << 10);
        assert!(s.spills > 3, "spills {}", s.spills);
    }
}

#[test]
fn a_dropped_writer_leaves_nothing_under_final_names_and_no_temp_files() {
    let t = tempfile::tempdir().unwrap();
    let d = dirs(&t, 1);
    let c = conf(&d, true, 4 << 10);
    let layout = Layout::new(&d, "app-1").unwrap();
    let partitioner = |k: &String| part(k);
    let mut w = ShuffleWriter::new(
        &c,
        &layout,
        MapId {
            shuffle: 0,
            map: 9,
            attempt: 0,
        },
        5,
        &partitioner,
        None,
    )
    .unwrap();
    w.insert_all(words(5000, 100)).unwrap();
    assert!(w.spill_count() > 0);
    let dir = layout.shuffle_dir(0, 9);
    let tmp_count = std::fs::read_dir(&dir).unwrap().count();
    assert!(tmp_count > 0, "spill files exist while writing");
    drop(w);
    assert!(!layout.data_path(0, 9).exists());
    assert!(!layout.index_path(0, 9).exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "spill files removed"
    );
    let e = read_map_output(&layout.index_path(0, 9), &layout.data_path(0, 9)).unwrap_err();
    assert!(matches!(e, ShuffleError::MissingOutput { .. }), "{e}");
}

#[test]
fn many_spills_are_merged_down_so_files_stay_few_and_output_is_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let d = dirs(&t, 1);
    let c = conf(&d, true, 2 << 10);
    let layout = Layout::new(&d, "app-1").unwrap();
    let input = words(20_000, 20_000);
    for ordered in [false, true] {
        let partitioner = |k: &String| part(k);
        let id = MapId {
            shuffle: u32::from(ordered),
            map: 0,
            attempt: 0,
        };
        let ordering = ordered.then_some(natural_order::<String> as fn(&String, &String) -> _);
        let mut w = ShuffleWriter::new(&c, &layout, id, 5, &partitioner, ordering).unwrap();
        let mut most = 0;
        for chunk in input.chunks(500) {
            w.insert_all(chunk.iter().cloned()).unwrap();
            most = most.max(
                std::fs::read_dir(layout.shuffle_dir(id.shuffle, 0))
                    .unwrap()
                    .count(),
            );
        }
        assert!(w.spill_count() > 100, "spills {}", w.spill_count());
        assert!(most <= 33, "{most} spill files at once");
        let status = w.commit().unwrap();
        let blocks = read_all::<u64>(&layout, id.shuffle, 0, &status);
        for (p, b) in blocks.iter().enumerate() {
            let mut want: Vec<(String, u64)> = input
                .iter()
                .filter(|(k, _)| part(k) == p as u32)
                .cloned()
                .collect();
            if ordered {
                want.sort_by(|a, b| a.0.cmp(&b.0));
                assert_eq!(b, &want, "stable order kept through merges");
            } else {
                let mut got = b.clone();
                got.sort();
                want.sort();
                assert_eq!(got, want);
            }
        }
    }
    // Combining, merged by key hash through the merges.
    let status = check_combined(&words(20_000, 20_000), false, 1 << 10);
    assert!(status.spills > 32, "{}", status.spills);
}

#[test]
fn the_first_complete_output_wins() {
    let t = tempfile::tempdir().unwrap();
    let d = dirs(&t, 1);
    let c = conf(&d, true, 64 << 20);
    let layout = Layout::new(&d, "app-1").unwrap();
    let first = write_plain(&c, &layout, 1, &words(1000, 50), false);
    assert!(!first.reused_existing);
    let second = write_plain(&c, &layout, 1, &words(10, 5), false);
    assert!(second.reused_existing);
    assert_eq!(second.blocks, first.blocks);
    let entries: Vec<_> = std::fs::read_dir(layout.shuffle_dir(0, 1))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut entries = entries;
    entries.sort();
    assert_eq!(entries, ["1.data", "1.index", "1.lock"]);
    // An index whose data file is short is not complete: a new attempt replaces it.
    let data = layout.data_path(0, 1);
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let third = write_plain(&c, &layout, 1, &words(10, 5), false);
    assert!(!third.reused_existing);
    assert_eq!(
        read_map_output(&layout.index_path(0, 1), &data)
            .unwrap()
            .blocks,
        third.blocks
    );
}

#[test]
fn one_flipped_byte_is_reported_corrupt_naming_the_block() {
    let t = tempfile::tempdir().unwrap();
    let d = dirs(&t, 1);
    let c = conf(&d, true, 64 << 20);
    let layout = Layout::new(&d, "app-7").unwrap();
    let status = write_plain(&c, &layout, 4, &words(2000, 100), false);
    let data = layout.data_path(0, 4);
    let mut bytes = std::fs::read(&data).unwrap();
    let off = status.blocks[0].len + status.blocks[1].len / 2;
    bytes[off as usize] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let (metas, block) = read_local_blocks(&layout, 0, 4, 1, 2).unwrap();
    let id = flint_shuffle::BlockRef {
        shuffle: 0,
        map: 4,
        partition: 1,
    };
    let e = decode_block::<String, u64>(id, block, &metas[0])
        .err()
        .unwrap();
    match &e {
        ShuffleError::Corrupt { block, reason } => {
            assert_eq!(*block, id);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("shuffle_0_4_1"), "{e}");
    // The other blocks are intact.
    let (metas, block) = read_local_blocks(&layout, 0, 4, 0, 1).unwrap();
    assert!(decode_block::<String, u64>(id, block, &metas[0]).is_ok());
}

#[test]
fn reduce_side_aggregation_and_ordered_merge_across_map_outputs() {
    let t = tempfile::tempdir().unwrap();
    let d = dirs(&t, 2);
    let layout = Layout::new(&d, "app-1").unwrap();
    let input = words(40_000, 5000);
    let maps: Vec<&[(String, u64)]> = input.chunks(10_000).collect();
    let big = conf(&d, true, 64 << 20);
    let statuses: Vec<MapStatus> = maps
        .iter()
        .enumerate()
        .map(|(m, chunk)| write_plain(&big, &layout, m as u32, chunk, true))
        .collect();
    let mut want: HashMap<String, u64> = HashMap::new();
    for (k, v) in &input {
        *want.entry(k.clone()).or_default() += v;
    }
    for budget in [64 << 20, 4 << 10] {
        let c = conf(&d, true, budget);
        for p in 0..5u32 {
            let mut agg = ReduceAggregator::new(&c, &layout, 0, p, 1, add, None).unwrap();
            let mut sorted_blocks: Vec<flint_shuffle::RecordIter<String, u64>> = Vec::new();
            let mut sorter =
                flint_shuffle::ReduceSorter::new(&c, &layout, 0, p, 1, natural_order::<String>)
                    .unwrap();
            for (m, s) in statuses.iter().enumerate() {
                let (metas, bytes) = read_local_blocks(&layout, 0, m as u32, p, p + 1).unwrap();
                assert_eq!(metas[0], s.blocks[p as usize]);
                let id = flint_shuffle::BlockRef {
                    shuffle: 0,
                    map: m as u32,
                    partition: p,
                };
                agg.insert_all(decode_block::<String, u64>(id, bytes.clone(), &metas[0]).unwrap())
                    .unwrap();
                sorter
                    .insert_all(decode_block::<String, u64>(id, bytes.clone(), &metas[0]).unwrap())
                    .unwrap();
                sorted_blocks.push(Box::new(
                    decode_block::<String, u64>(id, bytes, &metas[0]).unwrap(),
                ));
            }
            if budget < 1 << 20 {
                assert!(agg.spill_count() > 0, "partition {p} spilled");
            }
            let got: HashMap<String, u64> = agg.finish().unwrap().map(|r| r.unwrap()).collect();
            let want_p: HashMap<String, u64> = want
                .iter()
                .filter(|(k, _)| part(k) == p)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            assert_eq!(got, want_p, "partition {p} budget {budget}");
            let merged: Vec<(String, u64)> = merge_sorted(sorted_blocks, natural_order::<String>)
                .map(|r| r.unwrap())
                .collect();
            assert!(merged.windows(2).all(|w| w[0].0 <= w[1].0));
            if budget < 1 << 20 {
                assert!(sorter.spill_count() > 0, "the reduce sorter spilled");
            }
            let sorted: Vec<(String, u64)> = sorter.finish().unwrap().map(|r| r.unwrap()).collect();
            assert_eq!(sorted, merged, "external sort = k-way merge (both stable)");
            let n: usize = input.iter().filter(|(k, _)| part(k) == p).count();
            assert_eq!(merged.len(), n);
        }
    }
    // Spill files of the aggregators are gone.
    for i in 0..2 {
        for e in std::fs::read_dir(layout.app_dir(i).join("0"))
            .into_iter()
            .flatten()
        {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.ends_with(".tmp"), "{name} left behind");
        }
    }
}

#[test]
fn removing_a_shuffle_and_an_app() {
    let t = tempfile::tempdir().unwrap();
    let d = dirs(&t, 2);
    let c = conf(&d, true, 64 << 20);
    let layout = Layout::new(&d, "app-1").unwrap();
    for m in 0..4 {
        write_plain(&c, &layout, m, &words(100, 10), false);
    }
    layout.remove_shuffle(0).unwrap();
    for m in 0..4 {
        assert!(!layout.index_path(0, m).exists());
    }
    write_plain(&c, &layout, 0, &words(100, 10), false);
    flint_shuffle::remove_app(&d, "app-1").unwrap();
    for i in 0..2 {
        assert!(!layout.app_dir(i).exists());
    }
    assert!(flint_shuffle::remove_app(&d, "../etc").is_err());
}

#[test]
fn writers_readers_and_fetchers_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<ShuffleWriter<'static, String, u64, u64>>();
    send::<ReduceAggregator<'static, String, Vec<u64>>>();
    send::<flint_shuffle::AggregatedRecords<'static, String, u64>>();
    send::<flint_shuffle::BlockRecords<String, u64>>();
    send::<flint_shuffle::RecordIter<'static, String, u64>>();
    send::<flint_shuffle::BlockFetcher>();
    send::<flint_shuffle::FetchedBlock>();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn any_records_any_budget_match_a_single_process_computation(
        records in proptest::collection::vec(("[a-e]{0,3}", 0u64..1000), 0..600),
        budget in prop_oneof![Just(256u64), Just(4096), Just(1 << 30)],
        compress: bool,
        partitions in 1u32..7,
        combine: bool,
        ordered: bool,
    ) {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(&t, 2);
        let c = conf(&d, compress, budget);
        let layout = Layout::new(&d, "app-p").unwrap();
        let partitioner = move |k: &String| k.len() as u32 % partitions;
        let ordering = ordered.then_some(natural_order::<String> as fn(&String, &String) -> _);
        let id = MapId { shuffle: 2, map: 5, attempt: 0 };
        let status = if combine {
            let mut w = ShuffleWriter::with_combiner(&c, &layout, id, partitions, &partitioner, sum_combiner(), ordering).unwrap();
            w.insert_all(records.iter().cloned()).unwrap();
            w.commit().unwrap()
        } else {
            let mut w = ShuffleWriter::new(&c, &layout, id, partitions, &partitioner, ordering).unwrap();
            w.insert_all(records.iter().cloned()).unwrap();
            w.commit().unwrap()
        };
        let blocks = read_all::<u64>(&layout, 2, 5, &status);
        for (p, b) in blocks.iter().enumerate() {
            let mut want: Vec<(String, u64)> = records.iter().filter(|(k, _)| partitioner(k) == p as u32).cloned().collect();
            if combine {
                let mut m: BTreeMap<String, u64> = BTreeMap::new();
                for (k, v) in want { *m.entry(k).or_default() += v; }
                want = m.into_iter().collect();
            }
            let mut got = b.clone();
            if ordered {
                prop_assert!(got.windows(2).all(|w| w[0].0 <= w[1].0));
                if !combine {
                    // Stable: equal keys keep arrival order only without spills.
                    want.sort_by(|a, b| a.0.cmp(&b.0));
                    if status.spills == 0 { prop_assert_eq!(&got, &want); }
                }
            }
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}

fn push(mut c: Vec<u64>, mut v: Vec<u64>) -> Vec<u64> {
    c.append(&mut v);
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn reduce_side_aggregation_and_sorting_match_a_single_process_computation(
        // Keys up to seven bytes sit in their table slot, longer ones (and the
        // two-byte `é`) in the key arena: both kinds, mixed.
        records in proptest::collection::vec(("[a-fé]{0,3}|[a-fé]{6,12}", 0u64..100), 0..800),
        budget in prop_oneof![Just(128u64), Just(2048), Just(1 << 30)],
        ordered: bool,
    ) {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(&t, 2);
        let c = conf(&d, true, budget);
        let layout = Layout::new(&d, "app-r").unwrap();
        let ordering = ordered.then_some(natural_order::<String> as fn(&String, &String) -> _);
        // group_by_key's shape: C = Vec<V>.
        let mut agg = ReduceAggregator::<String, Vec<u64>>::new(&c, &layout, 3, 0, 0, push, ordering).unwrap();
        for (k, v) in &records {
            agg.insert(k.clone(), vec![*v]).unwrap();
        }
        let got: Vec<(String, Vec<u64>)> = agg.finish().unwrap().map(|r| r.unwrap()).collect();
        let mut want: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (k, v) in &records {
            want.entry(k.clone()).or_default().push(*v);
        }
        if ordered {
            prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        }
        let mut got_sorted: Vec<(String, Vec<u64>)> = got.into_iter().map(|(k, mut v)| { v.sort(); (k, v) }).collect();
        got_sorted.sort();
        let want: Vec<(String, Vec<u64>)> = want.into_iter().map(|(k, mut v)| { v.sort(); (k, v) }).collect();
        prop_assert_eq!(got_sorted, want);

        let mut sorter = flint_shuffle::ReduceSorter::new(&c, &layout, 3, 1, 0, natural_order::<String>).unwrap();
        for (k, v) in &records {
            sorter.insert(k.clone(), *v).unwrap();
        }
        let sorted: Vec<(String, u64)> = sorter.finish().unwrap().map(|r| r.unwrap()).collect();
        let mut want_sorted = records.clone();
        want_sorted.sort_by(|a, b| a.0.cmp(&b.0)); // stable, like the sorter
        prop_assert_eq!(sorted, want_sorted);
    }
}

#[test]
fn combining_by_key_hash_puts_each_key_in_its_hash_partition_with_and_without_spills() {
    let input = words(30_000, 2000);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (k, v) in &input {
        *want.entry(k.clone()).or_default() += v;
    }
    // `insert_combining` (which hashes inline) places records as `insert` does.
    for (budget, inline) in [
        (64 << 20, false),
        (8 << 10, false),
        (64 << 20, true),
        (8 << 10, true),
    ] {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(&t, 2);
        let c = conf(&d, true, budget);
        let layout = Layout::new(&d, "app-1").unwrap();
        let id = MapId {
            shuffle: 0,
            map: 0,
            attempt: 0,
        };
        let mut w =
            ShuffleWriter::with_combiner_by_key_hash(&c, &layout, id, 5, sum_combiner(), None)
                .unwrap();
        if inline {
            for (k, v) in input.iter().cloned() {
                w.insert_combining(k, v).unwrap();
            }
        } else {
            w.insert_all(input.iter().cloned()).unwrap();
        }
        let status = w.commit().unwrap();
        if budget < 1 << 20 {
            assert!(status.spills > 3, "spills {}", status.spills);
        }
        let mut got = BTreeMap::new();
        for (p, b) in read_all::<u64>(&layout, 0, 0, &status).iter().enumerate() {
            for (k, v) in b {
                assert_eq!(hash_partition(key_hash(k), 5), p as u32, "{k}");
                assert!(got.insert(k.clone(), *v).is_none(), "{k} twice");
            }
        }
        assert_eq!(got, want);
    }
    // A `str` and a `String` hash alike, and the partition is always in range.
    assert_eq!(key_hash("word"), key_hash(&"word".to_string()));
    assert!((0..1000u64).all(|i| hash_partition(key_hash(&i), 7) < 7));
}

fn push_or_panic(mut c: Vec<u64>, v: Vec<u64>) -> Vec<u64> {
    assert!(v != [99], "the merge function panicked");
    c.extend(v);
    c
}

/// A merge function that panics (a user's `reduce_by_key` closure) leaves its combiner
/// moved out of the slot: the writer then refuses more records and drops without
/// dropping that combiner twice (combiners own heap memory here, so a double drop
/// would be a double free) — for `String` keys (the arena buffer) and other keys.
#[test]
fn a_panicking_merge_poisons_the_writer_and_nothing_is_dropped_twice() {
    fn run<
        K: Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::hash::Hash
            + Eq
            + Send
            + 'static,
    >(
        key: K,
    ) {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(&t, 1);
        let c = conf(&d, true, 64 << 20);
        let layout = Layout::new(&d, "app-1").unwrap();
        let id = MapId {
            shuffle: 0,
            map: 0,
            attempt: 0,
        };
        let combiner = Combiner {
            create: |v| v,
            merge_value: push_or_panic,
            merge_combiners: push_or_panic,
        };
        let mut w =
            ShuffleWriter::with_combiner_by_key_hash(&c, &layout, id, 3, combiner, None).unwrap();
        w.insert(key.clone(), vec![1, 2, 3]).unwrap();
        w.insert(key.clone(), vec![4]).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.insert(key.clone(), vec![99])
        }));
        assert!(panicked.is_err());
        let after = w.insert(key.clone(), vec![5]);
        assert!(matches!(after, Err(ShuffleError::Invalid(_))), "{after:?}");
        assert!(w.commit().is_err());
    }
    run("word".to_string());
    run(7u64);
}

/// String keys of every length from empty to 40 bytes (inline in their slot up to
/// seven bytes, in the arena beyond; multi-byte UTF-8 too), combined on the map side
/// with and without spills: the same counts as a single-process computation.
#[test]
fn string_keys_short_and_long_combine_alike_with_and_without_spills() {
    let input: Vec<(String, u64)> = (0..20_000usize)
        .map(|i| {
            let n = (i * 7919) % 997;
            let key: String = "abcdéfghij"
                .chars()
                .cycle()
                .skip(n % 10)
                .take(n % 41)
                .collect();
            (format!("{key}{}", n % 3), 1 + (i as u64 % 5))
        })
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (k, v) in &input {
        *want.entry(k.clone()).or_default() += v;
    }
    assert!(want.keys().any(|k| k.len() <= 7) && want.keys().any(|k| k.len() > 7));
    for budget in [64 << 20, 4 << 10] {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(&t, 1);
        let c = conf(&d, true, budget);
        let layout = Layout::new(&d, "app-1").unwrap();
        let id = MapId {
            shuffle: 0,
            map: 0,
            attempt: 0,
        };
        let mut w =
            ShuffleWriter::with_combiner_by_key_hash(&c, &layout, id, 4, sum_combiner(), None)
                .unwrap();
        w.insert_all(input.iter().cloned()).unwrap();
        let status = w.commit().unwrap();
        if budget < 1 << 20 {
            assert!(status.spills > 3, "spills {}", status.spills);
        }
        let mut got = BTreeMap::new();
        for (p, b) in read_all::<u64>(&layout, 0, 0, &status).iter().enumerate() {
            for (k, v) in b {
                assert_eq!(hash_partition(key_hash(k), 4), p as u32, "{k}");
                assert!(got.insert(k.clone(), *v).is_none(), "{k} twice");
            }
        }
        assert_eq!(got, want, "budget {budget}");
    }
}
