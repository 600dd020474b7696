//! Schemes that authenticate the sender but sign nothing: Bearer tokens (static or issued by the
//! OAuth2 endpoint), API keys in a header, HTTP Basic, Vapi's secret header and RingCentral's
//! verification token. They prove who sent a request, not that the body was unaltered in
//! transit — TLS does that — and they offer no replay protection beyond deduplication.

use base64::Engine as _;

use super::scheme::{h, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Ctx};
use super::{BodyCoverage, ChallengeReply, Proof, Rejection, VerifierSpec};
use crate::secret::Secret;

/// How the token is presented.
#[derive(Debug)]
pub(crate) enum TokenCheck {
    /// `Bearer <token>` in `header` (a non-`Authorization` header may also carry the bare token).
    Bearer { header: String },
    /// The token verbatim in `header`.
    Plain { header: String },
    /// `Authorization: Basic base64(username:password)`; passwords are the tokens.
    Basic { username: String },
    /// RingCentral: `Validation-Token` handshake, then `Verification-Token`/`Validation-Token`.
    RingCentral,
}

#[derive(Debug)]
pub(crate) struct TokenScheme {
    source: String,
    /// `secrets` in order, then `token` if set.
    pub tokens: Vec<Secret>,
    secrets_len: usize,
    oauth_clients: Vec<String>,
    pub check: TokenCheck,
}

/// Longest RingCentral validation token echoed back (its whole reply must stay under 1 KiB).
const MAX_VALIDATION_TOKEN: usize = 256;

impl TokenScheme {
    pub fn new(spec: &VerifierSpec, check: TokenCheck) -> Self {
        let mut tokens = spec.secrets.clone();
        tokens.extend(spec.token.clone());
        Self {
            source: spec.source.clone(),
            tokens,
            secrets_len: spec.secrets.len(),
            oauth_clients: spec
                .scheme
                .oauth_clients
                .iter()
                .map(|c| c.client_id.clone())
                .collect(),
            check,
        }
    }

    fn static_match(&self, presented: &[u8]) -> Option<usize> {
        util::first_match(&self.tokens, |t| util::ct_eq(presented, t.expose()))
    }

    fn check_bearer(&self, ctx: &Ctx<'_>, header: &str) -> Result<Proof, Rejection> {
        let label = if header == "authorization" {
            "authorization"
        } else {
            "configured token header"
        };
        let value = ctx.header(header, label)?;
        let token = match util::strip_bearer(value) {
            Some(t) => t,
            None if header != "authorization" && !value.trim().is_empty() => value.trim(),
            None => return Err(Rejection::MalformedHeader(label)),
        };
        if let Some(index) = self.static_match(token.as_bytes()) {
            return Ok(Proof {
                key_index: index,
                ..Proof::default()
            });
        }
        if let (Some(issuer), false) = (ctx.oauth, self.oauth_clients.is_empty()) {
            if let Some(client) = issuer.check_token(&self.source, token.as_bytes(), ctx.now) {
                let pos = self
                    .oauth_clients
                    .iter()
                    .position(|c| *c == client)
                    .ok_or(Rejection::UnknownKey)?;
                return Ok(Proof {
                    key_index: self.secrets_len + 1 + pos,
                    oauth_client: Some(client),
                    ..Proof::default()
                });
            }
        }
        Err(Rejection::UnknownKey)
    }

    fn check_ringcentral(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        const VALIDATION: &str = "validation-token";
        const VERIFICATION: &str = "verification-token";
        let validation = ctx.opt_header(VALIDATION, VALIDATION)?;
        if let (Some(v), true) = (validation, ctx.req.body.is_empty()) {
            // Subscription handshake: echo the token. Nothing is stored and nothing secret is
            // revealed, so it needs no authentication; it is bounded so the reply stays small.
            let v = v.trim();
            if v.is_empty()
                || v.len() > MAX_VALIDATION_TOKEN
                || !v.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(Rejection::MalformedHeader(VALIDATION));
            }
            return Ok(Proof {
                challenge: Some(ChallengeReply {
                    status: 200,
                    headers: vec![("Validation-Token".to_owned(), v.to_owned())],
                    content_type: "text/plain",
                    body: Vec::new(),
                }),
                ..Proof::default()
            });
        }
        let value = match ctx.opt_header(VERIFICATION, VERIFICATION)? {
            Some(v) => v,
            None => validation.ok_or(Rejection::MissingHeader(VERIFICATION))?,
        };
        let index = self
            .static_match(value.trim().as_bytes())
            .ok_or(Rejection::UnknownKey)?;
        Ok(Proof {
            key_index: index,
            ..Proof::default()
        })
    }
}

impl Scheme for TokenScheme {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        match &self.check {
            TokenCheck::Bearer { header } => self.check_bearer(ctx, header),
            TokenCheck::Plain { header } => {
                let value = ctx.header(header, "configured token header")?.trim();
                let index = self
                    .static_match(value.as_bytes())
                    .ok_or(Rejection::UnknownKey)?;
                Ok(Proof {
                    key_index: index,
                    ..Proof::default()
                })
            }
            TokenCheck::Basic { username } => {
                let value = ctx.header("authorization", "authorization")?;
                let (user, pass) =
                    parse_basic(value).ok_or(Rejection::MalformedHeader("authorization"))?;
                let user_ok = util::ct_eq(user.as_bytes(), username.as_bytes());
                let index = self.static_match(pass.as_bytes());
                match (user_ok, index) {
                    (true, Some(i)) => Ok(Proof {
                        key_index: i,
                        ..Proof::default()
                    }),
                    _ => Err(Rejection::UnknownKey),
                }
            }
            TokenCheck::RingCentral => self.check_ringcentral(ctx),
        }
    }

    fn sign(&self, _input: &SignInput<'_>) -> Result<Signed, SignError> {
        let token = self.tokens.first();
        let text = |t: &Secret| String::from_utf8_lossy(t.expose()).into_owned();
        let headers = match &self.check {
            TokenCheck::Bearer { header } => {
                let t = token.ok_or(SignError::NeedsOAuthToken)?;
                vec![h(header, format!("Bearer {}", text(t)))]
            }
            TokenCheck::Plain { header } => {
                vec![h(header, text(token.ok_or(SignError::NoSecret)?))]
            }
            TokenCheck::Basic { username } => {
                let t = token.ok_or(SignError::NoSecret)?;
                let creds = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", text(t)));
                vec![h("Authorization", format!("Basic {creds}"))]
            }
            TokenCheck::RingCentral => {
                vec![h(
                    "Verification-Token",
                    text(token.ok_or(SignError::NoSecret)?),
                )]
            }
        };
        Ok(Signed::headers(headers))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::TokenOnly
    }
}

/// `Basic base64(user:password)` → (user, password).
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}
