//! Until the store is ready (connected, and its schema current), API requests are answered
//! 503 with `Retry-After` and the problem type `not-ready`, at once: a request sent between
//! `listening` and the end of the migrations must not reach a database without its tables.
//! Outside the circuit breaker, so these answers count for nothing there. The OpenAPI
//! documents and the probes do not need the store and are never refused here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::is_api;
use crate::error::ApiError;
use crate::state::Health;

/// Middleware: see the module docs.
pub async fn layer(State(health): State<Arc<Health>>, req: Request, next: Next) -> Response {
    if is_api(&req) && !health.schema_ready() {
        return ApiError::NotReady.into_response();
    }
    next.run(req).await
}
