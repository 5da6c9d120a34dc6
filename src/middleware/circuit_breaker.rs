//! The circuit breaker around the database-backed `/api` routes. While open, requests get 503
//! problem+json with `Retry-After` set to the remaining open time, and the handler (so the
//! database) is never called.
//!
//! What counts is what the request did with the database ([`Reach`]): a failure is trouble on
//! the database side (a [`crate::store::StoreError::Unavailable`]) or a call the request
//! timeout cancelled while it was at the database; a success is any other call that reached
//! it. A request that never reached the store (401, 403, 404 for a malformed id, 415, 422,
//! 428) or that its client abandoned counts for nothing, and frees its half-open trial slot:
//! clients can neither dilute the failure rate nor close a half-open breaker during an outage.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge};

use super::is_api;
use crate::error::ApiError;
use crate::resilience::breaker::{Breaker, Deadline, Observer, Permit, State as BreakerState};
use crate::store::reach::Reach;
use crate::telemetry::metrics::{BREAKER_CALLS, BREAKER_STATE, BREAKER_TRANSITIONS};

/// The breaker's name in metrics.
pub const NAME: &str = "database";

/// The `outcome` label values of `circuit_breaker_calls_total`.
pub const OUTCOMES: [&str; 5] = ["success", "failure", "slow", "rejected", "ignored"];

/// Publishes transitions as metrics and log lines.
pub struct MetricsObserver;

impl MetricsObserver {
    /// Sets every series to its starting value.
    pub fn register() {
        gauge!(BREAKER_STATE, "breaker" => NAME).set(BreakerState::Closed.gauge());
        for outcome in OUTCOMES {
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

fn count(outcome: &'static str) {
    counter!(BREAKER_CALLS, "breaker" => NAME, "outcome" => outcome).increment(1);
}

/// One admitted request. Dropped unfinished (the request timeout or the client cancelled it),
/// it counts as a failure only if it was at the database when its time budget ran out.
struct Call {
    permit: Option<Permit>,
    reach: Arc<Reach>,
}

impl Call {
    fn finish(mut self, slow_after: std::time::Duration, started: tokio::time::Instant) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        match self.reach.outcome() {
            None => {
                count("ignored");
                permit.abandon();
            }
            Some(failed) => {
                count(match (failed, started.elapsed() > slow_after) {
                    (true, _) => "failure",
                    (false, true) => "slow",
                    (false, false) => "success",
                });
                permit.record(failed);
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        match self.reach.outcome() {
            None => permit.abandon(),
            // Dropping the permit records a timed-out call as a failure and ignores the rest.
            Some(_) => {
                if permit.expired() {
                    count("failure");
                }
                drop(permit);
            }
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
            count("rejected");
            return ApiError::CircuitOpen {
                retry_after: rejected.retry_after,
            }
            .into_response();
        }
    };
    let started = tokio::time::Instant::now();
    let reach = Reach::new();
    let call = Call {
        permit: Some(permit),
        reach: reach.clone(),
    };
    let res = Reach::scope(Some(reach), next.run(req)).await;
    call.finish(breaker.slow_call_duration(), started);
    res
}
