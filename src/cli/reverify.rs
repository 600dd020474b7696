//! `wardhook deliveries reverify ID`: show an auditor that a stored delivery is exactly what the
//! sender signed, by running the source's signature check again over the stored bytes.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Config;
use crate::store::admin::Requester;
use crate::store::reverify::load_stored_request;
use crate::store::Store;
use crate::verify::{SourceVerifier, UnverifiedRequest, Verdict, REVERIFY_METHOD, REVERIFY_PATH};

/// The verdict of a re-verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reverified {
    /// The stored body and headers verify under the source's current secrets.
    Authentic {
        /// Which configured secret matched (0-based).
        key_index: usize,
    },
    /// They do not (tampered data, or the secret that signed it is no longer configured).
    NotAuthentic {
        /// The typed reason.
        reason: String,
    },
}

/// Re-run verification for delivery `id`, printing the verdict.
pub fn reverify(
    config: &Config,
    store: &Store,
    id: &str,
    out: &mut dyn Write,
) -> anyhow::Result<Reverified> {
    let stored = load_stored_request(store, id, &Requester::cli_user())?;
    let source = config.source(&stored.source).ok_or_else(|| {
        anyhow::anyhow!(
            "source {:?} is no longer configured; its secrets are needed to re-verify",
            stored.source
        )
    })?;
    // The network checks (allowlist, proxies) were about the connection, which is gone; the
    // signature is what can be checked again.
    let mut spec = source.verifier.spec().clone();
    spec.allow_ips.clear();
    spec.trusted_proxies.clear();
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
        },
        Ok(Verdict::Challenge(_)) => Reverified::NotAuthentic {
            reason: "a handshake, not a delivery".into(),
        },
        Err(r) => Reverified::NotAuthentic {
            reason: r.to_string(),
        },
    };
    match &verdict {
        Reverified::Authentic { key_index } => writeln!(
            out,
            "delivery {id}: AUTHENTIC — the stored body and signature verify ({} preset, secret #{key_index}, as of {})",
            source.preset, stored.received_at
        )?,
        Reverified::NotAuthentic { reason } => writeln!(
            out,
            "delivery {id}: NOT VERIFIED — {reason} (if the secret was rotated out since, re-add it to check)"
        )?,
    }
    Ok(verdict)
}
