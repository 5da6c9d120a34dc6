//! Probes: `/healthz` (the process answers) and `/readyz` (dependencies, schema, not draining).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::state::{AppState, Health};
use crate::store::Store;

/// The probe routes, served on both listeners.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
        }
    }
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    status: &'static str,
    checks: Vec<Check>,
}

async fn readyz(
    State(store): State<Store>,
    State(health): State<Arc<Health>>,
) -> (StatusCode, Json<Readiness>) {
    let started = Instant::now();
    let db = match tokio::time::timeout(health.db_timeout, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {:?}", health.db_timeout)),
    };
    let mut database = Check::new("database", db);
    database.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
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
    (code, Json(Readiness { status, checks }))
}
