//! Whether Redis may evict buckets. Every bucket key has a TTL, so under a memory limit every
//! policy but `noeviction` may drop a live bucket (the `volatile-*` ones pick among keys with a
//! TTL, which is all of them), and an evicted bucket is a full one: its client gets a fresh
//! burst. Under `noeviction` a full Redis fails the calls instead, and the fallback decides.
//! Read from `INFO memory` (which managed Redis services allow where `CONFIG` is renamed) at
//! start and every [`EVERY`] on a connection of its own (sooner, from [`RETRY`] doubling, while
//! Redis gives no verdict); shown as `rate_limit_redis_may_evict` and warned about when it
//! changes to "may evict".

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

/// How soon Redis is asked again after it gave no verdict (down, slow, or `INFO` denied):
/// doubling from this up to [`EVERY`], so that a Redis that was unreachable or busy when the
/// service started is reported within seconds of answering, not minutes.
pub(super) const RETRY: Duration = Duration::from_secs(1);

/// Reads the policy at once and every [`EVERY`] (sooner while Redis gives no verdict), for as
/// long as the limiter that `alive` points to exists.
pub(super) async fn watch<T>(conn: ConnectionManager, patience: Duration, alive: WeakSender<T>) {
    // A clone shares the connection: each reading borrows its own handle.
    let ask = move || {
        let mut conn = conn.clone();
        async move { check(&mut conn, patience).await }
    };
    poll(ask, alive).await;
}

/// The schedule of [`watch`], over any way of asking.
async fn poll<T, F, R>(mut ask: F, alive: WeakSender<T>)
where
    F: FnMut() -> R,
    R: Future<Output = Option<Eviction>>,
{
    let mut last = None;
    let mut retry = RETRY;
    loop {
        if alive.upgrade().is_none() {
            return;
        }
        let wait = match ask().await {
            Some(now) => {
                if last.as_ref() != Some(&now) {
                    report(&now);
                }
                last = Some(now);
                retry = RETRY;
                EVERY
            }
            None => {
                let wait = retry;
                retry = (retry * 2).min(EVERY);
                wait
            }
        };
        tokio::time::sleep(wait).await;
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
        Err(_) => {
            tracing::debug!(?patience, "no answer from Redis to INFO memory");
            None
        }
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

    /// Asks at the paused clock's times, answering from `replies` in turn; the limiter goes
    /// once they run out. Returns the seconds (from the start) at which Redis was asked.
    async fn asked_at(replies: Vec<Option<Eviction>>) -> Vec<u64> {
        let start = tokio::time::Instant::now();
        let (limiter, rx) = tokio::sync::mpsc::channel::<()>(1);
        let alive = limiter.downgrade();
        let mut limiter = Some(limiter);
        let mut replies = replies.into_iter();
        let mut asked = Vec::new();
        let ask = || {
            asked.push(start.elapsed().as_secs());
            let reply = replies.next();
            if reply.is_none() {
                limiter = None;
            }
            std::future::ready(reply.flatten())
        };
        poll(ask, alive).await;
        drop(rx);
        asked
    }

    #[tokio::test(start_paused = true)]
    async fn no_verdict_is_asked_again_within_seconds_then_less_and_less_often() {
        let never = || Some(Eviction::Never);
        // Down at start: 1, 2, 4 s apart; then every five minutes, and after a failure again
        // from one second.
        assert_eq!(
            asked_at(vec![None, None, None, never(), never(), None, never()]).await,
            [0, 1, 3, 7, 307, 607, 608, 908]
        );
        // A Redis that never answers is asked at most every five minutes.
        let times = asked_at(vec![None; 12]).await;
        let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
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
