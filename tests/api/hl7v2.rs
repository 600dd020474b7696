//! `kind = "hl7v2"` is registered: `check-config` builds it and names a PHI field a
//! `phi = "none"` handler would send.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use crate::helpers::*;

fn check_config(extra: &str) -> (bool, String) {
    let fixture = write_fixture(&AppOptions::default());
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    std::fs::write(&fixture.config_path, format!("{text}\n{extra}")).unwrap();
    let out = Command::new(wardhook_bin())
        .args(["check-config", "--config"])
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_config_refuses_a_transcript_in_a_phi_none_hl7v2_handler_and_names_the_field() {
    let (ok, out) = check_config(
        r#"
[[handlers]]
name = "ehr-notes"
kind = "hl7v2"
host = "127.0.0.1"
tls = false
message = "MDM^T02"
transcript = true
"#,
    );

    assert!(!ok, "{out}");
    assert!(
        out.lines().any(
            |l| l.contains(".transcript: handler \"ehr-notes\" has phi = \"none\"")
                && l.contains("`data.transcript`")
        ),
        "{out}"
    );
}

#[test]
fn check_config_accepts_an_hl7v2_handler_covered_by_a_baa() {
    let (ok, out) = check_config(
        r#"
[[handlers]]
name = "ehr-notes"
kind = "hl7v2"
phi = "full"
baa = true
host = "127.0.0.1"
tls = false
transcript = true
"#,
    );

    assert!(ok, "{out}");
    assert!(
        out.lines().any(
            |l| l.starts_with("warning: hl7v2 handler sends to 127.0.0.1:")
                && l.contains("plaintext MLLP")
        ),
        "check-config names the plaintext destination: {out}"
    );
}

#[test]
fn serve_warns_at_start_up_about_a_plaintext_hl7v2_destination() {
    use std::io::{BufRead, BufReader};
    let fixture = write_fixture(&AppOptions {
        extra: "[[handlers]]\nname = \"ehr-notes\"\nkind = \"hl7v2\"\nphi = \"full\"\nbaa = true\nhost = \"127.0.0.1\"\ntls = false\n".into(),
        ..AppOptions::default()
    });
    let mut child = ServerProcess::spawn(
        Command::new(wardhook_bin())
            .args(["serve", "--config"])
            .arg(&fixture.config_path)
            .current_dir(fixture.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("plaintext MLLP") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("serve logs the plaintext warning at start-up");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("127.0.0.1:"), "{line}");
}
