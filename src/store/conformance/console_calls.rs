//! "Find a call" on both backends: the console's search by call id and by caller phone (each
//! through its blind index), event type, handler, status, source and time, paged, over every
//! node's deliveries; by a caller's phone a handler's output names, too (a job's or a real-time reply's).

use chrono::{Duration as TimeDelta, Utc};

use super::{chained, claim, ok_attempt, operator, submit, Harness};
use crate::normalize::{Envelope, IntakeInput};
use crate::store::caller_phone::{CallerPhone, PhonePointer};
use crate::store::console_calls::{CallQuery, MAX_CALL_PAGE};
use crate::store::sqlite::tests::nextphone;
use crate::store::types::{AttemptResult, NextStep};
use crate::store::{IntakeOutcome, Storage};

fn ids(found: &crate::store::console_calls::CallSearch) -> Vec<String> {
    found.deliveries.iter().map(|d| d.meta.id.clone()).collect()
}

/// The ids of the deliveries `store`'s console finds by the caller's `phone`.
pub(crate) async fn found_by_phone(store: &dyn Storage, phone: &str) -> Vec<String> {
    let found = store
        .console()
        .find_calls(CallQuery {
            caller_phone: Some(phone.to_owned()),
            limit: 50,
            ..CallQuery::default()
        })
        .await
        .expect(phone);
    ids(&found)
}

async fn a_call_is_found_by_its_id_and_narrowed_by_every_filter(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    let mut accepted = Vec::new();
    for (store, event, call) in [
        (&a, "call.answered", "find-me"),
        (&b, "call.ended", "find-me"),
        (&b, "call.ended", "someone-else"),
    ] {
        match submit(&**store, nextphone(event, call), &["crm"])
            .await
            .expect("intake")
        {
            IntakeOutcome::Accepted { delivery_id } => accepted.push(delivery_id),
            other => panic!("{other:?}"),
        }
    }
    let query = |f: &dyn Fn(&mut CallQuery)| {
        let mut q = CallQuery {
            limit: 50,
            ..CallQuery::default()
        };
        f(&mut q);
        q
    };
    let console = a.console();

    let by_call = console
        .find_calls(query(&|q| q.call_id = Some("find-me".into())))
        .await
        .expect("by call");
    let mut found = ids(&by_call);
    found.sort();
    let mut expected = accepted[..2].to_vec();
    expected.sort();
    assert_eq!(found, expected, "both events of the call, from both nodes");
    let call_ref = by_call.call_ref.expect("the blind index it compared");
    assert_eq!(call_ref.len(), 64);
    assert_ne!(call_ref, "find-me");

    let ended = console
        .find_calls(query(&|q| {
            q.call_id = Some("find-me".into());
            q.event_type = Some("call.ended".into());
        }))
        .await
        .expect("by event");
    assert_eq!(ids(&ended), vec![accepted[1].clone()]);

    let pending = console
        .find_calls(query(&|q| {
            q.handler = Some("crm".into());
            q.status = Some("pending".into());
        }))
        .await
        .expect("by handler and status");
    assert_eq!(pending.deliveries.len(), 3);
    assert!(pending
        .deliveries
        .iter()
        .all(|d| d.jobs == 1 && d.dead == 0));
    for (f, what) in [
        (
            &(|q: &mut CallQuery| q.status = Some("dead".into())) as &dyn Fn(&mut CallQuery),
            "no dead letters",
        ),
        (
            &|q: &mut CallQuery| q.handler = Some("slack".into()),
            "no slack jobs",
        ),
        (
            &|q: &mut CallQuery| q.source = Some("other".into()),
            "no other source",
        ),
        (
            &|q: &mut CallQuery| q.since = Some(Utc::now() + TimeDelta::hours(1)),
            "nothing after now",
        ),
        (
            &|q: &mut CallQuery| q.call_id = Some("nobody".into()),
            "no such call",
        ),
    ] {
        let none = console.find_calls(query(f)).await.expect(what);
        assert!(none.deliveries.is_empty(), "{what}: {:?}", none.deliveries);
    }

    // Paged newest first; a page never exceeds the maximum, whatever is asked.
    let first = console
        .find_calls(query(&|q| q.limit = 2))
        .await
        .expect("page 1");
    let second = console
        .find_calls(query(&|q| {
            q.limit = 2;
            q.offset = 2;
        }))
        .await
        .expect("page 2");
    assert_eq!(first.deliveries.len(), 2);
    assert_eq!(second.deliveries.len(), 1);
    let mut all: Vec<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    assert!(first.deliveries[0].meta.received_at >= first.deliveries[1].meta.received_at);
    all.sort();
    let mut every = accepted.clone();
    every.sort();
    assert_eq!(all, every);
    let huge = console
        .find_calls(query(&|q| q.limit = usize::MAX))
        .await
        .expect("clamped");
    assert!(huge.deliveries.len() <= MAX_CALL_PAGE);
}

