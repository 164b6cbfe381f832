//! Sealed records: integrity and confidentiality for every byte after the handshake.
//!
//! When both peers prove the cluster secret (and TLS is not in use), the handshake
//! derives one key per direction ([`SessionKeys`]). From then on the byte stream in
//! each direction is a sequence of records:
//!
//! ```text
//! len: u32 BE (ciphertext + 16-byte tag, at most MAX_RECORD + 16) ‖ ciphertext ‖ tag
//! ```
//!
//! sealed with AES-256-GCM under the direction's key, the length prefix as associated
//! data and a nonce that is the record's sequence number in that direction. A record
//! that was tampered with, replayed, reordered, dropped (the next one then has the
//! wrong number) or injected without the key fails to open, and the connection closes.
//! Records carry at most [`MAX_RECORD`] bytes of the frame stream, so a large message
//! is opened piece by piece as it arrives and many small ones share a record.

use bytes::{Buf, BytesMut};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;
use zeroize::Zeroizing;

/// Most plaintext bytes in one record.
pub const MAX_RECORD: usize = 64 * 1024;
/// Bytes of a record's length prefix.
pub const RECORD_LEN_BYTES: usize = 4;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;

/// Why a record could not be opened. The connection that sent it is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The announced record length is impossible.
    #[error("sealed record of {0} bytes is outside 16..={max} (not a flint peer, or corrupted)", max = MAX_RECORD + TAG_LEN)]
    BadLength(usize),
    /// Authentication failed: tampered, replayed, reordered, dropped or injected.
    #[error("sealed record {0} failed authentication (tampered, replayed, reordered or injected)")]
    Forged(u64),
    /// The sequence number ran out (2^64 records); never happens in practice.
    #[error("record sequence number exhausted")]
    Exhausted,
}

/// The two directions' keys of one connection, derived by the handshake.
pub struct SessionKeys {
    pub(crate) send: Sealer,
    pub(crate) recv: Opener,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl SessionKeys {
    /// Derives both directions' keys with HKDF-SHA256 from the secret, salted with the
    /// handshake transcript's hash (which covers both nonces). `client` says which
    /// side this is: the client sends with the first key, the server with the second.
    pub fn derive(secret: &[u8], transcript: &[u8; 32], client: bool) -> SessionKeys {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, transcript);
        let prk = salt.extract(secret);
        let mut okm = Zeroizing::new([0u8; 64]);
        let info = [b"flint/2 session keys".as_slice()];
        // 64 bytes is far below HKDF-SHA256's limit of 255 × 32, so neither call fails.
        if let Ok(o) = prk.expand(&info, Len(64)) {
            let _ = o.fill(&mut okm[..]);
        }
        let (c2s, s2c) = okm.split_at(32);
        let (send, recv) = if client { (c2s, s2c) } else { (s2c, c2s) };
        SessionKeys {
            send: Sealer {
                key: key(send),
                seq: 0,
            },
            recv: Opener {
                key: key(recv),
                seq: 0,
            },
        }
    }

    /// Splits into the sending and the receiving half.
    pub fn split(self) -> (Sealer, Opener) {
        (self.send, self.recv)
    }
}

fn key(bytes: &[u8]) -> LessSafeKey {
    // AES-256 takes exactly 32 bytes, which is what callers pass.
    match UnboundKey::new(&AES_256_GCM, bytes) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("a 32-byte AES-256 key"),
    }
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals the outgoing byte stream of one direction.
pub struct Sealer {
    key: LessSafeKey,
    seq: u64,
}

