//! The in-memory buffer of a map task (or of a reduce-side aggregation) with spilling:
//! Spark's `ExternalSorter` / `ExternalAppendOnlyMap`. Records go into one buffer per
//! partition — without a combiner, encoded pages on the map side (`serial.rs`) or a
//! `Vec` ([`PlainBuffer`], reduce side); with one, a hash map merging values into
//! combiners — whose size is estimated as it grows; past the memory budget the buffer
//! is written to a spill run (each partition's records in output order, compressed
//! like blocks) and emptied. At the end each partition's records are merged from the
//! runs and what is left in memory:
//!
//! - no combiner, no ordering: concatenated;
//! - with an ordering: a k-way merge by key (equal keys combined when combining),
//!   the next head picked by a loser tree, compared by sort prefix first when there
//!   is one;
//! - combiner, no ordering: runs are sorted by a fixed hash of the key; the merge takes
//!   the records of the smallest hash from every run and combines equal keys.
//!
//! When [`MAX_RUNS`] runs exist they are merged into one, so however small the budget
//! the final merge opens at most that many files.
//!
//! **Size estimate.** A record costs `size_of::<(K, C)>()` (its slot, counting the
//! buffer's spare capacity) plus the postcard-encoded size of the record as an
//! estimate of what it owns on the heap (a `String` owns its length, a `Vec` its
//! elements). A combiner's growth under `merge_value` is extrapolated from exact
//! re-measurements of the whole buffer taken at doubling numbers of updates (Spark's
//! `SizeTracker`). The `String`-keyed table ([`StrCombineBuffer`]) counts its slots
//! and its key arena's capacity exactly, and its combiners as above. Not counted: allocator rounding and hash-map control bytes beyond
//! one per slot, the chunk being encoded (≤ 64 KiB raw), one decoded chunk per open
//! spill run during the merge, and the caller's own records in flight.

use std::any::{Any, TypeId};
use std::cmp::Ordering;
use std::fs::File;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;

use hashbrown::hash_table::{self, HashTable};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{BlockEncoder, ReadChunks, Records, WriteError};
use crate::error::ShuffleError;
use crate::serial::EncodedPart;
use crate::table::ProbeTable;

/// Map-side (or reduce-side) combining, as plain functions: Spark's `Aggregator`.
/// The merges take the combiner by value and return the merged one (the shape of a
/// user's `reduce_by_key` function), so a combiner needs no placeholder (`Option`) to
/// be moved out of its table slot.
pub struct Combiner<V, C> {
    /// Makes a combiner from a key's first value.
    pub create: fn(V) -> C,
    /// Merges another value of the key into its combiner.
    pub merge_value: fn(C, V) -> C,
    /// Merges two combiners of the same key.
    pub merge_combiners: fn(C, C) -> C,
}

impl<V, C> Clone for Combiner<V, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V, C> Copy for Combiner<V, C> {}

/// An ordering of keys (for `sort_by_key`): records within each partition come out
/// sorted by it.
pub type KeyOrdering<K> = fn(&K, &K) -> Ordering;

/// Postcard-encoded size of `v`: the estimate of what it owns.
pub(crate) fn heap_estimate<T: Serialize + ?Sized>(v: &T) -> u64 {
    postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
        v,
        postcard::ser_flavors::Size::default(),
    )
    .unwrap_or(0) as u64
}

/// The fixed key hash (foldhash with a fixed seed, the same in every process of one
/// binary): combine tables, the order of unordered combining runs and, through
/// [`hash_partition`], the hash partitioner all use it, so a key is hashed once.
/// Byte strings of up to seven bytes (a short `str`'s bytes) are fed to foldhash as
/// one integer, packed as a combine table's inline key is: one multiply fewer than
/// foldhash's byte path, per record.
#[inline]
pub fn key_hash<K: Hash + ?Sized>(k: &K) -> u64 {
    let mut h = KeyHasher(foldhash::fast::FixedState::with_seed(0x5eed_f11e).build_hasher());
    k.hash(&mut h);
    h.finish()
}

/// [`key_hash`] of a `String` (or `str`) `s` whose inline key is `inline`
/// (`inline_key(s.as_bytes())`), without packing the bytes again: what `str`'s `Hash`
/// feeds a hasher (its bytes, then `0xff`) with the bytes already packed.
#[inline]
pub(crate) fn str_key_hash(inline: Option<u64>, s: &str) -> u64 {
    match inline {
        Some(x) => {
            let mut h = foldhash::fast::FixedState::with_seed(0x5eed_f11e).build_hasher();
            h.write_u64(x);
            h.write_u8(0xff);
            h.finish()
        }
        None => key_hash(s),
    }
}

/// foldhash, with short byte strings packed into one `u64` (see [`key_hash`]).
struct KeyHasher<'a>(foldhash::fast::FoldHasher<'a>);

impl Hasher for KeyHasher<'_> {
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        match inline_key(bytes) {
            Some(x) => self.0.write_u64(x),
            None => self.0.write(bytes),
        }
    }
    #[inline(always)]
    fn write_u8(&mut self, i: u8) {
        self.0.write_u8(i)
    }
    #[inline(always)]
    fn write_u16(&mut self, i: u16) {
        self.0.write_u16(i)
    }
    #[inline(always)]
    fn write_u32(&mut self, i: u32) {
        self.0.write_u32(i)
    }
    #[inline(always)]
    fn write_u64(&mut self, i: u64) {
        self.0.write_u64(i)
    }
    #[inline(always)]
    fn write_u128(&mut self, i: u128) {
        self.0.write_u128(i)
    }
    #[inline(always)]
    fn write_usize(&mut self, i: usize) {
        self.0.write_usize(i)
    }
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// The reduce partition of a key whose [`key_hash`] is `hash`, out of `n` (at least 1):
/// bits 24–55 of the hash scaled to `0..n` (a multiply and a shift, not a division).
/// The bits that decide it are clear of the low bits a combine table indexes by and
/// of the top seven it tags slots with, so both stay spread within one partition.
#[inline]
pub fn hash_partition(hash: u64, n: u32) -> u32 {
    ((((hash >> 24) & 0xffff_ffff) * u64::from(n.max(1))) >> 32) as u32
}

#[inline]
pub(crate) fn fixed_hash<K: Hash>(k: &K) -> u64 {
    key_hash(k)
}

/// How records of a partition are ordered and merged.
pub(crate) struct MergeSpec<K, C> {
    pub(crate) ordering: Option<KeyOrdering<K>>,
    /// Set when combining: merges two combiners.
    pub(crate) merge: Option<fn(C, C) -> C>,
    /// Set when combining: key hash and equality for unordered merges.
    pub(crate) hash: Option<fn(&K) -> u64>,
    pub(crate) eq: Option<fn(&K, &K) -> bool>,
    /// With `ordering`: an integer prefix of each key consistent with it (a smaller
    /// prefix means an earlier key; equal prefixes say nothing), so that sorting
    /// compares integers and touches the keys only on ties (see [`sort_prefix`]).
    pub(crate) prefix: Option<fn(&K) -> u64>,
}

impl<K, C> Clone for MergeSpec<K, C> {
    fn clone(&self) -> Self {
        MergeSpec {
            ordering: self.ordering,
            merge: self.merge,
            hash: self.hash,
            eq: self.eq,
            prefix: self.prefix,
        }
    }
}

