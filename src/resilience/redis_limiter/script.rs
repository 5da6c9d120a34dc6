//! The script's side of the Redis limiter: the GCRA script, how a batch of requests becomes
//! its keys and arguments, how its reply becomes decisions, and how a call can fail.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Value};

use crate::resilience::client_ip::ClientKey;
use crate::resilience::limiter::{Decision, Rule};

/// The GCRA script: its header documents the keys, arguments and reply.
pub const SCRIPT: &str = include_str!("gcra.lua");

/// The `kind` label values of `rate_limit_redis_errors_total`.
pub const ERROR_KINDS: [&str; 3] = ["timeout", "connection", "response"];

/// Why a call to Redis gave no verdict.
#[derive(Debug, Clone)]
pub(super) enum CallError {
    /// Past the call's budget (or its batch's), or the queue to Redis was full.
    Timeout,
    /// The breaker is open: Redis is not asked until `.0` has passed.
    Open(Duration),
    /// A Redis or connection error, or a reply the script cannot have sent; `kind` is one of
    /// [`ERROR_KINDS`].
    Failed { kind: &'static str, message: String },
}

impl CallError {
    pub(super) fn redis(e: &RedisError) -> Self {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            "connection"
        } else {
            "response"
        };
        Self::Failed {
            kind,
            message: e.to_string(),
        }
    }

    pub(super) fn reply(what: String) -> Self {
        Self::Failed {
            kind: "response",
            message: format!("unexpected script reply: {what}"),
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Timeout | Self::Open(_) => "timeout",
            Self::Failed { kind, .. } => kind,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("no answer within rate_limit.redis.timeout"),
            Self::Open(_) => f.write_str("the Redis breaker is open"),
            Self::Failed { message, .. } => f.write_str(message),
        }
    }
}

/// The bucket key of one policy for one client.
pub fn bucket_key(prefix: &str, rule: &Rule, client: ClientKey) -> String {
    match (rule.keyed, client) {
        (false, _) => format!("{prefix}{}", rule.name),
        (true, ClientKey::Ip(ip)) => format!("{prefix}{}:{ip}", rule.name),
        (true, ClientKey::ApiKey(tag)) => format!("{prefix}{}:key:{tag:016x}", rule.name),
    }
}

/// One request's place in a script call: its bucket keys and their rules.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Whose buckets.
    pub client: ClientKey,
    /// The rules that apply, in order.
    pub rules: &'a [Rule],
}

/// The script's keys and arguments for a batch of requests (after the script or its SHA):
/// `now` in microseconds replaces Redis's clock, for tests.
pub fn script_args(cmd: &mut redis::Cmd, prefix: &str, batch: &[Request<'_>], now: Option<u64>) {
    // Each distinct rule set goes once; a request names its set by position.
    let mut sets: Vec<&[Rule]> = Vec::with_capacity(2);
    let set_of: Vec<usize> = batch
        .iter()
        .map(
            |r| match sets.iter().position(|s| std::ptr::eq(*s, r.rules)) {
                Some(i) => i + 1,
                None => {
                    sets.push(r.rules);
                    sets.len()
                }
            },
        )
        .collect();
    cmd.arg(batch.iter().map(|r| r.rules.len()).sum::<usize>());
    for request in batch {
        for rule in request.rules {
            cmd.arg(bucket_key(prefix, rule, request.client));
        }
    }
    match now {
        Some(now) => cmd.arg(now),
        None => cmd.arg(""),
    };
    cmd.arg(sets.len());
    for set in &sets {
        cmd.arg(set.len());
        for rule in *set {
            let (interval, capacity) = rule.micros();
            cmd.arg(interval).arg(capacity);
        }
    }
    cmd.arg(batch.len());
    for set in set_of {
        cmd.arg(set);
    }
}

/// One script call for a batch: EVALSHA, then EVAL if Redis has lost the script.
pub(super) async fn eval(
    conn: &mut ConnectionManager,
    prefix: &str,
    sha: &str,
    requests: &[Request<'_>],
) -> Result<Value, CallError> {
    let invocation = |command: &str, body: &str| {
        let mut cmd = redis::cmd(command);
        cmd.arg(body);
        script_args(&mut cmd, prefix, requests, None);
        cmd
    };
    match invocation("EVALSHA", sha).query_async::<Value>(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            invocation("EVAL", SCRIPT)
                .query_async(conn)
                .await
                .map_err(|e| CallError::redis(&e))
        }
        other => other.map_err(|e| CallError::redis(&e)),
    }
}

/// The decisions a script reply stands for, one per request.
pub(super) fn decide(requests: &[Request<'_>], reply: Value) -> Result<Vec<Decision>, CallError> {
    let numbers: Vec<i64> =
        redis::from_redis_value(reply).map_err(|e| CallError::reply(e.to_string()))?;
    let bad = || CallError::reply(format!("{} numbers", numbers.len()));
    let micros = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut rest = numbers.as_slice();
    let mut decisions = Vec::with_capacity(requests.len());
    for request in requests {
        let n = request.rules.len();
        let Some((&[refused, wait], tail)) = rest.split_first_chunk::<2>() else {
            return Err(bad());
        };
        if tail.len() < n {
            return Err(bad());
        }
        let (aheads, tail) = tail.split_at(n);
        rest = tail;
        let refused = usize::try_from(refused)
            .ok()
            .filter(|r| *r <= n)
            .ok_or_else(bad)?;
        let policies = request
            .rules
            .iter()
            .zip(aheads)
            .enumerate()
            .map(|(i, (rule, ahead))| {
                if refused == i + 1 {
                    rule.refused_micros(micros(wait))
                } else {
                    rule.admitted_micros(micros(*ahead))
                }
            })
            .collect();
        decisions.push(Decision { policies });
    }
    if rest.is_empty() {
        Ok(decisions)
    } else {
        Err(bad())
    }
}
