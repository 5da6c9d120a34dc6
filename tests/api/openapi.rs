//! The OpenAPI documents over HTTP: OpenAPI 3.1, public, the expected operations, every error
//! answered as problem+json, bearer security on the order operations only, and the headers a
//! client may count on marked required.

use serde_json::Value;
use std::time::Duration;

use crate::support::faults::FaultProxy;
use crate::support::helpers::{Backend, TestApp, authority, via};

/// Follows a local `$ref` (`#/components/...`) within `doc`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => doc
            .pointer(pointer.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {pointer}")),
        None => value,
    }
}

/// Every (method, path, operation) of `doc`.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((method.to_uppercase(), path.clone(), op));
        }
    }
    ops
}

/// An instance that asks for API keys, as production runs.
async fn secured_app() -> (TestApp, crate::auth::Keys) {
    let keys = crate::auth::Keys::write();
    let app = TestApp::builder(Backend::sqlite())
        .with(keys.enable())
        .spawn()
        .await;
    (app, keys)
}

/// Fetches a document without credentials, checks what every document of an instance that
/// asks for API keys promises, and returns it.
async fn document(app: &TestApp, path: &str) -> Value {
    let res = app.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: Value = res.json().await.expect("document json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer"})
    );
    for (what, _, op) in operations(&doc) {
        let request_id = op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "x-request-id"))
            .unwrap_or_else(|| panic!("{what} documents no x-request-id"));
        // The server replaces what it does not accept instead of refusing it: no pattern.
        assert!(request_id["schema"].get("pattern").is_none(), "{what}");
        assert!(
            request_id["description"]
                .as_str()
                .unwrap()
                .contains("replaced")
        );
    }
    for (method, path, op) in operations(&doc) {
        let what = format!("{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        for (status, response) in responses {
            let response = resolve(&doc, response);
            let headers = &response["headers"];
            assert_eq!(headers["x-request-id"]["required"], true, "{what} {status}");
            if status.starts_with('4') || status.starts_with('5') {
                let content = response["content"].as_object().expect("content");
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/problem+json"],
                    "{what} {status}"
                );
                let schema = resolve(&doc, &content["application/problem+json"]["schema"]);
                assert_eq!(
                    schema["required"],
                    serde_json::json!(["type", "title", "status", "detail"])
                );
            }
            if matches!(status.as_str(), "429" | "503") {
                assert_eq!(headers["Retry-After"]["required"], true, "{what} {status}");
            }
        }
        let mut expected = vec!["429", "503", "504"];
        if op.get("requestBody").is_some() {
            expected.extend(["400", "413", "415", "422"]);
        }
        if path.contains("{id}") {
            expected.push("404");
        }
        for status in expected {
            assert!(responses.contains_key(status), "{what} lacks {status}");
        }
        let secured = op["security"] == serde_json::json!([{"bearer": []}]);
        if path.ends_with("/openapi.json") {
            assert!(op.get("security").is_none(), "{what} is public");
        } else {
            assert!(secured, "{what} needs a key");
            for status in ["401", "403"] {
                let response = resolve(&doc, &responses[status]);
                assert_eq!(response["headers"]["WWW-Authenticate"]["required"], true);
            }
        }
    }
    doc
}

fn paths(doc: &Value) -> Vec<(String, String)> {
    let mut found: Vec<_> = operations(doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    found.sort();
    found
}

/// The operations each version serves, sorted as [`paths`] sorts them.
fn expected_paths(version: &str) -> Vec<(String, String)> {
    [
        ("GET", "openapi.json"),
        ("GET", "orders"),
        ("GET", "orders/{id}"),
        ("PATCH", "orders/{id}"),
        ("POST", "orders"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), format!("/api/{version}/{p}")))
    .collect()
}

