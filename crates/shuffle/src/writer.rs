//! The map side: [`ShuffleWriter`] takes a map task's records, partitions them
//! (optionally combining and ordering by key), spills beyond its memory budget, and
//! commits one data file plus one index per map output (Spark's `SortShuffleWriter`
//! and `IndexShuffleBlockResolver`).
//!
//! **Commit protocol.** Data and index are written under temporary names
//! (`<map>.<attempt>.<pid>.data.tmp`) in the output's directory. Under an exclusive
//! `flock` on `<map>.lock` the writer then checks for a complete existing output (an
//! index that reads back whole and a data file of the length it adds up to): if one
//! exists, another attempt won, its figures are returned and the temporary files
//! deleted (first wins, as in Spark). Otherwise the data file is renamed into place,
//! then the index: a complete index therefore always means a complete output, and a
//! reader never sees a half-written file under a final name. With `shuffle.sync` both
//! files are fsynced before the renames and the directory after them (survives power
//! loss); without it (Spark's default) the output survives any process crash but not
//! necessarily a power cut. A writer dropped or failing at any point removes its
//! temporary and spill files.

use std::any::Any;
use std::fs::File;
use std::hash::Hash;
use std::io::BufWriter;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{BlockEncoder, BlockMeta};
use crate::conf::ShuffleConf;
use crate::error::ShuffleError;
use crate::index::{self, MapOutput};
use crate::layout::Layout;
use crate::serial::SerialBuffer;
use crate::sorter::{
    combine_buffer, fixed_hash, hash_partition, inline_key, key_hash, str_key_hash, write_error,
    Buf, Combiner, KeyOrdering, MergeSpec, PartitionOut, Sorter,
};

/// What a committed map output holds, for the driver's map output tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapStatus {
    /// Per reduce partition: stored bytes, checksum and records of its block.
    pub blocks: Vec<BlockMeta>,
    /// Spill runs this attempt wrote.
    pub spills: u32,
    /// Bytes this attempt wrote to spill runs.
    pub bytes_spilled: u64,
    /// Records this attempt was given.
    pub records_in: u64,
    /// Another attempt's complete output was already in place and is the one kept.
    pub reused_existing: bool,
}

impl MapStatus {
    /// Stored bytes per reduce partition.
    pub fn sizes(&self) -> Vec<u64> {
        self.blocks.iter().map(|b| b.len).collect()
    }

    /// Records per reduce partition.
    pub fn record_counts(&self) -> Vec<u64> {
        self.blocks.iter().map(|b| b.records).collect()
    }

    /// Stored bytes of the whole output.
    pub fn total_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.len).sum()
    }
}

/// Which map output a writer produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapId {
    /// The shuffle.
    pub shuffle: u32,
    /// The map task's partition index.
    pub map: u32,
    /// The task attempt (names temporary files; any attempt may commit).
    pub attempt: u64,
}

/// The partition function: must return a partition below the writer's count.
pub type Partitioner<'p, K> = &'p (dyn Fn(&K) -> u32 + Sync);

/// How a writer picks each record's reduce partition.
enum PartitionBy<'p, K> {
    /// A caller's function.
    Function(Partitioner<'p, K>),
    /// [`hash_partition`] of the key's [`key_hash`](crate::key_hash), the hash the
    /// combine table uses too (one hash per record).
    KeyHash,
}

/// Sort-based shuffle writer of one map task. `C` is what blocks hold: `V` itself
/// without a combiner ([`ShuffleWriter::new`]), the combiner type with one
/// ([`ShuffleWriter::with_combiner`]).
pub struct ShuffleWriter<'p, K, V, C> {
    layout: Layout,
    id: MapId,
    partitions: u32,
    partitioner: PartitionBy<'p, K>,
    /// Set when combining: the key hash the combine table is keyed by.
    hash: Option<fn(&K) -> u64>,
    sorter: Sorter<'p, K, V, C>,
    compress: bool,
    sync: bool,
    file_buffer: usize,
    records_in: u64,
}

fn identity<V>(v: V) -> V {
    v
}

fn key_eq<K: Eq>(a: &K, b: &K) -> bool {
    a == b
}

