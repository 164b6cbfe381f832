//! The REST server's bearer tokens: compact HS256 JWS (RFC 7515) with JWT claims
//! (RFC 7519), the shape Spark 4's `JWSFilter` accepts, signed with a key derived
//! from the cluster secret.
//!
//! **The key.** The raw cluster secret is never the JWS key: the key is
//! `HMAC-SHA256(key = cluster secret, message = "flint rest-token key v1")`
//! ([`KEY_LABEL`]), 32 bytes. A token thus proves knowledge of the secret without
//! being usable as one (a leaked token or key does not open RPC connections), and the
//! label keeps this use apart from any other derivation from the same secret.
//!
//! **What a valid token is** ([`TokenKey::verify`]): three base64url parts without
//! padding; a header that is a JSON object with `"alg": "HS256"` (anything else —
//! `none`, `HS512`, `RS256`, a missing `alg` — is refused, so a token cannot choose
//! its own check), a `typ` that is absent or `JWT`, and no `crit`; a signature that
//! is the HMAC-SHA256 of `header.payload` under the key (compared in constant
//! time); claims that are a JSON object with a numeric `exp` that has not passed,
//! and, when present, a numeric `nbf` that has passed and a numeric `iat` that is
//! not in the future. Times are seconds since the epoch, checked with a leeway of
//! [`LEEWAY_S`] seconds for clocks that differ between hosts. Tokens longer than
//! [`MAX_TOKEN_BYTES`] are refused before any decoding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The label the token key is derived under (see the [module docs](self)).
pub const KEY_LABEL: &[u8] = b"flint rest-token key v1";
/// Seconds of clock difference tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_S: u64 = 10;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. The text is safe to send back: it never contains the
/// key or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or a part that does not decode to what it must.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header's `alg` is not HS256.
    #[error("token algorithm {0:?} is not accepted; only HS256 is")]
    Algorithm(String),
    /// The header asks for something this check does not do.
    #[error("token header {0}")]
    Header(String),
    /// The signature is not the one the key makes.
    #[error("token signature does not match (signed with another secret, or altered)")]
    Signature,
    /// A required claim is missing or not a number.
    #[error("token claim {0:?} is missing or not a number of seconds since the epoch")]
    Claim(&'static str),
    /// `exp` has passed.
    #[error("token expired at {exp} (now {now}); get a new one with `flint rest-token`")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The server's time.
        now: u64,
    },
    /// `nbf` has not come yet.
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The server's time.
        now: u64,
    },
    /// `iat` is in the future.
    #[error("token issued in the future, at {iat} (now {now})")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: u64,
        /// The server's time.
        now: u64,
    },
}

/// The claims of a token that passed [`TokenKey::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, when given.
    pub iat: Option<u64>,
}

