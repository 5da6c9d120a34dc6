//! Micro-benchmarks of the resilience primitives: the limiter's check, and the circuit breaker
//! around a trivial service (with the bare service as the baseline).
//!
//! `cargo bench --bench resilience`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use orders_api::resilience::breaker::{Breaker, BreakerConfig};
use orders_api::resilience::limiter::{Budget, Limiter, LimiterConfig};
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
        b.iter(|| all.check(one, true))
    });
    let mut n: u32 = 0;
    c.bench_function("limiter/check, per-client, new client each time", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            all.check(IpAddr::V4(Ipv4Addr::from(n)), false)
        })
    });
}

fn breaker(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let breaker = Breaker::new(BreakerConfig::default(), Box::new(()));
    c.bench_function("breaker/acquire + record", |b| {
        b.iter(|| breaker.try_acquire().map(|p| p.record(false)))
    });

    let bare: Router = Router::new().route("/api/v1/x", get(|| async { "ok" }));
    let guarded: Router = bare.clone().layer(axum::middleware::from_fn_with_state(
        Arc::clone(&breaker),
        orders_api::middleware::circuit_breaker::layer,
    ));
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
        )
    });
    group.bench_function("behind the breaker", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| guarded.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, limiter, breaker);
criterion_main!(benches);
