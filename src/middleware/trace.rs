//! The server span of an API request: a tracing span carrying what log lines need (request id,
//! trace id, span id), child of the caller's W3C `traceparent`, and named in a `traceparent`
//! response header. Its ids are the caller's trace id, or a fresh one, and a fresh span id.
//!
//! With trace export on and the request sampled, the span is also recorded for export: the
//! stable HTTP semantic-convention attributes are read once here, the status at the end, and
//! the record goes to the exporter's queue ([`crate::telemetry::traces`]). Unsampled requests
//! and export off cost only the ids.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, Request};
use axum::http::header::{HOST, USER_AGENT};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use crate::context::{Exported, HTTP_TARGET, SpanId, TraceId};
use crate::telemetry::metrics::method_label;
use crate::telemetry::traces::{self, Detail, RequestTexts, ServerSpan, SpanRecord};

/// The W3C `traceparent` header (a constant name: one made from a string per response would
/// copy it).
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A request's span and the ids it goes by.
#[derive(Debug)]
pub struct Trace {
    /// The server span.
    pub span: tracing::Span,
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its own id.
    pub span_id: SpanId,
    sampled: bool,
    /// The span for export, while the request runs (sampled requests with export on).
    record: Option<SpanRecord>,
}

/// What the caller's `traceparent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remote {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
}

/// Exactly `N` bytes of lower-case hex (W3C refuses upper case; the hex crate takes either).
fn hex_bytes<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).ok().map(|()| out)
}

/// The caller's span context, if it sent a valid W3C `traceparent`: `version-traceid-spanid-
/// flags` in lower-case hex, version `ff` refused, version `00` exactly 55 characters, a later
/// version at least that with a `-` after, and neither id all zeros.
fn remote(headers: &HeaderMap) -> Option<Remote> {
    let value = headers.get("traceparent")?.as_bytes();
    let value = value.trim_ascii();
    if value.len() < 55 || [2, 35, 52].iter().any(|&i| value[i] != b'-') {
        return None;
    }
    let [version] = hex_bytes::<1>(&value[..2])?;
    let fits = match version {
        0xff => false,
        0 => value.len() == 55,
        _ => value.len() == 55 || value[55] == b'-',
    };
    let trace_id = hex_bytes::<16>(&value[3..35])?;
    let span_id = hex_bytes::<8>(&value[36..52])?;
    let [flags] = hex_bytes::<1>(&value[53..55])?;
    (fits && trace_id != [0; 16] && span_id != [0; 8]).then_some(Remote {
        trace_id: TraceId(trace_id),
        span_id: SpanId(span_id),
        sampled: flags & 1 == 1,
    })
}

/// Starts the server span of `req`, matched to `route`.
pub fn start(req: &Request, route: &str, request_id: &HeaderValue) -> Trace {
    let remote = remote(req.headers());
    let trace_id = remote.map_or_else(traces::new_trace_id, |r| r.trace_id);
    let span_id = traces::new_span_id();
    let request_id = request_id.to_str().unwrap_or_default();
    let span = tracing::info_span!(
        target: HTTP_TARGET,
        "request",
        request_id,
        trace_id = %trace_id,
        span_id = %span_id,
    );
    let recorded = traces::sampled(remote.map(|r| r.sampled), &trace_id);
    // Without export the caller's decision is passed on as it came.
    let sampled = recorded || (!traces::exporting() && remote.is_some_and(|r| r.sampled));
    let record = recorded.then(|| record(req, route, trace_id, span_id, remote));
    Trace {
        span,
        trace_id,
        span_id,
        sampled,
        record,
    }
}

impl Trace {
    /// The span database calls are children of, when this request is recorded for export.
    pub fn exported_span(&self) -> Option<Exported> {
        self.record.as_ref().map(|r| Exported {
            span_id: self.span_id,
            trace_state: r.trace_state.clone(),
        })
    }
}

/// Longest `url.path`, `server.address` and `user_agent.original` a span keeps, in bytes. The
/// client chooses all three (up to hyper's 400 KiB of headers), and a span waits in the export
/// queue (8,192 by default) while a collector is slow or down: without a bound, a few thousand
/// requests with long headers would hold gigabytes there. Longer values are cut at a character
/// boundary, as OpenTelemetry's attribute value length limit does.
const MAX_ATTRIBUTE: usize = 1024;

