//! Rate limits shared by every replica: the same GCRA policies as [`Limiter`], with their
//! buckets in Redis.
//!
//! - **One round trip per request.** One server-side script ([`SCRIPT`], by EVALSHA, and EVAL
//!   when Redis answers NOSCRIPT) checks and takes every policy that applies, all or nothing,
//!   on Redis's clock (`TIME`), so the replicas' clocks do not matter. Each key expires when
//!   its bucket has refilled, so Redis memory is bounded by the clients active in one refill
//!   time, whatever their number.
//! - **Concurrent checks share connections.** Each of the `pool_size` connections multiplexes:
//!   calls from every worker are pipelined on it, with no connection per request.
//! - **Redis trouble is not an outage.** Every call has its own time budget
//!   (`rate_limit.redis.timeout`) and runs behind a breaker of its own (`breaker="redis"`).
//!   A call that fails, and every request while the breaker is open, is decided by the
//!   fallback (`local`: in-memory buckets with each budget divided by `replicas_hint`; `allow`;
//!   `deny`). While open, Redis is not called; after `open_wait` one trial call decides. So an
//!   outage costs a request at most one timeout, and only around the breaker's opening and
//!   each trial. The switch to the fallback and back is logged once each way, and shown by
//!   `rate_limit_fallback_active`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};

use super::breaker::metrics::MetricsObserver;
use super::breaker::{Breaker, BreakerConfig, Observer, State};
use super::client_ip::ClientKey;
use super::limiter::{Decision, Limiter, LimiterConfig, Rule};
use crate::config::{Fallback, RedisSettings};
use crate::telemetry::metrics::{
    RATE_LIMIT_BACKEND_DECISIONS, RATE_LIMIT_FALLBACK_ACTIVE, RATE_LIMIT_REDIS_DURATION,
    RATE_LIMIT_REDIS_ERRORS,
};

/// The GCRA script: its header documents the keys, arguments and reply.
pub const SCRIPT: &str = include_str!("redis_limiter/gcra.lua");

/// The Redis breaker's name in `circuit_breaker_*` metrics.
pub const BREAKER: &str = "redis";

/// The `kind` label values of `rate_limit_redis_errors_total`.
pub const ERROR_KINDS: [&str; 3] = ["timeout", "connection", "response"];

/// Why a call to Redis gave no verdict.
#[derive(Debug)]
enum CallError {
    /// Past the call's budget.
    Timeout,
    /// A Redis or connection error.
    Redis(RedisError),
    /// A reply the script cannot have sent.
    Reply(String),
}

impl CallError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Redis(e) if e.is_timeout() => "timeout",
            Self::Redis(e)
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() =>
            {
                "connection"
            }
            Self::Redis(_) | Self::Reply(_) => "response",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("no answer within rate_limit.redis.timeout"),
            Self::Redis(e) => write!(f, "{e}"),
            Self::Reply(r) => write!(f, "unexpected script reply: {r}"),
        }
    }
}

/// Metric handles, registered once (a lookup by labels per request would hash them).
#[derive(Debug)]
struct Meters {
    duration: Histogram,
    errors: [Counter; 3],
    by_redis: Counter,
    by_fallback: Counter,
}

