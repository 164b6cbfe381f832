//! The worker's binary cache: the executables that commands with a
//! [`BinarySource`] run (a driver's own binary, for same-binary executors).
//!
//! Binaries live in `<work_dir>/binaries/<sha256>`, named by content hash,
//! so applications share them and the cache goes with the work dir. Before a
//! child whose command has a binary starts, [`BinaryCache::ensure`] makes sure
//! the file is there: when it is not, it is fetched with the worker's
//! [`RpcEnv`] (so with the cluster secret: an unauthenticated peer cannot
//! serve or fetch binaries) from the URI into a temporary name in the same
//! directory, checked against the expected size and SHA-256 (a mismatch is
//! refused naming both hashes), made executable for the worker's user only
//! (0700) and renamed into place. Concurrent launches of one hash fetch it
//! once: each hash has its own async lock, held while it is checked and
//! fetched.
//!
//! The cache is bounded by `worker.binary_cache.max_size`: before a fetch,
//! the least recently used binaries (by modification time, refreshed on every
//! use) are removed until the new one fits, skipping every binary a running
//! child holds a [`BinaryLease`] on. A binary larger than the bound, or one
//! that does not fit beside the binaries in use, fails its launch with a
//! reason naming the setting. The worker's periodic work dir cleanup also
//! removes binaries unused for `worker.cleanup.app_data_ttl`. Leftover
//! temporary files of an earlier worker are removed when the cache opens.
//!
//! A worker in the driver's own process (`local-cluster`) need not fetch the
//! driver's binary: [`BinaryCache::seed`] adopts a local file whose hash the
//! process computed itself, hard-linking it into the cache (a copy, made
//! 0700, when the link fails, e.g. across filesystems, or the file is not
//! executable by its owner: a link's mode is the source's, never changed). It is for in-process callers only:
//! no peer can seed, and the file must still be the one that was hashed (same
//! device, inode, size and mtime), else nothing is seeded and launches fetch
//! as usual. A seeded binary counts as neither a fetch nor a hit; launches
//! that then find it count as hits.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use flint_proto::BinarySource;
use flint_rpc::RpcEnv;
use parking_lot::Mutex;

/// The cache's directory under the work dir.
pub const BINARY_CACHE_DIR: &str = "binaries";

/// The default of `worker.binary_cache.max_size`: 4 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 4 << 30;

/// Prefix of a download under way (never a sha256, which is hex).
const PART_PREFIX: &str = "part-";

/// Why a binary could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// The source is malformed (sha256 not 64 lowercase hex digits, ...).
    #[error(transparent)]
    Invalid(#[from] flint_proto::DescriptionError),
    /// The binary is larger than the whole cache.
    #[error(
        "binary {uri} is {size} bytes, more than worker.binary_cache.max_size ({max} bytes); \
         raise the setting on this worker"
    )]
    TooLarge {
        /// Its URI.
        uri: String,
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// The binaries running children use leave no room for this one.
    #[error(
        "binary {uri} ({size} bytes) does not fit in the binary cache: binaries of running \
         children hold {in_use} of worker.binary_cache.max_size ({max} bytes)"
    )]
    NoRoom {
        /// Its URI.
        uri: String,
        /// Its size.
        size: u64,
        /// Bytes held by binaries in use.
        in_use: u64,
        /// The bound.
        max: u64,
    },
    /// The fetch failed (unreachable, refused, unknown file, cut off, ...);
    /// the RPC layer's reason names the URI.
    #[error("binary not fetched")]
    Fetch {
        /// Its URI.
        uri: String,
        /// The RPC layer's reason.
        source: flint_rpc::RpcError,
    },
    /// The fetched file is not the expected one.
    #[error(
        "binary {uri} is not the expected one: expected sha256 {expected} ({expected_size} bytes), \
         got sha256 {actual} ({actual_size} bytes)"
    )]
    Mismatch {
        /// Its URI.
        uri: String,
        /// The sha256 the command names.
        expected: String,
        /// The size the command names.
        expected_size: u64,
        /// The sha256 of what arrived.
        actual: String,
        /// The size of what arrived.
        actual_size: u64,
    },
    /// A seed named something that is not a sha256.
    #[error("cannot seed the binary cache: {0:?} is not a sha256 (64 lowercase hex digits)")]
    NotAHash(String),
    /// The file to seed is no longer the one that was hashed.
    #[error(
        "cannot seed the binary cache from {}: the file changed since it was hashed \
         (device, inode, size or mtime differ); launches fetch it instead",
        path.display()
    )]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// A file operation in the cache directory failed.
    #[error("binary cache {}: {what}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The operating system's reason.
        source: io::Error,
    },
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> BinaryError {
    let path = path.to_owned();
    move |source| BinaryError::Io { path, what, source }
}

