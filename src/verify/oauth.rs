//! OAuth2 client-credentials token endpoint (RFC 6749 §4.4) for senders that can only fetch a
//! bearer token before calling us (Call Telemetry's and Vapi's OAuth2 modes).
//!
//! Clients are configured per source in `scheme.oauth_clients` with the SHA-256 of their secret,
//! never the secret. Issued tokens are 256-bit random opaque strings kept in memory only as their
//! SHA-256, expire after a short TTL, and are accepted only by the source whose client fetched
//! them. A restart forgets every token; senders simply fetch a new one.
//!
//! The lead's `POST /oauth/token` route calls [`TokenIssuer::token_endpoint`] with the raw form
//! body and the `Authorization` header and sends back what it returns.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;

use super::util;
use super::{SpecProblem, VerifierSpec};

/// Default token lifetime: long enough for a burst of calls, short enough that a leaked token
/// is soon worthless.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(900);
/// Live tokens kept at most; beyond this the soonest-expiring ones are dropped.
const MAX_LIVE_TOKENS: usize = 10_000;
/// Bodies larger than this are refused before parsing.
const MAX_BODY: usize = 8192;

#[derive(Debug)]
struct Client {
    source: String,
    secret_sha256: [u8; 32],
}

#[derive(Debug, Clone)]
struct Issued {
    source: String,
    client_id: String,
    expires_at: DateTime<Utc>,
}

/// Issues and checks OAuth2 access tokens. Shared (`Arc`) between the token route and the
/// verifiers of the sources that accept OAuth2.
#[derive(Debug)]
pub struct TokenIssuer {
    clients: HashMap<String, Client>,
    ttl: Duration,
    tokens: Mutex<HashMap<[u8; 32], Issued>>,
}

/// What the token route answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// HTTP status: 200, 400 or 401.
    pub status: u16,
    /// Headers to add (`Cache-Control: no-store`, `Pragma: no-cache`, and `WWW-Authenticate`
    /// on 401).
    pub headers: Vec<(String, String)>,
    /// `application/json` body.
    pub body: Vec<u8>,
}

/// The hex SHA-256 to configure as `client_secret_sha256` for a client secret.
pub fn hash_client_secret(secret: &[u8]) -> String {
    hex::encode(util::sha256(secret))
}

