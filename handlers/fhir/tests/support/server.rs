//! Starts `fhir_server.py` (fhir.resources + PyJWT) on loopback and reads what it stored.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running FHIR server; killed on drop.
pub struct FhirServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    http: reqwest::Client,
}

/// The interpreter with the validators: `WARDHOOK_TEST_PYTHON`, else the CI virtualenv. Under
/// CI a missing one is a failure; elsewhere the test says it skipped and returns.
pub fn python() -> Option<String> {
    let candidate = std::env::var("WARDHOOK_TEST_PYTHON")
        .unwrap_or_else(|_| "/opt/wardhook-test-venv/bin/python".to_owned());
    let ok = Command::new(&candidate)
        .args(["-c", "import fhir.resources.R4B, jwt, cryptography"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(candidate);
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "the FHIR tests need {candidate} with fhir.resources, PyJWT and cryptography \
         (bash deploy/ci/python-fixtures.sh creates it)"
    );
    eprintln!(
        "SKIPPED: no Python with fhir.resources and PyJWT at {candidate} \
         (bash deploy/ci/python-fixtures.sh, or set WARDHOOK_TEST_PYTHON)"
    );
    None
}

fn script() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        "tests/support/fhir_server.py",
        "handlers/fhir/tests/support/fhir_server.py",
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.exists())
    .expect("fhir_server.py")
}

impl FhirServer {
    /// Start with extra arguments (`--auth smart --jwks FILE`, …); `None` when the validators
    /// are not installed, outside CI.
    pub fn start(args: &[&str]) -> Option<Self> {
        Self::spawn(args, None)
    }

    /// Start over HTTPS with `cert`/`key` (PEM); the test hooks trust `ca` (PEM), the CA that
    /// issued `cert`.
    pub fn start_tls(args: &[&str], cert: &Path, key: &Path, ca: &Path) -> Option<Self> {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let mut all = args.to_vec();
        all.extend(["--tls-cert", &cert, "--tls-key", &key]);
        Self::spawn(&all, Some(ca))
    }

    fn spawn(args: &[&str], ca: Option<&Path>) -> Option<Self> {
        let mut child = Command::new(python()?)
            .arg(script())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the FHIR server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("FHIR server did not start: {line:?}"));
        let mut http = reqwest::Client::builder();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let scheme = if ca.is_some() { "https" } else { "http" };
        Some(Self {
            child,
            origin: format!("{scheme}://127.0.0.1:{port}"),
            http: http.build().unwrap(),
        })
    }

    /// The FHIR base URL.
    pub fn base(&self) -> String {
        format!("{}/fhir", self.origin)
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.origin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.origin))
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Stored resources of one type.
    pub async fn stored(&self, resource_type: &str) -> Vec<Value> {
        let all = self.get("/_test/store").await;
        all.get(resource_type)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// Every FHIR request so far.
    pub async fn log(&self) -> Vec<Value> {
        self.get("/_test/log").await.as_array().cloned().unwrap()
    }

    /// The client assertions the token endpoint verified.
    pub async fn assertions(&self) -> Vec<Value> {
        self.get("/_test/assertions")
            .await
            .as_array()
            .cloned()
            .unwrap()
    }

    /// Queue a failure (see the script's docstring).
    pub async fn fail(&self, failure: Value) {
        self.post("/_test/fail", &failure).await;
    }

    /// Store a Patient as test data; returns it with its id.
    pub async fn add_patient(&self, patient: Value) -> Value {
        self.post("/_test/patient", &patient).await
    }
}

impl Drop for FhirServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
