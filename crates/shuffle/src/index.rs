//! The index file of a map output: `FLSHIDX1`, the partition count (u32 LE), then per
//! reduce partition its block's stored length (u64), CRC-32 (u32) and record count
//! (u64), and last a CRC-32 of everything before it. Blocks lie in the data file in
//! partition order, so offsets are the running sums of the lengths; a map output is
//! complete when its index reads back whole and the data file is exactly as long as
//! the blocks add up to.

use std::io::Write;
use std::path::Path;

use crate::codec::BlockMeta;
use crate::error::ShuffleError;

const MAGIC: &[u8; 8] = b"FLSHIDX1";
const ENTRY: usize = 20;
/// Most reduce partitions of one shuffle (keeps index files and their reads bounded).
pub const MAX_PARTITIONS: u32 = 1 << 24;

/// A complete map output as its index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOutput {
    /// One entry per reduce partition.
    pub blocks: Vec<BlockMeta>,
}

impl MapOutput {
    /// Byte offset of partition `p`'s block in the data file.
    pub fn offset(&self, p: u32) -> u64 {
        self.blocks[..p as usize].iter().map(|b| b.len).sum()
    }

    /// Bytes of the data file.
    pub fn data_len(&self) -> u64 {
        self.blocks.iter().map(|b| b.len).sum()
    }
}

pub(crate) fn encode(blocks: &[BlockMeta]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + blocks.len() * ENTRY);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    for b in blocks {
        out.extend_from_slice(&b.len.to_le_bytes());
        out.extend_from_slice(&b.crc.to_le_bytes());
        out.extend_from_slice(&b.records.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<BlockMeta>, String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("not a flint shuffle index (bad magic or too short)".into());
    }
    let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if n > MAX_PARTITIONS {
        return Err(format!("index claims {n} partitions"));
    }
    let want = 12 + n as usize * ENTRY + 4;
    if bytes.len() != want {
        return Err(format!(
            "index is {} bytes, {n} partitions need {want}",
            bytes.len()
        ));
    }
    let body = &bytes[..want - 4];
    let crc = u32::from_le_bytes([
        bytes[want - 4],
        bytes[want - 3],
        bytes[want - 2],
        bytes[want - 1],
    ]);
    if crc32fast::hash(body) != crc {
        return Err("index checksum mismatch".into());
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Ok((0..n as usize)
        .map(|p| {
            let at = 12 + p * ENTRY;
            BlockMeta {
                len: u64_at(at),
                crc: u32::from_le_bytes([
                    bytes[at + 8],
                    bytes[at + 9],
                    bytes[at + 10],
                    bytes[at + 11],
                ]),
                records: u64_at(at + 12),
            }
        })
        .collect())
}

/// Reads the map output whose index is `index` and data file `data`, checking that it
/// is complete.
pub fn read_map_output(index: &Path, data: &Path) -> Result<MapOutput, ShuffleError> {
    let missing = |reason: String| ShuffleError::MissingOutput {
        path: index.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(index).map_err(|e| missing(format!("cannot read it: {e}")))?;
    let blocks = decode(&bytes).map_err(missing)?;
    let out = MapOutput { blocks };
    let len = std::fs::metadata(data)
        .map_err(|e| {
            missing(format!(
                "its data file {} cannot be read: {e}",
                data.display()
            ))
        })?
        .len();
    if len != out.data_len() {
        return Err(missing(format!(
            "its data file {} is {len} bytes, the index adds up to {}",
            data.display(),
            out.data_len()
        )));
    }
    Ok(out)
}

/// Writes an index to `path` (a temporary name), fsyncing it when `sync`.
pub(crate) fn write(path: &Path, blocks: &[BlockMeta], sync: bool) -> Result<(), ShuffleError> {
    let bytes = encode(blocks);
    let mut f = std::fs::File::create(path).map_err(|e| ShuffleError::io(path, "create", e))?;
    f.write_all(&bytes)
        .map_err(|e| ShuffleError::io(path, "write", e))?;
    if sync {
        f.sync_all()
            .map_err(|e| ShuffleError::io(path, "fsync", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_refuses_damage() {
        let blocks: Vec<BlockMeta> = (0..5)
            .map(|i| BlockMeta {
                len: i * 100,
                crc: i as u32 * 7,
                records: i * 3,
            })
            .collect();
        let bytes = encode(&blocks);
        assert_eq!(decode(&bytes).unwrap(), blocks);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flipping byte {i} goes unnoticed");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let out = MapOutput { blocks };
        assert_eq!(out.offset(3), 300);
        assert_eq!(out.data_len(), 1000);
    }
}
