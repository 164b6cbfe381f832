//! An open-addressing hash table of `(u64 key, combiner)` slots for the `String`-keyed
//! combine buffer (`sorter::StrCombineBuffer`): linear probing from the hash's low
//! bits, at most 80 % full, no separate control bytes: a lookup touches one slot
//! (usually one cache line) and nothing else. (Prefetching that slot a few records
//! ahead was tried and measured no faster.)
//!
//! A slot's key is [`EMPTY`] or a key the caller encoded (never `EMPTY`); its
//! combiner is initialized exactly when its key is not `EMPTY`. The table drops the
//! combiners it holds; [`ProbeTable::leak`] forgets them instead (for a buffer whose
//! merge panicked with a combiner moved out).

use std::mem::MaybeUninit;

/// The key of a free slot.
pub(crate) const EMPTY: u64 = u64::MAX;

/// Fewest slots once the table holds anything.
const MIN_SLOTS: usize = 16;

struct Slot<C> {
    key: u64,
    c: MaybeUninit<C>,
}

fn empty_slots<C>(n: usize) -> Vec<Slot<C>> {
    (0..n)
        .map(|_| Slot {
            key: EMPTY,
            c: MaybeUninit::uninit(),
        })
        .collect()
}

/// See the module doc.
pub(crate) struct ProbeTable<C> {
    slots: Vec<Slot<C>>,
    len: usize,
}

impl<C> ProbeTable<C> {
    pub(crate) fn new() -> Self {
        ProbeTable {
            slots: Vec::new(),
            len: 0,
        }
    }

    /// Slots allocated.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot holding the key `eq` accepts, probing from `hash`: `Ok(index)`, or
    /// `Err(())` when no slot holds it.
    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl Fn(u64) -> bool) -> Result<usize, ()> {
        if self.slots.is_empty() {
            return Err(());
        }
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let k = self.slots[i].key;
            if k == EMPTY {
                return Err(());
            }
            if eq(k) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The combiner of occupied slot `i` (from [`find`](Self::find)).
    #[inline]
    pub(crate) fn combiner_mut(&mut self, i: usize) -> Option<&mut C> {
        let slot = self.slots.get_mut(i)?;
        if slot.key == EMPTY {
            return None;
        }
        // SAFETY: a slot whose key is not EMPTY holds an initialized combiner.
        Some(unsafe { slot.c.assume_init_mut() })
    }

    /// Inserts a key [`find`](Self::find) did not find (`key` is not `EMPTY`);
    /// `rehash` gives the hash of a stored key when the table grows.
    pub(crate) fn insert(&mut self, hash: u64, key: u64, c: C, rehash: impl Fn(u64) -> u64) {
        assert!(key != EMPTY, "the empty-slot key cannot be stored");
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.grow(&rehash);
        }
        let i = Self::free_slot(&self.slots, hash);
        self.slots[i] = Slot {
            key,
            c: MaybeUninit::new(c),
        };
        self.len += 1;
    }

    fn free_slot(slots: &[Slot<C>], hash: u64) -> usize {
        let mask = slots.len() - 1;
        let mut i = hash as usize & mask;
        while slots[i].key != EMPTY {
            i = (i + 1) & mask;
        }
        i
    }

    fn grow(&mut self, rehash: &impl Fn(u64) -> u64) {
        let n = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, empty_slots(n));
        for s in old {
            if s.key != EMPTY {
                let i = Self::free_slot(&self.slots, rehash(s.key));
                // Moves the initialized combiner (`old` never drops it: MaybeUninit).
                self.slots[i] = s;
            }
        }
    }

    /// The stored keys and combiners.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &C)> {
        self.slots.iter().filter(|s| s.key != EMPTY).map(|s| {
            // SAFETY: the slot's key is not EMPTY, so its combiner is initialized.
            (s.key, unsafe { s.c.assume_init_ref() })
        })
    }

    /// Every stored key and combiner, moved out; the table is left empty.
    pub(crate) fn drain(&mut self) -> Vec<(u64, C)> {
        let slots = std::mem::take(&mut self.slots);
        self.len = 0;
        slots
            .into_iter()
            .filter(|s| s.key != EMPTY)
            .map(|s| {
                // SAFETY: initialized (key not EMPTY); read once, as `s` is consumed
                // and MaybeUninit does not drop it.
                (s.key, unsafe { s.c.assume_init_read() })
            })
            .collect()
    }

    /// Forgets the table without dropping its combiners (one of them may have been
    /// moved out by a merge that panicked).
    pub(crate) fn leak(mut self) {
        let slots = std::mem::take(&mut self.slots);
        // The combiners are MaybeUninit: dropping the vector frees its memory and
        // drops none of them.
        drop(slots);
        self.len = 0;
    }
}

impl<C> Drop for ProbeTable<C> {
    fn drop(&mut self) {
        for s in &mut self.slots {
            if s.key != EMPTY {
                // SAFETY: initialized (key not EMPTY), dropped once: the table goes.
                unsafe { s.c.assume_init_drop() };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_found_after_growth_and_combiners_dropped_once() {
        let rc = std::rc::Rc::new(());
        let mut t: ProbeTable<(u64, std::rc::Rc<()>)> = ProbeTable::new();
        // A poor hash on purpose (many collisions): probing must still find each key.
        let h = |k: u64| k % 37;
        for k in 0..5000u64 {
            assert!(t.find(h(k), |x| x == k).is_err());
            t.insert(h(k), k, (k, rc.clone()), h);
        }
        assert!(t.capacity() * 4 >= 5000 * 5);
        for k in 0..5000u64 {
            let i = t.find(h(k), |x| x == k).unwrap_or(usize::MAX);
            let c = t.combiner_mut(i).map(|c| c.0);
            assert_eq!(c, Some(k));
        }
        assert_eq!(t.iter().count(), 5000);
        assert_eq!(std::rc::Rc::strong_count(&rc), 5001);
        let drained = t.drain();
        assert_eq!(drained.len(), 5000);
        assert!(t.find(h(1), |x| x == 1).is_err());
        drop(drained);
        assert_eq!(std::rc::Rc::strong_count(&rc), 1);
        let mut t2: ProbeTable<std::rc::Rc<()>> = ProbeTable::new();
        t2.insert(1, 1, rc.clone(), |k| k);
        drop(t2);
        assert_eq!(std::rc::Rc::strong_count(&rc), 1);
        let mut t3: ProbeTable<std::rc::Rc<()>> = ProbeTable::new();
        t3.insert(1, 1, rc.clone(), |k| k);
        t3.leak();
        assert_eq!(std::rc::Rc::strong_count(&rc), 2, "leaked, not dropped");
    }
}