/// A record-holding buffer.
pub(crate) trait Buffer<K, V, C> {
    /// Adds `(k, v)` to partition `p`; `hash` is `key_hash(&k)` for combining buffers
    /// (others ignore it). True when the buffer is now to be spilled: its estimate is
    /// over `budget`, or an internal limit is reached (one dynamic call per record).
    fn insert(&mut self, p: u32, hash: u64, k: K, v: V, budget: u64) -> Result<bool, ShuffleError>;
    fn estimated_bytes(&self) -> u64;
    /// Partition `p`'s records, removed from the buffer: sorted by key when there is
    /// an ordering, else — when `for_merge` (a spill run, or memory merged with runs)
    /// — by key hash; otherwise in any order.
    fn take_partition(&mut self, p: u32, for_merge: bool) -> Result<Vec<(K, C)>, ShuffleError>;
    /// Partition `p`'s records still encoded, in [`take_partition`](Self::take_partition)'s
    /// order, when the buffer keeps them so (`SerialBuffer`); `None` from the others.
    fn take_encoded(
        &mut self,
        _p: u32,
        _for_merge: bool,
    ) -> Result<Option<EncodedPart>, ShuffleError> {
        Ok(None)
    }
    /// Drops everything and releases the memory (after a spill).
    fn reset(&mut self);
}

fn sort_records<K, C>(v: &mut Vec<(K, C)>, spec: &MergeSpec<K, C>, for_merge: bool) {
    if let Some(cmp) = spec.ordering {
        match spec.prefix {
            Some(prefix) if v.len() > 32 && v.len() <= u32::MAX as usize => {
                prefix_sort(v, cmp, prefix)
            }
            _ => v.sort_by(|a, b| cmp(&a.0, &b.0)),
        }
    } else if let (Some(h), true) = (spec.hash, for_merge) {
        v.sort_by_cached_key(|r| h(&r.0));
    }
}

/// Sorts `v` by `cmp` (stably) through `(prefix, index)` pairs: 16-byte pairs move
/// instead of records, integers are compared instead of keys, and each record moves
/// once, into its place. Spark's prefix sort, for the map side of `sort_by_key`.
fn prefix_sort<K, C>(v: &mut Vec<(K, C)>, cmp: KeyOrdering<K>, prefix: fn(&K) -> u64) {
    let mut order: Vec<(u64, u32)> = v
        .iter()
        .enumerate()
        .map(|(i, r)| (prefix(&r.0), i as u32))
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| cmp(&v[a.1 as usize].0, &v[b.1 as usize].0))
            .then(a.1.cmp(&b.1))
    });
    let mut slots: Vec<Option<(K, C)>> = std::mem::take(v).into_iter().map(Some).collect();
    v.reserve_exact(slots.len());
    for (_, i) in order {
        // Each index occurs once in `order`, so every slot is still full here.
        if let Some(r) = slots[i as usize].take() {
            v.push(r);
        }
    }
}

/// A key's bytes when `K` is `Vec<u8>` or `String` (whose orders are those of their
/// bytes).
fn key_bytes<K: 'static>(k: &K) -> &[u8] {
    let any = k as &dyn Any;
    if let Some(b) = any.downcast_ref::<Vec<u8>>() {
        b
    } else if let Some(s) = any.downcast_ref::<String>() {
        s.as_bytes()
    } else {
        &[]
    }
}

fn bytes_prefix<K: 'static>(k: &K) -> u64 {
    prefix_of_bytes(key_bytes(k))
}

/// The first 8 bytes of `b` big-endian, zero-padded. (Loaded as one integer when
/// there are 8: a copy of a variable length would call `memcpy` for every key.)
#[inline]
pub(crate) fn prefix_of_bytes(b: &[u8]) -> u64 {
    match b.first_chunk::<8>() {
        Some(head) => u64::from_be_bytes(*head),
        None => b
            .iter()
            .enumerate()
            .fold(0, |p, (i, &x)| p | (u64::from(x) << (56 - 8 * i))),
    }
}

fn bytes_prefix_desc<K: 'static>(k: &K) -> u64 {
    !bytes_prefix(k)
}

/// A key's order-preserving integer image for the integer key types.
fn int_prefix<K: 'static>(k: &K) -> u64 {
    let any = k as &dyn Any;
    if let Some(x) = any.downcast_ref::<u64>() {
        *x
    } else if let Some(x) = any.downcast_ref::<i64>() {
        (*x as u64) ^ (1 << 63)
    } else if let Some(x) = any.downcast_ref::<u32>() {
        u64::from(*x)
    } else if let Some(x) = any.downcast_ref::<i32>() {
        (i64::from(*x) as u64) ^ (1 << 63)
    } else if let Some(x) = any.downcast_ref::<usize>() {
        *x as u64
    } else {
        0
    }
}

fn int_prefix_desc<K: 'static>(k: &K) -> u64 {
    !int_prefix(k)
}

/// The sort prefix for keys of type `K` in their natural order (`ascending`) or its
/// reverse, when `K` is one the shuffle knows (`Vec<u8>`, `String`, `u64`, `i64`,
/// `u32`, `i32`, `usize`): the first 8 bytes big-endian (zero-padded) for byte strings,
/// the value itself (sign bit flipped) for integers; inverted for a descending order.
/// For other types, `None` (records are then sorted by comparing keys).
pub fn sort_prefix<K: 'static>(ascending: bool) -> Option<fn(&K) -> u64> {
    let t = TypeId::of::<K>();
    let bytes = t == TypeId::of::<Vec<u8>>() || t == TypeId::of::<String>();
    let int = [
        TypeId::of::<u64>(),
        TypeId::of::<i64>(),
        TypeId::of::<u32>(),
        TypeId::of::<i32>(),
        TypeId::of::<usize>(),
    ]
    .contains(&t);
    match (bytes, int, ascending) {
        (true, _, true) => Some(bytes_prefix::<K>),
        (true, _, false) => Some(bytes_prefix_desc::<K>),
        (_, true, true) => Some(int_prefix::<K>),
        (_, true, false) => Some(int_prefix_desc::<K>),
        _ => None,
    }
}

/// Records without combining.
pub(crate) struct PlainBuffer<K, V, C> {
    parts: Vec<Vec<(K, C)>>,
    create: fn(V) -> C,
    spec: MergeSpec<K, C>,
    slots: u64,
    heap: u64,
}

impl<K, V, C> PlainBuffer<K, V, C> {
    pub(crate) fn new(partitions: u32, create: fn(V) -> C, spec: MergeSpec<K, C>) -> Self {
        PlainBuffer {
            parts: (0..partitions).map(|_| Vec::new()).collect(),
            create,
            spec,
            slots: 0,
            heap: 0,
        }
    }
}

impl<K: Serialize, V, C: Serialize> Buffer<K, V, C> for PlainBuffer<K, V, C> {
    fn insert(
        &mut self,
        p: u32,
        _hash: u64,
        k: K,
        v: V,
        budget: u64,
    ) -> Result<bool, ShuffleError> {
        let c = (self.create)(v);
        self.heap += heap_estimate(&k) + heap_estimate(&c);
        let part = &mut self.parts[p as usize];
        let before = part.capacity();
        part.push((k, c));
        self.slots += (part.capacity() - before) as u64;
        Ok(self.estimated_bytes() > budget)
    }

    fn estimated_bytes(&self) -> u64 {
        self.slots * std::mem::size_of::<(K, C)>() as u64 + self.heap
    }

    fn take_partition(&mut self, p: u32, for_merge: bool) -> Result<Vec<(K, C)>, ShuffleError> {
        let mut v = std::mem::take(&mut self.parts[p as usize]);
        sort_records(&mut v, &self.spec, for_merge);
        Ok(v)
    }

    fn reset(&mut self) {
        for p in &mut self.parts {
            *p = Vec::new();
        }
        self.slots = 0;
        self.heap = 0;
    }
}

