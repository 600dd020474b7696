//! Console sign-in through the clinic's OpenID provider: the authorization code flow with PKCE
//! (S256), `state` and `nonce`, by the `openidconnect` crate.
//!
//! Why this shape: a clinic already manages its people at its identity provider; signing in
//! there means leaving staff are locked out when their account is, without anyone revoking a
//! console token. Everything that decides whether a sign-in is genuine — discovery, the ID
//! token's signature against the provider's published keys, its issuer, audience, expiry,
//! issue time and nonce — is the crate's; this module only keeps the per-browser pending state,
//! picks a user name fit for the audit trail, and maps groups to a console role.
//!
//! The pending sign-in (PKCE verifier, `state`, `nonce`) lives in memory, keyed by a random
//! value in a short-lived cookie of the browser that started it, so a `code` and `state`
//! carried to another browser sign nobody in. Each is used once and expires after
//! [`PENDING_TTL`].
//!
//! Starting a sign-in needs no credentials, so it must not cost the provider anything: a flood
//! of `GET /login/oidc` would otherwise become a flood of discovery requests against the
//! clinic's identity provider. Starts use the provider's metadata discovered at most once per
//! [`METADATA_TTL`], by one discovery at a time; after a failed discovery, starts are answered
//! "unavailable" for [`DISCOVERY_BACKOFF`] before the next attempt. Finishing a sign-in
//! discovers afresh (only a browser holding a pending sign-in and its `state` gets that far),
//! so a rotated signing key is honoured at once, and refreshes the kept metadata. HTTP to the
//! provider goes through the project's reqwest (rustls), trusts `ca_file` besides the public
//! roots, and follows no redirects.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client,
    ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse,
    TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::Role;
use crate::config::oidc::OidcSettings;

/// How long a browser has between leaving for the provider and coming back.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// Pending sign-ins kept at most (older ones are dropped first); bounds memory under a flood of
/// started-but-never-finished sign-ins.
const MAX_PENDING: usize = 1000;
/// Time limit of each request to the provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long discovered provider metadata serves new sign-ins. Starts are unauthenticated: with
/// a discovery each, anyone could make the console flood the clinic's provider. A few minutes
/// bounds that to one discovery (and its key fetch) per period whatever the traffic, while a
/// provider's new endpoints still arrive soon; finishing a sign-in discovers afresh anyway.
pub const METADATA_TTL: Duration = Duration::from_secs(300);
/// After a failed discovery, how long new sign-ins are answered "unavailable" before the next
/// attempt: an unreachable provider is not hammered by every start while it recovers.
pub const DISCOVERY_BACKOFF: Duration = Duration::from_secs(5);

/// Why a sign-in through the provider did not succeed. Each has a stable reason code for the
/// `access_denied` record; the display text is for the log and never holds token content.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or its discovery document was unusable.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The sign-in's cookie is missing, unknown or expired (another browser, or too slow).
    #[error("no sign-in is pending for this browser")]
    NotPending,
    /// The `state` that came back is not the one this browser was sent with.
    #[error("the state parameter does not match")]
    StateMismatch,
    /// The provider answered with an error (the user cancelled, the client is not allowed).
    #[error("the identity provider refused the sign-in")]
    ProviderRefused,
    /// The code could not be exchanged for tokens.
    #[error("the code exchange failed: {0}")]
    Exchange(String),
    /// The ID token had expired.
    #[error("the ID token has expired")]
    Expired,
    /// The ID token failed verification (signature, issuer, audience, nonce, issue time).
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
    /// Neither `preferred_username` nor `sub` is a short identifier the audit trail accepts.
    #[error("the user name is not an identifier")]
    UnusableName,
    /// None of the user's groups maps to a console role.
    #[error("no console role for this user")]
    NoRole {
        /// The user name (for the refusal's audit record).
        user: String,
    },
    /// The HTTP client could not be built (the CA file).
    #[error("cannot set up the identity provider client: {0}")]
    Setup(String),
}

