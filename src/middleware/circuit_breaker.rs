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

use metrics::counter;

use crate::resilience::breaker::metrics::MetricsObserver;
use crate::resilience::breaker::{Breaker, Permit, Rejected};
use crate::store::reach::Reach;
use crate::telemetry::metrics::BREAKER_CALLS;

/// The breaker's name in metrics.
pub const NAME: &str = "database";

/// The `outcome` label values of `circuit_breaker_calls_total`.
pub const OUTCOMES: [&str; 5] = ["success", "failure", "slow", "rejected", "ignored"];

/// Starts the database breaker's series: state and transitions (under [`NAME`]) and every
/// call outcome at zero; returns the observer that keeps them.
pub fn register() -> MetricsObserver {
    for outcome in OUTCOMES {
        counter!(BREAKER_CALLS, "breaker" => NAME, "outcome" => outcome).absolute(0);
    }
    MetricsObserver::register(NAME)
}

/// Counts a call by its outcome, through handles registered once (a lookup by labels per
/// request would hash them every time).
fn count(outcome: &'static str) {
    static COUNTERS: std::sync::OnceLock<Vec<(&'static str, metrics::Counter)>> =
        std::sync::OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        OUTCOMES
            .iter()
            .map(|o| {
                (
                    *o,
                    counter!(BREAKER_CALLS, "breaker" => NAME, "outcome" => *o),
                )
            })
            .collect()
    });
    if let Some((_, c)) = counters.iter().find(|(o, _)| *o == outcome) {
        c.increment(1);
    }
}

/// One admitted request. Dropped unfinished (its client went away), it counts for nothing.
#[derive(Debug)]
pub struct Call {
    permit: Option<Permit>,
}

impl Call {
    /// A permit for one request, or the open breaker's refusal (counted as `rejected`).
    pub fn admit(breaker: &Arc<Breaker>) -> Result<Self, Rejected> {
        match breaker.try_acquire() {
            Ok(permit) => Ok(Self {
                permit: Some(permit),
            }),
            Err(rejected) => {
                count("rejected");
                Err(rejected)
            }
        }
    }

    /// The request is answered: what it did with the database decides.
    pub fn finish(mut self, reach: &Reach) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        match reach.outcome() {
            None => {
                count("ignored");
                permit.abandon();
            }
            Some(failed) => {
                let slow = permit.record(failed);
                count(match (failed, slow) {
                    (true, _) => "failure",
                    (false, true) => "slow",
                    (false, false) => "success",
                });
            }
        }
    }

    /// The request timeout cut the request short: a failure if it was at the database.
    pub fn timed_out(mut self, reach: &Reach) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        match reach.outcome() {
            None => {
                count("ignored");
                permit.abandon();
            }
            Some(_) => {
                count("failure");
                permit.record(true);
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.abandon();
        }
    }
}
