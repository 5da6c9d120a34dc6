//! THE ordered middleware stack, written once.
//!
//! API listener, outermost first:
//! 0. drain: once shutdown has begun, responses carry `Connection: close`.
//! 1. request id: accept or mint `x-request-id`, echo it. Outermost so every error body has it.
//! 2. trace: the server span (W3C `traceparent` in and out); every later log line carries its
//!    `trace_id`, `span_id` and the request id.
//! 3. identify (with `auth.enabled`): a valid bearer key puts the caller's `Principal` into the
//!    request; never refuses. Before the access log and the rate limiter, which both use it.
//! 4. access log: one INFO event per request with the final status, including responses that
//!    inner layers produced (413, panics turned into 500), and the caller's `api_key_id`.
//! 5. HTTP metrics: counted outside every refusing layer, so their statuses are counted too.
//! 6. deprecation: `/api/v1` responses get `Deprecation`, `Sunset` and a successor `Link`.
//!    Outside catch panic, timeout and every refusing layer, so that 500, 504, 429, 503, 413,
//!    401 and 403 from v1 routes announce it as well as the handlers' own answers; inside
//!    request id and metrics, which need no such knowledge.
//! 7. catch panic: a panicking handler becomes a 500 problem, logged, and the connection lives.
//! 8. timeout: past `server.request_timeout`, 504; outside the guards so it bounds them too.
//! 9. rate limit: cheapest refusal first (429), before any work or any in-flight slot is spent;
//!    keyed by API key when the request has a valid one, else by client address.
//! 10. load shed: at `server.max_in_flight`, 503 at once; admitted requests hold a slot (and
//!     a keyed create that outlives its request keeps it).
//! 11. store ready: until the schema is current, `/api` requests get 503 `not-ready` at once.
//!     Outside the breaker, which must not count them.
//! 12. circuit breaker: around the database-backed `/api` routes only; while open, 503 without
//!     touching the database. Counts only what reached the store.
//! 13. body limit: extractors refuse bodies over `server.body_limit` with 413.
//! 14. authorize (with `auth.enabled`, a `route_layer`): `/api` routes without a valid key get
//!     401, without the method's scope 403. Only matched routes are wrapped, so an unknown path
//!     stays 404 rather than telling strangers to authenticate.
//!
//! Layers go on with `Router::layer`, which wraps every route *inside* the router, so
//! `MatchedPath` is available for the route label; the fallback is wrapped too, so unmatched
//! requests are logged as `<unmatched>`. The ops listener gets request id, a plain (unexported)
//! span and a DEBUG access log: probes and scrapes make no traces, metrics or INFO lines.

pub mod access_log;
pub mod auth;
pub mod circuit_breaker;
pub mod deprecation;
pub mod drain;
pub mod http_metrics;
pub mod load_shed;
pub mod rate_limit;
pub mod request_id;
pub mod store_ready;
pub mod timeout;
pub mod trace;

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower::util::option_layer;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::keys::KeyStore;
use crate::config::{ApiSettings, ServerSettings, Settings};
use crate::error::ApiError;
use crate::resilience::breaker::Breaker;
use crate::resilience::client_ip::ClientIp;
use crate::resilience::in_flight::Slots;
use crate::resilience::limiter::Limiter;
use crate::state::Health;

/// The shared state of the guarding layers: one instance per process, shared by every route
/// (`Router::layer` clones layers per route, so state lives behind `Arc`s built once here).
#[derive(Debug, Clone)]
pub struct Guards {
    /// Token buckets, unless `rate_limit.enabled = false`.
    pub rate_limit: Option<Arc<rate_limit::RateLimit>>,
    /// The database breaker, unless `circuit_breaker.enabled = false`.
    pub breaker: Option<Arc<Breaker>>,
    /// In-flight slots.
    pub in_flight: Slots,
    /// The API keys, unless `auth.enabled = false`.
    pub auth: Option<Arc<KeyStore>>,
}