/// A NextPhone event of call `call_id` from `phone`.
fn nextphone_from(call_id: &str, phone: &str) -> IntakeInput {
    let body = format!(
        r#"{{"event":"call.ended","data":{{"call_id":"{call_id}","caller":{{"phone":"{phone}"}}}}}}"#
    );
    IntakeInput::for_test("nextphone", Envelope::NextPhone, body.as_bytes())
}

async fn a_call_is_found_by_its_callers_phone_however_it_is_spelled(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    let mut accepted = Vec::new();
    // The same caller through two vendors (one sends a national number), another caller, and
    // an event naming no usable number.
    let twilio = IntakeInput::for_test(
        "twilio",
        Envelope::Twilio,
        b"CallSid=CA77&CallStatus=completed&From=%28555%29+123-4567&To=%2B15550100000",
    );
    for (store, input) in [
        (&a, nextphone_from("p-1", "+15551234567")),
        (&b, twilio),
        (&b, nextphone_from("p-2", "+1 555 999 0000")),
        (&a, nextphone_from("p-3", "anonymous")),
    ] {
        match submit(&**store, input, &["crm"]).await.expect("intake") {
            IntakeOutcome::Accepted { delivery_id } => accepted.push(delivery_id),
            other => panic!("{other:?}"),
        }
    }
    let console = b.console();
    let mut same_caller = accepted[..2].to_vec();
    same_caller.sort();
    for spelling in [
        "(555) 123-4567",
        "+15551234567",
        "1-555-123-4567",
        "tel:+1.555.123.4567",
    ] {
        let mut found = found_by_phone(&*b, spelling).await;
        found.sort();
        assert_eq!(
            found, same_caller,
            "{spelling}: both vendors' events, both nodes"
        );
    }
    assert_eq!(
        found_by_phone(&*b, "555 999 0000").await,
        vec![accepted[2].clone()]
    );
    for nobody in ["+15550000000", "anonymous", "not a number"] {
        let none = found_by_phone(&*b, nobody).await;
        assert!(none.is_empty(), "{nobody}: {none:?}");
    }
    // Combined with another filter, both must hold.
    let narrowed = console
        .find_calls(CallQuery {
            caller_phone: Some("5551234567".into()),
            source: Some("twilio".into()),
            limit: 50,
            ..CallQuery::default()
        })
        .await
        .expect("narrowed");
    assert_eq!(ids(&narrowed), vec![accepted[1].clone()]);

    // Only the blind index is stored, and only for events naming a number.
    assert_eq!(
        h.count("SELECT COUNT(*) FROM deliveries WHERE LENGTH(caller_ref) = 64")
            .await,
        3
    );
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM deliveries WHERE caller_ref LIKE '%5551234567%' \
             OR caller_ref LIKE '%5559990000%'"
        )
        .await,
        0
    );

    // A purged delivery keeps no index of its caller: the number no longer finds it.
    a.purge(Utc::now(), operator()).await.expect("purge");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM deliveries WHERE caller_ref IS NOT NULL")
            .await,
        0
    );
    assert!(found_by_phone(&*b, "(555) 123-4567").await.is_empty());
}

/// Of `accepted` — no caller, a caller of its own (+15551234567), a third — only the first is
/// found by +15552468100 (named for the first two), however spelled; the second by its own
/// number; and nothing by +15557770000, named after another number was.
async fn assert_indexed_by_the_first_number_named(store: &dyn Storage, accepted: &[String]) {
    for spelling in ["(555) 246-8100", "+15552468100", "1 555 246 8100"] {
        assert_eq!(
            found_by_phone(store, spelling).await,
            vec![accepted[0].clone()],
            "{spelling}: only the delivery without a caller of its own"
        );
    }
    assert_eq!(
        found_by_phone(store, "555 123 4567").await,
        vec![accepted[1].clone()],
        "the event's own caller wins"
    );
    assert!(
        found_by_phone(store, "+15557770000").await.is_empty(),
        "the first number named wins"
    );
}

