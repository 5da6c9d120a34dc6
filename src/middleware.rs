//! THE ordered middleware stack, written once.
//!
//! API listener, outermost first:
//! 1. request id: accept or mint `x-request-id`, echo it. Outermost so every error body has it.
//! 2. trace: the server span (W3C `traceparent` in and out); every later log line carries its
//!    `trace_id`, `span_id` and the request id.
//! 3. access log: one INFO event per request with the final status, including responses that
//!    inner layers produced (413, panics turned into 500).
//! 4. HTTP metrics: counted outside every refusing layer, so their statuses are counted too.
//! 5. catch panic: a panicking handler becomes a 500 problem, logged, and the connection lives.
//! 6. body limit: extractors refuse bodies over `server.body_limit` with 413.
//!
//! Layers go on with `Router::layer`, which wraps every route *inside* the router, so
//! `MatchedPath` is available for the route label; the fallback is wrapped too, so unmatched
//! requests are logged as `<unmatched>`. The ops listener gets request id, a plain (unexported)
//! span and a DEBUG access log: probes and scrapes make no traces, metrics or INFO lines.

pub mod access_log;
pub mod http_metrics;
pub mod request_id;
pub mod trace;

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::ServerSettings;
use crate::error::ApiError;

/// Wraps the API router in the full stack.
pub fn api(router: Router, cfg: &ServerSettings) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn(request_id::layer))
            .layer(axum::middleware::from_fn(trace::layer))
            .layer(axum::middleware::from_fn_with_state(
                access_log::Level::Info,
                access_log::layer,
            ))
            .layer(axum::middleware::from_fn(http_metrics::layer))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(DefaultBodyLimit::max(cfg.body_limit)),
    )
}

/// Wraps the ops router (probes, metrics) in the minimal stack.
pub fn ops(router: Router) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn(request_id::layer))
            .layer(axum::middleware::from_fn(request_id::ops_span))
            .layer(axum::middleware::from_fn_with_state(
                access_log::Level::Debug,
                access_log::layer,
            ))
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into());
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}
