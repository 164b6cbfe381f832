//! Arbitrary bytes, cut into arbitrary chunks, through `FrameCodec` the way
//! `FramedRead` drives it (`decode` after every chunk, `decode_eof` at the end).
//!
//! Input: `max` (u16 BE) ‖ chunking seed (u16 BE) ‖ the byte stream. Seed 0 feeds the
//! stream in one piece.
//!
//! Checks: no panic; no frame longer than `max`; the frames and the final outcome
//! (clean end, `TooLarge`, `Truncated` with its numbers) are exactly those of a
//! one-pass reference parser, whatever the chunking; `split_frame` never panics on a
//! frame, and a header it accepts re-encodes to a frame that splits to the same thing.
#![no_main]

use bytes::{Bytes, BytesMut};
use flint_rpc::frame::{encode_raw, split_frame, FrameCodec, FrameError, LEN_BYTES};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

#[derive(Debug, PartialEq, Eq)]
enum End {
    Clean,
    TooLarge { len: usize, max: usize },
    Truncated { have: usize, need: usize },
}

/// The reference: one pass over the whole stream.
fn model(stream: &[u8], max: usize) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        if rest.len() < LEN_BYTES {
            let have = rest.len();
            return (
                frames,
                End::Truncated {
                    have,
                    need: LEN_BYTES,
                },
            );
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > max {
            return (frames, End::TooLarge { len, max });
        }
        if rest.len() < LEN_BYTES + len {
            let have = rest.len();
            return (
                frames,
                End::Truncated {
                    have,
                    need: LEN_BYTES + len,
                },
            );
        }
        frames.push(&rest[LEN_BYTES..LEN_BYTES + len]);
        rest = &rest[LEN_BYTES + len..];
    }
}

/// Chunk lengths from a seed: 1..=cap bytes each, cap = 1 + low byte of the seed.
fn chunks(stream: &[u8], seed: u16) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![stream];
    }
    let cap = 1 + (seed & 0xff) as u32;
    let mut state = 0x9e37_79b9u32 ^ (seed as u32) << 8;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + state % cap) as usize;
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

fn end_of(e: FrameError) -> End {
    match e {
        FrameError::TooLarge { len, max } => End::TooLarge { len, max },
        FrameError::Truncated { have, need } => End::Truncated { have, need },
        FrameError::Io(e) => panic!("decoder invented an i/o error: {e}"),
    }
}

fn check_frame(frame: &Bytes, max: usize) {
    assert!(
        frame.len() <= max,
        "frame of {} bytes over max {max}",
        frame.len()
    );
    let Ok((header, body)) = split_frame(frame) else {
        return;
    };
    assert!(frame.ends_with(&body), "body is not the frame's tail");
    let again = encode_raw(&header, &body).expect("an accepted header re-encodes");
    let again = Bytes::from(again).slice(LEN_BYTES..);
    let (h2, b2) = split_frame(&again).expect("a re-encoded frame splits");
    assert_eq!(h2, header);
    assert_eq!(b2, body);
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let max = u16::from_be_bytes([data[0], data[1]]) as usize;
    let seed = u16::from_be_bytes([data[2], data[3]]);
    let stream = &data[4..];

    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::new();
    let mut frames: Vec<Bytes> = Vec::new();
    let end = 'run: {
        for chunk in chunks(stream, seed) {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => break 'run end_of(e),
                }
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break 'run End::Clean,
                Err(e) => break 'run end_of(e),
            }
        }
    };

    for f in &frames {
        check_frame(f, max);
    }
    let (want_frames, want_end) = model(stream, max);
    assert_eq!(end, want_end);
    assert_eq!(frames.len(), want_frames.len());
    for (got, want) in frames.iter().zip(want_frames) {
        assert_eq!(&got[..], want);
    }
});
