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

/// The header of a request or a reply, read without serde by [`peek`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peeked<'a> {
    /// A [`Header::Request`] whose endpoint name is the bytes `to` (not checked to be
    /// UTF-8: the caller compares them with a name it knows).
    Request {
        id: u64,
        to: &'a [u8],
        protocol: u32,
        reply: u32,
        /// Where the body starts in the frame.
        body_at: usize,
    },
    /// A [`Header::Response`].
    Response { id: u64, ty: u32, body_at: usize },
}

/// Postcard's variant tag of [`Header::Request`] (`peek_reads_requests_and_replies`
/// checks it).
const REQUEST_TAG: u8 = 1;

/// Reads the header of a request or reply frame the way postcard would, without serde:
/// the two kinds of frame a pipelined ask is made of. `None` for any other frame and
/// for anything unusual (an over-long variant tag, a truncated field); the caller
/// then decodes with [`split_frame`], which decides. Where this returns a header,
/// postcard decodes the same fields (a property test checks).
pub(crate) fn peek(frame: &[u8]) -> Option<Peeked<'_>> {
    let mut at = 1;
    match *frame.first()? {
        REQUEST_TAG => {
            let id = varint_u64(frame, &mut at)?;
            let len = usize::try_from(varint_u64(frame, &mut at)?).ok()?;
            let to = frame.get(at..at.checked_add(len)?)?;
            at += len;
            let protocol = varint_u32(frame, &mut at)?;
            let reply = varint_u32(frame, &mut at)?;
            Some(Peeked::Request {
                id,
                to,
                protocol,
                reply,
                body_at: at,
            })
        }
        RESPONSE_TAG => {
            let id = varint_u64(frame, &mut at)?;
            let ty = varint_u32(frame, &mut at)?;
            Some(Peeked::Response {
                id,
                ty,
                body_at: at,
            })
        }
        _ => None,
    }
}

/// Postcard's varint decoding of a `u64` (what it accepts, it accepts here).
fn varint_u64(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for i in 0..10 {
        let b = *buf.get(*at)?;
        *at += 1;
        out |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (i < 9 || b <= 0x01).then_some(out);
        }
    }
    None
}

/// Postcard's varint decoding of a `u32`.
fn varint_u32(buf: &[u8], at: &mut usize) -> Option<u32> {
    let mut out = 0u32;
    for i in 0..5 {
        let b = *buf.get(*at)?;
        *at += 1;
        out |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (i < 4 || b <= 0x0f).then_some(out);
        }
    }
    None
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