/// The heap a combining buffer's combiners (and generic keys) own: exact at new keys,
/// extrapolated under merges from exact re-measurements at doubling numbers of merges
/// (Spark's `SizeTracker`).
#[derive(Default)]
struct SizeTracker {
    heap: u64,
    /// Merges since the last exact measurement, and when the next one is due.
    updates: u64,
    next_sample: u64,
    /// Heap bytes per merge, from the last two measurements.
    rate: f64,
    /// Extrapolated growth not yet added to `heap` (under one byte).
    growth: f64,
}

impl SizeTracker {
    fn new() -> Self {
        SizeTracker {
            next_sample: 64,
            ..SizeTracker::default()
        }
    }

    /// Counts one merge; true when an exact measurement is due.
    fn merged(&mut self) -> bool {
        self.merged_grew().1
    }

    /// [`merged`](Self::merged), also saying whether the extrapolated heap grew (the
    /// buffer's estimate changed): `(grew, measurement due)`.
    #[inline]
    fn merged_grew(&mut self) -> (bool, bool) {
        self.updates += 1;
        self.growth += self.rate;
        let grew = self.growth >= 1.0;
        if grew {
            let g = self.growth as u64;
            self.heap += g;
            self.growth -= g as f64;
        }
        (grew, self.updates >= self.next_sample)
    }

    /// Takes an exact measurement of the heap.
    fn measured(&mut self, exact: u64) {
        // Growth by merges alone since the last sample: what new keys brought is in
        // `heap` already, so compare the exact figure with the extrapolation.
        let extrapolated = self.heap;
        let by_merges = exact as f64 - (extrapolated as f64 - self.rate * self.updates as f64);
        self.rate = (by_merges / self.updates.max(1) as f64).max(0.0);
        self.heap = exact;
        self.next_sample = self.updates.max(64) * 2;
        self.updates = 0;
    }

    fn reset(&mut self) {
        self.heap = 0;
        self.updates = 0;
        self.next_sample = 64;
        self.growth = 0.0;
    }
}

/// `*slot = merge(*slot, v)` in place, the combiner moved out for the call.
///
/// The caller sets its `poisoned` flag before and clears it after: if `merge` panics,
/// `*slot` holds a value already moved out (dropped by the unwinding), the flag stays
/// set, and the buffer never reads or drops its slots again (it leaks them).
///
/// # Safety
/// After a panic out of this call `*slot` must never be read or dropped.
unsafe fn merge_in_place<C, V>(slot: &mut C, v: V, merge: fn(C, V) -> C) {
    // SAFETY: `slot` is valid for reads and writes; the value read is written back
    // (merged) before anything can see the slot again, except after a panic, which
    // the caller's contract covers.
    unsafe {
        let old = std::ptr::read(slot);
        std::ptr::write(slot, merge(old, v));
    }
}

fn poisoned_error() -> ShuffleError {
    ShuffleError::Invalid(
        "a combine function panicked earlier; this buffer's records are lost".into(),
    )
}

/// The combining buffer for keys `K` (and combiners `C`): [`StrCombineBuffer`] when
/// `K` is `String` (the word-count shape), else [`CombineBuffer`].
pub(crate) fn combine_buffer<'a, K, V, C>(
    partitions: u32,
    combiner: Combiner<V, C>,
    spec: MergeSpec<K, C>,
) -> Buf<'a, K, V, C>
where
    K: Serialize + Hash + Eq + Send + 'static,
    V: Send + 'a,
    C: Serialize + Send + 'a,
{
    if TypeId::of::<K>() == TypeId::of::<String>() {
        Buf::Str(Box::new(StrCombineBuffer::new(partitions, combiner, spec)))
    } else {
        Buf::Dyn(Box::new(CombineBuffer::new(partitions, combiner, spec)))
    }
}

/// A sorter's buffer: the `String`-keyed combine buffer held as itself, so that the
/// writer's per-record path ([`Sorter::insert_str`]) reaches it without a dynamic call,
/// or any buffer behind [`Buffer`].
pub(crate) enum Buf<'a, K, V, C> {
    Str(Box<StrCombineBuffer<K, V, C>>),
    Dyn(Box<dyn Buffer<K, V, C> + Send + 'a>),
}

impl<K: 'static, V, C: Serialize> Buf<'_, K, V, C> {
    /// The buffer behind its trait.
    #[inline]
    fn get(&mut self) -> &mut dyn Buffer<K, V, C> {
        match self {
            Buf::Str(b) => &mut **b,
            Buf::Dyn(b) => &mut **b,
        }
    }

    fn get_ref(&self) -> &dyn Buffer<K, V, C> {
        match self {
            Buf::Str(b) => &**b,
            Buf::Dyn(b) => &**b,
        }
    }
}

impl<'a, K, V, C> From<Box<dyn Buffer<K, V, C> + Send + 'a>> for Buf<'a, K, V, C> {
    fn from(b: Box<dyn Buffer<K, V, C> + Send + 'a>) -> Self {
        Buf::Dyn(b)
    }
}

/// Records combined per key: per partition a table of `(key, combiner)`. The key's
/// hash is computed once by the caller (and shared with the partitioner); the table
/// rehashes keys only when it grows.
pub(crate) struct CombineBuffer<K, V, C> {
    parts: Vec<HashTable<(K, C)>>,
    combiner: Combiner<V, C>,
    spec: MergeSpec<K, C>,
    slots: u64,
    size: SizeTracker,
    /// A merge panicked with a combiner moved out of its slot (see
    /// [`merge_in_place`]): the tables are leaked, never read again.
    poisoned: bool,
}

impl<K, V, C> CombineBuffer<K, V, C> {
    pub(crate) fn new(partitions: u32, combiner: Combiner<V, C>, spec: MergeSpec<K, C>) -> Self {
        CombineBuffer {
            parts: (0..partitions).map(|_| HashTable::new()).collect(),
            combiner,
            spec,
            slots: 0,
            size: SizeTracker::new(),
            poisoned: false,
        }
    }
}

impl<K, V, C> Drop for CombineBuffer<K, V, C> {
    fn drop(&mut self) {
        if self.poisoned {
            for t in self.parts.drain(..) {
                std::mem::forget(t);
            }
        }
    }
}

impl<K: Serialize + Hash + Eq, V, C: Serialize> Buffer<K, V, C> for CombineBuffer<K, V, C> {
    fn insert(&mut self, p: u32, hash: u64, k: K, v: V, budget: u64) -> Result<bool, ShuffleError> {
        if self.poisoned {
            return Err(poisoned_error());
        }
        let map = &mut self.parts[p as usize];
        let before = map.capacity();
        match map.entry(hash, |e| e.0 == k, |e| key_hash(&e.0)) {
            hash_table::Entry::Occupied(mut e) => {
                self.poisoned = true;
                // SAFETY: `poisoned` is set while the combiner is out of its slot and
                // stays set if the merge panics; every method checks it first.
                unsafe { merge_in_place(&mut e.get_mut().1, v, self.combiner.merge_value) };
                self.poisoned = false;
                if self.size.merged() {
                    let exact = self
                        .parts
                        .iter()
                        .flat_map(|m| m.iter())
                        .map(|(k, c)| heap_estimate(k) + heap_estimate(c))
                        .sum();
                    self.size.measured(exact);
                }
            }
            hash_table::Entry::Vacant(e) => {
                let c = (self.combiner.create)(v);
                self.size.heap += heap_estimate(&k) + heap_estimate(&c);
                e.insert((k, c));
            }
        }
        // The table grows (when full) on any lookup, a hit too.
        let after = self.parts[p as usize].capacity();
        self.slots += after.saturating_sub(before) as u64;
        Ok(self.estimated_bytes() > budget)
    }

