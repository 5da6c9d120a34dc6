//! The two listeners (API and ops), the schema task, and graceful shutdown:
//! signal → `/readyz` 503 at once → keep serving for `drain_delay` → stop accepting → in-flight
//! requests finish within `grace_period` → close the pool → return (exit 0).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{DatabaseSettings, LoadOptions, ServerSettings, Settings, ShutdownSettings};
use crate::middleware::Stack;
use crate::reload::{Control, Reloader};
use crate::router;
use crate::state::{AppState, Health};
use crate::store::Store;

mod connection;
mod signals;

pub use signals::shutdown_signal;

/// First and largest pause between attempts to reach the database at start.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(30));

/// A bound, not yet serving, instance.
pub struct Server {
    api: TcpListener,
    ops: TcpListener,
    state: AppState,
    settings: Settings,
    stack: Stack,
    reload: Option<LoadOptions>,
}

impl Server {
    /// Binds both listeners; nothing is served until [`Server::run`].
    pub async fn bind(settings: Settings, store: Store) -> std::io::Result<Self> {
        let host = settings.server.host;
        let api = TcpListener::bind((host, settings.server.port)).await?;
        let ops = TcpListener::bind((host, settings.server.ops_port)).await?;
        let metrics = crate::telemetry::metrics::install().map_err(std::io::Error::other)?;
        let health = Arc::new(Health::new(settings.database.health_timeout));
        let stack = Stack::new(&settings, health.clone()).map_err(std::io::Error::other)?;
        let state = AppState::new(
            store,
            &settings,
            metrics,
            health,
            stack.guards.breaker.clone(),
        );
        Ok(Self {
            api,
            ops,
            state,
            settings,
            stack,
            reload: None,
        })
    }

    /// Reloads the configuration that `opts` loads while serving (see [`crate::reload`]),
    /// as `settings.reload` asks.
    pub fn reload_from(mut self, opts: LoadOptions) -> Self {
        self.reload = Some(opts);
        self
    }

    /// The API listener's address (useful with port 0).
    pub fn api_addr(&self) -> std::io::Result<SocketAddr> {
        self.api.local_addr()
    }

    /// The ops listener's address.
    pub fn ops_addr(&self) -> std::io::Result<SocketAddr> {
        self.ops.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Self {
            api,
            ops,
            state,
            settings,
            stack,
            reload,
        } = self;
        tracing::info!(
            api = %api.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            ops = %ops.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            backend = state.store.backend_name(),
            profile = %settings.profile,
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );
        match &stack.keys() {
            Some(keys) => tracing::info!(
                keys = %keys.ids().collect::<Vec<_>>().join(","),
                "API key authentication on"
            ),
            None => tracing::warn!(
                "auth disabled (auth.enabled = false): the API is open to anyone who can reach it"
            ),
        }
        let schema = tokio::spawn(ensure_schema(
            state.store.clone(),
            state.health.clone(),
            settings.database.clone(),
        ));
        let upkeep = tokio::spawn(metrics_upkeep(state.metrics.clone()));
        let purge = tokio::spawn(purge_idempotency(
            state.store.clone(),
            settings.idempotency.purge_interval,
        ));
        // Runs whether or not limiting is on now: a reload can turn it on.
        let eviction = Some({
            let (live, every) = (stack.live.clone(), settings.rate_limit.eviction_interval);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Some(rl) = &live.load().rate_limit {
                        rl.evict();
                    }
                }
            })
        });
        let control = Control::new(&settings.log.level);
        // Built in its task: reading the files again and setting up the watch are not on
        // the way to serving.
        let reloader = reload.map(|opts| {
            let (settings, stack, control) = (settings.clone(), stack.clone(), control.clone());
            tokio::spawn(async move {
                Reloader::new(opts, settings, stack, control)
                    .run(CancellationToken::new())
                    .await;
            })
        });
        let api_app = router::api(state.clone(), &stack, settings.auth.enabled);
        let admin = crate::api::admin::Admin {
            control,
            live: stack.live.clone(),
            auth: settings.auth.enabled,
        };
        let ops_app = router::ops(state.clone(), &stack, admin);
        let stop = CancellationToken::new();
        let api_task = serve(
            api,
            api_app,
            stop.clone(),
            Listening::new("api", &settings.server),
        );
        let ops_task = serve(
            ops,
            ops_app,
            stop.clone(),
            Listening::new("ops", &settings.server),
        );

        shutdown.await;
        let grace = drain(
            &state.health,
            &settings.shutdown,
            &stop,
            [api_task, ops_task],
            &state.tasks,
        )
        .await;
        schema.abort();
        upkeep.abort();
        purge.abort();
        for task in [eviction, reloader].into_iter().flatten() {
            task.abort();
        }
        // A pool waits for every connection to come back; one that never does (a query stuck
        // in a dead network) must not keep the process from exiting.
        let deadline = grace.max(tokio::time::Instant::now() + CLOSE_AT_LEAST);
        if tokio::time::timeout_at(deadline, state.store.close())
            .await
            .is_err()
        {
            tracing::warn!("database pool did not close in time: exiting without it");
        }
        tracing::info!("shutdown complete");
    }
}

/// Largest request head (request line and headers) accepted; larger ones get 431.
const MAX_HEAD: usize = 32 * 1024;