fn spill_namer<'p>(layout: &Layout, id: MapId) -> Box<dyn FnMut(usize) -> PathBuf + Send + 'p> {
    let layout = layout.clone();
    Box::new(move |n| layout.temp_path(id.shuffle, id.map, id.attempt, &format!("spill{n}")))
}

fn check_partitions(partitions: u32) -> Result<(), ShuffleError> {
    if partitions == 0 || partitions > index::MAX_PARTITIONS {
        return Err(ShuffleError::Invalid(format!(
            "{partitions} reduce partitions: expected 1 to {}",
            index::MAX_PARTITIONS
        )));
    }
    Ok(())
}

fn create_dir(layout: &Layout, id: MapId) -> Result<(), ShuffleError> {
    let dir = layout.shuffle_dir(id.shuffle, id.map);
    std::fs::create_dir_all(&dir).map_err(|e| ShuffleError::io(&dir, "create directory", e))
}

impl<'p, K, V> ShuffleWriter<'p, K, V, V>
where
    K: Serialize + DeserializeOwned + Send + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
{
    /// A writer without combining; with `ordering`, each block's records are sorted by
    /// key.
    pub fn new(
        conf: &ShuffleConf,
        layout: &Layout,
        id: MapId,
        partitions: u32,
        partitioner: Partitioner<'p, K>,
        ordering: Option<KeyOrdering<K>>,
    ) -> Result<Self, ShuffleError> {
        Self::with_prefix(conf, layout, id, partitions, partitioner, ordering, None)
    }

    /// [`new`](Self::new) with a sort prefix consistent with `ordering` (see
    /// [`sort_prefix`](crate::sort_prefix)): blocks are sorted by comparing prefixes,
    /// and keys only where the prefixes are equal.
    pub fn with_prefix(
        conf: &ShuffleConf,
        layout: &Layout,
        id: MapId,
        partitions: u32,
        partitioner: Partitioner<'p, K>,
        ordering: Option<KeyOrdering<K>>,
        prefix: Option<fn(&K) -> u64>,
    ) -> Result<Self, ShuffleError> {
        check_partitions(partitions)?;
        create_dir(layout, id)?;
        let spec = MergeSpec {
            ordering,
            merge: None,
            hash: None,
            eq: None,
            prefix: ordering.and(prefix),
        };
        let buffer = Buf::Dyn(Box::new(SerialBuffer::new(
            partitions,
            identity::<V>,
            spec.clone(),
        )));
        Ok(Self::build(
            conf,
            layout,
            id,
            partitions,
            PartitionBy::Function(partitioner),
            buffer,
            spec,
        ))
    }
}

