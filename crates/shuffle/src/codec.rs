//! The bytes of a block: a sequence of chunks, each `raw_len: u32 LE, stored_len: u32
//! LE, stored bytes`, where the raw bytes are one batch of records encoded with
//! postcard (as a sequence of `(K, V)`), and the stored bytes are those compressed with
//! LZ4 (block format) — or the raw bytes themselves when compression is off or does
//! not pay (`stored_len == raw_len`). A block's checksum is CRC-32 (IEEE, `crc32fast`)
//! over all its stored bytes, headers included.
//!
//! Batches adapt to aim at [`CHUNK_TARGET`] raw bytes, so a reader holds one chunk per
//! open block or spill run, whatever the record size.

use std::any::{Any, TypeId};
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

/// Whether a field of type `F` is a byte vector, which the batch codec writes itself.
#[inline(always)]
fn is_bytes<F: 'static>() -> bool {
    TypeId::of::<F>() == TypeId::of::<Vec<u8>>()
}

/// Encodes one batch of records: postcard's encoding of `&[(K, C)]` (a length, then each
/// record). When `K` or `C` is `Vec<u8>` the batch is written field by field and the
/// byte vectors directly (varint length, then the bytes — exactly the bytes postcard
/// writes, which serde would feed it one element at a time, ~2 ns a byte); other fields
/// go through postcard.
pub(crate) fn encode_batch<K, C>(records: &[(K, C)]) -> Result<Vec<u8>, ShuffleError>
where
    K: Serialize + 'static,
    C: Serialize + 'static,
{
    let out = Vec::with_capacity(CHUNK_TARGET + CHUNK_TARGET / 4);
    let encode = |e: postcard::Error| ShuffleError::Encode(e.to_string());
    if !is_bytes::<K>() && !is_bytes::<C>() {
        return postcard::to_extend(records, out).map_err(encode);
    }
    let mut out = out;
    put_varint(records.len() as u64, &mut out);
    for (k, c) in records {
        out = put_field(k, out).map_err(encode)?;
        out = put_field(c, out).map_err(encode)?;
    }
    Ok(out)
}

#[inline(always)]
pub(crate) fn put_field<F: Serialize + 'static>(
    f: &F,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, postcard::Error> {
    match (f as &dyn Any).downcast_ref::<Vec<u8>>() {
        Some(b) => {
            put_varint(b.len() as u64, &mut out);
            out.extend_from_slice(b);
            Ok(out)
        }
        None => postcard::to_extend(f, out),
    }
}

/// postcard's unsigned varint: 7 bits a byte, least significant first, the high bit
/// set on every byte but the last.
#[inline]
fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint written by [`put_varint`] (or postcard) off the front of `raw`.
#[inline]
fn take_varint(raw: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut v = 0u64;
    for (i, &b) in raw.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            break;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, &raw[i + 1..]));
        }
    }
    Err("records do not decode: a length is cut short or over 64 bits".to_owned())
}

#[inline(always)]
pub(crate) fn take_field<F: DeserializeOwned + 'static>(raw: &[u8]) -> Result<(F, &[u8]), String> {
    if !is_bytes::<F>() {
        return postcard::take_from_bytes::<F>(raw)
            .map_err(|e| format!("records do not decode: {e}"));
    }
    let (len, rest) = take_varint(raw)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|n| *n <= rest.len())
        .ok_or_else(|| {
            format!(
                "records do not decode: a byte string of {len} bytes with {} left in the chunk",
                rest.len()
            )
        })?;
    let mut slot: Option<F> = None;
    if let Some(s) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>() {
        *s = Some(rest[..len].to_vec());
    }
    match slot {
        Some(f) => Ok((f, &rest[len..])),
        None => Err("records do not decode: a byte-string field of another type".to_owned()),
    }
}

/// Decodes one batch of records written by [`encode_batch`] (or by postcard).
pub(crate) fn decode_batch<K, C>(raw: &[u8]) -> Result<Vec<(K, C)>, String>
where
    K: DeserializeOwned + 'static,
    C: DeserializeOwned + 'static,
{
    let rest = if !is_bytes::<K>() && !is_bytes::<C>() {
        match postcard::take_from_bytes::<Vec<(K, C)>>(raw) {
            Ok((v, [])) => return Ok(v),
            Ok((_, rest)) => rest,
            Err(e) => return Err(format!("records do not decode: {e}")),
        }
    } else {
        let (n, mut rest) = take_varint(raw)?;
        // The announced count is only a hint: capped by the bytes that are here.
        let mut v = Vec::with_capacity(usize::try_from(n).unwrap_or(usize::MAX).min(rest.len()));
        for _ in 0..n {
            let (k, r) = take_field::<K>(rest)?;
            let (c, r) = take_field::<C>(r)?;
            v.push((k, c));
            rest = r;
        }
        if rest.is_empty() {
            return Ok(v);
        }
        rest
    };
    Err(format!(
        "{} stray bytes after the records of a chunk",
        rest.len()
    ))
}

