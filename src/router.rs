//! Routes only: each version's routes (guarded order routes, public documents), liveness, and the
//! ops listener's router. The layers come from [`crate::middleware::Stack`].

use axum::Router;

use crate::api;
use crate::error::{method_not_allowed, not_found};
use crate::middleware::Stack;
use crate::state::AppState;

/// `/api/v1/...`, `/api/v2/...` plus liveness, with problem+json 404 and 405 fallbacks, in
/// `stack`'s layers. `secured`: whether the API asks for API keys (its documents say so).
pub fn api(state: AppState, stack: &Stack, secured: bool) -> Router {
    // A version's 405s are set here, inside its deprecation layer, so that v1's announce it.
    let v1 = stack.deprecated(
        stack
            .guarded(api::v1::routes())
            .merge(api::v1::document(secured))
            .method_not_allowed_fallback(method_not_allowed),
    );
    let v2 = stack
        .guarded(api::v2::routes())
        .merge(api::v2::document(secured))
        .method_not_allowed_fallback(method_not_allowed);
    stack.api(
        Router::new()
            .merge(v1)
            .merge(v2)
            .merge(api::ops::router())
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state),
    )
}

/// The probes and `/metrics` for the ops listener, in `stack`'s ops layers.
pub fn ops(state: AppState, stack: &Stack, admin: api::admin::Admin) -> Router {
    stack.ops(
        api::ops::ops_router()
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state)
            .merge(api::admin::router(admin)),
    )
}
