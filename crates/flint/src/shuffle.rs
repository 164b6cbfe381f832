//! The shuffle, typed side: partitioners, combiners, and the entry-point operations of
//! a shuffle's two halves.
//!
//! A map task runs its parent's plan, then a *writer* action: records `(K, V)` are
//! (optionally) combined by key in memory, bucketed by the partitioner and encoded
//! (postcard, one record after the other), one block per reduce partition, written
//! with [`MapOutputs`](crate::map_output::MapOutputs); its output is the blocks' sizes,
//! which the driver's map output tracker keeps. A reduce task's plan starts with a
//! *reader* whose captures are a [`ReadSpec`]: the shuffle, its reduce partition and
//! where each map output lives (filled in by the driver when it launches the task). A
//! block that cannot be read (its executor gone, its file missing, a checksum
//! mismatch) fails the task with [`TaskError::FetchFailed`], which the scheduler turns
//! into re-running the lost map tasks.
//!
//! Keys are partitioned by [`flint_shuffle::key_hash`] (foldhash with a fixed seed, not a
//! random `RandomState`), the same on every executor of one binary, through
//! [`flint_shuffle::hash_partition`]; the map-side combine reuses that one hash for its
//! table. Other fixed hashes (round-robin starts, sample seeds) use [`stable_hash`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use flint_shuffle::{
    decode_block, hash_partition, key_hash, merge_sorted_by_prefix, natural_order,
    read_local_blocks, sort_prefix, verify_block, BlockFetcher, BlockMeta, BlockRef, Combiner,
    FetchRequest, KeyOrdering, MapId, RecordIter, ReduceAggregator, ShuffleWriter,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::entry::{conjure, erase, single, ErasedPartition, Op, Partition};
use crate::executor::{action_input, with_task, ExecutorEnv, ShuffleEnv};
use crate::wire::{decode, encode, ShuffleMetrics, TaskError};
use crate::Data;

type P<X> = PhantomData<fn() -> X>;

/// A fixed hash of `k` (SipHash with fixed keys): the same in every process of one
/// binary.
pub(crate) fn stable_hash<K: Hash + ?Sized>(k: &K) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    k.hash(&mut h);
    h.finish()
}

/// How keys are assigned to reduce partitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum PartSpec {
    /// `hash_partition(key_hash(k), n)`.
    Hash(u32),
    /// By sorted bounds (`sort_by_key`): partition i holds keys up to `bounds[i]`.
    Range {
        /// The partitions.
        n: u32,
        /// The `n - 1` (or fewer) bounds, a postcard `Vec<K>`.
        bounds: Vec<u8>,
        /// Ascending order (else descending: partition 0 holds the largest keys).
        ascending: bool,
    },
    /// The key (a `u32`) is the partition (`repartition`).
    Direct(u32),
}

/// A partitioner for keys `K`, made from a [`PartSpec`] on the executor.
pub(crate) trait Partitioner<K>: Sized + 'static {
    fn from_spec(spec: &PartSpec) -> Result<Self, TaskError>;
    fn partitions(&self) -> u32;
    fn partition(&self, k: &K) -> u32;
    /// Whether `partition` is `hash_partition(key_hash(k), partitions)`, so a combining
    /// writer can hash each key once.
    fn by_key_hash(&self) -> bool {
        false
    }
}

/// [`PartSpec::Hash`].
pub(crate) struct HashPartitioner(u32);
impl<K: Hash + 'static> Partitioner<K> for HashPartitioner {
    fn from_spec(spec: &PartSpec) -> Result<Self, TaskError> {
        match spec {
            PartSpec::Hash(n) => Ok(Self((*n).max(1))),
            other => Err(TaskError::Entry(format!(
                "a hash partitioner got {other:?}"
            ))),
        }
    }
    fn partitions(&self) -> u32 {
        self.0
    }
    fn partition(&self, k: &K) -> u32 {
        hash_partition(key_hash(k), self.0)
    }
    fn by_key_hash(&self) -> bool {
        true
    }
}

