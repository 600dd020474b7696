//! The access line's own formatter: the one INFO line per request that the listener's middleware
//! writes (`listener::access`), formatted here and handed straight to the log writer threads.
//!
//! Every other line goes through `tracing` and tracing-subscriber's fmt layer, which records an
//! event's fields through a visitor and writes each string through `Debug`. For the line written
//! once per request that was about 3 % of the server's CPU per delivery (docs/BENCHMARKS.md
//! §14). This module writes the same bytes — in every output format: pretty with ANSI colour (on
//! stderr), pretty without (the log file), JSON — from the request's values directly, with one
//! timestamp per line, into a reused per-thread buffer, and queues them on the same
//! non-blocking writers the fmt layers use, so the line keeps its place among the others.
//!
//! Nothing else changes for an operator: the line is asked for with `tracing::event_enabled!`
//! under the same target ([`ACCESS_TARGET`]), level and field names as the event it replaces, so
//! `WARDHOOK_LOG`, `[log] level` and per-target directives (`wardhook::listener=warn`) filter
//! it exactly as before. When the current subscriber is not the one [`super::init`] installed
//! (tests that install their own) or the line would be written inside a span (whose name the
//! fmt layer prints before the target), the line is written as a `tracing` event instead, which
//! prints the same thing.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;

use tracing::Level;
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

use crate::config::LogFormat;

/// The `tracing` target of the access line: the module that wrote it as a `tracing` event
/// before, so filter directives written for it keep working.
pub const ACCESS_TARGET: &str = "wardhook::listener::access";

/// One request as its access line tells it. Values are the listener's (request id, method,
/// path without the query string, status, latency) and, for a stored delivery, its id, outcome
/// and trace id; no payload value is ever one of them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub latency_us: u64,
    pub delivery_id: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub trace_id: Option<&'a str>,
}

/// How one writer shows lines: the fmt layer's settings for it in [`super::init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineStyle {
    /// The fmt layer's default ("full") format, with or without ANSI colour.
    Pretty { ansi: bool },
    /// One JSON object per line (`fmt::layer().json()`).
    Json,
}

impl LineStyle {
    /// The style of a fmt layer built by `super::layer(format, _, ansi)`.
    pub(crate) fn of(format: LogFormat, ansi: bool) -> Self {
        match format {
            LogFormat::Pretty => Self::Pretty { ansi },
            LogFormat::Json => Self::Json,
        }
    }
}

/// Where access lines go: the log writer threads' queues, each with its fmt layer's style.
///
/// It rides in the global subscriber as a layer that records nothing itself, so the access line
/// finds it through the current dispatcher (`Dispatch::downcast_ref`) and a subscriber installed
/// by anyone else simply has none.
#[derive(Debug)]
pub(crate) struct AccessSinks {
    sinks: Vec<(LineStyle, NonBlocking)>,
}

impl AccessSinks {
    pub(crate) fn new(sinks: Vec<(LineStyle, NonBlocking)>) -> Self {
        Self { sinks }
    }

