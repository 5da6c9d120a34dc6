//! One access event per request: method, matched route, path, status, latency, client, agent,
//! and the id of the API key that authenticated it. Never headers like Authorization or Cookie
//! (nor the key itself), never bodies.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::USER_AGENT;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::Principal;

/// The route label for requests that matched no route.
pub const UNMATCHED: &str = "<unmatched>";

/// The level access events are logged at: INFO for the API, DEBUG for probes and scrapes.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// API traffic.
    Info,
    /// Ops traffic.
    Debug,
    /// Not logged (`log.access = false`); the layer passes requests straight through.
    Off,
}

macro_rules! access_event {
    ($level:expr, $($fields:tt)*) => {
        match $level {
            Level::Info => tracing::info!(target: "access", $($fields)*),
            Level::Debug => tracing::debug!(target: "access", $($fields)*),
            Level::Off => {}
        }
    };
}

/// Middleware: see the module docs.
pub async fn layer(State(level): State<Level>, req: Request, next: Next) -> Response {
    if matches!(level, Level::Off) {
        return next.run(req).await;
    }
    let start = Instant::now();
    // Reference-counted or Copy handles, not text: nothing is formatted until the line is.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let user_agent = req.headers().get(USER_AGENT).cloned();
    let api_key_id = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.key_id.clone());
    let res = next.run(req).await;
    let latency_ms = (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    access_event!(
        level,
        method = method.as_str(),
        route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
        path = uri.path(),
        status = res.status().as_u16(),
        latency_ms,
        client_ip = %OrEmpty(client_ip),
        user_agent = user_agent.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default(),
        api_key_id = api_key_id.as_deref(),
        "request completed"
    );
    res
}

/// Displays the value, or nothing.
struct OrEmpty<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrEmpty<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}
