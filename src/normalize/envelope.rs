//! Where each sender keeps its envelope fields.
//!
//! The mapping is keyed by the preset's configured name rather than by matching on
//! [`Preset`](crate::verify::Preset) variants: the verify stage keeps adding presets, and one it
//! adds before normalization knows it falls back to the generic JSON envelope instead of breaking
//! the build or the delivery.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};
use wardhook_sdk::Caller;

use super::NormalizeError;

/// An envelope mapping: where event type, call id, event id, timestamp, caller and data live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Envelope {
    /// `{event, timestamp, data{call_id, caller{phone,name,email}, …}}`.
    NextPhone,
    /// `{event_type, timestamp, version, environment, webhook_id, data{call_id, caller_number,
    /// caller_name, …}}`. `webhook_id` names the webhook *configuration*, not the event, so it is
    /// not used for dedup: keying on it would make every later event a "duplicate".
    PhoneShield,
    /// Standard Webhooks `{type, timestamp, data}`; the event id is the `webhook-id` header,
    /// handed over by verification.
    StandardWebhooks,
    /// Retell `{event, call{call_id, from_number, to_number, direction, start_timestamp (ms), …}}`.
    Retell,
    /// Vapi `{message{type, call{id}, customer{number}, timestamp, …}}`.
    Vapi,
    /// Telnyx `{data{event_type, id, occurred_at, payload{call_session_id, from, to, …}}}`.
    Telnyx,
    /// Twilio form-encoded status callbacks: `CallSid`, `CallStatus`, `From`, `To`, `Timestamp`.
    Twilio,
    /// Any other JSON (or form-encoded) body: event type from `event`/`event_type`/`type`
    /// (default `webhook`, since a generic sender has no event-type contract), call id from the
    /// usual places, `data` if present else the whole body.
    Generic,
}

/// The envelope's fields, before validation of the identifiers.
#[derive(Debug)]
pub(super) struct Fields {
    pub event_type: String,
    pub call_id: Option<String>,
    pub event_id: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub caller: Caller,
    pub data: Value,
}

impl Envelope {
    /// The envelope for a preset name (`sources[].preset`); unknown names get [`Envelope::Generic`].
    pub fn for_preset_name(name: &str) -> Self {
        match name {
            "nextphone" => Self::NextPhone,
            "phoneshield" => Self::PhoneShield,
            "standard-webhooks" | "standard_webhooks" | "standardwebhooks" => {
                Self::StandardWebhooks
            }
            "retell" => Self::Retell,
            "vapi" => Self::Vapi,
            "telnyx" => Self::Telnyx,
            "twilio" => Self::Twilio,
            _ => Self::Generic,
        }
    }

    /// A preset name that maps back to this envelope (the DMZ relay seals it with the body,
    /// so the inside node normalizes with the envelope the relay verified under).
    pub fn preset_name(self) -> &'static str {
        match self {
            Self::NextPhone => "nextphone",
            Self::PhoneShield => "phoneshield",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Retell => "retell",
            Self::Vapi => "vapi",
            Self::Telnyx => "telnyx",
            Self::Twilio => "twilio",
            Self::Generic => "generic",
        }
    }

    /// The content type a sender of this envelope uses (tests and the load generator).
    pub fn default_content_type(self) -> &'static str {
        match self {
            Self::Twilio => "application/x-www-form-urlencoded",
            _ => "application/json",
        }
    }

    pub(super) fn extract(
        self,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<Fields, NormalizeError> {
        match self {
            Self::NextPhone => next_phone(parse_object(body)?),
            Self::PhoneShield => phone_shield(parse_object(body)?),
            Self::StandardWebhooks => standard_webhooks(parse_object(body)?),
            Self::Retell => retell(parse_object(body)?),
            Self::Vapi => vapi(parse_object(body)?),
            Self::Telnyx => telnyx(parse_object(body)?),
            Self::Twilio => twilio(parse_form(body)?),
            Self::Generic => {
                let form =
                    content_type.is_some_and(|ct| ct.contains("application/x-www-form-urlencoded"));
                generic(if form {
                    parse_form(body)?
                } else {
                    parse_object(body)?
                })
            }
        }
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, NormalizeError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(NormalizeError::NotAnObject),
        Err(e) => Err(NormalizeError::InvalidJson {
            line: e.line(),
            column: e.column(),
        }),
    }
}

