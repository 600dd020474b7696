//! Starts `mllp_server.py` (python-hl7) on loopback and reads what it parsed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where CI's virtualenv puts the interpreter (`deploy/ci/python-fixtures.sh`).
const DEFAULT_PYTHON: &str = "/opt/wardhook-test-venv/bin/python";

/// One message as python-hl7 parsed it.
#[derive(Debug, serde::Deserialize)]
pub struct Received {
    /// 1 for the receiver's first connection, and so on.
    pub connection: u32,
    /// Whether the connection was TLS.
    pub tls: bool,
    /// The client certificate's common name, when one was presented.
    pub peer_cn: Option<String>,
    /// How the receiver answered.
    pub behaviour: String,
    /// The message text as it arrived.
    pub raw: Option<String>,
    /// Segments, when python-hl7 could parse the message.
    pub segments: Option<Vec<Segment>>,
    /// python-hl7's complaint, when it could not.
    pub error: Option<String>,
}

/// One segment: `fields[0]` is the id; `fields[n]` is field n as repetitions → components →
/// unescaped sub-components (for MSH, fields 1 and 2 are the raw separators).
#[derive(Debug, serde::Deserialize)]
pub struct Segment {
    /// `PID`, `OBX`, …
    pub id: String,
    /// The fields, by HL7 number.
    pub fields: Vec<serde_json::Value>,
}

/// A field: repetitions of components of sub-components.
pub type Field = Vec<Vec<Vec<String>>>;

impl Received {
    /// The parsed segments; panics with python-hl7's complaint if it could not parse.
    pub fn segments(&self) -> &[Segment] {
        match &self.segments {
            Some(s) => s,
            None => panic!("python-hl7 could not parse the message: {:?}", self.error),
        }
    }

    /// The segment ids, in order.
    pub fn ids(&self) -> Vec<&str> {
        self.segments().iter().map(|s| s.id.as_str()).collect()
    }

    /// The `nth` (0-based) segment with this id.
    pub fn segment(&self, id: &str, nth: usize) -> &Segment {
        self.segments()
            .iter()
            .filter(|s| s.id == id)
            .nth(nth)
            .unwrap_or_else(|| panic!("no {id} #{nth} in {:?}", self.ids()))
    }

    /// Field `n` of the first segment `id`.
    pub fn field(&self, id: &str, n: usize) -> Field {
        self.segment(id, 0).field(n)
    }

    /// Field `n` of the first segment `id`, which must be one plain value.
    pub fn value(&self, id: &str, n: usize) -> String {
        self.segment(id, 0).value(n)
    }
}

impl Segment {
    /// Field `n` (empty when the segment is shorter).
    pub fn field(&self, n: usize) -> Field {
        match self.fields.get(n) {
            None => vec![vec![vec![String::new()]]],
            Some(v) => serde_json::from_value(v.clone())
                .unwrap_or_else(|e| panic!("{}-{n} is not a parsed field: {e}", self.id)),
        }
    }

    /// Field `n`, which must be one repetition of one component of one sub-component.
    pub fn value(&self, n: usize) -> String {
        let field = self.field(n);
        assert!(
            field.len() == 1 && field[0].len() == 1 && field[0][0].len() == 1,
            "{}-{n} is not one value: {field:?}",
            self.id
        );
        field[0][0][0].clone()
    }

    /// The number of fields after the id.
    pub fn field_count(&self) -> usize {
        self.fields.len() - 1
    }
}

/// TLS for the receiver: its certificate and key, and the CA it requires client certificates
/// from.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverTls<'a> {
    /// PEM certificate.
    pub cert: &'a Path,
    /// PEM key.
    pub key: &'a Path,
    /// Require a client certificate issued by this CA.
    pub client_ca: Option<&'a Path>,
}

/// A running receiver; killed on drop.
pub struct Receiver {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    out: tempfile::TempDir,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The interpreter with python-hl7: `WARDHOOK_TEST_PYTHON`, else CI's virtualenv.
fn python() -> Option<String> {
    let candidate =
        std::env::var("WARDHOOK_TEST_PYTHON").unwrap_or_else(|_| DEFAULT_PYTHON.to_owned());
    let ok = Command::new(&candidate)
        .args(["-c", "import hl7, hl7.mllp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(candidate);
    }
    assert!(
        !ci(),
        "the hl7v2 tests need python-hl7 at {candidate}: run deploy/ci/python-fixtures.sh \
         and set WARDHOOK_TEST_PYTHON (.ci/run does)"
    );
    eprintln!(
        "SKIPPED: no python with the `hl7` package at {candidate} for the MLLP receiver \
         (bash deploy/ci/python-fixtures.sh; WARDHOOK_TEST_PYTHON=/opt/wardhook-test-venv/bin/python)"
    );
    None
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mllp_server.py")
}

impl Receiver {
    /// Start a receiver answering with `acks` (comma-separated behaviours, the last repeats);
    /// `None` (the test skips) without python-hl7, outside CI.
    pub fn start(acks: &str, tls: Option<ReceiverTls<'_>>) -> Option<Self> {
        let out = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(python()?);
        cmd.arg(script()).arg(out.path()).args(["--acks", acks]);
        if let Some(t) = tls {
            cmd.arg("--tls").arg(t.cert).arg(t.key);
            if let Some(ca) = t.client_ca {
                cmd.arg("--client-ca").arg(ca);
            }
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the MLLP receiver");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("MLLP receiver did not start: {line:?}"));
        Some(Self { child, port, out })
    }

    /// Everything received so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Wait (up to 10 s) until `n` messages have arrived.
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.messages();
            if got.len() >= n || start.elapsed() > Duration::from_secs(10) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
