//! Rate limiting: every API response carries `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers); a refusal is 429 problem+json naming the violated
//! policies, with `Retry-After`. In shadow mode refusals are only counted.
//! Requests with a valid API key share that key's buckets from any address; all others are
//! counted by address, so a client guessing keys spends its own address's budget.
//! The buckets live in this process ([`Limiter`]) or in Redis ([`RedisLimiter`]); only the
//! latter's check has to wait.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, counter, gauge};

use crate::auth::KeyTag;
use crate::error::ApiError;
use crate::resilience::client_ip::{ClientIp, ClientKey};
use crate::resilience::limiter::{Decision, Limiter, Rule};
use crate::resilience::redis_limiter::RedisLimiter;
use crate::telemetry::metrics::{RATE_LIMIT_DECISIONS, RATE_LIMIT_KEYS};

/// Where the buckets live (`rate_limit.backend`).
#[derive(Debug)]
pub enum Buckets {
    /// In this process.
    Local(Limiter),
    /// In Redis, shared by every replica.
    Redis(Box<RedisLimiter>),
}

impl Buckets {
    /// The configured policies that apply to a read or a write (never the fallback's shares).
    fn rules(&self, write: bool) -> Vec<Rule> {
        match self {
            Self::Local(l) => l.rules(write),
            Self::Redis(r) => r.rules(write).to_vec(),
        }
    }

    /// The in-process limiter: the only one, or Redis's local fallback.
    fn local(&self) -> &Limiter {
        match self {
            Self::Local(l) => l,
            Self::Redis(r) => r.fallback_limiter(),
        }
    }
}

/// What the layer needs.
#[derive(Debug)]
pub struct RateLimit {
    /// The buckets (shared with the limiter a reload builds, when its policies are the same).
    pub buckets: Arc<Buckets>,
    /// Who the client is.
    pub clients: ClientIp,
    /// Refuse, or only count.
    pub enforce: bool,
    /// The decision counters of each active policy, registered once (a lookup by labels on
    /// every request would allocate and hash them).
    counters: Vec<(&'static str, [Counter; 3])>,
    /// `RateLimit-Policy` for reads and for writes: the configured policies, whoever decides.
    policy_header: [Option<HeaderValue>; 2],
}

/// The `decision` label values, in the order of [`RateLimit::counters`].
/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers), as constant
/// names: a name made from a string per response would copy it.
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

const VERDICTS: [&str; 3] = ["allowed", "limited", "shadow_limited"];

impl RateLimit {
    /// The same buckets and counters with another client rule and enforcement (a reload
    /// that changed neither the policies nor the backend).
    pub fn reconfigured(&self, clients: ClientIp, enforce: bool) -> Self {
        Self {
            buckets: self.buckets.clone(),
            clients,
            enforce,
            counters: self.counters.clone(),
            policy_header: self.policy_header.clone(),
        }
    }

    /// The layer's state, with every decision series of the active policies started at zero
    /// (so rates and alerts have a series before the first refusal) and the key counts
    /// published. Build it after the metrics recorder is installed.
    pub fn new(buckets: Buckets, clients: ClientIp, enforce: bool) -> Self {
        let counters = buckets
            .local()
            .policies()
            .into_iter()
            .map(|policy| {
                let counters = VERDICTS.map(|decision| {
                    counter!(RATE_LIMIT_DECISIONS, "policy" => policy, "decision" => decision)
                });
                counters.iter().for_each(|c| c.absolute(0));
                (policy, counters)
            })
            .collect();
        let policy_header = [false, true].map(|write| {
            let policies = buckets.rules(write).iter().map(Rule::full).collect();
            HeaderValue::from_str(&Limiter::policy_header(&Decision { policies })).ok()
        });
        let limit = Self {
            buckets: Arc::new(buckets),
            clients,
            enforce,
            counters,
            policy_header,
        };
        limit.evict();
        limit
    }

