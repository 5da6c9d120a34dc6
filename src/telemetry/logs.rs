//! JSON log lines: one object per event with `timestamp` (RFC 3339 UTC), `level`, `target`,
//! `message`, the event's fields, and the fields of every enclosing span flattened in (so
//! `request_id`, `trace_id` and `span_id` are on every line of a request). Inner spans win over
//! outer ones; event fields win over span fields.
//!
//! Convention: dotted span fields (`http.route`, `db.operation.name`, `otel.name`) are trace
//! attributes and stay out of log lines; flat names are log context and are flattened in.

use std::fmt;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Span fields kept as JSON in the span's extensions.
struct SpanFields(Map<String, Value>);

/// Records span fields as JSON values so the formatter need not re-parse them.
pub struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut into_map(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(SpanFields(map)) = ext.get_mut::<SpanFields>() {
                values.record(&mut into_map(map));
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

/// The event formatter for `log.format = "json"`.
///
/// The line is written straight from the span fields and the event's own, without building an
/// intermediate map: a position per key in first-seen order, the innermost value winning.
pub struct JsonLines;

thread_local! {
    /// The line being built, reused across events on this thread.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
        let mut own: Vec<(&'static str, Value)> = Vec::new();
        event.record(&mut Fields(|name, value| own.push((name, value))));
        let spans: Vec<_> = ctx
            .event_scope()
            .map(|scope| scope.from_root().collect())
            .unwrap_or_default();
        let extensions: Vec<_> = spans.iter().map(|span| span.extensions()).collect();
        let timestamp = Value::String(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true));
        let (level, target) = (
            Value::String(meta.level().as_str().into()),
            Value::String(meta.target().into()),
        );
        let empty = Value::String(String::new());
        let mut line: Vec<(&str, &Value)> = vec![
            ("timestamp", &timestamp),
            ("level", &level),
            ("target", &target),
            ("message", &empty),
        ];
        let span_fields = extensions
            .iter()
            .filter_map(|ext| ext.get::<SpanFields>())
            .flat_map(|SpanFields(fields)| fields.iter())
            .filter(|(k, _)| !k.contains('.'))
            .map(|(k, v)| (k.as_str(), v));
        let event_fields = own.iter().map(|(k, v)| (*k, v));
        for (key, value) in span_fields.chain(event_fields) {
            match line.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => line.push((key, value)),
            }
        }
        LINE.with_borrow_mut(|buf| {
            buf.clear();
            write_object(buf, &line).map_err(|_| fmt::Error)?;
            let text = std::str::from_utf8(buf).map_err(|_| fmt::Error)?;
            writeln!(writer, "{text}")
        })
    }
}

/// `{"key":value,...}` into `buf`.
fn write_object(buf: &mut Vec<u8>, entries: &[(&str, &Value)]) -> serde_json::Result<()> {
    buf.push(b'{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        serde_json::to_writer(&mut *buf, key)?;
        buf.push(b':');
        serde_json::to_writer(&mut *buf, value)?;
    }
    buf.push(b'}');
    Ok(())
}

/// Hands each recorded field to `F` as a JSON value.
struct Fields<F: FnMut(&'static str, Value)>(F);

impl<F: FnMut(&'static str, Value)> Visit for Fields<F> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        (self.0)(field.name(), v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        (self.0)(field.name(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        (self.0)(field.name(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        (self.0)(field.name(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        (self.0)(field.name(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        (self.0)(field.name(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        (self.0)(field.name(), format!("{value:?}").into());
    }
}

/// Inserts recorded fields into a span's map (a later value replaces an earlier one in place).
fn into_map(map: &mut Map<String, Value>) -> Fields<impl FnMut(&'static str, Value) + '_> {
    Fields(move |name, value| {
        map.insert(name.to_string(), value);
    })
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
        let line: serde_json::Map<String, Value> = serde_json::from_str(text.trim()).unwrap();
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