impl Guards {
    /// Builds the guards the settings ask for.
    pub fn new(settings: &Settings) -> Self {
        let rl = &settings.rate_limit;
        let rate_limit = rl.enabled.then(|| {
            Arc::new(rate_limit::RateLimit::new(
                Limiter::new(&rl.policies),
                ClientIp::new(settings.server.trusted_proxies.clone(), rl.ipv6_prefix),
                rl.enforce,
            ))
        });
        let cb = &settings.circuit_breaker;
        let breaker = cb.enabled.then(|| {
            circuit_breaker::MetricsObserver::register();
            Breaker::new(
                cb.config.clone(),
                Box::new(circuit_breaker::MetricsObserver),
            )
        });
        let auth = settings
            .auth
            .enabled
            .then(|| Arc::new(KeyStore::new(settings.auth.keys.clone())));
        Self {
            rate_limit,
            breaker,
            auth,
            in_flight: Slots::new(settings.server.max_in_flight as usize),
        }
    }
}

/// Which optional observability layers run (all, normally; switched off to measure their cost).
#[derive(Debug, Clone, Copy)]
pub struct Optional {
    /// The access log layer.
    pub access_log: bool,
    /// The HTTP metrics layer.
    pub http_metrics: bool,
}

impl Optional {
    /// From the settings: `log.access` and `telemetry.http_metrics`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            access_log: settings.log.access,
            http_metrics: settings.telemetry.http_metrics,
        }
    }
}

/// Wraps the API router in the full stack.
pub fn api(
    router: Router,
    cfg: &ServerSettings,
    versions: &ApiSettings,
    guards: &Guards,
    optional: Optional,
    health: Arc<Health>,
) -> Router {
    let router = match &guards.auth {
        Some(_) => router.route_layer(axum::middleware::from_fn(auth::authorize)),
        None => router,
    };
    router.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(
                health.clone(),
                drain::layer,
            ))
            .layer(axum::middleware::from_fn(request_id::layer))
            .layer(axum::middleware::from_fn(trace::layer))
            .layer(option_layer(guards.auth.clone().map(|keys| {
                axum::middleware::from_fn_with_state(keys, auth::identify)
            })))
            .layer(axum::middleware::from_fn_with_state(
                if optional.access_log {
                    access_log::Level::Info
                } else {
                    access_log::Level::Off
                },
                access_log::layer,
            ))
            .layer(axum::middleware::from_fn_with_state(
                optional.http_metrics.then(http_metrics::HttpMetrics::new),
                http_metrics::layer,
            ))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(deprecation::V1Headers::new(versions)),
                deprecation::layer,
            ))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(axum::middleware::from_fn_with_state(
                cfg.request_timeout,
                timeout::layer,
            ))
            .layer(option_layer(guards.rate_limit.clone().map(|rl| {
                axum::middleware::from_fn_with_state(rl, rate_limit::layer)
            })))
            .layer(axum::middleware::from_fn_with_state(
                guards.in_flight.clone(),
                load_shed::layer,
            ))
            .layer(axum::middleware::from_fn_with_state(
                health.clone(),
                store_ready::layer,
            ))
            .layer(option_layer(guards.breaker.clone().map(|b| {
                axum::middleware::from_fn_with_state(b, circuit_breaker::layer)
            })))
            .layer(DefaultBodyLimit::max(cfg.body_limit)),
    )
}

fn matched(req: &Request) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str)
}

/// Probes are never limited, shed or broken.
pub fn is_probe(req: &Request) -> bool {
    matched(req) == "/healthz"
}

/// The database-backed, versioned API routes. The OpenAPI documents live under `/api` but never
/// touch the database: counting them would dilute the breaker's failure rate, and refusing
/// them while it is open would hide the contract for no gain.
pub fn is_api(req: &Request) -> bool {
    is_api_route(matched(req))
}

/// [`is_api`] by route template: `/api/...` but not a version's OpenAPI document.
pub fn is_api_route(route: &str) -> bool {
    route.starts_with("/api/") && !route.ends_with(crate::api::openapi::DOCUMENT_NAME)
}

/// Wraps the ops router (probes, metrics) in the minimal stack.
pub fn ops(router: Router, health: Arc<Health>) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(health, drain::layer))
            .layer(axum::middleware::from_fn(request_id::layer))
            .layer(axum::middleware::from_fn(request_id::ops_span))
            .layer(axum::middleware::from_fn_with_state(
                access_log::Level::Debug,
                access_log::layer,
            ))
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into());
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}