impl OidcError {
    /// The `reason` of the refusal's audit record.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) | Self::Setup(_) => "oidc_unavailable",
            Self::NotPending => "oidc_not_pending",
            Self::StateMismatch => "oidc_state_mismatch",
            Self::ProviderRefused => "oidc_provider_refused",
            Self::Exchange(_) => "oidc_exchange_failed",
            Self::Expired => "oidc_id_token_expired",
            Self::InvalidIdToken(_) => "oidc_id_token_invalid",
            Self::UnusableName => "oidc_unusable_name",
            Self::NoRole { .. } => "oidc_no_role",
        }
    }
}

impl OidcError {
    /// Whether this refusal counts against the client's address in the console's failed
    /// sign-in limiter: everything a caller without a genuine sign-in can cause — a callback
    /// without this browser's pending sign-in, a wrong `state`, a refused or forged code, an ID
    /// token that fails verification, the provider's own refusal. Not an unreachable provider
    /// (nobody's failure), and not a user the provider authenticated whom the console turns
    /// away (no role, an unusable name): that is a real person refused by policy, not a guess,
    /// and counting it would lock every colleague behind the same address out of the console.
    pub fn counts_as_failed_sign_in(&self) -> bool {
        !matches!(
            self,
            Self::Unavailable(_) | Self::Setup(_) | Self::NoRole { .. } | Self::UnusableName
        )
    }
}

/// Every claim of the ID token beyond the standard ones, so the configured groups claim can be
/// read from the verified token.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct ExtraClaims {
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type Fields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<Fields, CoreTokenType>;
type RpClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// One browser's sign-in in progress.
struct Pending {
    state: String,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    started: Instant,
}

/// The outcome of the last discovery made for sign-in starts.
enum Discovered {
    /// The metadata, and when it was discovered.
    Fresh(Instant, Box<CoreProviderMetadata>),
    /// When the last attempt failed.
    Failed(Instant),
}

/// Who signed in, and as what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// `preferred_username`, else `sub`: a short identifier.
    pub user: String,
    /// The role of the first mapping entry the user's groups match.
    pub role: Role,
}

/// The relying party: settings, the HTTP client, and the sign-ins in progress.
pub struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    /// The metadata starts use. An async mutex held across the discovery: while one start
    /// discovers, the others wait for its outcome instead of discovering too.
    metadata: tokio::sync::Mutex<Option<Discovered>>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Sessions started by a verified callback, waiting for the same browser's next, same-site
    /// request to set their cookie (see `pages/sign_in.rs`), by binding value.
    handovers: Mutex<HashMap<String, (String, Instant)>>,
}