    fn estimated_bytes(&self) -> u64 {
        self.slots * (std::mem::size_of::<(K, C)>() as u64 + 1) + self.size.heap
    }

    fn take_partition(&mut self, p: u32, for_merge: bool) -> Result<Vec<(K, C)>, ShuffleError> {
        if self.poisoned {
            return Err(poisoned_error());
        }
        let map = std::mem::take(&mut self.parts[p as usize]);
        let mut v: Vec<(K, C)> = map.into_iter().collect();
        sort_records(&mut v, &self.spec, for_merge);
        Ok(v)
    }

    fn reset(&mut self) {
        if self.poisoned {
            return;
        }
        for m in &mut self.parts {
            *m = HashTable::new();
        }
        self.slots = 0;
        self.size.reset();
    }
}

// A `String` key as its table stores it (a `u64`): either the key itself — up to
// seven bytes, in the low bytes (little-endian), its length in the top byte — or, for
// longer keys, `LONG_KEY` plus the key's offset in its partition's arena, where the
// key is stored as a `u32` LE length and its bytes. Never `table::EMPTY` (whose top
// byte is 0xff).

/// Tags a stored key as an arena offset (an inline key's top byte is at most 7).
const LONG_KEY: u64 = 0x80 << 56;
/// The longest key kept inline in its slot.
const INLINE_KEY: usize = 7;

/// `b` as an inline stored key, when it is short enough. Built from (possibly
/// overlapping) loads of whole words rather than a byte copy: this runs once per
/// record.
#[inline]
pub(crate) fn inline_key(b: &[u8]) -> Option<u64> {
    let n = b.len();
    if n > INLINE_KEY {
        return None;
    }
    let mut x = (n as u64) << 56;
    if n >= 4 {
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
        x |= u64::from(lo) | (u64::from(hi) << ((n - 4) * 8));
    } else if n > 0 {
        x |= u64::from(b[0])
            | (u64::from(b[n / 2]) << (n / 2 * 8))
            | (u64::from(b[n - 1]) << ((n - 1) * 8));
    }
    Some(x)
}

/// Calls `f` with the bytes of the key in `key` (inline or in `arena`).
#[inline]
fn with_key_bytes<R>(arena: &[u8], key: u64, f: impl FnOnce(&[u8]) -> R) -> R {
    if key & LONG_KEY != 0 {
        let off = (key as u32) as usize;
        let mut len = [0u8; 4];
        len.copy_from_slice(&arena[off..off + 4]);
        let len = u32::from_le_bytes(len) as usize;
        f(&arena[off + 4..off + 4 + len])
    } else {
        let len = (key >> 56) as usize;
        f(&key.to_le_bytes()[..len])
    }
}

/// One partition of a [`StrCombineBuffer`].
struct StrPart<C> {
    table: ProbeTable<C>,
    /// Keys longer than [`INLINE_KEY`], each a `u32` LE length and the bytes.
    arena: Vec<u8>,
}

impl<C> StrPart<C> {
    fn new() -> Self {
        StrPart {
            table: ProbeTable::new(),
            arena: Vec::new(),
        }
    }
}

/// An arena holds at most this many bytes before the buffer asks to be spilled (its
/// offsets are `u32`).
const ARENA_SPILL: usize = (u32::MAX / 2) as usize;

/// [`CombineBuffer`] for `String` keys (`K` is `String`, checked at run time). A slot
/// is `(key: u64, combiner)` — 16 bytes with a `u64` combiner, instead of 32 plus a
/// heap allocation per distinct key: a key of up to seven bytes is kept in the slot
/// itself and compared as one integer, a longer one is copied into a per-partition
/// arena. A map task's table so stays small and contiguous (about 1 MiB for a
/// 50,000-word vocabulary: in a core's L2), and a lookup touches the slot, not a
/// separately allocated `String`. The caller's key is dropped once looked up; keys are
/// rebuilt as `String`s when the buffer is taken.
pub(crate) struct StrCombineBuffer<K, V, C> {
    parts: Vec<StrPart<C>>,
    combiner: Combiner<V, C>,
    spec: MergeSpec<K, C>,
    /// Table slots and arena bytes allocated.
    slots: u64,
    arena_bytes: u64,
    /// An arena passed [`ARENA_SPILL`].
    full: bool,
    /// The combiners' heap (keys are counted as arena bytes).
    size: SizeTracker,
    /// As [`CombineBuffer::poisoned`].
    poisoned: bool,
}

/// `key_hash` of the `String` whose bytes are `b` (valid UTF-8: they were a `String`).
fn str_hash(b: &[u8]) -> u64 {
    match std::str::from_utf8(b) {
        Ok(s) => key_hash(s),
        Err(_) => key_hash(b),
    }
}

/// `s` as a `K` that is `String`.
fn string_as_key<K: 'static>(s: String) -> Option<K> {
    let mut out: Option<K> = None;
    if let Some(slot) = (&mut out as &mut dyn Any).downcast_mut::<Option<String>>() {
        *slot = Some(s);
    }
    out
}

fn not_a_string<K>() -> ShuffleError {
    ShuffleError::Invalid(format!(
        "a String-keyed combine buffer was given keys of {}",
        std::any::type_name::<K>()
    ))
}

impl<K, V, C> StrCombineBuffer<K, V, C> {
    fn new(partitions: u32, combiner: Combiner<V, C>, spec: MergeSpec<K, C>) -> Self {
        StrCombineBuffer {
            parts: (0..partitions).map(|_| StrPart::new()).collect(),
            combiner,
            spec,
            slots: 0,
            arena_bytes: 0,
            full: false,
            size: SizeTracker::new(),
            poisoned: false,
        }
    }
}

impl<K, V, C> Drop for StrCombineBuffer<K, V, C> {
    fn drop(&mut self) {
        if self.poisoned {
            for t in self.parts.drain(..) {
                t.table.leak();
            }
        }
    }
}

