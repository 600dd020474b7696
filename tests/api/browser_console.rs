//! The console's operator flows in a real headless Chromium, on both backends: find a call by
//! its id and read its timeline; bulk-retry the dead letters of one handler in a time window,
//! follow the run and see them delivered; read a handler's and a source's charts; reach the
//! content by keyboard with a visible focus ring; fit a tablet's width. axe-core checks every
//! console page on the way and fails the test on any serious or critical violation. An operator
//! also finds a call by its caller's phone number, spelled two ways, and reads its timeline.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chrono::{Duration as TimeDelta, SecondsFormat, Utc};
use serde_json::Value;
use wardhook::admin::Role;
use wardhook::dispatch::worker::TaskOutcome;

use crate::admin::{
    admin_url, app_with_a_dead_letter, call, create_token, deliver_from, drain, send_signed, Db,
    CANARY_NAME,
};
use crate::admin_bulk::app_with_dead_letters;
use crate::browser::Browser;

fn at(offset: TimeDelta) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn an_admin_finds_a_call_and_bulk_retries_a_handlers_dead_letters_on(db: Db) {
    let Some((app, crm)) = app_with_dead_letters(db, 3).await else {
        return;
    };
    let (status, _) = send_signed(&app, "demo", r#"{"data":{"note":"no event type"}}"#, true).await;
    assert_eq!(status, 400, "quarantined");
    let (admin, _) = create_token(&app, "admin-carol", Role::Admin);
    let (_, body) = call(&app, Some(&admin), "GET", "/api/deliveries").await;
    let listed: Value = serde_json::from_str(&body).unwrap();
    let delivery = listed["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;

    b.goto(&admin_url(&app, "/login")).await;
    b.axe("sign-in").await;
    b.sign_in(&app, &admin).await;
    b.axe("overview").await;

    // Keyboard: the first Tab on a page reaches the skip link, with a visible focus ring.
    b.eval("document.activeElement.blur(); return true;").await;
    b.tab().await;
    let focused = b
        .eval(
            "const e = document.activeElement; const s = getComputedStyle(e); \
             return [e.className, e.textContent, s.outlineStyle, s.outlineWidth, e.tagName];",
        )
        .await;
    assert_eq!(focused[0], "skip", "{focused}");
    assert_eq!(focused[1], "Skip to the content");
    assert_ne!(focused[2], "none", "a visible focus ring: {focused}");
    assert_eq!(focused[3], "3px");

    // Find a call by its id and read its timeline.
    b.goto(&admin_url(&app, "/calls")).await;
    b.axe("find a call").await;
    b.type_into("#f-call_id", "call-bulk-1").await;
    b.click("#find").await;
    let page = b.wait_for("id=\"call-timeline\"").await;
    assert_eq!(
        page.matches("href=\"/deliveries/").count(),
        1,
        "one delivery"
    );
    assert!(
        page.contains("call.ended") && page.contains("✗ permanent"),
        "{page}"
    );
    assert!(
        page.contains("<strong>attempt</strong> crm"),
        "the attempt in the timeline"
    );
    assert!(
        page.contains("delivery_accepted"),
        "audit records for an admin"
    );
    assert!(!page.contains(CANARY_NAME), "metadata only");
    b.axe("call timeline").await;
    b.screenshot("find-a-call").await;

    // Bulk-retry the handler's dead letters of the last hour: count and sample, then confirm.
    b.goto(&admin_url(&app, "/bulk")).await;
    b.axe("bulk actions").await;
    b.click("#b-handler option[value=\"crm\"]").await;
    b.type_into("#b-since", &at(-TimeDelta::hours(1))).await;
    b.type_into("#b-until", &at(TimeDelta::hours(1))).await;
    b.click("#bulk-preview").await;
    let page = b.wait_for("id=\"bulk-count\"").await;
    assert!(page.contains("<strong>3</strong> job(s) match"), "{page}");
    assert_eq!(page.matches("HTTP 400").count(), 3, "the sample");
    b.axe("bulk preview").await;
    b.screenshot("bulk-preview").await;
    b.click("#bulk-confirm").await;
    b.wait_for("id=\"bulk-progress\"").await;
    let run = b.url().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = b.source().await;
        if page.contains("✓ done") {
            assert!(page.contains("Re-queued <strong>3</strong> of 3"), "{page}");
            break;
        }
        assert!(Instant::now() < deadline, "the run finishes: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.goto(&run).await;
    }
    b.axe("bulk progress").await;
    b.screenshot("bulk-progress").await;
    let outcomes = drain(&app).await;
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, TaskOutcome::Done { .. })));
    assert_eq!(crm.received_requests().await.unwrap().len(), 6);

    // See them delivered: the handler's finished jobs, and no dead letters left.
    b.goto(&admin_url(&app, "/calls")).await;
    b.click("#f-handler option[value=\"crm\"]").await;
    b.click("#f-status option[value=\"done\"]").await;
    b.click("#find").await;
    let page = b.wait_for("id=\"calls\"").await;
    assert_eq!(page.matches("href=\"/deliveries/").count(), 3, "{page}");
    b.axe("call search results").await;
    b.goto(&admin_url(&app, "/dead-letters")).await;
    assert!(b.source().await.contains("No dead letters"));
    b.axe("dead letters").await;

    // The handler's and the source's pages: charts with axes and units, errors by class.
    b.goto(&admin_url(&app, "/activity")).await;
    b.axe("sources and handlers").await;
    b.click("a[href=\"/handlers/crm\"]").await;
    let page = b.wait_for("<h1>Handler crm</h1>").await;
    assert!(page.contains("<svg") && page.contains("milliseconds (ms)"));
    assert!(page.contains(">count</text>") && page.contains("6 attempts in the window, 3 failed"));
    assert!(page.contains("<code>http_4xx</code>"), "errors by class");
    b.axe("handler page").await;
    b.screenshot("handler").await;
    b.resize(820, 1180).await;
    let fits = b
        .eval("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(
        fits,
        Value::Bool(true),
        "no sideways scrolling at tablet width"
    );
    b.screenshot("handler-tablet").await;
    b.resize(1280, 900).await;
    b.goto(&admin_url(&app, "/sources/demo")).await;
    let page = b.wait_for("<h1>Source demo</h1>").await;
    assert!(
        page.contains("<code>quarantined</code>"),
        "refusals by class"
    );
    b.axe("source page").await;
    b.screenshot("source").await;

    // Every other page.
    for (path, name) in [
        ("/deliveries".to_owned(), "deliveries"),
        (format!("/deliveries/{delivery}"), "delivery"),
        ("/quarantine".to_owned(), "quarantine"),
        ("/audit".to_owned(), "audit"),
        ("/deliveries/no-such-delivery".to_owned(), "not found"),
    ] {
        b.goto(&admin_url(&app, &path)).await;
        b.axe(name).await;
    }
    // At tablet width every page reflows: no sideways scrolling of the page itself.
    b.resize(820, 1180).await;
    for path in [
        "/".to_owned(),
        "/calls".to_owned(),
        "/bulk".to_owned(),
        "/deliveries".to_owned(),
        format!("/deliveries/{delivery}"),
        "/dead-letters".to_owned(),
        "/quarantine".to_owned(),
        "/audit".to_owned(),
        "/activity".to_owned(),
        "/sources/demo".to_owned(),
        "/handlers/crm".to_owned(),
    ] {
        b.goto(&admin_url(&app, &path)).await;
        let fits = b
            .eval("return document.documentElement.scrollWidth <= window.innerWidth;")
            .await;
        assert_eq!(fits, Value::Bool(true), "{path} fits a tablet's width");
    }
    b.resize(1280, 900).await;
    b.goto(&admin_url(&app, &format!("/deliveries/{delivery}")))
        .await;
    b.click("#reveal").await;
    b.wait_for(CANARY_NAME).await;
    b.axe("revealed payload").await;
    b.click("header form button").await;
    b.wait_for("Admin token").await;
    b.axe("signed out").await;
    b.close().await;
}

