//! The exec handler running real programs (small `/bin/sh` scripts written to a temp dir).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wardhook_handler_exec::ExecFactory;
use wardhook_sdk::testing::{self, ResultExt};
use wardhook_sdk::Event;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn event() -> Event {
    testing::event_from_json(
        r#"{"delivery_id": "dlv_9", "call_id": "call_42",
            "caller": {"phone": "+15551234567", "name": "Pat Doe"},
            "data": {"duration_seconds": 61, "summary": "knee pain"}}"#,
    )
}

fn build(name: &str, toml: &str) -> std::sync::Arc<dyn wardhook_sdk::Handler> {
    testing::build::<ExecFactory>(name, toml)
}

#[tokio::test]
async fn exit_zero_captures_json_stdout_and_the_program_gets_the_event_on_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = script(
        dir.path(),
        "emr.sh",
        r#"cat > "$2"; printf '{"emr_id": "E-%s", "attempt": "%s"}' "$1" "$WARDHOOK_ATTEMPT""#,
    );
    let stdin_copy = dir.path().join("stdin.json");
    let h = build(
        "emr",
        &format!(
            "phi = \"full\"\nbaa = true\nprogram = \"{}\"\nargs = [\"{{{{ call_id }}}}\", \"{}\"]",
            prog.display(),
            stdin_copy.display()
        ),
    );

    let outcome = testing::run(&*h, &event()).await.expect_ok();

    assert_eq!(
        outcome.data,
        Some(serde_json::json!({"emr_id": "E-call_42", "attempt": "1"}))
    );
    let got: Event = serde_json::from_slice(&std::fs::read(&stdin_copy).expect("stdin copy"))
        .expect("stdin is the event JSON");
    assert_eq!(got, event());
}

#[tokio::test]
async fn exit_codes_map_to_outcomes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (code, expect) in [(0, "ok"), (75, "retry"), (1, "permanent"), (2, "permanent")] {
        let prog = script(
            dir.path(),
            &format!("exit{code}.sh"),
            &format!("exit {code}"),
        );
        let h = build("p", &format!("program = \"{}\"", prog.display()));
        let result = testing::run(&*h, &event()).await;
        match expect {
            "ok" => {
                result.expect_ok();
            }
            "retry" => {
                assert_eq!(result.expect_retryable(), None, "exit {code}");
            }
            _ => {
                assert_eq!(
                    result.expect_permanent(),
                    format!("exit{code}.sh exited with {code}")
                );
            }
        }
    }
}

#[tokio::test]
async fn the_environment_is_cleared_except_the_allowlist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("env.txt");
    let secret = dir.path().join("tok");
    std::fs::write(&secret, "tok-1\n").expect("secret");
    let prog = script(dir.path(), "env.sh", r#"/usr/bin/env > "$1""#);
    let h = build(
        "p",
        &format!(
            "program = \"{}\"\nargs = [\"{}\"]\npass_env = [\"PATH\"]\nenv = {{ CLINIC = \"north\" }}\nsecret_env = {{ EMR_TOKEN = \"file:{}\" }}",
            prog.display(),
            out.display(),
            secret.display()
        ),
    );
    testing::run(&*h, &event()).await.expect_ok();

    let env = std::fs::read_to_string(&out).expect("env dump");
    let mut names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    names.sort_unstable();
    // `sh` itself may add PWD; nothing from the test process may leak.
    names.retain(|n| *n != "PWD");
    assert_eq!(
        names,
        [
            "CLINIC",
            "EMR_TOKEN",
            "PATH",
            "WARDHOOK_ATTEMPT",
            "WARDHOOK_HANDLER",
            "WARDHOOK_IDEMPOTENCY_KEY"
        ]
    );
    assert!(env.contains("WARDHOOK_IDEMPOTENCY_KEY=dlv_9:p\n"));
    assert!(env.contains("EMR_TOKEN=tok-1\n"));
}

fn is_gone(pid: i32) -> bool {
    // Gone, or a zombie waiting for init to reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_hung_program_and_its_children_are_killed_at_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let prog = script(
        dir.path(),
        "hang.sh",
        r#"sleep 60 & echo $! > "$1"; echo $$ >> "$1"; sleep 60"#,
    );
    let h = build(
        "p",
        &format!(
            "program = \"{}\"\nargs = [\"{}\"]\ntimeout_secs = 1",
            prog.display(),
            pids.display()
        ),
    );

    let started = Instant::now();
    let result = testing::run(&*h, &event()).await;

    assert!(
        started.elapsed() < Duration::from_secs(10),
        "killed at the timeout"
    );
    let err = result.as_ref().expect_err("timed out");
    assert_eq!(err.reason(), "hang.sh timed out after 1 s and was killed");
    assert!(err.is_retryable());
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .expect("pids")
        .lines()
        .map(|l| l.trim().parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pids.iter().all(|p| is_gone(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes {pids:?} still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_phi_none_program_gets_a_redacted_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("stdin.json");
    let prog = script(dir.path(), "count.sh", r#"cat > "$1""#);
    let h = build(
        "counter",
        &format!(
            "program = \"{}\"\nargs = [\"{}\"]",
            prog.display(),
            copy.display()
        ),
    );
    testing::run(&*h, &event()).await.expect_ok();
    let seen = std::fs::read_to_string(&copy).expect("copy");
    assert!(!seen.contains("+1555"), "{seen}");
    assert!(!seen.contains("knee"), "{seen}");
    assert!(seen.contains("\"duration_seconds\":61"), "{seen}");
}

#[test]
fn config_problems_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = script(dir.path(), "ok.sh", "exit 0");
    let cases = [
        (
            format!("program = \"{}/missing\"", dir.path().display()),
            "program",
        ),
        (
            format!(
                "program = \"{}\"\nargs = [\"{{{{ caller.phone }}}}\"]",
                prog.display()
            ),
            "args[0]",
        ),
        (
            format!(
                "program = \"{}\"\nsecret_env = {{ T = \"literal\" }}",
                prog.display()
            ),
            "secret_env.T",
        ),
    ];
    for (toml, path) in cases {
        let problems = match testing::try_build::<ExecFactory>("p", &toml) {
            Ok(_) => panic!("expected a problem for {toml}"),
            Err(p) => p,
        };
        assert!(
            problems.iter().any(|p| p.path == path),
            "{toml}: {problems:?}"
        );
    }
}
