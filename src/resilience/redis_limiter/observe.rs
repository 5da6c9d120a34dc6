//! How the Redis limiter watches itself: its metric handles, and the breaker in front of Redis
//! with the switch to the fallback logged once each way.

use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};

use super::ERROR_KINDS;
use crate::config::{BreakerConfig, Fallback, RedisSettings};
use crate::resilience::breaker::metrics::MetricsObserver;
use crate::resilience::breaker::{Observer, State};
use crate::telemetry::metrics::{
    RATE_LIMIT_BACKEND_DECISIONS, RATE_LIMIT_FALLBACK_ACTIVE, RATE_LIMIT_REDIS_DURATION,
    RATE_LIMIT_REDIS_ERRORS,
};

/// Metric handles, registered once (a lookup by labels per request would hash them).
#[derive(Debug)]
pub(super) struct Meters {
    /// Per script call (one batch).
    pub(super) duration: Histogram,
    /// Per failed script call.
    pub(super) errors: [Counter; 3],
    /// Per request.
    pub(super) by_redis: Counter,
    pub(super) by_fallback: Counter,
}

impl Meters {
    pub(super) fn register() -> Self {
        let meters = Self {
            duration: histogram!(RATE_LIMIT_REDIS_DURATION),
            errors: ERROR_KINDS.map(|kind| counter!(RATE_LIMIT_REDIS_ERRORS, "kind" => kind)),
            by_redis: counter!(RATE_LIMIT_BACKEND_DECISIONS, "backend" => "redis"),
            by_fallback: counter!(RATE_LIMIT_BACKEND_DECISIONS, "backend" => "fallback"),
        };
        for c in meters
            .errors
            .iter()
            .chain([&meters.by_redis, &meters.by_fallback])
        {
            c.absolute(0);
        }
        gauge!(RATE_LIMIT_FALLBACK_ACTIVE).set(0.0);
        meters
    }
}

/// The breaker's transitions, with the switch to the fallback and back logged once each way.
pub(super) struct FallbackObserver {
    pub(super) metrics: MetricsObserver,
    pub(super) fallback: Fallback,
}

impl Observer for FallbackObserver {
    fn transition(&self, from: State, to: State) {
        self.metrics.transition(from, to);
        match (from, to) {
            (State::Closed, State::Open) => {
                gauge!(RATE_LIMIT_FALLBACK_ACTIVE).set(1.0);
                tracing::warn!(
                    fallback = self.fallback.as_str(),
                    "Redis rate limiting unavailable: the fallback decides"
                );
            }
            (_, State::Closed) => {
                gauge!(RATE_LIMIT_FALLBACK_ACTIVE).set(0.0);
                tracing::info!("Redis rate limiting restored");
            }
            _ => {}
        }
    }
}

/// The breaker in front of Redis: a few failures among the last calls open it, and one trial
/// call after `open_wait` closes it again or reopens it.
pub(super) fn breaker_config(cfg: &RedisSettings) -> BreakerConfig {
    BreakerConfig {
        window: 10,
        failure_rate_threshold: 50.0,
        minimum_calls: 4,
        // A call past its budget is a failure already; slowness adds nothing.
        slow_call_duration: Duration::MAX,
        slow_call_rate_threshold: 100.0,
        open_wait: cfg.open_wait,
        backoff_multiplier: 1.0,
        open_wait_max: cfg.open_wait,
        half_open_calls: 1,
    }
}
