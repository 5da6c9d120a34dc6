//! Telemetry of the real binary: Prometheus text with real buckets and bounded labels, and OTLP
//! spans decoded from real protobuf by an in-test receiver, joined to the logs by trace id.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use futures_util::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message;
use serde_json::{Value, json};

use crate::support::binary::{Running, eventually, get_status, start, wait_line};
use crate::support::helpers::client;

/// One sample line of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the Prometheus text format (0.0.4): every non-comment line must parse.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let kind = comment.split_whitespace().next().unwrap_or_default();
            assert!(["HELP", "TYPE"].contains(&kind), "bad comment line: {line}");
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed: {line}"));
                (name.to_string(), parse_labels(body, line))
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label: {line}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().map(|(_, c)| c).unwrap_or('\\')),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        labels.insert(key.to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

async fn scrape(app: &Running) -> Vec<Sample> {
    let res = client()
        .get(format!("http://{}/metrics", app.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse_exposition(&res.text().await.unwrap())
}

/// A small deterministic generator (xorshift64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// The route template the server should report for `path`.
fn expected_route(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "orders"] => "/api/v1/orders",
        ["api", "v1", "orders", id] if !id.is_empty() => "/api/v1/orders/{id}",
        ["api", "v2", "orders"] => "/api/v2/orders",
        ["api", "v2", "orders", id] if !id.is_empty() => "/api/v2/orders/{id}",
        ["healthz"] => "/healthz",
        _ => "<unmatched>",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_real_buckets_and_one_series_per_route_method_status() {
    let app = start(&[]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let http = client();

    // A known order, moved once, so the business counters exist.
    let order: Value = http
        .post(format!("http://{}/api/v1/orders", app.api))
        .json(&json!({"customer_id": "m", "currency": "JPY",
                      "items": [{"sku": "X", "quantity": 1, "unit_price": "100"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_string();
    let paid = http
        .patch(format!("http://{}/api/v1/orders/{id}", app.api))
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let mut served: BTreeSet<(String, String, String)> = BTreeSet::from([
        ("POST".into(), "/api/v1/orders".into(), "201".into()),
        ("PATCH".into(), "/api/v1/orders/{id}".into(), "200".into()),
    ]);

    let methods = [
        "GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PURGE", "BREW",
    ];
    let mut rng = Rng(0x5eed_0bad_cafe_f00d);
    let requests: Vec<(String, String)> = (0..10_000)
        .map(|i| {
            let method = rng.pick(&methods).to_string();
            let path = match rng.next() % 8 {
                0 => "/api/v1/orders".to_string(),
                1 => format!("/api/v1/orders/{}", uuid::Uuid::now_v7()),
                2 => format!("/api/v1/orders/not-an-id-{i}"),
                3 => "/healthz".to_string(),
                4 => "/readyz".to_string(),
                5 => format!("/api/v1/orders/{id}/items/{i}"),
                6 => format!("/random/{}/{}", rng.next() % 1000, i),
                _ => format!("/api/v2/orders/{i}"),
            };
            (method, path)
        })
        .collect();
    let results: Vec<(String, String, String)> = futures_util::stream::iter(requests)
        .map(|(method, path)| {
            let http = http.clone();
            let url = format!("http://{}{path}", app.api);
            async move {
                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let res = http
                    .request(m, url)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                let label = if ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
                    .contains(&method.as_str())
                {
                    method.clone()
                } else {
                    "_OTHER".to_string()
                };
                (
                    label,
                    expected_route(&path).to_string(),
                    res.status().as_str().to_string(),
                )
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    served.extend(results.iter().cloned());

    let samples = scrape(&app).await;
    let requests: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "http_requests_total")
        .collect();
    let series: BTreeSet<(String, String, String)> = requests
        .iter()
        .map(|s| {
            (
                s.labels["method"].clone(),
                s.labels["route"].clone(),
                s.labels["status"].clone(),
            )
        })
        .collect();
    assert_eq!(series, served, "series differ from what was served");
    assert_eq!(requests.len(), series.len());
    let total: f64 = requests.iter().map(|s| s.value).sum();
    assert_eq!(total, 10_002.0);
    for s in &samples {
        for v in s.labels.values() {
            assert!(
                !v.contains("not-an-id") && !v.contains("/random/") && !v.contains(&id),
                "raw path in {s:?}"
            );
        }
    }

    // Real histograms with the OpenTelemetry HTTP boundaries, never summaries.
    let les: Vec<String> = samples
        .iter()
        .filter(|s| {
            s.name == "http_request_duration_seconds_bucket"
                && s.labels.get("route").map(String::as_str) == Some("/api/v1/orders")
                && s.labels["method"] == "POST"
                && s.labels["status"] == "201"
        })
        .map(|s| s.labels["le"].clone())
        .collect();
    assert_eq!(
        les,
        [
            "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5",
            "5", "7.5", "10", "+Inf"
        ]
    );
    assert!(
        samples.iter().all(|s| !s.labels.contains_key("quantile")),
        "summary rendered"
    );

    let has = |name: &str, labels: &[(&str, &str)]| {
        samples.iter().any(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    };
    for (name, labels) in [
        ("http_requests_in_flight", &[][..]),
        ("build_info", &[("version", env!("CARGO_PKG_VERSION"))][..]),
        ("process_cpu_seconds_total", &[][..]),
        ("process_resident_memory_bytes", &[][..]),
        ("process_open_fds", &[][..]),
        ("process_start_time_seconds", &[][..]),
        ("db_pool_connections", &[("state", "idle")][..]),
        ("db_pool_connections", &[("state", "in_use")][..]),
        ("db_pool_max_connections", &[][..]),
        (
            "db_query_duration_seconds_bucket",
            &[("operation", "insert_order"), ("le", "0.005")][..],
        ),
        ("db_errors_total", &[("kind", "unavailable")][..]),
        ("orders_created_total", &[("currency", "JPY")][..]),
        (
            "order_status_transitions_total",
            &[("from", "pending"), ("to", "paid")][..],
        ),
    ] {
        assert!(has(name, labels), "missing {name} {labels:?}");
    }
    // Every transaction of the SQLite writer is timed, in buckets of its own: as many timed
    // as batches counted, the create and the transition at least.
    let total = |name: &str| {
        samples
            .iter()
            .find(|s| s.name == name && s.labels.is_empty())
            .map(|s| s.value)
    };
    let commits = total("db_write_commit_duration_seconds_count");
    assert!(commits >= Some(2.0), "{commits:?}");
    assert_eq!(commits, total("db_write_batch_size_count"));
    assert!(has(
        "db_write_commit_duration_seconds_bucket",
        &[("le", "0.00025")]
    ));
    assert!(
        samples
            .iter()
            .any(|s| s.name == "build_info" && s.value == 1.0 && s.labels.contains_key("git_sha"))
    );

    // /metrics lives on the ops listener only.
    let api = http
        .get(format!("http://{}/metrics", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
}

/// The export requests a test collector decoded.
pub(crate) type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// An OTLP/HTTP receiver decoding real protobuf; returns its address and what it received.
async fn receiver() -> (std::net::SocketAddr, Received) {
    async fn accept(State(store): State<Received>, body: Bytes) -> Vec<u8> {
        let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
        store.lock().unwrap().push(req);
        ExportTraceServiceResponse::default().encode_to_vec()
    }
    let store: Received = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(accept))
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, store)
}

pub(crate) fn spans(received: &Received) -> Vec<(Vec<KeyValue>, Span)> {
    let mut out = Vec::new();
    for req in received.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            let resource = rs
                .resource
                .clone()
                .map(|r| r.attributes)
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                out.extend(ss.spans.iter().map(|s| (resource.clone(), s.clone())));
            }
        }
    }
    out
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

pub(crate) fn str_attr(attrs: &[KeyValue], key: &str) -> String {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

pub(crate) fn int_attr(attrs: &[KeyValue], key: &str) -> i64 {
    match attr(attrs, key) {
        Some(any_value::Value::IntValue(i)) => *i,
        other => panic!("{key}: {other:?}"),
    }
}

/// GET of an order that does not exist: the 404 response.
pub(crate) async fn get_missing_order(http: &reqwest::Client, app: &Running) -> reqwest::Response {
    let missing = http
        .get(format!(
            "http://{}/api/v1/orders/{}",
            app.api,
            uuid::Uuid::now_v7()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    missing
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_join_the_callers_trace_carry_attributes_and_match_the_logs() {
    let (addr, received) = receiver().await;
    let endpoint = format!("http://{addr}");
    let mut app = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "orders-trace-test"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test",
        ),
        ("APP_TELEMETRY__OTLP__EXPORT_INTERVAL", "100ms"),
    ]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let http = client();
    let created = http
        .post(format!("http://{}/api/v1/orders", app.api))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .header("tracestate", "vendor=abc,other=1")
        .header("user-agent", "trace-test/1")
        .json(&crate::support::helpers::order_body("traced"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let response_parent = created.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    let missing = get_missing_order(&http, &app).await;
    let problem: Value = missing.json().await.unwrap();

    let access = wait_line(&app.lines, |l| {
        l["target"] == "access" && l["method"] == "POST"
    });
    assert_eq!(app.terminate(), Some(0), "clean exit flushes spans");

    let all = spans(&received);
    let server: Vec<&(Vec<KeyValue>, Span)> = all
        .iter()
        .filter(|(_, s)| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(
        server.len(),
        2,
        "one server span per API request, none for probes: {server:?}"
    );
    assert!(
        all.iter().all(|(_, s)| s.name != "ping orders"),
        "readiness probes must not leave traces"
    );

    let (resource, post) = server
        .iter()
        .find(|(_, s)| s.name == "POST /api/v1/orders")
        .map(|(r, s)| (r, s))
        .unwrap();
    assert_eq!(str_attr(resource, "service.name"), "orders-trace-test");
    assert_eq!(str_attr(resource, "deployment.environment.name"), "test");
    assert_eq!(hex(&post.trace_id), TRACE, "joins the caller's trace");
    assert_eq!(
        hex(&post.parent_span_id),
        PARENT,
        "child of the caller's span"
    );
    assert_eq!(post.trace_state, "vendor=abc,other=1");
    assert_eq!(str_attr(&post.attributes, "http.request.method"), "POST");
    assert_eq!(str_attr(&post.attributes, "http.route"), "/api/v1/orders");
    assert_eq!(str_attr(&post.attributes, "url.path"), "/api/v1/orders");
    assert_eq!(str_attr(&post.attributes, "url.scheme"), "http");
    assert_eq!(str_attr(&post.attributes, "server.address"), "127.0.0.1");
    assert_eq!(str_attr(&post.attributes, "client.address"), "127.0.0.1");
    assert_eq!(
        str_attr(&post.attributes, "user_agent.original"),
        "trace-test/1"
    );
    assert_eq!(int_attr(&post.attributes, "http.response.status_code"), 201);
    assert_ne!(
        post.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        response_parent,
        format!("00-{TRACE}-{}-01", hex(&post.span_id))
    );

    let db: Vec<&Span> = all
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.kind == SpanKind::Client as i32 && s.parent_span_id == post.span_id)
        .collect();
    assert!(
        db.iter().any(|s| s.name == "insert_order orders"),
        "no DB child span: {db:?}"
    );
    for s in &db {
        assert_eq!(s.trace_id, post.trace_id);
        assert_eq!(
            s.trace_state, post.trace_state,
            "the trace state, as on its parent"
        );
        assert_eq!(str_attr(&s.attributes, "db.system.name"), "sqlite");
    }

    // The log line and the span agree.
    assert_eq!(access["trace_id"], TRACE);
    assert_eq!(access["span_id"], hex(&post.span_id));

    // A 4xx is not an error span; its trace id is in the problem body.
    let (_, get) = server
        .iter()
        .find(|(_, s)| s.name == "GET /api/v1/orders/{id}")
        .unwrap();
    assert_eq!(int_attr(&get.attributes, "http.response.status_code"), 404);
    assert_ne!(
        get.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert!(attr(&get.attributes, "error.type").is_none());
    assert_eq!(problem["trace_id"], hex(&get.trace_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_mark_spans_as_errors() {
    let (addr, received) = receiver().await;
    let endpoint = format!("http://{addr}");
    let mut app = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("APP_TELEMETRY__OTLP__EXPORT_INTERVAL", "100ms"),
        ("APP_DATABASE__URL", "postgres://postgres@127.0.0.1:1/none"),
        ("APP_DATABASE__ACQUIRE_TIMEOUT", "200ms"),
    ]);
    let res = client()
        .get(format!("http://{}/api/v1/orders", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(app.terminate(), Some(0));
    let all = spans(&received);
    let span = all
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "GET /api/v1/orders")
        .expect("server span exported");
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(str_attr(&span.attributes, "error.type"), "503");
    assert_eq!(int_attr(&span.attributes, "http.response.status_code"), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_never_fails_requests_and_is_reported_once() {
    // Bind and drop: nothing listens there any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint = format!("http://{dead}");
    let mut app = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("APP_TELEMETRY__OTLP__EXPORT_INTERVAL", "50ms"),
        ("APP_TELEMETRY__OTLP__TIMEOUT", "500ms"),
    ]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let http = client();
    for _ in 0..200 {
        let res = http
            .post(format!("http://{}/api/v1/orders", app.api))
            .json(&crate::support::helpers::order_body("nocollector"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let dropped = || {
        let rt = tokio::runtime::Handle::current();
        let samples = tokio::task::block_in_place(|| rt.block_on(scrape(&app)));
        samples
            .iter()
            .filter(|s| s.name == "otel_spans_dropped_total")
            .map(|s| s.value)
            .sum::<f64>()
    };
    eventually("dropped spans counted", || dropped() > 0.0);
    assert_eq!(app.terminate(), Some(0));
    let warnings = app
        .lines
        .try_iter()
        .filter(|l| l.contains("trace export failed"))
        .count();
    assert_eq!(warnings, 1, "the exporter warning is rate limited");
}

/// Background work makes no traces (a purge every few minutes on every pod would each be a
/// trace of its own); it shows in metrics instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_jobs_are_counted_not_traced() {
    let (addr, received) = receiver().await;
    let endpoint = format!("http://{addr}");
    let mut app = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("APP_TELEMETRY__OTLP__EXPORT_INTERVAL", "100ms"),
        ("APP_IDEMPOTENCY__PURGE_INTERVAL", "50ms"),
    ]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let runs = |samples: &[Sample]| {
        samples
            .iter()
            .filter(|s| {
                s.name == "background_runs_total"
                    && s.labels.get("job").map(String::as_str) == Some("idempotency_purge")
                    && s.labels.get("result").map(String::as_str) == Some("ok")
            })
            .map(|s| s.value)
            .sum::<f64>()
    };
    let mut purged = 0.0;
    for _ in 0..200 {
        purged = runs(&scrape(&app).await);
        if purged >= 3.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(purged >= 3.0, "the purge ran {purged} times");
    let samples = scrape(&app).await;
    assert!(
        samples
            .iter()
            .any(|s| s.name == "background_run_duration_seconds_count"
                && s.labels.get("job").map(String::as_str) == Some("idempotency_purge")),
        "no duration histogram for the purge"
    );
    // A request, so that the exporter has something to send.
    let res = client()
        .get(format!("http://{}/api/v1/orders", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.terminate(), Some(0));
    let names: Vec<String> = spans(&received).into_iter().map(|(_, s)| s.name).collect();
    assert!(names.iter().any(|n| n == "GET /api/v1/orders"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("purge")), "{names:?}");
}