/// The connection settings one listener runs with.
#[derive(Debug, Clone, Copy)]
struct Listening {
    name: &'static str,
    limits: connection::Limits,
    max_connections: usize,
}

impl Listening {
    fn new(name: &'static str, cfg: &ServerSettings) -> Self {
        connection::register(name);
        Self {
            name,
            limits: connection::Limits {
                header_read: cfg.header_read_timeout,
                keep_alive: cfg.keep_alive_timeout,
            },
            max_connections: cfg.max_connections as usize,
        }
    }
}

/// Accepts connections until `stop`, then waits for the open ones to finish their requests.
/// Past `max_connections` open ones, a new connection is closed as soon as it is accepted;
/// see [`connection`] for the time each may take.
fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    cfg: Listening,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut http = hyper::server::conn::http1::Builder::new();
        // The connection's own clocks replace hyper's header timer (see `connection`).
        http.header_read_timeout(None)
            .max_header_size(MAX_HEAD)
            .keep_alive(true);
        let cap = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
        let graceful = GracefulShutdown::new();
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => break,
            };
            let Some(place) = connection::Place::take(&cap, cfg.name) else {
                tracing::debug!(client = %peer, listener = cfg.name, "connection refused: at max_connections");
                drop(tcp);
                continue;
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let conn = connection::http1(&http, tcp, peer, app.clone(), cfg.limits, cfg.name);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _place = place;
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, client = %peer, "connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    })
}

/// The least time the store gets to close, even when the grace period is already spent.
const CLOSE_AT_LEAST: Duration = Duration::from_secs(1);

/// Readiness off, wait out the drain delay while still serving, stop accepting, then give
/// in-flight requests, and the keyed creates that outlived theirs, the grace period. Returns
/// the grace period's deadline.
async fn drain(
    health: &Health,
    cfg: &ShutdownSettings,
    stop: &CancellationToken,
    servers: [JoinHandle<()>; 2],
    tasks: &TaskTracker,
) -> tokio::time::Instant {
    health.start_draining();
    tracing::info!(
        drain_delay = %humantime::format_duration(cfg.drain_delay),
        grace_period = %humantime::format_duration(cfg.grace_period),
        "shutdown signal received: not ready, draining"
    );
    tokio::time::sleep(cfg.drain_delay).await;
    tracing::info!("drain delay over: no longer accepting connections");
    stop.cancel();
    let grace = tokio::time::Instant::now() + cfg.grace_period;
    let all = futures_util::future::join_all(servers);
    if tokio::time::timeout_at(grace, all).await.is_err() {
        tracing::warn!(
            grace_period = %humantime::format_duration(cfg.grace_period),
            "grace period over: cutting the requests still in flight"
        );
    }
    tasks.close();
    if !tasks.is_empty() {
        tracing::info!(
            running = tasks.len(),
            "waiting for background creates to finish"
        );
        if tokio::time::timeout_at(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                running = tasks.len(),
                "grace period over: abandoning background creates (their keys lapse at \
                 idempotency.lock_timeout)"
            );
        }
    }
    grace
}

/// Brings the schema up to date (or, with `migrate_on_start = false`, waits until someone else
/// has), retrying with capped exponential backoff while the database is unreachable.
async fn ensure_schema(store: Store, health: Arc<Health>, cfg: DatabaseSettings) {
    let mut pause = BACKOFF.0;
    loop {
        let result = if cfg.migrate_on_start {
            store.migrate().await.map_err(|e| e.to_string())
        } else {
            match store.pending_migrations().await {
                Ok(0) => Ok(()),
                Ok(n) => Err(format!(
                    "{n} migration(s) pending; run `orders-api migrate`"
                )),
                Err(e) => Err(e.to_string()),
            }
        };
        match result {
            Ok(()) => {
                tracing::info!("database schema is current");
                health.set_schema(Ok(()));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = %humantime::format_duration(pause), "database schema not ready");
                health.set_schema(Err(e));
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BACKOFF.1);
    }
}

/// Deletes expired idempotency records every `every`, in batches so that no statement holds
/// the table for long. Every replica runs it; they only compete for already-dead rows.
async fn purge_idempotency(store: Store, every: Duration) {
    const BATCH: u32 = 1000;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let result = store.purge_idempotency(crate::orders::now(), BATCH).await;
        background_run("idempotency_purge", result.is_ok(), started);
        match result {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!(crate::telemetry::metrics::IDEMPOTENCY_PURGED).increment(n);
                tracing::debug!(purged = n, "expired idempotency records deleted");
            }
            // Before migrations, or while the database is down: next time.
            Err(e) => tracing::debug!(error = %e, "cannot purge idempotency records"),
        }
    }
}

/// Counts one run of a background job and how long it took (jobs make no traces).
fn background_run(job: &'static str, ok: bool, started: std::time::Instant) {
    use crate::telemetry::metrics::{BACKGROUND_DURATION, BACKGROUND_RUNS};
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(BACKGROUND_RUNS, "job" => job, "result" => result).increment(1);
    metrics::histogram!(BACKGROUND_DURATION, "job" => job).record(started.elapsed().as_secs_f64());
}

/// Drains histogram samples into their buckets every second, as the exporter requires when it
/// does not run its own HTTP listener. Until drained, every sample is kept (8 bytes each, for
/// the request and the query histograms alike): at 40k requests a second, five seconds of them
/// were 3 MiB of the peak RSS under load.
async fn metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}