/// How long a started session waits for its browser to pick up its cookie.
const HANDOVER_TTL: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// The relying party for `settings`: an HTTP client trusting `ca_file` too, following no
    /// redirects (a redirect could lead the server's requests elsewhere).
    pub fn new(settings: OidcSettings) -> Result<Self, OidcError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .https_only(true);
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| OidcError::Setup(format!("{}: {e}", ca.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| OidcError::Setup(format!("{}: {e}", ca.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| OidcError::Setup(e.to_string()))?;
        Ok(Self {
            settings,
            http,
            metadata: tokio::sync::Mutex::default(),
            pending: Mutex::default(),
            handovers: Mutex::default(),
        })
    }

    /// Keep `session` for the browser holding `binding` until it comes to pick it up.
    pub fn hand_over(&self, binding: &str, session: String) {
        let mut map = self.handovers.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, at)| at.elapsed() < HANDOVER_TTL);
        if map.len() < MAX_PENDING {
            map.insert(binding.to_owned(), (session, Instant::now()));
        }
    }

    /// The session kept for `binding`, once.
    pub fn take_handover(&self, binding: &str) -> Option<String> {
        self.handovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(binding)
            .filter(|(_, at)| at.elapsed() < HANDOVER_TTL)
            .map(|(s, _)| s)
    }

    /// What the sign-in button names the provider.
    pub fn label(&self) -> &str {
        &self.settings.label
    }

    /// Discover the provider: its metadata and signing keys (two requests).
    async fn discover(&self) -> Result<CoreProviderMetadata, OidcError> {
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| OidcError::Unavailable(e.to_string()))?;
        CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Unavailable(error_chain(&e)))
    }

    /// The metadata for a sign-in start: kept for [`METADATA_TTL`], discovered by one start at
    /// a time, and not tried again within [`DISCOVERY_BACKOFF`] of a failure.
    async fn kept_metadata(&self) -> Result<CoreProviderMetadata, OidcError> {
        let mut kept = self.metadata.lock().await;
        match kept.as_ref() {
            Some(Discovered::Fresh(at, metadata)) if at.elapsed() < METADATA_TTL => {
                return Ok((**metadata).clone());
            }
            Some(Discovered::Failed(at)) if at.elapsed() < DISCOVERY_BACKOFF => {
                return Err(OidcError::Unavailable(
                    "the last discovery failed moments ago; waiting before the next".into(),
                ));
            }
            _ => {}
        }
        let discovered = self.discover().await;
        *kept = Some(match &discovered {
            Ok(metadata) => Discovered::Fresh(Instant::now(), Box::new(metadata.clone())),
            Err(_) => Discovered::Failed(Instant::now()),
        });
        discovered
    }

    /// Metadata discovered by a finishing sign-in serves the next starts. Skipped when a start
    /// is discovering right now (it keeps what it finds).
    fn keep_metadata(&self, metadata: &CoreProviderMetadata) {
        if let Ok(mut kept) = self.metadata.try_lock() {
            *kept = Some(Discovered::Fresh(
                Instant::now(),
                Box::new(metadata.clone()),
            ));
        }
    }

    fn client(&self, metadata: CoreProviderMetadata) -> Result<RpClient, OidcError> {
        let secret = self
            .settings
            .client_secret
            .expose_str()
            .ok_or_else(|| OidcError::Setup("the client secret is not UTF-8".into()))?;
        let redirect = RedirectUrl::new(self.settings.redirect_url.clone())
            .map_err(|e| OidcError::Setup(e.to_string()))?;
        Ok(RpClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(secret.to_owned())),
        )
        .set_redirect_uri(redirect))
    }

    /// Begin a sign-in: the browser's binding value (for its cookie) and the provider URL to
    /// send it to.
    pub async fn start(&self) -> Result<(String, url::Url), OidcError> {
        let client = self.client(self.kept_metadata().await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let binding = CsrfToken::new_random().secret().clone();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.started.elapsed() < PENDING_TTL);
        if pending.len() >= MAX_PENDING {
            if let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
            {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            binding.clone(),
            Pending {
                state: state.secret().clone(),
                verifier,
                nonce,
                started: Instant::now(),
            },
        );
        Ok((binding, url))
    }

    /// Drop the pending sign-in of `binding` unfinished (the provider answered with an error,
    /// or the address is refused for now), so its `state` cannot be used later.
    pub fn abandon(&self, binding: Option<&str>) {
        if let Some(b) = binding {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(b);
        }
    }

    /// Finish the sign-in the provider redirected back with. `binding` is the browser's cookie;
    /// the pending sign-in is consumed whatever the outcome.
    pub async fn finish(
        &self,
        binding: Option<&str>,
        state: &str,
        code: Option<&str>,
    ) -> Result<SignedIn, OidcError> {
        let pending = binding
            .and_then(|b| {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(b)
            })
            .filter(|p| p.started.elapsed() < PENDING_TTL)
            .ok_or(OidcError::NotPending)?;
        if state.is_empty() || !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(OidcError::StateMismatch);
        }
        let code = code.ok_or(OidcError::ProviderRefused)?;
        let metadata = self.discover().await?;
        self.keep_metadata(&metadata);
        let client = self.client(metadata)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| OidcError::InvalidIdToken("no ID token in the response".into()))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &pending.nonce)
            .map_err(|e| match e {
                ClaimsVerificationError::Expired(_) => OidcError::Expired,
                other => OidcError::InvalidIdToken(other.to_string()),
            })?;
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token
                .signing_alg()
                .map_err(|e| OidcError::InvalidIdToken(e.to_string()))?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(|e| OidcError::InvalidIdToken(e.to_string()))?;
            let actual = AccessTokenHash::from_token(tokens.access_token(), alg, key)
                .map_err(|e| OidcError::InvalidIdToken(e.to_string()))?;
            if actual != *expected {
                return Err(OidcError::InvalidIdToken("at_hash does not match".into()));
            }
        }
        let user = audit_name(
            claims.preferred_username().map(|u| u.as_str()),
            claims.subject().as_str(),
        )
        .ok_or(OidcError::UnusableName)?;
        let groups = groups_of(
            claims
                .additional_claims()
                .rest
                .get(&self.settings.groups_claim),
        );
        match self.settings.role_for(&groups).and_then(Role::parse) {
            Some(role) => Ok(SignedIn { user, role }),
            None => Err(OidcError::NoRole { user }),
        }
    }
}

