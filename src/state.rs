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

/// Everything handlers share, behind one `Arc`: the router clones the state for every
/// request, and one reference count is all that clone costs.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
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
    /// The state for `settings`, with a store, the metrics handle, the readiness inputs the
    /// layers share, and the guards' breaker.
    pub fn new(
        store: Store,
        settings: &Settings,
        metrics: PrometheusHandle,
        health: Arc<Health>,
        breaker: Option<Arc<crate::resilience::breaker::Breaker>>,
    ) -> Self {
        Self(Arc::new(Shared {
            store,
            health,
            metrics,
            breaker,
            clients: Arc::new(ClientIp::new(
                settings.server.trusted_proxies.clone(),
                settings.rate_limit.ipv6_prefix,
            )),
            idempotency: settings.idempotency,
            tasks: TaskTracker::new(),
        }))
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

/// How long one database check answers every readiness probe.
pub const READINESS_REUSE: Duration = Duration::from_secs(1);

/// The outcome of one database check behind `/readyz`.
#[derive(Debug, Clone)]
pub struct DatabaseCheck {
    /// When it ran, on the monotonic clock (for reuse).
    pub at: tokio::time::Instant,
    /// When it ran, as a timestamp for the body.
    pub checked_at: chrono::DateTime<chrono::Utc>,
    /// Its round trip.
    pub latency: Duration,
    /// `Err` with the reason when the database did not answer well.
    pub result: Result<(), String>,
}

/// The inputs of `/readyz` that are not asked of the database on each probe.
#[derive(Debug)]
pub struct Health {
    draining: AtomicBool,
    schema_ready: AtomicBool,
    schema_error: Mutex<Option<String>>,
    /// The latest database check; the lock is held while a check runs, so there is at most one
    /// in flight and every probe waiting behind it gets its result.
    last_check: tokio::sync::Mutex<Option<DatabaseCheck>>,
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
            last_check: tokio::sync::Mutex::new(None),
            db_timeout,
        }
    }

    /// The database check for a readiness probe: the latest one if it ran less than
    /// [`READINESS_REUSE`] ago, else a new run of `check` (bounded by `db_timeout`). However
    /// many probes arrive at once, at most one check is in flight: a flood of `/readyz` costs
    /// the database one round trip a second.
    pub async fn check_database<F, Fut>(&self, check: F) -> DatabaseCheck
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut last = self.last_check.lock().await;
        if let Some(done) = last.as_ref().filter(|c| c.at.elapsed() < READINESS_REUSE) {
            return done.clone();
        }
        let at = tokio::time::Instant::now();
        let result = match tokio::time::timeout(self.db_timeout, check()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.db_timeout)),
        };
        let done = DatabaseCheck {
            at,
            checked_at: chrono::Utc::now(),
            latency: at.elapsed(),
            result,
        };
        *last = Some(done.clone());
        done
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{Health, READINESS_REUSE};

    #[tokio::test(start_paused = true)]
    async fn concurrent_probes_share_one_database_check_for_a_second() {
        let health = Arc::new(Health::new(Duration::from_secs(1)));
        let runs = Arc::new(AtomicUsize::new(0));
        let probe = |health: Arc<Health>, runs: Arc<AtomicUsize>| async move {
            health
                .check_database(|| async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // A slow database: every other probe arrives while this one is in flight.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(())
                })
                .await
        };
        let probes: Vec<_> = (0..100)
            .map(|_| tokio::spawn(probe(health.clone(), runs.clone())))
            .collect();
        let mut seen = Vec::new();
        for p in probes {
            seen.push(p.await.unwrap().at);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "one result for all");
        // Still fresh just before the reuse period ends; a new check just after.
        tokio::time::advance(READINESS_REUSE - Duration::from_millis(201)).await;
        probe(health.clone(), runs.clone()).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(2)).await;
        probe(health.clone(), runs.clone()).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_past_its_budget_fails_and_is_reused_too() {
        let health = Health::new(Duration::from_millis(300));
        let done = health
            .check_database(std::future::pending::<Result<(), String>>)
            .await;
        assert!(done.result.is_err());
        let again = health.check_database(|| async { Ok(()) }).await;
        assert_eq!(again.at, done.at, "a failed check is reused as well");
    }
}
