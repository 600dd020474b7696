//! The FHIR adapter against a real FHIR validator: `fhir_server.py` on loopback validates every
//! resource with the `fhir.resources` package, implements conditional create and transaction
//! Bundles, and checks SMART client assertions with PyJWT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use server::FhirServer;
use wardhook_handler_fhir::smart;
use wardhook_handler_fhir::FhirFactory;
use wardhook_sdk::testing::{self, ResultExt};
use wardhook_sdk::Event;

const SYSTEM: &str = "urn:wardhook:test-clinic";

fn event() -> Event {
    testing::event_from_file("tests/fixtures/call_ended.json")
}

fn event_with(delivery_id: &str, phone: Option<&str>) -> Event {
    let mut e = event();
    e.delivery_id = delivery_id.into();
    e.caller.phone = phone.map(str::to_owned);
    e
}

/// A `phi = "full"` handler on `base` with no auth and `extra` keys.
fn config(base: &str, extra: &str) -> String {
    format!(
        "phi = \"full\"\nbaa = true\nbase_url = \"{base}\"\nidentifier_system = \"{SYSTEM}\"\n{extra}\n[auth]\ntype = \"none\"\n"
    )
}

/// A FHIR server and a `phi = "full"` handler on it with `extra` keys; `None` as for
/// [`FhirServer::start`].
fn server_and_handler(
    extra: &str,
) -> Option<(FhirServer, std::sync::Arc<dyn wardhook_sdk::Handler>)> {
    let fhir = FhirServer::start(&[])?;
    let handler = testing::build::<FhirFactory>("ehr", &config(&fhir.base(), extra));
    Some((fhir, handler))
}

