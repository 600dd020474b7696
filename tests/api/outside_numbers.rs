//! Numbers from outside the process — command-line flags here — are bounded before any clock
//! arithmetic: a huge duration is a one-line error and a non-zero exit, never a panic.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use crate::helpers::*;

#[tokio::test]
async fn huge_durations_on_the_command_line_are_refused_with_one_line_not_a_panic() {
    // A served app, so the database the commands open exists.
    let app = spawn_app().await;
    let cases: &[&[&str]] = &[
        &["purge", "--older-than", "99999999d"],
        &["purge", "--older-than", "18446744073709551615s"],
        &[
            "tokens",
            "create",
            "--name",
            "ops",
            "--role",
            "admin",
            "--expires",
            "99999999d",
        ],
    ];
    for args in cases {
        let out = Command::new(wardhook_bin())
            .args(*args)
            .arg("--config")
            .arg(&app.config_path)
            .current_dir(app.dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("too long"), "{args:?}: {stderr}");
    }
}
