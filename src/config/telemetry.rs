//! `[traces]`: OpenTelemetry traces of deliveries, exported over OTLP/HTTP (protobuf). Off
//! unless the section is present with an `endpoint`.
//!
//! The same rule as every other connection wardhook makes: TLS with the collector's certificate
//! verified (against `ca`, or the built-in web roots), and plain HTTP only to a collector on
//! loopback, where there is no network to listen on. Spans carry ids, source and handler names,
//! statuses and timings only (see `telemetry::traces`), but what they reveal — which source
//! delivered when, which handler failed — is still operational detail for the clinic's own
//! network.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[traces]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesSection {
    /// `false` keeps the section but exports nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The collector's OTLP/HTTP traces URL, e.g. `https://otel.clinic.internal:4318/v1/traces`.
    pub endpoint: Option<String>,
    /// PEM CA certificate(s) the collector's certificate must chain to; default: the built-in
    /// web roots.
    pub ca: Option<PathBuf>,
    /// The `service.name` resource attribute.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// How long one export request may take before it is abandoned (its spans are dropped).
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

fn default_true() -> bool {
    true
}

fn default_service_name() -> String {
    "wardhook".to_owned()
}

fn default_timeout() -> String {
    "10s".to_owned()
}

/// `[traces]`, checked: where and how to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracesSettings {
    /// The OTLP/HTTP traces URL (`https`, or `http` to a loopback host).
    pub endpoint: url::Url,
    /// CA file for the collector's certificate (absolute or relative to the config's folder).
    pub ca: Option<PathBuf>,
    /// `service.name` of every span.
    pub service_name: String,
    /// Per-export-request timeout.
    pub timeout: Duration,
}

/// Longest export timeout accepted: a stuck collector must not hold spans (and memory) longer.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Check `[traces]`: `None` when absent or disabled (or wrong, with the problems pushed).
pub(super) fn check_traces(
    section: Option<&TracesSection>,
    base: &Path,
    problems: &mut dyn FnMut(&str, String),
) -> Option<TracesSettings> {
    let section = section.filter(|s| s.enabled)?;
    let endpoint = match section.endpoint.as_deref().map(url::Url::parse) {
        None => {
            problems(
                "traces.endpoint",
                "is required when [traces] is enabled, e.g. \"https://otel.example:4318/v1/traces\""
                    .into(),
            );
            None
        }
        Some(Err(e)) => {
            problems("traces.endpoint", format!("is not a URL: {e}"));
            None
        }
        Some(Ok(u)) => check_endpoint(u, problems),
    };
    let ca = section.ca.as_ref().and_then(|ca| {
        let full = if ca.is_relative() {
            base.join(ca)
        } else {
            ca.clone()
        };
        match std::fs::read_to_string(&full) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(full),
            Ok(_) => {
                problems(
                    "traces.ca",
                    format!("{} holds no PEM certificate", full.display()),
                );
                None
            }
            Err(e) => {
                problems("traces.ca", format!("cannot read {}: {e}", full.display()));
                None
            }
        }
    });
    let service_ok = !section.service_name.is_empty()
        && section.service_name.len() <= 64
        && section
            .service_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !service_ok {
        problems(
            "traces.service_name",
            "must be 1–64 characters of A–Z, a–z, 0–9, '-', '_' or '.'".into(),
        );
    }
    let timeout = match super::parse_duration(&section.timeout) {
        Ok(d) if d >= Duration::from_secs(1) && d <= MAX_TIMEOUT => Some(d),
        Ok(_) => {
            problems("traces.timeout", "must be between 1s and 60s".into());
            None
        }
        Err(e) => {
            problems("traces.timeout", e);
            None
        }
    };
    if section.ca.is_some() && ca.is_none() {
        return None;
    }
    Some(TracesSettings {
        endpoint: endpoint?,
        ca,
        service_name: service_ok.then(|| section.service_name.clone())?,
        timeout: timeout?,
    })
}