/// A NextPhone event of call `call_id` naming no caller.
fn nextphone_without_caller(call_id: &str) -> IntakeInput {
    let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"{call_id}"}}}}"#);
    IntakeInput::for_test("nextphone", Envelope::NextPhone, body.as_bytes())
}

async fn a_call_is_found_by_the_phone_its_handlers_output_names(h: Harness) {
    let store = h.node("node-a").await;
    let mut accepted = Vec::new();
    // No caller (and a second handler after the CRM); a caller of its own; no caller again.
    for (input, jobs) in [
        (nextphone_without_caller("out-1"), &["crm", "lookup"][..]),
        (nextphone_from("out-2", "+15551234567"), &["crm"]),
        (nextphone_without_caller("out-3"), &["crm"]),
    ] {
        match submit(&*store, input, jobs).await.expect("intake") {
            IntakeOutcome::Accepted { delivery_id } => accepted.push(delivery_id),
            other => panic!("{other:?}"),
        }
    }
    // The CRM names the same number for the first two; for the third a number, not a string.
    let pointer = PhonePointer::parse("/data/contact/phone").expect("a pointer");
    let outputs = [
        serde_json::json!({"data": {"contact": {"phone": "+1 555 246 8100"}}, "status": 200}),
        serde_json::json!({"data": {"contact": {"phone": "(555) 246-8100"}}, "status": 200}),
        serde_json::json!({"data": {"contact": {"phone": 15552468100_u64}}, "status": 200}),
    ];
    // The lookup, after the CRM, names another number: the first one named stays.
    let lookup = serde_json::json!({"data": {"contact": {"phone": "+15557770000"}}});
    while let Some(job) = claim(&*store, chained("crm", "lookup")).await {
        let i = accepted
            .iter()
            .position(|d| *d == job.delivery_id)
            .expect("one of ours");
        let output = if job.handler == "lookup" {
            &lookup
        } else {
            &outputs[i]
        };
        let mut record = ok_attempt(output.clone());
        if let AttemptResult::Ok { caller_phone, .. } = &mut record.result {
            *caller_phone = pointer.read(output);
        }
        store
            .finish_attempt(job, record, NextStep::Done)
            .await
            .expect("finish");
    }
    assert_indexed_by_the_first_number_named(&*store, &accepted).await;
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE status = 'done'")
            .await,
        4,
        "every job ran"
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM deliveries WHERE caller_ref IS NULL")
            .await,
        1,
        "a value that is not a string indexes nothing"
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM deliveries WHERE caller_ref LIKE '%2468100%'")
            .await,
        0
    );
}

/// A computed real-time reply for `store`'s delivery `id`, naming `phone` as the number its
/// handlers' outputs gave.
async fn reply_naming(store: &dyn Storage, id: &str, phone: Option<&str>) {
    let reply = crate::store::Reply {
        status: 200,
        content_type: "application/json".into(),
        body: r#"{"greeting":"hello"}"#.into(),
        fallback: false,
    };
    store
        .record_reply(
            id.to_owned(),
            "nextphone".into(),
            reply,
            3,
            phone.map(CallerPhone::new),
        )
        .await
        .expect("reply");
}

async fn a_call_is_found_by_the_phone_its_real_time_reply_named(h: Harness) {
    let store = h.node("node-a").await;
    let mut accepted = Vec::new();
    for input in [
        nextphone_without_caller("rt-1"),
        nextphone_from("rt-2", "+15551234567"),
        nextphone_without_caller("rt-3"),
    ] {
        match submit(&*store, input, &[]).await.expect("intake") {
            IntakeOutcome::Accepted { delivery_id } => accepted.push(delivery_id),
            other => panic!("{other:?}"),
        }
    }
    reply_naming(&*store, &accepted[0], Some("+1 555 246 8100")).await;
    reply_naming(&*store, &accepted[1], Some("(555) 246-8100")).await;
    reply_naming(&*store, &accepted[2], None).await;
    // A retried request's reply is not stored again, and names nothing new.
    reply_naming(&*store, &accepted[2], Some("+15557770000")).await;
    assert_indexed_by_the_first_number_named(&*store, &accepted).await;
    assert_eq!(
        h.count("SELECT COUNT(*) FROM deliveries WHERE caller_ref IS NULL")
            .await,
        1
    );
}

both_backends!(
    a_call_is_found_by_its_id_and_narrowed_by_every_filter,
    a_call_is_found_by_its_callers_phone_however_it_is_spelled,
    a_call_is_found_by_the_phone_its_handlers_output_names,
    a_call_is_found_by_the_phone_its_real_time_reply_named
);
