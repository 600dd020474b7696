//! The alert table's contract, run against both backends like [`super::conformance`]: one
//! unresolved alert per key whoever opens it, every transition audited, state kept across a
//! reopen of the store, the facts the rules read, and the evaluation lease.

use std::time::Duration;

use chrono::Utc;

use super::alerts::{AlertState, NewAlert};
use super::conformance::{both_backends, Harness};
use super::sqlite::tests::nextphone;
use super::types::{AttemptRecord, AttemptResult, IntakeOutcome, NextStep, Requester};
use super::StoreError;

fn crm_failing() -> NewAlert {
    NewAlert {
        rule: "handler_failing".into(),
        subject: "crm".into(),
        summary: "Handler crm: the last 5 attempts failed.".into(),
    }
}

fn operator() -> Requester {
    Requester::admin_token("tk0123456789")
}

async fn an_alert_opens_once_is_acknowledged_once_and_resolves_once_with_audit_records(h: Harness) {
    let a = h.node("node-a").await;
    let b = h.node("node-b").await;
    // Two evaluators racing on the same condition: exactly one opens it.
    let (first, second) = tokio::join!(
        a.alerts().open_alert(crm_failing()),
        b.alerts().open_alert(crm_failing())
    );
    let opened: Vec<_> = [first.expect("open a"), second.expect("open b")]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(opened.len(), 1, "one node opens it");
    let alert = opened[0].clone();
    assert_eq!(alert.state, AlertState::Open);
    assert!(alert.id.starts_with("alr_"));
    assert!(a
        .alerts()
        .open_alert(crm_failing())
        .await
        .expect("again")
        .is_none());

    // Acknowledged once; a second acknowledgement changes nothing; an unknown id is not found.
    let acked = b
        .alerts()
        .acknowledge_alert(alert.id.clone(), operator())
        .await
        .expect("ack")
        .expect("was open");
    assert_eq!(acked.state, AlertState::Acknowledged);
    assert_eq!(acked.acknowledged_by.as_deref(), Some("tk0123456789"));
    assert!(a
        .alerts()
        .acknowledge_alert(alert.id.clone(), operator())
        .await
        .expect("ack again")
        .is_none());
    assert!(matches!(
        a.alerts()
            .acknowledge_alert("alr_unknown".into(), operator())
            .await,
        Err(StoreError::NotFound(_))
    ));

    // The state is in the database: a store opened afresh sees it.
    drop(a);
    let a = h.node("node-a").await;
    let listed = a.alerts().list_alerts(10).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, AlertState::Acknowledged);

    // Resolved once, by whichever node gets there first.
    let (r1, r2) = tokio::join!(
        a.alerts().resolve_alert(alert.key()),
        b.alerts().resolve_alert(alert.key())
    );
    let resolved: Vec<_> = [r1.expect("resolve a"), r2.expect("resolve b")]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(resolved.len(), 1, "one node resolves it");
    assert_eq!(resolved[0].state, AlertState::Resolved);
    assert!(resolved[0].resolved_at.is_some());

    // The same condition later is a new alert.
    let reopened = a
        .alerts()
        .open_alert(crm_failing())
        .await
        .expect("reopen")
        .expect("a new alert");
    assert_ne!(reopened.id, alert.id);
    let listed = a.alerts().list_alerts(10).await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|x| (x.id.as_str(), x.state))
            .collect::<Vec<_>>(),
        vec![
            (reopened.id.as_str(), AlertState::Open),
            (alert.id.as_str(), AlertState::Resolved)
        ],
        "unresolved first, then resolved"
    );
    assert_eq!(a.alerts().list_alerts(0).await.expect("list").len(), 1);

    for (action, n) in [
        ("alert_opened", 2),
        ("alert_acknowledged", 1),
        ("alert_resolved", 1),
    ] {
        assert_eq!(
            h.count(&format!(
                "SELECT COUNT(*) FROM audit_log WHERE action = '{action}'"
            ))
            .await,
            n,
            "{action}"
        );
    }
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'alert_acknowledged'
               AND actor = 'admin_token:tk0123456789'"
        )
        .await,
        1
    );
    h.verify_audit().await.expect("audit chain verifies");
}

async fn the_rules_read_attempts_dead_letters_and_traffic_from_every_node(h: Harness) {
    let store = h.node("node-a").await;
    let input = nextphone("call.ended", "c-alerts");
    let mut normalized = crate::normalize::normalize(&input, Utc::now()).expect("normalizes");
    let outcome = store
        .intake(input, &mut normalized, vec![super::JobSpec::new("crm")])
        .await
        .expect("intake");
    assert!(matches!(outcome, IntakeOutcome::Accepted { .. }));
    let job = store
        .claim_next(
            Vec::new(),
            Duration::from_secs(30),
            std::sync::Arc::new(super::types::Predecessors::none()),
        )
        .await
        .expect("claim")
        .expect("a job");
    let now = Utc::now();
    store
        .finish_attempt(
            job,
            AttemptRecord {
                started_at: now,
                latency: Duration::from_millis(12),
                http_status: Some(400),
                destination: Some("crm.example".into()),
                result: AttemptResult::Permanent {
                    reason: "HTTP 400".into(),
                },
            },
            NextStep::Dead,
        )
        .await
        .expect("finish");
    let facts = store
        .alerts()
        .alert_facts(100, Utc::now() - chrono::Duration::days(7))
        .await
        .expect("facts");
    assert_eq!(facts.attempts.len(), 1);
    assert_eq!(
        (facts.attempts[0].handler.as_str(), facts.attempts[0].ok),
        ("crm", false)
    );
    assert_eq!(facts.dead_letters, vec![("crm".to_owned(), 1)]);
    assert_eq!(facts.sources.len(), 1);
    assert_eq!(facts.sources[0].received, 1);
    assert!(facts.sources[0].last_received.is_some());
}

async fn one_node_at_a_time_holds_the_evaluation_lease(h: Harness) {
    let a = h.node("node-a").await;
    let b = h.node("node-b").await;
    assert!(a
        .alerts()
        .lead_alerts(Duration::from_secs(2))
        .await
        .expect("lead"));
    assert!(a
        .alerts()
        .lead_alerts(Duration::from_secs(2))
        .await
        .expect("renew"));
    let b_leads = b
        .alerts()
        .lead_alerts(Duration::from_secs(2))
        .await
        .expect("b");
    if matches!(h, Harness::Postgres { .. }) {
        assert!(!b_leads, "node-b waits while node-a holds the lease");
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert!(
            b.alerts()
                .lead_alerts(Duration::from_secs(2))
                .await
                .expect("b"),
            "node-b takes over a lapsed lease"
        );
        assert!(!a
            .alerts()
            .lead_alerts(Duration::from_secs(2))
            .await
            .expect("a"));
        assert_eq!(a.alerts().alert_node(), "node-a");
    } else {
        assert!(b_leads, "one SQLite server evaluates everything");
        assert_eq!(a.alerts().alert_node(), "local");
    }
}

both_backends!(
    an_alert_opens_once_is_acknowledged_once_and_resolves_once_with_audit_records,
    the_rules_read_attempts_dead_letters_and_traffic_from_every_node,
    one_node_at_a_time_holds_the_evaluation_lease,
);