impl<'p, K, V, C> ShuffleWriter<'p, K, V, C>
where
    K: Serialize + DeserializeOwned + Send + 'static,
    V: Send + 'p,
    C: Serialize + DeserializeOwned + Send + 'static,
{
    /// A writer combining values per key on the map side; with `ordering`, each block's
    /// records are sorted by key.
    pub fn with_combiner(
        conf: &ShuffleConf,
        layout: &Layout,
        id: MapId,
        partitions: u32,
        partitioner: Partitioner<'p, K>,
        combiner: Combiner<V, C>,
        ordering: Option<KeyOrdering<K>>,
    ) -> Result<Self, ShuffleError>
    where
        K: Hash + Eq + 'static,
    {
        Self::combining(
            conf,
            layout,
            id,
            partitions,
            PartitionBy::Function(partitioner),
            combiner,
            ordering,
        )
    }

    /// [`with_combiner`](Self::with_combiner) partitioning by
    /// `hash_partition(key_hash(k), partitions)`: each key is hashed once, for the
    /// partition and the combine table.
    pub fn with_combiner_by_key_hash(
        conf: &ShuffleConf,
        layout: &Layout,
        id: MapId,
        partitions: u32,
        combiner: Combiner<V, C>,
        ordering: Option<KeyOrdering<K>>,
    ) -> Result<Self, ShuffleError>
    where
        K: Hash + Eq + 'static,
    {
        Self::combining(
            conf,
            layout,
            id,
            partitions,
            PartitionBy::KeyHash,
            combiner,
            ordering,
        )
    }

    fn combining(
        conf: &ShuffleConf,
        layout: &Layout,
        id: MapId,
        partitions: u32,
        partitioner: PartitionBy<'p, K>,
        combiner: Combiner<V, C>,
        ordering: Option<KeyOrdering<K>>,
    ) -> Result<Self, ShuffleError>
    where
        K: Hash + Eq + 'static,
    {
        check_partitions(partitions)?;
        create_dir(layout, id)?;
        let spec = MergeSpec {
            ordering,
            merge: Some(combiner.merge_combiners),
            hash: Some(fixed_hash::<K>),
            eq: Some(key_eq::<K>),
            prefix: None,
        };
        let buffer = combine_buffer(partitions, combiner, spec.clone());
        Ok(Self::build(
            conf,
            layout,
            id,
            partitions,
            partitioner,
            buffer,
            spec,
        ))
    }

    fn build(
        conf: &ShuffleConf,
        layout: &Layout,
        id: MapId,
        partitions: u32,
        partitioner: PartitionBy<'p, K>,
        buffer: Buf<'p, K, V, C>,
        spec: MergeSpec<K, C>,
    ) -> Self {
        ShuffleWriter {
            layout: layout.clone(),
            id,
            partitions,
            partitioner,
            hash: spec.hash,
            sorter: Sorter::new(
                partitions,
                buffer,
                spec,
                spill_namer(layout, id),
                conf.memory_budget,
                conf.compress,
                conf.file_buffer,
            ),
            compress: conf.compress,
            sync: conf.sync,
            file_buffer: conf.file_buffer,
            records_in: 0,
        }
    }

    /// The key's hash (when combining) and reduce partition.
    fn place(&self, key: &K) -> Result<(u64, u32), ShuffleError> {
        let h = self.hash.map_or(0, |f| f(key));
        Ok((h, self.partition_of(h, key)?))
    }

    /// Adds one record.
    pub fn insert(&mut self, key: K, value: V) -> Result<(), ShuffleError> {
        let (h, p) = self.place(&key)?;
        self.records_in += 1;
        self.sorter.insert(p, h, key, value)
    }

    /// [`insert`](Self::insert) for a writer made with a combiner: the key is hashed
    /// here (inlined) instead of through the writer's hash function.
    #[inline]
    pub fn insert_combining(&mut self, key: K, value: V) -> Result<(), ShuffleError>
    where
        K: Hash,
    {
        if self.hash.is_none() {
            return self.insert(key, value);
        }
        if self.sorter.is_str() {
            if let Some(s) = (&key as &dyn Any).downcast_ref::<String>() {
                // The word-count shape: the key's bytes are packed once, for its hash
                // and its table slot, and the buffer is reached without a dynamic call.
                let inline = inline_key(s.as_bytes());
                let h = str_key_hash(inline, s);
                let p = self.partition_of(h, &key)?;
                self.records_in += 1;
                return self.sorter.insert_str(p, h, inline, s.as_bytes(), value);
            }
        }
        let h = key_hash(&key);
        let p = self.partition_of(h, &key)?;
        self.records_in += 1;
        self.sorter.insert(p, h, key, value)
    }

    /// The reduce partition of `key`, whose hash is `h`.
    #[inline]
    fn partition_of(&self, h: u64, key: &K) -> Result<u32, ShuffleError> {
        let p = match self.partitioner {
            PartitionBy::Function(f) => f(key),
            PartitionBy::KeyHash => hash_partition(h, self.partitions),
        };
        if p >= self.partitions {
            return Err(ShuffleError::Invalid(format!(
                "the partition function returned partition {p} for a shuffle of {} partitions",
                self.partitions
            )));
        }
        Ok(p)
    }

    /// Adds every record of `records`.
    pub fn insert_all(
        &mut self,
        records: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), ShuffleError> {
        for (k, v) in records {
            self.insert(k, v)?;
        }
        Ok(())
    }

    /// Spill runs written so far.
    pub fn spill_count(&self) -> u32 {
        self.sorter.spill_count()
    }

    /// The in-memory buffer's current size estimate, in bytes.
    pub fn estimated_memory(&self) -> u64 {
        self.sorter.estimated_bytes()
    }

    /// Merges memory and spill runs into the data file, writes the index and commits
    /// both (see the module doc).
    pub fn commit(mut self) -> Result<MapStatus, ShuffleError> {
        let (s, m, a) = (self.id.shuffle, self.id.map, self.id.attempt);
        let data_tmp = self.layout.temp_path(s, m, a, "data");
        let index_tmp = self.layout.temp_path(s, m, a, "index");
        self.sorter.temps.0.push(data_tmp.clone());
        self.sorter.temps.0.push(index_tmp.clone());
        let file = File::create(&data_tmp).map_err(|e| ShuffleError::io(&data_tmp, "create", e))?;
        let mut out = BufWriter::with_capacity(self.file_buffer, file);
        let mut enc = BlockEncoder::new(self.compress);
        let mut blocks = Vec::with_capacity(self.partitions as usize);
        let mut batch: Vec<(K, C)> = Vec::new();
        for p in 0..self.partitions {
            let records = match self.sorter.partition_out(p)? {
                PartitionOut::Encoded(part) => {
                    enc.write_encoded(&mut out, &part)
                        .map_err(|e| write_error(&data_tmp, e))?;
                    blocks.push(enc.finish());
                    continue;
                }
                PartitionOut::Records(r) => r,
            };
            for r in records {
                batch.push(r?);
                if batch.len() >= enc.batch {
                    enc.write_batch(&mut out, &batch)
                        .map_err(|e| write_error(&data_tmp, e))?;
                    batch.clear();
                }
            }
            enc.write_batch(&mut out, &batch)
                .map_err(|e| write_error(&data_tmp, e))?;
            batch.clear();
            blocks.push(enc.finish());
        }
        let file = out
            .into_inner()
            .map_err(|e| ShuffleError::io(&data_tmp, "write", e.into_error()))?;
        if self.sync {
            file.sync_all()
                .map_err(|e| ShuffleError::io(&data_tmp, "fsync", e))?;
        }
        drop(file);
        index::write(&index_tmp, &blocks, self.sync)?;
        let existing = commit_files(
            &self.layout,
            s,
            m,
            &data_tmp,
            &index_tmp,
            &blocks,
            self.sync,
        )?;
        Ok(MapStatus {
            reused_existing: existing.is_some(),
            blocks: existing.map(|o| o.blocks).unwrap_or(blocks),
            spills: self.sorter.spill_count(),
            bytes_spilled: self.sorter.bytes_spilled,
            records_in: self.records_in,
        })
    }
}

