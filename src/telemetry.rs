//! Process-wide telemetry: the tracing subscriber (JSON or pretty logs, and OTLP traces when an
//! endpoint is configured) and the Prometheus recorder.
//!
//! Logs and traces are apart: `log.level` governs log lines only, and the exporter records the
//! server spans of API requests and the client spans of their database calls itself (see
//! [`traces`]), so a quiet log level never silences traces, and probes and background work are
//! never traced.

pub mod logs;
pub mod metrics;
pub mod stdout;
pub mod traces;

use std::time::Duration;

use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogFormat, LogSettings, TelemetrySettings};

/// Owns the trace pipeline; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    exporter: Option<traces::Stopper>,
}

impl Telemetry {
    /// Sends queued spans and stops the exporter, waiting at most `timeout`; flushes the logs.
    pub fn shutdown(self, timeout: Duration) {
        if let Some(exporter) = self.exporter {
            exporter.shutdown(timeout);
        }
        stdout::flush();
    }
}

/// Replaces the installed subscriber's log filter (set by [`init`]).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static LOG_FILTER: std::sync::OnceLock<SetFilter> = std::sync::OnceLock::new();

/// A log filter in `log.level` syntax (e.g. `info,orders_api::store=debug`), or why it is not
/// one.
pub fn parse_log_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| format!("invalid log filter {directives:?}: {e}"))
}

/// Replaces the log filter of the subscriber [`init`] installed; traces keep their own filter.
/// An invalid filter is refused with the reason and changes nothing; without an installed
/// subscriber it is a no-op.
pub fn set_log_filter(directives: &str) -> Result<(), String> {
    let filter = parse_log_filter(directives)?;
    match LOG_FILTER.get() {
        Some(set) => set(filter),
        None => Ok(()),
    }
}

/// Installs the global subscriber. A second call in one process is a no-op that exports nothing.
pub fn init(log: &LogSettings, telemetry: &TelemetrySettings) -> Result<Telemetry, String> {
    let log_filter = EnvFilter::builder()
        .parse(&log.level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .fmt_fields(logs::NoFields)
            .event_format(logs::JsonLines)
            .with_writer(stdout::BufferedStdout)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .boxed(),
    };
    // With JSON lines the access layer writes its line itself, where this filter allows it.
    let json = log.format == LogFormat::Json;
    let gates = logs::direct::Gates::of(&log_filter);
    let (log_filter, handle) = reload::Layer::new(log_filter);
    let installed = Registry::default()
        .with(logs::SpanFieldsLayer)
        .with(fmt.with_filter(log_filter))
        .try_init();
    if installed.is_err() {
        return Ok(Telemetry::default());
    }
    if json {
        gates.open();
    }
    let _ = LOG_FILTER.set(Box::new(move |filter| {
        let gates = logs::direct::Gates::of(&filter);
        handle.reload(filter).map_err(|e| e.to_string())?;
        if json {
            gates.open();
        }
        Ok(())
    }));
    let exporter = traces::start(telemetry)?;
    if let Some(url) = telemetry.traces_url().filter(|_| exporter.is_some()) {
        tracing::info!(
            endpoint = %crate::config::redact_url(&url),
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry { exporter })
}