/// The name a signed-in user has in the audit trail (`oidc:<name>`): the first of these that is
/// an identifier the audit log accepts (a letter, then `A-Z a-z 0-9 _ . : -`, at most 64 bytes):
/// `preferred_username`; for an e-mail-style user name (as Entra ID and Okta send), its part
/// before the `@` (the log takes no e-mail addresses, and one provider is one organisation);
/// `sub`; `sub-<sub>` for a subject that begins with a digit or a symbol (Keycloak's UUIDs,
/// Okta's `00u…`). `None` only for a subject with other characters, or longer than 64 bytes
/// (60 when it begins with a digit or a symbol).
fn audit_name(preferred_username: Option<&str>, sub: &str) -> Option<String> {
    let usable = |name: &str| crate::audit::Actor::oidc(name).is_ok();
    let local_part = preferred_username
        .and_then(|u| u.split_once('@'))
        .map(|(local, _)| local);
    if let Some(name) = [preferred_username, local_part, Some(sub)]
        .into_iter()
        .flatten()
        .find(|name| usable(name))
    {
        return Some(name.to_owned());
    }
    let prefixed = format!("sub-{sub}");
    usable(&prefixed).then_some(prefixed)
}

/// The groups claim as a list: an array of strings, or one string.
fn groups_of(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// An error and its sources on one line, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_name_is_the_user_name_its_mailbox_part_or_the_subject() {
        assert_eq!(audit_name(Some("carol"), "x").as_deref(), Some("carol"));
        // E-mail-style user names (Entra ID, Okta): the part before the `@`.
        assert_eq!(
            audit_name(Some("carol.smith@clinic.example"), "x").as_deref(),
            Some("carol.smith")
        );
        // No usable user name: the subject, prefixed when it does not begin with a letter.
        assert_eq!(audit_name(None, "abc-123").as_deref(), Some("abc-123"));
        assert_eq!(
            audit_name(Some("Carol Smith"), "347ac10b-58cc-4372-a567-0e02b2c3d479").as_deref(),
            Some("sub-347ac10b-58cc-4372-a567-0e02b2c3d479")
        );
        assert_eq!(
            audit_name(None, "00u1abcd").as_deref(),
            Some("sub-00u1abcd")
        );
        // Nothing the audit log accepts: refused.
        assert_eq!(audit_name(Some("a b"), "a/b"), None);
        assert_eq!(audit_name(None, &"a".repeat(100)), None);
    }

    #[test]
    fn forged_or_failed_callbacks_count_and_refusals_of_real_users_do_not() {
        for e in [
            OidcError::NotPending,
            OidcError::StateMismatch,
            OidcError::ProviderRefused,
            OidcError::Exchange("x".into()),
            OidcError::Expired,
            OidcError::InvalidIdToken("x".into()),
        ] {
            assert!(e.counts_as_failed_sign_in(), "{e}");
        }
        for e in [
            OidcError::Unavailable("x".into()),
            OidcError::Setup("x".into()),
            OidcError::UnusableName,
            OidcError::NoRole {
                user: "dave".into(),
            },
        ] {
            assert!(!e.counts_as_failed_sign_in(), "{e}");
        }
    }

    #[test]
    fn groups_come_as_a_list_or_a_single_string() {
        let list = serde_json::json!(["a", "b", 3]);
        assert_eq!(groups_of(Some(&list)), vec!["a", "b"]);
        assert_eq!(groups_of(Some(&serde_json::json!("a"))), vec!["a"]);
        assert!(groups_of(Some(&serde_json::json!({"a": 1}))).is_empty());
        assert!(groups_of(None).is_empty());
    }
}
