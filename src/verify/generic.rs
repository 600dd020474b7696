//! The `generic` preset and Vapi's HMAC plan: an HMAC over a configured signed-content
//! template, so a new sender needs configuration, not code.
//!
//! Template placeholders: `{body}` (raw bytes), `{timestamp}` (the timestamp header's text),
//! `{id}` or `{svix-id}` (the id header's text), `{url}` (public URL + query as received),
//! `{method}`; `{{` and `}}` are literal braces. A template must contain `{body}`.

use super::header_hmac::parse_prefixed;
use super::scheme::{h, path_and_query, random_id, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Algorithm, Ctx, Encoding, SignedUrl, TimeUnit};
use super::{BodyCoverage, Proof, Rejection};
use crate::secret::Secret;

/// Templates longer than this are refused; real ones are a few dozen bytes.
const MAX_TEMPLATE_LEN: usize = 1024;
/// Id header values longer than this are refused.
const MAX_ID_LEN: usize = 256;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Literal(String),
    /// The raw body.
    Body,
    /// The timestamp header's value.
    Timestamp,
    /// The id header's value.
    Id,
    /// The signed URL.
    Url,
    /// The HTTP method.
    Method,
}

/// A parsed signed-content template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Over [`MAX_TEMPLATE_LEN`] bytes.
    #[error("template longer than {MAX_TEMPLATE_LEN} bytes")]
    TooLong,
    /// `{name}` with a name we do not know.
    #[error("unknown placeholder {{{0}}}; known: body, timestamp, id, svix-id, url, method")]
    UnknownPlaceholder(String),
    /// A `{` without its `}`, or a lone `}`.
    #[error("unbalanced brace at byte {0}; write {{{{ or }}}} for a literal brace")]
    Unbalanced(usize),
}

/// Values a template is rendered with.
pub(crate) struct Values<'a> {
    pub body: &'a [u8],
    pub timestamp: &'a str,
    pub id: &'a str,
    pub url: &'a str,
    pub method: &'a str,
}

impl Template {
    /// Parse template text.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError::TooLong);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut pos = 0usize;
        while let Some(c) = rest.chars().next() {
            let clen = c.len_utf8();
            if rest.starts_with("{{") {
                literal.push('{');
                rest = &rest[2..];
                pos += 2;
            } else if rest.starts_with("}}") {
                literal.push('}');
                rest = &rest[2..];
                pos += 2;
            } else if c == '{' {
                let end = rest.find('}').ok_or(TemplateError::Unbalanced(pos))?;
                let name = &rest[1..end];
                if name.contains('{') {
                    return Err(TemplateError::Unbalanced(pos));
                }
                let part = match name {
                    "body" => Part::Body,
                    "timestamp" => Part::Timestamp,
                    "id" | "svix-id" => Part::Id,
                    "url" => Part::Url,
                    "method" => Part::Method,
                    other => return Err(TemplateError::UnknownPlaceholder(other.to_owned())),
                };
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(part);
                rest = &rest[end + 1..];
                pos += end + 1;
            } else if c == '}' {
                return Err(TemplateError::Unbalanced(pos));
            } else {
                literal.push(c);
                rest = &rest[clen..];
                pos += clen;
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { parts })
    }

    /// A template from parts, for the schemes whose signed content is fixed.
    pub(crate) fn from_parts(parts: Vec<Part>) -> Self {
        Self { parts }
    }

    /// The parsed parts.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub(crate) fn uses_body(&self) -> bool {
        self.parts.contains(&Part::Body)
    }
    pub(crate) fn uses_timestamp(&self) -> bool {
        self.parts.contains(&Part::Timestamp)
    }
    pub(crate) fn uses_id(&self) -> bool {
        self.parts.contains(&Part::Id)
    }
    pub(crate) fn uses_url(&self) -> bool {
        self.parts.contains(&Part::Url)
    }

    /// The bytes to sign as borrowed pieces, in order, for a MAC fed piece by piece.
    pub(crate) fn slices<'a>(&'a self, v: &Values<'a>) -> Vec<&'a [u8]> {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(s) => s.as_bytes(),
                Part::Body => v.body,
                Part::Timestamp => v.timestamp.as_bytes(),
                Part::Id => v.id.as_bytes(),
                Part::Url => v.url.as_bytes(),
                Part::Method => v.method.as_bytes(),
            })
            .collect()
    }

    /// The bytes to sign.
    pub(crate) fn render(&self, v: &Values<'_>) -> Vec<u8> {
        self.slices(v).concat()
    }
}

