//! Idempotency-Key on creates, both versions and both backends: replay, 409 while another
//! request (or replica) holds the key, 422 for another payload, per-client scopes, expiry and
//! purge.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures_util::future::join_all;
use orders_api::idempotency::{Hold, IdempotencyKey, Reservation, StoredResponse, fingerprint};
use orders_api::store::Store;
use serde_json::{Value, json};

use crate::support::helpers::{
    Backend, TestApp, both_backends, metric, order_body, problem, test_settings,
};
use crate::v2::v2_body;

both_backends!(
    a_repeat_replays_the_first_response,
    a_retry_on_another_replica_is_replayed,
    another_payload_under_the_same_key_is_refused,
    a_held_key_conflicts_until_released_or_lapsed,
    concurrent_duplicates_create_one_order,
    keys_are_scoped_per_client,
    expired_records_are_not_replayed_and_are_purged,
    bad_keys_are_refused_and_failed_validation_keeps_the_key_free,
    a_create_failing_in_the_database_leaves_its_key_free,
    a_create_cut_short_by_the_timeout_is_finished_and_then_replayed,
    a_keyed_create_outliving_its_request_keeps_its_in_flight_slot,
);

/// A connection of our own to the app's database, to break or block it.
enum Raw {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgConnection),
}

impl Raw {
    async fn open(app: &TestApp) -> Self {
        use sqlx::Connection;
        let url = app.backend.url();
        match app.backend {
            Backend::Sqlite(_) => Raw::Sqlite(crate::support::helpers::sqlite(&url)),
            Backend::Postgres(_) => Raw::Postgres(sqlx::PgConnection::connect(&url).await.unwrap()),
        }
    }

    /// Runs the statement for this backend.
    async fn run(&mut self, sqlite: &str, postgres: &str) {
        match self {
            Raw::Sqlite(c) => c.execute_batch(sqlite).map_err(|e| e.to_string()),
            Raw::Postgres(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(postgres.to_string()))
                .execute(c)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
        .unwrap_or_else(|e| panic!("test SQL failed: {e}"));
    }
}

async fn post(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("POST")
}

/// Orders of `customer` as v2 sees them.
async fn count(app: &TestApp, customer: &str) -> usize {
    let page: Value = app
        .get(&format!("/api/v2/orders?customer_id={customer}&limit=100"))
        .await
        .json()
        .await
        .unwrap();
    page["data"].as_array().unwrap().len()
}

/// A store on the app's database: another replica, as far as the keys are concerned.
fn replica(app: &TestApp) -> Store {
    Store::open(&test_settings(&app.backend.url()).database).expect("store")
}

async fn a_repeat_replays_the_first_response(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (path, body, key) in [
        ("/api/v1/orders", order_body("rep-v1"), "retry-1"),
        ("/api/v2/orders", v2_body("rep-v2"), "retry-2"),
    ] {
        let first = post(&app, path, &format!("\"{key}\""), &body).await;
        assert_eq!(first.status(), 201);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let (location, etag) = (
            first.headers()["location"].clone(),
            first.headers().get("etag").cloned(),
        );
        let first: Value = first.json().await.unwrap();
        // The bare token form of the same key.
        let again = post(&app, path, key, &body).await;
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()["location"], location);
        assert_eq!(again.headers().get("etag").cloned(), etag);
        assert_eq!(again.headers()["content-type"], "application/json");
        assert_eq!(again.json::<Value>().await.unwrap(), first);
    }
    assert_eq!(count(&app, "rep-v1").await, 1);
    assert_eq!(count(&app, "rep-v2").await, 1);
    let text = app.metrics().await;
    let replayed = metric(&text, "idempotency_requests_total", "outcome=\"replayed\"");
    assert!(replayed >= 2.0, "replays are counted");
}

async fn a_retry_on_another_replica_is_replayed(backend: Backend) {
    let url = backend.url();
    let a = TestApp::spawn(backend).await;
    // A second instance on the same database, as a second replica behind the same Service.
    let b = TestApp::builder(Backend::sqlite())
        .database_url(url)
        .start()
        .await;
    b.wait_ready().await;
    let body = v2_body("replicas");
    let first = post(&a, "/api/v2/orders", "across", &body).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let retry = post(&b, "/api/v2/orders", "across", &body).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    problem(
        post(&b, "/api/v2/orders", "across", &v2_body("other")).await,
        422,
    )
    .await;
    assert_eq!(count(&b, "replicas").await, 1);
    b.stop().await;
}

async fn another_payload_under_the_same_key_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        post(&app, "/api/v2/orders", "k", &v2_body("a"))
            .await
            .status(),
        201
    );
    let p = problem(post(&app, "/api/v2/orders", "k", &v2_body("b")).await, 422).await;
    assert_eq!(p["type"], "urn:orders-api:problem:idempotency-key-reused");
    // The same body on the other version is another request too.
    let v1 = order_body("a");
    problem(post(&app, "/api/v1/orders", "k", &v1).await, 422).await;
    assert_eq!(count(&app, "b").await, 0);
}