/// Form parameters as a JSON object; repeated names become arrays.
fn parse_form(body: &[u8]) -> Result<Map<String, Value>, NormalizeError> {
    if std::str::from_utf8(body).is_err() {
        return Err(NormalizeError::InvalidForm);
    }
    let mut map = Map::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        match map.get_mut(name.as_ref()) {
            None => {
                map.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
    Ok(map)
}

/// A required string field.
fn required_str(
    map: &Map<String, Value>,
    key: &str,
    path: &'static str,
) -> Result<String, NormalizeError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(NormalizeError::MissingField(path)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(NormalizeError::WrongType {
            field: path,
            expected: "a string",
        }),
    }
}

/// An optional identifier: strings as they are, integers printed; anything else is refused so
/// that an object does not silently become a dedup key.
fn optional_id(
    value: Option<&Value>,
    path: &'static str,
) -> Result<Option<String>, NormalizeError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(NormalizeError::WrongType {
            field: path,
            expected: "a string",
        }),
    }
}

/// An optional text field; non-strings are ignored (tolerant of senders' variations).
fn optional_text(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A required object field.
fn required_object<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &'static str,
) -> Result<&'a Map<String, Value>, NormalizeError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(NormalizeError::MissingField(path)),
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(NormalizeError::WrongType {
            field: path,
            expected: "an object",
        }),
    }
}

/// Walk a path of object keys.
fn at<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = map.get(*first)?;
    for key in rest {
        cur = cur.as_object()?.get(*key)?;
    }
    Some(cur)
}

/// Move a field out of the body (the body is dropped after extraction: cloning the event's data
/// out of it cost a copy of every value per delivery).
fn take(map: &mut Map<String, Value>, key: &str) -> Value {
    map.remove(key).unwrap_or(Value::Null)
}

/// A timestamp as senders send them: RFC 3339 / RFC 2822 strings, or Unix seconds or
/// milliseconds as numbers or digit strings. Unparseable timestamps are dropped, not fatal:
/// `occurred_at` is optional and `received_at` is always known.
fn timestamp(value: Option<&Value>) -> Option<DateTime<Utc>> {
    fn from_unix(n: i64) -> Option<DateTime<Utc>> {
        // Below 10^11 seconds is before year 5138: treat as seconds; otherwise milliseconds.
        if n.unsigned_abs() < 100_000_000_000 {
            Utc.timestamp_opt(n, 0).single()
        } else {
            Utc.timestamp_millis_opt(n).single()
        }
    }
    match value? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .and_then(from_unix),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_rfc2822(s))
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| s.parse::<i64>().ok().and_then(from_unix)),
        _ => None,
    }
}

fn caller_object(value: Option<&Value>) -> Caller {
    let Some(Value::Object(c)) = value else {
        return Caller::default();
    };
    Caller {
        phone: optional_text(c.get("phone").or_else(|| c.get("number"))),
        name: optional_text(c.get("name")),
        email: optional_text(c.get("email")),
    }
}

fn next_phone(mut body: Map<String, Value>) -> Result<Fields, NormalizeError> {
    let event_type = required_str(&body, "event", "event")?;
    let data = required_object(&body, "data", "data")?;
    let call_id = optional_id(data.get("call_id"), "data.call_id")?;
    let caller = caller_object(data.get("caller"));
    let occurred_at = timestamp(body.get("timestamp"));
    Ok(Fields {
        event_type,
        call_id,
        event_id: None,
        occurred_at,
        caller,
        data: take(&mut body, "data"),
    })
}

