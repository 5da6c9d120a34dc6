//! Whether Redis may evict buckets. Every bucket key has a TTL, so under a memory limit every
//! policy but `noeviction` may drop a live bucket (the `volatile-*` ones pick among keys with a
//! TTL, which is all of them), and an evicted bucket is a full one: its client gets a fresh
//! burst. Under `noeviction` a full Redis fails the calls instead, and the fallback decides.
//! Read from `INFO memory` (which managed Redis services allow where `CONFIG` is renamed) at
//! start and every [`EVERY`] on a connection of its own (sooner, from [`RETRY`] doubling, while
//! Redis does not answer or asks to be retried); shown as `rate_limit_redis_may_evict` and
//! warned about when it changes to "may evict".

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

/// How soon Redis is asked again after it did not answer (down, or slower than the patience):
/// doubling from this up to [`EVERY`]. A Redis that was away for a few seconds when the
/// service started is reported a few seconds after it answers; one away for longer, at most
/// [`EVERY`] after.
pub(super) const RETRY: Duration = Duration::from_secs(1);

/// What one reading of `INFO memory` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// Both fields: the verdict.
    Verdict(Eviction),
    /// Redis answered without a verdict (it lacks the fields, or refuses `INFO`): asking again
    /// soon would get the same.
    Mute,
    /// No answer to go by: not connected, not within the patience, a reply that asks to be
    /// retried, or an error on this side.
    Silent,
}

/// Reads the policy at once and every [`EVERY`] (sooner while Redis does not answer), for as
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
    R: Future<Output = Reading>,
{
    let mut last = None;
    let mut retry = RETRY;
    loop {
        if alive.upgrade().is_none() {
            return;
        }
        let wait = match ask().await {
            Reading::Verdict(now) => {
                if last.as_ref() != Some(&now) {
                    report(&now);
                }
                last = Some(now);
                retry = RETRY;
                EVERY
            }
            Reading::Mute => {
                retry = RETRY;
                EVERY
            }
            Reading::Silent => {
                let wait = retry;
                retry = (retry * 2).min(EVERY);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Asks Redis, within `patience` in all.
async fn check(conn: &mut ConnectionManager, patience: Duration) -> Reading {
    let deadline = tokio::time::Instant::now() + patience;
    // A connection attempt that failed is handed to the next command as its error, and only
    // then is a new attempt started: a Redis that is back would be reported one retry late.
    // So a connection error is followed by one more try, which waits for that new attempt.
    for retried in [false, true] {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("memory");
        match tokio::time::timeout_at(deadline, cmd.query_async::<String>(conn)).await {
            Ok(Ok(info)) => {
                return match parse(&info) {
                    Some(verdict) => Reading::Verdict(verdict),
                    None => {
                        tracing::info!(
                            "Redis's INFO memory names no maxmemory or maxmemory_policy"
                        );
                        Reading::Mute
                    }
                };
            }
            Ok(Err(e)) => {
                let lost = e.is_io_error() || e.is_unrecoverable_error();
                if lost && !retried {
                    continue;
                }
                tracing::debug!(error = %e, "cannot read Redis's eviction policy (INFO memory)");
                return answered_or_not(&e);
            }
            Err(_) => {
                tracing::debug!(?patience, "no answer from Redis to INFO memory");
                return Reading::Silent;
            }
        }
    }
    Reading::Silent
}

/// What a failed reading means. Only an error reply that would come again is Redis's answer
/// (INFO denied by an ACL, say): it is asked again in [`EVERY`]. Anything else is asked about
/// again within seconds: a reply that asks to be retried (`LOADING`, `TRYAGAIN`), and whatever
/// happened on this side (a connection lost or still being made, a reply it could not use).
fn answered_or_not(e: &redis::RedisError) -> Reading {
    if e.code().is_some() && matches!(e.retry_method(), redis::RetryMethod::NoRetry) {
        Reading::Mute
    } else {
        Reading::Silent
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
mod tests;
