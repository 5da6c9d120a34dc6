//! Token-bucket rate limiting (GCRA, the generic cell rate algorithm), in up to three policies:
//! `global` (the whole instance), `per-client` (keyed by [`ClientKey`]: API key or address) and
//! `writes` (per client, POST, PUT, PATCH and DELETE only). Every decision carries what the
//! draft-ietf-httpapi-ratelimit-headers fields need.
//!
//! A request is admitted only if every policy that applies admits it, and a refusal by any
//! policy spends no token of any other: the policies are tried in order global, per-client,
//! writes, the first refusal stops the walk, and the tokens taken before it are given back.
//! So one client that exhausts its own bucket cannot drain the global one, and a request the
//! global policy refuses creates no per-client key. (GCRA keeps one "theoretical arrival time"
//! per bucket; giving a token back is subtracting one emission interval from it, which commutes
//! with every other client's take, so no lock spans two policies.)
//!
//! Time comes from `tokio::time`, so tests run under the paused clock. Keyed state grows with
//! every new client: [`Limiter::evict`] drops keys whose bucket has refilled completely (they
//! are indistinguishable from new ones) and must run on a timer.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::quality::RandomState;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::client_ip::ClientKey;
use crate::config::{Budget, LimiterConfig};

mod rule;

pub use rule::Rule;

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
    /// Whether this policy lets the request through (a policy that another one's refusal kept
    /// from being asked reports its state as it is, and `true`).
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

    /// The names of the refusing policies.
    pub fn violated(&self) -> Vec<&'static str> {
        self.policies
            .iter()
            .filter(|p| !p.allowed)
            .map(|p| p.policy)
            .collect()
    }
}

/// A rule with the state of its bucket(s).
#[derive(Debug)]
struct Policy<S> {
    rule: Rule,
    state: S,
}

impl<S> Policy<S> {
    fn new(name: &'static str, budget: Option<Budget>, state: impl FnOnce() -> S) -> Option<Self> {
        Some(Self {
            rule: Rule::new(name, budget)?,
            state: state(),
        })
    }
}

impl<S> std::ops::Deref for Policy<S> {
    type Target = Rule;

    fn deref(&self) -> &Rule {
        &self.rule
    }
}

/// The instance-wide bucket: one atomic TAT.
type Global = Policy<AtomicU64>;

impl Global {
    fn take(&self, now: u64) -> Result<u64, u64> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let next = self.gcra.admit(current, now)?;
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(next),
                Err(seen) => current = seen,
            }
        }
    }

    fn give_back(&self) {
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(self.gcra.give_back(tat))
            });
    }

    fn peek(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }
}

/// Enough shards that two workers rarely contend for one lock.
const SHARDS: usize = 16;

/// Per-client buckets: TATs by client, in shards of their own lock each. Keys are hashed with
/// foldhash, seeded per process (clients choose their addresses, so the seed matters; SipHash,
/// the std default, cost more than the rest of a check, twice per policy).
#[derive(Debug)]
struct Buckets {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<ClientKey, u64, RandomState>>]>,
}

impl Buckets {
    fn new() -> Self {
        Self {
            hasher: RandomState::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(RandomState::default())))
                .collect(),
        }
    }

    fn shard(
        &self,
        key: &ClientKey,
    ) -> std::sync::MutexGuard<'_, HashMap<ClientKey, u64, RandomState>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // Every update is a single insert or remove, so a poisoned shard is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type Keyed = Policy<Buckets>;

impl Keyed {
    fn take(&self, key: ClientKey, now: u64) -> Result<u64, u64> {
        let mut shard = self.state.shard(&key);
        let tat = shard.get(&key).copied().unwrap_or(0);
        let next = self.gcra.admit(tat, now)?;
        shard.insert(key, next);
        Ok(next)
    }

    /// Gives a token back; a bucket that is full again is forgotten (it was likely created by
    /// the request being refused).
    fn give_back(&self, key: ClientKey, now: u64) {
        let mut shard = self.state.shard(&key);
        if let Some(tat) = shard.get_mut(&key) {
            *tat = self.gcra.give_back(*tat);
            if *tat <= now {
                shard.remove(&key);
            }
        }
    }

