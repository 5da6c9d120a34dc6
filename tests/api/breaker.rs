//! What the circuit breaker counts. Only trouble on the database side is a failure; answers
//! that never reached the store (401, 403, 404 for a malformed id, 415, 422, 428, and 503 while
//! the schema is not ready) count as nothing, so clients cannot dilute the failure rate or
//! close a half-open breaker during an outage.

use orders_api::config::Settings;
use serde_json::{Value, json};
use sqlx::Connection;
use std::time::Duration;

use crate::support::faults::until;
use crate::support::helpers::{Backend, TestApp, both_backends, metric, order_body, problem};

/// A small window: five calls decide.
fn small(s: &mut Settings) {
    let breaker = &mut s.circuit_breaker.config;
    breaker.window = 5;
    breaker.minimum_calls = 5;
    breaker.failure_rate_threshold = 50.0;
    breaker.half_open_calls = 2;
    s.database.busy_timeout = Duration::from_millis(20);
}

pub async fn breaker_state(app: &TestApp) -> String {
    let ready: Value = app
        .client
        .get(app.ops_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["circuit_breaker"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `circuit_breaker_calls_total{outcome}` now.
async fn calls(app: &TestApp, outcome: &str) -> f64 {
    metric(
        &app.metrics().await,
        "circuit_breaker_calls_total",
        &format!("outcome=\"{outcome}\""),
    )
}

/// Holds SQLite's write lock, so that writes fail with SQLITE_BUSY after the busy timeout.
async fn lock_writes(app: &TestApp) -> rusqlite::Connection {
    let conn = crate::support::helpers::sqlite(&app.backend.url());
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

/// Requests that are refused before they reach the store, one of each kind.
async fn refused_before_the_store(app: &TestApp) {
    let res = app.get("/api/v1/orders/not-a-uuid").await;
    assert_eq!(res.status(), 404);
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let res = app
        .post_json("/api/v1/orders", &json!({"customer_id": ""}))
        .await;
    assert_eq!(res.status(), 422);
    let res = app.get("/api/v1/orders?limit=0").await;
    assert_eq!(res.status(), 422);
    let res = app
        .patch_json(
            "/api/v2/orders/0190c1c2-0000-7000-8000-000000000000",
            &json!({"status": "paid"}),
        )
        .await;
    assert_eq!(res.status(), 428);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_never_reach_the_store_do_not_dilute_the_failure_rate() {
    let app = TestApp::builder(Backend::sqlite())
        .with(small)
        .spawn()
        .await;
    let ignored_before = calls(&app, "ignored").await;
    let lock = lock_writes(&app).await;
    for i in 0..5 {
        let res = app
            .post_json("/api/v1/orders", &order_body(&format!("busy-{i}")))
            .await;
        assert_eq!(res.status(), 503, "a busy database is a database failure");
        // Between the failures, clients send requests the store never sees.
        if i < 4 {
            refused_before_the_store(&app).await;
        }
    }
    assert_eq!(
        breaker_state(&app).await,
        "open",
        "five database failures in a row, whatever else was refused meanwhile"
    );
    // The counters are process-wide, and other tests run alongside: at least these 20.
    assert!(calls(&app, "ignored").await - ignored_before >= 20.0);
    // While open, a keyed create is refused before it reserves its key.
    let res = app
        .client
        .post(app.url("/api/v2/orders"))
        .header("idempotency-key", "while-open")
        .json(&crate::v2::v2_body("while-open"))
        .send()
        .await
        .unwrap();
    let body = problem(res, 503).await;
    assert_eq!(body["type"], "urn:orders-api:problem:circuit-open");
    lock.execute_batch("ROLLBACK").unwrap();
    let keys =
        crate::support::helpers::sqlite_count(&lock, "SELECT COUNT(*) FROM idempotency_keys");
    assert_eq!(keys, 0, "no key was reserved while the breaker was open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_do_not_close_a_half_open_breaker() {
    let app = TestApp::builder(Backend::sqlite())
        .with(small)
        .with(|s| {
            s.circuit_breaker.config.open_wait = Duration::from_millis(200);
            s.circuit_breaker.config.open_wait_max = Duration::from_millis(200);
        })
        .spawn()
        .await;
    let lock = lock_writes(&app).await;
    for i in 0..5 {
        let res = app
            .post_json("/api/v1/orders", &order_body(&format!("busy-{i}")))
            .await;
        assert_eq!(res.status(), 503);
    }
    assert_eq!(breaker_state(&app).await, "open");
    until("half-open", || async {
        breaker_state(&app).await == "half_open"
    })
    .await;
    // More than the two trial calls, none of which reaches the store.
    for _ in 0..3 {
        let res = app.post_json("/api/v1/orders", &json!({})).await;
        assert_eq!(res.status(), 422);
    }
    assert_eq!(breaker_state(&app).await, "half_open", "422s are no trial");
    // The outage goes on: the real trials fail and the breaker opens again.
    for _ in 0..2 {
        let res = app.post_json("/api/v1/orders", &order_body("trial")).await;
        assert_eq!(res.status(), 503);
    }
    assert_eq!(breaker_state(&app).await, "open");
    lock.execute_batch("ROLLBACK").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_is_a_500_but_not_a_database_failure() {
    let app = TestApp::builder(Backend::sqlite())
        .with(small)
        .spawn()
        .await;
    let order = app.create_order(&order_body("to-corrupt")).await;
    let id = order["id"].as_str().unwrap().to_string();
    let conn = crate::support::helpers::sqlite(&app.backend.url());
    conn.execute("UPDATE orders SET items = 'not json' WHERE id = ?1", [&id])
        .unwrap();
    let failures_before = calls(&app, "failure").await;
    for _ in 0..10 {
        let res = app.get(&format!("/api/v1/orders/{id}")).await;
        let body = problem(res, 500).await;
        assert!(!body["detail"].as_str().unwrap().contains("json"), "{body}");
    }
    assert_eq!(calls(&app, "failure").await, failures_before);
    assert_eq!(breaker_state(&app).await, "closed");
    assert_eq!(
        app.get("/api/v1/orders").await.status(),
        500,
        "listing decodes the row too"
    );
    assert_eq!(breaker_state(&app).await, "closed");
}

/// The cursor of a position at `micros` since the epoch.
fn cursor_at(micros: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{micros}.0190c1c2000070008000000000000000"))
}

async fn unrepresentable_input_is_refused_before_the_database(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Year -250,000: chrono holds it, PostgreSQL's timestamptz does not.
    let res = app
        .get(&format!(
            "/api/v2/orders?cursor={}",
            cursor_at(-7_950_000_000_000_000_000)
        ))
        .await;
    let body = problem(res, 422).await;
    assert_eq!(body["errors"][0]["parameter"], "cursor");
    // An offset past the documented maximum would scan the table.
    let res = app.get("/api/v1/orders?offset=10001").await;
    let body = problem(res, 422).await;
    assert_eq!(body["errors"][0]["parameter"], "offset");
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("10000")
    );
    assert_eq!(app.get("/api/v1/orders?offset=10000").await.status(), 200);
}

both_backends!(unrepresentable_input_is_refused_before_the_database);

/// Serialization failures, deadlocks, a read-only server after failover, an administrator's
/// shutdown and too many connections are transient: 503 with `Retry-After`, and each counts as
/// a database failure; anything else the database refuses is a bug of ours, a 500 that is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_postgres_errors_are_503_and_database_failures() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    // A trigger that fails inserts of customers named `fail-<SQLSTATE>` with that code.
    let mut conn = sqlx::PgConnection::connect(&backend.url()).await.unwrap();
    let app = TestApp::builder(backend)
        .with(|s| {
            s.circuit_breaker.config.window = 10;
            s.circuit_breaker.config.minimum_calls = 10;
        })
        .spawn()
        .await;
    for sql in [
        "CREATE FUNCTION fail_by_name() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = substr(NEW.customer_id, 6); END $$",
        "CREATE TRIGGER fail_by_name BEFORE INSERT ON orders FOR EACH ROW \
         WHEN (NEW.customer_id LIKE 'fail-%') EXECUTE FUNCTION fail_by_name()",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    // Five check violations: 500s, counted as calls that succeeded at the database.
    for _ in 0..5 {
        let res = app
            .post_json("/api/v1/orders", &order_body("fail-23514"))
            .await;
        assert_eq!(res.status(), 500);
    }
    assert_eq!(breaker_state(&app).await, "closed");
    // Five transient errors: 503 each, and five failures in a window of ten open it.
    for code in ["40001", "40P01", "25006", "57P01", "53300"] {
        let res = app
            .post_json("/api/v1/orders", &order_body(&format!("fail-{code}")))
            .await;
        assert_eq!(res.status(), 503, "SQLSTATE {code}");
        assert_eq!(res.headers()["retry-after"], "1", "SQLSTATE {code}");
    }
    assert_eq!(breaker_state(&app).await, "open");
}
