//! `check-config`: every bad config is reported with its key path, all problems at once.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use wardhook::config::Config;

use crate::helpers::*;

const GOOD_SOURCES: &str = r#"
[[sources]]
name = "demo"
preset = "nextphone"
secrets = ["file:demo.secret"]
"#;

/// The fixture's config with `edit` applied to its text.
fn problems_of(edit: impl Fn(String) -> String) -> Vec<String> {
    let fixture = write_fixture(&AppOptions::default());
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    std::fs::write(&fixture.config_path, edit(text)).unwrap();
    match Config::load_with_base(&fixture.config_path, fixture.dir.path()) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_fixture_config_is_valid() {
    assert_eq!(problems_of(|t| t), Vec::<String>::new());
}

#[test]
fn each_bad_config_is_reported_with_its_key_path() {
    type Edit = Box<dyn Fn(String) -> String>;
    let append = |extra: &'static str| -> Edit { Box::new(move |t| format!("{t}\n{extra}")) };
    let replace = |from: &'static str, to: &'static str| -> Edit {
        Box::new(move |t: String| {
            assert!(t.contains(from), "fixture lacks {from:?}");
            t.replacen(from, to, 1)
        })
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "unset env secret",
            append("[[sources]]\nname = \"np\"\npreset = \"nextphone\"\nsecrets = [\"env:WARDHOOK_TEST_UNSET_SECRET\"]\n"),
            "sources[1].secrets[0]: env var WARDHOOK_TEST_UNSET_SECRET is not set",
        ),
        (
            "literal secret",
            append("[[sources]]\nname = \"np\"\npreset = \"nextphone\"\nsecrets = [\"hunter2\"]\n"),
            "sources[1].secrets[0]: must be an `env:NAME` or `file:PATH` reference",
        ),
        (
            "missing secret file",
            append("[[sources]]\nname = \"np\"\npreset = \"nextphone\"\nsecrets = [\"file:nope.secret\"]\n"),
            "sources[1].secrets[0]: cannot read secret file nope.secret",
        ),
        (
            "duplicate source",
            append(GOOD_SOURCES),
            "sources[1].name: source \"demo\" is defined more than once",
        ),
        (
            "source name not URL-safe",
            append("[[sources]]\nname = \"Next Phone\"\npreset = \"nextphone\"\nsecrets = [\"file:demo.secret\"]\n"),
            "sources[1].name: \"Next Phone\" must be 1-64 characters",
        ),
        (
            "unknown preset",
            append("[[sources]]\nname = \"x\"\npreset = \"nextfone\"\nsecrets = [\"file:demo.secret\"]\n"),
            "sources[1].preset: unknown preset \"nextfone\"",
        ),
        (
            "bad allowlist entry",
            append("[[sources]]\nname = \"x\"\npreset = \"nextphone\"\nsecrets = [\"file:demo.secret\"]\nallow_ips = [\"10.0.0.0/8\", \"not-a-net\"]\n"),
            "sources[1].allow_ips[1]: \"not-a-net\" is not an IP address or CIDR network",
        ),
        (
            "route to unknown source",
            append("[[handlers]]\nname = \"crm\"\nkind = \"http\"\n[[routes]]\nsource = \"ghost\"\nhandlers = [\"crm\"]\n"),
            "routes[0].source: no source is named \"ghost\"",
        ),
        (
            "route to unknown handler",
            append("[[routes]]\nsource = \"demo\"\nhandlers = [\"crm\"]\n"),
            "routes[0].handlers[0]: no handler is named \"crm\"",
        ),
        (
            "route event pattern that is free text",
            append("[[routes]]\nsource = \"demo\"\nevents = [\"call.*\", \"call ended\"]\nhandlers = [\"crm\"]\n"),
            "routes[0].events[1]: an event pattern is letters, digits and . _ - : / ~ with * as a wildcard",
        ),
        (
            "audit retention past the clock's range",
            replace("[audit]\n", "[audit]\nretention_days = 4294967295\n"),
            "audit.retention_days: must be at most 36500 (100 years)",
        ),
        (
            "circuit open for ever",
            append("[dispatch]\ncircuit_open_secs = 18446744073709551615\n"),
            "dispatch.circuit_open_secs: must be between 1 and 86400 seconds",
        ),
        (
            "shutdown timeout past any bound",
            replace("shutdown_timeout_secs = 5", "shutdown_timeout_secs = 18446744073709551615"),
            "server.shutdown_timeout_secs: must be between 1 and 3600 seconds",
        ),
        (
            "retry delay of a thousand centuries",
            append("[dispatch]\nretry_schedule = [\"0s\", \"36500000d\"]\n"),
            "too long (at most 36500d)",
        ),
        (
            "unknown key",
            replace("workers = 2", "workers = 2\nalow_ips = []"),
            "unknown field `alow_ips`",
        ),
        (
            "bad listen address",
            replace("listen = \"127.0.0.1:0\"", "listen = \"localhost\""),
            "server.listen: \"localhost\" is not an address:port",
        ),
        (
            "missing certificate",
            replace("cert = \"server.crt\"", "cert = \"missing.crt\""),
            "server.tls.cert: cannot load certificate chain from",
        ),
        (
            "certificate and key that do not match",
            replace("key = \"server.key\"", "key = \"other.key\""),
            "server.tls.cert: certificate and private key do not match",
        ),
        (
            "plain http on a public address",
            replace(
                "listen = \"127.0.0.1:0\"\ntls = { cert = \"server.crt\", key = \"server.key\" }",
                "listen = \"0.0.0.0:8080\"\nplain_http = true",
            ),
            "server.plain_http: plain HTTP is only allowed on a loopback address",
        ),
        (
            "no TLS and no plain_http",
            replace("tls = { cert = \"server.crt\", key = \"server.key\" }", ""),
            "server.tls: missing",
        ),
        (
            "master key missing",
            replace("master_key_file = \"master.key\"", "master_key_file = \"nokey\""),
            "keys.master_key_file: cannot access master key file",
        ),
        (
            "bad log format",
            append("[log]\nformat = \"xml\"\n"),
            "log.format: \"xml\" is not one of",
        ),
        (
            "console sessions that end before they can go idle",
            replace("[admin]\n", "[admin]\nsession_lifetime = \"10m\"\n"),
            "admin.session_lifetime: must not be shorter than admin.idle_timeout",
        ),
        (
            "console sessions of a year",
            replace("[admin]\n", "[admin]\nsession_lifetime = \"366d\"\n"),
            "admin.session_lifetime: must be at most 30d",
        ),
        (
            "zero rate",
            append("[[sources]]\nname = \"x\"\npreset = \"nextphone\"\nsecrets = [\"file:demo.secret\"]\nrate_limit = { per_second = 0.0, burst = 1 }\n"),
            "sources[1].rate_limit: per_second must be a positive number",
        ),
        (
            "zero refusal budget",
            replace("workers = 2", "workers = 2\nrejected_rate_limit = { per_second = 1.0, burst = 0 }"),
            "server.rejected_rate_limit: per_second must be a positive number and burst at least 1",
        ),
    ];
    assert!(cases.len() >= 12);
    for (what, edit, expected) in cases {
        let fixture = write_fixture(&AppOptions::default());
        // A second, unrelated key pair for the mismatch case.
        let other = fixture.ca.issue_server(&["localhost"], 30).unwrap();
        std::fs::write(fixture.dir.path().join("other.key"), other.key_pem).unwrap();
        let text = std::fs::read_to_string(&fixture.config_path).unwrap();
        std::fs::write(&fixture.config_path, edit(text)).unwrap();
        let problems = match Config::load_with_base(&fixture.config_path, fixture.dir.path()) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        };
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{what}: expected a problem containing {expected:?}, got {problems:#?}"
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let problems = problems_of(|t| {
        format!(
            "{t}\n[[sources]]\nname = \"Bad Name\"\npreset = \"nope\"\nsecrets = [\"env:WARDHOOK_TEST_UNSET_A\", \"env:WARDHOOK_TEST_UNSET_B\"]\n[[routes]]\nsource = \"ghost\"\nhandlers = [\"none\"]\n"
        )
    });
    assert!(problems.len() >= 5, "{problems:#?}");
}

#[test]
fn master_key_readable_by_group_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = write_fixture(&AppOptions::default());
    let key = fixture.dir.path().join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Config::load_with_base(&fixture.config_path, fixture.dir.path()).unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.path == "keys.master_key_file" && p.message.contains("chmod 600")),
        "{err}"
    );
}

