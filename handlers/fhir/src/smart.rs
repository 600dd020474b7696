//! SMART Backend Services: wardhook's signing key, the `private_key_jwt` client assertion and
//! the access token it buys, cached until it expires.
//!
//! The key is an EC P-384 key (ES384; what [`generate_key`] makes) or an RSA key (RS384), in a
//! PKCS#8 PEM file referenced like any other secret. The EHR is given the public half as a JWKS
//! ([`SigningKey::jwks`]); its `kid` is the key's RFC 7638 thumbprint unless configured.
//!
//! Every number from the token endpoint is bounded before it touches a clock: `expires_in` is
//! clamped to [`MAX_TOKEN_LIFETIME`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use reqwest::Url;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wardhook_sdk::SecretValue;
use zeroize::Zeroizing;

use crate::error::{FhirError, MAX_RETRY_AFTER};

/// How long a client assertion is valid: SMART requires `exp` at most five minutes ahead; four
/// leave room for clock skew between wardhook and the EHR.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(240);

/// The longest an access token is cached, whatever `expires_in` said (one hour).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The lifetime assumed when the token response has no `expires_in` (SMART's recommended five
/// minutes).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// A token is dropped this long before it expires, so a request does not leave with a token
/// that expires on the way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Problems with a private key, without any of its bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not PEM.
    #[error("not a PEM file")]
    NotPem,
    /// PEM of another kind (`EC PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, a certificate).
    #[error("PEM label {0:?} is not supported: use an unencrypted PKCS#8 key (\"PRIVATE KEY\"), e.g. from `wardhook keys smart` or `openssl pkcs8 -topk8 -nocrypt`")]
    Label(String),
    /// PKCS#8, but neither an EC P-384 nor a usable RSA key.
    #[error("not an EC P-384 or RSA (2048 bits or more) private key")]
    Unsupported,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

enum Signer {
    Es384(EcdsaKeyPair),
    Rs384(RsaKeyPair),
}

/// wardhook's SMART signing key.
pub struct SigningKey {
    signer: Signer,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Load a PKCS#8 PEM key (`PRIVATE KEY`); `kid` defaults to the RFC 7638 thumbprint.
    pub fn from_pem(pem_text: &[u8], kid: Option<String>) -> Result<Self, KeyError> {
        let parsed = pem::parse(pem_text).map_err(|_| KeyError::NotPem)?;
        if parsed.tag() != "PRIVATE KEY" {
            return Err(KeyError::Label(parsed.tag().to_owned()));
        }
        let der = Zeroizing::new(parsed.into_contents());
        let rng = SystemRandom::new();
        let signer =
            match EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &der, &rng)
            {
                Ok(k) => Signer::Es384(k),
                Err(_) => {
                    Signer::Rs384(RsaKeyPair::from_pkcs8(&der).map_err(|_| KeyError::Unsupported)?)
                }
            };
        let mut key = Self {
            signer,
            kid: String::new(),
            rng,
        };
        key.kid = kid.unwrap_or_else(|| key.thumbprint());
        Ok(key)
    }

    /// `ES384` or `RS384`.
    pub fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Es384(_) => "ES384",
            Signer::Rs384(_) => "RS384",
        }
    }

    /// The key id sent in the assertion's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key's required JWK members, in RFC 7638's lexicographic order.
    fn public_members(&self) -> Vec<(&'static str, String)> {
        match &self.signer {
            Signer::Es384(k) => {
                // Uncompressed point: 0x04 || X (48 bytes) || Y (48 bytes).
                let point = k.public_key().as_ref();
                let (x, y) = point[1..].split_at(48);
                vec![
                    ("crv", "P-384".to_owned()),
                    ("kty", "EC".to_owned()),
                    ("x", B64URL.encode(x)),
                    ("y", B64URL.encode(y)),
                ]
            }
            Signer::Rs384(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                vec![
                    ("e", B64URL.encode(&c.e)),
                    ("kty", "RSA".to_owned()),
                    ("n", B64URL.encode(&c.n)),
                ]
            }
        }
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn thumbprint(&self) -> String {
        let members: serde_json::Map<String, Value> = self
            .public_members()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        // serde_json's map is ordered by key, which is the order RFC 7638 requires.
        let canonical = Value::Object(members).to_string();
        B64URL.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The public key as a JWKS (`{"keys": [ … ]}`) to register with the EHR.
    pub fn jwks(&self) -> Value {
        let mut jwk: serde_json::Map<String, Value> = self
            .public_members()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        jwk.insert("kid".into(), self.kid.clone().into());
        jwk.insert("alg".into(), self.alg().into());
        jwk.insert("use".into(), "sig".into());
        jwk.insert("key_ops".into(), json!(["verify"]));
        json!({ "keys": [Value::Object(jwk)] })
    }

    /// A compact JWS over `claims` with this key.
    fn sign_jwt(&self, claims: &Value) -> Result<String, FhirError> {
        let header = json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = match &self.signer {
            Signer::Es384(k) => k
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(|_| FhirError::Signing)?
                .as_ref()
                .to_vec(),
            Signer::Rs384(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA384,
                    &self.rng,
                    signing_input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| FhirError::Signing)?;
                sig
            }
        };
        Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
    }

    /// The client assertion for `client_id` at `token_url`: `iss` = `sub` = client id, `aud` =
    /// token endpoint, `exp` [`ASSERTION_LIFETIME`] ahead, a fresh random `jti`.
    pub fn client_assertion(&self, client_id: &str, token_url: &str) -> Result<String, FhirError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| FhirError::Signing)?
            .as_secs();
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).map_err(|_| FhirError::Signing)?;
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "iat": now,
            "exp": now.saturating_add(ASSERTION_LIFETIME.as_secs()),
            "jti": B64URL.encode(jti),
        });
        self.sign_jwt(&claims)
    }
}

