//! Failures talking to a FHIR server, each mapped once to retryable or permanent.
//!
//! The decision uses the HTTP status and the `OperationOutcome`'s issue codes (FHIR's fixed
//! `IssueType` vocabulary), never its `diagnostics` or `details` text: servers put the
//! rejected values there, and those are PHI.

use std::time::Duration;

use serde_json::Value;
use wardhook_sdk::template::TemplateError;
use wardhook_sdk::HandlerError;

/// The largest `Retry-After` honoured (24 hours). A server asking for longer gets retried on
/// the handler's schedule; the bound keeps a hostile or broken header out of clock arithmetic.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `IssueType` codes that say the failure may pass: the `transient` family.
const TRANSIENT_CODES: &[&str] = &[
    "transient",
    "lock-error",
    "no-store",
    "exception",
    "timeout",
    "incomplete",
    "throttled",
];

/// Every other `IssueType` code: the `invalid`, `security` and `processing` families and
/// `informational`. A server that names one of these has judged the request itself.
const PERMANENT_CODES: &[&str] = &[
    "invalid",
    "structure",
    "required",
    "value",
    "invariant",
    "security",
    "login",
    "unknown",
    "expired",
    "forbidden",
    "suppressed",
    "processing",
    "not-supported",
    "duplicate",
    "multiple-matches",
    "not-found",
    "deleted",
    "too-long",
    "code-invalid",
    "extension",
    "too-costly",
    "business-rule",
    "conflict",
    "informational",
];

/// What went wrong writing an event to the FHIR server. Messages name hosts, HTTP statuses
/// and `IssueType` codes only.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// Connecting, sending or reading failed.
    #[error("{} talking to {host}", if *.timed_out { "timeout" } else { "network error" })]
    Network {
        /// The host.
        host: String,
        /// Whether it was the timeout.
        timed_out: bool,
    },
    /// The TLS handshake failed on the server's certificate (a private CA not in `ca_file`,
    /// expired, another host's name): retrying does not change a certificate.
    #[error(
        "TLS with {host} failed: its certificate is not trusted (a private CA belongs in ca_file)"
    )]
    Certificate {
        /// The host.
        host: String,
    },
    /// The server refused the request for good (validation, business rule, …).
    #[error("HTTP {status} from {host}{}", codes_suffix(.codes))]
    Rejected {
        /// The status code.
        status: u16,
        /// The FHIR server's host.
        host: String,
        /// `OperationOutcome` issue codes (error and fatal issues).
        codes: Vec<String>,
    },
    /// A failure that may pass (429, 5xx, `transient`/`throttled` issues).
    #[error("HTTP {status} from {host}{}", codes_suffix(.codes))]
    Unavailable {
        /// The status code.
        status: u16,
        /// The FHIR server's host.
        host: String,
        /// `OperationOutcome` issue codes.
        codes: Vec<String>,
        /// `Retry-After`, bounded by [`MAX_RETRY_AFTER`].
        retry_after: Option<Duration>,
    },
    /// A freshly issued token was refused too.
    #[error("HTTP 401 from {host} with a freshly issued token: check the client's registration and scopes")]
    AuthRefused {
        /// The FHIR server's host.
        host: String,
    },
    /// The token endpoint refused the client (`invalid_client`, `invalid_scope`, …).
    #[error("token endpoint {host} refused the client (HTTP {status}{})", code_suffix(.code))]
    TokenRefused {
        /// The token host.
        host: String,
        /// The status code.
        status: u16,
        /// OAuth2 `error`, when it was a plain code.
        code: Option<String>,
    },
    /// The token endpoint (or SMART discovery) failed in a way that may pass.
    #[error("token endpoint {host}: HTTP {status}")]
    TokenUnavailable {
        /// The host.
        host: String,
        /// The status code.
        status: u16,
        /// `Retry-After`, bounded.
        retry_after: Option<Duration>,
    },
    /// A 2xx that was not what FHIR or SMART documents.
    #[error("unexpected response from {host} ({what})")]
    BadResponse {
        /// The host.
        host: String,
        /// What was missing.
        what: &'static str,
    },
    /// A resource template could not be rendered, or did not render a resource.
    #[error("{key}.template: {what}")]
    Template {
        /// The resource's config table (`task`).
        key: &'static str,
        /// What went wrong (names variables, never values).
        what: String,
    },
    /// Signing the client assertion failed.
    #[error("could not sign the SMART client assertion")]
    Signing,
    /// A captured artifact could not be read for attaching (too large, purged, unreadable,
    /// the store unavailable): the SDK's classification, kept as it is.
    #[error("{}", .0.reason())]
    Artifact(HandlerError),
}

fn codes_suffix(codes: &[String]) -> String {
    if codes.is_empty() {
        String::new()
    } else {
        format!(": OperationOutcome {}", codes.join(", "))
    }
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
}

impl FhirError {
    /// A failed request to `host`: [`FhirError::Certificate`] when the handshake refused the
    /// server's certificate, otherwise [`FhirError::Network`].
    pub(crate) fn request(host: &str, e: &reqwest::Error) -> Self {
        if is_certificate_failure(e) {
            Self::Certificate {
                host: host.to_owned(),
            }
        } else {
            Self::Network {
                host: host.to_owned(),
                timed_out: e.is_timeout(),
            }
        }
    }

