//! Shared application state: cheap to clone, handlers extract only the part they need.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;

use crate::config::{IdempotencySettings, Settings};
use crate::resilience::client_ip::ClientIp;
use crate::store::Store;

/// Everything handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The orders store.
    pub store: Store,
    /// Readiness inputs.
    pub health: Arc<Health>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The database breaker, reported by `/readyz`.
    pub breaker: Option<Arc<crate::resilience::breaker::Breaker>>,
    /// Who the client is behind trusted proxies (scopes idempotency keys of anonymous clients).
    pub clients: Arc<ClientIp>,
    /// How long idempotency records are held and kept.
    pub idempotency: IdempotencySettings,
    /// Work that outlives its request (keyed creates); shutdown waits for it.
    pub tasks: TaskTracker,
}

impl AppState {
    /// The state for `settings`, with a store, the metrics handle and the guards' breaker.
    pub fn new(
        store: Store,
        settings: &Settings,
        metrics: PrometheusHandle,
        breaker: Option<Arc<crate::resilience::breaker::Breaker>>,
    ) -> Self {
        Self {
            store,
            health: Arc::new(Health::new(settings.database.health_timeout)),
            metrics,
            breaker,
            clients: Arc::new(ClientIp::new(
                settings.server.trusted_proxies.clone(),
                settings.rate_limit.ipv6_prefix,
            )),
            idempotency: settings.idempotency,
            tasks: TaskTracker::new(),
        }
    }
}

impl FromRef<AppState> for Arc<ClientIp> {
    fn from_ref(state: &AppState) -> Self {
        state.clients.clone()
    }
}

impl FromRef<AppState> for IdempotencySettings {
    fn from_ref(state: &AppState) -> Self {
        state.idempotency
    }
}

impl FromRef<AppState> for Option<Arc<crate::resilience::breaker::Breaker>> {
    fn from_ref(state: &AppState) -> Self {
        state.breaker.clone()
    }
}

impl FromRef<AppState> for PrometheusHandle {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl FromRef<AppState> for TaskTracker {
    fn from_ref(state: &AppState) -> Self {
        state.tasks.clone()
    }
}

impl FromRef<AppState> for Store {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}

impl FromRef<AppState> for Arc<Health> {
    fn from_ref(state: &AppState) -> Self {
        state.health.clone()
    }
}

/// The inputs of `/readyz` that are not asked of the database on each probe.
#[derive(Debug)]
pub struct Health {
    draining: AtomicBool,
    schema_ready: AtomicBool,
    schema_error: Mutex<Option<String>>,
    /// Budget for the database round trip behind `/readyz`.
    pub db_timeout: Duration,
}

impl Health {
    /// Not draining, schema not yet known to be current.
    pub fn new(db_timeout: Duration) -> Self {
        Self {
            draining: AtomicBool::new(false),
            schema_ready: AtomicBool::new(false),
            schema_error: Mutex::new(Some("not checked yet".into())),
            db_timeout,
        }
    }

    /// Latches the draining state: readiness fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records the outcome of the latest schema check.
    pub fn set_schema(&self, result: Result<(), String>) {
        self.schema_ready.store(result.is_ok(), Ordering::SeqCst);
        if let Ok(mut slot) = self.schema_error.lock() {
            *slot = result.err();
        }
    }

    /// Whether migrations are known to be applied (the store can serve requests).
    pub fn schema_ready(&self) -> bool {
        self.schema_ready.load(Ordering::Acquire)
    }

    /// `Ok` once migrations are applied, else the last reason they are not.
    pub fn schema(&self) -> Result<(), String> {
        if self.schema_ready.load(Ordering::SeqCst) {
            return Ok(());
        }
        let reason = self.schema_error.lock().ok().and_then(|s| s.clone());
        Err(reason.unwrap_or_else(|| "migrations not applied".into()))
    }
}
