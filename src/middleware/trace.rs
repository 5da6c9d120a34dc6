//! The server span: one per request, named `{METHOD} {route}`, child of the caller's W3C
//! `traceparent`, with the stable HTTP semantic-convention attributes. Its `trace_id` and
//! `span_id` are recorded as fields (so they are on every log line of the request), kept for
//! problem bodies, and returned in a `traceparent` response header. With trace export off the
//! ids still exist: the caller's trace id, or a fresh one.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::header::{HOST, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::access_log::UNMATCHED;
use super::request_id::RequestId;
use crate::telemetry::metrics::method_label;

/// The tracing target of server spans (exported when tracing is on).
pub const TARGET: &str = "orders_api::http";

tokio::task_local! {
    static TRACE_ID: String;
}

/// The trace id of the request being served by this task, if any.
pub fn current_trace_id() -> Option<String> {
    TRACE_ID.try_with(Clone::clone).ok()
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: see the module docs.
pub async fn layer(req: Request, next: Next) -> Response {
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    let remote = parent.span().span_context().clone();
    let span = server_span(&req);
    let (trace_id, span_id, sampled) = match span.set_parent(parent) {
        Ok(()) => {
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            (sc.trace_id(), sc.span_id(), sc.is_sampled())
        }
        // Export is off (or the span is filtered out): keep the caller's trace, or start one.
        Err(_) => {
            let ids = RandomIdGenerator::default();
            let trace_id = if remote.is_valid() {
                remote.trace_id()
            } else {
                ids.new_trace_id()
            };
            (trace_id, ids.new_span_id(), remote.is_sampled())
        }
    };
    let trace_hex = trace_id.to_string();
    span.record("trace_id", trace_hex.as_str());
    span.record("span_id", span_id.to_string().as_str());

    let mut res = TRACE_ID
        .scope(trace_hex, next.run(req).instrument(span.clone()))
        .await;

    // Typed, straight on the OTel span: fields recorded after the span started would arrive
    // as strings.
    let status = res.status();
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("error.type", status.as_str());
        span.set_status(opentelemetry::trace::Status::error(
            status.as_str().to_owned(),
        ));
    }
    if let Ok(v) = HeaderValue::from_str(&traceparent(trace_id, span_id, sampled)) {
        res.headers_mut().insert("traceparent", v);
    }
    res
}

/// The span with every request attribute known before the handler runs.
fn server_span(req: &Request) -> tracing::Span {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str);
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
        .map(|ConnectInfo(a)| a.ip().to_string())
        .unwrap_or_default();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map_or("", |r| r.0.as_str());
    tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        request_id = %request_id,
        trace_id = Empty,
        span_id = Empty,
        http.request.method = method,
        http.route = %route,
        url.path = %req.uri().path(),
        url.scheme = "http",
        server.address = %host,
        client.address = %client,
        user_agent.original = %header(USER_AGENT),
        error.type = Empty,
    )
}

/// W3C `traceparent`: version 00, trace id, parent (this server span) id, flags.
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    format!("00-{trace_id}-{span_id}-{:02x}", u8::from(sampled))
}
