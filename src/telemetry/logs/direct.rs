//! The access line, written without `tracing`'s dispatch. Every request makes one, and going
//! through the subscriber (the span scope looked up in the registry, each field visited,
//! escaped and placed, the line copied into the fmt layer's buffer and out again) cost more
//! than serving a cached read. With JSON logs the access layer writes the same line itself,
//! byte for byte, into the same output ([`super::super::stdout`]).
//!
//! Only the log filter may keep a line out, so its verdict is taken once per filter (at start
//! and on each change of `log.level`), for the access events' metadata: enabled whatever the
//! span ([`Gate::Write`]), never ([`Gate::Skip`]), or it depends on the spans in scope (a
//! directive such as `[request{...}]=debug`): then the event goes through `tracing` as before
//! ([`Gate::Dispatch`]), as it does with pretty logs.

use std::sync::atomic::{AtomicU8, Ordering};

use tracing_core::callsite::{Callsite, Identifier};
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;
use tracing_core::subscriber::Interest;
use tracing_core::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::Filter;

use super::escape::json_string;
use crate::context::{SpanId, TraceId};

/// The access events' target.
pub const TARGET: &str = "access";
/// The access events' message.
pub const MESSAGE: &str = "request completed";
/// The fields of the access event, as `tracing` sees them (a filter may name fields).
const FIELDS: &[&str] = &[
    "message",
    "method",
    "route",
    "path",
    "status",
    "latency_ms",
    "client_ip",
    "user_agent",
    "api_key_id",
];

/// What the log filter in force says of an access event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send it through `tracing` (pretty logs, or a filter that looks at spans).
    Dispatch = 0,
    /// Write the line directly.
    Write = 1,
    /// Filtered out.
    Skip = 2,
}

impl Gate {
    fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            1 => Self::Write,
            2 => Self::Skip,
            _ => Self::Dispatch,
        }
    }
}

/// The gates of INFO (low two bits) and DEBUG access events; zero (dispatch both) until JSON
/// lines are installed.
static GATES: AtomicU8 = AtomicU8::new(0);

/// The gate of an access event at INFO (`debug == false`) or DEBUG.
pub fn gate(debug: bool) -> Gate {
    let bits = GATES.load(Ordering::Relaxed);
    Gate::from_bits(if debug { bits >> 2 } else { bits })
}

/// The gates `filter` sets: to be [`open`]ed once it is in force.
#[derive(Debug, Clone, Copy)]
pub(in crate::telemetry) struct Gates(u8);

impl Gates {
    /// The verdict of `filter` on the access events.
    pub(in crate::telemetry) fn of(filter: &EnvFilter) -> Self {
        let verdict = |meta: &'static Metadata<'static>| {
            let interest = Filter::<tracing_subscriber::Registry>::callsite_enabled(filter, meta);
            if interest.is_always() {
                Gate::Write
            } else if interest.is_never() {
                Gate::Skip
            } else {
                Gate::Dispatch
            }
        };
        Self(verdict(&INFO) as u8 | (verdict(&DEBUG) as u8) << 2)
    }

    /// Puts these gates in force (the JSON line format is installed).
    pub(in crate::telemetry) fn open(self) {
        GATES.store(self.0, Ordering::Relaxed);
    }
}

/// A callsite that `tracing` never sees: it only names the access events' metadata, so that
/// the filter can be asked about them.
struct Site(&'static Metadata<'static>);

impl Callsite for Site {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        self.0
    }
}

static INFO_SITE: Site = Site(&INFO);
static DEBUG_SITE: Site = Site(&DEBUG);

static INFO: Metadata<'static> = Metadata::new(
    "access",
    TARGET,
    Level::INFO,
    None,
    None,
    None,
    FieldSet::new(FIELDS, Identifier(&INFO_SITE)),
    Kind::EVENT,
);

static DEBUG: Metadata<'static> = Metadata::new(
    "access",
    TARGET,
    Level::DEBUG,
    None,
    None,
    None,
    FieldSet::new(FIELDS, Identifier(&DEBUG_SITE)),
    Kind::EVENT,
);

/// The fields of the request's span, as the JSON formatter would flatten them into the line.
#[derive(Debug, Clone, Copy)]
pub struct SpanFields<'a> {
    /// `request_id`.
    pub request_id: &'a str,
    /// `trace_id` and `span_id` (API requests; ops requests have neither).
    pub ids: Option<(TraceId, SpanId)>,
}

/// Writes the access line `{"timestamp":…,"level":…,"target":"access","message":…, span
/// fields…, members…}` into `out`: the line the JSON formatter writes for the access event in
/// the request's span, where `members` writes the event's own fields as JSON object members.
pub fn access_line(
    out: &mut Vec<u8>,
    debug: bool,
    span: SpanFields<'_>,
    members: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(b"{\"timestamp\":");
    super::timestamp(out);
    out.extend_from_slice(if debug {
        b",\"level\":\"DEBUG\",\"target\":\"access\",\"message\":\"request completed\""
    } else {
        b",\"level\":\"INFO\",\"target\":\"access\",\"message\":\"request completed\""
    });
    out.extend_from_slice(b",\"request_id\":");
    json_string(out, span.request_id);
    if let Some((trace_id, span_id)) = span.ids {
        // Hex digits need no escaping.
        out.extend_from_slice(b",\"trace_id\":\"");
        out.extend_from_slice(trace_id.hex().as_bytes());
        out.extend_from_slice(b"\",\"span_id\":\"");
        out.extend_from_slice(span_id.hex().as_bytes());
        out.push(b'"');
    }
    let before = out.len();
    out.push(b',');
    members(out);
    if out.len() == before + 1 {
        out.truncate(before);
    }
    out.extend_from_slice(b"}\n");
}

thread_local! {
    /// The line being written, reused across requests on this thread.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes the access line (see [`access_line`]) to the log output.
pub fn write_access(debug: bool, span: SpanFields<'_>, members: impl FnOnce(&mut Vec<u8>)) {
    LINE.with_borrow_mut(|line| {
        line.clear();
        access_line(line, debug, span, members);
        super::super::stdout::append(line);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gates(directives: &str) -> (Gate, Gate) {
        let Gates(bits) = Gates::of(&EnvFilter::new(directives));
        (Gate::from_bits(bits), Gate::from_bits(bits >> 2))
    }

    #[test]
    fn the_filter_decides_each_level_or_leaves_it_to_the_spans() {
        assert_eq!(gates("info"), (Gate::Write, Gate::Skip));
        assert_eq!(gates("debug"), (Gate::Write, Gate::Write));
        assert_eq!(gates("warn"), (Gate::Skip, Gate::Skip));
        assert_eq!(gates("warn,access=debug"), (Gate::Write, Gate::Write));
        assert_eq!(gates("info,access=off"), (Gate::Skip, Gate::Skip));
        assert_eq!(gates("info,orders_api=debug"), (Gate::Write, Gate::Skip));
        // A directive on a span: whether the event is enabled depends on the span in scope.
        assert_eq!(
            gates("warn,[request{route=\"/x\"}]=debug"),
            (Gate::Dispatch, Gate::Dispatch)
        );
    }

    #[test]
    fn a_line_without_members_or_trace_is_still_one_json_object() {
        let mut out = Vec::new();
        let span = SpanFields {
            request_id: "r-1",
            ids: None,
        };
        access_line(&mut out, true, span, |_| {});
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["level"], "DEBUG");
        assert_eq!(line["target"], TARGET);
        assert_eq!(line["message"], MESSAGE);
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(line.as_object().unwrap().len(), 5, "{line}");
        assert!(out.ends_with(b"}\n"));
    }
}
