//! Files holding records, payloads or keys are owner-only whatever the umask: the real binary
//! runs under `umask 022` (which leaves new files `0644` unless the program says otherwise)
//! for every command that creates such files, and nothing it wrote is readable by group or
//! others. The one documented exception: certificates (`*.crt`), which are public.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::helpers::*;

/// `wardhook ARGS --config CONFIG` under `umask 022`.
fn under_umask(fixture: &Fixture, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 022 && exec \"$@\"", "sh"])
        .arg(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path());
    cmd
}

fn run(fixture: &Fixture, args: &[&str]) -> Output {
    let out = under_umask(fixture, args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The permission bits, or `None` for a file that went away since the listing (a temporary
/// file of the running server).
fn mode(p: &Path) -> Option<u32> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// Every file and folder below `dir`, folders included.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        out.push(path.clone());
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_with_records_payloads_or_keys_is_owner_only_under_umask_022() {
    let fixture = write_fixture(&AppOptions {
        extra: "[log]\nformat = \"json\"\ndir = \"data/logs\"\n".into(),
        ..AppOptions::default()
    });
    let d = fixture.dir.path().to_owned();
    // Key and certificate generation.
    run(&fixture, &["keygen", "--out", "keys/spare.key"]);
    run(&fixture, &["certs", "dev", "--dir", "devcerts"]);

    // A server that stores deliveries, writes its database, audit mirror, checkpoints,
    // pid file and sender clock file.
    let (server, port) = start_server_command(&fixture, under_umask(&fixture, &["serve"]));
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let body = r#"{"event":"call.ended","data":{"call_id":"modes-1"}}"#;
    let res = http
        .post(format!("https://localhost:{port}/hooks/demo"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    let id = v["delivery_id"].as_str().unwrap().to_owned();

    // The commands that write records or payloads to files, beside the running server.
    run(&fixture, &["deliveries", "show", &id]);
    run(
        &fixture,
        &["tokens", "create", "--name", "modes", "--role", "auditor"],
    );
    run(
        &fixture,
        &["audit", "export", "--out", "audit-export.jsonl"],
    );
    run(
        &fixture,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--out",
            "audit-export.csv",
        ],
    );
    // Backups go away from the master key's folder.
    std::fs::create_dir(d.join("backups")).unwrap();
    run(&fixture, &["backup", "--to", "backups/backup.db"]);
    run(
        &fixture,
        &[
            "emergency-export",
            "--reason",
            "file mode test",
            "--since",
            "2000-01-01",
            "--out",
            "emergency.whe",
        ],
    );
    // While the server runs (pid file, WAL and shared memory present) and after it stopped.
    let running = created_files(&d);
    for expected in [
        "data/wardhook.db",
        "data/wardhook.db-wal",
        "data/wardhook.db-shm",
        "data/wardhook.pid",
        "data/sender-clock.json",
        "data/audit/checkpoints.jsonl",
        "data/audit/mirror.lock",
        "keys/spare.key",
        "devcerts/server.key",
        "devcerts/server.crt",
        "audit-export.jsonl",
        "backups/backup.db",
        "emergency.whe",
    ] {
        assert!(running.contains(&d.join(expected)), "{expected} missing");
    }
    assert!(
        running.iter().any(|p| p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("audit.")),
        "no mirror file"
    );
    assert!(
        running.iter().any(|p| p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("wardhook.log.")),
        "no log file"
    );
    assert_owner_only(&d, &running);

    let pid = server.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut server = server;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while server.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_owner_only(&d, &created_files(&d));
}

/// The folders wardhook created, everything below them, and the `--out` files.
fn created_files(d: &Path) -> Vec<PathBuf> {
    let mut created = Vec::new();
    for dir in ["data", "keys", "devcerts"] {
        created.push(d.join(dir));
        walk(&d.join(dir), &mut created);
    }
    for out in [
        "audit-export.jsonl",
        "audit-export.csv",
        "backups/backup.db",
        "emergency.whe",
    ] {
        created.push(d.join(out));
    }
    created
}

/// No group or other bits on any of `paths`, except `0644` on public certificates.
fn assert_owner_only(d: &Path, paths: &[PathBuf]) {
    let mut loose = Vec::new();
    for p in paths {
        let Some(m) = mode(p) else { continue };
        let public_cert = p.extension().is_some_and(|e| e == "crt");
        let ok = if public_cert {
            m == 0o644
        } else {
            m & 0o077 == 0
        };
        if !ok {
            loose.push(format!("{:o} {}", m, p.strip_prefix(d).unwrap().display()));
        }
    }
    assert!(loose.is_empty(), "readable by group or others: {loose:#?}");
}
