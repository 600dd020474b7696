//! The e-mail adapter against a real SMTP server on loopback (aiosmtpd, started per test).
#![allow(clippy::unwrap_used)]

#[path = "support/sink.rs"]
mod sink;

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use sink::{SinkTls, SmtpSink};
use wardhook_handler_email::EmailFactory;
use wardhook_sdk::testing::{self, ResultExt};
use wardhook_sdk::Event;

fn event() -> Event {
    testing::event_from_file("tests/fixtures/quote_request.json")
}

/// The quote-request confirmation, as in config/adapters/email.toml.
fn quote_config(host: &str, port: u16, security: &str, extra: &str) -> String {
    format!(
        r#"phi = "full"
baa = true
host = "{host}"
port = {port}
security = "{security}"
from = "Northside Dental <frontdesk@clinic.example>"
to = ["{{{{ caller.email }}}}"]
bcc = ["frontdesk@clinic.example"]
reply_to = "frontdesk@clinic.example"
subject = "Thanks for your quote request"
text = """
Hi {{{{ caller.name }}}},

Thanks for calling about {{{{ data.custom_fields.service_type }}}}.
We'll send you a detailed quote within 24 hours.

- Northside Dental
"""
html = "<p>Hi {{{{ caller.name }}}},</p><p>Thanks for calling about {{{{ data.custom_fields.service_type }}}}.</p>"
{extra}
"#
    )
}

#[tokio::test]
async fn a_quote_confirmation_arrives_with_headers_subject_and_both_bodies() {
    let Some(smtp) = SmtpSink::start(SinkTls::None) else {
        return;
    };
    let handler = testing::build::<EmailFactory>(
        "quote-confirmation",
        &quote_config("127.0.0.1", smtp.port, "plain", ""),
    );

    let outcome = testing::run(&*handler, &event()).await.expect_ok();

    assert_eq!(outcome.status, Some(250));
    assert_eq!(outcome.destination.as_deref(), Some("127.0.0.1"));
    let got = smtp.wait_for(1);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "frontdesk@clinic.example");
    assert_eq!(m.rcpt_tos, ["dana@example.com", "frontdesk@clinic.example"]);
    assert!(!m.tls);
    assert_eq!(
        m.headers["from"],
        "Northside Dental <frontdesk@clinic.example>"
    );
    assert_eq!(m.headers["to"], "dana@example.com");
    assert_eq!(m.headers["reply-to"], "frontdesk@clinic.example");
    assert_eq!(m.headers["subject"], "Thanks for your quote request");
    assert_eq!(
        m.headers["message-id"],
        "<dlv_q1.quote-confirmation@wardhook.invalid>"
    );
    assert!(!m.headers.contains_key("bcc"), "Bcc is envelope only");
    assert!(m.headers.contains_key("date"));
    assert_eq!(m.content_type, "multipart/alternative");
    assert_eq!(
        m.text.as_deref().map(|t| t.replace("\r\n", "\n")),
        Some(
            "Hi Dana <b>Smith</b>,\n\nThanks for calling about teeth whitening & cleaning.\n\
             We'll send you a detailed quote within 24 hours.\n\n- Northside Dental"
                .to_owned()
        )
    );
    assert_eq!(
        m.html.as_deref().map(str::trim_end),
        Some(
            "<p>Hi Dana &lt;b&gt;Smith&lt;/b&gt;,</p><p>Thanks for calling about teeth whitening &amp; cleaning.</p>"
        ),
        "values are HTML-escaped in the HTML body"
    );
}