fn identifier_of(resource: &Value) -> String {
    let ids = resource["identifier"].as_array().unwrap();
    let ours = ids.iter().find(|i| i["system"] == SYSTEM).unwrap();
    ours["value"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_call_becomes_a_communication_the_validator_accepts() {
    let Some(fhir) = FhirServer::start(&[]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>("ehr", &config(&fhir.base(), ""));

    let outcome = testing::run(&*handler, &event()).await.expect_ok();

    let stored = fhir.stored("Communication").await;
    assert_eq!(stored.len(), 1);
    let c = &stored[0];
    assert_eq!(c["status"], "completed");
    assert_eq!(c["medium"][0]["coding"][0]["code"], "PHONE");
    assert_eq!(c["sent"], "2026-11-22T14:55:00+00:00");
    assert_eq!(c["received"], "2026-11-22T15:00:00+00:00");
    assert_eq!(
        c["payload"][0]["contentString"],
        "Wants a callback about whitening; mentions tooth pain"
    );
    assert_eq!(
        c["payload"].as_array().unwrap().len(),
        1,
        "no transcript unless asked"
    );
    assert_eq!(identifier_of(c), "dlv_fhir1:ehr:communication");
    let data = outcome.data.unwrap();
    assert_eq!(data["communication"]["id"], c["id"]);
    assert_eq!(
        data["communication"]["reference"],
        format!("Communication/{}", c["id"].as_str().unwrap())
    );
    assert_eq!(data["communication"]["created"], true);
    assert_eq!(outcome.status, Some(201));
    let log = fhir.log().await;
    assert_eq!(
        log[0]["if_none_exist"],
        "identifier=urn%3Awardhook%3Atest-clinic|dlv_fhir1%3Aehr%3Acommunication"
    );
}

#[tokio::test]
async fn a_retried_transaction_whose_answer_was_lost_creates_nothing_twice() {
    let Some(fhir) = FhirServer::start(&[]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>(
        "ehr",
        &config(&fhir.base(), r#"resources = ["Communication", "Task"]"#),
    );
    // The server commits the Bundle, then answers 503 as if the answer were lost.
    fhir.fail(
        json!({"match": "POST /fhir", "status": 503, "code": "transient",
                     "retry_after": "7", "after_commit": true}),
    )
    .await;

    let first = testing::run_attempt(&*handler, &event(), 1).await;
    assert_eq!(first.expect_retryable(), Some(Duration::from_secs(7)));
    let second = testing::run_attempt(&*handler, &event(), 2)
        .await
        .expect_ok();

    assert_eq!(fhir.stored("Communication").await.len(), 1);
    let tasks = fhir.stored("Task").await;
    assert_eq!(tasks.len(), 1);
    let data = second.data.unwrap();
    assert_eq!(
        data["task"]["created"], false,
        "the retry found the first attempt's Task"
    );
    assert_eq!(data["task"]["id"], tasks[0]["id"]);
    assert_eq!(
        tasks[0]["focus"]["reference"], data["communication"]["reference"],
        "the Task points at the call's Communication"
    );
}

#[tokio::test]
async fn a_retried_attempt_without_transaction_creates_nothing_twice() {
    let Some((fhir, handler)) =
        server_and_handler("resources = [\"Communication\", \"Task\"]\ntransaction = false")
    else {
        return;
    };
    fhir.fail(json!({"match": "POST /fhir/Task", "status": 502, "after_commit": true}))
        .await;

    testing::run_attempt(&*handler, &event(), 1)
        .await
        .expect_retryable();
    let second = testing::run_attempt(&*handler, &event(), 2)
        .await
        .expect_ok();

    assert_eq!(fhir.stored("Communication").await.len(), 1);
    assert_eq!(fhir.stored("Task").await.len(), 1);
    let data = second.data.unwrap();
    assert_eq!(data["communication"]["created"], false);
    assert_eq!(data["task"]["created"], false);
    let conditional = fhir
        .log()
        .await
        .iter()
        .filter(|r| r["method"] == "POST")
        .all(|r| {
            r["if_none_exist"]
                .as_str()
                .is_some_and(|c| c.starts_with("identifier="))
        });
    assert!(conditional, "every create is conditional");
}

#[tokio::test]
async fn a_transaction_bundle_is_all_or_nothing() {
    let Some(fhir) = FhirServer::start(&[]) else {
        return;
    };
    // A Task the validator rejects (authoredOn is not a dateTime) in the same Bundle as a
    // valid Communication.
    let handler = testing::build::<FhirFactory>(
        "ehr",
        &config(
            &fhir.base(),
            r#"resources = ["Communication", "Task"]
[task]
template = '{"resourceType": "Task", "status": "requested", "intent": "order", "authoredOn": "{{ caller.name }}"}'
"#,
        ),
    );

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert!(
        reason.contains("HTTP 400") && reason.ends_with("OperationOutcome invalid"),
        "{reason}"
    );
    assert!(
        !reason.contains("John"),
        "diagnostics quote the value; the reason must not: {reason}"
    );
    assert!(
        fhir.stored("Communication").await.is_empty(),
        "nothing of the Bundle was kept"
    );
    assert!(fhir.stored("Task").await.is_empty());
}

#[tokio::test]
async fn errors_are_mapped_by_status_and_issue_code_without_diagnostics() {
    let Some(fhir) = FhirServer::start(&[]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>("ehr", &config(&fhir.base(), ""));
    let phi = "Patient John Doe +15551234567 already has an open callback";

    fhir.fail(json!({"match": "POST /fhir/Communication", "status": 422,
                     "code": "business-rule", "diagnostics": phi}))
        .await;
    let reason = testing::run(&*handler, &event()).await.expect_permanent();
    assert!(
        reason.ends_with("HTTP 422 from 127.0.0.1: OperationOutcome business-rule"),
        "{reason}"
    );
    assert!(
        !reason.contains("John") && !reason.contains("5551234567"),
        "{reason}"
    );

    fhir.fail(json!({"match": "POST /fhir/Communication", "status": 400, "code": "throttled"}))
        .await;
    testing::run(&*handler, &event()).await.expect_retryable();

    fhir.fail(json!({"match": "POST /fhir/Communication", "status": 429,
                     "retry_after": "99999999999999"}))
        .await;
    let after = testing::run(&*handler, &event()).await.expect_retryable();
    assert_eq!(
        after,
        Some(wardhook_handler_fhir::error::MAX_RETRY_AFTER),
        "bounded"
    );

    fhir.fail(
        json!({"match": "POST /fhir/Communication", "status": 500, "code": "processing",
                     "diagnostics": phi}),
    )
    .await;
    testing::run(&*handler, &event()).await.expect_permanent();

    assert!(fhir.stored("Communication").await.is_empty());
    testing::run(&*handler, &event()).await.expect_ok();
}

/// A generated key written where a config can reference it, and its JWKS for the server.
fn smart_key(dir: &tempfile::TempDir) -> (String, String, String) {
    let key = smart::generate_key().unwrap();
    let key_path = dir.path().join("smart.pem");
    std::fs::write(&key_path, key.private_pem.as_bytes()).unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, key.jwks.to_string()).unwrap();
    (
        key_path.display().to_string(),
        jwks_path.display().to_string(),
        key.kid,
    )
}

fn smart_config(base: &str, key_path: &str) -> String {
    format!(
        r#"phi = "full"
baa = true
base_url = "{base}"
[auth]
type = "smart"
client_id = "wardhook-test"
private_key = "file:{key_path}"
"#
    )
}

#[tokio::test]
async fn smart_backend_services_assertions_pass_pyjwt_and_the_token_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, jwks_path, kid) = smart_key(&dir);
    let Some(fhir) = FhirServer::start(&["--auth", "smart", "--jwks", &jwks_path]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>("ehr", &smart_config(&fhir.base(), &key_path));

    testing::run(&*handler, &event_with("dlv_a", Some("+15550000001")))
        .await
        .expect_ok();
    testing::run(&*handler, &event_with("dlv_b", Some("+15550000002")))
        .await
        .expect_ok();

    assert_eq!(fhir.stored("Communication").await.len(), 2);
    let assertions = fhir.assertions().await;
    assert_eq!(assertions.len(), 1, "one token for both deliveries");
    let a = &assertions[0];
    assert_eq!(a["header"]["alg"], "ES384");
    assert_eq!(a["header"]["kid"], kid.as_str());
    let claims = &a["claims"];
    assert_eq!(claims["iss"], "wardhook-test");
    assert_eq!(claims["aud"], format!("{}/auth/token", fhir.origin));
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 300);
    let log = fhir.log().await;
    assert!(log
        .iter()
        .filter(|r| r["path"] != "/fhir/.well-known/smart-configuration")
        .all(|r| r["auth"] == "Bearer"));
}

/// An RSA key made by Python's `cryptography` (PKCS#8 PEM), and its public JWK and RFC 7638
/// thumbprint computed there from the key's numbers: an oracle independent of the adapter.
fn python_rsa_key() -> Option<Value> {
    const SCRIPT: &str = r#"
import base64, hashlib, json
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

def b64(n):
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption()).decode()
numbers = key.public_key().public_numbers()
jwk = {"e": b64(numbers.e), "kty": "RSA", "n": b64(numbers.n)}
canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
print(json.dumps({"pem": pem, "jwk": jwk, "kid": kid}))
"#;
    let python = server::python()?;
    let out = std::process::Command::new(python)
        .args(["-c", SCRIPT])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test]
async fn an_rsa_key_signs_rs384_assertions_that_pyjwt_verifies() {
    let Some(rsa) = python_rsa_key() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("smart-rsa.pem");
    std::fs::write(&key_path, rsa["pem"].as_str().unwrap()).unwrap();
    let kid = rsa["kid"].as_str().unwrap();

    // What the adapter would print for registration matches what Python derives from the key.
    let key = smart::SigningKey::from_pem(rsa["pem"].as_str().unwrap().as_bytes(), None).unwrap();
    assert_eq!(key.alg(), "RS384");
    assert_eq!(key.kid(), kid, "the default kid is the RFC 7638 thumbprint");
    let ours = &key.jwks()["keys"][0];
    for member in ["kty", "n", "e"] {
        assert_eq!(ours[member], rsa["jwk"][member], "{member}");
    }
    assert_eq!(ours["alg"], "RS384");
    assert!(
        ours.get("d").is_none() && ours.get("p").is_none(),
        "no private member"
    );

    // The EHR registers the JWKS built by Python, not by the adapter.
    let mut jwk = rsa["jwk"].clone();
    jwk["kid"] = kid.into();
    jwk["alg"] = "RS384".into();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({"keys": [jwk]}).to_string()).unwrap();
    let Some(fhir) = FhirServer::start(&[
        "--auth",
        "smart",
        "--jwks",
        &jwks_path.display().to_string(),
    ]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>(
        "ehr",
        &smart_config(&fhir.base(), &key_path.display().to_string()),
    );

    testing::run(&*handler, &event()).await.expect_ok();

    assert_eq!(fhir.stored("Communication").await.len(), 1);
    let assertions = fhir.assertions().await;
    assert_eq!(assertions.len(), 1, "PyJWT verified one assertion");
    let a = &assertions[0];
    assert_eq!(a["header"]["alg"], "RS384");
    assert_eq!(a["header"]["kid"], kid);
    assert_eq!(a["claims"]["iss"], "wardhook-test");
    assert_eq!(a["claims"]["sub"], "wardhook-test");
    assert_eq!(a["claims"]["aud"], format!("{}/auth/token", fhir.origin));
}

#[tokio::test]
async fn a_discovered_token_endpoint_off_the_allowlist_gets_no_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, jwks_path, _) = smart_key(&dir);
    let Some(fhir) = FhirServer::start(&[
        "--auth",
        "smart",
        "--jwks",
        &jwks_path,
        "--token-host",
        "127.0.0.2",
    ]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>("ehr", &smart_config(&fhir.base(), &key_path));
    let reason = testing::run(&*handler, &event_with("dlv_off", Some("+15550000001")))
        .await
        .expect_permanent();
    assert!(reason.contains("allow_hosts"), "{reason}");
    assert!(fhir.assertions().await.is_empty(), "no assertion left");
    assert!(fhir.stored("Communication").await.is_empty());
}

#[tokio::test]
async fn an_expired_token_is_replaced_once_after_a_401() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, jwks_path, _) = smart_key(&dir);
    // The server stops honouring tokens after half a second although it says 300 s.
    let Some(fhir) = FhirServer::start(&[
        "--auth",
        "smart",
        "--jwks",
        &jwks_path,
        "--token-ttl",
        "0.5",
    ]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>("ehr", &smart_config(&fhir.base(), &key_path));

    testing::run(&*handler, &event_with("dlv_a", Some("+15550000001")))
        .await
        .expect_ok();
    tokio::time::sleep(Duration::from_millis(800)).await;
    testing::run(&*handler, &event_with("dlv_b", Some("+15550000002")))
        .await
        .expect_ok();

    let assertions = fhir.assertions().await;
    assert_eq!(assertions.len(), 2, "one refresh");
    assert_ne!(
        assertions[0]["claims"]["jti"],
        assertions[1]["claims"]["jti"]
    );
    assert_eq!(fhir.stored("Communication").await.len(), 2);
}

