//! The cost of the API middleware stack, in process (`tower::ServiceExt::oneshot`, no sockets):
//!
//! - `stack/get_order/*`: `GET /api/v1/orders/{id}` on SQLite (a temp file) through the bare
//!   router, through the stack with the optional layers switched off by configuration
//!   (`layers_off`: no access log, no HTTP metrics, no rate limiter, no breaker), and through
//!   the full stack (`full`: rate limits raised so the limiter runs but never refuses).
//! - `stack/trivial/*`: the same three on a handler that returns a constant, so the layers'
//!   own cost is not diluted by the database round trip.
//! - `metrics/*`: one counter increment and one histogram sample with three labels into the
//!   process's Prometheus recorder: looked up by labels built per request, and through handles
//!   kept per series, as the HTTP metrics layer records them.
//! - `access_log/*`: one access event inside a request span, formatted as a JSON line by the
//!   service's formatter and written to `std::io::sink()`; and the same line as the service
//!   writes it with JSON logs, without a dispatch (`Entry::json_line`, into a reused buffer).
//!
//! The `stack/*` variants send the access event through the subscriber: the line written
//! without a dispatch goes to the process's stdout, which a bench cannot have.
//!
//! A process-wide subscriber like the service's JSON one (span fields layer, JSON lines, `info`
//! filter) is installed first, writing to `std::io::sink()`, so the access log pays for
//! formatting but not for a terminal.
//!
//! Each `stack/*` variant also reports its heap allocations per request, counted by a global
//! allocator that wraps the system's (printed before criterion's timings).
//!
//! `cargo bench --bench stack`

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode};
use orders_api::config::{LoadOptions, Settings};
use orders_api::middleware::Stack;
use orders_api::middleware::access_log::Entry;
use orders_api::state::{AppState, Health};
use orders_api::store::Store;
use orders_api::telemetry::logs::direct::SpanFields;
use orders_api::telemetry::traces;
use tower::ServiceExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The system allocator, counting allocations (reallocations count too: each may move).
struct Counting;

static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[allow(unsafe_code)] // the one unsafe in the project: counting needs a GlobalAlloc
// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the counter is a relaxed atomic that touches no allocated memory.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded as received.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap allocations per request of `app` for requests made by `req`, over 1,000 requests on
/// the current-thread runtime `rt` (nothing else allocates meanwhile).
fn allocations_per_request(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    req: impl Fn() -> Request<Body>,
) -> f64 {
    const N: u64 = 1_000;
    rt.block_on(async {
        // Warm: first requests fill caches and register metric series.
        for _ in 0..100 {
            call(app, req()).await;
        }
        let before = ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..N {
            call(app, req()).await;
        }
        let after = ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed);
        (after - before) as f64 / N as f64
    })
}

