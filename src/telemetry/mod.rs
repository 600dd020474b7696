//! Operational telemetry: log lines (`tracing` to stderr and, when configured, to daily-rotated
//! files), the panic hook, and — when configured — OpenTelemetry traces of deliveries
//! ([`traces`]).
//!
//! Log lines carry request ids, sources, statuses and latencies; payload content, header values
//! of authentication headers and secrets are never passed to a log macro anywhere in wardhook.
//!
//! Logging is built to cost little on the intake path (docs/BENCHMARKS.md §9 measured nothing
//! measurable on one machine; §14 measured about 10 % of the server's CPU per delivery on
//! another, about half of it the fmt layer formatting the access line and its writer thread):
//! each request writes one access line at INFO (the listener's middleware) and nothing else on
//! success; no span is opened per request unless DEBUG is on (the filter disables the request
//! span at its call site, so it is never allocated or formatted); the access line is formatted
//! by `access_line`, not by the fmt layer — the same bytes in every format, without the fmt
//! layer's field visitor and `Debug` quoting, filtered under the same target, level and field
//! names ([`ACCESS_TARGET`]) — and queued on the same writers as every other line (§16); and
//! lines are formatted on the request's thread but written by a background thread through a
//! 64 KiB buffer, flushed whenever the queue runs dry and at exit, so a request never waits for
//! a `write(2)` to stderr or a file; after each write the thread rests 10 ms, so under load the
//! requests queue their lines without waking it one by one.

pub(crate) mod access_line;
mod logfile;
mod panic;
pub mod traces;

pub use access_line::ACCESS_TARGET;
pub use panic::install_panic_hook;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};
use access_line::{AccessSinks, LineStyle};

/// The `tracing` target of the per-delivery "delivery accepted" / "duplicate delivery" lines.
/// They are DEBUG: the access line already names the delivery and its outcome. An operator who
/// wants them as well turns them on with `level = "info,wardhook::delivery=debug"` (or the same
/// in `WARDHOOK_LOG`).
pub const DELIVERY_TARGET: &str = "wardhook::delivery";

/// Lines a writer thread may hold before a request waits for it. A request waits (rather than a
/// line being dropped) only when the output cannot keep up for this many lines.
const BUFFERED_LINES: usize = 128_000;

/// Bytes the writer thread gathers before a `write(2)`; it also writes whenever its queue is
/// empty, so a quiet server's lines appear within [`WRITE_PACE`].
const WRITE_BUFFER: usize = 64 * 1024;

/// How long the writer thread rests after each write. A thread blocked on its queue is woken
/// by every line a request sends (a futex call on both sides, per request, under load:
/// docs/BENCHMARKS.md §18); resting after a write lets the lines of the next few milliseconds
/// queue without waking anyone, and the next write takes them all.
const WRITE_PACE: std::time::Duration = std::time::Duration::from_millis(10);

/// The writer thread's output: flushing (which `tracing_appender` does whenever its queue runs
/// dry) writes the buffer out, then rests for [`WRITE_PACE`].
struct Paced<W: std::io::Write>(std::io::BufWriter<W>);

impl<W: std::io::Write> std::io::Write for Paced<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.0.flush();
        std::thread::sleep(WRITE_PACE);
        flushed
    }
}

/// Keeps the log writer threads running; drop it last, at exit: dropping it writes out every
/// queued line (waiting up to a second) before the process ends.
#[derive(Debug)]
pub struct LogGuard {
    _stderr: Option<WorkerGuard>,
    _file: Option<WorkerGuard>,
}

fn layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty if ansi => fmt::layer().with_ansi(true).with_writer(writer).boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_ansi(false)
            .fmt_fields(PlainFields::default())
            .with_writer(writer)
            .boxed(),
    }
}

/// Span fields for a layer without colour: `DefaultFields`' output under a type of its own.
/// Each fmt layer keeps a span's formatted fields in the span's extensions, keyed by the type of
/// its field formatter; with one type for both layers, the log file reused the fields the
/// stderr layer had formatted first — with its colour escape codes.
#[derive(Debug, Default)]
struct PlainFields(fmt::format::DefaultFields);

impl<'w> fmt::FormatFields<'w> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        self.0.format_fields(writer, fields)
    }
}

/// A writer thread named `thread` in front of `out`: lines are queued, never dropped.
fn background<T: std::io::Write + Send + 'static>(
    thread: &str,
    out: T,
) -> (tracing_appender::non_blocking::NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name(thread)
        .finish(Paced(std::io::BufWriter::with_capacity(WRITE_BUFFER, out)))
}

/// Install the global subscriber. Safe to call once per process; later calls are ignored (tests
/// start many servers in one process) and return a guard that holds nothing.
pub fn init(settings: &LogSettings) -> LogGuard {
    let filter = EnvFilter::try_from_env("WARDHOOK_LOG")
        .or_else(|_| EnvFilter::builder().parse(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Each writer thread takes every line through its fmt layer, and the access line through
    // `access_line`, in the same style.
    let mut access_sinks = Vec::with_capacity(2);
    let (stderr, stderr_guard) = background("wardhook-log", std::io::stderr());
    access_sinks.push((LineStyle::of(settings.format, true), stderr.clone()));
    let stderr = layer(settings.format, stderr, true);
    let (file_layer, file_guard) = match &settings.dir {
        Some(dir) => {
            match logfile::DailyFile::new(dir) {
                Ok(file) => {
                    let (writer, guard) = background("wardhook-logfile", file);
                    access_sinks.push((LineStyle::of(settings.format, false), writer.clone()));
                    (Some(layer(settings.format, writer, false)), Some(guard))
                }
                Err(e) => {
                    // Logging must not stop the server: lines still go to stderr.
                    eprintln!(
                        "wardhook: log folder {}: {e}; logging to stderr only",
                        dir.display()
                    );
                    (None, None)
                }
            }
        }
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file_layer)
        .with(AccessSinks::new(access_sinks))
        .try_init()
        .is_ok();
    if installed {
        LogGuard {
            _stderr: Some(stderr_guard),
            _file: file_guard,
        }
    } else {
        LogGuard {
            _stderr: None,
            _file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    /// Lines written to memory.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl fmt::MakeWriter<'_> for Buf {
        type Writer = Buf;

        fn make_writer(&self) -> Buf {
            self.clone()
        }
    }

    /// The stderr layer (colour) and the file layer (none) side by side, as `init` builds them:
    /// a span's fields reach the file without escape codes, and stderr still with them.
    #[test]
    fn span_fields_reach_the_log_file_without_colour_codes() {
        let stderr = Buf::default();
        let file = Buf::default();
        let subscriber = tracing_subscriber::registry()
            .with(layer(LogFormat::Pretty, stderr.clone(), true))
            .with(layer(LogFormat::Pretty, file.clone(), false));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("open", path = "data/dev/wardhook.db");
            let _entered = span.enter();
            tracing::info!(rows = 3, "store opened");
        });
        let text = |b: &Buf| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        let (stderr, file) = (text(&stderr), text(&file));
        assert!(stderr.contains('\x1b'), "{stderr}");
        assert!(!file.contains('\x1b'), "{file:?}");
        assert!(
            file.contains("open{path=\"data/dev/wardhook.db\"}"),
            "{file}"
        );
        assert!(file.contains("store opened rows=3"), "{file}");
    }
}
