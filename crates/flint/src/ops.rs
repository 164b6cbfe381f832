//! Every operation as an entry-point type ([`Op`]): sources, narrow transformations,
//! the cache codec and the per-partition halves of actions.
//!
//! Each is a marker type generic over the closure and element types it was made for;
//! `entry_point::<MapOp<F, T, U>>()` is the monomorphized function an executor calls.
//! Closure types are zero-sized (the public operations check it at compile time) and
//! are re-created on the executor with [`conjure`]; values a closure needs arrive as
//! serialized captures (`_with` forms).

use std::collections::BinaryHeap;
use std::fmt::Display;
use std::io::Write;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::entry::{conjure, erase, single, unerase, ErasedPartition, Op, Partition};
use crate::executor::{action_input, with_task};
use crate::text::{self, TextSplit};
use crate::wire::{decode, encode, TaskError};
use crate::Data;

/// The bytes an action (or the cache encoder) produced for a partition.
pub(crate) struct ActionOutput(Vec<u8>);

impl ActionOutput {
    pub(crate) fn erase(bytes: Vec<u8>) -> Result<ErasedPartition, TaskError> {
        Ok(Box::new(ActionOutput(bytes)))
    }

    /// The bytes inside an action's output.
    pub fn take(e: ErasedPartition) -> Result<Vec<u8>, TaskError> {
        e.downcast::<ActionOutput>()
            .map(|b| b.0)
            .map_err(|_| TaskError::Entry("an action entry did not return an action output".into()))
    }
}

type P<X> = PhantomData<fn() -> X>;

fn ok<T: 'static>(p: Partition<T>) -> Result<ErasedPartition, TaskError> {
    Ok(erase(p))
}

// ---- sources ----

/// A partition of `parallelize`: its elements, serialized on the driver.
pub(crate) struct VecSource<T>(P<T>);
impl<T: Data> Op for VecSource<T> {
    fn run(captures: &[u8], _: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let v: Vec<T> = decode(captures)?;
        ok::<T>(Partition::new(v.into_iter()))
    }
}

/// A partition of `range`: `start..end`.
pub(crate) struct RangeSource;
impl Op for RangeSource {
    fn run(captures: &[u8], _: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let (start, end): (u64, u64) = decode(captures)?;
        ok::<u64>(Partition::new(start..end))
    }
}

/// A split of `text_file`: the lines starting in a byte range of one file.
pub(crate) struct TextSource;
impl Op for TextSource {
    fn run(captures: &[u8], _: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let split: TextSplit = decode(captures)?;
        ok::<String>(text::read_split(&split)?)
    }
}

thread_local! {
    /// Set by a [`TextSampleSource`] once it has sampled its split: how many lines the
    /// split is estimated to hold per line the sample passed on. `sort_by_key`'s
    /// sampling action scales the records it counted by it (it resets it first).
    pub(crate) static SOURCE_SCALE: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

/// `sort_by_key`'s sampling job over a `text_file` split, when only per-element
/// operations lie between the file and the sort: about `m` lines read at random
/// positions ([`text::sample_split`]) instead of the whole split; a split that should
/// be read whole (short, very long lines) is, and its count is then exact.
pub(crate) struct TextSampleSource;
impl Op for TextSampleSource {
    fn run(captures: &[u8], _: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let (split, m): (TextSplit, u64) = decode(captures)?;
        let m = usize::try_from(m).unwrap_or(usize::MAX).min(1 << 20);
        let p = with_task(|t| t.partition).unwrap_or(0);
        let seed = crate::shuffle::stable_hash(&(p, 0x5a3d_u32, split.start));
        match text::sample_split(&split, m, seed, text::SAMPLE_BY_POSITION_MIN)? {
            Some((lines, estimate)) => {
                let scale = estimate / lines.len().max(1) as f64;
                // Set when the sample is first pulled, after the action reset it.
                let mut lines = lines.into_iter();
                let mut told = false;
                ok::<String>(Partition::new(std::iter::from_fn(move || {
                    if !told {
                        SOURCE_SCALE.with(|c| c.set(Some(scale)));
                        told = true;
                    }
                    lines.next()
                })))
            }
            None => ok::<String>(text::read_split(&split)?),
        }
    }
}

// ---- narrow transformations ----

pub(crate) struct MapOp<F, T, U>(P<(F, T, U)>);
impl<F, T, U> Op for MapOp<F, T, U>
where
    F: Fn(T) -> U + Send + Sync + 'static,
    T: Data,
    U: Data,
{
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let it = single::<T>(inputs)?;
        ok::<U>(it.mapped(conjure::<F>()))
    }
}