/// A fresh random client secret (43 URL-safe characters, 256 bits) to give to the sender.
pub fn generate_client_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenIssuer {
    /// An issuer for the OAuth clients of all `specs`. Client ids must be unique across sources
    /// (a client id decides which source a token is for); problems carry the path
    /// `scheme.oauth_clients[i]…` and, in `message`, the source name.
    pub fn from_specs<'a>(
        specs: impl IntoIterator<Item = &'a VerifierSpec>,
        ttl: Duration,
    ) -> Result<Self, Vec<SpecProblem>> {
        let mut clients = HashMap::new();
        let mut problems = Vec::new();
        for spec in specs {
            for (i, c) in spec.scheme.oauth_clients.iter().enumerate() {
                let hash = hex::decode(&c.client_secret_sha256)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                let Some(secret_sha256) = hash else {
                    problems.push(SpecProblem::new(
                        format!("scheme.oauth_clients[{i}].client_secret_sha256"),
                        format!("source {}: must be 64 hex digits", spec.source),
                    ));
                    continue;
                };
                if let Some(prev) = clients.insert(
                    c.client_id.clone(),
                    Client {
                        source: spec.source.clone(),
                        secret_sha256,
                    },
                ) {
                    problems.push(SpecProblem::new(
                        format!("scheme.oauth_clients[{i}].client_id"),
                        format!(
                            "source {}: client id already used by source {}",
                            spec.source, prev.source
                        ),
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(Self {
                clients,
                ttl,
                tokens: Mutex::new(HashMap::new()),
            })
        } else {
            Err(problems)
        }
    }

    /// Whether any client is configured (the lead mounts `/oauth/token` only then).
    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Issued>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client id a token was issued to, if it is live and was issued for `source`.
    pub fn check_token(&self, source: &str, token: &[u8], now: DateTime<Utc>) -> Option<String> {
        if token.is_empty() || token.len() > 512 {
            return None;
        }
        let key = util::sha256(token);
        let mut tokens = self.lock();
        let issued = tokens.get(&key)?.clone();
        if now > issued.expires_at {
            tokens.remove(&key);
            return None;
        }
        (issued.source == source).then_some(issued.client_id)
    }

    /// Handle `POST /oauth/token`: `form_body` is the raw `application/x-www-form-urlencoded`
    /// body, `authorization` the `Authorization` header if any. Supports `client_secret_basic`
    /// and `client_secret_post` (not both at once). Never logs or echoes secrets.
    pub fn token_endpoint(
        &self,
        form_body: &[u8],
        authorization: Option<&str>,
        now: DateTime<Utc>,
    ) -> TokenResponse {
        if form_body.len() > MAX_BODY {
            return error(400, "invalid_request", "request body too large", false);
        }
        let pairs = util::form_pairs(form_body);
        let mut grant_type = None;
        let mut post_id = None;
        let mut post_secret = None;
        for (k, v) in &pairs {
            let slot = match k.as_str() {
                "grant_type" => &mut grant_type,
                "client_id" => &mut post_id,
                "client_secret" => &mut post_secret,
                _ => continue,
            };
            if slot.is_some() {
                // RFC 6749 §3.2: parameters MUST NOT be included more than once.
                return error(400, "invalid_request", "repeated parameter", false);
            }
            *slot = Some(v.as_str());
        }
        let basic = match authorization {
            Some(h) => match super::tokens::parse_basic(h) {
                Some(creds) => Some(creds),
                None => return error(401, "invalid_client", "unsupported authentication", true),
            },
            None => None,
        };
        let used_basic = basic.is_some();
        let (client_id, secret_candidates): (String, Vec<String>) =
            match (&basic, post_id, post_secret) {
                (Some(_), _, Some(_)) => {
                    return error(
                        400,
                        "invalid_request",
                        "use one client authentication method",
                        false,
                    )
                }
                (Some((u, p)), _, None) => {
                    // §2.3.1: id and secret are form-urlencoded before base64; many clients skip
                    // that, so both readings are tried.
                    let decoded_id = form_decode(u);
                    let mut cands = vec![p.clone()];
                    let decoded_pass = form_decode(p);
                    if decoded_pass != *p {
                        cands.push(decoded_pass);
                    }
                    if self.clients.contains_key(&decoded_id) {
                        (decoded_id, cands)
                    } else {
                        (u.clone(), cands)
                    }
                }
                (None, Some(id), Some(secret)) => (id.to_owned(), vec![secret.to_owned()]),
                (None, _, _) => {
                    return error(
                        401,
                        "invalid_client",
                        "client authentication required",
                        false,
                    )
                }
            };

        // Check the client before the grant type, so an unauthenticated caller learns nothing.
        let client = self.clients.get(&client_id);
        let reference = client.map(|c| c.secret_sha256).unwrap_or([0u8; 32]);
        let secret_ok = secret_candidates
            .iter()
            .any(|s| util::ct_eq(&util::sha256(s.as_bytes()), &reference));
        let Some(client) = client.filter(|_| secret_ok) else {
            return error(
                401,
                "invalid_client",
                "client authentication failed",
                used_basic,
            );
        };

        match grant_type {
            None => return error(400, "invalid_request", "grant_type is required", false),
            Some("client_credentials") => {}
            Some(_) => {
                return error(
                    400,
                    "unsupported_grant_type",
                    "only client_credentials is supported",
                    false,
                )
            }
        }

        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::seconds(900));
        let issued = Issued {
            source: client.source.clone(),
            client_id,
            expires_at: now + ttl,
        };
        {
            let mut tokens = self.lock();
            tokens.retain(|_, t| t.expires_at >= now);
            while tokens.len() >= MAX_LIVE_TOKENS {
                let oldest = tokens
                    .iter()
                    .min_by_key(|(_, t)| t.expires_at)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => {
                        tokens.remove(&k);
                    }
                    None => break,
                }
            }
            tokens.insert(util::sha256(token.as_bytes()), issued);
        }
        let body = serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.ttl.as_secs(),
        });
        TokenResponse {
            status: 200,
            headers: no_store(),
            body: body.to_string().into_bytes(),
        }
    }
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn no_store() -> Vec<(String, String)> {
    vec![
        ("Cache-Control".to_owned(), "no-store".to_owned()),
        ("Pragma".to_owned(), "no-cache".to_owned()),
    ]
}

/// An RFC 6749 §5.2 error response.
fn error(status: u16, code: &str, description: &str, basic_challenge: bool) -> TokenResponse {
    let mut headers = no_store();
    if status == 401 {
        let challenge = if basic_challenge {
            "Basic realm=\"wardhook\""
        } else {
            "Bearer realm=\"wardhook\""
        };
        headers.push(("WWW-Authenticate".to_owned(), challenge.to_owned()));
    }
    let body = serde_json::json!({ "error": code, "error_description": description });
    TokenResponse {
        status,
        headers,
        body: body.to_string().into_bytes(),
    }
}
