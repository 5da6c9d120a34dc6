//! `[log]`: the filter, the output format and the access log switch.

use super::reader::Reader;

/// `[log]`: filter directives and output format.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `tracing` filter directives (RUST_LOG syntax).
    pub level: String,
    /// Output format.
    pub format: LogFormat,
    /// Whether the access layer runs.
    pub access: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured when on a terminal.
    Pretty,
}

pub(super) fn read(r: &mut Reader<'_>) -> LogSettings {
    let level: String = r.get("log.level");
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
        r.invalid("log.level", &format!("not a valid filter: {e}"));
    }
    let format = r.parsed("log.format", "\"json\" or \"pretty\"", |s: &str| match s {
        "json" => Some(LogFormat::Json),
        "pretty" => Some(LogFormat::Pretty),
        _ => None,
    });
    let access = r.get("log.access");
    LogSettings {
        level,
        format: format.unwrap_or(LogFormat::Json),
        access,
    }
}
