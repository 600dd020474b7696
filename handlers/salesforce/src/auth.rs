//! OAuth 2.0 against a Salesforce connected app, with one cached access token.
//!
//! Salesforce does not say when a token expires (it lives as long as the session policy
//! allows), so the token is kept until the API refuses it; then exactly one new token is
//! fetched and the request repeated once.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use wardhook_sdk::{BuildContext, ConfigProblem, Problems, SecretValue};

use crate::config::AuthConfig;
use crate::error::SalesforceError;
use wardhook_sdk::http::Outbound;

/// The flow and its resolved secrets.
#[derive(Debug)]
enum Grant {
    ClientCredentials {
        client_secret: SecretValue,
    },
    RefreshToken {
        client_secret: Option<SecretValue>,
        refresh_token: SecretValue,
    },
}

/// Fetches and caches the access token.
#[derive(Debug)]
pub(crate) struct TokenSource {
    token_url: Url,
    host: String,
    client_id: String,
    grant: Grant,
    /// Held across a fetch, so concurrent deliveries wait for one token instead of each
    /// fetching their own.
    cache: tokio::sync::Mutex<Option<SecretValue>>,
}

impl TokenSource {
    pub(crate) fn build(config: AuthConfig, ctx: &BuildContext, p: &mut Problems) -> Option<Self> {
        let (token_url, client_id, grant) = match config {
            AuthConfig::ClientCredentials {
                token_url,
                client_id,
                client_secret,
            } => {
                let secret = p.take(ctx.secret_str("auth.client_secret", &client_secret));
                let grant = secret.map(|client_secret| Grant::ClientCredentials { client_secret });
                (token_url, client_id, grant)
            }
            AuthConfig::RefreshToken {
                token_url,
                client_id,
                client_secret,
                refresh_token,
            } => {
                let secret = client_secret
                    .map(|s| p.take(ctx.secret_str("auth.client_secret", &s)))
                    .map_or(Some(None), |s| s.map(Some));
                let refresh = p.take(ctx.secret_str("auth.refresh_token", &refresh_token));
                let grant = match (secret, refresh) {
                    (Some(client_secret), Some(refresh_token)) => Some(Grant::RefreshToken {
                        client_secret,
                        refresh_token,
                    }),
                    _ => None,
                };
                (token_url, client_id, grant)
            }
        };
        if client_id.trim().is_empty() {
            p.push(ConfigProblem::new("auth.client_id", "must not be empty"));
        }
        let token_url = p.take(wardhook_sdk::http::api_url("auth.token_url", &token_url));
        let (token_url, grant) = (token_url?, grant?);
        let host = token_url.host_str().unwrap_or("token endpoint").to_owned();
        Some(Self {
            token_url,
            host,
            client_id,
            grant,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The token endpoint, a host the adapter must be allowed to reach.
    pub(crate) fn url(&self) -> &Url {
        &self.token_url
    }

    /// The cached token, or a new one.
    pub(crate) async fn token(
        &self,
        outbound: &Outbound,
        timeout: Duration,
    ) -> Result<SecretValue, SalesforceError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref() {
            return Ok(t.clone());
        }
        let fresh = self.fetch(outbound, timeout).await?;
        *cache = Some(fresh.clone());
        Ok(fresh)
    }

    /// A new token after `rejected` was refused, unless another delivery already replaced it.
    pub(crate) async fn refresh(
        &self,
        outbound: &Outbound,
        timeout: Duration,
        rejected: &SecretValue,
    ) -> Result<SecretValue, SalesforceError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref() {
            if t.expose() != rejected.expose() {
                return Ok(t.clone());
            }
        }
        *cache = None;
        let fresh = self.fetch(outbound, timeout).await?;
        *cache = Some(fresh.clone());
        Ok(fresh)
    }

    async fn fetch(
        &self,
        outbound: &Outbound,
        timeout: Duration,
    ) -> Result<SecretValue, SalesforceError> {
        let mut form: Vec<(&str, &str)> = vec![("client_id", &self.client_id)];
        match &self.grant {
            Grant::ClientCredentials { client_secret } => {
                form.push(("grant_type", "client_credentials"));
                form.push(("client_secret", client_secret.expose()));
            }
            Grant::RefreshToken {
                client_secret,
                refresh_token,
            } => {
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", refresh_token.expose()));
                if let Some(s) = client_secret {
                    form.push(("client_secret", s.expose()));
                }
            }
        }
        let request = outbound
            .client()
            .post(self.token_url.clone())
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        let response = outbound
            .send::<SalesforceError>(request, &self.host)
            .await?;
        let status = response.status().as_u16();
        let retry_after = crate::retry_after(response.headers());
        if status == 408 || status == 429 || status >= 500 {
            return Err(SalesforceError::TokenUnavailable {
                host: self.host.clone(),
                status,
                retry_after,
            });
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let code = body
                .get("error")
                .and_then(|v| v.as_str())
                .and_then(crate::plain_code);
            return Err(SalesforceError::TokenRefused {
                host: self.host.clone(),
                status,
                code,
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
        }
        let parsed: TokenResponse = serde_json::from_value(body)
            .map_err(|_| SalesforceError::TokenMissing(self.host.clone()))?;
        if parsed.access_token.is_empty() {
            return Err(SalesforceError::TokenMissing(self.host.clone()));
        }
        Ok(SecretValue::new(parsed.access_token))
    }
}
