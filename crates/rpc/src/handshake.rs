//! The connection handshake: protocol version check and, when a secret is configured,
//! mutual HMAC-SHA256 challenge–response with fresh nonces from both sides, ending in
//! per-direction session keys for sealed records ([`crate::seal`]).
//!
//! ```text
//! client → server  "FLNT" ‖ version(u32 BE) ‖ Hello { nonce_c, listen, has_secret, seal }
//!                  [‖ key id (postcard string)]
//! server → client  Challenge { nonce_s, auth, seal } | Refused { reason }
//! client → server  Proof { HMAC(k, "flint/2 client" ‖ H) }
//! server → client  Welcome { HMAC(k, "flint/2 server" ‖ H ‖ client proof) } | Refused
//! H = SHA-256(first frame ‖ challenge frame), the transcript so far
//! ```
//!
//! The client proves itself first, so a server always learns — and logs — that a peer
//! had the wrong secret. The secret never crosses the wire; tags are compared in
//! constant time; the labels keep a tag of one role from being replayed as the other's.
//! Both proofs cover the transcript, so a relay that alters the first two frames (for
//! example to turn sealing off) fails authentication. With a secret, records are sealed
//! when either side asks for it; keys come from HKDF over the secret and `H`.
//! Frames are read with exact reads so no byte after the handshake is consumed here.
//!
//! **Key ids.** A client may append a key id to its hello (an optional trailing field,
//! so peers that send none are unchanged). A server given a [`Keyring`] then proves and
//! verifies with that key's secret instead of the default one, and the connection is
//! authenticated *as that key id* ([`Established::key_id`]). An unknown key id is
//! refused like a wrong secret; a single-use key is consumed by the first handshake
//! that proves it. A server with a keyring and no default secret refuses clients
//! that present no key id.

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::address::RpcAddress;
use crate::conf::Secret;
use crate::seal::SessionKeys;
use crate::secret::{Keyring, MAX_KEY_ID};

/// The wire protocol version; peers of different versions refuse each other.
pub const PROTOCOL_VERSION: u32 = 2;
/// First bytes of every connection.
pub const MAGIC: [u8; 4] = *b"FLNT";
/// Largest handshake frame; anything bigger is not a flint peer.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;

const NONCE: usize = 32;
type Tag = [u8; 32];

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    nonce: [u8; NONCE],
    listen: Option<RpcAddress>,
    has_secret: bool,
    seal: bool,
}

#[derive(Debug, Serialize, Deserialize)]
enum ServerMsg {
    Challenge {
        nonce: [u8; NONCE],
        auth: bool,
        seal: bool,
    },
    Refused {
        reason: String,
    },
    Welcome {
        proof: Option<Tag>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Proof {
    proof: Option<Tag>,
}

/// Why a handshake failed. Every variant reads as a sentence for the log.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's first bytes are not flint's.
    #[error("not a flint peer (bad magic bytes {0:02x?})")]
    BadMagic(Vec<u8>),
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: peer speaks v{peer}, this node speaks v{ours}")]
    Version {
        /// The peer's version.
        peer: u32,
        /// Ours.
        ours: u32,
    },
    /// A handshake frame was too big or malformed.
    #[error("malformed handshake: {0}")]
    Malformed(String),
    /// The peer has no secret but this node requires one.
    #[error("authentication required: this node has auth.secret set and the peer has none")]
    PeerHasNoSecret,
    /// This node has no secret but the peer requires one.
    #[error("the peer requires authentication; set auth.secret (or auth.secret_file, FLINT_AUTH_SECRET) to the cluster secret")]
    WeHaveNoSecret,
    /// This node has a secret but the peer does not authenticate.
    #[error("the peer does not authenticate, but auth.secret is set here; refusing an unauthenticated connection")]
    PeerDoesNotAuthenticate,
    /// The peer's proof did not match: it has a different secret.
    #[error("authentication failed: the peer's proof does not match (wrong secret)")]
    WrongSecret,
    /// The peer presented a key id this node does not hold (never added, removed, or a
    /// single-use key already proven by another connection).
    #[error("authentication failed: key id {0} is not known here (never issued, removed, or already used)")]
    UnknownKey(String),
    /// This node authenticates only by key id and the peer presented none.
    #[error("authentication required: this node accepts only clients that present a key id")]
    KeyRequired,
    /// The peer refused us, with its reason.
    #[error("refused by peer: {0}")]
    Refused(String),
    /// The peer did not finish in time.
    #[error("handshake timed out after {0:?} (rpc.handshake_timeout)")]
    Timeout(std::time::Duration),
    /// The socket failed or closed.
    #[error("connection failed during handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// What a finished handshake established.
#[derive(Debug)]
pub struct Established {
    /// The listening address the client declared (server side only).
    pub listen: Option<RpcAddress>,
    /// Session keys when the records that follow are sealed.
    pub keys: Option<SessionKeys>,
    /// The key id the client proved (server side, keyring authentication only).
    pub key_id: Option<String>,
}

/// What the server side authenticates with.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerAuth<'a> {
    /// The default secret, for clients that present no key id.
    pub secret: Option<&'a Secret>,
    /// Per-key secrets, for clients that present a key id.
    pub keyring: Option<&'a Keyring>,
}

/// A key id for the log: quoted, escaped and cut to 64 characters.
fn quote_id(id: &str) -> String {
    let mut q: String = id
        .chars()
        .take(64)
        .collect::<String>()
        .escape_default()
        .collect();
    if id.chars().count() > 64 {
        q.push('…');
    }
    format!("\"{q}\"")
}

/// How the client side runs.
#[derive(Debug, Clone)]
pub struct ClientOptions<'a> {
    /// The cluster secret, if any.
    pub secret: Option<&'a Secret>,
    /// The listening address to declare.
    pub listen: Option<RpcAddress>,
    /// Ask for sealed records (`rpc.encryption.enabled`).
    pub seal: bool,
    /// The protocol version to announce (tests speak wrong ones).
    pub version: u32,
}