/// `https` anywhere; `http` only to a loopback host; no credentials, query or fragment (they
/// would be logged with export errors).
fn check_endpoint(u: url::Url, problems: &mut dyn FnMut(&str, String)) -> Option<url::Url> {
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a).is_loopback(),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a).is_loopback(),
        None => false,
    };
    let mut ok = true;
    match u.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            problems(
                "traces.endpoint",
                "plain http is allowed only to a loopback collector (127.0.0.1, ::1, localhost); \
                 use https"
                    .into(),
            );
            ok = false;
        }
        other => {
            problems(
                "traces.endpoint",
                format!("scheme {other:?} is not https (OTLP/HTTP)"),
            );
            ok = false;
        }
    }
    if u.host().is_none() {
        problems("traces.endpoint", "names no host".into());
        ok = false;
    }
    if !u.username().is_empty() || u.password().is_some() {
        problems(
            "traces.endpoint",
            "must not carry credentials in the URL".into(),
        );
        ok = false;
    }
    if u.query().is_some() || u.fragment().is_some() {
        problems(
            "traces.endpoint",
            "must not have a query or fragment".into(),
        );
        ok = false;
    }
    ok.then_some(u)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn section(endpoint: &str) -> TracesSection {
        TracesSection {
            enabled: true,
            endpoint: Some(endpoint.to_owned()),
            ca: None,
            service_name: default_service_name(),
            timeout: default_timeout(),
        }
    }

    fn check(s: &TracesSection) -> (Option<TracesSettings>, Vec<String>) {
        let mut problems = Vec::new();
        let out = check_traces(Some(s), Path::new("."), &mut |p, m| {
            problems.push(format!("{p}: {m}"));
        });
        (out, problems)
    }

    #[test]
    fn traces_are_off_without_the_section_or_when_disabled() {
        let mut problems = Vec::new();
        assert!(check_traces(None, Path::new("."), &mut |p, m| problems
            .push(format!("{p}: {m}")))
        .is_none());
        let mut off = section("https://otel.example:4318/v1/traces");
        off.enabled = false;
        assert_eq!(check(&off), (None, vec![]));
        assert!(problems.is_empty());
    }

    #[test]
    fn https_anywhere_and_plain_http_only_on_loopback() {
        for ok in [
            "https://otel.example:4318/v1/traces",
            "http://127.0.0.1:4318/v1/traces",
            "http://[::1]:4318/v1/traces",
            "http://localhost:4318/v1/traces",
        ] {
            let (out, problems) = check(&section(ok));
            assert!(problems.is_empty(), "{ok}: {problems:?}");
            assert_eq!(out.unwrap().endpoint.as_str(), ok);
        }
        for (bad, why) in [
            ("http://10.0.0.5:4318/v1/traces", "loopback"),
            ("http://otel.example:4318/v1/traces", "loopback"),
            ("grpc://otel.example:4317", "not https"),
            ("https://user:pw@otel.example/v1/traces", "credentials"),
            ("https://otel.example/v1/traces?token=x", "query"),
            ("not a url", "not a URL"),
        ] {
            let (out, problems) = check(&section(bad));
            assert!(out.is_none(), "{bad}");
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("traces.endpoint: ") && p.contains(why)),
                "{bad}: {problems:?}"
            );
        }
    }

    #[test]
    fn every_problem_of_the_section_is_reported_with_its_key() {
        let s = TracesSection {
            enabled: true,
            endpoint: None,
            ca: Some(PathBuf::from("/nonexistent/otel-ca.pem")),
            service_name: "wardhook prod".into(),
            timeout: "5m".into(),
        };
        let (out, problems) = check(&s);
        assert!(out.is_none());
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            [
                "traces.endpoint",
                "traces.ca",
                "traces.service_name",
                "traces.timeout"
            ],
            "{problems:?}"
        );
    }
}