impl Sealer {
    /// Appends `plain`, cut into records of at most [`MAX_RECORD`] bytes, to `out`.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        self.seal_parts(&[plain], out)
    }

    /// Appends the concatenation of `parts`, cut into records of at most
    /// [`MAX_RECORD`] bytes (a record may span parts), to `out`.
    pub fn seal_parts(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), SealError> {
        let mut left: usize = parts.iter().map(|p| p.len()).sum();
        out.reserve(left + left.div_ceil(MAX_RECORD) * (RECORD_LEN_BYTES + TAG_LEN));
        let (mut part, mut at) = (0usize, 0usize);
        while left > 0 {
            let n = left.min(MAX_RECORD);
            let seq = self.seq;
            self.seq = seq.checked_add(1).ok_or(SealError::Exhausted)?;
            let len = ((n + TAG_LEN) as u32).to_be_bytes();
            out.extend_from_slice(&len);
            let start = out.len();
            let mut need = n;
            while need > 0 {
                let p = parts[part];
                let take = (p.len() - at).min(need);
                out.extend_from_slice(&p[at..at + take]);
                at += take;
                need -= take;
                if at == p.len() {
                    part += 1;
                    at = 0;
                }
            }
            let tag = self
                .key
                .seal_in_place_separate_tag(nonce(seq), Aad::from(len), &mut out[start..])
                .map_err(|_| SealError::Exhausted)?;
            out.extend_from_slice(tag.as_ref());
            left -= n;
        }
        Ok(())
    }

    /// Records sealed so far.
    pub fn sequence(&self) -> u64 {
        self.seq
    }
}

/// Opens the incoming byte stream of one direction.
pub struct Opener {
    key: LessSafeKey,
    seq: u64,
}