/// Reads one length-prefixed frame of at most [`MAX_HANDSHAKE_FRAME`] bytes, exactly,
/// adding it to the transcript.
async fn read_frame<S: AsyncRead + Unpin>(
    s: &mut S,
    transcript: Option<&mut Sha256>,
) -> Result<Vec<u8>, HandshakeError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HANDSHAKE_FRAME {
        return Err(HandshakeError::Malformed(format!(
            "first frame announces {len} bytes (over {MAX_HANDSHAKE_FRAME}); not a flint peer?"
        )));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    if let Some(t) = transcript {
        t.update(&buf);
    }
    Ok(buf)
}

async fn write_frame<S: AsyncWrite + Unpin>(
    s: &mut S,
    body: &[u8],
    transcript: Option<&mut Sha256>,
) -> Result<(), HandshakeError> {
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    s.write_all(&buf).await?;
    s.flush().await?;
    if let Some(t) = transcript {
        t.update(body);
    }
    Ok(())
}

async fn send<S: AsyncWrite + Unpin, T: Serialize>(
    s: &mut S,
    v: &T,
    transcript: Option<&mut Sha256>,
) -> Result<(), HandshakeError> {
    let body = postcard::to_stdvec(v).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    write_frame(s, &body, transcript).await
}

async fn recv<S: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    s: &mut S,
    transcript: Option<&mut Sha256>,
) -> Result<T, HandshakeError> {
    let buf = read_frame(s, transcript).await?;
    postcard::from_bytes(&buf).map_err(|e| HandshakeError::Malformed(e.to_string()))
}

fn tag(secret: &Secret, label: &[u8], transcript: &[u8; 32], extra: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(&secret.0) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    mac.update(label);
    mac.update(transcript);
    mac.update(extra);
    mac
}

fn nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    rand::rng().fill_bytes(&mut n);
    n
}

fn digest(t: &Sha256) -> [u8; 32] {
    t.clone().finalize().into()
}

const CLIENT_LABEL: &[u8] = b"flint/2 client";
const SERVER_LABEL: &[u8] = b"flint/2 server";

/// Runs the client side with sealing requested; returns when the server has proven
/// itself (or no auth is used).
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: Option<&Secret>,
    listen: Option<RpcAddress>,
) -> Result<Established, HandshakeError> {
    client_with(
        s,
        ClientOptions {
            secret,
            listen,
            seal: true,
            version: PROTOCOL_VERSION,
        },
    )
    .await
}

/// [`client`] with an explicit version: lets tests speak a wrong one.
pub async fn client_with_version<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: Option<&Secret>,
    listen: Option<RpcAddress>,
    version: u32,
) -> Result<Established, HandshakeError> {
    client_with(
        s,
        ClientOptions {
            secret,
            listen,
            seal: true,
            version,
        },
    )
    .await
}