crate::on_both_backends! {
    an_admin_finds_a_call_and_bulk_retries_a_handlers_dead_letters_on =>
        an_admin_finds_a_call_and_bulk_retries_a_handlers_dead_letters,
        an_admin_finds_a_call_and_bulk_retries_a_handlers_dead_letters_on_postgres;
}

/// Search "find a call" by `phone` alone; the page once its timeline is shown.
async fn find_by_phone(b: &Browser, app: &crate::helpers::TestApp, phone: &str) -> String {
    b.goto(&admin_url(app, "/calls")).await;
    b.type_into("#f-caller_phone", phone).await;
    b.click("#find").await;
    b.wait_for("id=\"call-timeline\"").await
}

async fn an_admin_finds_a_call_by_the_callers_phone_on(db: Db) {
    let Some((app, _crm, _dead)) = app_with_a_dead_letter(db).await else {
        return;
    };
    let (status, v) = deliver_from(&app, "demo", "call-phone-1", "+1 (555) 010-1234").await;
    assert_eq!(status, 200, "{v}");
    let id = v["delivery_id"].as_str().unwrap().to_owned();
    drain(&app).await;
    let (admin, _) = create_token(&app, "admin-dana", Role::Admin);
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;
    b.sign_in(&app, &admin).await;

    // Spelled as the caller said it: the call, its attempt and its audit records.
    let page = find_by_phone(&b, &app, "(555) 010-1234").await;
    assert_eq!(page.matches("href=\"/deliveries/").count(), 1, "{page}");
    assert!(
        page.contains(&format!("href=\"/deliveries/{id}\"")),
        "{page}"
    );
    assert!(page.contains("<strong>attempt</strong> crm"), "{page}");
    assert!(
        page.contains("delivery_accepted"),
        "audit records for an admin"
    );
    assert!(!page.contains(CANARY_NAME), "metadata only");
    b.axe("call found by phone").await;
    b.screenshot("find-a-call-by-phone").await;

    // Spelled as the vendor sent it: the same call.
    let page = find_by_phone(&b, &app, "+15550101234").await;
    assert_eq!(page.matches("href=\"/deliveries/").count(), 1, "{page}");
    assert!(
        page.contains(&format!("href=\"/deliveries/{id}\"")),
        "{page}"
    );

    // A number nobody called from: nothing.
    let page = find_by_phone(&b, &app, "+1 555 000 0000").await;
    assert!(page.contains("No delivery matches."), "{page}");
    assert!(page.contains("Nothing recorded for this call."), "{page}");
    assert_eq!(page.matches("href=\"/deliveries/").count(), 0, "{page}");
    b.axe("phone without calls").await;
    b.close().await;
}

crate::on_both_backends! {
    an_admin_finds_a_call_by_the_callers_phone_on =>
        an_admin_finds_a_call_by_the_callers_phone,
        an_admin_finds_a_call_by_the_callers_phone_on_postgres;
}
