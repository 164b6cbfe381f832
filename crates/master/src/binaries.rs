//! The bookkeeping of the master's store of uploaded driver binaries (cluster-mode
//! `flint submit`): which binaries, by SHA-256, are stored or being uploaded, how
//! many bytes they take, and which to evict so that the store stays within
//! `master.binary_store.max_size`.
//!
//! Pure: no files, no clock (use is ordered by a counter). The shell that moves the
//! bytes (an upload stream into a temporary name, verified, renamed into place and
//! served on the master's file server by hash) asks it before it accepts an upload
//! ([`BinaryStore::admit`], which reserves the space), tells it the outcome
//! ([`BinaryStore::complete`] / [`BinaryStore::abort`]) and deletes what it says was
//! evicted. Least recently used goes first, never a binary a live driver references
//! ([`BinaryStore::pin`]) nor one being uploaded.

use std::collections::HashMap;

/// Why an upload cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The binary alone is larger than the store.
    #[error(
        "binary {sha256} is {size} bytes, more than the master's binary store holds \
         ({max} bytes); raise master.binary_store.max_size on the master"
    )]
    TooLarge {
        /// The binary's hash.
        sha256: String,
        /// Its size.
        size: u64,
        /// `master.binary_store.max_size`.
        max: u64,
    },
    /// Binaries of live drivers (or uploads in progress) fill the store.
    #[error(
        "no room for binary {sha256} ({size} bytes): {pinned} of the store's {max} bytes \
         hold binaries of live drivers or uploads in progress; wait for drivers to end or \
         raise master.binary_store.max_size"
    )]
    Full {
        /// The binary's hash.
        sha256: String,
        /// Its size.
        size: u64,
        /// Bytes that cannot be evicted.
        pinned: u64,
        /// `master.binary_store.max_size`.
        max: u64,
    },
    /// The binary is being uploaded by someone else already.
    #[error("binary {sha256} is being uploaded already; ask again when that upload ends")]
    Uploading {
        /// The binary's hash.
        sha256: String,
    },
}

/// What [`BinaryStore::lookup`] knows of a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Stored: no need to send it.
    Stored,
    /// An upload of it is in progress.
    Uploading,
    /// Not here: upload it.
    Missing,
}

#[derive(Debug, Clone)]
struct Entry {
    size: u64,
    last_used: u64,
    /// Live drivers referencing it.
    refs: u32,
    stored: bool,
}

/// The store's entries and counters.
#[derive(Debug, Clone)]
pub struct BinaryStore {
    max: u64,
    used: u64,
    clock: u64,
    entries: HashMap<String, Entry>,
    uploads: u64,
    hits: u64,
}

