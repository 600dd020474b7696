//! Authentication to the destination, including the OAuth2 client-credentials token cache.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use url::Url;
use wardhook_sdk::{BuildContext, ConfigProblem, SecretValue};

use crate::config::AuthConfig;
use crate::error::HttpError;
use wardhook_sdk::http::Outbound;

/// Tokens are refreshed this long before the endpoint says they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token endpoint does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// When a token fetched at `now` with `lifetime` (already clamped to
/// [`wardhook_sdk::limits::MAX_TOKEN_LIFETIME`]) is fetched again: [`EXPIRY_MARGIN`] early, and
/// never an overflowed clock.
fn refresh_time(now: Instant, lifetime: Duration) -> Instant {
    now.checked_add(lifetime.saturating_sub(EXPIRY_MARGIN))
        .unwrap_or(now)
}

/// Resolved authentication.
#[derive(Debug)]
pub(crate) enum Auth {
    None,
    /// A fixed header (basic, bearer, API key), marked sensitive.
    Header(HeaderName, HeaderValue),
    OAuth2(OAuth2),
}

impl Auth {
    /// The token endpoint, a host the handler must be allowed to reach.
    pub(crate) fn token_url(&self) -> Option<&Url> {
        match self {
            Auth::OAuth2(o) => Some(&o.token_url),
            _ => None,
        }
    }

    pub(crate) fn build(config: AuthConfig, ctx: &BuildContext) -> Result<Self, ConfigProblem> {
        Ok(match config {
            AuthConfig::None => Auth::None,
            AuthConfig::Basic { username, password } => {
                let password = ctx.secret_str("auth.password", &password)?;
                let raw = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
                Auth::Header(
                    AUTHORIZATION,
                    sensitive(&format!("Basic {encoded}"), "auth.password")?,
                )
            }
            AuthConfig::Bearer { token } => {
                let token = ctx.secret_str("auth.token", &token)?;
                Auth::Header(
                    AUTHORIZATION,
                    sensitive(&format!("Bearer {}", token.expose()), "auth.token")?,
                )
            }
            AuthConfig::ApiKey { header, key } => {
                let key = ctx.secret_str("auth.key", &key)?;
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| ConfigProblem::new("auth.header", "not a valid header name"))?;
                Auth::Header(name, sensitive(key.expose(), "auth.key")?)
            }
            AuthConfig::Oauth2 {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let token_url = wardhook_sdk::http::api_url("auth.token_url", &token_url)?;
                let client_secret = ctx.secret_str("auth.client_secret", &client_secret)?;
                Auth::OAuth2(OAuth2 {
                    token_url,
                    client_id,
                    client_secret,
                    scope,
                    cache: tokio::sync::Mutex::new(None),
                })
            }
        })
    }
}