fn phone_shield(mut body: Map<String, Value>) -> Result<Fields, NormalizeError> {
    let event_type = required_str(&body, "event_type", "event_type")?;
    let data = required_object(&body, "data", "data")?;
    let call_id = optional_id(data.get("call_id"), "data.call_id")?;
    let caller = Caller {
        phone: optional_text(data.get("caller_number")),
        name: optional_text(data.get("caller_name")),
        email: optional_text(data.get("caller_email")),
    };
    let occurred_at = timestamp(body.get("timestamp"));
    Ok(Fields {
        event_type,
        call_id,
        event_id: None,
        occurred_at,
        caller,
        data: take(&mut body, "data"),
    })
}

fn standard_webhooks(mut body: Map<String, Value>) -> Result<Fields, NormalizeError> {
    let event_type = required_str(&body, "type", "type")?;
    let data = take(&mut body, "data");
    let data_map = data.as_object();
    let call_id = match data_map {
        Some(d) => optional_id(
            d.get("call_id").or_else(|| at(d, &["call", "id"])),
            "data.call_id",
        )?,
        None => None,
    };
    Ok(Fields {
        event_type,
        call_id,
        event_id: None,
        occurred_at: timestamp(body.get("timestamp")),
        caller: caller_object(data_map.and_then(|d| d.get("caller"))),
        data,
    })
}

fn retell(mut body: Map<String, Value>) -> Result<Fields, NormalizeError> {
    let event_type = required_str(&body, "event", "event")?;
    let call = required_object(&body, "call", "call")?;
    let call_id = optional_id(call.get("call_id"), "call.call_id")?;
    if call_id.is_none() {
        return Err(NormalizeError::MissingField("call.call_id"));
    }
    // The caller is the far end: `from` on inbound calls, `to` on outbound ones.
    let outbound = call.get("direction").and_then(Value::as_str) == Some("outbound");
    let phone = optional_text(call.get(if outbound { "to_number" } else { "from_number" }));
    let name = optional_text(at(call, &["retell_llm_dynamic_variables", "customer_name"]));
    let occurred_at = timestamp(
        call.get("end_timestamp")
            .or_else(|| call.get("start_timestamp")),
    );
    Ok(Fields {
        event_type,
        call_id,
        event_id: None,
        occurred_at,
        caller: Caller {
            phone,
            name,
            email: None,
        },
        data: take(&mut body, "call"),
    })
}

fn vapi(mut body: Map<String, Value>) -> Result<Fields, NormalizeError> {
    let message = required_object(&body, "message", "message")?;
    let event_type = required_str(message, "type", "message.type")?;
    let call_id = optional_id(at(message, &["call", "id"]), "message.call.id")?;
    let phone = optional_text(
        at(message, &["customer", "number"])
            .or_else(|| at(message, &["call", "customer", "number"])),
    );
    let name = optional_text(
        at(message, &["customer", "name"]).or_else(|| at(message, &["call", "customer", "name"])),
    );
    let occurred_at = timestamp(message.get("timestamp").or_else(|| message.get("endedAt")));
    Ok(Fields {
        event_type,
        call_id,
        event_id: None,
        occurred_at,
        caller: Caller {
            phone,
            name,
            email: None,
        },
        data: take(&mut body, "message"),
    })
}

fn telnyx(mut body: Map<String, Value>) -> Result<Fields, NormalizeError> {
    let data = required_object(&body, "data", "data")?;
    let event_type = required_str(data, "event_type", "data.event_type")?;
    // Checked after the call id, as before the payload moved out of the body.
    let event_id = optional_id(data.get("id"), "data.id");
    let occurred_at = timestamp(data.get("occurred_at"));
    let payload = match body.get_mut("data") {
        Some(Value::Object(data)) => take(data, "payload"),
        _ => Value::Null,
    };
    let p = payload.as_object();
    let call_id = match p {
        Some(p) => optional_id(
            p.get("call_session_id")
                .or_else(|| p.get("call_leg_id"))
                .or_else(|| p.get("call_control_id")),
            "data.payload.call_session_id",
        )?,
        None => None,
    };
    let outbound = p
        .and_then(|p| p.get("direction"))
        .and_then(Value::as_str)
        .is_some_and(|d| d.starts_with("outgoing") || d == "outbound");
    let phone = p.and_then(|p| optional_text(if outbound { p.get("to") } else { p.get("from") }));
    Ok(Fields {
        event_type,
        call_id,
        event_id: event_id?,
        occurred_at,
        caller: Caller {
            phone,
            name: p.and_then(|p| optional_text(p.get("caller_id_name"))),
            email: None,
        },
        data: payload,
    })
}

