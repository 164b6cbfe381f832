//! The bytes of a block: a sequence of chunks, each `raw_len: u32 LE, stored_len: u32
//! LE, stored bytes`, where the raw bytes are one batch of records encoded with
//! postcard (as a sequence of `(K, V)`), and the stored bytes are those compressed with
//! LZ4 (block format) — or the raw bytes themselves when compression is off or does
//! not pay (`stored_len == raw_len`). A block's checksum is CRC-32 (IEEE, `crc32fast`)
//! over all its stored bytes, headers included.
//!
//! Batches adapt to aim at [`CHUNK_TARGET`] raw bytes, so a reader holds one chunk per
//! open block or spill run, whatever the record size.

use std::io::{self, Read, Write};
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ShuffleError;

/// Raw bytes a chunk aims at.
pub const CHUNK_TARGET: usize = 64 * 1024;
const HEADER: usize = 8;
/// LZ4 cannot expand more than this; a header claiming more is corrupt.
const MAX_RATIO: u64 = 255;

/// Size, checksum and record count of one block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Stored (compressed) bytes.
    pub len: u64,
    /// CRC-32 of the stored bytes.
    pub crc: u32,
    /// Records in the block.
    pub records: u64,
}

/// Encodes one batch of records (postcard: a length, then each record).
pub(crate) fn encode_batch<T: Serialize>(records: &[T]) -> Result<Vec<u8>, ShuffleError> {
    postcard::to_extend(records, Vec::with_capacity(CHUNK_TARGET + CHUNK_TARGET / 4))
        .map_err(|e| ShuffleError::Encode(e.to_string()))
}

/// Decodes one batch of records.
pub(crate) fn decode_batch<T: DeserializeOwned>(raw: &[u8]) -> Result<Vec<T>, String> {
    match postcard::take_from_bytes::<Vec<T>>(raw) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!(
            "{} stray bytes after the records of a chunk",
            rest.len()
        )),
        Err(e) => Err(format!("records do not decode: {e}")),
    }
}

/// Writes the chunks of one block, counting its length, checksum and records.
pub(crate) struct BlockEncoder {
    compress: bool,
    crc: crc32fast::Hasher,
    len: u64,
    records: u64,
    scratch: Vec<u8>,
    /// Records per batch, adapted to hit [`CHUNK_TARGET`].
    pub(crate) batch: usize,
}

impl BlockEncoder {
    pub(crate) fn new(compress: bool) -> Self {
        BlockEncoder {
            compress,
            crc: crc32fast::Hasher::new(),
            len: 0,
            records: 0,
            scratch: Vec::new(),
            batch: 64,
        }
    }

    /// Encodes `records` as one chunk onto `out`.
    pub(crate) fn write_batch<T: Serialize, W: Write>(
        &mut self,
        out: &mut W,
        records: &[T],
    ) -> Result<(), WriteError> {
        if records.is_empty() {
            return Ok(());
        }
        let raw = encode_batch(records).map_err(WriteError::Shuffle)?;
        if raw.len() < CHUNK_TARGET / 2 && self.batch < 1 << 20 {
            self.batch *= 2;
        } else if raw.len() > CHUNK_TARGET * 2 && self.batch > 1 {
            self.batch /= 2;
        }
        self.records += records.len() as u64;
        self.write_raw(out, &raw)
    }

    fn write_raw<W: Write>(&mut self, out: &mut W, raw: &[u8]) -> Result<(), WriteError> {
        let raw_len = u32::try_from(raw.len()).map_err(|_| {
            WriteError::Shuffle(ShuffleError::Encode(format!(
                "a batch of records encodes to {} bytes, more than a chunk can hold (4 GiB)",
                raw.len()
            )))
        })?;
        let stored: &[u8] = if self.compress {
            self.scratch
                .resize(lz4_flex::block::get_maximum_output_size(raw.len()), 0);
            match lz4_flex::block::compress_into(raw, &mut self.scratch) {
                Ok(n) if n < raw.len() => &self.scratch[..n],
                _ => raw,
            }
        } else {
            raw
        };
        let mut head = [0u8; HEADER];
        head[..4].copy_from_slice(&raw_len.to_le_bytes());
        head[4..].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        self.crc.update(&head);
        self.crc.update(stored);
        out.write_all(&head).map_err(WriteError::Io)?;
        out.write_all(stored).map_err(WriteError::Io)?;
        self.len += (HEADER + stored.len()) as u64;
        Ok(())
    }

    /// The block's meta; the encoder starts over for the next block.
    pub(crate) fn finish(&mut self) -> BlockMeta {
        let crc = std::mem::take(&mut self.crc).finalize();
        BlockMeta {
            len: std::mem::take(&mut self.len),
            crc,
            records: std::mem::take(&mut self.records),
        }
    }
}

