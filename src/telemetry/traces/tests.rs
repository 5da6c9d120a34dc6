use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;

use super::export::{self, Setup};
use super::transport::Transport;
use super::*;

mod attributes;

fn server(status: u16, user_agent: &str) -> SpanRecord {
    SpanRecord {
        trace_id: TraceId([0x4b; 16]),
        span_id: SpanId([2; 8]),
        parent: Some(SpanId([1; 8])),
        remote_parent: true,
        trace_state: Some("vendor=abc".into()),
        start: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
        end: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_223_456_789),
        detail: Detail::Server(ServerSpan {
            method: "GET",
            texts: RequestTexts::new(
                "/api/v1/orders/{id}",
                "/api/v1/orders/0199",
                "orders.example",
                user_agent,
            ),
            client: Some("10.1.2.3".parse().unwrap()),
            status,
        }),
    }
}

fn client(error: Option<&'static str>) -> SpanRecord {
    SpanRecord {
        trace_id: TraceId([0x4b; 16]),
        span_id: SpanId([3; 8]),
        parent: Some(SpanId([2; 8])),
        remote_parent: false,
        trace_state: None,
        start: UNIX_EPOCH + Duration::from_millis(1),
        end: UNIX_EPOCH + Duration::from_millis(2),
        detail: Detail::Client(ClientSpan {
            system: "sqlite",
            operation: "get_order",
            collection: "orders",
            error,
        }),
    }
}

fn decode(spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    let resource = encode::resource(&[
        ("service.name".into(), "orders-api".into()),
        ("deployment.environment.name".into(), "test".into()),
    ]);
    let scope = encode::scope("orders-api", "1.2.3");
    let mut body = vec![0xde, 0xad];
    encode::request(&mut body, &resource, &scope, spans);
    ExportTraceServiceRequest::decode(body.as_slice()).expect("valid OTLP protobuf")
}

fn value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    let kv = attrs.iter().find(|kv| kv.key == key)?;
    kv.value.as_ref()?.value.as_ref()
}

fn text(attrs: &[KeyValue], key: &str) -> String {
    match value(attrs, key) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn spans_encode_to_the_otlp_messages_a_collector_decodes() {
    let req = decode(&[server(503, "curl/8"), client(Some("busy")), client(None)]);
    let [rs] = req.resource_spans.as_slice() else {
        panic!("one resource: {req:?}")
    };
    let resource = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(text(resource, "service.name"), "orders-api");
    assert_eq!(text(resource, "deployment.environment.name"), "test");
    let [ss] = rs.scope_spans.as_slice() else {
        panic!("one scope")
    };
    let scope = ss.scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("orders-api", "1.2.3")
    );
    let [srv, failed, ok] = ss.spans.as_slice() else {
        panic!("three spans: {:?}", ss.spans)
    };

    assert_eq!(srv.name, "GET /api/v1/orders/{id}");
    assert_eq!(srv.kind, SpanKind::Server as i32);
    assert_eq!(srv.trace_id, vec![0x4b; 16]);
    assert_eq!(srv.span_id, vec![2; 8]);
    assert_eq!(srv.parent_span_id, vec![1; 8]);
    assert_eq!(srv.trace_state, "vendor=abc");
    assert_eq!(srv.start_time_unix_nano, 1_700_000_000_123_456_789);
    assert_eq!(srv.end_time_unix_nano, 1_700_000_000_223_456_789);
    assert_eq!(srv.flags, 0x301, "sampled, parent known to be remote");
    let attrs = &srv.attributes;
    assert_eq!(text(attrs, "http.request.method"), "GET");
    assert_eq!(text(attrs, "http.route"), "/api/v1/orders/{id}");
    assert_eq!(text(attrs, "url.path"), "/api/v1/orders/0199");
    assert_eq!(text(attrs, "url.scheme"), "http");
    assert_eq!(text(attrs, "server.address"), "orders.example");
    assert_eq!(text(attrs, "client.address"), "10.1.2.3");
    assert_eq!(text(attrs, "user_agent.original"), "curl/8");
    assert_eq!(
        value(attrs, "http.response.status_code"),
        Some(&any_value::Value::IntValue(503))
    );
    assert_eq!(text(attrs, "error.type"), "503");
    let status = srv.status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (StatusCode::Error as i32, "503")
    );

    assert_eq!(failed.name, "get_order orders");
    assert_eq!(failed.kind, SpanKind::Client as i32);
    assert_eq!(failed.parent_span_id, vec![2; 8]);
    assert_eq!(failed.flags, 0x101, "sampled, parent known to be local");
    assert_eq!(text(&failed.attributes, "db.system.name"), "sqlite");
    assert_eq!(text(&failed.attributes, "db.operation.name"), "get_order");
    assert_eq!(text(&failed.attributes, "db.collection.name"), "orders");
    assert_eq!(text(&failed.attributes, "error.type"), "busy");
    assert_eq!(
        failed.status.as_ref().unwrap().code,
        StatusCode::Error as i32
    );

    assert!(value(&ok.attributes, "error.type").is_none());
    assert!(ok.status.is_none(), "no error, no status");
    assert_eq!(ok.trace_state, "");
}

