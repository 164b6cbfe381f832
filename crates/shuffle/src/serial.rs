//! The map side's buffer for records that are not combined (`sort_by_key`,
//! `partition_by`, `repartition`, the sides of a join): Spark's serialized sort buffer
//! (`UnsafeShuffleWriter` / `ShuffleExternalSorter`). Each record is encoded into its
//! partition's pages the moment it arrives and then dropped, so the buffer holds bytes,
//! not objects:
//!
//! - the caller's allocations are freed right after they were made, in the order the
//!   allocator reuses best, instead of millions at once when the buffer is written;
//! - a record costs its encoded length plus a 24-byte entry (a 10-byte key and an
//!   89-byte value: 125 bytes, against ~190 as two `Vec`s in a 48-byte slot), so fewer
//!   spills happen under the same budget, and the estimate is exact (no per-record
//!   size pass);
//! - sorting moves entries — the key's [`sort_prefix`](crate::sort_prefix), where the
//!   record lies — and decodes keys only when two prefixes are equal;
//! - writing a block or a spill run copies the encoded bytes into chunks: nothing is
//!   encoded twice.
//!
//! Pages are [`PAGE`] bytes (a record longer than that gets a page of its own), so the
//! buffer grows without reallocating and copying what it holds, and its memory is what
//! its estimate says.

use std::cmp::Ordering;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{put_field, take_field};
use crate::error::ShuffleError;
use crate::sorter::{Buffer, MergeSpec};

/// Bytes per page.
pub(crate) const PAGE: usize = 64 * 1024;

/// Where one encoded record lies, and its sort prefix. Pages fill in order, so
/// `(page, off)` grows with arrival: the tie-break that makes sorting stable.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    prefix: u64,
    page: u32,
    off: u32,
    len: u32,
}

/// One partition's encoded records: pages and entries (in output order once taken).
#[derive(Default)]
pub(crate) struct EncodedPart {
    pages: Vec<Vec<u8>>,
    entries: Vec<Entry>,
}

impl EncodedPart {
    /// Records held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The encoded bytes of the `i`th record (`i < len()`).
    #[inline]
    pub(crate) fn record(&self, i: usize) -> &[u8] {
        let e = self.entries[i];
        self.bytes(&e)
    }

    #[inline]
    fn bytes(&self, e: &Entry) -> &[u8] {
        let off = e.off as usize;
        &self.pages[e.page as usize][off..off + e.len as usize]
    }

    /// The records decoded, in order.
    pub(crate) fn into_records<K, C>(self) -> impl Iterator<Item = Result<(K, C), ShuffleError>>
    where
        K: DeserializeOwned + 'static,
        C: DeserializeOwned + 'static,
    {
        let mut i = 0;
        std::iter::from_fn(move || {
            if i == self.entries.len() {
                return None;
            }
            let r = decode_record(self.record(i));
            i += 1;
            Some(r)
        })
    }

    /// Appends a record's encoded bytes; its entry carries `prefix`. Returns the bytes
    /// newly allocated (a page, the entries' growth).
    fn push(&mut self, rec: &[u8], prefix: u64) -> Result<u64, ShuffleError> {
        let entries_cap = self.entries.capacity();
        let mut grown = 0u64;
        let fits = self
            .pages
            .last()
            .is_some_and(|p| p.capacity() - p.len() >= rec.len());
        if !fits {
            // A record over a page gets a page of exactly its size.
            let page = Vec::with_capacity(rec.len().max(PAGE));
            grown += page.capacity() as u64;
            self.pages.push(page);
        }
        let page_no = self.pages.len() - 1;
        let page = &mut self.pages[page_no];
        let start = page.len();
        page.extend_from_slice(rec);
        let (Ok(page_no), Ok(off), Ok(len)) = (
            u32::try_from(page_no),
            u32::try_from(start),
            u32::try_from(rec.len()),
        ) else {
            return Err(ShuffleError::Invalid(format!(
                "a shuffle record of {} bytes (or a map task's buffer of {} pages) is \
                 over what one buffer can index (4 GiB)",
                rec.len(),
                self.pages.len()
            )));
        };
        self.entries.push(Entry {
            prefix,
            page: page_no,
            off,
            len,
        });
        grown += ((self.entries.capacity() - entries_cap) * std::mem::size_of::<Entry>()) as u64;
        Ok(grown)
    }

    fn capacity_bytes(&self) -> u64 {
        self.pages.iter().map(|p| p.capacity() as u64).sum::<u64>()
            + (self.entries.capacity() * std::mem::size_of::<Entry>()) as u64
    }
}

