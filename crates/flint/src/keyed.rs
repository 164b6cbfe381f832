//! The keyed half of [`Dataset`]: operations on `Dataset<(K, V)>` that cross a
//! shuffle (`reduce_by_key`, `group_by_key`, `join`, `sort_by_key`, ...), the narrow
//! ones on pairs (`keys`, `values`, `map_values`), and `distinct` and `repartition` on
//! any dataset.
//!
//! Keys are partitioned by a stable hash (the same on every executor of one binary)
//! unless said otherwise; `sort_by_key` runs a sampling job first and partitions by the
//! sampled bounds, as Spark's `RangePartitioner` does. `reduce_by_key`, `fold_by_key`
//! and `aggregate_by_key` combine on the map side before the shuffle; `group_by_key`
//! does not (it would save nothing), as in Spark. `join`, `left_outer_join` and
//! `cogroup` are one shuffle of both sides tagged, grouped by key.

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::dataset::{captures_of, Kind, Node, ShuffleDep};
use crate::entry::{entry_point, EntryPoint};
use crate::shuffle::{
    range_bounds, AggregateCombine, Combine, CombineRead, CombineWrite, DirectPartitioner,
    FoldCombine, GroupCombine, HashPartitioner, MapValuesOp, PartSpec, PlainRead, PlainWrite,
    RangePartitioner, ReduceCombine, RoundRobinOp, SampleAction, SortedRead, SortedWrite,
    WriteSpec,
};
use crate::{Data, Dataset, Result};

/// What `cogroup` gives for each key: the values of both sides.
pub type CoGrouped<K, V, W> = (K, (Vec<V>, Vec<W>));

/// Fails the build when closure type `$f` captures anything.
macro_rules! no_capture {
    ($f:ty, $msg:literal) => {
        const { assert!(std::mem::size_of::<$f>() == 0, $msg) }
    };
}

/// One side of a `cogroup`.
#[derive(Clone, Serialize, Deserialize)]
enum Side<V, W> {
    L(V),
    R(W),
}

fn split_sides<V, W>(all: Vec<Side<V, W>>) -> (Vec<V>, Vec<W>) {
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for s in all {
        match s {
            Side::L(v) => l.push(v),
            Side::R(w) => r.push(w),
        }
    }
    (l, r)
}

fn inner_pairs<K: Clone, V: Clone, W: Clone>(
    (k, (vs, ws)): (K, (Vec<V>, Vec<W>)),
) -> Vec<(K, (V, W))> {
    let mut out = Vec::with_capacity(vs.len() * ws.len());
    for v in &vs {
        for w in &ws {
            out.push((k.clone(), (v.clone(), w.clone())));
        }
    }
    out
}

fn left_pairs<K: Clone, V: Clone, W: Clone>(
    (k, (vs, ws)): (K, (Vec<V>, Vec<W>)),
) -> Vec<(K, (V, Option<W>))> {
    let mut out = Vec::with_capacity(vs.len() * ws.len().max(1));
    for v in &vs {
        if ws.is_empty() {
            out.push((k.clone(), (v.clone(), None)));
        }
        for w in &ws {
            out.push((k.clone(), (v.clone(), Some(w.clone()))));
        }
    }
    out
}

impl<T: Data> Dataset<T> {
    /// A new dataset of `partitions` partitions read from a shuffle of this one: map
    /// tasks run `write` on each of this dataset's partitions; each partition of the
    /// result starts with `read`.
    pub(crate) fn shuffled<U: Data>(
        &self,
        partitions: u32,
        write: EntryPoint,
        partitioner: PartSpec,
        op: std::result::Result<Vec<u8>, String>,
        read: EntryPoint,
    ) -> Dataset<U> {
        let id = self.ctx.next_id();
        let built = op.and_then(|op| {
            let spec = WriteSpec {
                shuffle: id,
                partitioner,
                op: op.clone(),
            };
            captures_of(&spec).map(|w| (w, op))
        });
        let node = match built {
            Ok((write_captures, read_op)) => Node::new(
                partitions,
                Kind::Shuffle {
                    dep: ShuffleDep {
                        id,
                        write,
                        write_captures,
                        read,
                        read_op,
                        cleaner: self.ctx.shuffle_cleaner(),
                    },
                    parent: self.node.clone(),
                },
            ),
            Err(error) => Node::new(partitions, Kind::Broken { error }),
        };
        Dataset::from_node(self.ctx.clone(), node)
    }

    /// The distinct elements, in `partitions` partitions (0: the default parallelism).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let mut d = ctx.parallelize(vec![3, 1, 3, 2, 1], 2).distinct(2).collect()?;
    /// d.sort();
    /// assert_eq!(d, vec![1, 2, 3]);
    /// # Ok(()) }
    /// ```
    pub fn distinct(&self, partitions: u32) -> Dataset<T>
    where
        T: Hash + Eq,
    {
        self.map(|x| (x, ()))
            .reduce_by_key(|a, _| a, partitions)
            .keys()
    }