/// [`PartSpec::Range`].
pub(crate) struct RangePartitioner<K> {
    n: u32,
    bounds: Vec<K>,
    ascending: bool,
}
impl<K: Data + Ord> Partitioner<K> for RangePartitioner<K> {
    fn from_spec(spec: &PartSpec) -> Result<Self, TaskError> {
        match spec {
            PartSpec::Range {
                n,
                bounds,
                ascending,
            } => Ok(Self {
                n: (*n).max(1),
                bounds: decode(bounds)?,
                ascending: *ascending,
            }),
            other => Err(TaskError::Entry(format!(
                "a range partitioner got {other:?}"
            ))),
        }
    }
    fn partitions(&self) -> u32 {
        self.n
    }
    fn partition(&self, k: &K) -> u32 {
        let i = self.bounds.partition_point(|b| b < k) as u32;
        let i = i.min(self.n - 1);
        if self.ascending {
            i
        } else {
            self.n - 1 - i
        }
    }
}

/// [`PartSpec::Direct`].
pub(crate) struct DirectPartitioner(u32);
impl Partitioner<u32> for DirectPartitioner {
    fn from_spec(spec: &PartSpec) -> Result<Self, TaskError> {
        match spec {
            PartSpec::Direct(n) => Ok(Self((*n).max(1))),
            other => Err(TaskError::Entry(format!(
                "a direct partitioner got {other:?}"
            ))),
        }
    }
    fn partitions(&self) -> u32 {
        self.0
    }
    fn partition(&self, k: &u32) -> u32 {
        k % self.0
    }
}

/// How values `V` of one key combine into a `C` (Spark's `Aggregator`): each value
/// becomes a combiner (`create`, from the operation's zero), combiners of a key merge
/// (`merge`). A fold's zero is so applied once per value, which its contract (a zero
/// neutral for the function, added any number of times) allows.
pub(crate) trait Combine<V, C>: 'static {
    /// The operation's value (a fold's zero), `()` when none.
    type Zero: Data;
    fn create(z: &Self::Zero, v: V) -> C;
    fn merge(c: C, other: C) -> C;
}

/// `reduce_by_key(f)`.
pub(crate) struct ReduceCombine<F>(P<F>);
impl<F, V> Combine<V, V> for ReduceCombine<F>
where
    F: Fn(V, V) -> V + Send + Sync + 'static,
    V: Data,
{
    type Zero = ();
    fn create(_: &(), v: V) -> V {
        v
    }
    fn merge(c: V, o: V) -> V {
        conjure::<F>()(c, o)
    }
}

/// `fold_by_key(zero, f)`.
pub(crate) struct FoldCombine<F>(P<F>);
impl<F, V> Combine<V, V> for FoldCombine<F>
where
    F: Fn(V, V) -> V + Send + Sync + 'static,
    V: Data,
{
    type Zero = V;
    fn create(z: &V, v: V) -> V {
        conjure::<F>()(z.clone(), v)
    }
    fn merge(c: V, o: V) -> V {
        conjure::<F>()(c, o)
    }
}

/// `aggregate_by_key(zero, seq, comb)`.
pub(crate) struct AggregateCombine<S, M>(P<(S, M)>);
impl<S, M, V, U> Combine<V, U> for AggregateCombine<S, M>
where
    S: Fn(U, V) -> U + Send + Sync + 'static,
    M: Fn(U, U) -> U + Send + Sync + 'static,
    V: Data,
    U: Data,
{
    type Zero = U;
    fn create(z: &U, v: V) -> U {
        conjure::<S>()(z.clone(), v)
    }
    fn merge(c: U, o: U) -> U {
        conjure::<M>()(c, o)
    }
}

/// `group_by_key`: every value in a `Vec`.
pub(crate) struct GroupCombine;
impl<V: Data> Combine<V, Vec<V>> for GroupCombine {
    type Zero = ();
    fn create(_: &(), v: V) -> Vec<V> {
        vec![v]
    }
    fn merge(mut c: Vec<V>, o: Vec<V>) -> Vec<V> {
        c.extend(o);
        c
    }
}