/// The JSON subscriber of the service, writing to a sink. Installed once per process.
fn install_subscriber() {
    let fmt = tracing_subscriber::fmt::layer()
        .fmt_fields(orders_api::telemetry::logs::NoFields)
        .event_format(orders_api::telemetry::logs::JsonLines)
        .with_writer(std::io::sink)
        .with_filter(EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(orders_api::telemetry::logs::SpanFieldsLayer)
        .with(fmt)
        .try_init();
}

/// Settings as the tests build them: no profile file, loopback, SQLite at `db_url`, limits
/// that never refuse.
fn settings(db_url: &str) -> Settings {
    let mut env: Vec<(String, String)> = vec![
        ("APP_CONFIG_DIR".into(), "/nonexistent".into()),
        ("APP_SERVER__HOST".into(), "127.0.0.1".into()),
        ("APP_SERVER__PORT".into(), "0".into()),
        ("APP_SERVER__OPS_PORT".into(), "0".into()),
        ("APP_DATABASE__URL".into(), db_url.into()),
        // Requests carry no API key, as in the tests.
        ("APP_AUTH__ENABLED".into(), "false".into()),
    ];
    for policy in ["GLOBAL", "PER_CLIENT", "WRITES"] {
        env.push((
            format!("APP_RATE_LIMIT__{policy}__RATE_PER_SECOND"),
            "1000000000".into(),
        ));
        env.push((
            format!("APP_RATE_LIMIT__{policy}__BURST"),
            "1000000000".into(),
        ));
    }
    Settings::load(&LoadOptions {
        config_file: None,
        env,
    })
    .unwrap_or_else(|e| panic!("bench settings: {e}"))
}

/// The three variants of one router.
struct Variants {
    bare: Router,
    layers_off: Router,
    full: Router,
}

/// The stacks `Server::run` builds: with every optional layer, and with them switched off.
fn stacks(settings: &Settings, health: &Arc<Health>) -> (Stack, Stack) {
    let mut off = settings.clone();
    off.rate_limit.enabled = false;
    off.circuit_breaker.enabled = false;
    off.log.access = false;
    off.telemetry.http_metrics = false;
    (
        Stack::new(settings, Arc::clone(health)).expect("stack"),
        Stack::new(&off, Arc::clone(health)).expect("stack"),
    )
}

/// `routes` (the API's order routes, or a trivial one) bare and in both stacks, as the API
/// listener serves them.
fn variants(routes: Router<AppState>, state: &AppState, settings: &Settings) -> Variants {
    let (full, off) = stacks(settings, &state.health);
    let wrap = |stack: &Stack| {
        stack.api(
            Router::new()
                .merge(stack.guarded(routes.clone()))
                .with_state(state.clone()),
        )
    };
    Variants {
        bare: routes.clone().with_state(state.clone()),
        layers_off: wrap(&off),
        full: wrap(&full),
    }
}

fn client() -> ConnectInfo<SocketAddr> {
    ConnectInfo(SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000)))
}

fn get_request(uri: &str) -> Request<Body> {
    let mut req = Request::get(uri)
        .header("user-agent", "bench")
        .body(Body::empty())
        .expect("request");
    req.extensions_mut().insert(client());
    req
}

/// Sends one request and reads the whole body, as a connection would.
async fn call(app: &Router, req: Request<Body>) -> StatusCode {
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let _ = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    status
}

fn stack(c: &mut Criterion) {
    install_subscriber();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("orders.db").display());
    let settings = settings(&url);
    let metrics = orders_api::telemetry::metrics::install().expect("metrics recorder");
    // Histogram samples wait in the recorder until upkeep, as in the service (every 5 s there).
    let upkeep = metrics.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            upkeep.run_upkeep();
        }
    });

    let (state, id) = rt.block_on(async {
        let store = Store::open(&settings.database).expect("store");
        store.migrate().await.expect("migrate");
        let health = Arc::new(Health::new(settings.database.health_timeout));
        health.set_schema(Ok(()));
        let state = AppState::new(store, &settings, metrics.clone(), health, None);
        let app = variants(orders_api::api::v1::routes(), &state, &settings).bare;
        let mut req = Request::post("/api/v1/orders")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"customer_id":"bench-1","currency":"EUR",
                    "items":[{"sku":"BOOK-1","quantity":2,"unit_price":"9.99"}]}"#,
            ))
            .expect("request");
        req.extensions_mut().insert(client());
        let res = app.oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), StatusCode::CREATED);
        let location = res.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        (state, location)
    });

    let orders = variants(orders_api::api::v1::routes(), &state, &settings);
    let mut group = c.benchmark_group("stack/get_order");
    for (name, app) in [
        ("bare", &orders.bare),
        ("layers_off", &orders.layers_off),
        ("full", &orders.full),
    ] {
        rt.block_on(async {
            assert_eq!(call(app, get_request(&id)).await, StatusCode::OK, "{name}");
        });
        let allocations = allocations_per_request(&rt, app, || get_request(&id));
        println!("stack/get_order/{name}: {allocations:.1} allocations per request");
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| call(app, get_request(&id)));
        });
    }
    group.finish();

    let trivial_routes: Router<AppState> =
        Router::new().route("/api/v1/ping", get(|| async { "ok" }));
    let trivial = variants(trivial_routes, &state, &settings);
    let mut group = c.benchmark_group("stack/trivial");
    for (name, app) in [
        ("bare", &trivial.bare),
        ("layers_off", &trivial.layers_off),
        ("full", &trivial.full),
    ] {
        rt.block_on(async {
            assert_eq!(
                call(app, get_request("/api/v1/ping")).await,
                StatusCode::OK,
                "{name}"
            );
        });
        let allocations = allocations_per_request(&rt, app, || get_request("/api/v1/ping"));
        println!("stack/trivial/{name}: {allocations:.1} allocations per request");
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| call(app, get_request("/api/v1/ping")));
        });
    }
    group.finish();
}

