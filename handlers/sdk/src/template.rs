//! One template engine (minijinja) for every templated string in wardhook: the http handler's
//! URL, query, headers and body, the exec handler's arguments, and route filters.
//!
//! Rules, all decided here so that every handler gets them:
//! - **Strict undefined.** A variable the event does not have is an error, never an empty field.
//!   Names that can be known statically (`caller.fone`, `now.hours`) fail at compile time
//!   ([`Template::compile`]); the rest fail at render time with [`TemplateError::Undefined`],
//!   which handlers turn into a permanent error. Write `{{ caller.email | default("") }}` where
//!   empty is really fine.
//! - **JSON bodies are escaped for JSON strings.** In a template compiled with
//!   [`Escape::JsonString`] every value is written as the *content* of a JSON string, so
//!   `"name": "{{ caller.name }}"` stays valid whatever the caller said their name was. To insert
//!   a whole JSON value (number, list, object) write `{{ data.topics | tojson }}` without quotes.
//! - **Sender habits work as pasted.** NextPhone's `[caller_number]` is rewritten to
//!   `{{ caller_number }}` at compile time, and `{{caller_number}}`, `{{timestamp}}` and custom
//!   parameters like `{{budget}}` (looked up in `data.custom_fields`, then `data`) resolve.
//!   Call Telemetry's `{{ event.calling_number }}` style resolves through the `event` object, and
//!   its hyphenated app names (`app_data.phone-discovery.data.ip`) are read as
//!   `app_data["phone-discovery"]`.
//!
//! Variables (see `docs/HANDLERS.md` for the table): `event_type`, `call_id`, `delivery_id`,
//! `source`, `occurred_at`, `received_at`, `caller.phone|name|email`, `data.…`, `app_data.…`,
//! `now` (`now.hour`, `now.minute`, `now.weekday`, `now.date`, `now.time`; prints RFC 3339),
//! `weekday`, and the aliases `timestamp`, `caller_number`, `caller_name`, `caller_email`,
//! `email`, `receiving_number`, and `event.*` (`calling_number` → `caller.phone`,
//! `calling_name` → `caller.name`, `calling_email` → `caller.email`, `called_number` →
//! `data.called_number` or `data.receiving_number`, `timestamp` → `occurred_at`, plus every
//! canonical field and every top-level `data` key). Functions: `hour_between(start, end)` and
//! `time_between("HH:MM", "HH:MM")` (end exclusive, windows may wrap midnight), in the time zone
//! the [`Vars`] were built with.
//!
//! Error messages name variables and template locations, never values.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Datelike, NaiveTime, Timelike, Utc};
use minijinja::value::{Object, ObjectRepr, Serde, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};

pub use chrono_tz::Tz;
pub use url_template::UrlTemplate;

use crate::Event;

/// The auto-escape mode name for JSON string content.
const JSON_ESCAPE: &str = "json-string";
/// The auto-escape mode name for URL components.
const URL_ESCAPE: &str = "url-component";

/// How values are written into the rendered text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As they are (URLs before query encoding, headers, plain text, exec arguments).
    None,
    /// As the content of a JSON string: quotes, backslashes and control characters escaped.
    JsonString,
    /// Percent-encoded as a URL component (everything but `A-Z a-z 0-9 - . _ ~`, `| safe`
    /// values too), so a value can neither add path segments nor a query. URL templates use
    /// [`UrlTemplate`], which also keeps `.`/`..` values from climbing the path.
    UrlComponent,
}