#[tokio::test]
async fn a_fresh_token_refused_again_is_permanent_after_one_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, jwks_path, _) = smart_key(&dir);
    // Tokens are issued but never honoured.
    let Some(fhir) =
        FhirServer::start(&["--auth", "smart", "--jwks", &jwks_path, "--token-ttl", "0"])
    else {
        return;
    };
    let handler = testing::build::<FhirFactory>("ehr", &smart_config(&fhir.base(), &key_path));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert!(reason.contains("freshly issued token"), "{reason}");
    assert_eq!(fhir.assertions().await.len(), 2, "exactly one refresh");
    let posts = fhir
        .log()
        .await
        .iter()
        .filter(|r| r["method"] == "POST")
        .count();
    assert_eq!(posts, 2, "the request was repeated once");
}

#[tokio::test]
async fn a_key_the_ehr_does_not_know_is_a_permanent_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (_, jwks_path, _) = smart_key(&dir);
    let other = tempfile::tempdir().unwrap();
    let (other_key, _, _) = smart_key(&other);
    let Some(fhir) = FhirServer::start(&["--auth", "smart", "--jwks", &jwks_path]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>("ehr", &smart_config(&fhir.base(), &other_key));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert!(
        reason.contains("refused the client (HTTP 401: invalid_client)"),
        "{reason}"
    );
    assert!(fhir.stored("Communication").await.is_empty());
}

