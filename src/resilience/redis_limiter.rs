//! Rate limits shared by every replica: the same GCRA policies as [`Limiter`], with their
//! buckets in Redis.
//!
//! - **One round trip per request, or less.** One server-side script ([`SCRIPT`], by EVALSHA,
//!   and EVAL when Redis answers NOSCRIPT) checks and takes every policy that applies, all or
//!   nothing, on Redis's clock (`TIME`), so the replicas' clocks do not matter. Each key
//!   expires when its bucket has refilled, so Redis memory is bounded by the clients active in
//!   one refill time, whatever their number.
//! - **Concurrent checks are batched.** Each of the `pool_size` connections has a task that
//!   takes every request waiting for it (up to [`MAX_BATCH`]) into one script call, which
//!   decides them in order; requests that arrive meanwhile wait for the next call. Under load
//!   a call serves many requests, so Redis runs one script per batch, not per request.
//! - **Redis trouble is not an outage.** Every request waits at most `rate_limit.redis.timeout`
//!   for its verdict, and a call must end by the earliest deadline of its requests; a call
//!   that does not is a failure, and its connection is replaced (a stalled or half-open socket
//!   never reports an error of its own). Calls run behind a breaker of their own
//!   (`breaker="redis"`). A call that fails, and every request while the breaker is open, is
//!   decided by the fallback (`local`: in-memory buckets with each budget divided by
//!   `replicas_hint`; `allow`; `deny`). While open, Redis is not called; after `open_wait` one trial call decides. So an
//!   outage costs a request at most one timeout, and only around the breaker's opening and
//!   each trial. The switch to the fallback and back is logged once each way, and shown by
//!   `rate_limit_fallback_active`.
//! - **Buckets must not be evicted.** An evicted bucket is a full one, so a Redis with a memory
//!   limit and an evicting policy is reported (`rate_limit_redis_may_evict`, and a warning).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use super::breaker::Breaker;
use super::breaker::metrics::MetricsObserver;
use super::client_ip::ClientKey;
use super::limiter::{Decision, Limiter, Rule};
use crate::config::{Fallback, LimiterConfig, RedisSettings};

mod eviction;
mod observe;
mod script;

use observe::{FallbackObserver, Meters, breaker_config};
use script::{CallError, decide};
pub use script::{ERROR_KINDS, Request, SCRIPT, bucket_key, script_args};

/// The Redis breaker's name in `circuit_breaker_*` metrics.
pub const BREAKER: &str = "redis";

/// The limiter: see the module docs.
pub struct RedisLimiter {
    /// One queue per connection, drained in batches by that connection's task.
    queues: Vec<mpsc::Sender<Pending>>,
    next: AtomicUsize,
    script: Arc<Invocation>,
    timeout: Duration,
    open_wait: Duration,
    fallback: Fallback,
    /// The `local` fallback's buckets, at budget ÷ `replicas_hint`.
    local: Limiter,
}

/// What every batch needs to make its script call: one call is one breaker call.
#[derive(Debug)]
struct Invocation {
    prefix: String,
    sha: String,
    /// The rules of a read and of a write, at the full budgets.
    rules: [Vec<Rule>; 2],
    breaker: Arc<Breaker>,
    meters: Meters,
}

/// How a batch task (re)connects: lazily, so that nothing waits for Redis at start.
#[derive(Clone)]
struct Connect {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// How long a connection's first command may take (the handshake included).
    patience: Duration,
}

impl Connect {
    fn open(&self) -> Result<ConnectionManager, RedisError> {
        ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
    }
}

/// One request waiting for its batch.
#[derive(Debug)]
struct Pending {
    client: ClientKey,
    write: bool,
    /// When its caller stops waiting: the call it goes into must end by then.
    deadline: tokio::time::Instant,
    answer: oneshot::Sender<Result<Decision, CallError>>,
}

/// Requests in one script call, at most: enough to amortise the call, few enough that one
/// slow batch holds few requests.
pub const MAX_BATCH: usize = 64;

