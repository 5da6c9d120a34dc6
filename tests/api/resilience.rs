//! The guards over real HTTP: rate limiting with its headers, load shedding, timeouts, slow
//! clients, and the circuit breaker under PostgreSQL faults injected by a TCP proxy.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::faults::{FaultProxy, until};
use orders_api::config::{Budget, Settings};

use crate::support::helpers::{
    Backend, TestApp, authority, metric, order_body, per_client_limit, problem, via,
};

/// A near-zero refill rate, so the bucket only drains while a test runs.
fn strict() -> impl FnOnce(&mut Settings) + Send {
    per_client_limit(0.01, 3)
}

async fn get_with(app: &TestApp, path: &str, xff: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url(path));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn rate_limit_refuses_with_problem_and_headers_and_ignores_forged_xff() {
    let app = TestApp::builder(Backend::sqlite())
        .with(strict())
        .spawn()
        .await;
    for remaining in [2, 1, 0] {
        let res = get_with(&app, "/api/v1/orders", None).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["ratelimit-policy"],
            "\"per-client\";q=3;w=300"
        );
        let state = res.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(
            state.starts_with(&format!("\"per-client\";r={remaining};t=")),
            "{state}"
        );
    }
    // A forged X-Forwarded-For from an untrusted peer lands in the peer's bucket.
    let res = get_with(&app, "/api/v1/orders", Some("203.0.113.77")).await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let state = res.headers()["ratelimit"].to_str().unwrap().to_string();
    let body = problem(res, 429).await;
    assert_eq!(body["violated-policies"], serde_json::json!(["per-client"]));
    let t: u64 = state.rsplit("t=").next().unwrap().parse().unwrap();
    assert!(state.contains("r=0"));
    assert!(
        retry_after >= 1 && retry_after >= t,
        "Retry-After {retry_after} before t={t}"
    );
    // Probes are never limited.
    for _ in 0..10 {
        assert_eq!(get_with(&app, "/healthz", None).await.status(), 200);
        let ready = app.client.get(app.ops_url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    }
}

