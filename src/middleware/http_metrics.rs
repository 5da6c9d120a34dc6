//! RED metrics per matched route. It sits outside the resilience layers so that their 429, 503
//! and 504 answers are counted too.
//!
//! The counter and histogram handles of each (route, method, status) series are registered once
//! and kept: looking a series up in the recorder means allocating its three label strings and
//! hashing them, on every request. The set is bounded (route templates × methods × statuses).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::access_log::UNMATCHED;
use crate::telemetry::metrics::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS, method_label};

/// The handles of one series.
#[derive(Clone)]
struct Series {
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

/// Registered series by route, then by (method, status) in a short list.
pub struct HttpMetrics {
    series: RwLock<HashMap<Box<str>, Vec<Series>>>,
    in_flight: Gauge,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics").finish_non_exhaustive()
    }
}

impl HttpMetrics {
    /// An empty cache; build it after the recorder is installed (handles bind to it).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            series: RwLock::default(),
            in_flight: gauge!(HTTP_IN_FLIGHT),
        })
    }

    fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        let found = self.series.read().ok().and_then(|map| {
            map.get(route)?
                .iter()
                .find(|s| s.status == status && s.method == method)
                .map(|s| (s.requests.clone(), s.duration.clone()))
        });
        let (requests, duration) = match found {
            Some(handles) => handles,
            None => self.register(route, method, status),
        };
        requests.increment(1);
        duration.record(seconds);
    }

    fn register(&self, route: &str, method: &'static str, status: u16) -> (Counter, Histogram) {
        let labels = [
            ("method", method.to_string()),
            ("route", route.to_string()),
            ("status", status.to_string()),
        ];
        let series = Series {
            method,
            status,
            requests: counter!(HTTP_REQUESTS, &labels),
            duration: histogram!(HTTP_DURATION, &labels),
        };
        let handles = (series.requests.clone(), series.duration.clone());
        if let Ok(mut map) = self.series.write() {
            let list = map.entry(route.into()).or_default();
            if !list
                .iter()
                .any(|s| s.status == status && s.method == method)
            {
                list.push(series);
            }
        }
        handles
    }
}

/// Decrements the in-flight gauge even if the request future is dropped (client went away).
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Middleware: see the module docs. `None` (`telemetry.http_metrics = false`) passes requests
/// straight through.
pub async fn layer(
    State(metrics): State<Option<Arc<HttpMetrics>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(metrics) = metrics else {
        return next.run(req).await;
    };
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let res = next.run(req).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    metrics.record(
        route,
        method,
        res.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    res
}