/// Locks `<map>.lock`, keeps an existing complete output or renames ours into place.
/// Returns the existing output when it was kept.
fn commit_files(
    layout: &Layout,
    shuffle: u32,
    map: u32,
    data_tmp: &Path,
    index_tmp: &Path,
    blocks: &[BlockMeta],
    sync: bool,
) -> Result<Option<MapOutput>, ShuffleError> {
    let dir = layout.shuffle_dir(shuffle, map);
    let lock_path = dir.join(format!("{map}.lock"));
    let lock = File::create(&lock_path).map_err(|e| ShuffleError::io(&lock_path, "create", e))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(ShuffleError::io(
            &lock_path,
            "lock",
            std::io::Error::last_os_error(),
        ));
    }
    let data = layout.data_path(shuffle, map);
    let idx = layout.index_path(shuffle, map);
    if let Ok(existing) = index::read_map_output(&idx, &data) {
        if existing.blocks.len() == blocks.len() {
            tracing::debug!(
                shuffle,
                map,
                "map output already committed by another attempt; keeping it"
            );
            let _ = std::fs::remove_file(data_tmp);
            let _ = std::fs::remove_file(index_tmp);
            return Ok(Some(existing));
        }
    }
    std::fs::rename(data_tmp, &data).map_err(|e| ShuffleError::io(&data, "rename into", e))?;
    std::fs::rename(index_tmp, &idx).map_err(|e| ShuffleError::io(&idx, "rename into", e))?;
    if sync {
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
    }
    drop(lock);
    Ok(None)
}