impl<K: 'static, V, C: Serialize> StrCombineBuffer<K, V, C> {
    /// Adds a value for the key whose bytes are `key` (`inline` is `inline_key(key)`,
    /// `hash` its `key_hash`) to partition `p`; as [`Buffer::insert`], except that the
    /// budget is compared only when the estimate changed (a new key, a measurement, or
    /// extrapolated growth): a merge that changes nothing needs no check.
    #[inline]
    pub(crate) fn insert_bytes(
        &mut self,
        p: u32,
        hash: u64,
        inline: Option<u64>,
        key: &[u8],
        v: V,
        budget: u64,
    ) -> Result<bool, ShuffleError> {
        if self.poisoned {
            return Err(poisoned_error());
        }
        let Some(part) = self.parts.get_mut(p as usize) else {
            return Err(ShuffleError::Invalid(format!(
                "partition {p} is out of this combine buffer's {}",
                self.parts.len()
            )));
        };
        let arena = &part.arena;
        let before = part.table.capacity();
        let found = match inline {
            Some(x) => part.table.find(hash, |k| k == x),
            None => part.table.find(hash, |k| {
                k & LONG_KEY != 0 && with_key_bytes(arena, k, |b| b == key)
            }),
        };
        match found {
            Ok(i) => {
                let Some(slot) = part.table.combiner_mut(i) else {
                    return Err(ShuffleError::Invalid("a combine table lost a slot".into()));
                };
                self.poisoned = true;
                // SAFETY: as in `CombineBuffer::insert`.
                unsafe { merge_in_place(slot, v, self.combiner.merge_value) };
                self.poisoned = false;
                let (grew, due) = self.size.merged_grew();
                if due {
                    let exact = self
                        .parts
                        .iter()
                        .flat_map(|m| m.table.iter())
                        .map(|(_, c)| heap_estimate(c))
                        .sum();
                    self.size.measured(exact);
                }
                if !(grew || due) {
                    // A hit never grows the table: nothing changed the estimate.
                    return Ok(self.full);
                }
            }
            Err(()) => {
                let slot_key = match inline {
                    Some(x) => x,
                    None => {
                        let off = u32::try_from(part.arena.len()).ok();
                        let len = u32::try_from(key.len()).ok();
                        let (Some(off), Some(len)) = (off, len) else {
                            return Err(ShuffleError::Invalid(format!(
                                "a combine buffer's keys passed 4 GiB in one partition \
                                 (a key of {} bytes)",
                                key.len()
                            )));
                        };
                        let cap = part.arena.capacity();
                        part.arena.extend_from_slice(&len.to_le_bytes());
                        part.arena.extend_from_slice(key);
                        self.arena_bytes += (part.arena.capacity() - cap) as u64;
                        self.full |= part.arena.len() > ARENA_SPILL;
                        LONG_KEY | u64::from(off)
                    }
                };
                let c = (self.combiner.create)(v);
                self.size.heap += heap_estimate(&c);
                let arena = &part.arena;
                part.table
                    .insert(hash, slot_key, c, |k| with_key_bytes(arena, k, str_hash));
            }
        }
        // The table grows (when full) on an insert.
        let after = part_capacity(&self.parts, p);
        self.slots += after.saturating_sub(before) as u64;
        Ok(self.full || self.estimated_bytes() > budget)
    }
}

/// Slots of partition `p`'s table (0 for a partition out of range).
#[inline]
fn part_capacity<C>(parts: &[StrPart<C>], p: u32) -> usize {
    parts.get(p as usize).map_or(0, |t| t.table.capacity())
}

impl<K: 'static, V, C: Serialize> Buffer<K, V, C> for StrCombineBuffer<K, V, C> {
    fn insert(&mut self, p: u32, hash: u64, k: K, v: V, budget: u64) -> Result<bool, ShuffleError> {
        let Some(key) = (&k as &dyn Any).downcast_ref::<String>() else {
            return Err(not_a_string::<K>());
        };
        let key = key.as_bytes();
        self.insert_bytes(p, hash, inline_key(key), key, v, budget)
    }

    fn estimated_bytes(&self) -> u64 {
        self.slots * std::mem::size_of::<(u64, C)>() as u64 + self.arena_bytes + self.size.heap
    }

    fn take_partition(&mut self, p: u32, for_merge: bool) -> Result<Vec<(K, C)>, ShuffleError> {
        if self.poisoned {
            return Err(poisoned_error());
        }
        let mut part = std::mem::replace(&mut self.parts[p as usize], StrPart::new());
        let arena = std::mem::take(&mut part.arena);
        let mut slots: Vec<(u64, C)> = part.table.drain();
        if self.spec.ordering.is_none() && self.spec.hash.is_some() && for_merge {
            slots.sort_by_cached_key(|s| with_key_bytes(&arena, s.0, str_hash));
        }
        let mut out = Vec::with_capacity(slots.len());
        for (k, c) in slots {
            let key = with_key_bytes(&arena, k, |b| String::from_utf8(b.to_vec()))
                .map_err(|_| ShuffleError::Invalid("a combine buffer's key is not UTF-8".into()))?;
            let key = string_as_key::<K>(key).ok_or_else(not_a_string::<K>)?;
            out.push((key, c));
        }
        if let Some(cmp) = self.spec.ordering {
            out.sort_by(|a, b| cmp(&a.0, &b.0));
        }
        Ok(out)
    }

    fn reset(&mut self) {
        if self.poisoned {
            return;
        }
        for p in &mut self.parts {
            *p = StrPart::new();
        }
        self.slots = 0;
        self.arena_bytes = 0;
        self.full = false;
        self.size.reset();
    }
}

/// Most spill runs kept before they are merged into one.
pub(crate) const MAX_RUNS: usize = 32;

/// One spill run: a file of per-partition segments.
struct Spill {
    path: PathBuf,
    /// (offset, length) per partition.
    segments: Vec<(u64, u64)>,
}

