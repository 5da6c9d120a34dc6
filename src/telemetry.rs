//! Process-wide telemetry: the tracing subscriber (JSON or pretty logs, and OTLP traces when an
//! endpoint is configured) and the Prometheus recorder.
//!
//! Logs and traces are filtered separately: `log.level` governs log lines only, so a quiet log
//! level never silences traces. Probe traffic (`orders_api::ops`) and access events are never
//! exported as traces.

pub mod logs;
pub mod metrics;
pub mod stdout;
pub mod traces;

use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Metadata;
use tracing_subscriber::filter::{FilterFn, LevelFilter};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogFormat, LogSettings, TelemetrySettings};
use crate::context::OPS_TARGET;

/// Owns the trace pipeline; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes queued spans and stops the exporter, within `timeout`. Call it outside the async
    /// runtime: the exporter's blocking HTTP client must not be dropped on a runtime thread.
    pub fn shutdown(self, timeout: Duration) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(timeout)
        {
            tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
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

fn exported(meta: &Metadata<'_>) -> bool {
    meta.target() != OPS_TARGET && meta.target() != "access" && !meta.target().starts_with("sqlx")
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
    let pipeline = traces::provider(telemetry)?;
    let (provider, otel) = match pipeline {
        Some((provider, tracer)) => {
            // Per span, the layer's defaults add work nobody reads here: busy/idle timings
            // (two clock reads on every poll), code and thread attributes, and an OTel
            // `Context` attached on every enter (nothing in this binary reads
            // `Context::current`; parents come from the tracing span tree).
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_context_activation(false)
                .with_tracked_inactivity(false)
                .with_location(false)
                .with_threads(false)
                .with_filter(LevelFilter::INFO)
                .with_filter(FilterFn::new(exported));
            (Some(provider), Some(layer))
        }
        None => (None, None),
    };
    let (log_filter, handle) = reload::Layer::new(log_filter);
    let installed = Registry::default()
        .with(logs::SpanFieldsLayer)
        .with(fmt.with_filter(log_filter))
        .with(otel)
        .try_init();
    if installed.is_err() {
        return Ok(Telemetry::default());
    }
    let _ = LOG_FILTER.set(Box::new(move |filter| {
        handle.reload(filter).map_err(|e| e.to_string())
    }));
    if provider.is_some() {
        crate::context::set_exporting();
    }
    if let Some(url) = telemetry.traces_url().filter(|_| provider.is_some()) {
        tracing::info!(
            endpoint = %crate::config::redact_url(&url),
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry { provider })
}