/// Writes the chunks of one block, counting its length, checksum and records.
pub(crate) struct BlockEncoder {
    compress: bool,
    crc: crc32fast::Hasher,
    len: u64,
    records: u64,
    scratch: Vec<u8>,
    /// Raw bytes of the chunk being put together by [`write_encoded`](Self::write_encoded).
    raw: Vec<u8>,
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
            raw: Vec::new(),
            batch: 64,
        }
    }

    /// Encodes `records` as one chunk onto `out`.
    pub(crate) fn write_batch<K: Serialize + 'static, C: Serialize + 'static, W: Write>(
        &mut self,
        out: &mut W,
        records: &[(K, C)],
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

    /// Writes the records of `part` (already encoded, in its order) as chunks of about
    /// [`CHUNK_TARGET`] raw bytes onto `out`: the bytes are copied, not re-encoded.
    pub(crate) fn write_encoded<W: Write>(
        &mut self,
        out: &mut W,
        part: &crate::serial::EncodedPart,
    ) -> Result<(), WriteError> {
        let n = part.len();
        let mut raw = std::mem::take(&mut self.raw);
        let mut i = 0;
        let mut result = Ok(());
        while i < n {
            let mut j = i;
            let mut bytes = 0;
            while j < n && (j == i || bytes + part.record(j).len() <= CHUNK_TARGET) {
                bytes += part.record(j).len();
                j += 1;
            }
            raw.clear();
            put_varint((j - i) as u64, &mut raw);
            for r in i..j {
                raw.extend_from_slice(part.record(r));
            }
            self.records += (j - i) as u64;
            result = self.write_raw(out, &raw);
            if result.is_err() {
                break;
            }
            i = j;
        }
        self.raw = raw;
        result
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

/// Records of one block, chunk by chunk. Records with a byte-string field are decoded
/// one at a time as they are asked for (so a merge of many blocks touches each
/// record's bytes while they are in cache, and holds one raw chunk per block rather
/// than a decoded batch); others a chunk at a time, by postcard.
pub(crate) struct Records<S, K, C> {
    source: S,
    batch: std::vec::IntoIter<(K, C)>,
    /// The current chunk's raw bytes, the offset of its next record and how many
    /// records it has left (byte-string records).
    raw: Vec<u8>,
    at: usize,
    left: u64,
    failed: bool,
    _t: PhantomData<fn() -> (K, C)>,
}

impl<S: ChunkSource, K: DeserializeOwned + 'static, C: DeserializeOwned + 'static>
    Records<S, K, C>
{
    pub(crate) fn new(source: S) -> Self {
        Records {
            source,
            batch: Vec::new().into_iter(),
            raw: Vec::new(),
            at: 0,
            left: 0,
            failed: false,
            _t: PhantomData,
        }
    }

    /// The next record, or why the block is unreadable.
    pub(crate) fn next_record(&mut self) -> Option<Result<(K, C), String>> {
        let lazy = is_bytes::<K>() || is_bytes::<C>();
        loop {
            if self.failed {
                return None;
            }
            if lazy {
                if self.left > 0 {
                    return Some(self.take_one());
                }
                if self.at != self.raw.len() {
                    self.failed = true;
                    return Some(Err(format!(
                        "{} stray bytes after the records of a chunk",
                        self.raw.len() - self.at
                    )));
                }
            } else if let Some(r) = self.batch.next() {
                return Some(Ok(r));
            }
            let raw = match self.source.next_raw() {
                Ok(None) => return None,
                Ok(Some(raw)) => raw,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            if lazy {
                // The announced count is only a hint: decoding stops at the bytes.
                match take_varint(&raw) {
                    Ok((n, rest)) => {
                        self.at = raw.len() - rest.len();
                        self.left = n;
                        self.raw = raw;
                    }
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            } else {
                match decode_batch::<K, C>(&raw) {
                    Ok(v) => self.batch = v.into_iter(),
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    /// Decodes the record at `at` of the current chunk.
    fn take_one(&mut self) -> Result<(K, C), String> {
        let rest = &self.raw[self.at..];
        let decoded = take_field::<K>(rest).and_then(|(k, r)| {
            let (c, r) = take_field::<C>(r)?;
            Ok((k, c, r.len()))
        });
        match decoded {
            Ok((k, c, left_over)) => {
                self.at = self.raw.len() - left_over;
                self.left -= 1;
                Ok((k, c))
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

/// CRC-32 of `data`.
pub fn checksum(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same_as_postcard<K, C>(records: &[(K, C)])
    where
        K: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
        C: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
    {
        let ours = encode_batch(records).unwrap();
        let theirs = postcard::to_allocvec(records).unwrap();
        assert_eq!(ours, theirs, "the byte-vector path writes postcard's bytes");
        let back: Vec<(K, C)> = decode_batch(&theirs).unwrap();
        assert_eq!(back, records);
    }

    proptest! {
        #[test]
        fn byte_vector_records_encode_as_postcard_does(
            a in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(any::<u8>(), 0..300)), 0..40),
            b in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..200), any::<u64>()), 0..40),
            c in proptest::collection::vec((".{0,20}", proptest::collection::vec(any::<u8>(), 0..200)), 0..40),
            d in proptest::collection::vec((".{0,20}", any::<u64>()), 0..40),
        ) {
            same_as_postcard(&a);
            same_as_postcard(&b);
            same_as_postcard(&c);
            same_as_postcard(&d);
        }

        /// Cut or garbled chunks are errors, never panics or huge allocations.
        #[test]
        fn damaged_byte_vector_chunks_fail_cleanly(
            recs in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..50),
                proptest::collection::vec(any::<u8>(), 0..50)), 1..20),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let raw = encode_batch(&recs).unwrap();
            let short = &raw[..cut.index(raw.len())];
            prop_assert!(decode_batch::<Vec<u8>, Vec<u8>>(short).is_err());
            let mut bad = raw.clone();
            let at = flip.index(bad.len());
            bad[at] ^= 0x80;
            let _ = decode_batch::<Vec<u8>, Vec<u8>>(&bad);
        }
    }

    /// Chunks handed to [`Records`] from memory.
    struct Chunks(std::vec::IntoIter<Vec<u8>>);
    impl ChunkSource for Chunks {
        fn next_raw(&mut self) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.next())
        }
    }

    fn read_back<K, C>(chunks: Vec<Vec<u8>>) -> Vec<Result<(K, C), String>>
    where
        K: DeserializeOwned + 'static,
        C: DeserializeOwned + 'static,
    {
        let mut r = Records::<_, K, C>::new(Chunks(chunks.into_iter()));
        std::iter::from_fn(|| r.next_record()).collect()
    }

    proptest! {
        /// Records decoded one at a time (byte-string fields) or a chunk at a time
        /// come back whole and in order across chunks; a cut chunk or stray bytes
        /// after a chunk's records end the block with one error.
        #[test]
        fn records_read_back_across_chunks_and_damage_ends_the_block(
            batches in proptest::collection::vec(proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..40), any::<u64>()), 0..12), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let chunks: Vec<Vec<u8>> = batches.iter().map(|b| encode_batch(b).unwrap()).collect();
            let want: Vec<(Vec<u8>, u64)> = batches.concat();
            let got: Vec<(Vec<u8>, u64)> = read_back::<Vec<u8>, u64>(chunks.clone())
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(&got, &want);
            let ints: Vec<Vec<(u64, u64)>> = batches
                .iter()
                .map(|b| b.iter().map(|(k, v)| (k.len() as u64, *v)).collect())
                .collect();
            let int_chunks = ints.iter().map(|b| encode_batch(b).unwrap()).collect();
            let got: Vec<(u64, u64)> = read_back::<u64, u64>(int_chunks)
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(got, ints.concat());

            // The last chunk cut short (or one stray byte added): every record before
            // the damage, then one error, then nothing.
            let mut damaged = chunks.clone();
            let last = damaged.last_mut().unwrap();
            let whole = last.len();
            let at = cut.index(whole);
            if at == 0 || batches.last().unwrap().is_empty() {
                last.push(0);
            } else {
                last.truncate(at);
            }
            let back = read_back::<Vec<u8>, u64>(damaged);
            let errors = back.iter().filter(|r| r.is_err()).count();
            prop_assert_eq!(errors, 1);
            prop_assert!(back.last().unwrap().is_err());
            let ok: Vec<(Vec<u8>, u64)> = back.into_iter().filter_map(Result::ok).collect();
            prop_assert_eq!(&ok[..], &want[..ok.len()]);
        }
    }

    #[test]
    fn varints_match_postcard_at_every_width() {
        for v in [
            0u64,
            1,
            127,
            128,
            255,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            put_varint(v, &mut ours);
            assert_eq!(ours, postcard::to_allocvec(&v).unwrap(), "{v}");
            assert_eq!(take_varint(&ours).unwrap(), (v, &[][..]));
        }
        // Eleven bytes, or a tenth byte over 1: refused.
        assert!(take_varint(&[0xff; 11]).is_err());
        assert!(
            take_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).is_err()
        );
        // A byte string longer than the chunk: refused, nothing allocated for it.
        let mut raw = Vec::new();
        put_varint(1, &mut raw);
        put_varint(u64::MAX >> 1, &mut raw);
        assert!(decode_batch::<Vec<u8>, u64>(&raw)
            .unwrap_err()
            .contains("byte string"));
        // A count far beyond the bytes: a clean error, not a giant reservation.
        let mut raw = Vec::new();
        put_varint(u64::MAX, &mut raw);
        assert!(decode_batch::<Vec<u8>, Vec<u8>>(&raw).is_err());
    }
}
