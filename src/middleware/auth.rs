//! Authorization of the versioned API routes: a `route_layer` on each version's order routes
//! (so that an unknown path stays 404 rather than telling strangers to authenticate). The
//! caller was identified further out ([`super::observe`]); here a request without a valid key
//! gets 401, one whose key lacks the method's scope 403.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::auth::{Presented, Principal, Scope, presented};
use crate::error::ApiError;

/// The layer: see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Authorize;

impl<S> Layer<S> for Authorize {
    type Service = AuthorizeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthorizeService(inner)
    }
}

/// The service of [`Authorize`].
#[derive(Debug, Clone)]
pub struct AuthorizeService<S>(S);

/// Why a request may not go on, if it may not.
fn refusal(req: &Request) -> Option<ApiError> {
    let scope = Scope::for_method(req.method());
    match req.extensions().get::<Principal>() {
        Some(p) if p.scopes.contains(scope) => None,
        Some(_) => Some(ApiError::InsufficientScope {
            scope: scope.as_str(),
        }),
        None => Some(match presented(req.headers()) {
            Presented::Nothing => ApiError::Unauthenticated,
            Presented::Malformed | Presented::Token(_) => ApiError::InvalidToken,
        }),
    }
}

impl<S> Service<Request> for AuthorizeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match refusal(&req) {
            Some(e) => Either::Left(ready(Ok(e.into_response()))),
            None => Either::Right(self.0.call(req)),
        }
    }
}
