//! OTLP trace export. Off unless an endpoint is configured. When on, the server span of each
//! sampled API request and the client spans of its database calls are recorded as plain
//! values ([`SpanRecord`]) and pushed into a bounded queue; one thread encodes them to OTLP
//! protobuf and sends them in batches. A worker never waits: a full queue or an unreachable
//! collector drops spans, counts them in `otel_spans_dropped_total`, and warns at most once
//! a minute.
//!
//! Spans are not built through `tracing`: the tracing spans of a request carry what its log
//! lines need (request, trace and span ids), and the exported span is the request's
//! attributes, read once, in a value the exporter thread turns into bytes without a copy in
//! between.

mod encode;
mod export;
mod transport;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::{SamplerKind, TelemetrySettings};
use crate::context::{SpanId, TraceId};

pub use export::Stopper;

/// A finished span, as the exporter sends it.
#[derive(Debug)]
pub struct SpanRecord {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its own id.
    pub span_id: SpanId,
    /// The parent span, if any.
    pub parent: Option<SpanId>,
    /// Whether the parent is the caller's (from `traceparent`) rather than this process's.
    pub remote_parent: bool,
    /// The caller's W3C `tracestate`, kept as sent, on the server span and each of its
    /// database children alike (one allocation per request, shared).
    pub trace_state: Option<Arc<str>>,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// What kind of span, with its attributes.
    pub detail: Detail,
}

/// The kinds of span this service exports.
#[derive(Debug)]
pub enum Detail {
    /// An API request (span kind server).
    Server(ServerSpan),
    /// A database call (span kind client).
    Client(ClientSpan),
}

/// An API request's attributes (the stable HTTP semantic conventions).
#[derive(Debug)]
pub struct ServerSpan {
    /// `http.request.method`.
    pub method: &'static str,
    /// `http.route`, `url.path`, `server.address` and `user_agent.original`.
    pub texts: RequestTexts,
    /// `client.address`: the peer.
    pub client: Option<IpAddr>,
    /// `http.response.status_code`; a 5xx also sets `error.type` and the error status.
    pub status: u16,
}

/// A request's text attributes, copied into one allocation: the span outlives the request (it
/// waits in the queue, then is freed on the exporter's thread), and four copies of their own
/// cost four allocations and four frees per request.
#[derive(Debug, Default)]
pub struct RequestTexts {
    text: String,
    /// Where the route, path and host end in `text` (the agent takes the rest).
    ends: [usize; 3],
}

impl RequestTexts {
    /// The matched route template, the path, the `Host` header without its port and the
    /// `User-Agent` header (empty when absent).
    pub fn new(route: &str, path: &str, host: &str, user_agent: &str) -> Self {
        let mut text =
            String::with_capacity(route.len() + path.len() + host.len() + user_agent.len());
        let mut ends = [0; 3];
        for (end, part) in ends.iter_mut().zip([route, path, host]) {
            text.push_str(part);
            *end = text.len();
        }
        text.push_str(user_agent);
        Self { text, ends }
    }

    fn part(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        let end = self.ends.get(index).copied().unwrap_or(self.text.len());
        self.text.get(start..end).unwrap_or_default()
    }

    /// `http.route`.
    pub fn route(&self) -> &str {
        self.part(0)
    }

    /// `url.path`.
    pub fn path(&self) -> &str {
        self.part(1)
    }

    /// `server.address` (empty: omitted).
    pub fn host(&self) -> &str {
        self.part(2)
    }

    /// `user_agent.original` (empty: omitted).
    pub fn user_agent(&self) -> &str {
        self.part(3)
    }
}

/// A database call's attributes.
#[derive(Debug)]
pub struct ClientSpan {
    /// `db.system.name`.
    pub system: &'static str,
    /// `db.operation.name`.
    pub operation: &'static str,
    /// `db.collection.name`.
    pub collection: &'static str,
    /// The error kind, when it failed (`error.type` and the error status).
    pub error: Option<&'static str>,
}

static QUEUE: OnceLock<export::Queue> = OnceLock::new();

/// Whether spans are exported: spans that exist only for traces are made only then.
pub fn exporting() -> bool {
    QUEUE.get().is_some()
}

/// Queues a finished span for export; a no-op when export is off. Never waits.
pub fn submit(span: SpanRecord) {
    if let Some(queue) = QUEUE.get() {
        queue.push(span);
    }
}

