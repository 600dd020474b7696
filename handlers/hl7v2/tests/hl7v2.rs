//! The HL7 v2 adapter against a receiver nobody here wrote: python-hl7's MLLP server and parser
//! (`tests/support/mllp_server.py`), started per test on 127.0.0.1, plain and over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/receiver.rs"]
mod receiver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use receiver::{Receiver, ReceiverTls};
use wardhook_handler_hl7v2::Hl7Factory;
use wardhook_sdk::testing::{self, ResultExt};
use wardhook_sdk::{Event, HandlerError};

fn event() -> Event {
    testing::event_from_file("tests/fixtures/call.json")
}

/// A plaintext loopback handler (`tls = false` is allowed for 127.0.0.1) with `extra` keys.
fn plain(port: u16, extra: &str) -> String {
    format!(
        r#"phi = "full"
baa = true
host = "127.0.0.1"
port = {port}
tls = false
sending_facility = "NORTHSIDE"
receiving_application = "EHR"
receiving_facility = "NORTHSIDE"
ack_timeout_secs = 2
{extra}
"#
    )
}

#[tokio::test]
async fn an_mdm_document_with_delimiters_and_line_breaks_is_parsed_back_identical() {
    let Some(rx) = Receiver::start("accept", None) else {
        return;
    };
    let handler = testing::build::<Hl7Factory>("ehr", &plain(rx.port, "transcript = true"));
    let event = event();

    let outcome = testing::run(&*handler, &event).await.expect_ok();

    assert_eq!(
        outcome.data,
        Some(serde_json::json!({"control_id": "dlv_h1:ehr", "ack": "AA"}))
    );
    assert_eq!(
        outcome.destination.as_deref(),
        Some(&*format!("127.0.0.1:{}", rx.port))
    );
    let got = rx.wait_for(1);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(!m.tls);
    assert_eq!(m.ids(), ["MSH", "EVN", "PID", "PV1", "TXA", "OBX", "OBX"]);
    assert_eq!(m.value("MSH", 3), "WARDHOOK");
    assert_eq!(m.value("MSH", 5), "EHR");
    assert_eq!(
        m.field("MSH", 9),
        vec![vec![
            vec!["MDM".to_owned()],
            vec!["T02".into()],
            vec!["MDM_T02".into()]
        ]]
    );
    assert_eq!(
        m.value("MSH", 10),
        "dlv_h1:ehr",
        "MSH-10 is the idempotency key"
    );
    assert_eq!(m.value("MSH", 11), "P");
    assert_eq!(m.value("MSH", 12), "2.5.1");
    assert_eq!(m.value("MSH", 18), "UNICODE UTF-8");
    assert_eq!(m.value("EVN", 1), "T02");
    assert_eq!(
        m.value("EVN", 2),
        "20261122145500+0000",
        "EVN-2 is occurred_at"
    );

    // The caller's name is one field, one repetition, and its family name is exactly what
    // the caller said.
    let pid5 = m.field("PID", 5);
    assert_eq!(pid5.len(), 1, "one repetition: {pid5:?}");
    assert_eq!(pid5[0][0], vec![event.caller.name.clone().unwrap()]);
    assert_eq!(m.segment("PID", 0).field_count(), 13);
    assert_eq!(
        m.field("PID", 13)[0][0],
        vec!["+1 (555) 010-0100".to_owned()]
    );
    assert_eq!(
        m.field("PID", 13)[1][3],
        vec!["dana@example.com".to_owned()],
        "the e-mail is PID-13's second repetition"
    );

    assert_eq!(m.value("TXA", 2), "CN");
    assert_eq!(m.field("TXA", 12)[0][0], vec!["dlv_h1".to_owned()]);
    assert_eq!(m.value("TXA", 17), "DO");
    assert_eq!(m.segment("TXA", 0).field_count(), 17);
    let summary = m.segment("OBX", 0);
    assert_eq!(summary.value(5), "Wants a cleaning & whitening | soon");
    assert_eq!(summary.field_count(), 11);
    assert_eq!(summary.value(11), "F");
    let transcript = m.segment("OBX", 1);
    assert_eq!(
        transcript.value(5),
        event.data["transcript"].as_str().unwrap(),
        "the transcript, line breaks, a fake segment and all, is one value"
    );
    assert_eq!(transcript.field_count(), 11);
}

