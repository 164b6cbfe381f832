//! [`Dataset`]: a cheap handle on a lineage of [`Node`]s on the driver, and the
//! transformations and actions on it.
//!
//! A node is a source (`parallelize`'s partitions serialized on the driver, `range`,
//! `text_file`'s byte-range splits), a narrow operation of one parent (`map`,
//! `filter`, `flat_map`, `map_partitions`, their `_with` forms, `key_by`), a union, a
//! coalesce (groups of parent partitions) or a cache point. For a task, the driver turns
//! the lineage of one partition into a [`PlanNode`] tree of entry points and captures;
//! the executor evaluates it lazily (iterators all the way) and runs the action's
//! per-partition half on it; the driver combines the partitions' outputs.
//!
//! Transformations are lazy and take `&self`; closures must capture nothing (a
//! compile-time check naming the `_with` form); values travel in the `_with` forms'
//! captures, serialized when the transformation is made.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::context::Context;
use crate::entry::{entry_point, EntryPoint, Partition};
use crate::ops::*;
use crate::scheduler::ShuffleId;
use crate::shell::ShuffleCleaner;
use crate::shuffle::{BlockSource, ReadSpec};
use crate::text;
use crate::wire::{BlockId, PlanNode};
use crate::{Data, Error, Result};

/// Fails the build when closure type `$f` captures anything.
macro_rules! no_capture {
    ($f:ty, $msg:literal) => {
        const { assert!(std::mem::size_of::<$f>() == 0, $msg) }
    };
}

/// A node of a lineage, on the driver.
pub(crate) struct Node {
    pub partitions: u32,
    pub kind: Kind,
}

pub(crate) enum Kind {
    Source {
        entry: EntryPoint,
        splits: Vec<Vec<u8>>,
    },
    Narrow {
        entry: EntryPoint,
        captures: Vec<u8>,
        parent: Arc<Node>,
        /// Each element becomes zero or more elements on its own (`map`, `filter`,
        /// `flat_map` and their `_with` forms, `key_by`, `map_values`): the operation
        /// may run on any subset of its parent's elements (`sort_by_key` samples
        /// through it).
        per_element: bool,
    },
    Union {
        parents: Vec<Arc<Node>>,
    },
    Coalesce {
        entry: EntryPoint,
        groups: Vec<Vec<u32>>,
        parent: Arc<Node>,
    },
    Cache {
        cache: u64,
        encode: EntryPoint,
        decode: EntryPoint,
        persisted: AtomicBool,
        parent: Arc<Node>,
    },
    /// A shuffle: its partitions are read from the map outputs of its parent's
    /// partitions (a stage boundary).
    Shuffle {
        dep: ShuffleDep,
        parent: Arc<Node>,
    },
    /// A transformation whose captures could not be serialized: actions fail with this.
    Broken {
        error: String,
    },
}

/// A shuffle dependency: how its parent's partitions are written (the map stage's
/// action) and how each of its partitions is read. Dropping it (the last dataset
/// reaching the shuffle is gone) tells the executors to delete its files.
pub(crate) struct ShuffleDep {
    /// The shuffle's id.
    pub id: ShuffleId,
    /// The writer action run on each parent partition.
    pub write: EntryPoint,
    /// Its captures (a [`WriteSpec`](crate::shuffle::WriteSpec)).
    pub write_captures: Vec<u8>,
    /// The reader starting each partition's plan.
    pub read: EntryPoint,
    /// The reader's operation captures (put in a [`ReadSpec`]).
    pub read_op: Vec<u8>,
    /// Told when the dependency is dropped.
    pub cleaner: ShuffleCleaner,
}

impl Drop for ShuffleDep {
    fn drop(&mut self) {
        self.cleaner.remove(self.id);
    }
}

/// Where each map output of a shuffle lives, for reduce partition `reduce`.
pub(crate) type Sources<'a> = &'a dyn Fn(ShuffleId, u32) -> Vec<BlockSource>;

impl Node {
    pub(crate) fn new(partitions: u32, kind: Kind) -> Arc<Self> {
        Arc::new(Self { partitions, kind })
    }

