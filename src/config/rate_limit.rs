//! `[rate_limit]`: the policies, and where their buckets live (this process, or Redis).

use std::time::Duration;

use super::reader::Reader;
use super::values::redact_url;

/// `[rate_limit]`.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Limit at all.
    pub enabled: bool,
    /// Refuse (true) or only count (false).
    pub enforce: bool,
    /// IPv6 key prefix length.
    pub ipv6_prefix: u8,
    /// Idle-key eviction period.
    pub eviction_interval: Duration,
    /// The policies.
    pub policies: LimiterConfig,
    /// Where the buckets live.
    pub backend: LimitBackend,
    /// `[rate_limit.redis]`, read whatever the backend (so its mistakes show before it is on).
    pub redis: RedisSettings,
}

/// One policy's budget: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Tokens added per second.
    pub rate_per_second: f64,
    /// Bucket size: requests allowed at once.
    pub burst: u32,
}

/// Which policies apply.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterConfig {
    /// The whole instance.
    pub global: Option<Budget>,
    /// Each client.
    pub per_client: Option<Budget>,
    /// Each client's POST, PUT, PATCH and DELETE requests, on top of `per_client`.
    pub writes: Option<Budget>,
}

impl LimiterConfig {
    /// Every budget split `n` ways (rate ÷ n, burst ÷ n rounded down but at least 1): what one
    /// of `n` replicas may allow on its own so that together they stay near the whole budget.
    pub fn divided_by(&self, n: u32) -> Self {
        let n = n.max(1);
        let split = |b: Option<Budget>| {
            b.map(|b| Budget {
                rate_per_second: b.rate_per_second / f64::from(n),
                burst: (b.burst / n).max(1),
            })
        };
        Self {
            global: split(self.global),
            per_client: split(self.per_client),
            writes: split(self.writes),
        }
    }
}

/// `rate_limit.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitBackend {
    /// In this process: each replica has budgets of its own.
    Local,
    /// In Redis: one budget across every replica that shares the Redis and key prefix.
    Redis,
}

/// `rate_limit.redis.fallback`: what decides while Redis cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The in-memory limiter, every budget divided by `replicas_hint`.
    Local,
    /// Admit every request.
    Allow,
    /// Refuse every request (429).
    Deny,
}

impl Fallback {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// A Redis URL; its password never appears in `Debug` output, logs or `config print`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL with its secret in it, for the client only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no URL is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `[rate_limit.redis]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// `redis://[:password@]host[:port][/db]` (a secret).
    pub url: RedisUrl,
    /// Budget of one call; past it the request is decided by the fallback.
    pub timeout: Duration,
    /// Multiplexed connections (each pipelines every concurrent call).
    pub pool_size: u32,
    /// Prepended to every key, so that several services can share one Redis.
    pub key_prefix: String,
    /// What decides while Redis cannot.
    pub fallback: Fallback,
    /// Replicas assumed by the `local` fallback (each gets budget ÷ hint).
    pub replicas_hint: u32,
    /// How long Redis is left alone after its breaker opens.
    pub open_wait: Duration,
}

pub(super) fn read(r: &mut Reader<'_>) -> RateLimitSettings {
    let enabled = r.get("rate_limit.enabled");
    let enforce = r.get("rate_limit.enforce");
    let ipv6_prefix = r.count("rate_limit.ipv6_prefix");
    r.check(
        "rate_limit.ipv6_prefix",
        ipv6_prefix <= 128,
        "must be from 0 to 128",
    );
    let eviction_interval = r.positive_duration("rate_limit.eviction_interval");
    let policies = LimiterConfig {
        global: budget(
            r,
            "rate_limit.global.rate_per_second",
            "rate_limit.global.burst",
        ),
        per_client: budget(
            r,
            "rate_limit.per_client.rate_per_second",
            "rate_limit.per_client.burst",
        ),
        writes: budget(
            r,
            "rate_limit.writes.rate_per_second",
            "rate_limit.writes.burst",
        ),
    };
    let backend = r
        .parsed(
            "rate_limit.backend",
            "\"local\" or \"redis\"",
            |s| match s {
                "local" => Some(LimitBackend::Local),
                "redis" => Some(LimitBackend::Redis),
                _ => None,
            },
        )
        .unwrap_or(LimitBackend::Local);
    let redis = redis(r, enabled && backend == LimitBackend::Redis);
    RateLimitSettings {
        enabled,
        enforce,
        ipv6_prefix: u8::try_from(ipv6_prefix.min(128)).unwrap_or(64),
        eviction_interval,
        policies,
        backend,
        redis,
    }
}

fn redis(r: &mut Reader<'_>, in_use: bool) -> RedisSettings {
    let url: String = r.get("rate_limit.redis.url");
    let url = url.trim().to_string();
    if url.is_empty() {
        r.check(
            "rate_limit.redis.url",
            !in_use,
            "must be set when rate_limit.backend = \"redis\"",
        );
    } else if let Err(e) = redis::Client::open(url.as_str()) {
        r.invalid(
            "rate_limit.redis.url",
            &format!("not a Redis URL such as \"redis://redis:6379\": {e}"),
        );
    }
    let timeout = r.positive_duration("rate_limit.redis.timeout");
    let pool_size = r.count("rate_limit.redis.pool_size");
    r.check(
        "rate_limit.redis.pool_size",
        (1..=64).contains(&pool_size),
        "must be from 1 to 64",
    );
    let key_prefix: String = r.get("rate_limit.redis.key_prefix");
    let fallback = r
        .parsed(
            "rate_limit.redis.fallback",
            "\"local\", \"allow\" or \"deny\"",
            |s| match s {
                "local" => Some(Fallback::Local),
                "allow" => Some(Fallback::Allow),
                "deny" => Some(Fallback::Deny),
                _ => None,
            },
        )
        .unwrap_or(Fallback::Local);
    let replicas_hint = r.positive_count("rate_limit.redis.replicas_hint");
    let open_wait = r.positive_duration("rate_limit.redis.open_wait");
    RedisSettings {
        url: RedisUrl(url),
        timeout,
        pool_size,
        key_prefix,
        fallback,
        replicas_hint: replicas_hint.max(1),
        open_wait,
    }
}

fn budget(r: &mut Reader<'_>, rate_key: &'static str, burst_key: &'static str) -> Option<Budget> {
    let rate_per_second = r.float(rate_key);
    let burst = r.count(burst_key);
    r.check(
        rate_key,
        rate_per_second.is_finite() && (rate_per_second > 0.0 || burst == 0),
        "must be a positive number of requests per second",
    );
    // A full refill past 10^9 s (31 years) means "never" in practice, and past 2^53 µs the
    // Redis script's arithmetic would no longer be exact.
    r.check(
        rate_key,
        burst == 0
            || rate_per_second.is_nan()
            || rate_per_second <= 0.0
            || f64::from(burst) / rate_per_second <= 1e9,
        "too small for its burst: a full refill (burst / rate) must take at most 10^9 seconds",
    );
    (burst > 0 && rate_per_second > 0.0).then_some(Budget {
        rate_per_second,
        burst,
    })
}
