//! Errors outside validation: every one is problem+json with the request id.

use axum::Router;
use axum::routing::get;
use serde_json::Value;
use std::time::Duration;

use crate::support::helpers::{Backend, TestApp, order_body, problem, test_settings};

#[tokio::test]
async fn malformed_json_is_400_and_wrong_content_type_is_415() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .header("content-type", "application/json")
        .body("{\"customer_id\": ")
        .send()
        .await
        .unwrap();
    let body = problem(res, 400).await;
    assert_eq!(body["type"], "urn:orders-api:problem:malformed-json");

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app
            .client
            .post(app.url("/api/v1/orders"))
            .body(order_body("c").to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        problem(req.send().await.unwrap(), 415).await;
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| s.server.body_limit = 1024)
        .spawn()
        .await;
    let mut body = order_body("c");
    body["customer_id"] = Value::String("x".repeat(2000));
    problem(app.post_json("/api/v1/orders", &body).await, 413).await;
    // Within the limit the same endpoint works.
    assert_eq!(
        app.post_json("/api/v1/orders", &order_body("c"))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    problem(app.get("/api/v1/nothing-here").await, 404).await;
    problem(app.get("/api/v3/orders").await, 404).await;
    let res = app
        .client
        .delete(app.url("/api/v1/orders"))
        .send()
        .await
        .unwrap();
    let allow = res.headers()["allow"].to_str().unwrap().to_string();
    problem(res, 405).await;
    for method in ["GET", "POST"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    let res = app
        .client
        .put(app.url("/api/v1/orders/x"))
        .send()
        .await
        .unwrap();
    assert!(res.headers()["allow"].to_str().unwrap().contains("PATCH"));
    problem(res, 405).await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_minted() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let res = app
        .client
        .get(app.url("/api/v1/orders/none"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-123");
    let body = problem(res, 404).await;
    assert_eq!(body["request_id"], "trace-me-123");

    let too_long = "x".repeat(129);
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", &too_long)
        .send()
        .await
        .unwrap();
    let minted = res.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(minted, too_long);
    assert_eq!(uuid::Uuid::parse_str(minted).unwrap().get_version_num(), 7);
}

#[tokio::test]
async fn database_down_is_503_with_retry_after() {
    // Nothing listens on port 1: every connection attempt is refused.
    let app = TestApp::builder(Backend::sqlite())
        .database_url("postgres://postgres@127.0.0.1:1/none")
        .with(|s| s.database.acquire_timeout = Duration::from_millis(300))
        .start()
        .await;
    let res = app.post_json("/api/v1/orders", &order_body("c")).await;
    assert_eq!(res.headers()["retry-after"], "1");
    let body = problem(res, 503).await;
    assert!(
        !body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "internals leaked"
    );
    problem(app.get("/api/v1/orders").await, 503).await;
}

#[tokio::test]
async fn panics_become_500_without_internals() {
    let settings = test_settings("sqlite::memory:");
    let router: Router = Router::new().route(
        "/boom",
        get(|| async {
            let secret = "internal-detail-42";
            panic!("{secret}");
            #[allow(unreachable_code)]
            ""
        }),
    );
    let health = std::sync::Arc::new(orders_api::state::Health::new(
        settings.database.health_timeout,
    ));
    health.set_schema(Ok(()));
    let stack = orders_api::middleware::Stack::new(&settings, health).expect("stack");
    let app = stack
        .api(stack.guarded(router))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = crate::support::helpers::client();
    let res = client
        .get(format!("http://{addr}/boom"))
        .send()
        .await
        .unwrap();
    let body = problem(res, 500).await;
    assert!(!body.to_string().contains("internal-detail-42"));
    // The server survived the panic.
    let again = client
        .get(format!("http://{addr}/boom"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 500);
}
