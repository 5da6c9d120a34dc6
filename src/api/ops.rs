//! Probes: `/healthz` (the process answers) and `/readyz` (dependencies, schema, not draining),
//! and `/metrics`.
//!
//! The API listener serves `/healthz` only: it is static, so a load balancer or a person with
//! `curl` can tell the process answers, at no cost. `/readyz` and `/metrics` are the ops
//! listener's: the kubelet probes that port, and readiness reports dependency errors, which are
//! nobody else's business. Even there a flood of probes costs the database one check a second
//! ([`Health::check_database`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics::gauge;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::resilience::breaker::Breaker;
use crate::state::{AppState, Health};
use crate::store::Store;
use crate::telemetry::metrics::{DB_POOL_CONNECTIONS, DB_POOL_MAX, render};

/// What the API listener serves besides the API: liveness.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

/// The ops listener's routes: liveness, readiness and `/metrics`.
pub fn ops_router() -> Router<AppState> {
    router()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Prometheus text exposition; pool and process gauges are refreshed at scrape time.
async fn metrics(State(store): State<Store>, State(handle): State<PrometheusHandle>) -> Response {
    let pool = store.pool_stats();
    gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(pool.idle));
    gauge!(DB_POOL_CONNECTIONS, "state" => "in_use")
        .set(f64::from(pool.open.saturating_sub(pool.idle)));
    gauge!(DB_POOL_MAX).set(f64::from(pool.max));
    let mut res = render(&handle).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// Liveness: no dependency checks, so a database outage never restarts the pod.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// One readiness check's outcome.
#[derive(Debug, Serialize)]
pub struct Check {
    name: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// When the check ran (checks are reused for a second).
    #[serde(skip_serializing_if = "Option::is_none")]
    checked_at: Option<String>,
}

impl Check {
    fn new(name: &'static str, result: Result<(), String>) -> Self {
        let (status, error) = match result {
            Ok(()) => ("ok", None),
            Err(e) => ("error", Some(e)),
        };
        Self {
            name,
            status,
            error,
            latency_ms: None,
            checked_at: None,
        }
    }
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    status: &'static str,
    checks: Vec<Check>,
    /// Reported, never a reason to be unready: a shared database outage must not pull every
    /// pod out of the Service at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breaker: Option<serde_json::Value>,
}

async fn readyz(
    State(store): State<Store>,
    State(health): State<Arc<Health>>,
    State(breaker): State<Option<Arc<Breaker>>>,
) -> (StatusCode, Json<Readiness>) {
    let db = health
        .check_database(|| async { store.ping().await.map_err(|e| e.to_string()) })
        .await;
    let mut database = Check::new("database", db.result);
    database.latency_ms = Some(db.latency.as_secs_f64() * 1000.0);
    database.checked_at = Some(crate::orders::timestamp::format(db.checked_at));
    let shutdown = if health.is_draining() {
        Err("draining: shutting down".to_string())
    } else {
        Ok(())
    };
    let checks = vec![
        database,
        Check::new("migrations", health.schema()),
        Check::new("shutdown", shutdown),
    ];
    let ready = checks.iter().all(|c| c.error.is_none());
    let (code, status) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    let circuit_breaker = breaker.map(|b| {
        serde_json::json!({ "name": crate::middleware::circuit_breaker::NAME, "state": b.state().as_str() })
    });
    (
        code,
        Json(Readiness {
            status,
            checks,
            circuit_breaker,
        }),
    )
}