/// Appends a complete frame — length prefix, header, body — to `buf` (one pass, no
/// allocation of its own); returns the frame's length, prefix included. On an error
/// `buf` is left as it was.
pub fn encode_frame_into<T: Serialize + ?Sized>(
    header: &Header<'_>,
    body: &T,
    buf: &mut Vec<u8>,
) -> Result<usize, postcard::Error> {
    struct Ext<'a>(&'a mut Vec<u8>);
    impl Extend<u8> for Ext<'_> {
        fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
            self.0.extend(iter)
        }
    }
    let start = buf.len();
    buf.extend_from_slice(&[0; LEN_BYTES]);
    let written = postcard::to_extend(header, Ext(buf))
        .and_then(|w| postcard::to_extend(body, w))
        .map(|_| ())
        .and_then(|()| frame_len(buf.len() - start - LEN_BYTES));
    match written {
        Ok(len) => {
            buf[start..start + LEN_BYTES].copy_from_slice(&len);
            Ok(buf.len() - start)
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

/// The header of requests to one endpoint, encoded once: only the id differs from
/// one request to the next, so [`RequestHead::encode_into`] writes the variant tag,
/// the id and the rest as bytes, not through serde. It produces exactly the bytes of
/// [`encode_frame_into`] with a [`Header::Request`] (a test checks).
pub(crate) struct RequestHead {
    tag: u8,
    rest: Vec<u8>,
}

impl RequestHead {
    /// The header of requests to `to` of protocol `protocol` expecting `reply`.
    pub(crate) fn new(to: &str, protocol: u32, reply: u32) -> Result<Self, postcard::Error> {
        let h = postcard::to_allocvec(&Header::Request {
            id: 0,
            to,
            protocol,
            reply,
        })?;
        // [variant tag][id 0 as one varint byte][to, protocol, reply]
        match h.as_slice() {
            [tag, 0, rest @ ..] => Ok(RequestHead {
                tag: *tag,
                rest: rest.to_vec(),
            }),
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    /// Appends the frame of request `id` with `body` to `buf`; returns its length,
    /// prefix included. On an error `buf` is left as it was.
    pub(crate) fn encode_into<T: Serialize + ?Sized>(
        &self,
        id: u64,
        body: &T,
        buf: &mut Vec<u8>,
    ) -> Result<usize, postcard::Error> {
        encode_fast(buf, body, |buf| {
            buf.push(self.tag);
            put_varint(buf, id);
            buf.extend_from_slice(&self.rest);
        })
    }
}

/// Postcard's variant tag of [`Header::Response`] (a test checks it).
const RESPONSE_TAG: u8 = 2;

/// Appends the frame of the reply to request `id`, whose value of type id `ty` is
/// `body`, to `buf`: the bytes of [`encode_frame_into`] with a [`Header::Response`],
/// the header written without serde. Returns the frame's length, prefix included.
pub(crate) fn encode_response_into<T: Serialize + ?Sized>(
    id: u64,
    ty: u32,
    body: &T,
    buf: &mut Vec<u8>,
) -> Result<usize, postcard::Error> {
    encode_fast(buf, body, |buf| {
        buf.push(RESPONSE_TAG);
        put_varint(buf, id);
        put_varint(buf, u64::from(ty));
    })
}

/// Postcard's varint (LEB128) of an unsigned integer.
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a frame: a length prefix, the header `head` writes, `body`; on an error
/// `buf` is left as it was.
fn encode_fast<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    body: &T,
    head: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, postcard::Error> {
    struct Ext<'a>(&'a mut Vec<u8>);
    impl Extend<u8> for Ext<'_> {
        fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
            self.0.extend(iter)
        }
    }
    let start = buf.len();
    buf.extend_from_slice(&[0; LEN_BYTES]);
    head(buf);
    let written = postcard::to_extend(body, Ext(buf))
        .map(|_| ())
        .and_then(|()| frame_len(buf.len() - start - LEN_BYTES));
    match written {
        Ok(len) => {
            buf[start..start + LEN_BYTES].copy_from_slice(&len);
            Ok(buf.len() - start)
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
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

    proptest! {
        #[test]
        fn a_request_head_encodes_as_serde_does(id in any::<u64>(), to in ".{0,200}", protocol in any::<u32>(), reply in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let head = RequestHead::new(&to, protocol, reply).unwrap();
            let mut fast = vec![9, 9];
            let n = head.encode_into(id, &body, &mut fast).unwrap();
            let mut slow = vec![9, 9];
            let m = encode_frame_into(&Header::Request { id, to: &to, protocol, reply }, &body, &mut slow).unwrap();
            prop_assert_eq!(n, m);
            prop_assert_eq!(&fast, &slow);
            prop_assert_eq!(&slow[2..], &encode_frame(&Header::Request { id, to: &to, protocol, reply }, &body).unwrap()[..]);
        }

        #[test]
        fn a_response_encodes_as_serde_does(id in any::<u64>(), ty in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut fast = Vec::new();
            let n = encode_response_into(id, ty, &body, &mut fast).unwrap();
            let slow = encode_frame(&Header::Response { id, ty }, &body).unwrap();
            prop_assert_eq!(n, slow.len());
            prop_assert_eq!(fast, slow);
        }
    }

    /// What [`peek`] read, as the header postcard reads from the same bytes.
    fn peeked_as_header<'a>(p: &Peeked<'a>) -> (Header<'a>, usize) {
        match *p {
            Peeked::Request {
                id,
                to,
                protocol,
                reply,
                body_at,
            } => (
                Header::Request {
                    id,
                    to: std::str::from_utf8(to).unwrap_or("\u{fffd}not utf-8"),
                    protocol,
                    reply,
                },
                body_at,
            ),
            Peeked::Response { id, ty, body_at } => (Header::Response { id, ty }, body_at),
        }
    }

    proptest! {
        #[test]
        fn peek_agrees_with_postcard_on_any_bytes(tag in 0u8..4, rest in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = vec![tag];
            bytes.extend_from_slice(&rest);
            let frame = Bytes::from(bytes);
            if let Some(p) = peek(&frame) {
                let (want, at) = peeked_as_header(&p);
                match split_frame(&frame) {
                    Ok((h, body)) => {
                        prop_assert_eq!(h, want);
                        prop_assert_eq!(frame.len() - body.len(), at);
                    }
                    // Postcard refuses only a name that is not UTF-8.
                    Err(_) => {
                        let bad_name = matches!(p, Peeked::Request { to, .. } if std::str::from_utf8(to).is_err());
                        prop_assert!(bad_name, "postcard refused what peek read: {:?}", p);
                    }
                }
            }
        }

        #[test]
        fn peek_reads_requests_and_replies(id in any::<u64>(), to in ".{0,40}", protocol in any::<u32>(), reply in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..40), response in any::<bool>()) {
            let h = if response { Header::Response { id, ty: reply } } else { Header::Request { id, to: &to, protocol, reply } };
            let framed = encode_raw(&h, &body).unwrap();
            let frame = Bytes::from(framed[LEN_BYTES..].to_vec());
            let p = peek(&frame).expect("a request or a reply");
            let (got, at) = peeked_as_header(&p);
            prop_assert_eq!(got, h);
            prop_assert_eq!(&frame[at..], &body[..]);
        }

        #[test]
        fn peek_leaves_other_frames_to_postcard(sid in any::<u64>(), to in "[a-z]{0,10}", opener in any::<bool>()) {
            for h in [Header::OneWay { to: &to, protocol: 7 }, Header::StreamData { sid, opener }, Header::Failure { id: sid, kind: FailureKind::Busy, message: &to }] {
                let framed = encode_raw(&h, b"xyz").unwrap();
                prop_assert_eq!(peek(&framed[LEN_BYTES..]), None);
            }
        }
    }

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
