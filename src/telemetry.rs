//! Process-wide telemetry: the tracing subscriber (JSON or pretty logs).

pub mod logs;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. A second call (tests building several apps) is a no-op.
pub fn init(cfg: &LogSettings) {
    let filter = EnvFilter::builder()
        .parse(&cfg.level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match cfg.format {
        LogFormat::Json => registry
            .with(logs::SpanFieldsLayer)
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(logs::JsonLines)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a global subscriber was already installed");
    }
}
