//! `audit export --format fhir` on both backends: every `AuditEvent` of the Bundle validated
//! with the `fhir.resources` Python package (R4B models), as the EHR handler tests do.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::helpers::*;
use crate::postgres::PgTestDb;

const CANARY: &str = "Philomena Fhircanary";

/// Validates the Bundle in argv[1]: each entry's resource as an R4B AuditEvent, then the Bundle
/// itself; prints the number of AuditEvents.
const VALIDATE: &str = r#"
import json, sys
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
data = json.load(open(sys.argv[1]))
assert data["resourceType"] == "Bundle" and data["type"] == "collection", data.get("type")
n = 0
for entry in data.get("entry", []):
    AuditEvent.model_validate(entry["resource"])
    n += 1
Bundle.model_validate(data)
print(n)
"#;

/// The interpreter with fhir.resources: `WARDHOOK_TEST_PYTHON`, else the CI virtualenv. Under
/// CI a missing one is a failure; elsewhere the test says it skipped.
fn python() -> Option<String> {
    let candidate = std::env::var("WARDHOOK_TEST_PYTHON")
        .unwrap_or_else(|_| "/opt/wardhook-test-venv/bin/python".to_owned());
    let ok = Command::new(&candidate)
        .args(["-c", "import fhir.resources.R4B"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(candidate);
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "the FHIR export test needs {candidate} with fhir.resources (bash deploy/ci/python-fixtures.sh)"
    );
    eprintln!("SKIPPED: no Python with fhir.resources at {candidate}");
    None
}

fn cli(app: &TestApp, args: &[&str]) -> Output {
    cli_in(&app.config_path, app.dir.path(), args)
}

/// How many AuditEvents the Bundle at `path` holds, each validated.
fn validated_events(python: &str, path: &Path) -> usize {
    let out = Command::new(python)
        .args(["-c", VALIDATE])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fhir.resources refused the export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `wardhook audit export --format fhir <filters>` into `file_name` in the app's folder; its
/// path.
fn export_fhir(app: &TestApp, file_name: &str, filters: &[&str]) -> PathBuf {
    let path = app.dir.path().join(file_name);
    let out = path.to_str().expect("a UTF-8 path");
    let args: Vec<&str> = ["audit", "export", "--format", "fhir"]
        .into_iter()
        .chain(filters.iter().copied())
        .chain(["--out", out])
        .collect();
    cli(app, &args);
    path
}

async fn exports_a_valid_bundle_of_every_selected_record(app: &TestApp, python: &str) {
    for n in 0..3 {
        let body = format!(
            r#"{{"event":"call.ended","data":{{"call_id":"fhir-{n}","caller":{{"name":"{CANARY}"}}}}}}"#
        );
        deliver(app, &body).await;
        if n == 0 {
            deliver(app, &body).await; // a duplicate
        }
    }
    let forged = app
        .client()
        .post(app.url("/hooks/demo"))
        .header("X-NextPhone-Signature", "00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // Everything: as many AuditEvents as JSONL lines.
    let all = export_fhir(app, "all.fhir.json", &[]);
    let jsonl = cli(app, &["audit", "export", "--format", "jsonl", "--out", "-"]);
    let lines = String::from_utf8(jsonl.stdout).unwrap().lines().count();
    assert!(lines >= 6, "{lines}");
    // The JSONL export itself writes an audit record only when recorded; count what FHIR held.
    let events = validated_events(python, &all);
    assert!(
        events >= lines - 1 && events <= lines,
        "{events} vs {lines}"
    );
    let text = std::fs::read_to_string(&all).unwrap();
    assert!(!text.contains(CANARY), "PHI canary in the FHIR export");
    assert!(!text.contains("fhir-0"), "a call id in the FHIR export");
    assert!(text.contains("\"code\":\"110107\""), "Import events");
    assert!(text.contains("\"code\":\"delivery_rejected\""));
    assert!(text.contains("urn:wardhook:call-ref"));

    // The same filters as the other formats.
    let accepted = export_fhir(
        app,
        "accepted.fhir.json",
        &["--action", "delivery_accepted"],
    );
    assert_eq!(validated_events(python, &accepted), 3);
    let by_call = export_fhir(app, "call.fhir.json", &["--call-id", "fhir-0"]);
    assert_eq!(
        validated_events(python, &by_call),
        2,
        "accepted + duplicate"
    );
    // An empty range is a Bundle without entries, still valid.
    let none = export_fhir(app, "none.fhir.json", &["--since", "2100-01-01"]);
    assert_eq!(validated_events(python, &none), 0);
}

#[tokio::test]
async fn the_fhir_export_validates_resource_by_resource_on_sqlite() {
    let Some(python) = python() else { return };
    let app = spawn_app().await;
    exports_a_valid_bundle_of_every_selected_record(&app, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fhir_export_validates_resource_by_resource_on_postgres() {
    let Some(python) = python() else { return };
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let app = spawn_from_fixture(db.fixture("fhir-node", AppOptions::default(), None)).await;
    exports_a_valid_bundle_of_every_selected_record(&app, &python).await;
    let text = std::fs::read_to_string(app.dir.path().join("all.fhir.json")).unwrap();
    assert!(text.contains("\"type\":\"node\",\"valueString\":\"fhir-node\""));
}
