//! Token-bucket (GCRA) rate limiting with `governor`, in up to three policies: `global` (the
//! whole instance), `per-client` (keyed by [`ClientKey`]: API key or address) and `writes`
//! (per client, POST, PUT, PATCH and DELETE only). Every decision carries what the draft-ietf-httpapi-ratelimit-headers fields need.
//!
//! Time comes from `tokio::time`, so tests run under the paused clock. Keyed state grows with
//! every new client: [`Limiter::evict`] drops keys whose bucket has refilled completely (they
//! are indistinguishable from new ones) and must run on a timer.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::client_ip::ClientKey;

/// One policy's budget: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Tokens added per second.
    pub rate_per_second: f64,
    /// Bucket size: requests allowed at once.
    pub burst: u32,
}

/// Which policies apply, and whether refusals are enforced.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterConfig {
    /// The whole instance.
    pub global: Option<Budget>,
    /// Each client.
    pub per_client: Option<Budget>,
    /// Each client's POST, PUT, PATCH and DELETE requests, on top of `per_client`.
    pub writes: Option<Budget>,
}

/// Elapsed time since the limiter was built, on tokio's clock (pausable in tests).
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Keyed =
    RateLimiter<ClientKey, DashMapStateStore<ClientKey>, TokioClock, StateInformationMiddleware>;
type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, StateInformationMiddleware>;

/// One policy's verdict, with the values for the `RateLimit` header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    /// `global`, `per-client` or `writes`.
    pub policy: &'static str,
    /// Quota units (the burst).
    pub quota: u32,
    /// Seconds in which the whole quota refills.
    pub window: u64,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the quota is whole again (refused: until the next request may pass).
    pub reset: u64,
    /// Whether this policy lets the request through.
    pub allowed: bool,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Every applicable policy, in order global, per-client, writes.
    pub policies: Vec<PolicyDecision>,
}

impl Decision {
    /// Whether any policy refused.
    pub fn limited(&self) -> bool {
        self.policies.iter().any(|p| !p.allowed)
    }

    /// Seconds to wait: the longest among refusing policies, at least 1.
    pub fn retry_after(&self) -> u64 {
        self.policies
            .iter()
            .filter(|p| !p.allowed)
            .map(|p| p.reset)
            .max()
            .unwrap_or(0)
            .max(1)
    }
}

struct Policy<L> {
    name: &'static str,
    budget: Budget,
    period: Duration,
    limiter: L,
}

impl<L> Policy<L> {
    fn new(name: &'static str, budget: Budget, build: impl FnOnce(Quota) -> L) -> Option<Self> {
        let burst = NonZeroU32::new(budget.burst)?;
        if budget.rate_per_second.is_nan() || budget.rate_per_second <= 0.0 {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / budget.rate_per_second);
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(Self {
            name,
            budget,
            period,
            limiter: build(quota),
        })
    }

    fn decide(
        &self,
        outcome: Result<governor::middleware::StateSnapshot, governor::NotUntil<Duration>>,
        now: Duration,
    ) -> PolicyDecision {
        let quota = self.budget.burst;
        let window = ceil_secs(self.period * quota);
        match outcome {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                PolicyDecision {
                    policy: self.name,
                    quota,
                    window,
                    remaining,
                    reset: ceil_secs(self.period * (quota - remaining.min(quota))),
                    allowed: true,
                }
            }
            Err(not_until) => PolicyDecision {
                policy: self.name,
                quota,
                window,
                remaining: 0,
                reset: ceil_secs(not_until.wait_time_from(now)).max(1),
                allowed: false,
            },
        }
    }
}

/// Whole seconds, rounded up; a sub-microsecond remainder is float noise from the rate's
/// reciprocal (1 / 0.01 s is not exactly 100 s), not time anyone waits.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 1_000)
}

/// The limiter: see the module docs.
pub struct Limiter {
    clock: TokioClock,
    global: Option<Policy<Direct>>,
    per_client: Option<Policy<Keyed>>,
    writes: Option<Policy<Keyed>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

impl Limiter {
    /// Builds the policies that have a positive rate and burst.
    pub fn new(cfg: &LimiterConfig) -> Self {
        let clock = TokioClock {
            origin: tokio::time::Instant::now(),
        };
        let keyed =
            |q| -> Keyed { RateLimiter::new(q, DashMapStateStore::default(), clock.clone()) };
        Self {
            global: cfg.global.and_then(|b| {
                Policy::new("global", b, |q| -> Direct {
                    RateLimiter::new(q, InMemoryState::default(), clock.clone())
                })
            }),
            per_client: cfg
                .per_client
                .and_then(|b| Policy::new("per-client", b, keyed)),
            writes: cfg.writes.and_then(|b| Policy::new("writes", b, keyed)),
            clock,
        }
    }

    /// Takes a token from every policy that applies to `client` (writes only when `write`).
    pub fn check(&self, client: impl Into<ClientKey>, write: bool) -> Decision {
        let client = client.into();
        let now = self.clock.now();
        let mut policies = Vec::with_capacity(3);
        if let Some(p) = &self.global {
            policies.push(p.decide(p.limiter.check(), now));
        }
        if let Some(p) = &self.per_client {
            policies.push(p.decide(p.limiter.check_key(&client), now));
        }
        if let Some(p) = self.writes.as_ref().filter(|_| write) {
            policies.push(p.decide(p.limiter.check_key(&client), now));
        }
        Decision { policies }
    }

    /// The names of the active policies.
    pub fn policies(&self) -> Vec<&'static str> {
        let global = self.global.as_ref().map(|p| p.name);
        let keyed = [&self.per_client, &self.writes]
            .into_iter()
            .flatten()
            .map(|p| p.name);
        global.into_iter().chain(keyed).collect()
    }

    /// Forgets clients whose buckets are full again, and returns the key count per policy.
    pub fn evict(&self) -> Vec<(&'static str, usize)> {
        [&self.per_client, &self.writes]
            .into_iter()
            .flatten()
            .map(|p| {
                p.limiter.retain_recent();
                p.limiter.shrink_to_fit();
                (p.name, p.limiter.len())
            })
            .collect()
    }

    /// The `RateLimit-Policy` field value for the policies that apply to a request.
    pub fn policy_header(decision: &Decision) -> String {
        decision
            .policies
            .iter()
            .map(|p| format!("\"{}\";q={};w={}", p.policy, p.quota, p.window))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `RateLimit` field value.
    pub fn state_header(decision: &Decision) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(24 * decision.policies.len());
        for (i, p) in decision.policies.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            // Writing into a String cannot fail.
            let _ = write!(out, "{sep}\"{}\";r={};t={}", p.policy, p.remaining, p.reset);
        }
        out
    }
}

#[cfg(test)]
mod tests;
