//! `kind = "email"`: a templated message per event over SMTP — the confirmation mail to a
//! caller who asked for a quote, the alert to the on-call clinician for an emergency.
//!
//! - **Encrypted or local.** `security = "starttls"` (default; STARTTLS is *required*, a server
//!   that does not offer it fails the attempt instead of silently downgrading) or `"tls"`
//!   (implicit TLS, port 465). `"plain"` is refused at `check-config` unless the host is a
//!   loopback address: a relay on the same machine. TLS is rustls (ring provider) with the
//!   public roots plus an optional `ca_file`; certificate checks are always on.
//! - **Templates** for subject, text and HTML bodies and for every recipient, rendered by the
//!   SDK's one engine with its rules (an undefined variable fails permanently; `default('')`
//!   where empty is fine). In the HTML body every value is HTML-escaped.
//! - **Recipients per handler.** Routes cannot pass settings to a handler, so a route picks an
//!   e-mail handler per recipient set (`quote-confirmation`, `oncall-alert`). Recipient
//!   templates make one handler serve "the caller" (`{{ caller.email }}`).
//! - **Repeats are recognisable.** The `Message-ID` is derived from the delivery and handler,
//!   the same on every attempt, so a retry after a lost `250` is a duplicate mail clients and
//!   servers can fold.
//! - **Recordings as attachments, where allowed.** With `attach_artifacts = true` (off by
//!   default; needs `phi = "full"`) the artifacts the route's `capture` step stored are read
//!   through the SDK's audited, decrypted stream and attached, each at most
//!   `max_attachment_bytes`. They are read only once every template has rendered, so a message
//!   that cannot be built leaves no read in the audit log.
//! - A 4xx reply, a timeout or a dropped connection is retryable; a 5xx reply, a TLS failure or
//!   an address that is not one is permanent. Reasons name the host and reply code only.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod error;

use std::sync::Arc;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;
use wardhook_sdk::artifacts::{read_attachments, Attachment};
use wardhook_sdk::template::{html_escape, Escape, Template, Vars};
use wardhook_sdk::{
    async_trait, AppData, BuildContext, Caller, ConfigProblem, Context, Event, Handler,
    HandlerError, HandlerFactory, Outcome, Problems,
};

pub use crate::config::{EmailConfig, Security};
pub use crate::error::EmailError;

/// Registers `kind = "email"`.
#[derive(Debug)]
pub struct EmailFactory;

/// A compiled recipient template with its key path (`to[1]`).
#[derive(Debug)]
struct Recipient {
    key: String,
    template: Template,
}

impl HandlerFactory for EmailFactory {
    type Config = EmailConfig;

    fn build(
        config: EmailConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
        let mut p = Problems::new();
        let host = config.host.trim().to_owned();
        if host.is_empty() {
            p.push(ConfigProblem::new("host", "must not be empty"));
        }
        if config.security == Security::Plain && !is_loopback(&host) {
            p.push(ConfigProblem::new(
                "security",
                "\"plain\" sends patient data unencrypted: only allowed to a loopback host; use \"starttls\" or \"tls\"",
            ));
        }
        let from = p.take(
            config
                .from
                .parse::<Mailbox>()
                .map_err(|_| ConfigProblem::new("from", "not an e-mail address")),
        );
        let mut recipients: [Vec<Recipient>; 3] = Default::default();
        for (i, (field, list)) in [("to", &config.to), ("cc", &config.cc), ("bcc", &config.bcc)]
            .into_iter()
            .enumerate()
        {
            for (j, source) in list.iter().enumerate() {
                let key = format!("{field}[{j}]");
                if let Some(r) = p.take(recipient(ctx, &key, source)) {
                    recipients[i].push(r);
                }
            }
        }
        if config.to.is_empty() && config.cc.is_empty() && config.bcc.is_empty() {
            p.push(ConfigProblem::new("to", "at least one recipient is needed"));
        }
        let reply_to = config
            .reply_to
            .as_deref()
            .and_then(|s| p.take(recipient(ctx, "reply_to", s)));
        let subject = p.take(ctx.template("subject", &config.subject, Escape::None));
        let text = p.take(ctx.template("text", &config.text, Escape::None));
        let html = config
            .html
            .as_deref()
            .and_then(|s| p.take(ctx.template("html", s, Escape::None)));
        let timeout = p.timeout_secs("timeout_secs", config.timeout_secs);
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(pass)) => p
                .take(ctx.secret_str("password", pass))
                .map(|pw| Some(Credentials::new(user.clone(), pw.expose().to_owned()))),
            (None, None) => Some(None),
            (Some(_), None) => {
                p.push(ConfigProblem::new(
                    "password",
                    "username is set: a password reference is needed too",
                ));
                None
            }
            (None, Some(_)) => {
                p.push(ConfigProblem::new(
                    "username",
                    "password is set: the user name is needed too",
                ));
                None
            }
        };
        let attach_artifacts = p.artifact_limit(
            ctx,
            ("attach_artifacts", config.attach_artifacts),
            ("max_attachment_bytes", config.max_attachment_bytes),
            config::MAX_ATTACHMENT_BYTES,
        );
        let tls = p.take(tls_parameters(&config, &host, ctx));
        p.check()?;
        let (Some(from), Some(subject), Some(text), Some(credentials), Some(tls)) =
            (from, subject, text, credentials, tls)
        else {
            return Err(ConfigProblem::incomplete());
        };
        let port = config.port.unwrap_or(config.security.default_port());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(c) = credentials {
            builder = builder.credentials(c);
        }
        let [to, cc, bcc] = recipients;
        Ok(Arc::new(Email {
            name: ctx.name().to_owned(),
            host,
            transport: builder.build(),
            from,
            to,
            cc,
            bcc,
            reply_to,
            subject,
            text,
            html,
            attach_artifacts,
        }))
    }
}