    /// The first error in the lineage, if any.
    pub fn check(&self) -> Result<()> {
        match &self.kind {
            Kind::Broken { error } => Err(Error::Serialization(error.clone())),
            Kind::Source { .. } => Ok(()),
            Kind::Narrow { parent, .. }
            | Kind::Coalesce { parent, .. }
            | Kind::Cache { parent, .. }
            | Kind::Shuffle { parent, .. } => parent.check(),
            Kind::Union { parents } => parents.iter().try_for_each(|p| p.check()),
        }
    }

    /// Which parent of a union, and which of its partitions, partition `p` is.
    fn union_parent(parents: &[Arc<Node>], mut p: u32) -> Option<(&Arc<Node>, u32)> {
        for parent in parents {
            if p < parent.partitions {
                return Some((parent, p));
            }
            p -= parent.partitions;
        }
        None
    }

    /// This lineage with its `text_file` source sampling each split at about `m`
    /// random positions ([`TextSampleSource`]), for `sort_by_key`'s sampling job;
    /// `None` unless only per-element operations lie between this node and one
    /// `text_file` source (anything else may depend on seeing every element: it is
    /// sampled the ordinary way, over everything).
    pub(crate) fn sampled_text(&self, m: u64) -> Option<Arc<Node>> {
        match &self.kind {
            Kind::Narrow {
                entry,
                captures,
                parent,
                per_element: true,
            } => Some(Node::new(
                self.partitions,
                Kind::Narrow {
                    entry: *entry,
                    captures: captures.clone(),
                    parent: parent.sampled_text(m)?,
                    per_element: true,
                },
            )),
            Kind::Source { entry, splits } if *entry == entry_point::<TextSource>() => {
                let splits = splits
                    .iter()
                    .map(|s| {
                        let split: text::TextSplit = postcard::from_bytes(s).ok()?;
                        postcard::to_allocvec(&(split, m)).ok()
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(Node::new(
                    self.partitions,
                    Kind::Source {
                        entry: entry_point::<TextSampleSource>(),
                        splits,
                    },
                ))
            }
            _ => None,
        }
    }

    /// The shuffles this node reads directly (not through another shuffle), each once.
    pub fn shuffles<'a>(self: &'a Arc<Self>, out: &mut Vec<&'a Arc<Node>>) {
        match &self.kind {
            Kind::Source { .. } | Kind::Broken { .. } => {}
            Kind::Shuffle { .. } => {
                if !out.iter().any(|n| Arc::ptr_eq(n, self)) {
                    out.push(self);
                }
            }
            Kind::Narrow { parent, .. }
            | Kind::Coalesce { parent, .. }
            | Kind::Cache { parent, .. } => parent.shuffles(out),
            Kind::Union { parents } => parents.iter().for_each(|p| p.shuffles(out)),
        }
    }

    /// How partition `p` is computed; a shuffle's read is told where its map outputs
    /// are by `sources`. `check` must have passed.
    pub fn plan(&self, p: u32, sources: Sources<'_>) -> PlanNode {
        match &self.kind {
            Kind::Source { entry, splits } => PlanNode::Op {
                entry: *entry,
                captures: splits.get(p as usize).cloned().unwrap_or_default(),
                inputs: vec![],
            },
            Kind::Narrow {
                entry,
                captures,
                parent,
                ..
            } => PlanNode::Op {
                entry: *entry,
                captures: captures.clone(),
                inputs: vec![parent.plan(p, sources)],
            },
            Kind::Union { parents } => match Self::union_parent(parents, p) {
                Some((parent, q)) => parent.plan(q, sources),
                None => PlanNode::Op {
                    entry: EntryPoint {
                        offset: 0,
                        fingerprint: 0,
                    },
                    captures: vec![],
                    inputs: vec![],
                },
            },
            Kind::Coalesce {
                entry,
                groups,
                parent,
            } => PlanNode::Op {
                entry: *entry,
                captures: vec![],
                inputs: groups
                    .get(p as usize)
                    .map(|g| g.iter().map(|q| parent.plan(*q, sources)).collect())
                    .unwrap_or_default(),
            },
            Kind::Cache {
                cache,
                encode,
                decode,
                persisted,
                parent,
            } => {
                if persisted.load(Ordering::Relaxed) {
                    PlanNode::Cached {
                        block: BlockId {
                            cache: *cache,
                            partition: p,
                        },
                        encode: *encode,
                        decode: *decode,
                        input: Box::new(parent.plan(p, sources)),
                    }
                } else {
                    parent.plan(p, sources)
                }
            }
            Kind::Shuffle { dep, .. } => {
                let spec = ReadSpec {
                    shuffle: dep.id,
                    reduce: p,
                    sources: sources(dep.id, p),
                    op: dep.read_op.clone(),
                };
                PlanNode::Op {
                    entry: dep.read,
                    // A spec of plain integers, strings and bytes always encodes.
                    captures: postcard::to_allocvec(&spec).unwrap_or_default(),
                    inputs: vec![],
                }
            }
            Kind::Broken { .. } => PlanNode::Op {
                entry: EntryPoint {
                    offset: 0,
                    fingerprint: 0,
                },
                captures: vec![],
                inputs: vec![],
            },
        }
    }

    /// The cached blocks partition `p` reads (for cache locality).
    pub fn blocks(&self, p: u32, out: &mut Vec<BlockId>) {
        match &self.kind {
            Kind::Source { .. } | Kind::Broken { .. } | Kind::Shuffle { .. } => {}
            Kind::Narrow { parent, .. } => parent.blocks(p, out),
            Kind::Union { parents } => {
                if let Some((parent, q)) = Self::union_parent(parents, p) {
                    parent.blocks(q, out);
                }
            }
            Kind::Coalesce { groups, parent, .. } => {
                for q in groups.get(p as usize).into_iter().flatten() {
                    parent.blocks(*q, out);
                }
            }
            Kind::Cache {
                cache,
                persisted,
                parent,
                ..
            } => {
                if persisted.load(Ordering::Relaxed) {
                    out.push(BlockId {
                        cache: *cache,
                        partition: p,
                    });
                } else {
                    parent.blocks(p, out);
                }
            }
        }
    }
}

/// The bounds of slice `i` of `n` over `len` items, as Spark's `parallelize` slices.
pub(crate) fn slice(len: u64, n: u32, i: u32) -> (u64, u64) {
    let at = |k: u32| ((u128::from(len) * u128::from(k)) / u128::from(n.max(1))) as u64;
    (at(i), at(i + 1))
}

/// A distributed collection of `T`: a cheap handle on a lineage of transformations.
///
/// Transformations (`map`, `filter`, ...) are lazy and return new datasets; actions
/// (`collect`, `count`, ...) run a job and return a `Result`. Every method takes
/// `&self`, so one dataset can feed several jobs.
///
/// ```
/// use flint::prelude::*;
/// # fn main() -> flint::Result<()> {
/// let ctx = Context::builder().master("local[2]").create()?;
/// let evens = ctx.range(0, 10, 3).filter(|x| x % 2 == 0);
/// assert_eq!(evens.collect()?, vec![0, 2, 4, 6, 8]);
/// assert_eq!(evens.count()?, 5);
/// # Ok(()) }
/// ```
pub struct Dataset<T> {
    pub(crate) node: Arc<Node>,
    pub(crate) ctx: Context,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Dataset<T> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            ctx: self.ctx.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Dataset<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("type", &std::any::type_name::<T>())
            .field("partitions", &self.node.partitions)
            .finish()
    }
}

