//! `[telemetry]`: OTLP trace export, its resource and sampler, and the HTTP metrics switch.

use std::time::Duration;

use super::reader::Reader;

/// `[telemetry]`: OTLP trace export and its resource.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `service.name`.
    pub service_name: String,
    /// Extra resource attributes.
    pub resource_attributes: Vec<(String, String)>,
    /// Which spans are sampled.
    pub sampler: SamplerKind,
    /// Ratio for the ratio samplers.
    pub sampler_arg: f64,
    /// Whether the HTTP metrics layer runs.
    pub http_metrics: bool,
    /// Where and how spans are exported.
    pub otlp: OtlpSettings,
}

impl TelemetrySettings {
    /// The URL spans are sent to, or `None` when export is off.
    pub fn traces_url(&self) -> Option<String> {
        let otlp = &self.otlp;
        if !otlp.traces_endpoint.is_empty() {
            return Some(otlp.traces_endpoint.clone());
        }
        if otlp.endpoint.is_empty() {
            return None;
        }
        Some(match otlp.protocol {
            OtlpProtocol::HttpProtobuf => {
                format!("{}/v1/traces", otlp.endpoint.trim_end_matches('/'))
            }
            #[cfg(feature = "otlp-grpc")]
            OtlpProtocol::Grpc => otlp.endpoint.clone(),
        })
    }
}

/// `[telemetry.otlp]`.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// Collector base URL (empty: export off).
    pub endpoint: String,
    /// Full traces URL, overriding `endpoint`.
    pub traces_endpoint: String,
    /// Wire protocol.
    pub protocol: OtlpProtocol,
    /// Headers sent with every export (secret values).
    pub headers: std::collections::HashMap<String, String>,
    /// Budget for one export.
    pub timeout: Duration,
    /// Bound of the export queue.
    pub max_queue_size: usize,
    /// Pause between exports.
    pub export_interval: Duration,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`.
    HttpProtobuf,
    /// `grpc` (needs the `otlp-grpc` feature).
    #[cfg(feature = "otlp-grpc")]
    Grpc,
}

/// The OTEL_TRACES_SAMPLER values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// `always_on`
    AlwaysOn,
    /// `always_off`
    AlwaysOff,
    /// `traceidratio`
    TraceIdRatio,
    /// `parentbased_always_on`
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`
    ParentBasedTraceIdRatio,
}

fn pairs(r: &mut Reader<'_>, key: &'static str) -> Vec<(String, String)> {
    let raw: String = r.get(key);
    match super::values::parse_pairs(&raw) {
        Ok(map) => {
            let mut pairs: Vec<_> = map.into_iter().collect();
            pairs.sort();
            pairs
        }
        Err(e) => {
            r.invalid(key, &format!("expected key=value,key=value: {e}"));
            Vec::new()
        }
    }
}

pub(super) fn read(r: &mut Reader<'_>) -> TelemetrySettings {
    let service_name: String = r.get("telemetry.service_name");
    r.check(
        "telemetry.service_name",
        !service_name.trim().is_empty(),
        "must not be empty",
    );
    let resource_attributes = pairs(r, "telemetry.resource_attributes");
    let sampler = r.parsed("telemetry.sampler", "one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio", |s| match s {
        "always_on" => Some(SamplerKind::AlwaysOn),
        "always_off" => Some(SamplerKind::AlwaysOff),
        "traceidratio" => Some(SamplerKind::TraceIdRatio),
        "parentbased_always_on" => Some(SamplerKind::ParentBasedAlwaysOn),
        "parentbased_always_off" => Some(SamplerKind::ParentBasedAlwaysOff),
        "parentbased_traceidratio" => Some(SamplerKind::ParentBasedTraceIdRatio),
        _ => None,
    });
    let sampler_arg = r.float("telemetry.sampler_arg");
    let http_metrics = r.get("telemetry.http_metrics");
    r.check(
        "telemetry.sampler_arg",
        (0.0..=1.0).contains(&sampler_arg),
        "must be from 0.0 to 1.0",
    );
    let url_ok = |s: &str| s.is_empty() || s.starts_with("http://") || s.starts_with("https://");
    let endpoint: String = r.get("telemetry.otlp.endpoint");
    r.check(
        "telemetry.otlp.endpoint",
        url_ok(&endpoint),
        "must be empty or an http:// or https:// URL",
    );
    let traces_endpoint: String = r.get("telemetry.otlp.traces_endpoint");
    r.check(
        "telemetry.otlp.traces_endpoint",
        url_ok(&traces_endpoint),
        "must be empty or an http:// or https:// URL",
    );
    let protocol = r.parsed("telemetry.otlp.protocol", PROTOCOLS, |s| match s {
        "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
        #[cfg(feature = "otlp-grpc")]
        "grpc" => Some(OtlpProtocol::Grpc),
        _ => None,
    });
    let headers = pairs(r, "telemetry.otlp.headers").into_iter().collect();
    let timeout = r.positive_duration("telemetry.otlp.timeout");
    let max_queue_size = r.positive_count("telemetry.otlp.max_queue_size");
    let export_interval = r.positive_duration("telemetry.otlp.export_interval");
    TelemetrySettings {
        service_name,
        resource_attributes,
        sampler: sampler.unwrap_or(SamplerKind::ParentBasedAlwaysOn),
        sampler_arg,
        http_metrics,
        otlp: OtlpSettings {
            endpoint,
            traces_endpoint,
            protocol: protocol.unwrap_or(OtlpProtocol::HttpProtobuf),
            headers,
            timeout,
            max_queue_size: max_queue_size as usize,
            export_interval,
        },
    }
}

#[cfg(feature = "otlp-grpc")]
const PROTOCOLS: &str = "\"http/protobuf\" or \"grpc\"";
#[cfg(not(feature = "otlp-grpc"))]
const PROTOCOLS: &str =
    "\"http/protobuf\" (\"grpc\" needs a binary built with --features otlp-grpc)";
