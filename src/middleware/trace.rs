//! The server span of an API request: named `{METHOD} {route}`, child of the caller's W3C
//! `traceparent`, returned in a `traceparent` response header. Its `trace_id` and `span_id`
//! are fields of the span, so they are on every log line of the request.
//!
//! With trace export on, the span carries the stable HTTP semantic-convention attributes and
//! OpenTelemetry gives it its ids. With export off nobody reads those attributes, so the span
//! carries only what log lines need (request id, trace id, span id) and the ids are the
//! caller's trace id, or a fresh one, and a fresh span id: the cost of a span nobody exports is
//! kept to what the logs use.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::header::{HOST, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::context::{HTTP_TARGET, SpanId, TraceId};
use crate::telemetry::metrics::method_label;

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
    exported: bool,
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The caller's span context, if it sent a valid `traceparent`.
fn remote(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Starts the server span of `req`, matched to `route`. `exported`: whether trace export is on.
pub fn start(req: &Request, route: &str, request_id: &HeaderValue, exported: bool) -> Trace {
    let parent = remote(req.headers());
    let request_id = request_id.to_str().unwrap_or_default();
    if !exported {
        let ids = RandomIdGenerator::default();
        let remote: Option<SpanContext> = parent.map(|cx| cx.span().span_context().clone());
        let trace_id = remote
            .as_ref()
            .map_or_else(|| ids.new_trace_id(), SpanContext::trace_id);
        let sampled = remote.as_ref().is_some_and(SpanContext::is_sampled);
        let (trace_id, span_id) = (
            TraceId(trace_id.to_bytes()),
            SpanId(ids.new_span_id().to_bytes()),
        );
        let span = tracing::info_span!(
            target: HTTP_TARGET,
            "request",
            request_id,
            trace_id = %trace_id,
            span_id = %span_id,
        );
        return Trace {
            span,
            trace_id,
            span_id,
            sampled,
            exported,
        };
    }
    let span = rich_span(req, route, request_id);
    let mut trace = Trace {
        trace_id: TraceId([0; 16]),
        span_id: SpanId([0; 8]),
        sampled: false,
        exported,
        span,
    };
    let cx = parent.unwrap_or_default();
    let ids = match trace.span.set_parent(cx.clone()) {
        Ok(()) => {
            let sc = trace.span.context().span().span_context().clone();
            Some((sc.trace_id(), sc.span_id(), sc.is_sampled()))
        }
        // The span is filtered out: keep the caller's trace, or start one.
        Err(_) => None,
    };
    let (trace_id, span_id, sampled) = ids.unwrap_or_else(|| {
        let ids = RandomIdGenerator::default();
        let sc = cx.span().span_context().clone();
        let trace_id = if sc.is_valid() {
            sc.trace_id()
        } else {
            ids.new_trace_id()
        };
        (trace_id, ids.new_span_id(), sc.is_sampled())
    });
    trace.trace_id = TraceId(trace_id.to_bytes());
    trace.span_id = SpanId(span_id.to_bytes());
    trace.sampled = sampled;
    trace
        .span
        .record("trace_id", tracing::field::display(trace.trace_id));
    trace
        .span
        .record("span_id", tracing::field::display(trace.span_id));
    trace
}

/// The span with every request attribute known before the handler runs.
fn rich_span(req: &Request, route: &str, request_id: &str) -> tracing::Span {
    let method = method_label(req.method());
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or_default()
    };
    let host = header(HOST)
        .rsplit_once(':')
        .map_or(header(HOST), |(h, _)| h);
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    tracing::info_span!(
        target: HTTP_TARGET,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        request_id,
        trace_id = Empty,
        span_id = Empty,
        http.request.method = method,
        http.route = route,
        url.path = req.uri().path(),
        url.scheme = "http",
        server.address = host,
        client.address = client.map(tracing::field::display),
        user_agent.original = header(USER_AGENT),
        error.type = Empty,
    )
}

/// Finishes the span with the response's status (typed, straight on the OTel span: fields
/// recorded after the span started would arrive as strings), and names it in the response's
/// `traceparent`.
pub fn finish(trace: &Trace, res: &mut Response) {
    let status = res.status();
    if trace.exported {
        trace
            .span
            .set_attribute("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            trace.span.record("error.type", status.as_str());
            trace.span.set_status(opentelemetry::trace::Status::error(
                status.as_str().to_owned(),
            ));
        }
    }
    if let Ok(v) =
        HeaderValue::from_bytes(&traceparent(trace.trace_id, trace.span_id, trace.sampled))
    {
        res.headers_mut().insert("traceparent", v);
    }
}

/// W3C `traceparent`: version 00, trace id, parent (this server span) id, flags; built on
/// the stack.
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> [u8; 55] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    for (i, b) in trace_id.0.iter().enumerate() {
        out[3 + 2 * i] = HEX[usize::from(b >> 4)];
        out[4 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    for (i, b) in span_id.0.iter().enumerate() {
        out[36 + 2 * i] = HEX[usize::from(b >> 4)];
        out[37 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    out[54] = if sampled { b'1' } else { b'0' };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
