//! The outer layer of both listeners, one service for what used to be six layers that each read
//! the clock, the route and the status: in this order, outermost first,
//!
//! 1. drain: once shutdown has begun, responses carry `Connection: close`;
//! 2. request id: accept or mint `x-request-id`, echo it, put it in the request's context;
//! 3. trace: the server span (W3C `traceparent` in and out); every later log line of the request
//!    carries its `trace_id`, `span_id` and the request id;
//! 4. identify (with API keys): a valid bearer key puts the caller's `Principal` into the
//!    request; never refuses;
//! 5. access log: one event per request with the final status (including what inner layers
//!    answered: 413, 429, 503, 504, panics turned into 500) and the caller's key id;
//! 6. HTTP metrics: counted here, outside every refusing layer, so their statuses are counted.
//!
//! The ops listener runs the same service in its ops mode: a plain span that is never exported,
//! access events at DEBUG, no metrics and no keys.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::http::header::{self, USER_AGENT};
use axum::response::Response;
use futures_util::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use super::Live;
use super::access_log::{Entry, Level, UNMATCHED};
use super::http_metrics::HttpMetrics;
use super::{request_id, trace};
use crate::auth::{Presented, presented};
use crate::context::{OPS_TARGET, RequestContext};
use crate::error::Failure;
use crate::state::Health;
use crate::telemetry::logs::direct::SpanFields;
use crate::telemetry::metrics::method_label;

/// What the layer knows, shared by every route it wraps.
#[derive(Debug)]
struct Shared {
    health: Arc<Health>,
    /// The reloadable settings (API listener only): read once per request, and put into it.
    live: Option<Arc<ArcSwap<Live>>>,
    access: Level,
    metrics: Option<Arc<HttpMetrics>>,
    /// API requests get a server span (exported when trace export is on); ops requests a plain
    /// one.
    api: bool,
}

/// The layer: see the module docs.
#[derive(Debug, Clone)]
pub struct Observe(Arc<Shared>);

impl Observe {
    /// For the API listener: `live` holds the keys that identify callers, `access` is the
    /// access events' level, `metrics` counts requests.
    pub fn api(
        health: Arc<Health>,
        live: Arc<ArcSwap<Live>>,
        access: Level,
        metrics: Option<Arc<HttpMetrics>>,
    ) -> Self {
        Self(Arc::new(Shared {
            health,
            live: Some(live),
            access,
            metrics,
            api: true,
        }))
    }

    /// For the ops listener: probes and scrapes make no traces, metrics or INFO lines.
    pub fn ops(health: Arc<Health>) -> Self {
        Self(Arc::new(Shared {
            health,
            live: None,
            access: Level::Debug,
            metrics: None,
            api: false,
        }))
    }
}

impl<S> Layer<S> for Observe {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            shared: self.0.clone(),
        }
    }
}

/// The service of [`Observe`].
#[derive(Debug, Clone)]
pub struct ObserveService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for ObserveService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        // The service that was polled ready serves this request; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();

        let id = request_id::accept_or_mint(req.headers().get(&request_id::HEADER));
        let route = req.extensions().get::<MatchedPath>().cloned();
        let route_str = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
        let live = shared.live.as_ref().map(|live| live.load_full());
        let principal = live
            .as_ref()
            .and_then(|live| live.keys.as_ref())
            .and_then(|keys| match presented(req.headers()) {
                Presented::Token(token) => keys.find(token),
                _ => None,
            });
        let key_id = principal.as_ref().map(|(_, p)| p.key_id.clone());
        if let Some((tag, principal)) = principal {
            let extensions = req.extensions_mut();
            extensions.insert(tag);
            extensions.insert(principal);
        }
        if let Some(live) = live {
            req.extensions_mut().insert(live);
        }
        let (span, mut trace) = if shared.api {
            let trace = trace::start(&req, route_str, &id);
            (trace.span.clone(), Some(trace))
        } else {
            let span = tracing::debug_span!(
                target: OPS_TARGET,
                "ops request",
                request_id = id.to_str().unwrap_or_default()
            );
            (span, None)
        };
        let entry = (shared.access != Level::Off).then(|| {
            Entry::new(
                req.method(),
                req.uri(),
                req.extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(peer)| peer.ip()),
                req.headers().get(USER_AGENT),
                key_id,
            )
        });
        let method = method_label(req.method());
        let in_flight = shared.metrics.as_ref().map(HttpMetrics::in_flight);
        let context = RequestContext {
            request_id: id.clone(),
            trace_id: trace.as_ref().map(|t| t.trace_id),
            exported_span: trace.as_ref().and_then(trace::Trace::exported_span),
        };
        let served = context.scope(inner.call(req).instrument(span.clone()));

        Box::pin(async move {
            let Ok(mut res) = served.await;
            let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            if let Some(trace) = &mut trace {
                trace::finish(trace, &mut res);
            }
            let elapsed = started.elapsed();
            if let Some(metrics) = &shared.metrics {
                metrics.record(route, method, res.status().as_u16(), elapsed.as_secs_f64());
            }
            drop(in_flight);
            if let Some(failure) = res.extensions_mut().remove::<Failure>() {
                span.in_scope(|| failure.log());
            }
            if let Some(entry) = entry {
                let fields = SpanFields {
                    request_id: id.to_str().unwrap_or_default(),
                    ids: trace.as_ref().map(|t| (t.trace_id, t.span_id)),
                };
                entry.log(shared.access, &span, fields, route, res.status(), elapsed);
            }
            let headers = res.headers_mut();
            headers.insert(request_id::HEADER.clone(), id);
            if shared.health.is_draining() {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(res)
        })
    }
}
