//! The concurrency cap: beyond `server.max_in_flight` API requests are refused at once with
//! 503 and `Retry-After`, never queued (a queue only adds latency to an overloaded service).
//! Probes are exempt, so an overloaded pod still answers its kubelet.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::counter;
use tokio::sync::Semaphore;

use super::is_probe;
use crate::error::ApiError;
use crate::telemetry::metrics::HTTP_SHED;

/// Middleware: see the module docs.
pub async fn layer(State(slots): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    if is_probe(&req) {
        return next.run(req).await;
    }
    match slots.try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            counter!(HTTP_SHED).increment(1);
            ApiError::Overloaded.into_response()
        }
    }
}
