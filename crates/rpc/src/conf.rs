//! The RPC environment's settings, read from a [`flint_conf::Conf`] with Spark's defaults
//! and fallbacks (`rpc.ask_timeout` → `network.timeout` → 120 s).

use std::path::PathBuf;
use std::time::Duration;

use flint_conf::{Conf, SizeUnit, TimeUnit};

use crate::error::RpcError;

/// Every setting this crate reads, for `FLINT_*` environment mapping and docs.
pub const KEYS: &[&str] = &[
    "network.timeout",
    "rpc.ask_timeout",
    "rpc.lookup_timeout",
    "rpc.connect_timeout",
    "rpc.handshake_timeout",
    "rpc.message.max_size",
    "auth.secret",
    "auth.secret_file",
    "rpc.tls.enabled",
    "rpc.tls.cert",
    "rpc.tls.key",
    "rpc.tls.ca",
];

/// Default of `network.timeout` and of everything that falls back to it.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(120);

/// A deadline together with the setting that controls it, so a timeout error can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcTimeout {
    /// How long to wait.
    pub duration: Duration,
    /// The setting it came from (or the one to set to change the default).
    pub setting: &'static str,
}

impl RpcTimeout {
    /// Resolves the first set key of `keys`, else `default` (reported as `keys[0]`).
    fn resolve(conf: &Conf, keys: &[&'static str], default: Duration) -> Result<Self, RpcError> {
        for key in keys {
            if conf.get(key).is_some() {
                return Ok(RpcTimeout {
                    duration: conf.duration(key, default, TimeUnit::Seconds)?,
                    setting: key,
                });
            }
        }
        Ok(RpcTimeout {
            duration: default,
            setting: keys[0],
        })
    }
}

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

/// Paths of this node's TLS material (PEM). Every node presents `cert`/`key` and
/// trusts peers whose certificates chain to `ca` (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The CA certificate(s) peers must chain to.
    pub ca: PathBuf,
}

/// Settings of an [`RpcEnv`](crate::RpcEnv).
#[derive(Debug, Clone)]
pub struct RpcConf {
    /// Default deadline of `ask`.
    pub ask_timeout: RpcTimeout,
    /// Deadline of an endpoint lookup.
    pub lookup_timeout: RpcTimeout,
    /// Deadline for opening a connection (TCP, TLS and the handshake).
    pub connect_timeout: RpcTimeout,
    /// How long an accepted connection may take to finish its handshake.
    pub handshake_timeout: RpcTimeout,
    /// Largest frame accepted or sent, in bytes.
    pub max_message_size: usize,
    /// Shared secret; when set, every connection must prove it.
    pub secret: Option<Secret>,
    /// TLS material; when set, every connection is TLS with mutual authentication.
    pub tls: Option<TlsPaths>,
}

impl Default for RpcConf {
    fn default() -> Self {
        RpcConf {
            ask_timeout: RpcTimeout {
                duration: DEFAULT_NETWORK_TIMEOUT,
                setting: "rpc.ask_timeout",
            },
            lookup_timeout: RpcTimeout {
                duration: DEFAULT_NETWORK_TIMEOUT,
                setting: "rpc.lookup_timeout",
            },
            connect_timeout: RpcTimeout {
                duration: DEFAULT_NETWORK_TIMEOUT,
                setting: "rpc.connect_timeout",
            },
            handshake_timeout: RpcTimeout {
                duration: Duration::from_secs(30),
                setting: "rpc.handshake_timeout",
            },
            max_message_size: 128 << 20,
            secret: None,
            tls: None,
        }
    }
}

impl RpcConf {
    /// Reads the settings from `conf`. The secret comes from `auth.secret`, else the file
    /// named by `auth.secret_file`, else the `FLINT_AUTH_SECRET` environment variable.
    pub fn from_conf(conf: &Conf) -> Result<Self, RpcError> {
        let network = conf.duration(
            "network.timeout",
            DEFAULT_NETWORK_TIMEOUT,
            TimeUnit::Seconds,
        )?;
        let max = conf.bytes("rpc.message.max_size", 128 << 20, SizeUnit::Mebibytes)?;
        if !(1024..=(2047 << 20)).contains(&max) {
            return Err(flint_conf::ConfError::Invalid {
                key: "rpc.message.max_size".into(),
                value: conf.get("rpc.message.max_size").unwrap_or_default().into(),
                reason: "must be between 1k and 2047m".into(),
            }
            .into());
        }
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
        let tls = if conf.bool("rpc.tls.enabled", false)? {
            let path = |key: &str| {
                conf.get(key).map(PathBuf::from).ok_or_else(|| {
                    RpcError::Tls(format!("rpc.tls.enabled is true but {key} is not set"))
                })
            };
            Some(TlsPaths {
                cert: path("rpc.tls.cert")?,
                key: path("rpc.tls.key")?,
                ca: path("rpc.tls.ca")?,
            })
        } else {
            None
        };
        Ok(RpcConf {
            ask_timeout: RpcTimeout::resolve(
                conf,
                &["rpc.ask_timeout", "network.timeout"],
                network,
            )?,
            lookup_timeout: RpcTimeout::resolve(
                conf,
                &["rpc.lookup_timeout", "network.timeout"],
                network,
            )?,
            connect_timeout: RpcTimeout::resolve(
                conf,
                &["rpc.connect_timeout", "network.timeout"],
                network,
            )?,
            handshake_timeout: RpcTimeout::resolve(
                conf,
                &["rpc.handshake_timeout"],
                Duration::from_secs(30),
            )?,
            max_message_size: max as usize,
            secret: secret.map(Secret),
            tls,
        })
    }
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
    fn ask_timeout_falls_back_to_network_timeout() {
        let c = RpcConf::from_conf(&Conf::new().set("network.timeout", "7s")).unwrap();
        assert_eq!(c.ask_timeout.duration, Duration::from_secs(7));
        assert_eq!(c.ask_timeout.setting, "network.timeout");
        let c = RpcConf::from_conf(&Conf::new().set("rpc.ask_timeout", "300ms")).unwrap();
        assert_eq!(c.ask_timeout.duration, Duration::from_millis(300));
        assert_eq!(c.ask_timeout.setting, "rpc.ask_timeout");
        let c = RpcConf::from_conf(&Conf::new()).unwrap();
        assert_eq!(c.ask_timeout.duration, Duration::from_secs(120));
        assert_eq!(c.max_message_size, 128 << 20);
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "s3cret\n").unwrap();
        let c =
            RpcConf::from_conf(&Conf::new().set("auth.secret_file", p.to_str().unwrap())).unwrap();
        assert_eq!(c.secret.unwrap().0, b"s3cret");
        let e =
            RpcConf::from_conf(&Conf::new().set("auth.secret_file", "/nonexistent/x")).unwrap_err();
        assert!(e.to_string().contains("auth.secret_file"), "{e}");
    }

    #[test]
    fn tls_needs_all_paths() {
        let e = RpcConf::from_conf(&Conf::new().set("rpc.tls.enabled", "true")).unwrap_err();
        assert!(e.to_string().contains("rpc.tls.cert"), "{e}");
    }
}
