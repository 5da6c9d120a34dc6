//! RED metrics per matched route, recorded outside the guards so that their 429, 503 and 504
//! answers are counted too.
//!
//! The counter and histogram handles of each (route, method, status) series are registered once
//! and kept: looking a series up in the recorder means allocating its three label strings and
//! hashing them, on every request. The set is bounded (route templates × methods × statuses).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::telemetry::metrics::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS};

/// The handles of one series.
#[derive(Clone)]
struct Series {
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

/// Registered series by route (templates chosen by the code, so a fast hash will do), then by
/// (method, status) in a short list.
pub struct HttpMetrics {
    series: RwLock<HashMap<Box<str>, Vec<Series>, foldhash::fast::RandomState>>,
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

    /// Counts one request in flight until the guard drops (whether the request completes or
    /// its future is dropped because the client went away).
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.increment(1.0);
        InFlight(self.clone())
    }

    /// Counts one finished request.
    pub fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
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

/// One request in flight (see [`HttpMetrics::in_flight`]).
pub struct InFlight(Arc<HttpMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.decrement(1.0);
    }
}