#[test]
fn lengths_past_one_and_two_varint_bytes_are_written_in_full() {
    for len in [0, 100, 127, 128, 300, 16_383, 16_384, 70_000] {
        let agent = "a".repeat(len);
        let req = decode(&[server(200, &agent), server(404, "")]);
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 2, "{len}");
        if len == 0 {
            assert!(value(&spans[0].attributes, "user_agent.original").is_none());
        } else {
            assert_eq!(text(&spans[0].attributes, "user_agent.original"), agent);
        }
        assert!(
            spans[1].status.is_none(),
            "a 4xx is not an error span ({len})"
        );
    }
}

#[test]
fn the_ratio_sampler_keeps_traces_by_the_low_bits_of_their_id() {
    let id = |low: u64| {
        let mut bytes = [0xffu8; 16];
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        TraceId(bytes)
    };
    let half = Sampler::new(SamplerKind::TraceIdRatio, 0.5);
    assert!(half.samples(None, &id(0)));
    assert!(half.samples(None, &id((1 << 63) - 1)));
    assert!(!half.samples(None, &id(u64::MAX)));
    // Not parent based: the caller's flag does not count.
    assert!(!half.samples(Some(true), &id(u64::MAX)));
    let none = Sampler::new(SamplerKind::TraceIdRatio, 0.0);
    assert!(!none.samples(None, &id(0)));
    let all = Sampler::new(SamplerKind::TraceIdRatio, 1.0);
    assert!(all.samples(None, &id(u64::MAX)));

    let parent_half = Sampler::new(SamplerKind::ParentBasedTraceIdRatio, 0.5);
    assert!(parent_half.samples(Some(true), &id(u64::MAX)));
    assert!(!parent_half.samples(Some(false), &id(0)));
    assert!(parent_half.samples(None, &id(0)));
    assert!(!Sampler::new(SamplerKind::ParentBasedAlwaysOff, 1.0).samples(None, &id(0)));
    assert!(Sampler::new(SamplerKind::ParentBasedAlwaysOff, 1.0).samples(Some(true), &id(0)));
    assert!(!Sampler::new(SamplerKind::ParentBasedAlwaysOn, 1.0).samples(Some(false), &id(0)));
    assert!(Sampler::new(SamplerKind::AlwaysOn, 0.0).samples(Some(false), &id(0)));
    assert!(!Sampler::new(SamplerKind::AlwaysOff, 1.0).samples(Some(true), &id(0)));
}

#[test]
fn fresh_ids_are_never_zero_and_differ() {
    let (a, b) = (new_trace_id(), new_trace_id());
    assert_ne!(a, b);
    assert_ne!(a.0, [0; 16]);
    assert_ne!(new_span_id().0, [0; 8]);
}