    /// Drops idle clients and publishes the key counts; run it on a timer.
    pub fn evict(&self) {
        for (policy, keys) in self.buckets.local().evict() {
            gauge!(RATE_LIMIT_KEYS, "policy" => policy).set(keys as f64);
        }
    }

    /// The bucket key: the API key a request was identified by, else its client address
    /// (`None` without a peer address, which only in-process callers lack).
    fn client(&self, req: &Request) -> Option<ClientKey> {
        if let Some(KeyTag(tag)) = req.extensions().get::<KeyTag>() {
            return Some(ClientKey::ApiKey(*tag));
        }
        let ConnectInfo(peer) = req.extensions().get::<ConnectInfo<SocketAddr>>()?;
        Some(ClientKey::Ip(
            self.clients
                .key(self.clients.resolve(peer.ip(), req.headers())),
        ))
    }

    fn count(&self, decision: &Decision) {
        for p in &decision.policies {
            let verdict = match (p.allowed, self.enforce) {
                (true, _) => 0,
                (false, true) => 1,
                (false, false) => 2,
            };
            if let Some((_, counters)) = self.counters.iter().find(|(name, _)| *name == p.policy) {
                counters[verdict].increment(1);
            }
        }
    }

    fn policy_header(&self, write: bool) -> Option<HeaderValue> {
        self.policy_header[usize::from(write)].clone()
    }
}

/// One request's verdict, kept to annotate its response.
#[derive(Debug)]
pub struct Checked {
    decision: Decision,
    write: bool,
}

/// A request's verdict, or what Redis must be asked for it.
#[derive(Debug)]
pub enum Check {
    /// Decided in process (`None`: a request with no client, in process, is not limited).
    Now(Option<Checked>),
    /// To be decided by [`RateLimit::ask`].
    Ask(ClientKey, bool),
}

impl RateLimit {
    /// Takes the request's tokens (all of them, or none) when the buckets are in process.
    pub fn check(&self, req: &Request) -> Check {
        let Some(client) = self.client(req) else {
            return Check::Now(None);
        };
        let write = matches!(
            *req.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        match &*self.buckets {
            Buckets::Local(limiter) => {
                Check::Now(Some(self.counted(limiter.check(client, write), write)))
            }
            Buckets::Redis(_) => Check::Ask(client, write),
        }
    }

    /// Takes the request's tokens in Redis (or from the fallback): the answer to
    /// [`Check::Ask`].
    pub async fn ask(&self, client: ClientKey, write: bool) -> Checked {
        let decision = match &*self.buckets {
            Buckets::Redis(redis) => redis.check(client, write).await,
            Buckets::Local(limiter) => limiter.check(client, write),
        };
        self.counted(decision, write)
    }

    fn counted(&self, decision: Decision, write: bool) -> Checked {
        self.count(&decision);
        Checked { decision, write }
    }

    /// The 429 of a refused request, when refusals are enforced.
    pub fn refusal(&self, checked: &Checked) -> Option<Response> {
        if !(checked.decision.limited() && self.enforce) {
            return None;
        }
        let mut res = ApiError::RateLimited {
            violated: checked.decision.violated(),
            retry_after: checked.decision.retry_after(),
        }
        .into_response();
        self.annotate(checked, &mut res);
        Some(res)
    }

    /// Adds `RateLimit-Policy` and `RateLimit` to the response.
    pub fn annotate(&self, checked: &Checked, res: &mut Response) {
        if checked.decision.policies.is_empty() {
            return;
        }
        let headers = res.headers_mut();
        if let Some(policy) = self.policy_header(checked.write) {
            headers.insert(&RATELIMIT_POLICY, policy);
        }
        let state = Bytes::from(Limiter::state_header(&checked.decision));
        if let Ok(state) = HeaderValue::from_maybe_shared(state) {
            headers.insert(&RATELIMIT, state);
        }
    }
}
