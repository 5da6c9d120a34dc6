//! `/api/v2`: orders with money as `{"amount_minor", "currency"}`, cursor pagination that no
//! concurrent insert can disturb, created-at filters, and conditional updates (`ETag` on reads,
//! `If-Match` required on writes).

pub mod openapi;
pub mod orders;
pub mod wire;

use std::sync::OnceLock;

use axum::Router;
use axum::body::Bytes;

use crate::state::AppState;

/// The v2 routes, to be nested under `/api/v2`, with the public OpenAPI document.
pub fn router() -> Router<AppState> {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    orders::router().route(
        crate::api::openapi::DOCUMENT_NAME,
        crate::api::openapi::route(&DOCUMENT, openapi::document),
    )
}
