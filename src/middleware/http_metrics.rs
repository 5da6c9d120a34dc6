//! RED metrics per matched route. It sits outside the resilience layers so that their 429, 503
//! and 504 answers are counted too.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};

use super::access_log::UNMATCHED;
use crate::telemetry::metrics::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS, method_label};

/// Decrements the in-flight gauge even if the request future is dropped (client went away).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        gauge!(HTTP_IN_FLIGHT).increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(HTTP_IN_FLIGHT).decrement(1.0);
    }
}

/// Middleware: see the module docs. `enabled = false` passes requests straight through.
pub async fn layer(State(enabled): State<bool>, req: Request, next: Next) -> Response {
    if !enabled {
        return next.run(req).await;
    }
    let _in_flight = InFlight::enter();
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let res = next.run(req).await;
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", res.status().as_str().to_string()),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    histogram!(HTTP_DURATION, &labels).record(start.elapsed().as_secs_f64());
    res
}