/// Runs the client side with every option spelled out.
pub async fn client_with<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    opts: ClientOptions<'_>,
) -> Result<Established, HandshakeError> {
    client_keyed(s, opts, None).await
}

/// [`client_with`] presenting `key_id`: the server picks that key's secret from its
/// keyring, and `opts.secret` must be that key's secret.
pub async fn client_keyed<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    opts: ClientOptions<'_>,
    key_id: Option<&str>,
) -> Result<Established, HandshakeError> {
    let secret = opts.secret;
    if let Some(id) = key_id {
        if secret.is_none() || id.len() > MAX_KEY_ID {
            return Err(HandshakeError::Malformed(format!(
                "key id {} needs its secret and at most {MAX_KEY_ID} bytes",
                quote_id(id)
            )));
        }
    }
    let mut transcript = Sha256::new();
    let nonce_c = nonce();
    let hello = Hello {
        nonce: nonce_c,
        listen: opts.listen,
        has_secret: secret.is_some(),
        seal: opts.seal,
    };
    let mut first = Vec::with_capacity(64);
    first.extend_from_slice(&MAGIC);
    first.extend_from_slice(&opts.version.to_be_bytes());
    let mut first =
        postcard::to_extend(&hello, first).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    if let Some(id) = key_id {
        first =
            postcard::to_extend(id, first).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    }
    write_frame(s, &first, Some(&mut transcript)).await?;
    let server_seal = match recv::<_, ServerMsg>(s, Some(&mut transcript)).await? {
        ServerMsg::Refused { reason } => return Err(HandshakeError::Refused(reason)),
        ServerMsg::Challenge { auth: true, .. } if secret.is_none() => {
            return Err(HandshakeError::WeHaveNoSecret)
        }
        ServerMsg::Challenge { auth: false, .. } if secret.is_some() => {
            return Err(HandshakeError::PeerDoesNotAuthenticate)
        }
        ServerMsg::Challenge { seal, .. } => seal,
        ServerMsg::Welcome { .. } => {
            return Err(HandshakeError::Malformed("welcome before challenge".into()))
        }
    };
    let h = digest(&transcript);
    let proof: Option<Tag> =
        secret.map(|k| tag(k, CLIENT_LABEL, &h, &[]).finalize().into_bytes().into());
    send(s, &Proof { proof }, None).await?;
    match recv::<_, ServerMsg>(s, None).await? {
        ServerMsg::Refused { reason } => Err(HandshakeError::Refused(reason)),
        ServerMsg::Welcome {
            proof: server_proof,
        } => match (secret, server_proof, proof) {
            (None, _, _) => Ok(Established {
                listen: None,
                keys: None,
                key_id: None,
            }),
            (Some(k), Some(p), Some(ours)) => {
                tag(k, SERVER_LABEL, &h, &ours)
                    .verify_slice(&p)
                    .map_err(|_| HandshakeError::WrongSecret)?;
                let keys = (opts.seal || server_seal).then(|| SessionKeys::derive(&k.0, &h, true));
                Ok(Established {
                    listen: None,
                    keys,
                    key_id: key_id.map(str::to_owned),
                })
            }
            (Some(_), _, _) => Err(HandshakeError::PeerDoesNotAuthenticate),
        },
        ServerMsg::Challenge { .. } => Err(HandshakeError::Malformed("second challenge".into())),
    }
}

/// Runs the server side with sealing offered; returns the peer's declared listening
/// address (and session keys) once it has proven itself. On failure the peer has been
/// told why (when it got that far).
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: Option<&Secret>,
) -> Result<Established, HandshakeError> {
    server_with(s, secret, true).await
}

/// [`server`], saying whether this side asks for sealed records.
pub async fn server_with<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: Option<&Secret>,
    seal: bool,
) -> Result<Established, HandshakeError> {
    server_keyed(
        s,
        ServerAuth {
            secret,
            keyring: None,
        },
        seal,
    )
    .await
}

