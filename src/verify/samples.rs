//! Realistic sample events per preset, for `wardhook send-test` and the tests. The shapes follow
//! the senders' documented payloads; every person, number and address is obviously fake
//! (555-01xx numbers, example.com/example.org, "Test Patient").

use super::Preset;

/// A realistic call-ended style event as `preset`'s sender would post it (raw body bytes).
pub fn sample_body(preset: Preset) -> Vec<u8> {
    let text: &str = match preset {
        Preset::NextPhone => {
            r#"{"event":"call.ended","timestamp":"2026-11-22T15:04:05Z","data":{"call_id":"call_test_0001","caller":{"phone":"+15555550100","name":"Test Patient","email":"test.patient@example.com"},"transcript":"Caller asked to book a cleaning next week.","ai_summary":"Wants a cleaning appointment next week.","custom_fields":{"call_type":"appointment_request","preferred_day":"Tuesday"}}}"#
        }
        Preset::PhoneShield => {
            r#"{"event_type":"call.completed","timestamp":"2026-11-22T15:04:05Z","version":"1.0","environment":"sandbox","webhook_id":"whk_test_0001","data":{"call_id":"call_test_0001","phone_number":"+15555550199","caller_number":"+15555550100","caller_name":"Test Patient","call_start":"2026-11-22T15:02:00Z","call_end":"2026-11-22T15:04:05Z","duration_seconds":125,"direction":"inbound","status":"completed","ai_handled":true,"forwarded":false,"summary":"Asked about office hours.","topics":["office hours"],"sentiment":"neutral","urgency":"low"}}"#
        }
        Preset::StandardWebhooks | Preset::Generic | Preset::Basic | Preset::Bearer | Preset::ApiKey => {
            r#"{"type":"call.ended","timestamp":"2026-11-22T15:04:05Z","data":{"call_id":"call_test_0001","caller":{"phone":"+15555550100","name":"Test Patient"},"summary":"Test event from wardhook send-test."}}"#
        }
        Preset::GitHub => {
            r#"{"action":"completed","check_run":{"id":1,"name":"wardhook test"},"repository":{"full_name":"example/test"},"sender":{"login":"test-user"}}"#
        }
        Preset::Stripe => {
            r#"{"id":"evt_test_0001","object":"event","type":"invoice.paid","created":1795000000,"livemode":false,"data":{"object":{"id":"in_test_0001","object":"invoice","customer_email":"test.patient@example.com","amount_paid":0}}}"#
        }
        Preset::Slack => {
            r#"{"token":"test","team_id":"T00000000","type":"event_callback","event_id":"Ev00000001","event_time":1795000000,"event":{"type":"message","channel":"C00000000","user":"U00000000","text":"wardhook test message","ts":"1795000000.000100"}}"#
        }
        Preset::Shopify => {
            r#"{"id":1000000001,"email":"test.patient@example.com","created_at":"2026-11-22T15:04:05Z","total_price":"0.00","currency":"USD","customer":{"first_name":"Test","last_name":"Patient","phone":"+15555550100"}}"#
        }
        Preset::Twilio => {
            "AccountSid=AC00000000000000000000000000000000&CallSid=CA00000000000000000000000000000001&From=%2B15555550100&To=%2B15555550199&Caller=%2B15555550100&Called=%2B15555550199&CallStatus=completed&CallDuration=125&Direction=inbound&ApiVersion=2010-04-01&CallbackSource=call-progress-events&SequenceNumber=0&Timestamp=Sun%2C+22+Nov+2026+15%3A04%3A05+%2B0000"
        }
        Preset::Plivo => {
            "CallUUID=00000000-0000-4000-8000-000000000001&From=%2B15555550100&To=%2B15555550199&CallStatus=completed&Direction=inbound&Duration=125&BillDuration=125&Event=Hangup&HangupCause=NORMAL_CLEARING"
        }
        Preset::Telnyx => {
            r#"{"data":{"record_type":"event","event_type":"call.hangup","id":"00000000-0000-4000-8000-000000000001","occurred_at":"2026-11-22T15:04:05.000000Z","payload":{"call_control_id":"v3:test-call-control-id","call_leg_id":"00000000-0000-4000-8000-000000000002","call_session_id":"00000000-0000-4000-8000-000000000003","client_state":null,"from":"+15555550100","to":"+15555550199","hangup_cause":"normal_clearing","hangup_source":"caller","sip_hangup_cause":"200"}},"meta":{"attempt":1,"delivered_to":"https://clinic.example.org/hooks/telnyx"}}"#
        }
        Preset::Retell => {
            r#"{"event":"call_ended","call":{"call_type":"phone_call","from_number":"+15555550100","to_number":"+15555550199","direction":"inbound","call_id":"call_test_0001","agent_id":"agent_test_0001","call_status":"ended","metadata":{},"retell_llm_dynamic_variables":{"customer_name":"Test Patient"},"start_timestamp":1795000000000,"end_timestamp":1795000125000,"disconnection_reason":"user_hangup","transcript":"Agent: Hello. User: I'd like to book a visit."}}"#
        }
        Preset::Vapi => {
            r#"{"message":{"type":"end-of-call-report","endedReason":"customer-ended-call","call":{"id":"call_test_0001"},"customer":{"number":"+15555550100"},"phoneNumber":{"number":"+15555550199"},"artifact":{"transcript":"AI: Hello. User: I need to reschedule.","messages":[]},"analysis":{"summary":"Caller wants to reschedule.","structuredData":{}},"startedAt":"2026-11-22T15:02:00Z","endedAt":"2026-11-22T15:04:05Z","cost":0.0,"timestamp":"2026-11-22T15:04:05Z"}}"#
        }
        Preset::Bland => {
            r#"{"call_id":"call_test_0001","to":"+15555550199","from":"+15555550100","completed":true,"call_length":2.1,"status":"completed","summary":"Caller asked about insurance.","concatenated_transcript":"user: Do you take my insurance? assistant: Let me check."}"#
        }
        Preset::Vonage => {
            r#"{"from":"15555550100","to":"15555550199","uuid":"00000000-0000-4000-8000-000000000001","conversation_uuid":"CON-00000000-0000-4000-8000-000000000002","status":"completed","direction":"inbound","duration":"125","timestamp":"2026-11-22T15:04:05.000Z"}"#
        }
        Preset::Zoom => {
            r#"{"event":"phone.callee_ended","event_ts":1795000000000,"payload":{"account_id":"test_account","object":{"call_id":"7000000000000000001","caller":{"phone_number":"+15555550100","name":"Test Patient"},"callee":{"phone_number":"+15555550199","extension_number":"100"},"ringing_start_time":"2026-11-22T15:02:00Z","answer_start_time":"2026-11-22T15:02:05Z","call_end_time":"2026-11-22T15:04:05Z","handup_result":"Call connected"}}}"#
        }
        Preset::RingCentral => {
            r#"{"uuid":"00000000-0000-4000-8000-000000000001","event":"/restapi/v1.0/account/~/extension/~/telephony/sessions","timestamp":"2026-11-22T15:04:05.000Z","subscriptionId":"00000000-0000-4000-8000-000000000002","ownerId":"100","body":{"telephonySessionId":"s-test-0001","parties":[{"from":{"phoneNumber":"+15555550100","name":"Test Patient"},"to":{"phoneNumber":"+15555550199"},"direction":"Inbound","status":{"code":"Disconnected"}}]}}"#
        }
        Preset::CallTelemetry => {
            r#"{"phone":"+15555550100","called":"+15555550199","timestamp":"2026-11-22T15:04:05Z","device":"SEP000000000000","calling_name":"Test Patient","trigger_point_type":"call_setup"}"#
        }
    };
    text.as_bytes().to_vec()
}
