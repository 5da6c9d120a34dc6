//! Micro-benchmarks of the resilience primitives: the limiter's check, and the guard layer with
//! the circuit breaker around a trivial service (with the bare service as the baseline).
//!
//! `cargo bench --bench resilience`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use orders_api::config::{BreakerConfig, Budget, LimiterConfig};
use orders_api::resilience::breaker::Breaker;
use orders_api::resilience::limiter::Limiter;
use tower::ServiceExt;

fn limiter(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let budget = Budget {
        rate_per_second: 1e9,
        burst: u32::MAX / 2,
    };
    let all = Limiter::new(&LimiterConfig {
        global: Some(budget),
        per_client: Some(budget),
        writes: Some(budget),
    });
    let one = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    c.bench_function("limiter/check, three policies, one client", |b| {
        b.iter(|| all.check(one, true));
    });
    let mut n: u32 = 0;
    c.bench_function("limiter/check, per-client, new client each time", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            all.check(IpAddr::V4(Ipv4Addr::from(n)), false)
        });
    });
}

fn breaker(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let breaker = Breaker::new(BreakerConfig::default(), Box::new(()));
    c.bench_function("breaker/acquire + record", |b| {
        b.iter(|| breaker.try_acquire().map(|p| p.record(false)));
    });

    let bare: Router = Router::new().route("/api/v1/x", get(|| async { "ok" }));
    // The guard layer with the breaker as its only optional guard (no rate limit), as the API
    // routes have it: the in-flight slot, the store-ready check and the timeout come along.
    let health = Arc::new(orders_api::state::Health::new(
        std::time::Duration::from_secs(1),
    ));
    health.set_schema(Ok(()));
    let live = orders_api::middleware::Live {
        rate_limit: None,
        in_flight: orders_api::resilience::in_flight::Slots::new(1024),
        timeout: std::time::Duration::from_secs(10),
        keys: None,
        v1: orders_api::middleware::deprecation::V1Headers::new(&orders_api::config::ApiSettings {
            v1_deprecated_at: chrono::DateTime::UNIX_EPOCH,
            v1_sunset: chrono::DateTime::UNIX_EPOCH,
        }),
    };
    let guards = orders_api::middleware::guard::Guards {
        breaker: Some(Arc::clone(&breaker)),
        health,
        live: Arc::new(arc_swap::ArcSwap::from_pointee(live)),
    };
    let guarded: Router = bare
        .clone()
        .layer(orders_api::middleware::guard::Guard(Arc::new(guards)));
    let request = || {
        Request::get("/api/v1/x")
            .body(Body::empty())
            .expect("request")
    };
    let mut group = c.benchmark_group("trivial service");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| bare.clone().oneshot(req),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("behind the guards, breaker on", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| guarded.clone().oneshot(req),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, limiter, breaker);
criterion_main!(benches);