impl BinaryStore {
    /// An empty store holding at most `max` bytes.
    pub fn new(max: u64) -> Self {
        BinaryStore {
            max,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
            uploads: 0,
            hits: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Whether `sha256` is stored (counting a hit and marking it used), being
    /// uploaded, or missing.
    pub fn lookup(&mut self, sha256: &str) -> Lookup {
        let now = self.tick();
        match self.entries.get_mut(sha256) {
            Some(e) if e.stored => {
                e.last_used = now;
                self.hits += 1;
                Lookup::Stored
            }
            Some(_) => Lookup::Uploading,
            None => Lookup::Missing,
        }
    }

    /// Reserves `size` bytes for an upload of `sha256`, evicting least recently
    /// used unreferenced binaries as needed; returns the hashes evicted (the shell
    /// deletes their files). A stored hash needs no upload: `Ok` with nothing
    /// evicted and nothing reserved.
    pub fn admit(&mut self, sha256: &str, size: u64) -> Result<Vec<String>, StoreError> {
        match self.entries.get(sha256) {
            Some(e) if e.stored => return Ok(Vec::new()),
            Some(_) => {
                return Err(StoreError::Uploading {
                    sha256: sha256.to_string(),
                })
            }
            None => {}
        }
        if size > self.max {
            return Err(StoreError::TooLarge {
                sha256: sha256.to_string(),
                size,
                max: self.max,
            });
        }
        let pinned: u64 = self
            .entries
            .values()
            .filter(|e| e.refs > 0 || !e.stored)
            .map(|e| e.size)
            .sum();
        if pinned + size > self.max {
            return Err(StoreError::Full {
                sha256: sha256.to_string(),
                size,
                pinned,
                max: self.max,
            });
        }
        let mut evicted = Vec::new();
        while self.used + size > self.max {
            let Some(victim) = self
                .entries
                .iter()
                .filter(|(_, e)| e.refs == 0 && e.stored)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break; // unreachable: pinned + size <= max
            };
            if let Some(e) = self.entries.remove(&victim) {
                self.used -= e.size;
            }
            evicted.push(victim);
        }
        let now = self.tick();
        self.used += size;
        self.entries.insert(
            sha256.to_string(),
            Entry {
                size,
                last_used: now,
                refs: 0,
                stored: false,
            },
        );
        Ok(evicted)
    }

    /// The upload of `sha256` arrived intact: it is stored (and counted).
    pub fn complete(&mut self, sha256: &str) {
        let now = self.tick();
        if let Some(e) = self.entries.get_mut(sha256) {
            if !e.stored {
                e.stored = true;
                e.last_used = now;
                self.uploads += 1;
            }
        }
    }

    /// The upload of `sha256` failed: its reservation goes.
    pub fn abort(&mut self, sha256: &str) {
        if self.entries.get(sha256).is_some_and(|e| !e.stored) {
            if let Some(e) = self.entries.remove(sha256) {
                self.used -= e.size;
            }
        }
    }

    /// A live driver references `sha256`: it is not evicted until [`Self::unpin`].
    /// `false` when the hash is not stored.
    pub fn pin(&mut self, sha256: &str) -> bool {
        let now = self.tick();
        match self.entries.get_mut(sha256) {
            Some(e) if e.stored => {
                e.refs += 1;
                e.last_used = now;
                true
            }
            _ => false,
        }
    }

    /// A driver referencing `sha256` ended.
    pub fn unpin(&mut self, sha256: &str) {
        if let Some(e) = self.entries.get_mut(sha256) {
            e.refs = e.refs.saturating_sub(1);
        }
    }

    /// Bytes stored or reserved.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Uploads completed (a hash already stored is never uploaded again).
    pub fn uploads(&self) -> u64 {
        self.uploads
    }

    /// Lookups that found the binary stored.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(s: &mut BinaryStore, sha: &str, size: u64) -> Vec<String> {
        let evicted = s.admit(sha, size).unwrap();
        s.complete(sha);
        evicted
    }

    #[test]
    fn a_stored_hash_is_not_uploaded_again() {
        let mut s = BinaryStore::new(100);
        assert_eq!(s.lookup("a"), Lookup::Missing);
        s.admit("a", 10).unwrap();
        assert_eq!(s.lookup("a"), Lookup::Uploading);
        assert!(matches!(
            s.admit("a", 10),
            Err(StoreError::Uploading { .. })
        ));
        s.complete("a");
        assert_eq!(s.lookup("a"), Lookup::Stored);
        assert_eq!(s.admit("a", 10).unwrap(), Vec::<String>::new());
        assert_eq!((s.uploads(), s.hits(), s.used()), (1, 1, 10));
    }

    #[test]
    fn least_recently_used_unpinned_goes_first_and_the_bound_holds() {
        let mut s = BinaryStore::new(100);
        stored(&mut s, "a", 40);
        stored(&mut s, "b", 40);
        assert_eq!(s.lookup("a"), Lookup::Stored); // b is now the oldest
        assert_eq!(stored(&mut s, "c", 40), ["b"]);
        assert!(s.used() <= 100);
        assert!(s.pin("a"));
        // a is pinned: c goes although a is older.
        assert_eq!(s.lookup("c"), Lookup::Stored);
        assert_eq!(stored(&mut s, "d", 60), ["c"]);
        assert_eq!(s.used(), 100);
        let e = s.admit("e", 70).unwrap_err();
        assert!(matches!(e, StoreError::Full { pinned: 40, .. }), "{e}");
        assert!(
            e.to_string().contains("master.binary_store.max_size"),
            "{e}"
        );
        s.unpin("a");
        assert_eq!(stored(&mut s, "e", 70), ["a", "d"]);
        assert_eq!(s.used(), 70);
    }

    #[test]
    fn too_large_and_aborted_uploads_leave_nothing_behind() {
        let mut s = BinaryStore::new(100);
        let e = s.admit("big", 101).unwrap_err();
        assert!(e.to_string().contains("101 bytes"), "{e}");
        s.admit("x", 50).unwrap();
        // An upload in progress holds its reservation.
        assert!(matches!(s.admit("y", 60), Err(StoreError::Full { .. })));
        s.abort("x");
        assert_eq!((s.used(), s.lookup("x")), (0, Lookup::Missing));
        stored(&mut s, "y", 60);
        assert!(!s.pin("x"));
        assert_eq!(s.uploads(), 1);
    }
}
