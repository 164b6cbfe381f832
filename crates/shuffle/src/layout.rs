//! Where shuffle files live: `<local_dir>/flint-shuffle/<app_id>/<shuffle_id>/<map_id>.data`
//! and `.index`, the local dir picked by a fixed hash of the map id over `local.dir`
//! (Spark's `DiskBlockManager` spreads by file name the same way), and the cleanup
//! of one shuffle or of a whole application.
//!
//! Ids are checked before any path is built from them: an application id is 1 to 128
//! characters of `[A-Za-z0-9._-]` not starting with a dot, so no request can name a
//! path outside the layout (`..`, `/`, absolute paths).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ShuffleError;

/// Name of the directory flint keeps under each local dir.
pub const ROOT: &str = "flint-shuffle";

/// One reduce partition's block of one map output: Spark's `shuffle_<s>_<m>_<p>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockRef {
    /// The shuffle.
    pub shuffle: u32,
    /// The map output (the map task's partition index).
    pub map: u32,
    /// The reduce partition.
    pub partition: u32,
}

impl fmt::Display for BlockRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shuffle_{}_{}_{}",
            self.shuffle, self.map, self.partition
        )
    }
}

/// Checks that `app` can name a directory: 1 to 128 characters of `[A-Za-z0-9._-]`,
/// not starting with a dot.
pub fn check_app_id(app: &str) -> Result<(), ShuffleError> {
    let ok = !app.is_empty()
        && app.len() <= 128
        && !app.starts_with('.')
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ShuffleError::Invalid(format!(
            "application id {:?} cannot name a shuffle directory: expected 1 to 128 characters of A-Z a-z 0-9 . _ - not starting with a dot",
            app.chars().take(160).collect::<String>()
        )))
    }
}

/// The shuffle files of one application under a set of local dirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dirs: Vec<PathBuf>,
    app: String,
}

impl Layout {
    /// The layout of `app` under `local_dirs` (at least one).
    pub fn new(local_dirs: &[PathBuf], app: &str) -> Result<Layout, ShuffleError> {
        check_app_id(app)?;
        if local_dirs.is_empty() {
            return Err(ShuffleError::Invalid(
                "no local dir: set local.dir to one or more directories".into(),
            ));
        }
        Ok(Layout {
            dirs: local_dirs.to_vec(),
            app: app.to_string(),
        })
    }

    /// The application id.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The local dirs.
    pub fn local_dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The application's directory under local dir `i`.
    pub fn app_dir(&self, i: usize) -> PathBuf {
        app_dir(&self.dirs[i % self.dirs.len()], &self.app)
    }

    /// Which local dir map output `map` goes to: a fixed hash, the same in every process.
    pub fn dir_index(&self, shuffle: u32, map: u32) -> usize {
        let h = (u64::from(shuffle) << 32 | u64::from(map)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((h >> 32) % self.dirs.len() as u64) as usize
    }

    /// The directory holding shuffle `shuffle`'s files of map `map`.
    pub fn shuffle_dir(&self, shuffle: u32, map: u32) -> PathBuf {
        self.app_dir(self.dir_index(shuffle, map))
            .join(shuffle.to_string())
    }

    /// The data file of a map output.
    pub fn data_path(&self, shuffle: u32, map: u32) -> PathBuf {
        self.shuffle_dir(shuffle, map).join(format!("{map}.data"))
    }

    /// The index file of a map output.
    pub fn index_path(&self, shuffle: u32, map: u32) -> PathBuf {
        self.shuffle_dir(shuffle, map).join(format!("{map}.index"))
    }

    /// A temporary or spill file of a map task attempt, beside its output.
    pub(crate) fn temp_path(&self, shuffle: u32, map: u32, attempt: u64, what: &str) -> PathBuf {
        self.shuffle_dir(shuffle, map)
            .join(format!("{map}.{attempt}.{}.{what}.tmp", std::process::id()))
    }

    /// A spill file of a reduce task's aggregation (beside the shuffle's map outputs).
    pub(crate) fn reduce_temp_path(
        &self,
        shuffle: u32,
        partition: u32,
        attempt: u64,
        what: &str,
    ) -> PathBuf {
        self.shuffle_dir(shuffle, partition).join(format!(
            "reduce-{partition}.{attempt}.{}.{what}.tmp",
            std::process::id()
        ))
    }

    /// Removes every file of shuffle `shuffle` in every local dir.
    pub fn remove_shuffle(&self, shuffle: u32) -> Result<(), ShuffleError> {
        for i in 0..self.dirs.len() {
            remove_dir(&self.app_dir(i).join(shuffle.to_string()))?;
        }
        Ok(())
    }

    /// Removes every shuffle file of the application in every local dir.
    pub fn remove_app(&self) -> Result<(), ShuffleError> {
        remove_app(&self.dirs, &self.app)
    }
}

/// `<local_dir>/flint-shuffle/<app>`.
pub fn app_dir(local_dir: &Path, app: &str) -> PathBuf {
    local_dir.join(ROOT).join(app)
}

/// Removes every shuffle file of application `app` under `local_dirs` (what the
/// worker's shuffle service does when an application ends).
pub fn remove_app(local_dirs: &[PathBuf], app: &str) -> Result<(), ShuffleError> {
    check_app_id(app)?;
    for d in local_dirs {
        remove_dir(&app_dir(d, app))?;
    }
    Ok(())
}

fn remove_dir(path: &Path) -> Result<(), ShuffleError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ShuffleError::io(path, "remove", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_that_could_escape_are_refused() {
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "/abs",
            "../x",
            ".hidden",
            "a\0b",
            &"x".repeat(129),
        ] {
            assert!(check_app_id(bad).is_err(), "{bad:?}");
        }
        for good in ["app-20260101000000-0001", "local-1", "a.b_c"] {
            check_app_id(good).unwrap();
        }
    }

    #[test]
    fn maps_spread_over_dirs_the_same_way_everywhere() {
        let dirs: Vec<PathBuf> = (0..3).map(|i| PathBuf::from(format!("/d{i}"))).collect();
        let l = Layout::new(&dirs, "app-1").unwrap();
        let used: std::collections::BTreeSet<usize> = (0..64).map(|m| l.dir_index(0, m)).collect();
        assert_eq!(used.len(), 3, "64 maps use every dir");
        assert_eq!(
            l.data_path(2, 7),
            dirs[l.dir_index(2, 7)].join("flint-shuffle/app-1/2/7.data")
        );
        assert_eq!(l.index_path(2, 7).file_name().unwrap(), "7.index");
    }
}
