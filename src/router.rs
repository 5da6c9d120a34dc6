//! Routes only, no layers: the API listener's router and the ops listener's router.

use axum::Router;

use crate::api;
use crate::error::{method_not_allowed, not_found};
use crate::state::AppState;

/// `/api/v1/...`, `/api/v2/...` plus liveness, with problem+json 404 and 405 fallbacks.
/// `secured`: whether the API asks for API keys (its documents say so, or do not).
pub fn api(state: AppState, secured: bool) -> Router {
    Router::new()
        .nest("/api/v1", api::v1::router(secured))
        .nest("/api/v2", api::v2::router(secured))
        .merge(api::ops::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The probes and `/metrics` for the ops listener.
pub fn ops(state: AppState) -> Router {
    api::ops::ops_router()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}