#[tokio::test]
async fn an_emergency_alert_with_only_a_text_body_and_an_optional_caller_copy() {
    let Some(smtp) = SmtpSink::start(SinkTls::None) else {
        return;
    };
    let config = format!(
        r#"phi = "full"
baa = true
host = "localhost"
port = {}
security = "plain"
from = "wardhook <wardhook@clinic.example>"
to = ["oncall@clinic.example"]
cc = ["{{{{ caller.email | default('') }}}}"]
subject = "Emergency service confirmation ({{{{ call_id }}}})"
text = "Urgent call from {{{{ caller.phone }}}}. The on-call clinician calls back within 20 minutes."
"#,
        smtp.port
    );
    let handler = testing::build::<EmailFactory>("emergency", &config);
    let event = testing::event_from_json(
        r#"{"delivery_id": "dlv_e1", "call_id": "call_9", "caller": {"phone": "+15550100"}, "data": {"call_type": "emergency"}}"#,
    );

    testing::run(&*handler, &event).await.expect_ok();

    let m = &smtp.wait_for(1)[0];
    assert_eq!(m.rcpt_tos, ["oncall@clinic.example"], "empty cc skipped");
    assert_eq!(
        m.headers["subject"],
        "Emergency service confirmation (call_9)"
    );
    assert_eq!(m.content_type, "text/plain");
    assert_eq!(
        m.text.as_deref().map(str::trim_end),
        Some("Urgent call from +15550100. The on-call clinician calls back within 20 minutes.")
    );
}

/// A test CA and a `localhost` certificate it issued: (dir, ca.pem, server.pem, server.key).
fn certificates() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wardhook test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let (ca_pem, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (dir, ca_pem, cert, key)
}

#[tokio::test]
async fn starttls_is_used_and_the_certificate_verified() {
    let (_dir, ca, cert, key) = certificates();
    let Some(smtp) = SmtpSink::start(SinkTls::StartTls(&cert, &key)) else {
        return;
    };
    let handler = testing::build::<EmailFactory>(
        "quote-confirmation",
        &quote_config(
            "localhost",
            smtp.port,
            "starttls",
            &format!("ca_file = \"{}\"", ca.display()),
        ),
    );

    testing::run(&*handler, &event()).await.expect_ok();

    let m = &smtp.wait_for(1)[0];
    assert!(m.tls, "the message went over the STARTTLS-upgraded session");
    assert_eq!(m.headers["subject"], "Thanks for your quote request");
}

#[tokio::test]
async fn implicit_tls_works_too() {
    let (_dir, ca, cert, key) = certificates();
    let Some(smtp) = SmtpSink::start(SinkTls::Implicit(&cert, &key)) else {
        return;
    };
    let handler = testing::build::<EmailFactory>(
        "quote-confirmation",
        &quote_config(
            "localhost",
            smtp.port,
            "tls",
            &format!("ca_file = \"{}\"", ca.display()),
        ),
    );

    testing::run(&*handler, &event()).await.expect_ok();

    assert!(smtp.wait_for(1)[0].tls);
}

