//! Prometheus metrics through the `metrics` facade. The names are a public contract (README).
//!
//! The recorder is process-global and can be installed once: [`install`] keeps its handle in a
//! `OnceLock`, so every app built in one process (tests build many) shares it. Histograms get
//! explicit buckets (the OpenTelemetry HTTP boundaries); without them the exporter would render
//! summaries.

use std::cell::RefCell;
use std::sync::OnceLock;

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds; the OpenTelemetry semantic-convention boundaries for HTTP durations.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Requests served, by method, matched route and status.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Request latency histogram, by method, matched route and status.
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
/// Requests being served right now.
pub const HTTP_IN_FLIGHT: &str = "http_requests_in_flight";
/// Constant 1, labelled with the version and git sha.
pub const BUILD_INFO: &str = "build_info";
/// Pool connections by state (`idle`, `in_use`).
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
/// Pool capacity.
pub const DB_POOL_MAX: &str = "db_pool_max_connections";
/// Query latency histogram, by operation.
pub const DB_QUERY_DURATION: &str = "db_query_duration_seconds";
/// Failed queries, by kind (`unavailable`, `internal`, `corrupt`).
pub const DB_ERRORS: &str = "db_errors_total";
/// Writes committed together by the SQLite writer, per commit.
pub const DB_WRITE_BATCH: &str = "db_write_batch_size";
/// One transaction of the SQLite writer, from `BEGIN` to the end of `COMMIT` (its fsync
/// included): a disk that stalls shows here, apart from the time writes wait in the queue.
pub const DB_WRITE_COMMIT_DURATION: &str = "db_write_commit_duration_seconds";
/// The buckets of [`DB_WRITE_COMMIT_DURATION`]: a commit takes well under a millisecond on a
/// local disk, and a stall tens or hundreds.
pub const COMMIT_BUCKETS: [f64; 11] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// The buckets of [`DB_WRITE_BATCH`]: powers of two up to the largest batch.
pub const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// The buckets of [`RATE_LIMIT_REDIS_DURATION`]: a call's budget is a few milliseconds.
pub const REDIS_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// Orders created, by currency.
pub const ORDERS_CREATED: &str = "orders_created_total";
/// Status changes, by from and to.
pub const STATUS_TRANSITIONS: &str = "order_status_transitions_total";
/// Creates that sent an `Idempotency-Key`, by outcome (`new`, `replayed`, `in_progress`,
/// `mismatch`).
pub const IDEMPOTENCY_REQUESTS: &str = "idempotency_requests_total";
/// Expired idempotency records deleted.
pub const IDEMPOTENCY_PURGED: &str = "idempotency_keys_purged_total";
/// The outcome labels of [`IDEMPOTENCY_REQUESTS`].
pub const IDEMPOTENCY_OUTCOMES: [&str; 4] = ["new", "replayed", "in_progress", "mismatch"];
/// Requests refused at the concurrency cap.
pub const HTTP_SHED: &str = "http_requests_shed_total";
/// Open connections, by listener.
pub const HTTP_CONNECTIONS_OPEN: &str = "http_connections_open";
/// Connections closed at accept because the listener was at `server.max_connections`.
pub const HTTP_CONNECTIONS_REFUSED: &str = "http_connections_refused_total";
/// Connections closed by a connection clock, by listener and reason (`header_read`,
/// `keep_alive`).
pub const HTTP_CONNECTIONS_TIMED_OUT: &str = "http_connections_timed_out_total";
/// Rate-limit verdicts, by policy and decision (`allowed`, `limited`, `shadow_limited`).
pub const RATE_LIMIT_DECISIONS: &str = "rate_limit_decisions_total";
/// Clients currently tracked, by policy.
pub const RATE_LIMIT_KEYS: &str = "rate_limit_keys";
/// Redis rate-limit calls: how long each took, whatever its result.
pub const RATE_LIMIT_REDIS_DURATION: &str = "rate_limit_redis_duration_seconds";
/// Redis rate-limit calls that failed, by kind (`timeout`, `connection`, `response`).
pub const RATE_LIMIT_REDIS_ERRORS: &str = "rate_limit_redis_errors_total";
/// Requests decided with `rate_limit.backend = "redis"`, by who decided (`redis`, `fallback`).
pub const RATE_LIMIT_BACKEND_DECISIONS: &str = "rate_limit_backend_decisions_total";
/// 1 while the Redis breaker is not closed (the fallback decides), else 0.
pub const RATE_LIMIT_FALLBACK_ACTIVE: &str = "rate_limit_fallback_active";
/// 1 when the Redis in use has a memory limit and a policy that may evict buckets, else 0.
pub const RATE_LIMIT_REDIS_MAY_EVICT: &str = "rate_limit_redis_may_evict";
/// Configuration reloads by `result` (`success`, `failure`).
pub const CONFIG_RELOADS: &str = "config_reloads_total";
/// When the configuration was last loaded successfully (at start or by a reload).
pub const CONFIG_LAST_SUCCESS: &str = "config_last_reload_success_timestamp_seconds";
/// 1 if the last reload attempt succeeded (or none was made), 0 while the files are invalid.
pub const CONFIG_LAST_SUCCESSFUL: &str = "config_last_reload_successful";
/// 1 for the `hash` of the configuration in force, 0 for those replaced.
pub const CONFIG_INFO: &str = "config_info";
/// Changed settings that only a restart applies (0 when the files match what runs).
pub const CONFIG_RESTART_REQUIRED: &str = "config_restart_required_settings";
/// Breaker state: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "circuit_breaker_state";
/// Breaker state changes, by from and to.
pub const BREAKER_TRANSITIONS: &str = "circuit_breaker_transitions_total";
/// Calls through the breaker, by outcome (`success`, `failure`, `slow`, `rejected`).
pub const BREAKER_CALLS: &str = "circuit_breaker_calls_total";
/// Runs of background jobs, by job and result (`ok`, `error`).
pub const BACKGROUND_RUNS: &str = "background_runs_total";
/// How long background job runs take, by job.
pub const BACKGROUND_DURATION: &str = "background_run_duration_seconds";
/// The background jobs.
pub const BACKGROUND_JOBS: [&str; 1] = ["idempotency_purge"];
/// Spans the trace exporter could not deliver.
pub const SPANS_DROPPED: &str = "otel_spans_dropped_total";