#[tokio::test]
async fn every_delimiter_in_every_value_stays_in_its_field_of_a_custom_segment() {
    let Some(rx) = Receiver::start("accept", None) else {
        return;
    };
    let nasty = "a|b^c~d&e\\f\rPID|1\ng\u{0b}h\u{1c}\ri";
    let handler = testing::build::<Hl7Factory>(
        "ehr",
        &plain(
            rx.port,
            r#"message = "ADT^A08"
segments = ["ZWH|{{ data.x }}|{{ caller.name }}^{{ data.x }}", "PV1|1|O"]"#,
        ),
    );
    let event = testing::event_from_json(
        &serde_json::json!({
            "delivery_id": "dlv_z", "caller": {"name": nasty}, "data": {"x": nasty}
        })
        .to_string(),
    );

    testing::run(&*handler, &event).await.expect_ok();

    let m = &rx.wait_for(1)[0];
    assert_eq!(m.ids(), ["MSH", "EVN", "ZWH", "PV1"]);
    let zwh = m.segment("ZWH", 0);
    assert_eq!(zwh.field_count(), 2);
    assert_eq!(zwh.value(1), nasty);
    assert_eq!(
        zwh.field(2),
        vec![vec![vec![nasty.to_owned()], vec![nasty.to_owned()]]],
        "two components, as the template wrote, each the whole value"
    );
}

