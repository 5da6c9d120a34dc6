//! The concurrency cap: beyond `server.max_in_flight` API requests are refused at once with
//! 503 and `Retry-After`, never queued (a queue only adds latency to an overloaded service).
//! Probes are exempt, so an overloaded pod still answers its kubelet. The admitted request's
//! [`Slot`] rides in its extensions, so work that outlives the request can keep it.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::counter;

use super::is_probe;
use crate::error::ApiError;
use crate::resilience::in_flight::{Slot, Slots};
use crate::telemetry::metrics::HTTP_SHED;

/// Middleware: see the module docs.
pub async fn layer(State(slots): State<Slots>, mut req: Request, next: Next) -> Response {
    if is_probe(&req) {
        return next.run(req).await;
    }
    match slots.try_take() {
        Some(slot) => {
            // Extractors drop the request's extensions before the handler is done, so the
            // layer holds the slot itself for as long as the request is served.
            let _held = slot.clone();
            req.extensions_mut().insert::<Slot>(slot);
            next.run(req).await
        }
        None => {
            counter!(HTTP_SHED).increment(1);
            ApiError::Overloaded.into_response()
        }
    }
}
