//! The client's real IP behind trusted load balancers (`server.trusted_proxies`).
//!
//! From a peer inside a trusted CIDR, `X-Forwarded-For` is read right to left: every address
//! that is itself a trusted proxy is skipped and the first untrusted one is the client (the
//! "rightmost untrusted" rule: entries to its left were written by the client and prove
//! nothing). From any other peer the header is ignored, so a client cannot pick the address
//! its per-IP limits and logs are charged to.
//!
//! Per-IP limits then count an IPv6 client by its prefix ([`limit_key`]): one subscriber holds
//! a whole /64 and could otherwise rotate through 2^64 addresses.

use std::net::IpAddr;

use ipnet::IpNet;

/// The key per-IP limits count `ip` under: an IPv4 address (also one written IPv4-mapped,
/// `::ffff:a.b.c.d`) as it is, an IPv6 address with every bit past `v6_prefix` cleared.
/// `v6_prefix` is clamped to 0..=128.
pub fn limit_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// True when `ip` is inside one of `trusted`.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client address of a request from `peer` carrying the `X-Forwarded-For` header values
/// `forwarded_for` (in the order they appeared).
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    let entries = forwarded_for.iter().rev().flat_map(|v| v.rsplit(','));
    for entry in entries {
        let Some(ip) = parse_entry(entry.trim()) else {
            // Unreadable: trust nothing further left; the last trusted hop stands.
            return client;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            return ip;
        }
    }
    client
}

/// One X-Forwarded-For entry: an IPv4 or IPv6 address, optionally `[v6]` or with a port.
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(|r| r.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_prefix() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64), ip("2001:db8:1:2::"));
        assert_ne!(limit_key(ip("2001:db8:1:3::1"), 64), limit_key(ip("2001:db8:1:2::1"), 64));
        assert_eq!(limit_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1"), 48), ip("2001:db8:1::"));
        assert_eq!(limit_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(limit_key(ip("2001:db8::1"), 200), ip("2001:db8::1"), "clamped to 128");
        // IPv4, plain or mapped, is its own key: mapped addresses must not share one /64.
        assert_eq!(limit_key(ip("203.0.113.7"), 64), ip("203.0.113.7"));
        assert_eq!(limit_key(ip("::ffff:203.0.113.7"), 64), ip("203.0.113.7"));
        assert_ne!(limit_key(ip("::ffff:203.0.113.7"), 64), limit_key(ip("::ffff:203.0.113.8"), 64));
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("203.0.113.7"), &["1.2.3.4"], &t), ip("203.0.113.7"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let t = nets(&["10.0.0.0/8", "fd00::/8"]);
        // client-supplied garbage, then the real client, then an inner proxy.
        let xff = ["6.6.6.6, 198.51.100.20", "10.1.2.3"];
        assert_eq!(client_ip(ip("10.0.0.1"), &xff, &t), ip("198.51.100.20"));
        assert_eq!(client_ip(ip("10.0.0.1"), &["[2001:db8::1]"], &t), ip("2001:db8::1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &["198.51.100.20:4711"], &t), ip("198.51.100.20"));
    }

    #[test]
    fn without_a_usable_header_the_last_trusted_hop_stands() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &[], &t), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &["10.9.9.9, not-an-ip"], &t), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &["10.2.2.2"], &t), ip("10.2.2.2"), "all trusted: the leftmost");
    }
}
