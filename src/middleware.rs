//! THE ordered layer stack, written once, in [`Stack`].
//!
//! API listener, outermost first:
//! 1. [`observe`] (the whole listener, one service): drain (`Connection: close` once shutdown
//!    has begun), request id, the server span (W3C `traceparent` in and out), identify (a valid
//!    API key puts the caller's `Principal` into the request, never refuses), the access log
//!    and the HTTP metrics. Outside every refusing layer, so their answers are logged and
//!    counted too, with their request id.
//! 2. routing: `/healthz` and each version's OpenAPI document are answered here, outside the
//!    guards (they touch no database and need no key); unknown paths get 404, unknown methods
//!    405.
//! 3. deprecation (the `/api/v1` nest): `Deprecation`, `Sunset` and a successor `Link` on every
//!    v1 response, including the guards' refusals and panics turned into 500.
//! 4. [`guard`] (each version's order routes, one service): catch panic, timeout, rate limit,
//!    load shed, store ready, circuit breaker, in that order.
//! 5. body limit: extractors refuse bodies over `server.body_limit` with 413.
//! 6. [`auth`] (a `route_layer`, with authentication on): 401 without a valid key, 403 without
//!    the method's scope. Only matched routes are wrapped, so an unknown path stays 404.
//!
//! Guards go on the routers they guard (the version nests), not on everything behind a test of
//! the path: no layer decides by matching path strings. `Router::layer` wraps every route
//! *inside* the router, so `MatchedPath` is known to every layer for the route label, and the
//! fallback is wrapped too (unmatched requests are logged and counted as `<unmatched>`).
//! `Router::layer` clones a layer per route, so the state the guards share is built once here.
//! The ops listener gets [`observe`] in its ops mode: a plain span that is never exported, a
//! DEBUG access log, no metrics.
//!
//! On the hot path the layers are hand-written services: one boxed future for [`observe`], one
//! for [`guard`] when the request goes through (refusals are answered at once), none for the
//! others.

pub mod access_log;
pub mod auth;
pub mod circuit_breaker;
pub mod deprecation;
pub mod guard;
pub mod http_metrics;
pub mod observe;
pub mod rate_limit;
pub mod request_id;
pub mod trace;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::Response;
use tower::util::MapResponseLayer;

use crate::auth::keys::KeyStore;
use crate::config::{LimitBackend, Settings};
use crate::resilience::breaker::Breaker;
use crate::resilience::client_ip::ClientIp;
use crate::resilience::in_flight::Slots;
use crate::resilience::limiter::Limiter;
use crate::resilience::redis_limiter::RedisLimiter;
use crate::state::Health;

/// The layers of both listeners, with the state they share: one per process.
#[derive(Debug, Clone)]
pub struct Stack {
    /// What the guards share (rate limiter, breaker, in-flight slots).
    pub guards: Arc<guard::Guards>,
    /// The API keys, unless `auth.enabled = false`.
    pub keys: Option<Arc<KeyStore>>,
    observe: observe::Observe,
    ops: observe::Observe,
    v1: Arc<deprecation::V1Headers>,
    body_limit: usize,
}

impl Stack {
    /// The layers the settings ask for. Build it inside the Tokio runtime, after the metrics
    /// recorder is installed (counters bind to it). Fails only on a Redis URL its client
    /// refuses.
    pub fn new(settings: &Settings, health: Arc<Health>) -> Result<Self, String> {
        let rl = &settings.rate_limit;
        let rate_limit = rl.enabled.then(|| -> Result<_, String> {
            let buckets = match rl.backend {
                LimitBackend::Local => rate_limit::Buckets::Local(Limiter::new(&rl.policies)),
                LimitBackend::Redis => rate_limit::Buckets::Redis(Box::new(RedisLimiter::new(
                    &rl.policies,
                    &rl.redis,
                )?)),
            };
            Ok(rate_limit::RateLimit::new(
                buckets,
                ClientIp::new(settings.server.trusted_proxies.clone(), rl.ipv6_prefix),
                rl.enforce,
            ))
        });
        let rate_limit = rate_limit.transpose()?;
        let cb = &settings.circuit_breaker;
        let breaker: Option<Arc<Breaker>> = cb
            .enabled
            .then(|| Breaker::new(cb.config.clone(), Box::new(circuit_breaker::register())));
        let keys = settings
            .auth
            .enabled
            .then(|| Arc::new(KeyStore::new(settings.auth.keys.clone())));
        let access = if settings.log.access {
            access_log::Level::Info
        } else {
            access_log::Level::Off
        };
        let metrics = settings
            .telemetry
            .http_metrics
            .then(http_metrics::HttpMetrics::new);
        let exported = crate::context::exporting();
        Ok(Self {
            guards: Arc::new(guard::Guards {
                rate_limit,
                breaker,
                in_flight: Slots::new(settings.server.max_in_flight as usize),
                timeout: settings.server.request_timeout,
                health: health.clone(),
            }),
            observe: observe::Observe::api(health.clone(), keys.clone(), access, metrics, exported),
            ops: observe::Observe::ops(health),
            keys,
            v1: Arc::new(deprecation::V1Headers::new(&settings.api)),
            body_limit: settings.server.body_limit,
        })
    }

    /// A version's order routes behind the guards (and, with authentication on, the
    /// authorize layer on each matched route).
    pub fn guarded<S: Clone + Send + Sync + 'static>(&self, routes: Router<S>) -> Router<S> {
        let routes = match &self.keys {
            Some(_) => routes.route_layer(auth::Authorize),
            None => routes,
        };
        routes
            .layer(DefaultBodyLimit::max(self.body_limit))
            .layer(guard::Guard(self.guards.clone()))
    }

    /// A deprecated version's routes: every response announces it.
    pub fn deprecated<S: Clone + Send + Sync + 'static>(&self, routes: Router<S>) -> Router<S> {
        let v1 = self.v1.clone();
        routes.layer(MapResponseLayer::new(move |res: Response| v1.announce(res)))
    }

    /// The API listener's router in its outer layer.
    pub fn api(&self, router: Router) -> Router {
        router.layer(self.observe.clone())
    }

    /// The ops listener's router (probes, metrics) in its minimal stack: its outer layer, and
    /// a panic turned into a 500 (a cold path: tower-http's layer will do).
    pub fn ops(&self, router: Router) -> Router {
        router
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                guard::panic_response,
            ))
            .layer(self.ops.clone())
    }
}
