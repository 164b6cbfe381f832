//! The RPC environment's settings, read from a [`flint_conf::Conf`] with Spark's defaults
//! and fallbacks (`rpc.ask_timeout` → `network.timeout` → 120 s).

use std::path::PathBuf;
use std::time::Duration;

use flint_conf::{Conf, SizeUnit, TimeUnit};

use crate::error::RpcError;
pub use crate::secret::Secret;

/// Every setting this crate reads, for `FLINT_*` environment mapping and docs.
pub const KEYS: &[&str] = &[
    "network.timeout",
    "rpc.ask_timeout",
    "rpc.lookup_timeout",
    "rpc.connect_timeout",
    "rpc.handshake_timeout",
    "rpc.message.max_size",
    "rpc.encryption.enabled",
    "rpc.connection.max_queued_bytes",
    "rpc.endpoint.max_queued_bytes",
    "rpc.frame_timeout",
    "rpc.max_partial_frame_bytes",
    "rpc.max_connections",
    "rpc.max_pending_handshakes",
    "rpc.max_pending_handshakes_per_address",
    "rpc.stream.chunk_size",
    "rpc.stream.window",
    "rpc.shutdown_drain_timeout",
    "auth.enabled",
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
    /// Seal every post-handshake frame with AEAD when a secret is in use and TLS is
    /// not (`rpc.encryption.enabled`, default true).
    pub encryption: bool,
    /// Bytes that may wait in one connection's outbound queue
    /// (`rpc.connection.max_queued_bytes`): senders past it get `Full` (or wait, with
    /// `send_async`), and a peer that lets replies pile up past it is cut off.
    pub max_queued_bytes: usize,
    /// Bytes of messages that may wait in one endpoint's inbox
    /// (`rpc.endpoint.max_queued_bytes`): past it, asks fail `Busy` and sends are dropped.
    pub max_inbox_bytes: usize,
    /// Once a frame has started arriving, its body must arrive within this
    /// (`rpc.frame_timeout` → `network.timeout`).
    pub frame_timeout: RpcTimeout,
    /// Bytes held in partially received frames across all connections
    /// (`rpc.max_partial_frame_bytes`).
    pub max_partial_bytes: usize,
    /// Connections accepted at once (`rpc.max_connections`), lowered at start-up so
    /// that 256 file descriptors stay in reserve for files and child processes.
    pub max_connections: usize,
    /// Connections that may be mid-handshake at once (`rpc.max_pending_handshakes`).
    pub max_pending_handshakes: usize,
    /// Of those, from one source address (`rpc.max_pending_handshakes_per_address`).
    pub max_pending_handshakes_per_address: usize,
    /// Bytes per chunk of a bulk stream (`rpc.stream.chunk_size`).
    pub stream_chunk: usize,
    /// Chunks a stream's sender may have unacknowledged (`rpc.stream.window`).
    pub stream_window: usize,
    /// How long [`RpcEnv::shutdown`](crate::RpcEnv::shutdown) lets connections write
    /// what is already queued on them before closing them
    /// (`rpc.shutdown_drain_timeout`, default 3 s; zero drops it at once).
    pub shutdown_drain: RpcTimeout,
}

/// Default of `rpc.shutdown_drain_timeout`.
pub const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);

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
            encryption: true,
            max_queued_bytes: 32 << 20,
            max_inbox_bytes: 64 << 20,
            frame_timeout: RpcTimeout {
                duration: DEFAULT_NETWORK_TIMEOUT,
                setting: "rpc.frame_timeout",
            },
            max_partial_bytes: 1 << 30,
            max_connections: 16384,
            max_pending_handshakes: 256,
            max_pending_handshakes_per_address: 16,
            stream_chunk: 256 << 10,
            stream_window: 8,
            shutdown_drain: RpcTimeout {
                duration: DEFAULT_SHUTDOWN_DRAIN,
                setting: "rpc.shutdown_drain_timeout",
            },
        }
    }
}

