//! The cluster secret: where it comes from (`auth.secret`, `auth.secret_file`,
//! `FLINT_AUTH_SECRET`) and the type that holds it without ever printing it.

use flint_conf::Conf;

use crate::error::RpcError;

/// The cluster's shared secret. Debug never prints it.
#[derive(Clone)]
pub struct Secret(pub(crate) Vec<u8>);

impl Secret {
    /// A secret from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Resolves the secret from `conf`: `auth.secret`, else the file named by
/// `auth.secret_file`, else the `FLINT_AUTH_SECRET` environment variable.
pub fn resolve(conf: &Conf) -> Result<Option<Secret>, RpcError> {
    let secret = if let Some(s) = conf.get("auth.secret") {
        Some(s.as_bytes().to_vec())
    } else if let Some(path) = conf.get("auth.secret_file") {
        let bytes = std::fs::read(path).map_err(|e| flint_conf::ConfError::Invalid {
            key: "auth.secret_file".into(),
            value: path.into(),
            reason: format!("cannot read it: {e}"),
        })?;
        Some(trim_newline(bytes))
    } else {
        std::env::var("FLINT_AUTH_SECRET")
            .ok()
            .map(String::into_bytes)
    };
    if secret.as_ref().is_some_and(|s| s.is_empty()) {
        return Err(flint_conf::ConfError::Invalid {
            key: "auth.secret".into(),
            value: String::new(),
            reason: "the secret is empty".into(),
        }
        .into());
    }
    Ok(secret.map(Secret))
}

fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "s3cret\n").unwrap();
        let c =
            crate::RpcConf::from_conf(&Conf::new().set("auth.secret_file", p.to_str().unwrap()))
                .unwrap();
        assert_eq!(c.secret.unwrap().0, b"s3cret");
        let e = crate::RpcConf::from_conf(&Conf::new().set("auth.secret_file", "/nonexistent/x"))
            .unwrap_err();
        assert!(e.to_string().contains("auth.secret_file"), "{e}");
    }
}
