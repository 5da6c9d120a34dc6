//! OTLP trace export. Off unless an endpoint is configured; when on, spans leave through a
//! bounded batch queue on its own thread, so a slow or absent collector never blocks or fails a
//! request: spans that cannot be delivered are dropped, counted in `otel_spans_dropped_total`,
//! and reported by a WARN at most once a minute.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use metrics::counter;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, ShouldSample, SpanData,
    SpanExporter, Tracer,
};

use super::metrics::SPANS_DROPPED;
use crate::config::{OtlpProtocol, SamplerKind, TelemetrySettings};

/// Quiet period between two warnings about undeliverable spans.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Builds the tracer provider, or `None` when no endpoint is configured.
pub fn provider(cfg: &TelemetrySettings) -> Result<Option<(SdkTracerProvider, Tracer)>, String> {
    let Some(url) = cfg.traces_url() else {
        return Ok(None);
    };
    let exporter = match cfg.otlp.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(cfg.otlp.timeout)
            .with_headers(cfg.otlp.headers.clone())
            .build()
            .map_err(|e| e.to_string())?,
        #[cfg(feature = "otlp-grpc")]
        OtlpProtocol::Grpc => {
            use opentelemetry_otlp::WithTonicConfig;
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (k, v) in &cfg.otlp.headers {
                if let (Ok(k), Ok(v)) = (
                    k.parse::<tonic::metadata::MetadataKey<_>>(),
                    v.parse::<tonic::metadata::MetadataValue<_>>(),
                ) {
                    metadata.insert(k, v);
                }
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url)
                .with_timeout(cfg.otlp.timeout)
                .with_metadata(metadata)
                .build()
                .map_err(|e| e.to_string())?
        }
    };
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(cfg.otlp.max_queue_size)
        .with_scheduled_delay(cfg.otlp.export_interval)
        .build();
    let processor = BatchSpanProcessor::builder(Counting::new(exporter))
        .with_batch_config(batch)
        .build();
    let resource = Resource::builder_empty()
        .with_service_name(cfg.service_name.clone())
        .with_attributes(
            std::iter::once(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).chain(
                cfg.resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            ),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .with_sampler(LiveSampler::install(sampler(cfg.sampler, cfg.sampler_arg)))
        .build();
    let tracer = provider.tracer("orders-api");
    Ok(Some((provider, tracer)))
}

/// The exporter's sampler, swappable while running ([`set_sampler`]).
#[derive(Debug, Clone)]
struct LiveSampler(Arc<ArcSwap<Sampler>>);

static SAMPLER: std::sync::OnceLock<Arc<ArcSwap<Sampler>>> = std::sync::OnceLock::new();

impl LiveSampler {
    fn install(initial: Sampler) -> Self {
        let cell = SAMPLER.get_or_init(|| Arc::new(ArcSwap::from_pointee(initial.clone())));
        cell.store(Arc::new(initial));
        Self(cell.clone())
    }
}

impl ShouldSample for LiveSampler {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        self.0
            .load()
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// Replaces the sampler of the running trace exporter (`telemetry.sampler` and its ratio);
/// a no-op when traces are not exported.
pub fn set_sampler(kind: SamplerKind, ratio: f64) {
    if let Some(cell) = SAMPLER.get() {
        cell.store(Arc::new(sampler(kind, ratio)));
    }
}

fn sampler(kind: SamplerKind, ratio: f64) -> Sampler {
    match kind {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentBasedTraceIdRatio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

/// Counts spans in batches that failed to export, and warns at most once a minute.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    last_warning: Mutex<Option<Instant>>,
}

impl<E> Counting<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            last_warning: Mutex::new(None),
        }
    }

    fn dropped(&self, n: usize, error: &str) {
        counter!(SPANS_DROPPED).increment(n as u64);
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                dropped = n,
                error,
                "trace export failed; dropping spans (next warning in a minute at the earliest)"
            );
        }
    }
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.dropped(n, &e.to_string());
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanKind, TraceId};
    use opentelemetry_sdk::trace::SamplingDecision;

    use super::*;

    #[test]
    fn the_live_sampler_follows_set_sampler() {
        let live = LiveSampler::install(Sampler::AlwaysOn);
        let decide = || {
            live.should_sample(
                None,
                TraceId::from(7u128),
                "GET /",
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision
        };
        assert_eq!(decide(), SamplingDecision::RecordAndSample);
        set_sampler(SamplerKind::AlwaysOff, 1.0);
        assert_eq!(decide(), SamplingDecision::Drop);
        set_sampler(SamplerKind::TraceIdRatio, 1.0);
        assert_eq!(decide(), SamplingDecision::RecordAndSample);
    }
}