/// The git revision baked in at build time (`GIT_SHA`), or `unknown`.
pub const GIT_SHA: &str = match option_env!("GIT_SHA") {
    Some(sha) => sha,
    None => "unknown",
};

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

thread_local! {
    /// Handles looked up by [`counter_by`] and [`histogram_by`] on this thread, by (metric,
    /// label, value): each is registered once, instead of hashing and copying its labels in the
    /// recorder on every request. The sets are small and fixed (operations, kinds, currencies).
    static COUNTERS: RefCell<Vec<(Series, Counter)>> = const { RefCell::new(Vec::new()) };
    static HISTOGRAMS: RefCell<Vec<(Series, Histogram)>> = const { RefCell::new(Vec::new()) };
}

type Series = (&'static str, &'static str, &'static str);

/// A handle from a per-thread cache, registered by `register` on first use. Nothing is cached
/// before the recorder is installed (a handle made then would stay a no-op).
fn cached<H: Clone>(
    cache: &'static std::thread::LocalKey<RefCell<Vec<(Series, H)>>>,
    series: Series,
    register: impl FnOnce() -> H,
) -> H {
    if HANDLE.get().is_none_or(Result::is_err) {
        return register();
    }
    cache.with_borrow_mut(|handles| {
        if let Some((_, h)) = handles.iter().find(|(s, _)| *s == series) {
            return h.clone();
        }
        let h = register();
        handles.push((series, h.clone()));
        h
    })
}

/// The counter `name{label="value"}`, registered once per thread.
pub fn counter_by(name: &'static str, label: &'static str, value: &'static str) -> Counter {
    cached(
        &COUNTERS,
        (name, label, value),
        || counter!(name, label => value),
    )
}

/// The histogram `name{label="value"}`, registered once per thread.
pub fn histogram_by(name: &'static str, label: &'static str, value: &'static str) -> Histogram {
    cached(
        &HISTOGRAMS,
        (name, label, value),
        || histogram!(name, label => value),
    )
}

/// Installs the global recorder (once per process) and returns the handle that renders
/// `/metrics`.
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    &DURATION_BUCKETS,
                )
                .map_err(|e| e.to_string())?
                .set_buckets_for_metric(Matcher::Full(DB_WRITE_BATCH.into()), &BATCH_BUCKETS)
                .map_err(|e| e.to_string())?
                .set_buckets_for_metric(
                    Matcher::Full(DB_WRITE_COMMIT_DURATION.into()),
                    &COMMIT_BUCKETS,
                )
                .map_err(|e| e.to_string())?
                .set_buckets_for_metric(
                    Matcher::Full(RATE_LIMIT_REDIS_DURATION.into()),
                    &REDIS_BUCKETS,
                )
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            describe();
            metrics_process::Collector::default().describe();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "git_sha" => GIT_SHA)
                .set(1.0);
            // Known label values start at zero, so rates and alerts have a series before the
            // first failure.
            for kind in ["unavailable", "internal", "corrupt"] {
                counter!(DB_ERRORS, "kind" => kind).absolute(0);
            }
            counter!(SPANS_DROPPED).absolute(0);
            counter!(HTTP_SHED).absolute(0);
            for outcome in IDEMPOTENCY_OUTCOMES {
                counter!(IDEMPOTENCY_REQUESTS, "outcome" => outcome).absolute(0);
            }
            counter!(IDEMPOTENCY_PURGED).absolute(0);
            for job in BACKGROUND_JOBS {
                for result in ["ok", "error"] {
                    counter!(BACKGROUND_RUNS, "job" => job, "result" => result).absolute(0);
                }
            }
            Ok(recorder)
        })
        .clone()
}