fn metrics_recording(c: &mut Criterion) {
    use orders_api::telemetry::metrics::{HTTP_DURATION, HTTP_REQUESTS};
    let handle = orders_api::telemetry::metrics::install().expect("metrics recorder");
    let mut group = c.benchmark_group("metrics");
    group.bench_function("counter + histogram, kept handles", |b| {
        let labels = [
            ("method", "GET".to_string()),
            ("route", "/api/v1/orders/{id}".to_string()),
            ("status", "200".to_string()),
        ];
        let requests = metrics::counter!(HTTP_REQUESTS, &labels);
        let duration = metrics::histogram!(HTTP_DURATION, &labels);
        let mut n: u64 = 0;
        b.iter(|| {
            requests.increment(1);
            duration.record(0.000_25);
            n += 1;
            if n.is_multiple_of(100_000) {
                handle.run_upkeep();
            }
        });
    });
    group.bench_function("counter + histogram, three labels", |b| {
        let mut n: u64 = 0;
        b.iter(|| {
            // Built per request, as a lookup by labels needs them.
            let labels = [
                ("method", "GET".to_string()),
                ("route", "/api/v1/orders/{id}".to_string()),
                ("status", "200".to_string()),
            ];
            metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
            metrics::histogram!(HTTP_DURATION, &labels).record(0.000_25);
            n += 1;
            if n.is_multiple_of(100_000) {
                handle.run_upkeep();
            }
        });
    });
    group.finish();
}

fn access_log(c: &mut Criterion) {
    install_subscriber();
    let mut group = c.benchmark_group("access_log");
    group.bench_function("span + JSON access event", |b| {
        b.iter(|| {
            let span = tracing::info_span!(
                target: "orders_api::http",
                "request",
                request_id = "019ab1c2-0000-7000-8000-000000000000",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                span_id = "24022359cfd40dcc",
            );
            let _entered = span.enter();
            tracing::info!(
                target: "access",
                method = "GET",
                route = "/api/v1/orders/{id}",
                path = "/api/v1/orders/019ab1c2-0000-7000-8000-000000000000",
                status = 200u16,
                latency_ms = 0.25,
                client_ip = "127.0.0.1",
                user_agent = "bench",
                "request completed"
            );
        });
    });
    let span = tracing::info_span!(
        target: "orders_api::http",
        "request",
        request_id = "019ab1c2-0000-7000-8000-000000000000",
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
        span_id = "24022359cfd40dcc",
    );
    group.bench_function("JSON access event in an open span", |b| {
        let _entered = span.enter();
        b.iter(|| {
            tracing::info!(
                target: "access",
                method = "GET",
                route = "/api/v1/orders/{id}",
                path = "/api/v1/orders/019ab1c2-0000-7000-8000-000000000000",
                status = 200u16,
                latency_ms = 0.25,
                client_ip = "127.0.0.1",
                user_agent = "bench",
                "request completed"
            );
        });
    });
    let entry = Entry::new(
        &http::Method::GET,
        &"/api/v1/orders/019ab1c2-0000-7000-8000-000000000000"
            .parse()
            .expect("a valid URI"),
        Some(Ipv4Addr::LOCALHOST.into()),
        Some(&http::HeaderValue::from_static("bench")),
        None,
    );
    let fields = SpanFields {
        request_id: "019ab1c2-0000-7000-8000-000000000000",
        ids: Some((traces::new_trace_id(), traces::new_span_id())),
    };
    let mut line = Vec::with_capacity(512);
    group.bench_function("JSON access line, written without a dispatch", |b| {
        b.iter(|| {
            line.clear();
            entry.json_line(
                &mut line,
                false,
                fields,
                "/api/v1/orders/{id}",
                StatusCode::OK,
                Duration::from_micros(250),
            );
            std::hint::black_box(&line);
        });
    });
    group.finish();
}

criterion_group!(benches, stack, metrics_recording, access_log);
criterion_main!(benches);
