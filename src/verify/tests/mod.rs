//! Tests of the verify stage: published and derived known-answer vectors, round trips through
//! `sign`, rejection tables, property tests, IP resolution, OAuth2 and spec validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::Duration;

use crate::secret::Secret;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::*;

mod oauth_ip;
mod props;
mod rejections;
mod roundtrip;
mod spec;
mod vectors;

/// The 55-byte body of the reference's derived vectors (§1.6).
pub(super) const BODY55: &[u8] = br#"{"event":"call.ended","data":{"call_id":"call_abc123"}}"#;

pub(super) fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec())
}

pub(super) fn spec(preset: Preset, secrets: &[&str]) -> VerifierSpec {
    VerifierSpec {
        source: "src".into(),
        preset,
        secrets: secrets.iter().map(|s| secret(s)).collect(),
        token: None,
        tolerance: VerifierSpec::DEFAULT_TOLERANCE,
        public_url: None,
        allow_ips: Vec::new(),
        trusted_proxies: Vec::new(),
        scheme: SchemeOptions::default(),
    }
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    map
}

pub(super) fn owned_headers(pairs: &[(String, String)]) -> HeaderMap {
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers(&refs)
}

pub(super) fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("time")
}

pub(super) fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("time")
}

pub(super) const PEER: &str = "198.51.100.7";

/// Verify a POST with these headers and body on path `pq`.
pub(super) fn check(
    spec: &VerifierSpec,
    map: &HeaderMap,
    body: &[u8],
    pq: &str,
    now: DateTime<Utc>,
) -> Result<Verdict, Rejection> {
    let v = SourceVerifier::new(spec.clone()).expect("valid spec");
    check_with(&v, map, body, pq, now, PEER.parse().expect("ip"))
}

pub(super) fn check_with(
    v: &SourceVerifier,
    map: &HeaderMap,
    body: &[u8],
    pq: &str,
    now: DateTime<Utc>,
    peer: IpAddr,
) -> Result<Verdict, Rejection> {
    v.verify(
        &UnverifiedRequest {
            method: "POST",
            path_and_query: pq,
            headers: map,
            body,
            peer_ip: peer,
        },
        now,
    )
}

pub(super) fn verified(r: Result<Verdict, Rejection>) -> VerifiedDelivery {
    match r {
        Ok(Verdict::Verified(d)) => d,
        Ok(Verdict::Challenge(c)) => panic!("expected a verified delivery, got challenge {c:?}"),
        Err(e) => panic!("expected a verified delivery, got rejection: {e}"),
    }
}

pub(super) fn tol(secs: u64) -> Duration {
    Duration::from_secs(secs)
}
