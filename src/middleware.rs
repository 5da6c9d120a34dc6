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
//! 3. deprecation (the `/api/v1` routes): `Deprecation`, `Sunset` and a successor `Link` on every
//!    v1 response, including the guards' refusals and panics turned into 500.
//! 4. [`guard`] (each version's order routes, one service): catch panic, timeout, rate limit,
//!    load shed, store ready, circuit breaker, in that order.
//! 5. body limit: extractors refuse bodies over `server.body_limit` with 413.
//! 6. [`auth`] (a `route_layer`, with authentication on): 401 without a valid key, 403 without
//!    the method's scope. Only matched routes are wrapped, so an unknown path stays 404.
//!
//! Guards go on the routers they guard (each version's routes), not on everything behind a test of
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
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::auth::keys::KeyStore;
use crate::config::{LimitBackend, Settings};
use crate::resilience::breaker::Breaker;
use crate::resilience::client_ip::ClientIp;
use crate::resilience::in_flight::Slots;
use crate::resilience::limiter::Limiter;
use crate::resilience::redis_limiter::RedisLimiter;
use crate::state::Health;

/// What a reload can change in the stack, as one value: `observe` reads it once per request
/// and puts it into the request, so every layer of that request sees the same settings.
#[derive(Debug)]
pub struct Live {
    /// Token buckets, unless `rate_limit.enabled = false`.
    pub rate_limit: Option<Arc<rate_limit::RateLimit>>,
    /// In-flight slots (`server.max_in_flight`).
    pub in_flight: Slots,
    /// `server.request_timeout`.
    pub timeout: Duration,
    /// The API keys, unless `auth.enabled = false`.
    pub keys: Option<Arc<KeyStore>>,
    /// v1's deprecation headers (`[api]`).
    pub v1: deprecation::V1Headers,
}

impl Live {
    /// The snapshot `req` is served with: the one `observe` put into it, or (for a request
    /// that did not pass `observe`) the one in force.
    pub fn of(req: &axum::extract::Request, current: &ArcSwap<Live>) -> Arc<Live> {
        match req.extensions().get::<Arc<Live>>() {
            Some(live) => live.clone(),
            None => current.load_full(),
        }
    }

    /// The snapshot `settings` ask for. `previous` (the running snapshot and the settings it
    /// was built from) lends what did not change: the rate limiter's buckets when its
    /// policies and backend are the same, and the in-flight slots when their number is.
    fn build(settings: &Settings, previous: Option<(&Settings, &Live)>) -> Result<Self, String> {
        let rl = &settings.rate_limit;
        let clients = || ClientIp::new(settings.server.trusted_proxies.clone(), rl.ipv6_prefix);
        let kept_buckets = previous.and_then(|(old, live)| {
            let o = &old.rate_limit;
            let same = o.backend == rl.backend
                && o.policies == rl.policies
                && o.redis == rl.redis
                && o.ipv6_prefix == rl.ipv6_prefix;
            live.rate_limit.as_ref().filter(|_| same).cloned()
        });
        let rate_limit = match (rl.enabled, kept_buckets) {
            (false, _) => None,
            (true, Some(old)) => Some(Arc::new(old.reconfigured(clients(), rl.enforce))),
            (true, None) => {
                let buckets = match rl.backend {
                    LimitBackend::Local => rate_limit::Buckets::Local(Limiter::new(&rl.policies)),
                    LimitBackend::Redis => rate_limit::Buckets::Redis(Box::new(RedisLimiter::new(
                        &rl.policies,
                        &rl.redis,
                    )?)),
                };
                Some(Arc::new(rate_limit::RateLimit::new(
                    buckets,
                    clients(),
                    rl.enforce,
                )))
            }
        };
        let in_flight = match previous {
            Some((old, live)) if old.server.max_in_flight == settings.server.max_in_flight => {
                live.in_flight.clone()
            }
            _ => Slots::new(settings.server.max_in_flight as usize),
        };
        Ok(Self {
            rate_limit,
            in_flight,
            timeout: settings.server.request_timeout,
            keys: settings
                .auth
                .enabled
                .then(|| Arc::new(KeyStore::new(settings.auth.keys.clone()))),
            v1: deprecation::V1Headers::new(&settings.api),
        })
    }
}

/// The layers of both listeners, with the state they share: one per process.
#[derive(Debug, Clone)]
pub struct Stack {
    /// What the guards share (breaker, readiness, the reloadable settings).
    pub guards: Arc<guard::Guards>,
    /// The reloadable settings in force: swapped whole by [`Stack::reload`].
    pub live: Arc<ArcSwap<Live>>,
    auth: bool,
    observe: observe::Observe,
    ops: observe::Observe,
    body_limit: usize,
}

impl Stack {
    /// The layers the settings ask for. Build it inside the Tokio runtime, after the metrics
    /// recorder is installed (counters bind to it). Fails only on a Redis URL its client
    /// refuses.
    pub fn new(settings: &Settings, health: Arc<Health>) -> Result<Self, String> {
        let live = Arc::new(ArcSwap::from_pointee(Live::build(settings, None)?));
        let cb = &settings.circuit_breaker;
        let breaker: Option<Arc<Breaker>> = cb
            .enabled
            .then(|| Breaker::new(cb.config.clone(), Box::new(circuit_breaker::register())));
        let access = if settings.log.access {
            access_log::Level::Info
        } else {
            access_log::Level::Off
        };
        let metrics = settings
            .telemetry
            .http_metrics
            .then(http_metrics::HttpMetrics::new);
        Ok(Self {
            guards: Arc::new(guard::Guards {
                breaker,
                health: health.clone(),
                live: live.clone(),
            }),
            observe: observe::Observe::api(health.clone(), live.clone(), access, metrics),
            ops: observe::Observe::ops(health),
            live,
            auth: settings.auth.enabled,
            body_limit: settings.server.body_limit,
        })
    }

    /// Applies the reloadable part of `new` (the running settings are `old`) at once: one
    /// swap, so a request sees all of the old or all of the new. Buckets and breaker state
    /// survive when their own settings are unchanged. Fails only on a Redis URL its client
    /// refuses, and then changes nothing.
    pub fn reload(&self, old: &Settings, new: &Settings) -> Result<(), String> {
        let current = self.live.load_full();
        let next = Live::build(new, Some((old, &current)))?;
        if let Some(breaker) = &self.guards.breaker
            && old.circuit_breaker.config != new.circuit_breaker.config
        {
            breaker.reconfigure(new.circuit_breaker.config.clone());
        }
        self.live.store(Arc::new(next));
        Ok(())
    }

    /// The API keys in force, unless authentication is off.
    pub fn keys(&self) -> Option<Arc<KeyStore>> {
        self.live.load().keys.clone()
    }

    /// A version's order routes behind the guards (and, with authentication on, the
    /// authorize layer on each matched route).
    pub fn guarded<S: Clone + Send + Sync + 'static>(&self, routes: Router<S>) -> Router<S> {
        let routes = if self.auth {
            routes.route_layer(auth::Authorize)
        } else {
            routes
        };
        // One layer for both: each `Router::layer` boxes every route once more.
        routes.layer(
            tower::ServiceBuilder::new()
                .layer(guard::Guard(self.guards.clone()))
                .layer(DefaultBodyLimit::max(self.body_limit)),
        )
    }

    /// A deprecated version's routes: every response announces it.
    pub fn deprecated<S: Clone + Send + Sync + 'static>(&self, routes: Router<S>) -> Router<S> {
        routes.layer(deprecation::Announce(self.live.clone()))
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