/// Why a template could not be compiled or rendered. Never contains event values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template text is not valid minijinja.
    #[error("template syntax error: {reason}")]
    Syntax {
        /// minijinja's description of the syntax problem (from the template text only).
        reason: String,
    },
    /// The template names a variable that can never exist.
    #[error("unknown variable `{variable}`: {hint}")]
    UnknownVariable {
        /// The dotted variable path.
        variable: String,
        /// What is available instead.
        hint: String,
    },
    /// The template names a variable this event does not have.
    #[error("template variable `{variable}` is undefined for this event")]
    Undefined {
        /// The dotted variable path (or `(unknown)` when it could not be pinned down).
        variable: String,
    },
    /// Rendering failed for another reason (a filter applied to the wrong type, …).
    #[error("template could not be rendered: {reason}")]
    Render {
        /// The kind of failure and the template line, without values.
        reason: String,
    },
    /// A URL template's shape is not allowed (a placeholder in the scheme or host, a fragment,
    /// a dot segment): see [`UrlTemplate`].
    #[error("url template: {reason}")]
    UrlShape {
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// A path segment holding a value came out empty, `.` or `..` for this event: sending it
    /// would address another resource, so the request is refused.
    #[error(
        "path segment {position} of the url would be {shape} for this event; refused so that a \
         value cannot leave its segment"
    )]
    PathSegment {
        /// 1-based position of the segment in the path.
        position: usize,
        /// `empty`, `` `.` `` or `` `..` `` — the shape, never the value.
        shape: &'static str,
    },
}

/// A new environment with wardhook's settings. Every template and filter is compiled by one of
/// these, so they all behave the same.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Debug info would copy variable values into error output.
    env.set_debug(false);
    // `debug()` prints the whole context: PHI into a log or a destination.
    env.remove_global("debug");
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".json") {
            AutoEscape::Custom(JSON_ESCAPE.into())
        } else if name.ends_with(".url") {
            AutoEscape::Custom(URL_ESCAPE.into())
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(format_value);
    env.add_function("hour_between", hour_between);
    env.add_function("time_between", time_between);
    env
}

fn shared_environment() -> &'static Environment<'static> {
    static SHARED: OnceLock<Environment<'static>> = OnceLock::new();
    SHARED.get_or_init(environment)
}

fn format_value(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    if value.is_none() {
        return Ok(());
    }
    // JSON and URLs spell booleans in lower case, not Python's `True`.
    if value.kind() == ValueKind::Bool {
        let text = if value.is_true() { "true" } else { "false" };
        return out.write_str(text).map_err(Error::from);
    }
    let mode = match state.auto_escape() {
        AutoEscape::Custom(name) if name == JSON_ESCAPE => Escape::JsonString,
        AutoEscape::Custom(name) if name == URL_ESCAPE => Escape::UrlComponent,
        _ => return minijinja::escape_formatter(out, state, value),
    };
    // In a URL every value is encoded, `| safe` or not: only the template's own text may add
    // structure (segments, query parameters) to a URL.
    if value.is_safe() && mode != Escape::UrlComponent {
        return write!(out, "{value}").map_err(Error::from);
    }
    let text = match value.kind() {
        ValueKind::Map | ValueKind::Seq => serde_json::to_string(value).map_err(|_| {
            Error::new(
                ErrorKind::BadSerialization,
                "value cannot be written as JSON",
            )
        })?,
        _ => value.to_string(),
    };
    let escaped = match mode {
        Escape::JsonString => json_string_content(&text),
        _ => percent_encode_component(&text),
    };
    out.write_str(&escaped).map_err(Error::from)
}

