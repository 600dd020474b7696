//! Operational logging: `tracing` to stderr and, when configured, to daily-rotated files.
//!
//! Log lines carry request ids, sources, statuses and latencies; payload content, header values
//! of authentication headers and secrets are never passed to a log macro anywhere in wardhook.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};

/// Keeps the file writer flushing; drop it last, at exit.
#[derive(Debug)]
pub struct LogGuard {
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
        LogFormat::Pretty => fmt::layer().with_ansi(ansi).with_writer(writer).boxed(),
    }
}

/// Install the global subscriber. Safe to call once per process; later calls are ignored (tests
/// start many servers in one process).
pub fn init(settings: &LogSettings) -> LogGuard {
    let filter = EnvFilter::try_from_env("WARDHOOK_LOG")
        .or_else(|_| EnvFilter::builder().parse(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = layer(settings.format, std::io::stderr, true);
    let (file_layer, guard) = match &settings.dir {
        Some(dir) => {
            let appender = tracing_appender::rolling::daily(dir, "wardhook.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            (Some(layer(settings.format, writer, false)), Some(guard))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file_layer)
        .try_init();
    LogGuard { _file: guard }
}

/// Minimal logging for commands that run before a config is loaded.
pub fn init_default() -> LogGuard {
    init(&LogSettings {
        format: LogFormat::Pretty,
        level: "info".into(),
        dir: None,
    })
}
