//! The wire format. Every frame is a 4-byte big-endian length followed by that many
//! bytes. After the handshake a frame's bytes are a postcard-encoded [`Header`] followed
//! by the message body (itself postcard), so the body can be handed on without copying
//! and decoded by the endpoint that owns its type.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;

/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 4;

/// A framing violation: the connection that produced it is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame announced a length over the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes (rpc.message.max_size)")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({have} of {need} bytes received)")]
    Truncated {
        /// Bytes of the frame that arrived (prefix included).
        have: usize,
        /// Bytes the frame needed (prefix included).
        need: usize,
    },
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into length-prefixed frames of at most `max` bytes.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    /// A codec accepting frames of up to `max` bytes (prefix excluded).
    pub fn new(max: usize) -> Self {
        FrameCodec { max }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if src.len() < LEN_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        // Never reserve room for the announced length: the buffer grows with the
        // bytes that actually arrive, so a peer cannot make us allocate by announcing.
        if src.len() < LEN_BYTES + len {
            return Ok(None);
        }
        src.advance(LEN_BYTES);
        Ok(Some(src.split_to(len).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let need = if src.len() >= LEN_BYTES {
                    LEN_BYTES + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
                } else {
                    LEN_BYTES
                };
                Err(FrameError::Truncated {
                    have: src.len(),
                    need,
                })
            }
        }
    }
}

/// What kind of failure a [`Header::Failure`] reports; the caller maps it to an
/// [`AskError`](crate::AskError) variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The request never reached a handler (unknown endpoint, stopped endpoint).
    NotDelivered,
    /// The handler ran, or tried to, and failed.
    Handler,
    /// The endpoint's inbox was full; the request was not handled. Retry later.
    Busy,
}

/// The header of every post-handshake frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Header<'a> {
    /// A one-way message for endpoint `to`, whose body is of protocol `protocol`.
    OneWay {
        /// Endpoint name.
        to: &'a str,
        /// Protocol id (hash of the endpoint message type's name).
        protocol: u32,
    },
    /// A request expecting one reply with the same id.
    Request {
        /// Caller-chosen id, echoed in the reply.
        id: u64,
        /// Endpoint name.
        to: &'a str,
        /// Protocol id.
        protocol: u32,
        /// Type id ([`type_id_of`]) of the reply the caller expects.
        reply: u32,
    },
    /// The reply to request `id`; the body is the reply value.
    Response {
        /// The request's id.
        id: u64,
        /// Type id of the value in the body.
        ty: u32,
    },
    /// Request `id` failed.
    Failure {
        /// The request's id.
        id: u64,
        /// Whether it reached a handler.
        kind: FailureKind,
        /// Human-readable reason.
        message: &'a str,
    },
    /// Opens bulk stream `sid` with the stream handler `to`. With `pull` the opener
    /// consumes (the handler produces, the body is the request) and grants `window`
    /// chunks of credit; otherwise the opener produces and the body describes the data.
    StreamOpen {
        /// Stream id, chosen by the opener.
        sid: u64,
        /// Stream handler name.
        to: &'a str,
        /// Whether the opener is the consumer.
        pull: bool,
        /// Initial credit, in chunks, granted by the opener when it consumes.
        window: u32,
    },
    /// One chunk of stream `sid` (the body).
    StreamData {
        /// Stream id.
        sid: u64,
        /// Whether the sender of this frame opened the stream.
        opener: bool,
    },
    /// The consumer of stream `sid` is ready for `chunks` more chunks.
    StreamCredit {
        /// Stream id.
        sid: u64,
        /// Whether the sender of this frame opened the stream.
        opener: bool,
        /// Additional chunks allowed.
        chunks: u32,
    },
    /// Stream `sid` ended: the producer finished (`error` None) or either side gave up.
    StreamEnd {
        /// Stream id.
        sid: u64,
        /// Whether the sender of this frame opened the stream.
        opener: bool,
        /// Why it failed, if it did.
        error: Option<&'a str>,
    },
}

