//! The whole-request budget: past `server.request_timeout` the handler is dropped and the
//! client gets 504. Dropping it also releases its circuit-breaker permit, counted as a failure.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Middleware: see the module docs.
pub async fn layer(State(budget): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(budget, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::Timeout.into_response(),
    }
}