#[tokio::test]
async fn bearer_and_basic_auth_are_sent_as_configured() {
    std::env::set_var("FHIR_TEST_BEARER", "s3cret-token");
    std::env::set_var("FHIR_TEST_PASSWORD", "pa55");
    let Some(bearer) = FhirServer::start(&["--auth", "bearer:s3cret-token"]) else {
        return;
    };
    let cfg = format!(
        "phi = \"full\"\nbaa = true\nbase_url = \"{}\"\n[auth]\ntype = \"bearer\"\ntoken = \"env:FHIR_TEST_BEARER\"\n",
        bearer.base()
    );
    testing::run(&*testing::build::<FhirFactory>("ehr", &cfg), &event())
        .await
        .expect_ok();

    let Some(basic) = FhirServer::start(&["--auth", "basic:wardhook:pa55"]) else {
        return;
    };
    let cfg = format!(
        "phi = \"full\"\nbaa = true\nbase_url = \"{}\"\n[auth]\ntype = \"basic\"\nusername = \"wardhook\"\npassword = \"env:FHIR_TEST_PASSWORD\"\n",
        basic.base()
    );
    testing::run(&*testing::build::<FhirFactory>("ehr", &cfg), &event())
        .await
        .expect_ok();
    // And a wrong password is refused for good.
    std::env::set_var("FHIR_TEST_PASSWORD_BAD", "nope");
    let cfg = cfg.replace("FHIR_TEST_PASSWORD", "FHIR_TEST_PASSWORD_BAD");
    let reason = testing::run(&*testing::build::<FhirFactory>("ehr", &cfg), &event())
        .await
        .expect_permanent();
    assert!(
        reason.contains("HTTP 401") && reason.contains("login"),
        "{reason}"
    );
}

#[tokio::test]
async fn patient_matching_references_one_match_and_never_guesses() {
    let Some(fhir) = FhirServer::start(&[]) else {
        return;
    };
    let one = fhir
        .add_patient(
            json!({"resourceType": "Patient", "name": [{"family": "Doe", "given": ["John"]}],
                            "telecom": [{"system": "phone", "value": "+15551234567"}]}),
        )
        .await;
    for given in ["Ann", "Bea"] {
        fhir.add_patient(
            json!({"resourceType": "Patient", "name": [{"family": "Doe", "given": [given]}],
                                "telecom": [{"system": "phone", "value": "+15559999999"}]}),
        )
        .await;
    }
    let handler = testing::build::<FhirFactory>(
        "ehr",
        &config(&fhir.base(), "resources = [\"Communication\", \"Task\"]\n[patient]\nwhen_none = \"create\"\nwhen_several = \"unmatched\""),
    );

    // Exactly one match: referenced.
    let out = testing::run(&*handler, &event())
        .await
        .expect_ok()
        .data
        .unwrap();
    let reference = format!("Patient/{}", one["id"].as_str().unwrap());
    assert_eq!(
        out["patient"],
        json!({"match": "one", "reference": reference})
    );
    let comms = fhir.stored("Communication").await;
    assert_eq!(comms[0]["subject"]["reference"], reference.as_str());
    assert_eq!(
        fhir.stored("Task").await[0]["for"]["reference"],
        reference.as_str()
    );

    // Two matches: no subject, an unmatched tag, no new Patient.
    let out = testing::run(&*handler, &event_with("dlv_two", Some("+15559999999")))
        .await
        .expect_ok()
        .data
        .unwrap();
    assert_eq!(out["patient"]["match"], "several");
    let c = fhir
        .stored("Communication")
        .await
        .into_iter()
        .find(|c| identifier_of(c).starts_with("dlv_two:"))
        .unwrap();
    assert!(c.get("subject").is_none());
    assert_eq!(c["meta"]["tag"][0]["code"], "unmatched");
    assert_eq!(fhir.stored("Patient").await.len(), 3);

    // No match: a Patient is created in the same transaction and referenced.
    let out = testing::run(&*handler, &event_with("dlv_new", Some("+15550001111")))
        .await
        .expect_ok()
        .data
        .unwrap();
    assert_eq!(out["patient"]["match"], "created");
    let patients = fhir.stored("Patient").await;
    assert_eq!(patients.len(), 4);
    let created = patients
        .iter()
        .find(|p| p["telecom"][0]["value"] == "+15550001111")
        .unwrap();
    let created_ref = format!("Patient/{}", created["id"].as_str().unwrap());
    assert_eq!(out["patient"]["reference"], created_ref.as_str());
    let c = fhir
        .stored("Communication")
        .await
        .into_iter()
        .find(|c| identifier_of(c).starts_with("dlv_new:"))
        .unwrap();
    assert_eq!(c["subject"]["reference"], created_ref.as_str());

    // Its retry finds that Patient by phone instead of creating another.
    testing::run_attempt(&*handler, &event_with("dlv_new", Some("+15550001111")), 2)
        .await
        .expect_ok();
    assert_eq!(fhir.stored("Patient").await.len(), 4);
    assert_eq!(fhir.stored("Communication").await.len(), 3);
}

