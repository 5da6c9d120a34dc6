//! Which client a request comes from, for rate limiting: the API key it presented when that
//! key is valid, else its address.
//!
//! The client is the socket peer, unless the peer is a trusted proxy: then it is the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy. Entries to the left of that one
//! were written by the client and are never believed, so a forged header changes nothing.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;
use ipnet::IpNet;

/// A rate-limit key. A request with a valid API key is counted against its key wherever it
/// comes from; any other request against its address, so guessing keys is limited per address.
/// `Copy` and small, so the limiter's map hashes it as cheaply as a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A client address (IPv6 masked to its prefix).
    Ip(IpAddr),
    /// A configured API key, by its tag (`auth::KeyTag`: from its id, not its position).
    ApiKey(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}

/// Resolves client addresses behind trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
    ipv6_prefix: u8,
}

impl ClientIp {
    /// `trusted`: proxies whose `X-Forwarded-For` is believed; IPv6 clients are keyed by their
    /// `ipv6_prefix` (e.g. /64, the usual allocation to one subscriber).
    pub fn new(trusted: Vec<IpNet>, ipv6_prefix: u8) -> Self {
        Self {
            trusted,
            ipv6_prefix: ipv6_prefix.min(128),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address for a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        hops.reverse();
        for hop in hops {
            match parse_hop(hop).map(canonical) {
                Some(ip) if self.is_trusted(ip) => continue,
                Some(ip) => return ip,
                // Garbage where an address should be: stop believing the chain here.
                None => break,
            }
        }
        peer
    }

    /// The rate-limit key for a client address: IPv4 as is, IPv6 masked to its prefix.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = if self.ipv6_prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.ipv6_prefix))
                };
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        }
    }
}

/// One `X-Forwarded-For` entry: an address, an IPv4 address with a port (`1.2.3.4:80`), or an
/// IPv6 address in brackets, with or without a port (`[::1]`, `[::1]:443`), as proxies write
/// them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    let port_ok = |port: &str| port.parse::<u16>().is_ok();
    if let Some(rest) = hop.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']')?;
        let ok = tail.is_empty() || tail.strip_prefix(':').is_some_and(port_ok);
        return ok.then(|| addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6))?;
    }
    let (addr, port) = hop.rsplit_once(':')?;
    port_ok(port)
        .then(|| addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4))
        .flatten()
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_choose_their_address() {
        let c = ClientIp::new(vec!["10.0.0.0/8".parse().unwrap()], 64);
        let forged = headers(&["6.6.6.6"]);
        assert_eq!(c.resolve(ip("203.0.113.9"), &forged), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_chains_resolve_to_the_right_most_untrusted_hop() {
        let c = ClientIp::new(vec!["10.0.0.0/8".parse().unwrap()], 64);
        // The client wrote "6.6.6.6"; the edge proxy appended the real address.
        let h = headers(&["6.6.6.6, 198.51.100.7, 10.1.2.3"]);
        assert_eq!(c.resolve(ip("10.9.9.9"), &h), ip("198.51.100.7"));
        // Several header lines count as one list, in order.
        let h = headers(&["6.6.6.6", "198.51.100.7"]);
        assert_eq!(c.resolve(ip("10.9.9.9"), &h), ip("198.51.100.7"));
        // Only proxies in the chain: the peer itself.
        let h = headers(&["10.0.0.1"]);
        assert_eq!(c.resolve(ip("10.9.9.9"), &h), ip("10.9.9.9"));
        // No header: the peer.
        assert_eq!(c.resolve(ip("10.9.9.9"), &HeaderMap::new()), ip("10.9.9.9"));
        // Garbage stops the walk.
        let h = headers(&["198.51.100.7, junk"]);
        assert_eq!(c.resolve(ip("10.9.9.9"), &h), ip("10.9.9.9"));
    }

    #[test]
    fn hops_with_ports_and_bracketed_ipv6_are_understood() {
        let c = ClientIp::new(vec!["10.0.0.0/8".parse().unwrap()], 128);
        for (hop, client) in [
            ("198.51.100.7:4711", "198.51.100.7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("2001:db8::7", "2001:db8::7"),
        ] {
            let h = headers(&[&format!("6.6.6.6, {hop}, 10.1.2.3:80")]);
            assert_eq!(c.resolve(ip("10.9.9.9"), &h), ip(client), "{hop}");
        }
        // A trusted proxy written with its port is still trusted, and skipped.
        let h = headers(&["198.51.100.8, 10.1.2.3:8080"]);
        assert_eq!(c.resolve(ip("10.9.9.9"), &h), ip("198.51.100.8"));
        // Not an address: the walk stops there, as before.
        for junk in [
            "[2001:db8::7",
            "[2001:db8::7]x",
            "198.51.100.7:port",
            "host:80",
            "1.2.3.4:99999",
        ] {
            let h = headers(&[&format!("198.51.100.9, {junk}")]);
            assert_eq!(c.resolve(ip("10.9.9.9"), &h), ip("10.9.9.9"), "{junk}");
        }
    }

    #[test]
    fn ipv6_clients_share_their_prefix() {
        let c = ClientIp::new(Vec::new(), 64);
        assert_eq!(c.key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(c.key(ip("2001:db8:1:2:bbbb::9")), ip("2001:db8:1:2::"));
        assert_ne!(c.key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(c.key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(
            ClientIp::new(Vec::new(), 128).key(ip("2001:db8::1")),
            ip("2001:db8::1")
        );
        assert_eq!(
            c.resolve(ip("::ffff:192.0.2.1"), &HeaderMap::new()),
            ip("192.0.2.1")
        );
    }
}
