//! `[circuit_breaker]`: the breaker around the database-backed routes.

use std::time::Duration;

use super::reader::Reader;

/// `[circuit_breaker]`.
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// Use the breaker at all.
    pub enabled: bool,
    /// Its thresholds and timing.
    pub config: BreakerConfig,
}

/// Breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Calls kept in the closed-state sliding window.
    pub window: usize,
    /// Failure rate (0-100) at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Calls needed before rates are evaluated (capped at `window`).
    pub minimum_calls: usize,
    /// A call slower than this is slow.
    pub slow_call_duration: Duration,
    /// Slow-call rate (0-100) at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// How long the breaker stays open the first time.
    pub open_wait: Duration,
    /// Growth of the wait on each consecutive reopening (1.0: fixed).
    pub backoff_multiplier: f64,
    /// Cap of the grown wait.
    pub open_wait_max: Duration,
    /// Trial calls admitted while half-open.
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 50,
            failure_rate_threshold: 50.0,
            minimum_calls: 20,
            slow_call_duration: Duration::from_secs(1),
            slow_call_rate_threshold: 80.0,
            open_wait: Duration::from_secs(10),
            backoff_multiplier: 1.0,
            open_wait_max: Duration::from_secs(10),
            half_open_calls: 5,
        }
    }
}

pub(super) fn read(r: &mut Reader<'_>) -> BreakerSettings {
    let percent = |r: &mut Reader<'_>, key: &'static str| {
        let v = r.float(key);
        r.check(
            key,
            (0.0..=100.0).contains(&v) && v > 0.0,
            "must be a percentage above 0, at most 100",
        );
        v
    };
    let enabled = r.get("circuit_breaker.enabled");
    let window = r.positive_count("circuit_breaker.window");
    let failure_rate_threshold = percent(r, "circuit_breaker.failure_rate_threshold");
    let minimum_calls = r.positive_count("circuit_breaker.minimum_calls");
    let slow_call_duration = r.positive_duration("circuit_breaker.slow_call_duration");
    let slow_call_rate_threshold = percent(r, "circuit_breaker.slow_call_rate_threshold");
    let open_wait = r.positive_duration("circuit_breaker.open_wait");
    let backoff_multiplier = r.float("circuit_breaker.backoff_multiplier");
    r.check(
        "circuit_breaker.backoff_multiplier",
        backoff_multiplier.is_finite() && backoff_multiplier >= 1.0,
        "must be at least 1.0",
    );
    let open_wait_max = r.positive_duration("circuit_breaker.open_wait_max");
    r.check(
        "circuit_breaker.open_wait_max",
        open_wait_max >= open_wait,
        "must not be shorter than circuit_breaker.open_wait",
    );
    let half_open_calls = r.positive_count("circuit_breaker.half_open_calls");
    BreakerSettings {
        enabled,
        config: BreakerConfig {
            window: window as usize,
            failure_rate_threshold,
            minimum_calls: minimum_calls as usize,
            slow_call_duration,
            slow_call_rate_threshold,
            open_wait,
            backoff_multiplier,
            open_wait_max,
            half_open_calls: half_open_calls as usize,
        },
    }
}
