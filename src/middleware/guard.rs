//! The guards of the versioned API routes, one service for what used to be six layers, in
//! this order, outermost first:
//!
//! 1. catch panic: a panicking handler becomes a 500 problem, logged, and the connection lives;
//! 2. timeout: past `server.request_timeout`, 504; it bounds everything inside it;
//! 3. rate limit: the cheapest refusal first (429), before any work or in-flight slot is
//!    spent; every response carries the `RateLimit` fields. With the buckets in Redis the
//!    check is a wait of its own, before the request's timeout starts, bounded by
//!    `rate_limit.redis.timeout` (it runs no handler code, so nothing there can panic);
//! 4. load shed: at `server.max_in_flight`, 503 at once; an admitted request holds a slot (and
//!    a keyed create that outlives its request keeps it);
//! 5. store ready: until the schema is current, 503 `not-ready` at once (outside the breaker,
//!    which must not count it);
//! 6. circuit breaker: while open, 503 without touching the database; it counts only what
//!    reached the store ([`Reach`]): a failure on the database side, or a timeout while the
//!    request was at the database; a request that never reached it, or that its client
//!    abandoned, counts for nothing.
//!
//! The refusals before the handler are answered at once, without a future of their own.

use std::any::Any;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Either, Ready, ready};
use metrics::counter;
use tower::{Layer, Service};

use super::Live;
use super::circuit_breaker::Call;
use super::rate_limit::{Check, Checked};
use crate::error::ApiError;
use crate::resilience::breaker::Breaker;
use crate::resilience::in_flight::Slot;
use crate::state::Health;
use crate::store::reach::Reach;
use crate::telemetry::metrics::HTTP_SHED;

/// What the guards share across every route they wrap: one instance per process.
#[derive(Debug)]
pub struct Guards {
    /// The database breaker, unless `circuit_breaker.enabled = false` (reconfigured in place
    /// by a reload).
    pub breaker: Option<Arc<Breaker>>,
    /// Whether the store is ready.
    pub health: Arc<Health>,
    /// The reloadable settings, for a request that did not come through `observe` (which puts
    /// the snapshot it read into the request).
    pub live: Arc<ArcSwap<Live>>,
}

/// The layer: see the module docs.
#[derive(Debug, Clone)]
pub struct Guard(pub Arc<Guards>);

impl<S> Layer<S> for Guard {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            guards: self.0.clone(),
        }
    }
}

/// The service of [`Guard`].
#[derive(Debug, Clone)]
pub struct GuardService<S> {
    inner: S,
    guards: Arc<Guards>,
}

impl<S> Service<Request> for GuardService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Ready<Result<Response, Infallible>>,
        BoxFuture<'static, Result<Response, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // One snapshot of the reloadable settings for the whole request.
        let live = Live::of(&req, &self.guards.live);
        match live.rate_limit.as_ref().map(|rl| rl.check(&req)) {
            None => self.admit(req, live, None),
            Some(Check::Now(limited)) => self.admit(req, live, limited),
            // Buckets in Redis: the rest waits for its answer.
            Some(Check::Ask(client, write)) => {
                let clone = self.inner.clone();
                let mut this = Self {
                    inner: std::mem::replace(&mut self.inner, clone),
                    guards: self.guards.clone(),
                };
                Either::Right(Box::pin(async move {
                    let limited = match &live.rate_limit {
                        Some(rl) => Some(rl.ask(client, write).await),
                        None => None,
                    };
                    match this.admit(req, live, limited) {
                        Either::Left(refused) => refused.await,
                        Either::Right(served) => served.await,
                    }
                }))
            }
        }
    }
}

impl<S> GuardService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// Everything after the rate limit, with its verdict.
    fn admit(
        &mut self,
        mut req: Request,
        live: Arc<Live>,
        limited: Option<Checked>,
    ) -> <Self as Service<Request>>::Future {
        let g = &self.guards;
        let refuse = |res: Response| Either::Left(ready(Ok(res)));
        if let (Some(rl), Some(checked)) = (&live.rate_limit, &limited)
            && let Some(refusal) = rl.refusal(checked)
        {
            return refuse(refusal);
        }
        let annotate = |mut res: Response| {
            if let (Some(rl), Some(checked)) = (&live.rate_limit, &limited) {
                rl.annotate(checked, &mut res);
            }
            res
        };
        let Some(slot) = live.in_flight.try_take() else {
            counter!(HTTP_SHED).increment(1);
            return refuse(annotate(ApiError::Overloaded.into_response()));
        };
        if !g.health.schema_ready() {
            return refuse(annotate(ApiError::NotReady.into_response()));
        }
        let call = match g.breaker.as_ref().map(Call::admit) {
            Some(Err(rejected)) => {
                return refuse(annotate(
                    ApiError::CircuitOpen {
                        retry_after: rejected.retry_after,
                    }
                    .into_response(),
                ));
            }
            Some(Ok(call)) => Some(call),
            None => None,
        };
        req.extensions_mut().insert::<Slot>(slot.clone());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let served: BoxFuture<'static, Result<Response, Infallible>> = Box::pin(async move {
            // Extractors drop the request's extensions before the handler is done: the slot
            // is held here for as long as the request is served.
            let _slot = slot;
            let reach = Reach::new();
            let served = Reach::scope(
                Some(reach.clone()),
                AssertUnwindSafe(inner.call(req)).catch_unwind(),
            );
            let res = match tokio::time::timeout(live.timeout, served).await {
                Ok(Ok(Ok(res))) => {
                    if let Some(call) = call {
                        call.finish(&reach);
                    }
                    res
                }
                Ok(Err(panic)) => {
                    if let Some(call) = call {
                        call.finish(&reach);
                    }
                    panic_response(panic)
                }
                Err(_elapsed) => {
                    // The handler was dropped at the deadline: a failure if it was at the
                    // database then.
                    if let Some(call) = call {
                        call.timed_out(&reach);
                    }
                    ApiError::Timeout.into_response()
                }
            };
            let mut res = res;
            if let (Some(rl), Some(checked)) = (&live.rate_limit, &limited) {
                rl.annotate(checked, &mut res);
            }
            Ok(res)
        });
        Either::Right(served)
    }
}

/// The 500 of a panicking handler (logged with its message, which is never sent).
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(std::string::ToString::to_string)
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into());
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}