/// `value`, cut to at most [`MAX_ATTRIBUTE`] bytes.
fn bounded(value: &str) -> &str {
    if value.len() <= MAX_ATTRIBUTE {
        return value;
    }
    let mut end = MAX_ATTRIBUTE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// The span for export, with every request attribute known before the handler runs.
fn record(
    req: &Request,
    route: &str,
    trace_id: TraceId,
    span_id: SpanId,
    remote: Option<Remote>,
) -> SpanRecord {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or_default()
    };
    let host = header(HOST)
        .rsplit_once(':')
        .map_or(header(HOST), |(h, _)| h);
    let trace_state = remote
        .and_then(|_| req.headers().get("tracestate"))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 512)
        .map(Arc::from);
    let now = SystemTime::now();
    SpanRecord {
        trace_id,
        span_id,
        parent: remote.map(|r| r.span_id),
        remote_parent: remote.is_some(),
        trace_state,
        start: now,
        end: now,
        detail: Detail::Server(ServerSpan {
            method: method_label(req.method()),
            texts: RequestTexts::new(
                route,
                bounded(req.uri().path()),
                bounded(host),
                bounded(header(USER_AGENT)),
            ),
            client: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip()),
            status: 0,
        }),
    }
}

/// Finishes the span with the response's status (a 5xx makes it an error span) and sends it
/// for export if it was recorded; names it in the response's `traceparent`.
pub fn finish(trace: &mut Trace, res: &mut Response) {
    if let Some(mut record) = trace.record.take() {
        record.end = SystemTime::now();
        if let Detail::Server(server) = &mut record.detail {
            server.status = res.status().as_u16();
        }
        traces::submit(record);
    }
    if let Ok(v) =
        HeaderValue::from_bytes(&traceparent(trace.trace_id, trace.span_id, trace.sampled))
    {
        res.headers_mut().insert(&TRACEPARENT, v);
    }
}

/// W3C `traceparent`: version 00, trace id, parent (this server span) id, flags; built on
/// the stack.
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // The slices are exactly twice the ids' lengths, which is all encode_to_slice checks.
    let _ = hex::encode_to_slice(trace_id.0, &mut out[3..35]);
    let _ = hex::encode_to_slice(span_id.0, &mut out[36..52]);
    out[54] = if sampled { b'1' } else { b'0' };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Option<Remote> {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_str(value).unwrap());
        remote(&headers)
    }

    #[test]
    fn only_valid_traceparents_are_joined() {
        let ok = parsed("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(ok.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ok.span_id.to_string(), "00f067aa0ba902b7");
        assert!(ok.sampled);
        let unsampled = parsed("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.unwrap().sampled);
        // A later version may append fields after a dash.
        assert!(parsed("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }

    /// The texts of the server span recorded for a GET of `path` with these headers.
    fn texts_of(path: &str, agent: &str, host: &str) -> RequestTexts {
        let req = Request::builder()
            .uri(path)
            .header(USER_AGENT, agent)
            .header(HOST, host)
            .body(axum::body::Body::empty())
            .unwrap();
        let span = record(
            &req,
            "/api/v1/orders/{id}",
            TraceId([1; 16]),
            SpanId([2; 8]),
            None,
        );
        match span.detail {
            Detail::Server(server) => server.texts,
            Detail::Client(_) => panic!("a server span"),
        }
    }

    #[test]
    fn client_chosen_attributes_are_cut_to_a_kilobyte_at_a_character_boundary() {
        let path = format!("/api/v1/orders/{}", "p".repeat(5000));
        let agent = "a".repeat(3000);
        let host = "h".repeat(2000);
        let texts = texts_of(&path, &agent, &host);
        assert_eq!(texts.path(), &path[..MAX_ATTRIBUTE]);
        assert_eq!(texts.host(), &host[..MAX_ATTRIBUTE]);
        assert_eq!(texts.user_agent(), &agent[..MAX_ATTRIBUTE]);
        assert_eq!(texts.route(), "/api/v1/orders/{id}");

        let short = texts_of("/api/v1/orders/1", "curl/8", "orders.example");
        assert_eq!(short.path(), "/api/v1/orders/1");
        assert_eq!(short.host(), "orders.example");
        assert_eq!(short.user_agent(), "curl/8");

        // Headers reach here as visible ASCII only, but the cut never splits a character:
        // 'é' is two bytes, and byte 1,024 falls inside one after a one-byte start.
        let wide = format!("x{}", "é".repeat(3000));
        assert_eq!(bounded(&wide), &wide[..MAX_ATTRIBUTE - 1]);
    }

    #[test]
    fn traceparent_is_the_w3c_form() {
        let header = traceparent(
            TraceId(*b"\x0a\xf7\x65\x19\x16\xcd\x43\xdd\x84\x48\xeb\x21\x1c\x80\x31\x9c"),
            SpanId(*b"\xb7\xad\x6b\x71\x69\x20\x33\x31"),
            true,
        );
        assert_eq!(
            std::str::from_utf8(&header).unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        let unsampled = traceparent(TraceId([0; 16]), SpanId([0xff; 8]), false);
        assert!(
            std::str::from_utf8(&unsampled)
                .unwrap()
                .ends_with("-ffffffffffffffff-00")
        );
    }
}
