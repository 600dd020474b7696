//! For adapters that call an HTTPS API (feature `http`): one client set-up, one egress
//! allowlist and one URL rule, so every adapter refuses redirects, old TLS, plain HTTP to
//! remote hosts and destinations nobody configured the same way.
//!
//! An adapter builds an [`Egress`] from the URLs in its config and its `allow_hosts` key, takes
//! its client from [`Egress::client_builder`] (the allowlist sits in the client's DNS
//! resolver) and sends through [`Egress::send`], which also checks the request's host and turns
//! a refusal into [`SendError::Refused`] — a permanent failure naming the host.

mod egress;

use reqwest::Url;

pub use egress::{is_public, refusal, Egress, EgressRefused, SendError};

use crate::ConfigProblem;

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
    fn the_client_builds() {
        let egress = Egress::new(&[], &[], "allow_hosts").expect("empty allowlist");
        assert!(egress.client().is_ok());
    }
}
