//! While draining, every response says `Connection: close`: clients holding keep-alive
//! connections to this pod move to another one during the drain delay, instead of finding their
//! connection closed under them when the listeners stop.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::Health;

/// Middleware: see the module docs.
pub async fn layer(State(health): State<Arc<Health>>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    if health.is_draining() {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