    /// A template failure for the resource table `key`.
    pub(crate) fn template(key: &'static str, e: &TemplateError) -> Self {
        Self::Template {
            key,
            what: e.to_string(),
        }
    }
}

impl From<FhirError> for HandlerError {
    fn from(e: FhirError) -> Self {
        let reason = e.to_string();
        match e {
            FhirError::Network { .. } => HandlerError::retryable(reason),
            FhirError::Unavailable { retry_after, .. }
            | FhirError::TokenUnavailable { retry_after, .. } => HandlerError::Retryable {
                reason,
                retry_after,
            },
            FhirError::Artifact(e) => e,
            _ => HandlerError::permanent(reason),
        }
    }
}

/// Whether rustls refused a certificate somewhere in `e`'s chain. reqwest wraps the rustls
/// error in `io::Error`s (two deep), and `io::Error::source()` skips the error it wraps, so the
/// walk opens each `io::Error` with `get_ref` instead.
fn is_certificate_failure(e: &reqwest::Error) -> bool {
    use rustls::AlertDescription as A;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    true
                }
                rustls::Error::AlertReceived(alert) => matches!(
                    alert,
                    A::BadCertificate
                        | A::UnsupportedCertificate
                        | A::CertificateRevoked
                        | A::CertificateExpired
                        | A::CertificateUnknown
                        | A::UnknownCA
                        | A::CertificateRequired
                ),
                _ => false,
            };
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// The error and fatal issue codes of an `OperationOutcome` body, restricted to FHIR's
/// `IssueType` vocabulary (anything else is dropped: it could be text).
pub fn issue_codes(body: &Value) -> Vec<String> {
    let Some(issues) = body
        .get("issue")
        .filter(|_| body.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let mut codes: Vec<String> = Vec::new();
    for issue in issues {
        let severity = issue.get("severity").and_then(Value::as_str);
        if matches!(severity, Some("warning" | "information")) {
            continue;
        }
        if let Some(code) = issue.get("code").and_then(Value::as_str) {
            let known = TRANSIENT_CODES.contains(&code) || PERMANENT_CODES.contains(&code);
            if known && !codes.iter().any(|c| c == code) {
                codes.push(code.to_owned());
            }
        }
    }
    codes
}

/// Classify a non-2xx answer. An issue code decides when the server gave one: the `transient`
/// family (`transient`, `throttled`, `timeout`, …) retries, any other `IssueType` code
/// (`invalid`, `processing`, `business-rule`, …) is permanent. Without a code the status
/// decides: 408, 429 and 5xx retry, other 4xx are permanent. 429 always retries.
pub fn classify(
    status: u16,
    codes: Vec<String>,
    retry_after: Option<Duration>,
    host: &str,
) -> FhirError {
    let host = host.to_owned();
    let transient_code = codes.iter().any(|c| TRANSIENT_CODES.contains(&c.as_str()));
    let permanent_code = codes.iter().any(|c| PERMANENT_CODES.contains(&c.as_str()));
    let transient_status = status == 408 || status == 429 || status >= 500;
    let retry = status == 429 || transient_code || (transient_status && !permanent_code);
    if retry {
        FhirError::Unavailable {
            status,
            host,
            codes,
            retry_after: retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
        }
    } else {
        FhirError::Rejected {
            status,
            host,
            codes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(code: &str) -> Value {
        json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": code, "diagnostics": "Patient John Doe +15551234567"}
        ]})
    }

    #[test]
    fn status_and_issue_codes_decide_retryable_or_permanent() {
        // (status, issue code, retryable)
        let cases: &[(u16, Option<&str>, bool)] = &[
            (400, Some("invalid"), false),
            (422, Some("business-rule"), false),
            (422, Some("processing"), false),
            (400, None, false),
            (404, None, false),
            (412, Some("multiple-matches"), false),
            (409, Some("lock-error"), true),
            (400, Some("throttled"), true),
            (503, Some("transient"), true),
            (500, Some("exception"), true),
            (500, None, true),
            (503, None, true),
            (408, None, true),
            (429, None, true),
            (429, Some("business-rule"), true),
            (500, Some("invalid"), false),
            (500, Some("business-rule"), false),
        ];
        for (status, code, retry) in cases {
            let body = code.map(outcome).unwrap_or(Value::Null);
            let e = classify(*status, issue_codes(&body), None, "ehr.example");
            assert_eq!(
                HandlerError::from(e).is_retryable(),
                *retry,
                "{status} {code:?}"
            );
        }
    }

    #[test]
    fn the_reason_names_codes_never_diagnostics() {
        let e = classify(
            422,
            issue_codes(&outcome("business-rule")),
            None,
            "ehr.example",
        );
        let reason = HandlerError::from(e).reason().to_owned();
        assert_eq!(
            reason,
            "HTTP 422 from ehr.example: OperationOutcome business-rule"
        );
        // A code outside FHIR's vocabulary could be anything, so it is dropped.
        let odd = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "John Doe"},
            {"severity": "warning", "code": "informational"}
        ]});
        assert!(issue_codes(&odd).is_empty());
    }

    #[test]
    fn retry_after_is_bounded() {
        let e = classify(
            503,
            vec![],
            Some(Duration::from_secs(u64::MAX / 2)),
            "ehr.example",
        );
        match HandlerError::from(e) {
            HandlerError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(MAX_RETRY_AFTER));
            }
            other => panic!("{other:?}"),
        }
    }
}
