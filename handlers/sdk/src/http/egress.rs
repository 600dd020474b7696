//! The egress allowlist of an http-based handler: where its requests may go.
//!
//! A handler may reach the hosts of the URLs in its own config (its API root, a token
//! endpoint) and whatever its `allow_hosts` key adds — nothing else, whatever an event says.
//! Names and addresses are checked separately:
//!
//! - **Names.** A request may name only a configured host or a name listed in `allow_hosts`;
//!   any other name is refused before it is even resolved.
//! - **Addresses.** Every address a name resolves to is checked at connect time, in the client's
//!   DNS resolver, so a DNS answer cannot smuggle a request into the clinic's network: a
//!   private, loopback, link-local or otherwise non-public address is used only when it falls
//!   in a range listed in `allow_hosts` (`10.0.0.0/8`, `127.0.0.1`) or when the name itself is
//!   listed there (the operator vouches for what `crm.internal` resolves to). A configured URL
//!   whose host is an IP address is always allowed: it is its own address.
//! - Redirects are never followed and environment proxies are not used (a proxy would resolve
//!   the destination out of reach of these checks).
//!
//! A refusal is [`EgressRefused`]: a permanent failure whose reason names the host and says
//! what to list, never anything from the event.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use crate::ConfigProblem;

/// A request the allowlist did not let through. Permanent: retrying reaches the same host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress to {host} refused: {why}")]
pub struct EgressRefused {
    host: String,
    why: &'static str,
}

impl EgressRefused {
    /// The refused host (from the config, never from an event).
    pub fn host(&self) -> &str {
        &self.host
    }

    fn not_listed(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            why: "not a configured host and not in allow_hosts",
        }
    }

    fn private(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            why: "it resolves only to private, loopback or link-local addresses; list the \
                  name or its range in allow_hosts (e.g. allow_hosts = [\"10.0.0.0/8\"]) to \
                  allow them",
        }
    }
}

/// Why a request got no answer: refused by the allowlist, or the network.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The allowlist refused the destination: permanent.
    #[error(transparent)]
    Refused(#[from] EgressRefused),
    /// Connecting, sending or reading failed: retryable.
    #[error("{}", if *.timed_out { "timeout" } else { "network error" })]
    Network {
        /// Whether it was the request's timeout.
        timed_out: bool,
    },
}

/// Where one handler's requests may go. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Egress {
    list: Arc<Allowlist>,
}

#[derive(Debug, Default)]
struct Allowlist {
    /// Names a request may use: hosts of configured URLs and names listed in `allow_hosts`,
    /// lower case, without a trailing dot.
    names: BTreeSet<String>,
    /// Names listed in `allow_hosts`: the operator vouches for what they resolve to.
    vouched: BTreeSet<String>,
    /// Hosts of configured URLs that are IP addresses.
    configured_ips: BTreeSet<IpAddr>,
    /// Addresses and ranges listed in `allow_hosts`.
    nets: Vec<IpNet>,
}