/// The server side with a keyring as well: a client presenting a key id proves that
/// key's secret (and is then authenticated as it), a client presenting none proves
/// the default secret.
pub async fn server_keyed<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    auth: ServerAuth<'_>,
    seal: bool,
) -> Result<Established, HandshakeError> {
    let mut transcript = Sha256::new();
    let first = read_frame(s, Some(&mut transcript)).await?;
    if first.len() < 8 || first[..4] != MAGIC {
        return Err(HandshakeError::BadMagic(
            first[..first.len().min(8)].to_vec(),
        ));
    }
    let version = u32::from_be_bytes([first[4], first[5], first[6], first[7]]);
    if version != PROTOCOL_VERSION {
        let e = HandshakeError::Version {
            peer: version,
            ours: PROTOCOL_VERSION,
        };
        refuse(s, &e).await;
        return Err(e);
    }
    let (hello, rest): (Hello, &[u8]) = postcard::take_from_bytes(&first[8..])
        .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let key_id: Option<String> = if rest.is_empty() {
        None
    } else {
        let id: String =
            postcard::from_bytes(rest).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        if id.len() > MAX_KEY_ID {
            return Err(HandshakeError::Malformed(format!(
                "key id of {} bytes (at most {MAX_KEY_ID})",
                id.len()
            )));
        }
        Some(id)
    };
    // The secret to verify with: the key's for a key id, else the default one.
    let (secret, single_use): (Option<Secret>, bool) = match &key_id {
        Some(id) => match auth.keyring.and_then(|r| r.lookup(id)) {
            Some((k, single_use)) => (Some(k), single_use),
            None => {
                let e = HandshakeError::UnknownKey(quote_id(id));
                refuse_auth(s).await;
                return Err(e);
            }
        },
        None if auth.secret.is_none() && auth.keyring.is_some() => {
            let e = HandshakeError::KeyRequired;
            refuse(s, &e).await;
            return Err(e);
        }
        None => (auth.secret.cloned(), false),
    };
    let secret = secret.as_ref();
    if secret.is_some() && !hello.has_secret {
        let e = HandshakeError::PeerHasNoSecret;
        refuse(s, &HandshakeError::WeHaveNoSecret).await;
        return Err(e);
    }
    let nonce_s = nonce();
    send(
        s,
        &ServerMsg::Challenge {
            nonce: nonce_s,
            auth: secret.is_some(),
            seal,
        },
        Some(&mut transcript),
    )
    .await?;
    let h = digest(&transcript);
    let proof: Proof = recv(s, None).await?;
    let Some(k) = secret else {
        send(s, &ServerMsg::Welcome { proof: None }, None).await?;
        return Ok(Established {
            listen: hello.listen,
            keys: None,
            key_id: None,
        });
    };
    let client_proof = match proof.proof {
        Some(p) if tag(k, CLIENT_LABEL, &h, &[]).verify_slice(&p).is_ok() => p,
        _ => {
            refuse_auth(s).await;
            return Err(HandshakeError::WrongSecret);
        }
    };
    if let Some(id) = &key_id {
        // A single-use key goes with its first proof; a connection that proved it a
        // moment later (or after the owner removed it) is refused.
        let still_held = match auth.keyring {
            Some(r) => r.consume(id, k),
            None => false,
        };
        if !still_held {
            refuse_auth(s).await;
            return Err(HandshakeError::UnknownKey(quote_id(id)));
        }
        tracing::debug!(key_id = %quote_id(id), single_use, "client proved its key");
    }
    let ours: Tag = tag(k, SERVER_LABEL, &h, &client_proof)
        .finalize()
        .into_bytes()
        .into();
    send(s, &ServerMsg::Welcome { proof: Some(ours) }, None).await?;
    let keys = (seal || hello.seal).then(|| SessionKeys::derive(&k.0, &h, false));
    Ok(Established {
        listen: hello.listen,
        keys,
        key_id,
    })
}

/// Refuses a peer that failed to authenticate, saying no more than a wrong secret would.
async fn refuse_auth<S: AsyncWrite + Unpin>(s: &mut S) {
    send(
        s,
        &ServerMsg::Refused {
            reason: "authentication failed (wrong secret?)".into(),
        },
        None,
    )
    .await
    .ok();
}

