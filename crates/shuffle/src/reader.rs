//! The reduce side: decode a block (checksum first, then chunks, then records), read a
//! block of a local map output straight from its files, merge key-ordered blocks, and
//! aggregate combiners across blocks within a memory budget, spilling beyond it.

use std::cmp::Ordering;
use std::fs::File;
use std::hash::Hash;
use std::io::{Read, Seek, SeekFrom};
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{checksum, BlockMeta, Records, SliceChunks};
use crate::conf::ShuffleConf;
use crate::error::ShuffleError;
use crate::index;
use crate::layout::{BlockRef, Layout};
use crate::sorter::{
    combine_buffer, fixed_hash, merge_runs, Buf, Combiner, KeyOrdering, MergeSpec, PlainBuffer,
    RecordIter, Sorter,
};

/// The records of one block.
pub struct BlockRecords<K, C> {
    block: BlockRef,
    records: Records<SliceChunks, K, C>,
    _t: PhantomData<fn() -> (K, C)>,
}

impl<K: DeserializeOwned + 'static, C: DeserializeOwned + 'static> Iterator for BlockRecords<K, C> {
    type Item = Result<(K, C), ShuffleError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.records.next_record().map(|r| {
            r.map_err(|reason| ShuffleError::Corrupt {
                block: self.block,
                reason,
            })
        })
    }
}

/// Checks `data` against the block's expected length and checksum.
pub fn verify_block(
    block: BlockRef,
    data: &[u8],
    expected: &BlockMeta,
) -> Result<(), ShuffleError> {
    if data.len() as u64 != expected.len {
        return Err(ShuffleError::Corrupt {
            block,
            reason: format!("{} bytes, the map output said {}", data.len(), expected.len),
        });
    }
    let crc = checksum(data);
    if crc != expected.crc {
        return Err(ShuffleError::Corrupt {
            block,
            reason: format!(
                "checksum {crc:08x} does not match the map output's {:08x}",
                expected.crc
            ),
        });
    }
    Ok(())
}

/// Verifies a block's bytes and iterates its records. A decode failure after the
/// checksum matched is also reported as `Corrupt`.
pub fn decode_block<K: DeserializeOwned + 'static, C: DeserializeOwned + 'static>(
    block: BlockRef,
    data: Bytes,
    expected: &BlockMeta,
) -> Result<BlockRecords<K, C>, ShuffleError> {
    verify_block(block, &data, expected)?;
    Ok(BlockRecords {
        block,
        records: Records::new(SliceChunks::new(data)),
        _t: PhantomData,
    })
}

/// Reads the blocks of partitions `start..end` of a map output from local files,
/// with the index entries describing them.
pub fn read_local_blocks(
    layout: &Layout,
    shuffle: u32,
    map: u32,
    start: u32,
    end: u32,
) -> Result<(Vec<BlockMeta>, Bytes), ShuffleError> {
    let data_path = layout.data_path(shuffle, map);
    let out = index::read_map_output(&layout.index_path(shuffle, map), &data_path)?;
    let n = out.blocks.len() as u32;
    if start >= end || end > n {
        return Err(ShuffleError::Invalid(format!(
            "partitions {start}..{end} of shuffle {shuffle} map {map}, which has {n}"
        )));
    }
    let off = out.offset(start);
    let metas = out.blocks[start as usize..end as usize].to_vec();
    let len: u64 = metas.iter().map(|b| b.len).sum();
    let mut f = File::open(&data_path).map_err(|e| ShuffleError::io(&data_path, "open", e))?;
    f.seek(SeekFrom::Start(off))
        .map_err(|e| ShuffleError::io(&data_path, "seek", e))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)
        .map_err(|e| ShuffleError::io(&data_path, "read", e))?;
    Ok((metas, Bytes::from(buf)))
}

/// Merges blocks each sorted by `ordering` into one sorted stream (a k-way merge), for
/// key-ordered shuffles.
pub fn merge_sorted<'a, K: Send + 'a, C: Send + 'a>(
    blocks: Vec<RecordIter<'a, K, C>>,
    ordering: KeyOrdering<K>,
) -> RecordIter<'a, K, C> {
    merge_sorted_by_prefix(blocks, ordering, None)
}

/// [`merge_sorted`] with a sort prefix consistent with `ordering` (see
/// [`sort_prefix`](crate::sort_prefix)): heads are compared by prefix, and by key only
/// where the prefixes are equal.
pub fn merge_sorted_by_prefix<'a, K: Send + 'a, C: Send + 'a>(
    blocks: Vec<RecordIter<'a, K, C>>,
    ordering: KeyOrdering<K>,
    prefix: Option<fn(&K) -> u64>,
) -> RecordIter<'a, K, C> {
    merge_runs(
        blocks,
        MergeSpec {
            ordering: Some(ordering),
            merge: None,
            hash: None,
            eq: None,
            prefix,
        },
    )
}

fn identity<C>(c: C) -> C {
    c
}

fn key_eq<K: Eq>(a: &K, b: &K) -> bool {
    a == b
}

/// Reduce-side aggregation: combiners from many blocks merged per key in a hash map
/// within `memory_budget`, spilled to sorted runs beyond it, and merged at the end
/// (Spark's `ExternalAppendOnlyMap`). With an ordering the result comes out sorted by
/// key.
pub struct ReduceAggregator<'a, K, C> {
    sorter: Sorter<'a, K, C, C>,
}

