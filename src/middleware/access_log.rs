//! One access event per request: method, matched route, path, status, latency, client, agent,
//! and the id of the API key that authenticated it. Never headers like Authorization or Cookie
//! (nor the key itself), never bodies. The event is written inside the request's span, so the
//! line carries its request id, trace id and span id.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode, Uri};

/// The route label for requests that matched no route.
pub const UNMATCHED: &str = "<unmatched>";

/// The level access events are logged at: INFO for the API, DEBUG for probes and scrapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// API traffic.
    Info,
    /// Ops traffic.
    Debug,
    /// Not logged (`log.access = false`).
    Off,
}

/// What an access event says of a request, taken before it is served (as reference-counted or
/// `Copy` handles: nothing is formatted unless the line is written).
#[derive(Debug)]
pub struct Entry {
    method: Method,
    uri: Uri,
    client_ip: Option<IpAddr>,
    user_agent: Option<HeaderValue>,
    api_key_id: Option<Arc<str>>,
}

impl Entry {
    /// The request's side of the event.
    pub fn new(
        method: &Method,
        uri: &Uri,
        client_ip: Option<IpAddr>,
        user_agent: Option<&HeaderValue>,
        api_key_id: Option<Arc<str>>,
    ) -> Self {
        Self {
            method: method.clone(),
            uri: uri.clone(),
            client_ip,
            user_agent: user_agent.cloned(),
            api_key_id,
        }
    }

    /// Writes the event at `level` (in the current span).
    pub fn log(&self, level: Level, route: &str, status: StatusCode, elapsed: Duration) {
        let latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        macro_rules! event {
            ($lvl:ident) => {
                tracing::$lvl!(
                    target: "access",
                    method = self.method.as_str(),
                    route,
                    path = self.uri.path(),
                    status = status.as_u16(),
                    latency_ms,
                    client_ip = self.client_ip.map(tracing::field::display),
                    user_agent = self
                        .user_agent
                        .as_ref()
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default(),
                    api_key_id = self.api_key_id.as_deref(),
                    "request completed"
                )
            };
        }
        match level {
            Level::Info => event!(info),
            Level::Debug => event!(debug),
            Level::Off => {}
        }
    }
}