/// Removes the files it holds when dropped: temporary and spill files never outlive
/// their writer, whatever ends it.
#[derive(Default)]
pub(crate) struct TempFiles(pub(crate) Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A stream of records (one partition's, in output order), failing with the first
/// error.
pub type RecordIter<'a, K, C> = Box<dyn Iterator<Item = Result<(K, C), ShuffleError>> + Send + 'a>;

/// Buffer plus spill runs.
pub(crate) struct Sorter<'a, K, V, C> {
    partitions: u32,
    buffer: Buf<'a, K, V, C>,
    spec: MergeSpec<K, C>,
    spills: Vec<Spill>,
    spill_name: Box<dyn FnMut(usize) -> PathBuf + Send + 'a>,
    budget: u64,
    compress: bool,
    file_buffer: usize,
    pub(crate) bytes_spilled: u64,
    pub(crate) peak_estimate: u64,
    spill_seq: usize,
    spill_count: u32,
    /// Times the runs were merged into one (see [`MAX_RUNS`]).
    pub(crate) compactions: u32,
    pub(crate) temps: TempFiles,
}

impl<'a, K, V, C> Sorter<'a, K, V, C>
where
    K: Serialize + DeserializeOwned + Send + 'static,
    C: Serialize + DeserializeOwned + Send + 'static,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        partitions: u32,
        buffer: Buf<'a, K, V, C>,
        spec: MergeSpec<K, C>,
        spill_name: Box<dyn FnMut(usize) -> PathBuf + Send + 'a>,
        budget: u64,
        compress: bool,
        file_buffer: usize,
    ) -> Self {
        Sorter {
            partitions,
            buffer,
            spec,
            spills: Vec::new(),
            spill_name,
            budget,
            compress,
            file_buffer,
            bytes_spilled: 0,
            peak_estimate: 0,
            spill_seq: 0,
            spill_count: 0,
            compactions: 0,
            temps: TempFiles::default(),
        }
    }

    /// Spills so far (each time the buffer went to disk).
    pub(crate) fn spill_count(&self) -> u32 {
        self.spill_count
    }

    /// Adds a record to partition `p`, spilling when over budget.
    /// `hash` is `key_hash(&k)` when the buffer combines (else ignored).
    pub(crate) fn insert(&mut self, p: u32, hash: u64, k: K, v: V) -> Result<(), ShuffleError> {
        if self.buffer.get().insert(p, hash, k, v, self.budget)? {
            self.spill_full()?;
        }
        Ok(())
    }

    /// Whether the buffer is the `String`-keyed combine buffer ([`insert_str`]
    /// applies).
    ///
    /// [`insert_str`]: Self::insert_str
    pub(crate) fn is_str(&self) -> bool {
        matches!(self.buffer, Buf::Str(_))
    }

    /// [`insert`](Self::insert) for the `String`-keyed combine buffer, given the key's
    /// bytes (`inline` is `inline_key(key)`, `hash` its `key_hash`): no dynamic call and
    /// no `String` handed over. A buffer of another kind refuses it.
    #[inline]
    pub(crate) fn insert_str(
        &mut self,
        p: u32,
        hash: u64,
        inline: Option<u64>,
        key: &[u8],
        v: V,
    ) -> Result<(), ShuffleError> {
        let Buf::Str(b) = &mut self.buffer else {
            return Err(ShuffleError::Invalid(
                "a String-key insert reached a buffer that is not String-keyed".into(),
            ));
        };
        if b.insert_bytes(p, hash, inline, key, v, self.budget)? {
            self.spill_full()?;
        }
        Ok(())
    }

    #[cold]
    fn spill_full(&mut self) -> Result<(), ShuffleError> {
        let est = self.buffer.get_ref().estimated_bytes();
        self.peak_estimate = self.peak_estimate.max(est);
        self.spill()
    }

    /// The buffer's current size estimate.
    pub(crate) fn estimated_bytes(&self) -> u64 {
        self.buffer.get_ref().estimated_bytes()
    }

    fn spill(&mut self) -> Result<(), ShuffleError> {
        let path = (self.spill_name)(self.spill_seq);
        self.spill_seq += 1;
        let file = File::create(&path).map_err(|e| ShuffleError::io(&path, "create", e))?;
        self.temps.0.push(path.clone());
        let mut out = BufWriter::with_capacity(self.file_buffer, file);
        let mut enc = BlockEncoder::new(self.compress);
        let mut segments = Vec::with_capacity(self.partitions as usize);
        let mut offset = 0u64;
        for p in 0..self.partitions {
            if let Some(part) = self.buffer.get().take_encoded(p, true)? {
                enc.write_encoded(&mut out, &part)
                    .map_err(|e| write_error(&path, e))?;
                let meta = enc.finish();
                segments.push((offset, meta.len));
                offset += meta.len;
                continue;
            }
            let recs = self.buffer.get().take_partition(p, true)?;
            let mut at = 0;
            while at < recs.len() {
                let end = (at + enc.batch).min(recs.len());
                enc.write_batch(&mut out, &recs[at..end])
                    .map_err(|e| write_error(&path, e))?;
                at = end;
            }
            let meta = enc.finish();
            segments.push((offset, meta.len));
            offset += meta.len;
        }
        out.flush()
            .map_err(|e| ShuffleError::io(&path, "write", e))?;
        self.buffer.get().reset();
        self.bytes_spilled += offset;
        tracing::debug!(path = %path.display(), bytes = offset, "spilled");
        self.spills.push(Spill { path, segments });
        self.spill_count += 1;
        if self.spills.len() >= MAX_RUNS {
            self.compact()?;
        }
        Ok(())
    }

    /// The records of spill run `s`'s segment for partition `p`.
    fn open_segment(
        &self,
        s: &Spill,
        p: u32,
    ) -> Result<Option<RecordIter<'a, K, C>>, ShuffleError> {
        let (off, len) = s.segments[p as usize];
        if len == 0 {
            return Ok(None);
        }
        let mut f = File::open(&s.path).map_err(|e| ShuffleError::io(&s.path, "open", e))?;
        f.seek(SeekFrom::Start(off))
            .map_err(|e| ShuffleError::io(&s.path, "seek", e))?;
        let reader = BufReader::with_capacity(self.file_buffer, f);
        let mut recs = Records::<_, K, C>::new(ReadChunks::new(reader, len));
        let path = s.path.clone();
        Ok(Some(Box::new(std::iter::from_fn(move || {
            recs.next_record().map(|r| {
                r.map_err(|e| ShuffleError::Io {
                    path: path.clone(),
                    op: "read spill run",
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })
            })
        }))))
    }

    /// Merges every spill run into one, so that the final merge never holds more
    /// than [`MAX_RUNS`] files open (and their buffers) however small the budget.
    fn compact(&mut self) -> Result<(), ShuffleError> {
        let path = (self.spill_name)(self.spill_seq);
        self.spill_seq += 1;
        let file = File::create(&path).map_err(|e| ShuffleError::io(&path, "create", e))?;
        self.temps.0.push(path.clone());
        let mut out = BufWriter::with_capacity(self.file_buffer, file);
        let mut enc = BlockEncoder::new(self.compress);
        let mut segments = Vec::with_capacity(self.partitions as usize);
        let mut offset = 0u64;
        let mut batch = Vec::new();
        for p in 0..self.partitions {
            let mut runs = Vec::with_capacity(self.spills.len());
            for s in &self.spills {
                if let Some(r) = self.open_segment(s, p)? {
                    runs.push(r);
                }
            }
            for r in merge_runs(runs, self.spec.clone()) {
                batch.push(r?);
                if batch.len() >= enc.batch {
                    enc.write_batch(&mut out, &batch)
                        .map_err(|e| write_error(&path, e))?;
                    batch.clear();
                }
            }
            enc.write_batch(&mut out, &batch)
                .map_err(|e| write_error(&path, e))?;
            batch.clear();
            let meta = enc.finish();
            segments.push((offset, meta.len));
            offset += meta.len;
        }
        out.flush()
            .map_err(|e| ShuffleError::io(&path, "write", e))?;
        for s in self.spills.drain(..) {
            let _ = std::fs::remove_file(&s.path);
            self.temps.0.retain(|t| t != &s.path);
        }
        self.bytes_spilled += offset;
        self.spills.push(Spill { path, segments });
        self.compactions += 1;
        Ok(())
    }

    /// Partition `p`'s records in output order, merged from the spill runs and memory.
    pub(crate) fn partition(&mut self, p: u32) -> Result<RecordIter<'a, K, C>, ShuffleError> {
        Ok(match self.partition_out(p)? {
            PartitionOut::Encoded(part) => Box::new(part.into_records()),
            PartitionOut::Records(r) => r,
        })
    }

    /// Partition `p`'s records in output order: still encoded when they are all in a
    /// buffer that keeps them so (nothing spilled), else merged from the spill runs and
    /// memory.
    pub(crate) fn partition_out(&mut self, p: u32) -> Result<PartitionOut<'a, K, C>, ShuffleError> {
        let merging = !self.spills.is_empty();
        let mem: RecordIter<'a, K, C> = match self.buffer.get().take_encoded(p, merging)? {
            Some(part) if !merging => return Ok(PartitionOut::Encoded(part)),
            Some(part) => Box::new(part.into_records()),
            None => {
                let mem = self.buffer.get().take_partition(p, merging)?;
                Box::new(mem.into_iter().map(Ok))
            }
        };
        if !merging {
            return Ok(PartitionOut::Records(mem));
        }
        let mut runs: Vec<RecordIter<'a, K, C>> = Vec::with_capacity(self.spills.len() + 1);
        for s in &self.spills {
            if let Some(r) = self.open_segment(s, p)? {
                runs.push(r);
            }
        }
        runs.push(mem);
        Ok(PartitionOut::Records(merge_runs(runs, self.spec.clone())))
    }
}

/// One partition's records as [`Sorter::partition_out`] gives them.
pub(crate) enum PartitionOut<'a, K, C> {
    /// Encoded, in output order: written by copying.
    Encoded(EncodedPart),
    /// Records, in output order.
    Records(RecordIter<'a, K, C>),
}

pub(crate) fn write_error(path: &std::path::Path, e: WriteError) -> ShuffleError {
    match e {
        WriteError::Io(e) => ShuffleError::io(path, "write", e),
        WriteError::Shuffle(e) => e,
    }
}

/// Merges runs that are each in the order `spec` gives.
pub(crate) fn merge_runs<'a, K: Send + 'a, C: Send + 'a>(
    mut runs: Vec<RecordIter<'a, K, C>>,
    spec: MergeSpec<K, C>,
) -> RecordIter<'a, K, C> {
    if spec.ordering.is_none() && spec.merge.is_none() {
        return Box::new(runs.into_iter().flatten());
    }
    if runs.len() == 1 && spec.merge.is_none() {
        return runs.pop().unwrap_or_else(|| Box::new(std::iter::empty()));
    }
    Box::new(Merger {
        heads: Vec::new(),
        tree: Vec::new(),
        runs,
        spec,
        started: false,
        pending: None,
        group: Vec::new(),
        failed: false,
    })
}