    /// Format `line` once per writer and queue it, as the fmt layer would have.
    fn write(&self, line: &AccessLine<'_>) {
        thread_local! {
            static BUF: RefCell<(String, String)> = const { RefCell::new((String::new(), String::new())) };
        }
        BUF.with(|buf| {
            let mut fresh = (String::new(), String::new());
            let mut borrowed = buf.try_borrow_mut();
            let (timestamp, text) = match &mut borrowed {
                Ok(b) => &mut **b,
                Err(_) => &mut fresh,
            };
            timestamp.clear();
            if SystemTime.format_time(&mut Writer::new(timestamp)).is_err() {
                timestamp.clear();
                timestamp.push_str("<unknown time>");
            }
            for (style, writer) in &self.sinks {
                text.clear();
                line.format(*style, timestamp, text);
                if let Err(e) = writer.clone().write_all(text.as_bytes()) {
                    // What the fmt layer does when its writer fails.
                    eprintln!("[tracing-subscriber] Unable to write an event to the Writer for this Subscriber! Error: {e}\n");
                }
            }
        });
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AccessSinks {}

impl AccessLine<'_> {
    /// Write the access line, if the configured filter wants it.
    pub(crate) fn log(&self) {
        // The same target, level, kind and field names as the event below: a filter decides
        // about this call exactly as it decides about the event.
        if !tracing::event_enabled!(
            target: ACCESS_TARGET,
            Level::INFO,
            { message, request_id, method, path, status, latency_us, delivery_id, outcome, trace_id }
        ) {
            return;
        }
        let written = tracing::dispatcher::get_default(|dispatch| {
            match dispatch.downcast_ref::<AccessSinks>() {
                // `id()`, not `is_known()`: a registry always "knows" its current span, and
                // outside any span that knowledge is `None`.
                Some(sinks) if dispatch.current_span().id().is_none() => {
                    sinks.write(self);
                    true
                }
                _ => false,
            }
        });
        if !written {
            self.log_as_event();
        }
    }

    /// The access line as a `tracing` event, formatted by whatever subscriber is current.
    fn log_as_event(&self) {
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = self.request_id,
            method = self.method,
            path = self.path,
            status = self.status,
            latency_us = self.latency_us,
            delivery_id = self.delivery_id,
            outcome = self.outcome,
            trace_id = self.trace_id,
            "request"
        );
    }

    /// The line's fields in the order the fmt layer prints them; absent notes are left out.
    fn fields(&self) -> impl Iterator<Item = (&'static str, Field<'_>)> {
        let always = [
            ("request_id", Field::Str(self.request_id)),
            ("method", Field::Str(self.method)),
            ("path", Field::Str(self.path)),
            ("status", Field::Num(u64::from(self.status))),
            ("latency_us", Field::Num(self.latency_us)),
        ];
        let notes = [
            ("delivery_id", self.delivery_id),
            ("outcome", self.outcome),
            ("trace_id", self.trace_id),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, Field::Str(v))));
        always.into_iter().chain(notes)
    }

    /// Append the line, newline included, as the fmt layer of `style` prints the event of
    /// [`Self::log_as_event`] outside any span, stamped `timestamp`.
    pub(crate) fn format(&self, style: LineStyle, timestamp: &str, out: &mut String) {
        match style {
            LineStyle::Pretty { ansi } => self.format_pretty(ansi, timestamp, out),
            LineStyle::Json => self.format_json(timestamp, out),
        }
    }

    /// `2026-12-04T14:18:34.123456Z  INFO wardhook::listener::access: request request_id="…" …`;
    /// with ANSI the timestamp, target and `=` are dimmed, the level green and names italic.
    fn format_pretty(&self, ansi: bool, timestamp: &str, out: &mut String) {
        const DIM: &str = "\x1b[2m";
        const ITALIC: &str = "\x1b[3m";
        const RESET: &str = "\x1b[0m";
        let field = |out: &mut String, name: &str| {
            out.push(' ');
            if ansi {
                out.push_str(ITALIC);
                out.push_str(name);
                out.push_str(RESET);
                out.push_str(DIM);
                out.push('=');
                out.push_str(RESET);
            } else {
                out.push_str(name);
                out.push('=');
            }
        };
        if ansi {
            out.push_str(DIM);
            out.push_str(timestamp);
            out.push_str(RESET);
            out.push(' ');
            out.push_str("\x1b[32m INFO\x1b[0m ");
            out.push_str(DIM);
            out.push_str(ACCESS_TARGET);
            out.push_str(RESET);
            out.push_str(DIM);
            out.push(':');
            out.push_str(RESET);
            out.push(' ');
        } else {
            out.push_str(timestamp);
            out.push_str("  INFO ");
            out.push_str(ACCESS_TARGET);
            out.push_str(": ");
        }
        out.push_str("request");
        for (name, value) in self.fields() {
            field(out, name);
            match value {
                Field::Str(v) => push_debug_str(out, v),
                Field::Num(n) => push_u64(out, n),
            }
        }
        out.push('\n');
    }

    /// `{"timestamp":"…","level":"INFO","fields":{"message":"request",…},"target":"…"}`.
    fn format_json(&self, timestamp: &str, out: &mut String) {
        out.push_str("{\"timestamp\":");
        push_json_str(out, timestamp);
        out.push_str(",\"level\":\"INFO\",\"fields\":{\"message\":\"request\"");
        for (name, value) in self.fields() {
            push_json_key(out, name);
            match value {
                Field::Str(v) => push_json_str(out, v),
                Field::Num(n) => push_u64(out, n),
            }
        }
        out.push_str("},\"target\":\"");
        out.push_str(ACCESS_TARGET);
        out.push_str("\"}\n");
    }
}