fn hold(scope: &str, key: &str, body: &Value, lock: TimeDelta) -> Hold {
    let now = orders_api::orders::now();
    Hold {
        scope: scope.into(),
        key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
        fingerprint: fingerprint("POST", "/api/v2/orders", body),
        created_at: now,
        locked_until: now + lock,
        expires_at: now + TimeDelta::hours(24),
    }
}

async fn a_held_key_conflicts_until_released_or_lapsed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other = replica(&app);
    let body = v2_body("held");
    let held = hold("ip:127.0.0.1", "busy", &body, TimeDelta::seconds(30));
    assert_eq!(other.reserve(&held).await.unwrap(), Reservation::Acquired);

    let p = problem(post(&app, "/api/v2/orders", "busy", &body).await, 409).await;
    assert_eq!(p["type"], "urn:orders-api:problem:idempotency-key-in-use");
    // Another payload is told so, even while the key is held.
    problem(
        post(&app, "/api/v2/orders", "busy", &v2_body("x")).await,
        422,
    )
    .await;
    other.release(&held).await.unwrap();
    assert_eq!(
        post(&app, "/api/v2/orders", "busy", &body).await.status(),
        201
    );

    // A replica that died holding a key: past locked_until a repeat takes it over.
    let dead = hold("ip:127.0.0.1", "dead", &body, TimeDelta::seconds(-1));
    assert_eq!(other.reserve(&dead).await.unwrap(), Reservation::Acquired);
    assert_eq!(
        post(&app, "/api/v2/orders", "dead", &body).await.status(),
        201
    );
    // The late holder cannot complete what is no longer its own.
    let mut order = orders_api::orders::Order::create(
        orders_api::orders::NewOrder {
            customer_id: orders_api::orders::CustomerId::parse("held").unwrap(),
            currency: orders_api::orders::Currency::parse("EUR").unwrap(),
            items: vec![],
        },
        Utc::now(),
    );
    let render: std::sync::Arc<orders_api::idempotency::Render> =
        std::sync::Arc::new(|_: &orders_api::orders::Order| {
            Ok(StoredResponse {
                status: 201,
                headers: vec![],
                body: b"{}".to_vec(),
            })
        });
    assert!(
        other
            .insert_completing(&mut order, &dead, &render)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(count(&app, "held").await, 2);
    other.close().await;
}