/// One record's `(key, combiner)` from its encoded bytes.
pub(crate) fn decode_record<K, C>(raw: &[u8]) -> Result<(K, C), ShuffleError>
where
    K: DeserializeOwned + 'static,
    C: DeserializeOwned + 'static,
{
    let invalid = |e: String| ShuffleError::Invalid(format!("a buffered record: {e}"));
    let (k, rest) = take_field::<K>(raw).map_err(invalid)?;
    let (c, rest) = take_field::<C>(rest).map_err(invalid)?;
    if !rest.is_empty() {
        return Err(invalid(format!("{} stray bytes", rest.len())));
    }
    Ok((k, c))
}

/// Records kept encoded, without combining (see the module doc).
pub(crate) struct SerialBuffer<K, V, C> {
    parts: Vec<EncodedPart>,
    create: fn(V) -> C,
    spec: MergeSpec<K, C>,
    /// Bytes of pages and entries allocated, all partitions.
    bytes: u64,
    /// The record being encoded (reused).
    scratch: Vec<u8>,
}

impl<K, V, C> SerialBuffer<K, V, C> {
    pub(crate) fn new(partitions: u32, create: fn(V) -> C, spec: MergeSpec<K, C>) -> Self {
        SerialBuffer {
            parts: (0..partitions).map(|_| EncodedPart::default()).collect(),
            create,
            spec,
            bytes: 0,
            scratch: Vec::new(),
        }
    }
}

impl<K, V, C> SerialBuffer<K, V, C>
where
    K: DeserializeOwned + 'static,
{
    /// Sorts a partition's entries into output order: by prefix, then (equal prefixes)
    /// by the decoded keys, then by arrival. Unordered buffers keep arrival order.
    fn order(&self, part: &mut EncodedPart) {
        let Some(cmp) = self.spec.ordering else {
            return;
        };
        let mut entries = std::mem::take(&mut part.entries);
        if self.spec.prefix.is_some() {
            // By prefix, then arrival (a total order on entries)...
            entries.sort_unstable_by_key(|e| (e.prefix, e.page, e.off));
            // ...then each run of equal prefixes by key, stably: only the records
            // whose prefixes tie are decoded, each once.
            let mut at = 0;
            while at < entries.len() {
                let p = entries[at].prefix;
                let end = at + entries[at..].iter().take_while(|e| e.prefix == p).count();
                if end - at > 1 {
                    sort_by_decoded_key(part, &mut entries[at..end], cmp);
                }
                at = end;
            }
        } else {
            sort_by_decoded_key(part, &mut entries, cmp);
        }
        part.entries = entries;
    }
}

/// Sorts `entries` (stably) by their records' keys under `cmp`, decoding each key
/// once.
fn sort_by_decoded_key<K: DeserializeOwned + 'static>(
    part: &EncodedPart,
    entries: &mut [Entry],
    cmp: crate::sorter::KeyOrdering<K>,
) {
    let mut keyed: Vec<(Option<K>, Entry)> = entries
        .iter()
        .map(|e| (take_field::<K>(part.bytes(e)).ok().map(|(k, _)| k), *e))
        .collect();
    keyed.sort_by(|(a, _), (b, _)| match (a, b) {
        (Some(x), Some(y)) => cmp(x, y),
        // Unreachable (the buffer encoded these bytes); any consistent order.
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
    });
    for (slot, (_, e)) in entries.iter_mut().zip(keyed) {
        *slot = e;
    }
}