/// A client on `ip` (a loopback address of its own).
fn client_on(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

#[tokio::test]
async fn one_client_cannot_drain_the_global_budget() {
    let app = TestApp::builder(Backend::sqlite())
        .with(per_client_limit(1.0, 2))
        .with(|s| {
            s.rate_limit.policies.global = Some(Budget {
                rate_per_second: 10.0,
                burst: 20,
            });
        })
        .spawn()
        .await;
    let noisy = client_on([127, 0, 0, 1]);
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let res = noisy.get(app.url("/api/v1/orders")).send().await.unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 38);
    // The 38 refusals spent no global tokens, so another client is served, and its own bucket
    // is untouched by anything the noisy client did.
    let quiet = client_on([127, 0, 0, 2]);
    for remaining in [1, 0] {
        let res = quiet.get(app.url("/api/v1/orders")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let state = res.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(
            state.contains(&format!("\"per-client\";r={remaining};")),
            "{state}"
        );
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_gets_its_own_bucket() {
    let app = TestApp::builder(Backend::sqlite())
        .with(strict())
        .with(|s| s.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()])
        .spawn()
        .await;
    for _ in 0..3 {
        assert_eq!(
            get_with(&app, "/api/v1/orders", Some("198.51.100.1"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        get_with(&app, "/api/v1/orders", Some("198.51.100.1"))
            .await
            .status(),
        429
    );
    // The left-most entry is the client's own claim; the proxy appended the real address.
    let chain = "198.51.100.2, 198.51.100.1";
    assert_eq!(
        get_with(&app, "/api/v1/orders", Some(chain)).await.status(),
        429
    );
    assert_eq!(
        get_with(&app, "/api/v1/orders", Some("198.51.100.2"))
            .await
            .status(),
        200
    );
    // IPv6 clients in one /64 share a bucket.
    for i in 0..3 {
        let ip = format!("2001:db8:1:2::{i}");
        assert_eq!(
            get_with(&app, "/api/v1/orders", Some(&ip)).await.status(),
            200
        );
    }
    let neighbour = get_with(&app, "/api/v1/orders", Some("2001:db8:1:2:ffff::9")).await;
    assert_eq!(neighbour.status(), 429);
}

#[tokio::test]
async fn shadow_mode_counts_refusals_but_serves() {
    let app = TestApp::builder(Backend::sqlite())
        .with(strict())
        .with(|s| s.rate_limit.enforce = false)
        .spawn()
        .await;
    let scrape = || app.metrics();
    let labels = "decision=\"shadow_limited\",policy=\"per-client\"";
    let labels_alt = "policy=\"per-client\",decision=\"shadow_limited\"";
    let before = scrape().await;
    let shadow_before = metric(&before, "rate_limit_decisions_total", labels)
        + metric(&before, "rate_limit_decisions_total", labels_alt);
    for _ in 0..6 {
        assert_eq!(get_with(&app, "/api/v1/orders", None).await.status(), 200);
    }
    let after = scrape().await;
    let shadow_after = metric(&after, "rate_limit_decisions_total", labels)
        + metric(&after, "rate_limit_decisions_total", labels_alt);
    assert_eq!(shadow_after - shadow_before, 3.0);
}

/// Holds SQLite's write lock from outside the service, so its writes wait (in flight).
async fn lock_writes(app: &TestApp) -> rusqlite::Connection {
    let conn = crate::support::helpers::sqlite(&app.backend.url());
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_in_flight_requests_are_shed_at_once() {
    // The held write waits on SQLite's lock for up to 60 s: long enough to observe, however
    // slowly the machine runs.
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| {
            s.server.max_in_flight = 1;
            s.database.busy_timeout = Duration::from_secs(60);
        })
        .spawn()
        .await;
    let lock = lock_writes(&app).await;
    let hold = || {
        let (client, url) = (app.client.clone(), app.url("/api/v1/orders"));
        tokio::spawn(async move {
            let res = client.post(url).json(&order_body("held")).send().await;
            res.unwrap_or_else(|e| panic!("held request failed: {e:?}"))
                .status()
        })
    };
    // The polling requests below take the only slot for an instant each, so the write may be
    // shed itself if it arrives during one; then it is sent again. Once the write holds the
    // slot (waiting on the lock), every other request is refused at once, not queued.
    let mut slow = hold();
    loop {
        until("the write holds the slot, or was shed", || {
            let shed = slow.is_finished();
            let probe = app.get("/api/v1/orders");
            async move { shed || probe.await.status() == 503 }
        })
        .await;
        if !slow.is_finished() {
            break;
        }
        assert_eq!(slow.await.unwrap(), 503, "only a shed write ends early");
        slow = hold();
    }
    let res = app.get("/api/v1/orders").await;
    assert_eq!(res.headers()["retry-after"], "1");
    let body = problem(res, 503).await;
    assert_eq!(body["type"], "urn:orders-api:problem:overloaded");
    // Probes still answer.
    assert_eq!(app.get("/healthz").await.status(), 200);
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(slow.await.unwrap(), 201, "the admitted write completes");
    let text = app.metrics().await;
    assert!(metric(&text, "http_requests_shed_total", "") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_timeout_get_504() {
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| {
            s.server.request_timeout = Duration::from_millis(300);
            s.database.busy_timeout = Duration::from_secs(5);
        })
        .spawn()
        .await;
    let lock = lock_writes(&app).await;
    let res = app.post_json("/api/v1/orders", &order_body("late")).await;
    let body = problem(res, 504).await;
    assert_eq!(body["title"], "Gateway Timeout");
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        app.post_json("/api/v1/orders", &order_body("ok"))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn clients_that_dribble_headers_are_disconnected() {
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| s.server.header_read_timeout = Duration::from_millis(300))
        .spawn()
        .await;
    let api = app.api;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(api).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /api/v1/orders HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .unwrap();
        let mut buf = Vec::new();
        // The server must close the connection; a 10 s read timeout means it did not.
        s.read_to_end(&mut buf)
            .map(|_| String::from_utf8_lossy(&buf).to_string())
    })
    .await
    .unwrap();
    let response = outcome.expect("connection closed by the server, not left hanging");
    assert!(!response.starts_with("HTTP/1.1 200"), "{response}");
    // Well-behaved clients are unaffected.
    assert_eq!(app.get("/api/v1/orders").await.status(), 200);
}

/// PostgreSQL behind a proxy that cuts and stalls: the breaker opens within one window and then
/// spares the database, recovers through half-open, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_database_faults_recovers_and_loses_nothing() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let real = backend.url();
    let proxy = FaultProxy::start(authority(&real).to_string()).await;
    let url = via(&real, proxy.addr);
    let app = TestApp::builder(backend)
        .database_url(url)
        .with(|s| {
            let breaker = &mut s.circuit_breaker.config;
            breaker.window = 10;
            breaker.minimum_calls = 5;
            breaker.open_wait = Duration::from_secs(1);
            breaker.open_wait_max = Duration::from_secs(1);
            breaker.half_open_calls = 2;
            s.database.acquire_timeout = Duration::from_millis(300);
            s.database.statement_timeout = Duration::from_millis(500);
            s.server.request_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    let mut acknowledged = HashSet::new();
    for i in 0..5 {
        let order = app.create_order(&order_body(&format!("before-{i}"))).await;
        acknowledged.insert(order["id"].as_str().unwrap().to_string());
    }

    // Cut: failures open the breaker within one window of calls.
    proxy.cut();
    let mut statuses = Vec::new();
    for i in 0..10 {
        let res = app
            .post_json("/api/v1/orders", &order_body(&format!("cut-{i}")))
            .await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if status == 201 {
            acknowledged.insert(body["id"].as_str().unwrap().to_string());
        }
        statuses.push((
            status,
            body["type"].as_str().unwrap_or_default().to_string(),
        ));
        if body["type"] == "urn:orders-api:problem:circuit-open" {
            break;
        }
    }
    assert!(
        statuses
            .iter()
            .any(|(_, t)| t == "urn:orders-api:problem:circuit-open"),
        "breaker did not open within one window: {statuses:?}"
    );
    // While open, requests are refused without reaching the database.
    let attempts = proxy.connections.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..20 {
        let res = app.get("/api/v1/orders").await;
        let retry_after: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=1).contains(&retry_after));
        let body = problem(res, 503).await;
        assert_eq!(body["type"], "urn:orders-api:problem:circuit-open");
    }
    assert_eq!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst),
        attempts,
        "open breaker reached the database"
    );
    let ready: Value = app
        .client
        .get(app.ops_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["circuit_breaker"]["state"], "open");

    // Restore: after the wait, trial calls pass and the breaker closes.
    proxy.restore();
    until("breaker closed", || async {
        app.post_json("/api/v1/orders", &order_body("trial"))
            .await
            .status()
            == 201
            && app
                .client
                .get(app.ops_url("/readyz"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["circuit_breaker"]["state"]
                == "closed"
    })
    .await;

    // Stall: requests end within the configured bounds (503 or 504), never hang.
    proxy.stall();
    let stalled = app
        .client
        .post(app.url("/api/v1/orders"))
        .json(&order_body("stalled"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("answered within the request timeout");
    assert!(
        [503, 504].contains(&stalled.status().as_u16()),
        "{}",
        stalled.status()
    );
    proxy.restore();
    until("pool recovered", || async {
        app.post_json("/api/v1/orders", &order_body("after"))
            .await
            .status()
            == 201
    })
    .await;

    for id in &acknowledged {
        let res = app.get(&format!("/api/v1/orders/{id}")).await;
        assert_eq!(res.status(), 200, "acknowledged order {id} lost");
    }
}

/// Clients that give up mid-request say nothing about the database: the breaker stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_do_not_open_the_breaker() {
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| {
            s.circuit_breaker.config.window = 5;
            s.circuit_breaker.config.minimum_calls = 5;
            s.database.busy_timeout = Duration::from_secs(30);
        })
        .spawn()
        .await;
    let lock = lock_writes(&app).await;
    for i in 0..10 {
        let gave_up = app
            .client
            .post(app.url("/api/v1/orders"))
            .json(&order_body(&format!("impatient-{i}")))
            .timeout(Duration::from_millis(100))
            .send()
            .await;
        assert!(
            gave_up.is_err(),
            "the write should still be waiting on the lock"
        );
    }
    lock.execute_batch("ROLLBACK").unwrap();
    let ready: Value = app
        .client
        .get(app.ops_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["circuit_breaker"]["state"], "closed");
    assert_eq!(
        app.post_json("/api/v1/orders", &order_body("patient"))
            .await
            .status(),
        201
    );
    // The abandoned requests were cancelled, not left to finish (which would have counted as
    // successes and hidden a breaker that counted them as failures): none of them stored its
    // order once the lock was gone.
    let stored = crate::support::helpers::sqlite_count(
        &lock,
        "SELECT COUNT(*) FROM orders WHERE customer_id LIKE 'impatient-%'",
    );
    assert_eq!(stored, 0, "abandoned requests ran to completion");
}
