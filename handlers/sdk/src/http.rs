//! For adapters that call an HTTPS API (feature `http`): one client set-up and one URL rule, so
//! every adapter refuses redirects, old TLS and plain HTTP to remote hosts the same way.

use reqwest::Url;

use crate::ConfigProblem;

/// A client builder with wardhook's outbound rules: rustls, TLS 1.2 or newer, and no redirects
/// (a redirect would re-send the body, PHI included, to a host nobody configured). Add a CA or
/// timeouts, then `build()`; or use [`client`].
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .min_tls_version(reqwest::tls::Version::TLS_1_2)
        .redirect(reqwest::redirect::Policy::none())
}

/// [`client_builder`], built; a failure becomes a config problem of the whole handler.
pub fn client() -> Result<reqwest::Client, ConfigProblem> {
    client_builder()
        .build()
        .map_err(|_| ConfigProblem::new("", "HTTP client could not be set up"))
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
    fn the_client_builds() {
        assert!(client().is_ok());
    }
}