fn recipient(ctx: &BuildContext, key: &str, source: &str) -> Result<Recipient, ConfigProblem> {
    let template = ctx.template(key, source, Escape::None)?;
    // A fixed address can be checked now rather than on the first call.
    if template.variables().next().is_none() && source.parse::<Mailbox>().is_err() {
        return Err(ConfigProblem::new(key, "not an e-mail address"));
    }
    Ok(Recipient {
        key: key.to_owned(),
        template,
    })
}

fn tls_parameters(
    config: &EmailConfig,
    host: &str,
    ctx: &BuildContext,
) -> Result<Tls, ConfigProblem> {
    if config.security == Security::Plain {
        return Ok(Tls::None);
    }
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(ctx.resolve_path(path)).map_err(|e| {
            ConfigProblem::new(
                "ca_file",
                format!("cannot read {}: {}", path.display(), e.kind()),
            )
        })?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|_| ConfigProblem::new("ca_file", "not a PEM certificate"))?;
        builder = builder.add_root_certificate(cert);
    }
    let params = builder.build_rustls().map_err(|_| {
        ConfigProblem::new("host", "TLS settings could not be set up for this host")
    })?;
    Ok(match config.security {
        Security::Tls => Tls::Wrapper(params),
        _ => Tls::Required(params),
    })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A configured e-mail handler.
pub struct Email {
    name: String,
    host: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Recipient>,
    cc: Vec<Recipient>,
    bcc: Vec<Recipient>,
    reply_to: Option<Recipient>,
    subject: Template,
    text: Template,
    html: Option<Template>,
    /// `max_attachment_bytes` when `attach_artifacts` is on.
    attach_artifacts: Option<u64>,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("name", &self.name)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

fn render(key: &str, template: &Template, vars: &Vars) -> Result<String, EmailError> {
    template
        .render(vars)
        .map_err(|source| EmailError::Template {
            key: key.to_owned(),
            source,
        })
}

impl Email {
    /// The message for `event`, as it would be sent (without attachments).
    pub fn message(&self, event: &Event, ctx: &Context) -> Result<Message, EmailError> {
        self.compose(event, ctx)?.assemble(&[])
    }

    /// Every template rendered and every address checked for `event`: all that can fail on the
    /// event's content, done before any artifact is read.
    fn compose(&self, event: &Event, ctx: &Context) -> Result<Composed, EmailError> {
        let vars = ctx.template_vars(event);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .message_id(Some(message_id(&event.delivery_id, &self.name)));
        let mut any = false;
        for (list, kind) in [(&self.to, 0), (&self.cc, 1), (&self.bcc, 2)] {
            for r in list {
                let Some(mailbox) = address(r, &vars)? else {
                    continue;
                };
                any = true;
                builder = match kind {
                    0 => builder.to(mailbox),
                    1 => builder.cc(mailbox),
                    _ => builder.bcc(mailbox),
                };
            }
        }
        if !any {
            return Err(EmailError::NoRecipient);
        }
        if let Some(r) = &self.reply_to {
            if let Some(mailbox) = address(r, &vars)? {
                builder = builder.reply_to(mailbox);
            }
        }
        let subject = render("subject", &self.subject, &vars)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = render("text", &self.text, &vars)?;
        let builder = builder.subject(subject);
        let body = match &self.html {
            None => Body::Single(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(text),
            ),
            Some(html) => {
                let escaped = html_escaped_event(event);
                let app_data = match html_escape_value(&Value::Object(ctx.app_data().clone())) {
                    Value::Object(m) => m,
                    _ => AppData::new(),
                };
                let html_vars = Vars::new(&escaped, &app_data, ctx.now(), ctx.time_zone());
                let html = render("html", html, &html_vars)?;
                Body::Multi(MultiPart::alternative_plain_html(text, html))
            }
        };
        Ok(Composed { builder, body })
    }

