//! The whole-request budget: past `server.request_timeout` the handler is dropped and the
//! client gets 504. The request carries a [`Deadline`] that is marked expired just before the
//! handler is dropped, so the circuit breaker counts the cancelled call as a timeout (a client
//! that merely disconnects is not counted).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::resilience::breaker::Deadline;

/// Middleware: see the module docs.
pub async fn layer(State(budget): State<Duration>, mut req: Request, next: Next) -> Response {
    let deadline = Deadline::default();
    req.extensions_mut().insert(deadline.clone());
    let call = next.run(req);
    tokio::pin!(call);
    tokio::select! {
        res = &mut call => res,
        () = tokio::time::sleep(budget) => {
            // Before `call` is dropped (at the end of this function).
            deadline.expire();
            ApiError::Timeout.into_response()
        }
    }
}