fn twilio(params: Map<String, Value>) -> Result<Fields, NormalizeError> {
    // Voice status callbacks carry CallSid/CallStatus; messaging callbacks MessageSid and
    // MessageStatus (SmsStatus on older accounts).
    // Recording status callbacks carry CallSid with RecordingSid/RecordingStatus and no
    // CallStatus: their event type is `recording.<status>` (e.g. `recording.completed`).
    let (event_type, call_id) = if params.contains_key("CallSid")
        && !params.contains_key("CallStatus")
        && params.contains_key("RecordingSid")
    {
        let status = required_str(&params, "RecordingStatus", "RecordingStatus")?;
        (
            format!("recording.{status}"),
            required_str(&params, "CallSid", "CallSid")?,
        )
    } else if params.contains_key("CallSid") {
        (
            required_str(&params, "CallStatus", "CallStatus")?,
            required_str(&params, "CallSid", "CallSid")?,
        )
    } else if params.contains_key("MessageSid") {
        let status = required_str(&params, "MessageStatus", "MessageStatus")
            .or_else(|_| required_str(&params, "SmsStatus", "MessageStatus"))?;
        (status, required_str(&params, "MessageSid", "MessageSid")?)
    } else {
        return Err(NormalizeError::MissingField("CallSid"));
    };
    let outbound = params
        .get("Direction")
        .and_then(Value::as_str)
        .is_some_and(|d| d.starts_with("outbound"));
    Ok(Fields {
        event_type,
        call_id: Some(call_id),
        event_id: None,
        occurred_at: timestamp(params.get("Timestamp")),
        caller: Caller {
            phone: optional_text(params.get(if outbound { "To" } else { "From" })),
            name: optional_text(params.get("CallerName")),
            email: None,
        },
        data: Value::Object(params),
    })
}

fn generic(mut body: Map<String, Value>) -> Result<Fields, NormalizeError> {
    // The first candidate key holding a string names the event; an object under one of them
    // (Slack's `event`, chat-style `message`) names it by its own `type`. A `message` string is
    // chat text, never an event name. Shapes we do not know are tolerated: without any name the
    // event is a plain `webhook`.
    let event_type = ["event", "event_type", "type", "eventType", "message"]
        .iter()
        .find_map(|k| match body.get(*k) {
            Some(Value::String(s)) if *k != "message" => Some(s.clone()),
            Some(Value::Object(o)) => match o.get("type") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_else(|| "webhook".to_owned());
    let call_id = optional_id(
        body.get("call_id")
            .or_else(|| at(&body, &["data", "call_id"]))
            .or_else(|| at(&body, &["call", "id"]))
            .or_else(|| at(&body, &["data", "call", "id"])),
        "call_id",
    )?;
    let caller = caller_object(
        body.get("caller")
            .or_else(|| at(&body, &["data", "caller"])),
    );
    let occurred_at = timestamp(
        body.get("timestamp")
            .or_else(|| body.get("occurred_at"))
            .or_else(|| body.get("created_at")),
    );
    let data = match body.get("data") {
        Some(Value::Object(_)) => take(&mut body, "data"),
        _ => Value::Object(body),
    };
    Ok(Fields {
        event_type,
        call_id,
        event_id: None,
        occurred_at,
        caller,
        data,
    })
}
