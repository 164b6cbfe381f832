//! An executor's block cache: cached partitions, serialized, within a byte budget
//! (`executor.memory`), least recently used evicted first. An evicted partition is
//! simply computed again from its lineage the next time a task needs it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::wire::BlockId;

/// Serialized partitions kept in memory, bounded by bytes.
#[derive(Debug)]
pub(crate) struct BlockCache {
    capacity: u64,
    used: u64,
    tick: u64,
    blocks: HashMap<BlockId, (Arc<Vec<u8>>, u64)>,
    by_age: BTreeMap<u64, BlockId>,
}

/// What a [`BlockCache::put`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PutOutcome {
    /// Whether the block is now cached (false when it is larger than the whole budget).
    pub stored: bool,
    /// Blocks evicted to make room.
    pub evicted: Vec<BlockId>,
}

impl BlockCache {
    /// An empty cache of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            used: 0,
            tick: 0,
            blocks: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Whether `id` is cached.
    #[cfg(test)]
    pub fn contains(&self, id: &BlockId) -> bool {
        self.blocks.contains_key(id)
    }

    /// The block, marking it most recently used.
    pub fn get(&mut self, id: &BlockId) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let tick = self.tick;
        let (bytes, age) = self.blocks.get_mut(id)?;
        self.by_age.remove(age);
        *age = tick;
        self.by_age.insert(tick, *id);
        Some(bytes.clone())
    }

    /// Keeps `bytes` as block `id`, evicting the least recently used blocks as needed.
    pub fn put(&mut self, id: BlockId, bytes: Arc<Vec<u8>>) -> PutOutcome {
        let size = bytes.len() as u64;
        let mut out = PutOutcome::default();
        self.remove(&id);
        if size > self.capacity {
            return out;
        }
        while self.used + size > self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.blocks.remove(&oldest) {
                self.used -= b.len() as u64;
                out.evicted.push(oldest);
            }
        }
        self.tick += 1;
        self.used += size;
        self.by_age.insert(self.tick, id);
        self.blocks.insert(id, (bytes, self.tick));
        out.stored = true;
        out
    }

    /// Drops block `id`; whether it was cached.
    pub fn remove(&mut self, id: &BlockId) -> bool {
        match self.blocks.remove(id) {
            Some((b, age)) => {
                self.used -= b.len() as u64;
                self.by_age.remove(&age);
                true
            }
            None => false,
        }
    }

    /// Drops every block of cached dataset `cache`.
    pub fn remove_cache(&mut self, cache: u64) -> Vec<BlockId> {
        let ids: Vec<BlockId> = self
            .blocks
            .keys()
            .filter(|b| b.cache == cache)
            .copied()
            .collect();
        for id in &ids {
            self.remove(id);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(p: u32) -> BlockId {
        BlockId {
            cache: 1,
            partition: p,
        }
    }
    fn bytes(n: usize) -> Arc<Vec<u8>> {
        Arc::new(vec![0; n])
    }

    #[test]
    fn least_recently_used_goes_first_and_bytes_are_counted() {
        let mut c = BlockCache::new(100);
        assert!(c.put(b(0), bytes(40)).stored);
        assert!(c.put(b(1), bytes(40)).stored);
        assert!(c.get(&b(0)).is_some()); // 1 is now the oldest
        let out = c.put(b(2), bytes(40));
        assert_eq!(out.evicted, vec![b(1)]);
        assert!(c.contains(&b(0)) && c.contains(&b(2)) && !c.contains(&b(1)));
        assert_eq!(c.used(), 80);
    }

    #[test]
    fn a_block_larger_than_the_budget_is_not_kept_and_evicts_nothing() {
        let mut c = BlockCache::new(10);
        assert!(c.put(b(0), bytes(5)).stored);
        let out = c.put(b(1), bytes(11));
        assert_eq!(
            out,
            PutOutcome {
                stored: false,
                evicted: vec![]
            }
        );
        assert!(c.contains(&b(0)));
    }

    #[test]
    fn replacing_and_removing_keep_the_count_right() {
        let mut c = BlockCache::new(100);
        c.put(b(0), bytes(30));
        c.put(b(0), bytes(50));
        assert_eq!(c.used(), 50);
        c.put(
            BlockId {
                cache: 2,
                partition: 0,
            },
            bytes(10),
        );
        assert_eq!(c.remove_cache(1), vec![b(0)]);
        assert_eq!(c.used(), 10);
        assert!(!c.remove(&b(0)));
    }
}
