//! `/api/v1`: orders with decimal-string money and offset pagination.

pub mod openapi;
pub mod orders;
pub mod requests;
pub mod wire;

use axum::Router;

use crate::state::AppState;

/// Where the version's routes live.
pub const PREFIX: &str = "/api/v1";

/// The v1 order routes under [`PREFIX`], to be guarded. (Full paths, not a nest: a nested
/// router costs every request a rewritten URI, an extension and one more boxed service.)
pub fn routes() -> Router<AppState> {
    orders::router()
}

/// The public OpenAPI document of v1, served at `/api/v1/openapi.json` outside the guards
/// (describing API-key security only when `secured`, as the API is served).
pub fn document(secured: bool) -> Router<AppState> {
    Router::new().route(
        &format!("{PREFIX}{}", crate::api::openapi::DOCUMENT_NAME),
        crate::api::openapi::route(move || openapi::document(secured)),
    )
}
