//! The errors of the shuffle: typed so that the scheduler can tell a lost or corrupt
//! map output (re-run the map task) from a full disk (fail this attempt, retry
//! elsewhere) from a bug in the caller.

use std::io;
use std::path::PathBuf;

use crate::layout::BlockRef;

/// What went wrong in a shuffle write, read or fetch.
#[derive(Debug, thiserror::Error)]
pub enum ShuffleError {
    /// The disk under `path` is full (ENOSPC) or the file grew past the process's file
    /// size limit (EFBIG, `RLIMIT_FSIZE`). Nothing of the output is left under its final
    /// names; free space in `local.dir` or point it at a bigger disk.
    #[error("shuffle file {path} could not be written: the disk is full or the file size limit was reached ({source}); free space under local.dir or point it at a bigger disk")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Any other I/O error on `path` while doing `op`.
    #[error("shuffle file {path}: cannot {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("create", "write", "rename", …).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A block's bytes do not match their checksum or cannot be decoded: the map output
    /// is corrupt and must be recomputed.
    #[error("shuffle block {block} is corrupt: {reason}")]
    Corrupt {
        /// The block.
        block: BlockRef,
        /// What did not match.
        reason: String,
    },
    /// A map output's index is missing, incomplete or inconsistent with its data file.
    #[error("map output {path} is missing or incomplete: {reason}")]
    MissingOutput {
        /// The index file.
        path: PathBuf,
        /// Why it is not usable.
        reason: String,
    },
    /// A record could not be encoded (a type whose serde form the encoding refuses).
    #[error("cannot encode a shuffle record: {0}")]
    Encode(String),
    /// A bad argument from the caller (an id outside the layout, a partition out of
    /// range, a partition function that returned a partition ≥ the number of
    /// partitions).
    #[error("invalid shuffle request: {0}")]
    Invalid(String),
    /// Fetching a block failed: the map output it names must be treated as lost.
    #[error(transparent)]
    FetchFailed(#[from] FetchFailed),
}

impl ShuffleError {
    /// `Io` or `DiskFull`, by the OS error.
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT) => {
                ShuffleError::DiskFull { path, source }
            }
            _ => ShuffleError::Io { path, op, source },
        }
    }

    /// Whether the error means the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, ShuffleError::DiskFull { .. })
    }
}

/// A block could not be fetched from `address`: Spark's `FetchFailed`. The map
/// output `(shuffle, map)` must be marked lost and its map task re-run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fetch of shuffle {shuffle} map {map} partition {partition} from {address} failed: {reason}"
)]
pub struct FetchFailed {
    /// The server the block was to come from (`flint://host:port`, or `local` for a
    /// file read directly).
    pub address: String,
    /// The shuffle.
    pub shuffle: u32,
    /// The map output.
    pub map: u32,
    /// The first reduce partition of the failed request.
    pub partition: u32,
    /// What went wrong.
    pub reason: String,
}