impl<K, V, C> Buffer<K, V, C> for SerialBuffer<K, V, C>
where
    K: Serialize + DeserializeOwned + 'static,
    C: Serialize + DeserializeOwned + 'static,
{
    fn insert(
        &mut self,
        p: u32,
        _hash: u64,
        k: K,
        v: V,
        budget: u64,
    ) -> Result<bool, ShuffleError> {
        let c = (self.create)(v);
        let prefix = match (self.spec.ordering, self.spec.prefix) {
            (Some(_), Some(f)) => f(&k),
            _ => 0,
        };
        let scratch = std::mem::take(&mut self.scratch);
        let encoded = put_field(&k, scratch).and_then(|s| put_field(&c, s));
        // `k` and `c` go now, just after the caller made them.
        drop((k, c));
        let mut rec = encoded.map_err(|e| ShuffleError::Encode(e.to_string()))?;
        let grown = self.parts[p as usize].push(&rec, prefix);
        rec.clear();
        self.scratch = rec;
        self.bytes += grown?;
        Ok(self.bytes > budget)
    }

    fn estimated_bytes(&self) -> u64 {
        self.bytes
    }

    fn take_partition(&mut self, p: u32, for_merge: bool) -> Result<Vec<(K, C)>, ShuffleError> {
        let part = self.take_encoded(p, for_merge)?.unwrap_or_default();
        part.into_records().collect()
    }

    fn take_encoded(
        &mut self,
        p: u32,
        _for_merge: bool,
    ) -> Result<Option<EncodedPart>, ShuffleError> {
        let mut part = std::mem::take(&mut self.parts[p as usize]);
        self.bytes = self.bytes.saturating_sub(part.capacity_bytes());
        self.order(&mut part);
        Ok(Some(part))
    }

    fn reset(&mut self) {
        for p in &mut self.parts {
            *p = EncodedPart::default();
        }
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sorter::KeyOrdering;

    fn spec<K: Ord + 'static, C>(ordering: bool, prefix: bool) -> MergeSpec<K, C> {
        let cmp: KeyOrdering<K> = |a, b| a.cmp(b);
        MergeSpec {
            ordering: ordering.then_some(cmp),
            merge: None,
            hash: None,
            eq: None,
            prefix: if prefix && ordering {
                crate::sort_prefix::<K>(true)
            } else {
                None
            },
        }
    }

    fn run<K>(keys: &[K], ordering: bool, prefix: bool) -> Vec<(K, u32)>
    where
        K: Serialize + DeserializeOwned + Ord + Clone + std::fmt::Debug + 'static,
    {
        let mut b: SerialBuffer<K, u32, u32> = SerialBuffer::new(2, |v| v, spec(ordering, prefix));
        for (i, k) in keys.iter().enumerate() {
            let over = b.insert(1, 0, k.clone(), i as u32, u64::MAX).unwrap();
            assert!(!over);
        }
        assert_eq!(b.take_partition(0, false).unwrap(), vec![]);
        b.take_partition(1, false).unwrap()
    }

    fn expected<K: Ord + Clone>(keys: &[K], ordering: bool) -> Vec<(K, u32)> {
        if ordering {
            crate::sorter::tests::by_compare(keys, true)
        } else {
            keys.iter().cloned().zip(0..).collect()
        }
    }

    proptest::proptest! {
        /// Records come back as given (unordered) or in the stable comparison sort's
        /// order (with and without a prefix), across page boundaries and with records
        /// longer than a page.
        #[test]
        fn records_come_back_in_the_comparison_sorts_order(
            bytes in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..12), 0..300),
            strings in proptest::collection::vec("[a-c\u{e9}]{0,10}", 0..300),
            ints in proptest::collection::vec(-3i64..3, 0..300),
            long in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 0..3 * PAGE / 2), 0..6),
        ) {
            for (ordering, prefix) in [(false, false), (true, false), (true, true)] {
                proptest::prop_assert_eq!(run(&bytes, ordering, prefix), expected(&bytes, ordering));
                proptest::prop_assert_eq!(run(&strings, ordering, prefix), expected(&strings, ordering));
                proptest::prop_assert_eq!(run(&ints, ordering, prefix), expected(&ints, ordering));
                proptest::prop_assert_eq!(run(&long, ordering, prefix), expected(&long, ordering));
            }
        }
    }

    #[test]
    fn the_estimate_is_the_memory_held_and_drops_to_zero() {
        let mut b: SerialBuffer<Vec<u8>, Vec<u8>, Vec<u8>> =
            SerialBuffer::new(3, |v| v, spec(true, true));
        let mut over_at = None;
        for i in 0..20_000u32 {
            let over = b
                .insert(i % 3, 0, i.to_be_bytes().to_vec(), vec![7; 89], 1 << 20)
                .unwrap();
            if over && over_at.is_none() {
                over_at = Some(i);
            }
        }
        let exact: u64 = b.parts.iter().map(|p| p.capacity_bytes()).sum();
        assert_eq!(b.estimated_bytes(), exact);
        // 95 encoded bytes and a 24-byte entry per record, plus the slack of partly
        // filled pages and entry vectors (up to 2x): 1 MiB is passed at 6,000-9,000.
        let at = over_at.unwrap_or(0);
        assert!((5_000..9_000).contains(&at), "over budget at record {at}");
        let part = b.take_encoded(0, false).unwrap().unwrap();
        assert_eq!(part.len(), 6667);
        b.reset();
        assert_eq!(b.estimated_bytes(), 0);
    }
}