pub(crate) fn captures_of<C: Data>(value: &C) -> std::result::Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| format!("{}: {e}", std::any::type_name::<C>()))
}

impl<T: Data> Dataset<T> {
    pub(crate) fn from_node(ctx: Context, node: Arc<Node>) -> Self {
        Self {
            node,
            ctx,
            _t: PhantomData,
        }
    }

    pub(crate) fn source(
        ctx: &Context,
        entry: EntryPoint,
        splits: std::result::Result<Vec<Vec<u8>>, String>,
    ) -> Self {
        let node = match splits {
            Ok(splits) => Node::new(splits.len() as u32, Kind::Source { entry, splits }),
            Err(error) => Node::new(0, Kind::Broken { error }),
        };
        Self::from_node(ctx.clone(), node)
    }

    pub(crate) fn narrow<U: Data>(
        &self,
        entry: EntryPoint,
        captures: std::result::Result<Vec<u8>, String>,
    ) -> Dataset<U> {
        self.narrow_node(entry, captures, false)
    }

    /// [`narrow`](Self::narrow) for an operation on each element alone (see
    /// [`Kind::Narrow`]'s `per_element`).
    pub(crate) fn narrow_each<U: Data>(
        &self,
        entry: EntryPoint,
        captures: std::result::Result<Vec<u8>, String>,
    ) -> Dataset<U> {
        self.narrow_node(entry, captures, true)
    }