/// `text` escaped as the inside of a JSON string (no surrounding quotes).
pub fn json_string_content(text: &str) -> String {
    let quoted = serde_json::Value::String(text.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// `text` escaped for HTML text and attribute values: `&`, `<`, `>`, `"` and `'`. For markup an
/// adapter builds itself (a CRM note, an e-mail body), so a caller's words never become markup.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded as a URL component: `+1 (555)` → `%2B1%20%28555%29`.
pub fn percent_encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` as one URL path segment (an id an API answered with, put into the next request's
/// path): percent-encoded as a component, or `None` when it is empty, `.` or `..` — segments
/// that no encoding keeps from being dropped or climbed by URL parsers (see [`UrlTemplate`]).
pub fn path_segment(text: &str) -> Option<String> {
    (!matches!(text, "" | "." | "..")).then(|| percent_encode_component(text))
}

/// A compiled template, ready to render against [`Vars`] many times.
#[derive(Clone)]
pub struct Template {
    env: Arc<Environment<'static>>,
    name: &'static str,
    variables: BTreeSet<String>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .field("variables", &self.variables)
            .finish()
    }
}

impl Template {
    /// Compile `source` (after the sender-habit rewrites) and check the variable names that can
    /// be checked without an event.
    pub fn compile(source: &str, escape: Escape) -> Result<Self, TemplateError> {
        Self::compile_rewritten(&rewrite_sender_syntax(source), escape)
    }

    /// [`Self::compile`] for text the sender-habit rewrites were already applied to.
    fn compile_rewritten(source: &str, escape: Escape) -> Result<Self, TemplateError> {
        let name = match escape {
            Escape::None => "template.txt",
            Escape::JsonString => "template.json",
            Escape::UrlComponent => "template.url",
        };
        let mut env = environment();
        env.add_template_owned(name, source.to_owned())
            .map_err(syntax_error)?;
        let variables: BTreeSet<String> = env
            .get_template(name)
            .map_err(syntax_error)?
            .undeclared_variables(true)
            .into_iter()
            .collect();
        check_known_variables(&variables)?;
        Ok(Self {
            env: Arc::new(env),
            name,
            variables,
        })
    }

    /// The variables the template reads, as dotted paths (`caller.phone`, `data.custom_fields`).
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(String::as_str)
    }

    /// Render with the given variables.
    pub fn render(&self, vars: &Vars) -> Result<String, TemplateError> {
        let template = self.env.get_template(self.name).map_err(syntax_error)?;
        template
            .render(&vars.root)
            .map_err(|e| render_error(&e, &self.variables, vars))
    }
}

/// A compiled expression (route filters), evaluated against [`Vars`].
pub struct Expression {
    expr: minijinja::Expression<'static, 'static>,
    variables: BTreeSet<String>,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expression")
            .field("variables", &self.variables)
            .finish()
    }
}

impl Expression {
    /// Compile an expression such as `data.duration_seconds > 120 and "quote" in data.summary`.
    pub fn compile(source: &str) -> Result<Self, TemplateError> {
        let source = rewrite_app_data_names(source);
        let expr = shared_environment()
            .compile_expression_owned(source)
            .map_err(syntax_error)?;
        let variables: BTreeSet<String> = expr.undeclared_variables(true).into_iter().collect();
        check_known_variables(&variables)?;
        Ok(Self { expr, variables })
    }

    /// The variables the expression reads, as dotted paths.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(String::as_str)
    }

    /// Evaluate to a value.
    pub fn eval(&self, vars: &Vars) -> Result<Value, TemplateError> {
        self.expr
            .eval(&vars.root)
            .map_err(|e| render_error(&e, &self.variables, vars))
    }

    /// Evaluate and take the result's truth (strict: an undefined result is an error).
    pub fn eval_bool(&self, vars: &Vars) -> Result<bool, TemplateError> {
        let value = self.eval(vars)?;
        if value.is_undefined() {
            return Err(TemplateError::Undefined {
                variable: first_undefined(&self.variables, vars),
            });
        }
        Ok(value.is_true())
    }
}

fn syntax_error(e: Error) -> TemplateError {
    TemplateError::Syntax {
        reason: e.to_string(),
    }
}

fn render_error(e: &Error, variables: &BTreeSet<String>, vars: &Vars) -> TemplateError {
    if e.kind() == ErrorKind::UndefinedError {
        return TemplateError::Undefined {
            variable: first_undefined(variables, vars),
        };
    }
    let reason = match e.line() {
        Some(line) => format!("{} (line {line})", e.kind()),
        None => e.kind().to_string(),
    };
    TemplateError::Render { reason }
}

fn first_undefined(variables: &BTreeSet<String>, vars: &Vars) -> String {
    variables
        .iter()
        .find(|path| vars.lookup(path).is_undefined())
        .cloned()
        .unwrap_or_else(|| "(unknown)".to_owned())
}

/// Attributes of `now`.
const NOW_FIELDS: &[&str] = &[
    "iso", "hour", "minute", "weekday", "date", "time", "year", "month", "day", "unix",
];
/// Fields of `caller`.
const CALLER_FIELDS: &[&str] = &["phone", "name", "email"];
/// Names that hold a string (or nothing), so an attribute lookup on them is always a mistake.
const SCALAR_ROOTS: &[&str] = &[
    "event_type",
    "call_id",
    "delivery_id",
    "source",
    "occurred_at",
    "received_at",
    "timestamp",
    "weekday",
    "caller_number",
    "caller_name",
    "caller_email",
];

fn check_known_variables(variables: &BTreeSet<String>) -> Result<(), TemplateError> {
    for path in variables {
        let mut parts = path.split('.');
        let root = parts.next().unwrap_or_default();
        let second = parts.next();
        let unknown = |hint: &str| {
            Err(TemplateError::UnknownVariable {
                variable: path.clone(),
                hint: hint.to_owned(),
            })
        };
        match (root, second) {
            ("caller", Some(f)) if !CALLER_FIELDS.contains(&f) => {
                return unknown("caller has phone, name and email");
            }
            ("now", Some(f)) if !NOW_FIELDS.contains(&f) => {
                return unknown(
                    "now has iso, hour, minute, weekday, date, time, year, month, day, unix",
                );
            }
            ("event", Some("caller")) => {
                if let Some(f) = parts.next() {
                    if !CALLER_FIELDS.contains(&f) {
                        return unknown("caller has phone, name and email");
                    }
                }
            }
            (r, Some(_)) if SCALAR_ROOTS.contains(&r) => {
                return unknown(&format!("{r} is a single value and has no fields"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// NextPhone `[name]` → `{{ name }}` outside template tags; hyphenated `app_data` names inside
/// tags → `app_data["name"]`.
fn rewrite_sender_syntax(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 16);
    let mut rest = source;
    loop {
        let Some(open) = find_tag_open(rest) else {
            out.push_str(&rewrite_brackets(rest));
            return out;
        };
        out.push_str(&rewrite_brackets(&rest[..open]));
        let tag = &rest[open..];
        let close_marker = match &tag[..2] {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        match tag[2..].find(close_marker) {
            Some(end) => {
                let inner_end = 2 + end + 2;
                out.push_str(&rewrite_app_data_names(&tag[..inner_end]));
                rest = &tag[inner_end..];
            }
            None => {
                // Unterminated tag: leave it for the compiler to report.
                out.push_str(tag);
                return out;
            }
        }
    }
}

fn find_tag_open(s: &str) -> Option<usize> {
    ["{{", "{%", "{#"].iter().filter_map(|m| s.find(m)).min()
}

fn rewrite_brackets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let ident_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let ident = &after[..ident_len];
        let is_name = ident
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && !matches!(ident, "true" | "false" | "null");
        if is_name && after[ident_len..].starts_with(']') {
            out.push_str("{{ ");
            out.push_str(ident);
            out.push_str(" }}");
            rest = &after[ident_len + 1..];
        } else {
            out.push('[');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn rewrite_app_data_names(tag: &str) -> String {
    const PREFIX: &str = "app_data.";
    let mut out = String::with_capacity(tag.len());
    let mut rest = tag;
    while let Some(pos) = rest.find(PREFIX) {
        let preceded_by_ident = rest[..pos]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        out.push_str(&rest[..pos]);
        let after = &rest[pos + PREFIX.len()..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if !preceded_by_ident && name.contains('-') {
            out.push_str("app_data[\"");
            out.push_str(name);
            out.push_str("\"]");
            rest = &after[name_len..];
        } else {
            out.push_str(PREFIX);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The current time in the configured zone, as `now` in templates.
#[derive(Debug)]
struct Now {
    local: DateTime<Tz>,
}

impl Object for Now {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let t = &self.local;
        Some(match key.as_str()? {
            "iso" => Value::from(t.to_rfc3339()),
            "hour" => Value::from(t.hour()),
            "minute" => Value::from(t.minute()),
            "weekday" => Value::from(weekday_name(t.weekday())),
            "date" => Value::from(t.format("%Y-%m-%d").to_string()),
            "time" => Value::from(t.format("%H:%M").to_string()),
            "year" => Value::from(t.year()),
            "month" => Value::from(t.month()),
            "day" => Value::from(t.day()),
            "unix" => Value::from(t.timestamp()),
            _ => return None,
        })
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.local.to_rfc3339())
    }
}

fn weekday_name(d: chrono::Weekday) -> &'static str {
    match d {
        chrono::Weekday::Mon => "mon",
        chrono::Weekday::Tue => "tue",
        chrono::Weekday::Wed => "wed",
        chrono::Weekday::Thu => "thu",
        chrono::Weekday::Fri => "fri",
        chrono::Weekday::Sat => "sat",
        chrono::Weekday::Sun => "sun",
    }
}

fn current_time(state: &State) -> Result<DateTime<Tz>, Error> {
    state
        .lookup("now")
        .and_then(|v| v.downcast_object_ref::<Now>().map(|n| n.local))
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "`now` is not available"))
}

/// `hour_between(9, 17)`: true from 09:00 up to (not including) 17:00; `hour_between(22, 6)`
/// wraps midnight.
fn hour_between(state: &State, start: u32, end: u32) -> Result<bool, Error> {
    let hour = current_time(state)?.hour();
    Ok(in_window(hour, start, end))
}

/// `time_between("08:30", "17:45")`: like `hour_between` with minutes.
fn time_between(state: &State, start: &str, end: &str) -> Result<bool, Error> {
    let parse = |s: &str| {
        NaiveTime::parse_from_str(s, "%H:%M")
            .map(|t| t.hour() * 60 + t.minute())
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, "time must be \"HH:MM\""))
    };
    let now = current_time(state)?;
    Ok(in_window(
        now.hour() * 60 + now.minute(),
        parse(start)?,
        parse(end)?,
    ))
}

/// Any serializable value as a template value.
fn js<T: serde::Serialize>(value: &T) -> Value {
    Value::from(Serde(value))
}

fn in_window(value: u32, start: u32, end: u32) -> bool {
    if start <= end {
        value >= start && value < end
    } else {
        value >= start || value < end
    }
}

/// Render configured field templates over `vars` into `map`: a non-empty (trimmed) result sets
/// the field, an empty one removes it, so a configured field overrides an adapter's default and
/// an empty template drops it. On failure, the field's name and the error (which names the
/// variable, never its value).
pub fn render_fields(
    templates: &[(String, Template)],
    vars: &Vars,
    map: &mut BTreeMap<String, String>,
) -> Result<(), (String, TemplateError)> {
    for (name, template) in templates {
        let value = template.render(vars).map_err(|e| (name.clone(), e))?;
        let value = value.trim();
        if value.is_empty() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.to_owned());
        }
    }
    Ok(())
}

/// The variables one render sees: the event, earlier handlers' outputs and the time.
#[derive(Debug, Clone)]
pub struct Vars {
    root: Value,
}

impl Vars {
    /// Variables for `event`. `app_data` maps handler names to `{"data": …, "status": …}`
    /// (see [`crate::Context::app_data`]); `now` is shown in `time_zone`.
    pub fn new(
        event: &Event,
        app_data: &serde_json::Map<String, serde_json::Value>,
        now: DateTime<Utc>,
        time_zone: Tz,
    ) -> Self {
        let mut root: BTreeMap<String, Value> = BTreeMap::new();
        let data_obj = event.data.as_object();
        // Lowest precedence first: top-level data keys, then NextPhone custom fields, then the
        // canonical names, so a sender field can never shadow a canonical one.
        if let Some(obj) = data_obj {
            for (k, v) in obj {
                root.insert(k.clone(), js(v));
            }
            if let Some(custom) = obj.get("custom_fields").and_then(|c| c.as_object()) {
                for (k, v) in custom {
                    root.insert(k.clone(), js(v));
                }
            }
        }
        let str_field = |k: &str| {
            data_obj
                .and_then(|o| o.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let local = now.with_timezone(&time_zone);
        let occurred = event.occurred_at.map(|t| t.to_rfc3339());
        let timestamp = occurred
            .clone()
            .unwrap_or_else(|| event.received_at.to_rfc3339());
        let called = str_field("called_number").or_else(|| str_field("receiving_number"));

        let mut caller: BTreeMap<&str, Value> = BTreeMap::new();
        let mut canonical: Vec<(&str, Value)> = vec![
            ("event_type", Value::from(event.event_type.as_str())),
            ("delivery_id", Value::from(event.delivery_id.as_str())),
            ("source", Value::from(event.source.as_str())),
            ("received_at", Value::from(event.received_at.to_rfc3339())),
            ("timestamp", Value::from(timestamp)),
            ("data", js(&event.data)),
        ];
        if let Some(id) = &event.call_id {
            canonical.push(("call_id", Value::from(id.as_str())));
        }
        if let Some(t) = &occurred {
            canonical.push(("occurred_at", Value::from(t.as_str())));
        }
        let mut aliases: Vec<(&str, Value)> = Vec::new();
        for (field, value, root_alias, ct_alias) in [
            (
                "phone",
                &event.caller.phone,
                "caller_number",
                "calling_number",
            ),
            ("name", &event.caller.name, "caller_name", "calling_name"),
            (
                "email",
                &event.caller.email,
                "caller_email",
                "calling_email",
            ),
        ] {
            if let Some(v) = value {
                caller.insert(field, Value::from(v.as_str()));
                aliases.push((root_alias, Value::from(v.as_str())));
                aliases.push((ct_alias, Value::from(v.as_str())));
            }
        }
        let caller = Value::from_pairs(caller);

        // `event`: Call Telemetry's view: data keys, canonical fields, its own names.
        let mut event_obj: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(obj) = data_obj {
            for (k, v) in obj {
                event_obj.insert(k.clone(), js(v));
            }
        }
        for (k, v) in &canonical {
            event_obj.insert((*k).to_owned(), v.clone());
        }
        event_obj.insert("caller".into(), caller.clone());
        for (k, v) in &aliases {
            if k.starts_with("calling_") {
                event_obj.insert((*k).to_owned(), v.clone());
            }
        }
        if let Some(c) = &called {
            event_obj.insert("called_number".into(), Value::from(c.as_str()));
        }

        for (k, v) in canonical {
            root.insert(k.to_owned(), v);
        }
        for (k, v) in aliases {
            if !k.starts_with("calling_") {
                root.insert(k.to_owned(), v);
            }
        }
        if let Some(email) = &event.caller.email {
            root.insert("email".into(), Value::from(email.as_str()));
        }
        if let Some(c) = called {
            root.insert("receiving_number".into(), Value::from(c));
        }
        root.insert("caller".into(), caller);
        root.insert("event".into(), Value::from_pairs(event_obj));
        root.insert("app_data".into(), js(app_data));
        root.insert("weekday".into(), Value::from(weekday_name(local.weekday())));
        root.insert("now".into(), Value::from_object(Now { local }));
        Self {
            root: Value::from_pairs(root),
        }
    }

    /// Look a dotted path up; undefined when any step is missing.
    pub fn lookup(&self, path: &str) -> Value {
        let mut current = self.root.clone();
        for part in path.split('.') {
            match current.get_attr(part) {
                Ok(v) if !v.is_undefined() => current = v,
                _ => return Value::UNDEFINED,
            }
        }
        current
    }
}

mod url_template;

#[cfg(test)]
mod tests;