/// What a map task's writer is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WriteSpec {
    /// The shuffle.
    pub shuffle: u64,
    /// How keys go to reduce partitions.
    pub partitioner: PartSpec,
    /// The operation's captures (a fold's zero).
    pub op: Vec<u8>,
}

/// A map task's output, for the driver's map output tracker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MapOutputReport {
    /// Where reduce tasks fetch it (`local` in-process).
    pub server: String,
    /// Its blocks' lengths, checksums and record counts.
    pub blocks: Vec<BlockMeta>,
}

/// Where one map output of a reduce task's shuffle lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BlockSource {
    /// The map partition.
    pub map: u32,
    /// The executor that wrote it; `None` when the driver knows of no output (the
    /// read fails with a fetch failure for it).
    pub executor: Option<String>,
    /// Where to fetch it.
    pub server: String,
    /// The block for this reduce partition, as the map task wrote it.
    pub meta: BlockMeta,
}

/// What a reduce task's reader is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReadSpec {
    /// The shuffle.
    pub shuffle: u64,
    /// This reduce partition.
    pub reduce: u32,
    /// Every map output.
    pub sources: Vec<BlockSource>,
    /// The operation's captures.
    pub op: Vec<u8>,
}

fn shuffle_id(id: u64) -> Result<u32, TaskError> {
    u32::try_from(id).map_err(|_| TaskError::Entry(format!("shuffle id {id} is out of range")))
}

fn io(e: flint_shuffle::ShuffleError) -> TaskError {
    TaskError::Io(e.to_string())
}

/// The task's executor and ids.
fn task() -> Result<(Arc<ExecutorEnv>, u32, u64), TaskError> {
    with_task(|t| (t.env.clone(), t.partition, t.task_id))
        .ok_or_else(|| TaskError::Entry("a shuffle operation ran outside a task".into()))
}

/// The driver launches a map task only when it holds no usable output of it (never
/// written, lost with its executor, or found missing or corrupt): an output of it
/// left here is stale and removed first, so the writer does not keep it (its first
/// complete output wins, which still settles attempts racing each other).
fn drop_stale_output(sh: &ShuffleEnv, id: MapId) -> Result<(), TaskError> {
    for p in [
        sh.layout.index_path(id.shuffle, id.map),
        sh.layout.data_path(id.shuffle, id.map),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => tracing::info!("removed the stale map output {}", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TaskError::Io(format!("removing {}: {e}", p.display()))),
        }
    }
    Ok(())
}

fn add_metrics(f: impl FnOnce(&mut ShuffleMetrics)) {
    with_task(|t| f(&mut t.metrics.borrow_mut()));
}

/// Commits a writer and returns the map task's output for the driver.
fn committed<K, V, C>(
    w: ShuffleWriter<'_, K, V, C>,
    env: &ExecutorEnv,
) -> Result<ErasedPartition, TaskError>
where
    K: Serialize + DeserializeOwned + Send + 'static,
    V: Send,
    C: Serialize + DeserializeOwned + Send + 'static,
{
    let status = w.commit().map_err(io)?;
    add_metrics(|m| {
        m.map_outputs += 1;
        m.records_written += status.record_counts().iter().sum::<u64>();
        m.bytes_written += status.total_bytes();
        m.spills += u64::from(status.spills);
        m.bytes_spilled += status.bytes_spilled;
    });
    let report = MapOutputReport {
        server: env.shuffle()?.server.clone(),
        blocks: status.blocks,
    };
    crate::ops::ActionOutput::erase(encode(&report)?)
}

fn identity<C>(c: C) -> C {
    c
}

