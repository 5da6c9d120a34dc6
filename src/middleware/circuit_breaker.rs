//! The circuit breaker around the database-backed `/api` routes. Failures are responses caused
//! by the database ([`DatabaseFailure`]) and timeouts (504, or a call cancelled by the request
//! timeout); 4xx and 429 are not, and neither is a call the client abandoned. While open, requests get 503 problem+json with `Retry-After`
//! set to the remaining open time, and the handler (so the database) is never called.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge};

use super::is_api;
use crate::error::{ApiError, DatabaseFailure};
use crate::resilience::breaker::{Breaker, Deadline, Observer, State as BreakerState};
use crate::telemetry::metrics::{BREAKER_CALLS, BREAKER_STATE, BREAKER_TRANSITIONS};

/// The breaker's name in metrics.
pub const NAME: &str = "database";

/// Publishes transitions as metrics and log lines.
pub struct MetricsObserver;

impl MetricsObserver {
    /// Sets every series to its starting value.
    pub fn register() {
        gauge!(BREAKER_STATE, "breaker" => NAME).set(BreakerState::Closed.gauge());
        for outcome in ["success", "failure", "slow", "rejected"] {
            counter!(BREAKER_CALLS, "breaker" => NAME, "outcome" => outcome).absolute(0);
        }
        for (from, to) in [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "open"),
            ("half_open", "closed"),
        ] {
            counter!(BREAKER_TRANSITIONS, "breaker" => NAME, "from" => from, "to" => to)
                .absolute(0);
        }
    }
}

impl Observer for MetricsObserver {
    fn transition(&self, from: BreakerState, to: BreakerState) {
        gauge!(BREAKER_STATE, "breaker" => NAME).set(to.gauge());
        counter!(BREAKER_TRANSITIONS, "breaker" => NAME, "from" => from.as_str(), "to" => to.as_str())
            .increment(1);
        match to {
            BreakerState::Open => tracing::warn!(
                breaker = NAME,
                from = from.as_str(),
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                breaker = NAME,
                from = from.as_str(),
                to = to.as_str(),
                "circuit breaker changed state"
            ),
        }
    }
}

/// Middleware: see the module docs.
pub async fn layer(State(breaker): State<Arc<Breaker>>, req: Request, next: Next) -> Response {
    if !is_api(&req) {
        return next.run(req).await;
    }
    let deadline = req.extensions().get::<Deadline>().cloned();
    let permit = match breaker.try_acquire() {
        Ok(p) => match deadline {
            Some(d) => p.with_deadline(d),
            None => p,
        },
        Err(rejected) => {
            counter!(BREAKER_CALLS, "breaker" => NAME, "outcome" => "rejected").increment(1);
            return ApiError::CircuitOpen {
                retry_after: rejected.retry_after,
            }
            .into_response();
        }
    };
    let started = tokio::time::Instant::now();
    let res = next.run(req).await;
    let failed = res.extensions().get::<DatabaseFailure>().is_some()
        || res.status() == StatusCode::GATEWAY_TIMEOUT;
    let slow = started.elapsed() > breaker.slow_call_duration();
    let outcome = match (failed, slow) {
        (true, _) => "failure",
        (false, true) => "slow",
        (false, false) => "success",
    };
    counter!(BREAKER_CALLS, "breaker" => NAME, "outcome" => outcome).increment(1);
    permit.record(failed);
    res
}