/// Why a frame's header could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame header: {0}")]
pub struct HeaderError(#[from] postcard::Error);

/// Splits a frame into its header and the body that follows it.
pub fn split_frame(frame: &Bytes) -> Result<(Header<'_>, Bytes), HeaderError> {
    let (header, rest) = postcard::take_from_bytes::<Header<'_>>(frame)?;
    let body = frame.slice(frame.len() - rest.len()..);
    Ok((header, body))
}

/// Encodes a complete frame — length prefix, header, body — in one buffer of exactly
/// its size (a queued frame holds no slack the queue's byte budget does not see).
pub fn encode_frame<T: Serialize + ?Sized>(
    header: &Header<'_>,
    body: &T,
) -> Result<Vec<u8>, postcard::Error> {
    let len = postcard::experimental::serialized_size(header)?
        + postcard::experimental::serialized_size(body)?;
    let mut buf = Vec::with_capacity(LEN_BYTES + len);
    buf.extend_from_slice(&frame_len(len)?);
    let buf = postcard::to_extend(header, buf)?;
    postcard::to_extend(body, buf)
}

/// Encodes a frame whose body is already-encoded bytes.
pub fn encode_raw(header: &Header<'_>, body: &[u8]) -> Result<Vec<u8>, postcard::Error> {
    let mut buf = encode_head(header, body.len())?;
    buf.extend_from_slice(body);
    Ok(buf)
}

/// Encodes the length prefix and header of a frame whose `body_len` bytes of body
/// follow separately (written from their own buffer, without copying them here).
pub fn encode_head(header: &Header<'_>, body_len: usize) -> Result<Vec<u8>, postcard::Error> {
    let head = postcard::experimental::serialized_size(header)?;
    let mut buf = Vec::with_capacity(LEN_BYTES + head + body_len);
    buf.extend_from_slice(&frame_len(head + body_len)?);
    postcard::to_extend(header, buf)
}

fn frame_len(len: usize) -> Result<[u8; LEN_BYTES], postcard::Error> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| postcard::Error::SerializeBufferFull)
}

/// Type id of a reply type: the [`protocol_id`] of its Rust type name. Peers built
/// from the same code agree on it; a peer built from other code that answers with a
/// different type is caught instead of decoded as garbage.
pub fn type_id_of<T: ?Sized>() -> u32 {
    protocol_id(std::any::type_name::<T>())
}

/// Protocol id of a message type name: 32-bit FNV-1a, computed at compile time.
pub const fn protocol_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Result<Vec<Bytes>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf)? {
            out.push(f);
        }
        if let Some(f) = codec.decode_eof(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn rejects_oversized_and_truncated_frames() {
        let mut c = FrameCodec::new(16);
        let e = decode_all(&mut c, &[0, 0, 0, 17, 1]).unwrap_err();
        assert!(
            matches!(e, FrameError::TooLarge { len: 17, max: 16 }),
            "{e}"
        );
        let e = decode_all(&mut c, &[0, 0, 0, 8, 1, 2]).unwrap_err();
        assert!(
            matches!(e, FrameError::Truncated { have: 6, need: 12 }),
            "{e}"
        );
        let e = decode_all(&mut c, &[0, 0]).unwrap_err();
        assert!(matches!(e, FrameError::Truncated { .. }), "{e}");
    }

    #[test]
    fn header_and_body_round_trip() {
        let h = Header::Request {
            id: 42,
            to: "master",
            protocol: protocol_id("x"),
            reply: type_id_of::<u64>(),
        };
        let frame = encode_frame(&h, &("hello", 7u32)).unwrap();
        let mut c = FrameCodec::new(1 << 20);
        let frames = decode_all(&mut c, &frame).unwrap();
        assert_eq!(frames.len(), 1);
        let (h2, body) = split_frame(&frames[0]).unwrap();
        assert_eq!(h2, h);
        let v: (String, u32) = postcard::from_bytes(&body).unwrap();
        assert_eq!(v, ("hello".to_string(), 7));
    }

    fn arb_header() -> impl Strategy<Value = (u8, u64, String, u32, bool)> {
        (
            0u8..8,
            any::<u64>(),
            "[a-z-]{0,20}",
            any::<u32>(),
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..256) {
            let mut c = FrameCodec::new(max);
            if let Ok(frames) = decode_all(&mut c, &bytes) {
                for f in frames {
                    prop_assert!(f.len() <= max);
                    let _ = split_frame(&f);
                }
            }
        }

        #[test]
        fn frames_round_trip_in_any_chunking((kind, id, name, proto, ok) in arb_header(),
                                             body in proptest::collection::vec(any::<u8>(), 0..300),
                                             cut in 0usize..400) {
            let h = match kind {
                0 => Header::OneWay { to: &name, protocol: proto },
                1 => Header::Request { id, to: &name, protocol: proto, reply: proto ^ 1 },
                2 => Header::Response { id, ty: proto },
                3 => Header::Failure { id, kind: if ok { FailureKind::Handler } else { FailureKind::Busy }, message: &name },
                4 => Header::StreamOpen { sid: id, to: &name, pull: ok, window: proto },
                5 => Header::StreamData { sid: id, opener: ok },
                6 => Header::StreamCredit { sid: id, opener: ok, chunks: proto },
                _ => Header::StreamEnd { sid: id, opener: ok, error: ok.then_some(name.as_str()) },
            };
            let frame = encode_raw(&h, &body).unwrap();
            let cut = cut.min(frame.len());
            let mut c = FrameCodec::new(1 << 16);
            let mut buf = BytesMut::from(&frame[..cut]);
            let first = c.decode(&mut buf).unwrap();
            buf.extend_from_slice(&frame[cut..]);
            let f = match first { Some(f) => f, None => c.decode(&mut buf).unwrap().unwrap() };
            let (h2, b2) = split_frame(&f).unwrap();
            prop_assert_eq!(h2, h);
            prop_assert_eq!(&b2[..], &body[..]);
        }
    }
}