/// Map side, combining by key first (`reduce_by_key`, `fold_by_key`, `aggregate_by_key`):
/// each value becomes a combiner (`create`), combiners of a key merge (`merge`); the
/// blocks hold `(K, C)`.
pub(crate) struct CombineWrite<K, V, C, A, Pt>(P<(K, V, C, A, Pt)>);
impl<K, V, C, A, Pt> Op for CombineWrite<K, V, C, A, Pt>
where
    K: Data + Hash + Eq,
    V: Data,
    C: Data,
    A: Combine<V, C>,
    Pt: Partitioner<K> + Sync,
{
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let spec: WriteSpec = decode(captures)?;
        let z: A::Zero = decode(&spec.op)?;
        let part = Pt::from_spec(&spec.partitioner)?;
        let (env, map, attempt) = task()?;
        let sh = env.shuffle()?;
        let id = MapId {
            shuffle: shuffle_id(spec.shuffle)?,
            map,
            attempt,
        };
        drop_stale_output(sh, id)?;
        let pf = |k: &K| part.partition(k);
        let combiner = Combiner {
            create: identity::<C>,
            merge_value: A::merge,
            merge_combiners: A::merge,
        };
        let mut w = if part.by_key_hash() {
            ShuffleWriter::with_combiner_by_key_hash(
                &sh.conf,
                &sh.layout,
                id,
                part.partitions(),
                combiner,
                None,
            )
        } else {
            ShuffleWriter::with_combiner(
                &sh.conf,
                &sh.layout,
                id,
                part.partitions(),
                &pf,
                combiner,
                None,
            )
        }
        .map_err(io)?;
        action_input::<(K, V)>(inputs)?
            .try_each(|(k, v)| w.insert_combining(k, A::create(&z, v)))
            .map_err(io)?;
        committed(w, &env)
    }
}

fn plain_write<K, V, Pt>(
    captures: &[u8],
    inputs: Vec<ErasedPartition>,
    sorted: Option<fn(bool) -> KeyOrdering<K>>,
) -> Result<ErasedPartition, TaskError>
where
    K: Data,
    V: Data,
    Pt: Partitioner<K> + Sync,
{
    let spec: WriteSpec = decode(captures)?;
    let part = Pt::from_spec(&spec.partitioner)?;
    let (env, map, attempt) = task()?;
    let sh = env.shuffle()?;
    let id = MapId {
        shuffle: shuffle_id(spec.shuffle)?,
        map,
        attempt,
    };
    let (ordering, prefix) = match sorted {
        Some(order) => {
            let ascending = decode::<bool>(&spec.op)?;
            (Some(order(ascending)), sort_prefix::<K>(ascending))
        }
        None => (None, None),
    };
    drop_stale_output(sh, id)?;
    let pf = |k: &K| part.partition(k);
    let mut w = ShuffleWriter::with_prefix(
        &sh.conf,
        &sh.layout,
        id,
        part.partitions(),
        &pf,
        ordering,
        prefix,
    )
    .map_err(io)?;
    action_input::<(K, V)>(inputs)?
        .try_each(|(k, v)| w.insert(k, v))
        .map_err(io)?;
    committed(w, &env)
}

/// Map side, records as they are (`group_by_key`, `partition_by`, `repartition`).
pub(crate) struct PlainWrite<K, V, Pt>(P<(K, V, Pt)>);
impl<K, V, Pt> Op for PlainWrite<K, V, Pt>
where
    K: Data,
    V: Data,
    Pt: Partitioner<K> + Sync,
{
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        plain_write::<K, V, Pt>(captures, inputs, None)
    }
}

/// Map side of `sort_by_key`: each block sorted by key (captures: ascending).
pub(crate) struct SortedWrite<K, V, Pt>(P<(K, V, Pt)>);
impl<K, V, Pt> Op for SortedWrite<K, V, Pt>
where
    K: Data + Ord,
    V: Data,
    Pt: Partitioner<K> + Sync,
{
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        plain_write::<K, V, Pt>(captures, inputs, Some(ordering::<K>))
    }
}

fn reverse_order<K: Ord>(a: &K, b: &K) -> std::cmp::Ordering {
    b.cmp(a)
}

fn ordering<K: Ord>(ascending: bool) -> KeyOrdering<K> {
    if ascending {
        natural_order::<K>
    } else {
        reverse_order::<K>
    }
}

