//! JSON log lines: one object per event with `timestamp` (RFC 3339 UTC), `level`, `target`,
//! `message`, the event's fields, and the fields of every enclosing span flattened in (so
//! `request_id`, `trace_id` and `span_id` are on every line of a request). Inner spans win over
//! outer ones; event fields win over span fields.
//!
//! Convention: dotted span fields (`http.route`, `db.operation.name`, `otel.name`) are trace
//! attributes and stay out of log lines; flat names are log context and are flattened in.
//!
//! Field values are written as JSON text once, when recorded (span fields when the span records
//! them, event fields into a per-thread buffer), and a line is assembled from those slices:
//! no intermediate map, and no allocation per field.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::ops::Range;

use chrono::Utc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

pub mod direct;
pub mod escape;

use escape::quoted;

/// Fields as JSON text: one buffer, and where each field's value lies in it. Recording a name
/// again points it at the new value, keeping its place.
#[derive(Debug, Default)]
struct JsonFields {
    text: Vec<u8>,
    at: Vec<(&'static str, Range<usize>)>,
}

impl JsonFields {
    fn clear(&mut self) {
        self.text.clear();
        self.at.clear();
    }

    fn put(&mut self, name: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.text.len();
        write(&mut self.text);
        let range = start..self.text.len();
        match self.at.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = range,
            None => self.at.push((name, range)),
        }
    }

    /// A number or boolean: serialising one into a Vec cannot fail (non-finite floats are null).
    fn scalar(&mut self, field: &Field, value: impl serde::Serialize) {
        self.put(field.name(), |out| {
            let _ = serde_json::to_writer(out, &value);
        });
    }

    fn iter(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.at
            .iter()
            .filter_map(|(k, r)| Some((*k, self.text.get(r.clone())?)))
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.scalar(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.scalar(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.scalar(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.scalar(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), |out| quoted(out, |w| w.write_str(value)));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field.name(), |out| quoted(out, |w| write!(w, "{value}")));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field.name(), |out| quoted(out, |w| write!(w, "{value:?}")));
    }
}

/// Span fields kept as JSON text in the span's extensions.
struct SpanFields(JsonFields);

/// Records span fields as JSON text so that each line only copies them.
pub struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = JsonFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(SpanFields(fields)) = ext.get_mut::<SpanFields>() {
                values.record(fields);
            }
        }
    }
}

/// Span-field formatting for the JSON path: nothing. `JsonLines` reads span fields from
/// [`SpanFieldsLayer`], so the text the fmt layer would otherwise render for every span (with
/// ANSI colours, for each of the server span's attributes) would be thrown away.
pub struct NoFields;

impl<'w> FormatFields<'w> for NoFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'w>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }
}

/// The event formatter for `log.format = "json"`: a position per key in first-seen order, the
/// innermost value winning.
pub struct JsonLines;

thread_local! {
    /// The line's fields and the line being built, reused across events on this thread.
    static SCRATCH: RefCell<(JsonFields, Vec<u8>)> = RefCell::default();
    /// `YYYY-MM-DDTHH:MM:SS.` of the second the last timestamp on this thread fell in.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// Appends the current time as an RFC 3339 UTC string with microseconds (`"...SS.ffffffZ"`),
/// formatting the date and time only when the second changes.
fn timestamp(out: &mut Vec<u8>) {
    let now = Utc::now();
    let (secs, micros) = (now.timestamp(), now.timestamp_subsec_micros());
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != secs {
            *second = secs;
            prefix.clear();
            let _ = write!(prefix, "{}.", now.format("%Y-%m-%dT%H:%M:%S"));
        }
        out.push(b'"');
        out.extend_from_slice(prefix.as_bytes());
        let digits = [
            micros / 100_000 % 10,
            micros / 10_000 % 10,
            micros / 1_000 % 10,
            micros / 100 % 10,
            micros / 10 % 10,
            micros % 10,
        ];
        // Each digit is below 10: the casts cannot truncate.
        out.extend(digits.iter().map(|d| b'0' + *d as u8));
        out.extend_from_slice(b"Z\"");
    });
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        SCRATCH.with_borrow_mut(|(fields, line)| {
            fields.clear();
            fields.put("timestamp", timestamp);
            fields.put("level", |o| {
                quoted(o, |w| w.write_str(meta.level().as_str()));
            });
            fields.put("target", |o| quoted(o, |w| w.write_str(meta.target())));
            fields.put("message", |o| o.extend_from_slice(b"\"\""));
            // Span fields from the root in, then the event's own: a name seen again keeps its
            // first place and takes the innermost value.
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    let ext = span.extensions();
                    let Some(SpanFields(own)) = ext.get::<SpanFields>() else {
                        continue;
                    };
                    for (key, value) in own.iter().filter(|(k, _)| !k.contains('.')) {
                        fields.put(key, |o| o.extend_from_slice(value));
                    }
                }
            }
            event.record(fields);
            line.clear();
            line.push(b'{');
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                quoted(line, |w| w.write_str(key));
                line.push(b':');
                line.extend_from_slice(value);
            }
            line.extend_from_slice(b"}\n");
            let text = std::str::from_utf8(line).map_err(|_| fmt::Error)?;
            writer.write_str(text)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn lines_flatten_spans_inner_first_and_keep_first_seen_order() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .fmt_fields(NoFields)
            .event_format(JsonLines)
            .with_writer(move || WriteTo(sink.clone()));
        let subscriber = tracing_subscriber::registry()
            .with(SpanFieldsLayer)
            .with(fmt);
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!(
                "outer",
                request_id = "r-1",
                who = "outer",
                http.route = "/x"
            );
            let _o = outer.enter();
            let inner = tracing::info_span!("inner", who = "inner", n = tracing::field::Empty);
            inner.record("n", 7);
            let _i = inner.enter();
            tracing::info!(target: "access", status = 201_u64, who = "event", latency_ms = 1.5, "done \"quoted\"");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let line: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text.trim()).unwrap();
        let keys: Vec<&str> = line.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "target",
                "message",
                "request_id",
                "who",
                "n",
                "status",
                "latency_ms"
            ]
        );
        assert_eq!(line["message"], "done \"quoted\"");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "access");
        assert_eq!(line["who"], "event", "event fields win over span fields");
        assert_eq!(line["n"], 7, "recorded after creation");
        assert_eq!(line["status"], 201);
        assert_eq!(line["latency_ms"], 1.5);
        assert!(
            !line.contains_key("http.route"),
            "dotted names are trace attributes"
        );
    }

    struct WriteTo(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for WriteTo {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod timestamps {
    use super::timestamp;

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let mut out = Vec::new();
        let before = chrono::Utc::now();
        timestamp(&mut out);
        timestamp(&mut out);
        let text = String::from_utf8(out).unwrap();
        let stamps: Vec<&str> = text.split('"').filter(|s| !s.is_empty()).collect();
        assert_eq!(stamps.len(), 2, "{text}");
        for stamp in stamps {
            assert_eq!(stamp.len(), 27, "{stamp}");
            assert!(stamp.ends_with('Z'));
            let t = chrono::DateTime::parse_from_rfc3339(stamp).unwrap();
            assert!(t >= before - chrono::TimeDelta::seconds(1));
        }
    }
}