impl Opener {
    /// Opens every complete record at the front of `raw`, appending the plaintext to
    /// `plain`; a trailing partial record stays in `raw`.
    pub fn open(&mut self, raw: &mut BytesMut, plain: &mut BytesMut) -> Result<(), SealError> {
        loop {
            if raw.len() < RECORD_LEN_BYTES {
                return Ok(());
            }
            let len_bytes = [raw[0], raw[1], raw[2], raw[3]];
            let len = u32::from_be_bytes(len_bytes) as usize;
            if !(TAG_LEN..=MAX_RECORD + TAG_LEN).contains(&len) {
                return Err(SealError::BadLength(len));
            }
            if raw.len() < RECORD_LEN_BYTES + len {
                return Ok(());
            }
            raw.advance(RECORD_LEN_BYTES);
            let mut record = raw.split_to(len);
            let seq = self.seq;
            let opened = self
                .key
                .open_in_place(nonce(seq), Aad::from(len_bytes), &mut record)
                .map_err(|_| SealError::Forged(seq))?;
            plain.extend_from_slice(opened);
            self.seq = seq.checked_add(1).ok_or(SealError::Exhausted)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair() -> (Sealer, Opener) {
        let t = [7u8; 32];
        let c = SessionKeys::derive(b"secret", &t, true);
        let s = SessionKeys::derive(b"secret", &t, false);
        (c.send, s.recv)
    }

    fn open_all(o: &mut Opener, bytes: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut raw = BytesMut::from(bytes);
        let mut plain = BytesMut::new();
        o.open(&mut raw, &mut plain)?;
        assert!(raw.is_empty(), "whole records only");
        Ok(plain.to_vec())
    }

    #[test]
    fn round_trip_and_directions_differ() {
        let (mut s, mut o) = pair();
        let mut out = Vec::new();
        s.seal(b"hello", &mut out).unwrap();
        assert_ne!(&out[4..9], b"hello", "sealed bytes are not the plaintext");
        assert_eq!(open_all(&mut o, &out).unwrap(), b"hello");
        // The client's receiving key is not its sending key.
        let t = [7u8; 32];
        let mut c = SessionKeys::derive(b"secret", &t, true);
        let mut out = Vec::new();
        s.seal(b"x", &mut out).unwrap();
        assert!(open_all(&mut c.recv, &out).is_err());
    }

    #[test]
    fn large_input_is_cut_into_records() {
        let (mut s, mut o) = pair();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        s.seal(&data, &mut out).unwrap();
        assert_eq!(s.sequence(), 4);
        assert_eq!(open_all(&mut o, &out).unwrap(), data);
    }

    #[test]
    fn tampered_replayed_reordered_dropped_and_injected_records_fail() {
        let (mut s, _) = pair();
        let mut r1 = Vec::new();
        s.seal(b"one", &mut r1).unwrap();
        let mut r2 = Vec::new();
        s.seal(b"two", &mut r2).unwrap();

        let (_, mut o) = pair();
        let mut bad = r1.clone();
        bad[6] ^= 1;
        assert_eq!(open_all(&mut o, &bad), Err(SealError::Forged(0)));

        let (_, mut o) = pair();
        assert!(open_all(&mut o, &r1).is_ok());
        assert_eq!(open_all(&mut o, &r1), Err(SealError::Forged(1)), "replay");

        let (_, mut o) = pair();
        assert_eq!(
            open_all(&mut o, &r2),
            Err(SealError::Forged(0)),
            "reorder / drop"
        );

        let other = SessionKeys::derive(b"other secret", &[7u8; 32], true);
        let (mut forger, _) = other.split();
        let mut f = Vec::new();
        forger.seal(b"inject", &mut f).unwrap();
        let (_, mut o) = pair();
        assert_eq!(open_all(&mut o, &f), Err(SealError::Forged(0)), "injected");

        let (_, mut o) = pair();
        assert_eq!(
            open_all(&mut o, &[0, 1, 0, 17]),
            Err(SealError::BadLength(65_553))
        );
        let mut len_flipped = r1.clone();
        len_flipped[3] ^= 1; // still a plausible length, but bound as associated data
        let mut raw = BytesMut::from(&len_flipped[..]);
        raw.extend_from_slice(&[0; 8]);
        let mut plain = BytesMut::new();
        let (_, mut o) = pair();
        assert!(o.open(&mut raw, &mut plain).is_err());
    }

    proptest! {
        #[test]
        fn any_chunking_opens_the_same_bytes(data in proptest::collection::vec(any::<u8>(), 0..3000),
                                             cuts in proptest::collection::vec(0usize..4000, 0..8)) {
            let (mut s, mut o) = pair();
            let mut sealed = Vec::new();
            for part in data.chunks(700) {
                s.seal(part, &mut sealed).unwrap();
            }
            let mut raw = BytesMut::new();
            let mut plain = BytesMut::new();
            let mut at = 0;
            let mut cuts = cuts;
            cuts.sort();
            for c in cuts.into_iter().chain([sealed.len()]) {
                let c = c.min(sealed.len()).max(at);
                raw.extend_from_slice(&sealed[at..c]);
                at = c;
                o.open(&mut raw, &mut plain).unwrap();
            }
            prop_assert_eq!(&plain[..], &data[..]);
        }

        #[test]
        fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let (_, mut o) = pair();
            let mut raw = BytesMut::from(&bytes[..]);
            let mut plain = BytesMut::new();
            let _ = o.open(&mut raw, &mut plain);
            prop_assert!(plain.is_empty());
        }
    }

    // The tests below were written against surviving mutants (docs/testing.md).

    #[test]
    fn session_keys_never_show_in_debug_output() {
        let keys = SessionKeys::derive(b"secret", &[7u8; 32], true);
        assert_eq!(format!("{keys:?}"), "SessionKeys(<redacted>)");
    }

    #[test]
    fn keys_depend_on_secret_transcript_and_direction() {
        let sealed = |secret: &[u8], t: [u8; 32]| {
            let (mut s, _) = SessionKeys::derive(secret, &t, true).split();
            let mut out = Vec::new();
            s.seal(b"probe", &mut out).unwrap();
            out
        };
        let reference = sealed(b"secret", [7; 32]);
        let (_, mut o) = pair();
        assert_eq!(open_all(&mut o, &reference).unwrap(), b"probe");
        assert_ne!(
            reference,
            sealed(b"other", [7; 32]),
            "the secret is not used"
        );
        assert_ne!(
            reference,
            sealed(b"secret", [8; 32]),
            "the transcript is not used"
        );
        // The client's receiving key is not its sending key, from the first record on.
        let (_, mut own) = SessionKeys::derive(b"secret", &[7u8; 32], true).split();
        assert_eq!(open_all(&mut own, &reference), Err(SealError::Forged(0)));
    }

    #[test]
    fn parts_seal_like_their_concatenation() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i * 7) as u8).collect();
        let (mut s1, _) = pair();
        let (mut s2, mut o) = pair();
        let mut whole = Vec::new();
        s1.seal(&data, &mut whole).unwrap();
        let mut parts = Vec::new();
        let (a, rest) = data.split_at(3);
        let (b, c) = rest.split_at(70_000);
        s2.seal_parts(&[a, &[], b, c], &mut parts).unwrap();
        assert_eq!(whole, parts, "the same records, whatever the parts");
        assert_eq!(open_all(&mut o, &parts).unwrap(), data);
    }
}