impl Meters {
    fn register() -> Self {
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
struct FallbackObserver {
    metrics: MetricsObserver,
    fallback: Fallback,
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
fn breaker_config(cfg: &RedisSettings) -> BreakerConfig {
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

/// The limiter: see the module docs.
pub struct RedisLimiter {
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: String,
    timeout: Duration,
    open_wait: Duration,
    /// The rules of a read and of a write, at the full budgets.
    rules: [Vec<Rule>; 2],
    breaker: Arc<Breaker>,
    fallback: Fallback,
    /// The `local` fallback's buckets, at budget ÷ `replicas_hint`.
    local: Limiter,
    sha: String,
    meters: Meters,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects lazily (no call waits for Redis at start) and loads the script in the
    /// background. Build it inside the Tokio runtime, after the metrics recorder is installed.
    pub fn new(policies: &LimiterConfig, cfg: &RedisSettings) -> Result<Self, String> {
        let client = redis::Client::open(cfg.url.expose())
            .map_err(|e| format!("rate_limit.redis.url: {e}"))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(None)
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connections = (0..cfg.pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("rate_limit.redis: {e}"))?;
        let full = Limiter::new(policies);
        let observer = FallbackObserver {
            metrics: MetricsObserver::register(BREAKER),
            fallback: cfg.fallback,
        };
        let limiter = Self {
            connections,
            next: AtomicUsize::new(0),
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.timeout,
            open_wait: cfg.open_wait,
            rules: [full.rules(false), full.rules(true)],
            breaker: Breaker::new(breaker_config(cfg), Box::new(observer)),
            fallback: cfg.fallback,
            local: Limiter::new(&policies.divided_by(cfg.replicas_hint)),
            sha: script_sha(),
            meters: Meters::register(),
        };
        limiter.preload();
        Ok(limiter)
    }

    /// Opens every connection and loads the script, so that the first requests neither pay
    /// for the handshake nor see NOSCRIPT. Failures only delay that to the first call.
    fn preload(&self) {
        for mut conn in self.connections.iter().cloned() {
            tokio::spawn(async move {
                let loaded: Result<String, _> = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(SCRIPT)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = loaded {
                    tracing::warn!(error = %e, "cannot load the rate-limit script into Redis yet");
                }
            });
        }
    }

    /// The local fallback's limiter (its idle keys need evicting like any other).
    pub fn fallback_limiter(&self) -> &Limiter {
        &self.local
    }

    /// Takes a token from every policy that applies, or from none of them.
    pub async fn check(&self, client: ClientKey, write: bool) -> Decision {
        let rules = &self.rules[usize::from(write)];
        if rules.is_empty() {
            return Decision {
                policies: Vec::new(),
            };
        }
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(open) => return self.fallback(client, write, rules, open.retry_after),
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, self.call(client, rules)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(CallError::Timeout),
        };
        self.meters.duration.record(started.elapsed().as_secs_f64());
        match result.and_then(|reply| decide(rules, reply)) {
            Ok(decision) => {
                permit.record(false);
                self.meters.by_redis.increment(1);
                decision
            }
            Err(e) => {
                permit.record(true);
                let kind = e.kind();
                if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
                    self.meters.errors[i].increment(1);
                }
                tracing::debug!(error = %e, kind, "Redis rate-limit call failed");
                self.fallback(client, write, rules, self.open_wait)
            }
        }
    }

    /// One EVALSHA (and EVAL if Redis has lost the script) on the next connection.
    async fn call(&self, client: ClientKey, rules: &[Rule]) -> Result<Value, CallError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        let mut conn = self.connections[index].clone();
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&self.sha);
        let mut eval = redis::cmd("EVAL");
        eval.arg(SCRIPT);
        for cmd in [&mut evalsha, &mut eval] {
            script_args(cmd, &self.prefix, client, rules, None);
        }
        match evalsha.query_async::<Value>(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                eval.query_async(&mut conn).await.map_err(CallError::Redis)
            }
            other => other.map_err(CallError::Redis),
        }
    }

    fn fallback(&self, client: ClientKey, write: bool, rules: &[Rule], wait: Duration) -> Decision {
        self.meters.by_fallback.increment(1);
        match self.fallback {
            Fallback::Local => self.local.check(client, write),
            Fallback::Allow => Decision {
                policies: Vec::new(),
            },
            Fallback::Deny => {
                let wait = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
                Decision {
                    policies: rules.iter().map(|r| r.refused_micros(wait)).collect(),
                }
            }
        }
    }
}

/// The SHA-1 Redis names the script by (what EVALSHA takes).
fn script_sha() -> String {
    redis::Script::new(SCRIPT).get_hash().to_string()
}

/// The bucket key of one policy for one client.
pub fn bucket_key(prefix: &str, rule: &Rule, client: ClientKey) -> String {
    match (rule.keyed, client) {
        (false, _) => format!("{prefix}{}", rule.name),
        (true, ClientKey::Ip(ip)) => format!("{prefix}{}:{ip}", rule.name),
        (true, ClientKey::ApiKey(index)) => format!("{prefix}{}:key{index}", rule.name),
    }
}

/// The script's keys and arguments for `rules` (after the script or its SHA): `now` in
/// microseconds replaces Redis's clock, for tests.
pub fn script_args(
    cmd: &mut redis::Cmd,
    prefix: &str,
    client: ClientKey,
    rules: &[Rule],
    now: Option<u64>,
) {
    cmd.arg(rules.len());
    for rule in rules {
        cmd.arg(bucket_key(prefix, rule, client));
    }
    match now {
        Some(now) => cmd.arg(now),
        None => cmd.arg(""),
    };
    for rule in rules {
        let (interval, capacity) = rule.micros();
        cmd.arg(interval).arg(capacity);
    }
}

/// The decision a script reply stands for.
fn decide(rules: &[Rule], reply: Value) -> Result<Decision, CallError> {
    let numbers: Vec<i64> = redis::from_redis_value(reply.clone())
        .map_err(|_| CallError::Reply(format!("{reply:?}")))?;
    let bad = || CallError::Reply(format!("{numbers:?}"));
    let [refused, wait, aheads @ ..] = numbers.as_slice() else {
        return Err(bad());
    };
    if aheads.len() != rules.len() {
        return Err(bad());
    }
    let refused = usize::try_from(*refused).map_err(|_| bad())?;
    let micros = |n: i64| u64::try_from(n).unwrap_or(0);
    let policies = rules
        .iter()
        .zip(aheads)
        .enumerate()
        .map(|(i, (rule, ahead))| {
            if refused == i + 1 {
                rule.refused_micros(micros(*wait))
            } else {
                rule.admitted_micros(micros(*ahead))
            }
        })
        .collect();
    Ok(Decision { policies })
}
