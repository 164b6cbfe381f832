//! The block cache: a cached dataset is computed once across actions; with a tiny
//! `executor.memory` partitions are evicted and computed again, with the same answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flint::prelude::*;

fn counted(ctx: &Context, computed: &Accumulator) -> Dataset<u64> {
    ctx.range(0, 10_000, 4).map_with(computed.clone(), |c, x| {
        c.add(1);
        x * 2
    })
}

#[test]
fn a_cached_dataset_is_computed_once_across_actions() {
    let ctx = Context::builder().master("local[2]").create().unwrap();
    let computed = ctx.accumulator("computed");
    let d = counted(&ctx, &computed).cache();
    assert_eq!(d.count().unwrap(), 10_000);
    assert_eq!(computed.value(), 10_000);
    assert_eq!(
        d.reduce(|a, b| a + b).unwrap(),
        Some(2 * (0..10_000u64).sum::<u64>())
    );
    assert_eq!(d.filter(|x| x % 4 == 0).count().unwrap(), 5_000);
    assert_eq!(computed.value(), 10_000, "the source was computed again");
    // Not cached: every action computes it.
    let plain = counted(&ctx, &computed);
    plain.count().unwrap();
    plain.count().unwrap();
    assert_eq!(computed.value(), 30_000);
    // Unpersisted: computed again.
    d.unpersist();
    d.count().unwrap();
    assert_eq!(computed.value(), 40_000);
}

#[test]
fn evicted_partitions_are_computed_again_with_the_same_answer() {
    // The 4 partitions serialize to 4,938, 5,002, 5,002 and 6,810 bytes: with 8k one fits
    // at a time, so after the first scan only partition 3 is cached (LRU). The second
    // scan runs partition 3 first (its task is local to the executor holding it), reads
    // it from the cache, and computes the three evicted ones again.
    let ctx = Context::builder()
        .master("local[1]")
        .conf("executor.memory", "8k")
        .create()
        .unwrap();
    let computed = ctx.accumulator("computed");
    let d = counted(&ctx, &computed).cache();
    let want = 2 * (0..10_000u64).sum::<u64>();
    assert_eq!(d.reduce(|a, b| a + b).unwrap(), Some(want));
    assert_eq!(computed.value(), 10_000);
    assert_eq!(d.reduce(|a, b| a + b).unwrap(), Some(want));
    assert_eq!(computed.value(), 10_000 + 7_500);
    // With room for all four (21,752 bytes), the second scan reads only the cache.
    let roomy = Context::builder()
        .master("local[1]")
        .conf("executor.memory", "22k")
        .create()
        .unwrap();
    let computed = roomy.accumulator("computed");
    let d = counted(&roomy, &computed).cache();
    assert_eq!(d.reduce(|a, b| a + b).unwrap(), Some(want));
    assert_eq!(d.reduce(|a, b| a + b).unwrap(), Some(want));
    assert_eq!(computed.value(), 10_000);
}

#[test]
fn a_partition_larger_than_executor_memory_is_never_cached() {
    let ctx = Context::builder()
        .master("local[1]")
        .conf("executor.memory", "1k")
        .create()
        .unwrap();
    let computed = ctx.accumulator("computed");
    let d = counted(&ctx, &computed).cache();
    d.count().unwrap();
    d.count().unwrap();
    assert_eq!(computed.value(), 20_000);
}
