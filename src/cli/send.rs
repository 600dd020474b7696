//! `wardhook sign` and `wardhook send-test`: the sender's side, for curl demos, handler authors
//! and a clinic checking its setup end to end — the "test mode" the senders offer.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::Context as _;
use chrono::Utc;

use crate::config::{Config, Transport};
use crate::verify::sample_body;
use crate::verify::sign::{parse_signing_key, sign_request_full, SignedRequest};

/// The URL a sender would post to for `source`: the source's `public_url` when set (the URL
/// URL-signing schemes sign), else the listener's own address.
pub fn target_url(config: &Config, source: &str) -> String {
    let listen = config.server.listen;
    let host = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    };
    let scheme = match config.server.transport {
        Transport::Tls(_) => "https",
        Transport::PlainLoopback => "http",
    };
    let host = if host.ip().is_loopback() && scheme == "https" {
        // The dev certificate is issued for `localhost`; a name matches more certificates.
        format!("localhost:{}", host.port())
    } else {
        host.to_string()
    };
    format!("{scheme}://{host}/hooks/{source}")
}

/// Sign `body` as `source`'s sender would. `signing_key` is an Ed25519 private key file for
/// presets that sign asymmetrically (Standard Webhooks `whpk_`, Telnyx).
pub fn sign(
    config: &Config,
    source: &str,
    body: &[u8],
    url: Option<&str>,
    signing_key: Option<&Path>,
) -> anyhow::Result<SignedRequest> {
    let src = config
        .source(source)
        .with_context(|| format!("no source is named {source:?} in {}", config.path.display()))?;
    let spec = &src.spec;
    let url = match (url, &spec.public_url) {
        (Some(u), _) => u.to_owned(),
        (None, Some(public)) => public.to_string(),
        (None, None) => target_url(config, source),
    };
    let key = match signing_key {
        None => None,
        Some(p) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
            );
            Some(parse_signing_key(&text)?)
        }
    };
    Ok(sign_request_full(
        spec,
        body,
        Utc::now(),
        &url,
        key.as_ref(),
    )?)
}

/// `wardhook sign`: print the headers (`Name: value`, one per line) and, when it differs from
/// the usual target, the URL to post to.
pub fn print_signed(signed: &SignedRequest, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "# POST {}", signed.url)?;
    for (k, v) in &signed.headers {
        writeln!(out, "{k}: {v}")?;
    }
    Ok(())
}

/// `wardhook send-test`: sign the preset's sample event and post it to the running server;
/// print the status and the answer.
pub async fn send_test(
    config: &Config,
    source: &str,
    ca: Option<&Path>,
    signing_key: Option<&Path>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u16> {
    let src = config
        .source(source)
        .with_context(|| format!("no source is named {source:?} in {}", config.path.display()))?;
    let body = sample_body(src.spec.preset);
    let local = target_url(config, source);
    let signed = sign(config, source, &body, None, signing_key)?;
    // The signed URL may name the public host; the request goes to this server, with the same
    // path and query (Twilio JSON adds `bodySHA256` to the query).
    let post_to = match url::Url::parse(&signed.url) {
        Ok(u) => {
            let mut local = url::Url::parse(&local)?;
            local.set_query(u.query());
            local.to_string()
        }
        Err(_) => local,
    };
    let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let mut request = client.build()?.post(&post_to).body(body);
    for (k, v) in &signed.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {post_to} (is `wardhook serve` running?)"))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    writeln!(out, "POST {post_to} -> {status}")?;
    writeln!(out, "{text}")?;
    Ok(status)
}