#[test]
fn check_config_command_prints_problems_and_exits_non_zero() {
    let fixture = write_fixture(&AppOptions::default());
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    std::fs::write(
        &fixture.config_path,
        format!("{text}\n[[routes]]\nsource = \"ghost\"\nhandlers = [\"x\"]\n"),
    )
    .unwrap();
    let out = Command::new(wardhook_bin())
        .args(["check-config", "--config"])
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("routes[0].source: no source is named \"ghost\""),
        "{stdout}"
    );
    assert!(stdout.contains("routes[0].handlers[0]"), "{stdout}");

    std::fs::write(&fixture.config_path, text).unwrap();
    let ok = Command::new(wardhook_bin())
        .args(["check-config", "--config"])
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

/// Settings that are fine but that a stage cannot build from (an unknown handler kind) are
/// refused by `check-config` and by `serve` alike: both build through `app::build_stages`.
#[tokio::test]
async fn check_config_and_serve_refuse_what_a_stage_cannot_build_alike() {
    let fixture = write_fixture(&AppOptions::default());
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    std::fs::write(
        &fixture.config_path,
        format!("{text}\n[[handlers]]\nname = \"crm\"\nkind = \"no-such-kind\"\n"),
    )
    .unwrap();
    let out = Command::new(wardhook_bin())
        .args(["check-config", "--config"])
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("handlers[0].kind"), "{stdout}");

    let config = Config::load_with_base(&fixture.config_path, fixture.dir.path()).unwrap();
    let err = wardhook::app::Application::build_with_base(config, fixture.dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("handlers[0].kind"), "{err}");
}
