//! Bulk actions by filter on both backends: a count and a sample before anything changes,
//! re-queueing in bounded batches only up to the last job counted, error classes and time
//! windows that narrow, a replay of finished jobs, and the attempt points the source and
//! handler pages chart, over every node's jobs.

use chrono::{Duration as TimeDelta, Utc};

use super::{claim, failed_attempt, no_predecessors, ok_attempt, submit, Harness};
use crate::store::console_bulk::{BulkFilter, BulkKind};
use crate::store::sqlite::tests::nextphone;
use crate::store::types::{AttemptResult, NextStep};
use crate::store::Storage;

fn filter(kind: BulkKind) -> BulkFilter {
    BulkFilter {
        kind,
        handler: Some("crm".into()),
        source: None,
        error_class: None,
        since: None,
        until: None,
    }
}

/// Submit one call for `crm` on `store` and finish its one attempt with `result`.
async fn one_job(store: &dyn Storage, call: &str, result: Option<&str>) {
    submit(store, nextphone("call.ended", call), &["crm"])
        .await
        .expect("submit");
    let job = claim(store, no_predecessors()).await.expect("due");
    let (record, step) = match result {
        None => (ok_attempt(serde_json::json!({})), NextStep::Done),
        Some(reason) => (
            failed_attempt(AttemptResult::Permanent {
                reason: reason.into(),
            }),
            NextStep::Dead,
        ),
    };
    store
        .finish_attempt(job, record, step)
        .await
        .expect("finish");
}

async fn dead_letters_are_counted_then_retried_in_batches_up_to_the_last_one_counted(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    let before = Utc::now() - TimeDelta::seconds(1);
    one_job(&*a, "bulk-1", Some("HTTP 503 from crm.example")).await;
    one_job(&*b, "bulk-2", Some("HTTP 502 from crm.example")).await;
    one_job(&*a, "bulk-3", Some("HTTP 400 from crm.example")).await;
    one_job(&*b, "bulk-4", None).await;
    let console = a.console();

    let all = console
        .bulk_match(filter(BulkKind::Retry))
        .await
        .expect("match");
    assert_eq!(all.count, 3, "every node's dead letters: {all:?}");
    assert_eq!(all.sample.len(), 3);
    assert!(all.sample.windows(2).all(|w| w[0].job_id < w[1].job_id));
    let server_errors = BulkFilter {
        error_class: Some("http_5xx".into()),
        since: Some(before),
        until: Some(Utc::now() + TimeDelta::minutes(1)),
        ..filter(BulkKind::Retry)
    };
    let counted = console
        .bulk_match(server_errors.clone())
        .await
        .expect("5xx");
    assert_eq!(counted.count, 2);
    for (narrower, what) in [
        (
            BulkFilter {
                since: Some(Utc::now() + TimeDelta::hours(1)),
                ..filter(BulkKind::Retry)
            },
            "nothing died in the future",
        ),
        (
            BulkFilter {
                until: Some(before),
                ..filter(BulkKind::Retry)
            },
            "nothing died before the test",
        ),
        (
            BulkFilter {
                source: Some("other".into()),
                ..filter(BulkKind::Retry)
            },
            "no other source",
        ),
        (
            BulkFilter {
                handler: Some("slack".into()),
                ..filter(BulkKind::Retry)
            },
            "no slack jobs",
        ),
        (
            BulkFilter {
                error_class: Some("timeout".into()),
                ..filter(BulkKind::Retry)
            },
            "no timeouts",
        ),
    ] {
        assert_eq!(
            console.bulk_match(narrower).await.expect(what).count,
            0,
            "{what}"
        );
    }

    // A dead letter after the count is not swept in: the action stops at the last one counted.
    one_job(&*b, "bulk-5", Some("HTTP 500 from crm.example")).await;
    let through = counted.through_job.expect("a last job");
    let (mut after, mut requeued, mut batches) = (0, 0, 0);
    loop {
        let step = console
            .bulk_requeue(server_errors.clone(), after, through, 1)
            .await
            .expect("batch");
        requeued += step.requeued;
        batches += 1;
        match step.next_after {
            Some(next) => after = next,
            None => break,
        }
        assert!(batches < 10, "batches end");
    }
    assert_eq!(requeued, 2);
    assert!(batches >= 2, "one job per batch");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE status = 'pending'")
            .await,
        2
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE status = 'dead'")
            .await,
        2,
        "the 400 and the later 500 stay dead"
    );
    // Running it again changes nothing: they are no longer dead.
    let again = console
        .bulk_requeue(server_errors, 0, through, 100)
        .await
        .expect("again");
    assert_eq!(again.requeued, 0);

    // A replay takes the finished job.
    let replay = console
        .bulk_match(filter(BulkKind::Replay))
        .await
        .expect("replay match");
    assert_eq!(replay.count, 1);
    let step = b
        .console()
        .bulk_requeue(
            filter(BulkKind::Replay),
            0,
            replay.through_job.expect("last"),
            100,
        )
        .await
        .expect("replay");
    assert_eq!((step.requeued, step.next_after), (1, None));
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE status = 'done'")
            .await,
        0
    );

    // Attempt points: every node's, narrowed by handler and source.
    let since = before - TimeDelta::minutes(1);
    let points = console
        .attempt_points(since, Some("crm".into()), None)
        .await
        .expect("points");
    assert_eq!(points.len(), 5);
    assert_eq!(points.iter().filter(|p| p.ok).count(), 1);
    assert!(points
        .iter()
        .any(|p| p.error.as_deref() == Some("HTTP 400 from crm.example")));
    assert!(points
        .windows(2)
        .all(|w| w[0].started_at <= w[1].started_at));
    assert_eq!(
        console
            .attempt_points(since, None, Some("nextphone".into()))
            .await
            .expect("by source")
            .len(),
        5
    );
    for (handler, source) in [(Some("slack"), None), (None, Some("other"))] {
        let none = console
            .attempt_points(since, handler.map(Into::into), source.map(Into::into))
            .await
            .expect("none");
        assert!(none.is_empty());
    }
}

both_backends!(dead_letters_are_counted_then_retried_in_batches_up_to_the_last_one_counted);
