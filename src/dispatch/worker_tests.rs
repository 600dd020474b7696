//! The dispatch worker against a real SQLite store: a panicking handler costs one attempt,
//! never the worker, and its panic message never reaches the record; retry delays stay in
//! bounds whatever a destination asks for.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use wardhook_sdk::{Context, Event, Handler, HandlerError, Outcome};

use super::worker::{retry_delay, retry_time, Dispatcher, Plan, TaskOutcome, MAX_RETRY_DELAY};
use crate::config::DispatchSettings;
use crate::crypto::{Keyring, MasterKey};
use crate::normalize::{normalize, Envelope, IntakeInput};
use crate::store::{JobSpec, Storage, Store, StoreOptions};

/// Planted in the panic message: must never show up in a stored reason.
const CANARY: &str = "PANIC-CANARY-caller-said-555-0100";

#[derive(Debug)]
struct Panicking(&'static str);

#[wardhook_sdk::async_trait]
impl Handler for Panicking {
    fn name(&self) -> &str {
        self.0
    }
    async fn handle(&self, event: &Event, _: &mut Context) -> Result<Outcome, HandlerError> {
        panic!("{CANARY} while handling {}", event.delivery_id);
    }
}

#[derive(Debug)]
struct Fine(&'static str);

#[wardhook_sdk::async_trait]
impl Handler for Fine {
    fn name(&self) -> &str {
        self.0
    }
    async fn handle(&self, _: &Event, _: &mut Context) -> Result<Outcome, HandlerError> {
        Ok(Outcome::done())
    }
}

fn settings(schedule: &[u64]) -> DispatchSettings {
    DispatchSettings {
        workers: 1,
        time_zone: chrono_tz::Tz::UTC,
        retry_schedule: schedule.iter().map(|s| Duration::from_secs(*s)).collect(),
        handler_timeout: Duration::from_secs(5),
        max_concurrency_per_handler: 1,
        circuit_failures: 100,
        circuit_open: Duration::from_secs(60),
    }
}

async fn deliver(store: &Store, call_id: &str, handler: &str) {
    let body = format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{call_id}"}}}}"#
    );
    let input = IntakeInput::for_test("nextphone", Envelope::NextPhone, body.as_bytes());
    let mut normalized = normalize(&input, Utc::now()).expect("normalizes");
    store
        .intake(input, &mut normalized, vec![JobSpec::new(handler)])
        .await
        .expect("stored");
}

fn metric_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_panicking_handler_costs_an_attempt_with_a_fixed_reason_and_the_next_job_still_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        &dir.path().join("w.db"),
        Keyring::from_master(&MasterKey::from_bytes([9; 32])),
        StoreOptions::default(),
    )
    .expect("store");
    deliver(&store, "c1", "panicky-worker-test").await;
    deliver(&store, "c2", "steady-worker-test").await;
    let plan = Plan::new(
        vec![
            Arc::new(Panicking("panicky-worker-test")) as Arc<dyn Handler>,
            Arc::new(Fine("steady-worker-test")),
        ],
        Vec::new(),
    );
    let dispatcher = Dispatcher::new(
        Arc::new(store.clone()),
        Arc::new(RwLock::new(Arc::new(plan))),
        settings(&[0, 0]),
    );
    let series = "wardhook_handler_panics_total{handler=\"panicky-worker-test\"}";
    let panics_before = metric_value(&crate::metrics::render(&[]), series);

    let first = dispatcher.try_execute_task().await.expect("step");
    let TaskOutcome::Retry { job_id, after } = first else {
        panic!("the panicking job is retried on its schedule: {first:?}");
    };
    assert_eq!(after, Duration::ZERO);
    let second = dispatcher.try_execute_task().await.expect("step");
    let third = dispatcher.try_execute_task().await.expect("step");
    assert!(
        matches!(second, TaskOutcome::Done { .. }) || matches!(third, TaskOutcome::Done { .. }),
        "the next job still runs: {second:?} {third:?}"
    );
    let outcomes = [second, third];
    assert!(
        outcomes.contains(&TaskOutcome::Dead { job_id }),
        "schedule exhausted after two panics: {outcomes:?}"
    );
    assert_eq!(
        dispatcher.try_execute_task().await.expect("step"),
        TaskOutcome::Idle
    );

    let attempts = store.job_attempts(job_id).await.expect("attempts");
    assert_eq!(attempts.len(), 2);
    for a in &attempts {
        assert_eq!(a.result, "retryable");
        assert_eq!(
            a.error.as_deref(),
            Some("handler panicky-worker-test panicked")
        );
    }
    let panics_after = metric_value(&crate::metrics::render(&[]), series);
    assert_eq!(panics_after - panics_before, 2);
    // Nothing of the panic message is stored anywhere in the database file.
    drop(dispatcher);
    drop(store);
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "the panic message reached a file"
        );
    }
}

#[test]
fn retry_delays_stay_in_bounds_whatever_the_destination_asks() {
    let day = wardhook_sdk::limits::MAX_RETRY_AFTER;
    let ten_s = Duration::from_secs(10);
    // The schedule's step when the destination asks for less.
    assert_eq!(retry_delay(ten_s, Some(Duration::from_secs(3)), 0.0), ten_s);
    // The destination's delay when longer, up to a day, plus at most 20 % jitter.
    assert_eq!(
        retry_delay(ten_s, Some(Duration::from_secs(42)), 0.0),
        Duration::from_secs(42)
    );
    assert_eq!(retry_delay(ten_s, Some(Duration::MAX), 0.0), day);
    assert!(retry_delay(ten_s, Some(Duration::MAX), 0.999) <= day.mul_f64(1.2));
    // A config step beyond a year and nonsense jitter are held too.
    assert_eq!(retry_delay(Duration::MAX, None, 1.0), MAX_RETRY_DELAY);
    assert_eq!(retry_delay(ten_s, None, f64::NAN), ten_s);
    assert_eq!(retry_delay(ten_s, None, -3.0), ten_s);
    // And the time it lands on is always a real one.
    let now = Utc::now();
    assert!(retry_time(now, Duration::MAX) <= now + chrono::TimeDelta::days(367));
    assert!(retry_time(now, Duration::from_secs(99_999_999_999_999)) > now);
}