/// The blocks of this reduce partition as they arrive: `(block, bytes, meta)`.
/// Fetch failures come out as [`TaskError::FetchFailed`] naming the map output.
fn fetch(
    spec: &ReadSpec,
    mut each: impl FnMut(BlockRef, Bytes, BlockMeta) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let (env, _, _) = task()?;
    let sh = env.shuffle()?;
    let shuffle = shuffle_id(spec.shuffle)?;
    let failed =
        |map: u32, executor: &str, unreachable: bool, reason: String| TaskError::FetchFailed {
            shuffle: spec.shuffle,
            map,
            executor: executor.to_string(),
            unreachable,
            reason,
        };
    let mut remote = Vec::new();
    for s in &spec.sources {
        let Some(executor) = &s.executor else {
            return Err(failed(
                s.map,
                "",
                false,
                "no output is registered for it".into(),
            ));
        };
        if s.meta.records == 0 {
            continue;
        }
        let block = BlockRef {
            shuffle,
            map: s.map,
            partition: spec.reduce,
        };
        if s.server == LOCAL || sh.remote.is_none() {
            // Written by this process: read the files directly.
            let read = read_local_blocks(&sh.layout, shuffle, s.map, spec.reduce, spec.reduce + 1)
                .and_then(|(_, bytes)| {
                    verify_block(block, &bytes, &s.meta)?;
                    Ok(bytes)
                });
            match read {
                Ok(bytes) => {
                    add_metrics(|m| {
                        m.blocks_read += 1;
                        m.bytes_read += s.meta.len;
                    });
                    each(block, bytes, s.meta)?;
                }
                Err(e) => return Err(failed(s.map, executor, false, e.to_string())),
            }
            continue;
        }
        let address = s
            .server
            .parse()
            .map_err(|e| failed(s.map, executor, true, format!("its server address: {e}")))?;
        remote.push(FetchRequest {
            address,
            shuffle,
            map: s.map,
            start: spec.reduce,
            blocks: vec![s.meta],
        });
    }
    if remote.is_empty() {
        return Ok(());
    }
    let Some((rt, rpc)) = &sh.remote else {
        return Ok(());
    };
    let executors: HashMap<u32, &str> = spec
        .sources
        .iter()
        .filter_map(|s| Some((s.map, s.executor.as_deref()?)))
        .collect();
    let mut f = BlockFetcher::start(rt, rpc, &sh.conf, sh.layout.app(), remote);
    while let Some(r) = f.next_blocking() {
        match r {
            Ok(b) => {
                add_metrics(|m| {
                    m.blocks_read += 1;
                    m.bytes_read += b.meta.len;
                    if !b.local {
                        m.remote_bytes_read += b.meta.len;
                    }
                });
                // The bytes are kept (sorting reads hold every block); the fetched
                // block is released so the fetcher's bytes-in-flight cap moves on.
                each(b.block, b.data.clone(), b.meta)?;
            }
            Err(e) => {
                let executor = executors.get(&e.map).copied().unwrap_or("");
                return Err(failed(e.map, executor, true, e.to_string()));
            }
        }
    }
    Ok(())
}

/// The server name of map outputs read directly from this process's files.
pub(crate) const LOCAL: &str = "local";

fn records<K: Data, C: Data>(
    block: BlockRef,
    bytes: Bytes,
    meta: &BlockMeta,
) -> Result<RecordIter<'static, K, C>, TaskError> {
    let it = decode_block::<K, C>(block, bytes, meta).map_err(io)?;
    Ok(Box::new(it))
}

/// Unwraps a record of a verified block: one that does not decode is a bug (or a
/// spill file gone bad), failing the task.
fn record<R>(r: Result<R, flint_shuffle::ShuffleError>) -> R {
    match r {
        Ok(r) => r,
        Err(e) => panic!("shuffle read failed: {e}"),
    }
}