/// The key tokens are signed and checked with.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// The key for tokens of the cluster whose secret is `secret`.
    pub fn derive(secret: &[u8]) -> TokenKey {
        let mut mac = mac_with(secret);
        mac.update(KEY_LABEL);
        TokenKey(mac.finalize().into_bytes().into())
    }

    fn sign(&self, signing_input: &[u8]) -> HmacSha256 {
        let mut mac = mac_with(&self.0);
        mac.update(signing_input);
        mac
    }

    /// A token valid from `now` (seconds since the epoch) for `ttl_s` seconds:
    /// header `{"alg":"HS256","typ":"JWT"}`, claims `iat`, `nbf` (both `now`), `exp`
    /// and `sub` `"flint-rest"`.
    pub fn issue(&self, now: u64, ttl_s: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let exp = now.saturating_add(ttl_s);
        let claims = format!(r#"{{"exp":{exp},"iat":{now},"nbf":{now},"sub":"flint-rest"}}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.as_bytes());
        let input = format!("{header}.{payload}");
        let sig = URL_SAFE_NO_PAD.encode(self.sign(input.as_bytes()).finalize().into_bytes());
        format!("{input}.{sig}")
    }

    /// Checks `token` at `now` (seconds since the epoch): see the
    /// [module docs](self).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed(format!("longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(
                "not three dot-separated parts (header.payload.signature)",
            ));
        };
        let header = json_object(h64, "header")?;
        match header.get("alg") {
            Some(serde_json::Value::String(a)) if a == "HS256" => {}
            Some(serde_json::Value::String(a)) => return Err(TokenError::Algorithm(a.clone())),
            Some(_) => return Err(TokenError::Header("\"alg\" is not a string".into())),
            None => return Err(TokenError::Header("has no \"alg\"".into())),
        }
        match header.get("typ") {
            None => {}
            Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
            Some(t) => return Err(TokenError::Header(format!("\"typ\" {t} is not \"JWT\""))),
        }
        if header.contains_key("crit") {
            return Err(TokenError::Header(
                "has \"crit\" extensions, which are not supported".into(),
            ));
        }
        let sig = decode(s64, "signature")?;
        let signing_input = &token[..h64.len() + 1 + p64.len()];
        self.sign(signing_input.as_bytes())
            .verify_slice(&sig)
            .map_err(|_| TokenError::Signature)?;
        let claims = json_object(p64, "payload")?;
        let exp = seconds(&claims, "exp")?.ok_or(TokenError::Claim("exp"))?;
        if now > exp.saturating_add(LEEWAY_S) {
            return Err(TokenError::Expired { exp, now });
        }
        if let Some(nbf) = seconds(&claims, "nbf")? {
            if nbf > now.saturating_add(LEEWAY_S) {
                return Err(TokenError::NotYetValid { nbf, now });
            }
        }
        let iat = seconds(&claims, "iat")?;
        if let Some(iat) = iat {
            if iat > now.saturating_add(LEEWAY_S) {
                return Err(TokenError::IssuedInFuture { iat, now });
            }
        }
        Ok(Claims { exp, iat })
    }
}

fn mac_with(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

fn malformed(what: impl Into<String>) -> TokenError {
    TokenError::Malformed(what.into())
}

fn decode(part: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| malformed(format!("the {what} is not base64url without padding ({e})")))
}

fn json_object(
    part: &str,
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let bytes = decode(part, what)?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(malformed(format!("the {what} is not a JSON object"))),
        Err(e) => Err(malformed(format!("the {what} is not JSON ({e})"))),
    }
}

