//! Probes on both listeners, readiness while the database is unreachable, and recovery.

use std::time::Duration;

use orders_api::store::Store;
use serde_json::Value;
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};

use crate::support::helpers::{
    Backend, PgDatabase, TestApp, authority, order_body, test_settings, via,
};

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {body}"))
}

#[tokio::test]
async fn probes_answer_on_the_ops_listener_and_liveness_on_both() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    for base in [app.url(""), app.ops_url("")] {
        let live = app
            .client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(live.status(), 200);
    }
    let ready = app.client.get(app.ops_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    for name in ["database", "migrations", "shutdown"] {
        assert_eq!(check(&body, name)["status"], "ok");
    }
    // Readiness, with its dependency errors, is the ops listener's only.
    let public = app.get("/readyz").await;
    let body = crate::support::helpers::problem(public, 404).await;
    assert!(body.get("checks").is_none());
    // The ops listener serves probes only, never the API.
    let res = app
        .client
        .get(app.ops_url("/api/v1/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// A flood of readiness probes costs the database one check: every probe in it reports the
/// same check, by its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readiness_probes_share_one_database_check() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let probes = (0..50).map(|_| {
        let (client, url) = (app.client.clone(), app.ops_url("/readyz"));
        tokio::spawn(async move {
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            check(&body, "database")["checked_at"]
                .as_str()
                .expect("checked_at")
                .to_string()
        })
    });
    let mut times = std::collections::BTreeSet::new();
    for p in probes.collect::<Vec<_>>() {
        times.insert(p.await.unwrap());
    }
    // A second's reuse: a burst that straddles its end may see two checks, never fifty.
    assert!(times.len() <= 2, "{times:?}");
}

#[tokio::test]
async fn unreachable_database_fails_readiness_not_liveness() {
    let app = TestApp::builder(Backend::sqlite())
        .database_url("postgres://postgres@127.0.0.1:1/none")
        .with(|s| s.database.health_timeout = Duration::from_millis(300))
        .start()
        .await;
    assert_eq!(
        app.client
            .get(app.ops_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = app.client.get(app.ops_url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(check(&body, "database")["status"], "error");
    assert!(
        check(&body, "database")["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(check(&body, "migrations")["status"], "error");
    assert_eq!(check(&body, "shutdown")["status"], "ok");
}

#[tokio::test]
async fn pending_migrations_fail_readiness_when_not_migrating_on_start() {
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| s.database.migrate_on_start = false)
        .start()
        .await;
    let res = app.client.get(app.ops_url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(check(&body, "database")["status"], "ok");
    assert_eq!(check(&body, "migrations")["status"], "error");
}

/// Starts with PostgreSQL behind a port that accepts nothing, then opens the way: the service
/// must report not ready, then reconnect, migrate and serve without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_migrates_once_the_database_is_reachable() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let real = backend.url();
    let target = authority(&real).to_string();
    let gate = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = via(&real, gate.local_addr().unwrap());
    let app = TestApp::builder(backend)
        .database_url(url)
        .with(|s| {
            s.database.health_timeout = Duration::from_millis(200);
            s.database.acquire_timeout = Duration::from_millis(500);
        })
        .start()
        .await;
    let res = app.client.get(app.ops_url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        app.client
            .get(app.ops_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.post_json("/api/v1/orders", &order_body("c"))
            .await
            .status(),
        503
    );

    // Open the gate: forward every connection to the real server.
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = gate.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    app.wait_ready().await;
    assert_eq!(
        app.post_json("/api/v1/orders", &order_body("c"))
            .await
            .status(),
        201
    );
}

/// While the schema is not current (here: the test holds the database's write lock, so the
/// migration cannot run), API requests are answered 503 with `Retry-After` and a problem type
/// that says why, without touching the store or counting against the breaker; once the
/// migration is let through, the same request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_before_the_schema_is_current_get_503_not_ready() {
    let backend = Backend::sqlite();
    let lock = crate::support::helpers::sqlite(&backend.url());
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let app = TestApp::builder(backend)
        .with(|s| {
            s.database.busy_timeout = Duration::from_millis(50);
            s.circuit_breaker.config.window = 1;
            s.circuit_breaker.config.minimum_calls = 1;
        })
        .start()
        .await;
    // A breaker that one counted failure would open is still closed: none was counted.
    assert_eq!(crate::breaker::breaker_state(&app).await, "closed");
    // Probes and the contract do not need the schema.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/api/v2/openapi.json").await.status(), 200);

    lock.execute_batch("COMMIT").unwrap();
    app.wait_ready().await;
    assert_eq!(
        app.post_json("/api/v1/orders", &order_body("on-time"))
            .await
            .status(),
        201
    );
}

/// A rollback: the database was migrated by a newer release, so it holds a version this binary
/// does not know, and the migrator refuses. That refusal must not leave the migrator's advisory
/// lock behind on a pooled connection: every later run, on every replica, would wait on it, and
/// the pool would never close at shutdown.
#[tokio::test]
async fn a_refused_migration_leaves_no_advisory_lock_behind() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let store = Store::open(&test_settings(&db.url).database).expect("store");
    store.migrate().await.expect("first migration");
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from a newer release', true, '\\x00', 0)",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let advisory_locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                          AND database = (SELECT oid FROM pg_database \
                                          WHERE datname = current_database())";
    for attempt in 1..=3 {
        let err = store.migrate().await.expect_err("unknown version refused");
        assert!(
            err.to_string().contains("99990101000000"),
            "attempt {attempt}: {err}"
        );
        let held: i64 = sqlx::query_scalar(advisory_locks)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(
            held, 0,
            "attempt {attempt}: the migrator's lock is still held"
        );
    }
    tokio::time::timeout(Duration::from_secs(10), store.close())
        .await
        .expect("the pool closes");
    let _ = admin.close().await;
}