impl<'a, K, C> ReduceAggregator<'a, K, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Send + 'static,
    C: Serialize + DeserializeOwned + Send + 'static,
{
    /// An aggregator for reduce partition `partition` of `shuffle` (spill files go to
    /// the shuffle's directory, named by `attempt`).
    pub fn new(
        conf: &ShuffleConf,
        layout: &Layout,
        shuffle: u32,
        partition: u32,
        attempt: u64,
        merge_combiners: fn(C, C) -> C,
        ordering: Option<KeyOrdering<K>>,
    ) -> Result<Self, ShuffleError> {
        let dir = layout.shuffle_dir(shuffle, partition);
        std::fs::create_dir_all(&dir).map_err(|e| ShuffleError::io(&dir, "create directory", e))?;
        let spec = MergeSpec {
            ordering,
            merge: Some(merge_combiners),
            hash: Some(fixed_hash::<K>),
            eq: Some(key_eq::<K>),
            prefix: None,
        };
        let combiner = Combiner {
            create: identity::<C>,
            merge_value: merge_combiners,
            merge_combiners,
        };
        let layout = layout.clone();
        Ok(ReduceAggregator {
            sorter: Sorter::new(
                1,
                combine_buffer(1, combiner, spec.clone()),
                spec,
                Box::new(move |n| {
                    layout.reduce_temp_path(shuffle, partition, attempt, &format!("spill{n}"))
                }),
                conf.memory_budget,
                conf.compress,
                conf.file_buffer,
            ),
        })
    }

    /// Merges one `(key, combiner)`.
    pub fn insert(&mut self, key: K, combiner: C) -> Result<(), ShuffleError> {
        let h = fixed_hash(&key);
        self.sorter.insert(0, h, key, combiner)
    }

    /// Merges every record of `records` (a decoded block).
    pub fn insert_all(
        &mut self,
        records: impl IntoIterator<Item = Result<(K, C), ShuffleError>>,
    ) -> Result<(), ShuffleError> {
        for r in records {
            let (k, c) = r?;
            self.insert(k, c)?;
        }
        Ok(())
    }

    /// Spill runs written so far.
    pub fn spill_count(&self) -> u32 {
        self.sorter.spill_count()
    }

    /// Bytes written to spill runs so far.
    pub fn bytes_spilled(&self) -> u64 {
        self.sorter.bytes_spilled
    }

    /// The merged result, one record per key (sorted when an ordering was given). The
    /// spill files are removed when the returned iterator is dropped.
    pub fn finish(mut self) -> Result<AggregatedRecords<'a, K, C>, ShuffleError> {
        let iter = self.sorter.partition(0)?;
        Ok(AggregatedRecords {
            iter,
            _temps: std::mem::take(&mut self.sorter.temps),
        })
    }
}

/// Reduce-side sort without combining (for `sort_by_key`): records from many blocks
/// kept within `memory_budget`, spilled to sorted runs beyond it, and merged in key
/// order at the end (stable: equal keys come out in insertion order). Unlike
/// [`merge_sorted`], it does not need every block at once, so fetched blocks can be
/// dropped as soon as they are inserted.
pub struct ReduceSorter<'a, K, V> {
    sorter: Sorter<'a, K, V, V>,
}

impl<'a, K, V> ReduceSorter<'a, K, V>
where
    K: Serialize + DeserializeOwned + Send + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
{
    /// A sorter for reduce partition `partition` of `shuffle` (spill files go to the
    /// shuffle's directory, named by `attempt`).
    pub fn new(
        conf: &ShuffleConf,
        layout: &Layout,
        shuffle: u32,
        partition: u32,
        attempt: u64,
        ordering: KeyOrdering<K>,
    ) -> Result<Self, ShuffleError> {
        let dir = layout.shuffle_dir(shuffle, partition);
        std::fs::create_dir_all(&dir).map_err(|e| ShuffleError::io(&dir, "create directory", e))?;
        let spec = MergeSpec {
            ordering: Some(ordering),
            merge: None,
            hash: None,
            eq: None,
            prefix: None,
        };
        let layout = layout.clone();
        Ok(ReduceSorter {
            sorter: Sorter::new(
                1,
                Buf::Dyn(Box::new(PlainBuffer::new(1, identity::<V>, spec.clone()))),
                spec,
                Box::new(move |n| {
                    layout.reduce_temp_path(shuffle, partition, attempt, &format!("sort{n}"))
                }),
                conf.memory_budget,
                conf.compress,
                conf.file_buffer,
            ),
        })
    }

    /// Adds one record.
    pub fn insert(&mut self, key: K, value: V) -> Result<(), ShuffleError> {
        self.sorter.insert(0, 0, key, value)
    }

    /// Adds every record of `records` (a decoded block).
    pub fn insert_all(
        &mut self,
        records: impl IntoIterator<Item = Result<(K, V), ShuffleError>>,
    ) -> Result<(), ShuffleError> {
        for r in records {
            let (k, v) = r?;
            self.insert(k, v)?;
        }
        Ok(())
    }

    /// Spill runs written so far.
    pub fn spill_count(&self) -> u32 {
        self.sorter.spill_count()
    }

    /// Every record in key order; spill files are removed when the iterator drops.
    pub fn finish(mut self) -> Result<AggregatedRecords<'a, K, V>, ShuffleError> {
        let iter = self.sorter.partition(0)?;
        Ok(AggregatedRecords {
            iter,
            _temps: std::mem::take(&mut self.sorter.temps),
        })
    }
}

/// The result of a [`ReduceAggregator`] or [`ReduceSorter`].
pub struct AggregatedRecords<'a, K, C> {
    iter: RecordIter<'a, K, C>,
    _temps: crate::sorter::TempFiles,
}

impl<K, C> Iterator for AggregatedRecords<'_, K, C> {
    type Item = Result<(K, C), ShuffleError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.iter.next()
    }
}

/// Orders keys by their `Ord` (a ready-made [`KeyOrdering`]).
pub fn natural_order<K: Ord>(a: &K, b: &K) -> Ordering {
    a.cmp(b)
}
