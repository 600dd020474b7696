//! Starts `smtp_sink.py` (aiosmtpd) on loopback and reads what it received. Shared by the
//! e-mail crate's tests and the end-to-end adapters flow test (`#[path]`-included there).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One message as the server received it.
#[derive(Debug, serde::Deserialize)]
pub struct Received {
    /// `MAIL FROM`.
    pub mail_from: String,
    /// Accepted `RCPT TO`s.
    pub rcpt_tos: Vec<String>,
    /// Whether the session was encrypted when the message was sent.
    pub tls: bool,
    /// Headers, names lower-cased, values decoded.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The top-level content type.
    pub content_type: String,
    /// The decoded text/plain part.
    pub text: Option<String>,
    /// The decoded text/html part.
    pub html: Option<String>,
    /// The message as it arrived.
    pub raw: String,
    /// The attachments, decoded.
    #[serde(default)]
    pub attachments: Vec<ReceivedAttachment>,
}

/// One attachment as the server decoded it.
#[derive(Debug, serde::Deserialize)]
pub struct ReceivedAttachment {
    /// Its file name.
    pub filename: Option<String>,
    /// Its content type.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
    /// SHA-256 of the decoded bytes, hex.
    pub sha256: String,
}

/// How the sink protects its port.
#[derive(Debug, Clone, Copy)]
pub enum SinkTls<'a> {
    /// Plain SMTP.
    None,
    /// STARTTLS offered and required, with this certificate and key (PEM files).
    StartTls(&'a Path, &'a Path),
    /// TLS from the first byte.
    Implicit(&'a Path, &'a Path),
}

/// A running SMTP server; killed on drop.
pub struct SmtpSink {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    out: tempfile::TempDir,
}

/// A python3 that can import aiosmtpd: `WARDHOOK_TEST_PYTHON`, `python3` on PATH, or Debian's
/// `/usr/bin/python3` (where `apt-get install python3-aiosmtpd` puts it).
fn python() -> Option<String> {
    let candidates = std::env::var("WARDHOOK_TEST_PYTHON")
        .into_iter()
        .chain(["python3".to_owned(), "/usr/bin/python3".to_owned()]);
    for candidate in candidates {
        let ok = Command::new(&candidate)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(candidate);
        }
    }
    // CI installs aiosmtpd, so there a missing server is a failure, not a skip.
    assert!(
        std::env::var_os("CI").is_none(),
        "the e-mail tests need a real SMTP server: install aiosmtpd \
         (`pip install aiosmtpd` or `apt-get install python3-aiosmtpd`; .ci/run does)"
    );
    eprintln!(
        "SKIPPED: no python3 with aiosmtpd for the real SMTP server \
         (`pip install aiosmtpd` or `apt-get install python3-aiosmtpd`)"
    );
    None
}

/// The script, from the e-mail crate's tests or from the workspace root's.
fn script() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        "tests/support/smtp_sink.py",
        "handlers/email/tests/support/smtp_sink.py",
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.exists())
    .expect("smtp_sink.py")
}

impl SmtpSink {
    /// Start the server and wait until it listens; `None` (the test skips) when no python3
    /// with aiosmtpd is installed, outside CI.
    pub fn start(tls: SinkTls<'_>) -> Option<Self> {
        let out = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(python()?);
        cmd.arg(script()).arg(out.path());
        match tls {
            SinkTls::None => {}
            SinkTls::StartTls(cert, key) => {
                cmd.arg("--starttls").arg(cert).arg(key);
            }
            SinkTls::Implicit(cert, key) => {
                cmd.arg("--implicit-tls").arg(cert).arg(key);
            }
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP sink");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("SMTP sink did not start: {line:?}"));
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

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