#[tokio::test]
async fn v1_document_describes_v1_only() {
    let (app, _keys) = secured_app().await;
    let doc = document(&app, "/api/v1/openapi.json").await;
    assert_eq!(paths(&doc), expected_paths("v1"));
    for (what, _, op) in operations(&doc) {
        assert_eq!(op["deprecated"], true, "{what}");
        for response in op["responses"].as_object().expect("responses").values() {
            let headers = &resolve(&doc, response)["headers"];
            for name in ["Deprecation", "Sunset", "Link"] {
                assert_eq!(headers[name]["required"], true, "{what} {name}");
            }
        }
    }
    // v1 has no conditional requests: nothing of v2's may leak into its document.
    for v2_only in ["PreconditionFailed", "PreconditionRequired"] {
        assert!(doc["components"]["responses"].get(v2_only).is_none());
    }
    let create = &doc["paths"]["/api/v1/orders"]["post"];
    assert_eq!(
        create["responses"]["201"]["headers"]["Location"]["required"],
        true
    );
    let idempotency = create["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "Idempotency-Key"))
        .expect("Idempotency-Key parameter");
    assert_eq!(idempotency["in"], "header");
    assert_eq!(idempotency["required"], false);
    let limit = doc["paths"]["/api/v1/orders"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
        .expect("limit parameter");
    assert_eq!(
        (
            limit["schema"]["minimum"].as_u64(),
            limit["schema"]["maximum"].as_u64()
        ),
        (Some(1), Some(100))
    );
}

#[tokio::test]
async fn v2_document_describes_v2_only() {
    let (app, _keys) = secured_app().await;
    let doc = document(&app, "/api/v2/openapi.json").await;
    assert_eq!(paths(&doc), expected_paths("v2"));
    for (what, _, op) in operations(&doc) {
        assert!(op.get("deprecated").is_none(), "{what}");
        for response in op["responses"].as_object().expect("responses").values() {
            let headers = &resolve(&doc, response)["headers"];
            assert!(headers.get("Deprecation").is_none(), "{what}");
        }
    }
    let one = &doc["paths"]["/api/v2/orders/{id}"];
    for (method, status) in [
        ("get", "200"),
        ("get", "304"),
        ("patch", "200"),
        ("patch", "412"),
    ] {
        let response = resolve(&doc, &one[method]["responses"][status]);
        assert_eq!(
            response["headers"]["ETag"]["required"], true,
            "{method} {status}"
        );
    }
    let patch = &one["patch"];
    let if_match = patch["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "If-Match"))
        .expect("If-Match parameter");
    assert_eq!(
        (&if_match["in"], &if_match["required"]),
        (&Value::from("header"), &Value::from(true))
    );
    for status in ["409", "412", "428"] {
        assert!(
            patch["responses"].get(status).is_some(),
            "PATCH lacks {status}"
        );
    }
}

/// The documents are not database calls: while PostgreSQL is cut off they neither keep the
/// breaker closed by counting as successes nor get refused once it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_outside_the_database_breaker() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let real = backend.url();
    let proxy = FaultProxy::start(authority(&real).to_string()).await;
    let app = TestApp::builder(backend)
        .database_url(via(&real, proxy.addr))
        .with(|s| {
            let breaker = &mut s.circuit_breaker.config;
            breaker.window = 4;
            breaker.minimum_calls = 4;
            breaker.open_wait = Duration::from_secs(60);
            breaker.open_wait_max = Duration::from_secs(60);
            s.database.acquire_timeout = Duration::from_millis(300);
            s.database.statement_timeout = Duration::from_millis(500);
            s.server.request_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    proxy.cut();
    // Three document fetches per failing call: counted as successes they would hold the
    // failure rate at 25 %, below the threshold, and the breaker would never open.
    let mut failing_calls = 0;
    loop {
        for _ in 0..3 {
            assert_eq!(app.get("/api/v1/openapi.json").await.status(), 200);
        }
        let body: Value = app
            .get("/api/v1/orders")
            .await
            .json()
            .await
            .expect("problem");
        if body["type"] == "urn:orders-api:problem:circuit-open" {
            break;
        }
        failing_calls += 1;
        assert!(
            failing_calls <= 4,
            "breaker still closed after {failing_calls} failures"
        );
    }
    assert_eq!(app.get("/api/v2/openapi.json").await.status(), 200);
}

/// With authentication off the documents describe the API as it is then served: no security
/// requirement, no bearer scheme, no 401 or 403.
#[tokio::test]
async fn without_authentication_the_documents_ask_for_no_key() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    for version in ["v1", "v2"] {
        let doc: Value = app
            .get(&format!("/api/{version}/openapi.json"))
            .await
            .json()
            .await
            .unwrap();
        assert!(
            doc["components"].get("securitySchemes").is_none(),
            "{version}"
        );
        assert!(doc.get("security").is_none(), "{version}");
        for (what, _, op) in operations(&doc) {
            assert!(op.get("security").is_none(), "{what}");
            for status in ["401", "403"] {
                assert!(op["responses"].get(status).is_none(), "{what} {status}");
            }
        }
        for status in ["Unauthorized", "Forbidden"] {
            assert!(
                doc["components"]["responses"].get(status).is_none(),
                "{version}"
            );
        }
    }
}