struct Merger<'a, K, C> {
    runs: Vec<RecordIter<'a, K, C>>,
    /// Current head of each run, with its hash when merging by hash.
    heads: Vec<Option<(u64, K, C)>>,
    /// A loser tree over the runs: `tree[0]` is the run whose head goes out next,
    /// `tree[n]` (n ≥ 1) the loser of the match at node `n`.
    tree: Vec<usize>,
    spec: MergeSpec<K, C>,
    started: bool,
    /// Ordered combining: the record being accumulated.
    pending: Option<(K, C)>,
    /// Hash combining: the records of the current hash, ready to go out.
    group: Vec<(K, C)>,
    failed: bool,
}

impl<K, C> Merger<'_, K, C> {
    fn pull(&mut self, i: usize) -> Result<(), ShuffleError> {
        self.heads[i] = match self.runs[i].next() {
            None => None,
            Some(Err(e)) => return Err(e),
            Some(Ok((k, c))) => {
                // Ordered with a prefix: the head carries its key's prefix, so most
                // comparisons are of integers; merging by hash: its hash.
                let h = match (self.spec.ordering, self.spec.prefix, self.spec.hash) {
                    (Some(_), Some(prefix), _) => prefix(&k),
                    (_, _, Some(hash)) => hash(&k),
                    _ => 0,
                };
                Some((h, k, c))
            }
        };
        Ok(())
    }

    /// Whether run `i`'s head goes out before run `j`'s: by prefix then key (ordered,
    /// with a prefix), by key (ordered), or by hash; an exhausted run goes last; equal
    /// heads leave in run order (so the merge is stable).
    #[inline]
    fn before(&self, i: usize, j: usize) -> bool {
        match (&self.heads[i], &self.heads[j]) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some((hi, ki, _)), Some((hj, kj, _))) => {
                let ord = match (self.spec.ordering, self.spec.prefix) {
                    (Some(cmp), Some(_)) => hi.cmp(hj).then_with(|| cmp(ki, kj)),
                    (Some(cmp), None) => cmp(ki, kj),
                    (None, _) => hi.cmp(hj),
                };
                ord == Ordering::Less || (ord == Ordering::Equal && i < j)
            }
        }
    }

    /// Plays the tournament below `node` of the loser tree (leaves `k..2k` are the
    /// runs): stores each match's loser, returns the winner.
    fn play(&mut self, node: usize) -> usize {
        let k = self.runs.len();
        if node >= k {
            return node - k;
        }
        let a = self.play(2 * node);
        let b = self.play(2 * node + 1);
        let (w, l) = if self.before(a, b) { (a, b) } else { (b, a) };
        self.tree[node] = l;
        w
    }

    /// Run `i`'s head changed: replays its path to the root (log2 k comparisons).
    fn replay(&mut self, i: usize) {
        let k = self.runs.len();
        let mut winner = i;
        let mut node = (i + k) / 2;
        while node >= 1 {
            let l = self.tree[node];
            if self.before(l, winner) {
                self.tree[node] = winner;
                winner = l;
            }
            node /= 2;
        }
        self.tree[0] = winner;
    }

    /// The run whose head goes out next, if any has one: the loser tree's winner.
    fn min_head(&self) -> Option<usize> {
        let w = *self.tree.first()?;
        self.heads.get(w)?.as_ref().map(|_| w)
    }

    fn take(&mut self, i: usize) -> Result<(u64, K, C), ShuffleError> {
        let head = self.heads[i].take();
        self.pull(i)?;
        self.replay(i);
        // The head was Some: min_head only returns such indexes.
        head.ok_or_else(|| ShuffleError::Invalid("merge lost a record".into()))
    }

    fn step(&mut self) -> Result<Option<(K, C)>, ShuffleError> {
        if !self.started {
            self.started = true;
            self.heads = (0..self.runs.len()).map(|_| None).collect();
            for i in 0..self.runs.len() {
                self.pull(i)?;
            }
            let k = self.runs.len();
            self.tree = vec![0; k];
            if k > 0 {
                self.tree[0] = self.play(1);
            }
        }
        match (self.spec.ordering, self.spec.merge) {
            (Some(cmp), Some(merge)) => loop {
                let Some(i) = self.min_head() else {
                    return Ok(self.pending.take());
                };
                let (_, k, c) = self.take(i)?;
                match self.pending.take() {
                    Some((pk, pc)) if cmp(&pk, &k) == Ordering::Equal => {
                        self.pending = Some((pk, merge(pc, c)));
                    }
                    out => {
                        self.pending = Some((k, c));
                        if out.is_some() {
                            return Ok(out);
                        }
                    }
                }
            },
            (Some(_), None) => match self.min_head() {
                None => Ok(None),
                Some(i) => self.take(i).map(|(_, k, c)| Some((k, c))),
            },
            (None, merge) => {
                if let Some(r) = self.group.pop() {
                    return Ok(Some(r));
                }
                let (Some(merge), Some(eq)) = (merge, self.spec.eq) else {
                    return Ok(None);
                };
                let Some(i) = self.min_head() else {
                    return Ok(None);
                };
                let (h, k, c) = self.take(i)?;
                let mut group = vec![(k, c)];
                loop {
                    let same = self
                        .heads
                        .iter()
                        .position(|hd| matches!(hd, Some((hh, _, _)) if *hh == h));
                    let Some(j) = same else { break };
                    let (_, k, c) = self.take(j)?;
                    // Records of one hash leave in any order: the merged one goes last.
                    match group.iter().position(|(gk, _)| eq(gk, &k)) {
                        Some(at) => {
                            let (gk, gc) = group.swap_remove(at);
                            group.push((gk, merge(gc, c)));
                        }
                        None => group.push((k, c)),
                    }
                }
                self.group = group;
                Ok(self.group.pop())
            }
        }
    }
}

