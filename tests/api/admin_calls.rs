//! "Find a call" over the console API, on both backends: a call found by its id (compared only
//! through its blind index) and by handler and status, its timeline in time order with audit
//! records only for roles that read the audit log, page sizes clamped, and every search and
//! timeline one `calls_searched` record that never holds the call id itself. A call is also
//! found by its caller's phone number however it is spelled, and that search is on record
//! without the number; for an event naming no caller, by the number a handler's output names
//! (`caller_phone_from`).
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use wardhook::admin::Role;

use wardhook::dispatch::worker::TaskOutcome;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::admin::{
    admin_url, app_with_a_dead_letter, audit_rows, call, console_app_with, console_options,
    create_token, deliver_from, deliver_to, drain, send_signed, Db,
};
use crate::helpers::*;

async fn post_json(app: &TestApp, token: Option<&str>, path: &str, body: Value) -> (u16, Value) {
    let mut req = app.client().post(admin_url(app, path)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn a_call_is_found_by_its_id_and_its_timeline_reads_in_order_on(db: Db) {
    let Some((app, _crm, dead_id)) = app_with_a_dead_letter(db).await else {
        return;
    };
    assert_eq!(deliver_to(&app, "demo", "call-someone-else").await.0, 200);
    drain(&app).await;
    let (operator, _) = create_token(&app, "ops", Role::Operator);
    let (auditor, _) = create_token(&app, "aud", Role::Auditor);

    let (status, _) = post_json(&app, None, "/api/calls/search", json!({})).await;
    assert_eq!(status, 401);

    let (status, v) = post_json(
        &app,
        Some(&operator),
        "/api/calls/search",
        json!({ "call_id": "call-admin-1" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let found = v["deliveries"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["id"], dead_id.as_str());
    assert_eq!(found[0]["dead"], 1);

    let (_, v) = post_json(
        &app,
        Some(&operator),
        "/api/calls/search",
        json!({ "handler": "crm", "status": "dead", "per_page": 100000 }),
    )
    .await;
    assert_eq!(v["per_page"], 200, "the page size is clamped");
    let ids: Vec<&str> = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![dead_id.as_str()],
        "only the dead letter's delivery"
    );

    let (status, _) = post_json(
        &app,
        Some(&operator),
        "/api/calls/search",
        json!({ "since": "last tuesday" }),
    )
    .await;
    assert_eq!(status, 400);

    // The operator's timeline: the event and its attempt, no audit records.
    let (status, v) = post_json(
        &app,
        Some(&operator),
        "/api/calls/timeline",
        json!({ "call_id": "call-admin-1" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let entries = v["entries"].as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["event", "attempt"], "{v}");
    assert_eq!(entries[1]["what"], "crm");
    assert_eq!(entries[1]["status"], "permanent");

    // The auditor's also has the call's audit records, all in time order.
    let (_, v) = post_json(
        &app,
        Some(&auditor),
        "/api/calls/timeline",
        json!({ "call_id": "call-admin-1" }),
    )
    .await;
    let entries = v["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "audit" && e["what"] == "delivery_accepted"),
        "{v}"
    );
    let times: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");

    // Every search and timeline is on record, by its blind index only.
    let searched = audit_rows(&app, "calls_searched").await;
    assert_eq!(
        searched.len(),
        4,
        "two searches and two timelines: {searched:?}"
    );
    assert!(searched.iter().any(|(_, _, d)| d.contains("timeline")));
    let (status, export) = call(&app, Some(&auditor), "GET", "/api/audit/export").await;
    assert_eq!(status, 200);
    assert!(export.contains("calls_searched"));
    assert!(
        !export.contains("call-admin-1"),
        "the call id itself is never recorded"
    );
}

/// The ids of the deliveries a search by `phone` finds.
async fn found_by_phone(app: &TestApp, token: &str, phone: &str) -> Vec<String> {
    let (status, v) = post_json(
        app,
        Some(token),
        "/api/calls/search",
        json!({ "caller_phone": phone }),
    )
    .await;
    assert_eq!(status, 200, "{phone}: {v}");
    v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Each of `spellings` finds exactly the delivery `id`.
async fn each_spelling_finds(app: &TestApp, token: &str, spellings: &[&str], id: &str) {
    for spelling in spellings {
        assert_eq!(
            found_by_phone(app, token, spelling).await,
            vec![id.to_owned()],
            "{spelling}"
        );
    }
}

async fn a_call_is_found_by_its_callers_phone_however_it_is_spelled_on(db: Db) {
    let Some((app, _crm, _dead_id)) = app_with_a_dead_letter(db).await else {
        return;
    };
    let (status, v) = deliver_from(&app, "demo", "call-phone-1", "+1 (555) 010-1234").await;
    assert_eq!(status, 200, "{v}");
    let first = v["delivery_id"].as_str().unwrap().to_owned();
    // The sender gives a national number: the configured country code completes it.
    let (_, v) = deliver_from(&app, "demo", "call-phone-2", "555-010-9999").await;
    let second = v["delivery_id"].as_str().unwrap().to_owned();
    drain(&app).await;
    let (operator, _) = create_token(&app, "ops", Role::Operator);
    let (auditor, _) = create_token(&app, "aud", Role::Auditor);

    let spellings = [
        "(555) 010-1234",
        "+15550101234",
        "555.010.1234",
        "001 555 010 1234",
    ];
    each_spelling_finds(&app, &operator, &spellings, &first).await;
    assert_eq!(
        found_by_phone(&app, &operator, "+1 555 010 9999").await,
        vec![second.clone()]
    );
    for nobody in ["+15550000000", "anonymous"] {
        assert!(
            found_by_phone(&app, &operator, nobody).await.is_empty(),
            "{nobody}"
        );
    }
    let (status, _) = post_json(
        &app,
        Some(&operator),
        "/api/calls/search",
        json!({ "caller_phone": "5".repeat(65) }),
    )
    .await;
    assert_eq!(status, 400, "an overlong number is refused");

    // The timeline of the caller: the event and its attempt; the auditor's also the records.
    let (status, v) = post_json(
        &app,
        Some(&operator),
        "/api/calls/timeline",
        json!({ "caller_phone": "555 010 1234" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let kinds: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["event", "attempt"], "{v}");
    assert_eq!(v["entries"][0]["delivery_id"], first.as_str());
    let (_, v) = post_json(
        &app,
        Some(&auditor),
        "/api/calls/timeline",
        json!({ "caller_phone": "+15550101234" }),
    )
    .await;
    assert!(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "audit"
                && e["what"] == "delivery_accepted"
                && e["delivery_id"] == first.as_str()),
        "{v}"
    );
    let (status, _) = post_json(
        &app,
        Some(&operator),
        "/api/calls/timeline",
        json!({ "call_id": "call-phone-1", "caller_phone": "+15550101234" }),
    )
    .await;
    assert_eq!(status, 400, "one key at a time");

    // Each phone search is on record as such, without the number or its index.
    let searched = audit_rows(&app, "calls_searched").await;
    assert!(
        searched
            .iter()
            .filter(|(_, _, d)| d.contains("search_by_phone"))
            .count()
            >= 7,
        "{searched:?}"
    );
    assert!(searched
        .iter()
        .any(|(_, _, d)| d.contains("timeline_by_phone")));
    let (status, export) = call(&app, Some(&auditor), "GET", "/api/audit/export").await;
    assert_eq!(status, 200);
    for digits in ["5550101234", "010-1234", "010 1234", "5550109999"] {
        assert!(!export.contains(digits), "{digits} is in the audit log");
    }
}

crate::on_both_backends! {
    a_call_is_found_by_its_callers_phone_however_it_is_spelled_on =>
        a_call_is_found_by_its_callers_phone_however_it_is_spelled,
        a_call_is_found_by_its_callers_phone_however_it_is_spelled_on_postgres;
}

crate::on_both_backends! {
    a_call_is_found_by_its_id_and_its_timeline_reads_in_order_on =>
        a_call_is_found_by_its_id_and_its_timeline_reads_in_order,
        a_call_is_found_by_its_id_and_its_timeline_reads_in_order_on_postgres;
}

/// The fixture's `crm` handler keeps its (real, local) CRM's JSON answer and takes the caller's
/// phone from it; its request names only the call, so events without a caller go out too.
pub fn crm_naming_the_caller(crm: &str) -> AppOptions {
    let mut opts = console_options("demo", "crm", crm, "");
    let from = r#"body = '{"phone": "{{ caller.phone }}"}'"#;
    assert!(opts.extra.contains(from), "the fixture's crm body");
    opts.extra = opts.extra.replacen(
        from,
        r#"body = '{"call": "{{ call_id }}"}'
capture_response = true
caller_phone_from = "/data/contact/phone""#,
        1,
    );
    opts
}

/// A CRM on loopback answering every lead with a contact whose phone is `phone`.
pub async fn crm_answering_with(phone: &str) -> MockServer {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({ "contact": { "id": "c-77", "phone": phone } })),
        )
        .mount(&crm)
        .await;
    crm
}

async fn a_call_is_found_by_the_phone_the_crm_answers_with_on(db: Db) {
    let crm = crm_answering_with("+1 (555) 010-4321").await;
    let Some(app) = console_app_with(db, crm_naming_the_caller(&crm.uri())).await else {
        return;
    };
    let body = r#"{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{"call_id":"call-crm-1"}}"#;
    let (status, v) = send_signed(&app, "demo", body, true).await;
    assert_eq!(status, 200, "{v}");
    let id = v["delivery_id"].as_str().unwrap().to_owned();
    let (_, v) = deliver_from(&app, "demo", "call-crm-2", "+1 555 010 1234").await;
    let own_caller = v["delivery_id"].as_str().unwrap().to_owned();
    let (operator, _) = create_token(&app, "ops", Role::Operator);
    assert!(
        found_by_phone(&app, &operator, "555 010 4321")
            .await
            .is_empty(),
        "nothing names the number before the CRM answers"
    );

    assert!(matches!(
        drain(&app).await[..],
        [TaskOutcome::Done { .. }, TaskOutcome::Done { .. }]
    ));
    // The call without a caller, by the number its CRM answered with.
    let spellings = ["(555) 010-4321", "+15550104321", "555.010.4321"];
    each_spelling_finds(&app, &operator, &spellings, &id).await;
    assert_eq!(
        found_by_phone(&app, &operator, "(555) 010-1234").await,
        vec![own_caller],
        "the event's own caller is kept"
    );
}

crate::on_both_backends! {
    a_call_is_found_by_the_phone_the_crm_answers_with_on =>
        a_call_is_found_by_the_phone_the_crm_answers_with,
        a_call_is_found_by_the_phone_the_crm_answers_with_on_postgres;
}

/// A real-time route whose CRM lookup names the caller's phone: the reply is computed on the
/// call, and the call is found by that number, though the event named no caller.
async fn a_call_is_found_by_the_phone_a_real_time_lookup_answers_with_on(db: Db) {
    let crm = crm_answering_with("+1 (555) 010-4321").await;
    let mut opts = crm_naming_the_caller(&crm.uri());
    let route = "handlers = [\"crm\"]\n";
    assert!(opts.extra.contains(route), "the fixture's route");
    opts.extra = opts.extra.replacen(
        route,
        r#"handlers = ["crm"]
mode = "realtime"
baa = true
deadline_ms = 3000
respond = '{"delivery": "{{ delivery_id }}", "contact": "{{ app_data.crm.data.contact.id }}"}'
fallback = '{"delivery": "none"}'
"#,
        1,
    );
    let Some(app) = console_app_with(db, opts).await else {
        return;
    };
    let body = r#"{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{"call_id":"call-rt-1"}}"#;
    let (status, reply) = send_signed(&app, "demo", body, true).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["contact"], "c-77", "a computed reply: {reply}");
    let id = reply["delivery"].as_str().unwrap().to_owned();
    let (operator, _) = create_token(&app, "ops", Role::Operator);
    each_spelling_finds(&app, &operator, &["(555) 010-4321", "+15550104321"], &id).await;
    // A retry of the same request gets the stored reply and indexes nothing else.
    let (status, again) = send_signed(&app, "demo", body, true).await;
    assert_eq!((status, &again), (200, &reply));
    assert!(
        found_by_phone(&app, &operator, "(555) 010-1234")
            .await
            .is_empty(),
        "no other number is indexed"
    );
}

crate::on_both_backends! {
    a_call_is_found_by_the_phone_a_real_time_lookup_answers_with_on =>
        a_call_is_found_by_the_phone_a_real_time_lookup_answers_with,
        a_call_is_found_by_the_phone_a_real_time_lookup_answers_with_on_postgres;
}
