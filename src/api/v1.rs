//! `/api/v1`: orders with decimal-string money and offset pagination.

pub mod openapi;
pub mod orders;
pub mod requests;
pub mod wire;

use axum::Router;

use crate::state::AppState;

/// The v1 order routes, to be guarded and nested under `/api/v1`.
pub fn routes() -> Router<AppState> {
    orders::router()
}

/// The public OpenAPI document of v1, served at `/api/v1/openapi.json` outside the guards
/// (describing API-key security only when `secured`, as the API is served).
pub fn document(secured: bool) -> Router<AppState> {
    Router::new().route(
        crate::api::openapi::DOCUMENT_NAME,
        crate::api::openapi::route(move || openapi::document(secured)),
    )
}