/// A field's value: text (quoted and escaped per format) or a number (bare).
#[derive(Clone, Copy)]
enum Field<'a> {
    Str(&'a str),
    Num(u64),
}

/// Printable ASCII other than `"` and `\`: what both `Debug` for `str` and JSON write as is.
fn is_plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// `value` quoted as `Debug` quotes a `str` (which is how the fmt layer writes string fields).
/// Ids, methods and paths are plain ASCII and copied as they are; anything else goes through
/// `Debug` itself, so the bytes stay the same.
fn push_debug_str(out: &mut String, value: &str) {
    if is_plain(value) {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// `value` as a JSON string, escaped as serde_json escapes it.
fn push_json_str(out: &mut String, value: &str) {
    if is_plain(value) {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        match serde_json::to_string(value) {
            Ok(quoted) => out.push_str(&quoted),
            Err(_) => out.push_str("\"\""),
        }
    }
}

/// `,"name":` — field names here are fixed identifiers, never escaped.
fn push_json_key(out: &mut String, name: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
}

fn push_u64(out: &mut String, value: u64) {
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use tracing_appender::non_blocking::NonBlockingBuilder;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::EnvFilter;

    use super::*;

    /// A writer for tests: everything written, in order.
    #[derive(Debug, Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    const ACCEPTED: AccessLine<'static> = AccessLine {
        request_id: "0b5c0e8f6a3e4d7c9a1f2e3d4c5b6a79",
        method: "POST",
        path: "/hooks/demo",
        status: 200,
        latency_us: 1234,
        delivery_id: Some("018f2c1e-7a4b-7c3d-9e8f-0a1b2c3d4e5f"),
        outcome: Some("accepted"),
        trace_id: None,
    };

    const TRACED: AccessLine<'static> = AccessLine {
        outcome: Some("duplicate"),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        ..ACCEPTED
    };

    const REFUSED: AccessLine<'static> = AccessLine {
        status: 401,
        latency_us: 0,
        delivery_id: None,
        outcome: None,
        trace_id: None,
        ..ACCEPTED
    };

    /// Values no request of ours has, but a path may: quotes, a backslash, a control
    /// character, non-ASCII; the line must still match byte for byte.
    const ODD: AccessLine<'static> = AccessLine {
        method: "M-SEARCH",
        path: "/hooks/\"a\\b\u{1b}[31m\tc\u{7f}\u{85}é'{}",
        latency_us: u64::MAX,
        ..REFUSED
    };

    const STYLES: [(LogFormat, bool); 3] = [
        (LogFormat::Pretty, true),
        (LogFormat::Pretty, false),
        (LogFormat::Json, true),
    ];

    /// The access line exactly as `listener::access` wrote it through `tracing` before this
    /// module (the call it replaces, with its module as the explicit target).
    fn previous_event(line: &AccessLine<'_>) {
        tracing::info!(
            target: "wardhook::listener::access",
            request_id = line.request_id,
            method = line.method,
            path = line.path,
            status = line.status,
            latency_us = line.latency_us,
            delivery_id = line.delivery_id,
            outcome = line.outcome,
            trace_id = line.trace_id,
            "request"
        );
    }

    /// What the fmt layer `super::super::layer(format, _, ansi)` prints for `line`.
    fn fmt_layer_output(format: LogFormat, ansi: bool, line: &AccessLine<'_>) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(super::super::layer(format, move || writer.clone(), ansi));
        tracing::subscriber::with_default(subscriber, || previous_event(line));
        out.text()
    }

    /// `line` with its RFC 3339 timestamp (`2026-12-04T14:18:34.123456Z`) replaced by `<ts>`.
    fn without_timestamp(line: &str) -> String {
        const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
        let bytes = line.as_bytes();
        let at = (0..bytes.len().saturating_sub(SHAPE.len()))
            .find(|&i| {
                SHAPE.iter().zip(&bytes[i..]).all(|(s, b)| match s {
                    b'd' => b.is_ascii_digit(),
                    s => s == b,
                })
            })
            .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
        format!("{}<ts>{}", &line[..at], &line[at + SHAPE.len()..])
    }

    fn our_output(format: LogFormat, ansi: bool, line: &AccessLine<'_>) -> String {
        let mut timestamp = String::new();
        SystemTime
            .format_time(&mut Writer::new(&mut timestamp))
            .unwrap();
        let mut out = String::new();
        line.format(LineStyle::of(format, ansi), &timestamp, &mut out);
        out
    }

    #[test]
    fn each_format_writes_the_bytes_the_fmt_layer_wrote() {
        for line in [ACCEPTED, TRACED, REFUSED, ODD] {
            for (format, ansi) in STYLES {
                let before = fmt_layer_output(format, ansi, &line);
                let now = our_output(format, ansi, &line);
                assert_eq!(
                    without_timestamp(&now),
                    without_timestamp(&before),
                    "{format:?}, ansi {ansi}, {line:?}"
                );
            }
        }
    }

    #[test]
    fn the_pretty_line_reads_as_operators_know_it() {
        let plain = without_timestamp(&our_output(LogFormat::Pretty, false, &ACCEPTED));
        assert_eq!(
            plain,
            "<ts>  INFO wardhook::listener::access: request \
             request_id=\"0b5c0e8f6a3e4d7c9a1f2e3d4c5b6a79\" method=\"POST\" \
             path=\"/hooks/demo\" status=200 latency_us=1234 \
             delivery_id=\"018f2c1e-7a4b-7c3d-9e8f-0a1b2c3d4e5f\" outcome=\"accepted\"\n"
        );
        let coloured = without_timestamp(&our_output(LogFormat::Pretty, true, &REFUSED));
        assert!(
            coloured.starts_with(
                "\x1b[2m<ts>\x1b[0m \x1b[32m INFO\x1b[0m \
                 \x1b[2mwardhook::listener::access\x1b[0m\x1b[2m:\x1b[0m request \
                 \x1b[3mrequest_id\x1b[0m\x1b[2m=\x1b[0m\""
            ),
            "{coloured:?}"
        );
        assert!(coloured.ends_with(
            "\x1b[3mstatus\x1b[0m\x1b[2m=\x1b[0m401 \x1b[3mlatency_us\x1b[0m\x1b[2m=\x1b[0m0\n"
        ));
    }

    #[test]
    fn the_json_line_is_one_object_with_the_fields_the_fmt_layer_names() {
        let json: serde_json::Value =
            serde_json::from_str(&our_output(LogFormat::Json, false, &TRACED)).unwrap();
        assert_eq!(json["level"], "INFO");
        assert_eq!(json["target"], ACCESS_TARGET);
        assert_eq!(json["fields"]["message"], "request");
        assert_eq!(json["fields"]["status"], 200);
        assert_eq!(json["fields"]["trace_id"], TRACED.trace_id.unwrap());
        assert!(json.get("span").is_none());
    }

    /// A subscriber as `super::super::init` builds it, writing through a log writer thread to
    /// `out` at `filter`; returns the writer's guard, which writes out the queue when dropped.
    fn installed(
        filter: &str,
        format: LogFormat,
        out: &Captured,
    ) -> (
        impl tracing::Subscriber + Send + Sync,
        tracing_appender::non_blocking::WorkerGuard,
    ) {
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(false)
            .finish(out.clone());
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(filter))
            .with(super::super::layer(format, writer.clone(), false))
            .with(AccessSinks::new(vec![(
                LineStyle::of(format, false),
                writer,
            )]));
        (subscriber, guard)
    }

    #[test]
    fn the_line_goes_to_the_writer_in_order_with_the_others() {
        let out = Captured::default();
        let (subscriber, guard) = installed("info", LogFormat::Pretty, &out);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before");
            ACCEPTED.log();
            tracing::info!("after");
        });
        drop(guard);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with("before"));
        assert_eq!(
            without_timestamp(lines[1]),
            without_timestamp(our_output(LogFormat::Pretty, false, &ACCEPTED).trim_end())
        );
        assert!(lines[2].ends_with("after"));
    }

    #[test]
    fn the_line_is_formatted_here_and_never_reaches_the_fmt_layer() {
        // The fmt layer and the access sinks write to different places, so the test tells which
        // one wrote the line (the bytes alone cannot: they are the same).
        let through_fmt = Captured::default();
        let through_sinks = Captured::default();
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(false)
            .finish(through_sinks.clone());
        let fmt_writer = through_fmt.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(super::super::layer(
                LogFormat::Pretty,
                move || fmt_writer.clone(),
                false,
            ))
            .with(AccessSinks::new(vec![(
                LineStyle::Pretty { ansi: false },
                writer,
            )]));
        tracing::subscriber::with_default(subscriber, || ACCEPTED.log());
        drop(guard);
        assert_eq!(through_fmt.text(), "");
        assert_eq!(
            without_timestamp(&through_sinks.text()),
            without_timestamp(&our_output(LogFormat::Pretty, false, &ACCEPTED))
        );
    }

    #[test]
    fn a_filter_that_leaves_out_info_or_the_listener_writes_no_access_line() {
        for filter in [
            "warn",
            "off",
            "info,wardhook::listener=warn",
            "info,wardhook::listener::access=off",
        ] {
            let out = Captured::default();
            let (subscriber, guard) = installed(filter, LogFormat::Json, &out);
            tracing::subscriber::with_default(subscriber, || {
                ACCEPTED.log();
                tracing::warn!("still here");
            });
            drop(guard);
            let text = out.text();
            assert!(!text.contains("\"request\""), "{filter}: {text}");
            // The writer did write (at `off` nothing is written at all).
            assert_eq!(
                text.contains("still here"),
                filter != "off",
                "{filter}: {text}"
            );
        }
        // A directive naming one of the line's fields applies to it as it did to the event.
        let out = Captured::default();
        let (subscriber, guard) = installed("warn,[{outcome}]=info", LogFormat::Json, &out);
        tracing::subscriber::with_default(subscriber, || ACCEPTED.log());
        drop(guard);
        assert!(out.text().contains("\"request\""), "{}", out.text());
    }

    #[test]
    fn inside_a_span_or_under_another_subscriber_the_line_is_the_fmt_layers_own() {
        // Inside a span the fmt layer names the span before the target: the event is written.
        let out = Captured::default();
        let (subscriber, guard) = installed("info", LogFormat::Pretty, &out);
        tracing::subscriber::with_default(subscriber, || {
            let _entered = tracing::info_span!("outer", n = 1).entered();
            ACCEPTED.log();
        });
        drop(guard);
        assert!(
            out.text()
                .contains(" INFO outer{n=1}: wardhook::listener::access: request request_id="),
            "{}",
            out.text()
        );
        // A subscriber without the access sinks gets the event.
        let before = fmt_layer_output(LogFormat::Json, false, &ACCEPTED);
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(super::super::layer(
                LogFormat::Json,
                move || writer.clone(),
                false,
            ));
        tracing::subscriber::with_default(subscriber, || ACCEPTED.log());
        assert_eq!(without_timestamp(&out.text()), without_timestamp(&before));
    }
}
