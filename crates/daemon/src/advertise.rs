//! The address a daemon tells its peers, which is not always the one it binds.
//!
//! In order: the `network.advertise_address` setting when set; else the bind
//! host when it names one address; else — bound to `0.0.0.0` or `::`, every
//! interface — this machine's host name when it resolves to an address other
//! than loopback, else the first non-loopback address of an interface that is
//! up (IPv4 first), else `127.0.0.1` on a machine with loopback only. Never
//! `0.0.0.0`: no peer can connect to it.

use std::net::IpAddr;
use std::time::Duration;

use flint_conf::Conf;

/// `network.advertise_address`: the host name or address peers are told to
/// reach this daemon at (RPC address, web UI URL), whatever it binds. Unset:
/// the bind host, or when that is `0.0.0.0`/`::` the host name or first
/// non-loopback address.
pub const ADVERTISE_ADDRESS: &str = "network.advertise_address";

/// How long resolving this machine's host name may take before interface
/// addresses are used instead.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `network.advertise_address` setting, when set to something other than
/// blanks.
pub fn configured(conf: &Conf) -> Option<String> {
    conf.get(ADVERTISE_ADDRESS)
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Whether binding `host` listens on every interface (`0.0.0.0`, `::`,
/// `[::]`, or empty).
pub fn is_unspecified(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.is_empty() || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// Whether `host` is a loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host to advertise for a socket bound on `bind_host`: see the
/// [module docs](self). `configured` is [`configured`]'s answer.
pub async fn advertised_host(bind_host: &str, configured: Option<&str>) -> String {
    if let Some(h) = configured.map(str::trim).filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    if !is_unspecified(bind_host) {
        return bind_host.trim().to_string();
    }
    machine_host().await
}

/// How peers on other machines can name this one: its host name when that
/// resolves to an address other than loopback, else the first non-loopback
/// interface address, else `127.0.0.1`.
pub async fn machine_host() -> String {
    if let Some(name) = host_name() {
        if resolves_beyond_loopback(&name).await {
            return name;
        }
    }
    match interface_addresses().into_iter().next() {
        Some(ip) => ip.to_string(),
        None => "127.0.0.1".to_string(),
    }
}

async fn resolves_beyond_loopback(name: &str) -> bool {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, 0))).await {
        Ok(Ok(mut addrs)) => addrs.any(|a| usable(a.ip())),
        _ => false,
    }
}

/// Neither loopback, nor unspecified, nor link-local (which needs a scope to
/// be dialled).
fn usable(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// This machine's host name (`gethostname`), if it has a non-empty one.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at
    // most that many and we look only up to the first NUL within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The addresses of this machine's interfaces that are up, other than
/// loopback and link-local: IPv4 first, each family in the kernel's order.
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with
    // freeifaddrs, and nothing else.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        let loopback = ifa.ifa_flags & (libc::IFF_LOOPBACK as libc::c_uint) != 0;
        if !up || loopback || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose family
        // tells its real type, read only as that type below.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let ip = if family == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes())
        } else if family == libc::AF_INET6 {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
            IpAddr::from(sin6.sin6_addr.s6_addr)
        } else {
            continue;
        };
        if usable(ip) {
            if ip.is_ipv4() {
                v4.push(ip);
            } else {
                v6.push(ip);
            }
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    v4.extend(v6);
    v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_and_loopback_forms() {
        for h in ["0.0.0.0", "::", "[::]", "", " 0.0.0.0 "] {
            assert!(is_unspecified(h), "{h:?}");
        }
        for h in ["127.0.0.1", "node1", "10.0.0.5", "::1"] {
            assert!(!is_unspecified(h), "{h:?}");
        }
        for h in ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"] {
            assert!(is_loopback(h), "{h:?}");
        }
        assert!(!is_loopback("10.0.0.5"));
    }

    #[tokio::test]
    async fn a_setting_wins_then_a_named_bind_host() {
        assert_eq!(advertised_host("0.0.0.0", Some(" node7 ")).await, "node7");
        assert_eq!(advertised_host("10.1.2.3", None).await, "10.1.2.3");
        assert_eq!(advertised_host("10.1.2.3", Some("  ")).await, "10.1.2.3");
    }

    #[tokio::test]
    async fn every_interface_is_advertised_as_a_dialable_host() {
        for bind in ["0.0.0.0", "::"] {
            let h = advertised_host(bind, None).await;
            assert!(!is_unspecified(&h), "{bind} advertised as {h}");
            // On a machine with any interface beyond loopback, not loopback.
            if !interface_addresses().is_empty() {
                assert!(!is_loopback(&h), "{bind} advertised as {h}");
            }
        }
    }

    #[test]
    fn interface_addresses_are_usable() {
        for ip in interface_addresses() {
            assert!(usable(ip), "{ip}");
        }
        assert!(!usable("fe80::1".parse().unwrap()));
        assert!(!usable("169.254.1.1".parse().unwrap()));
        assert!(usable("10.0.0.1".parse().unwrap()));
    }
}