fn sensitive(value: &str, key: &str) -> Result<HeaderValue, ConfigProblem> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| ConfigProblem::new(key, "holds characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// OAuth 2.0 client credentials with a cached token.
#[derive(Debug)]
pub(crate) struct OAuth2 {
    token_url: Url,
    client_id: String,
    client_secret: SecretValue,
    scope: Option<String>,
    /// Held across a fetch, so concurrent requests wait for one token instead of each fetching.
    cache: tokio::sync::Mutex<Option<CachedToken>>,
}

#[derive(Debug)]
struct CachedToken {
    value: SecretValue,
    refresh_at: Instant,
}

impl OAuth2 {
    /// The cached token, or a new one when there is none or it is about to expire.
    pub(crate) async fn token(
        &self,
        outbound: &Outbound,
        deadline: Instant,
    ) -> Result<SecretValue, HttpError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref() {
            if Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let fresh = self.fetch(outbound, deadline).await?;
        let value = fresh.value.clone();
        *cache = Some(fresh);
        Ok(value)
    }

    /// A new token after `rejected` got a 401, unless another request already replaced it.
    pub(crate) async fn refresh(
        &self,
        outbound: &Outbound,
        deadline: Instant,
        rejected: &SecretValue,
    ) -> Result<SecretValue, HttpError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref() {
            if t.value.expose() != rejected.expose() && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let fresh = self.fetch(outbound, deadline).await?;
        let value = fresh.value.clone();
        *cache = Some(fresh);
        Ok(value)
    }

    pub(crate) fn header(token: &SecretValue) -> Result<HeaderValue, HttpError> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            HttpError::Token(Box::new(HttpError::BadHeader("Authorization".into())))
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    async fn fetch(
        &self,
        outbound: &Outbound,
        deadline: Instant,
    ) -> Result<CachedToken, HttpError> {
        let host = self
            .token_url
            .host_str()
            .unwrap_or("token endpoint")
            .to_owned();
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials")
                .append_pair("client_id", &self.client_id)
                .append_pair("client_secret", self.client_secret.expose());
            if let Some(scope) = &self.scope {
                form.append_pair("scope", scope);
            }
            SecretValue::new(form.finish())
        };
        let request = outbound
            .client()
            .post(self.token_url.clone())
            .timeout(crate::remaining(deadline))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.expose().to_owned());
        let response = outbound
            .send(request, &host)
            .await
            .map_err(|e| HttpError::Token(Box::new(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(HttpError::Token(Box::new(HttpError::Status {
                status: status.as_u16(),
                host,
                retry_after: None,
            })));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            /// Any JSON: a number of any size or sign, or a quoted one; clamped below.
            #[serde(default)]
            expires_in: serde_json::Value,
        }
        let parsed: TokenResponse = response
            .json()
            .await
            .map_err(|_| HttpError::TokenMissing(host.clone()))?;
        let lifetime =
            wardhook_sdk::limits::parse_expires_in(&parsed.expires_in).unwrap_or(DEFAULT_LIFETIME);
        Ok(CachedToken {
            value: SecretValue::new(parsed.access_token),
            refresh_at: refresh_time(Instant::now(), lifetime),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardhook_sdk::limits::MAX_TOKEN_LIFETIME;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    async fn cached_lifetime(expires_in: serde_json::Value) -> Duration {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"access_token": "tok", "expires_in": expires_in}),
            ))
            .mount(&server)
            .await;
        let oauth = OAuth2 {
            token_url: Url::parse(&format!("{}/token", server.uri())).expect("url"),
            client_id: "c".into(),
            client_secret: SecretValue::new("s".to_owned()),
            scope: None,
            cache: tokio::sync::Mutex::new(None),
        };
        let egress = wardhook_sdk::http::Egress::new([&oauth.token_url], &[], "allow_hosts")
            .expect("allowlist");
        let outbound = Outbound::new(egress.clone(), egress.client().expect("client"));
        let before = Instant::now();
        let token = oauth
            .token(&outbound, before + Duration::from_secs(5))
            .await
            .expect("token");
        assert_eq!(token.expose(), "tok");
        let cache = oauth.cache.lock().await;
        let refresh_at = cache.as_ref().expect("cached").refresh_at;
        refresh_at.saturating_duration_since(before)
    }

    #[tokio::test]
    async fn a_huge_expires_in_is_cached_for_at_most_a_day() {
        let cached = cached_lifetime(serde_json::json!(u64::MAX)).await;
        assert!(cached <= MAX_TOKEN_LIFETIME, "{cached:?}");
        assert!(cached >= MAX_TOKEN_LIFETIME - EXPIRY_MARGIN - Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_negative_expires_in_is_not_cached() {
        let cached = cached_lifetime(serde_json::json!(-1)).await;
        assert!(cached < Duration::from_secs(1), "{cached:?}");
    }

    #[test]
    fn refresh_time_never_overflows_the_clock() {
        let now = Instant::now();
        assert_eq!(refresh_time(now, Duration::MAX), now);
        assert_eq!(refresh_time(now, Duration::from_secs(10)), now);
        assert_eq!(
            refresh_time(now, Duration::from_secs(90)),
            now + Duration::from_secs(60)
        );
    }
}