async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, why: &HandshakeError) {
    // Best effort: the peer may already be gone.
    let _ = send(
        s,
        &ServerMsg::Refused {
            reason: why.to_string(),
        },
        None,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    async fn pair(
        cs: Option<Secret>,
        ss: Option<Secret>,
    ) -> (
        Result<Established, HandshakeError>,
        Result<Established, HandshakeError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let listen = Some(RpcAddress::new("127.0.0.1", 9));
        // Each side owns its half, so a side that gives up closes it, as a socket would.
        tokio::join!(
            async move { client(&mut a, cs.as_ref(), listen).await },
            async move { server(&mut b, ss.as_ref()).await }
        )
    }

    fn k(s: &str) -> Option<Secret> {
        Some(Secret::new(s.as_bytes()))
    }

    #[tokio::test]
    async fn matching_secrets_and_no_secrets_succeed() {
        let (c, s) = pair(k("a"), k("a")).await;
        let (c, s) = (c.unwrap(), s.unwrap());
        assert_eq!(s.listen, Some(RpcAddress::new("127.0.0.1", 9)));
        // Both sides hold keys, and what one seals the other opens.
        let (mut seal, _) = c.keys.unwrap().split();
        let (_, mut open) = s.keys.unwrap().split();
        let mut out = Vec::new();
        seal.seal(b"after the handshake", &mut out).unwrap();
        let mut raw = bytes::BytesMut::from(&out[..]);
        let mut plain = bytes::BytesMut::new();
        open.open(&mut raw, &mut plain).unwrap();
        assert_eq!(&plain[..], b"after the handshake");
        let (c, s) = pair(None, None).await;
        assert!(c.unwrap().keys.is_none());
        assert!(s.unwrap().keys.is_none());
    }

    #[tokio::test]
    async fn wrong_or_missing_secrets_fail_on_both_sides() {
        let (c, s) = pair(k("a"), k("b")).await;
        assert!(matches!(s, Err(HandshakeError::WrongSecret)), "{s:?}");
        assert!(matches!(c, Err(HandshakeError::Refused(_))), "{c:?}");
        let (c, s) = pair(None, k("b")).await;
        assert!(matches!(s, Err(HandshakeError::PeerHasNoSecret)), "{s:?}");
        assert!(c.unwrap_err().to_string().contains("auth.secret"));
        let (c, _s) = pair(k("a"), None).await;
        assert!(
            matches!(c, Err(HandshakeError::PeerDoesNotAuthenticate)),
            "{c:?}"
        );
    }

    #[tokio::test]
    async fn version_mismatch_is_named() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let (c, s) = tokio::join!(
            async move { client_with_version(&mut a, None, None, 99).await },
            async move { server(&mut b, None).await }
        );
        let s = s.unwrap_err().to_string();
        assert!(s.contains("v99") && s.contains("v2"), "{s}");
        assert!(c.unwrap_err().to_string().contains("version mismatch"));
    }

    fn arb_addr() -> impl Strategy<Value = Option<RpcAddress>> {
        proptest::option::of(
            ("[a-z0-9.:-]{1,30}", any::<u16>()).prop_map(|(h, p)| RpcAddress::new(h, p)),
        )
    }

    proptest! {
        #[test]
        fn handshake_messages_round_trip(nonce in any::<[u8; 32]>(), listen in arb_addr(), flag in any::<bool>(), reason in ".{0,40}") {
            let hello = Hello { nonce, listen: listen.clone(), has_secret: flag, seal: !flag };
            let back: Hello = postcard::from_bytes(&postcard::to_stdvec(&hello).unwrap()).unwrap();
            prop_assert_eq!(back.nonce, nonce);
            prop_assert_eq!(back.listen, listen);
            prop_assert_eq!(back.has_secret, flag);
            for m in [
                ServerMsg::Challenge { nonce, auth: flag, seal: flag },
                ServerMsg::Refused { reason: reason.clone() },
                ServerMsg::Welcome { proof: flag.then_some(nonce) },
            ] {
                let back: ServerMsg = postcard::from_bytes(&postcard::to_stdvec(&m).unwrap()).unwrap();
                prop_assert_eq!(format!("{back:?}"), format!("{m:?}"));
            }
            let p = Proof { proof: flag.then_some(nonce) };
            let back: Proof = postcard::from_bytes(&postcard::to_stdvec(&p).unwrap()).unwrap();
            prop_assert_eq!(back.proof, p.proof);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_server(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let (mut a, mut b) = tokio::io::duplex(8192);
                a.write_all(&bytes).await.unwrap();
                drop(a);
                let r = server(&mut b, k("x").as_ref()).await;
                assert!(r.is_err());
            });
        }
    }

    /// A keyed client against a keyring server (with an optional default secret).
    async fn keyed_pair(
        key_id: Option<&str>,
        client_secret: Option<Secret>,
        default: Option<Secret>,
        ring: &Keyring,
    ) -> (
        Result<Established, HandshakeError>,
        Result<Established, HandshakeError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let opts_secret = client_secret.clone();
        tokio::join!(
            async move {
                let opts = ClientOptions {
                    secret: opts_secret.as_ref(),
                    listen: None,
                    seal: true,
                    version: PROTOCOL_VERSION,
                };
                client_keyed(&mut a, opts, key_id).await
            },
            async move {
                let auth = ServerAuth {
                    secret: default.as_ref(),
                    keyring: Some(ring),
                };
                server_keyed(&mut b, auth, true).await
            }
        )
    }

    #[tokio::test]
    async fn a_key_id_picks_its_secret_and_the_connection_is_known_by_it() {
        let ring = Keyring::new();
        ring.insert("k1", Secret::new("one"));
        ring.insert("k2", Secret::new("two"));
        let (c, s) = keyed_pair(Some("k2"), k("two"), k("default"), &ring).await;
        let (c, s) = (c.unwrap(), s.unwrap());
        assert_eq!(s.key_id.as_deref(), Some("k2"));
        assert_eq!(c.key_id.as_deref(), Some("k2"));
        // The session keys come from the key's secret: they open each other's records.
        let (mut seal, _) = c.keys.unwrap().split();
        let (_, mut open) = s.keys.unwrap().split();
        let mut out = Vec::new();
        seal.seal(b"keyed", &mut out).unwrap();
        let mut plain = bytes::BytesMut::new();
        open.open(&mut bytes::BytesMut::from(&out[..]), &mut plain)
            .unwrap();
        assert_eq!(&plain[..], b"keyed");
        // A reusable key stays.
        assert!(ring.contains("k2"));
        // Another key's secret, or the default secret, does not prove k1.
        let (c, s) = keyed_pair(Some("k1"), k("two"), k("default"), &ring).await;
        assert!(matches!(s, Err(HandshakeError::WrongSecret)), "{s:?}");
        assert!(matches!(c, Err(HandshakeError::Refused(_))), "{c:?}");
        let (_, s) = keyed_pair(Some("k1"), k("default"), k("default"), &ring).await;
        assert!(matches!(s, Err(HandshakeError::WrongSecret)), "{s:?}");
        // The default path is unchanged beside a keyring.
        let (c, s) = keyed_pair(None, k("default"), k("default"), &ring).await;
        assert!(c.unwrap().key_id.is_none());
        assert!(s.unwrap().key_id.is_none());
    }

    #[tokio::test]
    async fn an_unknown_key_id_is_refused_like_a_wrong_secret() {
        let ring = Keyring::new();
        ring.insert("k1", Secret::new("one"));
        let (c, s) = keyed_pair(Some("nope\n"), k("one"), None, &ring).await;
        match s {
            Err(HandshakeError::UnknownKey(id)) => assert_eq!(id, "\"nope\\n\""),
            other => panic!("{other:?}"),
        }
        match c {
            Err(HandshakeError::Refused(r)) => {
                assert_eq!(r, "authentication failed (wrong secret?)")
            }
            other => panic!("{other:?}"),
        }
        // A server without a keyring knows no key id either.
        let (mut a, mut b) = tokio::io::duplex(8192);
        let secret = Secret::new("one");
        let (_, s) = tokio::join!(
            async {
                let opts = ClientOptions {
                    secret: Some(&secret),
                    listen: None,
                    seal: true,
                    version: PROTOCOL_VERSION,
                };
                client_keyed(&mut a, opts, Some("k1")).await
            },
            async {
                server_keyed(
                    &mut b,
                    ServerAuth {
                        secret: Some(&secret),
                        keyring: None,
                    },
                    true,
                )
                .await
            }
        );
        assert!(matches!(s, Err(HandshakeError::UnknownKey(_))), "{s:?}");
    }

    #[tokio::test]
    async fn a_single_use_key_proves_once() {
        let ring = Keyring::new();
        ring.insert_single_use("once", Secret::new("s"));
        let (c, s) = keyed_pair(Some("once"), k("s"), None, &ring).await;
        assert_eq!(s.unwrap().key_id.as_deref(), Some("once"));
        c.unwrap();
        assert!(!ring.contains("once"));
        let (c, s) = keyed_pair(Some("once"), k("s"), None, &ring).await;
        assert!(matches!(s, Err(HandshakeError::UnknownKey(_))), "{s:?}");
        assert!(matches!(c, Err(HandshakeError::Refused(_))), "{c:?}");
        // A failed proof does not use the key up.
        ring.insert_single_use("twice", Secret::new("s"));
        let (_, s) = keyed_pair(Some("twice"), k("wrong"), None, &ring).await;
        assert!(matches!(s, Err(HandshakeError::WrongSecret)), "{s:?}");
        assert!(ring.contains("twice"));
        let (_, s) = keyed_pair(Some("twice"), k("s"), None, &ring).await;
        assert_eq!(s.unwrap().key_id.as_deref(), Some("twice"));
    }

    #[tokio::test]
    async fn a_keyring_only_server_refuses_clients_without_a_key_id() {
        let ring = Keyring::new();
        ring.insert("k", Secret::new("s"));
        for secret in [k("s"), None] {
            let (c, s) = keyed_pair(None, secret, None, &ring).await;
            assert!(matches!(s, Err(HandshakeError::KeyRequired)), "{s:?}");
            assert!(
                c.unwrap_err().to_string().contains("present a key id"),
                "the client learns why"
            );
        }
        // A key id without its secret, or too long, never leaves the client.
        let (c, _) = keyed_pair(Some("k"), None, None, &ring).await;
        assert!(matches!(c, Err(HandshakeError::Malformed(_))), "{c:?}");
        let long = "x".repeat(MAX_KEY_ID + 1);
        let (c, _) = keyed_pair(Some(&long), k("s"), None, &ring).await;
        assert!(matches!(c, Err(HandshakeError::Malformed(_))), "{c:?}");
        let exact = "y".repeat(MAX_KEY_ID);
        ring.insert(exact.clone(), Secret::new("s"));
        let (_, s) = keyed_pair(Some(&exact), k("s"), None, &ring).await;
        assert_eq!(s.unwrap().key_id, Some(exact));
    }

    #[tokio::test]
    async fn an_oversized_or_garbled_key_id_is_malformed() {
        let ring = Keyring::new();
        for tail in [
            postcard::to_stdvec(&"z".repeat(MAX_KEY_ID + 1)).unwrap(),
            vec![0xff, 0xff, 0xff],
        ] {
            let hello = Hello {
                nonce: [1; NONCE],
                listen: None,
                has_secret: true,
                seal: true,
            };
            let mut first = MAGIC.to_vec();
            first.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
            let mut first = postcard::to_extend(&hello, first).unwrap();
            first.extend_from_slice(&tail);
            let (mut a, mut b) = tokio::io::duplex(8192);
            a.write_all(&framed(&first)).await.unwrap();
            let auth = ServerAuth {
                secret: None,
                keyring: Some(&ring),
            };
            let r = server_keyed(&mut b, auth, true).await;
            assert!(matches!(r, Err(HandshakeError::Malformed(_))), "{r:?}");
        }
    }

    // The tests below were written against surviving mutants (docs/testing.md).

    /// A length prefix and `len` bytes of body.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn a_frame_of_exactly_the_cap_is_read_and_one_byte_more_is_refused() {
        let body = vec![7u8; MAX_HANDSHAKE_FRAME];
        let bytes = framed(&body);
        let mut t = Sha256::new();
        let got = read_frame(&mut &bytes[..], Some(&mut t)).await.unwrap();
        assert_eq!(got, body);
        assert_eq!(digest(&t), <[u8; 32]>::from(Sha256::digest(&body)));
        let bytes = framed(&vec![7u8; MAX_HANDSHAKE_FRAME + 1]);
        let e = read_frame(&mut &bytes[..], None).await.unwrap_err();
        assert!(
            matches!(&e, HandshakeError::Malformed(m) if m.contains("announces 4097 bytes")),
            "{e:?}"
        );
    }

    #[test]
    fn nonces_are_fresh_and_the_digest_is_sha256_of_the_transcript() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert_ne!(a, [0; NONCE]);
        assert_ne!(a, [1; NONCE]);
        let mut t = Sha256::new();
        assert_eq!(
            hex::encode(digest(&t)),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        t.update(b"abc");
        assert_eq!(
            hex::encode(digest(&t)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn every_handshake_has_its_own_session_keys() {
        // Same secret, same declared address: only the nonces differ, and they must make
        // the keys differ, or a record of one connection would open on another.
        let (c1, s1) = pair(k("a"), k("a")).await;
        let (_, s2) = pair(k("a"), k("a")).await;
        let (mut seal1, _) = c1.unwrap().keys.unwrap().split();
        let (_, mut open1) = s1.unwrap().keys.unwrap().split();
        let (_, mut open2) = s2.unwrap().keys.unwrap().split();
        let mut out = Vec::new();
        seal1.seal(b"for connection 1", &mut out).unwrap();
        let mut plain = bytes::BytesMut::new();
        assert!(open2
            .open(&mut bytes::BytesMut::from(&out[..]), &mut plain)
            .is_err());
        open1
            .open(&mut bytes::BytesMut::from(&out[..]), &mut plain)
            .unwrap();
        assert_eq!(&plain[..], b"for connection 1");
    }

    #[tokio::test]
    async fn records_are_sealed_when_either_side_asks() {
        for (client_seal, server_seal) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let (mut a, mut b) = tokio::io::duplex(8192);
            let secret = Secret::new("s");
            let (c, s) = tokio::join!(
                async {
                    let opts = ClientOptions {
                        secret: Some(&secret),
                        listen: None,
                        seal: client_seal,
                        version: PROTOCOL_VERSION,
                    };
                    client_with(&mut a, opts).await
                },
                async { server_with(&mut b, Some(&secret), server_seal).await }
            );
            let want = client_seal || server_seal;
            assert_eq!(
                c.unwrap().keys.is_some(),
                want,
                "client, {client_seal} {server_seal}"
            );
            assert_eq!(
                s.unwrap().keys.is_some(),
                want,
                "server, {client_seal} {server_seal}"
            );
        }
    }

    /// Runs `client_with` against a scripted server that answers the first frame with
    /// `challenge`, then, if the client sends a proof, with `Welcome { proof: None }`.
    /// Returns the client's result and whether it sent a proof.
    async fn against_scripted_server(
        secret: Option<Secret>,
        challenge: ServerMsg,
    ) -> (Result<Established, HandshakeError>, bool) {
        let (mut a, mut b) = tokio::io::duplex(8192);
        tokio::join!(
            async move {
                let opts = ClientOptions {
                    secret: secret.as_ref(),
                    listen: None,
                    seal: true,
                    version: PROTOCOL_VERSION,
                };
                client_with(&mut a, opts).await
            },
            async move {
                read_frame(&mut b, None).await.unwrap();
                send(&mut b, &challenge, None).await.unwrap();
                let proof = recv::<_, Proof>(&mut b, None).await;
                if proof.is_ok() {
                    let _ = send(&mut b, &ServerMsg::Welcome { proof: None }, None).await;
                }
                proof.is_ok()
            }
        )
    }

    #[tokio::test]
    async fn a_client_without_a_secret_stops_at_a_challenge_that_requires_one() {
        let (c, sent_proof) = against_scripted_server(
            None,
            ServerMsg::Challenge {
                nonce: [3; NONCE],
                auth: true,
                seal: false,
            },
        )
        .await;
        assert!(matches!(c, Err(HandshakeError::WeHaveNoSecret)), "{c:?}");
        assert!(!sent_proof);
    }

    #[tokio::test]
    async fn a_client_with_a_secret_sends_no_proof_to_a_server_that_does_not_authenticate() {
        let (c, sent_proof) = against_scripted_server(
            k("a"),
            ServerMsg::Challenge {
                nonce: [3; NONCE],
                auth: false,
                seal: false,
            },
        )
        .await;
        assert!(
            matches!(c, Err(HandshakeError::PeerDoesNotAuthenticate)),
            "{c:?}"
        );
        assert!(
            !sent_proof,
            "a tag was sent to a server that asked for none"
        );
    }

    #[tokio::test]
    async fn short_or_foreign_first_frames_are_bad_magic_and_a_bare_header_is_malformed() {
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        let cases: [(&[u8], bool); 6] = [
            (b"", true),
            (b"FL", true),
            (b"FLNT\0\0", true),
            (b"FLNT\0\0\0", true),
            (b"GET / HTTP/1.1", true),
            (&header, false),
        ];
        for (first, bad_magic) in cases {
            let (mut a, mut b) = tokio::io::duplex(8192);
            a.write_all(&framed(first)).await.unwrap();
            drop(a);
            let r = server(&mut b, None).await;
            if bad_magic {
                assert!(
                    matches!(r, Err(HandshakeError::BadMagic(_))),
                    "{first:?}: {r:?}"
                );
            } else {
                assert!(
                    matches!(r, Err(HandshakeError::Malformed(_))),
                    "{first:?}: {r:?}"
                );
            }
        }
    }
}