/// A write failed: on the file (the caller names it) or in encoding.
pub(crate) enum WriteError {
    Io(io::Error),
    Shuffle(ShuffleError),
}

/// Where chunks come from.
pub(crate) trait ChunkSource {
    /// The next chunk's raw bytes, `None` at the end of the block.
    fn next_raw(&mut self) -> Result<Option<Vec<u8>>, String>;
}

fn parse_head(head: &[u8]) -> Result<(usize, usize), String> {
    let raw = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as u64;
    let stored = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as u64;
    if stored > raw.max(1) * 2 + 64 || raw > stored * MAX_RATIO + 64 {
        return Err(format!(
            "chunk header claims {stored} stored bytes for {raw} raw bytes"
        ));
    }
    Ok((raw as usize, stored as usize))
}

fn unpack(raw_len: usize, stored: &[u8]) -> Result<Vec<u8>, String> {
    if stored.len() == raw_len {
        return Ok(stored.to_vec());
    }
    let mut raw = vec![0u8; raw_len];
    match lz4_flex::block::decompress_into(stored, &mut raw) {
        Ok(n) if n == raw_len => Ok(raw),
        Ok(n) => Err(format!(
            "chunk decompressed to {n} bytes, its header says {raw_len}"
        )),
        Err(e) => Err(format!("chunk does not decompress: {e}")),
    }
}

/// Chunks of a block held in memory.
pub(crate) struct SliceChunks {
    data: Bytes,
    at: usize,
}

impl SliceChunks {
    pub(crate) fn new(data: Bytes) -> Self {
        SliceChunks { data, at: 0 }
    }
}

impl ChunkSource for SliceChunks {
    fn next_raw(&mut self) -> Result<Option<Vec<u8>>, String> {
        let rest = &self.data[self.at..];
        if rest.is_empty() {
            return Ok(None);
        }
        if rest.len() < HEADER {
            return Err(format!("{} stray bytes after the last chunk", rest.len()));
        }
        let (raw, stored) = parse_head(&rest[..HEADER])?;
        let body = rest
            .get(HEADER..HEADER + stored)
            .ok_or_else(|| format!("chunk of {stored} bytes cut short at {}", rest.len()))?;
        let out = unpack(raw, body)?;
        self.at += HEADER + stored;
        Ok(Some(out))
    }
}

/// Chunks of a block read from a file region (spill runs, local map output).
pub(crate) struct ReadChunks<R> {
    inner: R,
    left: u64,
    stored: Vec<u8>,
}

impl<R: Read> ReadChunks<R> {
    pub(crate) fn new(inner: R, len: u64) -> Self {
        ReadChunks {
            inner,
            left: len,
            stored: Vec::new(),
        }
    }
}

impl<R: Read> ChunkSource for ReadChunks<R> {
    fn next_raw(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut head = [0u8; HEADER];
        self.inner
            .read_exact(&mut head)
            .map_err(|e| format!("cannot read a chunk header: {e}"))?;
        let (raw, stored) = parse_head(&head)?;
        if (HEADER + stored) as u64 > self.left {
            return Err(format!(
                "chunk of {stored} bytes runs past the end of its block"
            ));
        }
        self.stored.resize(stored, 0);
        self.inner
            .read_exact(&mut self.stored)
            .map_err(|e| format!("cannot read a chunk: {e}"))?;
        self.left -= (HEADER + stored) as u64;
        unpack(raw, &self.stored).map(Some)
    }
}

/// Records of one block, chunk by chunk.
pub(crate) struct Records<S, T> {
    source: S,
    batch: std::vec::IntoIter<T>,
    failed: bool,
    _t: PhantomData<fn() -> T>,
}

impl<S: ChunkSource, T: DeserializeOwned> Records<S, T> {
    pub(crate) fn new(source: S) -> Self {
        Records {
            source,
            batch: Vec::new().into_iter(),
            failed: false,
            _t: PhantomData,
        }
    }

    /// The next record, or why the block is unreadable.
    pub(crate) fn next_record(&mut self) -> Option<Result<T, String>> {
        loop {
            if let Some(r) = self.batch.next() {
                return Some(Ok(r));
            }
            if self.failed {
                return None;
            }
            match self.source.next_raw() {
                Ok(None) => return None,
                Ok(Some(raw)) => match decode_batch::<T>(&raw) {
                    Ok(v) => self.batch = v.into_iter(),
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                },
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// CRC-32 of `data`.
pub fn checksum(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}
