//! For adapters that call an HTTPS API (feature `http`): one client set-up, one egress
//! allowlist and one URL rule, so every adapter refuses redirects, old TLS, plain HTTP to
//! remote hosts and destinations nobody configured the same way.
//!
//! An adapter builds an [`Egress`] from the URLs in its config and its `allow_hosts` key, takes
//! its client from [`Egress::client_builder`] (the allowlist sits in the client's DNS
//! resolver) and sends through [`Egress::send`], which also checks the request's host and turns
//! a refusal into [`SendError::Refused`] — a permanent failure naming the host. [`Outbound`]
//! keeps the two together and maps failures into the adapter's own error ([`Unreachable`], [`EgressRefused`]).
//!
//! In a factory, [`api_url`] checks each configured URL and [`outbound`] builds the allowlist
//! and the client in one call, reporting problems with their keys; an adapter that needs the
//! [`Egress`] before its client (to build an auth flow on it) calls [`egress`] first.

mod egress;
mod outbound;

use std::path::Path;

use reqwest::Url;

pub use egress::{is_public, refusal, Egress, EgressRefused, SendError};
pub use outbound::{Outbound, Unreachable};

use crate::{BuildContext, ConfigProblem, Problems};

/// The egress allowlist of a handler whose config names `urls`, extended by its
/// `allow_hosts` key; bad entries go to `p` as problems at `allow_hosts[i]`.
pub fn egress<'a>(
    urls: impl IntoIterator<Item = &'a Url>,
    allow_hosts: &[String],
    p: &mut Problems,
) -> Option<Egress> {
    p.take_all(Egress::new(urls, allow_hosts, "allow_hosts"))
}

/// An [`Outbound`]: the allowlist ([`egress`]) and a client built on it with wardhook's outbound rules
/// (rustls, TLS 1.2+, no redirects, no environment proxy), trusting also the PEM CA
/// certificates of `ca_file` (key `ca_file`, relative to the config's folder) when one is
/// configured. Every problem goes to `p`; `None` when there was one.
pub fn outbound<'a>(
    urls: impl IntoIterator<Item = &'a Url>,
    allow_hosts: &[String],
    ca_file: Option<&Path>,
    ctx: &BuildContext,
    p: &mut Problems,
) -> Option<Outbound> {
    let egress = egress(urls, allow_hosts, p)?;
    let client = match ca_file {
        Some(_) => egress.client_with_ca(ca_file, ctx),
        None => egress.client(),
    };
    let client = p.take(client)?;
    Some(Outbound::new(egress, client))
}

/// Parse the URL at config key `key`: `https://` anywhere, plain `http://` only to a loopback
/// host (tests, a local proxy), because PHI must not cross a network unencrypted.
pub fn api_url(key: &str, raw: &str) -> Result<Url, ConfigProblem> {
    let url = Url::parse(raw).map_err(|_| ConfigProblem::new(key, "not a URL"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err(ConfigProblem::new(
            key,
            "must use https:// (plain http:// is allowed only to a loopback host)",
        )),
    }
}

/// `localhost`, 127.0.0.0/8 or `[::1]`.
pub fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_plain_http_only_to_loopback() {
        assert!(api_url("u", "https://api.example.com/x").is_ok());
        assert!(api_url("u", "http://127.0.0.1:9000").is_ok());
        assert!(api_url("u", "http://127.3.4.5/").is_ok());
        assert!(api_url("u", "http://localhost:9000/").is_ok());
        assert!(api_url("u", "http://[::1]:9000/").is_ok());
        let e = api_url("base_url", "http://api.example.com").expect_err("plain remote");
        assert_eq!(e.path, "base_url");
        assert!(api_url("u", "ftp://127.0.0.1/").is_err());
        assert!(api_url("u", "not a url").is_err());
    }

    #[test]
    fn outbound_reports_every_bad_allow_hosts_entry_and_an_unreadable_ca_file() {
        let ctx = BuildContext::new("crm", crate::PhiLevel::Full, ".");
        let url = api_url("base_url", "https://api.example.com").expect("url");
        let mut p = Problems::new();
        assert!(outbound([&url], &[], None, &ctx, &mut p).is_some());
        let bad = vec!["not a host!".to_owned(), "10.0.0.0/99".to_owned()];
        assert!(outbound([&url], &bad, None, &ctx, &mut p).is_none());
        let missing = Path::new("/nonexistent/ca.pem");
        assert!(outbound([&url], &[], Some(missing), &ctx, &mut p).is_none());
        let problems = p.check().expect_err("problems");
        let paths: Vec<&str> = problems.iter().map(|q| q.path.as_str()).collect();
        assert_eq!(paths, ["allow_hosts[0]", "allow_hosts[1]", "ca_file"]);
    }

    #[test]
    fn the_client_builds() {
        let egress = Egress::new(&[], &[], "allow_hosts").expect("empty allowlist");
        assert!(egress.client().is_ok());
    }
}