/// Records what it is sent.
#[derive(Clone, Default)]
struct Recorder {
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Transport for Recorder {
    fn send(&mut self, body: Vec<u8>) -> Result<(), String> {
        self.bodies.lock().unwrap().push(body);
        Ok(())
    }
}

fn setup(queue_size: usize) -> Setup {
    Setup {
        resource: encode::resource(&[]),
        scope: encode::scope("orders-api", "0"),
        // Long enough that only a full batch or the stop sends anything.
        interval: Duration::from_secs(3600),
        queue_size,
    }
}

fn spans_in(bodies: &[Vec<u8>]) -> Vec<usize> {
    bodies
        .iter()
        .map(|b| {
            let req = ExportTraceServiceRequest::decode(b.as_slice()).unwrap();
            req.resource_spans[0].scope_spans[0].spans.len()
        })
        .collect()
}

#[test]
fn full_batches_go_at_once_and_stopping_sends_the_rest() {
    /// Hands every body to the test as it is sent.
    struct Notify(std::sync::mpsc::Sender<Vec<u8>>);
    impl Transport for Notify {
        fn send(&mut self, body: Vec<u8>) -> Result<(), String> {
            self.0.send(body).map_err(|e| e.to_string())
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (queue, stopper) = export::start(
        Box::new(move || Ok(Box::new(Notify(tx)) as Box<dyn Transport>)),
        setup(4 * export::MAX_BATCH),
    )
    .unwrap();
    for _ in 0..export::MAX_BATCH + 10 {
        queue.push(client(None));
    }
    // The interval is an hour: only the full batch can make the first send, before any stop.
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a full batch is sent without waiting for the interval");
    assert_eq!(spans_in(&[first]), vec![export::MAX_BATCH]);
    assert!(rx.try_recv().is_err(), "the rest waits for the interval");
    assert!(stopper.stop(Duration::from_secs(10)), "the exporter stops");
    let rest: Vec<Vec<u8>> = rx.try_iter().collect();
    assert_eq!(spans_in(&rest), vec![10]);
}

#[test]
fn a_batch_of_long_spans_goes_out_in_requests_a_collector_accepts() {
    let recorder = Recorder::default();
    let transport = recorder.clone();
    let (queue, stopper) = export::start(
        Box::new(move || Ok(Box::new(transport) as Box<dyn Transport>)),
        setup(4 * export::MAX_BATCH),
    )
    .unwrap();
    // A client's 4 KiB user agent in every span: a whole batch would encode to about 8 MiB.
    let agent = "a".repeat(4096);
    for _ in 0..export::MAX_BATCH {
        queue.push(server(200, &agent));
    }
    // A span too long for any request still goes, alone.
    queue.push(server(200, &"b".repeat(export::MAX_BODY + 1)));
    assert!(stopper.stop(Duration::from_secs(10)));
    let bodies = recorder.bodies.lock().unwrap();
    let counts = spans_in(&bodies);
    assert_eq!(
        counts.iter().sum::<usize>(),
        export::MAX_BATCH + 1,
        "every span is sent"
    );
    assert!(counts.len() > 8, "split into several requests: {counts:?}");
    for (body, n) in bodies.iter().zip(&counts) {
        assert!(
            body.len() <= export::MAX_BODY || *n == 1,
            "{} bytes for {n} spans",
            body.len()
        );
    }
    assert!(
        bodies
            .iter()
            .zip(&counts)
            .any(|(b, n)| *n == 1 && b.len() > export::MAX_BODY),
        "the longest span went alone"
    );
}

/// Blocks every send until the gate opens.
struct Gated {
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    inner: Recorder,
}

impl Transport for Gated {
    fn send(&mut self, body: Vec<u8>) -> Result<(), String> {
        let (open, cv) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        self.inner.send(body)
    }
}

#[test]
fn a_full_queue_drops_spans_instead_of_waiting() {
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let recorder = Recorder::default();
    let transport = Gated {
        gate: gate.clone(),
        inner: recorder.clone(),
    };
    let (queue, stopper) = export::start(
        Box::new(move || Ok(Box::new(transport) as Box<dyn Transport>)),
        setup(8),
    )
    .unwrap();
    // A full buffer (8) wakes the thread, whose send then blocks; the buffer fills again and
    // the rest is dropped, and no push waits.
    for _ in 0..3 * export::MAX_BATCH {
        queue.push(client(None));
    }
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    assert!(stopper.stop(Duration::from_secs(10)));
    let sent: usize = spans_in(&recorder.bodies.lock().unwrap()).iter().sum();
    // The batch in the blocked send and at most a buffer's worth were taken.
    assert!(
        (8..=16).contains(&sent),
        "{sent} of {} spans taken",
        3 * export::MAX_BATCH
    );
}

#[test]
fn a_transport_that_cannot_be_built_leaves_the_exporter_running_and_stoppable() {
    let (queue, stopper) =
        export::start(Box::new(|| Err("no client".to_owned())), setup(16)).unwrap();
    queue.push(client(None));
    assert!(stopper.stop(Duration::from_secs(10)));
}

#[test]
fn resource_keys_appear_once_and_the_service_name_setting_wins() {
    let mut cfg = crate::config::Settings::load(&crate::config::LoadOptions {
        config_file: None,
        env: vec![
            ("APP_CONFIG_DIR".into(), "/nonexistent".into()),
            ("APP_AUTH__ENABLED".into(), "false".into()),
        ],
    })
    .unwrap()
    .telemetry;
    cfg.service_name = "orders-eu".into();
    cfg.resource_attributes = vec![
        ("service.name".into(), "ignored".into()),
        ("service.version".into(), "9.9.9".into()),
        ("deployment.environment.name".into(), "prod".into()),
    ];
    assert_eq!(
        resource(&cfg),
        [
            ("service.name", "orders-eu"),
            ("service.version", "9.9.9"),
            ("deployment.environment.name", "prod"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
}
