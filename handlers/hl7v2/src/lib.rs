//! `kind = "hl7v2"`: each event becomes an HL7 v2.5.1 message sent over MLLP to the clinic's
//! EHR or interface engine, which answers with an ACK.
//!
//! - **Messages from templates.** `message = "MDM^T02"` (default: the call summary as a
//!   document, and with `transcript = true` the transcript), `"SIU^S12"` (an appointment
//!   request) or `"ADT^A08"` (a demographic update) picks default body segments; `segments`
//!   replaces them. `MSH` (and `EVN` for MDM and ADT) are written by the handler. Every value
//!   from the event is escaped before rendering ([`escape`]), so no caller-supplied text can add
//!   a field, component, repetition or segment; a rendered segment that is not one well-formed
//!   body segment is refused ([`message`]).
//! - **MLLP over TLS** (tokio-rustls, ring), client certificates supported; plaintext only
//!   with `tls = false` for an IP address in a private range or loopback, with a warning that
//!   `serve` logs at start-up (`Handler::startup_warnings`), `check-config` prints, and the
//!   destination logs again at its first connection ([`mllp`]). Connections are
//!   reused per destination.
//! - **Idempotent.** `MSH-10` is the job's idempotency key (`<delivery id>:<handler>`, the same
//!   on every attempt), so a receiver can discard a repeat after a lost ACK.
//! - **ACKs** ([`ack`]): `AA`/`CA` → done; `AE`/`CE`, an ACK for another control id, a malformed
//!   answer, silence or a dropped connection → retryable; `AR`/`CR` or an untrusted certificate →
//!   permanent. Reasons name the destination and the code only.
//! - **Minimum necessary.** The default segments read the caller (PHI): the handler needs
//!   `phi = "full"` + `baa = true`. `transcript = true` is refused by `check-config` for a
//!   `phi = "none"` handler, naming `data.transcript`, as is any template reading a PHI field.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ack;
pub mod config;
pub mod error;
pub mod escape;
pub mod message;
pub mod mllp;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use sha2::{Digest, Sha256};
use wardhook_sdk::template::{Escape, Vars};
use wardhook_sdk::{
    async_trait, AppData, BuildContext, ConfigProblem, Context, Event, Handler, HandlerError,
    HandlerFactory, Outcome, Problems,
};

use crate::ack::AckCode;
pub use crate::config::{AckMode, ControlId, Hl7Config};
pub use crate::error::Hl7Error;
use crate::message::{Header, MessageType, SegmentTemplate};
use crate::mllp::{Destination, Limits};

/// Registers `kind = "hl7v2"`.
#[derive(Debug)]
pub struct Hl7Factory;

impl HandlerFactory for Hl7Factory {
    type Config = Hl7Config;

    fn build(
        config: Hl7Config,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
        let mut p = Problems::new();
        let host = config
            .host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            p.push(ConfigProblem::new("host", "must not be empty"));
        }
        if config.port == 0 {
            p.push(ConfigProblem::new("port", "must be 1 to 65535"));
        }
        let message_type = MessageType::parse(config.message.trim());
        if message_type.is_none() {
            p.push(ConfigProblem::new(
                "message",
                "must be \"MDM^T02\", \"SIU^S12\" or \"ADT^A08\"",
            ));
        }
        let segments = segment_templates(&config, message_type, ctx, &mut p);
        let header = Header {
            sending_application: p
                .take(header_value(
                    "sending_application",
                    &config.sending_application,
                ))
                .unwrap_or_default(),
            sending_facility: p
                .take(header_value("sending_facility", &config.sending_facility))
                .unwrap_or_default(),
            receiving_application: p
                .take(header_value(
                    "receiving_application",
                    &config.receiving_application,
                ))
                .unwrap_or_default(),
            receiving_facility: p
                .take(header_value(
                    "receiving_facility",
                    &config.receiving_facility,
                ))
                .unwrap_or_default(),
            processing_id: config.processing_id.clone(),
            enhanced: config.ack_mode == AckMode::Enhanced,
            message_type: message_type.unwrap_or(MessageType::MdmT02),
        };
        if !matches!(config.processing_id.as_str(), "P" | "T" | "D") {
            p.push(ConfigProblem::new("processing_id", "must be P, T or D"));
        }
        let limits = Limits {
            connect_timeout: p.seconds("connect_timeout_secs", config.connect_timeout_secs, 1, 120),
            ack_timeout: p.timeout_secs("ack_timeout_secs", config.ack_timeout_secs),
            idle: p.seconds("idle_secs", config.idle_secs, 0, 3600),
            max_idle: config.max_idle_connections.min(16),
        };
        if config.max_idle_connections > 16 {
            p.push(ConfigProblem::new(
                "max_idle_connections",
                "must be 0 to 16",
            ));
        }
        let tls = if config.tls {
            p.take(tls_settings(&config, &host, ctx))
        } else {
            if let Some(problem) = plaintext_problem(&config, &host) {
                p.push(problem);
            }
            Some(None)
        };
        p.check()?;
        let Some(tls) = tls else {
            return Err(ConfigProblem::incomplete());
        };
        let destination = Destination::new(host, config.port, tls.clone(), limits);
        Ok(Arc::new(Hl7 {
            name: ctx.name().to_owned(),
            header,
            segments,
            control_id: config.control_id,
            budget: limits.connect_timeout + limits.ack_timeout,
            destination,
        }))
    }
}

