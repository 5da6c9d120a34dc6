//! Whether Redis may evict buckets. Every bucket key has a TTL, so under a memory limit every
//! policy but `noeviction` may drop a live bucket (the `volatile-*` ones pick among keys with a
//! TTL, which is all of them), and an evicted bucket is a full one: its client gets a fresh
//! burst. Under `noeviction` a full Redis fails the calls instead, and the fallback decides.
//! Read from `INFO memory` (which managed Redis services allow where `CONFIG` is renamed) at
//! start and every [`EVERY`] on a connection of its own; shown as `rate_limit_redis_may_evict`
//! and warned about when it changes to "may evict".

use std::time::Duration;

use metrics::gauge;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc::WeakSender;

use crate::telemetry::metrics::RATE_LIMIT_REDIS_MAY_EVICT;

/// What `INFO memory` says of eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Eviction {
    /// No memory limit (`maxmemory` 0): nothing is evicted, and memory grows with the clients.
    Unlimited,
    /// A memory limit with `noeviction`: writes fail when full, nothing is dropped.
    Never,
    /// A memory limit with a policy that evicts keys.
    May {
        /// The `maxmemory-policy`.
        policy: String,
        /// The `maxmemory`, in bytes.
        limit: u64,
    },
}

/// Reads the verdict out of an `INFO memory` reply; `None` when a field is missing.
pub(super) fn parse(info: &str) -> Option<Eviction> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
    };
    let limit: u64 = field("maxmemory")?.parse().ok()?;
    let policy = field("maxmemory_policy")?;
    Some(match (limit, policy) {
        (0, _) => Eviction::Unlimited,
        (_, "noeviction") => Eviction::Never,
        (limit, policy) => Eviction::May {
            policy: policy.to_owned(),
            limit,
        },
    })
}

/// How often the policy is read again: an operator's `CONFIG SET` shows within this.
pub(super) const EVERY: Duration = Duration::from_secs(300);

/// Reads the policy at once and every [`EVERY`], for as long as the limiter that `alive`
/// points to exists.
pub(super) async fn watch<T>(
    mut conn: ConnectionManager,
    patience: Duration,
    alive: WeakSender<T>,
) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        ticks.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        if let Some(now) = check(&mut conn, patience).await {
            if last.as_ref() != Some(&now) {
                report(&now);
            }
            last = Some(now);
        }
    }
}

/// Asks Redis; `None` when it does not answer in time, denies `INFO`, or names neither field.
async fn check(conn: &mut ConnectionManager, patience: Duration) -> Option<Eviction> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("memory");
    match tokio::time::timeout(patience, cmd.query_async::<String>(conn)).await {
        Ok(Ok(info)) => {
            let verdict = parse(&info);
            if verdict.is_none() {
                tracing::info!("Redis's INFO memory names no maxmemory or maxmemory_policy");
            }
            verdict
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cannot read Redis's eviction policy (INFO memory)");
            None
        }
        Err(_) => None,
    }
}

/// Sets the gauge, and warns when buckets may be evicted. Until Redis has answered once the
/// gauge is unset: nothing is claimed either way.
fn report(verdict: &Eviction) {
    match verdict {
        Eviction::May { policy, limit } => {
            gauge!(RATE_LIMIT_REDIS_MAY_EVICT).set(1.0);
            tracing::warn!(
                maxmemory_policy = %policy,
                maxmemory = limit,
                "Redis may evict rate-limit buckets when full (an evicted bucket is a full \
                 one): set maxmemory-policy noeviction"
            );
        }
        Eviction::Never | Eviction::Unlimited => {
            gauge!(RATE_LIMIT_REDIS_MAY_EVICT).set(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(limit: &str, policy: &str) -> String {
        format!(
            "# Memory\r\nused_memory:1048576\r\nmaxmemory:{limit}\r\nmaxmemory_human:x\r\n\
             maxmemory_policy:{policy}\r\nallocator_frag_ratio:1.0\r\n"
        )
    }

    #[test]
    fn only_a_limit_with_an_evicting_policy_may_evict() {
        assert_eq!(parse(&info("0", "allkeys-lru")), Some(Eviction::Unlimited));
        assert_eq!(
            parse(&info("1073741824", "noeviction")),
            Some(Eviction::Never)
        );
        for policy in [
            "allkeys-lru",
            "volatile-ttl",
            "volatile-lru",
            "allkeys-random",
        ] {
            assert_eq!(
                parse(&info("1073741824", policy)),
                Some(Eviction::May {
                    policy: policy.to_owned(),
                    limit: 1_073_741_824
                })
            );
        }
    }

    #[test]
    fn a_reply_without_the_fields_claims_nothing() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("maxmemory:0\r\n"), None);
        assert_eq!(parse("maxmemory_policy:noeviction\r\n"), None);
        assert_eq!(parse(&info("lots", "noeviction")), None);
        // `maxmemory_human` and `maxmemory_policy` share the prefix but are other fields.
        assert_eq!(
            parse("maxmemory_human:0B\r\nmaxmemory_policy:allkeys-lru\r\n"),
            None
        );
    }
}
