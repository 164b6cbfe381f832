//! Headers and bodies built with `arbitrary`, encoded with `encode_raw` (and
//! `encode_frame` for a byte-string body), cut at arbitrary points, decoded with
//! `FrameCodec` and split with `split_frame`.
//!
//! Checks: encode → decode is the identity for the header and the body, whatever the
//! chunking; the length prefix is the frame's length; a codec whose max is exactly the
//! frame's length accepts it and one byte less rejects it as `TooLarge`.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use flint_rpc::frame::{
    encode_frame, encode_raw, split_frame, FailureKind, FrameCodec, FrameError, Header, LEN_BYTES,
};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

#[derive(Debug, Arbitrary)]
enum H {
    OneWay {
        to: String,
        protocol: u32,
    },
    Request {
        id: u64,
        to: String,
        protocol: u32,
        reply: u32,
    },
    Response {
        id: u64,
        ty: u32,
    },
    Failure {
        id: u64,
        kind: u8,
        message: String,
    },
    StreamOpen {
        sid: u64,
        to: String,
        pull: bool,
        window: u32,
    },
    StreamData {
        sid: u64,
        opener: bool,
    },
    StreamCredit {
        sid: u64,
        opener: bool,
        chunks: u32,
    },
    StreamEnd {
        sid: u64,
        opener: bool,
        error: Option<String>,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    header: H,
    body: Vec<u8>,
    /// Use `encode_frame` with the body as a postcard byte string instead of raw bytes.
    typed: bool,
    cuts: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let header = match &input.header {
        H::OneWay { to, protocol } => Header::OneWay {
            to,
            protocol: *protocol,
        },
        H::Request {
            id,
            to,
            protocol,
            reply,
        } => Header::Request {
            id: *id,
            to,
            protocol: *protocol,
            reply: *reply,
        },
        H::Response { id, ty } => Header::Response { id: *id, ty: *ty },
        H::Failure { id, kind, message } => Header::Failure {
            id: *id,
            kind: match kind % 3 {
                0 => FailureKind::Handler,
                1 => FailureKind::NotDelivered,
                _ => FailureKind::Busy,
            },
            message,
        },
        H::StreamOpen {
            sid,
            to,
            pull,
            window,
        } => Header::StreamOpen {
            sid: *sid,
            to,
            pull: *pull,
            window: *window,
        },
        H::StreamData { sid, opener } => Header::StreamData {
            sid: *sid,
            opener: *opener,
        },
        H::StreamCredit {
            sid,
            opener,
            chunks,
        } => Header::StreamCredit {
            sid: *sid,
            opener: *opener,
            chunks: *chunks,
        },
        H::StreamEnd { sid, opener, error } => Header::StreamEnd {
            sid: *sid,
            opener: *opener,
            error: error.as_deref(),
        },
    };
    let frame = if input.typed {
        encode_frame(&header, &input.body[..]).expect("encode_frame")
    } else {
        encode_raw(&header, &input.body).expect("encode_raw")
    };
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len() - LEN_BYTES, "length prefix");

    // Feed it in pieces at the given cut points.
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| c as usize % (frame.len() + 1))
        .collect();
    cuts.push(frame.len());
    cuts.sort_unstable();
    let mut codec = FrameCodec::new(len);
    let mut buf = BytesMut::new();
    let mut got = None;
    let mut at = 0;
    for cut in cuts {
        buf.extend_from_slice(&frame[at..cut]);
        at = cut;
        if let Some(f) = codec.decode(&mut buf).expect("a valid frame decodes") {
            assert!(got.is_none(), "one frame decoded twice");
            got = Some(f);
        }
    }
    let f = got.expect("the whole frame was fed but nothing decoded");
    assert!(buf.is_empty(), "bytes left over");
    assert_eq!(codec.decode_eof(&mut buf).expect("clean end"), None);

    let (h2, body) = split_frame(&f).expect("split_frame");
    assert_eq!(h2, header);
    if input.typed {
        let b: &[u8] = postcard::from_bytes(&body).expect("body decodes");
        assert_eq!(b, &input.body[..]);
    } else {
        assert_eq!(&body[..], &input.body[..]);
    }

    if len > 0 {
        let mut small = FrameCodec::new(len - 1);
        let mut buf = BytesMut::from(&frame[..]);
        match small.decode(&mut buf) {
            Err(FrameError::TooLarge { len: l, max }) => assert!(l == len && max == len - 1),
            other => panic!("max one below the frame's length: {other:?}"),
        }
    }
});