/// The body segment templates: the configured ones, or the message type's defaults.
fn segment_templates(
    config: &Hl7Config,
    message_type: Option<MessageType>,
    ctx: &BuildContext,
    p: &mut Problems,
) -> Vec<SegmentTemplate> {
    if config.transcript {
        if message_type != Some(MessageType::MdmT02) {
            p.push(ConfigProblem::new(
                "transcript",
                "only MDM^T02 carries the transcript",
            ));
        }
        if config.segments.is_some() {
            p.push(ConfigProblem::new(
                "transcript",
                "applies to the default segments; with `segments`, write the transcript OBX yourself",
            ));
        }
        // The transcript is the most sensitive field of a call: name it, whatever else fails.
        p.take(ctx.check_phi("transcript", ["data.transcript"]));
    }
    let mut out = Vec::new();
    match (&config.segments, message_type) {
        (Some(list), _) => {
            if list.is_empty() {
                p.push(ConfigProblem::new(
                    "segments",
                    "at least one segment is needed",
                ));
            }
            for (i, source) in list.iter().enumerate() {
                let key = format!("segments[{i}]");
                if let Some(template) = p.take(ctx.template(&key, source, Escape::None)) {
                    out.push(SegmentTemplate { key, template });
                }
            }
        }
        (None, Some(t)) => {
            for source in t.default_segments(config.transcript) {
                match ctx.template("message", source, Escape::None) {
                    Ok(template) => out.push(SegmentTemplate {
                        key: "message".into(),
                        template,
                    }),
                    // One problem for the defaults is enough: they all read the caller.
                    Err(problem) => {
                        p.push(problem);
                        break;
                    }
                }
            }
        }
        (None, None) => {}
    }
    out
}

/// An `MSH-3`…`MSH-6` value from the config: components (`^`, `&`) allowed, no other
/// delimiter.
fn header_value(key: &str, value: &str) -> Result<String, ConfigProblem> {
    if value
        .chars()
        .any(|c| matches!(c, '|' | '~' | '\\') || c.is_control())
    {
        return Err(ConfigProblem::new(
            key,
            "must not contain `|`, `~`, `\\` or control characters",
        ));
    }
    Ok(value.to_owned())
}

/// `tls = false` is allowed for an IP address in a private range or loopback only.
fn plaintext_problem(config: &Hl7Config, host: &str) -> Option<ConfigProblem> {
    if config.ca_file.is_some() || config.client_cert.is_some() || config.client_key.is_some() {
        return Some(ConfigProblem::new(
            "tls",
            "is false, but TLS files are configured: they would be ignored",
        ));
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if is_private(ip) => None,
        _ => Some(ConfigProblem::new(
            "tls",
            "false sends patient data unencrypted: only allowed to an IP address in a private \
             range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7) or loopback",
        )),
    }
}

/// Loopback, RFC 1918 or unique-local (RFC 4193), IPv4-mapped addresses included.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

