//! `wardhook deliveries reverify ID`: show an auditor that a stored delivery is exactly what the
//! sender signed, by running the source's signature check again over the stored bytes.
//!
//! Only a signature over the body can be checked again. A source that authenticates with a
//! bearer token, password or API key proved who sent the request, not what it held, and that
//! secret is deliberately not stored: such a delivery is reported as *not re-verifiable* with its
//! own exit code, never as tampered. Where a scheme signs the body and also checks a token
//! (NextPhone's optional Bearer), the signature is re-checked and the report says the token was
//! not.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Config;
use crate::store::admin::Requester;
use crate::store::Maintenance;
use crate::verify::{
    BodyCoverage, SourceVerifier, UnverifiedRequest, Verdict, REVERIFY_METHOD, REVERIFY_PATH,
};

/// The verdict of a re-verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reverified {
    /// The stored body and headers verify under the source's current secrets.
    Authentic {
        /// Which configured secret matched (0-based).
        key_index: usize,
        /// The sender also presented a token that is not kept, so it was not re-checked.
        token_not_checked: bool,
    },
    /// They do not (tampered data, or the secret that signed it is no longer configured).
    NotAuthentic {
        /// The typed reason.
        reason: String,
    },
    /// The source's scheme signs nothing about the body that was kept (a token, password or API
    /// key, or a signature over other parts of the request): there is nothing to check again.
    NotReverifiable {
        /// Why, in one phrase.
        reason: &'static str,
    },
}

/// Whether `coverage` lets the kept `headers` vouch for the body; `Err` says why not.
fn reverifiable(coverage: BodyCoverage, headers: &[(String, String)]) -> Result<(), &'static str> {
    match coverage {
        BodyCoverage::Signed | BodyCoverage::SignedPlusToken => Ok(()),
        BodyCoverage::SignedIfPayloadHash => {
            let signs_body = headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .filter_map(|(_, v)| v.trim().strip_prefix("Bearer ").map(str::trim))
                .filter_map(crate::verify::parsers::parse_vonage_jwt)
                .any(|(_, claims, _)| claims.payload_hash.is_some());
            if signs_body {
                Ok(())
            } else {
                Err("the sender's JWT carried no payload_hash, so its signature does not cover the body")
            }
        }
        BodyCoverage::NotTheBody => {
            Err("the source's signed-content template does not include the body")
        }
        _ => Err(
            "the source authenticates with a token, password or API key, which proves who sent \
             a delivery but not what it held, and is not stored",
        ),
    }
}

/// Re-run verification for delivery `id`, printing the verdict.
pub fn reverify(
    config: &Config,
    store: &dyn Maintenance,
    id: &str,
    out: &mut dyn Write,
) -> anyhow::Result<Reverified> {
    let stored = store.load_stored_request(id, &Requester::cli_user())?;
    let source = config.source(&stored.source).ok_or_else(|| {
        anyhow::anyhow!(
            "source {:?} is no longer configured; its secrets are needed to re-verify",
            stored.source
        )
    })?;
    // The network checks (allowlist, proxies) were about the connection, which is gone; the
    // signature is what can be checked again.
    let coverage = crate::verify::SourceVerifier::new(source.spec.clone())
        .map_err(|_| {
            anyhow::anyhow!(
                "source {:?} has verification problems; run check-config",
                stored.source
            )
        })?
        .body_coverage();
    if let Err(reason) = reverifiable(coverage, &stored.headers) {
        writeln!(
            out,
            "delivery {id}: NOT RE-VERIFIABLE — {reason} ({} preset); nothing about the stored body can be checked again (this is not a finding of tampering)",
            source.preset
        )?;
        return Ok(Reverified::NotReverifiable { reason });
    }
    let mut spec = source.spec.clone();
    spec.allow_ips.clear();
    spec.trusted_proxies.clear();
    // The token is a secret that was never stored; the signature over the body is what can be
    // checked again.
    let token_not_checked = coverage == BodyCoverage::SignedPlusToken;
    if token_not_checked {
        spec.token = None;
    }
    let verifier =
        SourceVerifier::new(spec).map_err(|p| anyhow::anyhow!("source settings invalid: {p:?}"))?;
    let mut headers = HeaderMap::new();
    let mut method = "POST".to_owned();
    let mut path = format!("/hooks/{}", stored.source);
    for (k, v) in &stored.headers {
        match k.as_str() {
            REVERIFY_METHOD => method.clone_from(v),
            REVERIFY_PATH => path.clone_from(v),
            _ => {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    headers.append(name, value);
                }
            }
        }
    }
    let request = UnverifiedRequest {
        method: &method,
        path_and_query: &path,
        headers: &headers,
        body: &stored.body,
        peer_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    // Checked as of the moment it arrived, so the replay window applies as it did then.
    let verdict = match verifier.verify(&request, stored.received_at) {
        Ok(Verdict::Verified(d)) => Reverified::Authentic {
            key_index: d.key_index(),
            token_not_checked,
        },
        Ok(Verdict::Challenge(_)) => Reverified::NotAuthentic {
            reason: "a handshake, not a delivery".into(),
        },
        Err(r) => Reverified::NotAuthentic {
            reason: r.to_string(),
        },
    };
    match &verdict {
        Reverified::Authentic {
            key_index,
            token_not_checked,
        } => writeln!(
            out,
            "delivery {id}: AUTHENTIC — the stored body and signature verify ({} preset, secret #{key_index}, as of {}){}",
            source.preset,
            stored.received_at,
            if *token_not_checked {
                "; the bearer token the sender also presented is not stored and was not re-checked"
            } else {
                ""
            }
        )?,
        Reverified::NotAuthentic { reason } => writeln!(
            out,
            "delivery {id}: NOT VERIFIED — {reason} (if the secret was rotated out since, re-add it to check)"
        )?,
        Reverified::NotReverifiable { .. } => {}
    }
    Ok(verdict)
}
