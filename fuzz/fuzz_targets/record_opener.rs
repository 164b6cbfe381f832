//! Arbitrary bytes, cut at arbitrary points, into the sealed-record opener: it must
//! never panic, never hand out plaintext for bytes it did not seal, and keep any
//! partial record it has not rejected. Genuine records sealed in the same input open
//! to exactly their plaintext.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use flint_rpc::seal::SessionKeys;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Plaintext sealed with the right key and fed first.
    genuine: Vec<u8>,
    /// Bytes appended after the genuine records: forged, truncated or garbage.
    tail: Vec<u8>,
    cuts: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let transcript = [3u8; 32];
    let (mut sealer, _) = SessionKeys::derive(b"fuzz", &transcript, true).split();
    let (_, mut opener) = SessionKeys::derive(b"fuzz", &transcript, false).split();
    let mut wire = Vec::new();
    sealer.seal(&input.genuine, &mut wire).expect("seal");
    let genuine_len = wire.len();
    wire.extend_from_slice(&input.tail);
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| c as usize % (wire.len() + 1))
        .collect();
    cuts.push(wire.len());
    cuts.sort_unstable();
    let mut raw = BytesMut::new();
    let mut plain = BytesMut::new();
    let mut at = 0;
    let mut failed = false;
    for cut in cuts {
        raw.extend_from_slice(&wire[at..cut]);
        at = cut;
        if opener.open(&mut raw, &mut plain).is_err() {
            failed = true;
            break;
        }
    }
    // Whatever the tail, the plaintext is exactly the genuine data (the tail is not
    // sealed with the key, so it can never open) or a prefix of it if a cut fell
    // inside a genuine record when the tail failed.
    assert!(input.genuine.starts_with(&plain), "plaintext that was never sealed");
    if !failed && at >= genuine_len {
        assert_eq!(&plain[..], &input.genuine[..]);
    }
});