/// Reduce side of a combining shuffle: merges combiners (`COMBINED`: blocks hold
/// `(K, C)` from a [`CombineWrite`]) or values (`(K, V)` from a
/// [`PlainWrite`]) by key, within the memory budget (spilling beyond it).
pub(crate) struct CombineRead<K, V, C, A, const COMBINED: bool>(P<(K, V, C, A)>);
impl<K, V, C, A, const COMBINED: bool> Op for CombineRead<K, V, C, A, COMBINED>
where
    K: Data + Hash + Eq,
    V: Data,
    C: Data,
    A: Combine<V, C>,
{
    fn run(captures: &[u8], _: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let spec: ReadSpec = decode(captures)?;
        let z: A::Zero = decode(&spec.op)?;
        let (env, _, attempt) = task()?;
        let sh = env.shuffle()?;
        let mut agg = ReduceAggregator::<K, C>::new(
            &sh.conf,
            &sh.layout,
            shuffle_id(spec.shuffle)?,
            spec.reduce,
            attempt,
            A::merge,
            None,
        )
        .map_err(io)?;
        fetch(&spec, |block, bytes, meta| {
            if COMBINED {
                agg.insert_all(records::<K, C>(block, bytes, &meta)?)
                    .map_err(io)
            } else {
                for r in records::<K, V>(block, bytes, &meta)? {
                    let (k, v) = r.map_err(io)?;
                    agg.insert(k, A::create(&z, v)).map_err(io)?;
                }
                Ok(())
            }
        })?;
        let spills = agg.spill_count();
        let spilled = agg.bytes_spilled();
        add_metrics(|m| {
            m.spills += u64::from(spills);
            m.bytes_spilled += spilled;
        });
        let out = agg.finish().map_err(io)?;
        Ok(erase::<(K, C)>(Partition::new(out.map(record))))
    }
}

/// Reduce side, records as they came (`partition_by`, `repartition`).
pub(crate) struct PlainRead<K, V>(P<(K, V)>);
impl<K: Data, V: Data> Op for PlainRead<K, V> {
    fn run(captures: &[u8], _: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let spec: ReadSpec = decode(captures)?;
        let mut blocks = Vec::new();
        fetch(&spec, |block, bytes, meta| {
            blocks.push(decode_block::<K, V>(block, bytes, &meta).map_err(io)?);
            Ok(())
        })?;
        Ok(erase::<(K, V)>(Partition::new(
            blocks.into_iter().flatten().map(record),
        )))
    }
}

/// Reduce side of `sort_by_key`: the blocks (each sorted) merged in key order;
/// captures: ascending.
pub(crate) struct SortedRead<K, V>(P<(K, V)>);
impl<K: Data + Ord, V: Data> Op for SortedRead<K, V> {
    fn run(captures: &[u8], _: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let spec: ReadSpec = decode(captures)?;
        let ascending: bool = decode(&spec.op)?;
        let mut blocks = Vec::new();
        fetch(&spec, |block, bytes, meta| {
            blocks.push(records::<K, V>(block, bytes, &meta)?);
            Ok(())
        })?;
        let merged = merge_sorted_by_prefix(
            blocks,
            ordering::<K>(ascending),
            sort_prefix::<K>(ascending),
        );
        Ok(erase::<(K, V)>(Partition::new(merged.map(record))))
    }
}

// ---- narrow helpers of keyed operations ----

/// `map_values(f)`.
pub(crate) struct MapValuesOp<F, K, V, U>(P<(F, K, V, U)>);
impl<F, K, V, U> Op for MapValuesOp<F, K, V, U>
where
    F: Fn(V) -> U + Send + Sync + 'static,
    K: Data,
    V: Data,
    U: Data,
{
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let it = single::<(K, V)>(inputs)?;
        let f = conjure::<F>();
        Ok(erase::<(K, U)>(it.mapped(move |(k, v)| (k, f(v)))))
    }
}

/// `repartition(n)`: keys each element with its target partition, round-robin from a
/// start that depends on the partition (as Spark's `repartition` does).
pub(crate) struct RoundRobinOp<T>(P<T>);
impl<T: Data> Op for RoundRobinOp<T> {
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let n: u32 = decode(captures)?;
        let n = n.max(1);
        let it = single::<T>(inputs)?;
        let p = with_task(|t| t.partition).unwrap_or(0);
        let mut next = (stable_hash(&p) % u64::from(n)) as u32;
        let out: Partition<(u32, T)> = it.mapped(move |x| {
            let k = next;
            next = (next + 1) % n;
            (k, x)
        });
        Ok(erase(out))
    }
}