/// A compiled template scheme.
#[derive(Debug)]
pub(crate) struct HmacTemplate {
    pub keys: Vec<Secret>,
    pub header: String,
    pub prefix: String,
    pub encoding: Encoding,
    pub algorithm: Algorithm,
    pub template: Template,
    pub timestamp_header: Option<String>,
    pub unit: TimeUnit,
    pub id_header: Option<String>,
    pub public_url: Option<url::Url>,
}

/// An id that cannot blur the boundaries of the signed content.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Scheme for HmacTemplate {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        const SIG: &str = "configured signature header";
        const TS: &str = "configured timestamp header";
        const ID: &str = "configured id header";
        let mut used = Vec::new();
        let sig_text = ctx.header(&self.header, SIG)?;
        used.push((self.header.clone(), sig_text.to_owned()));
        let sig = parse_prefixed(sig_text, &self.prefix)
            .and_then(|s| self.encoding.decode(s.trim()))
            .filter(|s| !s.is_empty())
            .ok_or(Rejection::MalformedHeader(SIG))?;

        let mut timestamp = "";
        let mut signed_at = None;
        if self.template.uses_timestamp() {
            let name = self.timestamp_header.as_deref().unwrap_or_default();
            timestamp = ctx.header(name, TS)?.trim();
            let ts = util::parse_unix(timestamp).ok_or(Rejection::MalformedHeader(TS))?;
            signed_at = Some(util::check_window(
                ts,
                self.unit,
                ctx.now,
                ctx.spec.tolerance,
            )?);
            used.push((name.to_owned(), timestamp.to_owned()));
        }
        let mut id = "";
        if self.template.uses_id() {
            let name = self.id_header.as_deref().unwrap_or_default();
            id = ctx.header(name, ID)?.trim();
            if !valid_id(id) {
                return Err(Rejection::MalformedHeader(ID));
            }
            used.push((name.to_owned(), id.to_owned()));
        }
        let url = match (&self.public_url, self.template.uses_url()) {
            (Some(u), true) => SignedUrl::from_public(u, ctx.req.path_and_query).render(),
            _ => String::new(),
        };
        let content = self.template.render(&Values {
            body: ctx.req.body,
            timestamp,
            id,
            url: &url,
            method: ctx.req.method,
        });
        let index = util::first_match(&self.keys, |k| {
            util::mac_matches(self.algorithm, k.expose(), &[&content], &sig)
        })
        .ok_or(Rejection::BadSignature)?;
        Ok(Proof {
            key_index: index,
            signed_at,
            delivery_id: (!id.is_empty()).then(|| id.to_owned()),
            used_headers: used,
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let ts_value = input.timestamp(self.unit);
        let id = random_id("msg_");
        let signed_url = match (&self.public_url, self.template.uses_url()) {
            (Some(public), true) => {
                SignedUrl::from_public(public, &path_and_query(&input.parsed_url()?)).render()
            }
            _ => String::new(),
        };
        let content = self.template.render(&Values {
            body: input.body,
            timestamp: &ts_value,
            id: &id,
            url: &signed_url,
            method: "POST",
        });
        let mac = util::mac(self.algorithm, k.expose(), &[&content]);
        let mut hs = vec![h(
            &self.header,
            format!("{}{}", self.prefix, self.encoding.encode(&mac)),
        )];
        if let (Some(name), true) = (&self.timestamp_header, self.template.uses_timestamp()) {
            hs.push(h(name, ts_value.clone()));
        }
        if let (Some(name), true) = (&self.id_header, self.template.uses_id()) {
            hs.push(h(name, id));
        }
        Ok(Signed::headers(hs))
    }

    fn body_coverage(&self) -> BodyCoverage {
        if self.template.uses_body() {
            BodyCoverage::Signed
        } else {
            BodyCoverage::NotTheBody
        }
    }
}