    /// The same elements in `n` partitions (0: the default parallelism), spread
    /// round-robin through a shuffle (use [`coalesce`](Self::coalesce) to merge
    /// partitions without one).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let r = ctx.range(0, 100, 1).repartition(4);
    /// assert_eq!(r.num_partitions(), 4);
    /// let mut all = r.collect()?;
    /// all.sort();
    /// assert_eq!(all, (0..100).collect::<Vec<_>>());
    /// # Ok(()) }
    /// ```
    pub fn repartition(&self, n: u32) -> Dataset<T> {
        let n = self.ctx.partitions_or_default(n);
        let keyed: Dataset<(u32, T)> =
            self.narrow(entry_point::<RoundRobinOp<T>>(), captures_of(&n));
        keyed
            .shuffled::<(u32, T)>(
                n,
                entry_point::<PlainWrite<u32, T, DirectPartitioner>>(),
                PartSpec::Direct(n),
                Ok(Vec::new()),
                entry_point::<PlainRead<u32, T>>(),
            )
            .values()
    }
}

impl<K, V> Dataset<(K, V)>
where
    K: Data + Hash + Eq,
    V: Data,
{
    fn combine_by<C: Data, A: Combine<V, C>>(
        &self,
        zero: &A::Zero,
        partitions: u32,
    ) -> Dataset<(K, C)> {
        let n = self.ctx.partitions_or_default(partitions);
        self.shuffled(
            n,
            entry_point::<CombineWrite<K, V, C, A, HashPartitioner>>(),
            PartSpec::Hash(n),
            captures_of(zero),
            entry_point::<CombineRead<K, V, C, A, true>>(),
        )
    }

    /// Combines the values of each key with `f` (associative and commutative), on the
    /// map side first, into `partitions` partitions (0: the default parallelism).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let words = ctx.parallelize(vec!["a", "b", "a"].into_iter().map(String::from).collect(), 2);
    /// let mut counts = words.map(|w| (w, 1u64)).reduce_by_key(|a, b| a + b, 2).collect()?;
    /// counts.sort();
    /// assert_eq!(counts, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
    /// # Ok(()) }
    /// ```
    pub fn reduce_by_key<F>(&self, f: F, partitions: u32) -> Dataset<(K, V)>
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to reduce_by_key must not capture; bring what it needs into the data first with map_with(value, |v, x| ...)");
        let _ = f;
        self.combine_by::<V, ReduceCombine<F>>(&(), partitions)
    }

    /// Folds the values of each key with `f` from `zero` (once per key and map
    /// partition, as Spark's `foldByKey`; so `zero` must be neutral for `f`).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let d = ctx.parallelize(vec![(1u32, 2u64), (1, 3), (2, 4)], 2);
    /// let mut p = d.fold_by_key(1, |a, b| a * b, 2).collect()?;
    /// p.sort();
    /// assert_eq!(p, vec![(1, 6), (2, 4)]);
    /// # Ok(()) }
    /// ```
    pub fn fold_by_key<F>(&self, zero: V, f: F, partitions: u32) -> Dataset<(K, V)>
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to fold_by_key must not capture; bring what it needs into the data first with map_with(value, |v, x| ...)");
        let _ = f;
        self.combine_by::<V, FoldCombine<F>>(&zero, partitions)
    }

    /// Aggregates the values of each key into a `U`: `seq` adds a value to an
    /// aggregate (starting from `zero` in each map partition), `comb` merges two.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let d = ctx.parallelize(vec![("x".to_string(), 3u64), ("x".to_string(), 5)], 2);
    /// // (sum, count) per key
    /// let a = d.aggregate_by_key((0u64, 0u64), |(s, n), v| (s + v, n + 1), |a, b| (a.0 + b.0, a.1 + b.1), 1);
    /// assert_eq!(a.collect()?, vec![("x".to_string(), (8, 2))]);
    /// # Ok(()) }
    /// ```
    pub fn aggregate_by_key<U, S, M>(
        &self,
        zero: U,
        seq: S,
        comb: M,
        partitions: u32,
    ) -> Dataset<(K, U)>
    where
        U: Data,
        S: Fn(U, V) -> U + Send + Sync + 'static,
        M: Fn(U, U) -> U + Send + Sync + 'static,
    {
        no_capture!(S, "flint: closures passed to aggregate_by_key must not capture; bring what they need into the data first with map_with(value, |v, x| ...)");
        no_capture!(M, "flint: closures passed to aggregate_by_key must not capture; bring what they need into the data first with map_with(value, |v, x| ...)");
        let _ = (seq, comb);
        self.combine_by::<U, AggregateCombine<S, M>>(&zero, partitions)
    }

    /// Every value of each key, in `partitions` partitions (no map-side combining).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let d = ctx.parallelize(vec![(1u8, 'a'), (2, 'b'), (1, 'c')], 2);
    /// let mut g = d.group_by_key(2).collect()?;
    /// g.sort();
    /// for (_, vs) in &mut g { vs.sort(); }
    /// assert_eq!(g, vec![(1, vec!['a', 'c']), (2, vec!['b'])]);
    /// # Ok(()) }
    /// ```
    pub fn group_by_key(&self, partitions: u32) -> Dataset<(K, Vec<V>)> {
        let n = self.ctx.partitions_or_default(partitions);
        self.shuffled(
            n,
            entry_point::<PlainWrite<K, V, HashPartitioner>>(),
            PartSpec::Hash(n),
            captures_of(&()),
            entry_point::<CombineRead<K, V, Vec<V>, GroupCombine, false>>(),
        )
    }

    /// The same pairs, partitioned by the hash of their keys into `partitions`.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let p = ctx.range(0, 100, 3).map(|x| (x % 10, x)).partition_by(5);
    /// assert_eq!((p.num_partitions(), p.count()?), (5, 100));
    /// # Ok(()) }
    /// ```
    pub fn partition_by(&self, partitions: u32) -> Dataset<(K, V)> {
        let n = self.ctx.partitions_or_default(partitions);
        self.shuffled(
            n,
            entry_point::<PlainWrite<K, V, HashPartitioner>>(),
            PartSpec::Hash(n),
            Ok(Vec::new()),
            entry_point::<PlainRead<K, V>>(),
        )
    }

    /// The pairs sorted by key across `partitions` partitions: partition `i` holds keys
    /// before partition `i + 1`'s (after, when not `ascending`), each sorted. A sampling
    /// job runs first to choose the bounds (Spark's `RangePartitioner`); if it fails,
    /// actions on the result fail with its error.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let d = ctx.parallelize(vec![(3u32, 'c'), (1, 'a'), (2, 'b')], 2);
    /// assert_eq!(d.sort_by_key(true, 2).collect()?, vec![(1, 'a'), (2, 'b'), (3, 'c')]);
    /// assert_eq!(d.sort_by_key(false, 2).keys().collect()?, vec![3, 2, 1]);
    /// # Ok(()) }
    /// ```
    pub fn sort_by_key(&self, ascending: bool, partitions: u32) -> Dataset<(K, V)>
    where
        K: Ord,
    {
        let n = self.ctx.partitions_or_default(partitions);
        let bounds = self.sample_bounds(n);
        let spec = bounds.map(|b| PartSpec::Range {
            n,
            bounds: b,
            ascending,
        });
        match spec {
            Ok(spec) => self.shuffled(
                n,
                entry_point::<SortedWrite<K, V, RangePartitioner<K>>>(),
                spec,
                captures_of(&ascending),
                entry_point::<SortedRead<K, V>>(),
            ),
            Err(e) => Dataset::from_node(
                self.ctx.clone(),
                Node::new(
                    n,
                    Kind::Broken {
                        error: format!("sort_by_key's sampling job failed: {e}"),
                    },
                ),
            ),
        }
    }

    /// The encoded range bounds for `n` partitions, from a sampling job.
    fn sample_bounds(&self, n: u32) -> Result<Vec<u8>>
    where
        K: Ord,
    {
        if n <= 1 || self.node.partitions == 0 {
            return crate::wire::encode(&Vec::<K>::new())
                .map_err(|e| crate::Error::Serialization(e.to_string()));
        }
        // As Spark: about 20 keys per output partition, 3x over-sampled per input one.
        let size = (20.0 * f64::from(n)).min(1e6);
        let per = (3.0 * size / f64::from(self.node.partitions)).ceil() as u64;
        let caps =
            crate::wire::encode(&per).map_err(|e| crate::Error::Serialization(e.to_string()))?;
        // Over a text file read through per-element operations only, each split is
        // sampled at random positions rather than read whole.
        let samples: Vec<(u64, Vec<K>)> = match self.node.sampled_text(per) {
            Some(node) => Dataset::<(K, V)>::from_node(self.ctx.clone(), node).decoded(
                entry_point::<SampleAction<K, V>>(),
                caps,
                None,
            )?,
            None => self.decoded(entry_point::<SampleAction<K, V>>(), caps, None)?,
        };
        crate::wire::encode(&range_bounds(samples, n))
            .map_err(|e| crate::Error::Serialization(e.to_string()))
    }

    /// For each key, the values of both datasets, in `partitions` partitions; a key in
    /// either appears once.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let a = ctx.parallelize(vec![(1u8, 'x'), (2, 'y')], 2);
    /// let b = ctx.parallelize(vec![(1u8, 10u32)], 1);
    /// let mut g = a.cogroup(&b, 2).collect()?;
    /// g.sort();
    /// assert_eq!(g, vec![(1, (vec!['x'], vec![10])), (2, (vec!['y'], vec![]))]);
    /// # Ok(()) }
    /// ```
    pub fn cogroup<W: Data>(
        &self,
        other: &Dataset<(K, W)>,
        partitions: u32,
    ) -> Dataset<CoGrouped<K, V, W>> {
        let l = self.map_values(Side::<V, W>::L);
        let r = other.map_values(Side::<V, W>::R);
        l.union(&r)
            .group_by_key(partitions)
            .map_values(split_sides::<V, W>)
    }

    /// The pairs `(k, (v, w))` for every `v` and `w` of a key in both datasets.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let orders = ctx.parallelize(vec![(7u32, 100u64), (7, 250), (9, 5)], 2);
    /// let names = ctx.parallelize(vec![(7u32, "ann".to_string())], 1);
    /// let mut j = orders.join(&names, 2).collect()?;
    /// j.sort();
    /// assert_eq!(j, vec![(7, (100, "ann".to_string())), (7, (250, "ann".to_string()))]);
    /// # Ok(()) }
    /// ```
    pub fn join<W: Data>(&self, other: &Dataset<(K, W)>, partitions: u32) -> Dataset<(K, (V, W))> {
        self.cogroup(other, partitions)
            .flat_map(inner_pairs::<K, V, W>)
    }

    /// Every pair of this dataset with each matching value of `other`, or `None`.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let a = ctx.parallelize(vec![(1u8, 'x'), (2, 'y')], 2);
    /// let b = ctx.parallelize(vec![(1u8, 10u32)], 1);
    /// let mut j = a.left_outer_join(&b, 2).collect()?;
    /// j.sort();
    /// assert_eq!(j, vec![(1, ('x', Some(10))), (2, ('y', None))]);
    /// # Ok(()) }
    /// ```
    pub fn left_outer_join<W: Data>(
        &self,
        other: &Dataset<(K, W)>,
        partitions: u32,
    ) -> Dataset<(K, (V, Option<W>))> {
        self.cogroup(other, partitions)
            .flat_map(left_pairs::<K, V, W>)
    }

    /// The keys.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.parallelize(vec![(1, 'a'), (2, 'b')], 2).keys().collect()?, vec![1, 2]);
    /// # Ok(()) }
    /// ```
    pub fn keys(&self) -> Dataset<K> {
        self.map(|(k, _)| k)
    }

    /// The values.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.parallelize(vec![(1, 'a'), (2, 'b')], 2).values().collect()?, vec!['a', 'b']);
    /// # Ok(()) }
    /// ```
    pub fn values(&self) -> Dataset<V> {
        self.map(|(_, v)| v)
    }

    /// `f` applied to each value, keys kept.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let d = ctx.parallelize(vec![(1, 2u64), (2, 3)], 2).map_values(|v| v * 10);
    /// assert_eq!(d.collect()?, vec![(1, 20), (2, 30)]);
    /// # Ok(()) }
    /// ```
    pub fn map_values<U: Data, F>(&self, f: F) -> Dataset<(K, U)>
    where
        F: Fn(V) -> U + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to map_values must not capture; use map_with(value, |v, (k, x)| ...)");
        let _ = f;
        self.narrow_each(entry_point::<MapValuesOp<F, K, V, U>>(), Ok(Vec::new()))
    }

    /// How many pairs each key has (a job; the counts come to the driver).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let c = ctx.parallelize(vec![('a', 1), ('b', 1), ('a', 1)], 2).count_by_key()?;
    /// assert_eq!((c[&'a'], c[&'b']), (2, 1));
    /// # Ok(()) }
    /// ```
    pub fn count_by_key(&self) -> Result<HashMap<K, u64>> {
        let n = self.node.partitions.max(1);
        self.map_values(|_| 1u64)
            .reduce_by_key(|a, b| a + b, n)
            .collect_as_map()
    }

    /// Every pair, as a map on the driver (for a key with several values, one of them).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let m = ctx.parallelize(vec![(1, 'a'), (2, 'b')], 2).collect_as_map()?;
    /// assert_eq!(m[&2], 'b');
    /// # Ok(()) }
    /// ```
    pub fn collect_as_map(&self) -> Result<HashMap<K, V>> {
        Ok(self.collect()?.into_iter().collect())
    }
}