#[tokio::test]
async fn with_when_none_skip_nothing_is_written_for_an_unknown_caller() {
    let Some(fhir) = FhirServer::start(&[]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>(
        "ehr",
        &config(&fhir.base(), "[patient]\nwhen_none = \"skip\""),
    );
    let out = testing::run(&*handler, &event())
        .await
        .expect_ok()
        .data
        .unwrap();
    assert_eq!(out["skipped"], true);
    assert_eq!(out["patient"]["match"], "none");
    assert!(fhir.stored("Communication").await.is_empty());
}

#[tokio::test]
async fn task_appointment_and_document_reference_defaults_pass_the_validator() {
    let Some(fhir) = FhirServer::start(&[]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>(
        "ehr",
        &config(
            &fhir.base(),
            r#"resources = ["Communication", "Task", "Appointment", "DocumentReference"]
[communication]
transcript = true
[task]
owner = "Organization/front-desk"
due_within_hours = 24
"#,
        ),
    );

    let data = testing::run(&*handler, &event())
        .await
        .expect_ok()
        .data
        .unwrap();

    let b64 = base64::engine::general_purpose::STANDARD;
    let transcript = event().data["transcript"].as_str().unwrap().to_owned();
    let c = &fhir.stored("Communication").await[0];
    let attached = c["payload"][1]["contentAttachment"]["data"]
        .as_str()
        .unwrap();
    assert_eq!(b64.decode(attached).unwrap(), transcript.as_bytes());
    let t = &fhir.stored("Task").await[0];
    assert_eq!(
        (t["status"].as_str(), t["intent"].as_str()),
        (Some("requested"), Some("order"))
    );
    assert_eq!(t["reasonCode"]["coding"][0]["code"], "callback");
    assert_eq!(t["owner"]["reference"], "Organization/front-desk");
    assert_eq!(
        t["restriction"]["period"]["end"],
        "2026-11-23T14:55:00+00:00"
    );
    assert_eq!(t["focus"]["reference"], data["communication"]["reference"]);
    let a = &fhir.stored("Appointment").await[0];
    assert_eq!(a["status"], "proposed");
    assert_eq!(a["participant"][0]["status"], "needs-action");
    let d = &fhir.stored("DocumentReference").await[0];
    let doc = d["content"][0]["attachment"]["data"].as_str().unwrap();
    assert_eq!(b64.decode(doc).unwrap(), transcript.as_bytes());
    for key in ["communication", "task", "appointment", "document_reference"] {
        assert_eq!(data[key]["created"], true, "{key}");
    }
}

/// With `document_reference.artifacts`, the recording and transcript the capture step stored
/// are `content` entries after the event's transcript: base64 `data` with `contentType`,
/// `size` and `hash`, the base64 SHA-1 FHIR R4 defines for `Attachment.hash`; the validator
/// accepts them. One over `max_artifact_bytes` fails permanently, naming the key, and nothing
/// is written.
#[tokio::test]
async fn captured_artifacts_are_attached_to_the_document_reference_with_their_sha1_hash() {
    let Some((fhir, handler)) = server_and_handler(
        "resources = [\"DocumentReference\"]\n[document_reference]\nartifacts = true\nmax_artifact_bytes = 4096\n",
    ) else {
        return;
    };
    let wav = testing::recording(3000);
    let transcript = b"Agent: Northside Dental. Caller: my tooth hurts.";

    testing::run_with_artifacts(
        &*handler,
        &event(),
        &[
            ("art_rec", "audio/x-wav", &wav),
            ("art_txt", "text/plain", transcript),
        ],
    )
    .await
    .expect_ok();

    let b64 = base64::engine::general_purpose::STANDARD;
    let sha1 = |b: &[u8]| {
        b64.encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b).as_ref())
    };
    let stored = fhir.stored("DocumentReference").await;
    assert_eq!(stored.len(), 1);
    let content = stored[0]["content"].as_array().unwrap();
    assert_eq!(
        content.len(),
        3,
        "the event's transcript, then both artifacts"
    );
    for (entry, (bytes, content_type, title)) in content[1..].iter().zip([
        (&wav[..], "audio/x-wav", "Call recording"),
        (&transcript[..], "text/plain", "Call transcript"),
    ]) {
        let a = &entry["attachment"];
        assert_eq!(a["contentType"], content_type);
        assert_eq!(b64.decode(a["data"].as_str().unwrap()).unwrap(), bytes);
        assert_eq!(a["size"], bytes.len());
        assert_eq!(a["hash"], sha1(bytes));
        assert_eq!(a["title"], title);
    }

    let big = vec![7u8; 5000];
    let reason = testing::run_with_artifacts(
        &*handler,
        &event_with("dlv_big", None),
        &[("art_big", "audio/x-wav", &big)],
    )
    .await
    .expect_permanent();
    assert!(
        reason.contains("art_big") && reason.contains("document_reference.max_artifact_bytes"),
        "{reason}"
    );
    assert_eq!(fhir.stored("DocumentReference").await.len(), 1);
}

