//! The SSRF guard for webhook deliveries: merchants choose the URLs depositd POSTs to, so a URL
//! must never reach the operator's own network (loopback, private ranges, link-local and the
//! cloud metadata address 169.254.169.254, unique-local IPv6, IPv4-mapped IPv6 and the like),
//! unless the operator allows it (dev does: its receivers run on localhost).
//!
//! The check happens where the connection is made: [`GuardedResolver`] is the HTTP client's DNS
//! resolver and returns only addresses that pass, so the client connects to exactly the address
//! that was checked (a second DNS answer cannot rebind it). URLs with a literal IP never reach a
//! resolver and are checked by [`check_url`] before every request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// A DNS answer slower than this counts as none.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a delivery to `ip` would reach somewhere other than the public internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6.to_ipv4_mapped().is_some() // ::ffff:a.b.c.d, whatever a.b.c.d is
                || (segments[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::a.b.c.d (deprecated)
                || (segments[0] == 0x64 && segments[1] == 0xff9b && is_internal_v4(embedded_v4(v6))) // NAT64
                || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
                || (segments[0] == 0x2001 && segments[1] == 0) // Teredo 2001::/32
                || (segments[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || segments[..4] == [0x100, 0, 0, 0] // discard 100::/64
                || (segments[0] == 0x2002 && is_internal_v4(six_to_four_v4(v6))) // 6to4 around an internal IPv4
        }
    }
}

/// The IPv4 address a 6to4 address (2002:AABB:CCDD::/48) wraps.
fn six_to_four_v4(v6: Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[2], o[3], o[4], o[5])
}

fn embedded_v4(v6: Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, including cloud metadata
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (b & 0xc0) == 64) // carrier-grade NAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || a >= 240 // reserved
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("only https URLs are allowed")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("{0} is an internal address (loopback, private, link-local...); webhooks only go to public addresses")]
    Internal(IpAddr),
    #[error("{0} is a loopback name; webhooks only go to public addresses")]
    LoopbackName(String),
    #[error("{0} resolves only to internal addresses; webhooks only go to public addresses")]
    ResolvesInternal(String),
    #[error("{0} does not resolve")]
    Unresolvable(String),
}

/// The checks that need no DNS: scheme, a literal IP host, and `localhost` names (RFC 6761:
/// `localhost` and `*.localhost` are loopback whatever a resolver says).
pub fn check_url(url: &Url, allow_http: bool, allow_internal: bool) -> Result<(), Refused> {
    if !(url.scheme() == "https" || (allow_http && url.scheme() == "http")) {
        return Err(Refused::Scheme);
    }
    let ip = match url.host().ok_or(Refused::NoHost)? {
        Host::Ipv4(ip) => IpAddr::V4(ip),
        Host::Ipv6(ip) => IpAddr::V6(ip),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !allow_internal && (name == "localhost" || name.ends_with(".localhost")) {
                return Err(Refused::LoopbackName(name));
            }
            return Ok(());
        }
    };
    if !allow_internal && is_internal(ip) {
        return Err(Refused::Internal(ip));
    }
    Ok(())
}

/// [`check_url`], then (for a host name) that it resolves to at least one public address: what
/// registering an endpoint checks, so a merchant learns at once, not from failed deliveries.
/// Where the operator allows internal targets there is nothing to refuse, and no lookup is made.
pub async fn check_url_resolving(url: &Url, allow_http: bool, allow_internal: bool) -> Result<(), Refused> {
    check_url(url, allow_http, allow_internal)?;
    if let (Some(Host::Domain(host)), false) = (url.host(), allow_internal) {
        resolve_public(host, allow_internal).await?;
    }
    Ok(())
}

async fn resolve_public(host: &str, allow_internal: bool) -> Result<Vec<SocketAddr>, Refused> {
    let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, 0)));
    let resolved: Vec<SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => return Err(Refused::Unresolvable(host.to_owned())),
    };
    if resolved.is_empty() {
        return Err(Refused::Unresolvable(host.to_owned()));
    }
    let allowed: Vec<SocketAddr> = resolved.into_iter().filter(|a| allow_internal || !is_internal(a.ip())).collect();
    if allowed.is_empty() {
        return Err(Refused::ResolvesInternal(host.to_owned()));
    }
    Ok(allowed)
}

/// The delivery client's resolver: only public addresses come out of it.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_internal: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_internal = self.allow_internal;
        Box::pin(async move {
            let addrs = resolve_public(name.as_str(), allow_internal).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::10.0.0.1",
            "2002:7f00:1::",
            "2001::1",
            "fec0::1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal} is internal");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::8.8.8.8", "2002:808:808::"] {
            assert!(!is_internal(public.parse().unwrap()), "{public} is public");
        }
    }

    #[test]
    fn urls_are_checked_before_any_lookup() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(check_url(&url("http://example.com/h"), false, false), Err(Refused::Scheme));
        assert!(check_url(&url("http://example.com/h"), true, false).is_ok());
        assert_eq!(
            check_url(&url("https://169.254.169.254/latest"), false, false),
            Err(Refused::Internal("169.254.169.254".parse().unwrap()))
        );
        assert!(matches!(check_url(&url("https://[::ffff:7f00:1]/"), false, false), Err(Refused::Internal(_))));
        assert!(check_url(&url("https://127.0.0.1/"), false, true).is_ok(), "allowed when the operator says so");
        for name in ["https://localhost/", "https://LocalHost./x", "https://api.localhost:8443/"] {
            assert!(matches!(check_url(&url(name), false, false), Err(Refused::LoopbackName(_))), "{name}");
            assert!(check_url(&url(name), false, true).is_ok(), "{name} allowed when the operator says so");
        }
    }
}
