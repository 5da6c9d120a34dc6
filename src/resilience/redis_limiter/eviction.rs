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
    async fn asked_at(replies: Vec<Reading>) -> Vec<u64> {
        let start = tokio::time::Instant::now();
        let (limiter, rx) = tokio::sync::mpsc::channel::<()>(1);
        let alive = limiter.downgrade();
        let mut limiter = Some(limiter);
        let mut replies = replies.into_iter();
        let mut asked = Vec::new();
        let ask = || {
            asked.push(start.elapsed().as_secs());
            let reply = replies.next().unwrap_or_else(|| {
                limiter = None;
                Reading::Silent
            });
            std::future::ready(reply)
        };
        poll(ask, alive).await;
        drop(rx);
        asked
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_asked_about_again_within_seconds_then_less_and_less_often() {
        use Reading::{Mute, Silent};
        let never = || Reading::Verdict(Eviction::Never);
        // Away at start: 1, 2, 4 s apart; then every five minutes, and after a silence again
        // from one second.
        assert_eq!(
            asked_at(vec![
                Silent,
                Silent,
                Silent,
                never(),
                never(),
                Silent,
                never()
            ])
            .await,
            [0, 1, 3, 7, 307, 607, 608, 908]
        );
        // A Redis that never answers is asked at most every five minutes.
        let times = asked_at(vec![Silent; 12]).await;
        let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        // One that answers without a verdict would say the same again: five minutes.
        assert_eq!(
            asked_at(vec![Silent, Silent, Mute, Silent, Mute]).await,
            [0, 1, 3, 303, 304, 604]
        );
    }

    /// A port nothing listens on (at the time of asking).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// A redis-server of the test's own, stopped when dropped, also when the test fails.
    struct Server(std::process::Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// redis-server on `port` with an evicting policy, once it answers; `None` (with a notice)
    /// when it is not installed, outside CI.
    fn redis_server(port: u16) -> Option<Server> {
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru"])
            .stdout(std::process::Stdio::null())
            .spawn();
        let Ok(child) = spawned else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server must be installed when CI=true"
            );
            eprintln!("NOTICE: eviction reading test skipped: no redis-server binary");
            return None;
        };
        let server = Server(child);
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not listen on {port}");
    }

    // Workers of its own, as in the service: the connection manager's new attempt runs (and
    // fails) while this test starts redis-server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_that_came_back_is_read_at_the_next_reading() {
        let port = free_port();
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
        // No retries inside a connection attempt: each one fails at once while nothing listens.
        let config = redis::aio::ConnectionManagerConfig::new().set_number_of_retries(0);
        let mut conn = ConnectionManager::new_lazy_with_config(client, config).expect("lazy");
        let patience = Duration::from_secs(5);
        assert_eq!(check(&mut conn, patience).await, Reading::Silent);
        // The second reading is handed the first attempt's failure; its own try makes a new
        // attempt, and waits for it to fail too. That failure is now stored.
        assert_eq!(check(&mut conn, patience).await, Reading::Silent);
        let Some(_server) = redis_server(port) else {
            return;
        };
        // Handed that stored failure, the reading tries once more, on a fresh connection.
        let reading = check(&mut conn, patience).await;
        assert_eq!(
            reading,
            Reading::Verdict(Eviction::May {
                policy: "allkeys-lru".into(),
                limit: 1 << 30
            })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn info_refused_by_an_acl_is_an_answer_and_this_sides_errors_are_not() {
        // Errors raised on this side, not by Redis: asked about again within seconds.
        for kind in [
            redis::ErrorKind::Client,
            redis::ErrorKind::UnexpectedReturnType,
            redis::ErrorKind::Parse,
            redis::ErrorKind::Io,
        ] {
            let e = redis::RedisError::from((kind, "on this side"));
            assert_eq!(answered_or_not(&e), Reading::Silent, "{kind:?}");
        }
        // Error replies, as Redis sends them: one that asks to be retried is no answer, one
        // that would come again (a known code or one of a managed service's own) is.
        let reply = |line: &str| match redis::parse_redis_value(line.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => redis::RedisError::from(e),
            other => panic!("not an error reply: {other:?}"),
        };
        for line in [
            "-LOADING Redis is loading the dataset in memory\r\n",
            "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            "-MASTERDOWN Link with MASTER is down\r\n",
        ] {
            assert_eq!(answered_or_not(&reply(line)), Reading::Silent, "{line}");
        }
        for line in [
            "-NOPERM User watcher has no permissions to run the 'info' command\r\n",
            "-ERR unknown command 'INFO'\r\n",
            "-DENIED by the provider\r\n",
        ] {
            assert_eq!(answered_or_not(&reply(line)), Reading::Mute, "{line}");
        }
        let port = free_port();
        let Some(_server) = redis_server(port) else {
            return;
        };
        let admin = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
        let mut admin = admin
            .get_multiplexed_async_connection()
            .await
            .expect("admin");
        // A user that may run everything but INFO, as a managed Redis may hand out.
        let () = redis::cmd("ACL")
            .arg(
                &[
                    "SETUSER", "watcher", "on", ">secret", "~*", "+@all", "-info",
                ][..],
            )
            .query_async(&mut admin)
            .await
            .expect("ACL SETUSER");
        let client =
            redis::Client::open(format!("redis://watcher:secret@127.0.0.1:{port}")).expect("url");
        let mut conn = ConnectionManager::new(client).await.expect("connect");
        let denied = check(&mut conn, Duration::from_secs(5)).await;
        // The same user may read a key: the connection works, only INFO is refused.
        let read: Option<String> = redis::cmd("GET")
            .arg("anything")
            .query_async(&mut conn)
            .await
            .expect("GET as watcher");
        assert_eq!(read, None);
        assert_eq!(denied, Reading::Mute);
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
