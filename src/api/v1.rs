//! `/api/v1`: orders with decimal-string money and offset pagination.

pub mod orders;

use axum::Router;

use crate::state::AppState;

/// The v1 routes, to be nested under `/api/v1`.
pub fn router() -> Router<AppState> {
    orders::router()
}
