//! Addresses: `flint://host:port` for an environment and `flint://name@host:port` for an
//! endpoint in it, with parsing that rejects anything else by name.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The URL scheme of every flint address.
pub const SCHEME: &str = "flint://";

/// The listening address of an [`RpcEnv`](crate::RpcEnv): a host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RpcAddress {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why a `flint://` address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid flint address {input:?}: {reason} (expected flint://host:port)")]
pub struct AddressError {
    /// The text as given.
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

impl RpcAddress {
    /// An address from a host and a port.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// The address of a socket, as `flint://ip:port`.
    pub fn from_socket(addr: SocketAddr) -> Self {
        Self::new(addr.ip().to_string(), addr.port())
    }

    /// `host:port` for connecting (IPv6 hosts bracketed).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Parses a comma-separated list of masters, `flint://h1:7077,h2:7077`, as Spark's
    /// `spark://h1:p1,h2:p2`.
    pub fn parse_list(text: &str) -> Result<Vec<RpcAddress>, AddressError> {
        let err = |reason| AddressError {
            input: text.to_string(),
            reason,
        };
        let rest = text
            .trim()
            .strip_prefix(SCHEME)
            .ok_or(err("missing flint://"))?;
        rest.split(',')
            .map(|part| parse_host_port(part.trim()).map_err(err))
            .collect()
    }
}

fn parse_host_port(text: &str) -> Result<RpcAddress, &'static str> {
    if text.is_empty() {
        return Err("empty host");
    }
    if text.contains(['/', '?', '#', '@']) {
        return Err("paths, queries, fragments and user info are not allowed");
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or("unclosed [ in IPv6 host")?;
        (h, p.strip_prefix(':').ok_or("missing :port")?)
    } else {
        text.rsplit_once(':').ok_or("missing :port")?
    };
    if host.is_empty() {
        return Err("empty host");
    }
    if host.contains(':') && host.parse::<IpAddr>().is_err() {
        return Err("bad IPv6 host");
    }
    let port: u16 = port.parse().map_err(|_| "port is not a number 0-65535")?;
    Ok(RpcAddress::new(host, port))
}

impl FromStr for RpcAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| AddressError {
            input: s.to_string(),
            reason,
        };
        let rest = s
            .trim()
            .strip_prefix(SCHEME)
            .ok_or(err("missing flint://"))?;
        if rest.contains(',') {
            return Err(err("a list of addresses where one was expected"));
        }
        parse_host_port(rest).map_err(err)
    }
}

impl fmt::Display for RpcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.host_port())
    }
}

/// The address of one endpoint: `flint://name@host:port`, or `flint-client://name` for an
/// endpoint in a client-only environment (reachable only over a connection it opened).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointAddress {
    /// The environment's address; `None` for a client-only environment.
    pub address: Option<RpcAddress>,
    /// The endpoint's registered name.
    pub name: String,
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Some(a) => write!(f, "{SCHEME}{}@{}", self.name, a.host_port()),
            None => write!(f, "flint-client://{}", self.name),
        }
    }
}

impl FromStr for EndpointAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| AddressError {
            input: s.to_string(),
            reason,
        };
        let rest = s
            .trim()
            .strip_prefix(SCHEME)
            .ok_or(err("missing flint://"))?;
        let (name, hp) = rest.split_once('@').ok_or(err("missing name@"))?;
        if name.is_empty() {
            return Err(err("empty endpoint name"));
        }
        Ok(EndpointAddress {
            address: Some(parse_host_port(hp).map_err(err)?),
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let a: RpcAddress = "flint://127.0.0.1:7077".parse().unwrap();
        assert_eq!(a, RpcAddress::new("127.0.0.1", 7077));
        assert_eq!(a.to_string(), "flint://127.0.0.1:7077");
        let v6: RpcAddress = "flint://[::1]:9".parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "flint://[::1]:9");
        let e: EndpointAddress = "flint://master@h:1".parse().unwrap();
        assert_eq!(e.name, "master");
        assert_eq!(e.to_string(), "flint://master@h:1");
    }

    #[test]
    fn rejects_bad_addresses_with_reasons() {
        for bad in [
            "spark://h:1",
            "flint://h",
            "flint://h:99999",
            "flint://h:1/path",
            "flint://:1",
            "flint://a:1,b:2",
        ] {
            let e = bad.parse::<RpcAddress>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn addresses_round_trip_through_text_and_postcard(host in "[a-z][a-z0-9.-]{0,30}", port in proptest::prelude::any::<u16>(), name in "[a-zA-Z][a-zA-Z0-9_-]{0,20}") {
            let a = RpcAddress::new(host, port);
            proptest::prop_assert_eq!(a.to_string().parse::<RpcAddress>().unwrap(), a.clone());
            let bytes = postcard::to_stdvec(&a).unwrap();
            proptest::prop_assert_eq!(postcard::from_bytes::<RpcAddress>(&bytes).unwrap(), a.clone());
            let e = EndpointAddress { address: Some(a), name };
            proptest::prop_assert_eq!(e.to_string().parse::<EndpointAddress>().unwrap(), e);
        }
    }

    #[test]
    fn parses_master_lists() {
        let v = RpcAddress::parse_list("flint://h1:7077,h2:7078").unwrap();
        assert_eq!(
            v,
            vec![RpcAddress::new("h1", 7077), RpcAddress::new("h2", 7078)]
        );
        assert!(RpcAddress::parse_list("flint://h1:7077,").is_err());
    }
}
