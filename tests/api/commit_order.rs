//! Listings follow commit order. An order's place in the newest-first listing (its
//! `created_at`) is given when it commits, not when its request arrived: otherwise an order
//! that commits after a newer one was read lands behind a reader who has moved on, and a
//! client that pages down to the newest order it saw last time never sees it.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::Connection;

use crate::support::faults::until;
use crate::support::helpers::{Backend, TestApp, both_backends};
use crate::v2::v2_body;

both_backends!(created_at_order_is_commit_order_under_concurrent_creates);

/// Ids of the newest-first listing, from the top down to (not including) `stop`.
async fn since(app: &TestApp, stop: Option<&str>) -> Vec<String> {
    let mut seen = Vec::new();
    let mut url = "/api/v2/orders?limit=3".to_string();
    loop {
        let page: Value = app.get(&url).await.json().await.unwrap();
        for order in page["data"].as_array().unwrap() {
            let id = order["id"].as_str().unwrap();
            if Some(id) == stop {
                return seen;
            }
            seen.push(id.to_string());
        }
        match page["links"]["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => return seen,
        }
    }
}

async fn post(app: &TestApp, customer: &str) -> tokio::task::JoinHandle<String> {
    let (client, url, body) = (
        app.client.clone(),
        app.url("/api/v2/orders"),
        v2_body(customer),
    );
    tokio::spawn(async move {
        let res = client.post(url).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    })
}

/// A consumer that remembers the newest order it has seen, and next time reads down to it,
/// sees every order exactly once, even when an order that started first commits last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_that_commits_late_is_not_hidden_behind_a_reader() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let url = backend.url();
    let app = TestApp::spawn(backend).await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    // Inserts of customer `slow` wait for an advisory lock the test holds.
    sqlx::raw_sql(
        "CREATE FUNCTION wait_for_test() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         PERFORM pg_advisory_lock_shared(4242); PERFORM pg_advisory_unlock_shared(4242); \
         RETURN NEW; END $$; \
         CREATE TRIGGER wait_for_test BEFORE INSERT ON orders FOR EACH ROW \
         WHEN (NEW.customer_id = 'slow') EXECUTE FUNCTION wait_for_test()",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let first = post(&app, "first").await.await.unwrap();
    let mut seen: Vec<String> = since(&app, None).await;
    assert_eq!(seen, std::slice::from_ref(&first));

    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut db)
        .await
        .unwrap();
    let waiting = |n: i64| {
        let url = url.clone();
        move || {
            let url = url.clone();
            async move {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                let blocked: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut c)
                .await
                .unwrap();
                blocked >= n
            }
        }
    };
    // `slow` arrives first and stalls in its insert; `fast` arrives second.
    let slow = post(&app, "slow").await;
    until("slow waits in its insert", waiting(1)).await;
    let fast = post(&app, "fast").await;
    until("fast has committed, or waits behind slow", || {
        let done = fast.is_finished();
        let blocked = waiting(2)();
        async move { done || blocked.await }
    })
    .await;
    // A consumer reads what is there now, and remembers the newest order it saw.
    seen.extend(since(&app, Some(&first)).await);
    let newest_seen = seen.last().cloned();
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut db)
        .await
        .unwrap();
    let (slow, fast) = (slow.await.unwrap(), fast.await.unwrap());
    // Later it reads down to the newest order it saw: together it has seen everything, once.
    let top = since(&app, None).await;
    let stop = newest_seen.filter(|id| *id != first);
    let newer = match &stop {
        Some(id) => top.iter().take_while(|t| *t != id).cloned().collect(),
        None => top
            .iter()
            .take_while(|t| **t != first)
            .cloned()
            .collect::<Vec<_>>(),
    };
    seen.extend(newer);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "seen twice: {seen:?}");
    for id in [&first, &slow, &fast] {
        assert!(seen.contains(id), "{id} was never listed: {seen:?}");
    }
}

/// On either backend, under concurrent creates, the listing's order is the order in which
/// the creates committed. SQLite's rowid is assigned at insert, under its single write lock,
/// so it is commit order; PostgreSQL's commit order is read back from the order clock.
async fn created_at_order_is_commit_order_under_concurrent_creates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut creates = Vec::new();
    for i in 0..40 {
        creates.push(post(&app, &format!("c{i}")).await);
    }
    for c in creates {
        c.await.unwrap();
    }
    let listed = since(&app, None).await;
    assert_eq!(listed.len(), 40);
    let created: Vec<String> = {
        let page: Value = app
            .get("/api/v2/orders?limit=100")
            .await
            .json()
            .await
            .unwrap();
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["created_at"].as_str().unwrap().to_string())
            .collect()
    };
    // Strictly newest first: no two orders share a place.
    assert!(created.windows(2).all(|w| w[0] > w[1]), "{created:?}");
    if let Backend::Sqlite(_) = app.backend {
        let c = crate::support::helpers::sqlite(&app.backend.url());
        let by_rowid: Vec<String> = c
            .prepare("SELECT id FROM orders ORDER BY rowid DESC")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(by_rowid, listed, "listing order is not commit order");
    }
}