/// The sample of keys a partition contributes to `sort_by_key`'s bounds: its size and
/// up to `n` keys (reservoir sampling, seeded by the partition). Over a
/// [`TextSampleSource`](crate::ops::TextSampleSource) the size is the source's
/// estimate.
pub(crate) struct SampleAction<K, V>(P<(K, V)>);
impl<K: Data, V: Data> Op for SampleAction<K, V> {
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let n: u64 = decode(captures)?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let p = with_task(|t| t.partition).unwrap_or(0);
        let mut seed = stable_hash(&(p, 0x5eed_u32)) | 1;
        let mut rand = move || {
            // xorshift64*
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut sample: Vec<K> = Vec::new();
        let mut count = 0u64;
        crate::ops::SOURCE_SCALE.with(|c| c.set(None));
        action_input::<(K, V)>(inputs)?.for_each(|(k, _)| {
            count += 1;
            if sample.len() < n {
                sample.push(k);
            } else {
                let j = rand() % count;
                if (j as usize) < n {
                    sample[j as usize] = k;
                }
            }
        });
        // A source that sampled its split (`TextSampleSource`) says how many records
        // each one seen here stands for.
        if let Some(scale) = crate::ops::SOURCE_SCALE.with(|c| c.take()) {
            count = (count as f64 * scale).round() as u64;
        }
        crate::ops::ActionOutput::erase(encode(&(count, sample))?)
    }
}

/// `sort_by_key`'s bounds from the partitions' samples, as Spark's `RangePartitioner`
/// determines them: each sampled key weighs its partition's size over its sample's,
/// and the bounds are the keys where the cumulative weight crosses each `1/n` step.
pub(crate) fn range_bounds<K: Ord + Clone>(samples: Vec<(u64, Vec<K>)>, n: u32) -> Vec<K> {
    let mut weighted: Vec<(K, f64)> = Vec::new();
    for (count, keys) in samples {
        if keys.is_empty() {
            continue;
        }
        let w = count as f64 / keys.len() as f64;
        weighted.extend(keys.into_iter().map(|k| (k, w)));
    }
    if weighted.is_empty() || n <= 1 {
        return Vec::new();
    }
    weighted.sort_by(|a, b| a.0.cmp(&b.0));
    let total: f64 = weighted.iter().map(|(_, w)| w).sum();
    let step = total / f64::from(n);
    let mut bounds: Vec<K> = Vec::new();
    let mut cum = 0.0;
    let mut target = step;
    for (k, w) in weighted {
        cum += w;
        if cum >= target && bounds.last().is_none_or(|b| *b < k) {
            bounds.push(k);
            target += step;
            if bounds.len() as u32 == n - 1 {
                break;
            }
        }
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_same_every_time_and_spreads_keys() {
        assert_eq!(stable_hash("word"), stable_hash(&"word".to_string()));
        let p = HashPartitioner(4);
        let mut seen = [0u32; 4];
        for i in 0..1000u64 {
            seen[<HashPartitioner as Partitioner<u64>>::partition(&p, &i) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 150), "{seen:?}");
    }

    #[test]
    fn range_bounds_split_evenly_and_partition_in_order() {
        let samples = vec![(100, (0..50u64).collect()), (100, (50..100u64).collect())];
        let b = range_bounds(samples, 4);
        assert_eq!(b.len(), 3);
        let spec = PartSpec::Range {
            n: 4,
            bounds: encode(&b).unwrap(),
            ascending: true,
        };
        let p = RangePartitioner::<u64>::from_spec(&spec).unwrap();
        let parts: Vec<u32> = (0..100).map(|k| p.partition(&k)).collect();
        assert!(parts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!((parts[0], parts[99]), (0, 3));
        let desc = RangePartitioner::<u64> {
            n: 4,
            bounds: b,
            ascending: false,
        };
        assert_eq!((desc.partition(&0), desc.partition(&99)), (3, 0));
        assert!(range_bounds::<u64>(vec![(0, vec![])], 4).is_empty());
    }
}