/// Starts the exporter and makes [`submit`] send to it, or returns `None` when no endpoint is
/// configured (or an exporter already runs in this process). The error names the setting.
pub fn start(cfg: &TelemetrySettings) -> Result<Option<Stopper>, String> {
    let Some(url) = cfg.traces_url() else {
        return Ok(None);
    };
    if QUEUE.get().is_some() {
        return Ok(None);
    }
    let transport = transport::build(cfg, url)?;
    let (queue, stopper) = export::start(
        transport,
        export::Setup {
            resource: encode::resource(&resource(cfg)),
            scope: encode::scope("orders-api", env!("CARGO_PKG_VERSION")),
            interval: cfg.otlp.export_interval,
            queue_size: cfg.otlp.max_queue_size,
        },
    )?;
    set_sampler(cfg.sampler, cfg.sampler_arg);
    Ok(QUEUE.set(queue).is_ok().then_some(stopper))
}

/// The resource attributes, each key once: `service.name` is `telemetry.service_name` (which
/// takes precedence over one in `telemetry.resource_attributes`, as `OTEL_SERVICE_NAME` does
/// over `OTEL_RESOURCE_ATTRIBUTES`); `service.version` is this build's unless the attributes
/// name one.
fn resource(cfg: &TelemetrySettings) -> Vec<(String, String)> {
    let mut out = vec![
        ("service.name".to_owned(), cfg.service_name.clone()),
        (
            "service.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ];
    for (k, v) in &cfg.resource_attributes {
        if k == "service.name" {
            continue;
        }
        out.retain(|(have, _)| have != k);
        out.push((k.clone(), v.clone()));
    }
    out
}

impl Stopper {
    /// Sends the queued spans and stops the exporter, within `timeout`; warns if it could not.
    pub fn shutdown(self, timeout: Duration) {
        if !self.stop(timeout) {
            tracing::warn!(
                timeout = %humantime::format_duration(timeout),
                "trace exporter did not finish in time; queued spans are lost"
            );
        }
    }
}

/// The sampler in effect (`telemetry.sampler` and its ratio), swappable while running.
static SAMPLER: OnceLock<ArcSwap<Sampler>> = OnceLock::new();

/// A sampling rule: the root rule for spans without a caller, and whether the caller's
/// decision is followed when there is one.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sampler {
    parent_based: bool,
    root: Root,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Root {
    Always,
    Never,
    /// Keeps traces whose id falls under this bound (see [`Sampler::root_samples`]).
    Ratio(u64),
}

impl Sampler {
    fn new(kind: SamplerKind, ratio: f64) -> Self {
        // The OpenTelemetry TraceIdRatioBased rule: the low 63 bits of the trace id's last 8
        // bytes against ratio × 2^63, so every service keeps the same traces at one ratio.
        let bound = if ratio >= 1.0 {
            Root::Always
        } else {
            Root::Ratio((ratio.max(0.0) * (1u64 << 63) as f64) as u64)
        };
        let (parent_based, root) = match kind {
            SamplerKind::AlwaysOn => (false, Root::Always),
            SamplerKind::AlwaysOff => (false, Root::Never),
            SamplerKind::TraceIdRatio => (false, bound),
            SamplerKind::ParentBasedAlwaysOn => (true, Root::Always),
            SamplerKind::ParentBasedAlwaysOff => (true, Root::Never),
            SamplerKind::ParentBasedTraceIdRatio => (true, bound),
        };
        Self { parent_based, root }
    }

    fn root_samples(self, trace_id: &TraceId) -> bool {
        match self.root {
            Root::Always => true,
            Root::Never => false,
            Root::Ratio(bound) => {
                let mut low = [0u8; 8];
                low.copy_from_slice(&trace_id.0[8..]);
                (u64::from_be_bytes(low) >> 1) < bound
            }
        }
    }

    fn samples(self, caller_sampled: Option<bool>, trace_id: &TraceId) -> bool {
        match caller_sampled {
            Some(sampled) if self.parent_based => sampled,
            _ => self.root_samples(trace_id),
        }
    }
}

/// Whether a new server span is recorded: `caller_sampled` is the sampled flag of the caller's
/// `traceparent`, if it sent one. Always `false` when export is off.
pub fn sampled(caller_sampled: Option<bool>, trace_id: &TraceId) -> bool {
    exporting()
        && SAMPLER
            .get()
            .is_some_and(|s| s.load().samples(caller_sampled, trace_id))
}

/// Replaces the sampler of the running trace exporter (`telemetry.sampler` and its ratio).
pub fn set_sampler(kind: SamplerKind, ratio: f64) {
    let new = Sampler::new(kind, ratio);
    match SAMPLER.get() {
        Some(cell) => cell.store(Arc::new(new)),
        None => {
            let _ = SAMPLER.set(ArcSwap::from_pointee(new));
        }
    }
}

/// A fresh random trace id (never all zeros).
pub fn new_trace_id() -> TraceId {
    TraceId(fastrand::u128(1..).to_be_bytes())
}

/// A fresh random span id (never all zeros).
pub fn new_span_id() -> SpanId {
    SpanId(fastrand::u64(1..).to_be_bytes())
}

#[cfg(test)]
mod tests;