pub(crate) struct MapWithOp<F, C, T, U>(P<(F, C, T, U)>);
impl<F, C, T, U> Op for MapWithOp<F, C, T, U>
where
    F: Fn(&C, T) -> U + Send + Sync + 'static,
    C: Data,
    T: Data,
    U: Data,
{
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let c: C = decode(captures)?;
        let it = single::<T>(inputs)?;
        let f = conjure::<F>();
        ok::<U>(it.mapped(move |x| f(&c, x)))
    }
}

pub(crate) struct FilterOp<F, T>(P<(F, T)>);
impl<F, T> Op for FilterOp<F, T>
where
    F: Fn(&T) -> bool + Send + Sync + 'static,
    T: Data,
{
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let it = single::<T>(inputs)?;
        ok::<T>(it.filtered(conjure::<F>()))
    }
}

pub(crate) struct FilterWithOp<F, C, T>(P<(F, C, T)>);
impl<F, C, T> Op for FilterWithOp<F, C, T>
where
    F: Fn(&C, &T) -> bool + Send + Sync + 'static,
    C: Data,
    T: Data,
{
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let c: C = decode(captures)?;
        let it = single::<T>(inputs)?;
        let f = conjure::<F>();
        ok::<T>(it.filtered(move |x| f(&c, x)))
    }
}

pub(crate) struct FlatMapOp<F, T, I>(P<(F, T, I)>);
impl<F, T, I> Op for FlatMapOp<F, T, I>
where
    F: Fn(T) -> I + Send + Sync + 'static,
    T: Data,
    I: IntoIterator + 'static,
    I::Item: Data,
    I::IntoIter: Send + 'static,
{
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let it = single::<T>(inputs)?;
        ok::<I::Item>(it.flat_mapped(conjure::<F>()))
    }
}

pub(crate) struct FlatMapWithOp<F, C, T, I>(P<(F, C, T, I)>);
impl<F, C, T, I> Op for FlatMapWithOp<F, C, T, I>
where
    F: Fn(&C, T) -> I + Send + Sync + 'static,
    C: Data,
    T: Data,
    I: IntoIterator + 'static,
    I::Item: Data,
    I::IntoIter: Send + 'static,
{
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let c: C = decode(captures)?;
        let it = single::<T>(inputs)?;
        let f = conjure::<F>();
        ok::<I::Item>(it.flat_mapped(move |x| f(&c, x)))
    }
}

pub(crate) struct MapPartitionsOp<F, T, I>(P<(F, T, I)>);
impl<F, T, I> Op for MapPartitionsOp<F, T, I>
where
    F: Fn(Partition<T>) -> I + Send + Sync + 'static,
    T: Data,
    I: IntoIterator + 'static,
    I::Item: Data,
    I::IntoIter: Send + 'static,
{
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let it = single::<T>(inputs)?;
        ok::<I::Item>(Partition::new(conjure::<F>()(it).into_iter()))
    }
}

pub(crate) struct MapPartitionsWithOp<F, C, T, I>(P<(F, C, T, I)>);
impl<F, C, T, I> Op for MapPartitionsWithOp<F, C, T, I>
where
    F: Fn(C, Partition<T>) -> I + Send + Sync + 'static,
    C: Data,
    T: Data,
    I: IntoIterator + 'static,
    I::Item: Data,
    I::IntoIter: Send + 'static,
{
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let c: C = decode(captures)?;
        let it = single::<T>(inputs)?;
        ok::<I::Item>(Partition::new(conjure::<F>()(c, it).into_iter()))
    }
}

pub(crate) struct KeyByOp<F, T, K>(P<(F, T, K)>);
impl<F, T, K> Op for KeyByOp<F, T, K>
where
    F: Fn(&T) -> K + Send + Sync + 'static,
    T: Data,
    K: Data,
{
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let it = single::<T>(inputs)?;
        let f = conjure::<F>();
        ok::<(K, T)>(it.mapped(move |x| (f(&x), x)))
    }
}

/// Several partitions one after the other (`coalesce`).
pub(crate) struct ConcatOp<T>(P<T>);
impl<T: Data> Op for ConcatOp<T> {
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let mut parts = Vec::with_capacity(inputs.len());
        for i in inputs {
            parts.push(unerase::<T>(i)?);
        }
        ok::<T>(Partition::concat(parts))
    }
}

// ---- the cache codec ----

/// Serializes a computed partition for the block cache.
pub(crate) struct CacheEncode<T>(P<T>);
impl<T: Data> Op for CacheEncode<T> {
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let v: Vec<T> = single::<T>(inputs)?.collect();
        ActionOutput::erase(encode(&v)?)
    }
}

