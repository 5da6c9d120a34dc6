//! One policy's GCRA arithmetic and how it reports: what the in-memory limiter and the Redis
//! limiter share.

use std::time::Duration;

use super::PolicyDecision;
use crate::config::Budget;

/// GCRA over one bucket, in nanoseconds on the limiter's clock. The state is the bucket's
/// theoretical arrival time (TAT): the bucket is full when the TAT is not after now, and each
/// admitted request moves it one `interval` later. A request is admitted while the TAT stays
/// within `capacity` (burst × interval) of now.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gcra {
    pub(super) interval: u64,
    pub(super) capacity: u64,
}

impl Gcra {
    pub(super) fn new(budget: Budget) -> Option<Self> {
        if budget.burst == 0 || !budget.rate_per_second.is_finite() || budget.rate_per_second <= 0.0
        {
            return None;
        }
        // Below 1 ns per token the rate is unlimited in practice; above u64 it is never refilled.
        let interval = (1e9 / budget.rate_per_second)
            .round()
            .clamp(1.0, u64::MAX as f64) as u64;
        Some(Self {
            interval,
            capacity: interval.saturating_mul(u64::from(budget.burst)),
        })
    }

    /// The TAT after admitting one request at `now`, or how long until one could be admitted.
    pub(super) fn admit(self, tat: u64, now: u64) -> Result<u64, u64> {
        let next = tat.max(now).saturating_add(self.interval);
        let ahead = next - now;
        if ahead <= self.capacity {
            Ok(next)
        } else {
            Err(ahead - self.capacity)
        }
    }

    /// The TAT with one admitted request given back (it never goes below `now`'s full bucket,
    /// which is the same as any earlier TAT).
    pub(super) fn give_back(self, tat: u64) -> u64 {
        tat.saturating_sub(self.interval)
    }

    fn remaining(self, tat: u64, now: u64) -> u32 {
        let used = tat.saturating_sub(now).min(self.capacity);
        u32::try_from((self.capacity - used) / self.interval).unwrap_or(u32::MAX)
    }
}

/// Whole seconds, rounded up; a sub-microsecond remainder is float noise from the rate's
/// reciprocal (1 / 0.01 s is not exactly 100 s), not time anyone waits.
fn ceil_secs(nanos: u64) -> u64 {
    let d = Duration::from_nanos(nanos);
    d.as_secs() + u64::from(d.subsec_nanos() > 1_000)
}

/// One policy's arithmetic and how it reports, without its state: what a limiter that keeps
/// its buckets elsewhere (in Redis) shares with this one.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// `global`, `per-client` or `writes`.
    pub name: &'static str,
    /// Whether each client has a bucket of its own (`global` is one bucket).
    pub keyed: bool,
    pub(super) burst: u32,
    pub(super) gcra: Gcra,
}

impl Rule {
    pub(super) fn new(name: &'static str, budget: Option<Budget>) -> Option<Self> {
        let budget = budget?;
        Some(Self {
            name,
            keyed: name != "global",
            burst: budget.burst,
            gcra: Gcra::new(budget)?,
        })
    }

    /// The emission interval and the capacity (burst × interval) in whole microseconds, at
    /// least one: the units of a bucket kept in Redis, whose Lua numbers are exact only up to
    /// 2^53 (microseconds since 1970 fit, nanoseconds do not).
    pub fn micros(&self) -> (u64, u64) {
        let interval = self.gcra.interval.div_ceil(1_000).max(1);
        (interval, interval.saturating_mul(u64::from(self.burst)))
    }

    /// The verdict of an admitted request, from how far the bucket's TAT is ahead of now in
    /// microseconds (as a Redis bucket reports it). The window is the configured one, as in
    /// every other verdict; what is left is counted in the bucket's own microseconds.
    pub fn admitted_micros(&self, ahead: u64) -> PolicyDecision {
        let (interval, capacity) = self.micros();
        let micros = Gcra { interval, capacity };
        PolicyDecision {
            remaining: micros.remaining(ahead, 0),
            ..self.report(ahead.saturating_mul(1_000), 0)
        }
    }

    /// The verdict on a full bucket: what `RateLimit-Policy` announces.
    pub fn full(&self) -> PolicyDecision {
        self.report(0, 0)
    }

    /// The verdict of a refused request that could pass in `wait` microseconds.
    pub fn refused_micros(&self, wait: u64) -> PolicyDecision {
        self.refusal(wait.saturating_mul(1_000))
    }

    /// The verdict for a bucket at `tat` (after the request, when admitted).
    pub(super) fn report(&self, tat: u64, now: u64) -> PolicyDecision {
        PolicyDecision {
            policy: self.name,
            quota: self.burst,
            window: ceil_secs(self.gcra.capacity),
            remaining: self.gcra.remaining(tat, now),
            reset: ceil_secs(tat.saturating_sub(now)),
            allowed: true,
        }
    }

    pub(super) fn refusal(&self, wait: u64) -> PolicyDecision {
        PolicyDecision {
            policy: self.name,
            quota: self.burst,
            window: ceil_secs(self.gcra.capacity),
            remaining: 0,
            reset: ceil_secs(wait).max(1),
            allowed: false,
        }
    }
}
