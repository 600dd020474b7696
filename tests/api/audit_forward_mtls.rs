//! Audit forwarding to a collector that requires client certificates (mutual TLS): Debian's
//! rsyslog on loopback with imtcp `x509/name`, the real `wardhook serve` binary.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use wardhook::certs::{DevCa, IssuedCert};

use tempfile::TempDir;

use super::audit_forward::{
    assert_no_canary, backlog, deliver, forwarding_fixture, metrics, mirrored_head, new_collector,
    wait_for, Server,
};
use super::audit_forward_rsyslog::{seq_of, Rsyslog};
use super::helpers::Fixture;

/// The name the collector permits; wardhook's client certificate carries it as common name.
const PEER: &str = "clinic-gw-audit";

/// Point the fixture's `[audit_forward]` section (the config file's last) at a client
/// certificate and key written next to it.
fn use_client_certificate(fixture: &Fixture, client: &IssuedCert) {
    let dir = fixture.dir.path();
    std::fs::write(dir.join("syslog-client.crt"), &client.cert_pem).unwrap();
    std::fs::write(dir.join("syslog-client.key"), &client.key_pem).unwrap();
    std::fs::set_permissions(
        dir.join("syslog-client.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut config = std::fs::read_to_string(&fixture.config_path).unwrap();
    config.push_str("client_cert = \"syslog-client.crt\"\nclient_key = \"syslog-client.key\"\n");
    std::fs::write(&fixture.config_path, config).unwrap();
}

/// A started collector that takes only clients with a certificate naming [`PEER`], its CA, and
/// a fixture forwarding to it under cursor `name` (without a client certificate yet); `None`
/// where rsyslog is not installed.
fn collector_requiring_peer(name: &str) -> Option<(TempDir, DevCa, Rsyslog, Fixture)> {
    let (dir, ca, mut rsyslog) = new_collector()?;
    rsyslog.require_client_certificate(PEER);
    rsyslog.start();
    let fixture = forwarding_fixture(name, rsyslog.port, &ca.cert_pem(), "rfc5424");
    Some((dir, ca, rsyslog, fixture))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_requiring_client_certificates_receives_every_record_from_a_certified_wardhook()
{
    let Some((_collector_dir, syslog_ca, mut rsyslog, fixture)) =
        collector_requiring_peer("rsyslog-mtls")
    else {
        return;
    };
    use_client_certificate(&fixture, &syslog_ca.issue_client(PEER).unwrap());
    let server = Server::start(&fixture);
    for n in 0..4 {
        deliver(&fixture, &server, n).await;
    }
    let head = mirrored_head(&fixture);
    wait_for(
        "every record at the mutual-TLS collector",
        Duration::from_secs(30),
        || rsyslog.messages().iter().map(|m| seq_of(m)).max() >= Some(head),
    )
    .await;
    let log = server.log().join("\n");
    server.stop();
    rsyslog.stop();
    let messages = rsyslog.messages();
    let seqs: Vec<u64> = messages.iter().map(|m| seq_of(m)).collect();
    let expected: Vec<u64> = (1..=*seqs.last().unwrap()).collect();
    assert_eq!(seqs, expected, "every record once, in order");
    assert!(seqs.last() >= Some(&head));
    assert!(
        !log.contains("audit forwarding failed"),
        "no batch may fail against a collector that accepts the certificate: {log}"
    );
    assert_no_canary("the collector's output", &messages.join("\n"));
    assert_no_canary("wardhook's log", &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_requiring_client_certificates_gets_nothing_from_a_wardhook_without_one() {
    let Some((_collector_dir, _syslog_ca, mut rsyslog, fixture)) =
        collector_requiring_peer("rsyslog-no-client-cert")
    else {
        return;
    };
    let server = Server::start(&fixture);
    for n in 0..2 {
        deliver(&fixture, &server, n).await;
    }
    // Two failed attempts: the first is not a fluke, and the records were offered again.
    server.wait_logged("audit forwarding failed", 2).await;
    let log = server.log().join("\n");
    let metrics = metrics(&fixture, &server).await;
    assert!(
        backlog(&metrics, "rsyslog-no-client-cert") >= 2.0,
        "{metrics}"
    );
    server.stop();
    rsyslog.stop();
    // Refused for the reason under test, not for some other fault.
    let refusals = rsyslog.stderr();
    assert!(
        refusals.contains("peer did not provide a certificate"),
        "rsyslog's own reason: {refusals}"
    );
    assert!(
        rsyslog.messages().is_empty(),
        "a collector that requires a client certificate takes nothing without one: {:?}",
        rsyslog.messages()
    );
    assert_no_canary("wardhook's log", &log);
}