#[tokio::test]
async fn siu_and_adt_defaults_are_valid_for_python_hl7() {
    let Some(rx) = Receiver::start("accept", None) else {
        return;
    };
    let siu = testing::build::<Hl7Factory>("sched", &plain(rx.port, r#"message = "SIU^S12""#));
    let adt = testing::build::<Hl7Factory>("demo", &plain(rx.port, r#"message = "ADT^A08""#));

    testing::run(&*siu, &event()).await.expect_ok();
    testing::run(&*adt, &event()).await.expect_ok();

    let got = rx.wait_for(2);
    let (s, a) = (&got[0], &got[1]);
    assert_eq!(s.ids(), ["MSH", "SCH", "NTE", "PID", "RGS"]);
    assert_eq!(s.value("MSH", 10), "dlv_h1:sched");
    assert_eq!(
        s.field("SCH", 1),
        vec![vec![vec!["dlv_h1".to_owned()], vec!["WARDHOOK".into()]]]
    );
    assert_eq!(
        s.field("SCH", 7)[0][1],
        vec!["Cleaning^whitening".to_owned()]
    );
    assert_eq!(s.value("SCH", 25), "Pending");
    assert_eq!(s.value("NTE", 3), "Wants a cleaning & whitening | soon");
    assert_eq!(s.value("RGS", 2), "A");
    assert_eq!(a.ids(), ["MSH", "EVN", "PID", "PV1"]);
    assert_eq!(
        a.field("MSH", 9),
        vec![vec![
            vec!["ADT".to_owned()],
            vec!["A08".into()],
            vec!["ADT_A01".into()]
        ]]
    );
    assert_eq!(a.value("EVN", 1), "A08");
    assert_eq!(a.field("PID", 5)[0][0], vec!["Smith|^~\\&".to_owned()]);
}

/// What the handler must make of each answer, in original and enhanced mode.
#[tokio::test]
async fn ack_codes_decide_between_done_retry_and_permanent_in_both_modes() {
    for (mode, accept) in [("original", "AA"), ("enhanced", "CA")] {
        let Some(rx) = Receiver::start("accept,error,reject,wrong-id,garbage,close,accept", None)
        else {
            return;
        };
        let handler =
            testing::build::<Hl7Factory>("ehr", &plain(rx.port, &format!("ack_mode = \"{mode}\"")));
        let event = event();
        let mut results = Vec::new();
        for _ in 0..7 {
            results.push(testing::run(&*handler, &event).await);
        }
        let describe = |r: &Result<wardhook_sdk::Outcome, HandlerError>| match r {
            Ok(o) => format!("ok {}", o.data.as_ref().unwrap()["ack"]),
            Err(e) => e.to_string(),
        };
        let got: Vec<String> = results.iter().map(describe).collect();
        let error = if mode == "original" { "AE" } else { "CE" };
        let reject = if mode == "original" { "AR" } else { "CR" };
        let dest = format!("127.0.0.1:{}", rx.port);
        assert_eq!(
            got,
            [
                format!("ok \"{accept}\""),
                format!("retryable: ACK {error} (error) from {dest}"),
                format!("permanent: ACK {reject} (reject) from {dest}"),
                format!("retryable: the ACK from {dest} acknowledges another message (MSA-2 does not match)"),
                format!("retryable: the answer from {dest} is not an HL7 ACK"),
                format!("retryable: connection to {dest} failed before an ACK arrived"),
                format!("ok \"{accept}\""),
            ],
            "{mode} mode"
        );
        let msgs = rx.wait_for(7);
        assert_eq!(msgs.len(), 7, "{mode}: one message per attempt");
        let msh15 = if mode == "original" { "" } else { "AL" };
        assert!(msgs.iter().all(|m| m.value("MSH", 15) == msh15), "{mode}");
    }
}

#[tokio::test]
async fn silence_is_a_retryable_timeout_within_ack_timeout() {
    let Some(rx) = Receiver::start("silence", None) else {
        return;
    };
    let handler = testing::build::<Hl7Factory>(
        "ehr",
        &plain(rx.port, "").replace("ack_timeout_secs = 2", "ack_timeout_secs = 1"),
    );

    let start = Instant::now();
    let result = testing::run(&*handler, &event()).await;

    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    match result {
        Err(HandlerError::Retryable { reason, .. }) => {
            assert_eq!(reason, format!("no ACK from 127.0.0.1:{} in time", rx.port));
        }
        other => panic!("expected a retryable timeout, got {other:?}"),
    }
    assert_eq!(rx.wait_for(1).len(), 1, "the message itself arrived");
}

#[tokio::test]
async fn a_retry_carries_the_same_control_id_and_reuses_the_connection() {
    let Some(rx) = Receiver::start("error,accept", None) else {
        return;
    };
    let handler = testing::build::<Hl7Factory>("ehr", &plain(rx.port, ""));
    let event = event();

    testing::run_attempt(&*handler, &event, 1)
        .await
        .expect_retryable();
    testing::run_attempt(&*handler, &event, 2).await.expect_ok();

    let got = rx.wait_for(2);
    assert_eq!(got[0].value("MSH", 10), "dlv_h1:ehr");
    assert_eq!(got[1].value("MSH", 10), "dlv_h1:ehr");
    assert_eq!(
        (got[0].connection, got[1].connection),
        (1, 1),
        "an AE keeps the connection in step, so it is reused"
    );
}

#[tokio::test]
async fn short_control_ids_are_twenty_characters_and_stable() {
    let Some(rx) = Receiver::start("accept", None) else {
        return;
    };
    let handler = testing::build::<Hl7Factory>("ehr", &plain(rx.port, "control_id = \"short\""));

    let first = testing::run_attempt(&*handler, &event(), 1)
        .await
        .expect_ok();
    let second = testing::run_attempt(&*handler, &event(), 3)
        .await
        .expect_ok();

    let got = rx.wait_for(2);
    let id = got[0].value("MSH", 10);
    assert_eq!(id.len(), 20);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(got[1].value("MSH", 10), id);
    assert_eq!(first.data, second.data);
}

#[tokio::test]
async fn connections_are_reused_while_idle_and_replaced_when_the_receiver_closed_them() {
    let Some(rx) = Receiver::start("accept,accept-close,accept", None) else {
        return;
    };
    let handler = testing::build::<Hl7Factory>("ehr", &plain(rx.port, ""));
    let event = event();

    for _ in 0..3 {
        testing::run(&*handler, &event).await.expect_ok();
    }

    let got = rx.wait_for(3);
    let connections: Vec<u32> = got.iter().map(|m| m.connection).collect();
    assert_eq!(
        connections,
        [1, 1, 2],
        "the second message reused the first connection; the receiver closed it after \
         answering, so the third went over a new one without failing"
    );

    let Some(rx) = Receiver::start("accept", None) else {
        return;
    };
    let handler = testing::build::<Hl7Factory>("ehr", &plain(rx.port, "idle_secs = 0"));
    testing::run(&*handler, &event).await.expect_ok();
    testing::run(&*handler, &event).await.expect_ok();
    let connections: Vec<u32> = rx.wait_for(2).iter().map(|m| m.connection).collect();
    assert_eq!(
        connections,
        [1, 2],
        "idle_secs = 0: a connection per message"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_retryable_connect_failure() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let handler = testing::build::<Hl7Factory>("ehr", &plain(port, ""));

    let err = testing::run(&*handler, &event()).await.unwrap_err();

    assert_eq!(
        err,
        HandlerError::retryable(format!("cannot connect to 127.0.0.1:{port}"))
    );
}

/// A test CA, a server certificate for 127.0.0.1 and a client certificate, all PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wardhook hl7 test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "wardhook-hl7-client");
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        _dir: dir,
    }
}

fn tls_config(port: u16, ca: &Path, extra: &str) -> String {
    format!(
        r#"phi = "full"
baa = true
host = "127.0.0.1"
port = {port}
ca_file = "{}"
ack_timeout_secs = 2
{extra}
"#,
        ca.display()
    )
}

#[tokio::test]
async fn over_tls_with_a_test_ca_the_message_arrives_encrypted() {
    let pki = pki();
    let tls = ReceiverTls {
        cert: &pki.server_cert,
        key: &pki.server_key,
        client_ca: None,
    };
    let Some(rx) = Receiver::start("accept", Some(tls)) else {
        return;
    };
    let handler = testing::build::<Hl7Factory>("ehr", &tls_config(rx.port, &pki.ca, ""));

    testing::run(&*handler, &event()).await.expect_ok();
    testing::run(&*handler, &event()).await.expect_ok();

    let got = rx.wait_for(2);
    assert!(got.iter().all(|m| m.tls));
    assert_eq!(got[0].peer_cn, None);
    assert_eq!(
        (got[0].connection, got[1].connection),
        (1, 1),
        "TLS sessions are reused too"
    );
    assert_eq!(got[0].field("PID", 5)[0][0], vec!["Smith|^~\\&".to_owned()]);
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let pki = pki();
    let tls = ReceiverTls {
        cert: &pki.server_cert,
        key: &pki.server_key,
        client_ca: Some(&pki.ca),
    };
    let Some(rx) = Receiver::start("accept", Some(tls)) else {
        return;
    };
    let with_cert = tls_config(
        rx.port,
        &pki.ca,
        &format!(
            "client_cert = \"{}\"\nclient_key = \"file:{}\"",
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    let handler = testing::build::<Hl7Factory>("ehr", &with_cert);

    testing::run(&*handler, &event()).await.expect_ok();

    let got = rx.wait_for(1);
    assert_eq!(got[0].peer_cn.as_deref(), Some("wardhook-hl7-client"));

    // Without the certificate the receiver refuses the handshake: nothing arrives.
    let without = testing::build::<Hl7Factory>("ehr", &tls_config(rx.port, &pki.ca, ""));
    assert!(testing::run(&*without, &event()).await.is_err());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.messages().len(), 1);
}

#[tokio::test]
async fn an_untrusted_receiver_certificate_is_a_permanent_failure() {
    let pki = pki();
    let other = pki_other_ca();
    let tls = ReceiverTls {
        cert: &pki.server_cert,
        key: &pki.server_key,
        client_ca: None,
    };
    let Some(rx) = Receiver::start("accept", Some(tls)) else {
        return;
    };
    let handler = testing::build::<Hl7Factory>("ehr", &tls_config(rx.port, &other.1, ""));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert_eq!(
        reason,
        format!(
            "TLS with 127.0.0.1:{} failed: the certificate was not accepted",
            rx.port
        )
    );
    assert!(rx.messages().is_empty());
}

/// A CA that issued nothing the receiver uses.
fn pki_other_ca() -> (tempfile::TempDir, PathBuf) {
    let other = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("other-ca.pem");
    std::fs::copy(&other.ca, &ca).unwrap();
    (dir, ca)
}

fn problems(toml: &str) -> Vec<String> {
    match testing::try_build::<Hl7Factory>("ehr", toml) {
        Ok(_) => Vec::new(),
        Err(list) => list.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_phi_none_handler_cannot_send_the_transcript_and_the_check_names_the_field() {
    let got = problems(
        r#"host = "10.0.0.5"
tls = false
transcript = true"#,
    );
    assert!(
        got.iter().any(|p| p.starts_with("transcript: ")
            && p.contains("phi = \"none\"")
            && p.contains("`data.transcript`")),
        "{got:?}"
    );

    let got = problems(
        r#"host = "10.0.0.5"
tls = false
message = "ADT^A08"
segments = ["ZCL|{{ call_id }}", "OBX|1|TX|T||{{ data.transcript }}"]"#,
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("segments[1]: ") && got[0].contains("`data.transcript`"),
        "{got:?}"
    );

    // Only non-PHI fields: a phi = "none" handler is allowed.
    assert_eq!(
        problems(
            r#"host = "10.0.0.5"
tls = false
message = "ADT^A08"
segments = ["ZCL|{{ call_id }}|{{ data.duration_seconds }}"]"#
        ),
        Vec::<String>::new()
    );
}

#[test]
fn plaintext_is_refused_outside_private_ranges_and_warned_about_inside() {
    for host in [
        "ehr.clinic.example",
        "203.0.113.7",
        "8.8.8.8",
        "169.254.1.1",
        "2001:db8::1",
    ] {
        let got = problems(&format!(
            "phi = \"full\"\nbaa = true\nhost = \"{host}\"\ntls = false"
        ));
        assert!(
            got.iter()
                .any(|p| p.starts_with("tls: false sends patient data unencrypted")),
            "{host}: {got:?}"
        );
    }
    for host in [
        "127.0.0.1",
        "10.20.30.40",
        "172.16.0.9",
        "192.168.1.20",
        "::1",
        "fd00::7",
    ] {
        let got = problems(&format!(
            "phi = \"full\"\nbaa = true\nhost = \"{host}\"\ntls = false"
        ));
        assert_eq!(got, Vec::<String>::new(), "{host}");
    }

    // The warning `serve` logs at start-up and `check-config` prints.
    let handler = testing::build::<Hl7Factory>(
        "ehr",
        "phi = \"full\"\nbaa = true\nhost = \"192.168.1.20\"\nport = 6661\ntls = false",
    );
    let warnings = handler.startup_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("plaintext MLLP"), "{warnings:?}");
    assert!(warnings[0].contains("192.168.1.20:6661"), "{warnings:?}");
}

#[test]
fn the_first_plaintext_connection_logs_the_warning_again() {
    let Some(rx) = Receiver::start("accept", None) else {
        return;
    };
    let handler = testing::build::<Hl7Factory>("ehr", &plain(rx.port, ""));
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = {
        let log = log.clone();
        move || LogWriter(log.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            testing::run(&*handler, &event()).await.expect_ok();
            testing::run(&*handler, &event()).await.expect_ok();
        });
    });
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("plaintext MLLP").count(),
        1,
        "once per destination, not per message: {text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{}", rx.port)), "{text}");
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn config_problems_are_reported_together_with_their_keys() {
    let got = problems(
        r#"phi = "full"
baa = true
host = "ehr.clinic.example"
message = "ORU^R01"
transcript = true
sending_facility = "A|B"
processing_id = "X"
ack_timeout_secs = 0
connect_timeout_secs = 100000
max_idle_connections = 99
ca_file = "/nonexistent/ca.pem"
client_key = "file:/nonexistent/key.pem""#,
    );
    let keys: Vec<&str> = got.iter().map(|p| p.split(':').next().unwrap()).collect();
    for key in [
        "message",
        "transcript",
        "sending_facility",
        "processing_id",
        "ack_timeout_secs",
        "connect_timeout_secs",
        "max_idle_connections",
        "ca_file",
    ] {
        assert!(keys.contains(&key), "{key} missing from {got:?}");
    }
    let got = problems(
        "phi = \"full\"\nbaa = true\nhost = \"ehr.clinic.example\"\nclient_key = \"env:X\"",
    );
    assert!(
        got.iter().any(|p| p.starts_with("client_cert: ")),
        "{got:?}"
    );
}

/// Every `kind = "hl7v2"` handler in `config/adapters/hl7v2.toml` builds, given the files and
/// variables it names.
#[test]
fn the_example_config_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/adapters/hl7v2.toml");
    let text = std::fs::read_to_string(&root).unwrap();
    let file: wardhook_sdk::toml::Table = wardhook_sdk::toml::from_str(&text).unwrap();
    let pki = pki();
    std::env::set_var(
        "EHR_CLIENT_KEY_PEM",
        std::fs::read_to_string(&pki.client_key).unwrap(),
    );
    let handlers = file["handlers"].as_array().unwrap();
    let mut built = 0;
    for h in handlers {
        let mut table = h.as_table().unwrap().clone();
        if table
            .remove("kind")
            .and_then(|k| k.as_str().map(str::to_owned))
            .as_deref()
            != Some("hl7v2")
        {
            continue;
        }
        let name = table.remove("name").unwrap().as_str().unwrap().to_owned();
        // The example's files live on the clinic's host; the test's stand in for them.
        if table.contains_key("ca_file") {
            table.insert("ca_file".into(), pki.ca.display().to_string().into());
        }
        if table.contains_key("client_cert") {
            table.insert(
                "client_cert".into(),
                pki.client_cert.display().to_string().into(),
            );
            table.insert("client_key".into(), "env:EHR_CLIENT_KEY_PEM".into());
        }
        if let Err(p) =
            testing::try_build::<Hl7Factory>(&name, &wardhook_sdk::toml::to_string(&table).unwrap())
        {
            panic!("config/adapters/hl7v2.toml handler {name:?}: {p:?}");
        }
        built += 1;
    }
    assert!(built >= 3, "the example shows the three message types");
}
