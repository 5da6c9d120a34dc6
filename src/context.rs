//! The request being served: its id, its trace and span ids, and where they are read from. A
//! leaf: the layers that set the context, the errors that quote it and the telemetry that logs
//! it all import this module, and it imports none of them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use http::HeaderValue;

/// The tracing target of the ops listener's spans: never exported as traces.
pub const OPS_TARGET: &str = "orders_api::ops";

/// The tracing target of API server spans (exported when tracing is on).
pub const HTTP_TARGET: &str = "orders_api::http";

/// A W3C trace id (16 bytes), shown as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// A W3C span id (8 bytes), shown as 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

/// An id's lower-case hex digits, on the stack (`N` is twice the id's length).
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn of(bytes: &[u8]) -> Self {
        let mut out = [b'0'; N];
        // `N` is twice the length of the id it is made for: the encoding cannot fail.
        let _ = hex::encode_to_slice(bytes, &mut out);
        Self(out)
    }

    /// The digits, as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl TraceId {
    /// The 32 hex digits.
    pub fn hex(&self) -> Hex<32> {
        Hex::of(&self.0)
    }
}

impl SpanId {
    /// The 16 hex digits.
    pub fn hex(&self) -> Hex<16> {
        Hex::of(&self.0)
    }
}

// Ids are written on every log line of a request: as one string, not a write per byte.
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

/// What is known of the request this task serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The `x-request-id` the response carries (accepted from the client or minted).
    pub request_id: HeaderValue,
    /// The trace the request belongs to, when the listener traces.
    pub trace_id: Option<TraceId>,
    /// The server span, when it is recorded for export: the parent of the request's
    /// database spans.
    pub exported_span: Option<Exported>,
}

/// The server span of a request recorded for export, as its children need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The server span's id: the children's parent.
    pub span_id: SpanId,
    /// The caller's `tracestate`, which every span of the trace carries.
    pub trace_state: Option<Arc<str>>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

impl RequestContext {
    /// Runs `fut` with `self` as the current request's context.
    pub fn scope<F: Future>(self, fut: F) -> tokio::task::futures::TaskLocalFuture<Self, F> {
        CURRENT.scope(self, fut)
    }

    /// The current request's id, if this task serves a request.
    pub fn request_id() -> Option<String> {
        CURRENT
            .try_with(|c| c.request_id.to_str().ok().map(str::to_string))
            .ok()
            .flatten()
    }

    /// The trace and span that the current request's own spans are children of, if the
    /// request is recorded for export.
    pub fn exported_parent() -> Option<(TraceId, Exported)> {
        CURRENT
            .try_with(|c| Some((c.trace_id?, c.exported_span.clone()?)))
            .ok()
            .flatten()
    }

    /// The current request's trace id, as hex, if it has one.
    pub fn trace_id() -> Option<String> {
        CURRENT
            .try_with(|c| c.trace_id.map(|t| t.to_string()))
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_context_is_the_scoped_requests_only() {
        assert_eq!(RequestContext::request_id(), None);
        let ctx = RequestContext {
            request_id: HeaderValue::from_static("req-1"),
            trace_id: Some(TraceId([0xab; 16])),
            exported_span: Some(Exported {
                span_id: SpanId([7; 8]),
                trace_state: Some("vendor=abc".into()),
            }),
        };
        let (id, trace, parent) = ctx
            .scope(async {
                (
                    RequestContext::request_id(),
                    RequestContext::trace_id(),
                    RequestContext::exported_parent(),
                )
            })
            .await;
        assert_eq!(id.as_deref(), Some("req-1"));
        assert_eq!(trace, Some("ab".repeat(16)));
        assert_eq!(
            parent,
            Some((
                TraceId([0xab; 16]),
                Exported {
                    span_id: SpanId([7; 8]),
                    trace_state: Some("vendor=abc".into()),
                }
            ))
        );
        assert_eq!(RequestContext::exported_parent(), None);
        assert_eq!(
            SpanId([1, 2, 3, 4, 5, 6, 7, 0xff]).to_string(),
            "01020304050607ff"
        );
    }
}