/// A new key pair for `wardhook keys smart`.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The private key, PKCS#8 PEM: write it 0600 and reference it as `file:`.
    pub private_pem: Zeroizing<String>,
    /// The public JWKS to register with the EHR.
    pub jwks: Value,
    /// The key id (RFC 7638 thumbprint).
    pub kid: String,
}

/// Generate an EC P-384 (ES384) key pair.
pub fn generate_key() -> Result<GeneratedKey, KeyError> {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
        .map_err(|_| KeyError::Random)?;
    let private_pem = Zeroizing::new(pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        doc.as_ref().to_vec(),
    )));
    let key = SigningKey::from_pem(private_pem.as_bytes(), None)?;
    Ok(GeneratedKey {
        jwks: key.jwks(),
        kid: key.kid().to_owned(),
        private_pem,
    })
}

/// Where the token endpoint comes from.
#[derive(Debug)]
pub(crate) enum TokenEndpoint {
    /// Configured.
    Fixed(Url),
    /// Read once from `.well-known/smart-configuration` under the FHIR base.
    Discover {
        well_known: Url,
        found: tokio::sync::Mutex<Option<Url>>,
        /// The handler's allowlist: the endpoint the server names must be on it.
        egress: wardhook_sdk::http::Egress,
    },
}

#[derive(Debug)]
struct Cached {
    token: SecretValue,
    until: Instant,
}

/// Fetches and caches SMART access tokens.
#[derive(Debug)]
pub(crate) struct SmartTokens {
    pub(crate) client_id: String,
    pub(crate) key: SigningKey,
    pub(crate) endpoint: TokenEndpoint,
    pub(crate) scope: String,
    /// Held across a fetch, so concurrent deliveries wait for one token.
    cache: tokio::sync::Mutex<Option<Cached>>,
}

fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or("token endpoint").to_owned()
}

/// `Retry-After`, parsed and bounded.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| wardhook_sdk::parse_retry_after(v, wardhook_sdk::chrono::Utc::now()))
        .map(|d| d.min(MAX_RETRY_AFTER))
}