/// What the cache holds in memory: how many children use each binary.
#[derive(Default)]
struct State {
    in_use: HashMap<String, usize>,
}

/// The binary cache of one worker; see the [module docs](self).
pub struct BinaryCache {
    dir: PathBuf,
    max_size: u64,
    state: Mutex<State>,
    /// One lock per hash being checked or fetched.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    fetches: AtomicU64,
    hits: AtomicU64,
    downloads: AtomicU64,
}

impl std::fmt::Debug for BinaryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryCache")
            .field("dir", &self.dir)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

/// A binary held for one child: while it lives, the cache does not remove
/// the file. Drop it when the child has exited.
#[derive(Debug)]
pub struct BinaryLease {
    cache: Arc<BinaryCache>,
    sha256: String,
    path: PathBuf,
}

impl BinaryLease {
    /// The cached binary's path (what `{{BINARY}}` becomes).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BinaryLease {
    fn drop(&mut self) {
        let mut state = self.cache.state.lock();
        if let Some(n) = state.in_use.get_mut(&self.sha256) {
            *n -= 1;
            if *n == 0 {
                state.in_use.remove(&self.sha256);
            }
        }
    }
}

impl BinaryCache {
    /// Opens the cache in `<work_dir>/binaries`, removing downloads an
    /// earlier worker left half done. The directory is created with the first
    /// fetch, so a worker that never fetches leaves its work dir untouched.
    pub fn open(work_dir: &Path, max_size: u64) -> Result<Arc<Self>, BinaryError> {
        let dir = work_dir.join(BINARY_CACHE_DIR);
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().starts_with(PART_PREFIX) {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&dir, "cannot list the directory")(e)),
        }
        Ok(Arc::new(BinaryCache {
            dir,
            max_size,
            state: Mutex::new(State::default()),
            locks: Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
        }))
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Binaries fetched since the worker started.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Launches that found their binary already cached.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Makes `source` available and holds it for one child: a cache hit, or
    /// a fetch with `env` (see the [module docs](self)).
    pub async fn ensure(
        self: &Arc<Self>,
        env: &RpcEnv,
        source: &BinarySource,
    ) -> Result<BinaryLease, BinaryError> {
        source.validate().map_err(BinaryError::Invalid)?;
        if source.size > self.max_size {
            return Err(BinaryError::TooLarge {
                uri: source.uri.clone(),
                size: source.size,
                max: self.max_size,
            });
        }
        let lock = self
            .locks
            .lock()
            .entry(source.sha256.clone())
            .or_default()
            .clone();
        let result = {
            let _guard = lock.lock().await;
            self.ensure_locked(env, source).await
        };
        drop(lock);
        // Forget the lock once nobody waits on it, so the table stays small.
        let mut locks = self.locks.lock();
        if locks
            .get(&source.sha256)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&source.sha256);
        }
        result
    }

    /// Adopts `src`, a local file this process hashed itself (`sha256`,
    /// `size`; `hashed` its metadata taken before hashing), as the cached
    /// binary of that hash, without a fetch: see the [module docs](self).
    /// Returns the cached path. Only for in-process callers (the driver of a
    /// `local-cluster`): the hash is trusted, so it must never come from a
    /// peer. Already cached: nothing done.
    pub async fn seed(
        self: &Arc<Self>,
        src: &Path,
        sha256: &str,
        size: u64,
        hashed: &fs::Metadata,
    ) -> Result<PathBuf, BinaryError> {
        if !is_sha256(sha256) {
            return Err(BinaryError::NotAHash(sha256.to_owned()));
        }
        if size > self.max_size {
            return Err(BinaryError::TooLarge {
                uri: src.display().to_string(),
                size,
                max: self.max_size,
            });
        }
        let lock = self
            .locks
            .lock()
            .entry(sha256.to_owned())
            .or_default()
            .clone();
        let result = {
            let _guard = lock.lock().await;
            let cache = self.clone();
            let (src, sha, hashed) = (src.to_owned(), sha256.to_owned(), hashed.clone());
            tokio::task::spawn_blocking(move || cache.seed_locked(&src, &sha, size, &hashed))
                .await
                .map_err(|e| BinaryError::Io {
                    path: self.dir.clone(),
                    what: "seeding task failed",
                    source: io::Error::other(e.to_string()),
                })?
        };
        drop(lock);
        let mut locks = self.locks.lock();
        if locks.get(sha256).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(sha256);
        }
        result
    }

    /// [`BinaryCache::seed`] under the hash's lock. Blocking.
    fn seed_locked(
        self: &Arc<Self>,
        src: &Path,
        sha256: &str,
        size: u64,
        hashed: &fs::Metadata,
    ) -> Result<PathBuf, BinaryError> {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let same = |m: &fs::Metadata| {
            m.dev() == hashed.dev()
                && m.ino() == hashed.ino()
                && m.len() == size
                && hashed.len() == size
                && m.mtime() == hashed.mtime()
                && m.mtime_nsec() == hashed.mtime_nsec()
        };
        let path = self.dir.join(sha256);
        if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size) {
            return Ok(path);
        }
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir, "cannot create the directory"))?;
        {
            // Held while making room and installing, so no eviction removes it.
            let _lease = self.lease(sha256, &path);
            self.make_room(sha256, size, &src.display().to_string())?;
            let n = self.downloads.fetch_add(1, Ordering::Relaxed);
            let tmp = self
                .dir
                .join(format!("{PART_PREFIX}{sha256}-{}-{n}", std::process::id()));
            // A link shares the source's mode, which is never changed here: only a
            // file its owner may already run is linked, anything else is copied.
            let runnable = hashed.permissions().mode() & 0o100 != 0;
            let linked = if runnable {
                fs::hard_link(src, &tmp)
            } else {
                Err(io::Error::other("not executable"))
            };
            let placed = match linked {
                // The link is the very inode that was hashed, or it is refused.
                Ok(()) => match fs::metadata(&tmp) {
                    Ok(m) if same(&m) => Ok("linked"),
                    Ok(_) => Err(BinaryError::Changed {
                        path: src.to_owned(),
                    }),
                    Err(e) => Err(io_err(&tmp, "cannot read the link")(e)),
                },
                Err(_) => fs::copy(src, &tmp)
                    .map_err(io_err(&tmp, "cannot copy the binary"))
                    .and_then(|_| {
                        // The source did not change while it was copied.
                        match fs::metadata(src) {
                            Ok(m) if same(&m) => Ok(()),
                            Ok(_) => Err(BinaryError::Changed {
                                path: src.to_owned(),
                            }),
                            Err(e) => Err(io_err(src, "cannot read the binary")(e)),
                        }
                    })
                    .and_then(|()| {
                        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
                            .map_err(io_err(&tmp, "cannot make the copy executable"))
                    })
                    .map(|()| "copied"),
            };
            let placed = placed.and_then(|how| {
                fs::rename(&tmp, &path)
                    .map_err(io_err(&path, "cannot move the binary into place"))
                    .map(|()| how)
            });
            match placed {
                Ok(how) => {
                    tracing::info!(
                        sha256,
                        size,
                        "binary cache seeded ({how}) from {}",
                        src.display()
                    );
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        Ok(path)
    }

    async fn ensure_locked(
        self: &Arc<Self>,
        env: &RpcEnv,
        source: &BinarySource,
    ) -> Result<BinaryLease, BinaryError> {
        let path = self.dir.join(&source.sha256);
        // Held from here, so no eviction removes the file once it is there.
        let lease = self.lease(&source.sha256, &path);
        let cached = tokio::fs::metadata(&path)
            .await
            .is_ok_and(|m| m.is_file() && m.len() == source.size);
        if cached {
            // Refresh the mtime: the LRU order.
            let p = path.clone();
            let _ = tokio::task::spawn_blocking(move || touch(&p)).await;
            self.hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(sha256 = %source.sha256, "binary cache hit: {}", path.display());
            return Ok(lease);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(io_err(&self.dir, "cannot create the directory"))?;
        let cache = self.clone();
        let (sha, size, uri) = (source.sha256.clone(), source.size, source.uri.clone());
        tokio::task::spawn_blocking(move || cache.make_room(&sha, size, &uri))
            .await
            .map_err(|e| BinaryError::Io {
                path: self.dir.clone(),
                what: "eviction task failed",
                source: io::Error::other(e.to_string()),
            })??;

        let n = self.downloads.fetch_add(1, Ordering::Relaxed);
        // `fetch_file` downloads next to its destination and renames on success;
        // both names start with PART_PREFIX, so a crash leaves nothing that looks
        // like a binary.
        let tmp = self.dir.join(format!(
            "{PART_PREFIX}{}-{}-{n}",
            source.sha256,
            std::process::id()
        ));
        tracing::info!(sha256 = %source.sha256, size = source.size, "fetching binary {}", source.uri);
        // Room was made for `source.size`: a server announcing more is refused
        // before anything is written.
        let fetched = env.fetch_file_limited(&source.uri, &tmp, source.size).await;
        let result = match fetched {
            Err(e) => Err(BinaryError::Fetch {
                uri: source.uri.clone(),
                source: e,
            }),
            Ok(meta) if meta.sha256_hex() != source.sha256 || meta.size != source.size => {
                Err(BinaryError::Mismatch {
                    uri: source.uri.clone(),
                    expected: source.sha256.clone(),
                    expected_size: source.size,
                    actual: meta.sha256_hex(),
                    actual_size: meta.size,
                })
            }
            Ok(_) => install(&tmp, &path).await,
        };
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        tracing::info!(sha256 = %source.sha256, "binary cached at {}", path.display());
        Ok(lease)
    }

    /// Removes cached binaries not used since `cutoff` that no running child
    /// holds (the periodic work dir cleanup, with `worker.cleanup.app_data_ttl`).
    /// Returns the hashes removed. Blocking.
    pub fn remove_unused_since(&self, cutoff: SystemTime) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let state = self.state.lock();
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_sha256(&name) || state.in_use.contains_key(&name) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed.push(name);
            }
        }
        removed
    }

    fn lease(self: &Arc<Self>, sha256: &str, path: &Path) -> BinaryLease {
        *self
            .state
            .lock()
            .in_use
            .entry(sha256.to_owned())
            .or_default() += 1;
        BinaryLease {
            cache: self.clone(),
            sha256: sha256.to_owned(),
            path: path.to_owned(),
        }
    }

    /// Removes least recently used binaries not in use until `size` more
    /// bytes fit under the bound. Blocking.
    fn make_room(&self, incoming: &str, size: u64, uri: &str) -> Result<(), BinaryError> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir, "cannot list"))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == incoming || !is_sha256(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.push((mtime, name, meta.len()));
            }
        }
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        files.sort();
        // The lock is held while deciding and removing, so no lease on a file
        // can start in between (leases are taken under it).
        let state = self.state.lock();
        for (_, name, len) in &files {
            if total.saturating_add(size) <= self.max_size {
                break;
            }
            if state.in_use.contains_key(name) {
                continue;
            }
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(sha256 = %name, "evicted binary ({len} bytes) from the binary cache");
                    total -= len;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                Err(e) => tracing::warn!("cannot evict {}: {e}", path.display()),
            }
        }
        if total.saturating_add(size) > self.max_size {
            return Err(BinaryError::NoRoom {
                uri: uri.to_owned(),
                size,
                in_use: total,
                max: self.max_size,
            });
        }
        Ok(())
    }
}

/// chmod 0700, then rename into place.
async fn install(tmp: &Path, path: &Path) -> Result<(), BinaryError> {
    use std::os::unix::fs::PermissionsExt as _;
    tokio::fs::set_permissions(tmp, fs::Permissions::from_mode(0o700))
        .await
        .map_err(io_err(tmp, "cannot make the download executable"))?;
    tokio::fs::rename(tmp, path)
        .await
        .map_err(io_err(path, "cannot move the download into place"))
}

/// Sets the mtime to now. Read-only open: a binary a child runs cannot be
/// opened for writing (ETXTBSY); the owner may set times through any fd.
fn touch(path: &Path) {
    if let Ok(f) = fs::File::open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

fn is_sha256(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
