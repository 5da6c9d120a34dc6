//! API keys in two layers. `identify` (outer, never refuses) puts the caller's [`Principal`]
//! and [`crate::auth::KeyIndex`] into the request when its bearer key matches, so the access
//! log, the rate limiter and handlers all see who is calling. `authorize` (a `route_layer`, so
//! unknown paths stay 404) answers 401 or 403 on the `/api` routes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::matched;
use crate::auth::keys::KeyStore;
use crate::auth::{Presented, Principal, Scope, presented};
use crate::error::ApiError;

/// Middleware: finds the presented key and records who the caller is.
pub async fn identify(State(keys): State<Arc<KeyStore>>, mut req: Request, next: Next) -> Response {
    if let Presented::Token(token) = presented(req.headers())
        && let Some((index, principal)) = keys.find(token)
    {
        let extensions = req.extensions_mut();
        extensions.insert(index);
        extensions.insert(principal);
    }
    next.run(req).await
}

/// Middleware: refuses API requests without a valid key (401) or without the scope their
/// method needs (403).
pub async fn authorize(req: Request, next: Next) -> Response {
    if !needs_key(matched(&req)) {
        return next.run(req).await;
    }
    let scope = Scope::for_method(req.method());
    let refusal = match req.extensions().get::<Principal>() {
        Some(p) if p.scopes.contains(scope) => None,
        Some(_) => Some(ApiError::InsufficientScope {
            scope: scope.as_str(),
        }),
        None => Some(match presented(req.headers()) {
            Presented::Nothing => ApiError::Unauthenticated,
            Presented::Malformed | Presented::Token(_) => ApiError::InvalidToken,
        }),
    };
    match refusal {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

/// The versioned API routes need a key; their OpenAPI documents, like the probes, do not
/// (clients read the document to learn how to authenticate).
fn needs_key(route: &str) -> bool {
    super::is_api_route(route)
}

#[cfg(test)]
mod tests {
    use super::needs_key;

    #[test]
    fn only_versioned_api_routes_need_a_key() {
        for route in ["/api/v1/orders", "/api/v1/orders/{id}", "/api/v2/orders"] {
            assert!(needs_key(route), "{route}");
        }
        for route in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/openapi.json",
            "/api/v2/openapi.json",
            "",
        ] {
            assert!(!needs_key(route), "{route}");
        }
    }
}