/// Requests waiting per connection; past it a request is decided by the fallback at once.
const QUEUE: usize = 1024;

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.script.prefix)
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
        let connect = Connect {
            client,
            config: manager,
            patience: cfg.timeout.max(Duration::from_secs(1)),
        };
        let full = Limiter::new(policies);
        let observer = FallbackObserver {
            metrics: MetricsObserver::register(BREAKER),
            fallback: cfg.fallback,
        };
        let script = Arc::new(Invocation {
            prefix: cfg.key_prefix.clone(),
            sha: redis::Script::new(SCRIPT).get_hash().to_string(),
            rules: [full.rules(false), full.rules(true)],
            breaker: Breaker::new(breaker_config(cfg), Box::new(observer)),
            meters: Meters::register(),
        });
        let mut queues = Vec::new();
        for _ in 0..cfg.pool_size.max(1) {
            // Lazy: fails only on settings the client refuses, before anything is sent.
            let conn = connect
                .open()
                .map_err(|e| format!("rate_limit.redis: {e}"))?;
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(batches(conn, connect.clone(), rx, script.clone()));
            queues.push(tx);
        }
        let conn = connect
            .open()
            .map_err(|e| format!("rate_limit.redis: {e}"))?;
        if let Some(alive) = queues.first().map(mpsc::Sender::downgrade) {
            tokio::spawn(eviction::watch(conn, connect.patience, alive));
        }
        Ok(Self {
            queues,
            next: AtomicUsize::new(0),
            script,
            timeout: cfg.timeout,
            open_wait: cfg.open_wait,
            fallback: cfg.fallback,
            local: Limiter::new(&policies.divided_by(cfg.replicas_hint)),
        })
    }

    /// The rules of a read (`write = false`) or a write, at the configured budgets.
    pub fn rules(&self, write: bool) -> &[Rule] {
        &self.script.rules[usize::from(write)]
    }

    /// The local fallback's limiter (its idle keys need evicting like any other).
    pub fn fallback_limiter(&self) -> &Limiter {
        &self.local
    }

    /// Takes a token from every policy that applies, or from none of them.
    pub async fn check(&self, client: ClientKey, write: bool) -> Decision {
        let rules = &self.script.rules[usize::from(write)];
        if rules.is_empty() {
            return Decision {
                policies: Vec::new(),
            };
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let result =
            match tokio::time::timeout_at(deadline, self.ask(client, write, deadline)).await {
                Ok(result) => result,
                Err(_elapsed) => Err(CallError::Timeout),
            };
        match result {
            Ok(decision) => {
                self.script.meters.by_redis.increment(1);
                decision
            }
            Err(CallError::Open(wait)) => self.fallback(client, write, rules, wait),
            Err(_) => self.fallback(client, write, rules, self.open_wait),
        }
    }

    /// Queues the request on the next connection and waits for its batch's answer.
    async fn ask(
        &self,
        client: ClientKey,
        write: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Decision, CallError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            client,
            write,
            deadline,
            answer,
        };
        if self.queues[index].try_send(pending).is_err() {
            return Err(CallError::Timeout);
        }
        answered
            .await
            .unwrap_or_else(|_| Err(CallError::reply("the batch was dropped".into())))
    }

    fn fallback(&self, client: ClientKey, write: bool, rules: &[Rule], wait: Duration) -> Decision {
        self.script.meters.by_fallback.increment(1);
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

/// A connection's task: takes every request waiting (up to [`MAX_BATCH`]), decides them in one
/// script call (EVALSHA, then EVAL if Redis has lost the script), answers each, and repeats.
/// While a call is out, new requests queue up for the next one. Ends with the limiter.
async fn batches(
    mut conn: ConnectionManager,
    connect: Connect,
    mut queue: mpsc::Receiver<Pending>,
    script: Arc<Invocation>,
) {
    // Connect and load the script before the first request, so that it pays for neither the
    // handshake nor a NOSCRIPT; failing (or no answer within the connect timeout) only delays
    // both to the first call.
    let mut load = redis::cmd("SCRIPT");
    load.arg("LOAD").arg(SCRIPT);
    let load = load.query_async::<String>(&mut conn);
    match tokio::time::timeout(connect.patience, load).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot load the rate-limit script into Redis yet");
        }
        Err(_) => tracing::warn!("no answer from Redis to SCRIPT LOAD yet"),
    }
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Requests whose caller gave up (past its budget) are not worth a key.
        let now = tokio::time::Instant::now();
        batch.retain(|p: &Pending| !p.answer.is_closed() && p.deadline > now);
        let Some(deadline) = batch.iter().map(|p| p.deadline).min() else {
            continue;
        };
        let permit = match script.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(open) => {
                for pending in batch.drain(..) {
                    let _ = pending.answer.send(Err(CallError::Open(open.retry_after)));
                }
                continue;
            }
        };
        let started = Instant::now();
        let requests: Vec<Request<'_>> = batch
            .iter()
            .map(|p| Request {
                client: p.client,
                rules: &script.rules[usize::from(p.write)],
            })
            .collect();
        // The call must end while its most impatient request still waits: a call that ends
        // later helps nobody, and counts as the failure it is.
        let result = match tokio::time::timeout_at(
            deadline,
            script::eval(&mut conn, &script.prefix, &script.sha, &requests),
        )
        .await
        {
            Ok(Ok(reply)) => decide(&requests, reply),
            Ok(Err(e)) => Err(e),
            Err(_elapsed) => Err(CallError::Timeout),
        };
        drop(requests);
        if matches!(result, Err(CallError::Timeout)) {
            // The connection does not learn of a call it never answered: a stalled or half-open
            // socket would serve every later call, trials included. Start on a new one.
            if let Ok(fresh) = connect.open() {
                conn = fresh;
            }
        }
        script
            .meters
            .duration
            .record(started.elapsed().as_secs_f64());
        permit.record(result.is_err());
        if let Err(e) = &result {
            let kind = e.kind();
            if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
                script.meters.errors[i].increment(1);
            }
            tracing::debug!(error = %e, kind, "Redis rate-limit call failed");
        }
        match result {
            Ok(decisions) => {
                for (pending, decision) in batch.drain(..).zip(decisions) {
                    let _ = pending.answer.send(Ok(decision));
                }
            }
            Err(e) => {
                for pending in batch.drain(..) {
                    let _ = pending.answer.send(Err(e.clone()));
                }
            }
        }
    }
}
