//! Building the verifiers of every configured source, and the OAuth2 token issuer the sources
//! with `scheme.oauth_clients` share, from the checked settings. `serve`, `reload` and
//! `check-config` all build through here, so each reports the same problems.

use std::sync::Arc;

use super::oauth::{TokenIssuer, DEFAULT_TOKEN_TTL};
use super::SourceVerifier;
use crate::config::{Problem, Source};

/// Every source's verifier, in config order, and the token issuer if any source has OAuth
/// clients.
#[derive(Debug)]
pub struct Verifiers {
    /// One per configured source, in the same order.
    pub sources: Vec<SourceVerifier>,
    /// The `POST /oauth/token` issuer; `None` when no source has OAuth clients.
    pub oauth: Option<Arc<TokenIssuer>>,
}

/// Build the verifiers of `sources`. On failure, every problem of every source, each with its
/// key path (`sources[2].scheme.header`).
pub fn build_verifiers(sources: &[Source]) -> Result<Verifiers, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut push = |path: String, message: String| problems.push(Problem { path, message });
    let mut built = Vec::with_capacity(sources.len());
    for (i, source) in sources.iter().enumerate() {
        match SourceVerifier::new(source.spec.clone()) {
            Ok(v) => built.push(v),
            Err(list) => {
                for p in list {
                    push(format!("sources[{i}].{}", p.path), p.message);
                }
            }
        }
    }
    let issuer = match TokenIssuer::from_specs(sources.iter().map(|s| &s.spec), DEFAULT_TOKEN_TTL) {
        Ok(issuer) => Some(Arc::new(issuer)),
        Err(list) => {
            for p in list {
                // The message names the source; find its index for the key path.
                let index = sources.iter().position(|s| {
                    p.message
                        .starts_with(&format!("source {}:", s.name.as_str()))
                });
                let at = index.map_or_else(|| "sources".to_owned(), |i| format!("sources[{i}]"));
                push(format!("{at}.{}", p.path), p.message);
            }
            None
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let oauth = issuer.filter(|i| i.has_clients());
    let sources = built
        .into_iter()
        .map(|verifier| match &oauth {
            Some(issuer) if !verifier.spec().scheme.oauth_clients.is_empty() => {
                verifier.with_token_issuer(issuer.clone())
            }
            _ => verifier,
        })
        .collect();
    Ok(Verifiers { sources, oauth })
}
