//! The built-in rules and the Prometheus rules in `deploy/alerts/wardhook.rules.yml` watch the
//! same conditions with the same default thresholds: a site that runs both gets told of the
//! same things. Every built-in rule is either matched here to a Prometheus alert whose
//! expression carries the default threshold, or named in the file as console only.

use crate::config::alerts::AlertsSettings;

use super::rules;

/// `alert name → expression` of every rule in the file.
fn prometheus_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/alerts/wardhook.rules.yml"
    ))
    .expect("deploy/alerts/wardhook.rules.yml");
    text.split("- alert: ")
        .skip(1)
        .map(|block| {
            let name = block.lines().next().unwrap_or_default().trim().to_owned();
            let expr = block
                .split_once("expr:")
                .map(|(_, rest)| {
                    rest.split(['\n'])
                        .take_while(|l| {
                            !l.trim_start().starts_with("for:")
                                && !l.trim_start().starts_with("labels:")
                        })
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            (name, expr)
        })
        .collect()
}

fn secs(d: std::time::Duration) -> u64 {
    d.as_secs()
}

#[test]
fn the_built_in_rules_and_the_prometheus_rules_share_conditions_and_default_thresholds() {
    let d = AlertsSettings::default();
    let window_minutes = secs(d.handler_failure_window) / 60;
    let success = format!("< {}", 1.0 - d.handler_failure_rate);
    // (built-in rule, Prometheus alert, what its expression must say)
    let pairs: Vec<(&str, &str, Vec<String>)> = vec![
        (
            rules::HANDLER_FAILING,
            "WardhookHandlerSuccessBelow95Percent",
            vec![success, format!("[{window_minutes}m]")],
        ),
        (
            rules::HANDLER_FAILING,
            "WardhookHandlerFailingInARow",
            vec![format!(
                "wardhook_handler_failures_in_a_row >= {}",
                d.handler_failures_in_a_row
            )],
        ),
        (
            rules::DEAD_LETTERS,
            "WardhookDeadLettersGrowing",
            vec![format!("wardhook_dead_letters > {}", d.dead_letters - 1)],
        ),
        (
            rules::CERTIFICATE_EXPIRY,
            "WardhookCertificateExpiringSoon",
            vec![format!(
                "wardhook_tls_certificate_expiry_days < {}",
                d.certificate_days
            )],
        ),
        (
            rules::DISK_SPACE,
            "WardhookDataVolumeAlmostFull",
            vec![format!(
                "wardhook_storage_volume_used_percent > {}",
                d.disk_used_percent
            )],
        ),
        (
            rules::AUDIT_VERIFICATION,
            "WardhookAuditVerificationFailing",
            vec!["wardhook_audit_verified == 0".to_owned()],
        ),
        (
            rules::RELAY_BACKLOG,
            "WardhookRelayBacklogOld",
            vec![format!(
                "wardhook_relay_oldest_age_seconds > {}",
                secs(d.relay_oldest_age)
            )],
        ),
        (
            rules::RELAY_BACKLOG,
            "WardhookRelayNotPulled",
            vec![format!(
                "wardhook_relay_last_pull_timestamp_seconds > {}",
                secs(d.relay_not_pulled)
            )],
        ),
    ];
    let prometheus = prometheus_rules();
    for (rule, alert, must) in &pairs {
        let (_, expr) = prometheus
            .iter()
            .find(|(name, _)| name == alert)
            .unwrap_or_else(|| panic!("{alert} (for {rule}) is missing from the rules file"));
        for m in must {
            assert!(
                expr.contains(m.as_str()),
                "{alert} (for {rule}): expected {m:?} in {expr:?}"
            );
        }
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/alerts/wardhook.rules.yml"
    ))
    .expect("rules file");
    for rule in rules::CLUSTER_RULES.iter().chain(rules::NODE_RULES) {
        let paired = pairs.iter().any(|(r, _, _)| r == rule);
        let console_only = text
            .lines()
            .any(|l| l.trim_start().starts_with("# Console only:") && l.contains(rule));
        assert!(
            paired || console_only,
            "built-in rule {rule} has no Prometheus counterpart and is not named console only"
        );
    }
}