/// The artifacts are read only once every resource has built: a resource that fails for the
/// event (here an `AppointmentResponse` pointing elsewhere) reads (and so audits) nothing and
/// writes nothing; the same handler on an event that builds reads the recording once.
#[tokio::test]
async fn a_resource_that_fails_to_build_reads_no_artifact() {
    let Some((fhir, handler)) = server_and_handler(
        r#"resources = ["DocumentReference", "AppointmentResponse"]
[document_reference]
artifacts = true
max_artifact_bytes = 4096
[appointment_response]
template = '{"resourceType": "AppointmentResponse", "appointment": {"reference": "Appointment/{{ data.appointment_id }}"}}'
"#,
    ) else {
        return;
    };
    let wav = testing::recording(100);
    let artifacts: &[(&str, &str, &[u8])] = &[("art_rec", "audio/x-wav", &wav)];
    let answering = |delivery: &str, id: &str| {
        let mut e = event_with(delivery, Some("+15551234567"));
        e.data["appointment_id"] = id.into();
        e
    };

    let (result, reads) = testing::run_with_artifacts_and_reads(
        &*handler,
        &answering("dlv_bad", "1/../../Patient/7"),
        artifacts,
    )
    .await;

    let reason = result.expect_permanent();
    assert!(
        reason.starts_with("appointment_response.template: appointment.reference must be"),
        "{reason}"
    );
    assert!(
        reads.is_empty(),
        "nothing read for an unwritable event: {reads:?}"
    );
    assert!(fhir.stored("DocumentReference").await.is_empty());

    let (result, reads) = testing::run_with_artifacts_and_reads(
        &*handler,
        &answering("dlv_good", "appt-42"),
        artifacts,
    )
    .await;
    result.expect_ok();
    assert_eq!(reads, ["art_rec"]);
    let stored = fhir.stored("DocumentReference").await;
    assert_eq!(stored[0]["content"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn an_appointment_response_answers_the_proposed_appointment_once_in_both_write_paths() {
    for transaction in [true, false] {
        let Some(fhir) = FhirServer::start(&[]) else {
            return;
        };
        let patient = fhir
            .add_patient(
                json!({"resourceType": "Patient", "name": [{"family": "Doe", "given": ["John"]}],
                       "telecom": [{"system": "phone", "value": "+15551234567"}]}),
            )
            .await;
        let patient_ref = format!("Patient/{}", patient["id"].as_str().unwrap());
        let handler = testing::build::<FhirFactory>(
            "ehr",
            &config(
                &fhir.base(),
                &format!(
                    "resources = [\"Appointment\", \"AppointmentResponse\"]\ntransaction = {transaction}\n[patient]"
                ),
            ),
        );
        // The server commits, then the answer is lost; the retry must find both resources.
        let lost = if transaction {
            "POST /fhir"
        } else {
            "POST /fhir/AppointmentResponse"
        };
        fhir.fail(json!({"match": lost, "status": 503, "after_commit": true}))
            .await;

        testing::run_attempt(&*handler, &event(), 1)
            .await
            .expect_retryable();
        let data = testing::run_attempt(&*handler, &event(), 2)
            .await
            .expect_ok()
            .data
            .unwrap();

        let appointments = fhir.stored("Appointment").await;
        let responses = fhir.stored("AppointmentResponse").await;
        assert_eq!(
            (appointments.len(), responses.len()),
            (1, 1),
            "transaction = {transaction}"
        );
        let r = &responses[0];
        assert_eq!(
            r["appointment"]["reference"],
            format!("Appointment/{}", appointments[0]["id"].as_str().unwrap()),
            "it answers the Appointment written with it"
        );
        assert_eq!(r["participantStatus"], "tentative");
        assert_eq!(r["actor"]["reference"], patient_ref.as_str());
        assert_eq!(
            r["comment"],
            "Wants a callback about whitening; mentions tooth pain"
        );
        assert_eq!(identifier_of(r), "dlv_fhir1:ehr:appointment_response");
        assert_eq!(data["appointment_response"]["created"], false);
        assert_eq!(data["appointment_response"]["id"], r["id"]);
    }
}

#[tokio::test]
async fn an_appointment_response_to_an_existing_appointment_comes_from_its_template() {
    let Some(fhir) = FhirServer::start(&[]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>(
        "ehr",
        &config(
            &fhir.base(),
            r#"resources = ["Communication", "AppointmentResponse"]
[appointment_response]
participant_status = "accepted"
template = '{"resourceType": "AppointmentResponse", "appointment": {"reference": "Appointment/{{ data.appointment_id }}"}}'
"#,
        ),
    );
    let with_id = |delivery: &str, id: &str| {
        let mut e = event_with(delivery, Some("+15551234567"));
        e.data["appointment_id"] = id.into();
        e
    };

    let data = testing::run(&*handler, &with_id("dlv_confirm", "appt-42"))
        .await
        .expect_ok()
        .data
        .unwrap();

    let r = &fhir.stored("AppointmentResponse").await[0];
    assert_eq!(r["appointment"]["reference"], "Appointment/appt-42");
    assert_eq!(r["participantStatus"], "accepted");
    assert_eq!(data["appointment_response"]["created"], true);
    assert!(fhir.stored("Appointment").await.is_empty());

    // An id from the event that would point anywhere else is refused before anything is sent.
    let reason = testing::run(&*handler, &with_id("dlv_bad", "1/../../Patient/7"))
        .await
        .expect_permanent();
    assert!(
        reason.starts_with("appointment_response.template: appointment.reference must be"),
        "{reason}"
    );
    assert!(!reason.contains("Patient/7"), "{reason}");
    assert_eq!(fhir.stored("AppointmentResponse").await.len(), 1);
    assert_eq!(fhir.stored("Communication").await.len(), 1);
}

#[test]
fn an_appointment_response_must_know_which_appointment_it_answers() {
    let problems = |extra: &str| {
        let cfg = format!(
            "phi = \"full\"\nbaa = true\nbase_url = \"http://127.0.0.1:9/fhir\"\nauth = {{ type = \"none\" }}\n{extra}\n"
        );
        testing::try_build::<FhirFactory>("ehr", &cfg)
            .expect_err(extra)
            .into_iter()
            .map(|p| p.path)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        problems("resources = [\"AppointmentResponse\"]"),
        ["appointment_response.template"]
    );
    assert_eq!(
        problems("resources = [\"AppointmentResponse\", \"Appointment\"]"),
        ["resources"]
    );
    assert_eq!(
        problems("[appointment_response]\nparticipant_status = \"declined\""),
        ["appointment_response"],
        "set, but not in resources"
    );
    let unknown = "phi = \"full\"\nbaa = true\nbase_url = \"http://127.0.0.1:9/fhir\"\nauth = { type = \"none\" }\nresources = [\"Appointment\", \"AppointmentResponse\"]\n[appointment_response]\nparticipant_status = \"maybe\"\n";
    let refused = testing::try_build::<FhirFactory>("ehr", unknown).expect_err("maybe");
    assert!(
        refused.iter().any(|p| p.message.contains("`maybe`")),
        "{refused:?}"
    );
}

#[test]
fn phi_none_handlers_cannot_send_call_content() {
    let base = "http://127.0.0.1:9/fhir";
    let cases: &[(&str, &str, &str)] = &[
        ("[communication]\ntranscript = true", "communication.transcript", "`data.transcript`"),
        (
            "[communication]\ntemplate = '{\"resourceType\": \"Communication\", \"status\": \"completed\", \"note\": [{\"text\": \"{{ data.ai_summary }}\"}]}'",
            "communication.template",
            "`data.ai_summary`",
        ),
        (
            "[communication]\ntemplate = '{\"resourceType\": \"Communication\", \"status\": \"completed\", \"payload\": [{\"contentString\": \"call\"}]}'",
            "communication.template",
            "`payload`",
        ),
        ("[patient]", "patient", "`caller.phone`"),
        (
            "resources = [\"DocumentReference\"]",
            "document_reference.content",
            "`data.transcript`",
        ),
        (
            "resources = [\"DocumentReference\"]\n[document_reference]\nartifacts = true",
            "document_reference.artifacts",
            "recordings and transcripts are PHI",
        ),
    ];
    for (extra, path, field) in cases {
        let cfg =
            format!("phi = \"none\"\nbase_url = \"{base}\"\n{extra}\n[auth]\ntype = \"none\"\n");
        // `[auth]` after a table header would nest it; put top-level keys first.
        let cfg = if extra.starts_with('[') {
            format!(
                "phi = \"none\"\nbase_url = \"{base}\"\nauth = {{ type = \"none\" }}\n{extra}\n"
            )
        } else {
            cfg
        };
        let problems = testing::try_build::<FhirFactory>("ehr", &cfg).expect_err(extra);
        assert!(
            problems
                .iter()
                .any(|p| p.path == *path && p.message.contains(field)),
            "{extra}: {problems:?}"
        );
    }
}

#[tokio::test]
async fn a_phi_none_handler_writes_a_communication_without_content() {
    let Some(fhir) = FhirServer::start(&[]) else {
        return;
    };
    let handler = testing::build::<FhirFactory>(
        "ehr",
        &format!("base_url = \"{}\"\n[auth]\ntype = \"none\"\n", fhir.base()),
    );
    testing::run(&*handler, &event()).await.expect_ok();
    let c = &fhir.stored("Communication").await[0];
    assert!(c.get("payload").is_none(), "{c}");
    assert!(!c.to_string().contains("whitening"));
}

/// A test CA and a certificate it issued for 127.0.0.1: (dir, ca.pem, server.pem, server.key).
fn certificates() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wardhook FHIR test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
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
async fn an_ehr_with_a_private_ca_is_reached_through_ca_file_with_smart_over_tls() {
    let (_certs, ca, cert, key) = certificates();
    let dir = tempfile::tempdir().unwrap();
    let (key_path, jwks_path, _) = smart_key(&dir);
    let Some(fhir) =
        FhirServer::start_tls(&["--auth", "smart", "--jwks", &jwks_path], &cert, &key, &ca)
    else {
        return;
    };
    assert!(fhir.base().starts_with("https://127.0.0.1:"));
    let cfg = format!(
        "ca_file = \"{}\"\n{}",
        ca.display(),
        smart_config(&fhir.base(), &key_path)
    );
    let handler = testing::build::<FhirFactory>("ehr", &cfg);

    testing::run(&*handler, &event()).await.expect_ok();

    assert_eq!(fhir.stored("Communication").await.len(), 1);
    // Discovery, the token and the write all went over TLS to the same server.
    let assertions = fhir.assertions().await;
    assert_eq!(
        assertions[0]["claims"]["aud"],
        format!("{}/auth/token", fhir.origin)
    );
}

#[tokio::test]
async fn without_ca_file_a_private_ca_certificate_is_a_permanent_failure_naming_the_host() {
    let (_certs, ca, cert, key) = certificates();
    let Some(fhir) = FhirServer::start_tls(&[], &cert, &key, &ca) else {
        return;
    };
    let handler = testing::build::<FhirFactory>("ehr", &config(&fhir.base(), ""));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert!(
        reason.contains("127.0.0.1") && reason.contains("certificate"),
        "{reason}"
    );
    for phi in ["John", "5551234567", "whitening"] {
        assert!(!reason.contains(phi), "{reason}");
    }
    assert!(fhir.stored("Communication").await.is_empty());
    assert!(fhir.log().await.is_empty(), "no request got through");

    // SMART discovery fails the same way before any token is asked for.
    let dir = tempfile::tempdir().unwrap();
    let (key_path, _, _) = smart_key(&dir);
    let handler = testing::build::<FhirFactory>("ehr", &smart_config(&fhir.base(), &key_path));
    let reason = testing::run(&*handler, &event()).await.expect_permanent();
    assert!(
        reason.contains("127.0.0.1") && reason.contains("certificate"),
        "{reason}"
    );
    assert!(fhir.assertions().await.is_empty());

    // A refused connection is still a network error, retried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/fhir", closed.local_addr().unwrap());
    drop(closed);
    let handler = testing::build::<FhirFactory>("ehr", &config(&base, ""));
    testing::run(&*handler, &event()).await.expect_retryable();
}

#[test]
fn config_mistakes_are_reported_with_their_key_paths() {
    let cfg = r#"phi = "full"
baa = true
base_url = "http://ehr.example/fhir"
identifier_system = "wardhook"
resources = ["Communication", "Communication"]
timeout_secs = 0
ca_file = "/nonexistent/ehr-ca.pem"
auth = { type = "smart", client_id = "", private_key = "env:FHIR_TEST_NO_SUCH_KEY" }
[task]
owner = "front desk"
[patient]
when_several = "create"
"#;
    let problems = testing::try_build::<FhirFactory>("ehr", cfg).expect_err("bad");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "base_url",
        "identifier_system",
        "resources",
        "timeout_secs",
        "ca_file",
        "task",
        "task.owner",
        "patient.when_several",
        "auth.client_id",
        "auth.private_key",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
}

#[test]
fn the_commented_example_config_builds() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/adapters/fhir.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let file: wardhook_sdk::toml::Table = wardhook_sdk::toml::from_str(&text).unwrap();
    let mut table = file["handlers"].as_array().unwrap()[0]
        .as_table()
        .unwrap()
        .clone();
    assert_eq!(table.remove("kind").unwrap().as_str(), Some("fhir"));
    table.remove("name");
    // The key the example names, generated where the test can write.
    let dir = tempfile::tempdir().unwrap();
    let (key_path, _, _) = smart_key(&dir);
    let auth = table.get_mut("auth").unwrap().as_table_mut().unwrap();
    auth.insert("private_key".into(), format!("file:{key_path}").into());
    let cfg = wardhook_sdk::toml::to_string(&table).unwrap();
    testing::try_build::<FhirFactory>("ehr", &cfg).unwrap();
}
