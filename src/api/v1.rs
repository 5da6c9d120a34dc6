//! `/api/v1`: orders with decimal-string money and offset pagination.

pub mod openapi;
pub mod orders;

use std::sync::OnceLock;

use axum::Router;
use axum::body::Bytes;

use crate::state::AppState;

/// The v1 routes, to be nested under `/api/v1`, with the public OpenAPI document.
pub fn router() -> Router<AppState> {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    orders::router().route(
        crate::api::openapi::DOCUMENT_NAME,
        crate::api::openapi::route(&DOCUMENT, openapi::document),
    )
}