#[tokio::test]
async fn an_untrusted_certificate_is_permanent() {
    let (_dir, _ca, cert, key) = certificates();
    let Some(smtp) = SmtpSink::start(SinkTls::Implicit(&cert, &key)) else {
        return;
    };
    let handler = testing::build::<EmailFactory>(
        "quote-confirmation",
        &quote_config("localhost", smtp.port, "tls", ""),
    );

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert!(reason.starts_with("TLS with localhost failed"), "{reason}");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn a_server_without_starttls_is_never_used_in_plain() {
    let Some(smtp) = SmtpSink::start(SinkTls::None) else {
        return;
    };
    let handler = testing::build::<EmailFactory>(
        "quote-confirmation",
        &quote_config("localhost", smtp.port, "starttls", ""),
    );

    let err = testing::run(&*handler, &event()).await;

    assert!(err.is_err(), "{err:?}");
    assert!(smtp.messages().is_empty(), "nothing sent without TLS");
}

#[tokio::test]
async fn a_4xx_reply_is_retryable_and_a_5xx_reply_permanent() {
    let Some(smtp) = SmtpSink::start(SinkTls::None) else {
        return;
    };
    let temp = testing::build::<EmailFactory>(
        "alert",
        &quote_config("127.0.0.1", smtp.port, "plain", "").replace(
            "to = [\"{{ caller.email }}\"]\nbcc = [\"frontdesk@clinic.example\"]",
            "to = [\"tempfail@clinic.example\"]",
        ),
    );
    let err = testing::run(&*temp, &event()).await;
    assert!(
        matches!(&err, Err(e) if e.reason() == "SMTP 451 from 127.0.0.1 (temporary)"),
        "{err:?}"
    );
    err.expect_retryable();

    let rejected = testing::build::<EmailFactory>(
        "alert",
        &quote_config("127.0.0.1", smtp.port, "plain", "").replace(
            "to = [\"{{ caller.email }}\"]\nbcc = [\"frontdesk@clinic.example\"]",
            "to = [\"reject@clinic.example\"]",
        ),
    );
    assert_eq!(
        testing::run(&*rejected, &event()).await.expect_permanent(),
        "SMTP 550 from 127.0.0.1"
    );
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    let handler = testing::build::<EmailFactory>(
        "quote-confirmation",
        &quote_config("127.0.0.1", 9, "plain", "timeout_secs = 5"),
    );
    let err = testing::run(&*handler, &event()).await;
    assert!(
        matches!(&err, Err(e) if e.reason() == "network error talking to 127.0.0.1"),
        "{err:?}"
    );
    err.expect_retryable();
}

#[tokio::test]
async fn events_without_a_recipient_or_a_variable_fail_permanently_without_values() {
    let handler = testing::build::<EmailFactory>(
        "quote-confirmation",
        &quote_config("127.0.0.1", 9, "plain", "").replace(
            "to = [\"{{ caller.email }}\"]\nbcc = [\"frontdesk@clinic.example\"]",
            "to = [\"{{ caller.email | default('') }}\"]",
        ),
    );
    let no_email = testing::event_from_json(
        r#"{"caller": {"name": "Pat"}, "data": {"custom_fields": {"service_type": "x"}}}"#,
    );
    assert_eq!(
        testing::run(&*handler, &no_email).await.expect_permanent(),
        "no recipient for this event (every to/cc/bcc entry rendered empty)"
    );

    let handler = testing::build::<EmailFactory>(
        "quote-confirmation",
        &quote_config("127.0.0.1", 9, "plain", ""),
    );
    let reason = testing::run(&*handler, &no_email).await.expect_permanent();
    assert_eq!(
        reason,
        "to[0]: template variable `caller.email` is undefined for this event"
    );

    let bad = testing::event_from_json(
        r#"{"caller": {"email": "not an address", "name": "Pat"}, "data": {"custom_fields": {"service_type": "x"}}}"#,
    );
    assert_eq!(
        testing::run(&*handler, &bad).await.expect_permanent(),
        "to[0]: the rendered value is not an e-mail address"
    );
}

/// The quote confirmation with `attach_artifacts` on (4096 bytes at most each), to a plain SMTP
/// server on loopback `port`.
fn attaching(port: u16) -> std::sync::Arc<dyn wardhook_sdk::Handler> {
    testing::build::<EmailFactory>(
        "records",
        &quote_config(
            "127.0.0.1",
            port,
            "plain",
            "attach_artifacts = true\nmax_attachment_bytes = 4096",
        ),
    )
}

/// With `attach_artifacts`, the recording the capture step stored goes with the mail, named by
/// its id, byte for byte as aiosmtpd decodes it; without the switch the same delivery's mail
/// carries nothing; one over `max_attachment_bytes` fails permanently and nothing is sent.
#[tokio::test]
async fn a_recording_is_attached_only_where_the_operator_allows_it() {
    let Some(smtp) = SmtpSink::start(SinkTls::None) else {
        return;
    };
    let wav = testing::recording(3000);
    let artifacts: &[(&str, &str, &[u8])] = &[("art_rec", "audio/x-wav", &wav)];
    let with = attaching(smtp.port);
    testing::run_with_artifacts(&*with, &event(), artifacts)
        .await
        .expect_ok();
    let m = &smtp.wait_for(1)[0];
    assert_eq!(m.content_type, "multipart/mixed");
    assert_eq!(m.attachments.len(), 1);
    let a = &m.attachments[0];
    assert_eq!(a.filename.as_deref(), Some("art_rec.wav"));
    assert_eq!(a.content_type, "audio/x-wav");
    assert_eq!(a.size, wav.len() as u64);
    assert_eq!(a.sha256, hex(&Sha256::digest(&wav)));
    assert!(m.text.as_deref().unwrap().contains("Thanks for calling"));
    assert!(m.html.is_some(), "the HTML alternative stays");

    let without = testing::build::<EmailFactory>(
        "quote-confirmation",
        &quote_config("127.0.0.1", smtp.port, "plain", ""),
    );
    testing::run_with_artifacts(&*without, &event(), artifacts)
        .await
        .expect_ok();
    let got = smtp.wait_for(2);
    assert!(got[1].attachments.is_empty());
    assert_eq!(got[1].content_type, "multipart/alternative");

    let big = vec![7u8; 5000];
    let reason = testing::run_with_artifacts(&*with, &event(), &[("art_big", "audio/x-wav", &big)])
        .await
        .expect_permanent();
    assert!(
        reason.contains("art_big") && reason.contains("max_attachment_bytes"),
        "{reason}"
    );
    assert_eq!(smtp.messages().len(), 2, "nothing sent short");
}

/// The templates are rendered before any artifact is read: a body that fails to render for the
/// event reads (and so audits) nothing, and sends nothing; the same handler on an event that
/// renders reads the recording once and sends it.
#[tokio::test]
async fn a_mail_that_fails_to_render_reads_no_artifact() {
    let Some(smtp) = SmtpSink::start(SinkTls::None) else {
        return;
    };
    let handler = attaching(smtp.port);
    let wav = testing::recording(100);
    let artifacts: &[(&str, &str, &[u8])] = &[("art_rec", "audio/x-wav", &wav)];
    let no_service = testing::event_from_json(
        r#"{"caller": {"email": "dana@example.com", "name": "Dana"}, "data": {}}"#,
    );

    let (result, reads) =
        testing::run_with_artifacts_and_reads(&*handler, &no_service, artifacts).await;

    assert_eq!(
        result.expect_permanent(),
        "text: template variable `data.custom_fields.service_type` is undefined for this event"
    );
    assert!(
        reads.is_empty(),
        "nothing read for an unsendable mail: {reads:?}"
    );
    assert!(smtp.messages().is_empty(), "nothing sent");

    let (result, reads) =
        testing::run_with_artifacts_and_reads(&*handler, &event(), artifacts).await;
    result.expect_ok();
    assert_eq!(reads, ["art_rec"]);
    assert_eq!(smtp.wait_for(1)[0].attachments.len(), 1);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn config_problems_carry_key_paths() {
    let problems = testing::try_build::<EmailFactory>(
        "mail",
        r#"phi = "full"
baa = true
host = "smtp.clinic.example"
security = "plain"
from = "not an address"
to = ["frontdesk"]
username = "wardhook"
subject = "{{ caller.fone }}"
text = "hi"
"#,
    )
    .expect_err("problems");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["security", "from", "to[0]", "subject", "password"],
        "{problems:?}"
    );

    let problems = testing::try_build::<EmailFactory>(
        "mail",
        "host = \"smtp.clinic.example\"\nfrom = \"a@b.example\"\nto = [\"{{ caller.email }}\"]\nsubject = \"s\"\ntext = \"t\"\npassword = \"hunter2\"\nusername = \"u\"",
    )
    .expect_err("phi none + literal password");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["to[0]", "password"], "{problems:?}");
    assert!(problems[0].message.contains("phi = \"none\""));

    testing::try_build::<EmailFactory>(
        "mail",
        "host = \"smtp.clinic.example\"\nfrom = \"a@b.example\"\nto = [\"oncall@clinic.example\"]\nsubject = \"Urgent call {{ call_id }}\"\ntext = \"Open delivery {{ delivery_id }} in wardhook.\"",
    )
    .expect("a phi = none alert naming no patient data builds");

    let problems = testing::try_build::<EmailFactory>(
        "mail",
        "host = \"smtp.clinic.example\"\nfrom = \"a@b.example\"\nto = [\"oncall@clinic.example\"]\nsubject = \"s\"\ntext = \"t\"\nattach_artifacts = true\nmax_attachment_bytes = 0",
    )
    .expect_err("phi none + attachments");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["attach_artifacts", "max_attachment_bytes"],
        "{problems:?}"
    );
    assert!(problems[0].message.contains("PHI"));
}
