//! One access event per request: method, matched route, path, status, latency, client, agent,
//! and the id of the API key that authenticated it. Never headers like Authorization or Cookie
//! (nor the key itself), never bodies. The line carries the request id, trace id and span id of
//! the request's span: with JSON logs it is written directly, without a dispatch, wherever the
//! log filter allows it whatever the span ([`direct`]); otherwise the event is sent inside that
//! span.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode, Uri};

use crate::telemetry::logs::direct::{self, Gate, SpanFields};
use crate::telemetry::logs::escape::json_string;

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

    /// Writes the event at `level` in the request's `span`, whose fields are `fields`.
    pub fn log(
        &self,
        level: Level,
        span: &tracing::Span,
        fields: SpanFields<'_>,
        route: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let debug = match level {
            Level::Info => false,
            Level::Debug => true,
            Level::Off => return,
        };
        let members = self.members(route, status, elapsed);
        match direct::gate(debug) {
            Gate::Skip => {}
            Gate::Write => direct::write_access(debug, fields, |out| members.write(out)),
            Gate::Dispatch => span.in_scope(|| members.dispatch(debug)),
        }
    }

    /// Appends the JSON line [`Entry::log`] writes when it writes the line itself (DEBUG or
    /// INFO), whatever the log filter says.
    pub fn json_line(
        &self,
        out: &mut Vec<u8>,
        debug: bool,
        fields: SpanFields<'_>,
        route: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let members = self.members(route, status, elapsed);
        direct::access_line(out, debug, fields, |out| members.write(out));
    }

    fn members<'a>(&'a self, route: &'a str, status: StatusCode, elapsed: Duration) -> Members<'a> {
        Members {
            entry: self,
            route,
            status: status.as_u16(),
            latency_ms: (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            user_agent: self
                .user_agent
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        }
    }
}

/// An access event's own fields: recorded through `tracing` ([`Members::dispatch`]), or
/// written as JSON object members into a line written without a dispatch ([`Members::write`]),
/// in the same order and with the same values.
struct Members<'a> {
    entry: &'a Entry,
    route: &'a str,
    status: u16,
    latency_ms: f64,
    user_agent: &'a str,
}

impl Members<'_> {
    /// The event, in the current span.
    fn dispatch(&self, debug: bool) {
        let entry = self.entry;
        macro_rules! event {
            ($lvl:ident) => {
                tracing::$lvl!(
                    target: "access",
                    method = entry.method.as_str(),
                    route = self.route,
                    path = entry.uri.path(),
                    status = self.status,
                    latency_ms = self.latency_ms,
                    client_ip = entry.client_ip.map(tracing::field::display),
                    user_agent = self.user_agent,
                    api_key_id = entry.api_key_id.as_deref(),
                    "request completed"
                )
            };
        }
        if debug {
            event!(debug);
        } else {
            event!(info);
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let entry = self.entry;
        out.extend_from_slice(b"\"method\":");
        json_string(out, entry.method.as_str());
        out.extend_from_slice(b",\"route\":");
        json_string(out, self.route);
        out.extend_from_slice(b",\"path\":");
        json_string(out, entry.uri.path());
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(b",\"latency_ms\":");
        if self.latency_ms.is_finite() {
            out.extend_from_slice(ryu::Buffer::new().format_finite(self.latency_ms).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
        match entry.client_ip {
            Some(IpAddr::V4(ip)) => {
                out.extend_from_slice(b",\"client_ip\":\"");
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
                }
                out.push(b'"');
            }
            Some(ip @ IpAddr::V6(_)) => {
                out.extend_from_slice(b",\"client_ip\":");
                json_string(out, &ip.to_string());
            }
            None => {}
        }
        out.extend_from_slice(b",\"user_agent\":");
        json_string(out, self.user_agent);
        if let Some(id) = &entry.api_key_id {
            out.extend_from_slice(b",\"api_key_id\":");
            json_string(out, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::{Layer as _, SubscriberExt};

    use super::*;
    use crate::context::{SpanId, TraceId};
    use crate::telemetry::logs::direct::access_line;
    use crate::telemetry::logs::{JsonLines, NoFields, SpanFieldsLayer};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The line the JSON formatter writes for the event in a request span like the server's.
    fn dispatched(members: &Members<'_>, debug: bool, span: SpanFields<'_>) -> Vec<u8> {
        let capture = Capture::default();
        let sink = capture.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .fmt_fields(NoFields)
            .event_format(JsonLines)
            .with_writer(move || sink.clone());
        let subscriber = tracing_subscriber::registry()
            .with(SpanFieldsLayer)
            .with(fmt.with_filter(tracing_subscriber::filter::LevelFilter::DEBUG));
        tracing::subscriber::with_default(subscriber, || {
            let request = match span.ids {
                Some((trace_id, span_id)) => tracing::info_span!(
                    "request",
                    request_id = span.request_id,
                    trace_id = %trace_id,
                    span_id = %span_id,
                    http.route = "/attribute/not/logged",
                ),
                None => tracing::debug_span!("ops request", request_id = span.request_id),
            };
            request.in_scope(|| members.dispatch(debug));
        });
        capture.0.lock().unwrap().clone()
    }

    fn keys_and_values(line: &[u8]) -> Vec<(String, serde_json::Value)> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).unwrap();
        map.into_iter().filter(|(k, _)| k != "timestamp").collect()
    }

    #[test]
    fn the_direct_line_is_the_dispatched_line() {
        let uri: Uri = "/api/v1/orders/a%22b?x=1".parse().unwrap();
        let agents = [
            Some(HeaderValue::from_static("curl/8.5 \"quoted\" \\ back")),
            None,
        ];
        let ips = [
            Some("192.168.10.200".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
            None,
        ];
        let spans = [
            SpanFields {
                request_id: "req-\"1\"",
                ids: Some((TraceId([0xab; 16]), SpanId([0x07; 8]))),
            },
            SpanFields {
                request_id: "ops-1",
                ids: None,
            },
        ];
        let mut compared = 0;
        for (agent, ip, span) in itertools_product(&agents, &ips, &spans) {
            for key in [Some(Arc::<str>::from("key-1")), None] {
                let entry = Entry::new(&Method::PATCH, &uri, *ip, agent.as_ref(), key);
                for (status, latency_ms) in [(200, 0.012), (503, 1.0), (429, 12345.678)] {
                    let members = Members {
                        entry: &entry,
                        route: "/api/v1/orders/{id}",
                        status,
                        latency_ms,
                        user_agent: agent.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
                    };
                    for debug in [false, true] {
                        let mut direct = Vec::new();
                        access_line(&mut direct, debug, *span, |out| members.write(out));
                        let dispatched = dispatched(&members, debug, *span);
                        assert_eq!(
                            keys_and_values(&direct),
                            keys_and_values(&dispatched),
                            "\n{}\n{}",
                            String::from_utf8_lossy(&direct),
                            String::from_utf8_lossy(&dispatched)
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 2 * 3 * 2 * 2 * 3 * 2);
    }

    fn itertools_product<'a, A, B, C>(
        a: &'a [A],
        b: &'a [B],
        c: &'a [C],
    ) -> impl Iterator<Item = (&'a A, &'a B, &'a C)> {
        a.iter()
            .flat_map(move |x| b.iter().flat_map(move |y| c.iter().map(move |z| (x, y, z))))
    }
}