/// How long to keep a token that the server says lives `expires_in` seconds: bounded by
/// [`MAX_TOKEN_LIFETIME`], minus a margin. `None` or a non-number means the SMART default.
pub(crate) fn cache_lifetime(expires_in: Option<&Value>) -> Duration {
    let secs = match expires_in {
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f.min(1e9) as u64)
            })
            .unwrap_or(0),
        None => DEFAULT_TOKEN_LIFETIME.as_secs(),
    };
    Duration::from_secs(secs.min(MAX_TOKEN_LIFETIME.as_secs())).saturating_sub(EXPIRY_MARGIN)
}

impl SmartTokens {
    pub(crate) fn new(
        client_id: String,
        key: SigningKey,
        endpoint: TokenEndpoint,
        scope: String,
    ) -> Self {
        Self {
            client_id,
            key,
            endpoint,
            scope,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached token, or a new one.
    pub(crate) async fn token(
        &self,
        client: &reqwest::Client,
        timeout: Duration,
    ) -> Result<SecretValue, FhirError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| c.until > Instant::now()) {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch(client, timeout).await?;
        let token = fresh.token.clone();
        *cache = Some(fresh);
        Ok(token)
    }

    /// A new token after `rejected` was refused, unless another delivery already replaced it.
    pub(crate) async fn refresh(
        &self,
        client: &reqwest::Client,
        timeout: Duration,
        rejected: &SecretValue,
    ) -> Result<SecretValue, FhirError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if c.token.expose() != rejected.expose() && c.until > Instant::now() {
                return Ok(c.token.clone());
            }
        }
        *cache = None;
        let fresh = self.fetch(client, timeout).await?;
        let token = fresh.token.clone();
        *cache = Some(fresh);
        Ok(token)
    }

    async fn token_url(
        &self,
        client: &reqwest::Client,
        timeout: Duration,
    ) -> Result<Url, FhirError> {
        let (well_known, found, egress) = match &self.endpoint {
            TokenEndpoint::Fixed(url) => return Ok(url.clone()),
            TokenEndpoint::Discover {
                well_known,
                found,
                egress,
            } => (well_known, found, egress),
        };
        let mut found = found.lock().await;
        if let Some(url) = found.as_ref() {
            return Ok(url.clone());
        }
        let host = host_of(well_known);
        let response = client
            .get(well_known.clone())
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FhirError::request(&host, &e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let retry = status == 408 || status == 429 || status >= 500;
            return Err(if retry {
                FhirError::TokenUnavailable {
                    retry_after: retry_after(response.headers()),
                    host,
                    status,
                }
            } else {
                FhirError::BadResponse {
                    host,
                    what: "no .well-known/smart-configuration",
                }
            });
        }
        let body: Value = response.json().await.unwrap_or_default();
        let url = body
            .get("token_endpoint")
            .and_then(Value::as_str)
            .and_then(|raw| wardhook_sdk::http::api_url("token_endpoint", raw).ok())
            .ok_or(FhirError::BadResponse {
                host: host.clone(),
                what: "smart-configuration without an https token_endpoint",
            })?;
        // The server names the token endpoint; wardhook sends the client assertion only to a
        // host the config allows (hosts come from config, never from a response).
        if egress.check_url(&url).is_err() {
            return Err(FhirError::BadResponse {
                host,
                what: "smart-configuration names a token endpoint on a host not in allow_hosts",
            });
        }
        *found = Some(url.clone());
        Ok(url)
    }

    async fn fetch(
        &self,
        client: &reqwest::Client,
        timeout: Duration,
    ) -> Result<Cached, FhirError> {
        let token_url = self.token_url(client, timeout).await?;
        let host = host_of(&token_url);
        let assertion = Zeroizing::new(
            self.key
                .client_assertion(&self.client_id, token_url.as_str())?,
        );
        let form: [(&str, &str); 4] = [
            ("grant_type", "client_credentials"),
            ("scope", &self.scope),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ];
        let response = client
            .post(token_url.clone())
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| FhirError::request(&host, &e))?;
        let status = response.status().as_u16();
        let retry = retry_after(response.headers());
        if status == 408 || status == 429 || status >= 500 {
            return Err(FhirError::TokenUnavailable {
                host,
                status,
                retry_after: retry,
            });
        }
        let body: Value = response.json().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let code = body
                .get("error")
                .and_then(Value::as_str)
                .filter(|c| {
                    !c.is_empty()
                        && c.len() <= 64
                        && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
                .map(str::to_owned);
            return Err(FhirError::TokenRefused { host, status, code });
        }
        let access = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or(FhirError::BadResponse {
                host,
                what: "token response without access_token",
            })?;
        let lifetime = cache_lifetime(body.get("expires_in"));
        Ok(Cached {
            token: SecretValue::new(access.to_owned()),
            until: Instant::now() + lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_loads_back_with_its_thumbprint_as_kid() {
        let generated = generate_key().expect("key");
        let key = SigningKey::from_pem(generated.private_pem.as_bytes(), None).expect("load");
        assert_eq!(key.alg(), "ES384");
        assert_eq!(key.kid(), generated.kid);
        let jwk = &generated.jwks["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-384");
        assert_eq!(jwk["kid"], generated.kid.as_str());
        assert!(jwk.get("d").is_none(), "no private member in the JWKS");
    }

    #[test]
    fn assertions_are_three_part_jws_with_unique_jti_and_short_exp() {
        let generated = generate_key().expect("key");
        let key = SigningKey::from_pem(generated.private_pem.as_bytes(), Some("k1".into()))
            .expect("load");
        let claims = |jwt: &str| -> Value {
            let part = jwt.split('.').nth(1).expect("claims");
            serde_json::from_slice(&B64URL.decode(part).expect("b64")).expect("json")
        };
        let a = key
            .client_assertion("app", "https://ehr.example/token")
            .expect("sign");
        let b = key
            .client_assertion("app", "https://ehr.example/token")
            .expect("sign");
        assert_eq!(a.split('.').count(), 3);
        let (ca, cb) = (claims(&a), claims(&b));
        assert_ne!(ca["jti"], cb["jti"]);
        let life = ca["exp"].as_u64().expect("exp") - ca["iat"].as_u64().expect("iat");
        assert!(life <= 300, "{life}");
        assert_eq!(ca["aud"], "https://ehr.example/token");
    }

    #[test]
    fn other_pem_kinds_are_refused_by_name() {
        // A SEC1 label around dummy bytes (built here, so no key-shaped text sits in the tree).
        let label = "EC PRIVATE KEY";
        let pem = format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
        assert_eq!(
            SigningKey::from_pem(pem.as_bytes(), None).expect_err("sec1"),
            KeyError::Label("EC PRIVATE KEY".into())
        );
        assert_eq!(
            SigningKey::from_pem(b"not pem", None).expect_err("text"),
            KeyError::NotPem
        );
    }

    #[test]
    fn token_lifetimes_from_the_server_are_bounded() {
        assert_eq!(cache_lifetime(Some(&json!(300))), Duration::from_secs(270));
        assert_eq!(cache_lifetime(None), Duration::from_secs(270));
        assert_eq!(
            cache_lifetime(Some(&json!(u64::MAX))),
            MAX_TOKEN_LIFETIME - EXPIRY_MARGIN
        );
        assert_eq!(
            cache_lifetime(Some(&json!(1e300))),
            MAX_TOKEN_LIFETIME - EXPIRY_MARGIN
        );
        assert_eq!(cache_lifetime(Some(&json!(-5))), Duration::ZERO);
        assert_eq!(cache_lifetime(Some(&json!("soon"))), Duration::ZERO);
        assert_eq!(cache_lifetime(Some(&json!(10))), Duration::ZERO);
    }
}