impl<K, C> Iterator for Merger<'_, K, C> {
    type Item = Result<(K, C), ShuffleError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(r) => r.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_packed_string_hash_is_the_key_hash() {
        // `insert_combining`'s String path hashes through `str_key_hash`; records it
        // places must land where `insert` (`key_hash`) puts them.
        let mut words: Vec<String> = vec![String::new(), "a".into(), "\u{e9}t\u{e9}".into()];
        for n in 1..=20u32 {
            for seed in 0..40u32 {
                words.push(
                    (0..n)
                        .map(|i| char::from(b'a' + ((seed * 7 + i * 3) % 26) as u8))
                        .collect(),
                );
            }
        }
        for w in &words {
            let inline = inline_key(w.as_bytes());
            assert_eq!(str_key_hash(inline, w), key_hash(w), "{w:?}");
            assert_eq!(str_key_hash(inline, w), key_hash(w.as_str()), "{w:?}");
        }
    }

    #[test]
    fn inline_keys_hold_every_short_key_exactly() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..=INLINE_KEY {
            for seed in 0..50u8 {
                let b: Vec<u8> = (0..n as u8)
                    .map(|i| seed.wrapping_mul(31).wrapping_add(i * 7))
                    .collect();
                let x = inline_key(&b).unwrap_or(u64::MAX);
                assert_eq!(x & LONG_KEY, 0);
                with_key_bytes(&[], x, |back| assert_eq!(back, &b[..]));
                seen.insert((b, x));
            }
        }
        // Distinct keys, distinct slot values.
        let values: std::collections::HashSet<u64> = seen.iter().map(|(_, x)| *x).collect();
        let keys: std::collections::HashSet<&Vec<u8>> = seen.iter().map(|(b, _)| b).collect();
        assert_eq!(values.len(), keys.len());
        assert_eq!(inline_key(b"12345678"), None);
    }

    /// Short strings (hashed as one packed integer) spread over partitions, and within
    /// one partition over a table's index bits and its seven tag bits.
    #[test]
    fn short_string_hashes_spread_over_partitions_and_table_bits() {
        let words: Vec<String> = (0..20_000u32)
            .map(|i| {
                let mut w = String::new();
                let mut n = i;
                loop {
                    w.push(char::from(b'a' + (n % 26) as u8));
                    n /= 26;
                    if n == 0 {
                        break;
                    }
                }
                w
            })
            .collect();
        let mut parts = [0u32; 8];
        let mut low = std::collections::HashSet::new();
        let mut tags = std::collections::HashSet::new();
        for w in &words {
            let h = key_hash(w);
            let p = hash_partition(h, 8);
            parts[p as usize] += 1;
            if p == 0 {
                low.insert(h & 0x3ff);
                tags.insert(h >> 57);
            }
        }
        assert!(parts.iter().all(|n| *n > 2000), "{parts:?}");
        assert!(low.len() > 900, "{} of 1024 low-bit patterns", low.len());
        assert_eq!(tags.len(), 128);
    }

    fn by_prefix<K: Ord + Clone + 'static>(keys: &[K], ascending: bool) -> Vec<(K, u32)> {
        let cmp: KeyOrdering<K> = if ascending {
            |a, b| a.cmp(b)
        } else {
            |a, b| b.cmp(a)
        };
        let prefix = sort_prefix::<K>(ascending);
        assert!(
            prefix.is_some(),
            "{} has a prefix",
            std::any::type_name::<K>()
        );
        let spec: MergeSpec<K, u32> = MergeSpec {
            ordering: Some(cmp),
            merge: None,
            hash: None,
            eq: None,
            prefix,
        };
        let mut v: Vec<(K, u32)> = keys.iter().cloned().zip(0..).collect();
        sort_records(&mut v, &spec, false);
        v
    }

    /// `keys` valued by position, sorted stably in either direction (the reference
    /// order for sorting tests).
    pub(crate) fn by_compare<K: Ord + Clone>(keys: &[K], ascending: bool) -> Vec<(K, u32)> {
        let mut v: Vec<(K, u32)> = keys.iter().cloned().zip(0..).collect();
        if ascending {
            v.sort_by(|a, b| a.0.cmp(&b.0));
        } else {
            v.sort_by(|a, b| b.0.cmp(&a.0));
        }
        v
    }

    proptest::proptest! {
        /// The prefix sort gives exactly the stable comparison sort's order (values
        /// record the input position, so ties must keep it): byte strings of 0–12
        /// bytes over a small alphabet (many shared prefixes, zero bytes, ties),
        /// strings, and signed and unsigned integers, both directions.
        #[test]
        fn the_prefix_sort_is_the_stable_comparison_sort(
            bytes in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..12), 0..200),
            strings in proptest::collection::vec("[a-c\u{e9}]{0,10}", 0..200),
            signed in proptest::collection::vec(proptest::num::i64::ANY, 0..200),
            small in proptest::collection::vec(-3i32..3, 0..200),
            unsigned in proptest::collection::vec(proptest::num::u64::ANY, 0..200),
            ascending: bool,
        ) {
            proptest::prop_assert_eq!(by_prefix(&bytes, ascending), by_compare(&bytes, ascending));
            proptest::prop_assert_eq!(by_prefix(&strings, ascending), by_compare(&strings, ascending));
            proptest::prop_assert_eq!(by_prefix(&signed, ascending), by_compare(&signed, ascending));
            proptest::prop_assert_eq!(by_prefix(&small, ascending), by_compare(&small, ascending));
            proptest::prop_assert_eq!(by_prefix(&unsigned, ascending), by_compare(&unsigned, ascending));
        }

        /// A byte string's prefix is its first 8 bytes, zero-padded, big-endian.
        #[test]
        fn a_byte_prefix_is_the_first_eight_bytes_zero_padded(
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..20),
        ) {
            let mut padded = [0u8; 8];
            let n = b.len().min(8);
            padded[..n].copy_from_slice(&b[..n]);
            proptest::prop_assert_eq!(prefix_of_bytes(&b), u64::from_be_bytes(padded));
        }
    }

    /// Run `r` of a merge test: its keys, valued by run and position, sorted stably.
    fn sorted_run<K: Clone>(r: usize, keys: &[K], cmp: KeyOrdering<K>) -> Vec<(K, u32)> {
        let mut v: Vec<(K, u32)> = keys
            .iter()
            .cloned()
            .zip((0..).map(|i| (r as u32) << 16 | i))
            .collect();
        v.sort_by(|a, b| cmp(&a.0, &b.0));
        v
    }

    /// Merges runs (each sorted by comparison; values name run and position) with and
    /// without the prefix.
    fn merged<K: Ord + Clone + Send + std::fmt::Debug + 'static>(
        runs: &[Vec<K>],
        ascending: bool,
        prefix: bool,
    ) -> Vec<(K, u32)> {
        let cmp: KeyOrdering<K> = if ascending {
            |a, b| a.cmp(b)
        } else {
            |a, b| b.cmp(a)
        };
        let iters: Vec<RecordIter<'static, K, u32>> = runs
            .iter()
            .enumerate()
            .map(|(r, keys)| {
                Box::new(sorted_run(r, keys, cmp).into_iter().map(Ok))
                    as RecordIter<'static, K, u32>
            })
            .collect();
        let spec = MergeSpec {
            ordering: Some(cmp),
            merge: None,
            hash: None,
            eq: None,
            prefix: if prefix {
                sort_prefix::<K>(ascending)
            } else {
                None
            },
        };
        let out: Vec<(K, u32)> = merge_runs(iters, spec).map(|r| r.unwrap()).collect();
        // The reference: every run sorted, concatenated in run order, sorted stably.
        let mut all: Vec<(K, u32)> = Vec::new();
        for (r, keys) in runs.iter().enumerate() {
            all.extend(sorted_run(r, keys, cmp));
        }
        all.sort_by(|a, b| cmp(&a.0, &b.0));
        assert_eq!(
            out, all,
            "the merge is the stable sort of the runs in run order"
        );
        out
    }

    proptest::proptest! {
        /// A merge comparing heads by prefix first gives exactly the merge by
        /// comparison (ties: the earlier run first), for byte strings with shared
        /// prefixes and for integers with duplicates.
        #[test]
        fn the_prefix_merge_is_the_comparison_merge(
            bytes in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(0u8..3, 0..12), 0..60), 1..6),
            ints in proptest::collection::vec(proptest::collection::vec(-3i64..3, 0..60), 1..12),
            ascending: bool,
        ) {
            proptest::prop_assert_eq!(merged(&bytes, ascending, true), merged(&bytes, ascending, false));
            proptest::prop_assert_eq!(merged(&ints, ascending, true), merged(&ints, ascending, false));
        }
    }

    #[test]
    fn only_known_key_types_get_a_prefix() {
        assert!(sort_prefix::<(u32, u32)>(true).is_none());
        assert!(sort_prefix::<Vec<u32>>(true).is_none());
        assert!(sort_prefix::<&'static str>(false).is_none());
        assert!(sort_prefix::<u32>(false).is_some());
    }
}