impl RpcConf {
    /// Reads the settings from `conf`. The secret is found by [`crate::secret::resolve`]:
    /// none with `auth.enabled = false`; else `auth.secret`, `auth.secret_file`, the
    /// `FLINT_AUTH_SECRET` / `FLINT_AUTH_SECRET_FILE` environment, then the flint home's
    /// secret file; finding none is an error naming the file and the settings.
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
        let secret = crate::secret::resolve(conf)?;
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
            secret,
            tls,
            encryption: conf.bool("rpc.encryption.enabled", true)?,
            max_queued_bytes: at_least(
                conf,
                "rpc.connection.max_queued_bytes",
                32 << 20,
                64 << 10,
            )?,
            max_inbox_bytes: at_least(conf, "rpc.endpoint.max_queued_bytes", 64 << 20, 64 << 10)?,
            frame_timeout: RpcTimeout::resolve(
                conf,
                &["rpc.frame_timeout", "network.timeout"],
                network,
            )?,
            max_partial_bytes: at_least(conf, "rpc.max_partial_frame_bytes", 1 << 30, 1 << 20)?,
            max_connections: count(conf, "rpc.max_connections", 16384)?,
            max_pending_handshakes: count(conf, "rpc.max_pending_handshakes", 256)?,
            max_pending_handshakes_per_address: count(
                conf,
                "rpc.max_pending_handshakes_per_address",
                16,
            )?,
            stream_chunk: {
                let c = at_least(conf, "rpc.stream.chunk_size", 256 << 10, 4 << 10)?;
                if c > (max as usize) / 2 {
                    return Err(invalid(
                        conf,
                        "rpc.stream.chunk_size",
                        "must be at most half of rpc.message.max_size",
                    ));
                }
                c
            },
            stream_window: count(conf, "rpc.stream.window", 8)?,
            shutdown_drain: RpcTimeout::resolve(
                conf,
                &["rpc.shutdown_drain_timeout"],
                DEFAULT_SHUTDOWN_DRAIN,
            )?,
        })
    }
}

fn invalid(conf: &Conf, key: &str, reason: &str) -> RpcError {
    flint_conf::ConfError::Invalid {
        key: key.into(),
        value: conf.get(key).unwrap_or_default().into(),
        reason: reason.into(),
    }
    .into()
}

/// A size setting that must be at least `min` bytes (bare numbers are bytes).
fn at_least(conf: &Conf, key: &str, default: usize, min: usize) -> Result<usize, RpcError> {
    let v = conf.bytes(key, default as u64, SizeUnit::Bytes)?;
    if (v as usize) < min {
        return Err(invalid(conf, key, &format!("must be at least {min} bytes")));
    }
    Ok(v as usize)
}

/// A count setting that must be at least 1.
fn count(conf: &Conf, key: &str, default: u64) -> Result<usize, RpcError> {
    let v = conf.u64(key, default)?;
    if v == 0 {
        return Err(invalid(conf, key, "must be at least 1"));
    }
    Ok(v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings with authentication off, so no secret is looked for.
    fn open() -> Conf {
        Conf::new().set("auth.enabled", "false")
    }

    #[test]
    fn ask_timeout_falls_back_to_network_timeout() {
        let c = RpcConf::from_conf(&open().set("network.timeout", "7s")).unwrap();
        assert_eq!(c.ask_timeout.duration, Duration::from_secs(7));
        assert_eq!(c.ask_timeout.setting, "network.timeout");
        let c = RpcConf::from_conf(&open().set("rpc.ask_timeout", "300ms")).unwrap();
        assert_eq!(c.ask_timeout.duration, Duration::from_millis(300));
        assert_eq!(c.ask_timeout.setting, "rpc.ask_timeout");
        let c = RpcConf::from_conf(&open()).unwrap();
        assert_eq!(c.ask_timeout.duration, Duration::from_secs(120));
        assert_eq!(c.max_message_size, 128 << 20);
    }

    #[test]
    fn shutdown_drain_defaults_and_may_be_zero() {
        let c = RpcConf::from_conf(&open()).unwrap();
        assert_eq!(c.shutdown_drain.duration, DEFAULT_SHUTDOWN_DRAIN);
        let c = RpcConf::from_conf(&open().set("rpc.shutdown_drain_timeout", "0")).unwrap();
        assert_eq!(c.shutdown_drain.duration, Duration::ZERO);
        let c = RpcConf::from_conf(&open().set("rpc.shutdown_drain_timeout", "250ms")).unwrap();
        assert_eq!(c.shutdown_drain.duration, Duration::from_millis(250));
    }

    #[test]
    fn tls_needs_all_paths() {
        let e = RpcConf::from_conf(&Conf::new().set("rpc.tls.enabled", "true")).unwrap_err();
        assert!(e.to_string().contains("rpc.tls.cert"), "{e}");
    }
}
