use super::*;
use crate::Caller;

fn event() -> Event {
    Event {
        delivery_id: "dlv_1".into(),
        source: "nextphone".into(),
        event_type: "call.ended".into(),
        call_id: Some("call_42".into()),
        occurred_at: Some("2026-11-22T15:30:00Z".parse().expect("ts")),
        received_at: "2026-11-22T15:30:02Z".parse().expect("ts"),
        caller: Caller {
            phone: Some("+15551234567".into()),
            name: Some("\"; DROP TABLE patients; --".into()),
            email: None,
        },
        data: serde_json::json!({
            "duration_seconds": 135,
            "called_number": "+15550001111",
            "topics": ["pricing", "quote"],
            "custom_fields": {"budget": "5k", "service_type": "cleaning"},
        }),
    }
}

fn vars() -> Vars {
    let mut app = serde_json::Map::new();
    app.insert(
        "phone-discovery".into(),
        serde_json::json!({"data": {"phone": {"ip": "10.0.0.9"}}}),
    );
    app.insert(
        "crm".into(),
        serde_json::json!({"data": {"id": "CUST-1"}, "status": 201}),
    );
    Vars::new(
        &event(),
        &app,
        "2026-11-22T15:31:00Z".parse().expect("now"),
        Tz::America__New_York,
    )
}

fn render(src: &str, escape: Escape) -> Result<String, TemplateError> {
    Template::compile(src, escape)?.render(&vars())
}

#[test]
fn json_bodies_escape_values_so_the_document_stays_valid() {
    let body = render(
        r#"{"name": "{{ caller.name }}", "phone": "{{ caller.phone }}", "n": {{ data.duration_seconds }}, "topics": {{ data.topics | tojson }}}"#,
        Escape::JsonString,
    )
    .expect("render");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    assert_eq!(doc["name"], "\"; DROP TABLE patients; --");
    assert_eq!(doc["n"], 135);
    assert_eq!(doc["topics"], serde_json::json!(["pricing", "quote"]));
}

#[test]
fn a_missing_variable_is_an_error_naming_it_never_an_empty_field() {
    let err = render("{{ caller.email }}", Escape::None).expect_err("no email");
    assert_eq!(
        err,
        TemplateError::Undefined {
            variable: "caller.email".into()
        }
    );
    assert_eq!(
        render("{{ caller.email | default(\"-\") }}", Escape::None).expect("default"),
        "-"
    );
    let err = render("{{ data.nope }}", Escape::JsonString).expect_err("undefined");
    assert_eq!(
        err.to_string(),
        "template variable `data.nope` is undefined for this event"
    );
}

#[test]
fn statically_impossible_names_fail_at_compile_time() {
    for src in [
        "{{ caller.fone }}",
        "{{ now.hours }}",
        "{{ event_type.x }}",
        "{{ event.caller.mail }}",
    ] {
        assert!(
            matches!(
                Template::compile(src, Escape::None),
                Err(TemplateError::UnknownVariable { .. })
            ),
            "{src}"
        );
    }
    assert!(matches!(
        Template::compile("{{ caller.phone ", Escape::None),
        Err(TemplateError::Syntax { .. })
    ));
}

#[test]
fn nextphone_names_work_as_pasted() {
    let out = render(
        r#"{"phone": "[caller_number]", "b": "{{budget}}", "svc": "[service_type]", "to": "{{receiving_number}}", "list": [1, 2], "flags": [true]}"#,
        Escape::JsonString,
    )
    .expect("render");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["phone"], "+15551234567");
    assert_eq!(doc["b"], "5k");
    assert_eq!(doc["svc"], "cleaning");
    assert_eq!(doc["to"], "+15550001111");
    assert_eq!(doc["list"], serde_json::json!([1, 2]));
}

#[test]
fn call_telemetry_names_and_app_data_chaining_work_as_pasted() {
    let out = render(
        "{{ event.calling_number }}|{{ event.called_number }}|{{ event.timestamp }}|{{ app_data.phone-discovery.data.phone.ip }}|{{ app_data.crm.data.id }}",
        Escape::None,
    )
    .expect("render");
    assert_eq!(
        out,
        "+15551234567|+15550001111|2026-11-22T15:30:00+00:00|10.0.0.9|CUST-1"
    );
}

#[test]
fn now_is_shown_in_the_configured_zone() {
    let out = render(
        "{{ now }} {{ now.hour }} {{ weekday }} {{ hour_between(9, 17) }} {{ time_between(\"10:31\", \"10:32\") }}",
        Escape::None,
    )
    .expect("render");
    assert_eq!(out, "2026-11-22T10:31:00-05:00 10 sun true true");
}

#[test]
fn the_debug_function_cannot_dump_the_context() {
    let err = render("{{ debug() }}", Escape::None).expect_err("no debug");
    assert!(!err.to_string().contains("+1555"));
}

#[test]
fn expressions_evaluate_against_the_same_variables() {
    let e = Expression::compile(
        r#"event_type == "call.ended" and data.duration_seconds > 120 and ("pricing" in data.topics or "quote" in data.topics)"#,
    )
    .expect("compile");
    assert!(e.eval_bool(&vars()).expect("eval"));
}

#[test]
fn rewrites_leave_ordinary_text_alone() {
    assert_eq!(
        rewrite_sender_syntax("[1, 2] [\"a\"] [null]"),
        "[1, 2] [\"a\"] [null]"
    );
    assert_eq!(
        rewrite_sender_syntax("hi [first_name]!"),
        "hi {{ first_name }}!"
    );
    assert_eq!(
        rewrite_sender_syntax("{{ x[0] }} {{ app_data.a-b.data }}"),
        "{{ x[0] }} {{ app_data[\"a-b\"].data }}"
    );
}

#[test]
fn url_templates_percent_encode_values_but_not_the_literal_text() {
    let out = render(
        "https://crm.example/contacts/{{ event.calling_number }}/x?c={{ call_id }}",
        Escape::UrlComponent,
    )
    .expect("render");
    assert_eq!(
        out,
        "https://crm.example/contacts/%2B15551234567/x?c=call_42"
    );
    assert_eq!(
        percent_encode_component("+1 (555) 123-4567"),
        "%2B1%20%28555%29%20123-4567"
    );
    assert_eq!(percent_encode_component("../admin"), "..%2Fadmin");
}