impl Egress {
    /// The allowlist of a handler whose config names `urls`, extended by its `allow_hosts`
    /// entries (key `key`). Every bad entry is a problem at `key[i]`: an entry is a host name
    /// (`crm.internal`), an IP address (`10.0.0.5`, `::1`) or a CIDR range (`10.0.0.0/8`).
    pub fn new<'a>(
        urls: impl IntoIterator<Item = &'a Url>,
        allow_hosts: &[String],
        key: &str,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let mut list = Allowlist::default();
        for url in urls {
            match url.host() {
                Some(url::Host::Domain(name)) => {
                    list.names.insert(normalize_name(name));
                }
                Some(url::Host::Ipv4(ip)) => {
                    list.configured_ips.insert(IpAddr::V4(ip));
                }
                Some(url::Host::Ipv6(ip)) => {
                    list.configured_ips.insert(IpAddr::V6(ip));
                }
                None => {}
            }
        }
        let mut problems = Vec::new();
        for (i, entry) in allow_hosts.iter().enumerate() {
            match parse_entry(entry) {
                Ok(Entry::Net(net)) => list.nets.push(net),
                Ok(Entry::Name(name)) => {
                    list.names.insert(name.clone());
                    list.vouched.insert(name);
                }
                Err(message) => problems.push(ConfigProblem::new(format!("{key}[{i}]"), message)),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                list: Arc::new(list),
            })
        } else {
            Err(problems)
        }
    }

    /// Whether a request to `url` may leave, judged on its host before any connection: a name
    /// must be allowed (its addresses are checked when it is resolved), an IP address must be a
    /// configured host or fall in a listed range (an IP address is never resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), EgressRefused> {
        let allowed = match url.host() {
            Some(url::Host::Domain(name)) => self.list.names.contains(&normalize_name(name)),
            Some(url::Host::Ipv4(ip)) => self.list.ip_literal_allowed(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.list.ip_literal_allowed(IpAddr::V6(ip)),
            None => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(EgressRefused::not_listed(
                url.host_str().unwrap_or("(no host)"),
            ))
        }
    }

    /// A client builder with wardhook's outbound rules — rustls, TLS 1.2 or newer, no
    /// redirects (a redirect would re-send the body, PHI included, to a host nobody
    /// configured), no environment proxy — and this allowlist in its DNS resolver. Add a CA or
    /// timeouts, then `build()`; or use [`Egress::client`].
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_rustls_tls()
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(AllowlistResolver {
                list: self.list.clone(),
            }))
    }

    /// [`Egress::client_builder`], built; a failure becomes a config problem of the handler.
    pub fn client(&self) -> Result<reqwest::Client, ConfigProblem> {
        self.client_builder()
            .build()
            .map_err(|_| ConfigProblem::new("", "HTTP client could not be set up"))
    }

    /// [`Egress::client`], trusting also the CA certificates (PEM) in `ca_file` (config key
    /// `ca_file`, relative to the config's folder) besides the public roots: for a destination
    /// whose certificate an internal CA issued. Verification cannot be turned off.
    pub fn client_with_ca(
        &self,
        ca_file: Option<&std::path::Path>,
        ctx: &crate::BuildContext,
    ) -> Result<reqwest::Client, ConfigProblem> {
        let mut builder = self.client_builder().tls_built_in_root_certs(true);
        if let Some(path) = ca_file {
            let pem = std::fs::read(ctx.resolve_path(path)).map_err(|e| {
                ConfigProblem::new(
                    "ca_file",
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| ConfigProblem::new("ca_file", "not a PEM certificate"))?;
            if certs.is_empty() {
                return Err(ConfigProblem::new("ca_file", "holds no PEM certificate"));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder
            .build()
            .map_err(|_| ConfigProblem::new("", "HTTP client could not be set up"))
    }

    /// Send `request` (built on a client from [`Egress::client_builder`]) if its URL passes
    /// [`Egress::check_url`]. A refusal at connect time (a name resolving only to addresses not
    /// allowed) is [`SendError::Refused`] as well, so callers classify it as permanent.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        let (client, request) = request.build_split();
        let request = request.map_err(|e| network(&e))?;
        self.check_url(request.url())?;
        client.execute(request).await.map_err(|e| network(&e))
    }
}

/// A failed send as [`SendError`]: the allowlist's refusal if the resolver refused, else the
/// network.
fn network(e: &reqwest::Error) -> SendError {
    match refusal(e) {
        Some(refused) => SendError::Refused(refused.clone()),
        None => SendError::Network {
            timed_out: e.is_timeout(),
        },
    }
}

/// The allowlist's refusal inside a reqwest error (the resolver's error travels as the source
/// of the connect error), if that is what failed.
pub fn refusal(e: &reqwest::Error) -> Option<&EgressRefused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<EgressRefused>() {
            return Some(refused);
        }
        source = err.source();
    }
    None
}

impl Allowlist {
    fn ip_literal_allowed(&self, ip: IpAddr) -> bool {
        self.configured_ips.contains(&ip) || self.in_listed_range(ip)
    }