    fn narrow_node<U: Data>(
        &self,
        entry: EntryPoint,
        captures: std::result::Result<Vec<u8>, String>,
        per_element: bool,
    ) -> Dataset<U> {
        let node = match captures {
            Ok(captures) => Node::new(
                self.node.partitions,
                Kind::Narrow {
                    entry,
                    captures,
                    parent: self.node.clone(),
                    per_element,
                },
            ),
            Err(error) => Node::new(self.node.partitions, Kind::Broken { error }),
        };
        Dataset::from_node(self.ctx.clone(), node)
    }

    /// The number of partitions.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(0, 100, 7).num_partitions(), 7);
    /// # Ok(()) }
    /// ```
    pub fn num_partitions(&self) -> u32 {
        self.node.partitions
    }

    /// The context this dataset belongs to.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(0, 1, 1).context().app_id(), ctx.app_id());
    /// # Ok(()) }
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    // ---- transformations ----

    /// Each element through `f`. `f` must capture nothing; see [`map_with`](Self::map_with).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let sq = ctx.parallelize((1..=4u64).collect(), 2).map(|x| x * x).collect()?;
    /// assert_eq!(sq, vec![1, 4, 9, 16]);
    /// # Ok(()) }
    /// ```
    pub fn map<U: Data, F>(&self, f: F) -> Dataset<U>
    where
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to map must not capture; pass what it needs with map_with(value, |v, x| ...)");
        let _ = f;
        self.narrow_each(entry_point::<MapOp<F, T, U>>(), Ok(vec![]))
    }

    /// Each element through `f(&value, x)`; `value` is serialized now and sent with
    /// every task (use a [`Broadcast`](crate::Broadcast) for a large one).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let k = 3u64;
    /// assert_eq!(ctx.range(0, 3, 2).map_with(k, |k, x| x * k).collect()?, vec![0, 3, 6]);
    /// # Ok(()) }
    /// ```
    pub fn map_with<C: Data, U: Data, F>(&self, value: C, f: F) -> Dataset<U>
    where
        F: Fn(&C, T) -> U + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to map_with must not capture; put everything they need in its value");
        let _ = f;
        self.narrow_each(entry_point::<MapWithOp<F, C, T, U>>(), captures_of(&value))
    }

    /// The elements for which `f` is true.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(0, 10, 2).filter(|x| x % 3 == 0).collect()?, vec![0, 3, 6, 9]);
    /// # Ok(()) }
    /// ```
    pub fn filter<F>(&self, f: F) -> Dataset<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to filter must not capture; pass what it needs with filter_with(value, |v, x| ...)");
        let _ = f;
        self.narrow_each(entry_point::<FilterOp<F, T>>(), Ok(vec![]))
    }

    /// The elements for which `f(&value, &x)` is true.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(0, 10, 2).filter_with(7u64, |m, x| x >= m).collect()?, vec![7, 8, 9]);
    /// # Ok(()) }
    /// ```
    pub fn filter_with<C: Data, F>(&self, value: C, f: F) -> Dataset<T>
    where
        F: Fn(&C, &T) -> bool + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to filter_with must not capture; put everything they need in its value");
        let _ = f;
        self.narrow_each(entry_point::<FilterWithOp<F, C, T>>(), captures_of(&value))
    }

    /// Each element to any number of elements.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let lines = ctx.parallelize(vec!["a b".to_owned(), "c".to_owned()], 2);
    /// let words = lines.flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    /// assert_eq!(words.collect()?, vec!["a", "b", "c"]);
    /// # Ok(()) }
    /// ```
    pub fn flat_map<I, F>(&self, f: F) -> Dataset<I::Item>
    where
        F: Fn(T) -> I + Send + Sync + 'static,
        I: IntoIterator + 'static,
        I::Item: Data,
        I::IntoIter: Send + 'static,
    {
        no_capture!(F, "flint: closures passed to flat_map must not capture; pass what it needs with flat_map_with(value, |v, x| ...)");
        let _ = f;
        self.narrow_each(entry_point::<FlatMapOp<F, T, I>>(), Ok(vec![]))
    }

    /// Each element to any number of elements, with `value`.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let rep = ctx.range(1, 3, 1).flat_map_with(2usize, |n, x| vec![x; *n]);
    /// assert_eq!(rep.collect()?, vec![1, 1, 2, 2]);
    /// # Ok(()) }
    /// ```
    pub fn flat_map_with<C: Data, I, F>(&self, value: C, f: F) -> Dataset<I::Item>
    where
        F: Fn(&C, T) -> I + Send + Sync + 'static,
        I: IntoIterator + 'static,
        I::Item: Data,
        I::IntoIter: Send + 'static,
    {
        no_capture!(F, "flint: closures passed to flat_map_with must not capture; put everything they need in its value");
        let _ = f;
        self.narrow_each(
            entry_point::<FlatMapWithOp<F, C, T, I>>(),
            captures_of(&value),
        )
    }

    /// A whole partition at once: `f` gets an iterator of its elements.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let sums = ctx.range(0, 10, 2).map_partitions(|it| [it.sum::<u64>()]);
    /// assert_eq!(sums.collect()?, vec![10, 35]);
    /// # Ok(()) }
    /// ```
    pub fn map_partitions<I, F>(&self, f: F) -> Dataset<I::Item>
    where
        F: Fn(Partition<T>) -> I + Send + Sync + 'static,
        I: IntoIterator + 'static,
        I::Item: Data,
        I::IntoIter: Send + 'static,
    {
        no_capture!(F, "flint: closures passed to map_partitions must not capture; pass what it needs with map_partitions_with(value, |v, items| ...)");
        let _ = f;
        self.narrow(entry_point::<MapPartitionsOp<F, T, I>>(), Ok(vec![]))
    }

    /// A whole partition at once, with its own copy of `value` (by value, once per
    /// partition, so the returned iterator may keep it).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let out = ctx.range(0, 4, 2).map_partitions_with(10u64, |k, it| it.map(move |x| x + k));
    /// assert_eq!(out.collect()?, vec![10, 11, 12, 13]);
    /// # Ok(()) }
    /// ```
    pub fn map_partitions_with<C: Data, I, F>(&self, value: C, f: F) -> Dataset<I::Item>
    where
        F: Fn(C, Partition<T>) -> I + Send + Sync + 'static,
        I: IntoIterator + 'static,
        I::Item: Data,
        I::IntoIter: Send + 'static,
    {
        no_capture!(F, "flint: closures passed to map_partitions_with must not capture; put everything they need in its value");
        let _ = f;
        self.narrow(
            entry_point::<MapPartitionsWithOp<F, C, T, I>>(),
            captures_of(&value),
        )
    }

    /// `(f(&x), x)` for each element.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[1]").create()?;
    /// let keyed = ctx.parallelize(vec!["ab".to_owned()], 1).key_by(|s| s.len());
    /// assert_eq!(keyed.collect()?, vec![(2, "ab".to_owned())]);
    /// # Ok(()) }
    /// ```
    pub fn key_by<K: Data, F>(&self, f: F) -> Dataset<(K, T)>
    where
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to key_by must not capture; compute the key with map_with(value, |v, x| (key, x))");
        let _ = f;
        self.narrow_each(entry_point::<KeyByOp<F, T, K>>(), Ok(vec![]))
    }

    /// This dataset's partitions followed by `other`'s.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let u = ctx.range(0, 2, 1).union(&ctx.range(5, 7, 2));
    /// assert_eq!((u.num_partitions(), u.collect()?), (3, vec![0, 1, 5, 6]));
    /// # Ok(()) }
    /// ```
    pub fn union(&self, other: &Dataset<T>) -> Dataset<T> {
        let mut parents = Vec::new();
        for n in [&self.node, &other.node] {
            match &n.kind {
                Kind::Union { parents: p } => parents.extend(p.iter().cloned()),
                _ => parents.push(n.clone()),
            }
        }
        let partitions = parents.iter().map(|p| p.partitions).sum();
        Dataset::from_node(
            self.ctx.clone(),
            Node::new(partitions, Kind::Union { parents }),
        )
    }

    /// At most `n` partitions (at least 1), each a run of consecutive parent partitions;
    /// no data moves between executors. With `n` at or above the current number, the
    /// same partitions.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let c = ctx.range(0, 10, 5).coalesce(2);
    /// assert_eq!((c.num_partitions(), c.collect()?), (2, (0..10).collect()));
    /// # Ok(()) }
    /// ```
    pub fn coalesce(&self, n: u32) -> Dataset<T> {
        let n = n.max(1);
        let have = self.node.partitions;
        if n >= have {
            return self.clone();
        }
        let groups = (0..n)
            .map(|i| {
                let (a, b) = slice(u64::from(have), n, i);
                (a as u32..b as u32).collect()
            })
            .collect();
        Dataset::from_node(
            self.ctx.clone(),
            Node::new(
                n,
                Kind::Coalesce {
                    entry: entry_point::<ConcatOp<T>>(),
                    groups,
                    parent: self.node.clone(),
                },
            ),
        )
    }

    /// Keeps this dataset's partitions in executor memory once computed (serialized,
    /// within `executor.memory`; evicted ones are computed again from the lineage).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let squares = ctx.range(0, 1000, 4).map(|x| x * x).cache();
    /// assert_eq!(squares.count()?, 1000); // computes and caches
    /// assert_eq!(squares.reduce(|a, b| a.max(b))?, Some(999 * 999)); // reads the cache
    /// # Ok(()) }
    /// ```
    pub fn cache(&self) -> Dataset<T> {
        if let Kind::Cache { persisted, .. } = &self.node.kind {
            persisted.store(true, Ordering::Relaxed);
            return self.clone();
        }
        let cache = self.ctx.next_id();
        Dataset::from_node(
            self.ctx.clone(),
            Node::new(
                self.node.partitions,
                Kind::Cache {
                    cache,
                    encode: entry_point::<CacheEncode<T>>(),
                    decode: entry_point::<CacheDecode<T>>(),
                    persisted: AtomicBool::new(true),
                    parent: self.node.clone(),
                },
            ),
        )
    }

    /// Stops caching this dataset and drops its cached partitions; it is computed from
    /// its lineage again (until `cache` is called again).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let d = ctx.range(0, 10, 2).cache();
    /// d.count()?;
    /// assert_eq!(d.unpersist().count()?, 10);
    /// # Ok(()) }
    /// ```
    pub fn unpersist(&self) -> Dataset<T> {
        if let Kind::Cache {
            cache, persisted, ..
        } = &self.node.kind
        {
            persisted.store(false, Ordering::Relaxed);
            self.ctx.unpersist(*cache);
        }
        self.clone()
    }

    // ---- actions ----

    /// Runs the action `O` on `partitions` (all when `None`), handing each partition's
    /// output to `each` as it arrives, in no particular order.
    fn run(
        &self,
        action: EntryPoint,
        captures: Vec<u8>,
        partitions: Option<Vec<u32>>,
        each: impl FnMut(u32, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let partitions = partitions.unwrap_or_else(|| (0..self.node.partitions).collect());
        self.ctx
            .run_job(&self.node, action, captures, partitions, each)
    }

    /// Every partition's output, in partition order.
    fn run_ordered(
        &self,
        action: EntryPoint,
        captures: Vec<u8>,
        partitions: Option<Vec<u32>>,
    ) -> Result<Vec<Vec<u8>>> {
        let mut out = BTreeMap::new();
        self.run(action, captures, partitions, |p, b| {
            out.insert(p, b);
            Ok(())
        })?;
        Ok(out.into_values().collect())
    }

    pub(crate) fn decoded<R: serde::de::DeserializeOwned>(
        &self,
        action: EntryPoint,
        captures: Vec<u8>,
        partitions: Option<Vec<u32>>,
    ) -> Result<Vec<R>> {
        self.run_ordered(action, captures, partitions)?
            .iter()
            .map(|b| decode_output(b))
            .collect()
    }

    /// Every element, in partition order.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.parallelize(vec!['a', 'b', 'c'], 3).collect()?, vec!['a', 'b', 'c']);
    /// # Ok(()) }
    /// ```
    pub fn collect(&self) -> Result<Vec<T>> {
        let parts: Vec<Vec<T>> = self.decoded(entry_point::<CollectAction<T>>(), vec![], None)?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// The number of elements.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(0, 12345, 7).count()?, 12345);
    /// # Ok(()) }
    /// ```
    pub fn count(&self) -> Result<u64> {
        let parts: Vec<u64> = self.decoded(entry_point::<CountAction<T>>(), vec![], None)?;
        Ok(parts.into_iter().sum())
    }

    /// Combines the elements with `f` (associative and commutative); `None` when empty.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(1, 101, 4).reduce(|a, b| a + b)?, Some(5050));
    /// assert_eq!(ctx.range(0, 0, 4).reduce(|a, b| a + b)?, None);
    /// # Ok(()) }
    /// ```
    pub fn reduce<F>(&self, f: F) -> Result<Option<T>>
    where
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to reduce must not capture; bring what it needs into the data first with map_with(value, |v, x| ...)");
        let parts: Vec<Option<T>> =
            self.decoded(entry_point::<ReduceAction<F, T>>(), vec![], None)?;
        Ok(parts.into_iter().flatten().reduce(&f))
    }

    /// Folds each partition from `zero` with `f`, then the partitions' results from
    /// `zero` again, as Spark's `fold` does (so `zero` must be neutral for `f`).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(1, 5, 2).fold(1, |a, b| a * b)?, 24);
    /// # Ok(()) }
    /// ```
    pub fn fold<F>(&self, zero: T, f: F) -> Result<T>
    where
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to fold must not capture; bring what it needs into the data first with map_with(value, |v, x| ...)");
        let caps = postcard::to_allocvec(&zero)
            .map_err(|e| Error::Serialization(format!("fold's zero: {e}")))?;
        let parts: Vec<T> = self.decoded(entry_point::<FoldAction<F, T>>(), caps, None)?;
        Ok(parts.into_iter().fold(zero, &f))
    }

    /// The first `n` elements, in partition order, computing as few partitions as it
    /// can: one first, then more (up to four times as many each round), as Spark does.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(0, 1_000_000, 100).take(3)?, vec![0, 1, 2]);
    /// # Ok(()) }
    /// ```
    pub fn take(&self, n: usize) -> Result<Vec<T>> {
        let total = self.node.partitions;
        let mut buf: Vec<T> = Vec::new();
        let mut scanned: u32 = 0;
        while buf.len() < n && scanned < total {
            let mut try_parts: u64 = 1;
            if scanned > 0 {
                let limit = u64::from(scanned) * 4;
                try_parts = if buf.is_empty() {
                    limit
                } else {
                    let est = (1.5 * n as f64 * f64::from(scanned) / buf.len() as f64) as u64;
                    est.saturating_sub(u64::from(scanned)).max(1).min(limit)
                };
            }
            let end = (u64::from(scanned) + try_parts).min(u64::from(total)) as u32;
            let left = (n - buf.len()) as u64;
            let caps =
                postcard::to_allocvec(&left).map_err(|e| Error::Serialization(e.to_string()))?;
            let parts: Vec<Vec<T>> = self.decoded(
                entry_point::<TakeAction<T>>(),
                caps,
                Some((scanned..end).collect()),
            )?;
            for p in parts {
                let room = n - buf.len();
                buf.extend(p.into_iter().take(room));
            }
            scanned = end;
        }
        Ok(buf)
    }

    /// The first element, if any.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(5, 9, 2).first()?, Some(5));
    /// # Ok(()) }
    /// ```
    pub fn first(&self) -> Result<Option<T>> {
        Ok(self.take(1)?.into_iter().next())
    }

    /// Runs `f` on every element, on the executors.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// ctx.range(0, 3, 3).foreach(|x| assert!(x < 3))?;
    /// # Ok(()) }
    /// ```
    pub fn foreach<F>(&self, f: F) -> Result<()>
    where
        F: Fn(T) + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to foreach must not capture; pass what it needs with foreach_with(value, |v, x| ...)");
        let _ = f;
        self.run(
            entry_point::<ForeachAction<F, T>>(),
            vec![],
            None,
            |_, _| Ok(()),
        )
    }

    /// Runs `f(&value, x)` on every element, on the executors: the way to feed an
    /// [`Accumulator`](crate::Accumulator).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let big = ctx.accumulator("big");
    /// ctx.range(0, 100, 4).foreach_with(big.clone(), |a, x| if x >= 90 { a.add(1) })?;
    /// assert_eq!(big.value(), 10);
    /// # Ok(()) }
    /// ```
    pub fn foreach_with<C: Data, F>(&self, value: C, f: F) -> Result<()>
    where
        F: Fn(&C, T) + Send + Sync + 'static,
    {
        no_capture!(F, "flint: closures passed to foreach_with must not capture; put everything they need in its value");
        let _ = f;
        let caps = captures_of(&value).map_err(Error::Serialization)?;
        self.run(
            entry_point::<ForeachWithAction<F, C, T>>(),
            caps,
            None,
            |_, _| Ok(()),
        )
    }

    /// The `n` smallest elements, in ascending order.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let d = ctx.parallelize(vec![5, 3, 9, 1, 7], 2);
    /// assert_eq!(d.take_ordered(3)?, vec![1, 3, 5]);
    /// # Ok(()) }
    /// ```
    pub fn take_ordered(&self, n: usize) -> Result<Vec<T>>
    where
        T: Ord,
    {
        let caps =
            postcard::to_allocvec(&(n as u64)).map_err(|e| Error::Serialization(e.to_string()))?;
        let parts: Vec<Vec<T>> = self.decoded(entry_point::<TakeOrderedAction<T>>(), caps, None)?;
        let mut all: Vec<T> = parts.into_iter().flatten().collect();
        all.sort();
        all.truncate(n);
        Ok(all)
    }

    /// Writes each partition as a text file `part-NNNNN` (one element per line) in
    /// directory `dir`, which must not exist. Each task attempt writes a temporary file;
    /// the driver renames the first successful attempt's into place, so each partition
    /// is committed once; `_SUCCESS` marks a complete output. On a cluster, `dir` must
    /// be on a file system the driver and the executors share.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let dir = std::env::temp_dir().join(format!("flint-doc-save-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// ctx.range(0, 4, 2).save_as_text_file(&dir)?;
    /// assert_eq!(std::fs::read_to_string(dir.join("part-00001")).unwrap(), "2\n3\n");
    /// assert!(ctx.range(0, 4, 2).save_as_text_file(&dir).is_err()); // exists
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn save_as_text_file(&self, dir: impl AsRef<Path>) -> Result<()>
    where
        T: Display,
    {
        let given = dir.as_ref();
        let dir = std::path::absolute(given).map_err(|e| Error::Io {
            path: given.display().to_string(),
            reason: e.to_string(),
        })?;
        let io = |p: &Path, e: std::io::Error| Error::Io {
            path: p.display().to_string(),
            reason: e.to_string(),
        };
        if dir.exists() {
            return Err(Error::OutputExists {
                path: dir.display().to_string(),
            });
        }
        let tmp = dir.join("_temporary");
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let caps = postcard::to_allocvec(&dir.display().to_string())
            .map_err(|e| Error::Serialization(e.to_string()))?;
        let ran = self.run(
            entry_point::<SaveTextAction<T>>(),
            caps,
            None,
            |p, bytes| {
                let written: String = decode_output(&bytes)?;
                let target = text::final_part(&dir, p);
                std::fs::rename(&written, &target).map_err(|e| io(&target, e))
            },
        );
        // Stale attempts' files go with the temporary directory, success or not.
        let cleaned = std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e));
        ran?;
        cleaned?;
        let marker = dir.join("_SUCCESS");
        std::fs::write(&marker, b"").map_err(|e| io(&marker, e))
    }
}
