//! Who is really calling: the client address behind trusted proxies, and the per-source
//! allowlist.
//!
//! `X-Forwarded-For` is written by whoever sent the request, so it is believed only when the TCP
//! peer is a configured trusted proxy, and then only from the right: each trusted proxy appends
//! the address it saw, so walking right to left and skipping trusted proxies, the first
//! untrusted address is the client. Anything further left was written by the client itself.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

use super::Rejection;

/// The address the allowlist applies to.
pub fn resolve_client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted_proxies: &[IpNet],
) -> Result<IpAddr, Rejection> {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted_proxies) {
        return Ok(peer);
    }
    // Several X-Forwarded-For lines form one list, in order.
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value
            .to_str()
            .map_err(|_| Rejection::MalformedHeader("x-forwarded-for"))?;
        entries.extend(text.split(',').map(str::trim));
    }
    let mut client = peer;
    for entry in entries.iter().rev() {
        let addr = parse_forwarded_entry(entry)
            .map(canonical)
            .ok_or(Rejection::MalformedHeader("x-forwarded-for"))?;
        client = addr;
        if !is_trusted(addr, trusted_proxies) {
            break;
        }
    }
    Ok(client)
}

/// Whether `ip` may deliver to a source with this allowlist (empty allows everyone).
pub fn is_allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    allow.is_empty() || allow.iter().any(|net| net.contains(&canonical(ip)))
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports) compares as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:443`.
pub fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    e.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
}
