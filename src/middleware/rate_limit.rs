//! Rate limiting: every API response carries `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers); a refusal is 429 problem+json naming the violated
//! policies, with `Retry-After`. In shadow mode refusals are only counted. Probes are exempt.
//! Requests with a valid API key share that key's buckets from any address; all others are
//! counted by address, so a client guessing keys spends its own address's budget.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge};

use super::is_probe;
use crate::auth::KeyIndex;
use crate::error::ApiError;
use crate::resilience::client_ip::{ClientIp, ClientKey};
use crate::resilience::limiter::{Decision, Limiter};
use crate::telemetry::metrics::{RATE_LIMIT_DECISIONS, RATE_LIMIT_KEYS};

/// What the layer needs.
#[derive(Debug)]
pub struct RateLimit {
    /// The buckets.
    pub limiter: Limiter,
    /// Who the client is.
    pub clients: ClientIp,
    /// Refuse, or only count.
    pub enforce: bool,
}

impl RateLimit {
    /// Starts every series of the active policies at zero, so rates and alerts have a series
    /// before the first refusal.
    pub fn register(&self) {
        for policy in self.limiter.policies() {
            for decision in ["allowed", "limited", "shadow_limited"] {
                counter!(RATE_LIMIT_DECISIONS, "policy" => policy, "decision" => decision)
                    .absolute(0);
            }
        }
        self.evict();
    }

    /// Drops idle clients and publishes the key counts; run it on a timer.
    pub fn evict(&self) {
        for (policy, keys) in self.limiter.evict() {
            gauge!(RATE_LIMIT_KEYS, "policy" => policy).set(keys as f64);
        }
    }

    /// The bucket key: the API key a request was identified by, else its client address
    /// (`None` without a peer address, which only in-process callers lack).
    fn client(&self, req: &Request) -> Option<ClientKey> {
        if let Some(KeyIndex(index)) = req.extensions().get::<KeyIndex>() {
            return Some(ClientKey::ApiKey(*index));
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
                (true, _) => "allowed",
                (false, true) => "limited",
                (false, false) => "shadow_limited",
            };
            counter!(RATE_LIMIT_DECISIONS, "policy" => p.policy, "decision" => verdict)
                .increment(1);
        }
    }
}

/// Middleware: see the module docs.
pub async fn layer(State(rl): State<Arc<RateLimit>>, req: Request, next: Next) -> Response {
    if is_probe(&req) {
        return next.run(req).await;
    }
    let Some(client) = rl.client(&req) else {
        return next.run(req).await;
    };
    let write = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let decision = rl.limiter.check(client, write);
    rl.count(&decision);
    let mut res = if decision.limited() && rl.enforce {
        ApiError::RateLimited {
            violated: decision
                .policies
                .iter()
                .filter(|p| !p.allowed)
                .map(|p| p.policy)
                .collect(),
            retry_after: decision.retry_after(),
        }
        .into_response()
    } else {
        next.run(req).await
    };
    let headers = res.headers_mut();
    for (name, value) in [
        ("ratelimit-policy", Limiter::policy_header(&decision)),
        ("ratelimit", Limiter::state_header(&decision)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value)
            && !value.is_empty()
        {
            headers.insert(name, v);
        }
    }
    res
}