async fn concurrent_duplicates_create_one_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = v2_body("dup");
    let results = join_all((0..16).map(|_| post(&app, "/api/v2/orders", "same", &body))).await;
    let mut created: Vec<Value> = Vec::new();
    for res in results {
        match res.status().as_u16() {
            201 => created.push(res.json().await.unwrap()),
            409 => {
                problem(res, 409).await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(!created.is_empty());
    assert!(
        created.windows(2).all(|w| w[0] == w[1]),
        "one order, replayed"
    );
    assert_eq!(count(&app, "dup").await, 1);
}

async fn keys_are_scoped_per_client(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let neighbour = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let body = v2_body("scoped");
    let mine: Value = post(&app, "/api/v2/orders", "shared", &body)
        .await
        .json()
        .await
        .unwrap();
    let theirs = neighbour
        .post(app.url("/api/v2/orders"))
        .header("idempotency-key", "shared")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 201);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(theirs["id"], mine["id"], "another client's key is its own");
    let other_payload = neighbour
        .post(app.url("/api/v2/orders"))
        .header("idempotency-key", "shared-2")
        .json(&v2_body("scoped"))
        .send()
        .await
        .unwrap();
    assert_eq!(other_payload.status(), 201);
    assert_eq!(count(&app, "scoped").await, 3);
}

async fn expired_records_are_not_replayed_and_are_purged(backend: Backend) {
    // A TTL of one microsecond: every record has expired by the next request.
    let app = TestApp::builder(backend)
        .with(|s| s.idempotency.ttl = Duration::from_micros(1))
        .spawn()
        .await;
    let body = v2_body("expiring");
    let first: Value = post(&app, "/api/v2/orders", "e", &body)
        .await
        .json()
        .await
        .unwrap();
    let second = post(&app, "/api/v2/orders", "e", &body).await;
    assert_eq!(second.status(), 201);
    assert!(second.headers().get("idempotent-replayed").is_none());
    assert_ne!(second.json::<Value>().await.unwrap()["id"], first["id"]);
    assert_eq!(post(&app, "/api/v2/orders", "f", &body).await.status(), 201);

    // The purge deletes what expired by the time it is given, in batches, and nothing else.
    let store = replica(&app);
    let keep = hold("ip:192.0.2.1", "kept", &body, TimeDelta::seconds(30));
    assert_eq!(store.reserve(&keep).await.unwrap(), Reservation::Acquired);
    let purged = store
        .purge_idempotency(orders_api::orders::now(), 1)
        .await
        .unwrap();
    assert_eq!(purged, 2, "records e and f, one per batch");
    assert_eq!(
        store
            .purge_idempotency(orders_api::orders::now(), 1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.reserve(&keep).await.unwrap(), Reservation::InProgress);
    let later = keep.expires_at + TimeDelta::seconds(1);
    assert_eq!(store.purge_idempotency(later, 10).await.unwrap(), 1);
    store.close().await;
}

async fn bad_keys_are_refused_and_failed_validation_keeps_the_key_free(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long = "k".repeat(256);
    for bad in ["", "\"unterminated", long.as_str()] {
        problem(
            post(&app, "/api/v2/orders", bad, &v2_body("bad")).await,
            400,
        )
        .await;
    }
    let twice = app
        .client
        .post(app.url("/api/v2/orders"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&v2_body("bad"))
        .send()
        .await
        .unwrap();
    problem(twice, 400).await;
    let mut invalid = v2_body("bad");
    invalid["items"] = json!([]);
    problem(post(&app, "/api/v2/orders", "fresh", &invalid).await, 422).await;
    assert_eq!(
        post(&app, "/api/v2/orders", "fresh", &v2_body("bad"))
            .await
            .status(),
        201
    );
    assert_eq!(count(&app, "bad").await, 1);
}

async fn a_create_failing_in_the_database_leaves_its_key_free(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut db = Raw::open(&app).await;
    db.run(
        "CREATE TRIGGER refuse BEFORE INSERT ON orders WHEN NEW.customer_id = 'refused' \
         BEGIN SELECT RAISE(ABORT, 'refused'); END",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.customer_id = 'refused' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; \
         END $$; CREATE TRIGGER refuse BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .await;
    let body = v2_body("refused");
    // The failure released the key: the retry fails the same way, not with 409.
    for _ in 0..2 {
        problem(post(&app, "/api/v2/orders", "retry-me", &body).await, 500).await;
    }
    db.run("DROP TRIGGER refuse", "DROP TRIGGER refuse ON orders")
        .await;
    let res = post(&app, "/api/v2/orders", "retry-me", &body).await;
    assert_eq!(res.status(), 201);
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_eq!(count(&app, "refused").await, 1);
}

async fn a_create_cut_short_by_the_timeout_is_finished_and_then_replayed(backend: Backend) {
    let app = TestApp::builder(backend)
        .with(|s| s.server.request_timeout = Duration::from_millis(300))
        .spawn()
        .await;
    let mut db = Raw::open(&app).await;
    // Writers to the idempotency records wait behind this transaction.
    db.run(
        "BEGIN IMMEDIATE",
        "BEGIN; LOCK TABLE idempotency_keys IN EXCLUSIVE MODE",
    )
    .await;
    let body = v2_body("cut-short");
    problem(post(&app, "/api/v2/orders", "cut", &body).await, 504).await;
    db.run("ROLLBACK", "ROLLBACK").await;
    // The create goes on without its client. A retry is told to wait (409) while it runs, then
    // gets its response; or, when the retry reaches the freed database first, it creates the
    // order and the abandoned request finds the key completed. Either way: one order, and
    // every later retry replays it.
    let mut created = None;
    for _ in 0..250 {
        let res = post(&app, "/api/v2/orders", "cut", &body).await;
        match res.status().as_u16() {
            409 => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            201 => {
                created = Some(res.json::<Value>().await.unwrap());
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let created = created.expect("the retry never got 201");
    let again = post(&app, "/api/v2/orders", "cut", &body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), created);
    assert_eq!(count(&app, "cut-short").await, 1);
}

/// A keyed create cut short by the request timeout goes on in a task of its own; until that
/// task ends it still holds its in-flight slot, so `server.max_in_flight` bounds the work the
/// service does, not just the requests it is answering.
async fn a_keyed_create_outliving_its_request_keeps_its_in_flight_slot(backend: Backend) {
    let app = TestApp::builder(backend)
        .with(|s| {
            s.server.request_timeout = Duration::from_millis(300);
            s.server.max_in_flight = 1;
            s.database.busy_timeout = Duration::from_secs(60);
        })
        .spawn()
        .await;
    let mut db = Raw::open(&app).await;
    db.run(
        "BEGIN IMMEDIATE",
        "BEGIN; LOCK TABLE idempotency_keys IN EXCLUSIVE MODE",
    )
    .await;
    let body = v2_body("outlives");
    problem(post(&app, "/api/v2/orders", "slot", &body).await, 504).await;
    // The abandoned create is still waiting on the lock, in the only slot.
    let res = app.get("/api/v2/orders").await;
    let shed = problem(res, 503).await;
    assert_eq!(shed["type"], "urn:orders-api:problem:overloaded");
    db.run("ROLLBACK", "ROLLBACK").await;
    // Once it has finished, the slot is free and the key replays the order it created.
    let mut replay = None;
    for _ in 0..250 {
        let res = post(&app, "/api/v2/orders", "slot", &body).await;
        if res.status() == 201 {
            replay = Some(res);
            break;
        }
        assert!(
            [409, 503].contains(&res.status().as_u16()),
            "{}",
            res.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let replay = replay.expect("the abandoned create never finished");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(app.get("/api/v2/orders").await.status(), 200);
    assert_eq!(count(&app, "outlives").await, 1);
}