fn tls_settings(
    config: &Hl7Config,
    host: &str,
    ctx: &BuildContext,
) -> Result<Option<(Arc<ClientConfig>, ServerName<'static>)>, ConfigProblem> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| ConfigProblem::new("host", "not a valid DNS name or IP address"))?;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &config.ca_file {
        let certs = read_certificates("ca_file", &ctx.resolve_path(path))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|_| ConfigProblem::new("ca_file", "not a usable CA certificate"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| ConfigProblem::new("tls", "TLS could not be set up"))?
        .with_root_certificates(roots);
    let client_config = match (&config.client_cert, &config.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certificates("client_cert", &ctx.resolve_path(cert))?;
            let secret = ctx.secret_str("client_key", key)?;
            let key = PrivateKeyDer::from_pem_slice(secret.expose().as_bytes())
                .map_err(|_| ConfigProblem::new("client_key", "not a PEM private key"))?;
            builder.with_client_auth_cert(chain, key).map_err(|_| {
                ConfigProblem::new("client_key", "does not match the client certificate")
            })?
        }
        (Some(_), None) => {
            return Err(ConfigProblem::new(
                "client_key",
                "client_cert is set: its key reference is needed too",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigProblem::new(
                "client_cert",
                "client_key is set: the certificate is needed too",
            ))
        }
    };
    Ok(Some((Arc::new(client_config), name)))
}

fn read_certificates(
    key: &str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigProblem> {
    let pem = std::fs::read(path).map_err(|e| {
        ConfigProblem::new(key, format!("cannot read {}: {}", path.display(), e.kind()))
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| ConfigProblem::new(key, "not a PEM certificate file"))?;
    if certs.is_empty() {
        return Err(ConfigProblem::new(key, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// A configured HL7 v2 handler.
#[derive(Debug)]
pub struct Hl7 {
    name: String,
    header: Header,
    segments: Vec<SegmentTemplate>,
    control_id: ControlId,
    budget: Duration,
    destination: Destination,
}

impl Hl7 {
    /// `MSH-10` for this invocation: derived from the idempotency key only, so every attempt
    /// carries the same one.
    pub fn control_id(&self, ctx: &Context) -> String {
        match self.control_id {
            ControlId::Key => escape::escape(ctx.idempotency_key()),
            ControlId::Short => {
                let digest = Sha256::digest(ctx.idempotency_key().as_bytes());
                hex::encode(digest)[..20].to_owned()
            }
        }
    }

    /// The message for `event`, as it would be sent (without the MLLP frame).
    pub fn message(&self, event: &Event, ctx: &Context) -> Result<String, Hl7Error> {
        let escaped = escape::escape_event(event);
        let app_data =
            match escape::escape_value(&serde_json::Value::Object(ctx.app_data().clone())) {
                serde_json::Value::Object(m) => m,
                _ => AppData::new(),
            };
        let vars = Vars::new(&escaped, &app_data, ctx.now(), ctx.time_zone());
        let occurred = event.occurred_at.unwrap_or(event.received_at);
        self.header.message(
            &self.control_id(ctx),
            ctx.now(),
            occurred,
            &self.segments,
            &vars,
        )
    }

    async fn send(&self, event: &Event, ctx: &Context) -> Result<Outcome, Hl7Error> {
        let control_id = self.control_id(ctx);
        let framed = mllp::frame(&self.message(event, ctx)?);
        let destination = self.destination.label().to_owned();
        let code = self
            .destination
            .exchange(&framed, ctx.time_left(self.budget), |block| {
                let ack = ack::parse(block).ok_or_else(|| Hl7Error::MalformedAck {
                    destination: destination.clone(),
                })?;
                if ack.control_id != control_id {
                    return Err(Hl7Error::ControlIdMismatch {
                        destination: destination.clone(),
                    });
                }
                match ack.code {
                    AckCode::Accept(code) => Ok(code),
                    AckCode::Error(code) => Err(Hl7Error::AckError {
                        code,
                        destination: destination.clone(),
                    }),
                    AckCode::Reject(code) => Err(Hl7Error::AckReject {
                        code,
                        destination: destination.clone(),
                    }),
                }
            })
            .await?;
        Ok(Outcome::done()
            .with_data(serde_json::json!({"control_id": control_id, "ack": code}))
            .with_destination(destination))
    }
}

#[async_trait]
impl Handler for Hl7 {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
        self.send(event, ctx).await.map_err(HandlerError::from)
    }

    fn startup_warnings(&self) -> Vec<String> {
        if self.destination.is_plaintext() {
            vec![mllp::plaintext_warning(self.destination.label())]
        } else {
            Vec::new()
        }
    }
}
