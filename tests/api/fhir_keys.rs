//! The `fhir` handler's operator side through the real binary: `keys smart` writes a key the
//! EHR-side verifier (PyJWT in `fhir_server.py`) accepts via the JWKS it printed, and
//! `check-config` names the PHI field a `phi = "none"` fhir handler may not send.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

#[path = "../../handlers/fhir/tests/support/server.rs"]
pub(crate) mod fhir_server;

use crate::helpers::*;

#[tokio::test]
async fn keys_smart_writes_a_0600_key_whose_printed_jwks_the_ehr_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("smart.pem");
    let out = Command::new(wardhook_bin())
        .args(["keys", "smart", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let jwks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES384");
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private part printed"
    );

    // Never overwritten.
    let again = Command::new(wardhook_bin())
        .args(["keys", "smart", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());
    // The JWKS can be printed again from the key.
    let reprint = Command::new(wardhook_bin())
        .args(["keys", "smart-jwks", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    let reprinted: serde_json::Value = serde_json::from_slice(&reprint.stdout).unwrap();
    assert_eq!(reprinted, jwks);

    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, &out.stdout).unwrap();
    let Some(ehr) =
        fhir_server::FhirServer::start(&["--auth", "smart", "--jwks", jwks_path.to_str().unwrap()])
    else {
        return;
    };
    let settings: toml::Table = toml::from_str(&format!(
        "base_url = \"{}\"\n[auth]\ntype = \"smart\"\nclient_id = \"wardhook-test\"\nprivate_key = \"file:{}\"\n",
        ehr.base(),
        key.display()
    ))
    .unwrap();
    let ctx = wardhook_sdk::BuildContext::new("ehr", wardhook_sdk::PhiLevel::Full, dir.path());
    let handler =
        wardhook_sdk::build_handler::<wardhook_handler_fhir::FhirFactory>(settings, &ctx).unwrap();
    let event: wardhook_sdk::Event = serde_json::from_value(serde_json::json!({
        "delivery_id": "dlv_keys", "source": "demo", "event_type": "call.ended",
        "call_id": null, "occurred_at": null, "received_at": "2026-11-22T15:00:00Z",
        "caller": {"phone": "+15551234567"}, "data": {"ai_summary": "callback"}
    }))
    .unwrap();
    let mut cx = wardhook_sdk::Context::new("dlv_keys", "ehr", 1);
    handler.handle(&event, &mut cx).await.unwrap();
    assert_eq!(ehr.assertions().await.len(), 1);
    assert_eq!(ehr.stored("Communication").await.len(), 1);
}

#[test]
fn check_config_names_the_phi_field_a_phi_none_fhir_handler_would_send() {
    let fixture = write_fixture(&AppOptions::default());
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let handler = r#"
[[handlers]]
name = "ehr"
kind = "fhir"
base_url = "https://ehr.clinic.example/fhir/R4"
auth = { type = "none" }
[handlers.communication]
transcript = true
"#;
    std::fs::write(&fixture.config_path, format!("{text}\n{handler}")).unwrap();
    let out = Command::new(wardhook_bin())
        .args(["check-config", "--config"])
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(".communication.transcript: handler \"ehr\" has phi = \"none\" but references the PHI field `data.transcript`"),
        "{stdout}"
    );
}
