//! A breaker's transitions as metrics and log lines, under the breaker's name.

use metrics::{counter, gauge};

use super::{Observer, State};
use crate::telemetry::metrics::{BREAKER_STATE, BREAKER_TRANSITIONS};

/// Publishes `circuit_breaker_state` and `circuit_breaker_transitions_total` with
/// `breaker="<name>"`, and logs each transition.
#[derive(Debug, Clone, Copy)]
pub struct MetricsObserver {
    name: &'static str,
}

impl MetricsObserver {
    /// The observer of the breaker called `name`, with its series started (closed, no
    /// transitions), so that rates and alerts have a series before the first change.
    pub fn register(name: &'static str) -> Self {
        gauge!(BREAKER_STATE, "breaker" => name).set(State::Closed.gauge());
        for (from, to) in [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "open"),
            ("half_open", "closed"),
        ] {
            counter!(BREAKER_TRANSITIONS, "breaker" => name, "from" => from, "to" => to)
                .absolute(0);
        }
        Self { name }
    }
}

impl Observer for MetricsObserver {
    fn transition(&self, from: State, to: State) {
        let name = self.name;
        gauge!(BREAKER_STATE, "breaker" => name).set(to.gauge());
        counter!(BREAKER_TRANSITIONS, "breaker" => name, "from" => from.as_str(), "to" => to.as_str())
            .increment(1);
        match to {
            State::Open => tracing::warn!(
                breaker = name,
                from = from.as_str(),
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                breaker = name,
                from = from.as_str(),
                to = to.as_str(),
                "circuit breaker changed state"
            ),
        }
    }
}
