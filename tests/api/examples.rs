//! The example configs in `config/` are valid as shipped, given the files and env vars they name.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use wardhook::certs::DevCa;
use wardhook::config::Config;
use wardhook::crypto::MasterKey;

/// A folder laid out as the examples expect: certs/, data/master.key.
fn host_layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("certs")).unwrap();
    let ca = DevCa::generate().unwrap();
    let server = ca.issue_server(&["wardhook.clinic.example"], 30).unwrap();
    std::fs::write(d.join("certs/server.crt"), server.cert_pem).unwrap();
    std::fs::write(d.join("certs/server.key"), server.key_pem).unwrap();
    std::fs::write(d.join("certs/client-ca.crt"), ca.cert_pem()).unwrap();
    MasterKey::generate_file(&d.join("data/master.key")).unwrap();
    dir
}

fn check_example(name: &str) {
    let dir = host_layout();
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    let text = std::fs::read_to_string(&example).unwrap();
    // Give every env: reference in the example a value.
    for part in text.split("\"env:").skip(1) {
        let var = part.split('"').next().unwrap();
        let value = if var.contains("WHSEC") {
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()
        } else if var.contains("WEBHOOK_URL") {
            "https://hooks.slack.com/services/T000/B000/XXXX".to_owned()
        } else {
            format!("example-value-for-{var}")
        };
        std::env::set_var(var, value);
    }
    // Every relative file: reference and exec program the example names.
    for part in text.split("\"file:").skip(1) {
        let rel = part.split('"').next().unwrap();
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "example-secret").unwrap();
    }
    for part in text.split("program = \"").skip(1) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(part.split('"').next().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let copy = dir.path().join(name);
    std::fs::write(&copy, &text).unwrap();
    // Settings, then every stage built from them, as `check-config` does.
    let checked = Config::load_with_base(&copy, dir.path())
        .and_then(|c| wardhook::app::build_stages(&c).map(drop));
    if let Err(e) = checked {
        panic!("config/{name} is not valid: {e}");
    }
}

#[test]
fn minimal_example_config_is_valid() {
    check_example("minimal.toml");
}

#[test]
fn full_example_config_is_valid() {
    check_example("full.toml");
}

#[test]
fn clinic_example_config_is_valid() {
    check_example("clinic.toml");
}