    fn in_listed_range(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether `name` (allowed) may be reached at `ip`.
    fn address_allowed(&self, name: &str, ip: IpAddr) -> bool {
        is_public(ip) || self.in_listed_range(ip) || self.vouched.contains(name)
    }
}

/// Resolves through the system resolver, then keeps only the addresses the allowlist allows.
#[derive(Debug)]
struct AllowlistResolver {
    list: Arc<Allowlist>,
}

impl Resolve for AllowlistResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let list = self.list.clone();
        let host = normalize_name(name.as_str());
        Box::pin(async move {
            if !list.names.contains(&host) {
                return Err(Box::new(EgressRefused::not_listed(&host)) as BoxError);
            }
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| list.address_allowed(&host, a.ip()))
                .collect();
            if allowed.is_empty() && !resolved.is_empty() {
                return Err(Box::new(EgressRefused::private(&host)) as BoxError);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One `allow_hosts` entry.
enum Entry {
    Name(String),
    Net(IpNet),
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    const WHAT: &str =
        "must be a host name, an IP address or a CIDR range (crm.internal, 10.0.0.5, 10.0.0.0/8)";
    let text = entry.trim();
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Entry::Net(IpNet::from(canonical(ip))));
    }
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| WHAT.to_owned())?;
        if net.prefix_len() == 0 {
            return Err(
                "a /0 range would allow every address; list the ranges the handler \
                        needs"
                    .to_owned(),
            );
        }
        return Ok(Entry::Net(net.trunc()));
    }
    let name = normalize_name(text);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(Entry::Name(name))
    } else {
        Err(WHAT.to_owned())
    }
}

fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is an ordinary public unicast address: not private, loopback, link-local,
/// shared (CGNAT), unspecified, multicast, broadcast, documentation, benchmarking or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address: judge that one.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])
        || s[..6] == [0, 0, 0, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    fn egress(urls: &[&str], allow: &[&str]) -> Egress {
        let urls: Vec<Url> = urls.iter().map(|u| url(u)).collect();
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        Egress::new(&urls, &allow, "allow_hosts").expect("valid")
    }

    #[test]
    fn only_configured_and_listed_hosts_may_be_named() {
        let e = egress(
            &["https://crm.internal/api", "http://127.0.0.1:9000/x"],
            &["tickets.internal", "10.1.0.0/16"],
        );
        for ok in [
            "https://crm.internal/other",
            "https://CRM.Internal./x",
            "https://tickets.internal/",
            "http://127.0.0.1:9001/",
            "https://10.1.2.3/",
        ] {
            assert!(e.check_url(&url(ok)).is_ok(), "{ok}");
        }
        for refused in [
            "https://evil.example/",
            "https://crm.internal.evil.example/",
            "http://127.0.0.2/",
            "https://10.2.0.1/",
            "http://[::1]/",
        ] {
            let err = e.check_url(&url(refused)).expect_err(refused);
            assert!(err.to_string().contains("allow_hosts"), "{err}");
        }
    }

    #[test]
    fn bad_allow_hosts_entries_are_problems_at_their_key_path() {
        let allow: Vec<String> = [
            "crm.internal",
            "https://crm.internal",
            "crm.internal:443",
            "*.internal",
            "",
            "10.0.0.0/33",
            "0.0.0.0/0",
            "::/0",
            "[::1]",
            "fd00::/8",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let problems = Egress::new(&[], &allow, "allow_hosts").expect_err("bad entries");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "allow_hosts[1]",
                "allow_hosts[2]",
                "allow_hosts[3]",
                "allow_hosts[4]",
                "allow_hosts[5]",
                "allow_hosts[6]",
                "allow_hosts[7]"
            ]
        );
        assert!(problems[5].message.contains("/0"), "{:?}", problems[5]);
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fe80::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "::10.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in [
            "8.8.8.8",
            "203.0.112.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_its_range_or_name_is_listed() {
        let resolve = |e: &Egress| {
            let r = AllowlistResolver {
                list: e.list.clone(),
            };
            r.resolve("localhost".parse::<Name>().expect("name"))
        };
        let not_listed = egress(&["http://localhost:9/x"], &[]);
        let err = match resolve(&not_listed).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        let refused = err.downcast_ref::<EgressRefused>().expect("a refusal");
        assert_eq!(refused.host(), "localhost");

        for allow in ["127.0.0.0/8", "localhost"] {
            let listed = egress(&["http://localhost:9/x"], &[allow]);
            let addrs: Vec<SocketAddr> = match resolve(&listed).await {
                Ok(a) => a.collect(),
                Err(e) => panic!("{allow}: {e}"),
            };
            assert!(
                addrs.iter().any(|a| a.ip().is_loopback()),
                "{allow}: {addrs:?}"
            );
        }
        let other = egress(&["https://crm.internal/x"], &["127.0.0.0/8"]);
        assert!(resolve(&other).await.is_err(), "a name nobody configured");
    }
}