/// Renders the exposition text, refreshing process metrics first.
pub fn render(handle: &PrometheusHandle) -> String {
    metrics_process::Collector::default().collect();
    handle.render()
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests served by the API listener");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency");
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being served");
    describe_gauge!(BUILD_INFO, "Always 1; labels carry the version and git sha");
    describe_gauge!(DB_POOL_CONNECTIONS, "Database pool connections by state");
    describe_gauge!(DB_POOL_MAX, "Database pool capacity");
    describe_histogram!(DB_QUERY_DURATION, Unit::Seconds, "Database query latency");
    describe_counter!(DB_ERRORS, "Failed database operations by kind");
    describe_histogram!(
        DB_WRITE_BATCH,
        "Writes committed together by the SQLite writer (one fsync each)"
    );
    describe_histogram!(
        DB_WRITE_COMMIT_DURATION,
        Unit::Seconds,
        "One SQLite writer transaction, BEGIN to the end of COMMIT (fsync included)"
    );
    describe_counter!(ORDERS_CREATED, "Orders created by currency");
    describe_counter!(STATUS_TRANSITIONS, "Order status changes");
    describe_counter!(SPANS_DROPPED, "Spans the trace exporter failed to deliver");
    describe_counter!(HTTP_SHED, "Requests refused at the in-flight cap");
    describe_gauge!(HTTP_CONNECTIONS_OPEN, "Open connections by listener");
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "Connections closed at accept, at server.max_connections"
    );
    describe_counter!(
        HTTP_CONNECTIONS_TIMED_OUT,
        "Connections closed by the header or keep-alive clock"
    );
    describe_counter!(
        IDEMPOTENCY_REQUESTS,
        "Creates with an Idempotency-Key by outcome"
    );
    describe_counter!(IDEMPOTENCY_PURGED, "Expired idempotency records deleted");
    describe_counter!(BACKGROUND_RUNS, "Background job runs by job and result");
    describe_histogram!(
        BACKGROUND_DURATION,
        Unit::Seconds,
        "Background job run time by job"
    );
    describe_counter!(RATE_LIMIT_DECISIONS, "Rate-limit decisions by policy");
    describe_gauge!(
        RATE_LIMIT_KEYS,
        "Clients tracked by each keyed rate-limit policy"
    );
    describe_histogram!(
        RATE_LIMIT_REDIS_DURATION,
        Unit::Seconds,
        "Redis rate-limit call time, whatever the result"
    );
    describe_counter!(
        RATE_LIMIT_REDIS_ERRORS,
        "Failed Redis rate-limit calls by kind"
    );
    describe_counter!(
        RATE_LIMIT_BACKEND_DECISIONS,
        "Rate-limit decisions of the redis backend, by who decided"
    );
    describe_counter!(CONFIG_RELOADS, "Configuration reloads, by result");
    describe_gauge!(
        CONFIG_LAST_SUCCESS,
        "Unix time of the last successful configuration load"
    );
    describe_gauge!(
        CONFIG_LAST_SUCCESSFUL,
        "1 if the last configuration reload succeeded, 0 while the files are invalid"
    );
    describe_gauge!(CONFIG_INFO, "1 for the hash of the configuration in force");
    describe_gauge!(
        CONFIG_RESTART_REQUIRED,
        "Changed settings that are not applied until a restart"
    );
    describe_gauge!(
        RATE_LIMIT_FALLBACK_ACTIVE,
        "1 while Redis rate limiting is replaced by its fallback"
    );
    describe_gauge!(
        RATE_LIMIT_REDIS_MAY_EVICT,
        "1 if Redis has a maxmemory and a maxmemory-policy other than noeviction"
    );
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open"
    );
    describe_counter!(BREAKER_TRANSITIONS, "Circuit breaker state changes");
    describe_counter!(
        BREAKER_CALLS,
        "Calls through the circuit breaker by outcome"
    );
}

/// The method label: standard methods as-is, anything else `_OTHER` (bounded cardinality).
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}