    fn peek(&self, key: ClientKey) -> u64 {
        self.state.shard(&key).get(&key).copied().unwrap_or(0)
    }

    /// Drops full buckets; returns how many keys are left.
    fn evict(&self, now: u64) -> usize {
        self.state
            .shards
            .iter()
            .map(|shard| {
                let mut map = shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                map.retain(|_, tat| *tat > now);
                map.shrink_to_fit();
                map.len()
            })
            .sum()
    }
}

/// The limiter: see the module docs.
#[derive(Debug)]
pub struct Limiter {
    origin: Instant,
    global: Option<Global>,
    per_client: Option<Keyed>,
    writes: Option<Keyed>,
}

impl Limiter {
    /// Builds the policies that have a positive rate and burst.
    pub fn new(cfg: &LimiterConfig) -> Self {
        Self {
            origin: Instant::now(),
            global: Policy::new("global", cfg.global, AtomicU64::default),
            per_client: Policy::new("per-client", cfg.per_client, Buckets::new),
            writes: Policy::new("writes", cfg.writes, Buckets::new),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes a token from every policy that applies to `client` (writes only when `write`), or
    /// from none of them.
    pub fn check(&self, client: impl Into<ClientKey>, write: bool) -> Decision {
        let client = client.into();
        let now = self.now();
        let writes = self.writes.as_ref().filter(|_| write);
        let mut policies = Vec::with_capacity(3);
        // Each step runs only while every earlier policy admitted the request.
        let refused = 'walk: {
            if let Some(p) = &self.global {
                match p.take(now) {
                    Ok(tat) => policies.push(p.report(tat, now)),
                    Err(wait) => break 'walk Some((0, p.refusal(wait))),
                }
            }
            for (step, p) in [(1, self.per_client.as_ref()), (2, writes)] {
                let Some(p) = p else { continue };
                match p.take(client, now) {
                    Ok(tat) => policies.push(p.report(tat, now)),
                    Err(wait) => break 'walk Some((step, p.refusal(wait))),
                }
            }
            None
        };
        let Some((step, refusal)) = refused else {
            return Decision { policies };
        };
        // Give back what the earlier policies took, and report every policy as it now stands.
        let mut policies = Vec::with_capacity(3);
        if let Some(p) = &self.global {
            if step > 0 {
                p.give_back();
            }
            policies.push(if step == 0 {
                refusal.clone()
            } else {
                p.report(p.peek(), now)
            });
        }
        for (at, p) in [(1, self.per_client.as_ref()), (2, writes)] {
            let Some(p) = p else { continue };
            if step > at {
                p.give_back(client, now);
            }
            policies.push(if step == at {
                refusal.clone()
            } else {
                p.report(p.peek(client), now)
            });
        }
        Decision { policies }
    }

    /// The rules that apply to a request (writes only when `write`), in order global,
    /// per-client, writes.
    pub fn rules(&self, write: bool) -> Vec<Rule> {
        let writes = self.writes.as_ref().filter(|_| write);
        let keyed = [self.per_client.as_ref(), writes].into_iter().flatten();
        let global = self.global.as_ref().map(|p| p.rule);
        global.into_iter().chain(keyed.map(|p| p.rule)).collect()
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
        let now = self.now();
        [&self.per_client, &self.writes]
            .into_iter()
            .flatten()
            .map(|p| (p.name, p.evict(now)))
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
        // Written piece by piece: it is on every response, and `write!` costs several times
        // as much.
        let mut out = String::with_capacity(32 * decision.policies.len());
        let mut digits = itoa::Buffer::new();
        for (i, p) in decision.policies.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push('"');
            out.push_str(p.policy);
            out.push_str("\";r=");
            out.push_str(digits.format(p.remaining));
            out.push_str(";t=");
            out.push_str(digits.format(p.reset));
        }
        out
    }
}

#[cfg(test)]
mod tests;