/// Decodes a cached partition.
pub(crate) struct CacheDecode<T>(P<T>);
impl<T: Data> Op for CacheDecode<T> {
    fn run(captures: &[u8], _: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let v: Vec<T> = decode(captures)?;
        ok::<T>(Partition::new(v.into_iter()))
    }
}

// ---- actions, per partition ----

pub(crate) struct CollectAction<T>(P<T>);
impl<T: Data> Op for CollectAction<T> {
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let v: Vec<T> = action_input::<T>(inputs)?.collect_vec();
        ActionOutput::erase(encode(&v)?)
    }
}

pub(crate) struct CountAction<T>(P<T>);
impl<T: Data> Op for CountAction<T> {
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let n = action_input::<T>(inputs)?.count() as u64;
        ActionOutput::erase(encode(&n)?)
    }
}

pub(crate) struct ReduceAction<F, T>(P<(F, T)>);
impl<F, T> Op for ReduceAction<F, T>
where
    F: Fn(T, T) -> T + Send + Sync + 'static,
    T: Data,
{
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let r: Option<T> = action_input::<T>(inputs)?.reduce(conjure::<F>());
        ActionOutput::erase(encode(&r)?)
    }
}

pub(crate) struct FoldAction<F, T>(P<(F, T)>);
impl<F, T> Op for FoldAction<F, T>
where
    F: Fn(T, T) -> T + Send + Sync + 'static,
    T: Data,
{
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let zero: T = decode(captures)?;
        let r = action_input::<T>(inputs)?.fold(zero, conjure::<F>());
        ActionOutput::erase(encode(&r)?)
    }
}

pub(crate) struct TakeAction<T>(P<T>);
impl<T: Data> Op for TakeAction<T> {
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let n: u64 = decode(captures)?;
        let v: Vec<T> = action_input::<T>(inputs)?
            .take(usize::try_from(n).unwrap_or(usize::MAX))
            .collect();
        ActionOutput::erase(encode(&v)?)
    }
}

pub(crate) struct ForeachAction<F, T>(P<(F, T)>);
impl<F, T> Op for ForeachAction<F, T>
where
    F: Fn(T) + Send + Sync + 'static,
    T: Data,
{
    fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        action_input::<T>(inputs)?.for_each(conjure::<F>());
        ActionOutput::erase(Vec::new())
    }
}

pub(crate) struct ForeachWithAction<F, C, T>(P<(F, C, T)>);
impl<F, C, T> Op for ForeachWithAction<F, C, T>
where
    F: Fn(&C, T) + Send + Sync + 'static,
    C: Data,
    T: Data,
{
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let c: C = decode(captures)?;
        let f = conjure::<F>();
        action_input::<T>(inputs)?.for_each(|x| f(&c, x));
        ActionOutput::erase(Vec::new())
    }
}

/// The `n` smallest elements of a partition, in order.
pub(crate) struct TakeOrderedAction<T>(P<T>);
impl<T: Data + Ord> Op for TakeOrderedAction<T> {
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let n: u64 = decode(captures)?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let mut heap = BinaryHeap::new();
        if n > 0 {
            action_input::<T>(inputs)?.for_each(|x| {
                if heap.len() < n {
                    heap.push(x);
                } else if heap.peek().is_some_and(|top| x < *top) {
                    heap.pop();
                    heap.push(x);
                }
            });
        }
        ActionOutput::erase(encode(&heap.into_sorted_vec())?)
    }
}

/// Writes a partition's lines to a temporary file of this attempt under
/// `<dir>/_temporary`; the driver renames the first successful attempt's file into place.
pub(crate) struct SaveTextAction<T>(P<T>);
impl<T: Data + Display> Op for SaveTextAction<T> {
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
        let dir: String = decode(captures)?;
        let (partition, task_id) = with_task(|t| (t.partition, t.task_id))
            .ok_or_else(|| TaskError::Entry("save_as_text_file ran outside a task".into()))?;
        let tmp = text::temporary_part(&dir, partition, task_id);
        let io = |e: std::io::Error| TaskError::Io(format!("writing {}: {e}", tmp.display()));
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        action_input::<T>(inputs)?
            .try_each(|x| writeln!(w, "{x}"))
            .map_err(io)?;
        w.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        ActionOutput::erase(encode(&tmp.display().to_string())?)
    }
}

/// Decodes the driver's half of an action: one partition's output.
pub(crate) fn decode_output<R: DeserializeOwned>(bytes: &[u8]) -> crate::Result<R> {
    decode(bytes).map_err(|e| crate::Error::Serialization(e.to_string()))
}