    /// Render, then read the artifacts (each read audited), then send: a message that cannot
    /// be rendered reads nothing, so no audit record names a read for a mail never sent.
    async fn send(&self, event: &Event, ctx: &Context) -> Result<Outcome, HandlerError> {
        let composed = self.compose(event, ctx)?;
        let attachments = match self.attach_artifacts {
            Some(max) => read_attachments(ctx, max, "max_attachment_bytes").await?,
            None => Vec::new(),
        };
        let message = composed.assemble(&attachments)?;
        drop(attachments);
        Ok(self.transmit(message).await?)
    }

    async fn transmit(&self, message: Message) -> Result<Outcome, EmailError> {
        let host = self.host.clone();
        let response = self.transport.send(message).await.map_err(|e| {
            let code = e.status().map(|c| c.to_string()).unwrap_or_default();
            if e.is_transient() {
                EmailError::Transient {
                    code,
                    host: host.clone(),
                }
            } else if e.is_permanent() {
                EmailError::Rejected {
                    code,
                    host: host.clone(),
                }
            } else if e.is_tls() || is_certificate_failure(&e) {
                EmailError::Tls { host: host.clone() }
            } else {
                EmailError::Network {
                    host: host.clone(),
                    timed_out: e.is_timeout(),
                }
            }
        })?;
        let code: u16 = response.code().to_string().parse().unwrap_or(250);
        Ok(Outcome::done().with_status(code).with_destination(host))
    }
}

/// The body before any attachment: text alone, or text and HTML as alternatives.
enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

/// A rendered message still open for attachments.
struct Composed {
    builder: lettre::message::MessageBuilder,
    body: Body,
}

impl Composed {
    /// The message, with `attachments` after the body (`multipart/mixed`) when there are any.
    fn assemble(self, attachments: &[Attachment]) -> Result<Message, EmailError> {
        let Composed { builder, body } = self;
        let message = if attachments.is_empty() {
            match body {
                Body::Single(part) => builder.singlepart(part),
                Body::Multi(parts) => builder.multipart(parts),
            }
        } else {
            let mut mixed = match body {
                Body::Single(part) => MultiPart::mixed().singlepart(part),
                Body::Multi(parts) => MultiPart::mixed().multipart(parts),
            };
            for a in attachments {
                // A type capture accepted from its configured list, so it parses.
                let content_type =
                    ContentType::parse(&a.reference.content_type).map_err(|_| EmailError::Build)?;
                mixed = mixed.singlepart(
                    lettre::message::Attachment::new(a.reference.file_name())
                        .body(a.content.to_vec(), content_type),
                );
            }
            builder.multipart(mixed)
        };
        message.map_err(|_| EmailError::Build)
    }
}

/// A TLS handshake that failed on the certificate surfaces from lettre as a connection
/// error; its source chain says what happened. Retrying would not make the certificate
/// trusted, so it is told apart from a network failure.
fn is_certificate_failure(e: &lettre::transport::smtp::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if text.contains("certificate") || text.contains("handshake") {
            return true;
        }
        source = s.source();
    }
    false
}

/// One rendered address, `None` when it rendered empty.
fn address(r: &Recipient, vars: &Vars) -> Result<Option<Mailbox>, EmailError> {
    let rendered = render(&r.key, &r.template, vars)?;
    let rendered = rendered.trim();
    if rendered.is_empty() {
        return Ok(None);
    }
    rendered
        .parse::<Mailbox>()
        .map(Some)
        .map_err(|_| EmailError::BadAddress(r.key.clone()))
}

/// `<dlv_x.handler@wardhook.invalid>`: the same on every attempt of this handler for this
/// delivery.
fn message_id(delivery_id: &str, handler: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "<{}.{}@wardhook.invalid>",
        clean(delivery_id),
        clean(handler)
    )
}

#[async_trait]
impl Handler for Email {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
        self.send(event, ctx).await
    }
}

/// The event with every string HTML-escaped, so the HTML template's values cannot become
/// markup (the SDK engine escapes for JSON and URLs, not HTML).
fn html_escaped_event(event: &Event) -> Event {
    let esc = |s: &Option<String>| s.as_deref().map(html_escape);
    Event {
        delivery_id: html_escape(&event.delivery_id),
        source: html_escape(&event.source),
        event_type: html_escape(&event.event_type),
        call_id: esc(&event.call_id),
        caller: Caller {
            phone: esc(&event.caller.phone),
            name: esc(&event.caller.name),
            email: esc(&event.caller.email),
        },
        data: html_escape_value(&event.data),
        ..event.clone()
    }
}

fn html_escape_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(html_escape(s)),
        Value::Array(a) => Value::Array(a.iter().map(html_escape_value).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), html_escape_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