/// A NumericDate claim: absent → `None`; a non-negative finite number → its whole
/// seconds; anything else → [`TokenError::Claim`].
fn seconds(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    let Some(v) = claims.get(name) else {
        return Ok(None);
    };
    if let Some(n) = v.as_u64() {
        return Ok(Some(n));
    }
    match v.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
        _ => Err(TokenError::Claim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key() -> TokenKey {
        TokenKey::derive(b"the cluster secret")
    }

    /// A token with the given header and claims JSON, signed by `key`.
    fn forge(key: &TokenKey, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).finalize().into_bytes());
        format!("{input}.{sig}")
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    #[test]
    fn an_issued_token_verifies_until_it_expires() {
        let t = key().issue(NOW, 3600);
        assert_eq!(
            key().verify(&t, NOW),
            Ok(Claims {
                exp: NOW + 3600,
                iat: Some(NOW)
            })
        );
        assert!(key().verify(&t, NOW + 3600).is_ok());
        // The leeway, exactly.
        assert!(key().verify(&t, NOW + 3600 + LEEWAY_S).is_ok());
        assert_eq!(
            key().verify(&t, NOW + 3600 + LEEWAY_S + 1),
            Err(TokenError::Expired {
                exp: NOW + 3600,
                now: NOW + 3601 + LEEWAY_S
            })
        );
    }

    #[test]
    fn the_key_is_derived_not_the_secret_and_depends_on_it() {
        let secret = b"the cluster secret";
        let k = TokenKey::derive(secret);
        assert_ne!(&k.0[..], &secret[..]);
        // HMAC-SHA256(secret, label), pinned so that the derivation cannot drift.
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(b"flint rest-token key v1");
        assert_eq!(k.0, <[u8; 32]>::from(mac.finalize().into_bytes()));
        assert_ne!(TokenKey::derive(b"another secret").0, k.0);
        assert_eq!(format!("{k:?}"), "TokenKey(<redacted>)");
    }

    #[test]
    fn the_issued_token_has_the_documented_shape() {
        let t = key().issue(NOW, 60);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), HS256.as_bytes());
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            format!(
                r#"{{"exp":{},"iat":{NOW},"nbf":{NOW},"sub":"flint-rest"}}"#,
                NOW + 60
            )
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 32);
        // A hand-made token with the same parts verifies the same.
        assert_eq!(forge(&key(), HS256, &claims), t);
        // ttl saturates rather than wrapping.
        let far = key().issue(u64::MAX - 1, 10);
        assert_eq!(key().verify(&far, u64::MAX).unwrap().exp, u64::MAX);
    }

    #[test]
    fn another_secret_or_an_altered_token_fails_the_signature() {
        let t = TokenKey::derive(b"another secret").issue(NOW, 60);
        assert_eq!(key().verify(&t, NOW), Err(TokenError::Signature));
        // A token signed with the raw secret as the key (not the derived key) fails.
        let raw = TokenKey(*b"the cluster secret.............."); // 32 bytes
        assert_eq!(
            key().verify(&raw.issue(NOW, 60), NOW),
            Err(TokenError::Signature)
        );
        // Claims changed after signing: exp pushed out.
        let good = key().issue(NOW, 60);
        let parts: Vec<&str> = good.split('.').collect();
        let later = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"exp":{},"iat":{NOW},"nbf":{NOW},"sub":"flint-rest"}}"#,
            NOW + 999_999
        ));
        let altered = format!("{}.{later}.{}", parts[0], parts[2]);
        assert_eq!(key().verify(&altered, NOW), Err(TokenError::Signature));
        // Signature truncated or emptied.
        let short = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]);
        assert_eq!(key().verify(&short, NOW), Err(TokenError::Signature));
        let empty = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(key().verify(&empty, NOW), Err(TokenError::Signature));
    }

    #[test]
    fn only_hs256_is_accepted() {
        let claims = format!(r#"{{"exp":{}}}"#, NOW + 60);
        // alg=none with an empty signature: the classic bypass.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        assert_eq!(
            key().verify(&none, NOW),
            Err(TokenError::Algorithm("none".into()))
        );
        for alg in ["HS512", "RS256", "hs256", "NONE"] {
            let t = forge(&key(), &format!(r#"{{"alg":"{alg}"}}"#), &claims);
            assert_eq!(
                key().verify(&t, NOW),
                Err(TokenError::Algorithm(alg.into()))
            );
        }
        let t = forge(&key(), r#"{"typ":"JWT"}"#, &claims);
        assert_eq!(
            key().verify(&t, NOW),
            Err(TokenError::Header("has no \"alg\"".into()))
        );
        let t = forge(&key(), r#"{"alg":256}"#, &claims);
        assert_eq!(
            key().verify(&t, NOW),
            Err(TokenError::Header("\"alg\" is not a string".into()))
        );
        // Without typ, and with typ in another case, it is fine.
        assert!(key()
            .verify(&forge(&key(), r#"{"alg":"HS256"}"#, &claims), NOW)
            .is_ok());
        assert!(key()
            .verify(
                &forge(&key(), r#"{"alg":"HS256","typ":"jwt"}"#, &claims),
                NOW
            )
            .is_ok());
        let t = forge(&key(), r#"{"alg":"HS256","typ":"JOSE+JSON"}"#, &claims);
        assert_eq!(
            key().verify(&t, NOW),
            Err(TokenError::Header(
                "\"typ\" \"JOSE+JSON\" is not \"JWT\"".into()
            ))
        );
        let t = forge(&key(), r#"{"alg":"HS256","crit":["b64"]}"#, &claims);
        assert!(matches!(key().verify(&t, NOW), Err(TokenError::Header(h)) if h.contains("crit")));
    }

    #[test]
    fn malformed_tokens_are_named() {
        let good = key().issue(NOW, 60);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "not three"),
            ("abc".into(), "not three"),
            ("a.b".into(), "not three"),
            (format!("{good}.x"), "not three"),
            ("!!.e30.AAAA".into(), "header is not base64url"),
            (
                format!("{}.e30.AAAA", URL_SAFE_NO_PAD.encode("[1]")),
                "header is not a JSON object",
            ),
            (
                format!("{}.e30.AAAA", URL_SAFE_NO_PAD.encode("{nope")),
                "header is not JSON",
            ),
            (format!("{}==", good), "signature is not base64url"),
            ("x".repeat(MAX_TOKEN_BYTES + 1), "longer than 4096 bytes"),
        ];
        for (t, want) in cases {
            match key().verify(&t, NOW) {
                Err(TokenError::Malformed(m)) => assert!(m.contains(want), "{t:.40}: {m}"),
                other => panic!("{t:.40}: {other:?}"),
            }
        }
        // Exactly at the length limit it is not refused for its length.
        let pad = "x".repeat(MAX_TOKEN_BYTES);
        assert!(
            !matches!(key().verify(&pad, NOW), Err(TokenError::Malformed(m)) if m.contains("longer"))
        );
        // A signed payload that is not an object.
        let t = forge(&key(), HS256, "[]");
        assert!(
            matches!(key().verify(&t, NOW), Err(TokenError::Malformed(m)) if m.contains("payload is not a JSON object"))
        );
    }

    #[test]
    fn claims_are_checked() {
        let k = key();
        let v = |claims: &str| k.verify(&forge(&k, HS256, claims), NOW);
        assert_eq!(v("{}"), Err(TokenError::Claim("exp")));
        assert_eq!(v(r#"{"exp":"soon"}"#), Err(TokenError::Claim("exp")));
        assert_eq!(v(r#"{"exp":-5}"#), Err(TokenError::Claim("exp")));
        assert_eq!(v(r#"{"exp":null}"#), Err(TokenError::Claim("exp")));
        // Fractional seconds are NumericDates too.
        assert_eq!(
            v(&format!(r#"{{"exp":{}.5}}"#, NOW + 1)),
            Ok(Claims {
                exp: NOW + 1,
                iat: None
            })
        );
        assert_eq!(
            v(r#"{"exp":0.0}"#),
            Err(TokenError::Expired { exp: 0, now: NOW })
        );
        // nbf: in the future beyond the leeway refused, within it accepted.
        let exp = NOW + 60;
        assert_eq!(
            v(&format!(r#"{{"exp":{exp},"nbf":{}}}"#, NOW + LEEWAY_S + 1)),
            Err(TokenError::NotYetValid {
                nbf: NOW + LEEWAY_S + 1,
                now: NOW
            })
        );
        assert!(v(&format!(r#"{{"exp":{exp},"nbf":{}}}"#, NOW + LEEWAY_S)).is_ok());
        assert_eq!(
            v(&format!(r#"{{"exp":{exp},"nbf":"x"}}"#)),
            Err(TokenError::Claim("nbf"))
        );
        // iat: likewise.
        assert_eq!(
            v(&format!(r#"{{"exp":{exp},"iat":{}}}"#, NOW + LEEWAY_S + 1)),
            Err(TokenError::IssuedInFuture {
                iat: NOW + LEEWAY_S + 1,
                now: NOW
            })
        );
        assert_eq!(
            v(&format!(r#"{{"exp":{exp},"iat":{}}}"#, NOW + LEEWAY_S)),
            Ok(Claims {
                exp,
                iat: Some(NOW + LEEWAY_S)
            })
        );
        assert_eq!(
            v(&format!(r#"{{"exp":{exp},"iat":true}}"#)),
            Err(TokenError::Claim("iat"))
        );
        // Saturating: a huge nbf/iat near u64::MAX at now = u64::MAX.
        let far = k.issue(u64::MAX - 5, 100);
        assert!(k.verify(&far, u64::MAX - 5).is_ok());
    }

    #[test]
    fn errors_say_what_to_do_and_leak_nothing() {
        let e = TokenError::Expired { exp: 1, now: 2 }.to_string();
        assert!(e.contains("flint rest-token"), "{e}");
        let t = TokenKey::derive(b"another").issue(NOW, 60);
        let e = key().verify(&t, NOW).unwrap_err().to_string();
        let sig = t.rsplit('.').next().unwrap();
        assert!(!e.contains(sig), "{e}");
    }
}
